"""Ablations and robustness (chapter 09): what each piece of evidence is worth, and how
much the verdicts move when the inputs are disturbed.

Ablations, all on the same test pairs, each head trained with the same seed on the same
training split and thresholded on the validation split:

- every non-empty subset of the three evidences (``evidence_subsets``);
- the ground-truth ("oracle") detector in place of Faster R-CNN: object and spatial
  evidence recomputed from the chain-of-thought boxes. On the negative types in
  :data:`ORACLE_REPLAYS` its evidence replays how the negatives were built (from the same
  annotations), so its gain there is the labelling rule, not headroom: every difference is
  also computed with those negatives left out (``differences_without_replayed``);
- the original study's rules: the object score as the share of detected labels found
  anywhere in the *whole story* (``study_object_score``), CLIP on the story's first frame
  against the first 150 characters of the whole story, the 400 px pair rule for the
  spatial score, and a head trained for 3 epochs.

Robustness: image perturbations (blur, crop, JPEG, brightness) and text perturbations
(typos, tags stripped, sentence order) applied to a small sample of test pairs; each
perturbed pair is scored from scratch and compared with the same pair unperturbed.
"""

from __future__ import annotations

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

from .config import Paths
from .fusion import STUDY_FEATURES
from .io import atomic_write_json, atomic_write_parquet, read_json

if TYPE_CHECKING:
    import matplotlib.figure
    from PIL import Image

    from .clip import Clip
    from .data import ParsedStory, Segment
    from .detection import Detector
    from .fusion import TrainedHead
    from .training import TrainResult, TrainSettings

__all__ = [
    # evidence subsets
    "EVIDENCES",
    "REFERENCE",
    "evidence_subsets",
    "subset_name",
    # the original study's rules
    "study_keywords",
    "study_object_score",
    "whole_story",
    "tagged_features",
    "tags_variant",
    "study_story_texts",
    "study_clip_scores",
    "study_features",
    # the oracle detector
    "ORACLE_REPLAYS",
    "oracle_frames",
    "oracle_features",
    # variants, training and results
    "Variant",
    "subset_variants",
    "detector_variant",
    "study_variant",
    "variant_table",
    "train_variants",
    "training_table",
    "variant_predictions",
    "ablation_metrics",
    "ablation_table",
    "ABLATIONS_FILE",
    "ablations_path",
    "write_ablations",
    "read_ablations",
    # perturbations
    "PerturbationError",
    "blur",
    "crop",
    "jpeg",
    "brightness",
    "typos",
    "strip_tags",
    "split_tagged_sentences",
    "shuffle_sentences",
    "IMAGE_PERTURBATIONS",
    "TEXT_PERTURBATIONS",
    # robustness
    "ROBUSTNESS_SCORES",
    "robustness_sample",
    "perturb_frames",
    "perturb_texts",
    "score_pairs",
    "robustness",
    "robustness_summary",
    "robustness_findings",
    "plot_robustness",
    "ROBUSTNESS_FILE",
    "robustness_path",
    "write_robustness",
    "read_robustness",
]

#: The three evidences and their score columns in ``features.parquet``, in the study's order.
EVIDENCES: dict[str, str] = {"object": "object_score", "semantic": "clip_score", "spatial": "spatial_score"}


class PerturbationError(ValueError):
    """A perturbation cannot be applied to this input (e.g. fewer letters than typos asked for)."""


# ----------------------------------------------------------------------------- subsets


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


# ------------------------------------------------------------------- the study's rules


