"""Spatial evidence: do the boxes in a frame stand the way the text says they do?

A story says "James sits on the couch", "a cup rests on the table", "Jack holds a cell
phone". This module reads such statements as (subject, relation, object) triples
(:func:`extract_relations`), checks each one on a frame's boxes with scale-free geometry
(:func:`relation_holds`), and turns the checks into one piece of evidence per (frame, text)
pair (:func:`spatial_evidence`; :func:`spatial_features` for the whole pairs table). The
original study's rule is reproduced next to it for comparison (:func:`study_spatial_score`).

Decisions, in one place:

* **No pixel constants.** Every threshold is a fraction of the boxes' own sizes or of the
  image diagonal, so scaling a frame and its boxes together never changes an answer.
  Left/right/above/below follow GenEval (Ghosh et al., 2023): the offset between the
  centres must exceed a margin proportional to the two boxes' sizes.
* **The best pair of boxes.** A relation names categories ("a person on a couch"), not
  boxes. Every (subject box, object box) pair of the two categories in the frame is tried,
  never a box with itself, in the detector's score order: the relation holds if some pair
  satisfies it, and the pair reported is the most confident such pair (or, when none
  does, the two most confident boxes).
* **Unverifiable relations are left out, not failed.** When a relation's subject or object
  has no COCO category, or the frame has no box of it, the boxes say nothing about the
  relation's *geometry*. Such a relation is reported (status ``"unverifiable"``, with the
  reason) but not scored: whether the named things are in the frame at all is the object
  evidence's question (chapter 02), and scoring it here too would make two features
  repeat one another.
* **Fallback when no relation can be checked:** how close the frame's people are to the
  objects the text names (:func:`spatial_evidence`).
* **Nothing to check** gives ``spatial_informative = False`` and ``spatial_score =``
  :data:`UNINFORMATIVE_SCORE` (0.0): a zero-filled value next to a missing-value flag,
  never a 0.5 that would read as "half the relations held". A model given both columns
  learns what an uninformative row is worth from the flag's own weight.

Detections are :class:`helpers.detection.Detection` records (``label``: a COCO category
name, ``score``, ``box``: ``(x1, y1, x2, y2)`` in pixels of the frame), from the detector
or from the chain of thought's boxes (``helpers.objects.ground_truth_frames``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import zip_longest
from typing import TYPE_CHECKING, Any, NamedTuple

from .objects import NOT_COCO, char_category, to_coco

if TYPE_CHECKING:
    import matplotlib.axes
    import matplotlib.figure
    import pandas as pd
    from PIL import Image as PILImage

    from .data import ParsedStory, Segment
    from .detection import Detection

__all__ = [
    "Box",
    "SpatialInputError",
    "POSITION_MARGIN",
    "SUPPORT_MIN_X_OVERLAP",
    "CONTACT_TOLERANCE",
    "INSIDE_MIN_FRACTION",
    "NEAR_MAX_GAP",
    "NEAR_MAX_GAP_DIAGONAL",
    "DEPTH_MARGIN",
    "UNINFORMATIVE_SCORE",
    "RELATIONS",
    "RELATION_PHRASES",
    "AGENT_PHRASES",
    "NOT_WITH_PERSON_OBJECT",
    "PERSON_PRONOUNS",
    "POSSESSIVES",
    "MAX_WORDS_SUBJECT_TO_PHRASE",
    "MAX_WORDS_PHRASE_TO_OBJECT",
    "STUDY_PAIRS",
    "STUDY_MAX_DISTANCE_PX",
    "STUDY_NO_PAIR_SCORE",
    "SPATIAL_COLUMNS",
    "Relation",
    "RelationCheck",
    "SpatialEvidence",
    "relation_holds",
    "extract_relations",
    "boxes_by_category",
    "check_relation",
    "spatial_evidence",
    "spatial_features",
    "relations_long",
    "edited_statements",
    "study_spatial_score",
    "plot_relations",
    "plot_relation_samples",
]

Box = tuple[float, float, float, float]
"""``(x1, y1, x2, y2)`` in pixels, y growing downwards (the chain of thought's convention)."""


class SpatialInputError(ValueError):
    """A box, image size, relation name or frames table the spatial rules cannot read."""


# ---------------------------------------------------------------------------- thresholds
# Fractions of the boxes' sizes or of the image diagonal, never pixels.

#: left of / right of / above / below: the subject's centre must be past the object's by
#: this fraction of the *sum* of the two widths (heights for above/below): GenEval's
#: ``POSITION_THRESHOLD``. GenEval also asks the shifted offset to point mostly along the
#: axis; that is dropped, because people and furniture differ in height, so their centres
#: are offset vertically whatever their horizontal relation.
POSITION_MARGIN = 0.1

#: on / under: the boxes overlap horizontally over at least this fraction of the narrower
#: width (a cup on a table stands over the table, not beside it).
SUPPORT_MIN_X_OVERLAP = 0.5

#: Contact slack: for "on", how far the subject's bottom edge may float above the object's
#: top, as a fraction of the boxes' mean height; for "holding", the largest gap between
#: holder and held, as a fraction of the smaller box's longer side.
CONTACT_TOLERANCE = 0.1

#: in / inside: at least this fraction of the subject box's area lies inside the object box.
INSIDE_MIN_FRACTION = 0.6

#: near / next to / beside: the gap between the boxes (0 when they overlap) is at most this
#: fraction of their mean longer side...
NEAR_MAX_GAP = 0.5
#: ...and at most this fraction of the image diagonal, so that two large boxes at opposite
#: ends of the frame are never "near".
NEAR_MAX_GAP_DIAGONAL = 0.2

#: in front of / behind, by the ground-plane cue (of two things on the floor, the nearer
#: one reaches lower in the frame): the boxes overlap horizontally (one hides part of the
#: other) and their bottom edges differ by at least this fraction of their mean height.
DEPTH_MARGIN = 0.05

#: ``spatial_score`` of a pair with nothing to check (``spatial_informative`` False).
UNINFORMATIVE_SCORE = 0.0


# --------------------------------------------------------------------------- rule tables

#: The canonical relations, each with a geometric rule in :func:`relation_holds`.
RELATIONS: tuple[str, ...] = (
    "on", "under", "above", "below", "near", "behind", "in front of", "left of", "right of", "in", "holding",
)  # fmt: skip

#: Canonical relation -> phrases stating it between two named things. Phrases match whole
#: words, case-insensitively, longest first ("in front of" before "in"). Left out on
#: purpose: bare "by" (passive: "shattered by the appearance of Jack"), "over" ("looks over
#: at"), "with" ("a man with a neutral look"), and "into", "onto", "upon" (they describe
#: a motion, not where things are in the frame).
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "on": ("on", "on top of", "atop", "rests on", "resting on", "placed on"),
    "under": ("under", "underneath", "beneath"),
    "above": ("above",),
    "below": ("below",),
    "near": ("next to", "beside", "near", "close to", "alongside"),
    "behind": ("behind",),
    "in front of": ("in front of",),
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "in": ("in", "inside", "within"),
}

