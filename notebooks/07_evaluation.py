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
# above its negative? Pooled metrics (accuracy, precision, recall, macro-F1, ROC-AUC, PR-AUC)
# stay beside it. Pairs of one id block share a movie, its people and its places, so they are
# not independent draws: each interval is a percentile bootstrap interval that resamples
# whole id blocks, the unit the split was made of. Blind controls say how much of each
# verdict the text alone could decide. Every number here is written to `metrics.json`, where
# the later chapters read them.

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
# ## A control first: the text against a stranger's frame
#
# If the primary head scored each test text against a frame of *another* id block, nothing
# in the image could tell a frame's own text from its negative: whatever ranking remains is
# decided by the text alone. Its paired score and ROC-AUC (0.5 = the text decides nothing) are
# the `shuffled_frames` control. The evidence is computed by the same function the
# verifier and chapter 09 use (`helpers.ablations.score_pairs`), from chapter 02's and 03's
# caches (the stranger frames are test frames, already seen).

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from helpers import ablations as ab
from helpers.clip import load_clip
from helpers.data import load_study_data, pair_frames
from helpers import detection as det
from helpers import objects as obj
from helpers.detection import load_detector
from helpers.evaluation import shuffled_frame_pairs
from helpers.features import load_features
from helpers.training import DEFAULT_RUN, default_checkpoint, load_head, load_predictions

predictions = load_predictions(ctx.paths)
head = load_head(default_checkpoint(ctx.paths))
test_pairs = load_features(ctx.paths).set_index("pair_id").loc[
    predictions.loc[(predictions["model"] == DEFAULT_RUN) & (predictions["split"] == "test"), "pair_id"]].reset_index()
