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
#
# The code cells that start with `#@save` are the method: `make lib` collects them, in order,
# into `helpers/pairs.py`, which the later chapters import. Change a cell here and rerun the
# chapter; never edit the generated module.

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
from IPython.display import Markdown, display

from helpers import data, plots
from helpers.clip import MAX_TOKENS, load_tokenizer
from helpers.config import update_run_record
from helpers.objects import needed_category_table
from helpers.io import atomic_write_parquet
from helpers.mlm import MLM
from helpers.weights import load_model

# %% [markdown]
# What the method below needs. The parsed records (`Segment`, `ParsedStory`, ...) come from
# `helpers.tags` and the masked language model from `helpers.mlm`: plumbing, not part of the
# lesson. The reading of COCO categories from a phrase is chapter 02's (`helpers.objects`).

# %%
#@save
import math
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.data import CorruptFrameError, frame_size, story_index
from helpers.objects import COCO_CATEGORIES, char_category, to_coco
from helpers.mlm import Mlm
from helpers.tags import ENTITY_KINDS, Mention, ParsedStory, Segment, edit_segment

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

# %% [markdown]
# ## Splits
#
# Story ids were assigned one movie at a time, so neighbouring ids mostly share a movie. The
# ids are sorted numerically (an id that is not a number is an error) and cut into consecutive
# blocks of `block_size`; a block stands in for a stretch of one movie and is never split
# between sides. A block is named by its first and last id; it is the unit of the split, and
# so the unit every interval of the study resamples.

# %%
#@save
SIDES = ("train", "val", "test")
#: Fewest id blocks on each side of a split (see :func:`split_stories`).
MIN_BLOCKS_PER_SIDE = 2


def _id_number(story_id: str) -> int:
    if not str(story_id).isdigit():
        raise ValueError(f"story id {story_id!r} is not a number: ids are sorted numerically")
    return int(story_id)


