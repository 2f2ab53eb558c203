"""Object evidence: what a COCO detector finds in a frame, and which COCO things the text needs.

Detector. torchvision's Faster R-CNN (ResNet-50 FPN). The profile key ``detector.weights``
chooses its weights explicitly, never as a fallback:

- ``"coco"``: torchvision's ``FasterRCNN_ResNet50_FPN_Weights.COCO_V1``, category names from
  the weights' metadata. The checkpoint lives in torch.hub's cache
  (``$TORCH_HOME/hub/checkpoints``); when it is not there and ``download.pytorch.org`` cannot
  be reached, :class:`helpers.config.MissingAssetError` says so (naming ``TORCH_HOME`` and
  ``PROFILE=smoke``).
- ``"random"`` (the smoke profile): the same architecture randomly initialised from a fixed
  seed, saved as a state dict under the profile's ``models`` folder and then loaded through
  the local-file path below, exactly as a user's own file would be.
- a path to a ``.pth`` state dict of the same architecture in COCO's 91-entry label space.

Inference. :func:`detect_frames` runs one forward pass per frame (batched, under
``torch.inference_mode``, fp16 autocast on CUDA) and caches every frame's detections on disk
with :func:`helpers.io.compute_cached` (a folder of parquet parts, ``paths.cache / CACHE_FILE``, shared
by every chapter that reads detections), so a rerun does no forward pass at all. The cache
key hashes the weights' identity, the input size (``min_size``, ``max_size``), the cache's
score floor, the numeric precision, and the frame (story id, frame number, SHA-1 of its
encoded bytes). The cache keeps every detection scoring at least :data:`CACHE_SCORE_FLOOR`
(torchvision's own default ``box_score_thresh``); the study's score threshold is applied
when detections are *read*, so it can change without a new forward pass. A frame that does
not decode (:class:`helpers.data.CorruptFrameError`) is skipped, cached as ``"corrupt"``
and counted, never a crash.

Per-frame table. Detectors, the cache and the chain-of-thought "oracle"
(:func:`ground_truth_frames`) all produce one row per frame with at least
:data:`FRAME_COLUMNS`: ``story_id``, ``frame``, ``status`` (``"ok"`` | ``"corrupt"``) and
``detections``, a JSON list of ``{"label", "score", "box"}`` with ``box`` = x1, y1, x2, y2 in
pixels of the original frame and ``label`` a COCO category name.

Evidence. :func:`needed_categories` lists the COCO categories a text names;
:func:`object_evidence` scores a frame's detections against them: ``object_score`` is the
mean, over the needed categories, of the best detection score of that category at or
above the threshold (0 for a category not found), i.e. a confidence-weighted share of
what the text needs that the frame shows. A text that names no COCO category gives no
evidence either way: ``object_informative`` is False and ``object_score`` is
:data:`UNINFORMATIVE_SCORE` (0.0), a placeholder the fusion head can only use together with
the flag, not a pretend "half found" 0.5.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from .config import MissingAssetError, Paths, hub_reachable
from .io import atomic_write_bytes, compute_cached, file_sha1, stable_hash
from .lexicon import NOT_COCO, PERSON_PRONOUNS, char_category, to_coco
from .pairs import NEGATIVE_TYPES

if TYPE_CHECKING:
    import matplotlib.axes
    import matplotlib.figure
    import torch
    from PIL import Image as PILImage

    from .tags import ChainOfThought, Mention, ParsedStory, Segment

__all__ = [
    "LABEL_NOISE_SCORE",
    "swapped_category",
    "hidden_positives",
    "CACHE_SCORE_FLOOR",
    "CACHE_FILE",
    "profile_detections",
    "UNINFORMATIVE_SCORE",
    "IOU_MATCH",
    "FRAME_COLUMNS",
    "OBJECT_COLUMNS",
    "NEGATIVE_TYPES",
    "DetectorWeightsError",
    "Detector",
    "Detection",
    "DetectionRun",
    "coco_checkpoint_path",
    "detector_weights_available",
    "save_random_detector",
    "load_detector",
    "detect_images",
    "detect_frames",
    "parse_detections",
    "detections_long",
    "ground_truth_frames",
    "detection_recall",
    "min_size_sweep",
    "min_size_note",
    "RECALL_SHORTFALL",
    "character_descriptions",
    "mention_categories",
    "mention_category",
    "needed_categories",
    "needed_category_table",
    "object_evidence",
    "object_features",
    "auc_by_negative_type",
    "plot_detections",
    "plot_detection_samples",
    "plot_min_size_sweep",
    "plot_score_by_group",
]

#: Detections scoring below this are not kept in the cache (torchvision's default
#: ``box_score_thresh``). Any study threshold at or above it needs no new forward pass.
CACHE_SCORE_FLOOR = 0.05
#: The detection cache's file name in a profile's cache folder (``paths.cache / CACHE_FILE``):
#: chapters that read detections pass the same path to :func:`detect_frames`, which then
#: runs no forward pass.
CACHE_FILE = "detections"
#: ``object_score`` of a pair whose text needs no COCO category (``object_informative`` False).
UNINFORMATIVE_SCORE = 0.0
#: A ground-truth box counts as found by a detection of its category overlapping it this much.
IOU_MATCH = 0.5
#: The columns every per-frame detection table has (see the module docstring).
FRAME_COLUMNS = ("story_id", "frame", "status", "detections")
#: The columns of the ``objects`` feature part, after ``pair_id``.
OBJECT_COLUMNS = ("object_score", "object_informative", "objects_needed", "objects_found", "objects_missing")

#: Bumped when the cached row format changes, so old caches are recomputed, not misread.
_CACHE_VERSION = 1
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


def detector_weights_available(spec: str) -> bool:
    """Whether :func:`load_detector` can get the weights ``spec`` names, without loading them.

    ``"random"``: always (they are generated). ``"coco"``: the checkpoint is in torch.hub's
    cache or its download server answers. A path: the file exists.
    """
    if spec == "random":
        return True
    if spec == "coco":
        return coco_checkpoint_path().is_file() or hub_reachable(_download_host())
    return Path(spec).expanduser().is_file()


def _architecture() -> "torch.nn.Module":
    """Faster R-CNN ResNet-50 FPN for COCO's 91 classes, randomly initialised, nothing downloaded."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=_N_COCO_CLASSES)


