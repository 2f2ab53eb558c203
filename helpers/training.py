"""Training the fusion head, and fitting the baselines it is compared with.

``train_fusion`` trains ``FusionMLP`` with Adam and binary cross-entropy on mini-batches,
the inputs standardised with statistics of the training split only. It runs either for
a fixed number of epochs (the original study's 3) or, by default, until the validation
loss has not improved for ``patience`` epochs. After every epoch it writes ``last.pt``
(everything needed to continue, random-number states included) and, when the epoch is
the best so far, ``best.pt``, both atomically; run again, it resumes from ``last.pt`` and
ends exactly where an uninterrupted run would. The decision threshold is tuned on the
validation split and stored in ``best.pt``.

The baselines see the same features and splits: each evidence score alone with its own
validation-tuned threshold, a logistic regression, and a gradient-boosted tree ensemble.
Every model becomes a ``Scorer``, and ``predict`` scores every pair with all of them into
``predictions.parquet``, which chapter 07 evaluates.

The head always trains on the CPU: with 4,481 parameters a GPU would spend more time
moving mini-batches than computing, and CPU results are reproducible bit for bit.
"""

from __future__ import annotations

import copy
import hashlib
import io
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
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from .config import Paths
from .evaluation import THRESHOLD_METRICS, point_metrics, tune_threshold
from .fusion import STUDY_FEATURES, FusionMLP, TrainedHead, feature_matrix, resolve_features
from .io import atomic_write_bytes, atomic_write_parquet, stable_hash

__all__ = [
    "DEFAULT_RUN",
    "STUDY_RUN",
    "STUDY_EPOCHS",
    "CHECKPOINT_FORMAT",
    "THRESHOLD_METRIC",
    "CheckpointError",
    "TrainSettings",
    "settings_from_profile",
    "TrainResult",
    "train_fusion",
    "load_checkpoint",
    "load_head",
    "default_checkpoint",
    "Scorer",
    "head_scorer",
    "fit_baselines",
    "fit_blind_controls",
    "predict",
    "predictions_path",
    "save_predictions",
    "load_predictions",
    "validation_table",
    "run_summary",
    "plot_history",
]

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


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------

def _scaler_state(scaler: StandardScaler) -> dict[str, Any]:
    return {"mean": torch.from_numpy(scaler.mean_), "scale": torch.from_numpy(scaler.scale_),
            "var": torch.from_numpy(scaler.var_), "n_samples_seen": int(scaler.n_samples_seen_)}


def _scaler_from_state(state: Mapping[str, Any]) -> StandardScaler:
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = (state[k].numpy().astype(np.float64) for k in ("mean", "scale", "var"))
    scaler.n_samples_seen_ = state["n_samples_seen"]
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


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------

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
    """The rows of one split, their feature matrix and their labels (as float32); both classes required."""
    rows = table[table["split"] == split]
    labels = rows["label"].to_numpy() if "label" in rows else np.array([])
    if len(rows) == 0 or len(np.unique(labels)) < 2:
        raise ValueError(f"the {split!r} split needs aligned and misaligned pairs; it has {len(rows)} pairs "
                         f"with labels {sorted(set(labels.tolist()))}")
    return rows, feature_matrix(rows, features), labels.astype(np.float32)