def _blocks(story_ids: Iterable[str], block_size: int) -> list[list[str]]:
    """Numerically sorted ids cut into consecutive blocks of ``block_size``."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    ids = sorted(story_ids, key=_id_number)
    return [ids[i : i + block_size] for i in range(0, len(ids), block_size)]


def id_blocks(story_ids: Sequence[str], block_size: int) -> dict[str, str]:
    """``{story_id: block}``, a block named by its first and last id ("3920-3923")."""
    return {sid: f"{block[0]}-{block[-1]}" for block in _blocks(story_ids, block_size) for sid in block}

# %%
pd.Series(id_blocks(["12", "3", "7", "40", "41", "100"], block_size=2), name="block").rename_axis("story id").to_frame()

# %% [markdown]
# The blocks are shuffled with the seed. The first `min_blocks` rounds give one block to each
# side with a non-zero fraction; every further block goes to the side furthest below its target
# number of stories. Every side thus holds at least two blocks: an `other_story` donor from
# another block exists on every side, and a bootstrap over blocks has more than one unit to
# draw. Too few blocks for that is an error.

# %%
#@save
def split_stories(
    story_ids: Sequence[str],
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    block_size: int,
    seed: int = 42,
    min_blocks: int = MIN_BLOCKS_PER_SIDE,
) -> dict[str, str]:
    """``{story_id: side}``: whole id blocks to train, val or test, each side at least ``min_blocks`` blocks."""
    if len(fractions) != len(SIDES) or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    if len(set(story_ids)) != len(story_ids):
        raise ValueError("story_ids contains duplicates")
    blocks = _blocks(story_ids, block_size)
    random.Random(seed).shuffle(blocks)

    sides = [side for side, f in zip(SIDES, fractions) if f > 0]
    if len(blocks) < min_blocks * len(sides):
        raise ValueError(
            f"{len(story_ids)} stories in blocks of {block_size} make {len(blocks)} blocks, but each of the "
            f"{len(sides)} sides needs at least {min_blocks}: use more stories or a smaller block_size"
        )
    target = {side: f * len(story_ids) for side, f in zip(SIDES, fractions)}
    count = dict.fromkeys(SIDES, 0)
    split: dict[str, str] = {}
    for i, block in enumerate(blocks):
        if i < min_blocks * len(sides):
            side = sides[i % len(sides)]
        else:  # the largest deficit; ties go to the earlier side
            side = max(sides, key=lambda s: target[s] - count[s])
        count[side] += len(block)
        split.update(dict.fromkeys(block, side))
    return dict(sorted(split.items(), key=lambda item: _id_number(item[0])))

# %%
split_of = split_stories([s.story_id for s in stories], block_size=ctx.cfg["data"]["block_size"],
                         fractions=tuple(ctx.cfg["data"]["split_fractions"]), seed=ctx.cfg["seed"])
split_sizes = pd.Series(split_of).value_counts().reindex(list(SIDES)).rename("stories").to_frame()
split_sizes["share"] = split_sizes["stories"] / split_sizes["stories"].sum()
split_sizes

# %% [markdown]
# Three tables describe what was parsed: one row per story, per frame segment, and per
# chain-of-thought entity (with the COCO category its description names, if any). They, and
# every statistic and example of the data shown in this chapter, read the train and validation
# stories only: the test split is looked at once, from chapter 07 on.

# %%
#@save
# extra code: the tables of the data overview (the tests check them)
def story_table(stories: Iterable[ParsedStory]) -> pd.DataFrame:
    """One row per story: sizes of its text and annotations."""
    rows = []
    for s in stories:
        entities = [e for f in s.cot.frames.values() for e in (*f.characters, *f.objects)]
        kinds = Counter(e.kind for e in entities)
        rows.append(
            {
                "story_id": s.story_id,
                "frame_count": s.frame_count,
                "n_segments": len(s.segments),
                "n_cot_frames": len(s.cot.frames),
                "story_words": sum(len(seg.plain.split()) for seg in s.segments),
                "n_mentions": sum(len(seg.mentions) for seg in s.segments),
                "n_entities": len(entities),
                "n_boxes": sum(e.box is not None for e in entities),
                **{f"n_{kind}": kinds.get(kind, 0) for kind in ENTITY_KINDS},
                "skipped_rows": s.cot.skipped_rows,
            }
        )
    return pd.DataFrame(rows)


def segment_table(stories: Iterable[ParsedStory]) -> pd.DataFrame:
    """One row per frame segment: length, tag counts, and cited ids without a table row."""
    rows = []
    for s in stories:
        for seg in s.segments:
            frame = s.cot.frames.get(seg.frame)
            annotated = {e.id for e in (*frame.characters, *frame.objects)} if frame else set()
            cited = {i for m in (*seg.mentions, *seg.actions, *seg.locations) for i in m.ids}
            rows.append(
                {
                    "story_id": s.story_id,
                    "frame": seg.frame,
                    "n_chars": len(seg.plain),
                    "n_words": len(seg.plain.split()),
                    "n_mentions": len(seg.mentions),
                    "n_actions": len(seg.actions),
                    "n_locations": len(seg.locations),
                    "n_cited_ids": len(cited),
                    "n_unannotated_ids": len(cited - annotated),
                }
            )
    return pd.DataFrame(rows)


def entity_table(stories: Iterable[ParsedStory]) -> pd.DataFrame:
    """One row per chain-of-thought entity, with its box size and COCO category (or missing)."""
    rows = []
    for s in stories:
        for frame in s.cot.frames.values():
            for table, entities, category in (
                ("characters", frame.characters, char_category),
                ("objects", frame.objects, to_coco),
            ):
                for e in entities:
                    x1, y1, x2, y2 = e.box if e.box is not None else (math.nan,) * 4
                    rows.append(
                        {
                            "story_id": s.story_id,
                            "frame": frame.frame,
                            "table": table,
                            "id": e.id,
                            "kind": e.kind,
                            "name": e.name,
                            "description": e.description,
                            "has_box": e.box is not None,
                            "box_w": x2 - x1,
                            "box_h": y2 - y1,
                            "coco": category(e.description),
                        }
                    )
    return pd.DataFrame(rows)

# %%
development_stories = [s for s in stories if split_of[s.story_id] in ("train", "val")]
story_tab = story_table(development_stories)
segment_tab = segment_table(development_stories)
entity_tab = entity_table(development_stories)
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
# chapter 03 scores sentence by sentence. Boxes are measured as a share of their frame.

# %%
#@save
# extra code
def box_area_fraction(entities: pd.DataFrame, ds: "datasets.Dataset") -> pd.Series:
    """Each entity's box area as a fraction of its frame's area (NaN without a box or a readable frame)."""
    index = story_index(ds)
    sizes: dict[tuple[str, int], float] = {}
    for story_id, frame in set(zip(entities["story_id"], entities["frame"])):
        try:
            w, h = frame_size(ds[index[story_id]]["images"], int(frame))
            sizes[(story_id, frame)] = float(w * h)
        except (CorruptFrameError, KeyError):
            sizes[(story_id, frame)] = math.nan
    area = pd.Series([sizes[k] for k in zip(entities["story_id"], entities["frame"])], index=entities.index)
    return (entities["box_w"] * entities["box_h"]) / area

# %%
tokenizer = load_tokenizer(ctx.cfg["clip"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"])
texts = [seg.plain for s in development_stories for seg in s.segments]  # the rows of segment_tab, in order
segment_tab["n_tokens"] = [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
entity_tab["box_area_frac"] = box_area_fraction(entity_tab, ds)
over = (segment_tab["n_tokens"] > MAX_TOKENS).mean()
display(Markdown(f"Segments over CLIP's {MAX_TOKENS} tokens: **{over:.0%}** "
                 f"(tokenizer of `{ctx.cfg['clip']['weights']}`)."))
plots.plot_data_overview(story_tab, segment_tab, entity_tab, clip_max_tokens=MAX_TOKENS)
plt.show()

# %% [markdown]
# Which COCO categories do the texts themselves ask for? These are what the object evidence
# of chapter 02 can check (chapter 02 explains how a text's needs are read); everything else a
# text says is invisible to a COCO detector.

# %%
needed = needed_category_table(development_stories)
share = needed.groupby(["story_id", "frame"])["category"].apply(lambda c: c.notna().any()).mean()
display(Markdown(f"Segments that need at least one COCO category: **{share:.0%}** of {len(segment_tab)}."))
needed["category"].value_counts().rename_axis("COCO category").to_frame("segments").head(20).T

# %% [markdown]
# A few frames with their chain-of-thought boxes (characters orange, objects blue) beside their
# text, drawn at random (seeded) among the frames that have a box:

# %%
#@save
# extra code
def sample_frames(stories: Sequence[ParsedStory], n: int, seed: int) -> list[tuple[ParsedStory, int]]:
    """``n`` (story, frame) pairs drawn reproducibly among frames with at least one boxed entity."""
    import random

    candidates = [
        (s, f.frame)
        for s in stories
        for f in s.cot.frames.values()
        if any(e.box is not None for e in (*f.characters, *f.objects))
    ]
    return random.Random(seed).sample(candidates, min(n, len(candidates)))

# %%
sample = sample_frames(development_stories, n=3, seed=ctx.cfg["seed"])
index = story_index(ds)
images = [data.frame_image(ds[index[s.story_id]], frame) for s, frame in sample]
plots.plot_annotated_frames(images, [s for s, _ in sample], [f for _, f in sample])
plt.show()

# %% [markdown]
# ## Pairs
#
# One positive per frame and one negative of every kind that applies to it, so that the kinds
# are compared on the same frames. The negatives are of four named kinds, from easy to hard: a segment of a story from a distant id block (`other_story`: neighbouring ids come from
# the same movie, so a near story could still fit), another frame's segment of the same story
# (`same_story`: same people, same place), the frame's own segment with one object replaced by
# a COCO category the frame does not contain (`object_swap`), and the frame's own segment with
# one spatial relation reversed (`relation_swap`).
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
#    -> "a stack of cups"), with the number and the article right. A relation swap reverses a
#    relation between two things the frame could show (people, COCO things, objects with a
#    chain-of-thought box), never one to the floor, the sky, a wall or an abstraction, and only
#    when the two things' chain-of-thought boxes support the relation and contradict its reversal.
# 2. **Plausible replacements.** A masked language model (profile key `mlm.weights`) scores the
#    changed words in their sentence. The objects put in are those it finds most plausible
#    among the COCO categories the frame lacks; a reversed relation is kept only when it loses
#    at most a margin (in nats) to the original. The margin is chosen below, on training
#    stories only (validation stays held out for the blind check at the end).
# 3. **Adversarial filtering.** Each frame gets several candidates of each type; a blind
#    text-only classifier, cross-fitted over folds of training id blocks so that it never saw
#    the frame's own story, keeps the candidate it finds most like a positive. Validation and
#    test candidates are only scored, by a classifier fitted on training frames; the filter
#    never sees an image.
#
# The first, naive construction (whole-mention replacement, pattern-found relations) stays
# available, so the table at the end of the chapter can show what the three steps bought.
#
# Each pair is a row of the pairs table. Its text is kept with its tags (`tagged_text`) and
# with where it came from (`source_story_id`, `source_frame`); an edit records what it changed
# (`change`, `swapped_from`, `swapped_to`) and where the new words are in `text`
# (`swap_start`, `swap_end`; -1 when the text is not an edit: in the frame's own text the
# replaced words start at the same offset and end `len(own) - len(text)` characters later).
# `n_candidates` is how many candidates the negative was chosen from (0 for a positive) and
# `blind_score` the filter's probability that the negative kept is a positive (NaN when not
# filtered).

# %%
#@save
#: Kinds of negative pairs (``negative_type`` of the pairs table), in the spec's order; the one
#: definition, which :mod:`helpers.detection` and :mod:`helpers.evaluation` re-export.
NEGATIVE_TYPES: tuple[str, ...] = ("other_story", "same_story", "object_swap", "relation_swap")
PAIR_COLUMNS = [
    "pair_id", "story_id", "frame", "split", "label", "negative_type", "text", "tagged_text",
    "source_story_id", "source_frame", "change", "swapped_from", "swapped_to", "swap_start", "swap_end",
    "n_candidates", "blind_score",
]  # fmt: skip
#: Pair constructions (:func:`make_pairs`' ``variant``): the first, rule-based edits; fluent
#: edits drawn at random; fluent edits ranked by a language model and filtered adversarially.
VARIANTS: tuple[str, ...] = ("naive", "fluent", "adversarial")


def check_negative_types(types: Any) -> tuple[str, ...]:
    """``types`` as a tuple, after checking it is a non-empty list of distinct :data:`NEGATIVE_TYPES`: the kinds
    of negative :func:`make_pairs` builds, one of every listed kind that applies to a frame."""
    if isinstance(types, str) or not isinstance(types, Sequence) or not types or len(set(types)) != len(types) \
            or set(types) - set(NEGATIVE_TYPES):
        raise ValueError(f"negative_types needs distinct types among {NEGATIVE_TYPES}, got {types!r}")
    return tuple(types)


def profile_negative_types(pairs_cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """A profile's ``pairs.negative_types`` (:func:`check_negative_types`); the former ``negative_mix``, which
    drew one kind per frame, is refused."""
    if "negative_mix" in pairs_cfg:
        raise ValueError("the profile's pairs.negative_mix is gone: each frame gets one negative of every kind that "
                         "applies, so list the kinds to build in pairs.negative_types")
    if "negative_types" not in pairs_cfg:
        raise ValueError(f"the profile's pairs section needs negative_types (a list among {NEGATIVE_TYPES})")
    return check_negative_types(pairs_cfg["negative_types"])
_LEXICON_CATEGORIES = frozenset(COCO_CATEGORIES)


@dataclass(frozen=True)
class PairText:
    """The text of one pair, where it came from, and where an edit changed it (-1: not an edit)."""

    segment: Segment
    source_story_id: str
    source_frame: int
    change: str = ""
    swapped_from: str = ""
    swapped_to: str = ""
    swap_start: int = -1
    swap_end: int = -1

# %% [markdown]
# ### Writing an object into a sentence
#
# To put a COCO category where a noun stood, the edit needs its number and its article. The
# `inflect` package knows English plurals ("knife" -> "knives", "person" -> "people"; a
# multi-word category takes the number in its last word, "wine glasses"), singulars, and "a"
# or "an" by the sound of the next word ("an hour", "a unit", "an MRI", "a TV"). A few
# categories are not written as COCO names them ("TV", "hair dryer"). Two kinds of noun need
# more than a plural: a pair noun has no singular of its own ("a pair of scissors", "his
# scissors"), and a mass noun takes no "a" ("some broccoli") and cannot stand for a counted
# plural ("two cups" has no "two broccoli"). A head noun is plural when it is plural-only
# ("glasses", "scissors") or `inflect` reads a singular in it, unless it ends in -s and is
# singular by its spelling ("bus", "glass", "cactus") or by a known exception ("lens"), which
# `inflect` would cut to "bu" or "len".

# %%
#@save
#: How a COCO category is written in a sentence when its name is not the everyday word
#: (singular, plural). "TV" keeps its capitals wherever it stands; "scissors" and "skis"
#: have no singular of their own.
_CATEGORY_WORDS: dict[str, tuple[str, str]] = {
    "tv": ("TV", "TVs"), "skis": ("pair of skis", "skis"), "scissors": ("pair of scissors", "scissors"),
    "hair drier": ("hair dryer", "hair dryers"), "sports ball": ("ball", "balls"),
}  # fmt: skip
#: COCO categories named as a pair (plural only) and those not counted (no "a", no plural).
PAIR_CATEGORIES = frozenset({"scissors", "skis"})
MASS_CATEGORIES = frozenset({"broccoli"})
#: Nouns with no singular: always plural ("the glasses are", "a pair of scissors").
_PLURAL_ONLY = frozenset("scissors glasses eyeglasses sunglasses spectacles pants trousers jeans shorts "
                         "clothes binoculars headphones pliers tongs skis".split())
#: Singular nouns that end in s but not in ss/us/is (those are singular by rule).
_S_SINGULARS = frozenset("bus gas lens canvas atlas news series species chaos tennis christmas".split())
#: Determiners and quantifiers that ask for a plural noun.
_PLURAL_DETERMINERS = frozenset("these those many several few both two three four five six seven eight nine ten "
                                "dozens hundreds numerous various multiple".split())
_WORD_CHARS = re.compile(r"^([^\w]*)(.*?)([^\w]*)$", re.UNICODE)


@lru_cache(maxsize=1)
def _inflect() -> "inflect.engine":
    import inflect

    return inflect.engine()


def _bare(word: str) -> str:
    """A word lower-cased, without surrounding punctuation (curly apostrophes made straight)."""
    return _WORD_CHARS.match(word).group(2).lower().replace("\u2019", "'")


def _lexicon_known(word: str) -> bool:
    from helpers.objects import NOT_COCO, SYNONYMS

    return word in _LEXICON_CATEGORIES or word in SYNONYMS or word in NOT_COCO


def plural(noun: str) -> str:
    """The plural of a (possibly multi-word) noun: its last word takes the number."""
    *first, last = noun.split(" ")
    return " ".join([*first, last if last.lower() in _PLURAL_ONLY else _inflect().plural_noun(last)])


def is_plural(word: str) -> bool:
    """Whether a head noun is plural ("people", "glasses", "skis"; not "bus", "glass", "lens")."""
    low = _bare(word)
    if low in _PLURAL_ONLY:
        return True
    if low in _S_SINGULARS or low.endswith(("ss", "us", "is")) or len(low) < 3:
        return False
    singular = _inflect().singular_noun(low)
    return bool(singular) and singular != low


def category_words(category: str, *, plural_form: bool = False) -> str:
    """How a COCO category is written in running text, singular or plural ("TV", "pair of scissors")."""
    if category not in _LEXICON_CATEGORIES:
        raise ValueError(f"{category!r} is not a COCO category")
    if category in MASS_CATEGORIES:
        return category
    singular, many = _CATEGORY_WORDS.get(category, (category, None))
    return (many or plural(category)) if plural_form else singular


def article(word: str) -> str:
    """"a" or "an" before ``word``, by its sound (``inflect``)."""
    return _inflect().a(_WORD_CHARS.match(word).group(2) or "a").split(" ", 1)[0]

# %%
words = ["bus", "wine glass", "knife", "person", "glass", "hour", "umbrella", "unit", "TV"]
pd.DataFrame({"word": words, "article": [article(w) for w in words], "plural": [plural(w) for w in words],
              "word is plural": [is_plural(w) for w in words], "plural is plural": [is_plural(plural(w)) for w in words]})

# %% [markdown]
# A mention is a noun phrase: determiners and possessors ("the", "his", "the old man's"), then
# pre-modifiers, then the head noun, then maybe a complement ("of tea") or a relative clause.
# Only the head changes. A word before the head stays when it reads as an adjective (a list of
# common ones, and words with an adjective's ending: -ed, -ful, -ous, ...); any other word
# before the head is part of the noun ("coffee table", "car door") and goes with it, as does
# the head's complement ("a cup of tea" -> "a clock"). A quantity stays and the noun after it
# is the head ("a stack of books" -> "a stack of cups"). The new noun takes the old one's
# number ("two glasses" -> "two clocks", "a bus" -> "a dog"); "a"/"an" is chosen again for the
# word after it, and a bare singular gets one ("TV" -> "a clock"). Only a sentence start is
# capitalised. In a coordination ("boxes and a cup") the first alternative that names a COCO
# thing is the one edited. The head itself is found with the lexicon's tables (one to three
# words it knows as one thing), which chapter 02 explains.

# %%
#@save
#: Words before a noun kept as adjectives when they are here or end like an adjective; any
#: other word before the head noun is taken for part of the noun ("coffee table", "car
#: door") and goes with it.
_ADJECTIVES = frozenset(
    """old new young ancient modern antique small little tiny large big huge giant enormous tall short long wide
    narrow thick thin heavy light full half empty clean dirty dusty broken cracked worn shiny dark bright pale
    black white gray grey red blue green yellow orange purple pink brown golden silver cheap fancy simple plain
    strange odd familiar favorite favourite precious single lone only other same last first next nearby
    distant open closed wet dry hot cold warm cool fresh spare extra tidy messy neat rusty battered vintage
    wooden metal metallic plastic leather glass paper cardboard stone steel iron ornate elegant lavish sleek
    smooth rough soft hard round square flat low high bare lonely quiet loud faint mysterious""".split()
)  # fmt: skip
_ADJECTIVE_ENDINGS = ("ed", "ful", "ous", "ive", "ic", "al", "less", "able", "ible", "ish", "ing", "ary")
_ARTICLE_RE = re.compile(r"^(a|an)$", re.IGNORECASE)
#: Determiners before which a pair noun may be plural in a singular's place ("the scissors").
_PAIR_PLURAL_DETERMINERS = frozenset("the his her its their my your our".split())
#: Plural determiners that count: a pair noun after them is counted in pairs.
_COUNTING_DETERMINERS = _PLURAL_DETERMINERS - {"these", "those"}
_COORDINATION = re.compile(r"\s+(?:and|or|&)\s+|\s*,\s*|\s*/\s*", re.IGNORECASE)


def _is_adjective(word: str) -> bool:
    low = _bare(word)
    if not low:
        return False
    if low in _ADJECTIVES or "-" in low:
        return True
    if _lexicon_known(low):  # a noun the lexicon knows ("coffee" is not, "glass" is: see _ADJECTIVES)
        return False
    return len(low) > 4 and low.endswith(_ADJECTIVE_ENDINGS)


def _span_of_alternative(phrase: str) -> tuple[int, int]:
    """The span of the alternative to edit in a coordination: the first that names a COCO thing."""
    bounds = [0]
    for m in _COORDINATION.finditer(phrase):
        bounds += [m.start(), m.end()]
    bounds.append(len(phrase))
    parts = [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds), 2)]
    for start, end in parts:
        if to_coco(phrase[start:end]) is not None:
            return start, end
    return parts[0]


def _head_index(words: list[str]) -> tuple[int, int, int]:
    """``(first, head_start, head_end)``: where the determiners end and the head noun lies."""
    from helpers.objects import _DETERMINERS as DETERMINERS
    from helpers.objects import _PREPOSITIONS, _RELATIVES, _is_possessor, _lookup_suffix

    low = [_bare(w) for w in words]
    first = 0
    for i, w in enumerate(low):  # through the last possessor ("the old man's") before any preposition
        if w in _PREPOSITIONS or w in _RELATIVES:
            break
        if _is_possessor(w) or (w in DETERMINERS and i == first):
            first = i + 1
    end = len(words)
    for i in range(first, len(words)):
        if low[i] in _PREPOSITIONS or low[i] in _RELATIVES or words[i - 1].endswith((",", ";")) and i > first:
            end = i
            break
    if end == first:  # nothing but determiners: the last word is the head
        return max(0, end - 1), max(0, end - 1), end
    found = _lookup_suffix(low[first:end])
    n = len(found[0].split()) if found is not None else 1
    return first, end - n, end


# %%
rows = []
for phrase in ["the old man's coffee table", "a cup of tea on the shelf", "his broken phone", "two wine glasses"]:
    words = phrase.split()
    first, h0, h1 = _head_index(words)
    rows.append({"phrase": phrase, "determiners": " ".join(words[:first]), "before the head": " ".join(words[first:h0]),
                 "head": " ".join(words[h0:h1]), "after": " ".join(words[h1:]),
                 "adjectives kept": " ".join(w for w in words[first:h0] if _is_adjective(w))})
display(pd.DataFrame(rows).replace("", "n/a").style.hide(axis="index"))
alternatives = "boxes and a cup"
lo, hi = _span_of_alternative(alternatives)
display(Markdown(f"Of *{alternatives}* the edit takes *{alternatives[lo:hi]}* (characters {lo}-{hi})."))

# %% [markdown]
# With the head found, the edit keeps what stays, writes the new noun in the old one's number,
# and mends the article and the capital:

# %%
#@save
def swap_object_phrase(phrase: str, category: str, *, sentence_start: bool | None = None,
                       plural_ok: bool = False) -> str:
    """``phrase`` with its head noun replaced by the COCO ``category``, all else kept.

    A pair noun in a singular's place is "a pair of scissors", or "the/his scissors" when
    ``plural_ok`` (the caller mends the verb); a mass noun takes "some" for "a" and raises
    ``ValueError`` in a plural's place."""
    from helpers.objects import _PARTITIVES, _PREPOSITIONS, _RELATIVES

    phrase = " ".join(phrase.split())
    if not phrase:
        raise ValueError("swap_object_phrase needs a non-empty phrase")
    category_words(category)  # raises for an unknown category
    words = phrase.split(" ")
    if sentence_start is None:
        sentence_start = words[0][:1].isupper() and not (len(_bare(words[0])) > 1 and words[0].isupper())
    a, b = _span_of_alternative(phrase)
    if (a, b) != (0, len(phrase)):
        inner = swap_object_phrase(phrase[a:b], category, sentence_start=sentence_start and a == 0,
                                   plural_ok=plural_ok and b == len(phrase))
        return phrase[:a] + inner + phrase[b:]
    first, h0, h1 = _head_index(words)
    low = [_bare(w) for w in words]
    # "a stack of books": the quantity stays and the noun after "of" is the head.
    if h1 + 1 < len(words) and low[h1] == "of" and low[h1 - 1] in _PARTITIVES:
        rest = swap_object_phrase(" ".join(words[h1 + 1 :]), category, sentence_start=False, plural_ok=plural_ok)
        return " ".join(words[: h1 + 1] + [rest])
    determiners = low[:first]
    many = (is_plural(words[h1 - 1]) or any(w in _PLURAL_DETERMINERS for w in determiners)) and not (
        determiners and determiners[-1] in ("a", "an", "one", "another", "each", "every"))
    if many and category in MASS_CATEGORIES:
        raise ValueError(f"the mass noun {category!r} cannot stand for the plural {phrase!r}")
    # "his tie" -> "his scissors" (the caller mends the verb), else "a pair of scissors"
    many = many or (category in PAIR_CATEGORIES and plural_ok and bool(determiners)
                    and (determiners[-1] in _PAIR_PLURAL_DETERMINERS or determiners[-1].endswith("'s")))
    tail = words[h1:]
    if tail and low[h1] == "of":  # the head's complement goes with it: "a cup of tea"
        stop = next((i for i in range(1, len(tail)) if _bare(tail[i]) in _PREPOSITIONS | _RELATIVES
                     or tail[i - 1].endswith((",", ";"))), len(tail))
        tail = tail[stop:]
    punctuation = _WORD_CHARS.match(words[h1 - 1]).group(3)
    # (word, is new): what stays is written as it was, what is new is written in lower case
    out: list[tuple[str, bool]] = [(w, False) for w in words[:first]]
    out += [(w, False) for w in words[first:h0] if _is_adjective(w)]
    noun = category_words(category, plural_form=many)
    if many and category in PAIR_CATEGORIES and any(w in _COUNTING_DETERMINERS for w in determiners):
        noun = "pairs of " + noun  # "two pairs of scissors", "several pairs of skis"
    out.append((noun + punctuation.replace("'s", "").rstrip("'"), True))
    if first and _ARTICLE_RE.match(low[first - 1]):  # re-choose a/an for the word after it ("some": a mass noun)
        chosen = "some" if category in MASS_CATEGORIES else article(out[first][0])
        if chosen != low[first - 1]:
            out[first - 1] = (chosen, True)
    elif not first and not many and category not in MASS_CATEGORIES:  # a bare singular count noun takes an article
        out.insert(0, (article(out[0][0]), True))
    if sentence_start:
        if out[0][0] != words[0]:  # the original first word moved or changed: recase both
            out = [(w[:1].lower() + w[1:] if w == words[0] and not (len(_bare(w)) > 1 and w.isupper()) else w, new)
                   for w, new in out]
        out[0] = (out[0][0][:1].upper() + out[0][0][1:], out[0][1])
    return " ".join([w for w, _ in out] + tail)

