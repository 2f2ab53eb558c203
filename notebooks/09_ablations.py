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
# original study's rules give? (Its scoring rules and its three epochs, on our pairs, each part
# alone and both together.)
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
# with the same seed, the same splits and a threshold tuned on the validation split (the
# evidence subsets also with further seeds, to show the spread over seeds). The
# detections come from chapter 02's cache and the CLIP embeddings from chapter 03's, so
# only what is new is computed.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from helpers import detection as det
from helpers import objects as obj
from helpers.clip import CLIP
from helpers.data import load_study_data, pair_frames
from helpers.features import load_features
from helpers.fusion import complete_rows, extended_features
from helpers.weights import load_model

threshold = det.settings_from_profile(ctx.cfg).score_threshold
data = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
table, _ = complete_rows(load_features(ctx.paths), extended_features(ctx.cfg))  # chapter 06's pairs
frames = pair_frames(table, data.datasets)
detector, detections = det.profile_detections(ctx.cfg, ctx.paths, frames, device=ctx.device)
clip = load_model(CLIP, ctx.cfg["clip"]["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"],
                  device=ctx.device)
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
#
# Every subset head reads its evidences' **scores only**, as the reference does: the
# reference is the study's head, the same run as chapter 06's `fusion`. None reads the
# flags and counts the extended head adds (whether the text names anything to check, how
# many relations were checked), so the subset of all the evidences is *not* chapter 06's
# `fusion_extended`, and no subset is compared with it: scores are compared with scores.
#
# Each subset is trained with several seeds (the first `training.subset_seeds` of chapter 06's
# seeds, a key of its own because 31 subsets cost 31 runs a seed; at least 5 in the real profiles),
# because with one seed a gain of a few hundredths between two subsets is as likely the seed as the
# evidence. The best subset is chosen on the validation split, by its ROC-AUC averaged over the
# seeds, never on the test split.

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


#: The variant every other one is compared with: the study's three evidences, scores only, Faster R-CNN, early
#: stopping: the same head as chapter 06's ``fusion`` (``helpers.training.DEFAULT_RUN``).
REFERENCE = subset_name(tuple(EVIDENCES))
#: The family of the subset variants; each reads its evidences' score columns only (no flags, no counts).
SUBSET_FAMILY = "evidence subset"

# %%
evidences = profile_evidences(ctx.cfg)
subsets = evidence_subsets(tuple(evidences))
display(Markdown(f"This profile has {len(evidences)} evidences ({', '.join(f'`{e}`: `{c}`' for e, c in evidences.items())}), "
                 f"so {len(subsets)} subsets:\n\n" + "\n".join(f"- `{subset_name(s)}`" for s in subsets)
                 + f"\n\nThe reference is `{REFERENCE}`, the study's head on its three scores (chapter 06's `fusion`). "
                 f"Every subset reads scores only, so `{subset_name(tuple(evidences))}` is not `fusion_extended`, "
                 "which also reads flags and counts."))

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

    Each reads its evidences' score columns only (no flags): the subset of the study's three is
    :data:`REFERENCE`, the same head chapter 06 trains as ``fusion``; the subset of all is not ``fusion_extended``.
    """
    from helpers.training import settings_from_profile

    evidences = profile_evidences(cfg)
    return [
        Variant(name=subset_name(subset), family=SUBSET_FAMILY,
                description="fusion head on scores only: " + ", ".join(f"{evidences[e]}" for e in subset),
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

    ``object_state`` and ``spatial_state`` become "checked": the study's scores are numbers for every pair.
    """
    from helpers.detection import parse_detections
    from helpers.objects import CHECKED
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
    # The study's rules give every pair a number (0.5 for "no pair found"), never a placeholder: the
    # heads read them as measurements, as the study did, not through this study's evidence states.
    study = study.assign(object_state=CHECKED, spatial_state=CHECKED)
    return _replace_columns(table, study)


# %% [markdown]
# The study changed two things at once: the scores (its three rules) and the training (three
# epochs, the last kept). Against the reference, which has neither, one variant would not say
# which part costs what. So there are three, each one part away from its neighbour: the
# study's scores with our training, our scores with the study's training (the settings of
# chapter 06's `fusion_3_epochs`, trained again here beside the others), and both.

# %%
#@save
#: The study's rules split in two and together: name -> (its scores?, its training?).
STUDY_PARTS: dict[str, tuple[bool, bool]] = {"study features": (True, False), "study training": (False, True),
                                              "study rules": (True, True)}


def study_variants(table: pd.DataFrame, study_table: pd.DataFrame, cfg: Mapping[str, Any]) -> list[Variant]:
    """The :data:`STUDY_PARTS` variants: the study's scores (``study_table``, from ``study_features``) or ours
    (``table``), trained as the profile says (the reference's training) or as the study did (3 epochs, the
    last kept, no early stopping). Each changes one part of the reference, or both."""
    from helpers.training import STUDY_EPOCHS, settings_from_profile

    ours, theirs = settings_from_profile(cfg, STUDY_FEATURES), settings_from_profile(
        cfg, STUDY_FEATURES, max_epochs=STUDY_EPOCHS, patience=None)
    scores = "whole-story keyword objects, first-frame CLIP on 150 characters, 400 px pairs"
    return [Variant(name=name, family="study rules",
                    description=f"{scores if study else 'our three scores'}; "
                                f"{'3 epochs, the last kept' if trained else 'our training'}",
                    settings=theirs if trained else ours, table=study_table if study else table)
            for name, (study, trained) in STUDY_PARTS.items()]

# %%
stand_in = table.assign(object_score=np.nan)  # stands in for the study's table, to show which table each reads
pd.DataFrame([{"variant": v.name, "scores": "the study's" if v.table is stand_in else "ours",
               "epochs": v.settings.max_epochs, "early stopping": v.settings.patience is not None}
              for v in study_variants(table, stand_in, ctx.cfg)]).set_index("variant")

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
# The subsets, the oracle detector, the study's rules (its scores, its training, both) and the
# tagged text, each with its table and its training settings:

# %%
story_texts = study_story_texts(table, data.stories)
study_clip = study_clip_scores(clip, table, story_texts, data.datasets, ctx.paths.cache / "clip",
                               batch_size=int(ctx.cfg["clip"]["batch_size"]))