def study_keywords() -> dict[str, tuple[str, ...]]:
    """For each COCO category, the words that count as finding it in a story.

    The study matched each detected label against the story with a hand-made synonym map
    that is not published; this uses the category's own name and the synonyms of
    ``helpers.objects`` (lower case), so it is at least as generous as a cleaner map would be.
    """
    from .objects import COCO_CATEGORIES, SYNONYMS

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
    """The study's object score: the share of distinct detected labels named anywhere in ``story``.

    A label counts as found when it, or one of its ``keywords`` (default ``study_keywords()``),
    occurs in the story as a whole word, case-insensitively, ignoring any ``<gd..>`` tags.
    Nothing here looks at the frame's own segment: a label mentioned in any frame of the
    story counts. ``empty`` is the score when nothing was detected.

    >>> study_object_score(["person", "tv", "person"], "A man watches a film.", {"person": ["man"], "tv": []})
    0.5
    """
    from .data import strip_tags as _strip

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
    """The tagged story text rebuilt from its segments, optionally with frame ``frame``'s text replaced.

    The layout is the dataset's (``<gdi imageN>`` line, text, ``</gdi>``, blank line), so the
    first 150 characters read as they do in the original ``story`` column. Replacing one
    segment gives the story a negative pair's edited text belongs to.
    """
    if (frame is None) != (replacement is None):
        raise ValueError("give both frame and replacement, or neither")
    if frame is not None and frame not in {s.frame for s in segments}:
        raise ValueError(f"the story has no frame {frame} to replace")
    parts = [f"<gdi image{s.frame}>\n{replacement if s.frame == frame else s.tagged}\n</gdi>" for s in segments]
    return "\n\n".join(parts)


# ------------------------------------------------------------------- ablation variants

#: The variant every other one is compared with: all three evidences, Faster R-CNN, early stopping.
REFERENCE = subset_name(tuple(EVIDENCES))
#: Where chapter 09 writes its results, under the profile's output folder.
ABLATIONS_FILE = "ablations.json"
ROBUSTNESS_FILE = "robustness.parquet"


def ablations_path(paths: Paths) -> Path:
    """``outputs/<profile>/ablations.json``: the ablation metrics (chapter 09, read by chapter 10)."""
    return paths.root / ABLATIONS_FILE


def robustness_path(paths: Paths) -> Path:
    """``outputs/<profile>/robustness.parquet``: the per-pair robustness scores (chapter 09)."""
    return paths.root / ROBUSTNESS_FILE


#: Negative types on which the oracle detector's evidence replays the construction of the
#: labels rather than measuring the frame, with the reason. An ``object_swap`` negative
#: puts in an object chosen as a COCO category that the chain-of-thought annotations do not
#: place in the frame; the oracle reads its boxes from those same annotations, so it cannot
#: find the swapped-in object by construction, whatever the frame shows (the annotations
#: are not exhaustive: the object may well be there).
ORACLE_REPLAYS: dict[str, str] = {
    "object_swap": "the swapped-in object was chosen as one the chain-of-thought annotations do not place in the "
                   "frame, and the oracle reads the same annotations",
}


@dataclass(frozen=True)
class Variant:
    """One ablation: a fusion head named ``name``, trained with ``settings`` on ``table``.

    ``table`` is a feature table with the pairs of the reference table (same rows, same
    splits); only its evidence columns differ between variants. ``family`` groups variants
    in the results ("evidence subset", "detector", "study rules"). ``replays`` names the
    negative types on which the variant's evidence replays the labelling rule
    (:data:`ORACLE_REPLAYS` for the oracle detector): its results on them are no headroom.
    """

    name: str
    family: str
    description: str
    settings: "TrainSettings"
    table: pd.DataFrame = field(repr=False, compare=False)
    replays: tuple[str, ...] = ()


def subset_variants(table: pd.DataFrame, cfg: Mapping[str, Any]) -> list[Variant]:
    """One variant per non-empty subset of the evidences, trained as the profile says.

    The full subset is :data:`REFERENCE`, the same head chapter 06 trains as ``fusion``.
    """
    from .training import settings_from_profile

    return [
        Variant(name=subset_name(subset), family="evidence subset",
                description="fusion head on " + ", ".join(f"{EVIDENCES[e]}" for e in subset),
                settings=settings_from_profile(cfg, [EVIDENCES[e] for e in subset]), table=table)
        for subset in evidence_subsets()
    ]


