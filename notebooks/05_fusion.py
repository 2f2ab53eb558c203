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
# ## The head
#
# A multilayer perceptron with two hidden layers, as the original study built it:
# `Linear → ReLU → Dropout → Linear → ReLU → Linear → Sigmoid` (sizes printed below). Its
# input is a handful of numbers per pair, so it is tiny.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from helpers.features import development, load_features
from helpers.fusion import FEATURE_SETS, STUDY_FEATURES, FusionMLP, complete_rows, count_parameters

model = FusionMLP(input_dim=len(STUDY_FEATURES))
print(model)
layers = pd.DataFrame([{"parameter": name, "shape": tuple(p.shape), "count": p.numel()}
                       for name, p in model.named_parameters()])
display(layers)
display(Markdown(f"With the study's {len(STUDY_FEATURES)} inputs the head has **{count_parameters(model):,}** "
                 f"trainable parameters; the extended input set ({len(FEATURE_SETS['extended'])} columns) gives it "
                 f"{count_parameters(FusionMLP(input_dim=len(FEATURE_SETS['extended']))):,}."))

# %% [markdown]
# ## What it reads
#
# The **study** input set is the three scores the original study fused. The **extended**
# set adds whether the object and spatial scores rest on anything at all (a spatial score
# with no relation to check is a placeholder, not a measurement), CLIP's mean over the
# sentences next to its maximum, and how many relations the text stated and how many held.
# Pairs missing a value (a frame that did not decode has no CLIP score) are set aside and
# counted here, for every model alike.

# %%
features = load_features(ctx.paths, required=STUDY_FEATURES)
table, holes = complete_rows(features, FEATURE_SETS["extended"])
display(pd.DataFrame({"set": list(FEATURE_SETS), "columns": [", ".join(c) for c in FEATURE_SETS.values()]}))
display(Markdown(f"{len(table):,} of {len(features):,} pairs have every feature"
                 + (f"; set aside: {len(features) - len(table):,} (missing values per column: {holes})." if holes else ".")))
dev = development(table)  # train and validation pairs: every table and figure of this chapter
display(dev.groupby(["split", "label"]).size().unstack("label").rename(columns={0: "misaligned", 1: "aligned"}))

# %% [markdown]
# How the features move together, and with the label (Pearson correlation over the train and
# validation pairs; booleans as numbers). Two features that correlate strongly tell the head the same thing
# twice; a feature with no correlation to the label can still help in combination, but
# rarely alone.

# %%
columns = [*FEATURE_SETS["extended"], "label"]
corr = dev[columns].astype(float).corr()
fig, ax = plt.subplots(figsize=(8.5, 7))
sns.heatmap(corr, annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="vlag", square=True, ax=ax)
ax.set_title("Correlations between the features and the label")
plt.show()
with_label = corr["label"].drop("label")
display(Markdown(f"The feature most correlated with the label is `{with_label.abs().idxmax()}` "
                 f"(r = {with_label[with_label.abs().idxmax()]:.2f}); the least, `{with_label.abs().idxmin()}` "
                 f"(r = {with_label[with_label.abs().idxmin()]:.2f})."))

# %% [markdown]
# ## What the trained head does with them
#
# The head is trained here on the study's three scores with the procedure chapter 06
# details (Adam, binary cross-entropy, early stopping on the validation loss, seed from
# the profile), and its checkpoint is saved; chapter 06 resumes from it rather than
# training it again. Its decision threshold is tuned on the validation split.

# %%
from helpers.fusion import input_effects, plot_response
from helpers.training import DEFAULT_RUN, settings_from_profile, train_fusion

result = train_fusion(table, settings_from_profile(ctx.cfg, "study"), ctx.paths.checkpoints / DEFAULT_RUN)
head = result.head
display(Markdown(f"Trained for {len(result.history)} epochs; kept epoch {result.best_epoch} (lowest validation "
                 f"loss, {result.history.set_index('epoch').loc[result.best_epoch, 'val_loss']:.4f}); "
                 f"decision threshold {head.threshold:.3f}."))

# %% [markdown]
# Its response over every pair of two scores, the third held at its median over the
# training pairs. Red is "aligned"; the black line is the decision threshold.

# %%
train = table[table["split"] == "train"]
fig = plot_response(head, train, [("object_score", "clip_score"), ("object_score", "spatial_score"),
                                  ("clip_score", "spatial_score")])
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
