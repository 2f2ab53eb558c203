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
# # 07 · Evaluation: the test split, with intervals by story
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/07_evaluation.ipynb)
#
# Every model of chapter 06 on the test split, at the threshold it was given on the
# validation split: accuracy, precision, recall, macro-F1, ROC-AUC and PR-AUC, overall and
# for each kind of negative. Pairs of one story share frames and characters, so they are
# not independent draws: each interval is a percentile bootstrap interval that resamples
# whole stories. Every number here is written to `metrics.json`, where the later chapters read
# them.

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
# ## The metrics
#
# A pair is called aligned when its score reaches the model's threshold. Precision and
# recall are those of the aligned class; macro-F1 averages the F1 of both classes; ROC-AUC
# and PR-AUC (average precision) use the scores themselves, with no threshold.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from helpers.evaluation import evaluate, summary_table, threshold_rule, write_metrics
from helpers.training import DEFAULT_RUN, THRESHOLD_METRIC, load_predictions

predictions = load_predictions(ctx.paths)
metrics = evaluate(predictions, profile=ctx.profile, n_resamples=int(ctx.cfg["bootstrap"]["n_resamples"]),
                   seed=int(ctx.cfg["seed"]), primary_model=DEFAULT_RUN, threshold_rule=threshold_rule(THRESHOLD_METRIC))
write_metrics(ctx.paths.metrics_json, metrics)
n = metrics["n"]
display(Markdown(f"Test split: {n['pairs']:,} pairs from {n['stories']:,} stories, {n['positives']:,} aligned; "
                 "misaligned by kind: " + ", ".join(f"{k} {v:,}" for k, v in n["negatives"].items()) + "."))

# %% [markdown]
# ## Every model on the test split
#
# Each cell: the value on the whole test split, then [low, high], the interval over the
# story resamples.

# %%
boot = metrics["bootstrap"]
display(Markdown(f"Intervals: {boot['confidence']:.0%} percentile intervals over {boot['n_resamples']:,} "
                 f"resamples of the test stories (seed {boot['seed']})."))
display(summary_table(metrics))

# %% [markdown]
# Is the fusion head better than CLIP alone, than the tree ensemble, than the study's fixed
# epochs? Both models of a comparison are measured on the same story resamples, so
# their difference gets its own (paired) interval; one that excludes zero means the test
# split tells the two apart.

# %%
from helpers.evaluation import difference_table, excludes_zero, format_estimate
from helpers.training import STUDY_RUN

models, differences = metrics["models"], metrics["differences"]
display(difference_table(metrics))
lines = [f"The fusion head reaches macro-F1 {format_estimate(models[DEFAULT_RUN]['overall']['macro_f1'])} and ROC-AUC "
         f"{format_estimate(models[DEFAULT_RUN]['overall']['roc_auc'])} (value [{boot['confidence']:.0%} interval]). "
         "Against:"]
for other in ("clip_score_only", "gradient_boosting", STUDY_RUN):
    d = differences[other]["macro_f1"]
    lines.append(f"- `{other}` (macro-F1 {format_estimate(models[other]['overall']['macro_f1'])}): difference "
                 f"{format_estimate(d)}, " + ("the split tells them apart." if excludes_zero(d)
                                              else "the interval includes zero: the split does not tell them apart."))
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## By kind of negative
#
# Each group holds every aligned pair of the test split and the misaligned pairs of one
# kind: another story's text, another frame of the same story, an object swapped for
# another, a spatial relation swapped. ROC-AUC says how well a model ranks the aligned
# pairs above that kind of negative, whatever the threshold.

# %%
from helpers.evaluation import plot_by_negative_type

compared = [DEFAULT_RUN, "clip_score_only", "logistic_regression", "gradient_boosting"]
plot_by_negative_type(metrics, "roc_auc", compared)
plt.show()
for group in models[DEFAULT_RUN]["by_negative_type"]:
    display(Markdown(f"**{group}**"))
    display(summary_table(metrics, group).loc[compared])

# %%
by_type = {g: v["roc_auc"]["value"] for g, v in models[DEFAULT_RUN]["by_negative_type"].items()
           if v["roc_auc"]["value"] is not None}
hardest, easiest = min(by_type, key=by_type.get), max(by_type, key=by_type.get)
display(Markdown(f"For the fusion head the hardest negatives are `{hardest}` (ROC-AUC {by_type[hardest]:.3f}) "
                 f"and the easiest `{easiest}` ({by_type[easiest]:.3f})."))

# %% [markdown]
# ## Errors, curves and calibration
#
# The confusion matrices at the validation-tuned thresholds; then the ROC and
# precision-recall curves and the calibration curve (how often pairs given a probability
# near *p* are really aligned). The single scores are not probabilities, so their
# calibration curves only show where their values sit.

# %%
from helpers.evaluation import plot_confusion, plot_curves

plot_confusion(metrics, [DEFAULT_RUN, "fusion_3_epochs", "clip_score_only"])
plt.show()
plot_curves(predictions, [DEFAULT_RUN, "fusion_3_epochs", "fusion_extended", "clip_score_only", "logistic_regression",
                          "gradient_boosting"])
plt.show()

# %% [markdown]
# ## The evidence, aligned against misaligned
#
# The distribution of each score on the test split, for the aligned pairs and each kind of
# negative. A score that separates a kind of negative from the aligned pairs shows two
# distributions apart; one that does not shows them on top of each other.

# %%
from helpers.evaluation import plot_evidence_by_label
from helpers.features import load_features
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
# `metrics.json` holds everything above; its layout is documented in
# `helpers/evaluation.py` (`METRICS_SCHEMA`) and in the README.

# %%
print(ctx.paths.metrics_json)
