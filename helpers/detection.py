"""Detector plumbing: load torchvision's Faster R-CNN, run it over frames, cache what it finds.

The method that reads the detections (what a text needs, the object score, the oracle, recall)
is written in chapter 02 and generated into :mod:`helpers.objects`.

Detector. torchvision's Faster R-CNN (ResNet-50 FPN). The profile key ``detector.weights``
chooses its weights explicitly, never as a fallback:

- ``"coco"``: torchvision's ``FasterRCNN_ResNet50_FPN_Weights.COCO_V1``, category names from
  the weights' metadata. The checkpoint lives in torch.hub's cache
  (``$TORCH_HOME/hub/checkpoints``); when it is not there and ``download.pytorch.org`` cannot
  be reached, :class:`helpers.config.MissingAssetError` says so (naming ``TORCH_HOME`` and
  ``PROFILE=smoke``).
- ``"random"`` (the smoke profile): the same architecture randomly initialised from a fixed
  seed (:mod:`helpers.smoke.detector`), saved as a state dict under the profile's ``models``
  folder and then loaded through the local-file path below, exactly as a user's own file would be.
- ``"random-full-size"`` (the bench profiles of ``make bench``): the same, except that the region
  proposal network keeps as many proposals as trained weights do, so that a forward pass costs
  what the COCO model's costs (:mod:`helpers.smoke.detector`).
- a path to a ``.pth`` state dict of the same architecture in COCO's 91-entry label space.

Inference. :func:`detect_frames` runs one forward pass per frame (batched, under
``torch.inference_mode``, fp16 autocast on CUDA) and caches every frame's detections on disk
with :func:`helpers.io.compute_cached` (a folder of parquet parts, ``paths.cache / CACHE_FILE``, shared
by every chapter that reads detections), so a rerun does no forward pass at all. The cache
key hashes the weights' identity, the input size (``min_size``, ``max_size``), the region
proposals per frame (``proposals``), the cache's score floor, the numeric precision, and the
frame (story id, frame number, SHA-1 of its encoded bytes). The cache keeps every detection
scoring at least :data:`CACHE_SCORE_FLOOR` (torchvision's own default ``box_score_thresh``);
the study's score threshold is applied when detections are *read*, so it can change without
a new forward pass. A frame that does not decode (:class:`helpers.data.CorruptFrameError`) is skipped, cached as ``"corrupt"``
and counted, never a crash.

Per-frame table. Detectors, the cache and the chain-of-thought "oracle"
(``helpers.objects.ground_truth_frames``) all produce one row per frame with at least
:data:`FRAME_COLUMNS`: ``story_id``, ``frame``, ``status`` (``"ok"`` | ``"corrupt"``) and
``detections``, a JSON list of ``{"label", "score", "box"}`` with ``box`` = x1, y1, x2, y2 in
pixels of the original frame and ``label`` a COCO category name (:func:`dumps_detections`
writes one, :func:`parse_detections` reads it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pandas as pd

from .config import RANDOM_FULL_SIZE, MissingAssetError, Paths, hub_reachable
from .io import compute_cached, file_sha1, stable_hash
from .weights import RANDOM_SPECS, ModelWeights, load_model

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

__all__ = [
    "CACHE_SCORE_FLOOR",
    "DEFAULT_PROPOSALS",
    "CACHE_FILE",
    "FRAME_COLUMNS",
    "DetectorWeightsError",
    "Detector",
    "Detection",
    "DetectionRun",
    "coco_checkpoint_path",
    "DETECTOR",
    "detect_images",
    "detect_frames",
    "DetectorSettings",
    "settings_from_profile",
    "detect_with_profile",
    "profile_detections",
    "dumps_detections",
    "parse_detections",
    "detections_long",
]

#: Detections scoring below this are not kept in the cache (torchvision's default
#: ``box_score_thresh``). Any study threshold at or above it needs no new forward pass.
CACHE_SCORE_FLOOR = 0.05
#: Region proposals per frame for the box head at test time (torchvision's ``rpn_post_nms_top_n_test``;
#: Ren et al. 2015 test with 300). Profiles set ``detector.proposals``; chapter 02 measures recall at each.
DEFAULT_PROPOSALS = 1000
#: The detection cache's file name in a profile's cache folder (``paths.cache / CACHE_FILE``):
#: chapters that read detections pass the same path to :func:`detect_frames`, which then
#: runs no forward pass.
CACHE_FILE = "detections"
#: The columns every per-frame detection table has (see the module docstring).
FRAME_COLUMNS = ("story_id", "frame", "status", "detections")

#: Bumped when the cached row format changes, so old caches are recomputed, not misread.
_CACHE_VERSION = 2
#: Category names of COCO_V1 that are placeholders, never reported as detections.
_PLACEHOLDER_LABELS = frozenset({"__background__", "N/A"})
#: The key of the classifier weight in a Faster R-CNN state dict (its rows = classes).
_CLASSIFIER_KEY = "roi_heads.box_predictor.cls_score.weight"
_N_COCO_CLASSES = 91


class DetectorWeightsError(ValueError):
    """A detector weights file is not a Faster R-CNN ResNet-50 FPN state dict for COCO's labels."""


