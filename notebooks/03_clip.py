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
# # 03 · Semantics: CLIP and questions
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
# A similarity says how alike, not what is wrong. The chapter's second half asks the frame
# about the text, one yes/no question per thing, action and relation the text's own tags
# name ("Is there a cardboard box?", "Is a man holding a phone?"), answered by a
# visual-question-answering model, the way DSG does it, with the answers as the explanation.
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
# ## What the method needs
#
# The functions written in this chapter are saved (`#@save`) into `helpers/semantics.py`,
# which chapter 01 (the sentence around an edit), chapters 05 to 09 and the verifier
# import. They need a loaded CLIP and its cached embeddings, which `helpers.clip` provides:
# it loads the weights, and embeds each distinct frame and each distinct text once,
# L2-normalised, caching every vector on disk under the model's identity (a hash of its
# parameters, tokenizer and image preprocessing). The questions of the second half are
# answered by BLIP-VQA through `helpers.vqa`, which caches each answer the same way.

# %%
#@save
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import json
from typing import NamedTuple

import numpy as np
import pandas as pd

from helpers.clip import MAX_TOKENS, Clip, embed_images, embed_texts
from helpers.objects import CHECKED, NOT_COMPUTED, NOTHING_TO_CHECK
from helpers.objects import NOT_COCO, PERSON_PRONOUNS, named_things, other_nouns, pair_text, to_coco
from helpers.spatial import RELATIONS, extract_relations
from helpers.tags import Segment, strip_tags
from helpers.vqa import Vqa, answer_yes

# %% [markdown]
# ## The model
#
# CLIP ViT-B/32, from the weights the profile names: the pretrained `openai` checkpoint, a
# local folder, or (smoke profile) the same architecture with random weights, saved to disk
# and loaded back the way a real checkpoint is. Its identity is a hash of its parameters,
# tokenizer and image preprocessing: every cached embedding is filed under it.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from helpers.clip import CLIP
from helpers.weights import load_model

cfg = ctx.cfg["clip"]
model = load_model(CLIP, cfg["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"], device=ctx.device)
n_params = sum(p.numel() for p in model.model.parameters())
display(Markdown(f"Weights `{model.source}` (identity `{model.identity}`): {n_params:,} parameters on "
                 f"`{model.device}`. Text encoder limit: {MAX_TOKENS} tokens, start and end tokens included."))

# %% [markdown]
# ## A segment, one sentence at a time
#
# A frame's segment is 430-700 characters, several times what CLIP's text encoder reads (77
# tokens, start and end tokens included). The original study cut the whole story to its
# first 150 characters, tags included. Here a segment is split into sentences, each short
# enough for CLIP, and each is scored against the frame.
#
# A sentence ends at `.`, `!`, `?` or `…` (with any closing quotes or brackets) followed by
# whitespace and a capital letter or a digit (after any opening quote). Two exceptions keep
# a period from ending a sentence: a known abbreviation (`Mr.`, `Dr.`, `e.g.`) and a
# single-letter initial (`J. R. Ewing`; but `I.` does end one). Words that often do end a
# sentence (`etc.`, `no.`) are not in the list: a missed split costs less than a sentence
# glued to the next.
#
# This is the project's one sentence splitter. By default it strips the tags and normalises
# the whitespace, so nothing is lost: the sentences joined by spaces are the plain text.
# With `keep_tags=True` it keeps the tags (chapter 09 shuffles the sentences of a tagged
# text): tags may sit between a boundary and the next capital, a boundary inside an open
# `<gdo>`, `<gda>` or `<gdl>` tag is not one, and a `<gdi>` wrapper belongs to no sentence.

# %%
#@save
#: Abbreviations that take a period without ending the sentence ("Mr. Smith", "e.g. Paris").
_ABBREVIATIONS = frozenset(
    "mr mrs ms mx dr prof st jr sr mt ft lt col gen sgt capt cpt rev hon pres gov sen vs e.g i.e cf approx "
    "inc ltd corp dept".split()
)
#: A run of sentence-final punctuation, any closing quotes or brackets, then whitespace and the
#: start of a new sentence (a capital or a digit, maybe after tags and an opening quote).
_BOUNDARY = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s+(?:<[^<>]*>)*["'“‘(\[]*[A-Z0-9])""")
_MARKUP = re.compile(r"<[^<>]*>")
_INLINE_OPEN = re.compile(r"<gd[oal]\b[^>]*>", re.IGNORECASE)
_INLINE_CLOSE = re.compile(r"</gd[oal]\s*>", re.IGNORECASE)
_WRAPPER = re.compile(r"^(\s*<gdi\b[^>]*>\s*)(.*?)(\s*</gdi\s*>\s*)?$", re.IGNORECASE | re.DOTALL)


