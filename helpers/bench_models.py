"""The benchmark's measurements of the models: one timed number each, and ratios between them.

:mod:`helpers.bench` runs them (``make bench``) with the real architectures and random weights
on synthetic frames, and adds the series and memory; see its docstring for what is measured.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from .clip import Clip
    from .detection import Detector

__all__ = ["BENCH_PHRASES", "Measurement", "time_per_call", "ratio", "bench_detection", "bench_clip",
           "bench_pair_scoring", "bench_beyond_coco"]

#: What the open-vocabulary and question benchmarks ask of every frame (a segment names about this many things).
BENCH_PHRASES = ("man", "woman", "cardboard box", "door", "blue blanket", "wall", "phone", "ceiling")


@dataclass(frozen=True)
class Measurement:
    """One number of the benchmark: ``section`` / ``name`` (``setting``) = ``value`` ``unit``.

    ``n`` is how many items (frames, texts, pairs) one timed call processed and ``repeats``
    how many timed calls the value summarises (their median); both 0 where meaningless.
    """

    section: str
    name: str
    setting: str
    value: float
    unit: str
    n: int = 0
    repeats: int = 0


def time_per_call(fn: Callable[[], Any], *, repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls.

    A CUDA device is synchronised around every call, so asynchronous kernels are counted.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    sync = _cuda_synchronize()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cuda_synchronize() -> Callable[[], None]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard requirement of the project
        return lambda: None
    return torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)


def ratio(section: str, name: str, slow: Measurement, fast: Measurement, setting: str = "") -> Measurement:
    """How many times faster ``fast`` is than ``slow``: both in seconds, or both in items per second.

    ``setting`` describes the comparison (default: the two settings).
    """
    if slow.unit != fast.unit:
        raise ValueError(f"cannot compare {slow.unit!r} with {fast.unit!r}")
    if slow.unit.endswith("/s"):
        value = fast.value / slow.value if slow.value > 0 else float("nan")
    else:
        value = slow.value / fast.value if fast.value > 0 else float("nan")
    return Measurement(section, name, setting or f"{slow.setting} vs {fast.setting}", value, "x")


def bench_detection(detector: "Detector", images: Sequence["Image.Image"], *, sizes: Sequence[int],
                    batch_size: int, repeats: int, proposals: Sequence[int] = ()) -> list[Measurement]:
    """Frames per second of ``detect_images`` at each input size, batch 1 against ``batch_size``, and
    at the smallest size with each count of ``proposals`` against torchvision's default 1000."""
    from .detection import DEFAULT_PROPOSALS, detect_images

    detect_images(detector, images[:1], min_size=min(sizes))  # first call: allocator and thread pool warm-up

    def measure(size: int, batch: int, n: int) -> Measurement:
        def run() -> None:
            for i in range(0, len(images), batch):
                detect_images(detector, images[i : i + batch], min_size=size, proposals=n)

        seconds = time_per_call(run, repeats=repeats, warmup=0)
        setting = f"min_size {size}, batch {batch}" + ("" if n == DEFAULT_PROPOSALS else f", {n} proposals")
        return Measurement("detection", "frames per second", setting, len(images) / seconds, "frames/s",
                           n=len(images), repeats=repeats)

    out, at_default = [], {}
    for size in sizes:
        measured = at_default[size] = {b: measure(size, b, DEFAULT_PROPOSALS) for b in dict.fromkeys((1, batch_size))}
        out += measured.values()
        if batch_size != 1:
            out.append(ratio("detection", "batching speed-up", measured[1], measured[batch_size],
                             f"min_size {size}, batch {batch_size} vs 1"))
    size = min(sizes)
    for n in dict.fromkeys(int(n) for n in proposals if int(n) != DEFAULT_PROPOSALS):
        fewer = measure(size, 1, n)
        out += [fewer, ratio("detection", "proposals speed-up", at_default[size][1], fewer,
                             f"min_size {size}, {n} vs {DEFAULT_PROPOSALS} proposals")]
    return out


