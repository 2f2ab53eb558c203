"""Story-level splits and the (frame, text) pairs the verifiers are scored on.

StoryReasoning has no alignment label, so the study builds them: every frame is paired
with its own segment (label 1) and with one mismatched text (label 0) of one of four
kinds, from easy to hard:

- ``other_story``: a segment of another story of the same split, from a distant id
  block (neighbouring ids come from the same movie, so a near story could still fit);
- ``same_story``: another segment of the same story (same people and places);
- ``object_swap``: the frame's own segment with one object mention replaced by a COCO
  category the frame's annotations do not contain;
- ``relation_swap``: the frame's own segment with one spatial expression reversed.

Everything is deterministic for a seed: each frame draws from its own generator seeded
by ``(seed, story_id, frame)``, so a frame's pairs do not depend on the other stories
except for the ``other_story`` donors available to it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from .data import ParsedStory, Segment, edit_segment
from .lexicon import char_category, to_coco

__all__ = [
    "SIDES",
    "NEGATIVE_TYPES",
    "PAIR_COLUMNS",
    "PairText",
    "id_blocks",
    "split_stories",
    "make_pairs",
    "concat_pairs",
    "text_only_classifier",
    "object_swap",
    "relation_swap",
]

SIDES = ("train", "val", "test")
#: Fewest id blocks on each side of a split (see :func:`split_stories`).
MIN_BLOCKS_PER_SIDE = 2
#: Kinds of negative pairs (``negative_type`` of the pairs table), in the spec's order; the one
#: definition, which :mod:`helpers.detection` and :mod:`helpers.evaluation` re-export.
NEGATIVE_TYPES: tuple[str, ...] = ("other_story", "same_story", "object_swap", "relation_swap")
PAIR_COLUMNS = [
    "pair_id", "story_id", "frame", "split", "label", "negative_type", "text", "tagged_text",
    "source_story_id", "source_frame", "change", "swapped_from", "swapped_to",
]  # fmt: skip

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
_DETERMINERS = {"a", "an", "the", "his", "her", "its", "their", "my", "your", "our", "this", "that",
                "these", "those", "some"}  # fmt: skip

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


# ------------------------------------------------------------------------------- split


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
    """``{story_id: block}``: the id block of each story, as :func:`split_stories` cuts them.

    A block is named by its first and last id ("3920-3923"). It is the unit a split is made
    of, and so the unit the evaluation's bootstrap resamples.
    """
    return {sid: f"{block[0]}-{block[-1]}" for block in _blocks(story_ids, block_size) for sid in block}


def split_stories(
    story_ids: Sequence[str],
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    block_size: int,
    seed: int = 42,
    min_blocks: int = MIN_BLOCKS_PER_SIDE,
) -> dict[str, str]:
    """Assign each story to ``"train"``, ``"val"`` or ``"test"``, whole id blocks at a time.

    Ids are sorted numerically and cut into consecutive blocks of ``block_size`` (stories
    were made one movie at a time, so a block stands in for a stretch of one movie and
    is never split between sides). The blocks are shuffled with ``seed``; the first
    ``min_blocks`` rounds give one block to each side with a non-zero fraction, then each
    further block goes to the side furthest below its target story count. Every side thus
    holds at least ``min_blocks`` blocks: with two, an ``other_story`` donor from another
    block exists on every side, and a bootstrap over blocks has more than one unit to draw.
    Too few blocks for that is an error. Returns ``{story_id: side}``.
    """
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


# ---------------------------------------------------------------------------- negatives


@dataclass(frozen=True)
class PairText:
    """The text of one pair and where it came from."""

    segment: Segment
    source_story_id: str
    source_frame: int
    change: str = ""
    swapped_from: str = ""
    swapped_to: str = ""


def _match_case(template: str, word: str) -> str:
    if len(template) > 1 and template.isupper():
        return word.upper()
    return word[0].upper() + word[1:] if template[:1].isupper() else word


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    return noun + "s"


def _object_phrase(old: str, category: str) -> str:
    """Name ``category`` the way ``old`` was phrased: keep its determiner and number."""
    words = old.split()
    det = words[0] if len(words) > 1 and words[0].lower() in _DETERMINERS else ""
    plural = words[-1].lower().endswith("s") and not words[-1].lower().endswith("ss")
    noun = _plural(category) if plural else category
    if det.lower() in ("a", "an") or (not det and not plural):
        det = _match_case(det or old, "an" if noun[0] in "aeiou" else "a")
    return _match_case(old, f"{det} {noun}".strip())


def object_swap(story: ParsedStory, segment: Segment, rng: random.Random) -> PairText | None:
    """Replace one COCO-mappable, non-person ``<gdo>`` mention of ``segment`` by a COCO
    category absent from the frame's annotations and from the segment's other mentions.

    The replacement is drawn from :data:`INDOOR_OBJECTS` or, when the frame's setting or
    locations read as outdoors, :data:`OUTDOOR_OBJECTS`. None when nothing can be swapped
    (no such mention, or the frame has no chain-of-thought section to check against).
    """
    frame = story.cot.frames.get(segment.frame)
    if frame is None:
        return None
    mapped = [(m, to_coco(m.text)) for m in segment.mentions]
    candidates = [(m, category) for m, category in mapped if category not in (None, "person")]
    if not candidates:
        return None
    present = {"person", *(category for _, category in mapped)}
    present |= {char_category(e.description) for e in frame.characters}
    present |= {to_coco(e.description) for e in frame.objects}
    place = " ".join([*(v for row in frame.setting for v in row.values()), *(m.text for m in segment.locations)])
    pool = OUTDOOR_OBJECTS if _OUTDOOR.search(place) else INDOOR_OBJECTS
    replacements = [c for c in pool if c not in present]
    if not replacements:
        return None
    mention, old_category = rng.choice(candidates)
    new_category = rng.choice(replacements)
    new_text = _object_phrase(mention.text, new_category)
    return PairText(
        segment=edit_segment(segment, mention.start, mention.end, new_text),
        source_story_id=story.story_id,
        source_frame=segment.frame,
        change=f'object "{mention.text}" -> "{new_text}" ({old_category} -> {new_category})',
        swapped_from=mention.text,
        swapped_to=new_text,
    )


def relation_swap(story: ParsedStory, segment: Segment, rng: random.Random) -> PairText | None:
    """Reverse one spatial expression of ``segment`` (left/right, above/below, in front
    of/behind, on/under a surface), keeping its capitalisation; None when there is none."""
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
        )
    return None


def _same_story(story: ParsedStory, segment: Segment, rng: random.Random) -> PairText | None:
    others = [s for s in story.segments if s.frame != segment.frame and s.plain != segment.plain]
    if not others:
        return None
    donor = rng.choice(others)
    return PairText(segment=donor, source_story_id=story.story_id, source_frame=donor.frame)


def _other_story(peers: Sequence[ParsedStory], position: int, block_size: int, rng: random.Random) -> PairText | None:
    """A segment of a story of the same split at least two blocks away, else one block away.

    ``peers`` are the split's stories in id order, so blocks are ``position // block_size``.
    """
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


def _row(story_id: str, frame: int, split: str, label: int, kind: str, text: PairText) -> dict[str, object]:
    return {
        "pair_id": f"{story_id}-{frame}-{'pos' if label else 'neg'}",
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
    }


def make_pairs(
    stories: Iterable[ParsedStory],
    *,
    split_of: Mapping[str, str],
    negative_mix: Mapping[str, float],
    seed: int,
    block_size: int,
) -> pd.DataFrame:
    """One positive and one negative pair per frame segment, with :data:`PAIR_COLUMNS`.

    The negative's type is drawn from ``negative_mix`` renormalised over the types that
    apply to the frame (a one-segment story has no ``same_story``, a text without a
    spatial expression no ``relation_swap``, ...). ``other_story`` donors come from the
    same split; its blocks are cut from the split's ids exactly as :func:`split_stories`
    cuts them. A frame for which no type applies gets no pair at all, so labels stay
    1:1; their number is in ``df.attrs["frames_without_negative"]``.
    ``swapped_from``/``swapped_to`` hold the replaced and the new surface text ("a cup" ->
    "a clock", "behind" -> "in front of"); ``change`` also names the COCO categories.
    """
    unknown = set(negative_mix) - set(NEGATIVE_TYPES)
    if unknown or any(w < 0 for w in negative_mix.values()) or not any(negative_mix.values()):
        raise ValueError(f"negative_mix needs non-negative weights over {NEGATIVE_TYPES}, got {dict(negative_mix)}")
    stories = sorted(stories, key=lambda s: _id_number(s.story_id))
    if len({s.story_id for s in stories}) != len(stories):
        raise ValueError("stories contains duplicate story ids")
    if missing := [s.story_id for s in stories if s.story_id not in split_of]:
        raise ValueError(f"split_of has no side for {len(missing)} stories, e.g. {missing[:5]}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")

    peers: dict[str, list[ParsedStory]] = {}
    for story in stories:
        peers.setdefault(split_of[story.story_id], []).append(story)
    position = {s.story_id: i for group in peers.values() for i, s in enumerate(group)}

    weights = {t: negative_mix[t] for t in NEGATIVE_TYPES if negative_mix.get(t, 0) > 0}
    rows: list[dict[str, object]] = []
    skipped = 0
    for story in stories:
        split = split_of[story.story_id]
        for segment in story.segments:
            rng = random.Random(f"{seed}:{story.story_id}:{segment.frame}")
            left = dict(weights)
            while left:
                kind = rng.choices(list(left), weights=list(left.values()))[0]
                if kind == "other_story":
                    negative = _other_story(peers[split], position[story.story_id], block_size, rng)
                elif kind == "same_story":
                    negative = _same_story(story, segment, rng)
                elif kind == "object_swap":
                    negative = object_swap(story, segment, rng)
                else:
                    negative = relation_swap(story, segment, rng)
                if negative is not None:
                    break
                del left[kind]  # not applicable to this frame: draw again among the rest
            else:
                skipped += 1
                continue
            positive = PairText(segment=segment, source_story_id=story.story_id, source_frame=segment.frame)
            rows.append(_row(story.story_id, segment.frame, split, 1, "", positive))
            rows.append(_row(story.story_id, segment.frame, split, 0, kind, negative))

    pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS).astype(
        {"frame": "int64", "label": "int64", "source_frame": "int64"}
    )
    pairs.attrs["frames_without_negative"] = skipped
    return pairs


def concat_pairs(*tables: pd.DataFrame) -> pd.DataFrame:
    """Stack pair tables (the study's splits and the external test), keeping pair ids unique."""
    pairs = pd.concat(tables, ignore_index=True)
    if (dup := pairs["pair_id"].duplicated()).any():
        raise ValueError(f"pair ids occur in more than one table, e.g. {pairs.loc[dup, 'pair_id'].head(3).tolist()}")
    pairs.attrs["frames_without_negative"] = sum(t.attrs.get("frames_without_negative", 0) for t in tables)
    return pairs


# ------------------------------------------------------------------------- blind model


def text_only_classifier(seed: int = 42) -> "Pipeline":
    """An unfitted blind model: TF-IDF of word 1-2-grams and character 2-5-grams, then a
    logistic regression. It never sees an image, so whatever it learns to tell aligned from
    misaligned texts is a cue the text gives away."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=1, sublinear_tf=True),
    )
    return make_pipeline(features, LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
