"""The smoke profile's detector: Faster R-CNN ResNet-50 FPN with random weights from a fixed seed.

``helpers.detection.load_detector("random", ...)`` saves them here once and then loads the file
like any user's state dict, so the smoke run exercises the same loading path as real weights.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from ..io import atomic_write_bytes

#: COCO's 91 label indices (placeholders included), as torchvision's COCO weights have them.
N_COCO_CLASSES = 91


def save_random_detector(models_dir: str | os.PathLike, *, seed: int) -> Path:
    """Save the randomly initialised architecture (seeded) as a state dict; return its path.

    The file is ``models_dir/fasterrcnn_resnet50_fpn_random_seed<seed>.pth``. It is written
    atomically and only when absent: the same seed gives the same weights. The global
    random state is left as it was.
    """
    import torch
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    path = Path(models_dir) / f"fasterrcnn_resnet50_fpn_random_seed{seed}.pth"
    if path.is_file():
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=N_COCO_CLASSES)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return atomic_write_bytes(path, buffer.getvalue())
