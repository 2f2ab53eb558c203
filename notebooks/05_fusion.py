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
# # 05 · Fusion: one small network over the evidence
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/05_fusion.ipynb)
#
# Chapters 02 to 04 each turned a (frame, text) pair into one piece of evidence: do the
# things the text names appear, does CLIP find the picture and the words alike, do the
# boxes stand as the text says. This chapter shows the network that fuses them into one
# probability that the pair is aligned: its architecture (the original study's, unchanged),
# the features it reads and how they relate, and, once trained, what it does with them.
#
# **Splits shown:** the head trains on the train split and tunes its threshold on the
# validation split; every table and figure below reads those two only. The test split is
# looked at once, from chapter 07 on.

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

ctx = start(profile, chapter="05_fusion")

# %% [markdown]
# ## What the method needs
#
# The functions written in this chapter are saved (`#@save`) into `helpers/fusion.py`, which
# chapter 06 (training), chapters 07 to 09 and the verifier import.

# %%
#@save
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from helpers.objects import CHECKED, EVIDENCE_STATES, NOT_COMPUTED, NOTHING_TO_CHECK

if TYPE_CHECKING:
    from helpers.clip import Clip
    from helpers.detection import Detector
    from helpers.owlvit import OwlVit
    from helpers.vqa import Vqa

# %% [markdown]
# ## The evidence of a pair
#
# Each pair gets its three evidences from the functions chapters 02 to 04 wrote: chapter
# 02's object score, chapter 03's CLIP aggregate, chapter 04's spatial score, with the
# profile's detector and CLIP settings. Beyond the study, a profile may switch on two more:
# chapter 02's open-vocabulary score (OWL-ViT queried with the text's own entity
# phrases) and chapter 03's question score (BLIP-VQA answering yes/no questions built from
# the text). `score_pairs` is the one function that computes them all
# for any batch of pairs from the frames' bytes: chapter 07's control, chapter 09's
# robustness study and the verifier call it on inputs the chapters never saw. It reads and
# fills the chapters' caches (keyed by a frame's bytes and a text), so pairs those chapters
# already scored cost no forward pass. It returns the pairs with every feature column the
# chapters write, each replacing any column of the same name.

