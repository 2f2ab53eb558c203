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
# # 02 · Objects: what the detector finds, and what the text needs
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/02_detection.ipynb)
#
# The first piece of evidence is the plainest: if the text says there is a phone on the
# table, a detector trained on COCO should find a phone and a table in the frame. This
# chapter runs torchvision's Faster R-CNN over every frame the pairs use, checks it against
# the boxes of the dataset's chain of thought, chooses nothing by eye (the input size is
# measured, not assumed), and turns "what the text needs" against "what the frame shows"
# into an object score for every pair.
#
# **Splits shown:** the object score is computed for every pair, but every table, figure
# and choice below reads the train and validation splits only; the test split is looked
# at once, from chapter 07 on.

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

ctx = start(profile, chapter="02_detection")

# %% [markdown]
# ## The detector and the frames
#
# The profile names the detector's weights: the COCO weights torchvision publishes, a
# weights file of our own, or (in the smoke profile) the same network randomly initialised,
# saved to disk and loaded back like any weights file. Every frame that appears in a pair
# goes through the network once; its detections are cached on disk, so rerunning this
# chapter, or reading the detections in later chapters, costs no forward pass. The cache
# keeps every detection above a low floor, so the score threshold below can change freely.
# A frame that cannot be decoded is skipped and counted here, never silently dropped.

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from helpers import detection as det
from helpers.data import load_study_data, pair_frames
from helpers.features import development, development_stories, write_part

cfg = ctx.cfg["detector"]
threshold = float(cfg["score_threshold"])
study = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
stories, pairs = study.stories, study.pairs
frames = pair_frames(pairs, study.datasets)
detector, run = det.profile_detections(ctx.cfg, ctx.paths, frames, device=ctx.device)
decoded = run.frames[run.frames["status"] == "ok"]
dev_stories = development_stories(pairs)  # train and validation: what every table below shows
dev_run_frames = run.frames[run.frames["story_id"].astype(str).isin(dev_stories)]

display(Markdown(
    f"**Weights:** {detector.source}.  \n"
    f"**Frames:** {len(run.frames):,} used by {len(pairs):,} pairs; {run.forward_passes:,} went through the network in "
    f"this run (the rest came from the cache); frames that could not be decoded and were skipped: "
    f"{len(run.corrupt):,}. "
    f"Frames are resized to a shorter side of {cfg['min_size']} pixels (they are "
    f"{decoded['height'].median():.0f} pixels high); the cache keeps detections scoring at least "
    f"{det.CACHE_SCORE_FLOOR}, the evidence below uses those scoring at least {threshold}."
))
if len(run.corrupt):
    display(run.corrupt)

# %% [markdown]
# ## The oracle: the chain of thought's own boxes
#
# Each frame's chain of thought lists its characters and objects with a bounding box. Mapped
# onto COCO's categories (characters through their description, so a robot is not a person;
# objects through the lexicon), they make a second "detector" with perfect confidence: the
# reference the real detector is measured against, and an upper bound for the object
# evidence. Entities that COCO has no category for (walls, doors, blankets) drop out.

# %%
truth = det.ground_truth_frames(stories)
dev_truth = truth[truth["story_id"].astype(str).isin(dev_stories)]
truth_long = det.detections_long(dev_truth)
display(Markdown(
    f"In the train and validation frames, the chain of thought gives a box to {dev_truth['n_entities'].sum():,} "
    f"entities in {len(dev_truth):,} frames; {len(truth_long):,} of them "
    f"({len(truth_long) / max(dev_truth['n_entities'].sum(), 1):.0%}) fall in a COCO category, "
    f"spread over {truth_long['label'].nunique()} categories."
))
display(truth_long["label"].value_counts().rename("boxes").to_frame().head(12).T)

# %% [markdown]
# The frames with the most chain-of-thought boxes, those boxes dashed and the detector's
# solid (its most confident detections at or above the score threshold):

# %%
det.plot_detection_samples(frames, dev_run_frames, dev_truth, threshold=threshold, n=4)
plt.show()

# %% [markdown]
# ## How many of the chain of thought's entities the detector finds
#
# A box of the chain of thought counts as found when a detection of the same category,
# at or above the score threshold, overlaps it enough; each detection can find one box only.
# Recall per category over the train and validation frames, most frequent categories first:

# %%
recall = det.detection_recall(dev_run_frames, dev_truth, threshold=threshold)
display(Markdown(f"A box counts as found at an IoU of at least {det.IOU_MATCH}. Over all categories the detector "
                 f"finds {recall['recall'].iloc[-1]:.1%} of the {recall['ground_truth'].iloc[-1]:,} boxes."))
display(recall.style.format({"recall": "{:.1%}"}, na_rep="-").hide(axis="index"))

# %% [markdown]
# ## Input size: recall against time
#
# torchvision resizes every image so that its shorter side reaches `min_size` before the
# network sees it (the longer side is capped), while StoryReasoning frames are small. Larger
# inputs help a detector with small objects and cost time roughly in proportion to the
# pixels. The same frames (the first of the train and validation splits) at each size of the
# profile's sweep, on this run's device (the times are those measured when each size was
# first computed). The profile's `min_size` was chosen for its cost; this table is where
# real data confirm it, or call for a larger input.

# %%
dev_frames = sorted((key, data) for key, data in frames.items() if str(key[0]) in dev_stories)
sweep_frames = dict(dev_frames[: cfg["sweep_frames"]])
sweep = det.min_size_sweep(detector, sweep_frames, dev_truth, ctx.paths.cache / det.CACHE_FILE,
                           sizes=cfg["min_size_sweep"], threshold=threshold, batch_size=cfg["batch_size"])