#: Canonical relation -> phrases in which a person does something to the object. Their
#: subject is the person acting: the actor of the ``<gda>`` tag the phrase is in (or
#: follows) when there is one, else the nearest person before it in the sentence, so
#: "James sits on the couch, holding a cup" has James, not the couch, holding the cup.
#: One sits *in* a chair the way one sits on it, so "sits in" is "on".
AGENT_PHRASES: dict[str, tuple[str, ...]] = {
    "on": (
        "sit on", "sits on", "sitting on", "sat on", "seated on", "sit in", "sits in", "sitting in",
        "sat in", "seated in", "lie on", "lies on", "lying on", "lay on", "laying on", "stand on",
        "stands on", "standing on", "stood on", "perched on",
    ),
    "near": (
        "sit at", "sits at", "sitting at", "sat at", "seated at", "stand by", "stands by",
        "standing by", "stood by", "sits by", "sitting by", "leans against", "leaning against",
        "leans on", "leaning on",
    ),
    "holding": (
        "hold", "holds", "holding", "held", "carry", "carries", "carrying", "carried", "grab",
        "grabs", "grabbing", "grabbed", "grip", "grips", "gripping", "gripped", "clutch",
        "clutches", "clutching", "clutched", "wield", "wields", "wielding", "picks up",
        "picking up", "picked up",
    ),
}  # fmt: skip

#: Relations that are figures of speech when their object is a person: the walls "close in
#: on him", she "confides in Alex". Such statements are not extracted.
NOT_WITH_PERSON_OBJECT: frozenset[str] = frozenset({"on", "in"})

#: Pronouns naming a person in untagged text (tagged text marks people as ``char``). Not
#: :data:`helpers.objects.PERSON_PRONOUNS` (what the object evidence counts as needing a
#: person): a relation's subject or object is a pronoun standing alone, so "they", "them",
#: "someone" are here and possessives ("his", "her") and reflexives are not.
PERSON_PRONOUNS: frozenset[str] = frozenset({"he", "she", "they", "him", "them", "someone", "somebody"})

#: Words that only qualify the next noun ("<gdo char1>his</gdo> face"): never a subject or object.
POSSESSIVES: frozenset[str] = frozenset({"his", "her", "their", "its", "my", "your", "our"})

#: Extraction windows in words: between the subject and the phrase ("a cup *rests* on",
#: "John, *who is* sitting on"), and between the phrase and the object ("on *the old*
#: couch" when only "couch" is a named thing).
MAX_WORDS_SUBJECT_TO_PHRASE = 4
MAX_WORDS_PHRASE_TO_OBJECT = 3


# ----------------------------------------------------------------- the original study

#: The study's three hard-coded pairs: (subject label, accepted object labels). "toy" is
#: kept as the study wrote it. COCO has no category of that name (the nearest, "teddy
#: bear", is not what the study's code looked for), so this pair is never found in a COCO
#: detector's output; correcting it would make a different rule from the one reproduced.
STUDY_PAIRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("person", ("tv",)),
    ("person", ("chair", "couch")),
    ("person", ("toy",)),
)
#: The study's distance threshold between box centres, in pixels of the frame.
STUDY_MAX_DISTANCE_PX = 400.0
#: The study's score when none of its pairs is in the frame.
STUDY_NO_PAIR_SCORE = 0.5

#: The columns of the ``spatial`` feature part, after ``pair_id``.
SPATIAL_COLUMNS: tuple[str, ...] = (
    "spatial_score", "spatial_informative", "relations_checked", "relations_held", "relations_json",
    "spatial_source", "study_spatial_score",
)  # fmt: skip


# ------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Relation:
    """One stated relation: ``subject`` ``relation`` ``object``.

    ``subject`` and ``object`` are surface texts, with the COCO categories they map to
    (``None`` when they map to none); ``relation`` is a name of :data:`RELATIONS`;
    ``span`` the ``(start, end)`` characters of the statement in the plain text (subject
    start to object end); ``phrase`` the words that stated the relation ("sits on").
    """

    subject: str
    subject_category: str | None
    relation: str
    object: str
    object_category: str | None
    span: tuple[int, int]
    phrase: str = ""