# %%
#@save
def replace_columns(table: pd.DataFrame, *parts: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the columns of each part (keyed by ``pair_id``) replacing its own, rows in order."""
    out = table
    for part in parts:
        columns = [c for c in part.columns if c != "pair_id"]
        out = out.drop(columns=[c for c in columns if c in out.columns]).merge(
            part, on="pair_id", how="left", validate="one_to_one")
    if len(out) != len(table):
        raise ValueError("replacing evidence columns changed the number of pairs")
    return out


#: The cache folders (under a profile's cache) of the two evidences beyond the study: chapter
#: 02's open-vocabulary detections (per frame and phrase) and chapter 03's answers (per frame and question).
OPENVOCAB_CACHE, QUESTIONS_CACHE = "owlvit", "vqa"


def _loaded(model: Any) -> Any:
    """``model`` itself, or the model it loads when it is a loading function."""
    return model() if callable(model) else model


def evidence_enabled(cfg: Mapping[str, Any], section: str) -> bool:
    """Whether the profile ``cfg`` switches on the evidence of ``section`` (``"openvocab"``, ``"questions"``)."""
    return bool(cfg.get(section, {}).get("enabled", False))


def without_new_evidence(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The profile ``cfg`` with the evidences beyond the study switched off: what a head on the
    study's inputs needs, so that scoring for it runs no OWL-ViT or BLIP-VQA forward pass."""
    return {**cfg, **{section: {**cfg.get(section, {}), "enabled": False} for section in ("openvocab", "questions")}}


def score_pairs(pairs: pd.DataFrame, frames: Mapping[tuple[str, int], bytes], *,
                detector: "Detector | Callable[[], Detector]", clip: "Clip | Callable[[], Clip]",
                cfg: Mapping[str, Any], cache_dir: str | Path,
                openvocab: "OwlVit | Callable[[], OwlVit] | None" = None,
                vqa: "Vqa | Callable[[], Vqa] | None" = None) -> pd.DataFrame:
    """Every evidence of ``pairs`` computed from the frames' bytes, as chapters 02-04 do.

    Detection, CLIP, object and spatial evidence use the profile's settings and the same
    helper functions as the chapters; so do the open-vocabulary and question evidence when
    the profile switches them on (then ``openvocab`` and ``vqa`` must be given). Each model is
    either loaded already (a caller scoring many batches keeps them) or a function that loads
    it: then it is loaded just before its evidence and freed after it, so that one large model
    at a time is in memory. Results are cached under ``cache_dir`` by frame content (pass the
    profile's cache folder to share the chapters' caches), so a rerun, or an input they already
    saw, costs no forward pass. Returns ``pairs`` with every feature column those chapters write.
    Every evidence reads the pair's text (its tags included) and its frame, nothing else: no
    story's chain of thought, which annotates the frame an aligned pair is judged on, and which
    the verifier never has.
    """
    from helpers.detection import detect_with_profile, settings_from_profile
    from helpers.objects import object_features, openvocab_features
    from helpers.semantics import clip_features, question_features
    from helpers.spatial import spatial_features

    for section, model, name in (("openvocab", openvocab, "OWL-ViT"), ("questions", vqa, "BLIP-VQA")):
        if evidence_enabled(cfg, section) and model is None:
            raise ValueError(f"the profile switches on {section} evidence: pass the {name} model or its loader")
    cl = cfg["clip"]
    cache_dir, threshold = Path(cache_dir), settings_from_profile(cfg).score_threshold
    # Each model is an argument of its one call, so a model loaded for it is freed when the call returns.
    detections = detect_with_profile(_loaded(detector), frames, cfg, cache_dir).frames
    parts = [object_features(pairs, detections, threshold=threshold),
             clip_features(_loaded(clip), pairs, frames, cache_dir / "clip", aggregate=cl["aggregate"],
                           top_k=int(cl["top_k"]), batch_size=int(cl["batch_size"])).features,
             spatial_features(pairs, detections, threshold=threshold)]
    if evidence_enabled(cfg, "openvocab"):
        ov = cfg["openvocab"]
        parts.append(openvocab_features(_loaded(openvocab), pairs, frames,
                                        threshold=float(ov["score_threshold"]), cache_path=cache_dir / OPENVOCAB_CACHE,
                                        batch_size=int(ov["batch_size"])))
    if evidence_enabled(cfg, "questions"):
        parts.append(question_features(_loaded(vqa), pairs, frames, cache_path=cache_dir / QUESTIONS_CACHE,
                                       batch_size=int(cfg["questions"]["batch_size"])))
    return replace_columns(pairs, *parts)

# %% [markdown]
# ## The head
#
# A multilayer perceptron with two hidden layers, as the original study built it:
# `Linear → ReLU → Dropout → Linear → ReLU → Linear → Sigmoid`. Its input is a handful of
# numbers per pair, so it is tiny. With three inputs (the study's three scores) it has
# 4,481 parameters. Training reads its logits (the output before the sigmoid) with
# `BCEWithLogitsLoss`: the same binary cross-entropy as `BCELoss` on the sigmoid's output,
# computed without its rounding trouble near 0 and 1.

# %%
#@save
class FusionMLP(nn.Module):
    """Linear(d, h) -> ReLU -> Dropout(p) -> Linear(h, h) -> ReLU -> Linear(h, 1) -> Sigmoid.

    ``forward`` returns probabilities of shape ``(n,)``. Training uses ``logits`` with
    ``BCEWithLogitsLoss``: the same binary cross-entropy as ``BCELoss`` on the sigmoid's
    output, computed without its rounding trouble near 0 and 1.
    """

    def __init__(self, input_dim: int = 3, hidden_dim: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if input_dim < 1 or hidden_dim < 1:
            raise ValueError(f"input_dim and hidden_dim must be positive, got {input_dim} and {hidden_dim}")
        self.network = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, 1),
            nn.Sigmoid(),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs, shape ``(n,)``."""
        return self.network[:-1](x).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """P(aligned) for each row of ``x``, shape ``(n,)``."""
        return self.network(x).squeeze(-1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

# %% [markdown]
# The input sets are named. The **study** set is the three scores the original study fused,
# in its order. The **extended** set adds the state of the object and spatial evidence as
# two indicators each (`object_nothing_to_check`, `object_not_computed`, ...: one-hot
# inputs with "checked" as the reference), so it can tell a text that names nothing to look
# for from an evidence that could not be computed; CLIP's mean over the sentences next to
# its maximum; and how many relations the text stated that the boxes could check, and how
# many of those held.
# The extended head also takes the open-vocabulary and question scores, each with its state
# indicators, when the profile switches them on (`extended_features`): the study's
# three-score head stays the replication.

# %%
#@save
#: The three scores the original study fused, in its order.
STUDY_FEATURES: tuple[str, ...] = ("object_score", "clip_score", "spatial_score")

#: The state column of each score that has one (chapters 02-04): unless the state is
#: "checked", the stored score is a placeholder, and it enters a head as a missing value.
STATE_OF: dict[str, str] = {"object_score": "object_state", "openvocab_score": "openvocab_state",
                            "spatial_score": "spatial_state", "question_score": "question_state"}

#: Indicator inputs read off the state columns, "checked" being the reference:
#: ``object_nothing_to_check`` is 1.0 where ``object_state`` is "nothing to check", and so on.
STATE_INDICATORS: dict[str, tuple[str, str]] = {
    f"{column.removesuffix('_state')}_{state.replace(' ', '_')}": (column, state)
    for column in STATE_OF.values() for state in (NOTHING_TO_CHECK, NOT_COMPUTED)
}

#: Named input sets for the head. "extended" adds the object and spatial evidence's state
#: indicators, CLIP's mean over the sentences next to its maximum, and how many relations
#: the text stated that the boxes could check, and how many of those held.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "study": STUDY_FEATURES,
    "extended": STUDY_FEATURES
    + ("object_nothing_to_check", "object_not_computed", "spatial_nothing_to_check", "spatial_not_computed",
       "clip_score_mean", "relations_checked", "relations_held"),
}

#: The evidences beyond the study, by profile section: each score with its state indicators.
NEW_EVIDENCE: dict[str, tuple[str, ...]] = {
    "openvocab": ("openvocab_score", "openvocab_nothing_to_check", "openvocab_not_computed"),
    "questions": ("question_score", "question_nothing_to_check", "question_not_computed"),
}


def extended_features(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The extended head's inputs under the profile ``cfg``: ``FEATURE_SETS["extended"]`` and the
    columns of every evidence of ``NEW_EVIDENCE`` the profile switches on."""
    return FEATURE_SETS["extended"] + tuple(c for section, columns in NEW_EVIDENCE.items()
                                            if evidence_enabled(cfg, section) for c in columns)

# %%
import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from helpers.features import development, load_features

model = FusionMLP(input_dim=len(STUDY_FEATURES))
print(model)
layers = pd.DataFrame([{"parameter": name, "shape": tuple(p.shape), "count": p.numel()}
                       for name, p in model.named_parameters()])
display(layers)
display(Markdown(f"With the study's {len(STUDY_FEATURES)} inputs the head has **{count_parameters(model):,}** "
                 f"trainable parameters; the extended input set of this profile ({len(extended_features(ctx.cfg))} "
                 f"columns) gives it {count_parameters(FusionMLP(input_dim=len(extended_features(ctx.cfg)))):,}."))

# %% [markdown]
# ## What it reads
#
# `feature_matrix` turns a table into the head's input array, for a named set or any list of
# columns (booleans become 0 and 1; a state indicator is read off its state column). A score
# whose state is not "checked" is a placeholder, not a measurement: it becomes a missing
# value (NaN), which the head's input standardisation below turns into the training mean of
# the checked scores, so "nothing to check" no longer reads as "checked and absent" (0). It
# refuses a table with an absent, non-numeric or otherwise incomplete column, or an unknown
# state, naming it: the head has no way to fill a real hole, and guessing one would bias it.
# Pairs missing a value (a frame that did not decode has no CLIP score, `clip_state` "not
# computed" in chapter 03) are set aside by `complete_rows` and counted here, before
# training, for every model alike. A table without a score's state column (a probe made of
# numbers, such as `response_grid`'s below) is read as checked throughout.

# %%
#@save
class FeatureTableError(ValueError):
    """The feature table cannot feed the head: a column is absent, not numeric, or has holes."""


def resolve_features(features: str | Sequence[str]) -> tuple[str, ...]:
    """A feature-set name of ``FEATURE_SETS`` or an explicit list of columns, as a tuple of columns."""
    if isinstance(features, str):
        if features not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {features!r}: expected one of {sorted(FEATURE_SETS)} or a list of columns")
        return FEATURE_SETS[features]
    columns = tuple(features)
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(f"a feature list must be non-empty and without repeats, got {list(columns)}")
    return columns


def _present(table: pd.DataFrame, features: str | Sequence[str]) -> tuple[str, ...]:
    """The columns of ``features``, after checking that ``table`` has them all (a state indicator: its state column)."""
    columns = resolve_features(features)
    absent = [c for c in columns if c not in table.columns and STATE_INDICATORS.get(c, (c,))[0] not in table.columns]
    if absent:
        raise FeatureTableError(
            f"the feature table lacks column(s) {absent} (it has {sorted(table.columns)}): "
            "rerun the chapter that computes them, or choose another feature set"
        )
    for state_column in {STATE_OF.get(c) or STATE_INDICATORS.get(c, (None,))[0] for c in columns} - {None}:
        if state_column in table.columns and (unknown := set(table[state_column]) - set(EVIDENCE_STATES)):
            raise FeatureTableError(f"{state_column} holds unknown state(s) {sorted(map(str, unknown))}")
    return columns


def _inputs(table: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The inputs as float64 (NaN for a placeholder score) and where a value is really missing."""
    values, holes = {}, {}
    for c in columns:
        if c in STATE_INDICATORS and c not in table.columns:  # a probe may give an indicator as a number
            state_column, state = STATE_INDICATORS[c]
            values[c], holes[c] = table[state_column].eq(state).astype("float64"), table[state_column].isna()
            continue
        try:
            value = table[c].astype("float64")
        except (TypeError, ValueError) as err:
            raise FeatureTableError(f"feature column {c!r} must be numeric or boolean: {err}") from None
        checked = (table[STATE_OF[c]].eq(CHECKED) if STATE_OF.get(c) in table.columns
                   else pd.Series(True, index=table.index))
        values[c], holes[c] = value.where(checked), value.isna() & checked
    return pd.DataFrame(values, index=table.index), pd.DataFrame(holes, index=table.index)


def feature_matrix(table: pd.DataFrame, features: str | Sequence[str]) -> np.ndarray:
    """The ``(n, len(features))`` float32 input array of ``features`` (booleans become 0.0/1.0),
    NaN where a score's state (``STATE_OF``) is not "checked"; state indicators
    (``STATE_INDICATORS``) are 0.0/1.0.

    Raises ``FeatureTableError`` naming the absent, non-numeric or incomplete columns (or an
    unknown state): the head has no way to fill a real hole, and guessing one would bias it.
    """
    values, holes = _inputs(table, _present(table, features))
    if holes.any().any():
        counts = holes.sum()
        raise FeatureTableError(f"missing values in feature column(s) {counts[counts > 0].to_dict()}")
    return values.to_numpy(dtype=np.float32)


def complete_rows(table: pd.DataFrame, features: str | Sequence[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows of ``table`` with a value in every feature column, and the holes counted per column.

    A pair whose frame did not decode has no CLIP score, for instance: no model can score
    it, so it is set aside (and counted) before training, for every model alike. A placeholder
    score (its state not "checked") is not a hole: the head reads it as a missing value.
    """
    _, holes = _inputs(table, _present(table, features))
    return table[~holes.any(axis=1).to_numpy()], {c: int(n) for c, n in holes.sum().items() if n}

# %%
features = load_features(ctx.paths, required=STUDY_FEATURES)
table, holes = complete_rows(features, extended_features(ctx.cfg))
sets = {"study": STUDY_FEATURES, "extended (this profile)": extended_features(ctx.cfg)}
display(pd.DataFrame({"set": list(sets), "columns": [", ".join(c) for c in sets.values()]}))
switched = {section: evidence_enabled(ctx.cfg, section) for section in NEW_EVIDENCE}
display(Markdown("Evidence beyond the study in this profile: " + "; ".join(
    f"{section} **{'on' if on else 'off'}**" for section, on in switched.items()) + "."))
display(Markdown(f"{len(table):,} of {len(features):,} pairs have every feature"
                 + (f"; set aside: {len(features) - len(table):,} (missing values per column: {holes})." if holes else ".")))
dev = development(table)  # train and validation pairs: every table and figure of this chapter
display(dev.groupby(["split", "label"]).size().unstack("label").rename(columns={0: "misaligned", 1: "aligned"}))

# %% [markdown]
# ### The same evidence, recomputed
#
# `score_pairs` on a few development pairs gives back the scores chapters 02 to 04 wrote to
# the feature table: the evidence a new input gets is the evidence the head is trained on.
# (The frames were seen by those chapters, so this reads their caches: no forward pass.)

# %%
from functools import partial

from helpers.clip import CLIP
from helpers.data import load_study_data, pair_frames
from helpers.detection import DETECTOR
from helpers.owlvit import OWLVIT
from helpers.vqa import VQA
from helpers.weights import load_model

n_check = 4 if ctx.is_smoke else 16
check = dev.sample(min(n_check, len(dev)), random_state=int(ctx.cfg["seed"]))
data = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
pair_columns = [c for c in data.pairs.columns if c in check.columns]
models = {"seed": ctx.cfg["seed"], "models_dir": ctx.paths.models, "device": ctx.device}
# Loaders, not models: score_pairs loads each just before its evidence and frees it after, one at a time.
loaders = {"detector": partial(load_model, DETECTOR, ctx.cfg["detector"]["weights"], **models),
           "clip": partial(load_model, CLIP, ctx.cfg["clip"]["weights"], **models),
           "openvocab": (partial(load_model, OWLVIT, ctx.cfg["openvocab"]["weights"], **models)
                         if switched["openvocab"] else None),
           "vqa": (partial(load_model, VQA, ctx.cfg["questions"]["weights"], **models)
                   if switched["questions"] else None)}
again = score_pairs(check[pair_columns], pair_frames(check, data.datasets), cfg=ctx.cfg,
                    cache_dir=ctx.paths.cache, **loaders)  # every forward pass is a cache hit here
scores = [*STUDY_FEATURES, *(NEW_EVIDENCE[section][0] for section, on in switched.items() if on)]
gap = (again.set_index("pair_id")[scores] - check.set_index("pair_id")[scores]).abs()
display(Markdown(f"{len(check)} pairs re-scored: the largest difference from the feature table is "
                 f"{gap.max().max():.2g} ({', '.join(f'`{c}` {gap[c].max():.2g}' for c in scores)})."))
if gap.max().max() > 1e-6:  # the verifier would see other evidence than the head was trained on
    raise AssertionError(f"score_pairs disagrees with chapters 02-04 on {int((gap > 1e-6).any(axis=1).sum())} "
                         f"of {len(check)} pairs")

# %% [markdown]
# How the features move together, and with the label (Pearson correlation over the train and
# validation pairs; booleans as numbers; a placeholder score left out of the pairs it would
# join, as the head reads it). Two features that correlate strongly tell the head the same thing
# twice; a feature with no correlation to the label can still help in combination, but
# rarely alone.

# %%
columns = [*extended_features(ctx.cfg), "label"]
corr = pd.DataFrame(feature_matrix(dev, columns), columns=columns).corr()  # a placeholder score counts as missing
fig, ax = plt.subplots(figsize=(8.5, 7))
sns.heatmap(corr, annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="vlag", square=True, ax=ax)
ax.set_title("Correlations between the features and the label")
plt.show()
with_label = corr["label"].drop("label")
display(Markdown(f"The feature most correlated with the label is `{with_label.abs().idxmax()}` "
                 f"(r = {with_label[with_label.abs().idxmax()]:.2f}); the least, `{with_label.abs().idxmin()}` "
                 f"(r = {with_label[with_label.abs().idxmin()]:.2f})."))

# %% [markdown]
# ## Standardised inputs, no near-zero scale
#
# The head reads its inputs standardised with the training split's statistics: each column
# minus its training mean, divided by its training standard deviation. Two rules make that
# safe here. A missing value (a placeholder score) is left out of the statistics, and set
# to 0 after standardising, the training mean of the checked values. And no column is
# divided by a near-zero scale: a column whose training standard deviation is tiny (a score
# that barely varies on the training pairs) would turn differences far below anything the
# evidence resolves into whole units of input, which the head reads as large moves. All
# scores live in [0, 1], so the scale has a floor, `MIN_SCALE` = 0.01, one hundredth of the
# range: a difference of 0.01 between two scores is at most one unit of input. A column
# that varies more keeps its own scale; a constant column keeps scikit-learn's scale of 1,
# and so does a score never checked on the training pairs (mean 0: every pair of them reads 0).
# The logistic-regression baseline of chapter 06 standardises with the same rule.

# %%
#@save
#: The smallest scale an input is divided by when standardised (scores live in [0, 1]).
MIN_SCALE = 0.01


class FlooredScaler(StandardScaler):
    """``StandardScaler`` whose scales are at least ``min_scale``; NaN (a missing value) is
    left out of the statistics and passed through by ``transform``."""

    def __init__(self, *, min_scale: float = MIN_SCALE, copy: bool = True, with_mean: bool = True,
                 with_std: bool = True) -> None:
        super().__init__(copy=copy, with_mean=with_mean, with_std=with_std)
        self.min_scale = min_scale

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> "FlooredScaler":
        with warnings.catch_warnings():  # a column without any value: handled below
            warnings.simplefilter("ignore", RuntimeWarning)
            super().partial_fit(X, y, sample_weight)
        if self.with_mean and self.with_std:
            empty = np.isnan(self.mean_)  # never checked on the training pairs: a constant column
            self.mean_[empty], self.var_[empty], self.scale_[empty] = 0.0, 0.0, 1.0
            self.scale_ = np.maximum(self.scale_, self.min_scale)
        return self


def standardise(scaler: StandardScaler, x: np.ndarray) -> np.ndarray:
    """``x`` standardised by ``scaler``, a missing value (NaN) set to 0: the training mean."""
    return np.nan_to_num(scaler.transform(x), nan=0.0).astype(np.float32)

# %%
_train_x = pd.DataFrame(feature_matrix(table[table["split"] == "train"], extended_features(ctx.cfg)),
                        columns=list(extended_features(ctx.cfg)))
scales = pd.DataFrame({"checked training values": _train_x.notna().sum(), "training std": _train_x.std(ddof=0),
                       "floored scale": FlooredScaler().fit(_train_x.to_numpy()).scale_})
display(scales.style.format({"checked training values": "{:,}", "training std": "{:.3g}", "floored scale": "{:.3g}"},
                            na_rep="-"))
floored = scales[scales["training std"].between(0, MIN_SCALE, inclusive="neither")]
display(Markdown(
    f"On the training pairs, {len(floored)} of {len(scales)} inputs of the extended set vary, but less than "
    f"`MIN_SCALE`" + "".join(f"; `{c}`: a difference of 0.0002 is {0.0002 / row['floored scale']:.2f} units of input "
                             f"instead of {0.0002 / row['training std']:.2f}" for c, row in floored.iterrows())
    + ". Never checked on the training pairs: "
    + (", ".join(f"`{c}`" for c in scales.index[scales["checked training values"] == 0]) or "none") + "."))

# %% [markdown]
# ## What the trained head does with them
#
# A trained head is used as it was trained: its inputs standardised with the training
# split's statistics, then the network, then a decision threshold tuned on the validation
# split. `TrainedHead` keeps the four together.

# %%
#@save
@dataclass(frozen=True)
class TrainedHead:
    """A trained fusion head as it is used: the network, its input standardisation, its
    input columns and the decision threshold tuned on the validation split."""

    model: FusionMLP
    scaler: StandardScaler
    features: tuple[str, ...]
    threshold: float

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """P(aligned) for each row of ``table`` (which must hold ``self.features``)."""
        x = standardise(self.scaler, feature_matrix(table, self.features))
        self.model.eval()
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy().astype(np.float64)

# %% [markdown]
# The head is trained here on the study's three scores with the procedure chapter 06
# details (Adam, binary cross-entropy, early stopping on the validation loss, seed from
# the profile), and its checkpoint is saved; chapter 06 resumes from it rather than
# training it again. Its decision threshold is tuned on the validation split.

# %%
from helpers.training import DEFAULT_RUN, settings_from_profile, train_fusion

result = train_fusion(table, settings_from_profile(ctx.cfg, "study"), ctx.paths.checkpoints / DEFAULT_RUN)
head = result.head
display(Markdown(f"Trained for {len(result.history)} epochs; kept epoch {result.best_epoch} (lowest validation "
                 f"loss, {result.history.set_index('epoch').loc[result.best_epoch, 'val_loss']:.3f}); "
                 f"decision threshold {head.threshold:.3f}."))

# %% [markdown]
# What the study's head reads for each state of the object evidence: one training pair of
# each state, its stored `object_score`, the input it becomes (standardised; a placeholder
# becomes the training mean of the checked scores, 0) and the head's P(aligned) for it, the
# other two scores held at their training medians so that only this input differs. Before,
# "nothing to check" and "not computed" entered as 0.0, the same input as "checked and absent".

# %%
_train = table[table["split"] == "train"]
_probe = [("checked, found", _train[_train["object_state"].eq(CHECKED) & _train["object_score"].gt(0)]),
          ("checked, absent", _train[_train["object_state"].eq(CHECKED) & _train["object_score"].eq(0)]),
          *((state, _train[_train["object_state"].eq(state)]) for state in (NOTHING_TO_CHECK, NOT_COMPUTED))]
_medians = pd.DataFrame(feature_matrix(_train, head.features), columns=head.features).median()
rows = []
for name, group in _probe:
    if group.empty:
        rows.append({"object evidence": name, "training pairs": 0})
        continue
    one = group.head(1).assign(**{c: _medians[c] for c in head.features if c != "object_score"})
    x = standardise(head.scaler, feature_matrix(one, head.features))
    rows.append({"object evidence": name, "training pairs": len(group),
                 "stored object_score": float(one["object_score"].iloc[0]),
                 "head input": float(x[0, head.features.index("object_score")]),
                 "P(aligned)": float(head.predict_proba(one)[0])})
display(pd.DataFrame(rows).set_index("object evidence").style.format(precision=3, na_rep="-"))
_checked = pd.Series(feature_matrix(_train, ["object_score"])[:, 0]).dropna()
display(Markdown(
    f"A placeholder enters as the training mean of the {len(_checked):,} checked scores"
    + ("" if _checked.empty else f", {_checked.mean():.3f}")
    + (": above zero, so it is not the input of a checked pair whose objects were all absent." if _checked.gt(0).any()
       else ": here no checked training pair scored above 0 (no object found), so the two inputs coincide on this "
            "run; the state indicators of the extended head still tell them apart.")))

# %% [markdown]
# To see what it learnt, vary two inputs over [0, 1] and hold every other at its median
# over the training pairs (`response_grid`); or move one input alone from the bottom of its
# range to the top (`input_effects`).

# %%
#@save
def _medians(head: TrainedHead, reference: pd.DataFrame) -> pd.Series:
    """The median of each input of ``head`` over ``reference`` (of the checked values: NaN when none was)."""
    return pd.DataFrame(feature_matrix(reference, head.features), columns=head.features).median()


def _probe(head: TrainedHead, values: pd.DataFrame) -> pd.DataFrame:
    """``values`` of ``head``'s inputs with the score states they imply: a NaN score is a placeholder."""
    return values.assign(**{STATE_OF[c]: np.where(values[c].notna(), CHECKED, NOTHING_TO_CHECK)
                            for c in head.features if c in STATE_OF})


def response_grid(
    head: TrainedHead, reference: pd.DataFrame, x: str, y: str, *, n: int = 41
) -> pd.DataFrame:
    """The head's P(aligned) over an ``n`` x ``n`` grid of two inputs spanning [0, 1].

    Every other input is held at its median over ``reference`` (use the training split).
    Returns one row per grid point: ``x``, ``y`` and ``probability``.
    """
    for column in (x, y):
        if column not in head.features:
            raise ValueError(f"{column!r} is not an input of this head ({list(head.features)})")
    medians = _medians(head, reference)
    xs, ys = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    grid = pd.DataFrame({c: np.full(xs.size, medians[c]) for c in head.features})
    grid[x], grid[y] = xs.ravel(), ys.ravel()
    return grid[[x, y]].assign(probability=head.predict_proba(_probe(head, grid)))


def input_effects(head: TrainedHead, reference: pd.DataFrame) -> pd.DataFrame:
    """How far each input alone moves P(aligned): the input at 0 and at 1, the others at their medians.

    One row per input: ``feature``, ``p_at_0``, ``p_at_1``, ``effect`` (``p_at_1 - p_at_0``),
    sorted by the size of the effect. The medians are taken over ``reference``.
    """
    medians = _medians(head, reference)
    rows = []
    for column in head.features:
        probe = pd.DataFrame([medians, medians]).assign(**{column: [0.0, 1.0]})
        low, high = head.predict_proba(_probe(head, probe))
        rows.append({"feature": column, "p_at_0": low, "p_at_1": high, "effect": high - low})
    return pd.DataFrame(rows).sort_values("effect", key=np.abs, ascending=False, ignore_index=True)

# %% [markdown]
# Its response over every pair of two scores, the third held at its median over the
# training pairs. Red is "aligned"; the black line is the decision threshold.

# %%
# extra code: one panel per pair of inputs, P(aligned) as colour, the decision threshold as a line
train = table[table["split"] == "train"]
panels = [("object_score", "clip_score"), ("object_score", "spatial_score"), ("clip_score", "spatial_score")]
fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False, layout="constrained")
for ax, (x, y) in zip(axes[0], panels):
    grid = response_grid(head, train, x, y).pivot(index=y, columns=x, values="probability")
    image = ax.contourf(grid.columns, grid.index, grid.to_numpy(), levels=np.linspace(0, 1, 21), cmap="vlag")
    if grid.to_numpy().min() < head.threshold < grid.to_numpy().max():
        ax.contour(grid.columns, grid.index, grid.to_numpy(), levels=[head.threshold], colors="black", linewidths=2)
    ax.set(xlabel=x, ylabel=y, title="others at their median" if len(head.features) > 2 else "")
fig.colorbar(image, ax=axes[0].tolist(), label="P(aligned)  (black line: decision threshold)")
plt.show()

# %% [markdown]
# Each score alone, moved from the bottom of its range to the top with the other two at
# their medians:

# %%
effects = input_effects(head, train)
display(effects.style.format({"p_at_0": "{:.3f}", "p_at_1": "{:.3f}", "effect": "{:+.3f}"}, precision=3))
top = effects.iloc[0]
display(Markdown(f"`{top['feature']}` moves the head the most: from {top['p_at_0']:.3f} to {top['p_at_1']:.3f}. "
                 f"`{effects.iloc[-1]['feature']}` moves it the least ({effects.iloc[-1]['effect']:+.3f})."))
