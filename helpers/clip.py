"""CLIP plumbing: load the weights, and embed frames and texts once, cached on disk.

Chapter 03 (``helpers.semantics``, generated from it) turns these embeddings into the CLIP
evidence: sentences, per-sentence scores and their aggregate.

Every embedding is computed once and cached on disk, L2-normalised: one per distinct frame
(keyed by the SHA-1 of its encoded bytes) and one per distinct text, both also keyed by the
identity of the weights (a hash of the parameters, tokenizer and image preprocessing). A
pair's score is then a dot product of cached vectors, never a new forward pass.

Weights (profile key ``clip.weights``): a Hub id such as ``openai/clip-vit-base-patch32``
(cached under ``HF_HOME``; offline and not cached raises ``MissingAssetError``), a local
folder written by ``save_pretrained``, or ``"random"``: the ViT-B/32 architecture with
seeded random weights and a tokenizer built without the Hub (``helpers.smoke.clip``), saved
under the profile's ``models`` folder and loaded back through the local-folder path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .io import compute_cached, stable_hash
from .weights import HubModel, resolve

if TYPE_CHECKING:
    import torch
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer

__all__ = [
    "MODEL_ID",
    "MAX_TOKENS",
    "IMAGE_COLUMNS",
    "TEXT_COLUMNS",
    "RANDOM_FOLDER",
    "Clip",
    "CLIP",
    "load_tokenizer",
    "token_lengths",
    "embed_images",
    "embed_texts",
]

MODEL_ID = "openai/clip-vit-base-patch32"
#: CLIP's text context: 75 text tokens between <|startoftext|> and <|endoftext|>.
MAX_TOKENS = 77

#: Columns of the tables ``embed_images`` and ``embed_texts`` return (and cache, with ``key``).
IMAGE_COLUMNS = ["name", "key", "decoded", "error", "width", "height", "embedding"]
TEXT_COLUMNS = ["text", "key", "n_tokens", "truncated", "embedding"]

#: Part of every cache key: bumped when the cached row format changes, so old rows are recomputed, not misread.
_CACHE_VERSION = 1

RANDOM_FOLDER = "clip-random"
#: Files a Hub snapshot of a CLIP model needs; each entry lists acceptable alternatives.
_HUB_FILES = (("config.json",), ("preprocessor_config.json", "processor_config.json"),
              ("tokenizer.json", "vocab.json"), ("model.safetensors", "pytorch_model.bin"))


@dataclass(frozen=True)
class Clip:
    """A loaded CLIP model with its processor, the device it runs on, and a content identity.

    ``identity`` hashes the parameters, the tokenizer and the image preprocessing (and the
    compute precision), so embeddings cached under it are valid exactly for this model.
    """

    model: "CLIPModel"
    processor: "CLIPProcessor"
    device: "torch.device"
    identity: str
    source: str

    @property
    def tokenizer(self) -> "CLIPTokenizer":
        return self.processor.tokenizer


# --------------------------------------------------------------------------- loading


def _autocast(device: "torch.device") -> contextlib.AbstractContextManager:
    import torch

    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()


def _build_random(spec: str, models_dir: Path, seed: int) -> Path:
    """Random weights at ViT-B/32's full size, whatever the random spec (:mod:`helpers.smoke.clip`)."""
    from .smoke.clip import build_random_clip

    return build_random_clip(models_dir / RANDOM_FOLDER, seed=seed)


#: CLIP in the table of models: ``helpers.weights.load_model(CLIP, spec, models_dir=...)`` loads it.
CLIP = HubModel(what="CLIP weights", build_random=_build_random, hub_files=_HUB_FILES,
                model_class="CLIPModel", processor_class="CLIPProcessor", wrap=Clip)


def load_tokenizer(spec: str, *, models_dir: str | os.PathLike, seed: int = 42) -> "CLIPTokenizer":
    """Only the tokenizer of the weights ``spec`` names (as ``load_model(CLIP, spec)`` would load it),
    to count tokens without loading the model. Same errors as ``load_model``."""
    from transformers import AutoTokenizer

    source, options = resolve(CLIP, spec, models_dir=models_dir, seed=seed)
    return AutoTokenizer.from_pretrained(source, **options)


# --------------------------------------------------------------------------- text


def token_lengths(tokenizer: "CLIPTokenizer", texts: Sequence[str]) -> list[int]:
    """The number of tokens each text has before truncation, start and end tokens included."""
    if not texts:
        return []
    # verbose=False: measuring long texts is the point, so no "longer than the maximum" warning.
    return [len(ids) for ids in tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]


