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
# # 01 · Data: StoryReasoning, parsed, checked, and turned into labelled pairs
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/01_data.ipynb)
#
# StoryReasoning gives each story as movie frames, a story with one tagged segment per frame,
# and a chain of thought with per-frame tables of characters, objects and their boxes. It has
# no alignment label at all, so this chapter builds them: every frame paired with its own
# segment is a positive, and every frame also gets one explicitly constructed negative. The
# stories are split into train, validation and test by blocks of neighbouring ids, so a movie
# stays, as far as possible, on one side.

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

ctx = start(profile, chapter="01_data")

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from helpers import data, pairs, plots
from helpers.clip import MAX_TOKENS, load_tokenizer
from helpers.config import update_run_record
from helpers.objects import needed_category_table
from helpers.io import atomic_write_parquet

# %% [markdown]
# ## Loading
#
# Images stay encoded until a chapter needs them, so loading is cheap. The fingerprint hashes
# the rows' text and image bytes: it identifies the data behind every number of this run.

# %%
ds = data.load_stories(ctx.cfg["data"], cache_dir=ctx.paths.cache, seed=ctx.cfg["seed"])
fingerprint = data.dataset_fingerprint(ds)
update_run_record(ctx.profile, dataset_fingerprint=fingerprint, n_rows=len(ds))
display(Markdown(f"Loaded **{len(ds)}** stories from `{ctx.cfg['data']['source']}`; fingerprint `{fingerprint}`."))

# %% [markdown]
# ## Parsing and validation
#
# Each story must have one segment per frame and one `## Image N` section per frame, and its
# frames must decode. A story that fails any check is left out of the study, with its reason.

# %%
stories, excluded = data.parse_dataset(ds, check_images=ctx.cfg["data"]["check_images"])
display(Markdown(f"**{len(stories)}** of {len(ds)} stories are usable; "
                 f"**{excluded['story_id'].nunique()}** are excluded."))
excluded.groupby("reason").agg(stories=("story_id", "nunique"), example=("detail", "first"))

# %%
story_tab = data.story_table(stories)
segment_tab = data.segment_table(stories)
entity_tab = data.entity_table(stories)
skipped = int(story_tab["skipped_rows"].sum())
display(Markdown(
    f"Chain-of-thought rows skipped as malformed: **{skipped}**. Segments citing an id with no "
    f"chain-of-thought row in their frame: **{int((segment_tab['n_unannotated_ids'] > 0).sum())}** "
    f"of {len(segment_tab)}."))
story_tab.describe().T[["mean", "min", "50%", "max"]]

# %% [markdown]
# ## What the stories look like
#
# Segments are several sentences long. Measured in CLIP tokens, they are compared below with
# the most the text encoder takes: what lies beyond it, CLIP never reads, which is why
# chapter 03 scores sentence by sentence.

