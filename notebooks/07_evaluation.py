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
# # 07 · Evaluation: the test split, paired and pooled, with intervals over id blocks
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/07_evaluation.ipynb)
#
# This is the first chapter that reads the test split. Every model of chapter 06 is scored on
# it at the threshold it was given on the validation split. The headline per kind of negative
# is the **paired score**: for each test frame, does the model score the frame's own text
# above its negative of that kind (a frame has one of every kind that applies)? Pooled metrics (accuracy, precision, recall, macro-F1, ROC-AUC, PR-AUC)
# stay beside it. Pairs of one id block share a movie, its people and its places, so they are
# not independent draws: each interval treats whole id blocks, the unit the split was made of,
# as the independent units (a jackknife t interval over the blocks, chosen because a simulation
# shows it covers with few blocks, where the percentile bootstrap does not). Blind controls say
# how much of each verdict the text alone could decide, and an equivalence test says whether
# they are at chance. Every number here is written to `metrics.json`, where
# the later chapters read them.
#
# The cells marked `#@save` are the method: `make lib` collects them into `helpers/evaluation.py`,
# which chapter 06 (the thresholds), the later chapters and the tests import. Edit them here, then
# run `make sync`.

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

ctx = start(profile, chapter="07_evaluation")

# %% [markdown]
# What the chapter reads: `predictions.parquet` of chapter 06, one row per model and pair of
# every split, with the model's score and the threshold it was given on the validation split.
# The examples below use the primary head (the fusion head `helpers.verify` uses) on the test split.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from helpers.training import DEFAULT_RUN, EXTENDED_RUN, THRESHOLD_METRIC, load_predictions
from helpers.training import load_baselines

predictions = load_predictions(ctx.paths)
primary = predictions[(predictions["model"] == DEFAULT_RUN) & (predictions["split"] == "test")].sort_values("pair_id")
n_resamples, seed = int(ctx.cfg["bootstrap"]["n_resamples"]), int(ctx.cfg["seed"])
display(primary[["pair_id", "story_id", "frame", "block", "label", "negative_type", "score", "threshold"]].head())

# %% [markdown]
# The method's imports (the generated module starts with them). Chapter 01 defines the kinds of
# negative, `NEGATIVE_TYPES`, that every table below is grouped by.

# %%
#@save
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from helpers.io import atomic_write_json
from helpers.pairs import NEGATIVE_TYPES
from helpers.report import format_estimate

# %% [markdown]
# ## The metrics
#
# A pair is called aligned when its score reaches the model's threshold (a score equal to the
# threshold is aligned). Precision and recall are those of the aligned class; macro-F1 averages
# the F1 of both classes; ROC-AUC and PR-AUC (average precision) use the scores themselves, with
# no threshold. The point estimates come from `sklearn.metrics`, with its conventions:
# precision, recall and F1 are 0 when their denominator is empty (`zero_division=0`), and the
# two AUCs are undefined (NaN) when the pairs hold a single class.

# %%
#@save
#: Reported metrics, in table order. Precision and recall are those of the "aligned" class.
METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "macro_f1", "roc_auc", "pr_auc")
#: What a validation-tuned threshold may maximise.
THRESHOLD_METRICS: tuple[str, ...] = ("macro_f1", "accuracy")


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
    """The ``METRICS`` of one model with ``sklearn.metrics`` (a pair is called aligned when score >= threshold)."""
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

# %%
y, s, threshold = primary["label"].to_numpy(), primary["score"].to_numpy(), float(primary["threshold"].iloc[0])
pd.Series(point_metrics(y, s, threshold), name=f"{DEFAULT_RUN}, test split").to_frame().T

# %% [markdown]
# The intervals below need each metric on a thousand resamples of every model. A resample is a
# vector of multiplicities, how many times each pair is drawn, so the metrics of many
# resamples are a few matrix products: `weighted_metrics` takes a `(resamples, pairs)` matrix of
# weights and returns every metric for each row. It is the same formulas as scikit-learn's,
# with its conventions: precision, recall and F1 are 0 when undefined, a class absent from
# both the labels and the predictions is left out of the macro-F1, and the AUCs are NaN on a
# resample with a single class. ROC-AUC counts a tie between a positive and a negative as half
# ordered; PR-AUC is average precision over the distinct scores. `_ratio` is the division that
# says what an empty denominator gives.

# %%
#@save
def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num / den elementwise, ``empty`` where den == 0."""
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def weighted_metrics(
    y_true: Sequence[int], scores: Sequence[float], threshold: float, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """The ``METRICS`` under each row of ``weights`` ``(r, n)``: how many times each of the ``n`` pairs
    occurs in resample ``k``; equal to ``point_metrics`` on the pairs repeated that many times."""
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

# %% [markdown]
# The check (the tests do the same on many resamples): draw each test pair 0, 1 or 2 times, and
# compare `weighted_metrics` with scikit-learn on the pairs repeated that many times.

# %%
times = np.random.default_rng(seed).integers(0, 3, size=len(y))
pd.DataFrame({"weighted_metrics": {m: v[0] for m, v in weighted_metrics(y, s, threshold, times[None, :]).items()},
              "point_metrics, pairs repeated": point_metrics(np.repeat(y, times), np.repeat(s, times), threshold)}).T

# %% [markdown]
# ## Thresholds come from the validation split
#
# Chapter 06 gave every model its threshold with `tune_threshold`, on the validation split only,
# so nothing about the test split leaks into a verdict. The candidates are the midpoints between
# consecutive distinct scores, plus one threshold that accepts every pair and one that rejects
# every pair; the threshold that maximises the metric wins (macro-F1 unless told otherwise),
# the lowest one on a tie.

# %%
#@save
def tune_threshold(y_true: Sequence[int], scores: Sequence[float], metric: str = "macro_f1") -> float:
    """The decision threshold that maximises ``metric`` ("macro_f1" or "accuracy") on these (validation) pairs."""
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

# %%
val = predictions[predictions["split"] == "val"]
pd.DataFrame({name: {"stored threshold": float(g["threshold"].iloc[0]),
                     "tuned again on its validation scores": tune_threshold(g["label"], g["score"], THRESHOLD_METRIC)}
              for name, g in val.groupby("model", sort=False)}).T

# %% [markdown]
# ## Intervals over id blocks
#
# The split was made of id blocks, stretches of neighbouring story ids that mostly come from
# one movie (chapter 01). Pairs of one block share a movie, its people and its places, so a
# model that errs on one of them tends to err on its neighbours: the pairs are not independent
# draws, and an interval that resamples pairs would be too narrow. The **block bootstrap**
# resamples what the split was made of. A resample draws, with replacement, as many blocks as
# the split has; every pair of a drawn block enters once per draw, so the pairs of one block
# always share their weight. The draws are seeded, and every model and every difference of a
# split is measured on the same draws, so their intervals can be compared. With few blocks the
# bootstrap's intervals are too narrow; the simulation below measures by how much, and the
# study's intervals leave out one block at a time instead (the jackknife t interval), with the
# same weighted computation.

# %%
#@save
def _cluster_draws(clusters: Sequence[str], n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, index)``: how often each distinct cluster is drawn in each resample
    (``(n_resamples, n_clusters)``), and the cluster of each row as a column of ``counts``."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    units, index = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    draws = np.random.default_rng(seed).integers(0, len(units), size=(n_resamples, len(units)))
    counts = np.zeros((n_resamples, len(units)), dtype=np.float64)
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)
    return counts, index


def cluster_resample_weights(clusters: Sequence[str], n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n)`` multiplicities of each row when clusters (id blocks) are drawn with replacement."""
    counts, index = _cluster_draws(clusters, n_resamples, seed)
    return counts[:, index]