oracle = oracle_frames(obj.ground_truth_frames(data.stories), detections.frames)
variants = [
    *subset_variants(table, ctx.cfg),
    detector_variant(oracle_features(table, oracle, threshold=threshold), ctx.cfg),
    *study_variants(table, study_features(table, detections.frames, story_texts, study_clip, threshold=threshold),
                    ctx.cfg),
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
# ### Every subset over the seeds, and the one chosen on validation
#
# Each subset head is trained again with the other seeds of `training.subset_seeds` (chapter 06's
# `train_seeds`: the primary seed's run is the one above, the others have their own checkpoint
# folders and resume like it). Every seed's head scores the validation and test pairs. The best
# subset is the one whose validation ROC-AUC, averaged over the seeds, is highest (a tie goes
# to the subset with fewer evidences); the test split plays no part in choosing it, and its
# test numbers are then read once, with their spread over seeds.

# %%
#@save
def subset_seeds(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    """The seeds the evidence subsets are trained with: the first ``training.subset_seeds`` of chapter 06's
    ``training_seeds`` (the profile's ``seed`` first), a profile key because 31 subsets cost 31 runs a seed."""
    from helpers.training import training_seeds

    n = int(cfg["training"]["subset_seeds"])
    seeds = training_seeds(cfg)
    if not 1 <= n <= len(seeds):
        raise ValueError(f"training.subset_seeds must be from 1 to training.seeds ({len(seeds)}), got {n}")
    return seeds[:n]


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def train_subset_seeds(variants: Sequence[Variant], seeds: Sequence[int],
                       checkpoints_dir: str | Path) -> dict[str, dict[int, "TrainResult"]]:
    """Every evidence-subset variant's head trained with each of ``seeds`` (``helpers.training.train_seeds``); the
    primary seed's run (``settings.seed``) shares :func:`train_variants`' folder, so it is not trained twice."""
    from tqdm.auto import tqdm

    from helpers.training import train_seeds

    subsets = [v for v in variants if v.family == SUBSET_FAMILY]
    return {v.name: train_seeds(v.table, v.settings, seeds, Path(checkpoints_dir) / _slug(v.name))
            for v in tqdm(subsets, desc=f"subset heads x {len(seeds)} seeds", unit="subset")}


def subset_seed_predictions(variants: Sequence[Variant], runs: Mapping[str, Mapping[int, "TrainResult"]]) -> pd.DataFrame:
    """The validation and test pairs scored by every seed's head of every subset, on its own table
    (``helpers.training.seed_predictions``)."""
    from helpers.training import seed_predictions

    return pd.concat([seed_predictions(v.table, {v.name: runs[v.name]}) for v in variants if v.name in runs],
                     ignore_index=True)


def choose_best_subset(val_scores: pd.DataFrame, subsets: Sequence[str]) -> tuple[str, pd.Series]:
    """The subset of ``subsets`` with the highest validation ROC-AUC averaged over seeds
    (``val_scores``: ``helpers.evaluation.seed_scores`` of the validation split), and every subset's mean. A tie
    goes to the subset listed first (``evidence_subsets`` lists the smaller first)."""
    means = val_scores.groupby("model")["roc_auc"].mean().reindex(list(subsets))
    if means.isna().any():
        raise ValueError(f"no validation ROC-AUC for {sorted(means[means.isna()].index)}")
    return str(means.idxmax()), means


def ablation_seeds(seed_predictions: pd.DataFrame, subsets: Sequence[str], primary_seed: int) -> dict[str, Any]:
    """The seed section of ``ablations.json``: the seeds, every subset's seed-mean validation ROC-AUC, the
    ``best_subset`` chosen on it (:func:`choose_best_subset`, from validation rows only) and, per subset, the test
    split's seed spread (``helpers.evaluation.seed_spread``)."""
    from helpers.evaluation import seed_scores, seed_spread

    validation = seed_predictions[seed_predictions["split"] == "val"]
    best, means = choose_best_subset(seed_scores(validation, "val", paired=False), subsets)
    seeds = sorted(int(s) for s in seed_predictions["seed"].unique())
    return {"seeds": seeds, "primary_seed": int(primary_seed), "n_subsets": len(subsets), "best_subset": best,
            "chosen_by": f"highest validation ROC-AUC averaged over {len(seeds)} seeds, among {len(subsets)} subsets",
            "validation_roc_auc": {name: float(v) for name, v in means.items()},
            "test": seed_spread(seed_scores(seed_predictions, "test"), primary_seed)}

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
    from helpers.report import format_estimate

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
    from helpers.evaluation import ALL_FRAMES
    from helpers.report import format_estimate
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
    if document.get("seeds"):  # every subset over the seeds, the best chosen on validation
        seeds = document["seeds"]
        for name, entry in subsets.items():
            entry["seeds"] = seeds["test"].get(name)
        metrics["ablations"] |= {key: seeds[key] for key in ("best_subset", "chosen_by", "validation_roc_auc")}
    return atomic_write_json(paths.metrics_json, metrics)


def read_ablations(paths: Paths) -> dict[str, Any] | None:
    """The ablation results of chapter 09, or None when it has not run."""
    return read_json(ablations_path(paths))

# %%
import time

results = train_variants(variants, ctx.paths.checkpoints / "ablations")
predictions = variant_predictions(variants, results)
document = ablation_metrics(predictions, variants, n_resamples=int(ctx.cfg["bootstrap"]["n_resamples"]),
                            seed=int(ctx.cfg["seed"]))
seeds, _started = subset_seeds(ctx.cfg), time.perf_counter()  # extra code: the timer
seed_runs = train_subset_seeds(variants, seeds, ctx.paths.checkpoints / "ablations")
subset_names = [v.name for v in variants if v.family == SUBSET_FAMILY]
document["seeds"] = ablation_seeds(subset_seed_predictions(variants, seed_runs), subset_names, seeds[0])
display(Markdown(f"{len(subset_names)} subsets × {len(seeds)} seeds: {time.perf_counter() - _started:.0f} s of "
                 "training and scoring in this run (runs already checkpointed return at once)."))
path = write_ablations(ctx.paths, document)
record_in_metrics(ctx.paths, document, evidences)
display(training_table(results))

# %% [markdown]
# ## The table
#
# ROC-AUC on the test split, overall and against each kind of negative (the negatives of that
# kind against the aligned pairs of their own frames, as in chapter 07), then the variant
# minus the reference. Every value comes with its 95% interval from resampling the test split's id blocks; the differences are paired
# (both models on the same resamples), so an interval that excludes zero means the test
# split tells the two apart. A result marked "replays the labels" measures how those
# negatives were built, not the frames; the last column is the difference with them left
# out, the only one that says what a variant could gain.

# %%
display(ablation_table(document, "roc_auc"))

# %% [markdown]
# The evidence subsets over the seeds: each subset's validation ROC-AUC averaged over the
# seeds (what chose the best subset, marked), then its test ROC-AUC for the primary seed with
# its interval over id blocks, and the seed mean, standard deviation and range on the test
# split. Two subsets whose seed ranges overlap are not told apart by this training, whatever
# one seed's intervals say.

# %%
#@save
# extra code: the subsets over the seeds as a table
def subset_seed_table(document: Mapping[str, Any], metric: str = "roc_auc") -> pd.DataFrame:
    """One row per evidence subset of ``document["seeds"]``: the seed-mean validation ROC-AUC (``chosen`` marks
    the best subset), then on the test split the primary seed's ``metric`` "value [interval]" and the seed mean,
    standard deviation and range."""
    from helpers.report import format_estimate

    seeds = document["seeds"]
    rows = {}
    for name, val in seeds["validation_roc_auc"].items():
        spread = seeds["test"][name][metric]
        primary = (document["models"][name]["overall"].get(metric) if metric != "paired"
                   else document["models"][name]["paired"].get("all"))
        rows[name] = {"validation ROC-AUC, seed mean": val,
                      "chosen": "yes: best on validation" if name == seeds["best_subset"] else "no",
                      f"test, seed {seeds['primary_seed']} [blocks]": format_estimate(primary),
                      "test, seed mean": spread["mean"], "test, seed std": spread["std"],
                      "test, seed range": f"{_num(spread['min'])} to {_num(spread['max'])}"}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(f"subset ({metric}, {len(seeds['seeds'])} seeds)")

# %%
display(subset_seed_table(document).style.format(precision=3))
_seeds = document["seeds"]
display(Markdown(f"How the best subset was chosen: {_seeds['chosen_by']}, on the validation split only; "
                 f"`{_seeds['best_subset']}` (validation {_seeds['validation_roc_auc'][_seeds['best_subset']]:.3f}). "
                 "The other variants (detector, study rules, tags) are compared on the primary seed only."))
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
# Read in words: the best and the worst subsets of evidence, and what the oracle detector,
# the study's scores, the study's training and both together change against the reference,
# with their paired intervals. A
# variant that replays the labels on some negatives is said to, and its headroom is quoted
# with those negatives left out, never with them in. The phrasing of an interval
# (`difference_phrase`) and the ranking of models are chapter 08's.

# %%
#@save
def ablation_findings(ablations: Mapping[str, Any], metric: str = "roc_auc") -> list[str]:
    """The ablation results (``ablations.json``) as Markdown sentences, every number computed."""
    from helpers.dashboards import METRIC_LABELS, difference_phrase, ranked
    from helpers.evaluation import SEED_METRICS
    from helpers.report import format_estimate

    models, families = ablations["models"], ablations.get("families", {})
    reference, differences = ablations["reference"], ablations.get("differences", {})
    label = METRIC_LABELS.get(metric, metric)
    out = []
    subsets = ranked(models, [m for m in models if families.get(m) == "evidence subset"], metric)
    seeds = ablations.get("seeds") or {}
    if subsets and seeds and metric in SEED_METRICS:
        best, spread = seeds["best_subset"], seeds["test"]
        ref = spread.get(reference, {}).get(metric, {})
        chosen = spread.get(best, {}).get(metric, {})
        out.append(
            f"The best subset was chosen on the validation split ({seeds['chosen_by']}), not on the test split: "
            f"`{best}`. On the test split its {label} averages {_num(chosen.get('mean'))} over the "
            f"{len(seeds['seeds'])} seeds (standard deviation {_num(chosen.get('std'))}, {_num(chosen.get('min'))} "
            f"to {_num(chosen.get('max'))}; seed {seeds['primary_seed']}: {format_estimate(models[best]['overall'].get(metric))}"
            f" over id blocks), the reference `{reference}`'s {_num(ref.get('mean'))} (standard deviation "
            f"{_num(ref.get('std'))}).")
    elif subsets:
        best, worst = models[subsets[0]]["overall"], models[subsets[-1]]["overall"]
        out.append(f"Among the {len(subsets)} subsets of evidence, each with its own head, `{subsets[0]}` has the "
                   f"highest test {label} ({format_estimate(best.get(metric))}: the best of {len(subsets)} on the "
                   f"test split, which flatters it) and `{subsets[-1]}` the lowest "
                   f"({format_estimate(worst.get(metric))}).")
    replays, fair = ablations.get("replays", {}), ablations.get("differences_without_replayed", {})
    for name, what in (("oracle detector", "Replacing Faster R-CNN by the chain-of-thought boxes"),
                       ("study features", "Scoring with the original study's rules alone (with our training)"),
                       ("study training", "Training as the original study did alone (three epochs, the last kept, "
                                          "on our scores)"),
                       ("study rules", "Doing both as the original study did (its scoring rules and its three "
                                       "epochs)")):
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
# %% [markdown]
# ## Robustness
#
# A sample of test pairs, half aligned and half not, is scored again after one change to
# its input, with the same detector, CLIP model, rules and head (nothing is retrained).
# A perturbation is worth measuring only if it changes what the pipeline reads, and each
# comes with the direction its change is expected to take, written down here, before it is
# measured. Two text perturbations that look natural are left out, because they cannot
# change anything by construction:
#
# - **Tags stripped**: the study's three evidences read the pair's plain text, which *is*
#   the tagged text with its tags stripped, so stripping them leaves every input as it was.
# - **Sentence order shuffled**: CLIP scores each sentence on its own and aggregates them
#   with an order-free statistic (maximum, mean or top-k mean), and named objects and
#   relations are read within a sentence, so the order of the sentences changes nothing either.
#
# A perturbation that does not apply to a pair (a text that names no object to remove, no
# relation to paraphrase) raises `PerturbationError`; that pair is counted as "not
# applicable" for that perturbation and left out of its changes, never counted as a zero change.

# %%
#@save
class PerturbationError(ValueError):
    """A perturbation does not apply to this input (no object to remove, fewer letters than typos asked for)."""

# %% [markdown]
# Each perturbation is a row of one table: its family, its strength, the function, and the
# expectation, stated as a sentence and as a checkable claim: which score (or P(aligned)),
# on which pairs (all, or the aligned ones), moves which way ("down", "up", "none": not at
# all, or "not down": no drop on average). Chapter 10 reads the measured change against that claim.

# %%
#@save
#: Directions a perturbation's expected change can take: "none" means no change at all, "not
#: down" no drop (the mean change is not below zero).
DIRECTIONS = ("down", "up", "none", "not down")
#: A change smaller than this (in score units) counts as no change: float rounding, not movement.
NO_CHANGE = 1e-6


@dataclass(frozen=True)
class Perturbation:
    """One perturbation of the robustness study and the change it is expected to cause.

    ``apply`` maps an image to an image (``kind`` "image") or a tagged text and a generator to
    a tagged text (``kind`` "text"); ``strength`` is its setting (blur radius, JPEG quality,
    ...; ``None`` for a text perturbation). The expectation: ``score`` (a column of
    ``ROBUSTNESS_SCORES``) on ``pairs`` ("all" | "aligned") moves ``direction`` (``DIRECTIONS``);
    ``expected`` says it in words."""

    family: str
    kind: str
    strength: float | None
    apply: Callable[..., Any]
    expected: str
    score: str
    pairs: str
    direction: str

    def __post_init__(self) -> None:
        if self.kind not in ("image", "text") or self.pairs not in ("all", "aligned") or self.direction not in DIRECTIONS:
            raise ValueError(f"perturbation {self.family!r}: kind, pairs or direction not understood")

    @property
    def name(self) -> str:
        """The family, with its strength for a graded image perturbation ("blur (2)")."""
        return self.family if self.strength is None else f"{self.family} ({self.strength:g})"

# %% [markdown]
# ### The images, at graded strengths
#
# Gaussian blur (radius in pixels), a central crop resized back (the share of each side
# kept: the edges are lost, everything else is magnified), a round trip through JPEG
# (quality, lower is worse) and darkening (the brightness factor), each at graded
# strengths from mild to strong. All four degrade what the frame shows without changing what it
# shows, so the expectation is the same for each: an aligned frame matches its text less
# well, so CLIP's score of the aligned pairs goes down, further at stronger settings.

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
    image.convert("RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def brightness(image: "Image.Image", factor: float = 0.5) -> "Image.Image":
    """Brightness scaled by ``factor`` (PIL ``ImageEnhance``; 1 leaves the image as it is)."""
    from PIL import ImageEnhance

    if factor <= 0 or factor == 1:
        raise PerturbationError(f"brightness factor must be positive and not 1, got {factor}")
    return ImageEnhance.Brightness(image).enhance(factor)

# %%
#@save
_DEGRADED = "an aligned frame degraded matches its text less well: CLIP's score of the aligned pairs down, more when stronger"

#: The image perturbations: (family, function, its strength keyword, strengths from mild to strong).
IMAGE_FAMILIES: tuple[tuple[str, Callable[..., "Image.Image"], str, tuple[float, ...]], ...] = (
    ("blur radius (px)", blur, "radius", (1.0, 2.0, 4.0)),
    ("JPEG quality", jpeg, "quality", (50, 20, 5)),
    ("crop keeps (share of each side)", crop, "keep", (0.9, 0.7, 0.5)),
    ("brightness factor (darker)", brightness, "factor", (0.7, 0.5, 0.3)),
)


def image_levels(strengths: Sequence[float], levels: int | str) -> tuple[float, ...]:
    """The strengths to run: all of them (``levels`` "all"), or ``levels`` of them evenly spread
    from the strongest down (1: the strongest; 2: the mildest and the strongest)."""
    if levels == "all" or (isinstance(levels, int) and levels >= len(strengths)):
        return tuple(strengths)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"image levels must be 'all' or a positive integer, got {levels!r}")
    keep = np.linspace(len(strengths) - 1, 0, levels).round().astype(int)
    return tuple(strengths[i] for i in sorted(set(keep)))


def image_perturbations(levels: int | str = "all") -> list[Perturbation]:
    """Every image perturbation at the strengths ``levels`` keeps (see :func:`image_levels`)."""
    return [Perturbation(family, "image", strength, partial(f, **{keyword: strength}), _DEGRADED,
                         "clip_score", "aligned", "down")
            for family, f, keyword, strengths in IMAGE_FAMILIES for strength in image_levels(strengths, levels)]

# %%
from PIL import Image as PILImage, ImageDraw

demo_frame = PILImage.new("RGB", (192, 128), "#607d8b")
ImageDraw.Draw(demo_frame).rectangle((40, 30, 110, 100), fill="#ffb300")
ImageDraw.Draw(demo_frame).text((48, 56), "CUP", fill="#000000")
demo_images = image_perturbations()
fig, axes = plt.subplots(len(IMAGE_FAMILIES), 4, figsize=(10, 1.9 * len(IMAGE_FAMILIES)))
for row, (family, *_rest, strengths) in zip(axes, IMAGE_FAMILIES):
    row[0].imshow(demo_frame)
    row[0].set_title("original", fontsize=9)
    for ax, p in zip(row[1:], [p for p in demo_images if p.family == family]):
        ax.imshow(p.apply(demo_frame))
        ax.set_title(p.name, fontsize=9)
for ax in axes.flat:
    ax.set(xticks=[], yticks=[])
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The texts
#
# Every text perturbation edits the tagged text in place (chapter 01's `edit_segment`, which
# keeps every tag where it was), so the plain text the evidences read is re-derived from it.
# They find what to edit with the same readers the evidences use: chapter 02's lexicon
# (`named_things`, `needed_categories`) and chapter 04's relation reader (`extract_relations`).
# People are left alone: a text names them by pronoun too, so one word cannot remove a person,
# and the lexicon's person words (mother, soldier, guard) differ in meaning.
#
# **Typos** stay: `k` distinct letters outside the tag markup, each replaced by another
# letter (case kept), so the text keeps its length and differs in exactly `k` places. CLIP's
# tokenizer reads a misspelt word as other tokens, so its score of the aligned pairs should
# go down a little (an object word misspelt also drops out of the object evidence).

# %%
#@save
#: Tag markup (``<gdo char1>``, ``</gda>``, ``<gdi image3>``): text perturbations leave it intact.
_MARKUP = re.compile(r"<[^<>]*>")


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

# %% [markdown]
# The three edits of a named object share their plumbing: the things a text names that are
# not people (chapter 02's `named_things` on the plain text), a word written in the case of
# the word it replaces, the article before a replaced noun made to agree ("an oven" becomes
# "a stove", not "an stove"), and edits applied to the tagged text from the last to the first
# so that each keeps its offsets.

# %%
#@save
def _things(plain: str) -> list["Thing"]:
    """The COCO things ``plain`` names other than people, in text order (chapter 02's reader)."""
    from helpers.objects import named_things

    return [t for t in named_things(plain) if t.category not in (None, "person")]


def _cased(template: str, word: str) -> str:
    """``word`` capitalised when ``template`` is."""
    return word[:1].upper() + word[1:] if template[:1].isupper() else word


def _noun_edits(plain: str, thing: "Thing", new: str) -> list[tuple[int, int, str]]:
    """Replace ``thing`` by ``new`` (plural when it is), and a preceding "a"/"an" by the article ``new`` takes."""
    from helpers.pairs import article, is_plural, plural

    new = plural(new) if is_plural(thing.text.split()[-1]) else new
    edits = [(thing.start, thing.end, _cased(thing.text, new))]
    before = re.search(r"(?:^|\s)(an?)\s+$", plain[: thing.start], re.IGNORECASE)
    if before:
        edits.append((before.start(1), before.end(1), _cased(before.group(1), article(new))))
    return edits


def _apply_edits(tagged: str, edits: Iterable[tuple[int, int, str]]) -> str:
    """``tagged`` with each plain-text span ``(start, end)`` replaced, tags kept (chapter 01's
    ``edit_segment``); an edit that would cross a tag raises ``PerturbationError``."""
    from helpers.tags import edit_segment, parse_segment

    segment = parse_segment(tagged, 1)
    for start, end, new in sorted(edits, reverse=True):
        try:
            segment = edit_segment(segment, start, end, new)
        except ValueError as error:
            raise PerturbationError(str(error)) from error
    return segment.tagged


def _plain(tagged: str) -> str:
    from helpers.tags import strip_tags

    return strip_tags(tagged)

# %% [markdown]
# **A named object removed**: one COCO category the text names, drawn at random, loses every
# mention: each is replaced by the generic word "thing". The text now asks the frame for one
# thing fewer. On an aligned pair the frame shows it, so if the detector found it the object
# score is the share of the *other* needed things found, never higher: **object score of the
# aligned pairs down** (or unchanged when everything else was found too).

# %%
#@save
GENERIC_NOUN = "thing"


def remove_object(text: str, rng: np.random.Generator) -> str:
    """Every mention of one COCO category (not a person) the text names, drawn with ``rng``,
    replaced by "thing"; raises ``PerturbationError`` when it names none, or when the edited
    text still needs that category."""
    from helpers.objects import needed_categories

    plain = _plain(text)
    categories = sorted({t.category for t in _things(plain)})
    if not categories:
        raise PerturbationError("the text names no COCO object other than a person")
    category = categories[rng.integers(len(categories))]
    edits = [e for t in _things(plain) if t.category == category for e in _noun_edits(plain, t, GENERIC_NOUN)]
    out = _apply_edits(text, edits)
    if category in needed_categories(_plain(out)):
        raise PerturbationError(f"{category!r} is still read from the edited text")
    return out

# %%
demo_text = ("<gdo char1>Mr. Smith</gdo> puts <gdo obj1>an apple</gdo> on the table. "
             "<gdo char2>Anna</gdo> sits on <gdo obj2>the sofa</gdo> next to <gdo obj3>a lamp</gdo>. "
             "The apple rolls.")


def show_text_perturbation(perturb: Callable[[str, np.random.Generator], str], text: str = demo_text,
                           seeds: Sequence[int] = (0, 1)) -> None:  # extra code
    rows = {"original": text} | {f"seed {s}": perturb(text, np.random.default_rng(s)) for s in seeds}
    display(pd.Series(rows, name="tagged text").to_frame().style.set_properties(
        **{"white-space": "pre-wrap", "text-align": "left"}))


show_text_perturbation(remove_object)

# %% [markdown]
# **A named object replaced by a synonym**: one thing the text names becomes another word
# chapter 02's lexicon maps to the same COCO category ("sofa" -> "couch", "table" -> "desk").
# The edited text must need exactly the categories the original needed (a candidate that
# does not is passed over). **Expected: no change in the object score**: the reader maps both
# words to the same category; only CLIP, which reads the words themselves, may move.

# %%
#@save
def category_names() -> dict[str, tuple[str, ...]]:
    """Each COCO category's words in chapter 02's lexicon: its name and every synonym, sorted."""
    from helpers.objects import COCO_CATEGORIES, SYNONYMS

    names: dict[str, set[str]] = {c: {c} for c in COCO_CATEGORIES}
    for word, category in SYNONYMS.items():
        names[category].add(word)
    return {c: tuple(sorted(words)) for c, words in names.items()}


def replace_synonym(text: str, rng: np.random.Generator) -> str:
    """One thing the text names (not a person) replaced by another word of its COCO category,
    drawn with ``rng``, such that the text needs the same categories; raises ``PerturbationError``
    when no such replacement exists."""
    from helpers.objects import needed_categories, to_coco

    plain, names = _plain(text), category_names()
    needed = needed_categories(plain)
    things = _things(plain)
    for i in rng.permutation(len(things)):
        thing = things[i]
        own = {thing.text.lower(), to_coco(thing.text.lower())}
        options = [w for w in names[thing.category] if w not in own]
        for j in rng.permutation(len(options)):
            try:
                out = _apply_edits(text, _noun_edits(plain, thing, options[j]))
            except PerturbationError:
                continue
            if needed_categories(_plain(out)) == needed:
                return out
    raise PerturbationError("the text names no object (other than a person) that has a synonym the reader maps alike")

# %%
show_text_perturbation(replace_synonym)

# %% [markdown]
# **A relation paraphrased**: one relation chapter 04's reader finds is restated with another
# phrase its rule table maps to the same relation ("next to" -> "beside", "under" ->
# "beneath", "on" -> "on top of"). Phrases of an acting person ("sits on", "holds") are not
# paraphrased: their subject is read differently. The edited text must yield the same
# relations (subject category, relation, object category). **Expected: no change in the
# spatial score**: the reader maps both phrasings to the same relation, checked on the same boxes.

# %%
#@save
#: Phrase -> another phrase chapter 04's reader maps to the same relation (a test checks each).
PARAPHRASES: dict[str, str] = {
    "next to": "beside", "beside": "next to", "alongside": "beside", "near": "close to", "close to": "near",
    "under": "beneath", "underneath": "beneath", "beneath": "under", "on": "on top of", "on top of": "atop",
    "atop": "on top of", "rests on": "rests atop", "resting on": "resting atop", "placed on": "placed atop",
    "in": "inside", "inside": "within", "within": "inside",
    "to the left of": "on the left of", "on the left of": "to the left of",
    "to the right of": "on the right of", "on the right of": "to the right of",
}  # fmt: skip


def _relation_keys(plain: str) -> list[tuple[Any, str, Any]]:
    from helpers.spatial import extract_relations

    return sorted((r.subject_category or "", r.relation, r.object_category or "") for r in extract_relations(plain))


def paraphrase_relation(text: str, rng: np.random.Generator) -> str:
    """One relation the text states, drawn with ``rng``, restated with its ``PARAPHRASES`` phrase,
    such that the reader finds the same relations; raises ``PerturbationError`` when none can be."""
    from helpers.spatial import extract_relations

    plain = _plain(text)
    relations = [r for r in extract_relations(plain) if " ".join(r.phrase.lower().split()) in PARAPHRASES]
    before = _relation_keys(plain)
    for i in rng.permutation(len(relations)):
        relation = relations[i]
        start, end = relation.span
        where = re.search(r"(?<![\w'])" + r"\s+".join(map(re.escape, relation.phrase.split())) + r"(?![\w'])",
                          plain[start:end])
        if where is None:
            continue
        new = _cased(relation.phrase, PARAPHRASES[" ".join(relation.phrase.lower().split())])
        try:
            out = _apply_edits(text, [(start + where.start(), start + where.end(), new)])
        except PerturbationError:
            continue
        if _relation_keys(_plain(out)) == before:
            return out
    raise PerturbationError("the text states no relation the reader reads the same in another phrasing")

# %%
show_text_perturbation(paraphrase_relation)

# %% [markdown]
# **A negation**: one thing the text names (not a person) is denied: its determiner becomes
# "no" ("the sofa" -> "no sofa", "There is a cup" -> "There is no cup"), or "no" is put before
# it when it has none. On an aligned pair the text now denies what the frame shows, so a
# verifier that understood it would lower P(aligned). This one does not read negation: the
# lexicon still finds the thing, the rules still check it, and CLIP's text encoder is known to
# largely ignore "no". **The honest expectation: no change in the object score, and P(aligned)
# of the aligned pairs does not drop**: a documented weakness, measured here.

# %%
#@save
_NEGATABLE = re.compile(r"(?:^|\s)(a|an|the|this|that|these|those|some|his|her|their|its|my|your|our)"
                        r"((?:\s+\S+){0,2}?)\s+$", re.IGNORECASE)


def negate(text: str, rng: np.random.Generator) -> str:
    """One thing the text names (not a person), drawn with ``rng``, negated: the determiner within
    the two words before it becomes "no", or "no" goes before it. Raises ``PerturbationError`` when
    the text names no such thing."""
    plain = _plain(text)
    things = _things(plain)
    if not things:
        raise PerturbationError("the text names no COCO object other than a person to negate")
    thing = things[rng.integers(len(things))]
    sentence_start = max(plain.rfind(c, 0, thing.start) for c in ".!?;") + 1
    determiner = _NEGATABLE.search(plain, sentence_start, thing.start)
    if determiner and determiner.end() == thing.start:
        edit = (determiner.start(1), determiner.end(1), _cased(determiner.group(1), "no"))
    else:
        edit = (thing.start, thing.end, f"{_cased(thing.text, 'no')} {thing.text[:1].lower()}{thing.text[1:]}")
    return _apply_edits(text, [edit])

# %%
show_text_perturbation(negate)

# %% [markdown]
# The text perturbations, with their expectations, in one table:

# %%
#@save
#: The text perturbations of the robustness study; each ``apply`` takes (tagged text, rng).
TEXT_PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation("typos (3 letters)", "text", None, partial(typos, k=3),
                 "CLIP reads misspelt words as other tokens: its score of the aligned pairs down a little",
                 "clip_score", "aligned", "down"),
    Perturbation("object removed", "text", None, remove_object,
                 "one thing fewer to find in the frame: object score of the aligned pairs down",
                 "object_score", "aligned", "down"),
    Perturbation("object synonym", "text", None, replace_synonym,
                 "the lexicon maps both words to the same category: no change in the object score",
                 "object_score", "all", "none"),
    Perturbation("relation paraphrased", "text", None, paraphrase_relation,
                 "the relation reader maps both phrasings to the same relation: no change in the spatial score",
                 "spatial_score", "all", "none"),
    Perturbation("negation", "text", None, negate,
                 "the verifier does not read negation: P(aligned) of the aligned pairs does not drop "
                 "(a reader of negation would lower it)", "probability", "aligned", "not down"),
)


def expectation_table(perturbations: Sequence[Perturbation]) -> pd.DataFrame:
    """One row per perturbation: its kind, family, strength and the expected change."""
    return pd.DataFrame([{"kind": p.kind, "perturbation": p.name, "expected": p.expected,
                          "checked on": f"{p.score}, {p.pairs} pairs: {p.direction}"} for p in perturbations])

# %%
display(expectation_table([*TEXT_PERTURBATIONS, *image_perturbations("all")]).style.hide(axis="index")
        .set_properties(**{"text-align": "left"}))

# %% [markdown]
# ### The sample
#
# The profile's `robustness.n_pairs` test pairs, drawn with its seed, half aligned and half
# not; where the aligned pairs run short, misaligned ones fill the rest. The real profiles ask for hundreds; the smoke
# profile for a few, bounded by what they cost (the sentence below says how many the sample
# holds, and why). Each image perturbation at each
# strength reruns the detector and CLIP on every sampled frame, so `robustness.image_levels`
# may keep fewer strengths and `robustness.image_pairs` fewer pairs (the smoke profile's
# budget); the text perturbations cost only CLIP's text encoder, so they run on the whole sample.

# %%
#@save
def robustness_sample(table: pd.DataFrame, n_pairs: int, *, seed: int, split: str = "test") -> pd.DataFrame:
    """``n_pairs`` pairs of ``split`` drawn with ``seed``, half aligned and half not; when the
    aligned pairs run short, misaligned ones fill the rest (as far as the split has them)."""
    if n_pairs < 2:
        raise ValueError(f"the robustness sample needs at least 2 pairs, got {n_pairs}")
    rows = table[table["split"] == split]
    aligned, other = (rows[rows["label"] == label] for label in (1, 0))
    n_aligned = min(n_pairs // 2, len(aligned))
    sample = [aligned.sample(n=n_aligned, random_state=seed),
              other.sample(n=min(n_pairs - n_aligned, len(other)), random_state=seed)]
    return pd.concat(sample).sort_values("pair_id", ignore_index=True)


def sample_note(table: pd.DataFrame, sample: pd.DataFrame, n_pairs: int, split: str = "test",
                image_sample: pd.DataFrame | None = None) -> str:
    """How many pairs the robustness sample (and its image part) holds, and why: what the
    profile asked and what the split has."""
    rows = table[table["split"] == split]
    aligned, other = int((rows["label"] == 1).sum()), int((rows["label"] == 0).sum())

    def held(pairs: pd.DataFrame) -> str:
        taken = int((pairs["label"] == 1).sum())
        return (f"{len(pairs):,}: {taken:,} aligned and {len(pairs) - taken:,} not, over "
                f"{pairs[['story_id', 'frame']].drop_duplicates().shape[0]:,} frames")

    note = (f"The profile asks for {n_pairs:,} pairs, half aligned; the {split} split has {aligned:,} aligned and "
            f"{other:,} misaligned pairs, so the sample holds {held(sample)}.")
    if image_sample is not None and len(image_sample) < len(sample):
        note += (f" Each image perturbation reruns the detector and CLIP on every frame it perturbs, so the profile "
                 f"bounds the image part by its cost to {held(image_sample)}.")
    return note

# %% [markdown]
# ### Scoring a perturbed pair from scratch
#
# Each perturbed frame is re-encoded as PNG (lossless, so only the perturbation changes it);
# each text perturbation draws from a generator of its own pair, so a pair's edit does not
# depend on which other pairs are in the sample. `score_pairs` (chapter 05) computes the
# evidences of a batch of pairs from the frames' bytes exactly as chapters 02-04 do, through
# their caches (keyed by the frame's bytes and the text), so the unperturbed pairs and the
# frames of the text perturbations cost no new forward pass.

# %%
#@save
#: The scores whose movement the robustness study reports, and the head's output.
ROBUSTNESS_SCORES: tuple[str, ...] = (*STUDY_FEATURES, "probability")


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
    """``pairs`` with each ``tagged_text`` perturbed (a generator per pair) and ``text`` re-derived
    from it; ``applied`` is False where the perturbation does not apply (``PerturbationError``),
    and such a pair keeps its text."""
    from helpers.tags import strip_tags

    tagged, applied = [], []
    for pair_id, text in zip(pairs["pair_id"], pairs["tagged_text"]):
        try:
            tagged.append(perturb(text, _pair_rng(seed, pair_id)))
            applied.append(True)
        except PerturbationError:
            tagged.append(text)
            applied.append(False)
    return pairs.assign(tagged_text=tagged, text=[strip_tags(t) for t in tagged], applied=applied)

# %%
#@save
from helpers.fusion import score_pairs

# %% [markdown]
# The unperturbed sample goes through the same scorer as every perturbed copy, so every
# change is due to the perturbation alone. One row per (perturbation, pair): each score and
# P(aligned) before and after (after is missing where the perturbation does not apply), the
# decision before and after, whether it flipped, and the perturbation's stated expectation.

# %%
#@save
def robustness(sample: pd.DataFrame, frames: Mapping[tuple[str, int], bytes],
               score: Callable[[pd.DataFrame, Mapping[tuple[str, int], bytes]], pd.DataFrame],
               head: "TrainedHead", *, seed: int, perturbations: Sequence[Perturbation],
               image_sample: pd.DataFrame | None = None) -> pd.DataFrame:
    """How each score, P(aligned) and the decision move when the sample's inputs are perturbed.

    ``score(pairs, frames)`` computes the evidence from scratch (``score_pairs`` with its
    keyword arguments bound). The image perturbations run on ``image_sample`` (pairs of
    ``sample``; all of it by default), the text perturbations on ``sample``. One row per
    (perturbation, pair): ``perturbation``, ``family``,
    ``kind``, ``strength``, the expectation (``expected``, ``expected_score``,
    ``expected_pairs``, ``direction``), ``pair_id``, ``label``, ``negative_type``, ``applied``,
    ``text_perturbed`` (text perturbations), ``<score>_clean`` and ``<score>_perturbed`` for each
    of ``ROBUSTNESS_SCORES`` (missing where not applied), ``decision_clean``,
    ``decision_perturbed`` and ``flipped``."""
    keys = dict.fromkeys(zip(sample["story_id"].astype(str), sample["frame"].astype(int)))
    frames = {key: frames[key] for key in keys}

    def scored(pairs: pd.DataFrame, pair_frames: Mapping[tuple[str, int], bytes]) -> pd.DataFrame:
        table = score(pairs, pair_frames)
        return table.assign(probability=head.predict_proba(table)).set_index("pair_id")

    image_sample = sample if image_sample is None else image_sample
    if extra := set(image_sample["pair_id"]) - set(sample["pair_id"]):
        raise ValueError(f"the image sample holds {len(extra)} pairs that are not in the sample")
    image_frames = {k: frames[k] for k in zip(image_sample["story_id"].astype(str), image_sample["frame"].astype(int))}
    clean_all = scored(sample, frames)
    parts = []
    for p in perturbations:
        base = image_sample if p.kind == "image" else sample
        if p.kind == "image":
            pairs, pair_frames = image_sample.assign(applied=True), perturb_frames(image_frames, p.apply)
        else:
            pairs, pair_frames = perturb_texts(sample, p.apply, seed=seed), frames
        clean = clean_all.loc[base["pair_id"]]
        applied = pairs["applied"].to_numpy(dtype=bool)
        perturbed = (scored(pairs[applied].drop(columns="applied"), pair_frames) if applied.any()
                     else pd.DataFrame(columns=list(ROBUSTNESS_SCORES))).reindex(base["pair_id"])
        part = pd.DataFrame({"perturbation": p.name, "family": p.family, "kind": p.kind,
                             "strength": np.nan if p.strength is None else float(p.strength),
                             "expected": p.expected, "expected_score": p.score, "expected_pairs": p.pairs,
                             "direction": p.direction, "pair_id": base["pair_id"].to_numpy(),
                             "label": base["label"].to_numpy(), "negative_type": base["negative_type"].to_numpy(),
                             "applied": applied,
                             "text_perturbed": pairs["tagged_text"].where(applied, None).to_numpy()
                             if p.kind == "text" else None})
        for column in ROBUSTNESS_SCORES:
            part[f"{column}_clean"] = clean[column].to_numpy(dtype=float)
            part[f"{column}_perturbed"] = perturbed[column].to_numpy(dtype=float)
        part["decision_clean"] = part["probability_clean"] >= head.threshold
        part["decision_perturbed"] = part["probability_perturbed"] >= head.threshold
        part["flipped"] = applied & (part["decision_clean"] != part["decision_perturbed"])
        parts.append(part)
    return pd.concat(parts, ignore_index=True)

# %% [markdown]
# The summary, per perturbation: on how many pairs it applied and on how many it did not,
# the mean absolute change of each score and of P(aligned), the largest absolute change of
# any of them, the share of decisions that flipped, and the expectation read against the
# measurement: the mean change of the expected score on the expected pairs and a verdict
# ("as expected", or what happened instead: "did not move", "went the other way", "moved",
# "dropped").

# %%
#@save
def expectation_verdict(direction: str, mean_change: float, largest: float) -> str:
    """Whether a measured change (its mean and its largest absolute value) meets ``direction``."""
    if np.isnan(mean_change):
        return "not measured (no pair)"
    if direction == "none":
        return "as expected" if largest <= NO_CHANGE else "moved"
    if direction == "not down":
        return "as expected" if mean_change >= -NO_CHANGE else "dropped"
    sign = -1 if direction == "down" else 1
    if abs(mean_change) <= NO_CHANGE:
        return "did not move"
    return "as expected" if sign * mean_change > 0 else "went the other way"


def robustness_summary(long: pd.DataFrame) -> pd.DataFrame:
    """One row per perturbation (in the order run): ``pairs`` it applied to, ``not_applicable``,
    ``mean |change| <score>`` for each of ``ROBUSTNESS_SCORES``, ``largest |change|`` (of any of
    them), ``decisions_flipped`` (share of the pairs it applied to), the expectation and its
    ``measured`` mean change (of ``expected_score`` on ``expected_pairs``) and ``verdict``."""
    rows = []
    for name, group in long.groupby("perturbation", sort=False):
        first, done = group.iloc[0], group[group["applied"]]
        change = {c: done[f"{c}_perturbed"] - done[f"{c}_clean"] for c in ROBUSTNESS_SCORES}
        on = done if first["expected_pairs"] == "all" else done[done["label"] == 1]
        expected = (on[f"{first['expected_score']}_perturbed"] - on[f"{first['expected_score']}_clean"])
        largest = float(pd.concat(change.values()).abs().max()) if len(done) else np.nan
        measured = float(expected.mean()) if len(expected) else np.nan
        rows.append({"kind": first["kind"], "family": first["family"], "strength": first["strength"],
                     "perturbation": name, "pairs": len(done), "not_applicable": int((~group["applied"]).sum()),
                     **{f"mean |change| {c}": float(v.abs().mean()) if len(v) else np.nan for c, v in change.items()},
                     "largest |change|": largest,
                     "decisions_flipped": float(done["flipped"].mean()) if len(done) else np.nan,
                     "expected": first["expected"], "expected_score": first["expected_score"],
                     "expected_pairs": first["expected_pairs"], "direction": first["direction"],
                     "measured": measured,
                     "verdict": expectation_verdict(first["direction"], measured,
                                                    float(expected.abs().max()) if len(expected) else np.nan)})
    return pd.DataFrame(rows)

# %%
#@save
# extra code: the figures, and where the per-pair table is written
def plot_image_robustness(summary: pd.DataFrame) -> "matplotlib.figure.Figure":
    """Change against strength, one column per image perturbation: the mean absolute change of
    each score and of P(aligned) (top), the mean change of the expected score on the expected
    pairs (middle: below zero is the expected drop) and the share of decisions flipped (bottom)."""
    import matplotlib.pyplot as plt

    images = summary[summary["kind"] == "image"]
    families = list(dict.fromkeys(images["family"]))
    fig, axes = plt.subplots(3, len(families), figsize=(3.6 * len(families), 8), squeeze=False, sharey="row")
    for column, family in zip(axes.T, families):
        rows = images[images["family"] == family]
        x = np.arange(len(rows))
        for score in ROBUSTNESS_SCORES:
            column[0].plot(x, rows[f"mean |change| {score}"], marker="o", label=score)
        column[1].plot(x, rows["measured"], marker="o", color="#6a1b9a")
        column[1].axhline(0, color="grey", lw=0.8)
        column[2].bar(x, rows["decisions_flipped"], color="#c62828")
        column[0].set_title(family)
        for ax in column:
            ax.set_xticks(x, [f"{s:g}" for s in rows["strength"]])
        column[2].set(xlabel="strength (mild -> strong)", ylim=(0, 1))
    axes[0, 0].set_ylabel("mean |change|")
    axes[1, 0].set_ylabel(f"mean change of\n{images['expected_score'].iloc[0]}, {images['expected_pairs'].iloc[0]}")
    axes[2, 0].set_ylabel("decisions flipped")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle(f"Image perturbations: change against strength ({int(images['pairs'].max())} test pairs)")
    fig.tight_layout()
    return fig


def plot_text_robustness(summary: pd.DataFrame) -> "matplotlib.figure.Figure":
    """Per text perturbation: the mean absolute change of each score and of P(aligned), with
    the pairs it applied to in its label; the share of decisions flipped beside it."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    texts = summary[summary["kind"] == "text"].assign(
        label=lambda d: [f"{p} ({n} of {n + m} pairs)" for p, n, m in zip(d["perturbation"], d["pairs"],
                                                                         d["not_applicable"])])
    columns = [f"mean |change| {c}" for c in ROBUSTNESS_SCORES]
    changes = texts.melt(id_vars=["label"], value_vars=columns, var_name="score", value_name="mean absolute change")
    changes["score"] = changes["score"].str.removeprefix("mean |change| ")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.7 * len(texts) + 1.8), gridspec_kw={"width_ratios": [2, 1]})
    sns.barplot(changes, y="label", x="mean absolute change", hue="score", ax=left)
    left.set(ylabel="", title="Text perturbations: how far each score moves")
    sns.barplot(texts, y="label", x="decisions_flipped", color="#c62828", ax=right)
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

settings = ctx.cfg["robustness"]
sample = robustness_sample(table, int(settings["n_pairs"]), seed=int(ctx.cfg["seed"]))
image_sample = robustness_sample(sample, int(settings.get("image_pairs") or len(sample)), seed=int(ctx.cfg["seed"]))
display(Markdown(sample_note(table, sample, int(settings["n_pairs"]), image_sample=image_sample)))
perturbations = [*image_perturbations(settings["image_levels"]), *TEXT_PERTURBATIONS]
score = partial(score_pairs, detector=detector, clip=clip,
                cfg=without_new_evidence(ctx.cfg), cache_dir=ctx.paths.cache)  # the reference head's inputs only
long = robustness(sample, frames, score, load_head(default_checkpoint(ctx.paths, DEFAULT_RUN)),
                  seed=int(ctx.cfg["seed"]), perturbations=perturbations, image_sample=image_sample)
write_robustness(ctx.paths, long)
summary = robustness_summary(long)
shown = ["kind", "perturbation", "pairs", "not_applicable", *[f"mean |change| {c}" for c in ROBUSTNESS_SCORES],
         "largest |change|", "decisions_flipped", "measured", "verdict"]
formats = {c: "{:.3f}" for c in shown if c.startswith(("mean", "largest"))} | {
    "decisions_flipped": "{:.0%}", "measured": "{:+.3g}"}
display(summary[shown].style.format(formats, na_rep="-").hide(axis="index"))

# %%
plot_image_robustness(summary)
plt.show()

# %%
plot_text_robustness(summary)
plt.show()

# %% [markdown]
# An example of each text perturbation on a sampled pair, with what it did to P(aligned):

# %%
examples = long[(long["kind"] == "text") & long["applied"]].drop_duplicates("perturbation")
display(examples[["perturbation", "pair_id", "label", "probability_clean", "probability_perturbed", "text_perturbed"]]
        .style.format({"probability_clean": "{:.3f}", "probability_perturbed": "{:.3f}"}).hide(axis="index")
        .set_properties(subset=["text_perturbed"], **{"white-space": "pre-wrap", "text-align": "left"}))

# %% [markdown]
# In words: for each perturbation, what was expected and what moved, and where the sample
# is small, how much one pair weighs.

# %%
#@save
_WHAT = {"probability": "P(aligned)"}


def robustness_findings(summary: pd.DataFrame) -> list[str]:
    """The robustness summary (``robustness_summary``) as Markdown sentences, numbers computed:
    per text perturbation and per image family, what was expected and what was measured."""
    if summary.empty:
        return []
    n = int((summary["pairs"] + summary["not_applicable"]).max())
    out = []
    for _, row in summary[summary["kind"] == "text"].iterrows():
        what = _WHAT.get(row["expected_score"], f"`{row['expected_score']}`")
        if row["pairs"] == 0:
            out.append(f"*{row['perturbation']}* applied to none of the {n:,} pairs: not measured.")
            continue
        on = "the aligned pairs" if row["expected_pairs"] == "aligned" else "all pairs"
        out.append(f"*{row['perturbation']}* (applied to {int(row['pairs']):,} of {n:,} pairs; "
                   f"{int(row['not_applicable']):,} had nothing to apply it to). Expected: {row['expected']}. "
                   f"Measured: {what} on {on} changed by {row['measured']:+.3g} on average: "
                   f"{row['verdict']}. It flipped {row['decisions_flipped']:.0%} of the decisions "
                   f"(largest change of any score {row['largest |change|']:.3f}).")
    images = summary[summary["kind"] == "image"]
    for family, rows in images.groupby("family", sort=False):
        what = _WHAT.get(rows["expected_score"].iloc[0], f"`{rows['expected_score'].iloc[0]}`")
        steps = ", ".join(f"{m:+.3g} at {s:g}" for s, m in zip(rows["strength"], rows["measured"]))
        met = int((rows["verdict"] == "as expected").sum())
        out.append(f"*{family}*: {what} of the aligned pairs changed by {steps} (expected: down, more when "
                   f"stronger); as expected at {met} of {len(rows)} strengths; decisions flipped at the strongest: "
                   f"{rows['decisions_flipped'].iloc[-1]:.0%}.")
    met = summary.loc[summary["verdict"] == "as expected", "perturbation"].tolist()
    missed = summary.loc[summary["verdict"] != "as expected", "perturbation"].tolist()
    out.append(f"Moved as stated beforehand: {', '.join(met) or 'none'}; not as stated: {', '.join(missed) or 'none'}.")
    out.append(f"With {n:,} pairs, one pair is {1 / n:.1%} of the sample: read the shares with that in mind.")
    return out

# %%
display(Markdown("\n".join(f"- {sentence}" for sentence in robustness_findings(summary))))