def _replace_columns(table: pd.DataFrame, *parts: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the columns of each part (keyed by ``pair_id``) replacing its own, rows in order."""
    out = table
    for part in parts:
        columns = [c for c in part.columns if c != "pair_id"]
        out = out.drop(columns=[c for c in columns if c in out.columns]).merge(
            part, on="pair_id", how="left", validate="one_to_one")
    if len(out) != len(table):
        raise ValueError("replacing evidence columns changed the number of pairs")
    return out


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


def oracle_features(table: pd.DataFrame, frames: pd.DataFrame, stories: Iterable["ParsedStory"], *,
                    threshold: float) -> pd.DataFrame:
    """``table`` with its object and spatial evidence recomputed from ``frames`` (``oracle_frames``).

    Uses the same functions as chapters 02 and 04 (``object_features``, ``spatial_features``),
    so the only change is where the boxes come from. CLIP evidence is left as it is.
    """
    from .objects import object_features
    from .spatial import spatial_features

    stories = list(stories)
    objects = object_features(table, frames, stories, threshold=threshold)
    spatial = spatial_features(table, frames, threshold=threshold, stories=stories)
    return _replace_columns(table, objects, spatial)


def tagged_features(table: pd.DataFrame, frames: pd.DataFrame, stories: Iterable["ParsedStory"], *,
                    threshold: float) -> pd.DataFrame:
    """``table`` with its object and spatial evidence recomputed from the *tagged* text.

    The study's heads read the plain text a user would type; this is what reading the tags
    instead would add: characters known to be people (or cats) by their ids, relations whose
    subject is a name. Same detections, same functions (``read_tags=True``); CLIP unchanged.
    """
    from .objects import object_features
    from .spatial import spatial_features

    stories = list(stories)
    objects = object_features(table, frames, stories, threshold=threshold, read_tags=True)
    spatial = spatial_features(table, frames, threshold=threshold, stories=stories, read_tags=True)
    return _replace_columns(table, objects, spatial)


def tags_variant(table: pd.DataFrame, cfg: Mapping[str, Any]) -> Variant:
    """The reference head trained on ``table`` with evidence read from the tags (``tagged_features``)."""
    from .training import settings_from_profile

    return Variant(name="tagged text", family="text",
                   description="all three evidences, object and spatial evidence read from the story's tags "
                               "(characters by id, chain-of-thought descriptions) instead of the plain text",
                   settings=settings_from_profile(cfg, STUDY_FEATURES), table=table)


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


def study_clip_scores(clip: "Clip", table: pd.DataFrame, story_texts: pd.Series, datasets: Sequence[Any],
                      cache_dir: str | Path, *, batch_size: int) -> pd.Series:
    """The study's CLIP score of each pair: frame 1 of the pair's story against the first
    150 characters of its whole story (``story_texts``, tags included). NaN when frame 1
    does not decode. Embeddings go through chapter 03's cache (``cache_dir``: its ``images``
    and ``texts`` folders)."""
    from .clip import FIRST_CHARS, cosine_to_score, embed_images, embed_texts
    from .data import pair_frames

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
    from .detection import parse_detections
    from .spatial import study_spatial_score

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


def detector_variant(table: pd.DataFrame, cfg: Mapping[str, Any]) -> Variant:
    """The reference head trained on ``table`` with oracle evidence (``oracle_features``)."""
    from .training import settings_from_profile

    return Variant(name="oracle detector", family="detector",
                   description="all three evidences, object and spatial evidence from the chain-of-thought boxes",
                   settings=settings_from_profile(cfg, STUDY_FEATURES), table=table, replays=tuple(ORACLE_REPLAYS))


def study_variant(table: pd.DataFrame, cfg: Mapping[str, Any]) -> Variant:
    """The study's rules (``study_features``) and its training: 3 epochs, the last one kept."""
    from .training import STUDY_EPOCHS, settings_from_profile

    return Variant(name="study rules", family="study rules",
                   description="whole-story keyword objects, first-frame CLIP on 150 characters, 400 px pairs, "
                               "3 epochs",
                   settings=settings_from_profile(cfg, STUDY_FEATURES, max_epochs=STUDY_EPOCHS, patience=None),
                   table=table)


