"""Test-split evaluation with story-level bootstrap intervals, written to ``metrics.json``.

Every model (the fusion heads and the baselines) is scored in ``predictions.parquet``
(chapter 06) with a decision threshold tuned on the validation split. Here each one gets,
on the test split: accuracy, precision, recall, macro-F1, ROC-AUC and PR-AUC, each with a
95% interval from a *cluster* bootstrap that resamples whole stories, because pairs of one
story share frames, characters and text and are not independent. The same is done for
each kind of negative (all positives plus the negatives of that kind), and on the Hub's
external test split when the profile has one. The primary model (the fusion head) is
compared with every other model by a paired bootstrap of their difference: both measured
on the same story resamples.

Point estimates come from ``sklearn.metrics``. The resamples use ``weighted_metrics``, a
vectorised form of the same formulas in which a resample is a vector of row multiplicities,
so a thousand resamples of every model cost milliseconds; the tests check it against
scikit-learn on explicit resamples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .io import atomic_write_json
from .pairs import NEGATIVE_TYPES

__all__ = [
    "METRICS",
    "THRESHOLD_METRICS",
    "NEGATIVE_TYPES",
    "SCHEMA_VERSION",
    "METRICS_SCHEMA",
    "point_metrics",
    "weighted_metrics",
    "tune_threshold",
    "threshold_rule",
    "story_resample_weights",
    "bootstrap_metrics",
    "bootstrap_difference",
    "evaluate_split",
    "evaluate",
    "write_metrics",
    "metrics_frame",
    "format_estimate",
    "summary_table",
    "difference_table",
    "excludes_zero",
    "plot_confusion",
    "plot_curves",
    "plot_by_negative_type",
    "plot_evidence_by_label",
]

#: Reported metrics, in table order. Precision and recall are those of the "aligned" class.
METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "macro_f1", "roc_auc", "pr_auc")
#: What a validation-tuned threshold may maximise.
THRESHOLD_METRICS: tuple[str, ...] = ("macro_f1", "accuracy")
SCHEMA_VERSION = 1

METRICS_SCHEMA = """\
metrics.json (written by chapter 07, read by every later chapter and the report index)

{
  "schema_version": 1,
  "profile": "quick",                      # the profile that produced it
  "split": "test",                         # the split of the top-level "n" and "models"
  "primary_model": "fusion",               # the head helpers.verify uses
  "threshold_rule": "...",                 # how every threshold was chosen (on validation only)
  "bootstrap": {"unit": "story", "n_resamples": 1000, "confidence": 0.95, "seed": 42,
                "method": "percentile"},
  "metrics": ["accuracy", "precision", "recall", "macro_f1", "roc_auc", "pr_auc"],
  "n": {"pairs": int, "stories": int, "positives": int,
        "negatives": {"other_story": int, "same_story": int, "object_swap": int, "relation_swap": int}},
  "models": {
    "<model name>": {                      # fusion, fusion_3_epochs, fusion_extended, clip_score_only, ...
      "kind": "fusion_mlp" | "single_score" | "logistic_regression" | "gradient_boosting",
      "features": [column, ...],           # its inputs (columns of features.parquet)
      "threshold": float,                  # tuned on the validation split
      "overall": {metric: {"value": float|null, "low": float|null, "high": float|null}},
      "by_negative_type": {negative_type: {metric: {"value", "low", "high"}}},
                                           # all positives + the negatives of that type
      "confusion": {"tn": int, "fp": int, "fn": int, "tp": int},   # at "threshold"
      "calibration": {"bin_edges": [11 floats], "mean_predicted": [...], "fraction_positive": [...],
                      "count": [...]}      # non-empty bins only (sklearn calibration_curve, 10 uniform bins)
    }
  },
  "differences": {                         # primary model minus each other model, on the same pairs
    "<other model name>": {metric: {"value", "low", "high"}}   # paired: both on the same story resamples
  },
  "external": {"split": "external", "n": {...}, "models": {...}, "differences": {...}}
                                           # only when the profile evaluates the Hub's own test split;
                                           # same layout as the top level, thresholds still from validation
}