# %% [markdown]
# Phrases of the kind the stories hold, each given a new object; the last column is the naive
# construction's edit (the category with the old determiner and a plural read off a final
# "s"), which gave the first version of this study its tell-tale "a cups":

# %%
#@save
_DETERMINERS = {"a", "an", "the", "his", "her", "its", "their", "my", "your", "our", "this", "that",
                "these", "those", "some"}  # fmt: skip


def _match_case(template: str, word: str) -> str:
    if len(template) > 1 and template.isupper():
        return word.upper()
    return word[0].upper() + word[1:] if template[:1].isupper() else word


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    return noun + "s"


def _object_phrase(old: str, category: str) -> str:
    """The naive construction's edit: ``category`` with ``old``'s determiner, cased like ``old``."""
    words = old.split()
    det = words[0] if len(words) > 1 and words[0].lower() in _DETERMINERS else ""
    plural = words[-1].lower().endswith("s") and not words[-1].lower().endswith("ss")
    noun = _plural(category) if plural else category
    if det.lower() in ("a", "an") or (not det and not plural):
        det = _match_case(det or old, "an" if noun[0] in "aeiou" else "a")
    return _match_case(old, f"{det} {noun}".strip())

# %%
phrases = ["a stack of books", "his old phone", "a coffee table", "two glasses", "a cup of tea", "TV",
           "boxes and a cup", "the man's umbrella", "An apple"]
pd.DataFrame({"mention": phrases, "-> cup": [swap_object_phrase(p, "cup") for p in phrases],
              "-> umbrella": [swap_object_phrase(p, "umbrella") for p in phrases],
              "naive -> cup": [_object_phrase(p, "cup") for p in phrases]})

# %% [markdown]
# ### Object swaps in a frame
#
# An edit is made in the tagged text (`helpers.tags.edit_segment` re-parses it) and fails when
# the span would cross a tag or nothing changes. It records where the changed words are, in
# whole words: the common words at both ends of the old and the new phrase are not part of the
# change. Whether a mention opens a sentence decides its capital.

# %%
#@save
def _diff_words(old: str, new: str) -> tuple[int, int, int]:
    """Where two phrases differ, in whole words: ``(offset, old length, new length)`` in characters."""
    a, b = old.split(" "), new.split(" ")
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    q = 0
    while q < min(len(a), len(b)) - p and a[-1 - q] == b[-1 - q]:
        q += 1
    offset = len(" ".join(a[:p])) + (1 if p else 0)
    return offset, len(" ".join(a[p : len(a) - q])), len(" ".join(b[p : len(b) - q]))


def _edit(story: ParsedStory, segment: Segment, start: int, end: int, new: str, change: str) -> PairText | None:
    """``segment`` with ``plain[start:end]`` replaced by ``new``; None if the span crosses a tag or nothing changes."""
    old = segment.plain[start:end]
    offset, old_len, new_len = _diff_words(old, new)
    if old == new or not old_len or not new_len:
        return None
    try:
        edited = edit_segment(segment, start, end, new)
    except ValueError:
        return None
    return PairText(segment=edited, source_story_id=story.story_id, source_frame=segment.frame, change=change,
                    swapped_from=old, swapped_to=new, swap_start=start + offset, swap_end=start + offset + new_len)


def _opens_sentence(plain: str, start: int) -> bool:
    before = plain[:start].rstrip(" \"'\u201c\u2018(")
    return not before or before[-1] in ".!?\u2026"


# %%
display(pd.DataFrame([(old, new, *_diff_words(old, new)) for old, new in [("a stack of books", "a stack of cups"),
                                                                             ("his phone", "his old clock")]],
                     columns=["old", "new", "offset", "old length", "new length"]).style.hide(axis="index"))
pd.DataFrame([(text, text[at:], _opens_sentence(text, at)) for text, at in [("He sits. A cup falls.", 9),
                                                                            ("He sits. a cup falls.", 3)]],
             columns=["text", "from", "opens a sentence"]).style.hide(axis="index")

# %% [markdown]
# In StoryReasoning a tag often holds only the noun, its determiner outside: `The <gdo
# obj4>refrigerator</gdo>`, `his <gdo obj2>tie</gdo>`, `A <gdo obj2>tie</gdo>`. The noun
# phrase starts before the tag, so the edit reads the words before it: a determiner,
# possessive or quantifier there (after any adjectives) is the phrase's own, and the phrase is
# edited from it ("The refrigerator" -> "The TV", not "The a TV"; "A tie" -> "An umbrella",
# keeping the capital). A pair noun may go plural in a singular's place ("his scissors") only
# where nothing or an adjacent present-tense verb follows, and that verb then agrees ("The tie
# hangs" -> "The scissors hang"); elsewhere it stays singular ("The pair of scissors behind him
# hums"). The edit of the plain text is then written into the tagged text piece by piece: the
# determiner outside the tag, the words inside it and the verb after it are each edited where
# they stand, so no edit crosses a tag and every tag keeps its words.

# %%
#@save
#: Words that open a noun phrase when they stand just before a tag: determiners, possessives, quantifiers.
_OPENERS = frozenset("a an the this that these those his her its their my your our some any no each every "
                     "another both several many few one two three four five six seven eight nine ten".split())
#: Words ending in -s after a noun that are not a present-tense verb.
_NOT_VERBS = frozenset("as is was has does its his hers this thus us across towards besides always perhaps "
                       "sometimes nevertheless less unless whereas".split())
_WORD_BEFORE = re.compile(r"(?:^|(?<=\s))(\S+) $")
_NEXT_WORD = re.compile(r" ([a-z]+)\b(?!['\u2019-])")


def phrase_start(plain: str, start: int, text: str) -> int:
    """Where the noun phrase of a mention (``text`` at ``start``) begins: at its determiner,
    possessive or quantifier when one stands before the tag (after any adjectives), else ``start``."""
    words = text.split()
    if words and (_bare(words[0]) in _OPENERS or _bare(words[0]).endswith("'s")):
        return start  # the tag holds its own determiner
    pos = start
    for _ in range(4):
        found = _WORD_BEFORE.search(plain, 0, pos)
        if found is None or _bare(found.group(1)) != found.group(1).lower().replace("\u2019", "'"):
            return start  # the sentence's start, or punctuation between the words
        low = _bare(found.group(1))
        if low in _OPENERS or (low.endswith("'s") and len(low) > 2):
            return found.start(1)
        if not _is_adjective(low):
            return start
        pos = found.start(1)
    return start


def _present_verb(word: str) -> str | None:
    """The plural of a third-person present verb ("hangs" -> "hang", "is" -> "are"); None if not one."""
    if word in ("is", "was", "has", "does"):
        return {"is": "are", "was": "were", "has": "have", "does": "do"}[word]
    if word in _NOT_VERBS or not word.endswith("s") or word.endswith("ss") or len(word) < 3:
        return None
    verb = _inflect().plural_verb(word)
    return verb if verb != word else None


def object_phrase_edit(plain: str, mention: Mention, category: str) -> tuple[int, int, str] | None:
    """The plain-text edit that puts ``category`` in place of ``mention``'s head noun:
    ``(start, end, new words)``, the span extended over a determiner before the tag and over
    a verb that must agree; None when the category cannot stand there (a mass noun for a plural,
    a possessor)."""
    if re.match(r"['\u2019]", plain[mention.end : mention.end + 1]) or mention.text.endswith(("'s", "\u2019s")):
        return None  # a possessor ("the car's engine"): whatever is put in, its engine gives it away
    start = phrase_start(plain, mention.start, mention.text)
    old = plain[start : mention.end]
    opens = _opens_sentence(plain, start)
    verb = _NEXT_WORD.match(plain, mention.end)
    plural_verb = _present_verb(verb.group(1)) if verb else None
    ends = not plain[mention.end :].strip() or plain[mention.end] in ".;:!?"  # not a comma: "which hangs" may follow
    try:
        new = swap_object_phrase(old, category, sentence_start=opens, plural_ok=ends or plural_verb is not None)
        singular = swap_object_phrase(old, category, sentence_start=opens)
    except ValueError:
        return None
    if new != singular and plural_verb is not None:  # "The scissors hang": the verb agrees
        return start, verb.end(1), new + plain[mention.end : verb.start(1)] + plural_verb
    return start, mention.end, new

# %%
from helpers.tags import parse_segment  # extra code: the examples' tagged text

examples = [("The <gdo obj4>refrigerator</gdo> behind <gdo char1>him</gdo> hums.", "tv"),
            ("John stood alone, his <gdo obj2>tie</gdo> neatly knotted.", "cup"),
            ("A <gdo obj2>tie</gdo> hangs on the door.", "umbrella"),
            ("The <gdo obj2>tie</gdo> hangs on the door.", "scissors"),
            ("The <gdo obj2>tie</gdo> on the door hangs.", "scissors")]
rows = []
for tagged, category in examples:
    example = parse_segment(tagged, 1)
    m = next(x for x in example.mentions if x.kind == "obj")
    a, b, words = object_phrase_edit(example.plain, m, category)
    rows.append({"sentence": example.plain, "category put in": category, "old words": example.plain[a:b], "new words": words})
display(pd.DataFrame(rows).style.hide(axis="index"))
object_mentions = [(seg, m) for s in stories for seg in s.segments for m in seg.mentions if m.kind == "obj"]
n_outside = sum(phrase_start(seg.plain, m.start, m.text) < m.start for seg, m in object_mentions)
display(Markdown(f"In this profile's stories, {n_outside} of the {len(object_mentions)} object mentions "
                 f"({n_outside / max(len(object_mentions), 1):.0%}) have their determiner before the tag."))

# %% [markdown]
# The edit goes into the tagged text in pieces, each where it stands:

# %%
#@save
def _edit_pieces(plain: str, start: int, end: int, new: str, mention: Mention) -> list[tuple[int, int, str]] | None:
    """A plain-text edit split where the tag stands: the words before it (one piece each), the
    mention, and what follows it, each ``(start, end, new)``; None if the words do not line up."""
    before = plain[start : mention.start].split()
    new_words = new.split(" ")
    after = plain[mention.end : end].split()
    n_inside = len(new_words) - len(before) - len(after)
    if n_inside < 1 or plain[start : mention.start] != " ".join(before) + (" " if before else ""):
        return None
    if any(n.lower() != o.lower() and not (_bare(o) in ("a", "an") and _bare(n) in ("a", "an", "some"))
           for n, o in zip(new_words, before)):
        return None  # a word before the tag was dropped or moved: no piece-by-piece edit
    pieces, pos = [], start
    for k, word in enumerate(before):
        pieces.append((pos, pos + len(word), new_words[k]))
        pos += len(word) + 1
    pieces.append((mention.start, mention.end, " ".join(new_words[len(before) : len(before) + n_inside])))
    if after:
        pieces.append((end - len(after[-1]), end, new_words[-1]))
    return [piece for piece in pieces if plain[piece[0] : piece[1]] != piece[2]]


def _edit_parts(story: ParsedStory, segment: Segment, start: int, end: int, new: str, mention: Mention,
                change: str) -> PairText | None:
    """:func:`_edit` of a span that starts before a mention's tag: each piece edited where it stands."""
    plain = segment.plain
    pieces = _edit_pieces(plain, start, end, new, mention)
    old = plain[start:end]
    offset, old_len, new_len = _diff_words(old, new)
    if not pieces or not old_len or not new_len:
        return None
    edited = segment
    try:
        for a, b, words in sorted(pieces, reverse=True):  # from the right: offsets to the left stay valid
            edited = edit_segment(edited, a, b, words)
    except ValueError:
        return None
    if edited.plain != plain[:start] + new + plain[end:]:
        raise AssertionError(f"the edit in pieces wrote {edited.plain!r}")
    return PairText(segment=edited, source_story_id=story.story_id, source_frame=segment.frame, change=change,
                    swapped_from=old, swapped_to=new, swap_start=start + offset, swap_end=start + offset + new_len)

# %%
rows = []
for tagged, category in examples:
    example = parse_segment(tagged, 1)
    m = next(x for x in example.mentions if x.kind == "obj")
    a, b, words = object_phrase_edit(example.plain, m, category)
    done = _edit_parts(ParsedStory("0", 1, (example,), None), example, a, b, words, m, "")
    rows.append({"tagged": example.tagged, "edited": done.segment.tagged})
pd.DataFrame(rows).style.hide(axis="index").format(escape="html")  # the tags shown as text

# %% [markdown]
# A replacement must be false of the frame, and a near-synonym may not be: a cell phone in the
# hand is called a remote at a glance, a cup a glass, a truck a car. Such categories never
# replace one another, nor stand in for anything the frame has. The table is kept short and
# conservative: only categories a person would name alike or mistake for one another at a
# glance in a 240-pixel frame, by shape and use, not by topic:
#
# - hand-held dark rectangles: cell phone, remote, mouse;
# - drinking vessels, all "a glass" to a casual reader: cup, wine glass, bottle;
# - road vehicles seen in part or from afar: car, truck, bus; two-wheelers: bicycle, motorcycle;
# - things to sit or lie on: chair, couch, bench, bed;
# - bags: handbag, backpack, suitcase;
# - screens: tv, laptop; kitchen boxes: microwave, oven, refrigerator;
# - cutlery: fork, knife, spoon; round fruit: apple, orange; a plant in a pot or a vase of flowers;
#   a bear or a teddy bear; a sandwich or a hot dog; a donut or a cake; a dog or a cat.

# %%
#@save
#: COCO categories a person would name alike or confuse at a glance; none replaces another of its group.
CONFUSABLE_GROUPS: tuple[frozenset[str], ...] = tuple(frozenset(g.split(",")) for g in (
    "cell phone,remote,mouse", "cup,wine glass,bottle", "car,truck,bus", "bicycle,motorcycle",
    "chair,couch,bench,bed", "handbag,backpack,suitcase", "tv,laptop", "microwave,oven,refrigerator",
    "fork,knife,spoon", "apple,orange", "potted plant,vase", "bear,teddy bear", "sandwich,hot dog",
    "donut,cake", "dog,cat",
))  # fmt: skip


def confusable_with(categories: Iterable[str | None]) -> set[str]:
    """The categories a person could take for any of ``categories`` (themselves excluded unless confusable)."""
    given = set(categories)
    return {c for group in CONFUSABLE_GROUPS if group & given for c in group} - given

# %%
pd.DataFrame({"category": [c for g in CONFUSABLE_GROUPS for c in sorted(g)]}).assign(
    never_replaced_by=lambda t: [", ".join(sorted(confusable_with([c]))) for c in t["category"]])

# %% [markdown]
# The mentions an object swap may replace are the `<gdo>` mentions that name a COCO category
# other than a person. What the frame already has is known from its chain-of-thought tables
# (characters and objects, read into categories) and from the segment's own mentions; the
# replacement must be none of these, so the edited text is false of the frame. A frame with no
# chain-of-thought section has nothing to check against and gets no object swap. The first
# frame of this profile's stories where an object swap applies serves as the example from here on:

# %%
#@save
def _object_targets(story: ParsedStory, segment: Segment) -> tuple[list[tuple[Mention, str]], set[str | None]] | None:
    """The mentions an object swap may replace and the categories the frame already has (None: none)."""
    frame = story.cot.frames.get(segment.frame)
    if frame is None:
        return None
    mapped = [(m, to_coco(m.text)) for m in segment.mentions]
    targets = [(m, category) for m, category in mapped if category not in (None, "person")]
    if not targets:
        return None
    present = {"person", *(category for _, category in mapped)}
    present |= {char_category(e.description) for e in frame.characters}
    present |= {to_coco(e.description) for e in frame.objects}
    return targets, present


# %%
demo = next(((s, seg) for s in stories for seg in s.segments if _object_targets(s, seg) is not None), None)
if demo is None:
    display(Markdown("No frame of this profile's stories has a mention an object swap can replace."))
else:
    demo_story, demo_segment = demo
    targets, present = _object_targets(demo_story, demo_segment)
    display(Markdown(f"Story {demo_story.story_id}, frame {demo_segment.frame}: {demo_segment.plain}\n\n"
                     f"- mentions to replace: {', '.join(f'{m.text!r} ({c})' for m, c in targets)}\n"
                     f"- categories the frame has: {', '.join(sorted(c for c in present if c))}"))

# %% [markdown]
# Every (mention, absent category) is a draft, written by `swap_object_phrase`; the adversarial
# construction ranks them all, the fluent one draws one (below). A draft is plain text until it
# is chosen, since re-parsing the tagged text of every draft would cost more than scoring it.

# %%
#@save
def _object_edit(story: ParsedStory, segment: Segment, mention: Mention, old_category: str,
                 category: str) -> PairText | None:
    found = object_phrase_edit(segment.plain, mention, category)
    if found is None:
        return None
    start, end, new_text = found
    old = segment.plain[start:end]
    return _edit_parts(story, segment, start, end, new_text, mention,
                       f'object "{old}" -> "{new_text}" ({old_category} -> {category})')


def _object_drafts(story: ParsedStory, segment: Segment,
                   categories: Sequence[str] | None = None) -> list[tuple[str, int, int, Mention, str, str]]:
    """The object swaps as plain-text drafts: ``(text, swap_start, swap_end, mention, old, new category)``."""
    found = _object_targets(story, segment)
    if found is None:
        return []
    targets, present = found
    pool = [c for c in (categories or COCO_CATEGORIES) if c != "person" and c not in present]
    plain, drafts = segment.plain, []
    for mention, old_category in targets:
        alike = confusable_with({old_category, *present})
        for category in pool:
            if category in alike:
                continue
            edit = object_phrase_edit(plain, mention, category)
            if edit is None:
                continue
            a, b, new = edit
            offset, old_len, new_len = _diff_words(plain[a:b], new)
            if new == plain[a:b] or not old_len or not new_len:
                continue
            drafts.append((plain[:a] + new + plain[b:], a + offset, a + offset + new_len, mention,
                           old_category, category))
    return drafts

# %%
if demo is not None:
    drafts = _object_drafts(demo_story, demo_segment)
    display(pd.DataFrame([{"mention": d[3].text, "new words": d[0][d[1]:d[2]], "category": d[5]} for d in drafts])
            .groupby("mention").head(3).reset_index(drop=True))

# %% [markdown]
# The fluent construction draws one mention and one replacement at random. Replacements are
# drawn from the COCO categories a film frame of that kind of place could plausibly show
# (indoor, or outdoor when the frame's setting or locations say so), so that a random draw is
# not given away by being absurd. The adversarial construction below instead ranks every
# absent category with a language model.

# %%
#@save
#: Replacement objects for ``object_swap``: COCO categories a film frame of that kind of
#: place could plausibly show, so the edit is not given away by being absurd.
INDOOR_OBJECTS = (
    "backpack", "bed", "book", "bottle", "cell phone", "chair", "clock", "couch", "cup",
    "dining table", "handbag", "laptop", "microwave", "potted plant", "refrigerator",
    "sink", "suitcase", "teddy bear", "tv", "umbrella", "vase", "wine glass",
)  # fmt: skip
OUTDOOR_OBJECTS = (
    "backpack", "bench", "bicycle", "bird", "boat", "bus", "car", "dog", "fire hydrant",
    "handbag", "horse", "motorcycle", "stop sign", "traffic light", "truck", "umbrella",
)  # fmt: skip
_OUTDOOR = re.compile(
    r"\b(outdoors?|outside|exterior|street|road|city|cityscape|park|forest|woods|field|beach|"
    r"sky|garden|yard|desert|mountains?|countryside|village|town|alley|parking|highway|river)\b",
    re.IGNORECASE,
)


def object_swap(story: ParsedStory, segment: Segment, rng: random.Random, *, naive: bool = False) -> PairText | None:
    """Replace one COCO object mention by a category absent from the frame (None when none applies)."""
    found = _object_targets(story, segment)
    if found is None:
        return None
    targets, present = found
    frame = story.cot.frames[segment.frame]
    place = " ".join([*(v for row in frame.setting for v in row.values()), *(m.text for m in segment.locations)])
    pool = OUTDOOR_OBJECTS if _OUTDOOR.search(place) else INDOOR_OBJECTS
    replacements = [c for c in pool if c not in present]
    if not replacements:
        return None
    mention, old_category = rng.choice(targets)
    if not naive:  # nothing a person would name alike, or mistake at a glance, for what the frame has
        replacements = [c for c in replacements if c not in confusable_with({old_category, *present})]
        if not replacements:
            return None
    new_category = rng.choice(replacements)
    if not naive:
        return _object_edit(story, segment, mention, old_category, new_category)
    new_text = _object_phrase(mention.text, new_category)
    return PairText(
        segment=edit_segment(segment, mention.start, mention.end, new_text),
        source_story_id=story.story_id,
        source_frame=segment.frame,
        change=f'object "{mention.text}" -> "{new_text}" ({old_category} -> {new_category})',
        swapped_from=mention.text,
        swapped_to=new_text,
        swap_start=mention.start,
        swap_end=mention.start + len(new_text),
    )

# %% [markdown]
# The example frame edited both ways, with the same draw (on a bare "a remote" both write the
# same; the table of phrases above shows where they part):

# %%
fluent_swap = naive_swap = None
if demo is not None:
    fluent_swap = object_swap(demo_story, demo_segment, random.Random(0))
    naive_swap = object_swap(demo_story, demo_segment, random.Random(0), naive=True)
    display(Markdown(f"- fluent: {fluent_swap.change if fluent_swap else 'none'}\n"
                     f"- naive: {naive_swap.change if naive_swap else 'none'}"))

# %% [markdown]
# ### Relation swaps
#
# Relations are read from the segment as chapter 04 explains (`extract_relations`, with the
# frame's characters described by `character_descriptions` of chapter 02). A relation is
# reversed only when it passes every check below, in this order (the first it fails is the one
# counted against it):
#
# 1. **An opposite.** Its phrase has an opposite that keeps the sentence sensible: "near",
#    "in" and the agent phrases ("sits on", "holds") have none and are never swapped.
# 2. **Two visible things.** Both of its sides are things the frame can show: a person or a
#    COCO thing, or a `<gdo>` mention all of whose ids have a box in the frame's chain of
#    thought, and whose head is not scenery (floor, wall, sky, ...).
# 3. **Boxes.** Both sides have their chain-of-thought boxes: a mention's are the boxes of its
#    ids (each must have one, with an area); an untagged COCO thing's is the box of the one
#    entity of the frame whose description names the same category (none, or several: no box).
# 4. **The boxes support the original.** Chapter 04's geometric rule of the relation
#    (`relation_holds`) holds for every subject box against every object box.
# 5. **The boxes contradict the reversal.** The rule of the reversed relation holds for none.
#
# Otherwise the edit would change something no image can refute, or turn a statement the frame
# does not show into one it does not show either. The boxes are annotations: they decide which
# negatives are made (a label), never a feature of a pair. The rules of the reversible relations
# compare the two boxes only (the image size enters only "near", never reversed), so the image
# size they are given is the extent of the frame's boxes. An edit that would cross a tag is not
# made either (6).

# %%
#@save
#: Relation phrases (of :data:`helpers.spatial.RELATION_PHRASES`) and their reversal. "near",
#: "in" and the agent phrases ("sits on", "holds") have no opposite that keeps the sentence
#: sensible, so they are never swapped.
REVERSED_PHRASES: dict[str, str] = {
    "on": "under", "on top of": "underneath", "atop": "beneath", "rests on": "rests under",
    "resting on": "resting under", "placed on": "placed under", "under": "on", "underneath": "on top of",
    "beneath": "above", "above": "below", "below": "above", "behind": "in front of", "in front of": "behind",
    "left of": "right of", "right of": "left of", "to the left of": "to the right of",
    "to the right of": "to the left of", "on the left of": "on the right of", "on the right of": "on the left of",
}  # fmt: skip
#: A reversible relation's opposite (the canonical relations of :data:`helpers.spatial.RELATIONS`).
OPPOSITE_RELATIONS: dict[str, str] = {
    "on": "under", "under": "on", "above": "below", "below": "above", "behind": "in front of",
    "in front of": "behind", "left of": "right of", "right of": "left of",
}  # fmt: skip
#: The checks a relation must pass to be reversed, in the order applied (:func:`relation_swap_review`).
RELATION_CHECKS: tuple[str, ...] = (
    "no opposite", "not visible", "no boxes", "boxes contradict the original", "boxes allow the reversal",
    "crosses a tag",
)  # fmt: skip
#: Head nouns of things no box can stand for as a relation's side, even when annotated.
_SCENERY = frozenset(
    "floor floors ground sky wall walls ceiling room hallway corridor air distance background horizon street "
    "road grass water sea space darkness light lighting shadow shadows world scene".split()
)


def _boxable(segment: Segment, text: str, category: str | None, start: int, boxed: set[str]) -> bool:
    """Whether a relation's side is a thing the frame can show (a person, a COCO thing, a boxed non-scenery mention)."""
    words = [w.strip(".,;:!?\"'").lower() for w in text.split()]
    if not words or words[-1] in _SCENERY:
        return False
    if category is not None:
        return True
    mention = next((m for m in segment.mentions if m.start == start and m.text == text), None)
    return mention is not None and bool(mention.ids) and set(mention.ids) <= boxed


def _has_area(box: Sequence[float] | None) -> bool:
    return box is not None and box[2] > box[0] and box[3] > box[1]


def argument_boxes(segment: Segment, frame: "FrameAnnotation | None", text: str, category: str | None,
                   start: int) -> list[tuple[float, float, float, float]]:
    """The chain-of-thought boxes of a relation's side (``text`` at ``start``): its mention's ids' boxes
    (every id boxed), else the box of the frame's one boxed entity of ``category``; [] when there are none."""
    if frame is None:
        return []
    boxes = {e.id: e.box for e in (*frame.characters, *frame.objects) if _has_area(e.box)}
    mention = next((m for m in segment.mentions if m.start == start and m.text == text), None)
    if mention is not None and mention.ids:
        return [boxes[i] for i in mention.ids] if set(mention.ids) <= set(boxes) else []
    if category is None:
        return []
    same = [e.box for e in frame.characters if _has_area(e.box) and char_category(e.description) == category]
    same += [e.box for e in frame.objects if _has_area(e.box) and to_coco(e.description) == category]
    return same if len(same) == 1 else []


def relation_swap_review(story: ParsedStory, segment: Segment) -> list[tuple[str, PairText | None]]:
    """Every relation of ``segment`` with the first of :data:`RELATION_CHECKS` it fails ("" when it
    passes them all) and its reversal in place (None unless it passes)."""
    from helpers.objects import character_descriptions
    from helpers.spatial import RELATION_PHRASES, extract_relations, relation_holds

    canonical = {p: r for r, phrases in RELATION_PHRASES.items() for p in phrases}
    frame = story.cot.frames.get(segment.frame)
    entities = (*frame.characters, *frame.objects) if frame else ()
    boxed = {e.id for e in entities if e.box is not None}
    framed = [e.box for e in entities if _has_area(e.box)]
    size = (max(b[2] for b in framed), max(b[3] for b in framed)) if framed else None
    plain = segment.plain
    review: list[tuple[str, PairText | None]] = []
    for rel in extract_relations(segment, character_descriptions(story.cot, segment.frame)):
        phrase = " ".join(rel.phrase.lower().split())
        if phrase not in REVERSED_PHRASES:
            review.append(("no opposite", None))
            continue
        subject_end, object_start = rel.span[0] + len(rel.subject), rel.span[1] - len(rel.object)
        if not (_boxable(segment, rel.subject, rel.subject_category, rel.span[0], boxed)
                and _boxable(segment, rel.object, rel.object_category, object_start, boxed)):
            review.append(("not visible", None))
            continue
        subjects = argument_boxes(segment, frame, rel.subject, rel.subject_category, rel.span[0])
        objects = argument_boxes(segment, frame, rel.object, rel.object_category, object_start)
        if not subjects or not objects:
            review.append(("no boxes", None))
            continue
        new = REVERSED_PHRASES[phrase]
        opposite = canonical.get(new, OPPOSITE_RELATIONS[rel.relation])
        box_pairs = [(s, o) for s in subjects for o in objects]
        if not all(relation_holds(rel.relation, s, o, size) for s, o in box_pairs):
            review.append(("boxes contradict the original", None))
            continue
        if any(relation_holds(opposite, s, o, size) for s, o in box_pairs):
            review.append(("boxes allow the reversal", None))
            continue
        found = re.search(rf"\b{re.escape(rel.phrase)}\b", plain[subject_end:object_start])
        option = None
        if found is not None:
            start, end = subject_end + found.start(), subject_end + found.end()
            old = plain[start:end]
            new = new[0].upper() + new[1:] if old[:1].isupper() else new
            option = _edit(story, segment, start, end, new, f'relation "{old}" -> "{new}"')
        review.append(("crosses a tag", None) if option is None else ("", option))
    return review


def relation_swap_options(story: ParsedStory, segment: Segment) -> list[PairText]:
    """Every relation of ``segment`` that passes the checks of :func:`relation_swap_review`, reversed in place."""
    return [option for reason, option in relation_swap_review(story, segment) if not reason]

# %% [markdown]
# The naive construction, kept for comparison, reversed any spatial expression found by pattern
# (left/right, above/below, in front of/behind, on/under a surface), whatever it related. The
# context around each pattern keeps the plainly non-spatial uses out ("James left the room",
# "the right decision", "leave behind the past"), but not "lies motionless under the floor".

# %%
#@save
#: Spatial expressions and their opposites. Each pattern's group ``w`` is the part to
#: swap; the context around it keeps non-spatial uses out ("James left the room", "the
#: right decision", "leave behind the past", "on the other side").
_SWAP = {"left": "right", "right": "left", "above": "below", "below": "above",
         "in front of": "behind", "behind": "in front of", "on": "under", "under": "on"}  # fmt: skip
