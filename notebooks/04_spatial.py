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
# # 04 · Spatial relations: do the boxes stand as the text says?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/04_spatial.ipynb)
#
# The third piece of evidence reads what the text says about *where* things are ("James
# sits on the couch", "a cup rests on the table", "Jack holds a cell phone") and checks it
# on the frame's boxes with geometry that has no pixel constants. This chapter measures how
# often the stories state such relations, checks the rules on the chain of thought's own
# boxes, compares them with the original study's rule on the detector's boxes, and saves
# the spatial evidence of every pair.
#
# **Splits shown:** the evidence is computed for every pair, but every table, figure and
# comparison below reads the train and validation splits only (the rules' constants are
# fixed in `helpers.spatial`, not tuned here); the test split is looked at once, from
# chapter 07 on.

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

ctx = start(profile, chapter="04_spatial")

# %% [markdown]
# ## The rules
#
# A relation is a phrase between two named things of one sentence: a tagged mention or a
# noun the lexicon maps to a COCO category, so untagged text works too. Phrases in which a
# person acts ("sits on", "holds") take the acting character as their subject. Each
# canonical relation has one geometric rule, and every threshold in it is a fraction of the
# boxes' sizes or of the image diagonal: scaling a frame and its boxes together never
# changes an answer.

# %%
import inspect

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from helpers import detection as det
from helpers import objects as obj
from helpers import spatial as sp

phrases = pd.DataFrame(
    [{"relation": r, "phrases": ", ".join(sp.RELATION_PHRASES.get(r, ())),
      "phrases with an acting person": ", ".join(sp.AGENT_PHRASES.get(r, ()))} for r in sp.RELATIONS]
).set_index("relation")
display(phrases.style)  # a Styler shows the whole lists, where a DataFrame would cut them short
thresholds = ["POSITION_MARGIN", "SUPPORT_MIN_X_OVERLAP", "CONTACT_TOLERANCE", "INSIDE_MIN_FRACTION",
              "NEAR_MAX_GAP", "NEAR_MAX_GAP_DIAGONAL", "DEPTH_MARGIN"]
display(pd.DataFrame({"value": [getattr(sp, t) for t in thresholds]}, index=thresholds))
print(inspect.getdoc(sp.relation_holds))

# %% [markdown]
# ## The frames, their detections and the oracle
#
# The detections are those of chapter 02, read back from its cache (no forward pass when
# that chapter has run). The chain of thought's boxes, mapped onto COCO categories, act as
# an oracle detector: where the rules meet the data without detector errors.

# %%
from helpers.ablations import oracle_frames
from helpers.data import load_study_data, pair_frames
from helpers.features import development, write_part

threshold = float(ctx.cfg["detector"]["score_threshold"])
study = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
stories, pairs = study.stories, study.pairs
frames = pair_frames(pairs, study.datasets)
_, run = det.profile_detections(ctx.cfg, ctx.paths, frames, device=ctx.device)
truth = oracle_frames(obj.ground_truth_frames(stories), run.frames)  # sizes and decoding status from the run

detected = pairs.merge(sp.spatial_features(pairs, run.frames, threshold=threshold, stories=stories), on="pair_id",
                       validate="one_to_one")
oracle = pairs.merge(sp.spatial_features(pairs, truth, threshold=threshold, stories=stories), on="pair_id",
                     validate="one_to_one")
for table in (detected, oracle):
    table["kind"] = table["negative_type"].where(table["label"] == 0, "positive")
dev_detected, dev_oracle = development(detected), development(oracle)  # what every table below shows
display(Markdown(f"{len(pairs):,} pairs over {len(run.frames):,} frames; {run.forward_passes:,} frames went through "
                 f"the detector in this chapter (the rest came from chapter 02's cache). Detections scoring at least "
                 f"{threshold} count."))

# %% [markdown]
# ## How often the text states a relation
#
# Over the positive train and validation pairs (each frame's own text): how many state a relation at all, how
# many state one between two things COCO has categories for, and which relations they are.
# A relation between things without a COCO category (a wall, a door) is stated but can
# never be checked.