def split_sentences(text: str, *, keep_tags: bool = False) -> list[str]:
    """The sentences of a story segment: plain (tags stripped, whitespace normalised) or, with
    ``keep_tags``, tagged (never split inside an inline tag; a ``<gdi>`` wrapper left out)."""
    if keep_tags:
        wrapped = _WRAPPER.match(text)
        body = wrapped.group(2) if wrapped else text
    else:
        body = " ".join(strip_tags(text).split())
    opened = [m.start() for m in _INLINE_OPEN.finditer(body)]
    closed = [m.start() for m in _INLINE_CLOSE.finditer(body)]
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(body):
        inside_tag = sum(p < match.start() for p in opened) > sum(p < match.start() for p in closed)
        words = _MARKUP.sub("", body[start:match.start()]).split()
        word = words[-1].lstrip("\"'“‘([") if words else ""
        period = match.group().startswith(".") and not match.group().startswith("..")
        if inside_tag or (period and (word.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-HJ-Z]", word))):
            continue  # an abbreviation or an initial ("I." does end a sentence)
        sentences.append(body[start:match.end()].strip())
        start = match.end()
    if body[start:].strip():
        sentences.append(body[start:].strip())
    return sentences

# %% [markdown]
# On a made-up segment with a title, an initial, a quotation and an ellipsis, plain and
# tagged:

# %%
example = ('<gdi image1> <gdo char1>Dr. J. R. Ewing</gdo> enters the room. "Who is there?" '
           '<gdo char2>Ana</gdo> asks... <gda char2>She stands</gda> by the window. </gdi>')
display(pd.DataFrame({"plain": split_sentences(example), "tagged": split_sentences(example, keep_tags=True)}))

# %% [markdown]
# ## From cosines to one score per pair
#
# CLIP's similarity is a cosine `c` in [-1, 1]; it becomes the score `(c + 1) / 2` in
# [0, 1]. The map is monotone, so rankings and ROC-AUC are those of the cosine; it needs no
# constant fitted to data; and it is affine, so the mean of mapped scores is the mapped mean
# cosine and the fusion head sees the cosine up to a fixed scale. CLIP's cosines sit in a
# narrow band (about 0.1-0.4 for ViT-B/32), so the scores do too: read them relative to each
# other, not as probabilities.
#
# A pair's sentences give several scores; the pair score is their `max` (the best-matching
# sentence), their `mean`, or `topk`, the mean of the `top_k` best (all of them when there
# are fewer). The profile chooses one (`clip.aggregate`); the others are kept as columns.

# %%
#@save
#: How the per-sentence scores of a pair become one score.
AGGREGATES = ("max", "mean", "topk")


def cosine_to_score(cosine: float | np.ndarray) -> float | np.ndarray:
    """Map a cosine in [-1, 1] to a score in [0, 1]: ``(c + 1) / 2`` (monotone and affine)."""
    return (cosine + 1.0) / 2.0


def aggregate_scores(scores: Sequence[float] | np.ndarray, how: str, top_k: int = 2) -> float:
    """One score from per-sentence scores: their ``max``, ``mean``, or ``topk`` (mean of the
    ``top_k`` highest; all of them when there are fewer). NaN for no sentences."""
    if how not in AGGREGATES:
        raise ValueError(f"unknown CLIP aggregate {how!r}: expected one of {AGGREGATES}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return math.nan
    if how == "max":
        return float(values.max())
    if how == "mean":
        return float(values.mean())
    return float(np.sort(values)[::-1][:top_k].mean())

# %%
scores = [0.2, 0.9, 0.5, 0.7]
display(pd.DataFrame({"cosine": [-1.0, 0.0, 0.3, 1.0], "score": cosine_to_score(np.array([-1.0, 0.0, 0.3, 1.0]))}))
display(Markdown(f"Sentence scores {scores}: max {aggregate_scores(scores, 'max'):.3f}, mean "
                 f"{aggregate_scores(scores, 'mean'):.3f}, top-2 mean {aggregate_scores(scores, 'topk', 2):.3f}."))

# %% [markdown]
# ## Every pair, scored from cached embeddings
#
# `clip_features` embeds each distinct frame and each distinct sentence once (a frame that
# does not decode is skipped and counted, and its pairs get no CLIP score: `clip_state` says
# "not computed", next to "nothing to check" for a text without a sentence and "checked"
# for the rest, chapter 02's three states), then scores a
# pair by dot products of cached vectors, never a new forward pass. Next to the sentence
# aggregates it computes two baselines: the whole plain text truncated to 77 tokens
# (`clip_score_trunc77`), and the study's cut, the first 150 characters of the tagged text
# (`clip_score_first150`: the study cut its whole story that way, for the first frame only;
# here each pair's own text is cut).

# %%
#@save
#: The original study's text cut: the first 150 characters, tags included.
FIRST_CHARS = 150
#: The columns ``clip_features`` writes, besides ``pair_id``.
SCORE_COLUMNS = ("clip_score", "clip_score_max", "clip_score_mean", "clip_score_topk",
                 "clip_score_trunc77", "clip_score_first150", "n_sentences")


@dataclass(frozen=True)
class ClipResult:
    """What ``clip_features`` computed.

    ``features``: one row per pair, ``pair_id`` plus ``SCORE_COLUMNS`` (scores NaN when the
    frame did not decode or the text has no sentence) and ``clip_state`` (``"checked"``,
    ``"nothing to check"``: no sentence, ``"not computed"``: the frame did not decode).
    ``sentences``: one row per pair and sentence (``pair_id``, ``sentence``, ``n_tokens``,
    ``truncated``, ``score``).
    ``segments``: one row per pair with the whole text's token count (``segment_tokens``)
    and whether 77 tokens cut it. ``frames``: one row per frame the pairs use (``story_id``,
    ``frame``, ``decoded``, ``width``, ``height``). ``counts``: how many frames and texts
    were needed, how many were computed now (a fully cached rerun computes none), frames
    skipped as undecodable, sentences truncated, and the seconds spent embedding.
    """

    features: pd.DataFrame
    sentences: pd.DataFrame
    segments: pd.DataFrame
    frames: pd.DataFrame
    counts: dict[str, int | float]


def clip_features(clip: Clip, pairs: pd.DataFrame, frames: Mapping[tuple[str, int], bytes],
                  cache_dir: str | os.PathLike, *, aggregate: str = "max", top_k: int = 2,
                  batch_size: int = 32) -> ClipResult:
    """The CLIP part of the feature table for every pair, from cached embeddings.

    ``pairs`` needs ``pair_id``, ``story_id``, ``frame``, ``text`` (plain) and
    ``tagged_text``; ``frames`` maps ``(story_id, frame)`` to the frame's encoded bytes.
    ``clip_score`` is the ``aggregate`` of the per-sentence scores; the variants are
    ``clip_score_max``/``_mean``/``_topk`` and the two baselines, ``clip_score_trunc77`` (the
    whole plain text, truncated to 77 tokens) and ``clip_score_first150`` (the first 150
    characters of the tagged text: the study cut its whole story that way, for the first
    frame only; here each pair's own text is cut). Embeddings live in
    the cache folders ``cache_dir/images`` and ``cache_dir/texts``.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown CLIP aggregate {aggregate!r}: expected one of {AGGREGATES}")
    if missing := {"pair_id", "story_id", "frame", "text", "tagged_text"} - set(pairs.columns):
        raise ValueError(f"pairs table lacks column(s) {sorted(missing)}")
    if pairs.empty:
        raise ValueError("no pairs to score")
    cache_dir = Path(cache_dir)
    frame_of_pair = list(zip(pairs["story_id"].astype(str), pairs["frame"].astype(int)))
    frame_ids = list(dict.fromkeys(frame_of_pair))
    if absent := [f for f in frame_ids if f not in frames]:
        raise ValueError(f"{len(absent)} frame(s) of the pairs have no image, e.g. {absent[:3]}")

    t0 = time.perf_counter()
    images, frames_computed = embed_images(clip, {f"{s}/{n}": frames[(s, n)] for s, n in frame_ids},
                                           cache_dir / "images", batch_size=batch_size)
    seconds_frames = time.perf_counter() - t0
    sentences = {text: split_sentences(text) for text in dict.fromkeys(pairs["text"])}
    t0 = time.perf_counter()
    sentence_table, sentences_computed = embed_texts(clip, [s for ss in sentences.values() for s in ss],
                                                     cache_dir / "texts", batch_size=batch_size)
    seconds_sentences = time.perf_counter() - t0
    first150 = [tagged[:FIRST_CHARS] for tagged in pairs["tagged_text"]]
    baseline_table, baselines_computed = embed_texts(clip, [*sentences, *first150], cache_dir / "texts",
                                                     batch_size=batch_size)

    # Scores from the cached vectors: one cosine per (pair, text) is a dot product.
    texts = pd.concat([sentence_table, baseline_table]).drop_duplicates("text").reset_index(drop=True)
    row_of_text = dict(zip(texts["text"], texts.index))
    text_matrix = np.stack(texts["embedding"].to_numpy()) if len(texts) else np.zeros((0, 0), np.float32)
    width = text_matrix.shape[1]
    image_matrix = np.stack([np.full(width, np.nan, np.float32) if e is None else e for e in images["embedding"]])
    row_of_frame = {fid: i for i, fid in enumerate(frame_ids)}

    def scores(frame: tuple[str, int], items: Sequence[str]) -> np.ndarray:
        rows = [row_of_text[t] for t in items]
        return cosine_to_score(text_matrix[rows].astype(np.float64) @ image_matrix[row_of_frame[frame]])

    feature_rows, sentence_rows = [], []
    for pair_id, frame, text, cut in zip(pairs["pair_id"], frame_of_pair, pairs["text"], first150):
        per_sentence = scores(frame, sentences[text])
        trunc77, first = scores(frame, [text, cut])
        by_aggregate = {how: aggregate_scores(per_sentence, how, top_k) for how in AGGREGATES}
        state = (NOTHING_TO_CHECK if not sentences[text]
                 else CHECKED if images["decoded"].iat[row_of_frame[frame]] else NOT_COMPUTED)
        feature_rows.append({"pair_id": pair_id, "clip_score": by_aggregate[aggregate],
                             **{f"clip_score_{how}": value for how, value in by_aggregate.items()},
                             "clip_score_trunc77": trunc77, "clip_score_first150": first,
                             "n_sentences": len(sentences[text]), "clip_state": state})
        sentence_rows.extend({"pair_id": pair_id, "sentence": i, "text": s, "score": value}
                             for i, (s, value) in enumerate(zip(sentences[text], per_sentence)))

    token_info = texts.set_index("text")[["n_tokens", "truncated"]]
    sentence_frame = pd.DataFrame(sentence_rows, columns=["pair_id", "sentence", "text", "score"])
    sentence_frame = sentence_frame.join(token_info, on="text").drop(columns="text")
    segments = pairs[["pair_id"]].assign(
        segment_tokens=token_info.loc[pairs["text"], "n_tokens"].to_numpy(),
        segment_truncated=token_info.loc[pairs["text"], "truncated"].to_numpy(),
    )
    counts = {
        "pairs": len(pairs),
        "frames": len(images),
        "frames_computed": frames_computed,
        "frames_skipped": int((~images["decoded"].astype(bool)).sum()),
        "sentences": len(sentence_table),
        "sentences_computed": sentences_computed,
        "sentences_truncated": int(sentence_table["truncated"].sum()),
        "baseline_texts": len(baseline_table),
        "baseline_texts_computed": baselines_computed,
        "seconds_frames": round(seconds_frames, 3),
        "seconds_sentences": round(seconds_sentences, 3),
    }
    frame_table = pd.DataFrame({"story_id": [s for s, _ in frame_ids], "frame": [f for _, f in frame_ids]})
    frame_table = frame_table.assign(**{c: images[c].to_numpy() for c in ("decoded", "width", "height")})
    return ClipResult(features=pd.DataFrame(feature_rows, columns=["pair_id", *SCORE_COLUMNS, "clip_state"]),
                      sentences=sentence_frame, segments=segments.reset_index(drop=True), frames=frame_table,
                      counts=counts)

# %% [markdown]
# The profile's aggregate becomes `clip_score`; the cache lives in the profile's cache
# folder, so a rerun computes nothing.

# %%
from helpers.data import load_study_data, pair_frames
from helpers.features import development as dev_table
from helpers.objects import state_table

study = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
pairs = study.pairs
frames = pair_frames(pairs, study.datasets)
result = clip_features(model, pairs, frames, ctx.paths.cache / "clip", aggregate=cfg["aggregate"],
                       top_k=cfg["top_k"], batch_size=cfg["batch_size"])
table = pairs.merge(result.features, on="pair_id", validate="one_to_one")
development = dev_table(table)  # train and validation pairs: everything shown below
counts = result.counts
display(Markdown(f"{counts['pairs']:,} pairs over {counts['frames']:,} frames and {counts['sentences']:,} distinct "
                 f"sentences; frames skipped as undecodable: {counts['frames_skipped']:,} "
                 f"({int(table['clip_score'].isna().sum()):,} pairs without a score)."))
display(development[["pair_id", "split", "label", "negative_type", "n_sentences", *SCORE_COLUMNS[:-1]]].head())
display(Markdown("Train and validation pairs per `clip_state`, by split and kind of pair (a pair without a CLIP "
                 "score is set aside before training, and counted, in chapter 05):"))
display(state_table(development, "clip_state"))

# %% [markdown]
# Chapter 06's blind control reads a text the same way, without a frame: the mean of its
# sentences' embeddings, normalised, from the same cache (so it costs no forward pass after
# this chapter).

# %%
#@save
def text_embeddings(clip: Clip, texts: Sequence[str], cache_dir: str | os.PathLike, *,
                    batch_size: int) -> np.ndarray:
    """One vector per text: the normalised mean of its sentences' normalised CLIP embeddings.

    The sentences are those ``clip_features`` scores (``split_sentences``), read from the same
    cache (``cache_dir/texts``), so after chapter 03 this costs no forward pass. A text with
    no sentence gets a zero vector.
    """
    sentences = {text: split_sentences(text) for text in dict.fromkeys(texts)}
    table, _ = embed_texts(clip, [s for ss in sentences.values() for s in ss], Path(cache_dir) / "texts",
                           batch_size=batch_size)
    vector_of = dict(zip(table["text"], table["embedding"]))
    dim = clip.model.config.projection_dim
    means = {}
    for text, parts in sentences.items():
        mean = np.mean([vector_of[s] for s in parts], axis=0) if parts else np.zeros(dim)
        norm = np.linalg.norm(mean)
        means[text] = mean / norm if norm > 0 else mean
    return np.stack([means[t] for t in texts]) if len(texts) else np.zeros((0, dim))

# %% [markdown]
# ## How much of the frame CLIP sees
#
# CLIP's preprocessing scales a frame's short side to its input size and keeps the central
# square. Film frames are wide, so what happens at their left and right edges never reaches
# the image encoder, whatever the text says about it.

# %%
#@save
def visible_fraction(clip: Clip, width: int, height: int) -> float:
    """The share of a ``width`` x ``height`` frame that CLIP's image preprocessing keeps.

    CLIP resizes the short side to 224 px and keeps the central 224 x 224 square, so a
    frame of StoryReasoning's shape (about 575 x 240) loses its left and right sides.
    """
    processor = clip.processor.image_processor
    w, h = float(width), float(height)
    if processor.do_resize and processor.size.get("shortest_edge"):
        scale = processor.size["shortest_edge"] / min(w, h)
        w, h = w * scale, h * scale
    elif processor.do_resize and processor.size.get("height"):
        w, h = float(processor.size["width"]), float(processor.size["height"])
    if not processor.do_center_crop:
        return 1.0
    return min(processor.crop_size["width"], w) * min(processor.crop_size["height"], h) / (w * h)

# %%
decoded = result.frames[result.frames["decoded"]]
visible = pd.Series([visible_fraction(model, w, h) for w, h in zip(decoded["width"], decoded["height"])])
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
#@save
# extra code
def scorer_labels(top_k: int) -> dict[str, str]:
    """Readable names of the score columns that compare text views, in display order."""
    return {
        "clip_score_max": "sentences, max",
        "clip_score_mean": "sentences, mean",
        "clip_score_topk": f"sentences, top-{top_k} mean",
        "clip_score_trunc77": f"whole segment, cut at {MAX_TOKENS} tokens",
        "clip_score_first150": f"first {FIRST_CHARS} characters, tags kept (study)",
    }


def length_table(result: ClipResult, pairs: pd.DataFrame) -> pd.DataFrame:
    """How long the dataset's own segments are, over the positive pairs (each frame's segment once).

    Rows: sentences per segment, tokens per sentence, tokens per whole segment (start and
    end tokens included, before truncation), and the share of a segment's plain text that
    survives the study's cut (its first 150 characters, tags included, with the tags then
    removed). Columns: ``n``, ``mean``, ``median``, ``p90``, ``max`` and ``share_over_77``
    (the share that a 77-token encoder would cut; token rows only).
    """
    positives = pairs[pairs["label"] == 1]
    own = set(positives["pair_id"])
    features = result.features[result.features["pair_id"].isin(own)]
    kept = [len(strip_tags(re.sub(r"<[^>]*$", "", tagged[:FIRST_CHARS]))) / max(len(text), 1)
            for tagged, text in zip(positives["tagged_text"], positives["text"])]
    series = {
        "sentences per segment": features["n_sentences"],
        "tokens per sentence": result.sentences.loc[result.sentences["pair_id"].isin(own), "n_tokens"],
        "tokens per segment": result.segments.loc[result.segments["pair_id"].isin(own), "segment_tokens"],
        "plain characters kept by the study cut": pd.Series(kept, dtype=float),
    }
    rows = []
    for name, values in series.items():
        values = values.astype(float)
        over = (values > MAX_TOKENS).mean() if name.startswith("tokens") else math.nan
        rows.append({"": name, "n": len(values), "mean": values.mean(), "median": values.median(),
                     "p90": values.quantile(0.9), "max": values.max(), f"share_over_{MAX_TOKENS}": over})
    return pd.DataFrame(rows).set_index("")

# %%
lengths = length_table(result, development)
display(lengths.style.format(precision=2, na_rep="n/a"))
over = f"share_over_{MAX_TOKENS}"
display(Markdown(
    f"A {MAX_TOKENS}-token encoder would cut **{lengths.at['tokens per segment', over]:.0%}** of whole segments "
    f"(median length {lengths.at['tokens per segment', 'median']:.0f} tokens) but only "
    f"{lengths.at['tokens per sentence', over]:.1%} of single sentences (median "
    f"{lengths.at['tokens per sentence', 'median']:.0f}); the sentences still over the limit are truncated "
    f"({counts['sentences_truncated']:,} of all {counts['sentences']:,} distinct sentences). "
    f"The study's cut, the first {FIRST_CHARS} characters with the tags, keeps "
    f"{lengths.at['plain characters kept by the study cut', 'mean']:.0%} of a segment's plain text on average."
))

# %%
# extra code: tokens per sentence and per whole segment (positive pairs), with CLIP's limit
import seaborn as sns

own = set(development.loc[development["label"] == 1, "pair_id"])
token_counts = pd.concat([
    pd.DataFrame({"tokens": result.sentences.loc[result.sentences["pair_id"].isin(own), "n_tokens"], "text": "sentence"}),
    pd.DataFrame({"tokens": result.segments.loc[result.segments["pair_id"].isin(own), "segment_tokens"],
                  "text": "whole segment"}),
], ignore_index=True)
fig, ax = plt.subplots(figsize=(7, 3.5))
sns.histplot(data=token_counts, x="tokens", hue="text", bins=40, element="step", stat="count", common_bins=True, ax=ax)
ax.axvline(MAX_TOKENS, color="black", linestyle="--", linewidth=1)
ax.text(MAX_TOKENS, ax.get_ylim()[1] * 0.95, f" CLIP's limit ({MAX_TOKENS})", va="top", fontsize=9)
ax.set_xlabel("tokens (start and end tokens included, before truncation)")
ax.set_title("Text length in CLIP tokens")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Scores by label and kind of negative
#
# The distribution of the pair score for the positives and for each kind of negative
# (cumulative: a curve further right means higher scores), next to the two baselines, over
# the train and validation pairs. A useful score puts the positives to the right of every
# negative type.

# %%
# extra code: chapter 02's plot per score column, on a shared x range zoomed to the data (CLIP's band is narrow)
from helpers.objects import plot_score_by_group

views = scorer_labels(cfg["top_k"])
configured = views[f"clip_score_{cfg['aggregate']}"]
shown = {"clip_score": f"clip_score: {configured}",
         "clip_score_trunc77": views["clip_score_trunc77"], "clip_score_first150": views["clip_score_first150"]}
values = development[list(shown)].to_numpy(dtype=float)
low, high = np.nanmin(values), np.nanmax(values)
margin = 0.05 * (high - low) or 0.01
fig, axes = plt.subplots(1, len(shown), figsize=(15, 3.8), sharey=True)
for ax, (column, title) in zip(axes, shown.items()):
    plot_score_by_group(development.dropna(subset=[column]), column, ax=ax)
    ax.set_xlim(low - margin, high + margin)
    ax.set_title(title, fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Which text view tells the pairs apart?
#
# ROC-AUC of each way of reading the text, for the positives against each kind of negative
# (the dashed line marks chance). Only the development pairs (train and validation splits) are used: CLIP
# is not fitted here, but the aggregate is a modelling choice and the test split stays out
# of every choice.

# %%
#@save
# extra code
def auc_table(table: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """ROC-AUC of each text view (:func:`scorer_labels`) against each negative type, wide.

    ``table`` holds the pairs with their CLIP columns; pairs with no score (undecodable
    frame) are left out. Rows are the negative types then ``all negatives`` (as
    ``helpers.objects.auc_by_negative_type`` orders them), columns the text views.
    """
    from helpers.objects import auc_by_negative_type

    labels = scorer_labels(top_k)
    scored = table.dropna(subset=list(labels))
    long = pd.concat([auc_by_negative_type(scored, column).assign(scorer=label) for column, label in labels.items()])
    wide = long.pivot(index="negative_type", columns="scorer", values="roc_auc")
    return wide.loc[list(dict.fromkeys(long["negative_type"])), list(labels.values())]

# %%
auc = auc_table(development, cfg["top_k"])
display(auc.style.format(precision=3).background_gradient(cmap="RdYlGn", vmin=0, vmax=1))

# extra code: grouped bars, one group per negative type, one bar per text view
long = auc.reset_index().melt(id_vars="negative_type", var_name="text view", value_name="ROC-AUC")
fig, ax = plt.subplots(figsize=(11, 4))
sns.barplot(data=long, x="negative_type", y="ROC-AUC", hue="text view", ax=ax)
ax.axhline(0.5, color="black", linestyle="--", linewidth=1)
ax.set_ylim(0, 1)
ax.set_xlabel("negatives the positives are told apart from")
ax.legend(title="text view", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
ax.set_title("CLIP: positives vs each kind of negative, by text view (dashed: chance)")
fig.tight_layout()
plt.show()

overall = auc.loc["all negatives"]
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
#@save
# extra code
def cost_table(counts: Mapping[str, int | float]) -> pd.DataFrame:
    """Embeddings a run needs and computes, in total and per pair (``ClipResult.counts``).

    A pair's score costs no forward pass of its own: each distinct frame and each distinct
    sentence is embedded once and reused by every pair that contains it.
    """
    pairs = counts["pairs"]
    rows = [
        ("frames (image encoder)", counts["frames"], counts["frames_computed"]),
        ("sentences (text encoder)", counts["sentences"], counts["sentences_computed"]),
        ("baseline texts (text encoder)", counts["baseline_texts"], counts["baseline_texts_computed"]),
    ]
    table = pd.DataFrame(rows, columns=["embeddings of", "needed", "computed this run"]).set_index("embeddings of")
    table.loc["frames + sentences"] = table.iloc[:2].sum()
    table["needed per pair"] = table["needed"] / pairs
    table["computed per pair"] = table["computed this run"] / pairs
    return table

# %%
cost = cost_table(counts)
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

# %% [markdown]
# ## Asking the frame: questions from the text's own tags
#
# CLIP's score is one number for a whole sentence: it cannot say which part of a text the
# frame contradicts, and swapping one object or reversing one relation moves it little.
# The Davidsonian Scene Graph (DSG; Cho et al., ICLR 2024) checks a text against an image
# another way: the text is broken into atoms (each entity, each action or relation between
# entities), each atom becomes a yes/no question, and a visual-question-answering model
# answers them. The atoms form a graph: a question about an action or a relation depends on
# the questions about its entities ("Is the man holding the phone?" means nothing if there
# is no man), and a question whose parent is answered no counts as a no. DSG needs a
# language model to find the atoms and the graph. This dataset hands them over: every
# `<gdo>` tag names an entity with an id, every `<gda>` an action with its actors' ids,
# every `<gdl>` a place.
#
# Where a character's description comes from matters. The chain of thought describes every
# character ("Man wearing a white shirt"), but it describes the image: for an aligned pair
# the frame it annotates is the frame being judged, so a question made from it would be made
# from the picture ("Is there a man wearing a white shirt?" of a text that never mentions a
# shirt), while a negative's text, from another frame, would be asked about another picture.
# Questions are therefore made from the text alone, as the verifier can make them:
# `text_descriptions` reads each character's description off the segment's own words, the
# first mention of it that is a noun phrase ("a tall man in a grey coat"), else "man" or
# "woman" when a pronoun names it ("he", "her"); a character only named ("James") is "a
# person", which is what its `char` tag says.
#
# `build_questions` reads a parsed segment that way:
#
# - **entities**: each entity a `<gdo>` tag names, once per id: a character as the text
#   describes it (`text_descriptions`, else "a person"), anything else as its words; then
#   the COCO things the text names outside the tags (chapter 02's `named_things`). "Is there
#   a cardboard box?"
# - **actions**: each `<gda>` tag, its verb turned into a present participle ("holds" ->
#   "holding", "points a gun" -> "pointing a gun") and followed by the thing right after it
#   ("at John" -> "at a person"); its parents are the questions about its actors and about
#   the things it acts on. Verbs of being, seeming and thinking ("is", "feels",
#   "realizes") are left out: a frame cannot show them.
# - **relations**: each spatial relation chapter 04's `extract_relations` reads (chapter 01
#   already uses it to build the relation swaps); its parents are both entities' questions.
#   "Is the man on the couch?"
# - **places**: each `<gdl>` location, as an entity question ("Is there a plain interior?").
#
# Plain text (the verifier's input) has no tags: the same builder asks about the COCO things
# and the person pronouns it names, the nouns COCO lacks that the lexicon knows (chapter 02's
# `other_nouns`, the words the open-vocabulary detector is asked for in plain text too), and
# about the relations `extract_relations` reads there,
# but about no action, since only a `<gda>` tag says which words are an action and who does
# it. A text gets each question once and at most `MAX_QUESTIONS` of them: entities first,
# then actions, relations and places.

# %%
#@save
#: The most questions asked about one text: entities first, then actions, relations and places.
MAX_QUESTIONS = 12
#: A parent question holds when the model answers it yes with at least this probability (DSG).
PARENT_HOLDS = 0.5
QUESTION_KINDS = ("entity", "action", "relation")


class Question(NamedTuple):
    """One yes/no question about a frame: its ``id`` within its text (``entity:char1``,
    ``action:0``, ...), the ``question``, its ``kind`` (one of :data:`QUESTION_KINDS`) and the
    ids of the questions it depends on (``parents``, listed before it)."""

    id: str
    question: str
    kind: str
    parents: tuple[str, ...] = ()


#: Irregular verb forms -> present participle; regular ones follow the rules of ``participle``.
_IRREGULAR_PARTICIPLES = {
    **dict.fromkeys(["is", "are", "was", "were", "am", "be"], "being"), "has": "having", "had": "having",
    "does": "doing", "did": "doing", "goes": "going", "went": "going", "says": "saying", "said": "saying",
    "took": "taking", "spoke": "speaking", "held": "holding", "stood": "standing", "sat": "sitting",
    "ran": "running", "lay": "lying", "saw": "seeing", "came": "coming", "gave": "giving", "made": "making",
    "got": "getting", "fell": "falling", "threw": "throwing", "wore": "wearing", "ate": "eating",
    "drank": "drinking", "drove": "driving", "rode": "riding", "wrote": "writing", "began": "beginning",
    "begin": "beginning", "brought": "bringing", "caught": "catching", "told": "telling", "found": "finding",
    "kept": "keeping", "led": "leading", "met": "meeting", "felt": "feeling", "fought": "fighting",
    "shot": "shooting", "knew": "knowing", "thought": "thinking", "sought": "seeking", "hid": "hiding",
    "fled": "fleeing", "fed": "feeding", "hung": "hanging", "lit": "lighting", "swung": "swinging",
}
#: Verbs a frame cannot show (being, seeming, thinking, modals): no action question is asked about them.
NON_VISUAL_VERBS = frozenset(
    "be seem appear become remain feel know realize realise wonder think hope want need try start begin decide "
    "remember convey reflect contemplate communicate find mirror sense notice prepare seek mean believe "
    "understand imagine expect plan continue manage have can could will would shall should may might must".split()
)


def participle(verb: str) -> str:
    """The present participle of an English verb form: "holds" -> "holding", "lies" -> "lying",
    "grabbed" -> "grabbing", "took" -> "taking", "sit" -> "sitting"; "pointing" stays."""
    word = verb.lower()
    if word in _IRREGULAR_PARTICIPLES:
        return _IRREGULAR_PARTICIPLES[word]
    if word.endswith("ing") and len(word) > 5:
        return word
    if word.endswith("ied"):
        return word[:-3] + "ying"  # tried, lied
    if word.endswith("ed") and not word.endswith("eed") and len(word) > 4:
        return word[:-2] + "ing"  # walked, urged, stopped: -ing drops what -ed added
    if word.endswith("ies") and len(word) > 3:
        word = word[:-3] + "y"  # tries, lies
    elif re.search(r"(?:ch|sh|ss|x|z|o)es$", word):
        word = word[:-2]  # watches, passes
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        word = word[:-1]  # holds, smiles
    if word.endswith("ie"):
        return word[:-2] + "ying"
    if word.endswith("e") and not word.endswith(("ee", "ye", "oe")) and len(word) > 2:
        return word[:-1] + "ing"  # smile
    if len(re.findall(r"[aeiou]+", word)) == 1 and re.search(r"[^aeiou][aeiou][^aeiouwxy]$", word):
        return word + word[-1] + "ing"  # sit, grab, stop
    return word + "ing"


_NON_VISUAL = frozenset(participle(v) for v in NON_VISUAL_VERBS)
_LEADING = frozenset("a an the this that these those his her their its my your our some".split())
_POSSESSIVES = frozenset("his her hers their theirs its my your our".split())
_NUMBERS = frozenset("two three four five six seven eight nine ten several many few some".split())
_PLURAL_HEADS = frozenset("men women people children police".split())
_MASS_HEADS = frozenset("lighting light sunlight moonlight daylight architecture darkness space furniture water "
                        "snow rain fog smoke grass sand scenery decor clothing equipment traffic".split())
#: Words that end a noun phrase's head: "man *with* a neutral look", "woman *in* red".
_HEAD_ENDS = frozenset("with without wearing in on at of from near by behind under beside who that which whose "
                       "while dressed".split())
#: The most words (a named thing counts as one) an action question takes from after its ``<gda>`` tag.
ACTION_TAIL_WORDS = 4
#: Words that end what an action question takes from after the tag: "enters an empty room *that* ...".
_PARTICLES = frozenset("around away back down up out off over forward nearby inside outside together".split())
_ACTION_ENDS = frozenset("that which who whose where when while as and but or because if though although so "
                         "then than".split())
_RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of"}


def _bare(phrase: str) -> str:
    """``phrase`` without leading articles and possessives; a capital first letter lowered
    unless the phrase looks like a proper name (a later word capitalised too)."""
    words = phrase.split()
    while len(words) > 1 and words[0].lower() in _LEADING:
        words = words[1:]
    if words and not any(w[:1].isupper() for w in words[1:]) and not words[0].isupper():
        words[0] = words[0][:1].lower() + words[0][1:]
    return " ".join(words)


def _head(phrase: str, *, person: bool = False) -> str:
    """The head of a bare noun phrase: up to a preposition or relative ("man" of "man with a
    hat"); for a person's description also up to a comma or an -ing word ("man holding a gun")."""
    if person:
        phrase = re.split(r"[,;.]", phrase)[0]
    words = re.findall(r"[\w'-]+", phrase)
    for i, word in enumerate(words[1:], start=1):
        if word.lower() in _HEAD_ENDS or (person and word.lower().endswith("ing")):
            return " ".join(words[:i])
    return " ".join(words)


def _plural(phrase: str) -> bool:
    last = (_head(phrase).split() or [""])[-1].lower()
    return last in _PLURAL_HEADS or (last.endswith("s") and not last.endswith(("ss", "us", "is")))


_COUNTS = {2: "two", 3: "three", 4: "four", 5: "five"}
_IRREGULAR_PLURALS = {"man": "men", "woman": "women", "person": "people", "child": "children"}


def _plural_of(noun: str) -> str:
    """The plural of a noun phrase whose last word is its head: "young man" -> "young men"."""
    *before, last = noun.split() or [""]
    if last.lower() in _IRREGULAR_PLURALS:
        last = _IRREGULAR_PLURALS[last.lower()]
    elif _plural(last):
        pass
    elif re.search(r"(?:s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join([*before, last])


def _indefinite(phrase: str) -> str:
    """"a"/"an" + the bare phrase; nothing for a plural, a number or a mass noun ("cardboard boxes")."""
    bare = _bare(phrase)
    first = (bare.lower().split() or [""])[0]
    head = (_head(bare).lower().split() or [""])[-1]
    if _plural(bare) or first in _NUMBERS or head in _MASS_HEADS:
        return bare
    return ("an " if first[:1] in "aeiou" else "a ") + bare


#: Pronouns that tell what a character is, and what a question then calls that character.
PRONOUN_NOUNS: dict[str, str] = {**dict.fromkeys("he him his himself".split(), "man"),
                                 **dict.fromkeys("she her hers herself".split(), "woman")}


def _noun_phrase(mention: str) -> bool:
    """Whether a mention is a noun phrase with an article ("a man in a coat", "the driver"), not a name or a pronoun."""
    return mention.split()[:1] != [] and mention.split()[0].lower() in ("a", "an", "the")


def text_descriptions(text: Segment | str) -> dict[str, str]:
    """How a text's own words describe each character id: the first ``<gdo>`` mention of that
    character alone that is a noun phrase ("a tall man in a grey coat"), else "man" or "woman"
    when a pronoun of :data:`PRONOUN_NOUNS` names it alone ("him"). A character only named
    ("James") or named with others ("them") gets none; plain text has no ids: empty. Never the
    chain of thought: it describes the frame, not the text."""
    if isinstance(text, str):
        return {}
    phrases: dict[str, str] = {}
    pronouns: dict[str, str] = {}
    for mention in text.mentions:
        characters = [i for i in mention.ids if i.startswith("char")]
        if len(characters) != 1:
            continue
        words = " ".join(mention.text.split())
        if _noun_phrase(words):
            phrases.setdefault(characters[0], words)
        elif words.lower() in PRONOUN_NOUNS:
            pronouns.setdefault(characters[0], PRONOUN_NOUNS[words.lower()])
    return {**pronouns, **phrases}

# %%
#@save
def build_questions(text: Segment | str) -> list[Question]:
    """DSG-style yes/no questions about what a frame's text says the frame shows.

    ``text`` is a parsed segment (``helpers.tags.parse_segment``) or plain text; its own words
    name the characters (:func:`text_descriptions`), never a chain of thought. Entities come first
    (no parents), then actions (tagged text only; parents: their actors' and objects' entity
    questions), relations (``helpers.spatial.extract_relations``; parents: both entities')
    and ``<gdl>`` places. Each question once, at most :data:`MAX_QUESTIONS`, parents before children.
    """
    described = text_descriptions(text)
    tagged = not isinstance(text, str)
    plain = text.plain if tagged else " ".join(text.split())
    mentions = text.mentions if tagged else ()
    names: dict[str, tuple[str, str]] = {}  # entity key -> (phrase of its own question, short phrase)
    spans: list[tuple[int, int, tuple[str, ...]]] = []  # where the text names which entities

    def character(key: str, mention: str) -> tuple[str, str]:
        description = described.get(key) or (mention if _noun_phrase(mention) else "")
        if description:
            return _indefinite(description), _bare(_head(description, person=True))
        return "a person", "person"

    for m in mentions:
        if m.kind == "char" or any(i.startswith("char") for i in m.ids):
            keys = tuple(i for i in m.ids if i.startswith("char"))
            for key in keys:
                names.setdefault(key, character(key, m.text))
        elif m.text.lower() in _POSSESSIVES or not m.text.strip():
            continue
        else:
            keys = (m.ids[0] if m.ids else _bare(m.text).lower(),)
            names.setdefault(keys[0], (_indefinite(m.text), _bare(_head(m.text))))
        spans.append((m.start, m.end, keys))
    for action in text.actions if tagged else ():
        for key in action.ids:
            if key not in names:
                names[key] = character(key, "")
                spans.append((action.start, action.start, (key,)))
    for thing in named_things(plain, [(m.start, m.end) for m in mentions]):
        if thing.text.lower() in PERSON_PRONOUNS:
            if tagged:
                continue  # a tagged text tags its characters
            key, name = "person", ("a person", "person")
        else:  # the thing a tagged mention names already ("phone" after "<gdo obj9>a cell phone</gdo>"), else its own
            said = f" {thing.text.lower()}"
            key = next((k for m in mentions for k in m.ids[:1] if f" {_bare(m.text).lower()}".endswith(said)),
                       _bare(thing.text).lower())
            name = (_indefinite(thing.text), _bare(_head(thing.text)))
        names.setdefault(key, name)
        spans.append((thing.start, thing.end, (key,)))
    for thing in () if tagged else other_nouns(plain):  # plain text: the nouns COCO lacks too, as chapter 02 reads them
        key = _bare(thing.text).lower()
        names.setdefault(key, (_indefinite(thing.text), _bare(thing.text)))
        spans.append((thing.start, thing.end, (key,)))
    spans.sort()

    questions: list[Question] = []
    by_text: dict[str, str] = {}  # question -> id, to ask it once
    alias: dict[str, str] = {}  # entity key -> the id of its question

    def ask(qid: str, question: str, kind: str, parents: Sequence[str] = ()) -> str:
        if question not in by_text:
            by_text[question] = qid
            questions.append(Question(qid, question, kind, tuple(dict.fromkeys(parents))))
        return by_text[question]

    def phrase(keys: Sequence[str], article: str) -> tuple[str, bool]:
        """How a question names the entities ``keys``: "a man", "the man", "a man and a woman", "two women"."""
        shorts = [names[k][1] for k in keys]
        if len(shorts) > 1 and len(set(shorts)) == 1:
            return f"{'the ' if article == 'the' else ''}{_COUNTS.get(len(shorts), 'several')} {_plural_of(shorts[0])}", True
        words = [f"{article} {s}" if article == "the" else _indefinite(s) for s in shorts]
        return " and ".join(words), len(keys) > 1 or _plural(shorts[0])

    for _, _, keys in spans:
        for key in keys:
            if key not in alias:
                full = names[key][0]
                alias[key] = ask(f"entity:{key}", f"{'Are' if _plural(full) else 'Is'} there {full}?", "entity")
    for n, action in enumerate(text.actions if tagged else ()):
        words = action.text.split()
        actors = [k for k in dict.fromkeys(action.ids) if k in alias]
        if not words or not actors or "n't" in words[0].lower() or participle(words[0]) in _NON_VISUAL:
            continue
        # The words after the tag, "points a gun</gda> at <gdo char2>John</gdo>", kept up to the last that
        # ends a phrase: a named thing, a noun the lexicon knows, a particle, or the end of a sentence.
        tail, acted_on, ends = [], [], 0
        for token in re.finditer(r"[\w'-]+|[^\w\s]", plain[action.end :]):
            at, word = action.end + token.start(), token.group()
            span = next((keys for s, e, keys in spans if s <= at < e), None)
            if not word[0].isalnum():
                ends = len(tail) if word in ".;:!?" else ends
                break
            if span is not None and not set(span) <= set(actors):
                if not acted_on or acted_on[-1][1] != span:  # named once, after its own article if the text has one
                    own = len(span) == 1 and tail and tail[-1].lower() in _LEADING
                    tail.append(names[span[0]][1] if own else phrase(span, "a")[0])
                    acted_on.append((len(tail), span))
                    ends = len(tail)
                continue
            if word.lower() in _ACTION_ENDS or len(tail) == ACTION_TAIL_WORDS:
                break
            tail.append(word)
            if word.lower() in _PARTICLES or to_coco(word.lower()) or word.lower().rstrip("s") in NOT_COCO:
                ends = len(tail)
        else:
            ends = len(tail)
        tail = tail[:ends]
        acted_on = [keys for position, keys in acted_on if position <= ends]
        inside = [k for s, e, keys in spans if action.start <= s and e <= action.end and s < e for k in keys]
        who, many = phrase(actors, "a")
        what = " ".join([participle(words[0]), *words[1:], *tail])
        ask(f"action:{n}", f"{'Are' if many else 'Is'} {who} {what}?", "action",
            [alias[k] for k in [*actors, *inside, *(k for keys in acted_on for k in keys)] if k in alias])
    for n, relation in enumerate(extract_relations(text)):
        subject = next((keys for s, _, keys in spans if s == relation.span[0]), ())
        obj = next((keys for _, e, keys in spans if e == relation.span[1]), ())
        if not subject or not obj or set(subject) & set(obj):
            continue
        (who, many), (where, _) = phrase(subject, "the"), phrase(obj, "the")
        ask(f"relation:{n}", f"{'Are' if many else 'Is'} {who} {_RELATION_WORDS.get(relation.relation, relation.relation)}"
            f" {where}?", "relation", [alias[k] for k in [*subject, *obj]])
    for place in text.locations if tagged else ():
        if place.text.strip():
            full = _indefinite(place.text)
            ask(f"place:{place.ids[0] if place.ids else place.text.lower()}",
                f"{'Are' if _plural(full) else 'Is'} there {full}?", "entity")
    return questions[:MAX_QUESTIONS]

# %% [markdown]
# On a segment of the development splits (story 3920's when the profile's data has it) read
# through its tags, and on the same segment as plain text, the way the verifier gets it:

# %%
from helpers.features import development_stories

candidates = [s for s in study.stories if s.story_id in development_stories(pairs)]
shown_story = next((s for s in candidates if s.story_id == "3920"), candidates[0])
shown_segment = next((s for s in shown_story.segments if s.actions and s.mentions), shown_story.segments[0])
described = text_descriptions(shown_segment)
display(Markdown(f"Story {shown_story.story_id}, frame {shown_segment.frame}: *{shown_segment.plain}* Its own words "
                 f"describe " + (", ".join(f"`{key}` as *{words}*" for key, words in described.items()) if described
                                 else "no character beyond a person") + "."))
display(pd.concat([
    pd.DataFrame(build_questions(shown_segment)).assign(read_from="tags"),
    pd.DataFrame(build_questions(shown_segment.plain)).assign(read_from="plain text"),
], ignore_index=True)[["read_from", "id", "kind", "question", "parents"]])

# %% [markdown]
# ## Scoring the answers
#
# `answer_yes` (in `helpers.vqa`) asks BLIP-VQA each question about its frame and reads
# P(yes) off the model directly instead of sampling an answer: the answer decoder is fed
# "yes" and then "no" after the question and the frame, and P(yes) is the share of the
# first in the two sequences' probabilities. `question_evidence` then scores a text the DSG
# way: a question whose parent does not hold (its P(yes) below `PARENT_HOLDS`, or itself
# not counted) counts as 0, its own answer kept for the explanation only; the score is the
# mean over all questions of what each counts. Its state, `question_state`, is one of chapter
# 02's three: a text with no question is "nothing to check", a pair whose frame does not
# decode "not computed"; both hold the placeholder score 0, which is not a measurement.

# %%
#@save
#: The columns of the ``questions`` feature part, after ``pair_id`` (``questions`` as JSON).
QUESTION_COLUMNS = ("question_score", "question_state", "question_informative", "n_questions", "questions")
#: ``question_score`` of a pair with no question, or whose frame does not decode (a placeholder).
UNINFORMATIVE_QUESTION_SCORE = 0.0


def question_evidence(questions: Sequence[Question], p_yes: Mapping[str, float]) -> dict:
    """The DSG score of a text's ``questions`` given the model's P(yes) of each (keyed by the question).

    A question counts when every parent counts and holds (P(yes) >= :data:`PARENT_HOLDS`);
    it then contributes its P(yes), else 0. Returns ``question_score`` (the mean
    contribution; :data:`UNINFORMATIVE_QUESTION_SCORE` with no question), ``question_state``
    (checked, or nothing to check), ``question_informative`` (checked), ``n_questions`` and
    ``questions``: one dict per question with ``question``, ``kind``, ``parents`` (their
    questions), ``p_yes`` and ``counted``.
    """
    text_of = {q.id: q.question for q in questions}
    holds: dict[str, bool] = {}
    values, rows = [], []
    for q in questions:
        if missing := [p for p in q.parents if p not in holds]:
            raise ValueError(f"question {q.id!r} depends on {missing}, not asked before it")
        p = float(p_yes[q.question]) if q.question in p_yes else math.nan
        if math.isnan(p):
            raise ValueError(f"no answer to {q.question!r}")
        counted = all(holds[parent] for parent in q.parents)
        holds[q.id] = counted and p >= PARENT_HOLDS
        values.append(p if counted else 0.0)
        rows.append({"question": q.question, "kind": q.kind, "parents": [text_of[x] for x in q.parents],
                     "p_yes": round(p, 5), "counted": counted})
    score = float(np.mean(values)) if values else UNINFORMATIVE_QUESTION_SCORE
    return {"question_score": score, "question_state": CHECKED if values else NOTHING_TO_CHECK,
            "question_informative": bool(values), "n_questions": len(rows),
            "questions": rows}

# %%
shown_questions = build_questions(shown_segment)
made_up = {q.question: a for q, a in zip(shown_questions, np.linspace(0.9, 0.1, len(shown_questions)))}
evidence = question_evidence(shown_questions, made_up)
display(Markdown(f"With made-up answers falling from 0.9 to 0.1 down the list, the segment above scores "
                 f"{evidence['question_score']:.3f}; {sum(not r['counted'] for r in evidence['questions'])} of its "
                 f"{evidence['n_questions']} questions do not count (a parent answered no):"))
display(pd.DataFrame(evidence["questions"]))

# %% [markdown]
# `question_features` builds every pair's questions (from its tags, the characters described
# by the text's own words; from the plain text when the pair has no tag) and answers all questions about a frame in one call: a negative asks mostly
# the questions of its positive about the same frame, and each (frame, question) is answered
# once, from the cache after the first run.

# %%
#@save
def question_features(vqa: Vqa, pairs: pd.DataFrame, frames: Mapping[tuple[str, int], bytes], *,
                      cache_path: str | os.PathLike, batch_size: int) -> pd.DataFrame:
    """The ``questions`` feature part: ``pair_id`` and :data:`QUESTION_COLUMNS`, one row per pair.

    ``pairs`` needs ``pair_id``, ``story_id``, ``frame``, ``text``, ``tagged_text`` and
    ``source_frame``; ``frames`` maps ``(story_id, frame)`` to the frame's bytes. Questions
    come from ``tagged_text`` when it holds a tag, else from ``text``: the text alone, no
    chain of thought (it annotates the frame an aligned pair is judged on).
    A pair with questions whose frame does not decode scores :data:`UNINFORMATIVE_QUESTION_SCORE`,
    state "not computed". ``table.attrs["counts"]`` says what it cost: pairs, frames, frames encoded
    now and skipped as undecodable, question slots (pairs x their questions), distinct
    (frame, question) answers needed, and seconds.
    """
    if missing := {"pair_id", "story_id", "frame", "text", "tagged_text", "source_frame"} - set(pairs.columns):
        raise ValueError(f"pairs table lacks column(s) {sorted(missing)}")
    asked: list[list[Question]] = []
    columns = ["frame", "text", "tagged_text", "source_frame"]
    for frame, text, tagged, source_frame in pairs[columns].itertuples(index=False):
        number = int(source_frame) if pd.notna(source_frame) else int(frame)
        asked.append(build_questions(pair_text(text, tagged, number)))  # the tagged segment, or the plain text
    keys = list(zip(pairs["story_id"].astype(str), pairs["frame"].astype(int)))
    wanted: dict[tuple[str, int], list[str]] = {}
    for key, questions in zip(keys, asked):
        wanted.setdefault(key, []).extend(q.question for q in questions)
    wanted = {key: list(dict.fromkeys(qs)) for key, qs in wanted.items() if qs}
    t0 = time.perf_counter()
    answers, encoded = answer_yes(vqa, {k: frames[k] for k in wanted}, wanted, cache_path, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    p_yes: dict[tuple[str, int], dict[str, float]] = {}
    corrupt = set()
    for story_id, frame, question, status, p in answers.itertuples(index=False):
        if status == "ok":
            p_yes.setdefault((story_id, frame), {})[question] = p
        else:
            corrupt.add((story_id, frame))
    rows = []
    for pair_id, key, questions in zip(pairs["pair_id"], keys, asked):
        if key in corrupt and questions:  # the questions without answers, for the explanation
            text_of = {q.id: q.question for q in questions}
            listed = [{"question": q.question, "kind": q.kind, "parents": [text_of[p] for p in q.parents],
                       "p_yes": None, "counted": False} for q in questions]
            evidence = {"question_score": UNINFORMATIVE_QUESTION_SCORE, "question_state": NOT_COMPUTED,
                        "question_informative": False, "n_questions": len(questions), "questions": listed}
        else:
            evidence = question_evidence(questions, p_yes.get(key, {}))
        rows.append({"pair_id": pair_id, **evidence, "questions": json.dumps(evidence["questions"])})
    table = pd.DataFrame(rows, columns=["pair_id", *QUESTION_COLUMNS])
    table.attrs["counts"] = {"pairs": len(pairs), "frames": len(wanted), "frames_encoded": encoded,
                             "frames_skipped": len(corrupt), "question_slots": int(sum(map(len, asked))),
                             "answers": len(answers), "seconds": round(seconds, 3)}
    return table

# %% [markdown]
# **Nothing but the text.** Every word of a question must be a word of the pair's text (or
# its present participle, or its plural), except the words a question brings itself: "is
# there", articles, counts, chapter 04's relation names, and what it calls a character ("a
# person", or "a man" for a character the text calls "he"). `unsupported_words` lists the
# others. A description taken from the chain of thought would show here ("Is there a man
# wearing a white shirt?" of a text that mentions no shirt brings "wearing", "white",
# "shirt"), so over the aligned train and validation pairs the share asked a question with
# such a word should be zero.

# %%
#@save
#: Words a question brings itself: its frame, articles, counts, chapter 04's relation names
#: and what it calls a character ("person", :data:`PRONOUN_NOUNS`' nouns).
QUESTION_WORDS: frozenset[str] = frozenset(
    ["is", "are", "there", "a", "an", "the", "and", "person", "people", "several", *_COUNTS.values()]
    + [w for relation in (*RELATIONS, *_RELATION_WORDS.values()) for w in relation.split()]
    + [w for noun in PRONOUN_NOUNS.values() for w in (noun, _plural_of(noun))])


def unsupported_words(question: str, text: str) -> list[str]:
    """The words of ``question`` (lower-cased, in order) that ``text`` does not hold: neither a
    word of the text, nor the present participle (:func:`participle`) or the plural of one,
    nor one of :data:`QUESTION_WORDS`."""
    words = set(re.findall(r"[\w'-]+", text.lower()))
    held = words | {participle(w) for w in words} | {_plural_of(w) for w in words} | QUESTION_WORDS
    return [w for w in re.findall(r"[\w'-]+", question.lower()) if w not in held]

# %%
aligned = dev_table(pairs[pairs["label"] == 1])
unheld = pd.Series(
    [sorted({w for q in build_questions(pair_text(text, tagged, int(frame))) for w in unsupported_words(q.question, text)})
     for text, tagged, frame in aligned[["text", "tagged_text", "source_frame"]].itertuples(index=False)],
    index=aligned["pair_id"], dtype=object)
n_unheld = int((unheld.str.len() > 0).sum())
display(Markdown(
    f"Aligned train and validation pairs asked a question with a word their text does not hold: **{n_unheld:,} of "
    f"{len(aligned):,}** ({n_unheld / max(len(aligned), 1):.1%})"
    + (": " + "; ".join(f"`{pid}` ({', '.join(ws)})" for pid, ws in unheld[unheld.str.len() > 0].head(5).items())
       if n_unheld else ".")))

# %% [markdown]
# ## Every pair, asked
#
# BLIP-VQA (`Salesforce/blip-vqa-base`: a ViT-B/16 vision encoder at 384 px, and a BERT-base
# question encoder and answer decoder) comes from the weights the profile's `questions`
# section names: the pretrained checkpoint, a local folder, or (smoke profile) the same
# classes at a small size with random weights. It is the chapter's second large model, so
# CLIP is freed first: one large model in memory at a time. A profile may switch the
# question evidence off; chapters 05 to 09 then run without it.

# %%
from helpers.features import drop_part

questions_cfg = ctx.cfg["questions"]
questions_on = bool(questions_cfg["enabled"])
if questions_on:
    import gc

    import torch

    from helpers.vqa import VQA

    del model  # CLIP's embeddings are all cached and its feature part written
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    vqa = load_model(VQA, questions_cfg["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"],
                     device=ctx.device)
    n_params = sum(p.numel() for p in vqa.model.parameters())
    display(Markdown(f"Weights `{vqa.source}` (identity `{vqa.identity}`): {n_params:,} parameters on `{vqa.device}`, "
                     f"images of {vqa.model.config.vision_config.image_size} px."))
else:
    removed = drop_part(ctx.paths, "questions")
    display(Markdown(
        f"The `{ctx.profile}` profile switches the question evidence off (`questions.enabled: false`): BLIP-VQA "
        f"encodes every frame and runs once per question, which on `{ctx.device}` does not fit this profile's time "
        f"budget (`make bench` measures it). No model is loaded, the `questions` feature part is "
        f"{'removed' if removed else 'absent'}, and the `full` profile asks the questions."))

# %%
if questions_on:
    question_table = question_features(vqa, pairs, frames, cache_path=ctx.paths.cache / "vqa",
                                       batch_size=questions_cfg["batch_size"])
    qcounts = question_table.attrs["counts"]
    asked = table.merge(question_table, on="pair_id", validate="one_to_one")
    dev_asked = dev_table(asked)
    display(Markdown(
        f"{qcounts['pairs']:,} pairs ask {qcounts['question_slots']:,} questions in all about {qcounts['frames']:,} "
        f"frames, which takes **{qcounts['answers']:,}** distinct (frame, question) answers: each answer serves "
        f"{qcounts['question_slots'] / max(qcounts['answers'], 1):.2f} pair questions on average. Frames skipped as "
        f"undecodable: {qcounts['frames_skipped']:,}; pairs without a question: "
        f"{int((question_table['n_questions'] == 0).sum()):,}; checked pairs: "
        f"{int(question_table['question_informative'].sum()):,}. Train and validation pairs per state:"))
    display(state_table(dev_asked, "question_state"))
    display(dev_asked[["pair_id", "split", "label", "negative_type", "n_questions", "question_score",
                       "clip_score"]].head())

# %% [markdown]
# A development positive and a negative of the same frame, question by question (a question
# only one of the two texts asks has a blank on the other side):

# %%
if questions_on:
    informative = dev_asked[dev_asked["question_informative"]]
    positives = informative[informative["label"] == 1].set_index(["story_id", "frame"])
    negatives = informative[(informative["label"] == 0)
                            & informative.set_index(["story_id", "frame"]).index.isin(positives.index)]
    preferred = {"relation_swap": 0, "object_swap": 1}
    negatives = negatives.sort_values("negative_type", key=lambda t: t.map(preferred).fillna(len(preferred)),
                                      kind="stable")
    if negatives.empty:
        display(Markdown("No development frame has both an informative positive and an informative negative."))
    else:
        negative = negatives.iloc[0]
        positive = positives.loc[(negative["story_id"], negative["frame"])]
        positive = positive.iloc[0] if isinstance(positive, pd.DataFrame) else positive

        def answered(row: pd.Series, side: str) -> pd.DataFrame:
            listed = pd.DataFrame(json.loads(row["questions"]), columns=["question", "kind", "p_yes", "counted"])
            return listed.set_index(["question", "kind"])[["p_yes", "counted"]].add_prefix(f"{side} ")

        both = answered(positive, "positive")
        both = pd.concat([both, answered(negative, "negative")], axis=1).reindex(
            [*both.index, *answered(negative, "negative").index.difference(both.index, sort=False)])
        display(Markdown(f"Positive `{positive['pair_id']}` (question score {positive['question_score']:.3f}) against "
                         f"negative `{negative['pair_id']}`, a `{negative['negative_type']}` "
                         f"({negative['question_score']:.3f}): *{negative.get('change', '')}*"))
        display(both.reset_index().astype(object).where(both.reset_index().notna(), ""))

# %% [markdown]
# ## Which evidence tells the pairs apart?
#
# ROC-AUC of the question score for the positives against each kind of negative, next to
# CLIP's score on the same development pairs (those with questions and a decodable frame).
# Questions should help most where CLIP is weakest: swapped objects and reversed relations.

# %%
if questions_on:
    from helpers.objects import auc_by_negative_type, plot_score_by_group

    scored = dev_asked[dev_asked["question_informative"] & dev_asked["clip_score"].notna()]
    if scored.empty:
        display(Markdown("No development pair has both a question score and a CLIP score."))
    else:
        by_type = auc_by_negative_type(scored, "question_score").rename(columns={"roc_auc": "question_score"})
        by_type["clip_score"] = auc_by_negative_type(scored, "clip_score")["roc_auc"].to_numpy()
        by_type = by_type.set_index("negative_type")
        display(by_type.style.format({"question_score": "{:.3f}", "clip_score": "{:.3f}"}))

        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 3.8))
        plot_score_by_group(scored, "question_score", ax=left)
        left.set_title("question_score by kind of pair")
        by_type[["question_score", "clip_score"]].plot.bar(ax=right, rot=20)
        right.axhline(0.5, color="black", linestyle="--", linewidth=1)
        right.set(ylim=(0, 1), xlabel="negatives the positives are told apart from", ylabel="ROC-AUC",
                  title="Questions vs CLIP (dashed: chance)")
        fig.tight_layout()
        plt.show()
        overall = by_type.loc["all negatives"]
        display(Markdown(
            f"Against all negatives ({len(scored):,} development pairs with questions), the question score reaches "
            f"ROC-AUC **{overall['question_score']:.3f}** and CLIP's {overall['clip_score']:.3f}. The question score "
            f"does best against `{by_type['question_score'].drop('all negatives').idxmax()}` "
            f"({by_type['question_score'].drop('all negatives').max():.3f})."))

# %% [markdown]
# ## What the questions cost, and the question feature part
#
# One image encoding per frame, and one pass of the question encoder and the answer decoder
# per distinct (frame, question), each answer cached on disk; the image encodings are kept
# in memory for one call only (a frame's patch encodings weigh far more than its answers).
# One row per pair: `question_score`, `question_informative`, `n_questions` and the
# `questions` with their answers (JSON), for chapter 05 and the verifier's explanation.

# %%
if questions_on:
    per_frame = qcounts["seconds"] / qcounts["frames_encoded"] if qcounts["frames_encoded"] else None
    display(Markdown(
        f"Frames encoded in this run: {qcounts['frames_encoded']:,} of {qcounts['frames']:,}; "
        f"{qcounts['answers'] / max(qcounts['pairs'], 1):.2f} answers needed per pair, against "
        f"{qcounts['question_slots'] / max(qcounts['pairs'], 1):.2f} questions asked per pair; "
        f"{qcounts['seconds']:.1f} s in all on `{vqa.device}`"
        + (f", {per_frame:.2f} s per frame encoded with its questions" if per_frame else
           " (every answer came from the cache)") + f", batches of {questions_cfg['batch_size']}."))
    path = write_part(ctx.paths, "questions", question_table)
    display(Markdown(f"Wrote `{path.name}`: {len(question_table):,} rows, columns "
                     f"{', '.join(f'`{c}`' for c in question_table.columns)}."))