# %%
tokenizer = load_tokenizer(ctx.cfg["clip"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"])
segment_tab["n_tokens"] = data.segment_token_lengths(stories, tokenizer)
entity_tab["box_area_frac"] = data.box_area_fraction(entity_tab, ds)
over = (segment_tab["n_tokens"] > MAX_TOKENS).mean()
display(Markdown(f"Segments over CLIP's {MAX_TOKENS} tokens: **{over:.0%}** "
                 f"(tokenizer of `{ctx.cfg['clip']['weights']}`)."))
plots.plot_data_overview(story_tab, segment_tab, entity_tab, clip_max_tokens=MAX_TOKENS)
plt.show()

# %% [markdown]
# Which COCO categories do the texts themselves ask for? These are what the object evidence
# of chapter 02 can check; everything else a text says is invisible to a COCO detector.

# %%
needed = needed_category_table(stories)
share = needed.groupby(["story_id", "frame"])["category"].apply(lambda c: c.notna().any()).mean()
display(Markdown(f"Segments that need at least one COCO category: **{share:.0%}** of {len(segment_tab)}."))
needed["category"].value_counts().rename_axis("COCO category").to_frame("segments").head(20).T

# %% [markdown]
# A few frames with their chain-of-thought boxes (characters orange, objects blue) beside their text:

# %%
sample = data.sample_frames(stories, n=3, seed=ctx.cfg["seed"])
index = data.story_index(ds)
images = [data.frame_image(ds[index[s.story_id]], frame) for s, frame in sample]
plots.plot_annotated_frames(images, [s for s, _ in sample], [f for _, f in sample])
plt.show()

# %% [markdown]
# ## Splits
#
# Story ids were assigned one movie at a time, so neighbouring ids mostly share a movie.
# Whole blocks of consecutive ids go to one side; no story is on two sides.

# %%
split_of = pairs.split_stories([s.story_id for s in stories], block_size=ctx.cfg["data"]["block_size"],
                               fractions=tuple(ctx.cfg["data"]["split_fractions"]), seed=ctx.cfg["seed"])
split_sizes = pd.Series(split_of).value_counts().reindex(list(pairs.SIDES)).rename("stories").to_frame()
split_sizes["share"] = split_sizes["stories"] / split_sizes["stories"].sum()
split_sizes

# %% [markdown]
# ## Pairs
#
# One positive and one negative per frame. The negatives are of four named kinds:
# a segment of a story from a distant id block (`other_story`), another frame's segment of the
# same story (`same_story`: same people, same place), the frame's own segment with one object
# replaced by a COCO category the frame does not contain (`object_swap`), and the frame's own
# segment with one spatial relation reversed (`relation_swap`).
#
# A negative is only worth something when the frame alone can refute it. An edit a reader can
# spot without looking ("Jack holds a microwave", "a cups", "lies motionless under the floor")
# teaches a verifier to read the text, not the image: earlier compositionality benchmarks were
# largely solved by such "blind" text-only models, and SugarCrepe (Hsieh et al., 2023) fixed
# them with fluent, plausible edits filtered adversarially against blind models. The
# construction here follows it in three steps:
#
# 1. **Fluent edits that change one thing.** An object swap replaces the head noun of the
#    mention only, keeping determiner, possessive, adjectives and quantity ("a stack of books"
#    -> "a stack of cups"), with the number and the article right
#    (`helpers.pairs.swap_object_phrase`). A relation swap reverses a relation between two
#    things the frame could show (people, COCO things, objects with a chain-of-thought box),
#    never one to the floor, the sky, a wall or an abstraction.
# 2. **Plausible replacements.** A masked language model (profile key `mlm.weights`) scores the
#    changed words in their sentence (a pseudo-log-likelihood, `helpers.mlm.span_logprob`).
#    The objects put in are those it finds most plausible among the COCO categories the frame
#    lacks; a reversed relation is kept only when it loses at most a margin (in nats) to the
#    original. The margin is chosen below, on train and validation.
# 3. **Adversarial filtering.** Each frame gets several candidates of its drawn type; a blind
#    text-only classifier (TF-IDF of words and characters, logistic regression), cross-fitted
#    over folds of training id blocks so that it never saw the frame's own story, keeps the
#    candidate it finds most like a positive. Validation and test candidates are only scored,
#    by a classifier fitted on training frames; the filter never sees an image.
#
# **Goal**, checked on real data (the `quick` and `full` profiles): the blind text-only
# classifier stays near chance on every negative type, a ROC-AUC within 0.40-0.60 whose
# interval covers 0.5, with the fusion head's per-type results reported beside it from
# chapter 07 on. The table below measures it on train and validation; the test split is not
# looked at here.

# %%
from helpers.mlm import load_mlm

pc = ctx.cfg["pairs"]
mlm = load_mlm(ctx.cfg["mlm"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"])
mlm_cache = ctx.paths.cache / "mlm"
common = dict(negative_mix=pc["negative_mix"], seed=ctx.cfg["seed"], block_size=ctx.cfg["data"]["block_size"])
relations = pairs.relation_candidates(stories, split_of=split_of, mlm=mlm, cache_dir=mlm_cache,
                                      batch_size=ctx.cfg["mlm"]["batch_size"])
n_frames = relations[["story_id", "frame"]].drop_duplicates().shape[0]
if pc["relation_margin"] == "auto":
    margin, margin_table = pairs.choose_relation_margin(relations, pc["relation_margin_grid"], seed=ctx.cfg["seed"],
                                                        block_size=ctx.cfg["data"]["block_size"],
                                                        n_folds=pc["filter_folds"])
    how = "chosen on train + validation (the blind ROC-AUC nearest 0.5 among the grid below)"
else:
    margin, margin_table, how = float(pc["relation_margin"]), None, "set in the profile"
update_run_record(ctx.profile, pairs={"relation_margin": str(margin), "mlm": ctx.cfg["mlm"]["weights"],
                                      "mlm_identity": mlm.identity})
display(Markdown(f"Relation swaps between two things the frame can show: **{len(relations)}** in {n_frames} frames; "
                 f"median plausibility {relations['plausibility'].median():.2f} nats. Margin {how}: "
                 f"**{margin}** nats."))
margin_table

# %%
naive_pairs = pairs.make_pairs(stories, split_of=split_of, variant="naive", **common)
construction = dict(variant=pc["construction"], mlm=mlm, cache_dir=mlm_cache, n_candidates=pc["n_candidates"],
                    relation_margin=margin, n_folds=pc["filter_folds"], batch_size=ctx.cfg["mlm"]["batch_size"])
pair_table = pairs.make_pairs(stories, split_of=split_of, **construction, **common)
study_pairs = pair_table
external = data.load_external_test(ctx.cfg["data"], cache_dir=ctx.paths.cache, seed=ctx.cfg["seed"])
if external is not None:
    ext_stories, ext_excluded = data.parse_dataset(external, check_images=ctx.cfg["data"]["check_images"])
    ext_pairs = pairs.make_pairs(ext_stories, split_of={s.story_id: "external" for s in ext_stories},
                                 filter_train=study_pairs, **construction, **common)
    pair_table = pairs.concat_pairs(pair_table, ext_pairs)
    display(Markdown(f"External test (the Hub's `test` split): **{len(ext_stories)}** stories, "
                     f"{len(ext_pairs)} pairs, {ext_excluded['story_id'].nunique()} excluded."))
# The id block of each pair's story: the unit of the split, and of every bootstrap interval later.
block_of = pairs.id_blocks([s.story_id for s in stories], block_size=ctx.cfg["data"]["block_size"])
if external is not None:
    block_of |= pairs.id_blocks([s.story_id for s in ext_stories], block_size=ctx.cfg["data"]["block_size"])
pair_table["block"] = pair_table["story_id"].map(block_of)
atomic_write_parquet(pair_table, ctx.paths.pairs)
display(Markdown(f"**{len(pair_table)}** pairs written to `{ctx.paths.pairs.relative_to(ctx.paths.root.parent)}` "
                 f"(construction `{pc['construction']}`); frames with no applicable negative: "
                 f"{pair_table.attrs.get('frames_without_negative', 0)}."))
pd.crosstab(pair_table["split"], pair_table["negative_type"].where(pair_table["label"] == 0, "(positive)"), margins=True)

# %%
plots.plot_pair_mix(pair_table)
plt.show()

# %% [markdown]
# ## Can a blind reader tell the negatives apart?
#
# ROC-AUC of the blind text-only classifier, per negative type (all positives of the split
# against the negatives of that type), for the first, naive construction and for the one this
# study uses, side by side. Training pairs are scored by cross-fitting over folds of training
# id blocks, validation pairs by a classifier fitted on all training pairs; the interval
# resamples id blocks. 0.5 is chance: the nearer, the more a verifier has to look at the frame.
# The filter used this classifier's recipe, so this table alone could look good by
# construction: chapter 07 adds blind controls the filter never used (a logistic regression on
# CLIP's text embeddings, and the language model's plausibility of the changed words).

# %%
blind_kwargs = dict(block_size=ctx.cfg["data"]["block_size"], n_folds=pc["filter_folds"],
                    n_resamples=ctx.cfg["bootstrap"]["n_resamples"], seed=ctx.cfg["seed"])
blind = pd.concat([pairs.blind_auc_table(naive_pairs, **blind_kwargs).assign(construction="naive"),
                   pairs.blind_auc_table(study_pairs, **blind_kwargs).assign(construction=pc["construction"])],
                  ignore_index=True)
atomic_write_parquet(blind, ctx.paths.data / "blind_auc.parquet")


def _cell(row) -> str:
    if pd.isna(row["roc_auc"]):
        return f"n/a (n={row['n_negative']})"
    return f"{row['roc_auc']:.2f} [{row['low']:.2f}, {row['high']:.2f}] (n={row['n_negative']})"


blind.assign(cell=blind.apply(_cell, axis=1)).pivot_table(
    index=["split", "negative_type"], columns="construction", values="cell", aggfunc="first", sort=False)

# %% [markdown]
# Negatives of each kind, drawn at random (seeded) from train and validation, beside the
# frame's own text: first the naive construction's, then this study's.

# %%
for name, table in (("naive", naive_pairs), (pc["construction"], study_pairs)):
    display(Markdown(f"**{name}**"))
    display(pairs.edit_examples(table, n=3, seed=ctx.cfg["seed"]).style.hide(axis="index"))