@dataclass(frozen=True)
class RelationCheck:
    """One relation checked on a frame's boxes.

    ``status`` is ``"held"``, ``"failed"`` or ``"unverifiable"`` (then ``reason`` says
    why); ``subject_box`` and ``object_box`` are the pair of boxes the verdict rests on.
    """

    relation: Relation
    status: str
    subject_box: Box | None = None
    object_box: Box | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: the elements of ``relations_json``."""
        out = {**asdict(self.relation), "span": list(self.relation.span), "status": self.status,
               "subject_box": _rounded(self.subject_box), "object_box": _rounded(self.object_box)}
        return {**out, "reason": self.reason} if self.reason else out


@dataclass(frozen=True)
class SpatialEvidence:
    """The spatial evidence of one (frame, text) pair: a row of the ``spatial`` feature part.

    ``spatial_source`` says what the score is: ``"relations"`` (the share of checked
    relations that held), ``"proximity"`` (the fallback) or ``"none"`` (uninformative).
    ``relations_json`` lists every stated relation and, for the fallback, the proximities.
    """

    spatial_score: float
    spatial_informative: bool
    relations_checked: int
    relations_held: int
    relations_json: str
    spatial_source: str


# ------------------------------------------------------------------------------ geometry


class _B(NamedTuple):
    """A validated box and the quantities the rules read."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def w(self) -> float:
        return self.x2 - self.x1

    @property
    def h(self) -> float:
        return self.y2 - self.y1

    @property
    def cx(self) -> float:
        return (self.x1 + self.x2) / 2

    @property
    def cy(self) -> float:
        return (self.y1 + self.y2) / 2

    @property
    def size(self) -> float:
        """The longer side."""
        return max(self.w, self.h)

    @property
    def area(self) -> float:
        return self.w * self.h


