"""Profiles, output folders, the compute device, and the run record (``run.json``).

A *profile* is a YAML parameter file in ``profiles/``: ``smoke`` (offline, synthetic data,
randomly initialised models), ``quick`` (the first stories of the Hub dataset with
pretrained models) and ``full`` (every story). Chapters receive only the profile name from
papermill; everything else is read here, so the ten notebooks share one source of truth.
"""

from __future__ import annotations

import copy
import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .io import atomic_write_json, read_json

__all__ = [
    "REPO_ROOT",
    "PROFILES_DIR",
    "MissingAssetError",
    "Paths",
    "load_profile",
    "check_control_lm",
    "BENCH_SUFFIX",
    "BENCH_DATA_SHAPE",
    "bench_profile",
    "synthetic_or_random",
    "output_paths",
    "device",
    "hub_reachable",
    "package_versions",
    "git_commit",
    "update_run_record",
    "read_run_record",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = REPO_ROOT / "profiles"
OUTPUTS_DIR = Path(os.environ.get("STORY_ALIGN_OUTPUTS", REPO_ROOT / "outputs"))

#: Packages whose versions every run records.
TRACKED_PACKAGES = (
    "torch", "torchvision", "transformers", "datasets", "huggingface_hub", "numpy", "pandas",
    "pyarrow", "pillow", "scikit-learn", "matplotlib", "seaborn", "papermill", "jupytext", "nbconvert",
)


class MissingAssetError(RuntimeError):
    """Pretrained weights or data that a profile needs are neither cached nor downloadable.

    Raised instead of falling back to anything else: the message says what is missing,
    where it would be cached, and how to proceed.
    """

    def __init__(self, what: str, *, cache_var: str, detail: str = "") -> None:
        cache_dir = os.environ.get(cache_var) or _default_cache(cache_var)
        lines = [
            f"Missing: {what}.",
            f"Not in the local cache ({cache_var}={cache_dir}), and the Hugging Face Hub / PyTorch "
            "download servers cannot be reached from this machine.",
        ]
        if detail:
            lines.append(detail)
        lines += [
            "To fix it: run once on a machine with network access (it caches what it downloads), copy "
            f"the cache folder here and set {cache_var}, or point the profile at a local file or folder.",
            "To run offline without pretrained models: PROFILE=smoke (synthetic data, random weights; "
            "its numbers mean nothing).",
        ]
        super().__init__("\n".join(lines))


def _default_cache(var: str) -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return str(cache / ("torch" if var == "TORCH_HOME" else "huggingface"))


#: The ``weights`` of a bench profile's models: random weights that cost what the real model costs
#: (distilroberta, OWL-ViT and BLIP-VQA at their full size, where plain ``"random"`` is the smoke
#: profile's small model; Faster R-CNN with as many region proposals as trained weights keep).
RANDOM_FULL_SIZE = "random-full-size"

#: Profile sections whose plain ``"random"`` weights cost less than the real model (a small model,
#: or for the detector fewer proposals): a bench profile gives them :data:`RANDOM_FULL_SIZE`.
FULL_SIZE_SECTIONS = ("detector", "mlm", "control_lm", "openvocab", "questions")

#: ``<profile>-bench`` is built in code from ``profiles/<profile>.yaml`` (see :func:`bench_profile`).
BENCH_SUFFIX = "-bench"

#: The shape of StoryReasoning's stories for a bench profile's synthetic data: 5 to 22
#: frames per story with median 13, frames 240 px high and 560-580 wide.
BENCH_DATA_SHAPE: dict[str, Any] = {"frames": [5, 22], "frames_mode": 12, "image_size": [576, 240],
                                    "widths": [560, 580], "corrupt_frames": 0, "malformed_stories": 0}


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read ``profiles/<name>.yaml`` and apply nested ``overrides`` (dicts merge, values replace).

    ``<base>-bench`` (e.g. ``quick-bench``) has no file: it is :func:`bench_profile` of the
    ``base`` profile, so it can never drift apart from it.
    """
    import yaml

    base = name.removesuffix(BENCH_SUFFIX)
    if base != name and (PROFILES_DIR / f"{base}.yaml").exists():
        return _merge(bench_profile(load_profile(base)), overrides or {})
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ValueError(f"unknown profile {name!r}: expected one of {known} (or <one of them>{BENCH_SUFFIX})")
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    if cfg.get("profile") != name:
        raise ValueError(f"{path} declares profile {cfg.get('profile')!r}, expected {name!r}")
    cfg = check_control_lm(_merge(cfg, overrides or {}), path)
    if isinstance(n := (cfg.get("audit") or {}).get("per_type"), bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"profile {name!r}: audit.per_type (negatives of each type on chapter 08's audit sheet) "
                         f"must be a positive integer, got {n!r}")
    seeds = (cfg.get("training") or {}).get("seeds")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"profile {name!r}: training.seeds (how many seeds every head is trained with: seed, "
                         f"seed + 1, ...) must be a positive integer, got {seeds!r}")
    subset = cfg["training"].get("subset_seeds")
    if isinstance(subset, bool) or not isinstance(subset, int) or not 1 <= subset <= seeds:
        raise ValueError(f"profile {name!r}: training.subset_seeds (how many of the seeds train chapter 09's evidence "
                         f"subsets) must be an integer from 1 to training.seeds ({seeds}), got {subset!r}")
    return check_robustness(cfg, path)


def check_robustness(cfg: dict[str, Any], where: Any = "the profile") -> dict[str, Any]:
    """``cfg``, after checking its ``robustness`` section (chapter 09): ``n_pairs`` an integer of
    at least 2 (test pairs to perturb), ``image_levels`` ``"all"`` or a positive integer (the
    strengths of each image perturbation to run), ``image_pairs`` null or an integer of at least 2
    (the pairs of the sample the image perturbations run on)."""
    section = cfg.get("robustness")
    n = section.get("n_pairs") if isinstance(section, dict) else None
    levels = section.get("image_levels") if isinstance(section, dict) else None
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"{where}: robustness.n_pairs (test pairs chapter 09 perturbs) must be an integer of at "
                         f"least 2, got {n!r}")
    if levels != "all" and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 1):
        raise ValueError(f"{where}: robustness.image_levels must be 'all' or a positive integer, got {levels!r}")
    image_pairs = section.get("image_pairs")
    if image_pairs is not None and (isinstance(image_pairs, bool) or not isinstance(image_pairs, int) or image_pairs < 2):
        raise ValueError(f"{where}: robustness.image_pairs (pairs the image perturbations run on) must be null (all "
                         f"of the sample) or an integer of at least 2, got {image_pairs!r}")
    return cfg


def check_control_lm(cfg: dict[str, Any], where: Any = "the profile") -> dict[str, Any]:
    """``cfg``, after checking its ``control_lm`` section (chapter 07's causal language model):
    ``weights`` a non-empty string (Hub id, folder, ``random``), ``batch_size`` a positive integer."""
    lm = cfg.get("control_lm")
    if not (isinstance(lm, dict) and isinstance(lm.get("weights"), str) and lm["weights"]
            and isinstance(lm.get("batch_size"), int) and lm["batch_size"] > 0):
        raise ValueError(f"{where}: control_lm needs weights (a Hub id such as gpt2, a folder, or random) and a "
                         f"positive integer batch_size, got {lm!r}")
    return cfg


def bench_profile(cfg: dict[str, Any]) -> dict[str, Any]:
    """A profile costing what ``cfg`` costs, runnable offline: ``make bench --quick-series``.

    Every compute setting (stories, splits, detector input size, batch sizes, sweep sizes,
    bootstrap resamples, training) stays ``cfg``'s; the data become synthetic stories of
    StoryReasoning's shape (:data:`BENCH_DATA_SHAPE`, as many stories as ``cfg`` reads) and
    every ``weights`` entry becomes ``"random"`` (the real architectures, randomly
    initialised; the models of :data:`FULL_SIZE_SECTIONS` as :data:`RANDOM_FULL_SIZE`, which
    costs what the real model costs: their real size, and the detector's full count of
    proposals). Its numbers mean nothing. ``cfg`` must name its number of stories.
    """
    name = f"{cfg['profile']}{BENCH_SUFFIX}"
    if cfg["data"].get("n_stories") is None:
        raise ValueError(f"{name}: profile {cfg['profile']!r} reads every story (n_stories: null); a bench "
                         "profile needs a number of stories to generate")
    out = copy.deepcopy(cfg)
    out["profile"] = name
    out["description"] = (f"cost of {cfg['profile']!r} measured offline: synthetic data of StoryReasoning's shape, "
                          "randomly initialised models (numbers mean nothing)")
    out["data"].update(source="synthetic", synthetic=copy.deepcopy(BENCH_DATA_SHAPE), hub_external_test=False)
    for section in out.values():
        if isinstance(section, dict) and "weights" in section:
            section["weights"] = "random"
    for section in FULL_SIZE_SECTIONS:  # plain "random" costs less than the real model; cost the real one
        if section in out:
            out[section]["weights"] = RANDOM_FULL_SIZE
    return out


def synthetic_or_random(cfg: dict[str, Any]) -> bool:
    """Whether a profile's numbers mean nothing: synthetic data or any randomly initialised model."""
    return cfg["data"]["source"] == "synthetic" or any(
        isinstance(section, dict) and str(section.get("weights", "")).startswith("random") for section in cfg.values())


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Paths:
    """Where one profile's outputs live: ``outputs/<profile>/...``."""

    root: Path

    @property
    def data(self) -> Path: return self.root / "data"
    @property
    def features(self) -> Path: return self.root / "features"
    @property
    def cache(self) -> Path: return self.root / "cache"
    @property
    def models(self) -> Path: return self.root / "models"
    @property
    def checkpoints(self) -> Path: return self.root / "checkpoints"
    @property
    def notebooks(self) -> Path: return self.root / "notebooks"
    @property
    def reports(self) -> Path: return self.root / "reports"
    audit = property(lambda self: self.root / "audit", doc="the audit sheet (chapter 08) and its labels (chapter 07)")
    @property
    def run_json(self) -> Path: return self.root / "run.json"
    @property
    def metrics_json(self) -> Path: return self.root / "metrics.json"
    @property
    def pairs(self) -> Path: return self.data / "pairs.parquet"
    @property
    def features_table(self) -> Path: return self.features / "features.parquet"


def output_paths(profile: str) -> Paths:
    """The output folders of ``profile`` (created on demand by the writers, not here)."""
    return Paths(OUTPUTS_DIR / profile)


def device(prefer: str | None = None) -> "torch.device":  # noqa: F821
    """The compute device: ``prefer`` if given, else CUDA, else Apple MPS, else CPU."""
    import torch

    if prefer or torch.cuda.is_available():
        return torch.device(prefer or "cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the model hub answers a TCP connection, unless ``HF_HUB_OFFLINE`` is set."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the results, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    """The repository's HEAD commit, with ``+dirty`` when the work tree has changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def update_run_record(profile: str, /, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``run.json`` atomically and return it (nested dicts merge: chapters add ``chapters``)."""
    path = output_paths(profile).run_json
    record = _merge(read_json(path, default={}), fields)
    record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(path, record)
    return record


def read_run_record(profile: str) -> dict[str, Any]:
    """The run record of ``profile`` (empty when no run has written one)."""
    return read_json(output_paths(profile).run_json, default={})
