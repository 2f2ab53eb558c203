"""Where a transformers model's weights come from: a Hub id, a local folder, or random weights.

Every Hugging Face model of the study (CLIP, the masked language model, OWL-ViT, BLIP-VQA)
names its weights by one profile string, resolved here the same way:

- a Hub id (``openai/clip-vit-base-patch32``): from the Hub cache (``HF_HOME``), downloaded
  once when the Hub answers; offline and not cached raises :class:`MissingAssetError`, never
  a silent fallback;
- a local folder written by ``save_pretrained`` (a path: it exists, starts with ``.``, ``/``
  or ``~``, or has more than one ``/``), for offline clusters;
- ``"random"`` (and ``"random-full-size"`` where a model has a small smoke size): the real
  architecture with seeded random weights, built by the caller's ``build_random`` into the
  profile's ``models`` folder and then loaded through the local-folder path like any checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import RANDOM_FULL_SIZE, MissingAssetError, hub_reachable

if TYPE_CHECKING:
    import torch

__all__ = ["RANDOM_SPECS", "hub_cache_dir", "local_folder", "is_hub_cached", "weights_available", "resolve",
           "state_identity"]

#: The weights specs that mean "the architecture with seeded random weights".
RANDOM_SPECS = ("random", RANDOM_FULL_SIZE)


def hub_cache_dir() -> Path:
    """The Hub cache folder as the environment says *now* (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"


def local_folder(spec: str) -> Path | None:
    """``spec`` as a local folder when it names one (or clearly means one), else None for a Hub id."""
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        return path
    return None


def is_hub_cached(repo_id: str, files: Sequence[Sequence[str]]) -> bool:
    """Whether the Hub cache holds, for each entry of ``files``, one of its alternative file names."""
    from huggingface_hub import try_to_load_from_cache

    cache = hub_cache_dir()
    return all(any(isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache), str) for name in choices)
               for choices in files)


def weights_available(spec: str, files: Sequence[Sequence[str]]) -> bool:
    """Whether :func:`resolve` can find ``spec``'s weights: random weights always, a folder if it
    holds a saved model, a Hub id if it is cached (``files``) or the Hub answers."""
    if spec in RANDOM_SPECS:
        return True
    if (folder := local_folder(spec)) is not None:
        return (folder / "config.json").is_file()
    return is_hub_cached(spec, files) or hub_reachable()


def resolve(spec: str, *, what: str, files: Sequence[Sequence[str]],
            build_random: Callable[[str], Path]) -> tuple[str | Path, dict[str, Any]]:
    """Where ``from_pretrained`` finds the weights ``spec`` names, and the options it needs.

    ``what`` names the model in errors ("CLIP weights"); ``files`` are the files a Hub snapshot
    needs (each entry a tuple of alternatives); ``build_random(spec)`` saves random weights for
    a spec of :data:`RANDOM_SPECS` and returns their folder. Raises ``FileNotFoundError`` for a
    folder without ``config.json`` and :class:`MissingAssetError` for a Hub id that is neither
    cached nor downloadable.
    """
    if spec in RANDOM_SPECS:
        return build_random(spec), {"local_files_only": True}
    if (folder := local_folder(spec)) is not None:
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{what} folder {folder} holds no config.json: "
                                    "expected a folder written by save_pretrained")
        return folder, {"local_files_only": True}
    online = hub_reachable()
    if not online and not is_hub_cached(spec, files):
        raise MissingAssetError(f"{what} {spec!r}", cache_var="HF_HOME", detail=f"Looked in the Hub cache {hub_cache_dir()}.")
    return spec, {"cache_dir": hub_cache_dir(), "local_files_only": not online}


def state_identity(model: "torch.nn.Module", *extra: str) -> str:
    """SHA-1 (16 hex digits) of every parameter and buffer of ``model`` and of the ``extra``
    strings (a tokenizer's JSON, an image processor's settings, the precision): the key under
    which anything computed with this model is cached."""
    import torch

    h = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    for item in extra:
        h.update(item.encode())
    return h.hexdigest()[:16]