def _coords(box: Sequence[float], name: str) -> _B:
    """``box`` as four finite numbers; raises ``SpatialInputError`` otherwise."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise SpatialInputError(f"{name} must be four numbers (x1, y1, x2, y2), got {box!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise SpatialInputError(f"{name} must be four finite numbers (x1, y1, x2, y2), got {box!r}")
    return _B(*values)


def _box(box: Sequence[float], name: str) -> _B:
    """``box`` as a box with an area; raises ``SpatialInputError`` otherwise."""
    b = _coords(box, name)
    if b.w <= 0 or b.h <= 0:
        raise SpatialInputError(f"{name} {box!r} is empty or inverted: need x2 > x1 and y2 > y1")
    return b


def _diagonal(image_size: Sequence[float]) -> float:
    try:
        width, height = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise SpatialInputError(f"image_size must be (width, height), got {image_size!r}") from None
    if not (0 < width < math.inf and 0 < height < math.inf):
        raise SpatialInputError(f"image_size must be two positive numbers (width, height), got {image_size!r}")
    return math.hypot(width, height)


def _x_overlap(a: _B, b: _B) -> float:
    return max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))


def _intersection(a: _B, b: _B) -> float:
    return _x_overlap(a, b) * max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))


def _gap(a: _B, b: _B) -> float:
    """The shortest distance between two boxes: 0 when they touch or overlap."""
    return math.hypot(max(0.0, b.x1 - a.x2, a.x1 - b.x2), max(0.0, b.y1 - a.y2, a.y1 - b.y2))


def _supported(s: _B, o: _B) -> bool:
    """Horizontal overlap enough for one box to stand on, or under, the other."""
    return _x_overlap(s, o) >= SUPPORT_MIN_X_OVERLAP * min(s.w, o.w)


def _rests_on(s: _B, o: _B) -> bool:
    """The subject's bottom edge lies between just above the object's top and its bottom."""
    slack = CONTACT_TOLERANCE * (s.h + o.h) / 2
    return o.y1 - slack <= s.y2 <= o.y2 + slack


# The rules, relation by relation: rule(subject box, object box, image diagonal); y grows
# downwards. Named functions rather than lambdas, so that mutation testing reaches them.


def _left_of(s: _B, o: _B, d: float) -> bool:
    return s.cx < o.cx - POSITION_MARGIN * (s.w + o.w)


def _right_of(s: _B, o: _B, d: float) -> bool:
    return s.cx > o.cx + POSITION_MARGIN * (s.w + o.w)


def _above(s: _B, o: _B, d: float) -> bool:
    return s.cy < o.cy - POSITION_MARGIN * (s.h + o.h)


def _below(s: _B, o: _B, d: float) -> bool:
    return s.cy > o.cy + POSITION_MARGIN * (s.h + o.h)


def _on(s: _B, o: _B, d: float) -> bool:
    return _supported(s, o) and s.cy < o.cy and _rests_on(s, o)


def _under(s: _B, o: _B, d: float) -> bool:
    return _supported(s, o) and s.cy > o.cy and s.y1 >= o.y1


def _in(s: _B, o: _B, d: float) -> bool:
    return _intersection(s, o) >= INSIDE_MIN_FRACTION * s.area


def _near(s: _B, o: _B, d: float) -> bool:
    return _gap(s, o) <= min(NEAR_MAX_GAP * (s.size + o.size) / 2, NEAR_MAX_GAP_DIAGONAL * d)


def _in_front_of(s: _B, o: _B, d: float) -> bool:
    return _x_overlap(s, o) > 0 and s.y2 > o.y2 + DEPTH_MARGIN * (s.h + o.h) / 2


def _behind(s: _B, o: _B, d: float) -> bool:
    return _x_overlap(s, o) > 0 and s.y2 < o.y2 - DEPTH_MARGIN * (s.h + o.h) / 2


def _holding(s: _B, o: _B, d: float) -> bool:
    return _gap(s, o) <= CONTACT_TOLERANCE * min(s.size, o.size)


#: relation -> rule(subject box, object box, image diagonal).
_RULES: dict[str, Callable[[_B, _B, float], bool]] = {
    "left of": _left_of, "right of": _right_of, "above": _above, "below": _below, "on": _on, "under": _under,
    "in": _in, "near": _near, "in front of": _in_front_of, "behind": _behind, "holding": _holding,
}  # fmt: skip
assert set(_RULES) == set(RELATIONS), "every relation needs a rule"


def relation_holds(relation: str, subject_box: Sequence[float], object_box: Sequence[float],
                   image_size: Sequence[float]) -> bool:
    """Whether ``subject_box`` stands in ``relation`` to ``object_box`` in an image of ``image_size``.

    ``relation`` is a name of :data:`RELATIONS`; boxes are ``(x1, y1, x2, y2)``, y growing
    downwards; ``image_size`` is ``(width, height)``. With ``m`` = :data:`POSITION_MARGIN`
    and the other module constants (fractions all, so scaling the image and its boxes
    together never changes an answer):

    ============  =======================================================================
    left of       subject centre x < object centre x - m * (w_s + w_o)          (GenEval)
    right of      subject centre x > object centre x + m * (w_s + w_o)
    above         subject centre y < object centre y - m * (h_s + h_o)
    below         subject centre y > object centre y + m * (h_s + h_o)
    on            horizontal overlap >= SUPPORT_MIN_X_OVERLAP * narrower width, subject
                  centre higher than the object's, subject bottom within [object top -
                  slack, object bottom + slack], slack = CONTACT_TOLERANCE * mean height
    under         the same overlap, subject centre lower than the object's, subject top
                  not above the object's top
    in            >= INSIDE_MIN_FRACTION of the subject's area inside the object box
    near          gap <= NEAR_MAX_GAP * mean longer side, and <= NEAR_MAX_GAP_DIAGONAL *
                  image diagonal
    in front of   horizontal overlap, subject bottom lower by DEPTH_MARGIN * mean height
    behind        horizontal overlap, subject bottom higher by DEPTH_MARGIN * mean height
    holding       gap <= CONTACT_TOLERANCE * the smaller box's longer side
    ============  =======================================================================

    The opposite relations (on/under, left/right, above/below, in front of/behind) never
    both hold. Raises ``SpatialInputError`` for an unknown relation, or a malformed box or
    image size.
    """
    rule = _RULES.get(relation)
    if rule is None:
        raise SpatialInputError(f"unknown relation {relation!r}: expected one of {list(RELATIONS)}")
    return rule(_box(subject_box, "subject_box"), _box(object_box, "object_box"), _diagonal(image_size))


# ---------------------------------------------------------------------------- extraction


class _Entity(NamedTuple):
    """A named thing of the plain text: a ``<gdo>`` mention or a COCO noun."""

    start: int
    end: int
    text: str
    category: str | None
    ids: tuple[str, ...] = ()


def _phrase_table() -> dict[str, tuple[str, bool]]:
    """Phrase -> (canonical relation, whether its subject is the acting person)."""
    table: dict[str, tuple[str, bool]] = {}
    for agent, source in ((False, RELATION_PHRASES), (True, AGENT_PHRASES)):
        for relation, phrases in source.items():
            assert relation in RELATIONS, f"rule table names unknown relation {relation!r}"
            for phrase in phrases:
                assert phrase not in table, f"relation phrase {phrase!r} is listed twice"
                table[phrase] = (relation, agent)
    return table


_PHRASES = _phrase_table()
_PHRASE_RE = re.compile(
    r"(?<![\w'])(?:"
    + "|".join(r"\s+".join(map(re.escape, p.split())) for p in sorted(_PHRASES, key=len, reverse=True))
    + r")(?![\w'])",
    re.IGNORECASE,
)
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['\u2019-][A-Za-z0-9]+)*")
_SENTENCE_BREAK_RE = re.compile(r"[.!?;:]")
_CLAUSE_BREAK_RE = re.compile(r"[.!?;:,]")


def _non_coco_noun(word: str) -> bool:
    word = word.lower()
    return word in NOT_COCO or (word.endswith("s") and word[:-1] in NOT_COCO)


def _noun_entities(plain: str, skip: Sequence[tuple[int, int]] = ()) -> list[_Entity]:
    """The COCO nouns and person pronouns of ``plain``, outside the ``skip`` spans.

    Each word is read with :func:`helpers.objects.to_coco`, and so is each pair of adjacent
    words, because two words can name one thing: the pair wins when it names something
    neither word names alone ("hot dog", "traffic light") or when the second word only
    completes the first ("teddy bear"); a noun right before another noun is a modifier,
    not a thing ("car door", "dog bowl").
    """
    words = [m for m in _WORD_RE.finditer(plain) if not any(s < m.end() and m.start() < e for s, e in skip)]
    found: list[_Entity] = []
    previous: re.Match[str] | None = None
    for word in words:
        text = word.group()
        category = to_coco(text.lower()) or ("person" if text.lower() in PERSON_PRONOUNS else None)
        if previous is not None and plain[previous.end() : word.start()] == " ":
            first = to_coco(previous.group().lower())
            pair = to_coco(f"{previous.group()} {text}".lower())
            first_found = bool(found) and found[-1].start == previous.start()
            if pair is not None and pair != category and (pair != first or category is not None):
                if first_found:
                    found.pop()
                found.append(_Entity(previous.start(), word.end(), f"{previous.group()} {text}", pair))
                previous = None
                continue
            if first_found and pair != first and (category is not None or _non_coco_noun(text)):
                found.pop()
        if category is not None:
            found.append(_Entity(word.start(), word.end(), text, category))
        previous = word
    return found


_Descriptions = tuple[tuple[str, str], ...]
"""Character id -> chain-of-thought description, frozen (sorted items) so that it can key a cache."""


def _frozen(char_descriptions: Mapping[str, str] | None) -> _Descriptions:
    return tuple(sorted((char_descriptions or {}).items()))


def _mention_category(mention: Any, descriptions: Mapping[str, str]) -> str | None:
    """A ``<gdo>`` mention's COCO category: what its words name ("the cat"); else, for a
    character, what its description says it is (one category for all its ids, else
    ``None``); else, for a character without a description, a person unless its words say
    otherwise (:func:`helpers.objects.char_category`)."""
    if (named := to_coco(mention.text)) is not None or mention.kind != "char":
        return named
    described = {char_category(descriptions[i]) for i in mention.ids if i in descriptions}
    if described:
        return described.pop() if len(described) == 1 else None
    return char_category(mention.text)


@lru_cache(maxsize=4096)
def _entities(text: "Segment | str",
              descriptions: _Descriptions = ()) -> tuple[str, tuple[_Entity, ...], tuple[Any, ...]]:
    """:func:`_read_entities`, cached (texts repeat across the pairs of a frame)."""
    return _read_entities(text, descriptions)


def _read_entities(text: "Segment | str",
                   descriptions: _Descriptions) -> tuple[str, tuple[_Entity, ...], tuple[Any, ...]]:
    """The plain text, its named things in text order, and its ``<gda>`` actions."""
    if isinstance(text, str):
        plain = " ".join(text.split())
        return plain, tuple(_noun_entities(plain)), ()
    plain, described = text.plain, dict(descriptions)
    tagged = [
        _Entity(m.start, m.end, m.text, _mention_category(m, described), tuple(m.ids))
        for m in text.mentions
        if m.text.lower() not in POSSESSIVES and plain[m.end : m.end + 2] not in ("'s", "\u2019s")
    ]
    nouns = _noun_entities(plain, [(m.start, m.end) for m in text.mentions])
    return plain, tuple(sorted(tagged + nouns)), text.actions


def _word_count(text: str) -> int:
    return len(_WORD_RE.findall(text))


def _actors(plain: str, actions: Sequence[Any], start: int) -> tuple[str, ...]:
    """The ids of the ``<gda>`` action containing ``start`` or ending right before it."""
    for a in actions:
        if a.start <= start < a.end or (a.end <= start and not plain[a.end : start].strip()):
            return tuple(a.ids)
    return ()


def _pick_subject(plain: str, entities: Sequence[_Entity], start: int,
                  actors: tuple[str, ...] | None) -> _Entity | None:
    """The subject of the phrase starting at ``start``; ``actors`` is None unless it is an
    agent phrase (see :data:`AGENT_PHRASES`)."""
    before = [e for e in entities if e.end <= start and not _SENTENCE_BREAK_RE.search(plain, e.end, start)]
    if actors is not None:
        acting = [e for e in before if set(e.ids) & set(actors)] or [e for e in before if e.category == "person"]
        if acting:
            return acting[-1]
    if before and _word_count(plain[before[-1].end : start]) <= MAX_WORDS_SUBJECT_TO_PHRASE:
        return before[-1]
    return None


def _pick_object(plain: str, entities: Sequence[_Entity], end: int, limit: int) -> _Entity | None:
    """The first named thing after the phrase ending at ``end``: near, in the same clause,
    and before ``limit``, where the next phrase starts ("close in on him")."""
    after = next((e for e in entities if e.start >= end), None)
    if after is None or after.start >= limit:
        return None
    between = plain[end : after.start]
    if _CLAUSE_BREAK_RE.search(between) or _word_count(between) > MAX_WORDS_PHRASE_TO_OBJECT:
        return None
    return after


def extract_relations(text: "Segment | str", char_descriptions: Mapping[str, str] | None = None) -> list[Relation]:
    """The spatial relations a frame's text states, in text order, each statement once.

    ``text`` is a :class:`helpers.data.Segment` or a plain string. The named things of a
    segment are its ``<gdo>`` mentions and the COCO nouns outside them ("<gda char1>holds
    an umbrella</gda>"). A mention's category is what its words name ("the cat"), else for
    a character what ``char_descriptions`` (character id -> chain-of-thought description,
    as :func:`helpers.objects.character_descriptions` gives them) say it is, else a
    person unless :func:`helpers.objects.char_category` reads its words otherwise; it may
    be ``None``. The named things of a string are its COCO nouns and
    :data:`PERSON_PRONOUNS`. A relation is a phrase of :data:`RELATION_PHRASES` or
    :data:`AGENT_PHRASES` with

    * a subject: the nearest named thing before the phrase in the same sentence, at most
      :data:`MAX_WORDS_SUBJECT_TO_PHRASE` words before it; for an agent phrase, the
      acting person (see there);
    * an object: the first named thing after the phrase, in the same clause, at most
      :data:`MAX_WORDS_PHRASE_TO_OBJECT` words after it, and before the next phrase.

    Possessives (:data:`POSSESSIVES`, "James's") are neither; a thing is never related to
    itself (shared ``<gdo>`` ids), nor in or on a person (:data:`NOT_WITH_PERSON_OBJECT`).
    Raises ``SpatialInputError`` for other input types.

    >>> [(r.subject, r.relation, r.object) for r in extract_relations("A cup rests on the table.")]
    [('cup', 'on', 'table')]
    """
    if not isinstance(text, str) and not all(hasattr(text, a) for a in ("plain", "mentions", "actions")):
        raise SpatialInputError(f"extract_relations needs a helpers.data.Segment or a str, got {type(text).__name__}")
    return list(_extract(text, _frozen(char_descriptions)))


@lru_cache(maxsize=4096)
def _extract(text: "Segment | str", descriptions: _Descriptions) -> tuple[Relation, ...]:
    """:func:`_read_relations`, cached (texts repeat across the pairs of a frame)."""
    return _read_relations(text, descriptions)


def _read_relations(text: "Segment | str", descriptions: _Descriptions) -> tuple[Relation, ...]:
    """What :func:`extract_relations` returns, as a tuple."""
    plain, entities, actions = _entities(text, descriptions)
    # A phrase inside a name is part of the name: "<gdo>the man on the left</gdo>".
    matches = [m for m in _PHRASE_RE.finditer(plain)
               if not any(e.start < m.end() and m.start() < e.end for e in entities)]
    relations: list[Relation] = []
    seen: set[tuple[str, str, str]] = set()
    for match, following in zip(matches, [*matches[1:], None]):
        start, end = match.span()
        relation, agent = _PHRASES[" ".join(match.group().lower().split())]
        subject = _pick_subject(plain, entities, start, _actors(plain, actions, start) if agent else None)
        obj = _pick_object(plain, entities, end, following.start() if following else len(plain))
        if subject is None or obj is None or subject == obj or set(subject.ids) & set(obj.ids):
            continue
        if relation in NOT_WITH_PERSON_OBJECT and obj.category == "person":
            continue
        key = (subject.text.lower(), relation, obj.text.lower())
        if key not in seen:
            seen.add(key)
            relations.append(Relation(subject.text, subject.category, relation, obj.text, obj.category,
                                      (subject.start, obj.end), match.group()))
    return tuple(relations)


# --------------------------------------------------------------------- evidence for a pair


def boxes_by_category(detections: Iterable["Detection"]) -> dict[str, list[Box]]:
    """A frame's boxes grouped by COCO label, each group in descending score order.

    ``detections`` are :class:`helpers.detection.Detection` records (anything with
    ``label``, ``score`` and ``box``). A box without area (the chain of thought has a few)
    cannot stand anywhere and is dropped; a malformed one raises ``SpatialInputError``.
    """
    grouped: dict[str, list[Box]] = {}
    for d in sorted(detections, key=lambda d: -float(d.score)):
        box = _coords(d.box, f"{d.label} box")
        if box.w > 0 and box.h > 0:
            grouped.setdefault(str(d.label), []).append(tuple(box))
    return grouped


def check_relation(relation: Relation, boxes: Mapping[str, Sequence[Box]],
                   image_size: Sequence[float]) -> RelationCheck:
    """Check ``relation`` on the best pair of boxes of its two categories.

    ``boxes`` is :func:`boxes_by_category`'s output. Pairs are tried subject box by subject
    box, each against every object box, in score order, never a box with itself: the first
    pair satisfying :func:`relation_holds` gives ``"held"``; when none does, the two most
    confident boxes are reported with ``"failed"``. A relation with a category that is
    unknown or has no box (or, relating two things of one category, only one box) is
    ``"unverifiable"``.
    """
    cs, co = relation.subject_category, relation.object_category
    if cs is None or co is None:
        unknown = relation.subject if cs is None else relation.object
        return RelationCheck(relation, "unverifiable", reason=f'"{unknown}" has no COCO category')
    if missing := [c for c in dict.fromkeys((cs, co)) if not boxes.get(c)]:
        return RelationCheck(relation, "unverifiable", reason=f"no {' and no '.join(missing)} box")
    pairs = [(s, o) for i, s in enumerate(boxes[cs]) for j, o in enumerate(boxes[co]) if cs != co or i != j]
    if not pairs:
        return RelationCheck(relation, "unverifiable", reason=f"a single {cs} box")
    held = next(((s, o) for s, o in pairs if relation_holds(relation.relation, s, o, image_size)), None)
    return RelationCheck(relation, "held", *held) if held else RelationCheck(relation, "failed", *pairs[0])


def _proximities(text: "Segment | str", descriptions: _Descriptions, boxes: Mapping[str, Sequence[Box]],
                 image_size: Sequence[float]) -> list[dict[str, Any]]:
    """For each non-person COCO thing the text names and the frame has boxes of, the best
    ``1 - gap / diagonal`` between one of its boxes and a person's; empty unless the text
    names a person and the frame has a person box."""
    categories = {e.category for e in _entities(text, descriptions)[1] if e.category is not None}
    if "person" not in categories or not boxes.get("person"):
        return []
    diagonal = _diagonal(image_size)
    rows = []
    for category in sorted(c for c in categories - {"person"} if boxes.get(c)):
        closeness, p, o = max(((1.0 - min(1.0, _gap(_B(*p), _B(*o)) / diagonal), p, o)
                               for p in boxes["person"] for o in boxes[category]), key=lambda t: t[0])
        rows.append({"relation": "proximity", "subject_category": "person", "object_category": category,
                     "status": "proximity", "proximity": closeness,
                     "subject_box": _rounded(p), "object_box": _rounded(o)})
    return rows


def spatial_evidence(text: "Segment | str", detections: Iterable["Detection"], image_size: Sequence[float],
                     char_descriptions: Mapping[str, str] | None = None) -> SpatialEvidence:
    """The spatial evidence that a frame, seen through its ``detections``, shows ``text``.

    ``text`` is a :class:`helpers.data.Segment` or a plain string (``char_descriptions``
    as in :func:`extract_relations`); ``image_size`` the frame's ``(width, height)``. The
    first that applies:

    1. ``"relations"``: the text states relations the boxes can check
       (:func:`check_relation`); the score is the share that held.
    2. ``"proximity"``: no relation can be checked, but the text names a person and a COCO
       thing, and the frame has boxes of both: how close the people are to the things the
       text has them with, the mean over those things of the best ``1 - gap / diagonal``.
    3. ``"none"``: ``spatial_informative`` is False and the score :data:`UNINFORMATIVE_SCORE`.
    """
    return _evidence(text, _frozen(char_descriptions), boxes_by_category(detections), image_size)


def _evidence(text: "Segment | str", descriptions: _Descriptions, boxes: Mapping[str, Sequence[Box]],
              image_size: Sequence[float]) -> SpatialEvidence:
    checks = [check_relation(r, boxes, image_size) for r in _extract(text, descriptions)]
    checked = [c for c in checks if c.status != "unverifiable"]
    held = sum(c.status == "held" for c in checked)
    explained = [c.to_dict() for c in checks]
    if checked:
        score, source = held / len(checked), "relations"
    elif proximities := _proximities(text, descriptions, boxes, image_size):
        score, source = sum(p["proximity"] for p in proximities) / len(proximities), "proximity"
        explained += proximities
    else:
        score, source = UNINFORMATIVE_SCORE, "none"
    return SpatialEvidence(spatial_score=float(score), spatial_informative=source != "none",
                           relations_checked=len(checked), relations_held=held,
                           relations_json=json.dumps(explained), spatial_source=source)


def _rounded(box: Sequence[float] | None) -> list[float] | None:
    return None if box is None else [round(float(v), 1) for v in box]


# ---------------------------------------------------------------------- the pairs table


def spatial_features(pairs: "pd.DataFrame", frames: "pd.DataFrame", *, threshold: float,
                     stories: Iterable["ParsedStory"] = (), read_tags: bool = False) -> "pd.DataFrame":
    """The ``spatial`` feature part, one row per pair, for ``helpers.features.write_part``.

    ``frames`` is a per-frame detection table of :mod:`helpers.detection` with ``width``
    and ``height`` (``detect_frames(...).frames``, or ``ground_truth_frames(...)`` with the
    sizes merged in) covering every pair's frame. A frame's detections scoring at least
    ``threshold`` are read once and shared by all its pairs; a frame that did not decode
    (status not ``"ok"``) has no boxes. A pair's text is its plain ``text``, as
    :mod:`helpers.verify` reads a user's text. With ``read_tags`` (chapter 09's ablation) it
    is its ``tagged_text`` parsed as a segment, its characters described by the chain of
    thought of the story the text came from (``source_story_id``, ``source_frame``) when
    that story is among ``stories``: a character who is a cat is not a person. Columns:
    ``pair_id`` and :data:`SPATIAL_COLUMNS`, the last one :func:`study_spatial_score` of
    the same boxes. Raises ``SpatialInputError`` when ``frames`` lacks a column or a
    pair's frame.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .data import parse_segment
    from .detection import parse_detections
    from .objects import character_descriptions

    needed = ["story_id", "frame", "status", "detections", "width", "height"]
    if absent := [c for c in needed if c not in frames.columns]:
        raise SpatialInputError(f"the frames table lacks {absent}: pass detect_frames(...).frames, or merge its "
                                "width and height columns into ground_truth_frames(...)")
    per_frame: dict[tuple[str, int], tuple[dict[str, list[Box]], tuple[float, float], float]] = {}
    for story_id, frame, status, cell, width, height in frames[needed].itertuples(index=False):
        detections = parse_detections(cell, threshold) if status == "ok" else []
        per_frame[(str(story_id), int(frame))] = (boxes_by_category(detections), (width, height),
                                                  study_spatial_score(detections))
    keys = list(zip(pairs["story_id"].astype(str), pairs["frame"].astype(int)))
    if missing := sorted(set(keys) - set(per_frame)):
        raise SpatialInputError(f"the frames table lacks {len(missing)} frame(s) of the pairs, e.g. {missing[:3]}")

    cots = {s.story_id: s.cot for s in stories}
    segments: dict[tuple[str, int], Segment] = {}
    descriptions: dict[tuple[str, int], _Descriptions] = {}
    rows = []
    columns = ["pair_id", "text", "tagged_text", "source_story_id", "source_frame"]
    for key, (pair_id, plain, tagged, source_story, source_frame) in tqdm(
        zip(keys, pairs[columns].itertuples(index=False)), total=len(pairs), desc="spatial evidence", unit="pair"
    ):
        source = (str(source_story), int(source_frame))
        if read_tags and isinstance(tagged, str) and tagged:
            if (tagged, source) not in segments:
                segments[(tagged, source)] = parse_segment(tagged, source[1])
            text = segments[(tagged, source)]
        else:
            text = str(plain)
        if source not in descriptions:
            cot = cots.get(source[0])
            descriptions[source] = _frozen(character_descriptions(cot, source[1]) if cot is not None else None)
        boxes, size, study = per_frame[key]
        evidence = _evidence(text, descriptions[source], boxes, size)
        rows.append({"pair_id": pair_id, **asdict(evidence), "study_spatial_score": study})
    return pd.DataFrame(rows, columns=["pair_id", *SPATIAL_COLUMNS])