# %%
stated = sp.relations_long(dev_detected)
positives = dev_detected[dev_detected["label"] == 1]
stated_pos = stated[stated["label"] == 1]
coco_pos = stated_pos[stated_pos["subject_category"].notna() & stated_pos["object_category"].notna()]
n_pos = max(len(positives), 1)
display(Markdown(
    f"{stated_pos['pair_id'].nunique() / n_pos:.1%} of the positive texts state at least one relation, "
    f"{coco_pos['pair_id'].nunique() / n_pos:.1%} at least one between two COCO things; "
    f"{len(stated_pos) / n_pos:.2f} relations per text on average."
))
display(stated_pos.assign(between_coco_things=stated_pos.index.isin(coco_pos.index))
        .groupby("relation").agg(stated=("pair_id", "size"), between_coco_things=("between_coco_things", "sum"))
        .sort_values("stated", ascending=False).T)
display(stated_pos["phrase"].str.lower().value_counts().head(12).rename("times stated").to_frame().T)

# %% [markdown]
# ## The rules on the chain of thought's boxes
#
# If the rules are right, the relations a frame's own text states should mostly hold on the
# frame's annotated boxes, and the statements a relation swap changed (left into right, on
# into under, ...) should mostly fail. Share of checked statements that hold, by relation:

# %%
oracle_stated = sp.relations_long(dev_oracle)
checked = oracle_stated[oracle_stated["status"].isin(["held", "failed"])].assign(held=lambda t: t["status"] == "held")
swapped = sp.edited_statements(oracle_stated)
swapped = swapped[swapped["status"].isin(["held", "failed"])].assign(held=lambda t: t["status"] == "held")
by_relation = pd.concat({
    "positives: held": checked[checked["label"] == 1].groupby("relation")["held"].mean(),
    "positives: checked": checked[checked["label"] == 1].groupby("relation").size(),
    "swapped statements: held": swapped.groupby("relation")["held"].mean(),
    "swapped statements: checked": swapped.groupby("relation").size(),
}, axis=1)
display(by_relation.style.format({c: "{:.1%}" for c in by_relation if c.endswith("held")} | {
    c: "{:,.0f}" for c in by_relation if c.endswith("checked")}, na_rep="-"))
pos_checked = checked[checked["label"] == 1]
display(Markdown(
    f"On the oracle's boxes, {pos_checked['held'].mean():.1%} of the {len(pos_checked):,} checkable statements of the "
    f"positive texts hold, against {swapped['held'].mean():.1%} of the {len(swapped):,} checkable swapped statements."
    if len(pos_checked) and len(swapped) else
    f"Checkable statements on the oracle's boxes: {len(pos_checked):,} in positive texts, {len(swapped):,} "
    "swapped ones: too few to compare."
))

# %% [markdown]
# ## How often the evidence says anything
#
# A pair's spatial score is the share of its checkable relations that hold; when none can be
# checked, the fallback is how close the frame's people are to the things the text names;
# when neither applies, the pair is flagged uninformative and its score set to a fixed
# placeholder rather than a value that would pass for evidence. Share of pairs by source of
# the score, on the detector's boxes and on the oracle's:

# %%
sources = pd.concat({
    boxes: pd.crosstab(table["kind"], table["spatial_source"], normalize="index")
    .reindex(columns=["relations", "proximity", "none"], fill_value=0)
    for boxes, table in (("detector", dev_detected), ("oracle", dev_oracle))
}, names=["boxes"])
display(sources.style.format("{:.1%}"))
display(Markdown(f"Uninformative pairs get spatial_score = {sp.UNINFORMATIVE_SCORE} with spatial_informative = False."))

# %% [markdown]
# ## The study's rule next to ours
#
# The original study scored a frame from fixed pairs of detector labels whose box centres
# lie closer than a fixed number of pixels, and gave a fixed middle score when none of its
# pairs was in the frame. It never reads the text, so a frame's positive and negative pairs
# always get the same score.