def bench_clip(clip: "Clip", frames: Mapping[tuple[str, int], bytes], sentences: Sequence[str], *,
               batch_size: int, repeats: int) -> list[Measurement]:
    """Images and sentences per second through ``embed_images`` / ``embed_texts`` (decoding,
    preprocessing, forward pass and cache write), each call into an empty cache."""
    from .clip import embed_images, embed_texts

    named = {f"{s}/{f}": data for (s, f), data in frames.items()}

    def fresh(fn: Callable[[Path], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with tempfile.TemporaryDirectory() as tmp:
                return fn(Path(tmp) / "cache")
        return call

    images = time_per_call(fresh(lambda p: embed_images(clip, named, p, batch_size=batch_size)), repeats=repeats)
    texts = time_per_call(fresh(lambda p: embed_texts(clip, sentences, p, batch_size=batch_size)), repeats=repeats)
    return [
        Measurement("CLIP", "images per second", f"batch {batch_size}", len(named) / images, "images/s", n=len(named),
                    repeats=repeats),
        Measurement("CLIP", "sentences per second", f"batch {batch_size}", len(sentences) / texts, "sentences/s",
                    n=len(sentences), repeats=repeats),
    ]


def bench_beyond_coco(frames: Mapping[tuple[str, int], bytes], *, models_dir: Path, seed: int, repeats: int,
                      phrases: Sequence[str], device: Any = None) -> list[Measurement]:
    """Frames per second of OWL-ViT B/32 at 768 px (``detect_phrases``, every frame queried with
    ``phrases``) and of BLIP-VQA base (``answer_yes`` with one question per frame, then with one
    per phrase), both at their real size with random weights, each call into an empty cache.
    The two BLIP runs also give the seconds of one image encoding and of one more question."""
    from .config import RANDOM_FULL_SIZE
    from .owlvit import OWLVIT, detect_phrases
    from .vqa import VQA, answer_yes
    from .weights import load_model

    def fresh(fn: Callable[[Path], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with tempfile.TemporaryDirectory() as tmp:
                return fn(Path(tmp) / "cache")
        return call

    n, options = len(frames), {"models_dir": models_dir, "seed": seed, "device": device}
    def owl_seconds() -> float:  # one large model at a time: OWL-ViT is freed on return
        owl, queries = load_model(OWLVIT, RANDOM_FULL_SIZE, **options), {key: list(phrases) for key in frames}
        return time_per_call(fresh(lambda p: detect_phrases(owl, frames, queries, p, batch_size=1)), repeats=repeats)

    owl_s = owl_seconds()
    vqa = load_model(VQA, RANDOM_FULL_SIZE, **options)
    questions = [f"Is there a {phrase}?" for phrase in phrases]
    timed = {k: time_per_call(fresh(lambda p, k=k: answer_yes(vqa, frames, {key: questions[:k] for key in frames}, p,
                                                              batch_size=len(questions))), repeats=repeats)
             for k in (1, len(questions))}
    per_question = (timed[len(questions)] - timed[1]) / (n * (len(questions) - 1))
    return [
        Measurement("OWL-ViT", "frames per second", f"B/32, 768 px, {len(phrases)} phrases per frame", n / owl_s,
                    "frames/s", n=n, repeats=repeats),
        *(Measurement("BLIP-VQA", "frames per second", f"base, 384 px, {k} question(s) per frame", n / t, "frames/s",
                      n=n, repeats=repeats) for k, t in timed.items()),
        Measurement("BLIP-VQA", "seconds per image", "encoding and the first question", timed[1] / n, "s", n=n),
        Measurement("BLIP-VQA", "seconds per further question", "same image", per_question, "s", n=n),
    ]


def _study_pair_scores(clip: "Clip", pairs: "pd.DataFrame", frames: Mapping[tuple[str, int], bytes]) -> list[float]:
    """The original study's way: one CLIP forward pass (image and text) per pair, nothing reused.

    The text is the first ``FIRST_CHARS`` characters of the tagged text, as the study cut it.
    On a GPU it runs under the same fp16 autocast as ``helpers.clip``, so only the reuse differs.
    """
    import contextlib

    import torch

    from .semantics import FIRST_CHARS
    from .clip import MAX_TOKENS
    from .data import frame_image

    scores = []
    for story_id, frame, tagged in pairs[["story_id", "frame", "tagged_text"]].itertuples(index=False):
        image = frame_image([frames[(str(story_id), int(frame))]], 1)
        pixels = clip.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"].to(clip.device)
        tokens = clip.tokenizer([tagged[:FIRST_CHARS]], truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        precision = (torch.autocast("cuda", dtype=torch.float16) if clip.device.type == "cuda"
                     else contextlib.nullcontext())
        with torch.inference_mode(), precision:
            image_vector = clip.model.get_image_features(pixel_values=pixels).pooler_output
            text_vector = clip.model.get_text_features(
                input_ids=tokens["input_ids"].to(clip.device),
                attention_mask=tokens["attention_mask"].to(clip.device)).pooler_output
        scores.append(float(torch.nn.functional.cosine_similarity(image_vector, text_vector).item()))
    return scores


def bench_pair_scoring(clip: "Clip", pairs: "pd.DataFrame", frames: Mapping[tuple[str, int], bytes], *,
                       batch_size: int) -> list[Measurement]:
    """Seconds to score every pair: the study's way (a forward pass per pair) against
    ``helpers.semantics.clip_features`` from an empty cache and from the cache it filled.

    ``clip_features`` also embeds two baseline texts per pair (the whole segment and the
    study's 150 characters), so its side of the ratio is, if anything, handicapped.
    """
    from .semantics import clip_features

    pair_frames = {key: frames[key] for key in zip(pairs["story_id"].astype(str), pairs["frame"].astype(int))}
    setting = f"{len(pairs)} pairs, {len(pair_frames)} frames"
    study = time_per_call(lambda: _study_pair_scores(clip, pairs, pair_frames), repeats=1, warmup=0)
    with tempfile.TemporaryDirectory() as tmp:
        def score() -> None:
            clip_features(clip, pairs, pair_frames, tmp, batch_size=batch_size)

        cold = time_per_call(score, repeats=1, warmup=0)
        warm = time_per_call(score, repeats=3, warmup=0)
    n = len(pairs)
    rows = {
        "study": Measurement("pair scoring", "a CLIP forward pass per pair (the study)", setting, study, "s", n, 1),
        "cold": Measurement("pair scoring", "cached embeddings, empty cache", setting, cold, "s", n, 1),
        "warm": Measurement("pair scoring", "cached embeddings, filled cache", setting, warm, "s", n, 3),
    }
    return [*rows.values(),
            ratio("pair scoring", "speed-up over the study", rows["study"], rows["cold"], "empty cache"),
            ratio("pair scoring", "speed-up over the study", rows["study"], rows["warm"], "filled cache")]