"value" is the estimate on the whole split; "low"/"high" are the 2.5th and 97.5th
percentiles of the estimates over stories resampled with replacement (every model and
every difference on the same resamples). null marks a metric that is undefined there
(e.g. ROC-AUC with one class), or an interval with no defined resample.
"""


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------

def _check_inputs(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels and scores must be 1-D arrays of one length, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite numbers")
    return y.astype(bool), s


def point_metrics(y_true: Sequence[int], scores: Sequence[float], threshold: float) -> dict[str, float]:
    """The ``METRICS`` of one model with ``sklearn.metrics`` (a pair is called aligned when score >= threshold).

    Precision, recall and F1 follow scikit-learn's ``zero_division=0``; the AUCs are NaN when
    the labels hold a single class.
    """
    y, s = _check_inputs(np.asarray(y_true), np.asarray(scores))
    pred = s >= threshold
    two_classes = 0 < y.sum() < len(y)
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "macro_f1": skm.f1_score(y, pred, average="macro", zero_division=0),
        "roc_auc": skm.roc_auc_score(y, s) if two_classes else math.nan,
        "pr_auc": skm.average_precision_score(y, s) if two_classes else math.nan,
    }


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num / den elementwise, ``empty`` where den == 0."""
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def weighted_metrics(
    y_true: Sequence[int], scores: Sequence[float], threshold: float, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """The ``METRICS`` under each row of ``weights`` at once.

    ``weights`` has shape ``(r, n)``: row ``k`` gives how many times each of the ``n`` pairs
    occurs in resample ``k``. The results equal ``point_metrics`` on the pairs repeated that
    many times, including scikit-learn's conventions: precision, recall and F1 are 0 when
    undefined, a class absent from both labels and predictions is left out of the macro-F1,
    and the AUCs are NaN when a resample holds a single class. ROC-AUC counts tied scores
    as half-ordered; PR-AUC is average precision over the distinct score thresholds.
    """
    y, s = _check_inputs(np.asarray(y_true), np.asarray(scores))
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if w.shape[1] != len(y):
        raise ValueError(f"weights have {w.shape[1]} columns for {len(y)} pairs")
    pred = s >= threshold
    tp, fp = w @ (y & pred), w @ (~y & pred)
    fn, tn = w @ (y & ~pred), w @ (~y & ~pred)
    f1_pos = _ratio(2 * tp, 2 * tp + fp + fn, math.nan)  # NaN: class absent from labels and predictions
    f1_neg = _ratio(2 * tn, 2 * tn + fp + fn, math.nan)
    both = np.stack([f1_pos, f1_neg])
    present = (~np.isnan(both)).sum(axis=0)
    macro_f1 = _ratio(np.nansum(both, axis=0), present.astype(np.float64), 0.0)

    # Ranking metrics: add up each resample's positive and negative weight per distinct score.
    order = np.argsort(s, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(s[order]) != 0])
    ws = w[:, order]
    pos = np.add.reduceat(ws * y[order], starts, axis=1)   # (r, distinct scores), ascending
    neg = np.add.reduceat(ws * ~y[order], starts, axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    defined = (n_pos > 0) & (n_neg > 0)
    neg_below = np.cumsum(neg, axis=1) - neg
    roc_auc = _ratio((pos * (neg_below + 0.5 * neg)).sum(axis=1), n_pos * n_neg, math.nan)
    tp_desc = np.cumsum(pos[:, ::-1], axis=1)                # thresholds from the highest score down
    fp_desc = np.cumsum(neg[:, ::-1], axis=1)
    precision_at = _ratio(tp_desc, tp_desc + fp_desc, 0.0)
    pr_auc = _ratio((pos[:, ::-1] * precision_at).sum(axis=1), n_pos, math.nan)
    return {
        "accuracy": _ratio(tp + tn, w.sum(axis=1), math.nan),
        "precision": _ratio(tp, tp + fp, 0.0),
        "recall": _ratio(tp, tp + fn, 0.0),
        "macro_f1": macro_f1,
        "roc_auc": np.where(defined, roc_auc, math.nan),
        "pr_auc": np.where(defined, pr_auc, math.nan),
    }


def tune_threshold(y_true: Sequence[int], scores: Sequence[float], metric: str = "macro_f1") -> float:
    """The decision threshold that maximises ``metric`` ("macro_f1" or "accuracy") on these pairs.

    Meant for the validation split only. Candidates are the midpoints between consecutive
    distinct scores, plus one threshold that accepts every pair and one that rejects every
    pair; a pair is called aligned when its score >= threshold. Ties go to the lowest
    threshold.
    """
    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"unknown threshold metric {metric!r}: expected one of {THRESHOLD_METRICS}")
    y, s = _check_inputs(np.asarray(y_true), np.asarray(scores))
    if y.all() or not y.any():
        raise ValueError("tuning a threshold needs both aligned and misaligned pairs")
    distinct = np.unique(s)
    candidates = np.r_[distinct[0], (distinct[:-1] + distinct[1:]) / 2, np.nextafter(distinct[-1], np.inf)]
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    fn = np.searchsorted(pos, candidates, side="left")   # positives scored below the threshold
    tn = np.searchsorted(neg, candidates, side="left")
    tp, fp = len(pos) - fn, len(neg) - tn
    if metric == "accuracy":
        value = (tp + tn) / len(y)
    else:
        value = (_ratio(2 * tp, 2 * tp + fp + fn, 0.0) + _ratio(2 * tn, 2 * tn + fp + fn, 0.0)) / 2
    return float(candidates[np.argmax(value)])