display(sweep.style.format({"input_height": "{:.0f}", "seconds_per_frame": "{:.2f}", "recall": "{:.1%}"})
        .hide(axis="index"))
det.plot_min_size_sweep(sweep)
plt.show()
if sweep["recall"].notna().any():
    best = sweep.loc[sweep["recall"].idxmax()]
    display(Markdown(f"On these {len(sweep_frames)} frames the best recall, {best['recall']:.1%}, comes at min_size "
                     f"{int(best['min_size'])} for {best['seconds_per_frame']:.2f} s per frame; this profile runs at "
                     f"min_size {cfg['min_size']}."))
    display(Markdown(det.min_size_note(sweep, cfg["min_size"], profile=ctx.profile)))
else:
    display(Markdown(f"These {len(sweep_frames)} frames hold no box of a COCO category: recall cannot be measured."))

# %% [markdown]
# ## What each text needs, and the object score
#
# A text needs the COCO categories it names: tagged mentions through their words (an
# edited mention needs what its new words name), characters through their chain-of-thought
# description (a person unless it says otherwise), and any other noun of the text through
# the same lexicon, so plain text works too. The **object score** of a pair is the mean,
# over the categories the text needs, of the best detection score of that category in the
# frame (zero when it is not detected): a confidence-weighted share of what the text needs
# that the frame shows. A text that names no COCO thing gives no evidence either way; it is
# flagged as uninformative and its score set to a fixed placeholder, so the fusion head can
# tell "nothing to check" from "nothing found". The same score against the oracle's boxes
# (`object_score_oracle`) shows what a perfect detector would make of the same texts.

# %%
objects = det.object_features(pairs, run.frames, stories, threshold=threshold, oracle=truth)
scored = development(pairs[["pair_id", "label", "negative_type", "split"]]).merge(objects, on="pair_id")
display(Markdown(
    f"{scored['object_informative'].mean():.1%} of the train and validation pairs name at least one COCO category; "
    f"the others get object_score = {det.UNINFORMATIVE_SCORE} with object_informative = False. By kind of pair:"
))
display(scored.assign(kind=scored["negative_type"].where(scored["label"] == 0, "positive"))
        .groupby("kind")[["object_informative", "object_score", "object_score_oracle"]].mean()
        .style.format("{:.2f}"))

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), sharey=True)
informative = scored[scored["object_informative"]]
det.plot_score_by_group(informative, "object_score", ax=axes[0]).set_title("Detector (informative pairs)")
det.plot_score_by_group(informative, "object_score_oracle", ax=axes[1]).set_title("Oracle (informative pairs)")
plt.show()

# %% [markdown]
# How well the object score alone tells positives from each kind of negative: ROC-AUC of
# the positives against that type's negatives, over all train and validation pairs (the
# uninformative ones included at their placeholder score) and over the informative ones only.
# The oracle's column on object swaps replays how they were made: the swapped-in object was
# chosen as a category the same annotations do not place in the frame, so the oracle cannot
# find it by construction, whatever the frame shows. Its AUC there measures the labelling
# rule, not headroom a better detector could reach (chapter 09 leaves it out).

# %%
auc = pd.concat({
    name: det.auc_by_negative_type(table, column).set_index("negative_type")["roc_auc"]
    for name, table, column in [("detector, all train+val pairs", scored, "object_score"),
                                ("detector, informative", informative, "object_score"),
                                ("oracle, informative", informative, "object_score_oracle")]
}, axis=1)
display(auc.style.format("{:.3f}", na_rep="-"))
display(Markdown(
    f"A score that ranks at random has an AUC of {0.5}. Against object swaps, the negative this evidence is "
    f"built for, the detector reaches an AUC of {auc.loc['object_swap', 'detector, informative']:.3f} on "
    f"informative pairs and the oracle "
    f"{auc.loc['object_swap', 'oracle, informative']:.3f}."
    if "object_swap" in auc.index else "This run has no object-swap negatives."
))

# %% [markdown]
# ## Negatives that may be positives
#
# An object swap puts in a COCO category that the frame's annotations do not contain. The
# annotations can miss things, so the frame may show that object after all: then the
# "negative" is a positive. How often the detector finds the swapped-in category with high
# confidence (`helpers.detection.LABEL_NOISE_SCORE`) estimates that label noise, per split
# (train and validation here; chapter 07 gives the test split's).

# %%
hidden = det.hidden_positives(development(pairs), run.frames)
if len(hidden):
    display(hidden.groupby("split").agg(object_swaps=("hidden", "size"), detected_confidently=("hidden", "sum"),
                                        share=("hidden", "mean")).style.format({"share": "{:.1%}"}))
    display(Markdown(f"A detection scoring at least {det.LABEL_NOISE_SCORE} counts. Most often put in and found: "
                     + (", ".join(f"`{c}` ({n})" for c, n in hidden[hidden["hidden"]]["category"].value_counts()
                                  .head(5).items()) or "none") + "."))
else:
    display(Markdown("This run has no object swaps in train and validation."))

# %% [markdown]
# ## The evidence, saved
#
# One row per pair goes to the feature table the fusion chapters read; the lists of needed,
# found (with their boxes, for the explanations in the dashboards) and missing categories
# travel along as JSON. The oracle's score stays here: the ablations recompute it.

# %%
path = write_part(ctx.paths, "objects", objects[["pair_id", *det.OBJECT_COLUMNS]])
display(Markdown(f"Wrote {len(objects):,} rows to `{path.relative_to(ctx.paths.root.parent)}`."))
display(objects.loc[objects["pair_id"].isin(scored["pair_id"]), ["pair_id", *det.OBJECT_COLUMNS]].head())  # train, val