def variant_table(variants: Sequence[Variant]) -> pd.DataFrame:
    """One row per variant: its family, its input columns, and how long it trains."""
    def epochs(settings: "TrainSettings") -> str:
        if settings.patience is None:
            return f"{settings.max_epochs} (last kept)"
        return f"up to {settings.max_epochs}, patience {settings.patience} (best on validation kept)"

    return pd.DataFrame([{"variant": v.name, "family": v.family, "inputs": ", ".join(v.settings.features),
                          "epochs": epochs(v.settings)} for v in variants]).set_index("variant")


def training_table(results: Mapping[str, "TrainResult"]) -> pd.DataFrame:
    """One row per trained variant: epochs trained, the epoch kept, the validation-tuned threshold."""
    return pd.DataFrame([{"variant": name, "epochs trained": len(r.history), "kept epoch": r.best_epoch,
                          "threshold": r.head.threshold} for name, r in results.items()]).set_index("variant")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def train_variants(variants: Sequence[Variant], checkpoints_dir: str | Path) -> dict[str, "TrainResult"]:
    """Train every variant's head (``helpers.training.train_fusion``), each with its own
    checkpoint folder under ``checkpoints_dir``, so a rerun resumes or returns at once."""
    from tqdm.auto import tqdm

    from .training import train_fusion

    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    return {v.name: train_fusion(v.table, v.settings, Path(checkpoints_dir) / _slug(v.name), progress=False)
            for v in tqdm(variants, desc="ablation heads", unit="head")}


def variant_predictions(variants: Sequence[Variant], results: Mapping[str, "TrainResult"]) -> pd.DataFrame:
    """Every pair scored by every variant's head on that variant's own table (``helpers.training.predict``)."""
    from .training import head_scorer, predict

    return pd.concat([predict(v.table, [head_scorer(v.name, results[v.name].head)]).assign(family=v.family)
                      for v in variants], ignore_index=True)


def ablation_metrics(predictions: pd.DataFrame, variants: Sequence[Variant], *, n_resamples: int, seed: int,
                     reference: str = REFERENCE) -> dict[str, Any]:
    """The ablation results on the test split, in ``metrics.json``'s layout (``evaluate_split``)
    plus ``reference``, each variant's ``family`` and ``description``, and ``differences``:
    each variant minus the reference, per metric, with a paired bootstrap interval over id
    blocks (``bootstrap_difference``: both on the same block resamples). ``replays`` lists, per
    variant, the negative types its evidence replays (``Variant.replays``), and
    ``differences_without_replayed`` the same differences with those negatives left out
    (the aligned pairs and every other negative kept): the only fair headroom. For a
    variant that replays nothing it is its ordinary difference."""
    from .evaluation import bootstrap_difference, evaluate_split

    document = evaluate_split(predictions, "test", n_resamples=n_resamples, seed=seed)
    if reference not in document["models"]:
        raise ValueError(f"the reference variant {reference!r} is not among the predictions")
    test = predictions[predictions["split"] == "test"].sort_values(["model", "pair_id"])
    ref = test[test["model"] == reference]

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
            "replays": replays, "differences_without_replayed": fair}


#: What :func:`ablation_table` appends to a result that replays the labelling rule.
REPLAYS_MARK = " (replays the labels)"


def ablation_table(document: Mapping[str, Any], metric: str = "roc_auc") -> pd.DataFrame:
    """One row per variant: its family, ``metric`` overall and per kind of negative, and the
    difference from the reference, each "value [95% interval]". A variant's result on a
    negative type its evidence replays is marked :data:`REPLAYS_MARK`; the last column is the
    difference with those negatives left out (``differences_without_replayed``)."""
    from .evaluation import NEGATIVE_TYPES, format_estimate

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


def write_ablations(paths: Paths, document: Mapping[str, Any]) -> Path:
    """Write ``ablations.json`` atomically."""
    return atomic_write_json(ablations_path(paths), dict(document))