shuffled = shuffled_frame_pairs(test_pairs, seed=int(ctx.cfg["seed"]))
data = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
frames = pair_frames(shuffled, data.datasets)
det_cfg = ctx.cfg["detector"]
detector = load_detector(det_cfg["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"], device=ctx.device)
clip = load_clip(ctx.cfg["clip"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"], device=ctx.device)
scored = ab.score_pairs(shuffled, frames, detector=detector, clip=clip, stories=data.stories, cfg=ctx.cfg,
                        cache_dir=ctx.paths.cache)
own_run = det.detect_frames(detector, pair_frames(test_pairs, data.datasets), ctx.paths.cache / det.CACHE_FILE,
                            min_size=int(det_cfg["min_size"]), batch_size=int(det_cfg["batch_size"]))  # cached
hidden = obj.hidden_positives(test_pairs, own_run.frames)  # label noise on the test split (chapter 02: train, val)
del detector, clip
shuffled_rows = scored.assign(story_id=scored["own_story_id"], frame=scored["own_frame"],
                              score=head.predict_proba(scored))
display(Markdown(f"{len(shuffled_rows):,} test pairs re-scored against a frame of another id block."))

# %% [markdown]
# A second control reads only the words an edit changed. For each test frame whose negative is an
# object or relation swap, the masked language model of chapter 01 scores the replaced words in
# the frame's own text and the new words in the edited text (log-probability in context). The
# filter that chose the negatives never used this model's judgement of the whole edit, so this
# control is not at chance by construction: above 0.5, the edit reads as the less plausible
# text.

# %%
from helpers.evaluation import swap_plausibility_rows
from helpers.mlm import load_mlm

mlm = load_mlm(ctx.cfg["mlm"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"], device=ctx.device)
plausibility_rows = swap_plausibility_rows(test_pairs, mlm, ctx.paths.cache / "mlm",
                                           batch_size=int(ctx.cfg["mlm"]["batch_size"]))
del mlm
display(Markdown(f"{len(plausibility_rows) // 2:,} test frames with a swap negative scored by the language model"
                 + (f"; {plausibility_rows.attrs['unlocated']} edits could not be located in place and are left out."
                    if plausibility_rows.attrs["unlocated"] else ".")))

# %% [markdown]
# ## The metrics
#
# A pair is called aligned when its score reaches the model's threshold. Precision and
# recall are those of the aligned class; macro-F1 averages the F1 of both classes; ROC-AUC
# and PR-AUC (average precision) use the scores themselves, with no threshold. The paired
# score needs no threshold either: 1 when a frame's own text scores above its negative, 0.5
# on a tie, 0 otherwise, averaged over frames.

# %%
from helpers.evaluation import evaluate, summary_table, threshold_rule, write_metrics
from helpers.training import THRESHOLD_METRIC

controls = {"shuffled_frames": (f"`{DEFAULT_RUN}` scoring each test text against a frame of another id block",
                                shuffled_rows)}
if len(plausibility_rows):
    controls["mlm_plausibility"] = ("the masked language model's log-probability of the changed words in context "
                                    "(own words against the edited ones; swap negatives only)", plausibility_rows)
metrics = evaluate(predictions, profile=ctx.profile, n_resamples=int(ctx.cfg["bootstrap"]["n_resamples"]),
                   seed=int(ctx.cfg["seed"]), primary_model=DEFAULT_RUN, threshold_rule=threshold_rule(THRESHOLD_METRIC),
                   block_size=int(ctx.cfg["data"]["block_size"]), controls=controls)
write_metrics(ctx.paths.metrics_json, metrics)
n = metrics["n"]
display(Markdown(f"Test split: {n['pairs']:,} pairs from {n['frames']:,} frames, {n['stories']:,} stories in "
                 f"{n['blocks']:,} id blocks; misaligned by kind: "
                 + ", ".join(f"{k} {v:,}" for k, v in n["negatives"].items()) + "."))
display(pd.DataFrame({split: {"stories": c["stories"], "id blocks": c["blocks"], **c["negatives"]}
                      for split, c in metrics["n_by_split"].items()}).rename_axis("negatives by split"))

# %% [markdown]
# ## Paired scores: each frame's own text against its negative
#
# The headline per kind of negative. Unlike a pooled ROC-AUC, it compares each frame with its
# own counterfactual, so it does not mix "which frames could receive this kind of negative"
# with "did the model notice the change". 0.5 is chance.

# %%
from helpers.evaluation import paired_table, plot_by_negative_type

boot = metrics["bootstrap"]
display(Markdown(f"Intervals: {boot['confidence']:.0%} percentile intervals over {boot['n_resamples']:,} "
                 f"resamples of the test split's id blocks (blocks of {boot['block_size']} neighbouring story ids; "
                 f"seed {boot['seed']}). `[no interval]`: fewer than {boot['min_defined_share']:.0%} of the resamples "
                 "define the metric (they lack a class or that kind of negative); `undefined`: the split itself "
                 "does not define it."))
display(paired_table(metrics))
compared = [DEFAULT_RUN, "clip_score_only", "logistic_regression", "text_only", "clip_text_only"]
plot_by_negative_type(metrics, "paired", compared)
plt.show()

# %% [markdown]
# ## Blind controls
#
# Four ways to ask whether the text alone gives the answer away: the two blind models of
# chapter 06 (`text_only`, `clip_text_only`), evaluated like every other model, the primary
# head against a stranger's frame, and the language model's plausibility of the swapped words. The goal for the negatives: on real data, every
# blind control near 0.5 for every kind (ROC-AUC within 0.40-0.60, its interval covering 0.5),
# with the fusion head's results next to it. The smoke profile computes all of this on
# synthetic data with random weights, so its numbers mean nothing.

# %%
from helpers.evaluation import control_table

blind_models = ["text_only", "clip_text_only"]
display(paired_table(metrics).loc[blind_models])
display(summary_table(metrics).loc[blind_models, ["roc_auc"]])
display(control_table(metrics))
display(Markdown(
    f"Label noise on the test split: the detector finds the swapped-in category with a score of at least "
    f"{obj.LABEL_NOISE_SCORE} in {int(hidden['hidden'].sum())} of {len(hidden)} object-swap negatives "
    f"({hidden['hidden'].mean():.1%}): those may be positives in disguise (chapter 02 gives train and validation)."
    if len(hidden) else "The test split has no object-swap negatives."))

# %% [markdown]
# ## Every model on the test split, pooled
#
# Each cell: the value on the whole test split, then [low, high], the interval over the
# id-block resamples.

# %%
display(summary_table(metrics))

# %% [markdown]
# Is the fusion head better than CLIP alone, than the tree ensemble, than the study's fixed
# epochs? Both models of a comparison are measured on the same block resamples, so
# their difference gets its own (paired) interval; one that excludes zero means the test
# split tells the two apart.

# %%
from helpers.evaluation import difference_table, excludes_zero, format_estimate, paired_difference_table
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
# ## Pooled, by kind of negative
#
# Each group holds every aligned pair of the test split and the misaligned pairs of one
# kind: another story's text, another frame of the same story, an object swapped for
# another, a spatial relation swapped. Pooled ROC-AUC says how well a model ranks all
# aligned pairs above that kind of negative; it mixes in which frames received that kind.

# %%
plot_by_negative_type(metrics, "roc_auc", compared)
plt.show()
for group in models[DEFAULT_RUN]["by_negative_type"]:
    display(Markdown(f"**{group}**"))
    display(summary_table(metrics, group).loc[compared])

# %%
by_type = {g: v["value"] for g, v in models[DEFAULT_RUN]["paired"].items() if g != "all" and v["value"] is not None}
if by_type:
    hardest, easiest = min(by_type, key=by_type.get), max(by_type, key=by_type.get)
    display(Markdown(f"By the paired score, the fusion head's hardest negatives are `{hardest}` "
                     f"({by_type[hardest]:.3f}) and the easiest `{easiest}` ({by_type[easiest]:.3f})."))

# %% [markdown]
# ## Errors, curves and calibration
#
# The confusion matrices at the validation-tuned thresholds; then the ROC and
# precision-recall curves and the calibration curve (how often pairs given a probability
# near *p* are really aligned), drawn only for the models whose score is a probability
# (the single scores are not).

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