def _resampled_metrics(
    y_true: Sequence[int], scores: Sequence[float], threshold: float, clusters: Sequence[str], *,
    n_resamples: int, seed: int, chunk: int = 250, method: str = "percentile",
) -> dict[str, np.ndarray]:
    """The ``METRICS`` on each cluster resample (``method`` "jackknife_t": with each cluster left out),
    ``chunk`` resamples at a time to bound memory."""
    if method == "jackknife_t":  # the rows of 1 - identity, built a chunk at a time (clusters may be many pairs)
        units, index = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
        n_rows = len(units)

        def rows(i: int) -> np.ndarray:
            block = np.ones((min(chunk, n_rows - i), n_rows))
            block[np.arange(len(block)), np.arange(i, i + len(block))] = 0.0
            return block
    else:
        counts, index = _draws(clusters, n_resamples, seed, method)
        n_rows = n_resamples

        def rows(i: int) -> np.ndarray:
            return counts[i : i + chunk]
    parts = [weighted_metrics(y_true, scores, threshold, rows(i)[:, index]) for i in range(0, n_rows, chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in METRICS}

# %% [markdown]
# Six pairs in three blocks, four resamples: each row is one resample, each column how often a
# pair enters it. The pairs of one block move together.

# %%
toy_blocks = ["b0", "b0", "b1", "b2", "b2", "b2"]
pd.DataFrame(cluster_resample_weights(toy_blocks, 4, seed=seed).astype(int),
             columns=[f"pair {i} ({b})" for i, b in enumerate(toy_blocks)]).rename_axis("resample")

# %% [markdown]
# ## Do the intervals cover?
#
# A 95% interval should contain the true value in 95% of the splits one could have drawn. A
# bootstrap over few blocks does not: with four blocks there are only 35 distinct resamples,
# and the spread of the resampled estimates is that of the blocks one happened to draw, shrunk
# by a factor (n_blocks - 1) / n_blocks on top. `simulate_coverage` measures it on **synthetic
# data only**, where the truth is known: each simulated split has blocks of given numbers of
# frames; each block draws its own success rate from a Beta distribution with mean
# `SIMULATION_TRUTH` and between-block (intraclass) correlation `SIMULATION_ICC`, a frame's
# outcome is a coin flip at its block's rate, and the estimate is the share of successes (the
# paired score's shape). The coverage is the share of simulated splits whose interval contains
# the truth. It compares three intervals over blocks:
#
# - `percentile`: the 2.5th and 97.5th percentiles of the block-bootstrap estimates;
# - `bca`: the bias-corrected and accelerated bootstrap (Efron), its acceleration from the
#   leave-one-block-out estimates, the method `scipy.stats.bootstrap` defaults to;
# - `jackknife_t`: the estimate plus or minus a Student t quantile with n_blocks - 1 degrees of
#   freedom times the delete-one-block jackknife standard error. For a mean over blocks of
#   equal size it is exactly the t interval over the block means; the jackknife carries it to
#   any statistic (a ratio, a ROC-AUC).

# %%
#@save
#: The intervals ``simulate_coverage`` compares.
INTERVAL_METHODS: tuple[str, ...] = ("percentile", "bca", "jackknife_t")
#: The study's intervals: chosen by the simulation below (synthetic data only), kept by a test.
INTERVAL_METHOD = "jackknife_t"
#: The simulated truth and the between-block correlation of the outcomes (intraclass correlation).
SIMULATION_TRUTH, SIMULATION_ICC = 0.7, 0.1
#: Simulated splits behind a coverage (its Monte Carlo standard error is about 0.007 at 95%).
SIMULATION_SPLITS = 1000


def _row_quantiles(sorted_rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Each row's ``q``-quantile (one ``q`` per row) of rows sorted ascending, linearly interpolated like
    ``np.percentile``."""
    position = np.clip(q, 0.0, 1.0) * (sorted_rows.shape[1] - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, sorted_rows.shape[1] - 1)
    rows = np.arange(len(sorted_rows))
    return sorted_rows[rows, below] + (position - below) * (sorted_rows[rows, above] - sorted_rows[rows, below])


def _simulated_intervals(successes: np.ndarray, sizes: np.ndarray, method: str, confidence: float,
                         rng: np.random.Generator, n_resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of ``method`` on each simulated split (rows of ``successes``, one column per block)."""
    from scipy import stats

    n_sims, g = successes.shape
    estimate = successes.sum(axis=1) / sizes.sum()
    loo = (successes.sum(axis=1, keepdims=True) - successes) / (sizes.sum() - sizes)  # leave one block out
    tail = (1 - confidence) / 2
    if method == "jackknife_t":
        se = np.sqrt((g - 1) / g * ((loo - loo.mean(axis=1, keepdims=True)) ** 2).sum(axis=1))
        q = stats.t.ppf(1 - tail, g - 1)
        return estimate - q * se, estimate + q * se
    counts = rng.multinomial(g, np.full(g, 1 / g), size=(n_sims, n_resamples)).astype(np.float64)
    boot = np.einsum("sbg,sg->sb", counts, successes) / (counts @ sizes)
    if method == "percentile":
        low, high = np.percentile(boot, [100 * tail, 100 * (1 - tail)], axis=1)
        return low, high
    # BCa: bias correction z0 from the share of resamples below the estimate, acceleration from the jackknife
    below = (boot < estimate[:, None]).mean(axis=1) + 0.5 * (boot == estimate[:, None]).mean(axis=1)
    z0 = stats.norm.ppf(np.clip(below, 0.5 / n_resamples, 1 - 0.5 / n_resamples))
    d = loo.mean(axis=1, keepdims=True) - loo
    spread = (d**2).sum(axis=1)
    accel = _ratio((d**3).sum(axis=1), 6 * spread**1.5, 0.0)
    z = stats.norm.ppf([tail, 1 - tail])[:, None]
    levels = stats.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    ordered = np.sort(boot, axis=1)
    return _row_quantiles(ordered, levels[0]), _row_quantiles(ordered, levels[1])


def simulate_coverage(
    block_sizes: Sequence[int],
    *,
    methods: Sequence[str] = INTERVAL_METHODS,
    n_sims: int = SIMULATION_SPLITS,
    n_resamples: int = 500,
    truth: float = SIMULATION_TRUTH,
    icc: float = SIMULATION_ICC,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """``{method: coverage}``: the share of ``n_sims`` simulated splits with one block per entry of
    ``block_sizes`` (its frames) whose ``method`` interval contains ``truth`` (see the text above)."""
    sizes = np.asarray(block_sizes, dtype=np.int64)
    if sizes.ndim != 1 or len(sizes) < 2 or (sizes < 1).any():
        raise ValueError(f"a simulated split needs at least two blocks of at least one frame, got {list(sizes)}")
    unknown = [m for m in methods if m not in INTERVAL_METHODS]
    if unknown:
        raise ValueError(f"unknown interval method(s) {unknown}: expected some of {INTERVAL_METHODS}")
    if not (0 < truth < 1 and 0 < icc < 1 and 0 < confidence < 1 and n_sims >= 1 and n_resamples >= 1):
        raise ValueError("truth, icc and confidence must lie in (0, 1), n_sims and n_resamples be >= 1")
    rng = np.random.default_rng(seed)
    a, b = truth * (1 - icc) / icc, (1 - truth) * (1 - icc) / icc   # Beta with mean truth, correlation icc
    covered = dict.fromkeys(methods, 0)
    chunk = max(1, 4_000_000 // (n_resamples * len(sizes)))      # bounds the resample array's memory
    for start in range(0, n_sims, chunk):
        rates = rng.beta(a, b, size=(min(chunk, n_sims - start), len(sizes)))
        successes = rng.binomial(sizes, rates).astype(np.float64)
        for method in methods:
            low, high = _simulated_intervals(successes, sizes.astype(np.float64), method, confidence, rng,
                                             n_resamples)
            covered[method] += int(((low <= truth) & (truth <= high)).sum())
    return {method: covered[method] / n_sims for method in methods}


def coverage_report(block_sizes: Sequence[int], *, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """``bootstrap.simulated_coverage`` of ``metrics.json``: ``simulate_coverage`` at a split's own blocks (their
    frames), for every method, with the coverage of ``INTERVAL_METHOD`` and how it was simulated."""
    sizes = [int(n) for n in block_sizes]
    by_method = simulate_coverage(sizes, confidence=confidence, seed=seed)
    return {"interval_method": INTERVAL_METHOD, "coverage": by_method[INTERVAL_METHOD], "by_method": by_method,
            "confidence": confidence, "n_blocks": len(sizes), "frames_per_block": sizes,
            "n_sims": SIMULATION_SPLITS, "truth": SIMULATION_TRUTH, "icc": SIMULATION_ICC,
            "simulation": "each block's success rate drawn from a Beta distribution with mean `truth` and "
                          "intraclass correlation `icc`, each frame a Bernoulli draw of it; the estimate is the "
                          "share of successes; coverage = share of simulated splits whose interval holds `truth`"}

# %% [markdown]
# The choice, made on the simulation alone: blocks of 18 frames (three stories of six frames),
# two to sixteen blocks. The test split is not read for it.

# %%
# extra code: coverage of each method by number of blocks (synthetic data only)
block_counts = [2, 3, 4, 6, 8, 16]
coverage_by_blocks = pd.DataFrame({f"{g} blocks": simulate_coverage([18] * g, seed=seed) for g in block_counts})
coverage_by_blocks.rename_axis(f"coverage of a nominal 95% interval (truth {SIMULATION_TRUTH}, ICC {SIMULATION_ICC})")

# %%
# extra code: the same choice when the truth lies near the edge and blocks are small (a rare kind of negative)
pd.DataFrame({f"{g} blocks": simulate_coverage([4] * g, truth=0.9, seed=seed) for g in block_counts}).rename_axis(
    "coverage, truth 0.9, blocks of 4 frames")

# %%
cov4 = coverage_by_blocks["4 blocks"]
jk, pc = coverage_by_blocks.loc["jackknife_t"], coverage_by_blocks.loc["percentile"]
display(Markdown(
    f"With four blocks the percentile interval covers {cov4['percentile']:.0%} of the time, BCa {cov4['bca']:.0%} "
    f"and the jackknife t interval {cov4['jackknife_t']:.0%}. From {min(block_counts)} to {max(block_counts)} "
    f"blocks the jackknife t interval covers {jk.min():.0%} to {jk.max():.0%}, the percentile {pc.min():.0%} to "
    f"{pc.max():.0%}. The study's intervals are `INTERVAL_METHOD` = `{INTERVAL_METHOD}` intervals; the percentile "
    "interval stays available (`method=\"percentile\"`). Near the edge (the second table) the coverage of every "
    "method depends on the truth and the blocks' sizes: the coverage reported below at this split's own blocks is "
    "the guide."))

# %% [markdown]
# The study's interval is the **jackknife t interval** (`INTERVAL_METHOD`). Each of the G id
# blocks that hold the metric's pairs is left out in turn (weight 0 on its pairs, the same
# weighted computation as a resample), the jackknife standard error is
# se = sqrt((G - 1) / G * sum_i (theta_(i) - mean theta_(.))^2), and the interval is the value
# plus or minus the Student t quantile with G - 1 degrees of freedom times se, clipped to the
# metric's range ([0, 1]; [-1, 1] for a difference). The estimate keeps its `se` and `df`: the
# equivalence tests below read them. If leaving out a block leaves the metric undefined (a
# kind of negative held by one block only, a block holding the only negatives), there is no
# standard error: the interval is null with a `reason`, counted in `n_undefined`.
#
# With `method="percentile"` the interval is the **percentile interval** of the block
# bootstrap: the 2.5th and 97.5th percentiles of the metric
# over the resamples (for 95% confidence). **Why an interval may be undefined.** A resample
# can lack what a metric needs: the AUCs need both classes, a paired score by kind of negative
# needs at least one frame with that kind. Such a resample gives NaN and is counted in
# `n_undefined`. When fewer than `MIN_DEFINED_SHARE` (90%) of the resamples define the metric,
# the percentiles of the others would describe a different population (the resamples that
# happened to draw that kind), so the interval is left null with a `reason`; the tables print it
# as `[n/a]`. When the split itself does not define the metric, the value is null too
# (`n/a`). Small splits (the smoke profile, a rare kind of negative) hit both.
#
# A difference between two models gets its own interval the same way: both are measured on the
# same left-out blocks (or the same resamples), so the interval accounts for the two models erring
# on the same blocks. A difference whose interval excludes 0 says the test split tells them
# apart, which two overlapping intervals of their own cannot say.

# %%
#@save
#: An interval needs at least this share of the resamples to define the metric; else it is null.
MIN_DEFINED_SHARE = 0.9


def _clean(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _check_method(method: str) -> None:
    if method not in ("percentile", "jackknife_t"):
        raise ValueError(f"unknown interval method {method!r}: expected 'jackknife_t' or 'percentile'")


def _draws(clusters: Sequence[str], n_resamples: int, seed: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, index)`` of ``_cluster_draws`` for the percentile interval; for the jackknife, one row per
    cluster with that cluster left out (weight 0) and every other drawn once."""
    _check_method(method)
    if method == "percentile":
        return _cluster_draws(clusters, n_resamples, seed)
    units, index = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    return 1.0 - np.eye(len(units)), index


def _jackknife_estimate(value: float, left_out: np.ndarray, confidence: float,
                        bounds: tuple[float, float]) -> dict[str, Any]:
    """The jackknife t interval from the estimates with each block left out in turn (one per block)."""
    from scipy import stats

    g = len(left_out)
    n_undefined = int((~np.isfinite(left_out)).sum())
    estimate: dict[str, Any] = {"value": _clean(value), "low": None, "high": None, "n_undefined": n_undefined,
                                "se": None, "df": g - 1}
    if g < 2:
        estimate["reason"] = "one id block holds these pairs: no interval"
    elif n_undefined:
        estimate["reason"] = (f"undefined with {n_undefined} of {g} id blocks left out (one class only, or no pair "
                              "of this kind remains): no jackknife standard error")
    elif estimate["value"] is not None:
        se = math.sqrt((g - 1) / g * float(((left_out - left_out.mean()) ** 2).sum()))
        half = float(stats.t.ppf(1 - (1 - confidence) / 2, g - 1)) * se
        estimate.update(low=max(bounds[0], value - half), high=min(bounds[1], value + half), se=se)
    return estimate


def _estimate(value: float, resampled: np.ndarray, confidence: float, method: str = INTERVAL_METHOD,
              bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """``{"value", "low", "high", "n_undefined"[, "se", "df"][, "reason"]}``. ``method`` "jackknife_t": the
    jackknife t interval from ``resampled``, the estimates with each block left out; "percentile": the
    percentile interval of the resamples that define the metric, null when fewer than ``MIN_DEFINED_SHARE``
    of them do."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    _check_method(method)
    if method == "jackknife_t":
        return _jackknife_estimate(value, np.asarray(resampled, dtype=np.float64), confidence, bounds)
    defined = resampled[np.isfinite(resampled)]
    n_undefined = int(len(resampled) - len(defined))
    estimate: dict[str, Any] = {"value": _clean(value), "low": None, "high": None, "n_undefined": n_undefined}
    if len(defined) < MIN_DEFINED_SHARE * len(resampled):
        estimate["reason"] = (f"undefined in {n_undefined} of {len(resampled)} resamples (one class only, or no "
                              f"pair of this kind): fewer than {MIN_DEFINED_SHARE:.0%} define it")
        return estimate
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    estimate.update(low=_clean(low), high=_clean(high))
    return estimate


def bootstrap_metrics(
    y_true: Sequence[int],
    scores: Sequence[float],
    threshold: float,
    clusters: Sequence[str],
    *,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
    method: str = INTERVAL_METHOD,
) -> dict[str, dict[str, Any]]:
    """``{metric: estimate}``: sklearn point estimates and ``method`` intervals over ``clusters`` (each pair's
    id block)."""
    point = point_metrics(y_true, scores, threshold)
    resampled = _resampled_metrics(y_true, scores, threshold, clusters, n_resamples=n_resamples, seed=seed,
                                   method=method)
    return {name: _estimate(point[name], resampled[name], confidence, method) for name in METRICS}


def bootstrap_difference(
    y_true: Sequence[int],
    scores_a: Sequence[float],
    threshold_a: float,
    scores_b: Sequence[float],
    threshold_b: float,
    clusters: Sequence[str],
    *,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
    method: str = INTERVAL_METHOD,
) -> dict[str, dict[str, Any]]:
    """``{metric: estimate}`` of model A's metric minus model B's on the same pairs and the same resamples
    (or left-out blocks)."""
    a, b = point_metrics(y_true, scores_a, threshold_a), point_metrics(y_true, scores_b, threshold_b)
    kwargs = dict(n_resamples=n_resamples, seed=seed, method=method)
    ra = _resampled_metrics(y_true, scores_a, threshold_a, clusters, **kwargs)
    rb = _resampled_metrics(y_true, scores_b, threshold_b, clusters, **kwargs)
    return {name: _estimate(a[name] - b[name], ra[name] - rb[name], confidence, method, (-1.0, 1.0))
            for name in METRICS}

# %% [markdown]
# The primary head's metrics with their intervals; then the same computation with every pair
# its own block, as if pairs were independent draws. Compare the widths. With few blocks the
# block interval is wide by design (a t quantile with G - 1 degrees of freedom, very large for
# two blocks, the smoke profile's test split). The percentile interval of two blocks has only three
# distinct resamples and can come out narrower than the pairs', which measures how few
# independent units there are, not how precise the estimate is.

# %%
by_block = pd.DataFrame(bootstrap_metrics(y, s, threshold, primary["block"].to_numpy(),
                                          n_resamples=n_resamples, seed=seed)).T
by_pair = pd.DataFrame(bootstrap_metrics(y, s, threshold, primary["pair_id"].to_numpy(),
                                         n_resamples=n_resamples, seed=seed)).T
display(by_block)
pd.DataFrame({"width, blocks resampled": by_block["high"] - by_block["low"],
              "width, pairs resampled": by_pair["high"] - by_pair["low"]})

# %% [markdown]
# Chapter 01 reports how well a blind text-only classifier tells its negatives from the
# positives, per negative type, with this interval: `blind_auc_table` scores the training
# pairs by cross-fitting and the validation pairs with a classifier fitted on all training
# pairs (`helpers.pairs.blind_predictions`), then gives each ROC-AUC its block-bootstrap
# interval. It lives here, beside `bootstrap_metrics`, because this chapter's module imports
# chapter 01's: chapter 01's importing it back would make a cycle. Chapter 01 runs it. Its
# folds and its intervals both use the study's one map of id blocks (`block_of`); a pair the
# classifier could not score is left out of its ROC-AUC and counted (`n_unscored`).

# %%
#@save
def blind_auc_table(pairs: pd.DataFrame, *, block_of: Mapping[str, str], n_folds: int = 5, n_resamples: int = 200,
                    seed: int = 0, splits: Sequence[str] = ("train", "val")) -> pd.DataFrame:
    """ROC-AUC of the blind classifier per split and negative type (the type's balanced set,
    ``own_frames_mask``; ``"all"``: every pair), with an interval over the id blocks of
    ``block_of`` (every story of the study, the map the split used; also the folds of the cross-fitting).
    Pairs the classifier could not score are left out of the ROC-AUC and counted in ``n_unscored``."""
    from helpers.pairs import blind_predictions

    scores = blind_predictions(pairs, block_of=block_of, n_folds=n_folds, seed=seed)
    blocks = pairs["story_id"].map(block_of)
    if blocks.isna().any():
        missing = sorted(set(pairs.loc[blocks.isna(), "story_id"]))
        raise ValueError(f"block_of has no id block for {len(missing)} stories, e.g. {missing[:5]}")
    rows = []
    for split in splits:
        part = pairs["split"] == split
        for kind in (*NEGATIVE_TYPES, "all"):
            chosen = part & (True if kind == "all" else own_frames_mask(pairs, kind))
            unscored = int((chosen & scores.isna()).sum())
            chosen &= scores.notna()
            labels = pairs.loc[chosen, "label"].to_numpy()
            auc = (bootstrap_metrics(labels, scores[chosen].to_numpy(), 0.5, blocks[chosen].to_numpy(),
                                     n_resamples=n_resamples, seed=seed)["roc_auc"]
                   if len(np.unique(labels)) == 2 else {})
            value, low, high = (math.nan if auc.get(k) is None else auc[k] for k in ("value", "low", "high"))
            rows.append({"split": split, "negative_type": kind, "n_positive": int((labels == 1).sum()),
                         "n_negative": int((labels == 0).sum()), "n_unscored": unscored, "roc_auc": value,
                         "low": low, "high": high})
    return pd.DataFrame(rows)

# %% [markdown]
# ## The paired score: each frame's own text against its negative
#
# Every test frame has its own text (aligned) and one negative (misaligned) of every kind that
# applies to it, up to four. The paired score asks, per frame and kind, whether the model
# scores the own text above that negative: 1 when it does, 0.5 on a tie, 0 when it does not
# (the "text score" of Winoground and SugarCrepe). It needs no threshold, and it compares each
# frame with its own counterfactual; a pooled ROC-AUC by kind mixes in which frames could
# receive that kind (an object swap needs a frame whose text names an object). It is the
# headline per kind of negative; 0.5 is chance. The `all` group is the mean over every (frame,
# kind) outcome, so a frame with four kinds weighs four times. A kind's own group holds every
# frame it applies to, and those sets differ between kinds; the `common` groups hold only the
# frames that have a negative of every kind present, so `common:<kind>` compares the kinds on
# the same frames (and `common` is their mean there).
#
# A frame left without its positive or without any negative (set aside for a missing feature)
# cannot be paired: it is left out of the paired score, counted as `unpaired_frames`, and stays
# in the pooled metrics. The interval resamples the frames' id blocks with the same seed as every
# other interval of the split; a kind of negative that a resample does not draw leaves it
# undefined there, the rule above.

# %%
#@save
#: The key of the paired score over every (frame, kind) outcome, beside one key per negative type.
ALL_FRAMES = "all"
#: The key of the paired score on the frames that have a negative of every kind present; ``common:<kind>``
#: is one kind's paired score on those same frames (:func:`common_group`).
COMMON_FRAMES = "common"


def common_group(kind: str) -> str:
    """The paired-score group of one negative type on the common frames: ``"common:<kind>"``."""
    return f"{COMMON_FRAMES}:{kind}"


def paired_outcomes(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (frame, negative type) of one model's prediction rows: ``story_id``, ``frame``, ``block``,
    ``negative_type``, the ``positive`` and ``negative`` scores, the ``outcome`` (1, 0.5 on a tie, 0) and
    ``common`` (the frame has an outcome of every type present in the rows). A positive row is compared with
    every negative of its frame, or, when it names a ``negative_type`` itself (a control whose positive score
    depends on the edit), with that type's only. Frames without a positive or without a negative are counted in
    ``attrs["unpaired_frames"]``; two positives or two negatives of one type for a frame are an error."""
    keys = ["story_id", "frame"]
    pos, neg = rows[rows["label"] == 1], rows[rows["label"] == 0]
    own = pos["negative_type"].fillna("").astype(str) if "negative_type" in pos else pd.Series("", index=pos.index)
    generic, specific = pos[own == ""], pos[own != ""]
    twice = [generic[generic.duplicated(keys, keep=False)], specific[specific.duplicated([*keys, "negative_type"],
                                                                                          keep=False)],
             neg[neg.duplicated([*keys, "negative_type"], keep=False)],
             specific.merge(generic[keys], on=keys)]
    if any(len(t) for t in twice):
        bad = pd.concat([t[keys] for t in twice]).drop_duplicates().head(3)
        raise ValueError("paired scores need one positive and at most one negative of each type per frame; not so "
                         "for " + ", ".join(f"story {story} frame {int(frame)}" for story, frame in bad.itertuples(
                             index=False)))
    negatives = neg[[*keys, "negative_type", "score"]].rename(columns={"score": "negative"})
    matched = pd.concat([
        negatives.merge(generic[[*keys, "block", "score"]], on=keys),
        negatives.merge(specific[[*keys, "negative_type", "block", "score"]], on=[*keys, "negative_type"]),
    ], ignore_index=True).rename(columns={"score": "positive"})
    order = {t: i for i, t in enumerate(NEGATIVE_TYPES)}
    matched = matched.sort_values(keys + ["negative_type"], key=lambda c: c.map(order) if c.name == "negative_type"
                                  else c, kind="stable")
    frame = matched[[*keys, "block", "negative_type", "positive", "negative"]].astype(
        {"positive": float, "negative": float}).reset_index(drop=True)
    frame["outcome"] = np.sign(frame["positive"] - frame["negative"]) / 2 + 0.5
    present = frame["negative_type"].nunique()
    frame["common"] = frame.groupby(keys)["negative_type"].transform("nunique").eq(present) if len(frame) else []
    frame["common"] = frame["common"].astype(bool)
    all_frames = rows[keys].drop_duplicates().shape[0]
    frame.attrs["unpaired_frames"] = int(all_frames - frame[keys].drop_duplicates().shape[0])
    return frame


def _paired_resampled(outcome: np.ndarray, mask: np.ndarray, counts: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The mean outcome of the frames in ``mask`` on each resample (NaN where none is drawn)."""
    w = counts[:, index] * mask
    total = w.sum(axis=1)
    return _ratio(w @ outcome, total, math.nan)


def _paired_groups(frames: pd.DataFrame) -> dict[str, np.ndarray]:
    """The outcomes of each paired-score group: every (frame, type), each negative type present, then the same on
    the common frames (those with every type present): ``common`` and ``common:<type>``."""
    kind = frames["negative_type"].to_numpy()
    present = [t for t in NEGATIVE_TYPES if (kind == t).any()]
    groups = {ALL_FRAMES: np.ones(len(frames), dtype=bool)} | {t: kind == t for t in present}
    common = frames["common"].to_numpy(dtype=bool) if "common" in frames else np.zeros(len(frames), dtype=bool)
    if common.any():
        groups[COMMON_FRAMES] = common
        groups |= {common_group(t): common & (kind == t) for t in present}
    return groups


def _n_frames(frames: pd.DataFrame, mask: np.ndarray) -> int:
    return int(frames.loc[mask, ["story_id", "frame"]].drop_duplicates().shape[0])


def _group_replicates(resampled: np.ndarray, mask: np.ndarray, index: np.ndarray, method: str) -> np.ndarray:
    """The replicates that speak of a group: every resample, or, for the jackknife, the rows that leave out a
    block holding some of the group's frames (leaving out another block changes nothing)."""
    return resampled[np.unique(index[mask])] if method == "jackknife_t" else resampled


def bootstrap_paired(frames: pd.DataFrame, *, n_resamples: int, seed: int, confidence: float = 0.95,
                     method: str = INTERVAL_METHOD) -> dict[str, dict[str, Any]]:
    """``{"all" | negative_type | "common" | "common:<type>": estimate + {"frames", "outcomes"}}``: the paired
    score of ``paired_outcomes`` with an interval over its id blocks (``frames``: distinct frames; ``outcomes``:
    (frame, type) outcomes averaged)."""
    counts, index = _draws(frames["block"].to_numpy(), n_resamples, seed, method)
    outcome = frames["outcome"].to_numpy(dtype=np.float64)
    out = {}
    for group, mask in _paired_groups(frames).items():
        replicates = _group_replicates(_paired_resampled(outcome, mask, counts, index), mask, index, method)
        estimate = _estimate(float(outcome[mask].mean()), replicates, confidence, method)
        out[group] = {**estimate, "frames": _n_frames(frames, mask), "outcomes": int(mask.sum())}
    return out


def bootstrap_paired_difference(frames_a: pd.DataFrame, frames_b: pd.DataFrame, *, n_resamples: int, seed: int,
                                confidence: float = 0.95, method: str = INTERVAL_METHOD) -> dict[str, dict[str, Any]]:
    """Model A's paired score minus model B's, per group, on the same frames and block resamples (or left-out
    blocks)."""
    keys = ["story_id", "frame", "negative_type"]
    if not frames_a[keys].reset_index(drop=True).equals(frames_b[keys].reset_index(drop=True)):
        raise ValueError("paired differences need both models scored on the same frames, in the same order")
    counts, index = _draws(frames_a["block"].to_numpy(), n_resamples, seed, method)
    a, b = frames_a["outcome"].to_numpy(dtype=np.float64), frames_b["outcome"].to_numpy(dtype=np.float64)
    out = {}
    for group, mask in _paired_groups(frames_a).items():
        resampled = _paired_resampled(a, mask, counts, index) - _paired_resampled(b, mask, counts, index)
        out[group] = _estimate(float(a[mask].mean() - b[mask].mean()),
                               _group_replicates(resampled, mask, index, method), confidence, method, (-1.0, 1.0))
    return out

# %%
frames = paired_outcomes(primary)
display(frames.head())
pd.DataFrame(bootstrap_paired(frames, n_resamples=n_resamples, seed=seed)).T

# %% [markdown]
# ## Pooled by kind of negative: each kind against its own frames' positives
#
# Pooled metrics per kind of negative (accuracy, F1, ROC-AUC of one kind) need positives to
# set its negatives against. All the aligned pairs of the split would do it, but every frame
# has an aligned pair while only some frames can receive a kind (an object swap needs a
# frame whose text names an object, a relation swap one that states a relation). The class
# ratio would then differ by kind, which moves accuracy and F1 with it, and the positives
# would include frames of another make than the negatives, which moves ROC-AUC too. So a kind
# is pooled over its **balanced set**: its negatives and the aligned pairs of the frames that
# have a negative of that kind, one positive against one negative per frame for every kind.
# (A control's positive row that names a kind itself counts for that kind only.)

# %%
#@save
def own_frames_mask(rows: pd.DataFrame, kind: str) -> np.ndarray:
    """The balanced set of one kind of negative among ``rows`` (``story_id``, ``frame``, ``label``,
    ``negative_type``): the negatives of ``kind`` and the positives of the frames that have one. A positive
    whose ``negative_type`` names a kind (a control's) belongs to that kind's set only."""
    label = rows["label"].to_numpy()
    named = rows["negative_type"].fillna("").astype(str).to_numpy()
    negatives = (label == 0) & (named == kind)
    frames = pd.MultiIndex.from_arrays([rows["story_id"].astype(str), rows["frame"].astype(int)])
    own_frame = frames.isin(frames[negatives])
    return negatives | ((label == 1) & own_frame & np.isin(named, ["", kind]))

# %% [markdown]
# The class ratio of each kind on the test split (the primary head's pairs), with all the aligned
# pairs and with the kind's own frames' aligned pairs:

# %%
# extra code: the class ratios of every kind, with all and with their own frames' positives
def class_ratios(rows: pd.DataFrame) -> pd.DataFrame:
    y = rows["label"].to_numpy()
    out = {}
    for kind in [t for t in NEGATIVE_TYPES if ((y == 0) & (rows["negative_type"] == t)).any()]:
        n_negative, own = int(((y == 0) & (rows["negative_type"] == kind)).sum()), own_frames_mask(rows, kind)
        out[kind] = {"negatives": n_negative, "positives, all": int((y == 1).sum()),
                     "positives : negatives, all": (y == 1).sum() / n_negative,
                     "positives, own frames": int((own & (y == 1)).sum()),
                     "positives : negatives, own frames": (own & (y == 1)).sum() / n_negative}
    return pd.DataFrame(out).T.round(3)


ratios = class_ratios(primary)
display(ratios)
every, own = ratios["positives : negatives, all"], ratios["positives : negatives, own frames"]
balanced = f"{own.min():.2f} for every kind" if own.min() == own.max() else f"from {own.min():.2f} to {own.max():.2f}"
display(Markdown(
    f"With all the aligned pairs, the ratio of positives to negatives ranges from {every.min():.2f} to "
    f"{every.max():.2f} over the kinds; with each kind's own frames, {balanced}. The paired score needs no such "
    "set: each of its outcomes is one frame's own text against that frame's negative, balanced by construction."))

# %% [markdown]
# ## Every model of a split
#
# `evaluate_split` gives each model of one split its entry: the threshold, the paired score per
# kind of negative, the pooled metrics overall and per kind (the kind's balanced set: its
# negatives and its own frames' aligned pairs), the confusion matrix at the threshold, and, for the models whose
# score is a probability, a calibration curve (10 uniform bins, how often the pairs given a
# probability near *p* are really aligned). Every model must have been scored on the same pairs;
# with a primary model, it also gives the primary minus each other model, pooled and paired,
# each with its paired interval.

# %%
#@save
#: Model kinds whose score is a probability: only they get a calibration curve.
PROBABILITY_KINDS = frozenset({"fusion_mlp", "logistic_regression", "gradient_boosting", "text_only"})
PREDICTION_COLUMNS = ("pair_id", "story_id", "frame", "block", "split", "label", "negative_type", "model", "kind",
                      "features", "score", "threshold")


def _calibration(y: np.ndarray, scores: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """sklearn's calibration curve (uniform bins), with how many pairs fall in each non-empty bin."""
    from sklearn.calibration import calibration_curve

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    fraction, mean_pred = calibration_curve(y, scores, n_bins=n_bins, strategy="uniform")
    counts = np.bincount(np.searchsorted(edges[1:-1], scores), minlength=n_bins)  # sklearn's own binning
    return {"bin_edges": edges.tolist(), "mean_predicted": mean_pred.tolist(),
            "fraction_positive": fraction.tolist(), "count": [int(c) for c in counts[counts > 0]]}


def split_counts(rows: pd.DataFrame) -> dict[str, Any]:
    """Pairs, frames, stories, id blocks, positives and negatives per type of a set of pair rows."""
    negatives = rows[rows["label"] == 0]["negative_type"].value_counts()
    return {
        "pairs": len(rows),
        "frames": int(rows[["story_id", "frame"]].drop_duplicates().shape[0]),
        "stories": int(rows["story_id"].nunique()),
        "blocks": int(rows["block"].nunique()),
        "positives": int((rows["label"] == 1).sum()),
        "negatives": {t: int(negatives.get(t, 0)) for t in NEGATIVE_TYPES},
    }


def _model_section(group: pd.DataFrame, frames: pd.DataFrame, *, n_resamples: int, seed: int,
                   confidence: float) -> dict[str, Any]:
    """One model's entry of ``"models"`` from its prediction rows on one split (and their ``paired_outcomes``)."""
    threshold = float(group["threshold"].iloc[0])
    kind = str(group["kind"].iloc[0])
    y, s = group["label"].to_numpy(), group["score"].to_numpy()
    blocks, negative_type = group["block"].to_numpy(), group["negative_type"].to_numpy()

    def intervals(mask: np.ndarray) -> dict[str, dict[str, Any]]:
        return bootstrap_metrics(y[mask], s[mask], threshold, blocks[mask],
                                 n_resamples=n_resamples, seed=seed, confidence=confidence)

    by_type = {t: intervals(own_frames_mask(group, t)) for t in NEGATIVE_TYPES if (negative_type[y == 0] == t).any()}
    tn, fp, fn, tp = skm.confusion_matrix(y, s >= threshold, labels=[0, 1]).ravel()
    return {
        "kind": kind,
        "features": [f for f in str(group["features"].iloc[0]).split(",") if f],
        "threshold": threshold,
        "paired": bootstrap_paired(frames, n_resamples=n_resamples, seed=seed, confidence=confidence),
        "overall": intervals(np.ones(len(y), dtype=bool)),
        "by_negative_type": by_type,
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "calibration": _calibration(y, s) if kind in PROBABILITY_KINDS else None,
    }


def evaluate_split(
    predictions: pd.DataFrame,
    split: str,
    *,
    n_resamples: int,
    seed: int,
    primary_model: str | None = None,
    confidence: float = 0.95,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """``{"split", "n", "models", "differences", "paired_differences"}`` of ``METRICS_SCHEMA`` for one split
    (the differences are empty without a ``primary_model``; ``settings``: each tuned baseline's setting)."""
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
    frames = {name: paired_outcomes(group) for name, group in groups.items()}
    models = {name: _model_section(group, frames[name], **kwargs) for name, group in groups.items()}
    for name, entry in models.items():
        entry["setting"] = dict(settings[name]) if settings and name in settings else None
    y, blocks = reference["label"].to_numpy(), reference["block"].to_numpy()
    others = [name for name in groups if primary_model is not None and name != primary_model]
    differences = {
        name: bootstrap_difference(y, reference["score"].to_numpy(), models[reference_name]["threshold"],
                                   groups[name]["score"].to_numpy(), models[name]["threshold"], blocks, **kwargs)
        for name in others
    }
    paired_differences = {name: bootstrap_paired_difference(frames[reference_name], frames[name], **kwargs)
                          for name in others}
    n = {**split_counts(reference), "unpaired_frames": frames[reference_name].attrs["unpaired_frames"]}
    return {"split": split, "n": n, "models": models, "differences": differences,
            "paired_differences": paired_differences}

# %% [markdown]
# ## Controls: the text against a stranger's frame
#
# If the primary head scored each test text against a frame of *another* id block, nothing
# in the image could tell a frame's own text from its negative: whatever ranking remains is
# decided by the text alone. Its paired score and ROC-AUC (0.5 = the text decides nothing) are
# the `shuffled_frames` control. `shuffled_frame_pairs` gives both pairs of a frame the same
# stranger frame, so the paired comparison stays one of texts. A control has no tuned threshold:
# it reports ranking metrics only.

# %%
#@save
#: What a control section reports: ranking metrics only (a control has no tuned threshold).
CONTROL_METRICS: tuple[str, ...] = ("roc_auc",)


def shuffled_frame_pairs(pairs: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """``pairs`` with each frame replaced by a frame of another id block of the same split (the original in
    ``own_story_id``/``own_frame``); both pairs of a frame get the same stranger frame."""
    rng = np.random.default_rng(seed)
    frames = pairs[["split", "block", "story_id", "frame"]].drop_duplicates(["story_id", "frame"])
    donor: dict[tuple[str, int], tuple[str, int]] = {}
    for split, group in frames.groupby("split", sort=True):
        keys = list(zip(group["story_id"].astype(str), group["frame"].astype(int)))
        blocks = group["block"].to_numpy()
        if len(set(blocks)) < 2:
            raise ValueError(f"the {split!r} split has one id block: no frame of another block to shuffle in")
        for i, key in enumerate(keys):
            others = np.flatnonzero(blocks != blocks[i])
            donor[key] = keys[int(rng.choice(others))]
    own = list(zip(pairs["story_id"].astype(str), pairs["frame"].astype(int)))
    stranger = [donor[k] for k in own]
    return pairs.assign(own_story_id=[k[0] for k in own], own_frame=[k[1] for k in own],
                        story_id=[k[0] for k in stranger], frame=[k[1] for k in stranger])

# %% [markdown]
# The evidence is computed by the same function the verifier and chapter 09 use
# (`helpers.fusion.score_pairs`, chapter 05), from chapter 02's and 03's caches (the stranger
# frames are test frames, already seen).

# %%
from helpers.clip import CLIP
from helpers.data import load_study_data, pair_frames
from helpers import detection as det
from helpers import objects as obj
from helpers.detection import DETECTOR
from helpers.features import load_features
from helpers.training import default_checkpoint, load_head
from helpers.fusion import score_pairs, without_new_evidence
from helpers.weights import load_model

head = load_head(default_checkpoint(ctx.paths))
test_pairs = load_features(ctx.paths).set_index("pair_id").loc[
    predictions.loc[(predictions["model"] == DEFAULT_RUN) & (predictions["split"] == "test"), "pair_id"]].reset_index()
shuffled = shuffled_frame_pairs(test_pairs, seed=int(ctx.cfg["seed"]))
data = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
stranger_frames = pair_frames(shuffled, data.datasets)
det_cfg = ctx.cfg["detector"]
weights_options = {"models_dir": ctx.paths.models, "seed": ctx.cfg["seed"], "device": ctx.device}
detector = load_model(DETECTOR, det_cfg["weights"], **weights_options)
clip = load_model(CLIP, ctx.cfg["clip"]["weights"], **weights_options)
scored = score_pairs(shuffled, stranger_frames, detector=detector, clip=clip,
                     cfg=without_new_evidence(ctx.cfg), cache_dir=ctx.paths.cache)  # the default head's inputs only
own_run = det.detect_with_profile(detector, pair_frames(test_pairs, data.datasets), ctx.cfg, ctx.paths.cache)  # cached
hidden = obj.hidden_positives(test_pairs, own_run.frames)  # label noise on the test split (chapter 02: train, val)
del detector, clip
shuffled_rows = scored.assign(story_id=scored["own_story_id"], frame=scored["own_frame"],
                              score=head.predict_proba(scored))
display(Markdown(f"{len(shuffled_rows):,} test pairs re-scored against a frame of another id block."))

# %% [markdown]
# A second control reads only the words an edit changed. For each test frame whose negative is an
# object or relation swap, the masked language model of chapter 01 scores the replaced words in
# the frame's own text (the positive's score) and the new words in the edited text (the
# negative's score), as a mean log-probability per token in context (`edit_logprobs` of chapter 01). This is
# the selection criterion itself: chapter 01 ranked the object candidates by this very score
# (same model, same sentence window, same cache) and kept a reversed relation only when it lost
# little by it, so `mlm_plausibility` is near chance by construction. It says how far the
# construction got on its own criterion, not whether the text gives the edit away; the
# controls after it were never used to choose the negatives. A frame whose edit cannot be
# located in place is left out and counted.

# %%
#@save
#: The negative types whose edit a masked language model can read (``swap_plausibility_rows``).
SWAP_TYPES: tuple[str, ...] = ("object_swap", "relation_swap")


def swap_plausibility_rows(pairs: pd.DataFrame, mlm: Any, cache_dir: str | Path, *,
                           batch_size: int = 64) -> pd.DataFrame:
    """Prediction-like rows of the language-model control for the swap negatives (``pairs`` needs ``text``,
    ``swap_start``, ``swap_end``): each with its frame's positive, scored on the words that edit replaced (so
    the positive row names the swap's ``negative_type``); edits not located in place are counted in
    ``attrs["unlocated"]``."""
    from helpers.pairs import edit_logprobs, is_in_place_edit

    negatives = pairs[(pairs["label"] == 0) & pairs["negative_type"].isin(SWAP_TYPES)]
    positives = pairs[pairs["label"] == 1].set_index(["story_id", "frame"])
    edits, kept, unlocated = [], [], 0
    for row in negatives.itertuples(index=False):
        own = positives.loc[(row.story_id, row.frame)]
        original, edited, start, end = str(own["text"]), str(row.text), int(row.swap_start), int(row.swap_end)
        if not is_in_place_edit(original, edited, start, end):
            unlocated += 1
            continue
        edits.append((original, edited, start, end))
        kept.append((own, row))
    columns = ["pair_id", "story_id", "frame", "block", "split", "label", "negative_type", "score"]
    if not edits:
        out = pd.DataFrame(columns=columns)
        out.attrs["unlocated"] = unlocated
        return out
    new, old = edit_logprobs(mlm, edits, cache_dir, batch_size=batch_size)
    rows = []
    for (own, neg), lp_old, lp_new in zip(kept, old, new):
        common = {"story_id": neg.story_id, "frame": neg.frame, "block": neg.block, "split": neg.split}
        rows.append({**common, "pair_id": own["pair_id"], "label": 1, "negative_type": neg.negative_type,
                     "score": float(lp_old)})  # the own text's words that this edit replaced: for this type only
        rows.append({**common, "pair_id": neg.pair_id, "label": 0, "negative_type": neg.negative_type,
                     "score": float(lp_new)})
    out = pd.DataFrame(rows, columns=columns)
    out.attrs["unlocated"] = unlocated
    return out

# %%
from helpers.mlm import MLM

mlm = load_model(MLM, ctx.cfg["mlm"]["weights"], **weights_options)
plausibility_rows = swap_plausibility_rows(test_pairs, mlm, ctx.paths.cache / "mlm",
                                           batch_size=int(ctx.cfg["mlm"]["batch_size"]))
del mlm
display(Markdown(f"{len(plausibility_rows) // 2:,} swap negatives of "
                 f"{plausibility_rows[['story_id', 'frame']].drop_duplicates().shape[0]:,} test frames scored by the "
                 "language model"
                 + (f"; {plausibility_rows.attrs['unlocated']} edits could not be located in place and are left out."
                    if plausibility_rows.attrs["unlocated"] else ".")))

# %% [markdown]
# A language model of another family reads the two texts of every test frame: a causal model
# (profile key `control_lm.weights`: `gpt2` on the real profiles, a small GPT-2 with random
# weights on smoke), which the construction never saw. Each text gets the mean log-probability
# of its tokens, each token predicted from the ones before it (the model's begin-of-text token
# first, so every token of the text is scored; one forward pass per text, cached on disk):
# for an object or relation swap, of the sentence(s) holding the edit in the own text and in
# the edited one (the window `edit_logprobs` of chapter 01 uses); for `other_story` and
# `same_story`, of each whole text. The positive's score is its own text's, the negative's the
# negative's: above 0.5, the negative reads as the less fluent text to a model that never
# judged the candidates. A mean per token, not a sum, so that a longer text is not penalised
# for its length alone.

# %%
#@save
def mean_token_logprob(lm: Any, texts: Sequence[str], cache_dir: str | Path, *, batch_size: int = 16) -> np.ndarray:
    """The mean natural-log probability of each text's tokens under a causal language model (``helpers.mlm``'s
    ``CAUSAL_LM``): the begin-of-text token is put first and every token of the text is predicted from
    those before it. One forward pass per text, texts of like length batched (right padding, masked), each
    score cached under ``cache_dir`` per (model identity, text)."""
    import torch

    from helpers.io import compute_cached, stable_hash

    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros(0, dtype=np.float64)
    tok = lm.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    keys = [stable_hash({"v": 1, "causal_lm": lm.identity, "text": t}) for t in texts]
    by_key = dict(zip(keys, texts))

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        encoded = [[start, *tok(by_key[k], add_special_tokens=False)["input_ids"]] for k in batch]
        limit = int(getattr(lm.model.config, "n_positions", None) or lm.model.config.max_position_embeddings)
        for k, ids in zip(batch, encoded):
            if not 1 < len(ids) <= limit:
                raise ValueError(f"{by_key[k][:60]!r}: {len(ids) - 1} tokens, the model scores 1 to {limit - 1}")
        ids = torch.zeros((len(batch), max(map(len, encoded))), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(encoded):
            ids[r, : len(row)], mask[r, : len(row)] = torch.tensor(row), 1
        with torch.inference_mode():
            logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:].to(lm.device),
                                                    reduction="none").cpu()
        scored = mask[:, 1:]  # every real token after the first, i.e. every token of the text
        return [{"logprob": float(v)} for v in -(nll * scored).sum(1) / scored.sum(1)]

    order = sorted(set(keys), key=lambda k: len(by_key[k]))  # like lengths together: little padding
    table, _ = compute_cached(cache_dir, order, compute, batch_size=batch_size, desc="causal LM")
    scores = dict(zip(order, table["logprob"].to_numpy(dtype=np.float64)))
    return np.array([scores[k] for k in keys], dtype=np.float64)


def causal_lm_rows(pairs: pd.DataFrame, lm: Any, cache_dir: str | Path, *, batch_size: int = 16) -> pd.DataFrame:
    """Prediction-like rows of the causal language-model control, two per negative whose frame has its positive:
    each text's :func:`mean_token_logprob`, of the sentence(s) holding the edit for a swap (its own text's same
    sentences for the positive), of the whole text otherwise; the positive row names the negative's type, as its
    score is for that comparison. Swaps not located in place are counted in ``attrs["unlocated"]`` and left out."""
    from helpers.pairs import _sentence_bounds, is_in_place_edit

    own = {(r.story_id, r.frame): r for r in pairs[pairs["label"] == 1].itertuples(index=False)}
    kept, texts, unlocated = [], [], 0
    for neg in pairs[pairs["label"] == 0].itertuples(index=False):
        if (neg.story_id, neg.frame) not in own:
            continue
        pos = own[(neg.story_id, neg.frame)]
        original, edited = str(pos.text), str(neg.text)
        if neg.negative_type in SWAP_TYPES:
            start, end = int(neg.swap_start), int(neg.swap_end)
            if not is_in_place_edit(original, edited, start, end):
                unlocated += 1
                continue
            end_old = end + len(original) - len(edited)
            a, b = next(((a, b) for a, b in _sentence_bounds(original) if a <= start < b), (0, len(original)))
            b = max(b, end_old)
            original, edited = original[a:b], edited[a : b + end - end_old]
        kept.append((pos, neg))
        texts += [original, edited]
    scores = mean_token_logprob(lm, texts, cache_dir, batch_size=batch_size)
    rows = []
    for n, (pos, neg) in enumerate(kept):
        common = {"story_id": neg.story_id, "frame": neg.frame, "block": neg.block, "split": neg.split}
        rows.append({**common, "pair_id": pos.pair_id, "label": 1, "negative_type": neg.negative_type,
                     "score": scores[2 * n]})  # the own text as read against this negative
        rows.append({**common, "pair_id": neg.pair_id, "label": 0, "negative_type": neg.negative_type,
                     "score": scores[2 * n + 1]})
    out = pd.DataFrame(rows, columns=["pair_id", "story_id", "frame", "block", "split", "label", "negative_type",
                                      "score"])
    out.attrs["unlocated"] = unlocated
    return out

# %%
from helpers.mlm import CAUSAL_LM

control_lm = load_model(CAUSAL_LM, ctx.cfg["control_lm"]["weights"], **weights_options)
causal_rows = causal_lm_rows(test_pairs, control_lm, ctx.paths.cache / "causal_lm",
                             batch_size=int(ctx.cfg["control_lm"]["batch_size"]))
del control_lm
example = causal_rows.head(2).merge(test_pairs[["pair_id", "text"]], on="pair_id")
display(example.assign(text=example["text"].str.slice(0, 90) + "...")[["pair_id", "label", "negative_type", "score"]
                                                                      + ["text"]].style.hide(axis="index"))
display(Markdown(f"{len(causal_rows) // 2:,} negatives of {causal_rows[['story_id', 'frame']].drop_duplicates().shape[0]:,} "
                 "test frames scored by the causal language model "
                 f"(`{ctx.cfg['control_lm']['weights']}`)"
                 + (f"; {causal_rows.attrs['unlocated']} swaps could not be located in place and are left out."
                    if causal_rows.attrs["unlocated"] else ".")))

# %% [markdown]
# A third reads the rest of the story. For each test frame whose negative is an object swap,
# `story_consistency` (chapter 01) counts how often the replaced head noun and the inserted one
# occur in the story's other frames: the replaced noun's count is the positive's score, the
# inserted noun's the negative's. Above 0.5, the story names the original object more often
# than the one put in, and a reader of the story could tell them apart without the frame.

# %%
#@save
def story_consistency_rows(pairs: pd.DataFrame, stories: Any) -> pd.DataFrame:
    """Prediction-like rows of the story-consistency control (object swaps only) from
    :func:`helpers.pairs.story_consistency`: the positive scores the replaced noun's count in the story's other
    frames, the negative the inserted noun's; its ``attrs`` are passed on."""
    from helpers.pairs import story_consistency

    counts = story_consistency(pairs, stories)
    block = pairs.set_index("pair_id")["block"]
    rows = []
    for r in counts.itertuples(index=False):
        common = {"story_id": r.story_id, "frame": r.frame, "block": block[r.pair_id], "split": r.split}
        rows.append({**common, "pair_id": r.own_pair_id, "label": 1, "negative_type": "", "score": float(r.replaced)})
        rows.append({**common, "pair_id": r.pair_id, "label": 0, "negative_type": "object_swap",
                     "score": float(r.inserted)})
    out = pd.DataFrame(rows, columns=["pair_id", "story_id", "frame", "block", "split", "label", "negative_type",
                                      "score"])
    out.attrs.update(counts.attrs)
    return out

# %%
consistency_rows = story_consistency_rows(test_pairs, data.stories)
display(Markdown(f"{len(consistency_rows) // 2:,} test frames with an object swap counted in their story"
                 f" (edits not in place: {consistency_rows.attrs['unlocated']}; without their frame's positive: "
                 f"{consistency_rows.attrs['unpaired']})."))

# %% [markdown]
# A control's entry of `metrics.json` is its paired score and its pooled ROC-AUC, overall and per
# kind of negative (the kind's balanced set, `own_frames_mask`), with the same block intervals as
# the models'. Equivalent to chance (the test
# below): the text alone does not decide the verdict.

# %%
#@save
def control_section(rows: pd.DataFrame, description: str, *, n_resamples: int, seed: int,
                    confidence: float = 0.95) -> dict[str, Any]:
    """A blind control's entry of ``metrics.json`` from prediction-like ``rows`` of one split (one positive and
    a negative of each type that applies per frame): its paired score and pooled ROC-AUC, with intervals. A
    positive row that names a ``negative_type`` counts for that type only."""
    rows = rows.sort_values("pair_id")
    y, s, blocks = rows["label"].to_numpy(), rows["score"].to_numpy(), rows["block"].to_numpy()
    negative_type = rows["negative_type"].to_numpy()
    kwargs = dict(n_resamples=n_resamples, seed=seed, confidence=confidence)

    def roc(mask: np.ndarray) -> dict[str, Any]:
        return {m: e for m, e in bootstrap_metrics(y[mask], s[mask], 0.5, blocks[mask], **kwargs).items()
                if m in CONTROL_METRICS}

    return {
        "description": description,
        "paired": bootstrap_paired(paired_outcomes(rows), **kwargs),
        "overall": roc(np.ones(len(y), dtype=bool)),
        "by_negative_type": {t: roc(own_frames_mask(rows, t)) for t in NEGATIVE_TYPES
                             if (negative_type[y == 0] == t).any()},
    }

# %% [markdown]
# ## Equivalence to chance
#
# "The interval covers 0.5" is no evidence that a blind control is at chance: the smaller the
# test split, the wider the interval, and the more surely it covers 0.5. Chance has to be shown
# by an **equivalence test**: two one-sided tests (TOST) against a stated margin, here
# `CHANCE` plus or minus `EQUIVALENCE_MARGIN`. The first test rejects "the true value is at or
# below 0.5 - margin", the second "at or above 0.5 + margin", each at level `EQUIVALENCE_ALPHA`;
# both reject exactly when the (1 - 2 alpha) interval, the 90% interval for alpha 0.05, lies
# inside the margins. The tests use the distribution behind the study's intervals (the
# estimate, its jackknife standard error `se` and a t distribution with `df` degrees of
# freedom), so the 90% interval is the value plus or minus the t quantile times `se`.
#
# Each paired score and ROC-AUC gets one verdict:
#
# - **equivalent to chance**: both one-sided tests reject (the 90% interval inside the margins);
# - **better than chance** / **worse than chance**: otherwise, the reported 95% interval lies
#   wholly above / below 0.5;
# - **not shown**: neither; the data cannot tell (too few blocks, or a value near a margin).
#
# When every block left out gives the same value (few small blocks, or a perfect score in every
# block), the standard error is zero and a t test means nothing: a zero-width interval is no
# evidence of chance. Then a two-sided sign test over the blocks (every block on the same side
# of 0.5) decides **better** or **worse than chance** at level `EQUIVALENCE_ALPHA` (six blocks
# at least), and equivalence is never shown.
#
# An estimate inside the margins whose 95% interval also excludes 0.5 is called equivalent: its
# departure from chance is smaller than the margin declares negligible. The verdict is given to
# every model and every control of `metrics.json` (`equivalence`), whatever its name.

# %%
#@save
#: Chance for a paired score or a ROC-AUC, and the margin within which a value counts as chance.
CHANCE, EQUIVALENCE_MARGIN = 0.5, 0.10
#: The level of each one-sided test: equivalence when the (1 - 2 alpha) interval lies inside the margins.
EQUIVALENCE_ALPHA = 0.05
VERDICTS: tuple[str, ...] = ("equivalent to chance", "better than chance", "worse than chance", "not shown")


def equivalence_test(estimate: Mapping[str, Any] | None, *, margin: float = EQUIVALENCE_MARGIN,
                     alpha: float = EQUIVALENCE_ALPHA, chance: float = CHANCE) -> dict[str, Any]:
    """``{"verdict", "p_value", "low", "high"[, "reason"]}``: two one-sided t tests of an estimate (``value``,
    ``se``, ``df`` of the jackknife t interval) against ``chance`` +- ``margin``; ``p_value`` is the larger of
    the two, ``low``/``high`` the (1 - 2 ``alpha``) interval, clipped to [0, 1]. Better or worse than chance: the estimate's own
    ``low``/``high`` (95%) interval lies wholly above or below ``chance``. With no variation between blocks (``se``
    0), a two-sided sign test over the blocks at level ``alpha`` decides better or worse, and equivalence is not
    shown."""
    from scipy import stats

    if not (0 < margin and 0 < alpha < 0.5):
        raise ValueError(f"margin must be > 0 and alpha in (0, 0.5), got {margin} and {alpha}")
    estimate = estimate or {}
    value, se, df = estimate.get("value"), estimate.get("se"), estimate.get("df")
    if value is None or se is None or df is None or df < 1:
        reason = estimate.get("reason") or "no value or no standard error"
        return {"verdict": "not shown", "p_value": None, "low": None, "high": None, "reason": reason}
    if se == 0:  # the same value with every block left out: no t test; a sign test over the blocks instead
        p_sign = min(1.0, 2 * 0.5 ** (df + 1)) if value != chance else 1.0  # every block on one side of chance
        verdict = "not shown" if p_sign >= alpha else (  # two-sided, at level alpha
            "better than chance" if value > chance else "worse than chance")
        return {"verdict": verdict, "p_value": None, "low": value, "high": value,
                "reason": f"the same value with each of the {df + 1} id blocks left out: no standard error, so a "
                          f"sign test over the blocks (p = {p_sign:.3g}) decides; equivalence cannot be shown"}
    lower, upper = chance - margin, chance + margin
    p_value = max(float(stats.t.sf((value - lower) / se, df)), float(stats.t.cdf((value - upper) / se, df)))
    half = float(stats.t.ppf(1 - alpha, df)) * se
    low, high = max(0.0, value - half), min(1.0, value + half)  # a paired score and a ROC-AUC lie in [0, 1]
    if lower < low and high < upper:
        verdict = "equivalent to chance"
    elif estimate.get("low") is not None and estimate["low"] > chance:
        verdict = "better than chance"
    elif estimate.get("high") is not None and estimate["high"] < chance:
        verdict = "worse than chance"
    else:
        verdict = "not shown"
    return {"verdict": verdict, "p_value": p_value, "low": low, "high": high}


def equivalence_section(entry: Mapping[str, Any], **kwargs: Any) -> dict[str, dict[str, Any]]:
    """The ``equivalence`` of one model's or control's entry of ``metrics.json``: ``equivalence_test`` of its
    paired score per group and of its ROC-AUC overall and per negative type."""
    roc = {"overall": entry.get("overall", {}).get("roc_auc"),
           **{t: v.get("roc_auc") for t, v in entry.get("by_negative_type", {}).items()}}
    return {"paired": {g: equivalence_test(e, **kwargs) for g, e in entry.get("paired", {}).items()},
            "roc_auc": {g: equivalence_test(e, **kwargs) for g, e in roc.items() if e is not None}}

# %% [markdown]
# Four made-up estimates (value, standard error, 6 blocks), one per verdict: a value near 0.5
# with a small standard error, one far above, one far below, and one near 0.5 whose standard
# error is too large to show anything.

# %%
toy = {name: _estimate(value, value + se / np.sqrt(5) * np.array([-1, 1, -1, 1, -1, 1]), 0.95)
       for name, value, se in (("near 0.5, precise", 0.52, 0.02), ("far above", 0.8, 0.04),
                               ("far below", 0.3, 0.04), ("near 0.5, imprecise", 0.55, 0.1))}
pd.DataFrame({name: {**{k: e[k] for k in ("value", "se", "low", "high")}, **{
    f"TOST {k}": v for k, v in equivalence_test(e).items()}} for name, e in toy.items()}).T

# %% [markdown]
# ## `metrics.json`
#
# `evaluate` puts it all together: the test split at the top level, the counts of every split,
# the controls, and the Hub's own test split under `"external"` when the profile evaluates it.
# The document's layout is `METRICS_SCHEMA` (the README carries a copy, which a test keeps in
# step); `SCHEMA_VERSION` changes when it does.

# %%
#@save
# extra code: the layout of metrics.json, kept beside the code that writes it
SCHEMA_VERSION = 4

METRICS_SCHEMA = """\
metrics.json (written by chapter 07, read by every later chapter and the report index)

{
  "schema_version": 4,
  "profile": "quick",                      # the profile that produced it
  "split": "test",                         # the split of the top-level "n" and "models"
  "primary_model": "fusion",               # the head helpers.verify uses
  "threshold_rule": "...",                 # how every threshold was chosen (on validation only)
  "bootstrap": {"unit": "id_block", "block_size": 4, "n_resamples": 1000, "confidence": 0.95,
                "seed": 42, "method": "jackknife_t", "min_defined_share": 0.9,
                                           # method: the intervals' (INTERVAL_METHOD); n_resamples and
                                           # min_defined_share apply to method "percentile" only
                "simulated_coverage": {"interval_method": "jackknife_t", "coverage": float,
                    "by_method": {"percentile": float, "bca": float, "jackknife_t": float},
                    "confidence": 0.95, "n_blocks": int, "frames_per_block": [int, ...],
                    "n_sims": int, "truth": float, "icc": float, "simulation": str},
                                           # share of simulated splits with the test split's own
                                           # blocks whose interval holds the truth (synthetic data)
                "equivalence": {"chance": 0.5, "margin": 0.1, "alpha": 0.05, "test": str}},
  "metrics": ["accuracy", "precision", "recall", "macro_f1", "roc_auc", "pr_auc"],
  "n": {"pairs": int, "frames": int, "stories": int, "blocks": int, "positives": int,
        "negatives": {"other_story": int, "same_story": int, "object_swap": int, "relation_swap": int},
        "unpaired_frames": int},           # frames without a positive or a negative (lacking a feature):
                                           # in the pooled metrics, left out of the paired scores
  "n_by_split": {"train": {...}, "val": {...}, "test": {...}},   # the same counts (but unpaired_frames)
                                                                  # for every split
  "models": {
    "<model name>": {                      # fusion, fusion_3_epochs, logistic_regression, text_only, ...
      "kind": "fusion_mlp" | "single_score" | "logistic_regression" | "gradient_boosting"
              | "text_only" | "blind_control",
      "features": [column, ...],           # its inputs (columns of features.parquet, or "text")
      "threshold": float,                  # tuned on the validation split
      "paired": {"all" | negative_type | "common" | "common:<type>": estimate + {"frames": int, "outcomes": int}},
                                           # headline per type: share of frames whose own text
                                           # scores above their negative of that type (tie = 0.5);
                                           # "all": mean over every (frame, type) outcome; "common":
                                           # the frames with every type, to compare types on them
      "overall": {metric: estimate},       # pooled over every pair
      "by_negative_type": {negative_type: {metric: estimate}},
                                           # pooled: the negatives of that type + the positives of
                                           # their own frames (own_frames_mask), 1:1 for every type
      "confusion": {"tn": int, "fp": int, "fn": int, "tp": int},   # at "threshold"
      "calibration": {"bin_edges": [11 floats], "mean_predicted": [...], "fraction_positive": [...],
                      "count": [...]} | null,
                                           # non-empty bins only (sklearn calibration_curve, 10 uniform
                                           # bins); null for a model whose score is not a probability
      "equivalence": {"paired": {"all" | negative_type: verdict},
                      "roc_auc": {"overall" | negative_type: verdict}},
                                           # two one-sided tests against chance +- margin
      "seeds": {"seeds": [int, ...], "primary_seed": int,   # fusion heads only: each trained with every
                "roc_auc" | "paired": {"by_seed": {seed: float}, "mean": float, "std": float,
                                       "min": float, "max": float}}
                                           # seed of training.seeds (chapter 06); test ROC-AUC and paired
                                           # score ("all") of each seed's head, points; std over seeds
                                           # (ddof 1); the intervals above are the primary seed's
      "setting": {"C": float} | {"learning_rate": float, "min_samples_leaf": int, "max_iter": int}
                 + {"validation_loss": float} | null
                                           # a tuned baseline's setting, chosen on validation (chapter
                                           # 06's baselines.json); null for the other models
    }
  },
  "differences": {                         # primary model minus each other model, on the same pairs
    "<other model name>": {metric: estimate}   # paired bootstrap: both on the same block resamples
  },
  "paired_differences": {"<other model name>": {"all" | negative_type: estimate}},
                                           # primary minus other, paired score, same resamples
  "beyond_text": {"control": "flags_only", "split": "test",   # each head minus chapter 06's flags-only
    "heads": {"fusion_extended" | "fusion": {                  # control (inputs the text alone decides),
      "paired": {"all" | negative_type | "common" | "common:<type>": estimate},   # on the same resamples
      "roc_auc": estimate}}},
  "controls": {                            # blind controls on the test split: "equivalent to chance"
    "<control name>": {                    # = the text alone does not decide the verdict
      "description": str,                  # shuffled_frames: the primary model, every text against a frame
                                           # of another id block; mlm_plausibility: the masked language
                                           # model's log-probability of the changed words (swap types only),
                                           # the selection criterion, at chance by construction; causal_lm: a
                                           # causal LM's mean token log-probability of each text (the edited
                                           # sentences for swaps); story_consistency: the replaced against the
                                           # inserted noun's count in the story's other frames (object swaps)
      "paired": {"all" | negative_type | "common" | "common:<type>": estimate + {"frames": int, "outcomes": int}},
      "overall": {"roc_auc": estimate}, "by_negative_type": {negative_type: {"roc_auc": estimate}},
      "equivalence": {"paired": {...: verdict}, "roc_auc": {...: verdict}}   # as for a model
    }
  },
  "audit": {                               # added by chapter 07's audit section: a person's judgements of
    "file": "audit/labels.csv",            # chapter 08's audit sheet (judged 0, no types: no labels yet)
    "judged": int, "unjudged": int,        # rows judged true/false; rows left blank
    "interval": "wilson 95%", "judged_by_split": {split: int},
    "by_negative_type": {negative_type: {"judged": int, "true_of_frame": int, "share": float,
                                         "low": float, "high": float}}
                                           # true_of_frame: judged true of the frame (a hidden positive)
  },
  "ablations": {                           # added by chapter 09 (its whole document: ablations.json)
    "file": "ablations.json", "reference": "object + semantic + spatial",   # the study's three
    "evidences": {name: score column},     # the study's three and those the profile switches on
    "subsets": {"<subset name>": {         # one fusion head per non-empty subset of the evidences,
                                           # reading their scores only (no flags), as the reference
      "features": [column, ...], "roc_auc": estimate, "roc_auc_by_negative_type": {negative_type: estimate},
      "paired": {"all" | negative_type | "common" | "common:<type>": estimate + {"frames": int, "outcomes": int}},
      "paired_gain": {"all" | negative_type: estimate} | null,
                                           # its paired score minus the reference's, same resamples
      "seeds": {...}}},                    # as a model's "seeds": every seed's head on the test split
    "best_subset": str, "chosen_by": str,  # the subset of the highest seed-mean validation ROC-AUC:
    "validation_roc_auc": {"<subset name>": float}   # chosen without the test split
  },
  "external": {"split": "external", "n": {...}, "models": {...}, "differences": {...},
               "paired_differences": {...}}
                                           # only when the profile evaluates the Hub's own test split;
                                           # same layout as the top level, thresholds still from validation
}

estimate = {"value": float|null, "low": float|null, "high": float|null, "n_undefined": int,
            "se": float|null, "df": int, "reason": str (only when an interval is null)}
"value" is the estimate on the whole split. With method "jackknife_t", "low"/"high" are
value -+ t(df, 0.975) * se, clipped to the metric's range, where se is the delete-one-block
jackknife standard error over the df + 1 id blocks that hold the metric's pairs (every model
and every difference on the same left-out blocks); "n_undefined" counts the left-out blocks
that leave the metric undefined (e.g. ROC-AUC with one class, a paired score with no frame of
that type), and any makes the interval null with a "reason". With method "percentile" (no
"se", "df"), "low"/"high" are the 2.5th and 97.5th percentiles over id blocks resampled with
replacement, null when more than 10% of the resamples leave the metric undefined.
verdict = {"verdict": "equivalent to chance" | "better than chance" | "worse than chance"
           | "not shown", "p_value": float|null, "low": float|null, "high": float|null,
           "reason": str (only without a standard error)}
"equivalent to chance": the (1 - 2 alpha) interval "low"/"high" lies inside chance -+ margin
(both one-sided tests reject; "p_value" is the larger one); else better / worse: the
estimate's 95% interval lies wholly above / below chance; else not shown.
"""

# %%
#@save
def test_block_frames(predictions: pd.DataFrame, model: str) -> list[int]:
    """How many frames each id block of the test split holds (one model's rows), for ``coverage_report``."""
    rows = predictions[(predictions["model"] == model) & (predictions["split"] == "test")]
    return rows.drop_duplicates(["story_id", "frame"]).groupby("block").size().tolist()


def evaluate(
    predictions: pd.DataFrame,
    *,
    profile: str,
    n_resamples: int,
    seed: int,
    primary_model: str,
    threshold_rule: str,
    block_size: int,
    controls: Mapping[str, tuple[str, pd.DataFrame]] | None = None,
    confidence: float = 0.95,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The whole ``metrics.json`` document (``METRICS_SCHEMA``) from ``predictions.parquet``; ``controls`` maps a
    blind control's name to its description and test rows; ``settings`` a tuned baseline's name to its
    validation-chosen setting (chapter 06's ``baselines.json``)."""
    absent = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if absent:
        raise ValueError(f"predictions lack column(s) {absent}: rerun chapters 01 and 06")
    kwargs = dict(primary_model=primary_model, n_resamples=n_resamples, seed=seed, confidence=confidence,
                  settings=settings)
    test = evaluate_split(predictions, "test", **kwargs)
    one_model = predictions[predictions["model"] == primary_model]
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "profile": profile,
        "split": "test",
        "primary_model": primary_model,
        "threshold_rule": threshold_rule,
        "bootstrap": {"unit": "id_block", "block_size": block_size, "n_resamples": n_resamples,
                      "confidence": confidence, "seed": seed, "method": INTERVAL_METHOD,
                      "min_defined_share": MIN_DEFINED_SHARE,
                      "simulated_coverage": coverage_report(test_block_frames(predictions, primary_model),
                                                            confidence=confidence, seed=seed),
                      "equivalence": {"chance": CHANCE, "margin": EQUIVALENCE_MARGIN, "alpha": EQUIVALENCE_ALPHA,
                                      "test": "two one-sided t tests on the jackknife standard error"}},
        "metrics": list(METRICS),
        **{key: test[key] for key in ("n", "models", "differences", "paired_differences")},
        "n_by_split": {split: split_counts(rows) for split, rows in one_model.groupby("split", sort=False)},
    }
    document["controls"] = {name: control_section(rows, description, n_resamples=n_resamples, seed=seed,
                                                  confidence=confidence)
                            for name, (description, rows) in (controls or {}).items()}
    for entry in (*document["models"].values(), *document["controls"].values()):
        entry["equivalence"] = equivalence_section(entry)  # every model and control, whatever its name
    if (predictions["split"] == "external").any():
        document["external"] = evaluate_split(predictions, "external", **kwargs)
    return document

# %%
#@save
# extra code: metrics.json is written atomically (helpers.io)
def write_metrics(path: str | Path, document: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` atomically."""
    return atomic_write_json(path, dict(document))

# %% [markdown]
# One addition to the document: what each head adds beyond the flags-only control of chapter 06
# (`flags_only`, a model on every input the text alone decides). `beyond_control` gives each head's
# paired score minus the control's per group, and its pooled ROC-AUC minus the control's, both
# models on the same left-out blocks, as `evaluate_split` compares the primary head with every
# other model. A difference whose interval lies above zero is what the head takes from the frame
# beyond the text's own cues.

# %%
#@save
#: The key of ``metrics.json`` that holds what each head adds beyond the flags-only control (``beyond_control``).
BEYOND_TEXT = "beyond_text"


def beyond_control(predictions: pd.DataFrame, heads: Sequence[str], control: str, *, n_resamples: int, seed: int,
                   confidence: float = 0.95, split: str = "test") -> dict[str, Any]:
    """``{"control", "split", "heads": {head: {"paired": {group: estimate}, "roc_auc": estimate}}}``: each head's
    paired score (per group of ``paired_outcomes``) and pooled ROC-AUC minus the ``control``'s on ``split``, each
    difference on the same id-block resamples (or left-out blocks). Every head and the control must be among the
    predictions, scored on the same pairs."""
    rows = predictions[predictions["split"] == split]
    groups = {str(name): g.sort_values("pair_id") for name, g in rows.groupby("model", sort=False)}
    if absent := [m for m in (control, *heads) if m not in groups]:
        raise ValueError(f"no {split} predictions of {absent}: rerun chapter 06")
    reference = groups[control]
    y, blocks = reference["label"].to_numpy(), reference["block"].to_numpy()
    kwargs = dict(n_resamples=n_resamples, seed=seed, confidence=confidence)
    out = {}
    for head in heads:
        group = groups[head]
        if not np.array_equal(group["pair_id"].to_numpy(), reference["pair_id"].to_numpy()):
            raise ValueError(f"{head!r} and {control!r} were not scored on the same {split} pairs")
        pooled = bootstrap_difference(y, group["score"].to_numpy(), float(group["threshold"].iloc[0]),
                                      reference["score"].to_numpy(), float(reference["threshold"].iloc[0]), blocks,
                                      **kwargs)
        out[head] = {"paired": bootstrap_paired_difference(paired_outcomes(group), paired_outcomes(reference), **kwargs),
                     "roc_auc": pooled["roc_auc"]}
    return {"control": control, "split": split, "heads": out}

# %%
controls = {"shuffled_frames": (f"`{DEFAULT_RUN}` scoring each test text against a frame of another id block",
                                shuffled_rows)}
if len(plausibility_rows):
    controls["mlm_plausibility"] = ("the selection criterion, at chance by construction: chapter 01's masked language "
                                    "model's log-probability of the changed words in context, the score that ranked "
                                    "the object candidates and filtered the relation swaps (own words against the "
                                    "edited ones; swap negatives only)", plausibility_rows)
if len(causal_rows):
    controls["causal_lm"] = (f"a causal language model of another family ({ctx.cfg['control_lm']['weights']}), never "
                             "used by the construction: mean token log-probability of the sentence(s) holding the "
                             "edit for swaps, of the whole text for other_story and same_story", causal_rows)
if len(consistency_rows):
    controls["story_consistency"] = ("occurrences in the story's other frames of the replaced noun (positive) "
                                     "against the inserted one (negative); object swaps only", consistency_rows)
metrics = evaluate(predictions, profile=ctx.profile, n_resamples=n_resamples, seed=seed, primary_model=DEFAULT_RUN,
                   threshold_rule=threshold_rule(THRESHOLD_METRIC), block_size=int(ctx.cfg["data"]["block_size"]),
                   controls=controls,
                   settings={name: m["setting"] for name, m in load_baselines(ctx.paths)["models"].items()})
metrics[BEYOND_TEXT] = beyond_control(predictions, [EXTENDED_RUN, DEFAULT_RUN], "flags_only",
                                      n_resamples=n_resamples, seed=seed)
write_metrics(ctx.paths.metrics_json, metrics)
n = metrics["n"]
display(Markdown(f"Test split: {n['pairs']:,} pairs from {n['frames']:,} frames, {n['stories']:,} stories in "
                 f"{n['blocks']:,} id blocks; misaligned by kind: "
                 + ", ".join(f"{k} {v:,}" for k, v in n["negatives"].items()) + "."))
display(pd.DataFrame({split: {"stories": c["stories"], "id blocks": c["blocks"], **c["negatives"]}
                      for split, c in metrics["n_by_split"].items()}).rename_axis("negatives by split"))

# %% [markdown]
# The tables below read `metrics.json` back; chapters 08 and 10 use the same functions. Each
# cell prints an estimate as "value [low, high]".

# %%
#@save
# extra code: metrics.json as tables (chapters 07, 08, 10)
def _section(document: Mapping[str, Any], split: str) -> Mapping[str, Any]:
    """The part of a metrics document about ``split``: the top level for the test split, else its key."""
    section = document if split == document.get("split", "test") else document.get(split)
    if not section:
        raise ValueError(f"the metrics document has no {split!r} section")
    return section


def metrics_frame(document: Mapping[str, Any], split: str = "test") -> pd.DataFrame:
    """Long table of a metrics document: model, kind, group, metric, value, low, high.

    Pooled metrics have group "overall" or a negative type; the paired score has metric
    "paired" and group "all" or a negative type."""
    rows = []
    keep = ("value", "low", "high")
    for model, info in _section(document, split)["models"].items():
        groups = {"overall": info["overall"], **info["by_negative_type"]}
        for group, values in groups.items():
            for metric, est in values.items():
                rows.append({"model": model, "kind": info["kind"], "group": group, "metric": metric,
                             **{k: est[k] for k in keep}})
        for group, est in info.get("paired", {}).items():
            rows.append({"model": model, "kind": info["kind"], "group": group, "metric": "paired",
                         **{k: est[k] for k in keep}})
    frame = pd.DataFrame(rows)
    return frame.astype({"value": float, "low": float, "high": float})


#: Short names of the tuned baselines' parameters in tables.
SETTING_LABELS = {"learning_rate": "rate", "min_samples_leaf": "leaf", "max_iter": "trees"}


def format_setting(setting: Mapping[str, Any] | None) -> str:
    """A tuned baseline's validation-chosen setting as text ("C=0.1"; "rate=0.1, leaf=20, trees=37": learning
    rate, min_samples_leaf, max_iter); "" for a model without one."""
    return ", ".join(f"{SETTING_LABELS.get(k, k)}={v:g}" for k, v in (setting or {}).items() if k != "validation_loss")


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


def _paired_columns(groups: Mapping[str, Any]) -> list[str]:
    return [g for g in (ALL_FRAMES, *NEGATIVE_TYPES, COMMON_FRAMES, *map(common_group, NEGATIVE_TYPES)) if g in groups]


def paired_table(document: Mapping[str, Any], split: str = "test") -> pd.DataFrame:
    """Models x paired-score groups ("all", then each negative type), each cell "value [low, high]".

    The headline per-type table: the share of frames whose own text the model scores above
    their negative of that type (0.5 = chance; ties count half); ``all`` is the mean over every (frame, type)
    outcome, ``common:<type>`` the type on the frames that have every type. The header row says how many frames.
    """
    models = _section(document, split)["models"]
    first = next(iter(models.values()))["paired"]
    columns = _paired_columns(first)
    rows = {model: {g: format_estimate(info["paired"].get(g)) for g in columns} for model, info in models.items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("model")
    return table.rename(columns={g: f"{g} ({first[g]['frames']} frames)" for g in columns})


def paired_difference_table(document: Mapping[str, Any], split: str = "test") -> pd.DataFrame:
    """The primary model's paired score minus each other model's, per group, "value [low, high]"."""
    primary = document["primary_model"]
    differences = _section(document, split).get("paired_differences", {})
    columns = _paired_columns(next(iter(differences.values()), {}))
    rows = {f"{primary} - {other}": {g: format_estimate(est.get(g)) for g in columns}
            for other, est in differences.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("difference")


def control_table(document: Mapping[str, Any]) -> pd.DataFrame:
    """Controls x groups: the paired score per group and the pooled ROC-AUC, "value [low, high]"."""
    rows = {}
    for name, info in document.get("controls", {}).items():
        row = {f"paired {g}": format_estimate(e) for g, e in info["paired"].items()}
        row["ROC-AUC overall"] = format_estimate(info["overall"].get("roc_auc"))
        row |= {f"ROC-AUC {t}": format_estimate(v.get("roc_auc")) for t, v in info["by_negative_type"].items()}
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("control")


def equivalence_table(document: Mapping[str, Any], section: str = "controls",
                      names: Sequence[str] | None = None) -> pd.DataFrame:
    """Entries of ``section`` ("controls" or "models") x groups: the equivalence verdict of the paired score per
    group and of the ROC-AUC overall and per type, each cell "verdict [low, high]" (the 90% interval)."""
    entries = document.get(section, {})
    rows = {}
    for name in names if names is not None else list(entries):
        eq = entries[name].get("equivalence", {})
        row = {f"paired {g}": _verdict_text(v) for g, v in eq.get("paired", {}).items()}
        rows[name] = row | {f"ROC-AUC {g}": _verdict_text(v) for g, v in eq.get("roc_auc", {}).items()}
    return pd.DataFrame.from_dict(rows, orient="index").fillna("").rename_axis(section[:-1])


def _verdict_text(result: Mapping[str, Any]) -> str:
    if result.get("low") is None or result.get("high") is None:
        return result["verdict"]
    return f"{result['verdict']} [{result['low']:.3f}, {result['high']:.3f}]"


def excludes_zero(estimate: Mapping[str, float | None]) -> bool:
    """Whether a difference's interval lies wholly above or below zero (False when undefined)."""
    low, high = estimate.get("low"), estimate.get("high")
    return low is not None and high is not None and (low > 0 or high < 0)

# %% [markdown]
# ## Paired scores of every model
#
# The headline per kind of negative: each frame's own text against its negative. 0.5 is chance.

# %%
# extra code: a metric by kind of negative, with its intervals (this chapter's figure; not saved)
def plot_by_negative_type(document: Mapping[str, Any], metric: str, models: Sequence[str]) -> "matplotlib.figure.Figure":  # noqa: F821
    """``metric`` per kind of negative for ``models``, with the bootstrap intervals as error bars.

    ``metric`` "paired" plots the paired score (group "all" first, a dashed line at chance);
    any other metric is pooled (group "overall" first)."""
    import matplotlib.pyplot as plt

    frame = metrics_frame(document)
    frame = frame[(frame["metric"] == metric) & frame["model"].isin(models)]
    first = ALL_FRAMES if metric == "paired" else "overall"
    kinds = [common_group(t) for t in NEGATIVE_TYPES] if metric == "paired" else []  # the kinds on the same frames
    groups = [first, *[t for t in (*NEGATIVE_TYPES, *kinds) if t in set(frame["group"])]]
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
    if metric == "paired":
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    label = "paired score (own text above its negative)" if metric == "paired" else f"{metric} (pooled)"
    ax.set(ylabel=label, ylim=(0, 1.02),
           title=f"{label} by kind of negative (lines: {confidence:.0%} intervals over id blocks)")
    fig.legend(loc="outside lower center", ncols=len(models), fontsize="small")
    return fig

# %%
boot = metrics["bootstrap"]
cover = boot["simulated_coverage"]
display(Markdown(
    f"Intervals: {boot['confidence']:.0%} `{boot['method']}` intervals over the test split's {cover['n_blocks']} id "
    f"blocks (blocks of {boot['block_size']} neighbouring story ids). `[n/a]`: leaving out a block leaves the "
    "metric undefined (a class or that kind of negative held by one block only); `n/a` alone: the split itself does "
    f"not define it. **Simulated coverage** at this split's own blocks ({cover['frames_per_block']} frames; "
    f"{cover['n_sims']:,} simulated splits, truth {cover['truth']}, between-block correlation {cover['icc']}): "
    f"{cover['coverage']:.0%} for these {boot['confidence']:.0%} intervals ("
    + ", ".join(f"{m} {c:.0%}" for m, c in cover["by_method"].items()) + "). "
    + (f"**Below 90%: these intervals are too narrow for this split; read them as optimistic.**"
       if cover["coverage"] < 0.9 else "At least 90%: the intervals can be read at about their nominal level.")))
display(paired_table(metrics))
compared = [DEFAULT_RUN, "clip_score_only", "logistic_regression", "text_only", "clip_text_only"]
plot_by_negative_type(metrics, "paired", compared)
plt.show()

# %% [markdown]
# ## Blind controls
#
# Ways to ask whether the text alone gives the answer away: the four blind models of
# chapter 06 (`text_only`, `clip_text_only`, `pairwise_text`, `flags_only`), evaluated like every other
# model, the primary head against a stranger's frame, the masked language model's plausibility
# of the swapped words, a causal language model's fluency of each text, and the story's own
# mentions of the swapped objects. Two of them are at chance by construction and are shown
# for what they are: `text_only` is the filter's own recipe and `mlm_plausibility` the
# selection criterion. The evidence comes from the others, which the construction never
# used: `clip_text_only` (one text at a time, on a mean of sentence embeddings, where a
# one-word edit is diluted), `pairwise_text` (both texts of a frame, so it answers the paired
# question itself), `flags_only` (the counts and flags the text decides alone, which the
# extended head reads), `causal_lm` (another model family) and `story_consistency` (object swaps
# only). The goal for the negatives: on real data, every blind control **equivalent to
# chance** for every kind, paired score and ROC-AUC (the two one-sided tests above, margin
# `EQUIVALENCE_MARGIN`), with the fusion head's results next to it. An interval that merely
# covers 0.5 shows nothing: it says "not shown". The smoke profile computes all of this on
# synthetic data with random weights, so its numbers mean nothing.

# %%
blind_models = [m for m in ("text_only", "clip_text_only", "pairwise_text", "flags_only") if m in metrics["models"]]
display(paired_table(metrics).loc[blind_models])
display(summary_table(metrics).loc[blind_models, ["roc_auc"]])
display(control_table(metrics))
display(Markdown(f"Equivalence to chance ({boot['equivalence']['chance']} +- {boot['equivalence']['margin']}, "
                 f"two one-sided tests at {boot['equivalence']['alpha']}; in brackets the "
                 f"{1 - 2 * boot['equivalence']['alpha']:.0%} interval), for every control and blind model:"))
blind_kinds = [m for m, info in metrics["models"].items() if info["kind"] in ("text_only", "blind_control")]
display(pd.concat([equivalence_table(metrics), equivalence_table(metrics, "models", blind_kinds)]))
verdicts = [v["verdict"] for section in ("controls", "models") for name, info in metrics[section].items()
            if section == "controls" or name in blind_kinds for part in info["equivalence"].values()
            for v in part.values()]
display(Markdown(", ".join(f"{verdicts.count(v)} {v}" for v in VERDICTS if verdicts.count(v))
                 + f" among the {len(verdicts)} verdicts of the blind controls."))
display(Markdown(
    f"Label noise on the test split: the detector finds the swapped-in category with a score of at least "
    f"{obj.LABEL_NOISE_SCORE} in {int(hidden['hidden'].sum())} of {len(hidden)} object-swap negatives "
    f"({hidden['hidden'].mean():.1%}): those may be positives in disguise (chapter 02 gives train and validation)."
    if len(hidden) else "The test split has no object-swap negatives."))

# %% [markdown]
# ### What the heads add beyond the text's own cues
#
# The extended head reads inputs the text alone decides (chapter 06's `TEXT_ONLY_INPUTS`), and
# `flags_only` reads nothing else. Each head's paired score and ROC-AUC minus the control's, on
# the same left-out blocks: a difference whose interval lies above zero is what the head takes
# from the frame beyond those cues; one that covers zero leaves its advantage unshown.

# %%
beyond = metrics[BEYOND_TEXT]
flags_verdict = metrics["models"][beyond["control"]]["equivalence"]["paired"]["all"]["verdict"]
display(pd.DataFrame({f"{head} - {beyond['control']}": {
    **{f"paired {g}": format_estimate(e) for g, e in d["paired"].items()}, "ROC-AUC": format_estimate(d["roc_auc"])}
    for head, d in beyond["heads"].items()}).T)
display(Markdown(f"`{beyond['control']}` on the test split: paired score "
                 f"{format_estimate(metrics['models'][beyond['control']]['paired']['all'])}, verdict **{flags_verdict}**."))
for head, d in beyond["heads"].items():
    gain = d["paired"]["all"]
    display(Markdown(
        f"`{head}` minus `{beyond['control']}`, paired score over every (frame, kind): {format_estimate(gain)}; "
        + ("its interval lies above zero: the head adds something the text-only inputs do not give."
           if excludes_zero(gain) and gain["value"] > 0 else
           "its interval lies below zero: the text-only inputs alone rank the texts better than the head."
           if excludes_zero(gain) else
           "its interval covers zero: the test split does not show that the head adds anything beyond them.")))

# %% [markdown]
# ## Over the training seeds
#
# Every interval above resamples the test split's id blocks for one trained head: the run of
# the profile's seed. A second seed would have given another head, so chapter 06 trained each
# head with every seed of the profile (`training.seeds`) and scored the validation and test
# pairs with each (`seed_predictions.parquet`). Here every seed's head is measured on the test
# split like the primary one: its ROC-AUC over the test pairs and its paired score over every
# (frame, kind). The seed mean, the standard deviation over seeds and the range stand beside the
# primary seed's block interval: a difference between two heads within the seed spread is
# training noise, whatever the block intervals say. They go into `metrics.json` as each head's
# `"seeds"` entry.

# %%
#@save
#: What :func:`seed_scores` measures for each seed's head: pooled ROC-AUC and the paired score over every outcome.
SEED_METRICS: tuple[str, ...] = ("roc_auc", "paired")


def seed_scores(seed_predictions: pd.DataFrame, split: str = "test", *, paired: bool = True) -> pd.DataFrame:
    """One row per (model, seed) of chapter 06's ``seed_predictions`` on ``split``: ``roc_auc`` over its pairs
    and ``paired``, the mean outcome of every (frame, negative type) (:func:`paired_outcomes`; NaN where undefined,
    and without measuring it when ``paired`` is false)."""
    rows = []
    for (model, seed), group in seed_predictions[seed_predictions["split"] == split].groupby(["model", "seed"],
                                                                                             sort=False):
        y, score = group["label"].to_numpy(), group["score"].to_numpy(dtype=np.float64)
        outcomes = paired_outcomes(group)["outcome"] if paired else pd.Series(dtype=float)
        rows.append({"model": model, "seed": int(seed),
                     "roc_auc": float(skm.roc_auc_score(y, score)) if len(np.unique(y)) == 2 else math.nan,
                     "paired": float(outcomes.mean()) if len(outcomes) else math.nan})
    return pd.DataFrame(rows, columns=["model", "seed", *SEED_METRICS])


def seed_spread(scores: pd.DataFrame, primary_seed: int) -> dict[str, dict[str, Any]]:
    """Per model of ``scores`` (:func:`seed_scores`): ``{"seeds": [...], "primary_seed", metric: {"by_seed":
    {seed: value}, "mean", "std", "min", "max"}}`` for each of :data:`SEED_METRICS`; ``std`` over seeds with
    one degree of freedom removed (null with one seed)."""
    out = {}
    for model, group in scores.groupby("model", sort=False):
        if primary_seed not in set(group["seed"]):
            raise ValueError(f"{model!r} has no run of the primary seed {primary_seed}")
        entry: dict[str, Any] = {"seeds": [int(s) for s in group["seed"]], "primary_seed": int(primary_seed)}
        for metric in SEED_METRICS:
            values = group[metric].astype(float)
            entry[metric] = {"by_seed": {str(int(s)): _clean(v) for s, v in zip(group["seed"], values)},
                             "mean": _clean(values.mean()), "std": _clean(values.std(ddof=1)),
                             "min": _clean(values.min()), "max": _clean(values.max())}
        out[str(model)] = entry
    return out


def add_seed_spread(document: dict[str, Any], spread: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``document`` (metrics.json) with each model of ``spread`` given its ``"seeds"`` entry; a model the document
    lacks is an error."""
    missing = sorted(set(spread) - set(document["models"]))
    if missing:
        raise ValueError(f"seed runs of models metrics.json does not hold: {missing}")
    for model, entry in spread.items():
        document["models"][model]["seeds"] = dict(entry)
    return document

# %%
#@save
# extra code: the seed spread beside the primary seed's block interval, as a table (chapters 07 and 10)
def seed_table(document: Mapping[str, Any], split: str = "test") -> pd.DataFrame:
    """One row per model with a ``"seeds"`` entry: per metric of :data:`SEED_METRICS` the primary seed's
    "value [95% interval]" over id blocks, then the seed mean, standard deviation and range."""
    section = _section(document, split)
    rows = {}
    for model, info in section["models"].items():
        seeds = info.get("seeds")
        if not seeds:
            continue
        row: dict[str, Any] = {"seeds": len(seeds["seeds"])}
        for metric in SEED_METRICS:
            primary = info["overall"].get(metric) if metric != "paired" else info["paired"].get(ALL_FRAMES)
            s = seeds[metric]
            row[f"{metric}: seed {seeds['primary_seed']} [blocks]"] = format_estimate(primary)
            row[f"{metric}: seed mean"] = s["mean"]
            row[f"{metric}: seed std"] = s["std"]
            row[f"{metric}: seed range"] = f"{s['min']:.3f} to {s['max']:.3f}" if s["min"] is not None else "n/a"
        rows[model] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")

# %%
from helpers.training import load_seed_predictions, training_seeds

primary_seed = training_seeds(ctx.cfg)[0]
test_seed_scores = seed_scores(load_seed_predictions(ctx.paths), "test")
display(test_seed_scores.pivot(index="model", columns="seed", values=list(SEED_METRICS)).style.format(precision=3))
add_seed_spread(metrics, seed_spread(test_seed_scores, primary_seed))
write_metrics(ctx.paths.metrics_json, metrics)
display(seed_table(metrics).style.format(precision=3))
_s = metrics["models"][DEFAULT_RUN]["seeds"]["roc_auc"]
display(Markdown(
    f"`{DEFAULT_RUN}` over {len(metrics['models'][DEFAULT_RUN]['seeds']['seeds'])} seeds: test ROC-AUC "
    f"{_s['mean']:.3f} on average, standard deviation {_s['std']:.3f}, from {_s['min']:.3f} to {_s['max']:.3f}; "
    f"the primary seed's is {format_estimate(metrics['models'][DEFAULT_RUN]['overall']['roc_auc'])} over id blocks. "
    "The block interval holds the test split's sampling noise for one head, the seed spread the training noise "
    "of the head itself; a comparison of two heads needs both."))

# %% [markdown]
# ## Hidden positives: what a person judged
#
# A negative is built by a rule, so it can be true of its frame after all: a swapped-in object
# the frame shows but the annotations missed, a reversed relation that also holds, another
# frame's text that fits this one. Chapter 08 writes an audit sheet, a seeded random sample of
# negatives of every type from every split (`audit/sheet.html` to look at, `audit/sheet.csv` to
# fill in). A person writes `true` (the text is true of the frame: a hidden positive) or
# `false` in its `judgement` column and saves it as `audit/labels.csv`; a blank judgement is
# not judged yet and is counted, not guessed. Each type's share of hidden positives gets a 95%
# Wilson interval (a binomial interval that stays inside [0, 1] with few judgements).
# `read_audit_labels` refuses a file it cannot trust: a missing column, a pair id twice, a
# pair id that is no negative of this run, a type that is not the pair's, a judgement that is
# neither `true` nor `false`.

# %%
#@save
#: The columns of the audit sheet (chapter 08 writes them; a person fills ``judgement``).
AUDIT_COLUMNS: tuple[str, ...] = ("pair_id", "story_id", "frame", "split", "negative_type", "original_text",
                                  "edited_text", "judgement")
#: A judgement of the audit sheet -> whether the negative's text is true of its frame (a hidden positive).
AUDIT_JUDGEMENTS: dict[str, bool] = {"true": True, "false": False}
#: Where the filled sheet is read from, under the profile's ``audit`` folder.
AUDIT_LABELS_FILE = "labels.csv"


def read_audit_labels(path: str | Path, pairs: pd.DataFrame) -> pd.DataFrame:
    """The judged rows of a filled audit sheet, checked against this run's ``pairs``: ``pair_id``, ``split``,
    ``negative_type`` and ``true_of_frame``; rows with a blank judgement are counted in ``attrs["unjudged"]``.

    ``ValueError`` for a missing column, a repeated or unknown pair id (not a negative of ``pairs``), a
    ``negative_type`` that is not the pair's, or a judgement other than ``true`` / ``false`` (any case).
    """
    labels = pd.read_csv(path, dtype=str, keep_default_na=False)
    if missing := [c for c in ("pair_id", "negative_type", "judgement") if c not in labels.columns]:
        raise ValueError(f"{path}: column(s) {missing} missing; the sheet's columns are {list(AUDIT_COLUMNS)}")
    if (repeated := labels["pair_id"][labels["pair_id"].duplicated()]).any():
        raise ValueError(f"{path}: pair id(s) judged twice: {sorted(set(repeated))[:5]}")
    negatives = pairs.loc[pairs["label"] == 0].set_index("pair_id")
    if len(unknown := sorted(set(labels["pair_id"]) - set(negatives.index))):
        raise ValueError(f"{path}: {len(unknown)} pair id(s) are no negative of this run, e.g. {unknown[:3]} "
                         "(a sheet from another run or profile?)")
    truth = negatives.loc[labels["pair_id"]]
    if (wrong := labels["negative_type"].to_numpy() != truth["negative_type"].astype(str).to_numpy()).any():
        raise ValueError(f"{path}: negative_type differs from the pair's for {list(labels['pair_id'][wrong][:3])}")
    judgement = labels["judgement"].str.strip().str.lower()
    if (bad := ~judgement.isin([*AUDIT_JUDGEMENTS, ""])).any():
        shown = [f"{p}: {j!r}" for p, j in zip(labels["pair_id"][bad][:3], labels["judgement"][bad][:3])]
        raise ValueError(f"{path}: {int(bad.sum())} judgement(s) are neither 'true' nor 'false' (blank: not judged "
                         f"yet), e.g. {shown}")
    judged = judgement != ""
    out = pd.DataFrame({"pair_id": labels["pair_id"][judged].to_numpy(),
                        "split": truth["split"][judged.to_numpy()].astype(str).to_numpy(),
                        "negative_type": labels["negative_type"][judged].to_numpy(),
                        "true_of_frame": judgement[judged].map(AUDIT_JUDGEMENTS).astype(bool).to_numpy()})
    out.attrs["unjudged"] = int((~judged).sum())
    return out


def audit_section(labels: pd.DataFrame | None, *, confidence: float = 0.95) -> dict[str, Any]:
    """The ``audit`` entry of ``metrics.json`` from :func:`read_audit_labels` (None: no labels file yet): per
    type the negatives judged, how many a person found true of their frame, the share and its Wilson interval."""
    from scipy.stats import binomtest

    section: dict[str, Any] = {"file": f"audit/{AUDIT_LABELS_FILE}", "judged": 0, "unjudged": 0,
                               "interval": f"wilson {confidence:.0%}", "by_negative_type": {}, "judged_by_split": {}}
    if labels is None:
        return section
    section.update(judged=len(labels), unjudged=int(labels.attrs.get("unjudged", 0)),
                   judged_by_split={str(s): int(n) for s, n in labels["split"].value_counts().sort_index().items()})
    for t in [t for t in NEGATIVE_TYPES if t in set(labels["negative_type"])]:
        hits = labels.loc[labels["negative_type"] == t, "true_of_frame"]
        ci = binomtest(int(hits.sum()), len(hits)).proportion_ci(confidence_level=confidence, method="wilson")
        section["by_negative_type"][t] = {"judged": len(hits), "true_of_frame": int(hits.sum()),
                                          "share": float(hits.mean()), "low": float(ci.low), "high": float(ci.high)}
    return section


def audit_table(section: Mapping[str, Any]) -> pd.DataFrame:
    """The ``audit`` entry as a table: one row per negative type, the share as "value [low, high]"."""
    rows = {t: {"judged": e["judged"], "true of the frame": e["true_of_frame"],
                "share of hidden positives": format_estimate({"value": e["share"], "low": e["low"], "high": e["high"]})}
            for t, e in section["by_negative_type"].items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["judged", "true of the frame",
                                                                 "share of hidden positives"]).rename_axis("negative type")

# %%
audit_labels_path = ctx.paths.audit / AUDIT_LABELS_FILE
audit_labels = (read_audit_labels(audit_labels_path, pd.read_parquet(ctx.paths.pairs))
                if audit_labels_path.exists() else None)
metrics["audit"] = audit_section(audit_labels)
write_metrics(ctx.paths.metrics_json, metrics)
if metrics["audit"]["judged"]:
    display(audit_table(metrics["audit"]))
    display(Markdown(f"{metrics['audit']['judged']:,} negatives judged by a person "
                     f"({', '.join(f'{s} {n:,}' for s, n in metrics['audit']['judged_by_split'].items())}); "
                     f"{metrics['audit']['unjudged']:,} rows of the sheet not judged yet."))
else:
    display(Markdown("No audit labels yet; chapter 08 writes the sheet"
                     + (f" ({metrics['audit']['unjudged']:,} rows of `{audit_labels_path.name}` left blank)."
                        if audit_labels is not None else ".")))

# %% [markdown]
# ## Every model on the test split, pooled
#
# Each cell: the value on the whole test split, then [low, high], the interval over the
# test split's id blocks. `setting`: what each tuned baseline chose on the validation split
# (chapter 06: `C` of the logistic regression; learning rate, leaf size and number of trees
# of the boosted trees); `_extended` baselines read the extended head's inputs.

# %%
display(summary_table(metrics).assign(setting=[format_setting(metrics["models"][m].get("setting"))
                                               for m in summary_table(metrics).index]))

# %% [markdown]
# Is the fusion head better than CLIP alone, than the tree ensemble, than the study's fixed
# epochs? Both models of a comparison are measured with the same blocks left out, so
# their difference gets its own (paired) interval; one that excludes zero means the test
# split tells the two apart.

# %%
from helpers.training import STUDY_RUN

models, differences = metrics["models"], metrics["differences"]
display(difference_table(metrics))
display(Markdown("The same comparisons on the paired score:"))
display(paired_difference_table(metrics))
lines = [f"The fusion head reaches macro-F1 {format_estimate(models[DEFAULT_RUN]['overall']['macro_f1'])} and ROC-AUC "
         f"{format_estimate(models[DEFAULT_RUN]['overall']['roc_auc'])} (value [{boot['confidence']:.0%} interval]). "
         "Against:"]
for other in ("clip_score_only", "gradient_boosting", STUDY_RUN):
    d = differences[other]["macro_f1"]
    lines.append(f"- `{other}` (macro-F1 {format_estimate(models[other]['overall']['macro_f1'])}): difference "
                 f"{format_estimate(d)}, " + ("the split tells them apart." if excludes_zero(d)
                                              else "the interval does not exclude zero: the split does not tell them "
                                                   "apart."))
display(Markdown("\n".join(lines)))

# %% [markdown]
# The extended head reads more than the study's three scores. Against the baselines that read
# exactly its inputs, tuned the same way, a difference is what the head adds to the inputs;
# a gain over the study's head that these baselines share comes from the inputs.

# %%
# extra code: fusion_extended minus each baseline on the extended inputs, same pairs and left-out blocks
test_rows = {name: group.sort_values("pair_id")
             for name, group in predictions[predictions["split"] == "test"].groupby("model")}
if "fusion_extended" in test_rows:
    head_rows = test_rows["fusion_extended"]
    versus = {f"fusion_extended - {other}": bootstrap_difference(
        head_rows["label"].to_numpy(), head_rows["score"].to_numpy(), float(head_rows["threshold"].iloc[0]),
        test_rows[other]["score"].to_numpy(), float(test_rows[other]["threshold"].iloc[0]),
        head_rows["block"].to_numpy(), n_resamples=n_resamples, seed=seed)
        for other in ("logistic_regression_extended", "gradient_boosting_extended") if other in test_rows}
    display(pd.DataFrame({pair: {m: format_estimate(d[m]) for m in ("macro_f1", "roc_auc")}
                          for pair, d in versus.items()}).T.rename_axis("difference"))

# %% [markdown]
# ## Pooled, by kind of negative
#
# Each group is one kind's balanced set: the misaligned pairs of that kind (another story's
# text, another frame of the same story, an object swapped for another, a spatial relation
# swapped) and the aligned pairs of the same frames. Pooled ROC-AUC says how well a model
# ranks those aligned pairs above that kind of negative; unlike the paired score it also
# compares one frame's text with another frame's.

# %%
plot_by_negative_type(metrics, "roc_auc", compared)
plt.show()
for group in models[DEFAULT_RUN]["by_negative_type"]:
    display(Markdown(f"**{group}**"))
    display(summary_table(metrics, group).loc[compared])

# %%
paired_default = models[DEFAULT_RUN]["paired"]
by_type = {t: paired_default[common_group(t)]["value"] for t in NEGATIVE_TYPES
           if common_group(t) in paired_default and paired_default[common_group(t)]["value"] is not None}
if by_type:
    hardest, easiest = min(by_type, key=by_type.get), max(by_type, key=by_type.get)
    display(Markdown(f"By the paired score on the {paired_default[COMMON_FRAMES]['frames']:,} test frames that have "
                     f"every kind of negative, the fusion head's hardest negatives are `{hardest}` "
                     f"({by_type[hardest]:.3f}) and the easiest `{easiest}` ({by_type[easiest]:.3f})."))
else:
    display(Markdown("No test frame has every kind of negative: the kinds cannot be compared on the same frames."))

# %% [markdown]
# ## Errors, curves and calibration
#
# The confusion matrices at the validation-tuned thresholds; then the ROC and
# precision-recall curves and the calibration curve (how often pairs given a probability
# near *p* are really aligned), drawn only for the models whose score is a probability
# (the single scores are not).

# %%
# extra code: the confusion matrices and the curves (this chapter's figures; not saved)
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
        if m["kind"].iloc[0] in PROBABILITY_KINDS:
            CalibrationDisplay.from_predictions(y, s, n_bins=10, name=name, ax=cal, color=colour)
    roc.plot([0, 1], [0, 1], ls=":", color="grey")  # chance
    roc.set_title("ROC")
    pr.set_title("Precision-recall")
    cal.set_title("Calibration (10 uniform bins)")
    for ax in (roc, pr, cal):
        ax.legend(fontsize="x-small")
    return fig

# %%
plot_confusion(metrics, [DEFAULT_RUN, "fusion_3_epochs", "clip_score_only"])
plt.show()
plot_curves(predictions, [DEFAULT_RUN, "fusion_3_epochs", "fusion_extended", "clip_score_only", "logistic_regression",
                          "gradient_boosting", "logistic_regression_extended", "gradient_boosting_extended"])
plt.show()

# %% [markdown]
# ## The evidence, aligned against misaligned
#
# The distribution of each score on the test split, for the aligned pairs and each kind of
# negative. A score that separates a kind of negative from the aligned pairs shows two
# distributions apart; one that does not shows them on top of each other.

# %%
# extra code: each evidence, aligned against each kind of negative (not saved)
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

# %%
from helpers.fusion import STUDY_FEATURES

plot_evidence_by_label(load_features(ctx.paths, required=STUDY_FEATURES), STUDY_FEATURES)
plt.show()

# %% [markdown]
# ## The Hub's own test split
#
# With a profile that evaluates it (`data.hub_external_test`), the stories of the Hub's
# `test` split are scored the same way, with thresholds still from our validation split.

# %%
if "external" in metrics:
    ext = metrics["external"]
    display(Markdown(f"External split: {ext['n']['pairs']:,} pairs from {ext['n']['stories']:,} stories."))
    display(summary_table(metrics, split="external"))
else:
    display(Markdown(f"The `{ctx.profile}` profile does not evaluate the Hub's test split."))

# %% [markdown]
# `metrics.json` holds everything above; its layout is `METRICS_SCHEMA` (above, and in the README).

# %%
print(ctx.paths.metrics_json)