def save_random_detector(models_dir: str | os.PathLike, *, seed: int) -> Path:
    """Save the randomly initialised architecture (seeded) as a state dict; return its path.

    The file is ``models_dir/fasterrcnn_resnet50_fpn_random_seed<seed>.pth``. It is written
    atomically and only when absent: the same seed gives the same weights. The global
    random state is left as it was.
    """
    import io

    import torch

    path = Path(models_dir) / f"fasterrcnn_resnet50_fpn_random_seed{seed}.pth"
    if path.is_file():
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _architecture()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return atomic_write_bytes(path, buffer.getvalue())


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


def load_detector(spec: str, *, models_dir: str | os.PathLike, seed: int = 42,
                  device: "torch.device | str | None" = None) -> Detector:
    """Load the detector the profile's ``detector.weights`` names (see the module docstring).

    ``models_dir`` is the profile's models folder (``ctx.paths.models``), where ``"random"``
    saves its weights. Raises :class:`MissingAssetError` for COCO weights neither cached nor
    downloadable, ``FileNotFoundError`` for a weights file that does not exist, and
    :class:`DetectorWeightsError` for a file that is not a suitable state dict.
    """
    from .config import device as pick_device

    weights = _coco_weights()
    categories = tuple(weights.meta["categories"])
    if spec == "coco":
        checkpoint = coco_checkpoint_path()
        if not checkpoint.is_file() and not hub_reachable(_download_host()):
            raise MissingAssetError(f"the Faster R-CNN COCO weights ({weights}, file {checkpoint.name})",
                                    cache_var="TORCH_HOME", detail=f"torch.hub looks for {checkpoint}.")
        from torchvision.models.detection import fasterrcnn_resnet50_fpn

        model = fasterrcnn_resnet50_fpn(weights=weights)  # downloads into the cache once, hash-checked
        identity, source = f"torchvision:{checkpoint.name}", f"torchvision {weights} ({checkpoint})"
    else:
        if spec == "random":
            path = save_random_detector(models_dir, seed=seed)
            source = f"random initialisation, seed {seed} ({path})"
        else:
            path = Path(spec).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"detector weights file {path} does not exist "
                                        "(detector.weights must be 'coco', 'random' or a .pth state dict)")
            source = f"state dict {path}"
        model = _load_state_dict_file(path)
        identity = f"file:{file_sha1(path)[:16]}"
    dev = pick_device(str(device)) if device is not None else pick_device()
    return Detector(model=model.to(dev).eval(), categories=categories, identity=identity, source=source, device=dev)


# ----------------------------------------------------------------------------- inference


def _autocast(device: "torch.device") -> contextlib.AbstractContextManager:
    import torch

    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()


def _configure(detector: Detector, min_size: int, score_floor: float) -> None:
    """Set the input size and the score floor of the model's post-processing."""
    if int(min_size) < 1:
        raise ValueError(f"min_size must be a positive number of pixels, got {min_size}")
    if not 0.0 <= score_floor < 1.0:
        raise ValueError(f"score_floor must be in [0, 1), got {score_floor}")
    detector.model.transform.min_size = (int(min_size),)
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
                  score_floor: float = CACHE_SCORE_FLOOR) -> list[list[Detection]]:
    """Detections of each RGB image (uncached), scoring at least ``score_floor``.

    ``min_size`` is the height torchvision resizes a landscape frame to before the
    network (``model.transform.min_size``; the longer side is capped at ``max_size``,
    1333). Boxes come back in pixels of the image given.
    """
    _configure(detector, min_size, score_floor)
    return _run_model(detector, images)[0]