# ------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Detector:
    """A loaded detector and what identifies its weights.

    ``identity`` enters every cache key: ``torchvision:<checkpoint file>`` for the COCO
    weights (the file name carries torchvision's hash of its bytes), ``file:<sha1>`` for a
    state-dict file (the random weights included). ``categories`` maps a class index to its
    COCO name (91 entries, placeholders included, as in the weights' metadata).
    """

    model: "torch.nn.Module"
    categories: tuple[str, ...]
    identity: str
    source: str
    device: "torch.device"

    @property
    def precision(self) -> str:
        """The numeric precision inference runs in on this device."""
        return "fp16-autocast" if self.device.type == "cuda" else "fp32"


@dataclass(frozen=True)
class Detection:
    """One box: a COCO category name, a score in [0, 1], and x1, y1, x2, y2 in frame pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 5), "box": [round(v, 2) for v in self.box]}


@dataclass(frozen=True)
class DetectionRun:
    """What :func:`detect_frames` returns.

    ``frames`` has one row per requested frame: :data:`FRAME_COLUMNS` plus ``key`` (the
    cache key), ``frame_sha1``, ``error`` (why a corrupt frame was skipped), ``width``,
    ``height`` (pixels; 0 for a corrupt frame), ``seconds`` (its share of the forward pass
    that computed it, measured when it was computed) and ``n_detections``.
    ``forward_passes`` counts the frames this call ran through the network: 0 on a rerun.
    """

    frames: pd.DataFrame
    forward_passes: int

    @property
    def corrupt(self) -> pd.DataFrame:
        """The frames skipped because they do not decode, with the reason."""
        return self.frames.loc[self.frames["status"] == "corrupt", ["story_id", "frame", "error"]]


# ------------------------------------------------------------------------------- weights


def _coco_weights() -> Any:
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return FasterRCNN_ResNet50_FPN_Weights.COCO_V1


def coco_checkpoint_path() -> Path:
    """Where torch.hub keeps the COCO checkpoint: ``$TORCH_HOME/hub/checkpoints/<file of the URL>``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(_coco_weights().url).path).name


def _download_host() -> str:
    return urlparse(_coco_weights().url).hostname or "download.pytorch.org"