def threshold_rule(metric: str) -> str:
    """How ``tune_threshold`` chose the thresholds, in words (for ``metrics.json``)."""
    return (f"each model's decision threshold maximises {metric} on the validation split (candidates: midpoints "
            "between distinct validation scores; ties to the lowest); the test split never influences it")


# ---------------------------------------------------------------------------------------
# Story-level bootstrap
# ---------------------------------------------------------------------------------------

def _story_draws(story_ids: Sequence[str], n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, index)``: how often each distinct story is drawn in each resample
    (``(n_resamples, n_stories)``), and the story of each pair as a column of ``counts``."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    stories, index = np.unique(np.asarray(story_ids, dtype=str), return_inverse=True)
    draws = np.random.default_rng(seed).integers(0, len(stories), size=(n_resamples, len(stories)))
    counts = np.zeros((n_resamples, len(stories)), dtype=np.float64)
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)
    return counts, index


def story_resample_weights(story_ids: Sequence[str], n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n)`` multiplicities of each pair when stories are drawn with replacement.

    Each resample draws as many stories as there are distinct ones; every pair of a drawn
    story enters once per draw. Pairs of one story therefore always share their weight.
    """
    counts, index = _story_draws(story_ids, n_resamples, seed)
    return counts[:, index]


def _resampled_metrics(
    y_true: Sequence[int], scores: Sequence[float], threshold: float, story_ids: Sequence[str], *,
    n_resamples: int, seed: int, chunk: int = 250,
) -> dict[str, np.ndarray]:
    """The ``METRICS`` on each story resample, ``chunk`` resamples at a time to bound memory."""
    counts, index = _story_draws(story_ids, n_resamples, seed)
    parts = [weighted_metrics(y_true, scores, threshold, counts[i : i + chunk][:, index])
             for i in range(0, n_resamples, chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in METRICS}


def _clean(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _estimate(value: float, resampled: np.ndarray, confidence: float) -> dict[str, float | None]:
    """``{"value", "low", "high"}`` with the percentile interval of the defined resamples."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    defined = resampled[~np.isnan(resampled)]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail]) if len(defined) else (math.nan, math.nan)
    return {"value": _clean(value), "low": _clean(low), "high": _clean(high)}