def _frame_key(detector: Detector, story_id: str, frame: int, sha1: str, min_size: int, score_floor: float) -> str:
    return stable_hash({
        "version": _CACHE_VERSION, "weights": detector.identity, "precision": detector.precision,
        "min_size": int(min_size), "max_size": int(detector.model.transform.max_size),
        "score_floor": float(score_floor), "story_id": str(story_id), "frame": int(frame), "frame_sha1": sha1,
    })


def detect_frames(detector: Detector, frames: Mapping[tuple[str, int], bytes], cache_path: str | os.PathLike, *,
                  min_size: int, batch_size: int, score_floor: float = CACHE_SCORE_FLOOR) -> DetectionRun:
    """Detect objects in every frame, computing only what the cache at ``cache_path`` lacks.

    ``frames`` maps ``(story_id, frame)`` to the frame's encoded bytes (as
    ``helpers.data.pair_frames`` returns them; ``b""`` for a frame without bytes). Frames
    are processed in ``(story_id, frame)`` order, ``batch_size`` at a time; the cache is
    flushed as it goes, so an interrupted run resumes. See :class:`DetectionRun`.
    """
    from .data import CorruptFrameError, frame_image

    if not frames:
        raise ValueError("no frames to detect: the frames mapping is empty")
    _configure(detector, min_size, score_floor)
    names = sorted(frames, key=lambda k: (str(k[0]), int(k[1])))
    sha1s = {name: hashlib.sha1(frames[name]).hexdigest() for name in names}
    keys = [_frame_key(detector, sid, frame, sha1s[(sid, frame)], min_size, score_floor) for sid, frame in names]
    name_of_key = dict(zip(keys, names))
    forward_passes = 0

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        nonlocal forward_passes
        rows, images, decoded = [], [], []
        for key in batch:
            story_id, frame = name_of_key[key]
            row = {"story_id": str(story_id), "frame": int(frame), "frame_sha1": sha1s[(story_id, frame)],
                   "weights": detector.identity, "min_size": int(min_size), "score_floor": float(score_floor),
                   "status": "ok", "error": "", "width": 0, "height": 0, "seconds": 0.0,
                   "n_detections": 0, "detections": "[]"}
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
                row.update(seconds=secs, n_detections=len(found), detections=_dumps(found))
        return rows

    table, _ = compute_cached(cache_path, keys, compute, batch_size=batch_size, desc=f"detecting (min_size {min_size})")
    return DetectionRun(frames=table, forward_passes=forward_passes)


def profile_detections(cfg: Mapping[str, Any], paths: Paths, frames: Mapping[tuple[str, int], bytes], *,
                       device: "torch.device | str | None" = None) -> tuple[Detector, DetectionRun]:
    """The profile's detector and its detections of ``frames`` at the profile's ``min_size``.

    ``cfg`` is the whole profile, ``paths`` its output folders. Detections come from the
    profile's cache (``paths.cache / CACHE_FILE``), so any chapter after 02 reads what 02
    computed without a forward pass.
    """
    spec = cfg["detector"]
    detector = load_detector(spec["weights"], models_dir=paths.models, seed=int(cfg.get("seed", 42)), device=device)
    run = detect_frames(detector, frames, paths.cache / CACHE_FILE, min_size=int(spec["min_size"]),
                        batch_size=int(spec["batch_size"]))
    return detector, run


def _dumps(detections: Iterable[Detection]) -> str:
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


# ------------------------------------------------------------------------ ground truth


def ground_truth_frames(stories: Iterable["ParsedStory"]) -> pd.DataFrame:
    """The chain-of-thought boxes as a detector's output: the oracle, every score 1.0.

    Characters get :func:`helpers.lexicon.char_category` of their description (a robot or
    a statue gets none), objects and background elements :func:`helpers.lexicon.to_coco` of
    theirs. Entities without a box or a COCO category are left out and counted: besides
    :data:`FRAME_COLUMNS`, ``n_entities`` (rows with a box) and ``n_unmapped`` (of those,
    without a COCO category).
    """
    rows = []
    for story in stories:
        for number, annotation in sorted(story.cot.frames.items()):
            found, n_entities = [], 0
            for entities, categorise in ((annotation.characters, char_category), (annotation.objects, to_coco)):
                for entity in entities:
                    if entity.box is None:
                        continue
                    n_entities += 1
                    if (category := categorise(entity.description)) is not None:
                        found.append(Detection(category, 1.0, tuple(float(v) for v in entity.box)))
            rows.append({"story_id": story.story_id, "frame": int(number), "status": "ok", "detections": _dumps(found),
                         "n_entities": n_entities, "n_unmapped": n_entities - len(found)})
    return pd.DataFrame(rows, columns=[*FRAME_COLUMNS, "n_entities", "n_unmapped"])