def relations_long(table: "pd.DataFrame",
                   keep: Sequence[str] = ("story_id", "frame", "label", "negative_type")) -> "pd.DataFrame":
    """One row per stated relation of each pair, from a table with ``pair_id`` and ``relations_json``.

    Columns: ``pair_id``, the ``keep`` columns present in ``table``, then ``subject``,
    ``subject_category``, ``relation``, ``object``, ``object_category``, ``phrase``,
    ``status`` and ``reason`` (the proximity rows of the fallback are left out).
    """
    import pandas as pd

    fields = ["subject", "subject_category", "relation", "object", "object_category", "phrase", "status", "reason"]
    kept = ["pair_id", *(c for c in keep if c in table.columns)]
    rows = [
        {**dict(zip(kept, values)), **{f: r.get(f, "") for f in fields}}
        for *values, cell in table[[*kept, "relations_json"]].itertuples(index=False)
        for r in json.loads(cell)
        if r["status"] != "proximity"
    ]
    return pd.DataFrame(rows, columns=[*kept, *fields])


def edited_statements(relations: "pd.DataFrame") -> "pd.DataFrame":
    """The statements a ``relation_swap`` negative makes that its frame's positive does not:
    the swapped relation itself, once extracted.

    ``relations`` is :func:`relations_long` of a table with ``story_id``, ``frame``,
    ``label`` and ``negative_type``; the rows returned are those of the swap negatives
    whose (subject, relation, object) the positive of the same frame does not state.
    """
    statement = ["story_id", "frame", "subject", "relation", "object"]
    positives = relations.loc[relations["label"] == 1, statement].drop_duplicates()
    swaps = relations[relations["negative_type"] == "relation_swap"]
    merged = swaps.merge(positives, on=statement, how="left", indicator=True)
    return merged[merged["_merge"] == "left_only"].drop(columns="_merge").reset_index(drop=True)


