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
from helpers.detection import needed_category_table
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
# segment with a spatial word reversed (`relation_swap`).

# %%
pair_table = pairs.make_pairs(stories, split_of=split_of, negative_mix=ctx.cfg["pairs"]["negative_mix"],
                              seed=ctx.cfg["seed"], block_size=ctx.cfg["data"]["block_size"])
external = data.load_external_test(ctx.cfg["data"], cache_dir=ctx.paths.cache, seed=ctx.cfg["seed"])
if external is not None:
    ext_stories, ext_excluded = data.parse_dataset(external, check_images=ctx.cfg["data"]["check_images"])
    ext_pairs = pairs.make_pairs(ext_stories, split_of={s.story_id: "external" for s in ext_stories},
                                 negative_mix=ctx.cfg["pairs"]["negative_mix"], seed=ctx.cfg["seed"],
                                 block_size=ctx.cfg["data"]["block_size"])
    pair_table = pairs.concat_pairs(pair_table, ext_pairs)
    display(Markdown(f"External test (the Hub's `test` split): **{len(ext_stories)}** stories, "
                     f"{len(ext_pairs)} pairs, {ext_excluded['story_id'].nunique()} excluded."))
# The id block of each pair's story: the unit of the split, and of every bootstrap interval later.
block_of = pairs.id_blocks([s.story_id for s in stories], block_size=ctx.cfg["data"]["block_size"])
if external is not None:
    block_of |= pairs.id_blocks([s.story_id for s in ext_stories], block_size=ctx.cfg["data"]["block_size"])
pair_table["block"] = pair_table["story_id"].map(block_of)
atomic_write_parquet(pair_table, ctx.paths.pairs)
display(Markdown(f"**{len(pair_table)}** pairs written to `{ctx.paths.pairs.relative_to(ctx.paths.root.parent)}`; "
                 f"frames with no applicable negative: {pair_table.attrs.get('frames_without_negative', 0)}."))
pd.crosstab(pair_table["split"], pair_table["negative_type"].where(pair_table["label"] == 0, "(positive)"), margins=True)

# %%
plots.plot_pair_mix(pair_table)
plt.show()

# %% [markdown]
# What a constructed negative looks like, one of each kind (the edit is recorded with the pair):

# %%
examples = pair_table[pair_table["label"] == 0].groupby("negative_type").head(1)
examples[["pair_id", "negative_type", "change", "text"]].assign(text=lambda t: t["text"].str.slice(0, 160) + " ...")