def detection_recall(predicted: pd.DataFrame, ground_truth: pd.DataFrame, *, threshold: float,
                     iou: float = IOU_MATCH) -> pd.DataFrame:
    """Per COCO category, the share of ground-truth boxes a detection of that category finds.

    Only frames decoded in ``predicted`` count. Within a frame and category, detections
    scoring at least ``threshold`` are taken in descending score order, each matching the
    unmatched ground-truth box it overlaps most if that IoU (``torchvision.ops.box_iou``)
    is at least ``iou``: one detection finds at most one box. Columns: ``category``,
    ``ground_truth`` (boxes), ``predicted`` (detections at the threshold in those frames),
    ``found``, ``recall``; sorted by ``ground_truth``, then a final ``"all categories"`` row.
    """
    decoded = predicted[predicted["status"] == "ok"]
    pred = _by_frame_and_label(detections_long(decoded, threshold))
    truth = _by_frame_and_label(detections_long(ground_truth.merge(decoded[["story_id", "frame"]])))
    columns = ["ground_truth", "predicted", "found"]
    counts = pd.DataFrame(0, index=sorted({label for _, label in (*truth, *pred)}), columns=columns)
    for (frame_key, label), gt_boxes in truth.items():
        counts.loc[label, "ground_truth"] += len(gt_boxes)
        counts.loc[label, "found"] += _matched(pred.get((frame_key, label), np.zeros((0, 5))), gt_boxes[:, 1:], iou)
    for (_, label), boxes in pred.items():
        counts.loc[label, "predicted"] += len(boxes)
    total = pd.DataFrame([counts.sum()], index=["all categories"])
    table = counts[counts["ground_truth"] > 0].sort_values("ground_truth", ascending=False, kind="stable")
    table = pd.concat([table, total]).rename_axis("category").reset_index().astype(dict.fromkeys(columns, int))
    table["recall"] = table["found"] / table["ground_truth"].where(table["ground_truth"] > 0)
    return table


def _matched(detections: np.ndarray, boxes: np.ndarray, iou: float) -> int:
    """How many ``boxes`` (x1, y1, x2, y2) the ``detections`` (score, x1, y1, x2, y2) find,
    each detection in descending score order taking the free box it overlaps most."""
    import torch
    from torchvision.ops import box_iou

    if not len(detections) or not len(boxes):
        return 0
    overlaps = box_iou(torch.tensor(detections[:, 1:]), torch.tensor(boxes))  # copies: pandas arrays are read-only
    free = torch.ones(len(boxes), dtype=torch.bool)
    for row in np.argsort(-detections[:, 0], kind="stable"):
        candidates = overlaps[row].masked_fill(~free, -1.0)
        best = int(candidates.argmax())
        if candidates[best] >= iou:
            free[best] = False
    return int((~free).sum())