# ------------------------------------------------------------------ the study's rule


def study_spatial_score(detections: Iterable["Detection"]) -> float:
    """The original study's spatial score of a frame, reproduced. It never reads the text.

    For each pair of :data:`STUDY_PAIRS`, take the first (most confident) box of the
    subject label and the first box of any of the object labels. If some pair's centres
    are closer than :data:`STUDY_MAX_DISTANCE_PX` pixels the score is 1.0; if pairs were
    found but all are farther, 0.0; with no pair at all, :data:`STUDY_NO_PAIR_SCORE`.
    """
    ordered = sorted(detections, key=lambda d: -float(d.score))
    found = False
    for subject, objects in STUDY_PAIRS:
        s = next((_coords(d.box, "box") for d in ordered if d.label == subject), None)
        o = next((_coords(d.box, "box") for d in ordered if d.label in objects), None)
        if s is not None and o is not None:
            found = True
            if math.hypot(s.cx - o.cx, s.cy - o.cy) < STUDY_MAX_DISTANCE_PX:
                return 1.0
    return 0.0 if found else STUDY_NO_PAIR_SCORE


# ------------------------------------------------------------------------------- figures

_STATUS_COLOURS = {"held": "#2ca02c", "failed": "#d62728", "proximity": "#1f77b4"}


