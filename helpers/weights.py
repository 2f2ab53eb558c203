"""Where a model's weights come from, and the one function that loads any model of the study.

Every model (CLIP, OWL-ViT, BLIP-VQA, the masked and the causal language model, the detector)
names its weights by one profile string, resolved here the same way:

- ``"random"`` (and ``"random-full-size"`` where a model has a small smoke size): the real
  architecture with seeded random weights, built by the model's ``build_random`` into the
  profile's ``models`` folder and then loaded through the local path like any checkpoint;
- a local copy, for offline clusters: a folder written by ``save_pretrained`` (a path: it
  exists, starts with ``.``, ``/`` or ``~``, or has more than one ``/``), or for the detector
  a ``.pth`` state-dict file;
- named weights: a Hub id (``openai/clip-vit-base-patch32``) from the Hub cache (``HF_HOME``),
  downloaded once when the Hub answers, or the detector's ``"coco"`` from torch.hub's cache;
  offline and not cached raises :class:`MissingAssetError`, never a silent fallback.

Each model is one row of a small table (:class:`HubModel`, or the detector's own subclass of
:class:`ModelWeights`): what to call it in errors, its classes, the builder of its random
variant, the files that make a copy. :func:`load_model` and :func:`weights_available` read it.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import RANDOM_FULL_SIZE, MissingAssetError, hub_reachable

if TYPE_CHECKING:
    import torch

__all__ = ["RANDOM_SPECS", "ModelWeights", "HubModel", "hub_cache_dir", "local_folder", "is_hub_cached", "precision",
           "weights_available", "resolve", "load_model", "state_identity"]

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


def precision(device: "torch.device") -> str:
    """The numeric precision inference runs in on ``device`` (part of a model's identity)."""
    return "fp16-autocast" if device.type == "cuda" else "fp32"


@dataclass(frozen=True, kw_only=True)
class ModelWeights(ABC):
    """How one model gets its weights: a row of the table :func:`load_model` reads.

    ``what`` names the model in errors ("CLIP weights"); ``build_random(spec, models_dir, seed)``
    saves (or reuses) the seeded random weights of a spec of :data:`RANDOM_SPECS` and returns
    their folder or file; ``hub_files`` are the files a Hub snapshot needs (each entry a tuple of
    alternatives). The methods say what a local copy is and where named weights come from: the
    Hugging Face Hub here; the detector's subclass overrides them for torch.hub.
    """

    what: str
    build_random: Callable[[str, Path, int], Path]
    hub_files: tuple[tuple[str, ...], ...] = ()

    def local(self, spec: str) -> Path | None:
        """``spec`` as a local copy's path, or None for named weights."""
        return local_folder(spec)

    def holds_weights(self, path: Path) -> bool:
        """Whether the local copy at ``path`` is complete: a folder written by ``save_pretrained``."""
        return (path / "config.json").is_file()

    def not_a_copy(self, path: Path) -> Exception:
        return FileNotFoundError(f"{self.what} folder {path} holds no config.json: "
                                 "expected a folder written by save_pretrained")

    def cached(self, spec: str) -> bool:
        return is_hub_cached(spec, self.hub_files)

    def reachable(self) -> bool:
        return hub_reachable()

    def missing(self, spec: str) -> MissingAssetError:
        return MissingAssetError(f"{self.what} {spec!r}", cache_var="HF_HOME",
                                 detail=f"Looked in the Hub cache {hub_cache_dir()}.")

    def download_options(self, online: bool) -> dict[str, Any]:
        return {"cache_dir": hub_cache_dir(), "local_files_only": not online}

    @abstractmethod
    def load(self, where: str | Path, options: dict[str, Any], *, spec: str, seed: int,
             device: "torch.device") -> Any:
        """The model from where :func:`resolve` found it, on ``device``."""


@dataclass(frozen=True, kw_only=True)
class HubModel(ModelWeights):
    """A transformers model: its model class and processor (or tokenizer) class, by their names in
    ``transformers``, and ``wrap(model, processor, device, identity, source)``, the record it is
    returned in. Its identity hashes the parameters, the tokenizer and, for a model that reads
    images, the image preprocessing and the precision."""

    model_class: str
    processor_class: str
    wrap: Callable[..., Any]

    def load(self, where: str | Path, options: dict[str, Any], *, spec: str, seed: int,
             device: "torch.device") -> Any:
        import transformers

        model = getattr(transformers, self.model_class).from_pretrained(where, **options).to(device).eval()
        processor = getattr(transformers, self.processor_class).from_pretrained(where, **options)
        tokenizer = getattr(processor, "tokenizer", processor)
        extra = [tokenizer.backend_tokenizer.to_str()]
        if (images := getattr(processor, "image_processor", None)) is not None:
            extra += [images.to_json_string(), precision(device)]
        return self.wrap(model, processor, device, state_identity(model, *extra), str(spec))


def weights_available(model: ModelWeights, spec: str) -> bool:
    """Whether :func:`load_model` can get ``model``'s weights ``spec`` without loading them: random
    weights always, a local copy if it is complete, named weights if cached or downloadable."""
    if spec in RANDOM_SPECS:
        return True
    if (path := model.local(spec)) is not None:
        return model.holds_weights(path)
    return model.cached(spec) or model.reachable()


def resolve(model: ModelWeights, spec: str, *, models_dir: str | os.PathLike,
            seed: int = 42) -> tuple[str | Path, dict[str, Any]]:
    """Where ``model``'s weights ``spec`` are (a folder, a file, or the named weights) and the
    options loading them needs. Random weights are built (or reused) under ``models_dir`` first.

    Raises ``FileNotFoundError`` for an incomplete local copy and :class:`MissingAssetError`
    for named weights that are neither cached nor downloadable.
    """
    if spec in RANDOM_SPECS:
        return model.build_random(spec, Path(models_dir), seed), {"local_files_only": True}
    if (path := model.local(spec)) is not None:
        if not model.holds_weights(path):
            raise model.not_a_copy(path)
        return path, {"local_files_only": True}
    online = model.reachable()
    if not online and not model.cached(spec):
        raise model.missing(spec)
    return spec, model.download_options(online)


def load_model(model: ModelWeights, spec: str, *, models_dir: str | os.PathLike, seed: int = 42,
               device: "torch.device | str | None" = None) -> Any:
    """Load ``model`` (``helpers.clip.CLIP``, ``helpers.detection.DETECTOR``...) with the weights
    ``spec`` names (see the module docstring), on ``device`` (default: the best available).

    ``models_dir`` is the profile's models folder (``ctx.paths.models``), where random weights
    are saved; ``seed`` seeds them. Errors as :func:`resolve`, and the model's own for a copy
    that does not fit it.
    """
    from .config import device as pick_device

    where, options = resolve(model, spec, models_dir=models_dir, seed=seed)
    dev = pick_device(str(device)) if device is not None else pick_device()
    return model.load(where, options, spec=spec, seed=seed, device=dev)


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