# %%
study_pairs = ", ".join(f"{s} + {'/'.join(o)}" for s, o in sp.STUDY_PAIRS)
no_pair = (dev_detected["study_spatial_score"] == sp.STUDY_NO_PAIR_SCORE).mean()
decoded = run.frames[run.frames["status"] == "ok"]
display(Markdown(
    f"The study's pairs: {study_pairs}; its distance threshold {sp.STUDY_MAX_DISTANCE_PX:.0f} px, which is "
    f"{sp.STUDY_MAX_DISTANCE_PX / ((decoded['width'] ** 2 + decoded['height'] ** 2) ** 0.5).median():.0%} of "
    f"the median frame diagonal here. COCO has no 'toy' label, so the last pair can never be found. "
    f"**{no_pair:.1%}** of the pairs get the study's no-pair score of {sp.STUDY_NO_PAIR_SCORE}; our evidence is "
    f"uninformative for {1 - dev_detected['spatial_informative'].mean():.1%} of them, and says so in its flag "
    f"(train and validation pairs)."
))

# %% [markdown]
# ROC-AUC of each score at telling the positives from each kind of negative, on the same
# train and validation pairs (at chance, a score has an AUC of one half):

# %%
def auc(table: pd.DataFrame, column: str) -> pd.Series:
    return obj.auc_by_negative_type(table, column).set_index("negative_type")["roc_auc"]


informative = dev_detected[dev_detected["spatial_informative"]]
oracle_informative = dev_oracle[dev_oracle["spatial_informative"]]
aucs = pd.concat({
    "study rule, all pairs": auc(dev_detected, "study_spatial_score"),
    "ours, all pairs": auc(dev_detected, "spatial_score"),
    "ours, informative pairs": auc(informative, "spatial_score"),
    "ours on oracle boxes, informative pairs": auc(oracle_informative, "spatial_score"),
}, axis=1)
display(aucs.style.format("{:.3f}", na_rep="-"))
if "relation_swap" in aucs.index:
    swap = aucs.loc["relation_swap"].map(lambda x: "not measurable (no such pairs)" if pd.isna(x) else f"{x:.3f}")
    display(Markdown(
        f"Against relation swaps, the negatives this evidence is built for, the study's rule reaches "
        f"{swap['study rule, all pairs']}; ours reaches {swap['ours, informative pairs']} on the informative pairs "
        f"with the detector's boxes and {swap['ours on oracle boxes, informative pairs']} with the oracle's."
    ))

# %% [markdown]
# ## What the checks look like
#
# Some checked relations drawn on their frames: the subject's box solid, the object's dashed,
# green when the relation held and red when it failed (blue: the proximity fallback). With
# the detector's boxes where it checked some relation, else with the oracle's.

# %%
with_checks = dev_detected[dev_detected["relations_checked"] > 0]
shown, source = ((with_checks, "detector") if len(with_checks)
                 else (dev_oracle[dev_oracle["relations_checked"] > 0], "oracle"))
if len(shown):
    sp.plot_relation_samples(frames, shown, n=4, title=f"Relations checked on the {source}'s boxes")
    plt.show()
else:
    display(Markdown("No relation could be checked in this run, on either kind of box."))

# %% [markdown]
# ## The evidence, saved
#
# One row per pair goes to the feature table: the score, whether it rests on anything, how
# many relations were checked and held, and the checks themselves as JSON (with the boxes
# used, for the explanations in the dashboards). The study's score travels along for the
# comparisons of later chapters, and so does our score on the oracle's boxes, for the
# ablations.

# %%
features = detected[["pair_id", *sp.SPATIAL_COLUMNS]].merge(
    oracle[["pair_id", "spatial_score"]].rename(columns={"spatial_score": "spatial_score_oracle"}), on="pair_id")
path = write_part(ctx.paths, "spatial", features)
display(Markdown(f"Wrote {len(features):,} rows to `{path.relative_to(ctx.paths.root.parent)}`."))
display(features[features["pair_id"].isin(dev_detected["pair_id"])].head())  # train and validation rows
