"""Speed and memory of the pipeline's parts: ``python -m helpers.bench [--quick] [--skip-series]``.

Measured on the real architectures with randomly initialised weights (the ``"random"``
loaders of ``helpers.detection`` and ``helpers.clip``): a forward pass costs the same
whatever the weights, so this runs offline. Inputs are synthetic 576x240 frames and story
text from ``helpers.smoke`` (its synthetic dataset). Every comparison is measured side by side in one process
and reported as a ratio, which transfers between machines far better than the seconds do.

- detection: frames per second at each ``min_size`` of the profile's sweep, batch 1
  against a larger batch;
- CLIP: images and sentences per second;
- pair scoring: every pair scored the way the original study did it (a forward pass of
  CLIP per pair), against this study's way (each distinct frame and sentence embedded once
  and cached, then dot products), from an empty cache and from a filled one;
- the whole smoke series (``helpers.runner``) run twice into a temporary output folder:
  cold, then warm (every cache filled);
- peak memory: resident set size of this process and of the series' processes, and GPU
  memory when a GPU is used.

Results are printed as a table and written atomically to ``outputs/bench.json``.

``--quick-series`` measures instead the cost of the ``quick`` profile itself, offline: the
whole series run once, cold, on the profile ``quick-bench`` (built in code from
``profiles/quick.yaml`` by :func:`helpers.config.bench_profile`: the same stories, splits,
detector input size, batch sizes, sweeps, bootstrap and training, on synthetic stories of
StoryReasoning's shape with randomly initialised models). It records each chapter's
seconds, the wall time, the CPU time of the series' processes (user + system, so
contention from other processes can be judged), the 1-minute load average at start and
end, the data's size and the split's composition, into ``outputs/bench-quick.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import BENCH_SUFFIX, OUTPUTS_DIR, REPO_ROOT, load_profile
from .io import atomic_write_json

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from .clip import Clip
    from .detection import Detector

__all__ = [
    "SCHEMA_VERSION",
    "Measurement",
    "bench_detection",
    "bench_clip",
    "bench_pair_scoring",
    "bench_series",
    "bench_profile_series",
    "run_bench",
    "time_per_call",
    "ratio",
    "format_table",
    "bench_document",
    "write_bench",
    "peak_memory",
    "main",
]

SCHEMA_VERSION = 1


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


def format_table(measurements: Sequence[Measurement]) -> str:
    """A plain-text table of the measurements, grouped by section in the order given."""
    header = ("section", "measurement", "setting", "value", "unit")
    rows = [(m.section, m.name, m.setting, _format_value(m.value), m.unit) for m in measurements]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    previous = None
    for r in rows:
        section = r[0] if r[0] != previous else ""
        previous = r[0]
        cells = [section, *r[1:]]
        aligned = (c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        lines.append("  ".join(aligned).rstrip())
    return "\n".join(lines)


def _format_value(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def peak_memory(*, children: bool = False) -> list[Measurement]:
    """Peak resident memory of this process (and, with ``children``, of the largest finished
    child process), and peak GPU memory allocated by torch when a GPU is used."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2  # ru_maxrss: KiB on Linux, bytes on macOS
    out = [
        Measurement("memory", "peak RSS", "this process",
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "MiB"),
    ]
    if children:
        out.append(Measurement("memory", "peak RSS", "largest child process (the series)",
                               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale, "MiB"))
    try:
        import torch
    except ImportError:  # pragma: no cover
        return out
    if torch.cuda.is_available():
        out.append(Measurement("memory", "peak GPU memory allocated", torch.cuda.get_device_name(),
                               torch.cuda.max_memory_allocated() / 1024**2, "MiB"))
    return out


def bench_document(measurements: Sequence[Measurement], *, options: dict[str, Any]) -> dict[str, Any]:
    """The ``bench.json`` document: where it ran, with which options, and every measurement."""
    from .config import git_commit, package_versions

    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": _torch_threads(), "device": _device_name()},
        "git_commit": git_commit(),
        "versions": package_versions(),
        "options": options,
        "measurements": [asdict(m) for m in measurements],
    }


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    return torch.get_num_threads()


def _device_name() -> str:
    from .config import device

    dev = device()
    if dev.type == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def write_bench(path: str | os.PathLike, document: dict[str, Any]) -> Path:
    """Write ``bench.json`` atomically."""
    return atomic_write_json(path, document)


# ------------------------------------------------------------------------ measurements


