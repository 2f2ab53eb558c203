"""Speed and memory of the pipeline's parts: ``python -m helpers.bench [--quick] [--skip-series]``.

Measured on the real architectures with randomly initialised weights (the ``"random"`` and
``"random-full-size"`` loaders of the model helpers), so this runs offline: a transformer's
forward pass costs the same whatever its weights, and Faster R-CNN's does once its random region
proposal network keeps as many proposals as trained weights do (``"random-full-size"``). Inputs
are synthetic 576x240 frames and story text from ``helpers.smoke`` (its synthetic dataset).
Every comparison is measured side by side in one process and reported as a ratio, which
transfers between machines far better than the seconds do.

- detection: frames per second at each ``min_size`` of the profile's sweep, batch 1
  against a larger batch, and at the smallest size with each count of region proposals of
  the profile's ``proposals_sweep`` against torchvision's 1000;
- CLIP: images and sentences per second;
- OWL-ViT (B/32, 768 px) and BLIP-VQA (base, 384 px) at their real sizes: frames per second,
  and BLIP's seconds per image and per further question;
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .bench_models import (BENCH_PHRASES, Measurement, bench_beyond_coco, bench_clip, bench_detection,
                           bench_pair_scoring, ratio, time_per_call)
from .config import BENCH_SUFFIX, OUTPUTS_DIR, RANDOM_FULL_SIZE, REPO_ROOT, load_profile
from .io import atomic_write_json

__all__ = [
    "SCHEMA_VERSION",
    "Measurement",
    "bench_detection",
    "bench_clip",
    "bench_pair_scoring",
    "bench_beyond_coco",
    "BENCH_PHRASES",
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
    from .clip import CLIP
    from .config import device, load_profile, output_paths
    from .detection import DETECTOR
    from .smoke.bench_inputs import synthetic_inputs
    from .weights import load_model

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

    detector = load_model(DETECTOR, RANDOM_FULL_SIZE, models_dir=models, seed=int(cfg["seed"]), device=dev)
    measurements += bench_detection(detector, inputs.images, sizes=cfg["detector"]["min_size_sweep"],
                                   batch_size=len(inputs.images), repeats=repeats,
                                   proposals=cfg["detector"]["proposals_sweep"])
    del detector
    clip = load_model(CLIP, "random", models_dir=models, seed=int(cfg["seed"]), device=dev)
    batch = int(cfg["clip"]["batch_size"])
    measurements += bench_clip(clip, inputs.frames, inputs.sentences, batch_size=batch, repeats=repeats)
    measurements += bench_pair_scoring(clip, inputs.pairs, inputs.frames, batch_size=batch)
    del clip
    measurements += bench_beyond_coco(inputs.frames, models_dir=models, seed=int(cfg["seed"]), repeats=repeats,
                                      phrases=BENCH_PHRASES, device=dev)
    return measurements + peak_memory(children=not skip_series)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats (a few minutes on a laptop CPU)")
    parser.add_argument("--skip-series", action="store_true", help="skip the cold and warm runs of the smoke series")
    parser.add_argument("--quick-series", action="store_true",
                        help="instead: run the whole quick profile's series once, cold, on synthetic data of the "
                             "same shape with random weights (its cost: README, What quick costs)")
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