_SURFACES = r"floor|ground|table|desk|bed|couch|sofa|chair|bench|shelf|counter|grass|sand|roof|stairs|steps"
_RELATIONS = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        (
            r"\b(?:the|his|her|their|its)\s+(?P<w>left|right)\b"
            r"(?=\s+(?:side|hand|arm|leg|shoulder|corner|edge|wall|half|of)\b|\s*[.,;:!?]|\s*$)"
        ),
        r"\b(?P<w>above|below)\b",
        r"\b(?P<w>in front of)\b",
        (
            r"(?<!left )(?<!leave )(?<!leaves )(?<!leaving )(?<!stay )(?<!stays )(?<!stayed )"
            r"(?<!fall )(?<!fell )\b(?P<w>behind)\b(?=\s+\w)"
        ),
        rf"\b(?P<w>on|under)\s+(?:the|a|an|his|her|their|its)\s+(?:{_SURFACES})\b",
    )
)


def relation_swap(story: ParsedStory, segment: Segment, rng: random.Random, *, naive: bool = False) -> PairText | None:
    """Reverse one spatial relation of ``segment`` (``naive``: any spatial expression), or None."""
    if not naive:
        options = relation_swap_options(story, segment)
        return rng.choice(options) if options else None
    matches = sorted({(m.start("w"), m.end("w")) for pattern in _RELATIONS for m in pattern.finditer(segment.plain)})
    rng.shuffle(matches)
    for start, end in matches:
        old = segment.plain[start:end]
        new = _match_case(old, _SWAP[old.lower()])
        try:
            edited = edit_segment(segment, start, end, new)
        except ValueError:  # the expression crosses a tag: try another one
            continue
        return PairText(
            segment=edited,
            source_story_id=story.story_id,
            source_frame=segment.frame,
            change=f'relation "{old}" -> "{new}"',
            swapped_from=old,
            swapped_to=new,
            swap_start=start,
            swap_end=start + len(new),
        )
    return None

# %%
train_stories = [s for s in stories if split_of[s.story_id] == "train"]  # examples are shown from training only
rel_demo = next(((s, seg, opts) for s in train_stories for seg in s.segments
                 if (opts := relation_swap_options(s, seg))), None)
naive_demo = next(((s, seg, n) for s in train_stories for seg in s.segments
                   if (n := relation_swap(s, seg, random.Random(0), naive=True))), None)
lines = []
if rel_demo is not None:
    lines.append(f"- story {rel_demo[0].story_id}, frame {rel_demo[1].frame}: "
                 + "; ".join(o.change for o in rel_demo[2]))
if naive_demo is not None:
    lines.append(f"- naive, story {naive_demo[0].story_id}, frame {naive_demo[1].frame}: {naive_demo[2].change}")
display(Markdown("Relation swaps:\n\n" + ("\n".join(lines) or "none in this profile's stories.")))

# %% [markdown]
# ### Texts of other frames
#
# A `same_story` negative is another frame's segment of the same story (a different text). An
# `other_story` negative is a segment of a story of the same split at least two id blocks away
# (else one block away): `peers` are the split's stories in id order, cut into blocks exactly
# as the split cut them. A row of the pairs table is written from a `PairText`.

# %%
#@save
def _same_story(story: ParsedStory, segment: Segment, rng: random.Random, k: int = 1) -> list[PairText]:
    others = [s for s in story.segments if s.frame != segment.frame and s.plain != segment.plain]
    donors = rng.sample(others, min(k, len(others))) if k > 1 else ([rng.choice(others)] if others else [])
    return [PairText(segment=d, source_story_id=story.story_id, source_frame=d.frame) for d in donors]


def _other_story(peers: Sequence[ParsedStory], position: int, block_size: int, rng: random.Random) -> PairText | None:
    """A segment of a story of the same split at least two blocks away, else one block away."""
    block = position // block_size
    for gap in (2, 1):
        lo = max(0, (block - gap + 1) * block_size)
        hi = min(len(peers), (block + gap) * block_size)
        n_far = lo + len(peers) - hi
        if n_far:
            r = rng.randrange(n_far)
            donor = peers[r if r < lo else hi + r - lo]
            source = rng.choice(donor.segments)
            return PairText(segment=source, source_story_id=donor.story_id, source_frame=source.frame)
    return None


def _has_other_block(peers: Sequence[ParsedStory], position: int, block_size: int) -> bool:
    """Whether the split has a story outside the block of the one at ``position``."""
    block = position // block_size
    return len(peers) > min(len(peers), (block + 1) * block_size) - block * block_size


def _other_stories(peers: Sequence[ParsedStory], position: int, block_size: int, rng: random.Random,
                   k: int) -> list[PairText]:
    """Up to ``k`` distinct :func:`_other_story` donors."""
    found: dict[tuple[str, int], PairText] = {}
    for _ in range(3 * k):
        donor = _other_story(peers, position, block_size, rng)
        if donor is None:
            break
        found.setdefault((donor.source_story_id, donor.source_frame), donor)
        if len(found) == k:
            break
    return list(found.values())


def _row(story_id: str, frame: int, split: str, label: int, kind: str, text: PairText) -> dict[str, object]:
    return {
        "pair_id": f"{story_id}-{frame}-pos" if label else f"{story_id}-{frame}-neg-{kind}",
        "story_id": story_id,
        "frame": frame,
        "split": split,
        "label": label,
        "negative_type": kind,
        "text": text.segment.plain,
        "tagged_text": text.segment.tagged,
        "source_story_id": text.source_story_id,
        "source_frame": text.source_frame,
        "change": text.change,
        "swapped_from": text.swapped_from,
        "swapped_to": text.swapped_to,
        "swap_start": text.swap_start,
        "swap_end": text.swap_end,
    }

# %%
block_size = ctx.cfg["data"]["block_size"]
peers = sorted((s for s in stories if split_of[s.story_id] == "train"), key=lambda s: int(s.story_id))
same = _same_story(peers[0], peers[0].segments[0], random.Random(0))
other = _other_story(peers, 0, block_size, random.Random(0))
block_of = id_blocks([s.story_id for s in peers], block_size)
display(Markdown(f"Story {peers[0].story_id} (block {block_of[peers[0].story_id]}), frame 1: `same_story` gives "
                 f"frame {same[0].source_frame if same else '-'}; `other_story` gives story "
                 f"{other.source_story_id if other else '-'}"
                 + (f" (block {block_of[other.source_story_id]})." if other else ".")))

# %% [markdown]
# ## Plausibility
#
# A masked language model judges how plausible the changed words are in their sentence: the
# log-probability of a span of text in its context, as a pseudo-log-likelihood (Salazar et
# al., 2020): each token of the span is masked in turn and the model's log-probability of the
# true token there is averaged over the span's tokens, a mean per token, so that a replacement
# of few tokens is not favoured for its length alone (`helpers.mlm.span_logprob`; every score
# is cached on disk). An edit is scored in the sentence that holds it (chapter 03 explains how
# sentences are split), once with the new words and once, in the original sentence, with the
# words they replaced; the difference is the edit's plausibility, in nats per token (0: as
# plausible as the original; -3: each token e^3 times less). Chapter 07 reports the two
# log-probabilities on their own as `mlm_plausibility`, labelled for what it is: the selection
# criterion, near chance by construction, since the object put in is the one this score ranks
# highest and a reversed relation is kept only when this score says it reads about as well. A
# language model the construction never used (a causal one, of another family) is chapter 07's
# `causal_lm` control.

# %%
#@save
@lru_cache(maxsize=1 << 12)
def _sentence_bounds(plain: str) -> tuple[tuple[int, int], ...]:
    """Character spans of the sentences of a whitespace-normalised text."""
    from helpers.semantics import split_sentences

    bounds, pos = [], 0
    for sentence in split_sentences(plain):
        start = plain.index(sentence, pos)
        bounds.append((start, start + len(sentence)))
        pos = start + len(sentence)
    return tuple(bounds) or ((0, len(plain)),)


def is_in_place_edit(original: str, edited: str, start: int, end: int) -> bool:
    """Whether ``edited`` is ``original`` with only ``edited[start:end]`` changed (the rest equal)."""
    end_old = end + len(original) - len(edited)
    return 0 <= start <= end and original[:start] == edited[:start] and original[end_old:] == edited[end:]


def edit_plausibility(mlm: "Mlm", edits: Sequence[tuple[str, str, int, int]], cache_dir: str | os.PathLike,
                      *, batch_size: int = 64) -> np.ndarray:
    """How much less plausible each edit's changed words are than the words they replaced (nats per token)."""
    edited, original = edit_logprobs(mlm, edits, cache_dir, batch_size=batch_size)
    return edited - original