def bench_detection(detector: "Detector", images: Sequence["Image.Image"], *, sizes: Sequence[int],
                    batch_size: int, repeats: int) -> list[Measurement]:
    """Frames per second of ``detect_images`` at each input size, batch 1 against ``batch_size``."""
    from .detection import detect_images

    detect_images(detector, images[:1], min_size=min(sizes))  # first call: allocator and thread pool warm-up
    out = []
    for size in sizes:
        measured = {}
        for batch in dict.fromkeys((1, batch_size)):
            def run(batch: int = batch, size: int = size) -> None:
                for i in range(0, len(images), batch):
                    detect_images(detector, images[i : i + batch], min_size=size)

            seconds = time_per_call(run, repeats=repeats, warmup=0)
            measured[batch] = Measurement("detection", "frames per second", f"min_size {size}, batch {batch}",
                                          len(images) / seconds, "frames/s", n=len(images), repeats=repeats)
            out.append(measured[batch])
        if batch_size != 1:
            out.append(ratio("detection", "batching speed-up", measured[1], measured[batch_size],
                             f"min_size {size}, batch {batch_size} vs 1"))
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


def bench_series(*, timeout_s: float = 3600) -> list[Measurement]:
    """Wall-clock seconds of the whole smoke series (``helpers.runner --profile smoke``) run
    twice into one temporary output folder: cold (nothing cached), then warm."""
    with tempfile.TemporaryDirectory(prefix="story-align-bench-") as tmp:
        env = {**os.environ, "STORY_ALIGN_OUTPUTS": tmp}
        seconds = []
        for run in ("cold", "warm"):
            t0 = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "helpers.runner", "--profile", "smoke"], cwd=REPO_ROOT,
                                    env=env, capture_output=True, text=True, timeout=timeout_s)
            seconds.append(time.perf_counter() - t0)
            if result.returncode != 0:
                raise RuntimeError(f"the {run} smoke series failed (exit {result.returncode}):\n"
                                   f"{result.stderr[-2000:]}")
    cold = Measurement("smoke series", "all chapters", "cold: empty output folder", seconds[0], "s", repeats=1)
    warm = Measurement("smoke series", "all chapters", "warm: every cache filled", seconds[1], "s", repeats=1)
    return [cold, warm, ratio("smoke series", "speed-up of the warm run", cold, warm, "warm vs cold")]


def bench_profile_series(base: str = "quick", *, timeout_s: float = 4 * 3600) -> list[Measurement]:
    """The whole series of ``<base>-bench`` (see :func:`helpers.config.bench_profile`) run once,
    cold, through ``helpers.runner`` in a child process, into a temporary output folder.

    The child's output is not captured: its progress bars show on this terminal as they
    would in ``make run-all``. Measured: wall seconds per chapter (from ``run.json``) and in
    all, CPU seconds (user + system) of the child and everything it started (the kernels),
    peak resident memory of the largest of them, the 1-minute load average before and after
    (other processes competing for the CPUs inflate the wall time, not the CPU time), and
    what was run: stories, frames and pairs by split, negatives of each type by split.
    """
    profile = f"{base}{BENCH_SUFFIX}"
    cfg = load_profile(profile)
    section = f"{base} series"
    with tempfile.TemporaryDirectory(prefix="story-align-bench-") as tmp:
        env = {**os.environ, "STORY_ALIGN_OUTPUTS": tmp}
        load_start = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "helpers.runner", "--profile", profile], cwd=REPO_ROOT,
                                env=env, timeout=timeout_s)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_end = os.getloadavg()[0]
        if result.returncode != 0:
            raise RuntimeError(f"the {profile} series failed (exit {result.returncode}); its output is above")
        root = Path(tmp) / profile
        run = json.loads((root / "run.json").read_text(encoding="utf-8"))
        composition = _series_composition(root)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2
    shape = cfg["data"]["synthetic"]
    setting = (f"{cfg['data']['n_stories']} stories of {shape['frames'][0]}-{shape['frames'][1]} frames, "
               f"min_size {cfg['detector']['min_size']}")
    chapters = sorted(run.get("chapters", {}).items())
    out = [Measurement(section, "chapter, wall", stem, float(info["seconds"]), "s", repeats=1)
           for stem, info in chapters]
    out += [Measurement(section, "chapter, CPU (user + system)", stem, float(info["cpu_seconds"]), "s", repeats=1)
            for stem, info in chapters if "cpu_seconds" in info]
    out += [
        Measurement(section, "all chapters, wall", f"cold: {setting}", wall, "s", repeats=1),
        Measurement(section, "all chapters, CPU (user + system)", "the runner and its kernels", cpu, "s", repeats=1),
        Measurement(section, "CPU time over wall time", f"{os.cpu_count()} CPUs on this machine", cpu / wall, "x"),
        Measurement(section, "load average (1 min)", "at start", load_start, "processes"),
        Measurement(section, "load average (1 min)", "at end", load_end, "processes"),
        Measurement(section, "peak RSS", "largest process of the series",
                    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale, "MiB"),
    ]
    return out + composition