def read_ablations(paths: Paths) -> dict[str, Any] | None:
    """The ablation results of chapter 09, or None when it has not run."""
    return read_json(ablations_path(paths))


# ---------------------------------------------------------------- image perturbations


def blur(image: "Image.Image", radius: float = 2.0) -> "Image.Image":
    """Gaussian blur of ``radius`` pixels (PIL)."""
    from PIL import ImageFilter

    if radius <= 0:
        raise PerturbationError(f"blur radius must be positive, got {radius}")
    return image.filter(ImageFilter.GaussianBlur(radius))


def crop(image: "Image.Image", keep: float = 0.8) -> "Image.Image":
    """The central ``keep`` fraction of each side, resized back to the original size.

    Resizing back keeps the frame size the detector and the pixel rules see, so what
    changes is the framing (the edges are lost, everything else is magnified).
    """
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


# ----------------------------------------------------------------- text perturbations

#: Tag markup (``<gdo char1>``, ``</gda>``, ``<gdi image3>``): text perturbations leave it intact.
_MARKUP = re.compile(r"<[^<>]*>")
_INLINE_OPEN = re.compile(r"<gd[oal]\b[^>]*>", re.IGNORECASE)
_INLINE_CLOSE = re.compile(r"</gd[oal]\s*>", re.IGNORECASE)
_WRAPPER = re.compile(r"^(\s*<gdi\b[^>]*>\s*)(.*?)(\s*</gdi\s*>\s*)?$", re.IGNORECASE | re.DOTALL)
#: Sentence-final punctuation with any closing quotes, then whitespace and the start of a
#: new sentence: an upper-case letter or digit, maybe after opening quotes or tags.
_BOUNDARY = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s+(?:<[^<>]*>)*["'“‘(\[]*[A-Z0-9])""")
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr mt lt col gen sgt capt rev vs etc".split())


def _markup_mask(text: str) -> np.ndarray:
    """True for every character that belongs to tag markup."""
    mask = np.zeros(len(text), dtype=bool)
    for m in _MARKUP.finditer(text):
        mask[m.start() : m.end()] = True
    return mask


def typos(text: str, rng: np.random.Generator, k: int = 3) -> str:
    """``k`` typos: ``k`` distinct letters outside tag markup, each replaced by another letter.

    The result has the same length as ``text`` and differs from it in exactly ``k``
    positions (case is kept), and every tag is left as it was, so the text still parses.
    Raises ``PerturbationError`` when the text has fewer than ``k`` such letters.
    """
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
    """The text without any grounding tags (``helpers.data.strip_tags``); ``rng`` is unused.

    Without tags the pipeline cannot tell which words name entities: this measures how
    much the verdicts rest on the annotation rather than on the words.
    """
    from .data import strip_tags as _strip

    return _strip(text)


def split_tagged_sentences(text: str) -> list[str]:
    """The sentences of a tagged segment, tags kept, never splitting inside an inline tag.

    A sentence ends at ``.``/``!``/``?`` (with any closing quotes) before whitespace and a
    capital letter or digit, except after a title (``Mr.``) or an initial (``J.``), and
    only where no ``<gdo>``/``<gda>``/``<gdl>`` tag is open. Sentences are stripped of
    surrounding whitespace; a ``<gdi>`` wrapper, if present, is not part of any sentence.
    """
    match = _WRAPPER.match(text)
    body = match.group(2) if match else text
    open_at = [m.start() for m in _INLINE_OPEN.finditer(body)]
    close_at = [m.start() for m in _INLINE_CLOSE.finditer(body)]
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(body):
        depth = sum(p < m.start() for p in open_at) - sum(p < m.start() for p in close_at)
        word = _MARKUP.sub("", body[start : m.start()]).rsplit(maxsplit=1)[-1:] or [""]
        word = word[0].lstrip("\"'“‘([")
        abbreviation = word.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-Z]", word)
        if depth > 0 or (m.group().startswith(".") and abbreviation):
            continue
        sentences.append(body[start : m.end()].strip())
        start = m.end()
    if body[start:].strip():
        sentences.append(body[start:].strip())
    return sentences


