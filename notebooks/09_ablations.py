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
#
# Every function of the method is written below in a cell that starts with `#@save`;
# `make lib` collects those cells into `helpers/ablations.py`, from which chapter 04 (the
# oracle's boxes), chapter 07 (scoring a batch of pairs from scratch) and chapter 10 import
# them. Edit a cell here and rerun the chapter, then `make sync`.

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
# The imports the saved cells need (they open `helpers/ablations.py`). The feature, IO and
# training plumbing comes from earlier chapters' modules and the shared helpers.

# %%
#@save
import io
import itertools
import math
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from helpers.config import Paths
from helpers.fusion import STUDY_FEATURES
from helpers.io import atomic_write_json, atomic_write_parquet, read_json

if TYPE_CHECKING:
    import matplotlib.figure
    from PIL import Image

    from helpers.clip import Clip
    from helpers.tags import ParsedStory, Segment
    from helpers.detection import Detector
    from helpers.fusion import TrainedHead
    from helpers.training import TrainResult, TrainSettings

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

from helpers import detection as det
from helpers import objects as obj
from helpers.clip import load_clip
from helpers.data import load_study_data, pair_frames
from helpers.features import load_features
from helpers.fusion import complete_rows, extended_features

threshold = float(ctx.cfg["detector"]["score_threshold"])
data = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
table, _ = complete_rows(load_features(ctx.paths), extended_features(ctx.cfg))  # chapter 06's pairs
frames = pair_frames(table, data.datasets)
detector, detections = det.profile_detections(ctx.cfg, ctx.paths, frames, device=ctx.device)
clip = load_clip(ctx.cfg["clip"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"], device=ctx.device)
display(Markdown(f"{len(table):,} pairs ({(table['split'] == 'test').sum():,} on the test split) over "
                 f"{len(frames):,} frames; {detections.forward_passes:,} frames needed a new forward pass of the "
                 "detector."))

# %% [markdown]
# ## What each evidence adds: every subset
#
# The evidences are columns of chapter 05's feature table. An ablation by subset
# trains one fusion head per non-empty subset of them, so the head that sees only the
# object score competes with the one that sees all of them on equal terms: same pairs, same
# seed, same training, its own threshold. The study's three evidences give 2³ − 1 = 7
# subsets; the subset of all three, the study's head, is the reference every other variant
# is compared with. A profile that switches on the evidences beyond the study (chapter 02's
# open-vocabulary score, chapter 03's question score) adds them to the subsets: 2ⁿ − 1 for
# *n* evidences, so the tables below show what each adds to the study's three and to the others.

# %%
#@save
#: The three evidences and their score columns in ``features.parquet``, in the study's order.
EVIDENCES: dict[str, str] = {"object": "object_score", "semantic": "clip_score", "spatial": "spatial_score"}
#: The evidences beyond the study, by profile section: their names here and their score columns.
NEW_EVIDENCES: dict[str, tuple[str, str]] = {"openvocab": ("open-vocabulary", "openvocab_score"),
                                             "questions": ("questions", "question_score")}


def profile_evidences(cfg: Mapping[str, Any]) -> dict[str, str]:
    """``EVIDENCES`` and those of ``NEW_EVIDENCES`` the profile ``cfg`` switches on, name -> score column."""
    from helpers.fusion import evidence_enabled

    return {**EVIDENCES, **{name: column for section, (name, column) in NEW_EVIDENCES.items()
                            if evidence_enabled(cfg, section)}}


def evidence_subsets(evidences: Sequence[str] = tuple(EVIDENCES)) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``evidences``, smallest first, each in the given order.

    >>> evidence_subsets(("a", "b"))
    [('a',), ('b',), ('a', 'b')]
    """
    if len(set(evidences)) != len(evidences):
        raise ValueError(f"evidences must not repeat, got {list(evidences)}")
    return [c for r in range(1, len(evidences) + 1) for c in itertools.combinations(evidences, r)]


def subset_name(subset: Sequence[str]) -> str:
    """A readable model name for a subset of evidences: ``"object + spatial"``."""
    return " + ".join(subset)


#: The variant every other one is compared with: the study's three evidences, Faster R-CNN, early stopping.
REFERENCE = subset_name(tuple(EVIDENCES))

# %%
evidences = profile_evidences(ctx.cfg)
subsets = evidence_subsets(tuple(evidences))
display(Markdown(f"This profile has {len(evidences)} evidences ({', '.join(f'`{e}`: `{c}`' for e, c in evidences.items())}), "
                 f"so {len(subsets)} subsets:\n\n" + "\n".join(f"- `{subset_name(s)}`" for s in subsets)
                 + f"\n\nThe reference is `{REFERENCE}`."))

# %% [markdown]
# A variant is a name, a family (for the tables), the training settings (which columns
# the head reads, how long it trains) and the feature table it trains on. Variants that
# change the evidence itself (another detector, other rules) bring their own table, with
# the same pairs and splits and only the evidence columns replaced; `replays` names the
# kinds of negative on which a variant's evidence repeats how the labels were made
# (the oracle detector below).

# %%
#@save
@dataclass(frozen=True)
class Variant:
    """One ablation: a fusion head named ``name``, trained with ``settings`` on ``table`` (same
    pairs and splits as the reference; only evidence columns differ). ``replays``: the negative
    types on which its evidence replays the labelling rule."""

    name: str
    family: str
    description: str
    settings: "TrainSettings"
    table: pd.DataFrame = field(repr=False, compare=False)
    replays: tuple[str, ...] = ()


def subset_variants(table: pd.DataFrame, cfg: Mapping[str, Any]) -> list[Variant]:
    """One variant per non-empty subset of the profile's evidences (``profile_evidences``),
    trained as the profile says.

    The subset of the study's three is :data:`REFERENCE`, the same head chapter 06 trains as ``fusion``.
    """
    from helpers.training import settings_from_profile

    evidences = profile_evidences(cfg)
    return [
        Variant(name=subset_name(subset), family="evidence subset",
                description="fusion head on " + ", ".join(f"{evidences[e]}" for e in subset),
                settings=settings_from_profile(cfg, [evidences[e] for e in subset]), table=table)
        for subset in evidence_subsets(tuple(evidences))
    ]

# %% [markdown]
# Replacing evidence columns is a merge on `pair_id` that keeps every row, in order:
# chapter 05's `replace_columns`, the same merge `score_pairs` uses.

# %%
#@save
from helpers.fusion import replace_columns as _replace_columns

# %% [markdown]
# ## How much the detector costs: the oracle
#
# The chain of thought of every story lists, per frame, the boxes of the characters and
# objects it describes. Mapped onto COCO categories they are a detector that agrees with
# every annotated box; those boxes were themselves drawn by COCO detectors
# (`ANNOTATION_DETECTORS` of chapter 02), so the oracle is another detector, not the truth,
# and it replays their choices. The oracle recomputes object and spatial evidence from these boxes with
# the very functions of chapters 02 and 04 (`object_features`, `spatial_features`), so the
# only change is where the boxes come from; the CLIP evidence is left as it is. A frame the
# detector could not decode stays unusable for the oracle too, so both are compared on the
# same frames.
#
# The oracle is no fair upper bound on every kind of negative. An `object_swap` negative
# puts in an object chosen as a COCO category that the chain-of-thought annotations do
# not place in the frame; the oracle reads the same annotations, so it cannot find the
# swapped-in object, by construction, whatever the frame shows (the annotations are not
# exhaustive: the object may well be there). An aligned text names the entities its
# frame's annotations hold, so the oracle finds them by construction, while an
# `other_story` or `same_story` negative names another frame's. On all of these
# (`ORACLE_REPLAYS`, written in chapter 02 with each reason) its result replays the
# labelling rule. The headroom better detections could buy is measured with them left out.

# %%
#@save
from helpers.objects import ORACLE_REPLAYS


def oracle_frames(ground_truth: pd.DataFrame, detector_frames: pd.DataFrame) -> pd.DataFrame:
    """The chain-of-thought boxes as a per-frame detection table with the frames' sizes.

    ``ground_truth`` is ``helpers.objects.ground_truth_frames``; ``detector_frames`` is
    the detector's per-frame table (``detect_frames(...).frames``), which gives each frame's
    ``status``, ``width`` and ``height``. A frame the detector could not decode stays
    unusable here too, so both detectors are compared on the same frames.
    """
    sizes = detector_frames[["story_id", "frame", "status", "width", "height"]].astype({"story_id": str, "frame": int})
    boxes = ground_truth[["story_id", "frame", "detections"]].astype({"story_id": str, "frame": int})
    frames = sizes.merge(boxes, on=["story_id", "frame"], how="left", validate="one_to_one")
    return frames.assign(detections=frames["detections"].fillna("[]"))


def oracle_features(table: pd.DataFrame, frames: pd.DataFrame, *, threshold: float) -> pd.DataFrame:
    """``table`` with its object and spatial evidence recomputed from ``frames`` (``oracle_frames``)
    with chapters 02 and 04's functions; CLIP evidence unchanged."""
    from helpers.objects import object_features
    from helpers.spatial import spatial_features

    objects = object_features(table, frames, threshold=threshold)
    spatial = spatial_features(table, frames, threshold=threshold)
    return _replace_columns(table, objects, spatial)


def detector_variant(table: pd.DataFrame, cfg: Mapping[str, Any]) -> Variant:
    """The reference head trained on ``table`` with oracle evidence (``oracle_features``)."""
    from helpers.training import settings_from_profile

    return Variant(name="oracle detector", family="detector",
                   description="all three evidences, object and spatial evidence from the chain-of-thought boxes",
                   settings=settings_from_profile(cfg, STUDY_FEATURES), table=table, replays=tuple(ORACLE_REPLAYS))

# %% [markdown]
# ## What the original study's rules gave
#
# The study scored a pair with three rules that this study replaced (chapters 02-04 say
# why). They are rebuilt here so that their worth is measured on our pairs:
#
# - **Objects**: the share of the distinct labels Faster R-CNN detects in the frame that are
#   named *anywhere in the whole story*, as a whole word, by the category's name or one of
#   its synonyms. The study's synonym map is not published; the lexicon's synonyms make
#   this rule at least as generous as a cleaner map would be. Nothing looks at the frame's
#   own segment.
# - **CLIP**: the story's *first* frame against the first 150 characters of the whole
#   story, tags included.
# - **Spatial**: the 400-pixel rule on three hard-coded label pairs
#   (`helpers.spatial.study_spatial_score`, chapter 04).
# - **Training**: three epochs, the last one kept (no early stopping).
#
# A pair's text belongs to a story: the story it came from, with this pair's segment in
# place of the original one. For an aligned pair that is the story itself; for a swap, the
# edited story; for an `other_story` negative, another story. `whole_story` rebuilds it in
# the dataset's layout, so its first 150 characters read as the original `story` column.

# %%
#@save
def study_keywords() -> dict[str, tuple[str, ...]]:
    """For each COCO category, the words that count as finding it in a story: its name and
    ``helpers.objects``' synonyms, lower case."""
    from helpers.objects import COCO_CATEGORIES, SYNONYMS

    words: dict[str, list[str]] = {c: [c] for c in COCO_CATEGORIES}
    for word, category in SYNONYMS.items():
        words[category].append(word)
    return {c: tuple(dict.fromkeys(w)) for c, w in words.items()}


def study_object_score(
    detected: Iterable[str],
    story: str,
    keywords: Mapping[str, Sequence[str]] | None = None,
    *,
    empty: float = 0.0,
) -> float:
    """The study's object score: the share of distinct ``detected`` labels named, as a whole word,
    anywhere in ``story`` (tags ignored); ``empty`` when nothing was detected."""
    from helpers.tags import strip_tags as _strip

    labels = list(dict.fromkeys(detected))
    if not labels:
        return empty
    keywords = study_keywords() if keywords is None else keywords
    text = _strip(story).lower()
    found = sum(
        any(re.search(rf"\b{re.escape(w.lower())}\b", text) for w in (label, *keywords.get(label, ())))
        for label in labels
    )
    return found / len(labels)


def whole_story(segments: Sequence["Segment"], frame: int | None = None, replacement: str | None = None) -> str:
    """The tagged story rebuilt from its segments in the dataset's layout, optionally with frame
    ``frame``'s text replaced by ``replacement``."""
    if (frame is None) != (replacement is None):
        raise ValueError("give both frame and replacement, or neither")
    if frame is not None and frame not in {s.frame for s in segments}:
        raise ValueError(f"the story has no frame {frame} to replace")
    parts = [f"<gdi image{s.frame}>\n{replacement if s.frame == frame else s.tagged}\n</gdi>" for s in segments]
    return "\n\n".join(parts)


def study_story_texts(table: pd.DataFrame, stories: Iterable["ParsedStory"]) -> pd.Series:
    """The whole tagged story each pair's text belongs to, indexed by ``pair_id``.

    That is the story the text came from (``source_story_id``) with the segment of
    ``source_frame`` replaced by the pair's ``tagged_text``: the story itself for an aligned
    pair, the edited story for a swap, another story for an ``other_story`` negative.
    """
    by_id = {s.story_id: s for s in stories}
    texts = {}
    columns = ["pair_id", "source_story_id", "source_frame", "tagged_text"]
    for pair_id, source, frame, tagged in table[columns].itertuples(index=False):
        story = by_id.get(str(source))
        if story is None:
            raise ValueError(f"pair {pair_id}: its text's story {source} is not among the stories given")
        texts[pair_id] = whole_story(story.segments, int(frame), tagged)
    return pd.Series(texts, name="story_text")

# %% [markdown]
# A detected label counts once however often it is detected, and counts as found when its
# name or one of its synonyms occurs in the story as a whole word:

# %%
demo_story = "<gdo char1>A man</gdo> sits on <gdo obj1>the couch</gdo> and drinks from a mug."
demo_keywords = {"person": ["man"], "couch": ["sofa"], "cup": ["mug"], "tv": []}
display(pd.Series({labels: study_object_score(labels.split(", "), demo_story, demo_keywords)
                   for labels in ("person, couch", "person, person, tv", "cup, tv")}, name="study object score"))

# %%
#@save
def study_clip_scores(clip: "Clip", table: pd.DataFrame, story_texts: pd.Series, datasets: Sequence[Any],
                      cache_dir: str | Path, *, batch_size: int) -> pd.Series:
    """The study's CLIP score of each pair: frame 1 of the pair's story against the first
    150 characters of its whole story (``story_texts``, tags included). NaN when frame 1
    does not decode. Embeddings go through chapter 03's cache (``cache_dir``: its ``images``
    and ``texts`` folders)."""
    from helpers.semantics import FIRST_CHARS, cosine_to_score
    from helpers.clip import embed_images, embed_texts
    from helpers.data import pair_frames

    first = pd.DataFrame({"story_id": table["story_id"].astype(str).unique(), "frame": 1})
    frames = pair_frames(first, datasets)
    images, _ = embed_images(clip, {f"{s}/1": frames[(s, 1)] for s in first["story_id"]},
                             Path(cache_dir) / "images", batch_size=batch_size)
    image_of = dict(zip(first["story_id"], images["embedding"]))
    heads = story_texts.loc[table["pair_id"]].str[:FIRST_CHARS]
    texts, _ = embed_texts(clip, list(dict.fromkeys(heads)), Path(cache_dir) / "texts", batch_size=batch_size)
    text_of = dict(zip(texts["text"], texts["embedding"]))
    scores = [math.nan if image_of[str(s)] is None else float(cosine_to_score(float(text_of[h] @ image_of[str(s)])))
              for s, h in zip(table["story_id"], heads)]
    return pd.Series(scores, index=table["pair_id"].to_numpy(), name="clip_score")


def study_features(table: pd.DataFrame, detector_frames: pd.DataFrame, story_texts: pd.Series,
                   clip_scores: pd.Series, *, threshold: float) -> pd.DataFrame:
    """``table`` with the study's three scores in place of this study's.

    - ``object_score``: ``study_object_score`` of the labels Faster R-CNN detects in the
      pair's frame (at ``threshold``) against the pair's whole story (``story_texts``);
    - ``clip_score``: ``clip_scores`` (``study_clip_scores``); where frame 1 did not decode,
      0.5, the score of a zero cosine (the study had no rule for it);
    - ``spatial_score``: ``helpers.spatial.study_spatial_score``, the 400 px rule, on the
      pair's frame.
    """
    from helpers.detection import parse_detections
    from helpers.spatial import study_spatial_score

    columns = ["story_id", "frame", "status", "detections"]
    detections = {(str(s), int(f)): parse_detections(cell, threshold) if status == "ok" else []
                  for s, f, status, cell in detector_frames[columns].itertuples(index=False)}
    keywords = study_keywords()
    keys = list(zip(table["story_id"].astype(str), table["frame"].astype(int)))
    if missing := sorted(set(keys) - set(detections)):
        raise ValueError(f"the detector's frame table lacks {len(missing)} frames of the pairs, e.g. {missing[:3]}")
    texts = story_texts.loc[table["pair_id"]].to_numpy()
    study = pd.DataFrame({
        "pair_id": table["pair_id"].to_numpy(),
        "object_score": [study_object_score((d.label for d in detections[k]), text, keywords)
                         for k, text in zip(keys, texts)],
        "clip_score": clip_scores.loc[table["pair_id"]].fillna(0.5).to_numpy(),
        "spatial_score": [study_spatial_score(detections[k]) for k in keys],
    })
    return _replace_columns(table, study)


def study_variant(table: pd.DataFrame, cfg: Mapping[str, Any]) -> Variant:
    """The study's rules (``study_features``) and its training: 3 epochs, the last one kept."""
    from helpers.training import STUDY_EPOCHS, settings_from_profile

    return Variant(name="study rules", family="study rules",
                   description="whole-story keyword objects, first-frame CLIP on 150 characters, 400 px pairs, "
                               "3 epochs",
                   settings=settings_from_profile(cfg, STUDY_FEATURES, max_epochs=STUDY_EPOCHS, patience=None),
                   table=table)

# %% [markdown]
# ## What the tags add
#
# Every head above reads the plain text, as the verifier does with a user's text. This one
# reads the StoryReasoning tags instead: a `<gdo char1>` mention is a character, a person
# unless its own words say otherwise ("the droid"), so "James sits on the couch" needs a
# person and states a relation. Like every feature, it never reads the chain of thought
# (which describes the frame judged). Same detections, same functions (`read_tags=True`),
# CLIP unchanged. The distance to the reference is what the tags add; the verifier cannot
# have it for plain text.

# %%
#@save
def tagged_features(table: pd.DataFrame, frames: pd.DataFrame, *, threshold: float) -> pd.DataFrame:
    """``table`` with its object and spatial evidence recomputed from the *tagged* text
    (``read_tags=True``): same detections, same functions, CLIP unchanged."""
    from helpers.objects import object_features
    from helpers.spatial import spatial_features

    objects = object_features(table, frames, threshold=threshold, read_tags=True)
    spatial = spatial_features(table, frames, threshold=threshold, read_tags=True)
    return _replace_columns(table, objects, spatial)


def tags_variant(table: pd.DataFrame, cfg: Mapping[str, Any]) -> Variant:
    """The reference head trained on ``table`` with evidence read from the tags (``tagged_features``)."""
    from helpers.training import settings_from_profile

    return Variant(name="tagged text", family="text",
                   description="all three evidences, object and spatial evidence read from the story's tags "
                               "(characters by id and by their mentions' words) instead of the plain text",
                   settings=settings_from_profile(cfg, STUDY_FEATURES), table=table)

# %% [markdown]
# ## The variants, built
#
# The subsets, the oracle detector, the study's rules and the tagged text, each with
# its table and its training settings:

# %%
story_texts = study_story_texts(table, data.stories)
study_clip = study_clip_scores(clip, table, story_texts, data.datasets, ctx.paths.cache / "clip",
                               batch_size=int(ctx.cfg["clip"]["batch_size"]))
oracle = oracle_frames(obj.ground_truth_frames(data.stories), detections.frames)
variants = [
    *subset_variants(table, ctx.cfg),
    detector_variant(oracle_features(table, oracle, threshold=threshold), ctx.cfg),
    study_variant(study_features(table, detections.frames, story_texts, study_clip, threshold=threshold), ctx.cfg),
    tags_variant(tagged_features(table, detections.frames, threshold=threshold), ctx.cfg),
]

# %%
#@save
# extra code: the variants as a table
def variant_table(variants: Sequence[Variant]) -> pd.DataFrame:
    """One row per variant: its family, its input columns, and how long it trains."""
    def epochs(settings: "TrainSettings") -> str:
        if settings.patience is None:
            return f"{settings.max_epochs} (last kept)"
        return f"up to {settings.max_epochs}, patience {settings.patience} (best on validation kept)"

    return pd.DataFrame([{"variant": v.name, "family": v.family, "inputs": ", ".join(v.settings.features),
                          "epochs": epochs(v.settings)} for v in variants]).set_index("variant")

# %%
display(variant_table(variants))
display(Markdown("\n".join(
    f"- `{v.name}` replays the labels on `{kind}` negatives: {ORACLE_REPLAYS[kind]}, so it finds them by "
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
# Each head is trained with chapter 06's `train_fusion` into its own checkpoint folder
# (a rerun resumes or returns at once), then scores every pair of its own feature table.

# %%
#@save
def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def train_variants(variants: Sequence[Variant], checkpoints_dir: str | Path) -> dict[str, "TrainResult"]:
    """Train every variant's head (``helpers.training.train_fusion``), each with its own
    checkpoint folder under ``checkpoints_dir``, so a rerun resumes or returns at once."""
    from tqdm.auto import tqdm

    from helpers.training import train_fusion

    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    return {v.name: train_fusion(v.table, v.settings, Path(checkpoints_dir) / _slug(v.name), progress=False)
            for v in tqdm(variants, desc="ablation heads", unit="head")}


def variant_predictions(variants: Sequence[Variant], results: Mapping[str, "TrainResult"]) -> pd.DataFrame:
    """Every pair scored by every variant's head on that variant's own table (``helpers.training.predict``)."""
    from helpers.training import head_scorer, predict

    return pd.concat([predict(v.table, [head_scorer(v.name, results[v.name].head)]).assign(family=v.family)
                      for v in variants], ignore_index=True)

# %%
#@save
# extra code: what each training did
def training_table(results: Mapping[str, "TrainResult"]) -> pd.DataFrame:
    """One row per trained variant: epochs trained, the epoch kept, the validation-tuned threshold."""
    return pd.DataFrame([{"variant": name, "epochs trained": len(r.history), "kept epoch": r.best_epoch,
                          "threshold": r.head.threshold} for name, r in results.items()]).set_index("variant")

# %% [markdown]
# ## Compared with the reference, on the same resamples
#
# Every variant is evaluated on the test split as chapter 07 evaluates the models
# (`evaluate_split`: metrics overall and per kind of negative, 95% intervals from
# resampling id blocks). What matters is each variant *minus the reference*: both are
# scored on the same block resamples (`bootstrap_difference`), so the interval of the
# difference is paired, and an interval that excludes zero means the test split tells the
# two apart. For a variant that replays the labels on some kinds of negative, the
# difference is also computed with those negatives left out (the aligned pairs and every
# other negative kept): the only fair headroom. For a variant that replays nothing it is
# its ordinary difference.

# %%
#@save
def ablation_metrics(predictions: pd.DataFrame, variants: Sequence[Variant], *, n_resamples: int, seed: int,
                     reference: str = REFERENCE) -> dict[str, Any]:
    """The ablation results on the test split: ``evaluate_split``'s document plus ``reference``,
    each variant's ``family`` and ``description``, ``differences`` (variant minus reference,
    paired over id blocks), ``paired_gains`` (the variant's paired score minus the reference's,
    over all frames and per kind of negative, on the same block resamples), ``replays`` and
    ``differences_without_replayed``."""
    from helpers.evaluation import bootstrap_difference, bootstrap_paired_difference, evaluate_split, paired_outcomes

    document = evaluate_split(predictions, "test", n_resamples=n_resamples, seed=seed)
    if reference not in document["models"]:
        raise ValueError(f"the reference variant {reference!r} is not among the predictions")
    test = predictions[predictions["split"] == "test"].sort_values(["model", "pair_id"])
    ref = test[test["model"] == reference]
    ref_frames = paired_outcomes(ref)
    paired_gains = {v.name: bootstrap_paired_difference(paired_outcomes(test[test["model"] == v.name]), ref_frames,
                                                        n_resamples=n_resamples, seed=seed)
                    for v in variants if v.name != reference}

    def difference(rows: pd.DataFrame, ref: pd.DataFrame) -> dict[str, Any]:
        return bootstrap_difference(
            rows["label"].to_numpy(), rows["score"].to_numpy(), float(rows["threshold"].iloc[0]),
            ref["score"].to_numpy(), float(ref["threshold"].iloc[0]), rows["block"].to_numpy(),
            n_resamples=n_resamples, seed=seed)

    differences, fair, replays = {}, {}, {}
    for v in variants:
        if v.name == reference:
            continue
        rows = test[test["model"] == v.name]
        differences[v.name] = difference(rows, ref)
        replayed = tuple(getattr(v, "replays", ()))
        if not replayed:
            fair[v.name] = differences[v.name]
            continue
        replays[v.name] = list(replayed)
        keep = ~((rows["label"] == 0) & rows["negative_type"].isin(replayed)).to_numpy()
        fair[v.name] = difference(rows[keep], ref[keep])
    return {**document, "reference": reference,
            "bootstrap": {"unit": "id_block", "n_resamples": n_resamples, "seed": seed},
            "families": {v.name: v.family for v in variants},
            "descriptions": {v.name: v.description for v in variants}, "differences": differences,
            "paired_gains": paired_gains, "replays": replays, "differences_without_replayed": fair}


#: What :func:`ablation_table` appends to a result that replays the labelling rule.
REPLAYS_MARK = " (replays the labels)"

# %%
#@save
# extra code: the results as a table of "value [95% interval]" cells, and where they are written
def ablation_table(document: Mapping[str, Any], metric: str = "roc_auc") -> pd.DataFrame:
    """One row per variant: its family, ``metric`` overall and per kind of negative, and the
    difference from the reference, each "value [95% interval]". A variant's result on a
    negative type its evidence replays is marked :data:`REPLAYS_MARK`; the last column is the
    difference with those negatives left out (``differences_without_replayed``)."""
    from helpers.pairs import NEGATIVE_TYPES
    from helpers.evaluation import format_estimate

    reference = document["reference"]
    replays = document.get("replays", {})
    fair = document.get("differences_without_replayed", {})
    rows = {}
    for name, info in document["models"].items():
        row = {"family": document["families"].get(name, ""), "overall": format_estimate(info["overall"].get(metric))}
        for t in NEGATIVE_TYPES:
            if t in info["by_negative_type"]:
                mark = REPLAYS_MARK if t in replays.get(name, ()) else ""
                row[t] = format_estimate(info["by_negative_type"][t].get(metric)) + mark
        diff = document["differences"].get(name)
        row[f"minus {reference}"] = format_estimate(diff.get(metric)) if diff else "(reference)"
        if fair:
            row[f"minus {reference}, replayed negatives left out"] = (
                format_estimate(fair[name].get(metric)) if name in fair else "(reference)")
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(f"variant ({metric})")


ABLATIONS_FILE = "ablations.json"


def ablations_path(paths: Paths) -> Path:
    """``outputs/<profile>/ablations.json``: the ablation metrics (chapter 09, read by chapter 10)."""
    return paths.root / ABLATIONS_FILE


def write_ablations(paths: Paths, document: Mapping[str, Any]) -> Path:
    """Write ``ablations.json`` atomically."""
    return atomic_write_json(ablations_path(paths), dict(document))


def paired_gain_table(document: Mapping[str, Any], family: str = "evidence subset") -> pd.DataFrame:
    """One row per variant of ``family``: its paired score minus the reference's, over every (frame, kind)
    outcome and per kind of negative ("value [95% interval]"; both heads on the same frames of each kind);
    positive means it ranks more frames' own text above their negative than the reference does."""
    from helpers.evaluation import ALL_FRAMES, format_estimate
    from helpers.pairs import NEGATIVE_TYPES

    gains = {name: g for name, g in document.get("paired_gains", {}).items()
             if document.get("families", {}).get(name) == family}
    columns = [c for c in (ALL_FRAMES, *NEGATIVE_TYPES) if any(c in g for g in gains.values())]
    rows = {name: {c: format_estimate(g.get(c)) for c in columns} for name, g in gains.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis(
        f"variant minus {document['reference']} (paired score)")


def record_in_metrics(paths: Paths, document: Mapping[str, Any], evidences: Mapping[str, str]) -> Path:
    """Add the evidence subsets to ``metrics.json`` (chapter 07's file) under ``"ablations"``: the
    evidences and their score columns, the reference, and per subset its inputs, its ROC-AUC and
    paired score (overall and per kind of negative) and its paired gain over the reference.
    The whole ablation document stays in ``ablations.json``."""
    metrics = read_json(paths.metrics_json)
    if metrics is None:
        raise FileNotFoundError(f"{paths.metrics_json} is missing: run chapter 07 (evaluation) first")
    subsets = {
        name: {"features": info["features"], "roc_auc": info["overall"]["roc_auc"],
               "roc_auc_by_negative_type": {t: v["roc_auc"] for t, v in info["by_negative_type"].items()},
               "paired": info["paired"], "paired_gain": document["paired_gains"].get(name)}
        for name, info in document["models"].items() if document["families"].get(name) == "evidence subset"}
    metrics["ablations"] = {"file": ABLATIONS_FILE, "evidences": dict(evidences), "reference": document["reference"],
                            "subsets": subsets}
    return atomic_write_json(paths.metrics_json, metrics)


def read_ablations(paths: Paths) -> dict[str, Any] | None:
    """The ablation results of chapter 09, or None when it has not run."""
    return read_json(ablations_path(paths))

# %%
results = train_variants(variants, ctx.paths.checkpoints / "ablations")
predictions = variant_predictions(variants, results)
document = ablation_metrics(predictions, variants, n_resamples=int(ctx.cfg["bootstrap"]["n_resamples"]),
                            seed=int(ctx.cfg["seed"]))
path = write_ablations(ctx.paths, document)
record_in_metrics(ctx.paths, document, evidences)
display(training_table(results))

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
display(ablation_table(document, "roc_auc"))
display(Markdown("Macro-F1 at each variant's validation-tuned threshold:"))
display(ablation_table(document, "macro_f1"))

# %% [markdown]
# ## Where each evidence helps
#
# The paired score asks, frame by frame, whether a head ranks the frame's own text above its
# negative. Its gain over the reference, per kind of negative and on the same block
# resamples, says where an evidence earns its place: an object swap is refuted by finding
# (or not finding) the named thing, which the open-vocabulary detector can check for nouns
# COCO lacks; a relation swap or an action by asking about it, which the questions do.
# The subsets are in `metrics.json` too (`"ablations"`), next to chapter 07's models.

# %%
display(paired_gain_table(document))

# %% [markdown]
# Read in words: the best and the worst subsets of evidence, and what the oracle detector
# and the study's rules change against the reference, with their paired intervals. A
# variant that replays the labels on some negatives is said to, and its headroom is quoted
# with those negatives left out, never with them in. The phrasing of an interval
# (`difference_phrase`) and the ranking of models are chapter 08's.

# %%
#@save
def ablation_findings(ablations: Mapping[str, Any], metric: str = "roc_auc") -> list[str]:
    """The ablation results (``ablations.json``) as Markdown sentences, every number computed."""
    from helpers.dashboards import METRIC_LABELS, difference_phrase, ranked
    from helpers.evaluation import format_estimate

    models, families = ablations["models"], ablations.get("families", {})
    reference, differences = ablations["reference"], ablations.get("differences", {})
    label = METRIC_LABELS.get(metric, metric)
    out = []
    subsets = ranked(models, [m for m in models if families.get(m) == "evidence subset"], metric)
    if subsets:
        best, worst = models[subsets[0]]["overall"], models[subsets[-1]]["overall"]
        out.append(f"Among the {len(subsets)} subsets of evidence, each with its own head, `{subsets[0]}` has the "
                   f"highest {label} ({format_estimate(best.get(metric))}) and `{subsets[-1]}` the lowest "
                   f"({format_estimate(worst.get(metric))}).")
    replays, fair = ablations.get("replays", {}), ablations.get("differences_without_replayed", {})
    for name, what in (("oracle detector", "Replacing Faster R-CNN by the chain-of-thought boxes"),
                       ("study rules", "Scoring with the original study's rules and training for three epochs")):
        if name in differences and differences[name].get(metric) is not None:
            sentence = (f"{what} changes {label} by {difference_phrase(differences[name][metric])} "
                        f"(against `{reference}`)")
            if replays.get(name):
                kinds = ", ".join(f"`{t}`" for t in replays[name])
                sentence += (f". That change is not headroom: on the {kinds} negatives its evidence replays how they "
                             "were built (from the same annotations), so it finds them by construction")
                if fair.get(name, {}).get(metric) is not None:
                    sentence += (f". With those negatives left out, what better detections could buy is "
                                 f"{difference_phrase(fair[name][metric])}")
            out.append(sentence + ".")
    return out

# %%
display(Markdown("\n".join(f"- {sentence}" for sentence in ablation_findings(document))))

# %% [markdown]
# ## Robustness
#
# A sample of test pairs, half aligned and half not, is scored again after one change to
# its input, with the same detector, CLIP model, rules and head (nothing is retrained).
# None of these changes should change whether a frame and a text belong together, so a
# robust verifier changes its scores little and its decisions rarely. A perturbation that
# cannot apply to an input (fewer letters than typos asked for) says so with its own error.

# %%
#@save
class PerturbationError(ValueError):
    """A perturbation cannot be applied to this input (e.g. fewer letters than typos asked for)."""

# %% [markdown]
# ### The images
#
# Gaussian blur, a central crop resized back (the frame keeps the size the detector and the
# pixel rules see: the edges are lost, everything else is magnified), a round trip through
# heavy JPEG compression, brighter exposure.

# %%
#@save
def blur(image: "Image.Image", radius: float = 2.0) -> "Image.Image":
    """Gaussian blur of ``radius`` pixels (PIL)."""
    from PIL import ImageFilter

    if radius <= 0:
        raise PerturbationError(f"blur radius must be positive, got {radius}")
    return image.filter(ImageFilter.GaussianBlur(radius))


def crop(image: "Image.Image", keep: float = 0.8) -> "Image.Image":
    """The central ``keep`` fraction of each side, resized back to the original size."""
    from PIL import Image

    if not 0 < keep < 1:
        raise PerturbationError(f"crop must keep a fraction in (0, 1) of each side, got {keep}")
    w, h = image.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BILINEAR)


def jpeg(image: "Image.Image", quality: int = 10) -> "Image.Image":
    """The image after a round trip through JPEG at ``quality`` (1-95)."""
    from PIL import Image

    if not 1 <= quality <= 95:
        raise PerturbationError(f"JPEG quality must be in 1..95, got {quality}")
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def brightness(image: "Image.Image", factor: float = 1.6) -> "Image.Image":
    """Brightness scaled by ``factor`` (PIL ``ImageEnhance``; 1 leaves the image as it is)."""
    from PIL import ImageEnhance

    if factor <= 0 or factor == 1:
        raise PerturbationError(f"brightness factor must be positive and not 1, got {factor}")
    return ImageEnhance.Brightness(image).enhance(factor)

# %%
from PIL import Image as PILImage, ImageDraw

demo_frame = PILImage.new("RGB", (192, 128), "#607d8b")
ImageDraw.Draw(demo_frame).rectangle((40, 30, 110, 100), fill="#ffb300")
demo_perturbations = {"original": lambda image: image, "blur": blur, "crop": crop, "JPEG": jpeg,
                      "brightness": brightness}
fig, axes = plt.subplots(1, len(demo_perturbations), figsize=(2.6 * len(demo_perturbations), 2))
for ax, (name, perturb) in zip(axes, demo_perturbations.items()):
    ax.imshow(perturb(demo_frame))
    ax.set(title=name, xticks=[], yticks=[])
plt.show()

# %% [markdown]
# ### The texts
#
# Three changes to a tagged text. **Typos**: `k` distinct letters outside the tag markup
# each replaced by another letter (case kept), so the text keeps its length, differs in
# exactly `k` places and still parses. **Tags stripped**: the same words, but nothing marks
# what they name; this measures how much the verdicts rest on the annotation rather than on
# the words. **Sentences shuffled**: the same sentences in another order; with two or more
# distinct sentences the order always changes (a draw that gives the original order is
# rotated by one).

# %%
#@save
#: Tag markup (``<gdo char1>``, ``</gda>``, ``<gdi image3>``): text perturbations leave it intact.
_MARKUP = re.compile(r"<[^<>]*>")
_WRAPPER = re.compile(r"^(\s*<gdi\b[^>]*>\s*)(.*?)(\s*</gdi\s*>\s*)?$", re.IGNORECASE | re.DOTALL)


def _markup_mask(text: str) -> np.ndarray:
    """True for every character that belongs to tag markup."""
    mask = np.zeros(len(text), dtype=bool)
    for m in _MARKUP.finditer(text):
        mask[m.start() : m.end()] = True
    return mask


def typos(text: str, rng: np.random.Generator, k: int = 3) -> str:
    """``k`` typos: ``k`` distinct letters outside tag markup, each replaced by another letter (case
    kept). Raises ``PerturbationError`` when the text has fewer than ``k`` such letters."""
    if k < 1:
        raise PerturbationError(f"k must be at least 1, got {k}")
    masked = _markup_mask(text)
    candidates = [i for i, c in enumerate(text) if c.isascii() and c.isalpha() and not masked[i]]
    if len(candidates) < k:
        raise PerturbationError(f"the text has {len(candidates)} letters outside tags, "
                                f"fewer than the {k} typos asked for")
    chars = list(text)
    for i in rng.choice(candidates, size=k, replace=False):
        lower = chars[i].lower()
        others = [c for c in "abcdefghijklmnopqrstuvwxyz" if c != lower]
        new = others[rng.integers(len(others))]
        chars[i] = new.upper() if chars[i].isupper() else new
    return "".join(chars)


def strip_tags(text: str, rng: np.random.Generator | None = None) -> str:
    """The text without any grounding tags (``helpers.tags.strip_tags``); ``rng`` is unused."""
    from helpers.tags import strip_tags as _strip

    return _strip(text)

# %% [markdown]
# Shuffling needs the sentences of a tagged segment, tags kept: chapter 03's one sentence
# splitter with `keep_tags=True`, which never splits inside an open `<gdo>`, `<gda>` or
# `<gdl>` tag and leaves a `<gdi>` wrapper out of every sentence.

# %%
#@save
def split_tagged_sentences(text: str) -> list[str]:
    """The sentences of a tagged segment, tags kept (chapter 03's ``split_sentences``, ``keep_tags=True``)."""
    from helpers.semantics import split_sentences

    return split_sentences(text, keep_tags=True)

# %%
#@save
def shuffle_sentences(text: str, rng: np.random.Generator) -> str:
    """The same sentences in another order (always another when two or more differ); a ``<gdi>``
    wrapper stays around them."""
    sentences = split_tagged_sentences(text)
    order = rng.permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    if len(set(sentences)) > 1 and shuffled == sentences:
        shuffled = shuffled[1:] + shuffled[:1]
    body = " ".join(shuffled)
    match = _WRAPPER.match(text)
    if match and text.lstrip().lower().startswith("<gdi"):
        return f"{match.group(1)}{body}{match.group(3) or ''}"
    return body


#: Image perturbations of the robustness study, by display name.
IMAGE_PERTURBATIONS: dict[str, Callable[["Image.Image"], "Image.Image"]] = {
    "blur (Gaussian, radius 2 px)": partial(blur, radius=2.0),
    "crop (central 80%, resized back)": partial(crop, keep=0.8),
    "JPEG (quality 10)": partial(jpeg, quality=10),
    "brightness (x1.6)": partial(brightness, factor=1.6),
}


#: Text perturbations of the robustness study, by display name; each takes (text, rng).
TEXT_PERTURBATIONS: dict[str, Callable[[str, np.random.Generator], str]] = {
    "typos (3 letters)": partial(typos, k=3),
    "tags stripped": strip_tags,
    "sentence order shuffled": shuffle_sentences,
}

# %%
demo_text = ("<gdi image2>\n<gdo char1>Mr. Smith</gdo> puts <gdo obj1>a cup</gdo> on the table. "
             "<gdo char2>Anna</gdo> smiles at him.\n</gdi>")
display(pd.Series({"original": demo_text, **{name: perturb(demo_text, np.random.default_rng(0))
                                             for name, perturb in TEXT_PERTURBATIONS.items()}},
                  name="text").to_frame().style.set_properties(**{"white-space": "pre-wrap", "text-align": "left"}))

# %% [markdown]
# ### Scoring a perturbed pair from scratch
#
# The sample is drawn with the profile's seed, half aligned and half not. Each perturbed
# frame is re-encoded as PNG (lossless, so only the perturbation changes it); each text
# perturbation draws from a generator of its own pair, so a pair's typos do not depend on
# which other pairs are in the sample. `score_pairs` (chapter 05) computes the three
# evidences of a batch of pairs from the frames' bytes exactly as chapters 02-04 do, through their caches
# (keyed by the frame's bytes and the text), so the unperturbed pairs and the frames of
# the text perturbations cost no new forward pass.

# %%
#@save
#: The scores whose movement the robustness study reports, and the head's output.
ROBUSTNESS_SCORES: tuple[str, ...] = (*STUDY_FEATURES, "probability")


def robustness_sample(table: pd.DataFrame, n_pairs: int, *, seed: int, split: str = "test") -> pd.DataFrame:
    """``n_pairs`` pairs of ``split`` drawn with ``seed``, half aligned and half not (as far as they go)."""
    if n_pairs < 2:
        raise ValueError(f"the robustness sample needs at least 2 pairs, got {n_pairs}")
    rows = table[table["split"] == split]
    parts = [rows[rows["label"] == label] for label in (1, 0)]
    half = [n_pairs // 2, n_pairs - n_pairs // 2]
    sample = [p.sample(n=min(h, len(p)), random_state=seed) for p, h in zip(parts, half)]
    return pd.concat(sample).sort_values("pair_id", ignore_index=True)


def _pair_rng(seed: int, pair_id: str) -> np.random.Generator:
    """A generator for one pair, independent of which other pairs are perturbed."""
    return np.random.default_rng([seed, zlib.crc32(str(pair_id).encode())])


def perturb_frames(frames: Mapping[tuple[str, int], bytes], perturb: Callable[["Image.Image"], "Image.Image"]
                   ) -> dict[tuple[str, int], bytes]:
    """Every frame perturbed and re-encoded as PNG (lossless, so only ``perturb`` changes it).

    A frame that does not decode is passed on as it is (the scorers skip it and count it).
    """
    from helpers.data import CorruptFrameError, frame_image

    out = {}
    for key, data in frames.items():
        try:
            image = frame_image([data], 1)
        except CorruptFrameError:
            out[key] = data
            continue
        buffer = io.BytesIO()
        perturb(image).save(buffer, format="PNG")
        out[key] = buffer.getvalue()
    return out


def perturb_texts(pairs: pd.DataFrame, perturb: Callable[[str, np.random.Generator], str], *,
                  seed: int) -> pd.DataFrame:
    """``pairs`` with each ``tagged_text`` perturbed (a generator per pair) and ``text`` re-derived from it."""
    from helpers.tags import strip_tags as _strip

    tagged = [perturb(t, _pair_rng(seed, p)) for p, t in zip(pairs["pair_id"], pairs["tagged_text"])]
    return pairs.assign(tagged_text=tagged, text=[_strip(t) for t in tagged])

# %%
#@save
from helpers.fusion import score_pairs

# %% [markdown]
# The unperturbed sample goes through the same scorer as every perturbed copy, so every
# change is due to the perturbation alone. One row per (perturbation, pair): each score
# and P(aligned) before and after, the decision before and after, and whether it flipped.
# The summary averages the absolute change of each score per perturbation and counts the
# decisions that flipped.

# %%
#@save
def robustness(sample: pd.DataFrame, frames: Mapping[tuple[str, int], bytes],
               score: Callable[[pd.DataFrame, Mapping[tuple[str, int], bytes]], pd.DataFrame],
               head: "TrainedHead", *, seed: int,
               image_perturbations: Mapping[str, Callable[["Image.Image"], "Image.Image"]] = IMAGE_PERTURBATIONS,
               text_perturbations: Mapping[str, Callable[[str, np.random.Generator], str]] = TEXT_PERTURBATIONS,
               ) -> pd.DataFrame:
    """How each score, P(aligned) and the decision move when the sample's inputs are perturbed.

    ``score(pairs, frames)`` computes the evidence from scratch (``score_pairs`` with its
    keyword arguments bound). One row per (perturbation, pair): ``perturbation``, ``kind``
    ("image" | "text"), ``pair_id``, ``label``, ``negative_type``, ``<score>_clean`` and
    ``<score>_perturbed`` for each of ``ROBUSTNESS_SCORES``, ``decision_clean``,
    ``decision_perturbed`` and ``flipped``."""
    keys = dict.fromkeys(zip(sample["story_id"].astype(str), sample["frame"].astype(int)))
    frames = {key: frames[key] for key in keys}

    def scored(pairs: pd.DataFrame, pair_frames: Mapping[tuple[str, int], bytes]) -> pd.DataFrame:
        table = score(pairs, pair_frames)
        return table.assign(probability=head.predict_proba(table)).set_index("pair_id").loc[sample["pair_id"]]

    clean = scored(sample, frames)
    runs = [(name, "image", sample, perturb_frames(frames, f)) for name, f in image_perturbations.items()]
    runs += [(name, "text", perturb_texts(sample, f, seed=seed), frames) for name, f in text_perturbations.items()]
    parts = []
    for name, kind, pairs, pair_frames in runs:
        perturbed = scored(pairs, pair_frames)
        part = pd.DataFrame({"perturbation": name, "kind": kind, "pair_id": sample["pair_id"].to_numpy(),
                             "label": sample["label"].to_numpy(), "negative_type": sample["negative_type"].to_numpy()})
        for column in ROBUSTNESS_SCORES:
            part[f"{column}_clean"] = clean[column].to_numpy(dtype=float)
            part[f"{column}_perturbed"] = perturbed[column].to_numpy(dtype=float)
        part["decision_clean"] = part["probability_clean"] >= head.threshold
        part["decision_perturbed"] = part["probability_perturbed"] >= head.threshold
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    return out.assign(flipped=out["decision_clean"] != out["decision_perturbed"])


def robustness_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Per perturbation: pairs, the mean absolute change of each score and of P(aligned), and
    the share of decisions that flipped (aligned <-> misaligned)."""
    changes = {f"mean |change| {c}": (long[f"{c}_perturbed"] - long[f"{c}_clean"]).abs() for c in ROBUSTNESS_SCORES}
    frame = long[["perturbation", "kind", "flipped"]].assign(**changes)
    summary = frame.groupby(["kind", "perturbation"], sort=False).agg(
        pairs=("flipped", "size"), **{k: (k, "mean") for k in changes}, decisions_flipped=("flipped", "mean"))
    return summary.reset_index()

# %%
#@save
# extra code: the figure, and where the per-pair table is written
def plot_robustness(summary: pd.DataFrame) -> "matplotlib.figure.Figure":
    """Left: the mean absolute change of each score and of P(aligned) per perturbation;
    right: the share of decisions that flipped."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    columns = [c for c in summary.columns if c.startswith("mean |change| ")]
    changes = summary.melt(id_vars=["kind", "perturbation"], value_vars=columns, var_name="score",
                           value_name="mean absolute change")
    changes["score"] = changes["score"].str.removeprefix("mean |change| ")
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.6 * len(summary) + 1.8),
                                      gridspec_kw={"width_ratios": [2, 1]})
    sns.barplot(changes, y="perturbation", x="mean absolute change", hue="score", ax=left)
    left.set_title(f"How far each score moves ({int(summary['pairs'].max())} test pairs)")
    sns.barplot(summary, y="perturbation", x="decisions_flipped", color="#c62828", ax=right)
    right.set(xlim=(0, 1), xlabel="share of decisions flipped", ylabel="", title="How often the verdict flips")
    right.set_yticklabels([])
    fig.tight_layout()
    return fig


ROBUSTNESS_FILE = "robustness.parquet"


def robustness_path(paths: Paths) -> Path:
    """``outputs/<profile>/robustness.parquet``: the per-pair robustness scores (chapter 09)."""
    return paths.root / ROBUSTNESS_FILE


def write_robustness(paths: Paths, long: pd.DataFrame) -> Path:
    """Write ``robustness.parquet`` atomically."""
    return atomic_write_parquet(long, robustness_path(paths))


def read_robustness(paths: Paths) -> pd.DataFrame | None:
    """The per-pair robustness table of chapter 09, or None when it has not run."""
    path = robustness_path(paths)
    return pd.read_parquet(path) if path.exists() else None

# %%
from helpers.fusion import without_new_evidence
from helpers.training import DEFAULT_RUN, default_checkpoint, load_head

n_pairs = 2 if ctx.is_smoke else 40  # size of the robustness sample
sample = robustness_sample(table, n_pairs, seed=int(ctx.cfg["seed"]))
score = partial(score_pairs, detector=detector, clip=clip,
                cfg=without_new_evidence(ctx.cfg), cache_dir=ctx.paths.cache)  # the reference head's inputs only
long = robustness(sample, frames, score, load_head(default_checkpoint(ctx.paths, DEFAULT_RUN)),
                  seed=int(ctx.cfg["seed"]))
write_robustness(ctx.paths, long)
summary = robustness_summary(long)
formats = {c: "{:.3f}" for c in summary.columns if c.startswith("mean")} | {"decisions_flipped": "{:.0%}"}
display(summary.style.format(formats).hide(axis="index"))

# %%
plot_robustness(summary)
plt.show()

# %% [markdown]
# In words: the perturbation that flipped the most decisions and the one that flipped the
# fewest, or, when none flipped any, the one that moved P(aligned) the most, and through
# which score. A sample of a few dozen pairs makes every share coarse, so the last sentence
# says how much one pair weighs.

# %%
#@save
def robustness_findings(summary: pd.DataFrame) -> list[str]:
    """The robustness summary (``robustness_summary``) as Markdown sentences, numbers computed."""
    if summary.empty:
        return []
    n = int(summary["pairs"].max())
    scores = [f"mean |change| {c}" for c in STUDY_FEATURES]
    ranked = summary.sort_values(["decisions_flipped", "mean |change| probability"], ascending=False)
    top = ranked.iloc[0]
    moved = top[scores].astype(float).idxmax().removeprefix("mean |change| ")
    if top["decisions_flipped"] == 0:
        out = [f"No perturbation flipped a decision on the {n:,} sampled test pairs; *{top['perturbation']}* moved "
               f"P(aligned) the most (mean change {top['mean |change| probability']:.3f}), mostly through `{moved}`."]
    else:
        bottom = ranked.iloc[-1]
        out = [f"On the {n:,} sampled test pairs, *{top['perturbation']}* flipped the most decisions "
               f"({top['decisions_flipped']:.0%}; mean change of P(aligned) {top['mean |change| probability']:.3f}, "
               f"the largest score change in `{moved}`) and *{bottom['perturbation']}* the fewest "
               f"({bottom['decisions_flipped']:.0%})."]
    out.append(f"With {n:,} pairs, one pair is {1 / n:.0%} of the sample: read these shares as rough.")
    return out

# %%
display(Markdown("\n".join(f"- {sentence}" for sentence in robustness_findings(summary))))