def _by_frame_and_label(long: pd.DataFrame) -> dict[tuple[tuple[str, int], str], np.ndarray]:
    """(frame, label) -> array of rows (score, x1, y1, x2, y2)."""
    return {
        ((sid, int(frame)), label): group[["score", "x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
        for (sid, frame, label), group in long.groupby(["story_id", "frame", "label"], sort=False)
    }


#: How far (absolute) recall at the profile's ``min_size`` may fall below the sweep's best
#: before chapter 02 says the choice should be revisited.
RECALL_SHORTFALL = 0.05


def min_size_note(sweep: pd.DataFrame, min_size: int, *, profile: str, shortfall: float = RECALL_SHORTFALL) -> str:
    """A sentence (Markdown) on whether the profile's ``min_size`` holds up in ``sweep``
    (:func:`min_size_sweep`'s table): a bold note when its recall falls ``shortfall`` or
    more below the best size's, or when the sweep does not include it."""
    measured = sweep.dropna(subset=["recall"])
    if measured.empty:
        return "The sweep could not measure recall, so it cannot confirm the profile's input size."
    best = measured.loc[measured["recall"].idxmax()]
    chosen = measured[measured["min_size"] == min_size]
    if chosen.empty:
        return (f"**Note:** the sweep does not measure this profile's min_size {min_size}; add it to "
                f"`detector.min_size_sweep` in `profiles/{profile}.yaml` to confirm the choice.")
    recall, gap = float(chosen["recall"].iloc[0]), float(best["recall"]) - float(chosen["recall"].iloc[0])
    cost = float(best["seconds_per_frame"]) / max(float(chosen["seconds_per_frame"].iloc[0]), 1e-9)
    if gap >= shortfall:
        return (f"**Note: at this profile's min_size {min_size} recall is {recall:.1%}, {gap:.1%} below the best, "
                f"{float(best['recall']):.1%} at min_size {int(best['min_size'])}** (which costs {cost:.1f}x the time "
                f"per frame here). The input size was chosen for its cost; on these frames a larger one finds clearly "
                f"more, so consider raising `detector.min_size` in `profiles/{profile}.yaml`.")
    return (f"At this profile's min_size {min_size} recall is {recall:.1%}, within {shortfall:.0%} of the best "
            f"({float(best['recall']):.1%} at min_size {int(best['min_size'])}): the sweep confirms the choice.")


def min_size_sweep(detector: Detector, frames: Mapping[tuple[str, int], bytes], ground_truth: pd.DataFrame,
                   cache_path: str | os.PathLike, *, sizes: Sequence[int], threshold: float,
                   batch_size: int) -> pd.DataFrame:
    """Recall of the ground-truth boxes and time per frame at each input size in ``sizes``.

    Each size is an ordinary cached :func:`detect_frames` run (a size already computed costs
    nothing), so ``seconds_per_frame`` is the time measured when that size was computed,
    on whatever device computed it. ``input_height`` is the mean height the network saw
    after torchvision's resize (``min_size`` for the shorter side, the longer side capped at
    ``max_size``). Columns: ``min_size``, ``input_height``, ``frames``, ``computed_now``,
    ``seconds_per_frame``, ``recall``.
    """
    rows = []
    max_size = int(detector.model.transform.max_size)
    for size in sizes:
        run = detect_frames(detector, frames, cache_path, min_size=size, batch_size=batch_size)
        ok = run.frames[run.frames["status"] == "ok"]
        scale = np.minimum(size / ok[["width", "height"]].min(axis=1), max_size / ok[["width", "height"]].max(axis=1))
        recall = detection_recall(run.frames, ground_truth, threshold=threshold)
        rows.append({"min_size": int(size), "input_height": float((ok["height"] * scale).mean()), "frames": len(ok),
                     "computed_now": run.forward_passes, "seconds_per_frame": float(ok["seconds"].mean()),
                     "recall": float(recall["recall"].iloc[-1])})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- evidence


#: Words that start a noun phrase but never name or modify a thing: they pair with nothing.
_DETERMINERS = frozenset("a an the this that these those their its my your our some any several many few each "
                         "every both all no another".split())
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\[\]\"“”…]|\s[-–—]+\s")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*['’]?")


def _is_non_coco_noun(word: str) -> bool:
    """Whether the lower-case ``word`` (or its plural-stripped form) is a noun the lexicon rules out of COCO."""
    return bool({word, word.removesuffix("s"), word.removesuffix("es")} & NOT_COCO)


def _noun_categories(text: str) -> list[str]:
    """COCO categories named in free text, read left to right within each clause.

    A pair of words is tried first, so compounds win over their parts ("hot dog", "cell
    phone", "watches television"); a single word counts unless it modifies a following
    noun the lexicon knows to be outside COCO ("car door", "orange light"). Determiners
    pair with nothing ("a car door" is not "a car" + "door"); personal pronouns (he, she,
    his, ...: :data:`helpers.lexicon.PERSON_PRONOUNS`) need a person.
    """
    found = []
    for clause in _CLAUSE_BREAK.split(text):
        words = _WORD.findall(clause)
        i = 0
        while i < len(words):
            word, following = words[i].lower(), (words[i + 1].lower() if i + 1 < len(words) else "")
            if word in PERSON_PRONOUNS:
                found.append("person")
            elif word in _DETERMINERS:
                pass
            elif following and (pair := to_coco(f"{word} {following}")) is not None:
                found.append(pair)
                i += 1  # the pair's second word is used up
            elif (single := to_coco(word)) is not None and not _is_non_coco_noun(following):
                found.append(single)
            i += 1
    return found


def character_descriptions(cot: "ChainOfThought", frame: int | None = None) -> dict[str, str]:
    """Each character id's chain-of-thought description: its description in ``frame`` when
    the character has a row there, else its first description in frame order."""
    out: dict[str, str] = {}
    for number in sorted(cot.frames):
        for entity in cot.frames[number].characters:
            if entity.description and (entity.id not in out or number == frame):
                out[entity.id] = entity.description
    return out


def mention_categories(mention: "Mention", char_descriptions: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The COCO categories one tagged mention names, as the object evidence reads it.

    The mention's surface text decides first (:func:`helpers.lexicon.to_coco`): a mention
    naming a COCO thing names that one category, whatever its ids. Otherwise each of its
    ``char`` ids names what its chain-of-thought description says it is
    (``char_descriptions``: id -> description; :func:`helpers.lexicon.char_category`), or,
    without a description, what the mention's own text says (a person unless it says
    otherwise). The categories come in the order of the ids, without repeats; none when the
    mention names nothing COCO has ("the statue", an ``obj`` id whose text is not COCO).
    """
    named = to_coco(mention.text)
    if named is not None:
        return (named,)
    descriptions = char_descriptions or {}
    categories = (char_category(descriptions.get(i, mention.text)) for i in mention.ids if i.startswith("char"))
    return tuple(dict.fromkeys(c for c in categories if c is not None))


def mention_category(mention: "Mention", char_descriptions: Mapping[str, str] | None = None) -> str | None:
    """The COCO category one tagged mention names: the first of :func:`mention_categories`
    (a mention of several characters, "them", names the category of the first that has one),
    or None when it names none."""
    return next(iter(mention_categories(mention, char_descriptions)), None)


def needed_categories(segment: "Segment | str", char_descriptions: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The COCO categories a text needs the frame to show, sorted.

    ``segment`` is a parsed frame segment (``helpers.data.Segment``) or any plain text.
    Tagged ``<gdo>`` mentions need what they name (:func:`mention_categories`): read through
    their surface text (:func:`helpers.lexicon.to_coco`), a mention naming a COCO thing needs
    it, whatever its id. A character mention whose text names nothing ("James", "him") needs what its
    chain-of-thought description says it is (``char_descriptions``: id -> description; a
    robot or a statue needs nothing); without a description its own text decides, a person
    unless it says otherwise ("the droid"). The rest of the text, and all of a plain text,
    is scanned for COCO nouns (see :func:`_noun_categories`).
    """
    if isinstance(segment, str):
        return tuple(sorted(set(_noun_categories(segment))))
    needed: set[str] = set()
    rest, cursor = [], 0
    for mention in sorted(segment.mentions, key=lambda m: m.start):
        rest.append(segment.plain[cursor:mention.start])
        rest.append(" ; ")  # a clause break: words either side of a mention never pair up
        cursor = max(cursor, mention.end)
        needed.update(mention_categories(mention, char_descriptions))
    rest.append(segment.plain[cursor:])
    needed.update(_noun_categories("".join(rest)))
    return tuple(sorted(needed))


def needed_category_table(stories: Iterable["ParsedStory"]) -> pd.DataFrame:
    """What every frame segment of ``stories`` needs: one row per (``story_id``, ``frame``,
    ``category``), and one row with ``category`` None for a segment that needs nothing."""
    rows = []
    for story in stories:
        for segment in story.segments:
            needed = needed_categories(segment, character_descriptions(story.cot, segment.frame)) or (None,)
            rows += [{"story_id": story.story_id, "frame": segment.frame, "category": c} for c in needed]
    return pd.DataFrame(rows, columns=["story_id", "frame", "category"])


def object_evidence(needed: Sequence[str], detections: Sequence[Detection], threshold: float) -> dict[str, Any]:
    """Score a frame's detections against the categories a text needs.

    Returns ``object_score`` (mean over ``needed`` of the best score of a detection of
    that category at or above ``threshold``, 0 when there is none), ``object_informative``
    (False when nothing is needed; the score is then :data:`UNINFORMATIVE_SCORE`),
    ``objects_needed``, ``objects_found`` (one ``{"category", "score", "box"}`` per found
    category, its best detection) and ``objects_missing`` (categories not found).
    """
    needed = sorted(set(needed))
    best: dict[str, Detection] = {}
    for d in detections:
        if d.score >= threshold and d.label in needed and (d.label not in best or d.score > best[d.label].score):
            best[d.label] = d
    found = [{"category": c, "score": round(best[c].score, 5), "box": [round(v, 2) for v in best[c].box]}
             for c in needed if c in best]
    score = sum(best[c].score for c in best) / len(needed) if needed else UNINFORMATIVE_SCORE
    return {"object_score": float(score), "object_informative": bool(needed), "objects_needed": needed,
            "objects_found": found, "objects_missing": [c for c in needed if c not in best]}


def object_features(pairs: pd.DataFrame, detections: pd.DataFrame, stories: Iterable["ParsedStory"], *,
                    threshold: float, oracle: pd.DataFrame | None = None, read_tags: bool = False) -> pd.DataFrame:
    """The ``objects`` feature part: one row per pair, for ``helpers.features.write_part``.

    ``detections`` is a per-frame table (:data:`FRAME_COLUMNS`) covering the pairs' frames;
    each frame's detections are parsed once and reused by all its pairs. A pair's needs
    come from its plain ``text``, exactly as :mod:`helpers.verify` reads a user's text, so
    the head is trained on the inputs it is later given. With ``read_tags`` (chapter 09's
    ablation) they come from its ``tagged_text`` instead, with character descriptions from
    the chain of thought of the story the text came from (``source_story_id`` /
    ``source_frame``). Columns: ``pair_id`` and
    :data:`OBJECT_COLUMNS` (lists as JSON strings); with ``oracle`` (a per-frame table such
    as :func:`ground_truth_frames`), also ``object_score_oracle``, the same score against
    the oracle's boxes. A pair whose frame did not decode is uninformative, with nothing
    found or missing. Raises ``ValueError`` when ``detections`` lacks a pair's frame.
    """
    from tqdm.auto import tqdm

    from .tags import parse_segment

    def per_frame(table: pd.DataFrame) -> dict[tuple[str, int], list[Detection]]:
        ok = table.loc[table["status"] == "ok", ["story_id", "frame", "detections"]]
        return {(str(s), int(f)): parse_detections(cell, threshold) for s, f, cell in ok.itertuples(index=False)}

    found_by_frame = per_frame(detections)
    frame_keys = set(zip(pairs["story_id"].astype(str), pairs["frame"].astype(int)))
    if missing := sorted(frame_keys - set(zip(detections["story_id"].astype(str), detections["frame"].astype(int)))):
        raise ValueError(f"the detections table lacks {len(missing)} frames of the pairs, e.g. {missing[:3]}")
    oracle_by_frame = per_frame(oracle) if oracle is not None else None
    cots = {s.story_id: s.cot for s in stories}
    rows = []
    columns = ["pair_id", "story_id", "frame", "text", "tagged_text", "source_story_id", "source_frame"]
    for pair_id, story_id, frame, text, tagged, source_story, source_frame in tqdm(
        pairs[columns].itertuples(index=False), total=len(pairs), desc="object evidence", unit="pair"
    ):
        if read_tags and isinstance(tagged, str) and tagged:
            cot = cots.get(str(source_story))
            descriptions = character_descriptions(cot, int(source_frame)) if cot is not None else {}
            needed = needed_categories(parse_segment(tagged, int(source_frame)), descriptions)
        else:
            needed = needed_categories(str(text))
        frame_key = (str(story_id), int(frame))
        if frame_key in found_by_frame:
            evidence = object_evidence(needed, found_by_frame[frame_key], threshold)
        else:
            evidence = {"object_score": UNINFORMATIVE_SCORE, "object_informative": False,
                        "objects_needed": list(needed), "objects_found": [], "objects_missing": []}
        row = {"pair_id": pair_id, **{k: evidence[k] for k in OBJECT_COLUMNS}}
        for k in ("objects_needed", "objects_found", "objects_missing"):
            row[k] = json.dumps(row[k])
        if oracle_by_frame is not None:
            oracle_boxes = oracle_by_frame.get(frame_key, [])
            row["object_score_oracle"] = object_evidence(needed, oracle_boxes, threshold)["object_score"]
        rows.append(row)
    extra = ["object_score_oracle"] if oracle is not None else []
    return pd.DataFrame(rows, columns=["pair_id", *OBJECT_COLUMNS, *extra])


# ---------------------------------------------------------------------------- label noise

#: A detection at least this confident of a swapped-in category counts as the object being there.
LABEL_NOISE_SCORE = 0.7
_SWAPPED_CATEGORY = re.compile(r"\(([^()]*) -> ([^()]*)\)\s*$")


def swapped_category(change: str) -> str | None:
    """The COCO category an ``object_swap`` put in, read from the pair's ``change``
    ('object "a cup" -> "a clock" (cup -> clock)'); None for any other change."""
    match = _SWAPPED_CATEGORY.search(str(change)) if str(change).startswith("object ") else None
    return match.group(2).strip() if match else None


def hidden_positives(pairs: pd.DataFrame, frames: pd.DataFrame, *, high_score: float = LABEL_NOISE_SCORE
                     ) -> pd.DataFrame:
    """Object swaps whose swapped-in category the detector nevertheless finds in the frame.

    One row per ``object_swap`` negative of ``pairs``: its ``pair_id``, ``split``, the
    ``category`` put in, the detector's best ``score`` for it in the frame (0 when absent or
    when the frame did not decode) and ``hidden``: score >= ``high_score``. The annotations said
    the object was absent; a confident detection says it may be there after all, a proxy for
    negatives that are really positives (label noise).
    """
    swaps = pairs[(pairs["label"] == 0) & (pairs["negative_type"] == "object_swap")]
    ok = frames[frames["status"] == "ok"]
    found = {(str(s), int(f)): parse_detections(cell, 0.0) for s, f, cell in
             ok[["story_id", "frame", "detections"]].itertuples(index=False)}
    rows = []
    for pair_id, story_id, frame, split, change in swaps[["pair_id", "story_id", "frame", "split", "change"]].itertuples(
            index=False):
        category = swapped_category(change)
        scores = [d.score for d in found.get((str(story_id), int(frame)), []) if d.label == category]
        best = max(scores, default=0.0)
        rows.append({"pair_id": pair_id, "split": split, "category": category, "score": best,
                     "hidden": best >= high_score})
    return pd.DataFrame(rows, columns=["pair_id", "split", "category", "score", "hidden"])


# ---------------------------------------------------------------------------- evaluation


def auc_by_negative_type(table: pd.DataFrame, score_col: str) -> pd.DataFrame:
    """ROC-AUC of ``score_col`` separating the positives from each negative type's negatives.

    ``table`` has ``label`` (1/0), ``negative_type`` and the score. One row per negative
    type present (spec order first), then ``"all negatives"``: ``negative_type``,
    ``positives``, ``negatives``, ``roc_auc`` (sklearn ``roc_auc_score``; NaN when either
    side is empty). 0.5 is chance; below 0.5 the score ranks that type above the positives.
    An exploratory helper of chapters 02-04: a ``split`` column with test (or any other
    non-development) rows raises ``ValueError`` (``helpers.features.require_development``).
    """
    from sklearn.metrics import roc_auc_score

    from .features import require_development

    require_development(table, "auc_by_negative_type")
    if table[score_col].isna().any():
        raise ValueError(f"{score_col} has {int(table[score_col].isna().sum())} missing values: cannot rank them")
    positives = table.loc[table["label"] == 1, score_col].to_numpy(dtype=float)
    negatives = table[table["label"] == 0]
    present = list(dict.fromkeys(negatives["negative_type"]))
    types = [t for t in NEGATIVE_TYPES if t in present] + sorted(t for t in present if t not in NEGATIVE_TYPES)
    rows = []
    for name, scores in [*((t, negatives.loc[negatives["negative_type"] == t, score_col]) for t in types),
                         ("all negatives", negatives[score_col])]:
        scores = scores.to_numpy(dtype=float)
        auc = math.nan
        if len(positives) and len(scores):
            y = np.r_[np.ones(len(positives)), np.zeros(len(scores))]
            auc = float(roc_auc_score(y, np.r_[positives, scores]))
        rows.append({"negative_type": name, "positives": len(positives), "negatives": len(scores), "roc_auc": auc})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- figures


def plot_detections(ax: "matplotlib.axes.Axes", image: "PILImage.Image", predicted: Sequence[Detection],
                    ground_truth: Sequence[Detection] = (), *, title: str = "", max_predicted: int = 15) -> None:
    """Draw a frame with its detections (solid orange, the ``max_predicted`` best, labelled
    with their score) under the ground-truth boxes (dashed green, drawn last so they show)."""
    from .plots import draw_boxes

    ax.imshow(image)
    best = sorted(predicted, key=lambda d: -d.score)[:max_predicted]
    draw_boxes(ax, [d.box for d in best], [f"{d.label} {d.score:.2f}" for d in best], colour="#ff7f0e", width=1.2)
    draw_boxes(ax, [d.box for d in ground_truth], [d.label for d in ground_truth], colour="#2ca02c", style="--",
               width=2.0)
    shown = f" (best {len(best)} of {len(predicted)} detections)" if len(best) < len(predicted) else ""
    ax.set_title(title + shown, fontsize=9)
    ax.axis("off")


def plot_detection_samples(frames: Mapping[tuple[str, int], bytes], predicted: pd.DataFrame,
                           ground_truth: pd.DataFrame, *, threshold: float, n: int = 4) -> "matplotlib.figure.Figure":
    """The ``n`` decoded frames with the most ground-truth boxes, detections over the oracle's boxes.

    ``predicted`` and ``ground_truth`` are per-frame tables; detections under ``threshold``
    are not drawn. Ties are broken by story id and frame, so the choice is reproducible.
    """
    import matplotlib.pyplot as plt

    from .data import frame_image

    counts = ground_truth.assign(n_boxes=ground_truth["detections"].map(lambda c: len(json.loads(c))))
    decoded = predicted.loc[predicted["status"] == "ok", ["story_id", "frame", "detections"]]
    chosen = (counts.merge(decoded, on=["story_id", "frame"], suffixes=("_truth", ""))
              .sort_values(["n_boxes", "story_id", "frame"], ascending=[False, True, True]).head(n))
    n_rows = max(1, math.ceil(len(chosen) / 2))
    fig, axes = plt.subplots(n_rows, 2, figsize=(12, 2.8 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, chosen.itertuples(index=False)):
        image = frame_image([frames[(row.story_id, row.frame)]], 1)
        plot_detections(ax, image, parse_detections(row.detections, threshold), parse_detections(row.detections_truth),
                        title=f"story {row.story_id}, frame {row.frame}")
    fig.tight_layout()
    return fig


def plot_min_size_sweep(sweep: pd.DataFrame) -> "matplotlib.figure.Figure":
    """Recall and seconds per frame against ``min_size`` (:func:`min_size_sweep`'s table)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.plot(sweep["min_size"], sweep["recall"], marker="o")
    left.set(xlabel="min_size (pixels)", ylabel=f"recall at IoU >= {IOU_MATCH}", ylim=(0, 1), title="Recall")
    right.plot(sweep["min_size"], sweep["seconds_per_frame"], marker="o", color="#ff7f0e")
    right.set(xlabel="min_size (pixels)", ylabel="seconds per frame", ylim=(0, None), title="Time")
    for ax in (left, right):
        ax.set_xticks(sweep["min_size"])
    fig.tight_layout()
    return fig


def plot_score_by_group(table: pd.DataFrame, score_col: str,
                        ax: "matplotlib.axes.Axes | None" = None) -> "matplotlib.axes.Axes":
    """Empirical CDF of ``score_col`` for the positives and for each negative type.

    A CDF shows the point masses these scores have (many exact zeros) that a histogram or
    a violin would blur. A curve to the right of another means higher scores. Like
    :func:`auc_by_negative_type`, it refuses rows outside the train and validation splits.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .features import require_development

    require_development(table, "plot_score_by_group")
    groups = np.where(table["label"] == 1, "positive", table["negative_type"].astype(str))
    present = set(groups)
    order = ["positive", *(t for t in NEGATIVE_TYPES if t in present), *sorted(present - {"positive", *NEGATIVE_TYPES})]
    ax = ax if ax is not None else plt.figure(figsize=(6, 3.5)).gca()
    sns.ecdfplot(data=table.assign(group=groups), x=score_col, hue="group", hue_order=order, ax=ax)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(score_col)
    ax.set_ylabel("share of pairs at or below")
    return ax
