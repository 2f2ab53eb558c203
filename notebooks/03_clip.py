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
# # 03 · CLIP: does the picture look like what the text says?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/03_clip.ipynb)
#
# CLIP embeds a frame and a text in one space; the closer the two vectors, the more alike
# CLIP finds them. But its text encoder reads only a few dozen tokens, and a frame's segment
# is several times longer. The original study cut the whole story to its first characters,
# tags and all. This chapter measures how much text that throws away, scores every sentence
# of a segment on its own instead, and compares the ways of turning sentence scores into one
# pair score against the study's cut and against plain truncation.
#
# **Splits shown:** every pair is scored, but every table, figure and comparison below reads
# the train and validation splits only; the test split is looked at once, from chapter 07 on.

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

ctx = start(profile, chapter="03_clip")

# %% [markdown]
# ## The model
#
# CLIP ViT-B/32, from the weights the profile names: the pretrained `openai` checkpoint, a
# local folder, or (smoke profile) the same architecture with random weights, saved to disk
# and loaded back the way a real checkpoint is. Its identity is a hash of its parameters,
# tokenizer and image preprocessing: every cached embedding is filed under it.

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from helpers import clip as hc

cfg = ctx.cfg["clip"]
model = hc.load_clip(cfg["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"], device=ctx.device)
n_params = sum(p.numel() for p in model.model.parameters())
display(Markdown(f"Weights `{model.source}` (identity `{model.identity}`): {n_params:,} parameters on "
                 f"`{model.device}`. Text encoder limit: {hc.MAX_TOKENS} tokens, start and end tokens included."))

# %% [markdown]
# ## Every pair, scored from cached embeddings
#
# Each distinct frame and each distinct sentence goes through CLIP once; its unit-length
# embedding is cached on disk under the model's identity and the frame's bytes (or the
# sentence's text). A pair's score is then a dot product: a cosine, mapped to [0, 1] as
# (cosine + 1) / 2, which keeps every ranking (and so every ROC-AUC) of the cosine itself.
# A frame that does not decode is skipped and counted; its pairs get no CLIP score.

# %%
from helpers.data import load_study_data, pair_frames
from helpers.features import development as dev_table

study = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
pairs = study.pairs
frames = pair_frames(pairs, study.datasets)
result = hc.clip_features(model, pairs, frames, ctx.paths.cache / "clip", aggregate=cfg["aggregate"],
                          top_k=cfg["top_k"], batch_size=cfg["batch_size"])
table = pairs.merge(result.features, on="pair_id", validate="one_to_one")
development = dev_table(table)  # train and validation pairs: everything shown below
counts = result.counts
display(Markdown(f"{counts['pairs']:,} pairs over {counts['frames']:,} frames and {counts['sentences']:,} distinct "
                 f"sentences; frames skipped as undecodable: {counts['frames_skipped']:,} "
                 f"({int(table['clip_score'].isna().sum()):,} pairs without a score)."))
display(development[["pair_id", "split", "label", "negative_type", "n_sentences", "clip_score",
                     *hc.scorer_labels(cfg["top_k"])]].head())

# %% [markdown]
# ## How much of the frame CLIP sees
#
# CLIP's preprocessing scales a frame's short side to its input size and keeps the central
# square. Film frames are wide, so what happens at their left and right edges never reaches
# the image encoder, whatever the text says about it.

# %%
decoded = result.frames[result.frames["decoded"]]
visible = pd.Series([hc.visible_fraction(model, w, h) for w, h in zip(decoded["width"], decoded["height"])])
display(Markdown(f"Median frame size {decoded['width'].median():.0f} × {decoded['height'].median():.0f} px: CLIP sees "
                 f"**{visible.median():.0%}** of a frame's area (range {visible.min():.0%}–{visible.max():.0%} over "
                 f"{len(decoded):,} frames)."))

# %% [markdown]
# ## How much text CLIP can read
#
# Over the dataset's own segments (the positive pairs of the train and validation splits, one
# per frame): how many sentences a segment has, and how long sentences and whole segments are
# in CLIP tokens.

