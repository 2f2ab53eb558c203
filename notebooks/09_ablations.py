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
# # 09 · Ablations and robustness: what each part is worth
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/09_ablations.ipynb)
#
# Three questions, all answered on the same test pairs as chapter 07. What does each
# evidence add? (A fusion head for every non-empty subset of the three.) How much does the
# detector cost us? (The chain of thought's boxes in place of Faster R-CNN.) What did the
# original study's rules give? (Its scoring rules and its three epochs, on our pairs.)
# Then: how far do the scores and verdicts move when the frame or the text is disturbed in
# ways that should not change whether they match?

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

ctx = start(profile, chapter="09_ablations")

# %% [markdown]
# ## The pairs, the frames and the models
#
# Every variant below trains on the pairs chapter 06 trained on (those with every feature),
# with the same seed, the same splits and a threshold tuned on the validation split. The
# detections come from chapter 02's cache and the CLIP embeddings from chapter 03's, so
# only what is new is computed.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from helpers import ablations as ab
from helpers import detection as det
from helpers import objects as obj
from helpers.clip import load_clip
from helpers.data import load_study_data, pair_frames
from helpers.features import load_features
from helpers.fusion import FEATURE_SETS, complete_rows

threshold = float(ctx.cfg["detector"]["score_threshold"])
data = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
table, _ = complete_rows(load_features(ctx.paths), FEATURE_SETS["extended"])  # chapter 06's pairs
frames = pair_frames(table, data.datasets)
detector, detections = det.profile_detections(ctx.cfg, ctx.paths, frames, device=ctx.device)
clip = load_clip(ctx.cfg["clip"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"], device=ctx.device)
display(Markdown(f"{len(table):,} pairs ({(table['split'] == 'test').sum():,} on the test split) over "
                 f"{len(frames):,} frames; {detections.forward_passes:,} frames needed a new forward pass of the "
                 "detector."))

# %% [markdown]
# ## The variants
#
# - **Seven evidence subsets**: object, semantic (CLIP) and spatial evidence alone, in
#   pairs, and all three, each feeding its own fusion head. All three together is the
#   reference, the head of chapter 06.
# - **Oracle detector**: object and spatial evidence recomputed, with the same functions as
#   chapters 02 and 04, from the chain of thought's boxes instead of Faster R-CNN's. On some
#   kinds of negative it replays the labelling rule rather than measuring the frame (listed
#   below with the reason): there its result is no headroom, and the distance to the
#   reference counts as what better detections could buy only with those negatives left out.
# - **Study rules**: the original study's scores on our pairs. Objects: the share of the
#   labels detected in the frame that appear anywhere in the whole story (the text's story,
#   with this pair's segment in place). CLIP: the story's *first* frame against the first
#   150 characters of that whole story, tags included. Spatial: the 400-pixel rule on three
#   hard-coded label pairs. The head is trained for three epochs and the last one kept.
# - **Tagged text**: every head above reads the plain text, as the verifier does with a
#   user's text. This one reads the StoryReasoning tags instead: a `<gdo char1>` mention is
#   the character its chain-of-thought row describes (a person, or a cat), so "James sits on
#   the couch" needs a person and states a relation. The distance to the reference is what
#   the tags add; the verifier cannot have it for plain text.

# %%
story_texts = ab.study_story_texts(table, data.stories)
study_clip = ab.study_clip_scores(clip, table, story_texts, data.datasets, ctx.paths.cache / "clip",
                                  batch_size=int(ctx.cfg["clip"]["batch_size"]))
oracle = ab.oracle_frames(obj.ground_truth_frames(data.stories), detections.frames)
variants = [
    *ab.subset_variants(table, ctx.cfg),
    ab.detector_variant(ab.oracle_features(table, oracle, data.stories, threshold=threshold), ctx.cfg),
    ab.study_variant(ab.study_features(table, detections.frames, story_texts, study_clip, threshold=threshold),
                     ctx.cfg),
    ab.tags_variant(ab.tagged_features(table, detections.frames, data.stories, threshold=threshold), ctx.cfg),
]
display(ab.variant_table(variants))
display(Markdown("\n".join(
    f"- `{v.name}` replays the labels on `{kind}` negatives: {ab.ORACLE_REPLAYS[kind]}, so it finds them by "
    "construction. Its result there is marked in the tables below and left out of its headroom."
    for v in variants for kind in v.replays)))
display(Markdown(
    f"The study's CLIP score is undefined for {int(study_clip.isna().sum()):,} pairs whose story's first frame does "
    "not decode; they get 0.5 (a zero cosine), as the study had no rule for them."
    if study_clip.isna().any()
    else "Every story's first frame decoded, so the study's CLIP score is defined for every pair."))

# %% [markdown]
# ## Training and scoring
#
# Each head is trained with `helpers.training.train_fusion` into its own checkpoint folder
# (a rerun resumes or returns at once), then scores every pair of its own feature table.

# %%
results = ab.train_variants(variants, ctx.paths.checkpoints / "ablations")
predictions = ab.variant_predictions(variants, results)
document = ab.ablation_metrics(predictions, variants, n_resamples=int(ctx.cfg["bootstrap"]["n_resamples"]),
                               seed=int(ctx.cfg["seed"]))
path = ab.write_ablations(ctx.paths, document)
display(ab.training_table(results))

# %% [markdown]
# ## The table
#
# ROC-AUC on the test split, overall and against each kind of negative (all aligned pairs
# against the negatives of that kind), then the variant minus the reference. Every value
# comes with its 95% interval from resampling the test split's id blocks; the differences are paired
# (both models on the same resamples), so an interval that excludes zero means the test
# split tells the two apart. A result marked "replays the labels" measures how those
# negatives were built, not the frames; the last column is the difference with them left
# out, the only one that says what a variant could gain.

# %%
display(ab.ablation_table(document, "roc_auc"))
display(Markdown("Macro-F1 at each variant's validation-tuned threshold:"))
display(ab.ablation_table(document, "macro_f1"))

# %%
from helpers.dashboards import ablation_findings

display(Markdown("\n".join(f"- {sentence}" for sentence in ablation_findings(document))))

# %% [markdown]
# ## Robustness
#
# A sample of test pairs, half aligned and half not, is scored again after one change to
# its input, with the same detector, CLIP model, rules and head (nothing is retrained).
# Images: Gaussian blur, a central crop resized back, heavy JPEG compression, brighter
# exposure. Texts: a few letters mistyped (tags left intact), the grounding tags stripped
# (the text is the same, but nothing marks what it names), the sentences shuffled. None of
# these should change whether a frame and a text belong together, so a robust verifier
# changes its scores little and its decisions rarely. Scoring reads and fills chapters 02 and
# 03's caches (keyed by the frame's bytes and the text), so the unperturbed pairs and the
# frames of the text perturbations cost no new forward pass.

# %%
from functools import partial

from helpers.training import DEFAULT_RUN, default_checkpoint, load_head

n_pairs = 2 if ctx.is_smoke else 40  # size of the robustness sample
sample = ab.robustness_sample(table, n_pairs, seed=int(ctx.cfg["seed"]))
score = partial(ab.score_pairs, detector=detector, clip=clip, stories=data.stories, cfg=ctx.cfg,
                cache_dir=ctx.paths.cache)
long = ab.robustness(sample, frames, score, load_head(default_checkpoint(ctx.paths, DEFAULT_RUN)),
                     seed=int(ctx.cfg["seed"]))
ab.write_robustness(ctx.paths, long)
summary = ab.robustness_summary(long)
formats = {c: "{:.3f}" for c in summary.columns if c.startswith("mean")} | {"decisions_flipped": "{:.0%}"}
display(summary.style.format(formats).hide(axis="index"))

# %%
ab.plot_robustness(summary)
plt.show()
display(Markdown("\n".join(f"- {sentence}" for sentence in ab.robustness_findings(summary))))