def plot_relations(ax: "matplotlib.axes.Axes", image: "PILImage.Image", relations_json: str, *,
                   title: str = "") -> None:
    """Draw a frame with the boxes its relations were checked on (one pair's ``relations_json``).

    Each checked relation's subject box is drawn solid and its object box dashed, green
    when it held, red when it failed, blue for a proximity row; the statement is written
    on the subject box. Unverifiable relations have no boxes and are not drawn.
    """
    from .plots import draw_boxes

    ax.imshow(image)
    labels_on: dict[tuple[float, ...], int] = {}  # labels already written on each subject box
    for row in json.loads(relations_json):
        colour = _STATUS_COLOURS.get(row["status"])
        if colour is None:
            continue
        if row["status"] == "proximity":
            label = f"person ~ {row['object_category']}: {row['proximity']:.2f}"
        else:
            label = f"{row['subject']} {row['relation']} {row['object']}: {row['status']}"
        k = labels_on.get(tuple(row["subject_box"]), 0)
        labels_on[tuple(row["subject_box"])] = k + 1
        draw_boxes(ax, [row["subject_box"]], [label], colour=colour, width=2, label_shift=-10 * k)
        draw_boxes(ax, [row["object_box"]], colour=colour, style="--", width=2)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def plot_relation_samples(frames: Mapping[tuple[str, int], bytes], table: "pd.DataFrame", *, n: int = 4,
                          title: str = "") -> "matplotlib.figure.Figure":
    """Up to ``n`` pairs whose relations were checked, drawn with :func:`plot_relations`.

    ``table`` has ``pair_id``, ``story_id``, ``frame``, ``label``, ``negative_type`` and
    ``relations_json``; ``frames`` maps ``(story_id, frame)`` to the frame's bytes. Pairs
    with a failed relation and pairs whose relations all held alternate, each in
    ``pair_id`` order, so the choice is reproducible and shows both outcomes.
    """
    import matplotlib.pyplot as plt

    from .data import frame_image

    statuses = table["relations_json"].map(lambda cell: {r["status"] for r in json.loads(cell)})
    failed = table[statuses.map(lambda s: "failed" in s)].sort_values("pair_id")
    held = table[statuses.map(lambda s: s == {"held"} or s == {"held", "unverifiable"})].sort_values("pair_id")
    alternating = zip_longest(failed.head(n).itertuples(), held.head(n).itertuples())
    chosen = [row for pair in alternating for row in pair if row is not None][:n]
    rows = max(1, math.ceil(len(chosen) / 2))
    fig, axes = plt.subplots(rows, 2, figsize=(12, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, chosen):
        kind = "positive" if row.label == 1 else f"negative ({row.negative_type})"
        plot_relations(ax, frame_image([frames[(str(row.story_id), int(row.frame))]], 1), row.relations_json,
                       title=f"story {row.story_id}, frame {row.frame}: {kind}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