# %%
lengths = hc.length_table(result, development)
display(lengths.style.format(precision=2, na_rep=""))
over = f"share_over_{hc.MAX_TOKENS}"
display(Markdown(
    f"A {hc.MAX_TOKENS}-token encoder would cut **{lengths.at['tokens per segment', over]:.0%}** of whole segments "
    f"(median length {lengths.at['tokens per segment', 'median']:.0f} tokens) but only "
    f"{lengths.at['tokens per sentence', over]:.1%} of single sentences (median "
    f"{lengths.at['tokens per sentence', 'median']:.0f}); the sentences still over the limit are truncated "
    f"({counts['sentences_truncated']:,} of all {counts['sentences']:,} distinct sentences). "
    f"The study's cut, the first {hc.FIRST_CHARS} characters with the tags, keeps "
    f"{lengths.at['plain characters kept by the study cut', 'mean']:.0%} of a segment's plain text on average."
))
hc.plot_token_lengths(result, development)
plt.show()

# %% [markdown]
# ## Scores by label and kind of negative
#
# The distribution of the pair score for the positives and for each kind of negative
# (cumulative: a curve further right means higher scores), next to the two baselines, over
# the train and validation pairs. A useful score puts the positives to the right of every
# negative type.

# %%
hc.plot_score_distributions(development, cfg["aggregate"], cfg["top_k"])
plt.show()

# %% [markdown]
# ## Which text view tells the pairs apart?
#
# ROC-AUC of each way of reading the text, for the positives against each kind of negative
# (the dashed line marks chance). Only the development pairs (train and validation splits) are used: CLIP
# is not fitted here, but the aggregate is a modelling choice and the test split stays out
# of every choice.

# %%
auc = hc.auc_table(development, cfg["top_k"])
display(auc.style.format(precision=3).background_gradient(cmap="RdYlGn", vmin=0, vmax=1))
hc.plot_auc(auc)
plt.show()
views = hc.scorer_labels(cfg["top_k"])
overall = auc.loc["all negatives"]
configured = views[f"clip_score_{cfg['aggregate']}"]
by_type = auc[configured].drop("all negatives")
display(Markdown(
    f"Against all negatives ({len(development):,} development pairs), the best view is **{overall.idxmax()}** "
    f"(ROC-AUC {overall.max():.3f}); the profile's aggregate, *{configured}*, reaches {overall[configured]:.3f}, "
    f"the study's cut {overall[views['clip_score_first150']]:.3f} and plain truncation "
    f"{overall[views['clip_score_trunc77']]:.3f}. The hardest kind of negative for the profile's aggregate is "
    f"`{by_type.idxmin()}` ({by_type.min():.3f}), the easiest `{by_type.idxmax()}` ({by_type.max():.3f})."
))

# %% [markdown]
# ## What it cost
#
# Embeddings needed by this chapter and computed in this run (a rerun over the same pairs
# finds them all in the cache and computes none). The sentence scorer needs one image pass
# per frame and one text pass per distinct sentence, shared by every pair that uses them.

# %%
cost = hc.cost_table(counts)
display(cost.style.format({"needed": "{:,.0f}", "computed this run": "{:,.0f}", "needed per pair": "{:.2f}",
                           "computed per pair": "{:.2f}"}))
per_frame = counts["seconds_frames"] / counts["frames_computed"] if counts["frames_computed"] else None
per_sentence = counts["seconds_sentences"] / counts["sentences_computed"] if counts["sentences_computed"] else None
display(Markdown(
    f"Forward passes per pair for the sentence scorer: **{cost.at['frames + sentences', 'needed per pair']:.2f}** "
    f"needed, {cost.at['frames + sentences', 'computed per pair']:.2f} computed in this run."
    + (f" Time per frame: {per_frame * 1000:.0f} ms" if per_frame else "")
    + (f"; per sentence: {per_sentence * 1000:.0f} ms" if per_sentence else "")
    + (f" (on `{model.device}`, batches of {cfg['batch_size']}, decoding and caching included)."
       if per_frame or per_sentence else "")
))

# %% [markdown]
# ## The CLIP feature part
#
# One row per pair: `clip_score` (the profile's aggregate), the other aggregates, the two
# baselines and the number of sentences. Chapter 05 reads it through `features.parquet`.

# %%
from helpers.features import write_part

path = write_part(ctx.paths, "clip", result.features)
display(Markdown(f"Wrote `{path.name}`: {len(result.features):,} rows, columns "
                 f"{', '.join(f'`{c}`' for c in result.features.columns)}."))