def bootstrap_metrics(
    y_true: Sequence[int],
    scores: Sequence[float],
    threshold: float,
    story_ids: Sequence[str],
    *,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> dict[str, dict[str, float | None]]:
    """``{metric: {"value", "low", "high"}}``: sklearn point estimates and cluster-bootstrap intervals.

    Stories are resampled with replacement (``story_resample_weights``, seeded) and the
    interval is the percentile interval of the resampled estimates, ignoring resamples where
    a metric is undefined. Undefined values are ``None`` (JSON null).
    """
    point = point_metrics(y_true, scores, threshold)
    resampled = _resampled_metrics(y_true, scores, threshold, story_ids, n_resamples=n_resamples, seed=seed)
    return {name: _estimate(point[name], resampled[name], confidence) for name in METRICS}


def bootstrap_difference(
    y_true: Sequence[int],
    scores_a: Sequence[float],
    threshold_a: float,
    scores_b: Sequence[float],
    threshold_b: float,
    story_ids: Sequence[str],
    *,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> dict[str, dict[str, float | None]]:
    """``{metric: {"value", "low", "high"}}`` of model A's metric minus model B's on the same pairs.

    Both are measured on the same story resamples (a paired bootstrap), so the interval
    accounts for the two models erring on the same stories: an interval that excludes 0
    says the test split tells them apart, which two overlapping marginal intervals cannot.
    """
    a, b = point_metrics(y_true, scores_a, threshold_a), point_metrics(y_true, scores_b, threshold_b)
    kwargs = dict(n_resamples=n_resamples, seed=seed)
    ra = _resampled_metrics(y_true, scores_a, threshold_a, story_ids, **kwargs)
    rb = _resampled_metrics(y_true, scores_b, threshold_b, story_ids, **kwargs)
    return {name: _estimate(a[name] - b[name], ra[name] - rb[name], confidence) for name in METRICS}


# ---------------------------------------------------------------------------------------
# Evaluating predictions.parquet
# ---------------------------------------------------------------------------------------

PREDICTION_COLUMNS = ("pair_id", "story_id", "split", "label", "negative_type", "model", "kind", "features",
                      "score", "threshold")


def _calibration(y: np.ndarray, scores: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """sklearn's calibration curve (uniform bins), with how many pairs fall in each non-empty bin."""
    from sklearn.calibration import calibration_curve

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    fraction, mean_pred = calibration_curve(y, scores, n_bins=n_bins, strategy="uniform")
    counts = np.bincount(np.searchsorted(edges[1:-1], scores), minlength=n_bins)  # sklearn's own binning
    return {"bin_edges": edges.tolist(), "mean_predicted": mean_pred.tolist(),
            "fraction_positive": fraction.tolist(), "count": [int(c) for c in counts[counts > 0]]}


def _counts(rows: pd.DataFrame) -> dict[str, Any]:
    negatives = rows[rows["label"] == 0]["negative_type"].value_counts()
    return {
        "pairs": len(rows),
        "stories": int(rows["story_id"].nunique()),
        "positives": int((rows["label"] == 1).sum()),
        "negatives": {t: int(negatives.get(t, 0)) for t in NEGATIVE_TYPES},
    }


def _model_section(group: pd.DataFrame, *, n_resamples: int, seed: int, confidence: float) -> dict[str, Any]:
    """One model's entry of ``"models"`` from its prediction rows on one split."""
    threshold = float(group["threshold"].iloc[0])
    y, s = group["label"].to_numpy(), group["score"].to_numpy()
    stories, negative_type = group["story_id"].to_numpy(), group["negative_type"].to_numpy()

    def intervals(mask: np.ndarray) -> dict[str, dict[str, float | None]]:
        return bootstrap_metrics(y[mask], s[mask], threshold, stories[mask],
                                 n_resamples=n_resamples, seed=seed, confidence=confidence)

    by_type = {t: intervals((y == 1) | (negative_type == t)) for t in NEGATIVE_TYPES if (negative_type[y == 0] == t).any()}
    tn, fp, fn, tp = skm.confusion_matrix(y, s >= threshold, labels=[0, 1]).ravel()
    return {
        "kind": str(group["kind"].iloc[0]),
        "features": [f for f in str(group["features"].iloc[0]).split(",") if f],
        "threshold": threshold,
        "overall": intervals(np.ones(len(y), dtype=bool)),
        "by_negative_type": by_type,
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "calibration": _calibration(y, s),
    }


def evaluate_split(
    predictions: pd.DataFrame,
    split: str,
    *,
    n_resamples: int,
    seed: int,
    primary_model: str | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """``{"split", "n", "models", "differences"}`` of ``METRICS_SCHEMA`` for one split of ``predictions``.

    Every model must have been scored on the same pairs. All are measured on the same story
    resamples (same seed, same stories), so their intervals are directly comparable; with a
    ``primary_model``, ``differences`` gives it minus each other model with a paired
    interval (empty without one).
    """
    rows = predictions[predictions["split"] == split]
    if rows.empty:
        raise ValueError(f"no predictions on the {split!r} split")
    groups = {str(name): group.sort_values("pair_id") for name, group in rows.groupby("model", sort=False)}
    if primary_model is not None and primary_model not in groups:
        raise ValueError(f"primary model {primary_model!r} is not among the {split} predictions {sorted(groups)}")
    reference_name = primary_model or next(iter(groups))
    reference = groups[reference_name]
    for name, group in groups.items():
        if not np.array_equal(group["pair_id"].to_numpy(), reference["pair_id"].to_numpy()):
            raise ValueError(f"model {name!r} was not scored on the same {split} pairs as {reference_name!r}")
    kwargs = dict(n_resamples=n_resamples, seed=seed, confidence=confidence)
    models = {name: _model_section(group, **kwargs) for name, group in groups.items()}
    y, stories = reference["label"].to_numpy(), reference["story_id"].to_numpy()
    differences = {
        name: bootstrap_difference(y, reference["score"].to_numpy(), models[reference_name]["threshold"],
                                   group["score"].to_numpy(), models[name]["threshold"], stories, **kwargs)
        for name, group in groups.items() if primary_model is not None and name != primary_model
    }
    return {"split": split, "n": _counts(reference), "models": models, "differences": differences}


def evaluate(
    predictions: pd.DataFrame,
    *,
    profile: str,
    n_resamples: int,
    seed: int,
    primary_model: str,
    threshold_rule: str,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The whole ``metrics.json`` document (see ``METRICS_SCHEMA``) from ``predictions.parquet``.

    The test split fills the top level; the external split, when ``predictions`` has one,
    goes under ``"external"``.
    """
    absent = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if absent:
        raise ValueError(f"predictions lack column(s) {absent}: rerun chapter 06")
    kwargs = dict(primary_model=primary_model, n_resamples=n_resamples, seed=seed, confidence=confidence)
    test = evaluate_split(predictions, "test", **kwargs)
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "profile": profile,
        "split": "test",
        "primary_model": primary_model,
        "threshold_rule": threshold_rule,
        "bootstrap": {"unit": "story", "n_resamples": n_resamples, "confidence": confidence, "seed": seed,
                      "method": "percentile"},
        "metrics": list(METRICS),
        **{key: test[key] for key in ("n", "models", "differences")},
    }
    if (predictions["split"] == "external").any():
        document["external"] = evaluate_split(predictions, "external", **kwargs)
    return document


def write_metrics(path: str | Path, document: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` atomically."""
    return atomic_write_json(path, dict(document))


def _section(document: Mapping[str, Any], split: str) -> Mapping[str, Any]:
    """The part of a metrics document about ``split``: the top level for the test split, else its key."""
    section = document if split == document.get("split", "test") else document.get(split)
    if not section:
        raise ValueError(f"the metrics document has no {split!r} section")
    return section


def metrics_frame(document: Mapping[str, Any], split: str = "test") -> pd.DataFrame:
    """Long table of a metrics document: model, kind, group ("overall" or a negative type), metric, value, low, high."""
    rows = []
    for model, info in _section(document, split)["models"].items():
        groups = {"overall": info["overall"], **info["by_negative_type"]}
        for group, values in groups.items():
            for metric, est in values.items():
                rows.append({"model": model, "kind": info["kind"], "group": group, "metric": metric, **est})
    frame = pd.DataFrame(rows)
    return frame.astype({"value": float, "low": float, "high": float})


def format_estimate(estimate: Mapping[str, float | None] | None, digits: int = 3) -> str:
    """One ``{"value", "low", "high"}`` entry as text: "0.812 [0.771, 0.850]", or "undefined"."""
    if not estimate or estimate.get("value") is None or not math.isfinite(estimate["value"]):
        return "undefined"
    text = f"{estimate['value']:.{digits}f}"
    low, high = estimate.get("low"), estimate.get("high")
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def summary_table(document: Mapping[str, Any], group: str = "overall", split: str = "test") -> pd.DataFrame:
    """Models x metrics of one group ("overall" or a negative type), each cell "value [low, high]"."""
    rows = {}
    for model, info in _section(document, split)["models"].items():
        values = info["overall"] if group == "overall" else info["by_negative_type"].get(group)
        if values:
            rows[model] = {metric: format_estimate(values.get(metric)) for metric in METRICS}
    if not rows:
        raise ValueError(f"no metrics for group {group!r} on the {split!r} split")
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def difference_table(document: Mapping[str, Any], split: str = "test") -> pd.DataFrame:
    """The primary model minus each other model, per metric, each cell "value [low, high]"."""
    primary = document["primary_model"]
    rows = {f"{primary} - {other}": {metric: format_estimate(est.get(metric)) for metric in METRICS}
            for other, est in _section(document, split).get("differences", {}).items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(METRICS)).rename_axis("difference")


def excludes_zero(estimate: Mapping[str, float | None]) -> bool:
    """Whether a difference's interval lies wholly above or below zero (False when undefined)."""
    low, high = estimate.get("low"), estimate.get("high")
    return low is not None and high is not None and (low > 0 or high < 0)


# ---------------------------------------------------------------------------------------
# Figures (chapter 07)
# ---------------------------------------------------------------------------------------

def plot_confusion(document: Mapping[str, Any], models: Sequence[str]) -> "matplotlib.figure.Figure":  # noqa: F821
    """Confusion matrices of ``models`` at their validation-tuned thresholds, side by side."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, len(models), figsize=(3.8 * len(models), 3.4), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], models):
        c = document["models"][name]["confusion"]
        grid = pd.DataFrame([[c["tn"], c["fp"]], [c["fn"], c["tp"]]],
                            index=["misaligned", "aligned"], columns=["misaligned", "aligned"])
        sns.heatmap(grid, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax)
        ax.set(title=f"{name}\n(threshold {document['models'][name]['threshold']:.3f})", xlabel="predicted", ylabel="true")
    return fig


def plot_curves(predictions: pd.DataFrame, models: Sequence[str], split: str = "test") -> "matplotlib.figure.Figure":  # noqa: F821
    """ROC and precision-recall curves of ``models`` on one split, and the calibration curves of
    those among them that output probabilities (single scores do not)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    rows = predictions[predictions["split"] == split]
    fig, (roc, pr, cal) = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
    for name, colour in zip(models, sns.color_palette(n_colors=len(models))):
        m = rows[rows["model"] == name]
        y, s = m["label"].to_numpy(), m["score"].to_numpy()
        RocCurveDisplay.from_predictions(y, s, name=name, ax=roc, curve_kwargs={"color": colour})
        PrecisionRecallDisplay.from_predictions(y, s, name=name, ax=pr, curve_kwargs={"color": colour})
        if m["kind"].iloc[0] != "single_score":
            CalibrationDisplay.from_predictions(y, s, n_bins=10, name=name, ax=cal, color=colour)
    roc.plot([0, 1], [0, 1], ls=":", color="grey")  # chance
    roc.set_title("ROC")
    pr.set_title("Precision-recall")
    cal.set_title("Calibration (10 uniform bins)")
    for ax in (roc, pr, cal):
        ax.legend(fontsize="x-small")
    return fig


def plot_by_negative_type(document: Mapping[str, Any], metric: str, models: Sequence[str]) -> "matplotlib.figure.Figure":  # noqa: F821
    """``metric`` per kind of negative for ``models``, with the bootstrap intervals as error bars."""
    import matplotlib.pyplot as plt

    frame = metrics_frame(document)
    frame = frame[(frame["metric"] == metric) & frame["model"].isin(models)]
    groups = ["overall", *[t for t in NEGATIVE_TYPES if t in set(frame["group"])]]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.7 * len(groups)), 4.5), layout="constrained")
    width = 0.8 / len(models)
    for i, name in enumerate(models):
        m = frame[frame["model"] == name].set_index("group").reindex(groups)
        x = np.arange(len(groups)) + (i - (len(models) - 1) / 2) * width
        ax.bar(x, m["value"], width, label=name)
        # The interval as a line of its own: a percentile interval need not contain the estimate.
        ax.vlines(x, m["low"], m["high"], color="black", linewidth=1.2)
    ax.set_xticks(np.arange(len(groups)), groups)
    confidence = document.get("bootstrap", {}).get("confidence", 0.95)
    ax.set(ylabel=metric, ylim=(0, 1.02),
           title=f"{metric} by kind of negative (lines: {confidence:.0%} story-bootstrap intervals)")
    fig.legend(loc="outside lower center", ncols=len(models), fontsize="small")
    return fig


def plot_evidence_by_label(table: pd.DataFrame, evidence: Sequence[str], split: str = "test") -> "matplotlib.figure.Figure":  # noqa: F821
    """Each evidence score on one split: the aligned pairs against each kind of negative (violins with quartiles)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = table[table["split"] == split]
    rows = rows.assign(pair=np.where(rows["label"] == 1, "aligned", rows["negative_type"].astype(str)))
    order = ["aligned", *[t for t in NEGATIVE_TYPES if t in set(rows["pair"])]]
    fig, axes = plt.subplots(1, len(evidence), figsize=(5.5 * len(evidence), 4), squeeze=False, layout="constrained")
    for ax, column in zip(axes[0], evidence):
        sns.violinplot(rows, x="pair", y=column, order=order, hue="pair", hue_order=order, cut=0, inner="quart",
                       density_norm="width", ax=ax)
        ax.set(title=column, xlabel="", ylim=(-0.02, 1.02))
        ax.tick_params(axis="x", rotation=30)
    return fig