def shuffle_sentences(text: str, rng: np.random.Generator) -> str:
    """The same sentences in another order (a ``<gdi>`` wrapper stays around them).

    With two or more distinct sentences the order always changes (a draw that happens to
    give the original order is rotated by one); a text of one sentence comes back as it is,
    with its whitespace normalised between sentences.
    """
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


# -------------------------------------------------------------------------- robustness

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
    from .data import CorruptFrameError, frame_image

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
    from .data import strip_tags as _strip

    tagged = [perturb(t, _pair_rng(seed, p)) for p, t in zip(pairs["pair_id"], pairs["tagged_text"])]
    return pairs.assign(tagged_text=tagged, text=[_strip(t) for t in tagged])


def score_pairs(pairs: pd.DataFrame, frames: Mapping[tuple[str, int], bytes], *, detector: "Detector",
                clip: "Clip", stories: Sequence["ParsedStory"], cfg: Mapping[str, Any],
                cache_dir: str | Path) -> pd.DataFrame:
    """The three evidences of ``pairs`` computed from the frames' bytes, as chapters 02-04 do.

    Detection, CLIP, object and spatial evidence use the profile's settings and the same
    helper functions as the chapters; results are cached under ``cache_dir`` by frame
    content (pass the profile's cache folder to share chapters 02 and 03's caches), so a
    rerun, or an input they already saw, costs no forward pass. Returns ``pairs``
    with every feature column those chapters write.
    """
    from .clip import clip_features
    from .detection import CACHE_FILE, detect_frames
    from .objects import object_features
    from .spatial import spatial_features

    det, cl = cfg["detector"], cfg["clip"]
    cache_dir = Path(cache_dir)
    detections = detect_frames(detector, frames, cache_dir / CACHE_FILE, min_size=int(det["min_size"]),
                               batch_size=int(det["batch_size"])).frames
    threshold = float(det["score_threshold"])
    objects = object_features(pairs, detections, list(stories), threshold=threshold)
    semantic = clip_features(clip, pairs, frames, cache_dir / "clip", aggregate=cl["aggregate"], top_k=int(cl["top_k"]),
                             batch_size=int(cl["batch_size"])).features
    spatial = spatial_features(pairs, detections, threshold=threshold, stories=stories)
    return _replace_columns(pairs, objects, semantic, spatial)


def robustness(sample: pd.DataFrame, frames: Mapping[tuple[str, int], bytes],
               score: Callable[[pd.DataFrame, Mapping[tuple[str, int], bytes]], pd.DataFrame],
               head: "TrainedHead", *, seed: int,
               image_perturbations: Mapping[str, Callable[["Image.Image"], "Image.Image"]] = IMAGE_PERTURBATIONS,
               text_perturbations: Mapping[str, Callable[[str, np.random.Generator], str]] = TEXT_PERTURBATIONS,
               ) -> pd.DataFrame:
    """How each score, P(aligned) and the decision move when the sample's inputs are perturbed.

    ``score(pairs, frames)`` computes the evidence from scratch (``score_pairs`` with its
    keyword arguments bound); the unperturbed sample goes through it too, so every change
    is due to the perturbation alone. One row per (perturbation, pair): ``perturbation``,
    ``kind`` ("image" | "text"), the pair's ``pair_id``, ``label``, ``negative_type``, for
    each of ``ROBUSTNESS_SCORES`` its ``<score>_clean`` and ``<score>_perturbed`` value,
    ``decision_clean``, ``decision_perturbed`` and ``flipped``.
    """
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


def write_robustness(paths: Paths, long: pd.DataFrame) -> Path:
    """Write ``robustness.parquet`` atomically."""
    return atomic_write_parquet(long, robustness_path(paths))


def read_robustness(paths: Paths) -> pd.DataFrame | None:
    """The per-pair robustness table of chapter 09, or None when it has not run."""
    path = robustness_path(paths)
    return pd.read_parquet(path) if path.exists() else None