def _series_composition(root: Path) -> list[Measurement]:
    """What a series ran on: frames in the data, and stories, pairs and negatives of each type per split."""
    import pandas as pd

    section = f"{root.name.removesuffix(BENCH_SUFFIX)} series data"
    frames = sum(int(pd.read_parquet(f, columns=["frame_count"])["frame_count"].sum())
                 for f in sorted((root / "cache").glob("synthetic-*/*.parquet")))
    pairs = pd.read_parquet(root / "data" / "pairs.parquet")
    out = [Measurement(section, "frames", "in the data", frames, "frames")]
    for split, group in pairs.groupby("split", sort=False):
        out.append(Measurement(section, "stories", f"split {split}", group["story_id"].nunique(), "stories"))
        out.append(Measurement(section, "pairs", f"split {split}", len(group), "pairs"))
        for kind, n in group.loc[group["label"] == 0, "negative_type"].value_counts().sort_index().items():
            out.append(Measurement(section, "negatives", f"split {split}: {kind}", int(n), "pairs"))
    return out


# ------------------------------------------------------------------------------ main


def run_bench(*, quick: bool, skip_series: bool, workdir: str | os.PathLike) -> list[Measurement]:
    """Every measurement of the module docstring, at the sizes ``quick`` asks for."""
    from .clip import load_clip
    from .config import device, load_profile, output_paths
    from .detection import load_detector
    from .smoke.bench_inputs import synthetic_inputs

    cfg = load_profile("smoke")
    models = output_paths("smoke").models  # the smoke run's random weights, built once and shared
    dev = device()
    measurements: list[Measurement] = []
    if not skip_series:
        # First, while this process is small: a forked child's peak RSS starts at its parent's
        # size at the fork, so measuring the series after loading models would report those.
        print("Running the smoke series twice (cold, then warm)...", flush=True)
        measurements += bench_series()
    n_stories, per_story, repeats = (2, 2, 1) if quick else (3, 3, 2)
    inputs = synthetic_inputs(Path(workdir) / "synthetic", n_stories=n_stories, frames_per_story=per_story)
    print(f"Inputs: {len(inputs.images)} synthetic 576x240 frames, {len(inputs.sentences)} sentences, "
          f"{len(inputs.pairs)} pairs; device {dev}", flush=True)

    detector = load_detector("random", models_dir=models, seed=int(cfg["seed"]), device=dev)
    measurements += bench_detection(detector, inputs.images, sizes=cfg["detector"]["min_size_sweep"],
                                   batch_size=len(inputs.images), repeats=repeats)
    del detector
    clip = load_clip("random", models_dir=models, seed=int(cfg["seed"]), device=dev)
    batch = int(cfg["clip"]["batch_size"])
    measurements += bench_clip(clip, inputs.frames, inputs.sentences, batch_size=batch, repeats=repeats)
    measurements += bench_pair_scoring(clip, inputs.pairs, inputs.frames, batch_size=batch)
    del clip
    return measurements + peak_memory(children=not skip_series)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats (a few minutes on a laptop CPU)")
    parser.add_argument("--skip-series", action="store_true", help="skip the cold and warm runs of the smoke series")
    parser.add_argument("--quick-series", action="store_true",
                        help="instead: run the whole quick profile's series once, cold, on synthetic data of the "
                             "same shape with random weights (20-30 minutes on a 2-core CPU)")
    parser.add_argument("--out", type=Path, help="where to write the results (default: outputs/bench.json, "
                                                 "outputs/bench-quick.json with --quick-series)")
    args = parser.parse_args(argv)

    if args.quick_series:
        print("Running the quick profile's series once, cold, on synthetic data with random weights...", flush=True)
        measurements = bench_profile_series("quick")
        print(format_table(measurements))
        path = write_bench(args.out or OUTPUTS_DIR / "bench-quick.json",
                           bench_document(measurements, options={"quick_series": True, "profile": "quick-bench"}))
        print(f"Wrote {path}")
        return 0
    with tempfile.TemporaryDirectory(prefix="story-align-bench-") as workdir:
        measurements = run_bench(quick=args.quick, skip_series=args.skip_series, workdir=workdir)
    print(format_table(measurements))
    options = {"quick": args.quick, "skip_series": args.skip_series}
    path = write_bench(args.out or OUTPUTS_DIR / "bench.json", bench_document(measurements, options=options))
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