def edit_logprobs(mlm: "Mlm", edits: Sequence[tuple[str, str, int, int]], cache_dir: str | os.PathLike,
                  *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(edited, original)``: the log-probability of each edit's new words and of the words they replaced."""
    from helpers.mlm import span_logprob

    items_new, items_old = [], []
    for original, edited, start, end_new in edits:
        end_old = end_new + len(original) - len(edited)
        if not is_in_place_edit(original, edited, start, end_new):
            raise ValueError(f"{edited[start:end_new]!r} is not an in-place edit of its original text")
        a, b = next(((a, b) for a, b in _sentence_bounds(original) if a <= start < b), (0, len(original)))
        b = max(b, end_old)
        b_new = b + end_new - end_old
        items_old.append((original[a:b], start - a, end_old - a))
        items_new.append((edited[a:b_new], start - a, end_new - a))
    scores = span_logprob(mlm, items_new + items_old, cache_dir, batch_size=batch_size)
    return scores[: len(edits)], scores[len(edits) :]

# %%
pc = ctx.cfg["pairs"]
mlm = load_model(MLM, ctx.cfg["mlm"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"])
mlm_cache = ctx.paths.cache / "mlm"
if demo is not None and drafts:  # which object does the sentence make plausible? a few drafts of the example's first mention
    first_mention = [d for d in drafts if d[3] == drafts[0][3]][:: max(1, len(drafts) // 16)][:8]
    score = edit_plausibility(mlm, [(demo_segment.plain, d[0], d[1], d[2]) for d in first_mention], mlm_cache,
                              batch_size=ctx.cfg["mlm"]["batch_size"])
    display(pd.DataFrame({"mention": [d[3].text for d in first_mention],
                          "new words": [d[0][d[1]:d[2]] for d in first_mention], "plausibility (nats)": score})
            .sort_values("plausibility (nats)", ascending=False).reset_index(drop=True))

# %% [markdown]
# ## The blind reader
#
# The blind text-only classifier reads the text of a pair and nothing else: TF-IDF of word 1-2
# grams and of character 2-5 grams (within words), then a logistic regression. Anything it
# learns is a trace the construction left in the text. The filter of the construction, the
# blind check at the end of this chapter and the `text_only` control of the evaluation all use
# this one recipe, so the last two are near chance by construction: they show only what the
# filter missed.
#
# Its predictions are cross-fitted: training pairs are predicted over folds of whole id blocks
# of training stories (scikit-learn's `GroupKFold`), never by a model that saw the pair's story,
# neither its pairs nor its texts lent to another frame as a negative; every other split is
# predicted by one model fitted on all training pairs. NaN where no model can be fitted (fewer
# than two training blocks, or one label only). The test split is predicted like validation,
# never fitted on.

# %%
#@save
def text_only_classifier(seed: int = 0) -> "Pipeline":
    """The blind text-only classifier, unfitted: TF-IDF of words and characters, logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    features = FeatureUnion([
        ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=1, sublinear_tf=True)),
    ])  # fmt: skip
    classifier = LogisticRegression(C=1.0, solver="liblinear", max_iter=1000, random_state=seed)
    return Pipeline([("features", features), ("classifier", classifier)])


def _fit_blind(texts: Sequence[str], labels: Sequence[int], weights: Sequence[float] | None, seed: int):
    model = text_only_classifier(seed)
    fit_params = {} if weights is None else {"classifier__sample_weight": np.asarray(weights, dtype=float)}
    return model.fit(list(texts), np.asarray(labels), **fit_params)


def _folds(story_ids: Iterable[str], block_of: Mapping[str, str], n_folds: int) -> list[set[str]]:
    """``story_ids`` in at most ``n_folds`` folds of whole id blocks of ``block_of`` (:func:`id_blocks` over
    every story of the study, the map the split used); [] with fewer than two blocks."""
    from sklearn.model_selection import GroupKFold

    ids = sorted(set(story_ids), key=_id_number)
    if missing := [s for s in ids if s not in block_of]:
        raise ValueError(f"block_of has no id block for {len(missing)} stories, e.g. {missing[:5]}: "
                         "pass id_blocks over every story of the study")
    n = min(n_folds, len({block_of[s] for s in ids}))
    if n < 2:
        return []
    folds = GroupKFold(n_splits=n).split(ids, groups=[block_of[s] for s in ids])
    return [{ids[i] for i in held_out} for _, held_out in folds]


def blind_predictions(pairs: pd.DataFrame, *, block_of: Mapping[str, str], n_folds: int = 5,
                      seed: int = 0) -> pd.Series:
    """The blind classifier's P(positive) of each pair, cross-fitted by the id blocks of ``block_of`` on train."""
    out = pd.Series(np.nan, index=pairs.index, dtype=float)
    train = pairs[pairs["split"] == "train"]
    for held_out in _folds(train["story_id"], block_of, n_folds):
        # neither the held-out stories' pairs nor their texts used as another frame's negative
        source = train["source_story_id"] if "source_story_id" in train else train["story_id"]
        fit_rows = train[~train["story_id"].isin(held_out) & ~source.isin(held_out)]
        rows = train[train["story_id"].isin(held_out)]
        if fit_rows["label"].nunique() == 2 and len(rows):
            model = _fit_blind(fit_rows["text"], fit_rows["label"], None, seed)
            out[rows.index] = model.predict_proba(list(rows["text"]))[:, 1]
    others = pairs[pairs["split"] != "train"]
    if len(others) and train["label"].nunique() == 2:
        model = _fit_blind(train["text"], train["label"], None, seed)
        out[others.index] = model.predict_proba(list(others["text"]))[:, 1]
    return out

# %% [markdown]
# The folds are cut from the one map of id blocks over every story of the study, the map the
# split used (`id_blocks`), passed in: a subset of stories (those with a relation swap, say) is
# never re-cut into blocks of its own, which would put neighbours of one movie on both sides of
# a fold. The folds of this profile's training stories (whole id blocks held out together):

# %%
study_blocks = id_blocks([s.story_id for s in stories], block_size)  # the split's blocks
folds = _folds([sid for sid, side in split_of.items() if side == "train"], study_blocks, pc["filter_folds"])
pd.DataFrame({"held-out training stories": [", ".join(sorted(f, key=int)) for f in folds],
              "id blocks": [", ".join(sorted({study_blocks[s] for s in f}, key=lambda b: int(b.split("-")[0])))
                            for f in folds]})

# %% [markdown]
# ## Choosing the relation margin
#
# Every relation swap of every frame is scored for plausibility. For each margin `m` of the
# profile's grid, the swaps kept are those at most `m` nats less plausible than the original;
# the blind classifier is cross-fitted over id-block folds of the **training** stories only on
# those swaps against their frames' own texts. The margin whose ROC-AUC is nearest 0.5 is
# chosen (ties: the larger margin, which keeps more swaps; a margin with no measurable AUC
# counts as farthest; texts no fold could score are left out of the AUC and counted in
# `n_unscored`). Validation takes no part, so its blind ROC-AUC at the end of the chapter
# stays a held-out check of the choice. When no margin of the grid has a measurable AUC (too
# few training blocks or swaps), no margin can be chosen: every swap is kept (an infinite
# margin), and the chapter says so below the table.

# %%
#@save
def _in_side_order(splits: Iterable[str]) -> list[str]:
    """The distinct ``splits``, train, val and test first (:data:`SIDES`), any other after them by name."""
    return sorted(set(splits), key=lambda sp: (SIDES.index(sp) if sp in SIDES else len(SIDES), sp))


def relation_candidates(stories: Iterable[ParsedStory], *, split_of: Mapping[str, str], mlm: "Mlm",
                        cache_dir: str | os.PathLike, batch_size: int = 64) -> pd.DataFrame:
    """Every relation swap of every frame with its plausibility, one row each; how many relations each
    of :data:`RELATION_CHECKS` removed, per split, in ``attrs["removed"]`` (``{check: {split: count}}``)."""
    rows, options, removed = [], [], Counter()
    for story in sorted(stories, key=lambda s: _id_number(s.story_id)):
        split = split_of[story.story_id]
        for segment in story.segments:
            for reason, option in relation_swap_review(story, segment):
                if reason:
                    removed[(reason, split)] += 1
                    continue
                rows.append({"story_id": story.story_id, "frame": segment.frame, "split": split,
                             "text": option.segment.plain, "original": segment.plain, "change": option.change,
                             "swap_start": option.swap_start, "swap_end": option.swap_end})
                options.append(option)
    table = pd.DataFrame(rows, columns=["story_id", "frame", "split", "text", "original", "change", "swap_start",
                                        "swap_end"])
    edits = list(zip(table["original"], table["text"], table["swap_start"], table["swap_end"]))
    table["plausibility"] = edit_plausibility(mlm, edits, cache_dir, batch_size=batch_size) if edits else []
    table.attrs["options"] = options  # the PairText of each row (not stored on disk)
    splits = _in_side_order(split_of.values())
    table.attrs["removed"] = {check: {sp: removed[(check, sp)] for sp in splits} for check in RELATION_CHECKS}
    return table


def choose_relation_margin(candidates: pd.DataFrame, grid: Sequence[float], *, block_of: Mapping[str, str],
                           n_folds: int = 5, seed: int = 0) -> tuple[float, pd.DataFrame]:
    """The relation margin whose training swaps the blind classifier, cross-fitted over the training id
    blocks of ``block_of``, finds nearest chance, and the table (``n_unscored``: texts no fold could score,
    left out of the AUC). No measurable margin: ``math.inf`` (every swap kept), with
    ``attrs["no_margin_measurable"]`` True; ``attrs["unmeasured"]``: margins without an AUC."""
    from sklearn.metrics import roc_auc_score

    fit = candidates[candidates["split"] == "train"]
    rows, measured = [], {}
    for margin in sorted(grid):
        kept = fit[fit["plausibility"] >= -margin]
        originals = kept.drop_duplicates(["story_id", "frame"])
        if (key := tuple(kept.index)) not in measured:  # margins keeping the same swaps share one measurement
            table = pd.concat([originals.assign(text=originals["original"], label=1), kept.assign(label=0)],
                              ignore_index=True)
            scores = blind_predictions(table, block_of=block_of, n_folds=n_folds, seed=seed)
            ok = scores.notna()
            auc = (float(roc_auc_score(table.loc[ok, "label"], scores[ok]))
                   if ok.any() and table.loc[ok, "label"].nunique() == 2 else math.nan)
            measured[key] = (auc, int((~ok).sum()))
        auc, unscored = measured[key]
        rows.append({"margin": float(margin), "swaps_kept": len(kept), "frames": len(originals),
                     "blind_roc_auc": auc, "n_unscored": unscored})
    table = pd.DataFrame(rows, columns=["margin", "swaps_kept", "frames", "blind_roc_auc", "n_unscored"])
    table.attrs["unmeasured"] = int(table["blind_roc_auc"].isna().sum())
    table.attrs["no_margin_measurable"] = bool(table["blind_roc_auc"].isna().all())
    if table.attrs["no_margin_measurable"]:
        return math.inf, table
    distance = (table["blind_roc_auc"] - 0.5).abs().fillna(math.inf)
    best = table.loc[distance == distance.min(), "margin"].max()
    return float(best), table

# %%
common = dict(negative_types=profile_negative_types(pc), seed=ctx.cfg["seed"], block_size=ctx.cfg["data"]["block_size"],
              frames_per_story=pc["frames_per_story"])
relations = relation_candidates(stories, split_of=split_of, mlm=mlm, cache_dir=mlm_cache,
                                batch_size=ctx.cfg["mlm"]["batch_size"])
shown = relations[relations["split"].isin(["train", "val"])]  # no statistic of the test split before chapter 07
n_frames = shown[["story_id", "frame"]].drop_duplicates().shape[0]
if pc["relation_margin"] == "auto":
    margin, margin_table = choose_relation_margin(relations, pc["relation_margin_grid"], seed=ctx.cfg["seed"],
                                                  block_of=study_blocks, n_folds=pc["filter_folds"])
    how = "chosen on training stories (the blind ROC-AUC nearest 0.5 among the grid below)"
    if margin_table.attrs["no_margin_measurable"]:
        how = ("**not chosen: no margin of the grid has a measurable blind ROC-AUC on the training stories, "
               "so every swap is kept**")
else:
    margin, margin_table, how = float(pc["relation_margin"]), None, "set in the profile"
update_run_record(ctx.profile, pairs={"relation_margin": str(margin), "mlm": ctx.cfg["mlm"]["weights"],
                                      "mlm_identity": mlm.identity})
removed = pd.DataFrame(relations.attrs["removed"]).T.reindex(columns=["train", "val"], fill_value=0)
display(Markdown(
    "Relations not reversed, by the first check each failed (train / validation): "
    + "; ".join(f"{check} {r['train']} / {r['val']}" for check, r in removed.iterrows()) + ".\n\n"
    f"Relation swaps that pass every check, in train and validation: **{len(shown)}** in {n_frames} frames; "
    f"median plausibility {shown['plausibility'].median():.2f} nats. Margin {how}: **{margin}** nats"
    + (f" ({margin_table.attrs['unmeasured']} of {len(margin_table)} margins without a measurable AUC)."
       if margin_table is not None else ".")))
margin_table

# %% [markdown]
# ## The construction
#
# Everything is deterministic for a seed: each frame's negative of each type draws from its own
# generator seeded by `(seed, story_id, frame, type)`, so a frame's pairs do not depend on the
# other stories except for the `other_story` donors available to it (and, in the adversarial
# construction, the filter fitted on the training frames), nor a type's negative on the
# others'. Each frame gets one negative of every type of the profile's `negative_types` that
# applies to it (a one-segment story has no `same_story`, a text without a relation between two
# visible things no `relation_swap`): up to four negatives beside its one positive, with pair
# ids `{story}-{frame}-pos` and `{story}-{frame}-neg-{type}`. The classes are therefore not
# balanced; chapter 06 weighs each frame's negatives together as much as its positive. A frame
# for which no type applies gets no pair at all; their number is kept in the table's
# `attrs["frames_without_negative"]`.
#
# `variant` is the construction: `"naive"` (the first one), `"fluent"` (one random fluent edit)
# or `"adversarial"` (below).
#
# `frames_per_story` (the profile's `pairs.frames_per_story`; none: every frame) keeps the
# pairs of at most that many frames of each story, evenly spaced from its first paired frame
# to its last. It is applied to the finished table, so every kept pair is the one the whole
# construction makes (donors, candidates and the blind filter all still see every frame): only
# the image-side work shrinks. Frames of one story share their characters, places and often
# their shot, so a story's further frames add far less than new stories would, and every
# interval of the study resamples whole id blocks of stories anyway. A profile on a small
# budget spends it on more stories rather than on more frames of the same ones.

# %%
#@save
def evenly_spaced(frames: Sequence[int], k: int | None) -> list[int]:
    """At most ``k`` of ``frames`` (sorted), evenly spaced from the first to the last; all when ``k`` is None."""
    if k is not None and k < 1:
        raise ValueError(f"frames_per_story must be >= 1 (or None for every frame), got {k}")
    ordered = sorted(frames)
    if k is None or len(ordered) <= k:
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / max(k - 1, 1))] for i in range(k)]


def keep_frames_per_story(pairs: pd.DataFrame, k: int | None) -> pd.DataFrame:
    """The pairs of at most ``k`` frames per story (:func:`evenly_spaced` among its paired frames);
    how many frames were left out is kept in ``attrs["frames_not_sampled"]``."""
    if k is None:
        out = pairs.copy()
        out.attrs = {**pairs.attrs, "frames_not_sampled": 0}
        return out
    chosen = [(sid, f) for sid, group in pairs.groupby("story_id", sort=False)
              for f in evenly_spaced(group["frame"].unique().tolist(), k)]
    keys = pd.MultiIndex.from_arrays([pairs["story_id"], pairs["frame"]])
    out = pairs[keys.isin(chosen)].reset_index(drop=True)
    out.attrs = {**pairs.attrs, "frames_not_sampled": len(keys.unique()) - len(chosen)}
    return out

# %%
n_frames, per_story = 13, 6  # a story of StoryReasoning's median length, at 6 frames per story
kept = evenly_spaced(range(1, n_frames + 1), per_story)
display(Markdown(f"Of a story's {n_frames} frames, {per_story} per story keeps frames {', '.join(map(str, kept))}."))

# %%
#@save
def _frame_rng(seed: int, story_id: str, frame: int, kind: str) -> random.Random:
    """The generator of one frame's negative of one type: a type's negative does not depend on the others'."""
    return random.Random(f"{seed}:{story_id}:{frame}:{kind}")


def make_pairs(
    stories: Iterable[ParsedStory],
    *,
    split_of: Mapping[str, str],
    negative_types: Sequence[str] = NEGATIVE_TYPES,
    seed: int,
    block_size: int,
    variant: str = "fluent",
    mlm: "Mlm | None" = None,
    cache_dir: str | os.PathLike | None = None,
    n_candidates: int = 4,
    relation_margin: float = math.inf,
    n_folds: int = 5,
    batch_size: int = 64,
    filter_train: pd.DataFrame | None = None,
    frames_per_story: int | None = None,
    block_of: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One positive pair per frame segment and one negative of every type of ``negative_types`` that
    applies to it, with :data:`PAIR_COLUMNS`; of at most ``frames_per_story`` frames per story
    (:func:`keep_frames_per_story`) when given.
    ``block_of``: the id blocks the blind filter's folds are cut from (:func:`id_blocks` over every
    story of the study, the map the split used); None: ``id_blocks`` over ``stories``."""
    negative_types = check_negative_types(negative_types)
    if variant not in VARIANTS:
        raise ValueError(f"unknown pair construction {variant!r}: expected one of {VARIANTS}")
    if variant == "adversarial" and (mlm is None or cache_dir is None):
        raise ValueError("the adversarial construction needs a masked language model (mlm) and a cache_dir")
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    stories = sorted(stories, key=lambda s: _id_number(s.story_id))
    if len({s.story_id for s in stories}) != len(stories):
        raise ValueError("stories contains duplicate story ids")
    if missing := [s.story_id for s in stories if s.story_id not in split_of]:
        raise ValueError(f"split_of has no side for {len(missing)} stories, e.g. {missing[:5]}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    evenly_spaced([], frames_per_story)  # a wrong frames_per_story fails here, before any work
    if block_of is None:
        block_of = id_blocks([s.story_id for s in stories], block_size)

    peers: dict[str, list[ParsedStory]] = {}
    for story in stories:
        peers.setdefault(split_of[story.story_id], []).append(story)
    position = {s.story_id: i for group in peers.values() for i, s in enumerate(group)}
    kinds = [t for t in NEGATIVE_TYPES if t in negative_types]  # in the spec's order
    if variant == "adversarial":
        return keep_frames_per_story(
            _adversarial_pairs(stories, split_of, kinds, seed, block_size, peers, position, mlm, cache_dir,
                               n_candidates, relation_margin, n_folds, batch_size, filter_train, block_of),
            frames_per_story)

    naive = variant == "naive"
    rows: list[dict[str, object]] = []
    skipped = 0
    for story in stories:
        split = split_of[story.story_id]
        for segment in story.segments:
            negatives = []
            for kind in kinds:  # every type that applies to the frame
                rng = _frame_rng(seed, story.story_id, segment.frame, kind)
                if kind == "other_story":
                    negative = _other_story(peers[split], position[story.story_id], block_size, rng)
                elif kind == "same_story":
                    negative = next(iter(_same_story(story, segment, rng)), None)
                elif kind == "object_swap":
                    negative = object_swap(story, segment, rng, naive=naive)
                else:
                    negative = relation_swap(story, segment, rng, naive=naive)
                if negative is not None:
                    negatives.append(_row(story.story_id, segment.frame, split, 0, kind, negative))
            if not negatives:
                skipped += 1
                continue
            positive = PairText(segment=segment, source_story_id=story.story_id, source_frame=segment.frame)
            rows += [_row(story.story_id, segment.frame, split, 1, "", positive), *negatives]
    return keep_frames_per_story(_pairs_table(rows, skipped, n_candidates=None), frames_per_story)


def _pairs_table(rows: list[dict[str, object]], skipped: int, *, n_candidates: list[int] | None,
                 blind_scores: list[float] | None = None) -> pd.DataFrame:
    pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS[:-2])
    pairs["n_candidates"] = n_candidates if n_candidates is not None else (pairs["label"] == 0).astype(int)
    pairs["blind_score"] = blind_scores if blind_scores is not None else np.nan
    pairs = pairs.astype({"frame": "int64", "label": "int64", "source_frame": "int64", "swap_start": "int64",
                          "swap_end": "int64", "n_candidates": "int64", "blind_score": "float64"})
    pairs.attrs["frames_without_negative"] = skipped
    return pairs


# %%
fluent_pairs = make_pairs(stories, split_of=split_of, variant="fluent", **common)
pd.crosstab(fluent_pairs["split"], fluent_pairs["negative_type"].where(fluent_pairs["label"] == 0, "(positive)"))

# %% [markdown]
# The adversarial construction is done in three passes. First, every type that applies to each
# frame and, except for object swaps, its candidates: distinct donors for the other texts; for relation swaps
# those within the margin, most plausible first.

# %%
#@save
def _adversarial_pairs(stories, split_of, kinds, seed, block_size, peers, position, mlm, cache_dir,
                       n_candidates, relation_margin, n_folds, batch_size, filter_train, block_of) -> pd.DataFrame:
    from tqdm.auto import tqdm

    cache_dir = Path(cache_dir)
    relations = relation_candidates(stories, split_of=split_of, mlm=mlm, cache_dir=cache_dir, batch_size=batch_size)
    eligible: dict[tuple[str, int], list[tuple[float, PairText]]] = {}
    for row, option in zip(relations.itertuples(), relations.attrs["options"]):
        if row.plausibility >= -relation_margin:
            eligible.setdefault((row.story_id, row.frame), []).append((row.plausibility, option))

    # 1. every type that applies to the frame and, except for object swaps, its candidates: one entry
    #    per (frame, type)
    frames: list[dict[str, Any]] = []
    for story in tqdm(stories, desc="negative candidates", unit="story"):
        split = split_of[story.story_id]
        for segment in story.segments:
            targets = _object_targets(story, segment)
            applicable = {
                "other_story": _has_other_block(peers[split], position[story.story_id], block_size),
                "same_story": any(s.frame != segment.frame and s.plain != segment.plain for s in story.segments),
                "object_swap": targets is not None and any(c not in targets[1] for c in COCO_CATEGORIES),
                "relation_swap": bool(eligible.get((story.story_id, segment.frame))),
            }
            for kind in (k for k in kinds if applicable[k]):
                rng = _frame_rng(seed, story.story_id, segment.frame, kind)
                candidates: list[PairText] = []
                if kind == "other_story":
                    candidates = _other_stories(peers[split], position[story.story_id], block_size, rng,
                                                n_candidates)
                elif kind == "same_story":
                    candidates = _same_story(story, segment, rng, n_candidates)
                elif kind == "relation_swap":
                    ranked = sorted(eligible[(story.story_id, segment.frame)], key=lambda t: -t[0])
                    candidates = [option for _, option in ranked[:n_candidates]]
                if kind == "object_swap" or candidates:
                    frames.append({"story": story, "segment": segment, "split": split, "kind": kind,
                                   "candidates": candidates})

    # 2. object swaps: every (mention, absent category), shortlisted per mention by fill-mask,
    #    then the shortlist ranked by plausibility; one batched pass each
    objects = [f for f in frames if f["kind"] == "object_swap"]
    drafts = _fill_shortlists(mlm, objects, 3 * n_candidates, cache_dir, batch_size)
    flat = [(i, d) for i, ds in enumerate(drafts) for d in ds]
    edits = [(objects[i]["segment"].plain, d[0], d[1], d[2]) for i, d in flat]
    plausibility = edit_plausibility(mlm, edits, cache_dir, batch_size=batch_size) if edits else np.zeros(0)
    ranked: dict[int, list[tuple[float, int, tuple]]] = {}
    for n, ((i, draft), score) in enumerate(zip(flat, plausibility)):
        ranked.setdefault(i, []).append((-float(score), n, draft))
    for i, f in enumerate(objects):
        best = [d for _, _, d in sorted(ranked.get(i, []))[:n_candidates]]
        built = (_object_edit(f["story"], f["segment"], d[3], d[4], d[5]) for d in best)
        f["candidates"] = [c for c in built if c is not None]
    kept = [f for f in frames if f["candidates"]]
    paired = {(f["story"].story_id, f["segment"].frame) for f in kept}
    skipped = sum(len(s.segments) for s in stories) - len(paired)  # frames with no type that applies

    # 3. the blind filter keeps, per frame, the candidate most like a positive; a frame none of whose
    #    candidates it could score keeps its first (counted per split in attrs["frames_unfiltered"]: frames
    #    with such a type)
    scores = _filter_scores(kept, block_of=block_of, n_folds=n_folds, seed=seed, filter_train=filter_train)
    rows, counts, blind, unfiltered, done = [], [], [], {}, set()
    for f, frame_scores in zip(kept, scores):  # a frame's entries are consecutive, in the spec's order of types
        story, segment = f["story"], f["segment"]
        key = (story.story_id, segment.frame)
        if np.isfinite(frame_scores).any():
            best = int(np.nanargmax(frame_scores))
        else:
            best = 0
            unfiltered[key] = f["split"]
        if key not in done:
            done.add(key)
            positive = PairText(segment=segment, source_story_id=story.story_id, source_frame=segment.frame)
            rows.append(_row(story.story_id, segment.frame, f["split"], 1, "", positive))
            counts.append(0)
            blind.append(math.nan)
        rows.append(_row(story.story_id, segment.frame, f["split"], 0, f["kind"], f["candidates"][best]))
        counts.append(len(f["candidates"]))
        blind.append(float(frame_scores[best]))
    pairs = _pairs_table(rows, skipped, n_candidates=counts, blind_scores=blind)
    unfiltered_frames = Counter(unfiltered.values())
    pairs.attrs["frames_unfiltered"] = {split: unfiltered_frames[split]
                                        for split in _in_side_order(split_of.values())}
    return pairs


# %% [markdown]
# Second, object swaps: every (mention, absent category) draft of a frame, shortlisted per
# mention by fill-mask, then the shortlist ranked by plausibility. The drafts of a mention that
# change the same words (its head noun; with the article when "a" turns "an"; with the verb when
# it agrees) share one context, those words masked in the sentence; every draft is scored by
# all the tokens of its new words, a mean per token, less that of the original words
# (`helpers.mlm.fill_logprob`): a few forward passes per mention (one per number of tokens),
# whatever the number of drafts, and scores comparable across a frame's mentions.

# %%
#@save
def _fill_shortlists(mlm: "Mlm", frames: list[dict[str, Any]], size: int, cache_dir: Path,
                     batch_size: int) -> list[list[tuple]]:
    """Each frame's object-swap drafts, cut to the ``size`` best by fill-mask."""
    from helpers.mlm import fill_logprob

    from tqdm.auto import tqdm

    groups: list[tuple[int, list[tuple]]] = []  # (frame index, drafts of one mention)
    for i, f in enumerate(tqdm(frames, desc="object swap drafts", unit="frame", disable=not frames)):
        by_mention: dict[int, list[tuple]] = {}
        for draft in _object_drafts(f["story"], f["segment"]):
            by_mention.setdefault(draft[3].start, []).append(draft)
        groups += [(i, ds) for _, ds in sorted(by_mention.items())]
    contexts, words, spans = [], [], []  # one context per (mention, changed words in the original)
    for i, ds in groups:
        plain = frames[i]["segment"].plain
        by_span: dict[tuple[int, int], list[tuple]] = {}
        for d in ds:
            by_span.setdefault((d[1], d[2] + len(plain) - len(d[0])), []).append(d)
        for (start, end), same in sorted(by_span.items()):
            a, b = next(((a, b) for a, b in _sentence_bounds(plain) if a <= start < b), (0, len(plain)))
            b = max(b, end)
            contexts.append((plain[a:b], start - a, end - a))
            words.append([*(d[0][d[1] : d[2]] for d in same), plain[start:end]])  # the original words last
            spans.append((i, same))
    scores = fill_logprob(mlm, contexts, words, cache_dir / "fill", batch_size=batch_size) if spans else []
    ranked: list[list[tuple[float, int, tuple]]] = [[] for _ in frames]
    for n, ((i, ds), score) in enumerate(zip(spans, scores)):
        ranked[i] += [(-(score[k] - score[-1]), n * 1000 + k, d) for k, d in enumerate(ds)]
    return [[d for _, _, d in sorted(r)[:size]] for r in ranked]


# %% [markdown]
# Third, the blind filter keeps, per frame, the candidate it finds most like a positive. It is
# trained on each training frame's own text (label 1) and its candidates (label 0, weighted
# 1 / their number, so each frame weighs the same on both sides), cross-fitted for training
# frames, a held-out story's texts never lent to the fit as another frame's candidates; other
# splits are scored by a model fitted on all training frames, or, for the external test, on
# the study's training pairs (`filter_train`). The folds are cut from the study's id blocks
# (`block_of`), like every fold of the blind reader. A frame none of whose candidates could be
# scored (its fold had one label only, say) keeps its first candidate unfiltered: such frames
# are counted per split in the table's `attrs["frames_unfiltered"]` and shown with the pairs.

# %%
#@save
def _filter_scores(frames: list[dict[str, Any]], *, block_of: Mapping[str, str], n_folds: int, seed: int,
                   filter_train: pd.DataFrame | None) -> list[np.ndarray]:
    """The blind classifier's P(positive) of every candidate of every (frame, type) entry of ``frames``."""
    out = [np.full(len(f["candidates"]), np.nan) for f in frames]

    def training(rows: list[int], held_out: set[str] = frozenset()) -> tuple[list[str], list[int], list[float]]:
        texts, labels, weights = [], [], []
        key = {i: (frames[i]["story"].story_id, frames[i]["segment"].frame) for i in rows}
        n_types, seen = Counter(key.values()), set()
        for i in rows:
            f = frames[i]
            if key[i] not in seen:  # the frame's own text once, however many types it has
                seen.add(key[i])
                texts.append(f["segment"].plain)
                labels.append(1)
                weights.append(1.0)
            lent = [c for c in f["candidates"] if c.source_story_id not in held_out]  # no held-out story's text
            texts += [c.segment.plain for c in lent]
            labels += [0] * len(lent)
            weights += [1.0 / (len(f["candidates"]) * n_types[key[i]])] * len(lent)
        return texts, labels, weights

    def score(model, rows: list[int]) -> None:
        texts = [c.segment.plain for i in rows for c in frames[i]["candidates"]]
        if not texts:
            return
        probabilities = iter(model.predict_proba(texts)[:, 1])
        for i in rows:
            out[i] = np.array([next(probabilities) for _ in frames[i]["candidates"]])

    train = [i for i, f in enumerate(frames) if f["split"] == "train"]
    story_of = {i: frames[i]["story"].story_id for i in train}
    for held_out in _folds(list(story_of.values()), block_of, n_folds):
        fit_rows = [i for i in train if story_of[i] not in held_out]
        texts, labels, weights = training(fit_rows, held_out)
        if len(set(labels)) == 2:
            score(_fit_blind(texts, labels, weights, seed), [i for i in train if story_of[i] in held_out])
    others = [i for i, f in enumerate(frames) if f["split"] != "train"]
    if others:
        if filter_train is not None:
            fit = filter_train[filter_train["split"] == "train"]
            n_negatives = fit.groupby(["story_id", "frame"])["label"].transform(lambda y: (y == 0).sum())
            texts, labels = list(fit["text"]), list(fit["label"])
            weights = list(np.where(fit["label"] == 1, 1.0, 1.0 / n_negatives.clip(lower=1)))  # a frame's
            # negatives together weigh as much as its own text
        else:
            texts, labels, weights = training(train)
        if len(set(labels)) == 2:
            score(_fit_blind(texts, labels, weights, seed), others)
    return out


# %% [markdown]
# The Hub's own `test` split, when the profile asks for it, is an external test: its pairs are
# built alike, with the filter fitted on the study's training pairs, and stacked under the
# study's.

# %%
#@save
def concat_pairs(*tables: pd.DataFrame) -> pd.DataFrame:
    """Stack pair tables (the study's splits and the external test), keeping pair ids unique."""
    pairs = pd.concat(tables, ignore_index=True)
    if (dup := pairs["pair_id"].duplicated()).any():
        raise ValueError(f"pair ids occur in more than one table, e.g. {pairs.loc[dup, 'pair_id'].head(3).tolist()}")
    for count in ("frames_without_negative", "frames_not_sampled"):
        pairs.attrs[count] = sum(t.attrs.get(count, 0) for t in tables)
    if any("frames_unfiltered" in t.attrs for t in tables):  # per split
        unfiltered: dict[str, int] = {}
        for t in tables:
            for split, n in t.attrs.get("frames_unfiltered", {}).items():
                unfiltered[split] = unfiltered.get(split, 0) + n
        pairs.attrs["frames_unfiltered"] = unfiltered
    return pairs

# %% [markdown]
# The study's pairs: the naive construction (for the comparison below), then the profile's
# (`pairs.construction`), and the external test's when there is one. Each pair also gets its
# story's id block, the unit every interval of the study resamples.

# %%
naive_pairs = make_pairs(stories, split_of=split_of, variant="naive", **common)
construction = dict(variant=pc["construction"], mlm=mlm, cache_dir=mlm_cache, n_candidates=pc["n_candidates"],
                    relation_margin=margin, n_folds=pc["filter_folds"], batch_size=ctx.cfg["mlm"]["batch_size"])
pair_table = make_pairs(stories, split_of=split_of, block_of=study_blocks, **construction, **common)
study_pairs = pair_table
external = data.load_external_test(ctx.cfg["data"], cache_dir=ctx.paths.cache, seed=ctx.cfg["seed"])
if external is not None:
    ext_stories, ext_excluded = data.parse_dataset(external, check_images=ctx.cfg["data"]["check_images"])
    ext_pairs = make_pairs(ext_stories, split_of={s.story_id: "external" for s in ext_stories},
                           filter_train=study_pairs, **construction, **common)
    pair_table = concat_pairs(pair_table, ext_pairs)
    display(Markdown(f"External test (the Hub's `test` split): **{len(ext_stories)}** stories, "
                     f"{len(ext_pairs)} pairs, {ext_excluded['story_id'].nunique()} excluded."))
# The id block of each pair's story: the unit of the split, and of every interval later.
block_of = id_blocks([s.story_id for s in stories], block_size=ctx.cfg["data"]["block_size"])
if external is not None:
    block_of |= id_blocks([s.story_id for s in ext_stories], block_size=ctx.cfg["data"]["block_size"])
pair_table["block"] = pair_table["story_id"].map(block_of)
atomic_write_parquet(pair_table, ctx.paths.pairs)
sampled = ("every paired frame of each story" if pc["frames_per_story"] is None else
           f"at most {pc['frames_per_story']} frames per story, evenly spaced "
           f"({pair_table.attrs['frames_not_sampled']:,} paired frames left out)")
unfiltered = pair_table.attrs.get("frames_unfiltered")
display(Markdown(f"**{len(pair_table)}** pairs written to `{ctx.paths.pairs.relative_to(ctx.paths.root.parent)}` "
                 f"(construction `{pc['construction']}`, {sampled}); frames with no applicable negative: "
                 f"{pair_table.attrs.get('frames_without_negative', 0)}."
                 + ("" if unfiltered is None else " Frames whose candidates the blind filter could not score, "
                    "each keeping its first candidate unfiltered: "
                    + ", ".join(f"{split} {n}" for split, n in unfiltered.items()) + ".")))
pd.crosstab(pair_table["split"], pair_table["negative_type"].where(pair_table["label"] == 0, "(positive)"), margins=True)

# %%
plots.plot_pair_mix(pair_table)
plt.show()

# %% [markdown]
# ## Can a blind reader tell the negatives apart?
#
# **Goal**, checked on real data (the `quick` and `full` profiles): the blind text-only
# classifier stays near chance on every negative type (chapter 07 tests equivalence to chance
# on the test split, with two one-sided tests against a margin; an interval that merely covers
# 0.5 shows nothing), with the fusion head's per-type results reported beside it from chapter
# 07 on. The test split is not looked at here.
#
# ROC-AUC of the blind text-only classifier, per negative type (the negatives of that type
# against the positives of their own frames, as every per-type metric of chapter 07; the `all`
# row: every pair), for the first, naive
# construction and for the one this study uses, side by side. Training pairs are scored by
# cross-fitting, validation pairs by a classifier fitted on all training pairs; the 95%
# interval is the evaluation's, over id blocks (the pairs' `block` column; `blind_auc_table`
# is written in chapter 07, beside `bootstrap_metrics`, which says how the interval is made
# and how well it covers with few blocks). 0.5 is
# chance: the nearer, the more a verifier has to look at the frame. The filter used this
# classifier's recipe, so this table alone could look good by construction: chapters 06 and 07
# add blind controls the construction never used (a logistic regression on CLIP's text
# embeddings, a pairwise model that reads both texts of a frame, a causal language model of
# another family, and the story's own mentions of a swapped object). The masked language
# model's plausibility of the changed words is not one of them: it chose the edits.

# %%
from helpers.evaluation import blind_auc_table  # chapter 07 writes it, beside the bootstrap it uses

blind_kwargs = dict(block_of=study_blocks, n_folds=pc["filter_folds"],
                    n_resamples=ctx.cfg["bootstrap"]["n_resamples"], seed=ctx.cfg["seed"])
blind = pd.concat([blind_auc_table(naive_pairs, **blind_kwargs).assign(construction="naive"),
                   blind_auc_table(study_pairs, **blind_kwargs).assign(construction=pc["construction"])],
                  ignore_index=True)
atomic_write_parquet(blind, ctx.paths.data / "blind_auc.parquet")
unscored = blind[blind["negative_type"] == "all"].set_index(["construction", "split"])["n_unscored"]
display(Markdown("Pairs the blind classifier could not score (too few training blocks or one label in a fold), "
                 "left out of the ROC-AUCs below: "
                 + "; ".join(f"{c}, {split}: {n}" for (c, split), n in unscored.items()) + "."))


def _cell(row) -> str:
    if pd.isna(row["roc_auc"]):
        return f"n/a (n={row['n_negative']})"
    return f"{row['roc_auc']:.2f} [{row['low']:.2f}, {row['high']:.2f}] (n={row['n_negative']})"


blind.assign(cell=blind.apply(_cell, axis=1)).pivot_table(
    index=["split", "negative_type"], columns="construction", values="cell", aggfunc="first", sort=False)

# %% [markdown]
# ### Does the rest of the story give an object swap away?
#
# The masked language model and the blind filter read one frame's text. A reader of the whole
# story can do more: an object that the story mentions elsewhere is a likelier original than
# one it never mentions. `story_consistency` counts, for each object-swap negative, how often
# the replaced head noun and the inserted one occur (as whole words, singular or plural) in
# the plain text of the story's other frames. Chapter 07 turns it into a blind control on the
# test split (the replaced word's count is the positive's score, the inserted word's the
# negative's); here it is shown on train and validation. The paired score is the share of
# frames where the replaced noun is the more frequent one elsewhere (a tie counts half): 0.5
# means the story does not say which noun is the original.

# %%
#@save
def noun_forms(word: str) -> frozenset[str]:
    """A head noun, lower-cased, in its singular and plural forms ("Cups" -> {"cup", "cups"})."""
    low = _bare(word)
    singular = (_inflect().singular_noun(low) or low) if is_plural(low) and low not in _PLURAL_ONLY else low
    return frozenset({low, singular, plural(singular).lower()})


_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _swapped_heads(old: str, new: str) -> tuple[str, str] | None:
    """The replaced and the inserted head word of an object swap's changed words (articles,
    "pair of" and an agreeing verb set aside): "The refrigerator" -> "The TV" gives ("refrigerator", "tv")."""
    a, b = _WORD.findall(old.lower()), _WORD.findall(new.lower())
    a_only, b_only = [w for w in a if w not in b], [w for w in b if w not in a]
    if len(a_only) > 1 and len(b_only) > 1 and _present_verb(a_only[-1]) == b_only[-1]:
        a_only, b_only = a_only[:-1], b_only[:-1]
    skip = {"a", "an", "some", "pair", "of"}
    a_only, b_only = [w for w in a_only if w not in skip], [w for w in b_only if w not in skip]
    return (a_only[-1], b_only[-1]) if a_only and b_only else None


def story_consistency(pairs: pd.DataFrame, stories: Iterable[ParsedStory]) -> pd.DataFrame:
    """For each object-swap negative of ``pairs`` with its frame's positive: how many times the replaced head noun
    (``replaced``) and the inserted one (``inserted``) (:func:`_swapped_heads`) occur as whole words
    in any number in the plain text of the story's other frames. Edits not in place, or whose head nouns cannot
    be read, are counted in ``attrs["unlocated"]``, negatives without their frame's positive in
    ``attrs["unpaired"]``."""
    by_id = {str(s.story_id): s for s in stories}
    own = {(str(r.story_id), int(r.frame)): r for r in pairs[pairs["label"] == 1].itertuples(index=False)}
    negatives = pairs[(pairs["label"] == 0) & (pairs["negative_type"] == "object_swap")]
    rows, unlocated, unpaired = [], 0, 0
    for neg in negatives.itertuples(index=False):
        key = (str(neg.story_id), int(neg.frame))
        if key not in own:
            unpaired += 1
            continue
        original, edited, start, end = str(own[key].text), str(neg.text), int(neg.swap_start), int(neg.swap_end)
        if not is_in_place_edit(original, edited, start, end) or end <= start:
            unlocated += 1
            continue
        heads = _swapped_heads(original[start : end + len(original) - len(edited)], edited[start:end])
        if heads is None:
            unlocated += 1
            continue
        old_word, new_word = heads
        words = Counter(_bare(w) for seg in by_id[key[0]].segments if seg.frame != key[1] for w in seg.plain.split())
        rows.append({"story_id": neg.story_id, "frame": neg.frame, "split": neg.split, "pair_id": neg.pair_id,
                     "own_pair_id": own[key].pair_id, "replaced_word": _bare(old_word), "inserted_word": _bare(new_word),
                     "replaced": sum(words[f] for f in noun_forms(old_word)),
                     "inserted": sum(words[f] for f in noun_forms(new_word))})
    out = pd.DataFrame(rows, columns=["story_id", "frame", "split", "pair_id", "own_pair_id", "replaced_word",
                                      "inserted_word", "replaced", "inserted"])
    out.attrs.update(unlocated=unlocated, unpaired=unpaired)
    return out

# %%
consistency = story_consistency(study_pairs[study_pairs["split"].isin(["train", "val"])], stories)
display(pd.DataFrame({"noun": ["cups", "knives", "TV", "glasses", "boxes"]}).assign(
    forms=lambda t: t["noun"].map(lambda w: ", ".join(sorted(noun_forms(w))))).style.hide(axis="index"))
if len(consistency):
    display(consistency.assign(
        replaced_elsewhere=consistency["replaced"] > 0, inserted_elsewhere=consistency["inserted"] > 0,
        paired=np.sign(consistency["replaced"] - consistency["inserted"]) / 2 + 0.5,
    ).groupby("split", sort=False)[["replaced_elsewhere", "inserted_elsewhere", "paired"]].mean()
      .assign(frames=consistency.groupby("split", sort=False).size()).style.format(precision=3))
    display(consistency.sample(min(5, len(consistency)), random_state=ctx.cfg["seed"]).style.hide(axis="index"))
display(Markdown(f"Object-swap negatives of train and validation counted: {len(consistency):,}; edits not in place: "
                 f"{consistency.attrs['unlocated']}; without their frame's positive: {consistency.attrs['unpaired']}."))

# %% [markdown]
# Negatives of each kind, drawn at random (seeded, not picked) from train and validation,
# beside the frame's own text (for an edit, the words around the change in both texts; for
# another segment, the start of each): first the naive construction's, then this study's.

# %%
def edit_examples(pairs: pd.DataFrame, *, n: int, seed: int, splits: Sequence[str] = ("train", "val"),
                  width: int = 70) -> pd.DataFrame:
    """``n`` negatives of each type drawn at random from ``splits``, each beside its frame's own text."""
    negatives = pairs[(pairs["label"] == 0) & pairs["split"].isin(splits)]
    own = pairs[pairs["label"] == 1].set_index(["story_id", "frame"])["text"]
    rows = []
    for kind in NEGATIVE_TYPES:
        chosen = negatives[negatives["negative_type"] == kind]
        for row in chosen.sample(min(n, len(chosen)), random_state=seed).itertuples():
            original = own[(row.story_id, row.frame)]
            if row.swap_start >= 0:
                end_old = row.swap_end + len(original) - len(row.text)
                lo = max(0, row.swap_start - width)
                before = ("..." if lo else "") + original[lo : end_old + width] + "..."
                after = ("..." if lo else "") + row.text[lo : row.swap_end + width] + "..."
            else:
                before, after = original[: 2 * width] + "...", row.text[: 2 * width] + "..."
            rows.append({"negative_type": kind, "pair_id": row.pair_id, "change": row.change or
                         f"text of story {row.source_story_id}, frame {row.source_frame}",
                         "frame's own text": before, "negative's text": after})
    return pd.DataFrame(rows, columns=["negative_type", "pair_id", "change", "frame's own text", "negative's text"])


for name, table in (("naive", naive_pairs), (pc["construction"], study_pairs)):
    display(Markdown(f"**{name}**"))
    display(edit_examples(table, n=3, seed=ctx.cfg["seed"]).style.hide(axis="index"))

# %% [markdown]
# Two traces an object swap could leave in the text whatever the image shows. A **double
# determiner** ("The a TV", "his a cup", "A a cup", "a the"): a determiner or possessive
# directly followed by an article, which an edit made inside a tag alone writes when the tag
# holds only the noun. The share of texts with one is shown per split and negative type, with
# the positives (the frames' own texts) as the base rate; the goal is none added by an edit.
# A **word-frequency prior**: is the inserted head noun systematically rarer in the training
# texts than the one it replaced? Per split, over the object swaps, the paired AUC of the
# replaced word's count in the training split's own texts against the inserted word's (ties
# count half): 0.5 is no prior, 1 means the original word is always the more frequent one, so a
# reader that only counts words would spot every swap. Train and validation only.

# %%
#@save
_DOUBLE_DETERMINER = re.compile(r"\b(?:a|an|the|his|its|their|my|your|our)\s+(?:a|an|the)\b", re.IGNORECASE)


def double_determiners(text: str) -> list[str]:
    """The determiners of ``text`` directly followed by an article ("The a", "his a", "A a", "a the")."""
    return [m.group(0) for m in _DOUBLE_DETERMINER.finditer(text)]


def double_determiner_rate(pairs: pd.DataFrame, *, splits: Sequence[str] = ("train", "val")) -> pd.DataFrame:
    """Per split and negative type (positives: ``"(positive)"``), how many texts have a double determiner."""
    rows = pairs[pairs["split"].isin(splits)]
    kind = rows["negative_type"].where(rows["label"] == 0, "(positive)")
    has = rows["text"].map(lambda t: bool(double_determiners(t)))
    return (pd.DataFrame({"split": rows["split"], "negative_type": kind, "double": has})
            .groupby(["split", "negative_type"], sort=False)["double"].agg(texts="size", double="sum", rate="mean")
            .reset_index())


def word_frequency_prior(pairs: pd.DataFrame, *, splits: Sequence[str] = ("train", "val")) -> pd.DataFrame:
    """Per split, over object swaps: the paired AUC of the replaced head word's count in the
    training split's own texts against the inserted one's (0.5: no prior; ties count half)."""
    counts = Counter(w for t in pairs.loc[(pairs["split"] == "train") & (pairs["label"] == 1), "text"]
                     for w in _WORD.findall(t.lower()))
    swaps = pairs[(pairs["label"] == 0) & (pairs["negative_type"] == "object_swap") & pairs["split"].isin(splits)]
    rows = []
    for split, group in swaps.groupby("split", sort=False):
        heads = [h for h in map(_swapped_heads, group["swapped_from"], group["swapped_to"]) if h is not None]
        wins = [1.0 if counts[o] > counts[n] else 0.5 if counts[o] == counts[n] else 0.0 for o, n in heads]
        rows.append({"split": split, "object_swaps": len(group), "scored": len(heads),
                     "paired_auc": float(np.mean(wins)) if wins else math.nan,
                     "inserted_unseen": float(np.mean([counts[n] == 0 for _, n in heads])) if heads else math.nan})
    return pd.DataFrame(rows, columns=["split", "object_swaps", "scored", "paired_auc", "inserted_unseen"])

# %%
found, heads = double_determiners("The a TV behind him hums; his a cup; the TV"), _swapped_heads("The tie hangs", "The scissors hang")
display(Markdown(f"In *The a TV behind him hums; his a cup; the TV* the double determiners are "
                 f"{' and '.join(f'*{d}*' for d in found)}; *The tie hangs* -> *The scissors hang* swaps the head "
                 f"*{heads[0]}* for *{heads[1]}*."))
traces = pd.concat([double_determiner_rate(t).assign(construction=name)
                    for name, t in (("naive", naive_pairs), (pc["construction"], study_pairs))])
display(traces.pivot_table(index=["split", "negative_type"], columns="construction", values="rate", sort=False))
pd.concat([word_frequency_prior(t).assign(construction=name)
           for name, t in (("naive", naive_pairs), (pc["construction"], study_pairs))], ignore_index=True)

# %% [markdown]
# A frame to try the verifier on (`python -m helpers.verify`, see the README): the first
# validation frame with its own text, written as an image file and a text file beside it.

# %%
# extra code: a sample frame and its text, as files, for the verifier's example
import io as bytes_io

from helpers.io import atomic_write_bytes, atomic_write_text

example = pair_table[(pair_table["split"] == "val") & (pair_table["label"] == 1)].iloc[0]
sample_dir, png = ctx.paths.root / "sample", bytes_io.BytesIO()
data.frame_image(ds[index[example.story_id]], int(example.frame)).save(png, format="PNG")
atomic_write_bytes(sample_dir / "frame.png", png.getvalue())
atomic_write_text(sample_dir / "text.txt", example.text + "\n")
display(Markdown(f"Wrote `{(sample_dir / 'frame.png').relative_to(ctx.paths.root.parent)}` (story {example.story_id}, "
                 f"frame {example.frame}) and its text, `{(sample_dir / 'text.txt').relative_to(ctx.paths.root.parent)}`."))