# --------------------------------------------------------------------------- embeddings


def embed_images(clip: Clip, frames: Mapping[str, bytes], cache_path: str | os.PathLike, *,
                 batch_size: int) -> tuple[pd.DataFrame, int]:
    """Normalised image embeddings of encoded frames, computed once per distinct frame content.

    ``frames`` maps any name to a frame's encoded bytes (JPEG/PNG). Returns
    ``(table, n_computed)``: one row per name with ``name``, ``key`` (the cache key: weights
    identity + SHA-1 of the bytes), ``decoded`` (False for a frame that does not decode: it
    is skipped, cached as such, and has no embedding), ``error``, ``width`` and ``height``
    (pixels; 0 when not decoded) and ``embedding`` (float32 vector, or None).
    """
    import torch

    names = list(frames)
    if not names:
        return pd.DataFrame(columns=IMAGE_COLUMNS), 0
    keys = [_image_key(clip, frames[n]) for n in names]
    name_of_key = dict(zip(keys, names))

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        from .data import CorruptFrameError, frame_image

        images, rows = [], []
        for key in batch:
            try:
                image = frame_image([frames[name_of_key[key]]], 1)
            except CorruptFrameError as err:
                rows.append({"decoded": False, "error": str(err)[:200], "width": 0, "height": 0, "embedding": None})
            else:
                images.append(image)
                rows.append({"decoded": True, "error": "", "width": image.width, "height": image.height,
                             "embedding": None})
        if images:
            pixels = clip.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
            with torch.inference_mode(), _autocast(clip.device):
                out = clip.model.get_image_features(pixel_values=pixels.to(clip.device))
            vectors = iter(_normalise(out.pooler_output))
            for row in rows:
                if row["decoded"]:
                    row["embedding"] = next(vectors)
        return rows

    table, n_computed = compute_cached(cache_path, keys, compute, batch_size=batch_size, desc="CLIP frames")
    table = table.assign(name=names, decoded=table["decoded"].astype(bool), width=table["width"].astype(int),
                         height=table["height"].astype(int))
    return table[IMAGE_COLUMNS], n_computed


def embed_texts(clip: Clip, texts: Sequence[str], cache_path: str | os.PathLike, *,
                batch_size: int) -> tuple[pd.DataFrame, int]:
    """Normalised text embeddings, computed once per distinct text; texts over 77 tokens are truncated.

    Returns ``(table, n_computed)``: one row per distinct text with ``text``, ``key``
    (weights identity + the text), ``n_tokens`` (before truncation), ``truncated`` and
    ``embedding``.
    """
    import torch

    texts = list(dict.fromkeys(texts))
    if not texts:
        return pd.DataFrame(columns=TEXT_COLUMNS), 0
    by_length = sorted(texts, key=len)  # batches of similar lengths waste less on padding
    keys = [_text_key(clip, t) for t in by_length]
    by_key = dict(zip(keys, by_length))

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        chunk = [by_key[k] for k in batch]
        lengths = token_lengths(clip.tokenizer, chunk)
        inputs = clip.tokenizer(chunk, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode(), _autocast(clip.device):
            out = clip.model.get_text_features(input_ids=inputs["input_ids"].to(clip.device),
                                               attention_mask=inputs["attention_mask"].to(clip.device))
        return [{"n_tokens": n, "truncated": n > MAX_TOKENS, "embedding": v}
                for n, v in zip(lengths, _normalise(out.pooler_output))]

    table, n_computed = compute_cached(cache_path, keys, compute, batch_size=batch_size, desc="CLIP texts")
    table = table.assign(text=by_length, n_tokens=table["n_tokens"].astype(int),
                         truncated=table["truncated"].astype(bool))
    table = table.set_index("text").loc[texts].reset_index()
    return table[TEXT_COLUMNS], n_computed


def _image_key(clip: Clip, data: bytes) -> str:
    return stable_hash({"v": _CACHE_VERSION, "clip": clip.identity, "frame_sha1": hashlib.sha1(data).hexdigest()})


def _text_key(clip: Clip, text: str) -> str:
    return stable_hash({"v": _CACHE_VERSION, "clip": clip.identity, "text": text})


def _normalise(projected: "torch.Tensor") -> list[np.ndarray]:
    """Rows of the projected embeddings, L2-normalised, as float32 arrays."""
    import torch

    vectors = torch.nn.functional.normalize(projected.float(), dim=-1).cpu().numpy()
    return list(vectors.astype(np.float32))
