"""The smoke profile's detector: Faster R-CNN ResNet-50 FPN with random weights from a fixed seed.

``helpers.weights.load_model(DETECTOR, "random", ...)`` saves them here once and then loads the file
like any user's state dict, so the smoke run exercises the same loading path as real weights.

``"random-full-size"`` (``make bench``, whose profiles cost the real models) is the same with
the region proposal network's box regression set to zero. A forward pass of Faster R-CNN does
not cost the same whatever its weights: its box head runs once per proposal that survives the
RPN's non-maximum suppression. Trained weights regress each anchor by a little and keep the full
1000 proposals on a frame; a random regression head scatters the boxes so that many overlap once
clipped to the frame, and suppression may leave only a fraction of them, depending on the seed
(324 on a 575x240 frame with seed 42, every profile's seed), which made the benchmark's detection
cost too low. With the regression at zero, the proposals are the anchors themselves
and 1000 survive, as with trained weights (``tests/test_detection.py`` checks the count).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from ..io import atomic_write_bytes

#: COCO's 91 label indices (placeholders included), as torchvision's COCO weights have them.
N_COCO_CLASSES = 91


def save_random_detector(models_dir: str | os.PathLike, *, seed: int, full_cost: bool = False) -> Path:
    """Save the randomly initialised architecture (seeded) as a state dict; return its path.

    The file is ``models_dir/fasterrcnn_resnet50_fpn_random_seed<seed>.pth``, or
    ``..._random_full_cost_seed<seed>.pth`` with ``full_cost`` (the RPN's box regression zeroed, so
    that the box head sees as many proposals as with trained weights; see the module docstring).
    It is written atomically and only when absent: the same seed gives the same weights. The
    global random state is left as it was.
    """
    import torch
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    path = Path(models_dir) / f"fasterrcnn_resnet50_fpn_random{'_full_cost' if full_cost else ''}_seed{seed}.pth"
    if path.is_file():
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=N_COCO_CLASSES)
    if full_cost:  # torchvision initialises the bias at zero already
        torch.nn.init.zeros_(model.rpn.head.bbox_pred.weight)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return atomic_write_bytes(path, buffer.getvalue())
