# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Training: early stopping, the study's fixed epochs, and the baselines
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/06_training.ipynb)
#
# The original study trained its fusion head for a fixed, small number of epochs and kept
# the result. Here the same head is trained with early stopping on the validation loss,
# next to the study's fixed-epoch setting and to simpler models on the same features and splits: each score
# alone (CLIP alone among them), a logistic regression and a gradient-boosted tree
# ensemble, the last two on the study's and on the extended inputs, each with its setting
# chosen on the validation split as the head's epoch is. Every model's decision threshold is
# tuned on the validation split; the test split is left for chapter 07.

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full: see profiles/*.yaml

# %%
# Setup: makes `helpers` importable here, or clones the repository first in Colab.
import os, subprocess, sys
from pathlib import Path

if "google.colab" in sys.modules and not Path("story-image-alignment").exists():
    subprocess.run(["git", "clone", "--depth=1", "https://github.com/story-align/story-image-alignment"], check=True)
    os.chdir("story-image-alignment")
sys.path.insert(0, str(next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "helpers").is_dir())))

from helpers.notebook import start

ctx = start(profile, chapter="06_training")

# %% [markdown]
# ## What the method needs
#
# The functions written in this chapter are saved (`#@save`) into `helpers/training.py`,
# which chapters 05, 07 and 09 and the verifier import. Two of them come from chapter 07:
# tuning a decision threshold on the validation split (`tune_threshold`) and the metrics at
# a threshold (`point_metrics`).

# %%
#@save
import copy
import hashlib
import io
import itertools
import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from helpers.config import Paths
from helpers.evaluation import THRESHOLD_METRICS, point_metrics, tune_threshold
from helpers.fusion import (STUDY_FEATURES, FeatureTableError, FlooredScaler, FusionMLP, TrainedHead, feature_matrix,
                            resolve_features, standardise)
from helpers.io import atomic_write_bytes, atomic_write_json, atomic_write_parquet, read_json, stable_hash

# %% [markdown]
# ## The training pairs
#
# Stories, not pairs, were assigned to the splits (chapter 01), so no story has pairs on
# both sides of a split. Every model below sees the same pairs: those with a value in every
# feature.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from helpers.features import load_features
from helpers.fusion import STUDY_FEATURES, complete_rows, extended_features

features = load_features(ctx.paths, required=STUDY_FEATURES)
table, holes = complete_rows(features, extended_features(ctx.cfg))
counts = table.groupby(["split", "label"]).size().unstack("label").rename(columns={0: "misaligned", 1: "aligned"})
display(counts)
if holes:
    display(Markdown(f"Set aside: {len(features) - len(table):,} pairs with a missing feature ({holes})."))

# %% [markdown]
# ## What determines a run
#
# Everything that determines a training run is one frozen value, stored in its checkpoints:
# the input columns, the head's width and dropout, the learning rate, the batch size, the
# epoch cap, the patience and the seed, and the metric the decision threshold maximises.
# `patience=None` trains exactly `max_epochs` epochs and keeps the last one (the original
# study's setting: `STUDY_EPOCHS`, no selection on validation); otherwise training stops once
# the validation loss has not improved for `patience` epochs and keeps the epoch with the
# lowest validation loss. The profile gives the learning rate, batch size, cap and patience.

# %%
#@save
#: The run whose best.pt is "the" trained head (early stopping, the study's three scores):
#: chapter 07's primary model and the one ``helpers.verify`` loads.
DEFAULT_RUN = "fusion"
#: The original study's setting: a fixed number of epochs, no selection on validation.
STUDY_RUN = "fusion_3_epochs"
STUDY_EPOCHS = 3
CHECKPOINT_FORMAT = 1
#: What every validation-tuned threshold maximises unless told otherwise (see ``tune_threshold``).
THRESHOLD_METRIC = "macro_f1"
#: Columns of ``predictions.parquet`` copied from the feature table.
PAIR_COLUMNS = ("pair_id", "story_id", "frame", "block", "split", "label", "negative_type")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or not one this code wrote."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything that determines a training run (stored in its checkpoints).

    ``patience=None`` trains exactly ``max_epochs`` epochs and keeps the last one (the
    original study's setting); otherwise training stops once the validation loss has not
    improved for ``patience`` epochs and keeps the epoch with the lowest validation loss.
    """

    features: tuple[str, ...] = STUDY_FEATURES
    hidden_dim: int = 64
    dropout: float = 0.1
    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 200
    patience: int | None = 15
    seed: int = 42
    threshold_metric: str = THRESHOLD_METRIC

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", resolve_features(self.features))
        if self.max_epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"max_epochs, batch_size and lr must be positive: {self}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.threshold_metric not in THRESHOLD_METRICS:
            raise ValueError(f"threshold_metric must be one of {THRESHOLD_METRICS}, got {self.threshold_metric!r}")


def settings_from_profile(cfg: Mapping[str, Any], features: str | Sequence[str] = "study", **overrides: Any) -> TrainSettings:
    """``TrainSettings`` from a profile's ``training`` section and ``seed``, with ``overrides`` on top.

    ``settings_from_profile(cfg, max_epochs=STUDY_EPOCHS, patience=None)`` is the study's setting.
    """
    t = cfg["training"]
    values = dict(features=resolve_features(features), lr=float(t["lr"]), batch_size=int(t["batch_size"]),
                  max_epochs=int(t["max_epochs"]), patience=t.get("patience"), seed=int(cfg.get("seed", 42)))
    return TrainSettings(**{**values, **overrides})

# %% [markdown]
# ## Weights: each frame's positive against its negatives
#
# Chapter 01 gives every frame one positive and one negative of each kind that applies to it,
# up to four, so there are about three times as many misaligned pairs as aligned ones. Every
# model fitted here weighs each pair in its loss by `frame_weights`: a positive 1, each
# negative 1 / (the number of negatives of its frame), so that a frame's negatives together
# weigh as much as its positive and the two classes weigh the same. The thresholds are still
# tuned on the validation split, on the unweighted pairs (chapter 07's `tune_threshold`).

# %%
#@save
def frame_weights(rows: pd.DataFrame) -> np.ndarray:
    """Each row's weight in a loss: 1 for a positive, 1 / (the negatives of its frame among ``rows``) for a
    negative, so that a frame's negatives together weigh as much as its positive (frames by ``story_id``,
    ``frame``)."""
    negative = rows["label"].to_numpy() == 0
    per_frame = pd.Series(negative, index=rows.index).groupby([rows["story_id"], rows["frame"]]).transform("sum")
    return np.where(negative, 1.0 / per_frame.clip(lower=1).to_numpy(), 1.0)

# %%
_demo = table[table["split"] == "train"]
_w = frame_weights(_demo)
pd.DataFrame({"pairs": _demo.groupby("label").size(), "total weight": pd.Series(_w).groupby(
    _demo["label"].to_numpy()).sum()}).rename(index={0: "misaligned", 1: "aligned"})

# %% [markdown]
# ## The training loop
#
# `train_fusion` trains a fresh `FusionMLP` (chapter 05) on the train split and validates on
# the validation split:
#
# 1. The inputs are standardised with the training split's statistics only (chapter 05's
#    `FlooredScaler` fitted on it, applied to both splits: no scale below `MIN_SCALE`, and a
#    placeholder score, missing, set to the training mean of the checked ones).
# 2. Each epoch goes once through the training pairs in mini-batches, shuffled by a
#    generator seeded from the settings, and takes one Adam step per batch on the binary
#    cross-entropy of the head's logits, each pair weighed by `frame_weights` (the validation
#    loss is weighed the same way).
# 3. After each epoch the loss, accuracy and macro-F1 (at probability 0.5) of both whole
#    splits are measured with dropout off. An epoch whose validation loss is the lowest so
#    far becomes the best; the run stops when the cap is reached or, with a patience, when
#    the best is `patience` epochs old.
# 4. After every epoch the run writes `last.pt` (everything needed to continue, random-number
#    states included) and, when the epoch is the best so far, `best.pt`, both atomically. Run
#    again, it resumes from `last.pt` and ends exactly where an uninterrupted run would;
#    checkpoints of other settings or data are set aside with a warning.
# 5. The kept epoch's head gets its decision threshold, tuned on the validation split
#    (chapter 07's `tune_threshold`), stored in `best.pt`.
#
# The head always trains on the CPU, on one thread, with deterministic kernels: with 4,481
# parameters a GPU would spend more time moving mini-batches than computing, more threads
# only add synchronisation, and CPU results are reproducible bit for bit.

# %%
#@save
@dataclass(frozen=True)
class TrainResult:
    """The outcome of ``train_fusion``.

    ``history`` has one row per epoch: ``epoch``, ``train_loss``, ``val_loss``,
    ``train_accuracy``, ``val_accuracy``, ``train_f1``, ``val_f1`` (losses and metrics of the
    whole split after the epoch, dropout off; accuracy and macro-F1 at probability 0.5).
    """

    head: TrainedHead
    history: pd.DataFrame
    settings: TrainSettings
    best_epoch: int
    stopped_early: bool
    resumed_from_epoch: int  # 0 for a run that started from scratch
    run_dir: Path | None = None


@contextmanager
def _training_context(seed: int) -> Iterator[None]:
    """Seed torch's global generator, require deterministic kernels and use one CPU thread,
    restoring all three afterwards. The head is so small that more threads only add
    synchronisation (ten times the CPU time on two cores, measured)."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


def _split(table: pd.DataFrame, split: str, features: tuple[str, ...]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The rows of one split, their feature matrix and their labels (as float32); both classes required
    (:func:`frame_weights` of the rows weigh them in a loss)."""
    rows = table[table["split"] == split]
    labels = rows["label"].to_numpy() if "label" in rows else np.array([])
    if len(rows) == 0 or len(np.unique(labels)) < 2:
        raise ValueError(f"the {split!r} split needs aligned and misaligned pairs; it has {len(rows)} pairs "
                         f"with labels {sorted(set(labels.tolist()))}")
    return rows, feature_matrix(rows, features), labels.astype(np.float32)


def _epoch_metrics(model: FusionMLP, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[float, float, float]:
    """Loss (each pair weighed by ``w``), accuracy and macro-F1 (at probability 0.5) on a whole split, dropout off."""
    model.eval()
    with torch.no_grad():
        logits = model.logits(x)
    loss = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum().item() / w.sum().item()
    pred, truth = (logits >= 0).numpy(), y.numpy().astype(bool)
    return loss, accuracy_score(truth, pred), f1_score(truth, pred, average="macro", zero_division=0)


@dataclass
class _Progress:
    """The mutable part of a run, saved in every checkpoint."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    epochs_since_best: int = 0
    finished: bool = False

# %% [markdown]
# The loop itself; the numbers in its comments are the steps above.

# %%
#@save
def train_fusion(
    table: pd.DataFrame,
    settings: TrainSettings,
    run_dir: str | Path | None = None,
    *,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a fusion head on the ``train`` rows of ``table``, validating on its ``val`` rows.

    With ``run_dir``, ``last.pt`` and ``best.pt`` are written there after every epoch; a
    ``last.pt`` of the same settings and data is resumed (one of a finished run returns at
    once), one of other settings or data is set aside with a warning and training starts
    over. ``on_epoch_end`` receives each epoch's history row after the checkpoints are
    written. The threshold is tuned on the validation split (``settings.threshold_metric``).
    """
    features = settings.features
    train_rows, x_train_raw, y_train_np = _split(table, "train", features)
    val_rows, x_val_raw, y_val_np = _split(table, "val", features)
    w_train, w_val = (torch.from_numpy(frame_weights(r).astype(np.float32)) for r in (train_rows, val_rows))
    scaler = FlooredScaler().fit(x_train_raw)  # 1. the training split's statistics only
    x_train = torch.from_numpy(standardise(scaler, x_train_raw))
    x_val = torch.from_numpy(standardise(scaler, x_val_raw))
    y_train, y_val = torch.from_numpy(y_train_np), torch.from_numpy(y_val_np)
    fingerprint = _data_fingerprint(settings, x_train_raw, y_train_np, x_val_raw, y_val_np, w_train.numpy(),
                                    w_val.numpy())
    run_dir = Path(run_dir) if run_dir is not None else None

    with _training_context(settings.seed):
        model = FusionMLP(len(features), settings.hidden_dim, settings.dropout)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        shuffle_rng = torch.Generator().manual_seed(settings.seed)
        loader = DataLoader(TensorDataset(x_train, y_train, w_train), batch_size=settings.batch_size, shuffle=True,
                            generator=shuffle_rng)
        state = _Progress()
        best: dict[str, Any] | None = None

        resumed = _resumable(run_dir, fingerprint)
        if resumed is not None:
            last, best = resumed
            model.load_state_dict(last["model_state"])
            optimizer.load_state_dict(last["optimizer_state"])
            shuffle_rng.set_state(last["rng"]["shuffle"])
            torch.set_rng_state(last["rng"]["torch"])
            state = _Progress(**last["progress"])
        resumed_from = state.epoch

        def snapshot() -> dict[str, Any]:
            return {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": fingerprint,
                "settings": asdict(settings),
                "epoch": state.epoch,
                "model_state": copy.deepcopy(model.state_dict()),
                "optimizer_state": copy.deepcopy(optimizer.state_dict()),
                "scaler": _scaler_state(scaler),
                "progress": asdict(state),
                "rng": {"shuffle": shuffle_rng.get_state(), "torch": torch.get_rng_state()},
                "threshold": None,
            }

        remaining = range(state.epoch + 1, (state.epoch if state.finished else settings.max_epochs) + 1)
        epochs = tqdm(remaining, desc=f"training {run_dir.name if run_dir else 'head'}", unit="epoch",
                      disable=not progress or not remaining, initial=state.epoch, total=settings.max_epochs)
        for epoch in epochs:  # 2. one pass over the shuffled mini-batches
            model.train()
            for xb, yb, wb in loader:
                optimizer.zero_grad()
                loss = F.binary_cross_entropy_with_logits(model.logits(xb), yb, reduction="none")
                ((loss * wb).sum() / wb.sum()).backward()  # a weighted mean: each frame's classes weigh the same
                optimizer.step()
            train_loss, train_acc, train_f1 = _epoch_metrics(model, x_train, y_train, w_train)  # 3. both whole splits
            val_loss, val_acc, val_f1 = _epoch_metrics(model, x_val, y_val, w_val)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "train_accuracy": train_acc,
                   "val_accuracy": val_acc, "train_f1": train_f1, "val_f1": val_f1}
            improved = settings.patience is None or val_loss < state.best_val_loss
            state.epoch = epoch
            state.history.append(row)
            if improved:
                state.best_epoch, state.best_val_loss, state.epochs_since_best = epoch, val_loss, 0
            else:
                state.epochs_since_best += 1
            state.finished = epoch == settings.max_epochs or (
                settings.patience is not None and state.epochs_since_best >= settings.patience)
            last = snapshot()
            if improved:
                best = last
            if run_dir is not None:  # 4. checkpoints after every epoch
                if improved:
                    _save(run_dir / "best.pt", best)
                _save(run_dir / "last.pt", last)
            epochs.set_postfix(val_loss=f"{val_loss:.4f}", best_epoch=state.best_epoch)
            if on_epoch_end is not None:
                on_epoch_end(row)
            if state.finished:
                break

    assert best is not None  # at least one epoch ran or was restored
    head = _head_from_checkpoint(best, threshold=math.nan)  # 5. the kept epoch, and its threshold
    with torch.no_grad():
        threshold = tune_threshold(y_val_np, head.model(x_val).numpy(), settings.threshold_metric)
    head = replace(head, threshold=threshold)
    if run_dir is not None:
        _save(run_dir / "best.pt", {**best, "threshold": threshold})
    return TrainResult(
        head=head,
        history=pd.DataFrame(state.history),
        settings=settings,
        best_epoch=state.best_epoch,
        stopped_early=state.epoch < settings.max_epochs,
        resumed_from_epoch=resumed_from,
        run_dir=run_dir,
    )

# %% [markdown]
# Checkpoints hold tensors and plain values only, so they load with `weights_only=True`; the
# scaler is stored as its statistics. A run resumes only from checkpoints whose fingerprint
# (a hash of the settings and of the exact training and validation arrays) matches.

# %%
#@save
# extra code
def _scaler_state(scaler: StandardScaler) -> dict[str, Any]:
    return {"mean": torch.from_numpy(scaler.mean_), "scale": torch.from_numpy(scaler.scale_),
            "var": torch.from_numpy(scaler.var_),  # per column when a column had missing values
            "n_samples_seen": np.broadcast_to(scaler.n_samples_seen_, scaler.mean_.shape).astype(int).tolist()}


def _scaler_from_state(state: Mapping[str, Any]) -> StandardScaler:
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = (state[k].numpy().astype(np.float64) for k in ("mean", "scale", "var"))
    scaler.n_samples_seen_ = np.asarray(state["n_samples_seen"], dtype=np.int64)
    scaler.n_features_in_ = len(scaler.mean_)
    return scaler


def _save(path: Path, checkpoint: Mapping[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``train_fusion`` (tensors and plain values only: ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: torch raises many kinds
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a fusion-head checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint


def _head_from_checkpoint(checkpoint: Mapping[str, Any], threshold: float) -> TrainedHead:
    settings = TrainSettings(**checkpoint["settings"])
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the global generator alone
        model = FusionMLP(len(settings.features), settings.hidden_dim, settings.dropout)
    model.load_state_dict(checkpoint["model_state"])
    model.eval()
    return TrainedHead(model=model, scaler=_scaler_from_state(checkpoint["scaler"]), features=settings.features,
                       threshold=threshold)


def load_head(path: str | Path) -> TrainedHead:
    """The trained head stored in a ``best.pt``, with its validation-tuned threshold."""
    checkpoint = load_checkpoint(path)
    if checkpoint.get("threshold") is None:
        raise CheckpointError(f"{path} has no tuned threshold: its training run did not finish (run it again to resume)")
    return _head_from_checkpoint(checkpoint, float(checkpoint["threshold"]))


def default_checkpoint(paths: Paths, run_name: str = DEFAULT_RUN) -> Path:
    """Where the best checkpoint of ``run_name`` lives: ``checkpoints/<run_name>/best.pt``."""
    return paths.checkpoints / run_name / "best.pt"


def _data_fingerprint(settings: TrainSettings, *arrays: np.ndarray) -> str:
    digest = hashlib.sha1()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return stable_hash({"settings": asdict(settings), "data": digest.hexdigest()})


def _resumable(run_dir: Path | None, fingerprint: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(last.pt, best.pt) of ``run_dir`` when they belong to a run of these settings and data."""
    if run_dir is None or not (run_dir / "last.pt").exists():
        return None
    try:
        last, best = load_checkpoint(run_dir / "last.pt"), load_checkpoint(run_dir / "best.pt")
    except CheckpointError as err:
        warnings.warn(f"not resuming from {run_dir}: {err}; training from scratch", stacklevel=3)
        return None
    if last["fingerprint"] != fingerprint or best["fingerprint"] != fingerprint:
        warnings.warn(f"not resuming from {run_dir}: its checkpoints were trained with other settings or data; "
                      "training from scratch (they will be overwritten)", stacklevel=3)
        return None
    return last, best

# %% [markdown]
# ## Three training runs
#
# All three use Adam (learning rate from the profile), binary cross-entropy, mini-batches
# shuffled by a seeded generator, and inputs standardised with the training split's
# statistics. After every epoch a checkpoint is written (`last.pt`, and `best.pt` when the
# validation loss improves), so an interrupted run resumes where it stopped and a rerun of
# this chapter costs nothing.
#
# - **fusion**: the study's three scores, early stopping (patience and epoch cap from the
#   profile), the epoch with the lowest validation loss kept. Chapter 05 already trained
#   it; this resumes from its checkpoint.
# - **fusion_3_epochs**: the study's setting, its fixed number of epochs
#   (`STUDY_EPOCHS`), the last one kept.
# - **fusion_extended**: the extended inputs (chapter 05), with the open-vocabulary and
#   question scores when the profile switches them on, early stopping.
#
# ### Over several seeds
#
# A seed decides the head's initial weights, the dropout masks and the order of the
# mini-batches; on a small training split two seeds can keep different epochs and land
# several hundredths of ROC-AUC apart. So each run is trained with every seed of the
# profile (`training.seeds` of them: the profile's `seed`, then `seed + 1`, ...). The run of
# the profile's own seed is *the* run: its `best.pt` is the checkpoint every later chapter
# and the verifier load (`default_checkpoint`), and adding seeds leaves it as it was. The
# other seeds' runs live beside it (`checkpoints/seeds/<run>/seed_<n>/`), checkpointed and
# resumed exactly like it; each tunes its own threshold on the validation split.

# %%
#@save
def training_seeds(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    """The seeds every head is trained with: the profile's ``seed`` first (the primary run), then ``seed + 1``,
    ... (``training.seeds`` of them)."""
    first, n = int(cfg.get("seed", 42)), int(cfg["training"]["seeds"])
    if n < 1:
        raise ValueError(f"training.seeds must be a positive integer, got {n}")
    return tuple(range(first, first + n))


def seed_run_dir(run_dir: str | Path, seed: int, primary_seed: int) -> Path:
    """The checkpoint folder of one seed's run: ``run_dir`` itself for the primary seed, else
    ``<parent>/seeds/<run>/seed_<seed>``."""
    run_dir = Path(run_dir)
    return run_dir if seed == primary_seed else run_dir.parent / "seeds" / run_dir.name / f"seed_{seed}"


def train_seeds(table: pd.DataFrame, settings: TrainSettings, seeds: Sequence[int], run_dir: str | Path | None = None,
                *, progress: bool = False) -> dict[int, TrainResult]:
    """``train_fusion`` once per seed: ``settings`` with its ``seed`` replaced; ``settings.seed`` is the primary
    run, which must be among ``seeds`` and keeps ``run_dir`` (the others: :func:`seed_run_dir`)."""
    if settings.seed not in seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and hold the primary seed {settings.seed}, got {list(seeds)}")
    return {s: train_fusion(table, replace(settings, seed=s),
                            None if run_dir is None else seed_run_dir(run_dir, s, settings.seed), progress=progress)
            for s in seeds}

# %%
seeds = training_seeds(ctx.cfg)
runs = {
    DEFAULT_RUN: settings_from_profile(ctx.cfg, "study"),
    STUDY_RUN: settings_from_profile(ctx.cfg, "study", max_epochs=STUDY_EPOCHS, patience=None),
    "fusion_extended": settings_from_profile(ctx.cfg, extended_features(ctx.cfg)),
}
seed_results = {name: train_seeds(table, settings, seeds, ctx.paths.checkpoints / name)
                for name, settings in runs.items()}
results = {name: seed_results[name][settings.seed] for name, settings in runs.items()}  # the primary runs

# extra code: one row per run (validation accuracy and macro-F1 at probability 0.5, then the tuned threshold)
summary = pd.DataFrame([
    {"run": name, "inputs": len(r.settings.features), "epochs_trained": len(r.history), "kept_epoch": r.best_epoch,
     "stopped_early": r.stopped_early,
     **{c: r.history.set_index("epoch").at[r.best_epoch, c] for c in ("val_loss", "val_accuracy", "val_f1")},
     "threshold": r.head.threshold}
    for name, r in results.items()]).set_index("run")
display(summary.style.format(precision=3))
resumed = [name for name, r in results.items() if r.resumed_from_epoch]
if resumed:
    display(Markdown("Resumed from a checkpoint: " + ", ".join(
        f"`{name}` (from epoch {results[name].resumed_from_epoch})" for name in resumed) + "."))

# %% [markdown]
# Loss, accuracy and macro-F1 per epoch, on the training split (solid) and the validation
# split (dashed), measured after each epoch with dropout off. Accuracy and F1 here call a
# pair aligned when the head gives it better-than-even odds; the tuned thresholds come
# after. The dot marks the epoch each run kept.

# %%
# extra code: loss, accuracy and macro-F1 per epoch, train solid and validation dashed; a dot on each kept epoch
import seaborn as sns

long = []
for run, result in results.items():
    h = result.history
    for split in ("train", "val"):
        for metric, column in (("loss", f"{split}_loss"), ("accuracy", f"{split}_accuracy"), ("macro-F1", f"{split}_f1")):
            long.append(pd.DataFrame({"run": run, "split": split, "metric": metric, "epoch": h["epoch"],
                                      "value": h[column]}))
curves = pd.concat(long, ignore_index=True)
fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
for ax, metric in zip(axes, ("loss", "accuracy", "macro-F1")):
    sns.lineplot(curves[curves["metric"] == metric], x="epoch", y="value", hue="run", style="split",
                 style_order=["train", "val"], ax=ax)
    ax.set(title=metric, ylabel=metric)
for i, (run, result) in enumerate(results.items()):
    kept = result.history.set_index("epoch").loc[result.best_epoch, "val_loss"]
    axes[0].plot([result.best_epoch], [kept], "o", color=sns.color_palette()[i], markersize=8)
plt.show()

# %%
early, fixed = summary.loc[DEFAULT_RUN], summary.loc[STUDY_RUN]
display(Markdown(
    f"The two runs share their first {STUDY_EPOCHS} epochs (same seed, same batches), so the difference is what "
    f"training on bought: `{DEFAULT_RUN}` ran {early['epochs_trained']} epochs and kept epoch {early['kept_epoch']}, "
    f"with a validation loss of {early['val_loss']:.3f} against {fixed['val_loss']:.3f} after epoch {STUDY_EPOCHS} "
    f"(validation macro-F1 at even odds: {early['val_f1']:.3f} against {fixed['val_f1']:.3f})."))

# %% [markdown]
# ### What the seed changes
#
# Each run's validation ROC-AUC (over every validation pair) and kept epoch, per seed. The
# spread is what training noise alone moves a head by: a difference between two heads smaller
# than it says nothing. Chapter 07 measures the same seeds on the test split.

# %%
#@save
def seed_predictions(table: pd.DataFrame, runs: Mapping[str, Mapping[int, TrainResult]],
                     splits: Sequence[str] = ("val", "test")) -> pd.DataFrame:
    """The pairs of ``splits`` scored by every seed's head of every run: one row per (pair, run, seed) with
    ``PAIR_COLUMNS``, ``model`` (the run), ``seed``, ``score`` and ``threshold`` (tuned by that seed's run on the
    validation split)."""
    rows = table[table["split"].isin(splits)]
    base = rows.loc[:, list(PAIR_COLUMNS)].reset_index(drop=True)
    return pd.concat([base.assign(model=name, seed=int(seed), score=np.asarray(r.head.predict_proba(rows), np.float64),
                                  threshold=float(r.head.threshold))
                      for name, by_seed in runs.items() for seed, r in by_seed.items()], ignore_index=True)


def seed_predictions_path(paths: Paths) -> Path:
    """``outputs/<profile>/seed_predictions.parquet``: every seed's scores of the validation and test pairs."""
    return paths.root / "seed_predictions.parquet"


def load_seed_predictions(paths: Paths) -> pd.DataFrame:
    """Read ``seed_predictions.parquet`` (written by chapter 06)."""
    path = seed_predictions_path(paths)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run chapter 06 (training) first")
    return pd.read_parquet(path)

# %%
from sklearn.metrics import roc_auc_score

by_seed = seed_predictions(table, seed_results)
atomic_write_parquet(by_seed, seed_predictions_path(ctx.paths))
val_seeds = by_seed[by_seed["split"] == "val"]
per_seed = pd.DataFrame([
    {"run": name, "seed": seed, "val ROC-AUC": roc_auc_score(rows["label"], rows["score"]),
     "kept epoch": seed_results[name][seed].best_epoch}
    for (name, seed), rows in val_seeds.groupby(["model", "seed"], sort=False)])
display(per_seed.pivot(index="run", columns="seed", values=["val ROC-AUC", "kept epoch"]).style.format(precision=3))
spread = per_seed.groupby("run", sort=False)["val ROC-AUC"].agg(["mean", "std", "min", "max"])
display(spread.rename(columns={"std": "std (over seeds)"}).style.format(precision=3))
fig, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * len(spread)), layout="constrained")
sns.stripplot(per_seed, x="val ROC-AUC", y="run", hue="seed", palette="viridis", size=7, ax=ax)
ax.set(title=f"validation ROC-AUC over {len(seeds)} seeds", ylabel="")
plt.show()
widest = spread["max"].sub(spread["min"]).idxmax()
display(Markdown(f"Over {len(seeds)} seeds ({', '.join(map(str, seeds))}; the first is the primary run), "
                 f"`{widest}`'s validation ROC-AUC spans {spread.at[widest, 'min']:.3f} to "
                 f"{spread.at[widest, 'max']:.3f} (standard deviation {spread.at[widest, 'std']:.3f}); the kept "
                 f"epoch ranges from {per_seed['kept epoch'].min()} to {per_seed['kept epoch'].max()} across runs and "
                 f"seeds. Wrote {len(by_seed):,} rows (validation and test pairs × runs × seeds) to "
                 f"`{seed_predictions_path(ctx.paths).relative_to(ctx.paths.root.parent)}` for chapters 07 and 09."))

# %% [markdown]
# ## Baselines on the same features and splits
#
# - `object_score_only`, `clip_score_only`, `spatial_score_only`: one score as the
#   prediction, with its own threshold; a placeholder score (its state not "checked") is
#   ranked at the training mean of the checked scores, as the head reads it;
# - `logistic_regression`: a linear model of the three scores, standardised like the head's
#   inputs (chapter 05's `FlooredScaler`, then a missing value set to 0, the training mean);
# - `gradient_boosting`: scikit-learn's `HistGradientBoostingClassifier`, the tree ensemble
#   the original study listed as future work; it takes a missing value as it is;
# - `logistic_regression_extended`, `gradient_boosting_extended`: the same two models on the
#   extended head's inputs (chapter 05's `extended_features`), so that the extended head meets
#   baselines that read exactly what it reads.
#
# The fitted baselines are tuned like the head. The head keeps the epoch with the lowest
# validation loss, each pair weighed by `frame_weights`; each baseline keeps, from a small
# grid stated below, the setting with the lowest validation loss weighed the same way. Then
# every threshold, the heads' included, maximises macro-F1 on the validation split.
# Macro-F1 weighs both classes equally, so it does not reward calling everything aligned
# when positives dominate a split; accuracy is the alternative the training code accepts.
#
# ### One criterion for every choice
#
# `validation_loss` is the head's early-stopping loss: the binary cross-entropy of P(aligned)
# on the validation split, each pair weighed by `frame_weights`. The grids are named
# constants: the regularisation strength of the logistic regression, and the learning rate and
# leaf size (the fewest training pairs a leaf may hold) of the boosted trees, whose number of
# trees is chosen on the validation split too, as the head's epoch is.

# %%
#@save
#: Inverse regularisation strengths of ``logistic_regression``, a factor of 10 apart: at 1e-3 the penalty holds
#: every standardised coefficient near zero (almost a constant), at 1e3 it hardly acts on a dozen inputs fitted
#: on hundreds of pairs or more, so the validation loss can turn on either side of the range.
LOGISTIC_C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
#: Learning rates and leaf sizes (``min_samples_leaf``) of ``gradient_boosting``: scikit-learn's defaults (0.1, 20)
#: in the middle and a factor of 3 to 4 either way, from slow, smooth ensembles to fast, jagged ones.
BOOSTING_GRID: dict[str, tuple[float, ...]] = {"learning_rate": (0.03, 0.1, 0.3), "min_samples_leaf": (5, 20, 80)}
#: The most trees a boosting fit grows, and the trees in a row without a lower validation loss that end it.
BOOSTING_MAX_ITER = 500
BOOSTING_PATIENCE = 10
#: Fewer rows than this, the trees are grown and scored on one thread.
SMALL_TABLE = 20_000
BASELINE_CRITERION = "validation log-loss, each pair weighed by frame_weights (the head's early-stopping loss)"


def validation_loss(y_true: Sequence[int], scores: Sequence[float], weights: Sequence[float]) -> float:
    """The binary cross-entropy of ``scores`` (P(aligned)) against ``y_true``, each pair weighed by ``weights``
    (``sum(w * loss) / sum(w)``): with :func:`frame_weights`, the loss the head's early stopping minimises."""
    return float(log_loss(np.asarray(y_true).astype(int), np.asarray(scores, dtype=np.float64),
                          sample_weight=np.asarray(weights, dtype=np.float64), labels=[0, 1]))

# %% [markdown]
# The same number as the head's: its kept epoch's validation loss, measured again from its
# predictions (the head computes in 32-bit floats, hence the last digits).

# %%
_val = table[table["split"] == "val"]
_kept = results[DEFAULT_RUN]
pd.DataFrame({"training loop (kept epoch)": [_kept.history.set_index("epoch").at[_kept.best_epoch, "val_loss"]],
              "validation_loss": [validation_loss(_val["label"], _kept.head.predict_proba(_val), frame_weights(_val))]},
             index=[DEFAULT_RUN]).style.format(precision=6)

# %% [markdown]
# ### Logistic regression: the regularisation strength
#
# The inputs are standardised with the training split's statistics; an input that is missing
# (NaN: a score whose evidence could not check anything, when chapter 05's table says so) is
# then set to 0, the training mean, so it pushes the prediction neither way. One fit per `C`
# of the grid; the one with the lowest validation loss is kept (on a tie, the smaller `C`).

# %%
#@save
@dataclass(frozen=True)
class Tuned:
    """A baseline fitted at the setting of its grid with the lowest validation loss."""

    estimator: Any
    setting: Mapping[str, float]  # the chosen value of every parameter of the grid
    validation_loss: float
    grid: pd.DataFrame  # one row per setting tried: its values and its "validation_loss"


#: The training or validation split of a baseline: inputs, labels (0/1) and ``frame_weights``.
Fold = tuple[np.ndarray, np.ndarray, np.ndarray]


def baseline_folds(table: pd.DataFrame, columns: Sequence[str]) -> tuple[Fold, Fold]:
    """The train and validation ``Fold`` of ``columns``. A column never checked on the train split (all missing)
    is set to 0 on both: a constant no split and no weight can use (scikit-learn's boosting cannot bin it)."""
    (train, x, y), (val, x_val, y_val) = (_split(table, s, tuple(columns)) for s in ("train", "val"))
    never = np.isnan(x).all(axis=0)
    return ((np.where(never, 0.0, x), y.astype(int), frame_weights(train)),
            (np.where(never, 0.0, x_val), y_val.astype(int), frame_weights(val)))


def logistic_pipeline(c: float, seed: int = 42) -> Any:
    """Standardise (the training split's statistics, each scale at least ``MIN_SCALE``), set a missing input to 0 (the training mean), then an
    L2-regularised logistic regression of inverse strength ``c``."""
    return make_pipeline(FlooredScaler(), SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True),
                         LogisticRegression(C=c, max_iter=5000, random_state=seed))


def _lowest(grid: pd.DataFrame) -> int:
    """The position of the first row with the lowest validation loss."""
    return int(np.argmin(grid["validation_loss"].to_numpy()))


def tune_logistic_regression(train: Fold, val: Fold, *, grid: Sequence[float] = LOGISTIC_C_GRID,
                             seed: int = 42) -> Tuned:
    """:func:`logistic_pipeline` fitted on ``train`` at every ``C`` of ``grid`` (ascending), the one with the lowest
    :func:`validation_loss` on ``val`` kept (a tie goes to the smaller ``C``: the stronger regularisation)."""
    (x, y, w), (x_val, y_val, w_val) = train, val
    fits = [logistic_pipeline(c, seed).fit(x, y.astype(int), logisticregression__sample_weight=w)
            for c in sorted(grid)]
    losses = [validation_loss(y_val, m.predict_proba(x_val)[:, 1], w_val) for m in fits]
    table = pd.DataFrame({"C": sorted(float(c) for c in grid), "validation_loss": losses})
    best = _lowest(table)
    return Tuned(fits[best], {"C": float(table.at[best, "C"])}, float(table.at[best, "validation_loss"]), table)

# %%
_train_fold, _val_fold = baseline_folds(table, STUDY_FEATURES)
_tuned = tune_logistic_regression(_train_fold, _val_fold, seed=ctx.cfg["seed"])
ax = _tuned.grid.plot(x="C", y="validation_loss", logx=True, marker="o", legend=False, figsize=(5, 3))
ax.axvline(_tuned.setting["C"], color="grey", linestyle=":")
ax.set(ylabel="validation loss", title="logistic_regression on the study's scores")
plt.show()
display(Markdown(f"On the study's three scores the validation loss is lowest at C = {_tuned.setting['C']:g} "
                 f"({_tuned.validation_loss:.4f}; C = 1, scikit-learn's default, gives "
                 f"{_tuned.grid.set_index('C').at[1.0, 'validation_loss']:.4f})."))

# %% [markdown]
# ### Gradient boosting: learning rate, leaf size and number of trees
#
# For each learning rate and leaf size of the grid, trees are added until `BOOSTING_PATIENCE`
# trees in a row bring no lower validation loss (scikit-learn's early stopping, given the
# validation split and its weights; its own early stopping is off below 10,000 pairs and
# would carve its validation set out of the training split). As the head keeps its best
# epoch, the setting and the number of trees with the lowest validation loss are kept and
# refitted (the same trees: without early stopping nothing is held out of the training
# split). Missing inputs need no filling: each split of a tree sends them to the side that
# lowers the training loss.

# %%
#@save
def _openmp_threads(n_rows: int) -> int | None:
    """One thread for the trees below ``SMALL_TABLE`` rows, where more threads only wait on each other (25 times
    slower on two busy cores, measured); no limit above."""
    return 1 if n_rows < SMALL_TABLE else None


def tune_gradient_boosting(train: Fold, val: Fold, *, grid: Mapping[str, Sequence[float]] = BOOSTING_GRID,
                           max_iter: int = BOOSTING_MAX_ITER, patience: int = BOOSTING_PATIENCE,
                           seed: int = 42) -> Tuned:
    """``HistGradientBoostingClassifier`` at every learning rate x leaf size of ``grid``, each grown on ``train``
    until ``patience`` trees in a row lower the weighed validation loss no more (at most ``max_iter``); the
    setting and number of trees (at least one) of the lowest validation loss are kept, and refitted (a tie goes
    to the first in grid order)."""
    (x, y, w), (x_val, y_val, w_val) = train, val
    rows = []
    with threadpool_limits(_openmp_threads(len(x)), user_api="openmp"):
        for rate, leaf in itertools.product(grid["learning_rate"], grid["min_samples_leaf"]):
            probe = HistGradientBoostingClassifier(learning_rate=float(rate), min_samples_leaf=int(leaf),
                                                   max_iter=max_iter, early_stopping=True, scoring="loss",
                                                   n_iter_no_change=patience, random_state=seed)
            probe.fit(x, y.astype(int), sample_weight=w, X_val=x_val, y_val=y_val.astype(int), sample_weight_val=w_val)
            trees = max(int(np.argmax(probe.validation_score_)), 1)  # validation_score_[0]: before the first tree
            rows.append({"learning_rate": float(rate), "min_samples_leaf": int(leaf), "max_iter": trees,
                         "grown": int(probe.n_iter_), "validation_loss": -float(probe.validation_score_[trees])})
        table = pd.DataFrame(rows)
        best = table.iloc[_lowest(table)]
        setting = {"learning_rate": float(best["learning_rate"]), "min_samples_leaf": int(best["min_samples_leaf"]),
                   "max_iter": int(best["max_iter"])}
        model = HistGradientBoostingClassifier(**setting, early_stopping=False, random_state=seed)
        model.fit(x, y.astype(int), sample_weight=w)
        loss = validation_loss(y_val, model.predict_proba(x_val)[:, 1], w_val)
    return Tuned(model, setting, loss, table)

# %%
_tuned = tune_gradient_boosting(_train_fold, _val_fold, seed=ctx.cfg["seed"])
_loss = _tuned.grid.pivot(index="min_samples_leaf", columns="learning_rate", values="validation_loss")
_trees = _tuned.grid.pivot(index="min_samples_leaf", columns="learning_rate", values="max_iter")
fig, ax = plt.subplots(figsize=(5, 3.2))
sns.heatmap(_loss, annot=_loss.round(4).astype(str) + "\n(" + _trees.astype(str) + " trees)", fmt="", cmap="viridis_r",
            cbar_kws={"label": "validation loss"}, ax=ax)
ax.set(title="gradient_boosting on the study's scores")
plt.show()
display(Markdown(f"Chosen on the study's scores: learning rate {_tuned.setting['learning_rate']:g}, leaf size "
                 f"{_tuned.setting['min_samples_leaf']}, {_tuned.setting['max_iter']} trees (validation loss "
                 f"{_tuned.validation_loss:.4f})."))

# %% [markdown]
# ### Every baseline, on both sets of inputs
#
# `fit_baselines` puts it together: the single scores, then both tuned models on the study's
# scores and, given the extended inputs, on those too. Each `Scorer` carries its chosen
# setting and validation loss.

# %%
#@save
@dataclass(frozen=True)
class Scorer:
    """A fitted model as chapter 07 sees it: scores in [0, 1] and a validation-tuned threshold."""

    name: str
    kind: str  # "fusion_mlp" | "single_score" | "logistic_regression" | "gradient_boosting" | "text_only" | "blind_control"
    features: tuple[str, ...]
    threshold: float
    predict_proba: Callable[[pd.DataFrame], np.ndarray]
    setting: Mapping[str, Any] = field(default_factory=dict)  # a tuned baseline's chosen setting and validation loss


def head_scorer(name: str, head: TrainedHead) -> Scorer:
    """A trained fusion head as a ``Scorer``."""
    return Scorer(name=name, kind="fusion_mlp", features=head.features, threshold=head.threshold,
                  predict_proba=head.predict_proba)


def _column_scores(table: pd.DataFrame, column: str, fill: float) -> np.ndarray:
    """``column`` as a score, a missing value (a placeholder score) ranked at ``fill``, the training mean."""
    return np.nan_to_num(feature_matrix(table, [column])[:, 0].astype(np.float64), nan=fill)


def _estimator_scores(table: pd.DataFrame, estimator: Any, features: tuple[str, ...]) -> np.ndarray:
    with threadpool_limits(_openmp_threads(len(table)), user_api="openmp"):
        return estimator.predict_proba(feature_matrix(table, features))[:, 1]


#: The tuned baselines: kind -> the function that chooses its setting on validation.
TUNED_BASELINES: dict[str, Callable[..., Tuned]] = {"logistic_regression": tune_logistic_regression,
                                                    "gradient_boosting": tune_gradient_boosting}


def fit_baselines(
    table: pd.DataFrame,
    features: str | Sequence[str] = "study",
    *,
    extended: str | Sequence[str] | None = None,
    seed: int = 42,
    threshold_metric: str = THRESHOLD_METRIC,
) -> list[Scorer]:
    """The baselines, fitted on the train split, settings and thresholds chosen on the validation split.

    - ``<feature>_only``: each of ``features`` alone as the score (``clip_score_only`` is CLIP alone);
    - ``logistic_regression``, ``gradient_boosting`` on ``features``: :func:`tune_logistic_regression`,
      :func:`tune_gradient_boosting`;
    - with ``extended`` (a feature set or columns), ``logistic_regression_extended`` and
      ``gradient_boosting_extended``: the same two on those inputs.

    The fitted ones weigh each pair by :func:`frame_weights`; each carries its ``setting``.
    """
    columns = resolve_features(features)
    val = _split(table, "val", columns)[0]
    y_val = val["label"].to_numpy()
    means = pd.DataFrame(_split(table, "train", columns)[1]).mean().fillna(0.0)  # of the checked values
    candidates = [(f"{c}_only", "single_score", (c,), partial(_column_scores, column=c, fill=float(m)), {})
                  for c, m in zip(columns, means)]
    inputs = {"": columns} | ({"_extended": resolve_features(extended)} if extended is not None else {})
    for suffix, cols in inputs.items():
        folds = baseline_folds(table, cols)
        for kind, tune in TUNED_BASELINES.items():
            tuned = tune(*folds, seed=seed)
            proba = partial(_estimator_scores, estimator=tuned.estimator, features=cols)
            candidates.append((kind + suffix, kind, cols, proba, {**tuned.setting, "validation_loss": tuned.validation_loss}))
    return [Scorer(name, kind, cols, tune_threshold(y_val, score(val), threshold_metric), score, setting)
            for name, kind, cols, score, setting in candidates]

# %%
baselines = fit_baselines(table, "study", extended=extended_features(ctx.cfg), seed=ctx.cfg["seed"])
chosen = pd.DataFrame([{"model": s.name, "inputs": f"{'extended' if s.name.endswith('_extended') else 'study'} "
                                            f"({len(s.features)})", **s.setting} for s in baselines if s.setting])
display(chosen.set_index("model").style.format({"C": "{:g}", "learning_rate": "{:g}", "min_samples_leaf": "{:.0f}",
                                                "max_iter": "{:.0f}", "validation_loss": "{:.4f}"}, na_rep="n/a")
        .set_caption(f"Chosen by {BASELINE_CRITERION}"))

# %% [markdown]
# The chosen settings are written to `baselines.json` beside the predictions (with the grids
# and the criterion), and chapter 07 copies each into its model's entry of `metrics.json`.

# %%
#@save
# extra code
def baselines_path(paths: Paths) -> Path:
    """``outputs/<profile>/baselines.json``."""
    return paths.root / "baselines.json"


def save_baselines(paths: Paths, scorers: Sequence[Scorer]) -> Path:
    """Write the criterion, the grids and every tuned scorer's setting to ``baselines.json`` atomically."""
    return atomic_write_json(baselines_path(paths), {
        "criterion": BASELINE_CRITERION,
        "grids": {"logistic_regression": {"C": list(LOGISTIC_C_GRID)},
                  "gradient_boosting": {**{k: list(v) for k, v in BOOSTING_GRID.items()},
                                        "max_iter": BOOSTING_MAX_ITER, "patience": BOOSTING_PATIENCE}},
        "models": {s.name: {"kind": s.kind, "features": list(s.features), "setting": dict(s.setting)}
                   for s in scorers if s.setting},
    })


def load_baselines(paths: Paths) -> dict[str, Any]:
    """Read ``baselines.json`` (written by chapter 06)."""
    path = baselines_path(paths)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run chapter 06 (training) first")
    return read_json(path)

# %%
display(Markdown(f"Wrote `{save_baselines(ctx.paths, baselines).relative_to(ctx.paths.root.parent)}`."))

# %% [markdown]
# Each model is compared on the validation split at its own threshold (the thresholds were
# tuned there, so these numbers flatter every model alike):

# %%
#@save
# extra code
def validation_table(table: pd.DataFrame, scorers: Sequence[Scorer]) -> pd.DataFrame:
    """Each model's metrics on the validation split at its threshold (one row per model)."""
    val = table[table["split"] == "val"]
    rows = [{"model": s.name, "kind": s.kind, "threshold": s.threshold,
             **point_metrics(val["label"].to_numpy(), s.predict_proba(val), s.threshold)} for s in scorers]
    return pd.DataFrame(rows).set_index("model")

# %%
scorers = [*(head_scorer(name, r.head) for name, r in results.items()), *baselines]
on_val = validation_table(table, scorers)
display(on_val.style.format(precision=3))
best = on_val["macro_f1"].idxmax()
display(Markdown(f"On the validation split, where the thresholds were tuned (so these numbers flatter every model "
                 f"alike), `{best}` has the highest macro-F1, {on_val.loc[best, 'macro_f1']:.3f}; CLIP alone has "
                 f"{on_val.loc['clip_score_only', 'macro_f1']:.3f}. Chapter 07 measures them on the test split."))

# %% [markdown]
# ## Blind controls
#
# A negative is only worth testing if the image is needed to refute it. Two models that
# never see the frame are trained like the baselines (train split; threshold on validation)
# and evaluated beside them in chapter 07:
#
# - `text_only`: TF-IDF word and character n-grams with a logistic regression, the filter's
#   own recipe (chapter 01 kept, per frame, the candidate this recipe found most like a
#   positive), so it is near chance by construction and can only show what the filter missed;
# - `clip_text_only`: a logistic regression on CLIP's embedding of the text (the mean of its
#   sentences' embeddings, from chapter 03's cache), a blind model the filter never used, so it
#   is not at chance by construction.
#
# Either one above chance on a kind of negative says that kind leaks through its text. Both
# read one text at a time; the pairwise control below reads both texts of a frame.

# %%
#@save
def _text_scores(table: pd.DataFrame, estimator: Any) -> np.ndarray:
    return estimator.predict_proba(table["text"].astype(str).tolist())[:, 1]


def _vector_scores(table: pd.DataFrame, estimator: Any, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
    return estimator.predict_proba(np.stack([vectors[t] for t in table["text"]]))[:, 1]


def fit_blind_controls(
    table: pd.DataFrame,
    text_vectors: Mapping[str, np.ndarray],
    *,
    seed: int = 42,
    threshold_metric: str = THRESHOLD_METRIC,
) -> list[Scorer]:
    """Models that never see the frame, fitted on the train split, thresholds tuned on validation.

    - ``text_only``: :func:`helpers.pairs.text_only_classifier` (TF-IDF word and character
      n-grams, logistic regression) on the pair's plain text;
    - ``clip_text_only``: a logistic regression on CLIP's embedding of the text
      (``text_vectors``: text -> vector, :func:`helpers.semantics.text_embeddings`), a blind model the
      construction of the negatives never used.

    Either doing better than chance says the negatives can be told apart from their text alone.
    """
    from helpers.pairs import text_only_classifier

    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    weights = frame_weights(train)  # each frame's negatives together weigh as much as its positive
    text_model = text_only_classifier(seed).fit(train["text"].astype(str).tolist(), train["label"].astype(int),
                                                classifier__sample_weight=weights)
    vector_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    vector_model.fit(np.stack([text_vectors[t] for t in train["text"]]), train["label"].astype(int),
                     logisticregression__sample_weight=weights)
    candidates = [
        ("text_only", "text_only", ("text",), partial(_text_scores, estimator=text_model)),
        ("clip_text_only", "blind_control", ("clip_text_embedding",),
         partial(_vector_scores, estimator=vector_model, vectors=text_vectors)),
    ]
    return [Scorer(name, kind, cols, tune_threshold(val["label"].to_numpy(), score(val), threshold_metric), score)
            for name, kind, cols, score in candidates]

# %%
from helpers.clip import CLIP
from helpers.semantics import text_embeddings
from helpers.weights import load_model

clip = load_model(CLIP, ctx.cfg["clip"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"],
                  device=ctx.device)
texts = list(dict.fromkeys(table["text"]))
vectors = dict(zip(texts, text_embeddings(clip, texts, ctx.paths.cache / "clip",
                                          batch_size=int(ctx.cfg["clip"]["batch_size"]))))
del clip  # one large model at a time
blind = fit_blind_controls(table, vectors, seed=ctx.cfg["seed"])
scorers += blind
display(validation_table(table, blind).style.format(precision=3))

# %% [markdown]
# ### A pairwise blind control
#
# The headline score is paired: is a frame's own text scored above each of its negatives? A blind
# model can answer that question too, from the two texts alone, and that is the control the
# filter never used: it judged each candidate by itself. `pairwise_text` is given both texts
# of a frame, in an order drawn at random (seeded, half of the training frames each way), and
# predicts which is the original: a logistic regression on the difference of the two texts'
# TF-IDF vectors, word 1-3-grams with one-letter words kept ("a", "I": "The a TV" is a
# trace) and character 2-5-grams across word boundaries, so that an n-gram spans the edit
# and its neighbours. Without an intercept, swapping the two texts turns P into 1 - P, and a
# text against itself gets 0.5. A frame has up to four negatives, each compared with the
# frame's own text: a negative's score is P(it is the original, against the own text), and
# the positive's is 0.5 (its text against itself), so chapter 07's paired outcome for each
# (frame, kind) is exactly whether the model picks the own text over that negative. It is
# fitted on the training frames' (own text, negative) couples only; its regularisation
# strength is the one of `PAIRWISE_C_GRID` with the lowest validation log-loss. A negative
# whose frame has no positive (it lacked a feature) has nothing to be compared with and gets
# 0.5.

# %%
#@save
#: The inverse regularisation strengths of ``pairwise_text``; the validation log-loss chooses one.
PAIRWISE_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def pairwise_text_vectorizer() -> "FeatureUnion":
    """TF-IDF of word 1-3-grams (one-letter words kept) and character 2-5-grams across word boundaries, unfitted."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion([
        ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 3), token_pattern=r"(?u)\b\w+\b",
                                  sublinear_tf=True)),
        ("chars", TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True)),
    ])  # fmt: skip


def frame_partners(table: pd.DataFrame) -> list[str | None]:
    """For each negative row of ``table``, the text of its frame's positive (``story_id``, ``frame``); None for a
    positive and for a negative whose frame has no positive. Two positives in a frame are an error."""
    keys = list(zip(table["story_id"].astype(str), table["frame"].astype(int)))
    texts, labels = table["text"].astype(str).tolist(), table["label"].to_numpy()
    own: dict[tuple[str, int], str] = {}
    for key, text, label in zip(keys, texts, labels):
        if label == 1:
            if key in own:
                raise ValueError(f"story {key[0]} frame {key[1]} has two positives: a frame has one positive")
            own[key] = text
    return [own.get(key) if label == 0 else None for key, label in zip(keys, labels)]


@dataclass(frozen=True)
class PairwiseText:
    """The fitted pairwise control: P(the first of two texts is the frame's original)."""

    vectorizer: Any
    classifier: Any
    C: float
    validation_log_loss: Mapping[float, float]

    def prob_first(self, first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        """P(``first[i]`` is the original rather than ``second[i]``)."""
        x = self.vectorizer.transform(list(first)) - self.vectorizer.transform(list(second))
        return self.classifier.predict_proba(x)[:, 1]

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """A negative's P(it is the original of its frame, against the frame's positive); a positive's 0.5 (its
        text against itself, the model having no intercept), as is a negative's without a positive."""
        partner = frame_partners(table)
        texts = table["text"].astype(str).tolist()
        have = [i for i, p in enumerate(partner) if p is not None]
        out = np.full(len(table), 0.5)
        if have:
            out[have] = self.prob_first([texts[i] for i in have], [partner[i] for i in have])
        return out


def _original_and_negative(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The own and the negative text of every negative of ``table`` whose frame has its positive."""
    partner = frame_partners(table)
    both = [(p, str(t)) for t, p in zip(table["text"], partner) if p is not None]
    return [o for o, _ in both], [n for _, n in both]


def fit_pairwise_text(table: pd.DataFrame, *, seed: int = 42, grid: Sequence[float] = PAIRWISE_C_GRID) -> PairwiseText:
    """``pairwise_text`` fitted on the training frames (TF-IDF vocabulary included), ``C`` chosen on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    train_own, train_neg = _original_and_negative(table[table["split"] == "train"])
    val_own, val_neg = _original_and_negative(table[table["split"] == "val"])
    if len(train_own) < 2 or not val_own:
        raise ValueError(f"pairwise_text needs two training frames and one validation frame with both pairs; got "
                         f"{len(train_own)} and {len(val_own)}")
    vectorizer = pairwise_text_vectorizer().fit(train_own + train_neg)
    flip = np.random.default_rng(seed).permutation(np.arange(len(train_own)) % 2).astype(bool)  # half each way
    first = [n if f else o for o, n, f in zip(train_own, train_neg, flip)]
    second = [o if f else n for o, n, f in zip(train_own, train_neg, flip)]
    x = vectorizer.transform(first) - vectorizer.transform(second)
    y = (~flip).astype(int)  # 1: the first text is the original

    def fitted(c: float) -> PairwiseText:
        classifier = LogisticRegression(C=c, fit_intercept=False, max_iter=5000, random_state=seed).fit(x, y)
        return PairwiseText(vectorizer, classifier, float(c), {})

    losses = {float(c): float(log_loss(np.ones(len(val_own), dtype=int), fitted(c).prob_first(val_own, val_neg),
                                       labels=[0, 1])) for c in grid}
    best = min(losses, key=lambda c: (losses[c], c))  # ties: the stronger regularisation
    return replace(fitted(best), validation_log_loss=losses)


def pairwise_scorer(model: PairwiseText, table: pd.DataFrame, threshold_metric: str = THRESHOLD_METRIC) -> Scorer:
    """``pairwise_text`` as a ``Scorer`` (kind ``blind_control``), its threshold tuned on validation."""
    val = table[table["split"] == "val"]
    threshold = tune_threshold(val["label"].to_numpy(), model.predict_proba(val), threshold_metric)
    return Scorer("pairwise_text", "blind_control", ("text", "partner_text"), threshold, model.predict_proba)

# %%
pairwise = fit_pairwise_text(table, seed=ctx.cfg["seed"])
scorers.append(pairwise_scorer(pairwise, table))
display(pd.Series(pairwise.validation_log_loss, name="validation log-loss").rename_axis("C").to_frame().T
        .style.format(precision=3))
val_frames = _original_and_negative(table[table["split"] == "val"])
display(Markdown(f"`pairwise_text`: C = {pairwise.C:g} (lowest validation log-loss); on the "
                 f"{len(val_frames[0]):,} validation (frame, negative) couples it ranks the original first in "
                 f"{np.mean(pairwise.prob_first(*val_frames) > 0.5):.1%} of them (0.5: the two texts alone do not "
                 "say which is the frame's). Chapter 07 reports it on the test split, per kind of negative."))

# %% [markdown]
# ### A flags-only blind control
#
# The extended head (chapter 05) reads more than scores: whether the text names a COCO object
# at all, how many relations the boxes could check, the new evidences' flags. Several of those
# inputs are decided by the text alone, before any frame is looked at: a text that names no
# object gets `object_informative` False whatever the frame shows. Negatives of some kinds can
# differ from aligned texts in such properties (another story's text may be shorter, or name
# fewer objects), and then a head that reads them tells those negatives apart without using
# the frame. `flags_only` measures how far: a logistic regression on every input the text
# decides alone (`TEXT_ONLY_INPUTS`, below, one sentence each on why), fitted on the training
# split with `frame_weights`, its regularisation strength the one of `FLAGS_C_GRID` with the lowest
# (weighted) validation log-loss, its threshold tuned on validation like every model's.
#
# **What it would mean.** If `flags_only` does better than chance, the text's own properties
# predict the label, and part of any gain of the extended head over the study's could be those
# text cues rather than new evidence about the frame. Chapter 07 then shows the extended head's
# paired score minus `flags_only`'s on the test split: only what it adds beyond the control is
# evidence that it looked at the frame. At chance, the text-only inputs carry no label by
# themselves, and the extended head's gain (if any) cannot come from them alone.
#
# Of the extended head's own inputs, the "nothing to check" indicators of objects, phrases and
# questions are text-only (`TEXT_ONLY_INDICATORS`: the control reads their negations); the others
# depend on the frame (`FRAME_DEPENDENT_INPUTS`): on what the detector found, or on whether the
# frame could be scored at all. The stored `*_informative` flags are False for a frame
# that did not decode too, so the control re-derives each flag from the text's own list (the
# categories, phrases or questions the text gives), which every evidence records whatever the
# frame.

# %%
#@save
#: The extended head's run (chapter 06's third training run): the head the flags-only control is compared with.
EXTENDED_RUN = "fusion_extended"

#: Every input the text of a pair decides alone, each with why: column written by :func:`text_only_inputs` ->
#: (the profile section that switches its evidence on, or None for the study's evidences; why it is text-only).
TEXT_ONLY_INPUTS: dict[str, tuple[str | None, str]] = {
    "n_objects_needed": (None, "how many COCO categories the text names: chapter 02's `needed_categories` reads the "
                               "plain text only, and `objects_needed` lists them whether or not the frame decoded"),
    "object_informative": (None, "whether the text names any COCO category (`objects_needed` not empty): the stored "
                                 "flag is exactly this except on a frame that did not decode, so it is re-derived"),
    "n_relations_stated": (None, "how many spatial relations the text states: chapter 04 extracts them from the plain "
                                 "text and lists every one in `relations_json` (held, failed or unverifiable) "
                                 "whatever the boxes"),
    "n_relations_coco": (None, "how many stated relations name a COCO category on both sides, so that boxes could "
                               "check them: the categories come from the words, not from the boxes"),
    "n_sentences": (None, "how many sentences chapter 03 splits the text into (CLIP scores each one)"),
    "n_openvocab_phrases": ("openvocab", "how many entity phrases the text gives OWL-ViT to look for "
                                         "(`openvocab_phrases`, listed whether or not the frame decoded)"),
    "openvocab_informative": ("openvocab", "whether the text gives any phrase to look for (re-derived from "
                                           "`openvocab_phrases`, like `object_informative`)"),
    "n_questions": ("questions", "how many yes/no questions chapter 03 builds from the text (counted whether or not "
                                 "the frame decoded)"),
    "question_informative": ("questions", "whether the text gives any question (re-derived from `n_questions`)"),
}

#: The extended head's state indicators (chapter 05) that the text decides alone, each with the control's input
#: it mirrors: "nothing to check" for objects, phrases and questions is an empty list of the text's own.
TEXT_ONLY_INDICATORS: dict[str, str] = {"object_nothing_to_check": "object_informative",
                                        "openvocab_nothing_to_check": "openvocab_informative",
                                        "question_nothing_to_check": "question_informative"}

#: The extended head's inputs that are not text-only, and what of the frame each depends on.
FRAME_DEPENDENT_INPUTS: dict[str, str] = {
    "object_score": "the detector's confidence in the named categories, on the frame",
    "clip_score": "CLIP's similarity of the frame and the sentences",
    "spatial_score": "the share of checked relations that held on the boxes (or the proximity of boxes)",
    "clip_score_mean": "CLIP's similarity of the frame and the sentences, their mean",
    "spatial_nothing_to_check": "1 when no stated relation could be checked: it needs the detector's boxes, "
                                "not only a stated relation",
    "relations_checked": "stated relations whose two categories the detector found boxes of",
    "relations_held": "checked relations whose boxes stand as the text says",
    "openvocab_score": "OWL-ViT's confidence in the text's phrases, on the frame",
    "question_score": "BLIP-VQA's answers about the frame",
    **{f"{evidence}_not_computed": "1 when the frame could not be decoded or scored"
       for evidence in ("object", "spatial", "openvocab", "question")},
}


#: The inverse regularisation strengths of ``flags_only``; the weighted validation log-loss chooses one.
FLAGS_C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


def flags_only_inputs(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The columns of :data:`TEXT_ONLY_INPUTS` under the profile ``cfg``: the study's evidences' and those of every
    evidence beyond the study that the profile switches on."""
    from helpers.fusion import evidence_enabled

    return tuple(name for name, (section, _) in TEXT_ONLY_INPUTS.items()
                 if section is None or evidence_enabled(cfg, section))


def _list_lengths(table: pd.DataFrame, column: str) -> pd.Series:
    """The length of each JSON list (or list) in ``column``; a missing or non-list cell is an error."""
    def length(cell: Any) -> int:
        value = json.loads(cell) if isinstance(cell, str) else cell
        if not isinstance(value, (list, tuple, np.ndarray)):
            raise FeatureTableError(f"column {column!r} holds {cell!r}, not a list")
        return len(value)

    return table[column].map(length).astype("float64")


def _relation_counts(cell: Any) -> tuple[int, int]:
    """(relations the text states, those with a COCO category on both sides) of one ``relations_json`` cell; the
    proximity rows of the fallback are measurements on boxes, not stated relations, and are left out."""
    rows = json.loads(cell) if isinstance(cell, str) else cell
    if not isinstance(rows, (list, tuple, np.ndarray)):
        raise FeatureTableError(f"relations_json holds {cell!r}, not a list")
    stated = [r for r in rows if r.get("status") != "proximity"]
    return len(stated), sum(r.get("subject_category") is not None and r.get("object_category") is not None
                            for r in stated)


def text_only_inputs(table: pd.DataFrame, inputs: Sequence[str]) -> pd.DataFrame:
    """The ``inputs`` (names of :data:`TEXT_ONLY_INPUTS`) of every row of ``table``, as float64 columns: counts
    from the evidences' own lists, flags as 0/1 derived from them. Reads no score and no box: an absent source
    column or a missing value is an error (``FeatureTableError``), never a zero."""
    unknown = [c for c in inputs if c not in TEXT_ONLY_INPUTS]
    if unknown:
        raise ValueError(f"not text-only inputs: {unknown} (known: {list(TEXT_ONLY_INPUTS)})")
    sources = {"n_objects_needed": "objects_needed", "object_informative": "objects_needed",
               "n_relations_stated": "relations_json", "n_relations_coco": "relations_json",
               "n_sentences": "n_sentences", "n_openvocab_phrases": "openvocab_phrases",
               "openvocab_informative": "openvocab_phrases", "n_questions": "n_questions",
               "question_informative": "n_questions"}
    needed = sorted({sources[c] for c in inputs})
    if absent := [c for c in needed if c not in table.columns]:
        raise FeatureTableError(f"the flags-only control needs column(s) {absent}: rerun chapters 02-04")
    if holes := {c: int(n) for c, n in table[needed].isna().sum().items() if n}:
        raise FeatureTableError(f"missing values in the flags-only control's source column(s) {holes}")
    out = pd.DataFrame(index=table.index)
    for name in inputs:
        source = sources[name]
        if source == "relations_json":
            counts = np.array([_relation_counts(c) for c in table[source]], dtype=np.float64).reshape(-1, 2)
            out[name] = counts[:, 0] if name == "n_relations_stated" else counts[:, 1]
        elif source in ("objects_needed", "openvocab_phrases"):
            lengths = _list_lengths(table, source)
            out[name] = (lengths > 0).astype("float64") if name.endswith("_informative") else lengths
        else:
            values = table[source].astype("float64")
            out[name] = (values > 0).astype("float64") if name.endswith("_informative") else values
    return out


@dataclass(frozen=True)
class FlagsOnly:
    """The fitted flags-only control: a standardised logistic regression on :func:`text_only_inputs`."""

    inputs: tuple[str, ...]
    pipeline: Any
    C: float
    validation_log_loss: Mapping[float, float]

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """P(aligned) of each row of ``table`` from its text-only inputs."""
        return self.pipeline.predict_proba(text_only_inputs(table, self.inputs).to_numpy())[:, 1]


def fit_flags_only(table: pd.DataFrame, inputs: Sequence[str], *, seed: int = 42,
                   grid: Sequence[float] = FLAGS_C_GRID) -> FlagsOnly:
    """``flags_only`` fitted on the train split (each pair weighed by :func:`frame_weights`), ``C`` the one of
    ``grid`` with the lowest validation log-loss (weighed the same way; ties: the stronger regularisation)."""
    from sklearn.metrics import log_loss

    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    for name, rows in (("train", train), ("val", val)):
        if rows["label"].nunique() < 2:
            raise ValueError(f"flags_only needs both classes in the {name} split")
    inputs = tuple(inputs)
    x_train, x_val = (text_only_inputs(rows, inputs).to_numpy() for rows in (train, val))
    y_train, y_val = train["label"].astype(int).to_numpy(), val["label"].astype(int).to_numpy()
    w_train, w_val = frame_weights(train), frame_weights(val)

    def fitted(c: float) -> Any:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))
        return model.fit(x_train, y_train, logisticregression__sample_weight=w_train)

    models = {float(c): fitted(c) for c in grid}
    losses = {c: float(log_loss(y_val, m.predict_proba(x_val)[:, 1], sample_weight=w_val, labels=[0, 1]))
              for c, m in models.items()}
    best = min(losses, key=lambda c: (losses[c], c))
    return FlagsOnly(inputs, models[best], best, losses)


def flags_only_scorer(model: FlagsOnly, table: pd.DataFrame, threshold_metric: str = THRESHOLD_METRIC) -> Scorer:
    """``flags_only`` as a ``Scorer`` (kind ``blind_control``), its threshold tuned on validation."""
    val = table[table["split"] == "val"]
    threshold = tune_threshold(val["label"].to_numpy(), model.predict_proba(val), threshold_metric)
    return Scorer("flags_only", "blind_control", model.inputs, threshold, model.predict_proba)

# %% [markdown]
# The extended head's inputs under this profile, sorted into those the text decides alone and
# those that need the frame; then the control's inputs on a few training pairs and the
# validation log-loss of each regularisation strength.

# %%
extended_inputs = extended_features(ctx.cfg)
flag_inputs = flags_only_inputs(ctx.cfg)
if unsorted := [c for c in extended_inputs if c not in {**FRAME_DEPENDENT_INPUTS, **TEXT_ONLY_INDICATORS}]:
    raise ValueError(f"extended input(s) {unsorted} are in neither FRAME_DEPENDENT_INPUTS nor TEXT_ONLY_INDICATORS")
display(pd.DataFrame(
    [{"input": c, "text-only": False, "why": FRAME_DEPENDENT_INPUTS[c]} for c in extended_inputs
     if c in FRAME_DEPENDENT_INPUTS]
    + [{"input": c, "text-only": True, "why": f"the negation of the control's `{TEXT_ONLY_INDICATORS[c]}`"}
       for c in extended_inputs if c in TEXT_ONLY_INDICATORS]
    + [{"input": c, "text-only": True, "why": TEXT_ONLY_INPUTS[c][1]} for c in flag_inputs]).set_index("input")
        .style)  # a Styler shows each reason whole
display(text_only_inputs(table[table["split"] == "train"].head(), flag_inputs))
flags = fit_flags_only(table, flag_inputs, seed=ctx.cfg["seed"])
scorers.append(flags_only_scorer(flags, table))
display(pd.Series(flags.validation_log_loss, name="validation log-loss").rename_axis("C").to_frame().T
        .style.format(precision=4))

# %% [markdown]
# The control beside the heads on the validation split (where its C and every threshold were
# chosen, so these numbers flatter each model alike): ROC-AUC over all pairs, and per kind of
# negative (all aligned pairs against that kind's).

# %%
from sklearn.metrics import roc_auc_score

val = table[table["split"] == "val"]
by_name = {s.name: s for s in scorers}
compared_val = [name for name in (EXTENDED_RUN, DEFAULT_RUN, "flags_only") if name in by_name]
val_scores = {name: by_name[name].predict_proba(val) for name in compared_val}
kinds = [t for t in val.loc[val["label"] == 0, "negative_type"].dropna().unique()]
auc_rows = {}
for name, score in val_scores.items():
    row = {"all": roc_auc_score(val["label"], score)}
    for kind in kinds:
        keep = ((val["label"] == 1) | (val["negative_type"] == kind)).to_numpy()
        row[kind] = roc_auc_score(val["label"].to_numpy()[keep], score[keep])
    auc_rows[name] = row
val_auc = pd.DataFrame(auc_rows).T.rename_axis("validation ROC-AUC")
display(val_auc.style.format(precision=3))
display(Markdown(
    f"`flags_only` (C = {flags.C:g}, {len(flag_inputs)} text-only inputs) reaches a validation ROC-AUC of "
    f"{val_auc.loc['flags_only', 'all']:.3f}, against {val_auc.loc[EXTENDED_RUN, 'all']:.3f} for `{EXTENDED_RUN}` "
    f"and {val_auc.loc[DEFAULT_RUN, 'all']:.3f} for `{DEFAULT_RUN}` (0.5: the text-only inputs carry no label). "
    "Chapter 07 gives its test verdict against chance and what each head adds beyond it."))

# %% [markdown]
# ## Predictions for chapter 07
#
# Every pair of every split, scored by every model, with the model's threshold and
# decision: `predictions.parquet` in the profile's output folder.

# %%
#@save
def predict(table: pd.DataFrame, scorers: Sequence[Scorer]) -> pd.DataFrame:
    """Every pair of ``table`` scored by every model, one row per (pair, model).

    Columns: the pair's ``pair_id``, ``story_id``, ``frame``, ``split``, ``label``,
    ``negative_type``, then ``model``, ``kind``, ``features`` (comma-separated), ``score``,
    ``threshold`` and ``decision`` (score >= threshold).
    """
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    base = table.loc[:, list(PAIR_COLUMNS)].reset_index(drop=True)
    parts = []
    for s in scorers:
        score = np.asarray(s.predict_proba(table), dtype=np.float64)
        parts.append(base.assign(model=s.name, kind=s.kind, features=",".join(s.features), score=score,
                                 threshold=s.threshold, decision=score >= s.threshold))
    return pd.concat(parts, ignore_index=True)

# %%
#@save
# extra code
def predictions_path(paths: Paths) -> Path:
    """``outputs/<profile>/predictions.parquet``."""
    return paths.root / "predictions.parquet"


def save_predictions(paths: Paths, predictions: pd.DataFrame) -> Path:
    """Write ``predictions.parquet`` atomically."""
    return atomic_write_parquet(predictions, predictions_path(paths))


def load_predictions(paths: Paths) -> pd.DataFrame:
    """Read ``predictions.parquet`` (written by chapter 06)."""
    path = predictions_path(paths)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run chapter 06 (training) first")
    return pd.read_parquet(path)

# %%
predictions = predict(table, scorers)
path = save_predictions(ctx.paths, predictions)
display(Markdown(f"Wrote {len(predictions):,} predictions ({len(scorers)} models × {len(table):,} pairs) to "
                 f"`{path.relative_to(ctx.paths.root.parent)}`."))
