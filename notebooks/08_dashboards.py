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
# # 08 · Dashboards: the verdicts, one pair at a time
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/08_dashboards.ipynb)
#
# Metrics summarise; examples explain. This chapter shows test pairs the fusion head got
# right and wrong, in the four cells of the confusion matrix, each with everything the head
# saw: the frame and its boxes, the text with what it names marked as found or missing, the
# word a negative pair swapped in, and the three evidence scores behind the probability.
# It ends with the headline results of chapter 07 on one figure.

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

ctx = start(profile, chapter="08_dashboards")

# %% [markdown]
# ## The test pairs in four groups
#
# The fusion head of chapter 06 (early stopping, the study's three scores) calls a pair
# aligned when its probability reaches the threshold tuned on the validation split. Against
# the true labels that puts every test pair in one of four groups. The gallery shows, for
# each group, the pairs furthest from the threshold: the head's most confident verdicts,
# and so, among the errors, its most confident mistakes.

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from helpers import dashboards as db
from helpers.training import DEFAULT_RUN, load_predictions

per_group = 2 if ctx.is_smoke else 4  # cards per group
table = db.gallery_table(load_predictions(ctx.paths), DEFAULT_RUN)
counts = table["outcome"].value_counts().reindex(list(db.OUTCOMES), fill_value=0)
display(counts.rename(index=db.OUTCOME_TITLES).rename("test pairs").to_frame())
by_type = (table[table["label"] == 0].groupby("negative_type")["outcome"].value_counts().unstack(fill_value=0)
           .reindex(columns=["TN", "FP"], fill_value=0).rename(columns={"TN": "rejected (TN)", "FP": "accepted (FP)"}))
display(by_type)
display(Markdown(
    f"Of {len(table):,} test pairs the head gets {counts['TP'] + counts['TN']:,} right "
    f"({(counts['TP'] + counts['TN']) / len(table):.1%}); it accepts {counts['FP']:,} misaligned pairs and rejects "
    f"{counts['FN']:,} aligned ones. The table above splits the misaligned pairs by how they were made."))

# %% [markdown]
# ## The gallery
#
# Each card is one pair. **Frame**: the detector's boxes at the profile's score threshold
# (solid, with their scores) and the chain of thought's boxes mapped onto COCO categories
# (dashed). **Text**: every tagged mention, green when the detector found the COCO category
# it names, red when it did not, grey when it names nothing a COCO detector reports; the
# words a negative pair swapped in are amber and underlined (hover for what they
# replaced). Under the text, the relations the spatial evidence read and what the boxes
# said about them. **Bars**: the three evidence scores and P(aligned), with the decision
# threshold as a black tick.

# %%
from helpers import detection as det
from helpers import objects as obj
from helpers.data import load_study_data, pair_frames
from helpers.features import load_features

data = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
sample = db.sample_gallery(table, per_group=per_group, seed=ctx.cfg["seed"])
frames = pair_frames(sample, data.datasets)
_, run = det.profile_detections(ctx.cfg, ctx.paths, frames, device=ctx.device)  # chapter 02's cache: no forward pass
cards = db.gallery_cards(sample, load_features(ctx.paths), frames, run.frames, obj.ground_truth_frames(data.stories),
                         data.stories, threshold=float(ctx.cfg["detector"]["score_threshold"]))
display(HTML(db.gallery_html(cards)))

# %% [markdown]
# ## A random sample of negatives of every kind
#
# The gallery above shows extremes. These cards are drawn at random (seeded) among the test
# negatives of each kind, so they show what the negatives are really like, including any
# that are positives in disguise: an object swapped in that the frame shows after all.

# %%
random_negatives = db.sample_negatives(table, per_type=per_group, seed=ctx.cfg["seed"])
random_frames = pair_frames(random_negatives, data.datasets)
_, random_run = det.profile_detections(ctx.cfg, ctx.paths, random_frames, device=ctx.device)
random_cards = db.gallery_cards(random_negatives, load_features(ctx.paths), random_frames, random_run.frames,
                                obj.ground_truth_frames(data.stories), data.stories,
                                threshold=float(ctx.cfg["detector"]["score_threshold"]))
display(HTML(db.gallery_html(random_cards)))

# %% [markdown]
# ## The headline results on one figure
#
# From `metrics.json` (chapter 07): (a) the head's test metrics, (b) every model's ROC-AUC,
# best first, (c) the head's paired score against each kind of negative, beside the blind
# `text_only` control, (d) its confusion matrix. Every bar carries its 95% interval from
# resampling the test split's id blocks.

# %%
from helpers.evaluation import format_estimate
from helpers.io import read_json

metrics = read_json(ctx.paths.metrics_json)
if metrics is None:
    raise FileNotFoundError(f"{ctx.paths.metrics_json} is missing: run chapter 07 (evaluation) first")
db.summary_dashboard(metrics)
plt.show()
auc = {name: model["overall"]["roc_auc"] for name, model in metrics["models"].items()}
ranked = sorted(auc, key=lambda name: -(auc[name]["value"] or 0))
head = metrics["primary_model"]
display(Markdown(
    f"Best ROC-AUC on the test split: `{ranked[0]}`, {format_estimate(auc[ranked[0]])}; the head (`{head}`) reaches "
    f"{format_estimate(auc[head])}, rank {ranked.index(head) + 1} of {len(ranked)} models."))
