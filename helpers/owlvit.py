"""OWL-ViT plumbing: load the weights, and find text phrases in frames once, cached on disk.

Chapter 02 (``helpers.objects``, generated from it) turns these detections into the
open-vocabulary object evidence: which of the phrases a text names the frame shows.

OWL-ViT (Minderer et al., 2022) scores every box it predicts against every text query. For
one frame and one phrase the cache keeps the best box: its score (the sigmoid of the box's
logit for the phrase, maximised over boxes) and its corners in the frame's own pixels. One
row per (weights identity, frame SHA-1, phrase), so a rerun costs no forward pass, and a
frame runs through the model once for all its phrases not cached yet.

Weights (profile key ``openvocab.weights``): a Hub id such as ``google/owlvit-base-patch32``
(cached under ``HF_HOME``; offline and not cached raises ``MissingAssetError``), a local
folder written by ``save_pretrained``, or ``"random"`` / ``"random-full-size"``: seeded
random weights at a small size or at B/32's (:mod:`helpers.smoke.owlvit`), saved under the
profile's ``models`` folder and loaded back through the local-folder path.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .clip import _autocast
from .io import compute_cached, read_cache, stable_hash
from .weights import HubModel

if TYPE_CHECKING:
    import torch
    from transformers import OwlViTForObjectDetection, OwlViTProcessor

__all__ = ["MODEL_ID", "DETECTION_COLUMNS", "OwlVit", "OWLVIT", "detect_phrases"]

MODEL_ID = "google/owlvit-base-patch32"
#: Columns of the table :func:`detect_phrases` returns.
DETECTION_COLUMNS = ["story_id", "frame", "phrase", "status", "score", "box"]
#: Part of every cache key: bumped when the cached row format changes, so old rows are recomputed.
_CACHE_VERSION = 1
#: Files a Hub snapshot of OWL-ViT needs; each entry lists acceptable alternatives.
_HUB_FILES = (("config.json",), ("preprocessor_config.json", "processor_config.json"),
              ("tokenizer.json", "vocab.json"), ("model.safetensors", "pytorch_model.bin"))


@dataclass(frozen=True)
class OwlVit:
    """A loaded OWL-ViT with its processor, device, content identity (parameters, tokenizer,
    image preprocessing, precision) and the spec it was loaded from."""

    model: "OwlViTForObjectDetection"
    processor: "OwlViTProcessor"
    device: "torch.device"
    identity: str
    source: str


def _build_random(spec: str, models_dir: Path, seed: int) -> Path:
    from .smoke.owlvit import random_owlvit_folder

    return random_owlvit_folder(spec, models_dir, seed)


#: OWL-ViT in the table of models: ``helpers.weights.load_model(OWLVIT, spec, models_dir=...)`` loads it.
OWLVIT = HubModel(what="OWL-ViT weights", build_random=_build_random, hub_files=_HUB_FILES,
                  model_class="OwlViTForObjectDetection", processor_class="OwlViTProcessor", wrap=OwlVit)


def detect_phrases(owl: OwlVit, frames: Mapping[tuple[str, int], bytes],
                   queries: Mapping[tuple[str, int], Sequence[str]], cache_path: str | os.PathLike, *,
                   batch_size: int) -> tuple[pd.DataFrame, int]:
    """OWL-ViT's best box for each phrase of ``queries[frame]`` in that frame, cached on disk.

    ``frames`` maps ``(story_id, frame)`` to encoded bytes and must hold every frame of
    ``queries``; phrases are whitespace-normalised (empty ones dropped). Returns
    ``(table, n_encoded)``: one row per (frame, phrase) with :data:`DETECTION_COLUMNS`:
    ``status`` ("ok", or "corrupt" for a frame that does not decode: skipped and cached as
    such, ``score`` NaN, ``box`` None), ``score`` (the best sigmoid score of any box for the
    phrase), ``box`` (that box's ``[x1, y1, x2, y2]`` in the frame's pixels, clipped to it);
    and the number of frames run through the image encoder now. Each distinct phrase to compute
    goes through the text encoder once; frames with phrases to compute run ``batch_size`` at a
    time through the image encoder, each once, and its boxes are scored against all its
    missing phrases.
    """
    import torch
    from transformers.image_transforms import center_to_corners_format

    wanted = [(key, phrase) for key, phrases in queries.items()
              for phrase in dict.fromkeys(" ".join(str(p).split()) for p in phrases) if phrase]
    if missing := sorted({key for key, _ in wanted} - set(frames), key=str):
        raise KeyError(f"frames lacks {len(missing)} frame(s) of the queries, e.g. {missing[:3]}")
    if not wanted:
        return pd.DataFrame(columns=DETECTION_COLUMNS), 0
    sha = {key: hashlib.sha1(frames[key]).hexdigest() for key in {key for key, _ in wanted}}
    keys = [_key(owl, sha[key], phrase) for key, phrase in wanted]
    data = {sha[key]: frames[key] for key in sha}
    have = set(read_cache(cache_path)["key"])
    todo: dict[str, dict[str, str]] = {}  # frame SHA-1 -> {phrase: cache key}, the missing ones
    for (key, phrase), cache_key in zip(wanted, keys):
        if cache_key not in have:
            todo.setdefault(sha[key], {})[phrase] = cache_key
    frame_of = {cache_key: digest for digest, phrases in todo.items() for cache_key in phrases.values()}
    done: dict[str, dict[str, Any]] = {}
    encoded = 0

    def run(digests: list[str]) -> None:
        from .data import CorruptFrameError, frame_image

        nonlocal encoded
        images, decoded = [], []
        for digest in digests:
            try:
                images.append(frame_image([data[digest]], 1))
                decoded.append(digest)
            except CorruptFrameError:
                done.update(dict.fromkeys(todo[digest].values(), {"status": "corrupt", "score": math.nan,
                                                                  "box": None}))
        if not images:
            return
        texts = [list(todo[d]) for d in decoded]
        pixels = owl.processor.image_processor(images=images, return_tensors="pt")["pixel_values"].to(owl.device)
        with torch.inference_mode(), _autocast(owl.device):
            feature_map, _ = owl.model.image_embedder(pixel_values=pixels)  # the image side: once per frame
            feats = feature_map.reshape(feature_map.shape[0], -1, feature_map.shape[-1])
            logits = [owl.model.class_predictor(feats[i : i + 1], torch.stack([query[t] for t in phrases])[None],
                                                torch.ones(1, len(phrases), dtype=torch.bool, device=owl.device))[0]
                      for i, phrases in enumerate(texts)]
            pred_boxes = owl.model.box_predictor(feats, feature_map)
        # OWL-ViT v1 resizes a frame to its square input without padding, so a relative corner maps to
        # the frame by the frame's own width or height (as post_process_object_detection's target_sizes).
        boxes = center_to_corners_format(pred_boxes.float().cpu())  # (images, boxes, 4), relative
        encoded += len(images)
        for i, (digest, image) in enumerate(zip(decoded, images)):
            scale = torch.tensor([image.width, image.height] * 2, dtype=torch.float32)
            scores = torch.sigmoid(logits[i][0].float()).cpu()  # (boxes, phrases)
            for j, phrase in enumerate(texts[i]):
                best = int(scores[:, j].argmax())
                box = torch.minimum(boxes[i, best].clamp(min=0.0) * scale, scale)
                done[todo[digest][phrase]] = {"status": "ok", "score": float(scores[best, j]),
                                              "box": [float(v) for v in box]}

    # The text side once per distinct phrase, not once per frame: OWL-ViT's class head compares every
    # box of a frame with each query's normalised text embedding (as its forward pass does).
    phrases_to_embed = list(dict.fromkeys(p for phrases in todo.values() for p in phrases))
    query: dict[str, "torch.Tensor"] = {}
    for start in range(0, len(phrases_to_embed), 256):
        chunk = phrases_to_embed[start : start + 256]
        tokens = owl.processor.tokenizer(chunk, padding="max_length", truncation=True, return_tensors="pt",
                                         max_length=owl.model.config.text_config.max_position_embeddings)
        with torch.inference_mode(), _autocast(owl.device):
            embeds = owl.model.owlvit.get_text_features(input_ids=tokens["input_ids"].to(owl.device),
                                                        attention_mask=tokens["attention_mask"].to(owl.device))
        vectors = torch.nn.functional.normalize(embeds.pooler_output, dim=-1)
        query.update(zip(chunk, vectors))

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        fresh = list(dict.fromkeys(frame_of[k] for k in batch if k not in done))
        for start in range(0, len(fresh), batch_size):
            run(fresh[start : start + batch_size])
        return [done.pop(k) for k in batch]

    per_frame = max(1, round(len(frame_of) / max(len(todo), 1)))
    table, _ = compute_cached(cache_path, keys, compute, batch_size=batch_size * per_frame, desc="OWL-ViT frames")
    table = table.assign(story_id=[str(key[0]) for key, _ in wanted], frame=[int(key[1]) for key, _ in wanted],
                         phrase=[phrase for _, phrase in wanted], score=table["score"].astype(float),
                         box=[_as_box(b) for b in table["box"]])
    return table[DETECTION_COLUMNS], encoded


def _key(owl: OwlVit, frame_sha1: str, phrase: str) -> str:
    return stable_hash({"v": _CACHE_VERSION, "owlvit": owl.identity, "frame_sha1": frame_sha1, "phrase": phrase})


def _as_box(cell: Any) -> list[float] | None:
    """A cached box as a list of four floats (parquet returns arrays), or None."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    return [float(v) for v in cell]