def _epoch_metrics(model: FusionMLP, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """Loss, accuracy and macro-F1 (at probability 0.5) on a whole split, dropout off."""
    model.eval()
    with torch.no_grad():
        logits = model.logits(x)
    loss = F.binary_cross_entropy_with_logits(logits, y).item()
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


def _data_fingerprint(settings: TrainSettings, *arrays: np.ndarray) -> str:
    digest = hashlib.sha1()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return stable_hash({"settings": asdict(settings), "data": digest.hexdigest()})


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
    _, x_train_raw, y_train_np = _split(table, "train", features)
    _, x_val_raw, y_val_np = _split(table, "val", features)
    scaler = StandardScaler().fit(x_train_raw)
    x_train = torch.from_numpy(scaler.transform(x_train_raw).astype(np.float32))
    x_val = torch.from_numpy(scaler.transform(x_val_raw).astype(np.float32))
    y_train, y_val = torch.from_numpy(y_train_np), torch.from_numpy(y_val_np)
    fingerprint = _data_fingerprint(settings, x_train_raw, y_train_np, x_val_raw, y_val_np)
    run_dir = Path(run_dir) if run_dir is not None else None

    with _training_context(settings.seed):
        model = FusionMLP(len(features), settings.hidden_dim, settings.dropout)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        shuffle_rng = torch.Generator().manual_seed(settings.seed)
        loader = DataLoader(TensorDataset(x_train, y_train), batch_size=settings.batch_size, shuffle=True,
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
        for epoch in epochs:
            model.train()
            for xb, yb in loader:
                optimizer.zero_grad()
                F.binary_cross_entropy_with_logits(model.logits(xb), yb).backward()
                optimizer.step()
            train_loss, train_acc, train_f1 = _epoch_metrics(model, x_train, y_train)
            val_loss, val_acc, val_f1 = _epoch_metrics(model, x_val, y_val)
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
            if run_dir is not None:
                if improved:
                    _save(run_dir / "best.pt", best)
                _save(run_dir / "last.pt", last)
            epochs.set_postfix(val_loss=f"{val_loss:.4f}", best_epoch=state.best_epoch)
            if on_epoch_end is not None:
                on_epoch_end(row)
            if state.finished:
                break

    assert best is not None  # at least one epoch ran or was restored
    head = _head_from_checkpoint(best, threshold=math.nan)
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


# ---------------------------------------------------------------------------------------
# Baselines and predictions
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scorer:
    """A fitted model as chapter 07 sees it: scores in [0, 1] and a validation-tuned threshold."""

    name: str
    kind: str  # "fusion_mlp" | "single_score" | "logistic_regression" | "gradient_boosting" | "text_only" | "blind_control"
    features: tuple[str, ...]
    threshold: float
    predict_proba: Callable[[pd.DataFrame], np.ndarray]


def head_scorer(name: str, head: TrainedHead) -> Scorer:
    """A trained fusion head as a ``Scorer``."""
    return Scorer(name=name, kind="fusion_mlp", features=head.features, threshold=head.threshold,
                  predict_proba=head.predict_proba)


def _column_scores(table: pd.DataFrame, column: str) -> np.ndarray:
    return feature_matrix(table, [column])[:, 0].astype(np.float64)


def _estimator_scores(table: pd.DataFrame, estimator: Any, features: tuple[str, ...]) -> np.ndarray:
    return estimator.predict_proba(feature_matrix(table, features))[:, 1]


def fit_baselines(
    table: pd.DataFrame,
    features: str | Sequence[str] = "study",
    *,
    seed: int = 42,
    threshold_metric: str = THRESHOLD_METRIC,
) -> list[Scorer]:
    """The baselines on ``features``, fitted on the train split, thresholds tuned on the validation split.

    - ``<feature>_only``: each feature alone as the score (``clip_score_only`` is CLIP alone);
    - ``logistic_regression``: standardised features, L2-regularised logistic regression;
    - ``gradient_boosting``: ``HistGradientBoostingClassifier``, the tree ensemble the
      original study wished for.
    """
    columns = resolve_features(features)
    _, x_train, y_train = _split(table, "train", columns)
    val, _, y_val = _split(table, "val", columns)
    estimators = {
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "gradient_boosting": HistGradientBoostingClassifier(random_state=seed),
    }
    candidates = [(f"{c}_only", "single_score", (c,), partial(_column_scores, column=c)) for c in columns]
    for name, estimator in estimators.items():
        estimator.fit(x_train, y_train.astype(int))
        candidates.append((name, name, columns, partial(_estimator_scores, estimator=estimator, features=columns)))
    return [Scorer(name, kind, cols, tune_threshold(y_val, score(val), threshold_metric), score)
            for name, kind, cols, score in candidates]


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
      (``text_vectors``: text -> vector, :func:`helpers.clip.text_embeddings`), a blind model the
      construction of the negatives never used.

    Either doing better than chance says the negatives can be told apart from their text alone.
    """
    from .pairs import text_only_classifier

    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    text_model = text_only_classifier(seed).fit(train["text"].astype(str).tolist(), train["label"].astype(int))
    vector_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    vector_model.fit(np.stack([text_vectors[t] for t in train["text"]]), train["label"].astype(int))
    candidates = [
        ("text_only", "text_only", ("text",), partial(_text_scores, estimator=text_model)),
        ("clip_text_only", "blind_control", ("clip_text_embedding",),
         partial(_vector_scores, estimator=vector_model, vectors=text_vectors)),
    ]
    return [Scorer(name, kind, cols, tune_threshold(val["label"].to_numpy(), score(val), threshold_metric), score)
            for name, kind, cols, score in candidates]


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


def validation_table(table: pd.DataFrame, scorers: Sequence[Scorer]) -> pd.DataFrame:
    """Each model's metrics on the validation split at its threshold (one row per model)."""
    val = table[table["split"] == "val"]
    rows = [{"model": s.name, "kind": s.kind, "threshold": s.threshold,
             **point_metrics(val["label"].to_numpy(), s.predict_proba(val), s.threshold)} for s in scorers]
    return pd.DataFrame(rows).set_index("model")


def run_summary(results: Mapping[str, TrainResult]) -> pd.DataFrame:
    """One row per training run: epochs trained, the kept epoch and its validation numbers, the threshold.

    Validation accuracy and macro-F1 are those of the history (at probability 0.5); the
    threshold column is the one tuned on validation afterwards.
    """
    rows = []
    for name, result in results.items():
        kept = result.history.set_index("epoch").loc[result.best_epoch]
        rows.append({"run": name, "inputs": len(result.settings.features), "epochs_trained": len(result.history),
                     "kept_epoch": result.best_epoch, "stopped_early": result.stopped_early,
                     "val_loss": kept["val_loss"], "val_accuracy": kept["val_accuracy"], "val_f1": kept["val_f1"],
                     "threshold": result.head.threshold})
    return pd.DataFrame(rows).set_index("run")


def plot_history(results: Mapping[str, TrainResult]) -> "matplotlib.figure.Figure":  # noqa: F821
    """Loss, accuracy and macro-F1 per epoch, train (solid) and validation (dashed), one colour per run.

    The kept epoch of each run is marked with a dot on its validation loss.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = []
    for run, result in results.items():
        h = result.history
        for split in ("train", "val"):
            for metric, column in (("loss", f"{split}_loss"), ("accuracy", f"{split}_accuracy"), ("macro-F1", f"{split}_f1")):
                long.append(pd.DataFrame({"run": run, "split": split, "metric": metric, "epoch": h["epoch"],
                                          "value": h[column]}))
    data = pd.concat(long, ignore_index=True)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    for ax, metric in zip(axes, ("loss", "accuracy", "macro-F1")):
        sns.lineplot(data[data["metric"] == metric], x="epoch", y="value", hue="run", style="split",
                     style_order=["train", "val"], ax=ax)
        ax.set(title=metric, ylabel=metric)
    for i, (run, result) in enumerate(results.items()):
        kept = result.history.set_index("epoch").loc[result.best_epoch, "val_loss"]
        axes[0].plot([result.best_epoch], [kept], "o", color=sns.color_palette()[i], markersize=8)
    return fig
