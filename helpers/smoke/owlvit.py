"""The smoke profile's OWL-ViT: ``OwlViTForObjectDetection`` with seeded random weights, built offline.

``openvocab.weights: random`` (the smoke profile) is OWL-ViT's class at a small size (2
layers of width 64 in each tower, 128 px images in 32 px patches: 16 boxes per image), so
smoke runs stay fast; ``random-full-size`` (:data:`RANDOM_FULL_SIZE`, ``make bench``) is
OWL-ViT B/32's configuration at 768 px, so a forward pass costs what the real one costs.
Both use CLIP's offline tokenizer (OWL-ViT reads text with CLIP's tokenizer, cut to 16
tokens) and an ``OwlViTImageProcessor`` that resizes to the config's square, as the Hub's
does; both are saved under the profile's ``models`` folder and loaded back by
``helpers.weights.load_model(OWLVIT, ...)`` as a local folder. Their scores mean nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import RANDOM_FULL_SIZE
from ..io import read_random_marker, save_random_model, stable_hash

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, OwlViTConfig

__all__ = ["RANDOM_FOLDER", "TEXT_POSITIONS", "owlvit_config", "build_random_owlvit", "random_owlvit_folder"]

RANDOM_FOLDER = "owlvit-random"
#: OWL-ViT's text context: 16 tokens, start and end tokens included.
TEXT_POSITIONS = 16
#: The small size of the smoke profile (each tower), and its image side in pixels.
SMALL_SIZE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
SMALL_IMAGE = 128
#: Part of the saved folder's marker: bumped when the builder changes, so old folders are rebuilt.
_MARKER_VERSION = 1


def owlvit_config(tokenizer: "CLIPTokenizer", *, full_size: bool = False, **overrides: Any) -> "OwlViTConfig":
    """OWL-ViT's configuration with ``tokenizer``'s special-token ids: B/32's own (``OwlViTConfig()``'s
    defaults: text 12 layers of width 512, vision 12 layers of width 768, 768 px images in 32 px
    patches, 512-d projections) with ``full_size``, else :data:`SMALL_SIZE` at :data:`SMALL_IMAGE` px."""
    from transformers import OwlViTConfig

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id, "max_position_embeddings": TEXT_POSITIONS}
    if full_size:
        return OwlViTConfig(text_config=ids, vision_config={}, **overrides)
    return OwlViTConfig(text_config={**SMALL_SIZE, **ids, "vocab_size": len(tokenizer)},
                        vision_config={**SMALL_SIZE, "image_size": SMALL_IMAGE, "patch_size": 32},
                        projection_dim=64, **overrides)


def build_random_owlvit(folder: str | os.PathLike, *, seed: int, full_size: bool = False) -> Path:
    """Save a randomly initialised ``OwlViTForObjectDetection`` and its processor to ``folder``.

    The tokenizer is CLIP's offline one (:func:`helpers.smoke.clip.offline_tokenizer`) cut to
    :data:`TEXT_POSITIONS` tokens; the image processor resizes every frame to the config's
    square (no crop, no padding, as OWL-ViT v1's). Initialisation is seeded without touching
    the global random state. A folder already holding the same seed and configuration is
    reused as it is; anything else there is replaced; it appears whole or not at all.
    """
    import torch
    from transformers import OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    from .clip import offline_tokenizer

    folder = Path(folder)
    tokenizer = offline_tokenizer()
    tokenizer.model_max_length = TEXT_POSITIONS
    config = owlvit_config(tokenizer, full_size=full_size)
    marker = {"v": _MARKER_VERSION, "seed": seed, "config": stable_hash(config.to_dict()),
              "vocab": stable_hash(tokenizer.get_vocab())}
    if read_random_marker(folder) == marker:
        return folder
    side = config.vision_config.image_size
    images = OwlViTImageProcessor(size={"height": side, "width": side}, crop_size={"height": side, "width": side},
                                  do_center_crop=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OwlViTForObjectDetection(config)
    return save_random_model(folder, marker, model, OwlViTProcessor(image_processor=images, tokenizer=tokenizer))


def random_owlvit_folder(spec: str, models_dir: str | os.PathLike, seed: int) -> Path:
    """The folder of a random-weight ``spec`` (``"random"``: small; :data:`RANDOM_FULL_SIZE`: B/32
    at 768 px), built on first use under ``models_dir``."""
    if spec == RANDOM_FULL_SIZE:
        return build_random_owlvit(Path(models_dir) / f"{RANDOM_FOLDER}-full", seed=seed, full_size=True)
    return build_random_owlvit(Path(models_dir) / RANDOM_FOLDER, seed=seed)
