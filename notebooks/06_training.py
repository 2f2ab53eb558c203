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
# ensemble. Every model's decision threshold is tuned on the validation split; the test
# split is left for chapter 07.

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
# ## The training pairs
#
# Stories, not pairs, were assigned to the splits (chapter 01), so no story has pairs on
# both sides of a split. Every model below sees the same pairs: those with a value in every
# feature.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from helpers.features import load_features
from helpers.fusion import FEATURE_SETS, complete_rows

features = load_features(ctx.paths, required=FEATURE_SETS["study"])
table, holes = complete_rows(features, FEATURE_SETS["extended"])
counts = table.groupby(["split", "label"]).size().unstack("label").rename(columns={0: "misaligned", 1: "aligned"})
display(counts)
if holes:
    display(Markdown(f"Set aside: {len(features) - len(table):,} pairs with a missing feature ({holes})."))

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
#   (`helpers.training.STUDY_EPOCHS`), the last one kept.
# - **fusion_extended**: the extended inputs (chapter 05), early stopping.

# %%
from helpers.training import DEFAULT_RUN, STUDY_EPOCHS, STUDY_RUN, run_summary, settings_from_profile, train_fusion

runs = {
    DEFAULT_RUN: settings_from_profile(ctx.cfg, "study"),
    STUDY_RUN: settings_from_profile(ctx.cfg, "study", max_epochs=STUDY_EPOCHS, patience=None),
    "fusion_extended": settings_from_profile(ctx.cfg, "extended"),
}
results = {name: train_fusion(table, settings, ctx.paths.checkpoints / name) for name, settings in runs.items()}
summary = run_summary(results)
display(summary.style.format(precision=4))
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
from helpers.training import plot_history

plot_history(results)
plt.show()

# %%
early, fixed = summary.loc[DEFAULT_RUN], summary.loc[STUDY_RUN]
display(Markdown(
    f"The two runs share their first {STUDY_EPOCHS} epochs (same seed, same batches), so the difference is what "
    f"training on bought: `{DEFAULT_RUN}` ran {early['epochs_trained']} epochs and kept epoch {early['kept_epoch']}, "
    f"with a validation loss of {early['val_loss']:.4f} against {fixed['val_loss']:.4f} after epoch {STUDY_EPOCHS} "
    f"(validation macro-F1 at even odds: {early['val_f1']:.3f} against {fixed['val_f1']:.3f})."))

# %% [markdown]
# ## Baselines on the same features and splits
#
# - `object_score_only`, `clip_score_only`, `spatial_score_only`: one score as the
#   prediction, with its own threshold;
# - `logistic_regression`: a linear model of the three standardised scores;
# - `gradient_boosting`: scikit-learn's `HistGradientBoostingClassifier`, the tree ensemble
#   the original study listed as future work.
#
# Every threshold, the heads' included, maximises macro-F1 on the validation split.
# Macro-F1 weighs both classes equally, so it does not reward calling everything aligned
# when positives dominate a split; accuracy is the alternative the training code accepts.

# %%
from helpers.training import fit_baselines, head_scorer, validation_table

baselines = fit_baselines(table, "study", seed=ctx.cfg["seed"])
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
# - `text_only`: TF-IDF word and character n-grams with a logistic regression, the same
#   recipe as the filter that chose the negatives in chapter 01;
# - `clip_text_only`: a logistic regression on CLIP's embedding of the text (the mean of its
#   sentences' embeddings, from chapter 03's cache), a blind model the filter never used, so it
#   is not at chance by construction.
#
# Either one above chance on a kind of negative says that kind leaks through its text.

# %%
from helpers.clip import load_clip
from helpers.semantics import text_embeddings
from helpers.training import fit_blind_controls

clip = load_clip(ctx.cfg["clip"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"], device=ctx.device)
texts = list(dict.fromkeys(table["text"]))
vectors = dict(zip(texts, text_embeddings(clip, texts, ctx.paths.cache / "clip",
                                          batch_size=int(ctx.cfg["clip"]["batch_size"]))))
del clip  # one large model at a time
blind = fit_blind_controls(table, vectors, seed=ctx.cfg["seed"])
scorers += blind
display(validation_table(table, blind).style.format(precision=3))

# %% [markdown]
# ## Predictions for chapter 07
#
# Every pair of every split, scored by every model, with the model's threshold and
# decision: `predictions.parquet` in the profile's output folder.

# %%
from helpers.training import predict, save_predictions

predictions = predict(table, scorers)
path = save_predictions(ctx.paths, predictions)
display(Markdown(f"Wrote {len(predictions):,} predictions ({len(scorers)} models × {len(table):,} pairs) to "
                 f"`{path.relative_to(ctx.paths.root.parent)}`."))