def _architecture() -> "torch.nn.Module":
    """Faster R-CNN ResNet-50 FPN for COCO's 91 classes, randomly initialised, nothing downloaded."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=_N_COCO_CLASSES)


def _load_state_dict_file(path: Path) -> "torch.nn.Module":
    """The architecture with the weights of the state-dict file ``path`` (the local-file path).

    Accepts a plain state dict or a torchvision reference-training checkpoint (the state
    dict under ``"model"``). The only keys allowed to be missing are BatchNorm's
    ``num_batches_tracked`` counters, which checkpoints saved from frozen batch norm (as
    torchvision's own COCO file) lack and which inference never reads.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types; all mean "not a state dict"
        raise DetectorWeightsError(f"{path} cannot be read as a PyTorch state dict: {err}") from err
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DetectorWeightsError(f"{path} holds no state dict of tensors "
                                   "(save one with torch.save(model.state_dict(), path))")
    classifier = state.get(_CLASSIFIER_KEY)
    if classifier is None or classifier.shape[0] != _N_COCO_CLASSES:
        found = "no box classifier" if classifier is None else f"a classifier for {classifier.shape[0]} classes"
        raise DetectorWeightsError(f"{path} has {found}: expected Faster R-CNN ResNet-50 FPN weights for COCO's "
                                   f"{_N_COCO_CLASSES} label indices")
    model = _architecture()
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise DetectorWeightsError(f"{path} does not fit Faster R-CNN ResNet-50 FPN: "
                                   f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
    return model


def _build_random(spec: str, models_dir: Path, seed: int) -> Path:
    from .smoke.detector import save_random_detector

    return save_random_detector(models_dir, seed=seed, full_cost=spec == RANDOM_FULL_SIZE)


@dataclass(frozen=True, kw_only=True)
class _TorchvisionDetector(ModelWeights):
    """The detector's row of the table of models: its local copy is a state-dict file, its one
    named weights setting (``"coco"``) comes from torch.hub's cache or download server."""

    def local(self, spec: str) -> Path | None:
        return None if spec == "coco" else Path(spec).expanduser()

    def holds_weights(self, path: Path) -> bool:
        return path.is_file()

    def not_a_copy(self, path: Path) -> Exception:
        return FileNotFoundError(f"detector weights file {path} does not exist (detector.weights must be 'coco', "
                                 "'random', 'random-full-size' or a .pth state dict)")

    def cached(self, spec: str) -> bool:
        return coco_checkpoint_path().is_file()

    def reachable(self) -> bool:
        return hub_reachable(_download_host())

    def missing(self, spec: str) -> MissingAssetError:
        checkpoint = coco_checkpoint_path()
        return MissingAssetError(f"the Faster R-CNN COCO weights ({_coco_weights()}, file {checkpoint.name})",
                                 cache_var="TORCH_HOME", detail=f"torch.hub looks for {checkpoint}.")

    def download_options(self, online: bool) -> dict[str, Any]:
        return {}

    def load(self, where: str | Path, options: dict[str, Any], *, spec: str, seed: int,
             device: "torch.device") -> Detector:
        """The COCO weights through torchvision (downloaded into its cache once, hash-checked), or a
        state-dict file (the random weights included) through :func:`_load_state_dict_file`."""
        weights = _coco_weights()
        if spec == "coco":
            from torchvision.models.detection import fasterrcnn_resnet50_fpn

            checkpoint = coco_checkpoint_path()
            model = fasterrcnn_resnet50_fpn(weights=weights)
            identity, source = f"torchvision:{checkpoint.name}", f"torchvision {weights} ({checkpoint})"
        else:
            path = Path(where)
            if spec in RANDOM_SPECS:
                zeroed = ", RPN box regression zeroed" if spec == RANDOM_FULL_SIZE else ""
                source = f"random initialisation, seed {seed}{zeroed} ({path})"
            else:
                source = f"state dict {path}"
            model = _load_state_dict_file(path)
            identity = f"file:{file_sha1(path)[:16]}"
        return Detector(model=model.to(device).eval(), categories=tuple(weights.meta["categories"]),
                        identity=identity, source=source, device=device)


#: The detector in the table of models: ``helpers.weights.load_model(DETECTOR, spec, models_dir=...)``
#: loads it. Raises :class:`MissingAssetError` for COCO weights neither cached nor downloadable,
#: ``FileNotFoundError`` for a weights file that does not exist, and :class:`DetectorWeightsError`
#: for a file that is not a suitable state dict.
DETECTOR = _TorchvisionDetector(what="detector weights", build_random=_build_random)


# ----------------------------------------------------------------------------- inference


def _autocast(device: "torch.device") -> contextlib.AbstractContextManager:
    import torch

    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()


def _configure(detector: Detector, min_size: int, score_floor: float, proposals: int) -> None:
    """Set the input size, the test-time region proposals and the score floor of the post-processing."""
    if int(min_size) < 1:
        raise ValueError(f"min_size must be a positive number of pixels, got {min_size}")
    if int(proposals) < 1:
        raise ValueError(f"proposals must be a positive number of region proposals, got {proposals}")
    if not 0.0 <= score_floor < 1.0:
        raise ValueError(f"score_floor must be in [0, 1), got {score_floor}")
    detector.model.transform.min_size = (int(min_size),)
    detector.model.rpn._post_nms_top_n = {**detector.model.rpn._post_nms_top_n, "testing": int(proposals)}
    detector.model.roi_heads.score_thresh = float(score_floor)


def _run_model(detector: Detector, images: Sequence["PILImage.Image"]) -> tuple[list[list[Detection]], list[float]]:
    """Detections and seconds of each image, one forward pass per image.

    Images of equal size share a batch; images of different sizes are never batched
    together, because padding them to a common size changes the anchors and so can
    change the result: batching must not change what a frame's detections are.
    """
    import torch
    from torchvision.transforms.functional import to_tensor

    out: list[list[Detection]] = [[] for _ in images]
    seconds = [0.0] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.size, []).append(i)
    for indices in groups.values():
        batch = [to_tensor(images[i]).to(detector.device) for i in indices]
        start = time.perf_counter()
        with torch.inference_mode(), _autocast(detector.device):
            results = detector.model(batch)
        if detector.device.type == "cuda":
            torch.cuda.synchronize(detector.device)
        elapsed = (time.perf_counter() - start) / len(indices)
        for i, result in zip(indices, results):
            seconds[i] = elapsed
            boxes = result["boxes"].float().cpu().tolist()
            scores = result["scores"].float().cpu().tolist()
            labels = [detector.categories[k] for k in result["labels"].cpu().tolist()]
            out[i] = [Detection(label, score, tuple(box)) for label, score, box in zip(labels, scores, boxes)
                      if label not in _PLACEHOLDER_LABELS]
    return out, seconds


def detect_images(detector: Detector, images: Sequence["PILImage.Image"], *, min_size: int,
                  proposals: int = DEFAULT_PROPOSALS, score_floor: float = CACHE_SCORE_FLOOR) -> list[list[Detection]]:
    """Detections of each RGB image (uncached), scoring at least ``score_floor``.

    ``min_size`` is the height torchvision resizes a landscape frame to before the
    network (``model.transform.min_size``; the longer side is capped at ``max_size``,
    1333); ``proposals`` of the RPN's, the most confident after its NMS, go on to the box
    head. Boxes come back in pixels of the image given.
    """
    _configure(detector, min_size, score_floor, proposals)
    return _run_model(detector, images)[0]


def _frame_key(detector: Detector, story_id: str, frame: int, sha1: str, min_size: int, proposals: int,
               score_floor: float) -> str:
    return stable_hash({
        "version": _CACHE_VERSION, "weights": detector.identity, "precision": detector.precision,
        "min_size": int(min_size), "max_size": int(detector.model.transform.max_size), "proposals": int(proposals),
        "score_floor": float(score_floor), "story_id": str(story_id), "frame": int(frame), "frame_sha1": sha1,
    })


def detect_frames(detector: Detector, frames: Mapping[tuple[str, int], bytes], cache_path: str | os.PathLike, *,
                  min_size: int, batch_size: int, proposals: int = DEFAULT_PROPOSALS,
                  score_floor: float = CACHE_SCORE_FLOOR) -> DetectionRun:
    """Detect objects in every frame, computing only what the cache at ``cache_path`` lacks.

    ``frames`` maps ``(story_id, frame)`` to the frame's encoded bytes (as
    ``helpers.data.pair_frames`` returns them; ``b""`` for a frame without bytes).
    ``min_size`` and ``proposals`` are :func:`detect_images`'s. Frames
    are processed in ``(story_id, frame)`` order, ``batch_size`` at a time; the cache is
    flushed as it goes, so an interrupted run resumes. See :class:`DetectionRun`.
    """
    from .data import CorruptFrameError, frame_image

    if not frames:
        raise ValueError("no frames to detect: the frames mapping is empty")
    _configure(detector, min_size, score_floor, proposals)
    names = sorted(frames, key=lambda k: (str(k[0]), int(k[1])))
    sha1s = {name: hashlib.sha1(frames[name]).hexdigest() for name in names}
    keys = [_frame_key(detector, s, f, sha1s[(s, f)], min_size, proposals, score_floor) for s, f in names]
    name_of_key = dict(zip(keys, names))
    forward_passes = 0

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        nonlocal forward_passes
        rows, images, decoded = [], [], []
        for key in batch:
            story_id, frame = name_of_key[key]
            row = {"story_id": str(story_id), "frame": int(frame), "frame_sha1": sha1s[(story_id, frame)],
                   "weights": detector.identity, "min_size": int(min_size), "proposals": int(proposals),
                   "score_floor": float(score_floor), "status": "ok", "error": "", "width": 0, "height": 0,
                   "seconds": 0.0, "n_detections": 0, "detections": "[]"}
            try:
                image = frame_image([frames[(story_id, frame)]], 1)
            except CorruptFrameError as err:  # the decoder's own words, not the list position given here
                row.update(status="corrupt", error=str(err.__cause__ or err)[:300])
            else:
                row.update(width=image.width, height=image.height)
                images.append(image)
                decoded.append(row)
            rows.append(row)
        if images:
            detections, seconds = _run_model(detector, images)
            forward_passes += len(images)
            for row, found, secs in zip(decoded, detections, seconds):
                row.update(seconds=secs, n_detections=len(found), detections=dumps_detections(found))
        return rows

    desc = f"detecting (min_size {min_size}, {proposals} proposals)"
    table, _ = compute_cached(cache_path, keys, compute, batch_size=batch_size, desc=desc)
    return DetectionRun(frames=table, forward_passes=forward_passes)


@dataclass(frozen=True)
class DetectorSettings:
    """How a profile runs the detector (its ``detector`` section): the input size (``min_size``),
    region ``proposals`` per frame, frames per forward pass (``batch_size``) and the score a
    detection needs to count (``score_threshold``; the cache keeps every score above
    :data:`CACHE_SCORE_FLOOR`, so this one is applied when the detections are read)."""

    min_size: int
    proposals: int
    batch_size: int
    score_threshold: float


def settings_from_profile(cfg: Mapping[str, Any]) -> DetectorSettings:
    """The detector's run settings of the profile ``cfg`` (the whole profile): the one place they are read."""
    spec = cfg["detector"]
    return DetectorSettings(min_size=int(spec["min_size"]), proposals=int(spec["proposals"]),
                            batch_size=int(spec["batch_size"]), score_threshold=float(spec["score_threshold"]))


def detect_with_profile(detector: Detector, frames: Mapping[tuple[str, int], bytes], cfg: Mapping[str, Any],
                        cache_dir: str | os.PathLike) -> DetectionRun:
    """:func:`detect_frames` of ``frames`` at the profile's run settings, cached in ``cache_dir / CACHE_FILE``
    (the cache every chapter shares, so a chapter after 02 reads what 02 computed)."""
    settings = settings_from_profile(cfg)
    return detect_frames(detector, frames, Path(cache_dir) / CACHE_FILE, min_size=settings.min_size,
                         proposals=settings.proposals, batch_size=settings.batch_size)


def profile_detections(cfg: Mapping[str, Any], paths: Paths, frames: Mapping[tuple[str, int], bytes], *,
                       device: "torch.device | str | None" = None) -> tuple[Detector, DetectionRun]:
    """The profile's detector and its detections of ``frames`` at the profile's run settings
    (:func:`detect_with_profile`).

    ``cfg`` is the whole profile, ``paths`` its output folders. Detections come from the
    profile's cache (``paths.cache / CACHE_FILE``), so any chapter after 02 reads what 02
    computed without a forward pass.
    """
    detector = load_model(DETECTOR, cfg["detector"]["weights"], models_dir=paths.models, seed=int(cfg.get("seed", 42)),
                          device=device)
    return detector, detect_with_profile(detector, frames, cfg, paths.cache)


def dumps_detections(detections: Iterable[Detection]) -> str:
    """The ``detections`` JSON cell of a per-frame table (what :func:`parse_detections` reads)."""
    return json.dumps([d.to_json() for d in detections], separators=(",", ":"))


def parse_detections(text: str, threshold: float = 0.0) -> list[Detection]:
    """The detections of a ``detections`` JSON cell scoring at least ``threshold``."""
    return [Detection(d["label"], float(d["score"]), tuple(float(v) for v in d["box"]))
            for d in json.loads(text) if float(d["score"]) >= threshold]


def detections_long(frames: pd.DataFrame, threshold: float = 0.0) -> pd.DataFrame:
    """One row per detection scoring at least ``threshold`` in the decoded frames:
    ``story_id``, ``frame``, ``label``, ``score``, ``x1``, ``y1``, ``x2``, ``y2``."""
    rows = [
        {"story_id": sid, "frame": int(frame), "label": d.label, "score": d.score,
         "x1": d.box[0], "y1": d.box[1], "x2": d.box[2], "y2": d.box[3]}
        for sid, frame, status, cell in frames[list(FRAME_COLUMNS)].itertuples(index=False)
        if status == "ok"
        for d in parse_detections(cell, threshold)
    ]
    return pd.DataFrame(rows, columns=["story_id", "frame", "label", "score", "x1", "y1", "x2", "y2"])
