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
# ## What the method needs
#
# The functions written in this chapter are saved (`#@save`) into `helpers/semantics.py`,
# which chapter 01 (the sentence around an edit), chapters 05 to 09 and the verifier
# import. They need a loaded CLIP and its cached embeddings, which `helpers.clip` provides:
# it loads the weights, and embeds each distinct frame and each distinct text once,
# L2-normalised, caching every vector on disk under the model's identity (a hash of its
# parameters, tokenizer and image preprocessing).

# %%
#@save
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.clip import MAX_TOKENS, Clip, embed_images, embed_texts
from helpers.tags import strip_tags

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

from helpers.clip import load_clip

cfg = ctx.cfg["clip"]
model = load_clip(cfg["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"], device=ctx.device)
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
# does not decode is skipped and counted, and its pairs get no CLIP score), then scores a
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
    frame did not decode or the text has no sentence). ``sentences``: one row per pair and
    sentence (``pair_id``, ``sentence``, ``n_tokens``, ``truncated``, ``score``).
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
        feature_rows.append({"pair_id": pair_id, "clip_score": by_aggregate[aggregate],
                             **{f"clip_score_{how}": value for how, value in by_aggregate.items()},
                             "clip_score_trunc77": trunc77, "clip_score_first150": first,
                             "n_sentences": len(sentences[text])})
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
    return ClipResult(features=pd.DataFrame(feature_rows, columns=["pair_id", *SCORE_COLUMNS]),
                      sentences=sentence_frame, segments=segments.reset_index(drop=True), frames=frame_table,
                      counts=counts)

# %% [markdown]
# The profile's aggregate becomes `clip_score`; the cache lives in the profile's cache
# folder, so a rerun computes nothing.

# %%
from helpers.data import load_study_data, pair_frames
from helpers.features import development as dev_table

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
display(lengths.style.format(precision=2, na_rep=""))
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
