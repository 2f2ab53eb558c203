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
# # 04 · Spatial relations: do the boxes stand as the text says?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/04_spatial.ipynb)
#
# The third piece of evidence reads what the text says about *where* things are ("James
# sits on the couch", "a cup rests on the table", "Jack holds a cell phone") and checks it
# on the frame's boxes with geometry that has no pixel constants. This chapter writes the
# rules and the reading of relations, measures how often the stories state such relations,
# checks the rules on the chain of thought's own boxes, compares them with the original
# study's rule on the detector's boxes, and saves the spatial evidence of every pair.
#
# The functions of the method are written here, in cells marked `#@save`; `make lib` copies
# them into `helpers/spatial.py`, where chapter 01 (which reads relations to swap them),
# the ablations and the verifier import them. Which COCO things a text names is read by
# chapter 02's `named_things`, the same reader the object evidence uses.
#
# **Splits shown:** the evidence is computed for every pair, but every table, figure and
# comparison below reads the train and validation splits only (the rules' constants are
# fixed below, not tuned here); the test split is looked at once, from chapter 07 on.

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

ctx = start(profile, chapter="04_spatial")

# %% [markdown]
# The imports of the method (the first cell of `helpers/spatial.py`):

# %%
#@save
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from itertools import zip_longest
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from helpers.detection import parse_detections
from helpers.objects import CHECKED, NOT_COMPUTED, NOTHING_TO_CHECK, Thing, mention_categories, named_things

if TYPE_CHECKING:
    import matplotlib.axes
    import matplotlib.figure
    from PIL import Image as PILImage

    from helpers.tags import ParsedStory, Segment
    from helpers.detection import Detection

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

# %% [markdown]
# ## The rules
#
# A box is `(x1, y1, x2, y2)` in pixels, y growing downwards (the chain of thought's
# convention). Each canonical relation has one geometric rule, and every threshold in it is a
# fraction of the boxes' own sizes or of the image diagonal, never a number of pixels: scaling
# a frame and its boxes together never changes an answer.
#
# - **left of / right of / above / below** follow GenEval (Ghosh et al., 2023): the subject's
#   centre must be past the object's by `POSITION_MARGIN` of the *sum* of the two widths
#   (heights for above/below). GenEval also asks the offset to point mostly along the axis;
#   that is dropped, because people and furniture differ in height, so their centres are
#   offset vertically whatever their horizontal relation.
# - **on** and **under** need support: the boxes overlap horizontally over at least
#   `SUPPORT_MIN_X_OVERLAP` of the narrower width (a cup on a table stands over the table,
#   not beside it). On: the subject's centre is higher and its bottom edge lies between just
#   above the object's top (a slack of `CONTACT_TOLERANCE` of the mean height) and the
#   object's bottom. Under: the subject's centre is lower and its top is not above the
#   object's top.
# - **in**: at least `INSIDE_MIN_FRACTION` of the subject's area lies inside the object box.
# - **near** (next to, beside): the gap between the boxes (0 when they overlap) is at most
#   `NEAR_MAX_GAP` of their mean longer side, and at most `NEAR_MAX_GAP_DIAGONAL` of the
#   image diagonal, so that two large boxes at opposite ends of the frame are never near.
# - **in front of / behind**, by the ground-plane cue (of two things on the floor, the nearer
#   one reaches lower in the frame): the boxes overlap horizontally (one hides part of the
#   other) and their bottom edges differ by at least `DEPTH_MARGIN` of their mean height.
# - **holding**: the gap between holder and held is at most `CONTACT_TOLERANCE` of the
#   smaller box's longer side.
#
# The opposite relations (on/under, left/right, above/below, in front of/behind) never both
# hold. A malformed box, image size or relation name raises `SpatialInputError`.

# %%
#@save
Box = tuple[float, float, float, float]
"""``(x1, y1, x2, y2)`` in pixels, y growing downwards (the chain of thought's convention)."""


class SpatialInputError(ValueError):
    """A box, image size, relation name or frames table the spatial rules cannot read."""


# Fractions of the boxes' sizes or of the image diagonal, never pixels (see the text above).
POSITION_MARGIN = 0.1
SUPPORT_MIN_X_OVERLAP = 0.5
CONTACT_TOLERANCE = 0.1
INSIDE_MIN_FRACTION = 0.6
NEAR_MAX_GAP = 0.5
NEAR_MAX_GAP_DIAGONAL = 0.2
DEPTH_MARGIN = 0.05

#: The canonical relations, each with a geometric rule in :func:`relation_holds`.
RELATIONS: tuple[str, ...] = (
    "on", "under", "above", "below", "near", "behind", "in front of", "left of", "right of", "in", "holding",
)  # fmt: skip


# %% [markdown]
# The quantities the rules read, from a validated box: width, height, centre, longer side,
# area; the overlaps and the gap between two boxes.

# %%
#@save
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


# %% [markdown]
# One function per relation, `rule(subject box, object box, image diagonal)` (named
# functions rather than lambdas, so that mutation testing reaches them), and `relation_holds`,
# which validates its input and applies the rule:

# %%
#@save
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
    """Whether ``subject_box`` stands in ``relation`` to ``object_box`` in an image of ``image_size``."""
    rule = _RULES.get(relation)
    if rule is None:
        raise SpatialInputError(f"unknown relation {relation!r}: expected one of {list(RELATIONS)}")
    return rule(_box(subject_box, "subject_box"), _box(object_box, "object_box"), _diagonal(image_size))


# %% [markdown]
# A cup on a table, a person sitting on a couch, a cup floating above the table, a cup beside
# it, in an image of 600 × 240 pixels; then the same frame four times larger:

# %%
cases = [("on", (200, 80, 240, 120), (100, 110, 400, 230)), ("on", (290, 30, 390, 230), (250, 120, 560, 230)),
         ("on", (200, 10, 240, 40), (100, 110, 400, 230)), ("on", (450, 80, 490, 120), (100, 110, 400, 230)),
         ("near", (450, 80, 490, 120), (100, 110, 400, 230)), ("left of", (10, 100, 60, 200), (300, 100, 350, 200))]
display(pd.DataFrame([{"relation": r, "subject": s, "object": o, "holds": relation_holds(r, s, o, (600, 240)),
                       "holds at 4x": relation_holds(r, [4 * v for v in s], [4 * v for v in o], (2400, 960))}
                      for r, s, o in cases]))
thresholds = ["POSITION_MARGIN", "SUPPORT_MIN_X_OVERLAP", "CONTACT_TOLERANCE", "INSIDE_MIN_FRACTION",
              "NEAR_MAX_GAP", "NEAR_MAX_GAP_DIAGONAL", "DEPTH_MARGIN"]
display(pd.DataFrame({"value": [globals()[t] for t in thresholds]}, index=thresholds).T)

# %% [markdown]
# ## Reading the relations a text states
#
# A relation is a phrase between two named things of one sentence. The phrases of each
# relation match whole words, case-insensitively, longest first ("in front of" before "in").
# Left out on purpose: bare "by" (passive: "shattered by the appearance of Jack"), "over"
# ("looks over at"), "with" ("a man with a neutral look"), and "into", "onto", "upon" (they
# describe a motion, not where things are in the frame). In a second table are the phrases in
# which a person does something to the object ("sits on", "holds"): their subject is the
# person acting, so "James sits on the couch, holding a cup" has James, not the couch,
# holding the cup. One sits *in* a chair the way one sits on it, so "sits in" is "on".

# %%
#@save
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

# %%
phrases = pd.DataFrame(
    [{"relation": r, "phrases": ", ".join(RELATION_PHRASES.get(r, ())) or "n/a",
      "phrases with an acting person": ", ".join(AGENT_PHRASES.get(r, ())) or "n/a"} for r in RELATIONS]
).set_index("relation")
display(phrases.style)  # a Styler shows the whole lists, where a DataFrame would cut them short

# %% [markdown]
# The named things are those chapter 02's `named_things` reads (COCO nouns and pronouns that
# stand for a person, so untagged text works too) and, in a tagged segment, its `<gdo>`
# mentions. A mention's category is the one category chapter 02's `mention_categories` gives
# it (its words first, else what descriptions of its characters say, when a caller gives
# them), or `None` when it names several (a man and a cat together are no one category). The
# features give no description: the chain of thought describes the very frame an aligned pair
# is judged on, so "James" is a person, as the verifier reads him. A possessive
# ("his", "their") or a possessor ("James's") only qualifies the next noun: it is never a
# subject or an object.
#
# Then, for each phrase:
#
# - the **subject** is the nearest named thing before the phrase in the same sentence, at most
#   `MAX_WORDS_SUBJECT_TO_PHRASE` words before it ("a cup *rests* on", "John, *who is* sitting
#   on"); for a phrase with an acting person, the actor of the `<gda>` tag the phrase is in
#   (or follows) when there is one, else the nearest person before it in the sentence;
# - the **object** is the first named thing after the phrase, in the same clause, at most
#   `MAX_WORDS_PHRASE_TO_OBJECT` words after it ("on *the old* couch"), and before the next
#   phrase ("close in on him");
# - a phrase inside a name is part of the name ("the man on the left"); a thing is never
#   related to itself (shared `<gdo>` ids), nor in or on a person (`NOT_WITH_PERSON_OBJECT`:
#   the walls "close in on him", she "confides in Alex"); each statement counts once.
#
# Texts repeat across the pairs of a frame, so the reading is cached.

# %%
#@save
NOT_WITH_PERSON_OBJECT: frozenset[str] = frozenset({"on", "in"})
POSSESSIVES: frozenset[str] = frozenset({"his", "her", "their", "its", "my", "your", "our"})
MAX_WORDS_SUBJECT_TO_PHRASE = 4
MAX_WORDS_PHRASE_TO_OBJECT = 3


@dataclass(frozen=True)
class Relation:
    """One stated relation: ``subject`` ``relation`` ``object``, with their COCO categories
    (None when none), the ``span`` of the statement in the plain text and the ``phrase`` that stated it."""

    subject: str
    subject_category: str | None
    relation: str
    object: str
    object_category: str | None
    span: tuple[int, int]
    phrase: str = ""


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

_Descriptions = tuple[tuple[str, str], ...]
"""Character id -> chain-of-thought description, frozen (sorted items) so that it can key a cache."""


def _frozen(char_descriptions: Mapping[str, str] | None) -> _Descriptions:
    return tuple(sorted((char_descriptions or {}).items()))


def _mention_category(mention: Any, descriptions: Mapping[str, str]) -> str | None:
    """A ``<gdo>`` mention's one COCO category (``helpers.objects.mention_categories``), None for several."""
    categories = mention_categories(mention, descriptions)
    return categories[0] if len(categories) == 1 else None


@lru_cache(maxsize=4096)
def _entities(text: "Segment | str",
              descriptions: _Descriptions = ()) -> tuple[str, tuple[Thing, ...], tuple[Any, ...]]:
    """:func:`_read_entities`, cached (texts repeat across the pairs of a frame)."""
    return _read_entities(text, descriptions)


def _read_entities(text: "Segment | str",
                   descriptions: _Descriptions) -> tuple[str, tuple[Thing, ...], tuple[Any, ...]]:
    """The plain text, its named things in text order (possessives left out), and its ``<gda>`` actions."""
    if isinstance(text, str):
        plain = " ".join(text.split())
        return plain, tuple(t for t in named_things(plain) if t.text.lower() not in POSSESSIVES), ()
    plain, described = text.plain, dict(descriptions)
    tagged = [
        Thing(m.start, m.end, m.text, _mention_category(m, described), tuple(m.ids))
        for m in text.mentions
        if m.text.lower() not in POSSESSIVES and plain[m.end : m.end + 2] not in ("'s", "\u2019s")
    ]
    nouns = [t for t in named_things(plain, [(m.start, m.end) for m in text.mentions])
             if t.text.lower() not in POSSESSIVES]
    return plain, tuple(sorted(tagged + nouns)), text.actions


def _word_count(text: str) -> int:
    return len(_WORD_RE.findall(text))


def _actors(plain: str, actions: Sequence[Any], start: int) -> tuple[str, ...]:
    """The ids of the ``<gda>`` action containing ``start`` or ending right before it."""
    for a in actions:
        if a.start <= start < a.end or (a.end <= start and not plain[a.end : start].strip()):
            return tuple(a.ids)
    return ()


def _pick_subject(plain: str, entities: Sequence[Thing], start: int,
                  actors: tuple[str, ...] | None) -> Thing | None:
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


def _pick_object(plain: str, entities: Sequence[Thing], end: int, limit: int) -> Thing | None:
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
    """The spatial relations a frame's text (a ``Segment`` or a plain string) states, in text order, each once.

    ``char_descriptions``: character id -> chain-of-thought description
    (:func:`helpers.objects.character_descriptions`). Raises ``SpatialInputError`` for other input types.

    >>> [(r.subject, r.relation, r.object) for r in extract_relations("A cup rests on the table.")]
    [('cup', 'on', 'table')]
    """
    if not isinstance(text, str) and not all(hasattr(text, a) for a in ("plain", "mentions", "actions")):
        raise SpatialInputError(f"extract_relations needs a helpers.tags.Segment or a str, got {type(text).__name__}")
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

# %%
examples = ["He sits on the couch, holding a cup.", "The man waits in front of the car, a teddy bear beside a hot dog.",
            "The dog sleeps under the car door.", "A cup rests on the big old wooden table."]
display(pd.DataFrame([{"text": t, "relations": "; ".join(f"{r.subject} ({r.subject_category}) {r.relation} "
                                                          f"{r.object} ({r.object_category})"
                                                          for r in extract_relations(t)) or "-"}
                      for t in examples]).style.hide(axis="index"))

# %% [markdown]
# ## The evidence of a (frame, text) pair
#
# A relation names categories ("a person on a couch"), not boxes. Every (subject box, object
# box) pair of the two categories in the frame is tried, never a box with itself, in the
# detector's score order: the relation holds if some pair satisfies it, and the pair reported
# is the most confident such pair (or, when none does, the two most confident boxes).
#
# **Unverifiable relations are left out, not failed.** When a relation's subject or object
# has no COCO category, or the frame has no box of it, the boxes say nothing about the
# relation's geometry. Such a relation is reported (status `"unverifiable"`, with the reason)
# but not scored: whether the named things are in the frame at all is the object evidence's
# question (chapter 02), and scoring it here too would make two features repeat one another.
#
# The pair's score is the first that applies:
#
# 1. `"relations"`: the text states relations the boxes can check; the score is the share
#    that held.
# 2. `"proximity"`: no relation can be checked, but the text names a person and a COCO thing
#    and the frame has boxes of both: how close the people are to the things the text has
#    them with, the mean over those things of the best `1 - gap / diagonal`.
# 3. `"none"`: nothing to check. `spatial_score` is `UNINFORMATIVE_SCORE` (0.0), a
#    placeholder, never a 0.5 that would read as "half the relations held".
#
# Its state, `spatial_state`, is one of chapter 02's three: "checked" for the first two,
# "nothing to check" for the third on a frame that decoded (here this depends on the boxes
# too: a relation whose things have no box cannot be checked), "not computed" when the frame
# did not decode, so the detector never saw it. The score is a placeholder unless the state
# is "checked"; `spatial_informative` is kept as the shorthand for "checked".

# %%
#@save
#: ``spatial_score`` of a pair with nothing checked (``spatial_state`` not ``"checked"``): a placeholder.
UNINFORMATIVE_SCORE = 0.0


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
    relations that held), ``"proximity"`` (the fallback) or ``"none"`` (a placeholder score);
    ``spatial_state`` is ``"checked"`` for the first two, else ``"nothing to check"`` (see
    :func:`spatial_features` for ``"not computed"``).
    ``relations_json`` lists every stated relation and, for the fallback, the proximities.
    """

    spatial_score: float
    spatial_state: str
    spatial_informative: bool
    relations_checked: int
    relations_held: int
    relations_json: str
    spatial_source: str

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
    """The spatial evidence that a frame, seen through its ``detections`` in an image of
    ``image_size`` (width, height), shows ``text`` (a ``Segment`` or a plain string)."""
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
    return SpatialEvidence(spatial_score=float(score), spatial_state=CHECKED if source != "none" else NOTHING_TO_CHECK,
                           spatial_informative=source != "none",
                           relations_checked=len(checked), relations_held=held,
                           relations_json=json.dumps(explained), spatial_source=source)


def _rounded(box: Sequence[float] | None) -> list[float] | None:
    return None if box is None else [round(float(v), 1) for v in box]

# %%
from helpers.detection import Detection

frame_boxes = [Detection("person", 0.9, (290, 30, 390, 230)), Detection("couch", 0.8, (250, 120, 560, 230)),
               Detection("cup", 0.7, (450, 80, 490, 120))]
for text in ["A man sits on the couch.", "A man sits under the couch.", "A man and his cup.", "The storm gathers."]:
    evidence = spatial_evidence(text, frame_boxes, (600, 240))
    display(Markdown(f"*{text}*: `{evidence.spatial_source}`, score {evidence.spatial_score:.2f} "
                     f"({evidence.relations_held} of {evidence.relations_checked} checked relations held)"))

# %% [markdown]
# ## The original study's rule
#
# The original study scored a frame from three fixed pairs of detector labels: for each, the
# first (most confident) box of the subject label and the first box of any of the object
# labels. If some pair's centres are closer than `STUDY_MAX_DISTANCE_PX` pixels the score is
# 1; if pairs were found but all are farther, 0; with no pair at all, the fixed middle score
# `STUDY_NO_PAIR_SCORE`. It never reads the text, so a frame's positive and negative pairs
# always get the same score. "toy" is kept as the study wrote it: COCO has no category of that
# name (the nearest, "teddy bear", is not what the study's code looked for), so that pair is
# never found in a COCO detector's output; correcting it would make a different rule from the
# one reproduced.

# %%
#@save
STUDY_PAIRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("person", ("tv",)),
    ("person", ("chair", "couch")),
    ("person", ("toy",)),
)
STUDY_MAX_DISTANCE_PX = 400.0
STUDY_NO_PAIR_SCORE = 0.5


def study_spatial_score(detections: Iterable["Detection"]) -> float:
    """The original study's spatial score of a frame, reproduced. It never reads the text."""
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


# %% [markdown]
# ## Every pair: the frames, their detections and the oracle
#
# `spatial_features` scores every pair: a frame's detections at or above the score threshold
# are read once and shared by all its pairs (a frame that did not decode has no boxes). A
# pair's text is its plain `text`, as the verifier reads a user's text; with `read_tags`
# (chapter 09's ablation) it is its tagged text, its characters described by the chain of
# thought of the story the text came from (a character who is a cat is not a person). The
# study's score of the same boxes travels along.
#
# The detections are those of chapter 02, read back from its cache (no forward pass when
# that chapter has run). The chain of thought's boxes, mapped onto COCO categories, act as
# an oracle detector: where the rules meet the data without detector errors.

# %%
#@save
#: The columns of the ``spatial`` feature part, after ``pair_id``.
SPATIAL_COLUMNS: tuple[str, ...] = (
    "spatial_score", "spatial_state", "spatial_informative", "relations_checked", "relations_held", "relations_json",
    "spatial_source", "study_spatial_score",
)  # fmt: skip


def spatial_features(pairs: pd.DataFrame, frames: pd.DataFrame, *, threshold: float,
                     read_tags: bool = False) -> pd.DataFrame:
    """The ``spatial`` feature part: ``pair_id`` and :data:`SPATIAL_COLUMNS`, one row per pair.

    ``frames`` is a per-frame detection table with ``width`` and ``height`` covering every
    pair's frame (``SpatialInputError`` otherwise); a frame whose ``status`` is not ``"ok"`` has
    no boxes and its pairs' ``spatial_state`` is ``"not computed"``. Relations come from the plain ``text``, or
    with ``read_tags`` (chapter 09) from the ``tagged_text``, a character by its mention's own
    words: never from the chain of thought, which annotates the frame judged.
    """
    from tqdm.auto import tqdm

    from helpers.tags import parse_segment

    needed = ["story_id", "frame", "status", "detections", "width", "height"]
    if absent := [c for c in needed if c not in frames.columns]:
        raise SpatialInputError(f"the frames table lacks {absent}: pass detect_frames(...).frames, or merge its "
                                "width and height columns into ground_truth_frames(...)")
    per_frame: dict[tuple[str, int], tuple[dict[str, list[Box]], tuple[float, float], float]] = {}
    decoded = set()
    for story_id, frame, status, cell, width, height in frames[needed].itertuples(index=False):
        detections = parse_detections(cell, threshold) if status == "ok" else []
        per_frame[(str(story_id), int(frame))] = (boxes_by_category(detections), (width, height),
                                                  study_spatial_score(detections))
        if status == "ok":
            decoded.add((str(story_id), int(frame)))
    keys = list(zip(pairs["story_id"].astype(str), pairs["frame"].astype(int)))
    if missing := sorted(set(keys) - set(per_frame)):
        raise SpatialInputError(f"the frames table lacks {len(missing)} frame(s) of the pairs, e.g. {missing[:3]}")

    segments: dict[tuple[str, int], Segment] = {}
    rows = []
    columns = ["pair_id", "text", "tagged_text", "source_frame"]
    for key, (pair_id, plain, tagged, source_frame) in tqdm(
        zip(keys, pairs[columns].itertuples(index=False)), total=len(pairs), desc="spatial evidence", unit="pair"
    ):
        if read_tags and isinstance(tagged, str) and tagged:
            if (tagged, int(source_frame)) not in segments:
                segments[(tagged, int(source_frame))] = parse_segment(tagged, int(source_frame))
            text = segments[(tagged, int(source_frame))]
        else:
            text = str(plain)
        boxes, size, study = per_frame[key]
        evidence = _evidence(text, (), boxes, size)
        if key not in decoded:  # the frame did not decode: the detector never saw it
            evidence = replace(evidence, spatial_state=NOT_COMPUTED)
        rows.append({"pair_id": pair_id, **asdict(evidence), "study_spatial_score": study})
    return pd.DataFrame(rows, columns=["pair_id", *SPATIAL_COLUMNS])

# %%
from helpers import detection as det
from helpers import objects as obj
from helpers.ablations import oracle_frames
from helpers.data import load_study_data, pair_frames
from helpers.features import development, write_part

threshold = det.settings_from_profile(ctx.cfg).score_threshold
study = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
stories, pairs = study.stories, study.pairs
frames = pair_frames(pairs, study.datasets)
_, run = det.profile_detections(ctx.cfg, ctx.paths, frames, device=ctx.device)
truth = oracle_frames(obj.ground_truth_frames(stories), run.frames)  # sizes and decoding status from the run

detected = pairs.merge(spatial_features(pairs, run.frames, threshold=threshold), on="pair_id",
                       validate="one_to_one")
oracle = pairs.merge(spatial_features(pairs, truth, threshold=threshold), on="pair_id",
                     validate="one_to_one")
for table in (detected, oracle):
    table["kind"] = table["negative_type"].where(table["label"] == 0, "positive")
dev_detected, dev_oracle = development(detected), development(oracle)  # what every table below shows
display(Markdown(f"{len(pairs):,} pairs over {len(run.frames):,} frames; {run.forward_passes:,} frames went through "
                 f"the detector in this chapter (the rest came from chapter 02's cache). Detections scoring at least "
                 f"{threshold} count."))

# %% [markdown]
# ## How often the text states a relation
#
# Over the positive train and validation pairs (each frame's own text): how many state a relation at all, how
# many state one between two things COCO has categories for, and which relations they are.
# A relation between things without a COCO category (a wall, a door) is stated but can
# never be checked. The relations of each pair are unpacked from its JSON, one row each (the
# proximity rows of the fallback are left out).

# %%
#@save
# extra code: one row per stated relation
def relations_long(table: pd.DataFrame,
                   keep: Sequence[str] = ("story_id", "frame", "label", "negative_type")) -> pd.DataFrame:
    """One row per stated relation of each pair, from a table with ``pair_id`` and ``relations_json``.

    Columns: ``pair_id``, the ``keep`` columns present in ``table``, then ``subject``,
    ``subject_category``, ``relation``, ``object``, ``object_category``, ``phrase``,
    ``status`` and ``reason`` (the proximity rows of the fallback are left out).
    """
    fields = ["subject", "subject_category", "relation", "object", "object_category", "phrase", "status", "reason"]
    kept = ["pair_id", *(c for c in keep if c in table.columns)]
    rows = [
        {**dict(zip(kept, values)), **{f: r.get(f, "") for f in fields}}
        for *values, cell in table[[*kept, "relations_json"]].itertuples(index=False)
        for r in json.loads(cell)
        if r["status"] != "proximity"
    ]
    return pd.DataFrame(rows, columns=[*kept, *fields])

# %%
stated = relations_long(dev_detected)
positives = dev_detected[dev_detected["label"] == 1]
stated_pos = stated[stated["label"] == 1]
coco_pos = stated_pos[stated_pos["subject_category"].notna() & stated_pos["object_category"].notna()]
n_pos = max(len(positives), 1)
display(Markdown(
    f"{stated_pos['pair_id'].nunique() / n_pos:.1%} of the positive texts state at least one relation, "
    f"{coco_pos['pair_id'].nunique() / n_pos:.1%} at least one between two COCO things; "
    f"{len(stated_pos) / n_pos:.2f} relations per text on average."
))
display(stated_pos.assign(between_coco_things=stated_pos.index.isin(coco_pos.index))
        .groupby("relation").agg(stated=("pair_id", "size"), between_coco_things=("between_coco_things", "sum"))
        .sort_values("stated", ascending=False).T)
display(stated_pos["phrase"].str.lower().value_counts().head(12).rename("times stated").to_frame().T)

# %% [markdown]
# ## The rules on the chain of thought's boxes
#
# If the rules are right, the relations a frame's own text states should mostly hold on the
# frame's annotated boxes, and the statements a relation swap changed (left into right, on
# into under, ...) should mostly fail. The statements a swap changed are those its negative
# makes that the positive of the same frame does not: the swapped relation itself, once
# extracted. Share of checked statements that hold, by relation:

# %%
#@save
def edited_statements(relations: pd.DataFrame) -> pd.DataFrame:
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

# %%
oracle_stated = relations_long(dev_oracle)
checked = oracle_stated[oracle_stated["status"].isin(["held", "failed"])].assign(held=lambda t: t["status"] == "held")
swapped = edited_statements(oracle_stated)
swapped = swapped[swapped["status"].isin(["held", "failed"])].assign(held=lambda t: t["status"] == "held")
by_relation = pd.concat({
    "positives: held": checked[checked["label"] == 1].groupby("relation")["held"].mean(),
    "positives: checked": checked[checked["label"] == 1].groupby("relation").size(),
    "swapped statements: held": swapped.groupby("relation")["held"].mean(),
    "swapped statements: checked": swapped.groupby("relation").size(),
}, axis=1)
display(by_relation.style.format({c: "{:.1%}" for c in by_relation if c.endswith("held")} | {
    c: "{:,.0f}" for c in by_relation if c.endswith("checked")}, na_rep="n/a"))
pos_checked = checked[checked["label"] == 1]
display(Markdown(
    f"On the oracle's boxes, {pos_checked['held'].mean():.1%} of the {len(pos_checked):,} checkable statements of the "
    f"positive texts hold, against {swapped['held'].mean():.1%} of the {len(swapped):,} checkable swapped statements."
    if len(pos_checked) and len(swapped) else
    f"Checkable statements on the oracle's boxes: {len(pos_checked):,} in positive texts, {len(swapped):,} "
    "swapped ones: too few to compare."
))

# %% [markdown]
# ## How often the evidence says anything
#
# Share of pairs by source of the score (the checked relations, the proximity fallback, or
# nothing), on the detector's boxes and on the oracle's:

# %%
sources = pd.concat({
    boxes: pd.crosstab(table["kind"], table["spatial_source"], normalize="index")
    .reindex(columns=["relations", "proximity", "none"], fill_value=0)
    for boxes, table in (("detector", dev_detected), ("oracle", dev_oracle))
}, names=["boxes"])
display(sources.style.format("{:.1%}"))
display(Markdown(f"Pairs not checked hold the placeholder spatial_score = {UNINFORMATIVE_SCORE}. Train and validation "
                 f"pairs per state, by split and kind of pair (detector's boxes):"))
display(obj.state_table(dev_detected, "spatial_state"))

# %% [markdown]
# ## The study's rule next to ours

# %%
study_pairs = ", ".join(f"{s} + {'/'.join(o)}" for s, o in STUDY_PAIRS)
no_pair = (dev_detected["study_spatial_score"] == STUDY_NO_PAIR_SCORE).mean()
decoded = run.frames[run.frames["status"] == "ok"]
display(Markdown(
    f"The study's pairs: {study_pairs}; its distance threshold {STUDY_MAX_DISTANCE_PX:.0f} px, which is "
    f"{STUDY_MAX_DISTANCE_PX / ((decoded['width'] ** 2 + decoded['height'] ** 2) ** 0.5).median():.0%} of "
    f"the median frame diagonal here. COCO has no 'toy' label, so the last pair can never be found. "
    f"**{no_pair:.1%}** of the pairs get the study's no-pair score of {STUDY_NO_PAIR_SCORE}; our evidence is "
    f"not checked for {1 - dev_detected['spatial_informative'].mean():.1%} of them, and says so in its state "
    f"(train and validation pairs)."
))

# %% [markdown]
# ROC-AUC of each score at telling the positives from each kind of negative, on the same
# train and validation pairs (at chance, a score has an AUC of one half; chapter 02's
# `auc_by_negative_type`):

# %%
def auc(table: pd.DataFrame, column: str) -> pd.Series:
    return obj.auc_by_negative_type(table, column).set_index("negative_type")["roc_auc"]


informative = dev_detected[dev_detected["spatial_informative"]]
oracle_informative = dev_oracle[dev_oracle["spatial_informative"]]
aucs = pd.concat({
    "study rule, all pairs": auc(dev_detected, "study_spatial_score"),
    "ours, all pairs": auc(dev_detected, "spatial_score"),
    "ours, informative pairs": auc(informative, "spatial_score"),
    "ours on oracle boxes, informative pairs": auc(oracle_informative, "spatial_score"),
}, axis=1)
display(aucs.style.format("{:.3f}", na_rep="n/a"))
if "relation_swap" in aucs.index:
    swap = aucs.loc["relation_swap"].map(lambda x: "not measurable (no such pairs)" if pd.isna(x) else f"{x:.3f}")
    display(Markdown(
        f"Against relation swaps, the negatives this evidence is built for, the study's rule reaches "
        f"{swap['study rule, all pairs']}; ours reaches {swap['ours, informative pairs']} on the informative pairs "
        f"with the detector's boxes and {swap['ours on oracle boxes, informative pairs']} with the oracle's."
    ))

# %% [markdown]
# ## What the checks look like
#
# Some checked relations drawn on their frames: the subject's box solid, the object's dashed,
# green when the relation held and red when it failed (blue: the proximity fallback). With
# the detector's boxes where it checked some relation, else with the oracle's. Pairs with a
# failed relation and pairs whose relations all held alternate, so both outcomes show.

# %%
#@save
# extra code: drawing the checked relations on their frames
_STATUS_COLOURS = {"held": "#2ca02c", "failed": "#d62728", "proximity": "#1f77b4"}


def plot_relations(ax: "matplotlib.axes.Axes", image: "PILImage.Image", relations_json: str, *,
                   title: str = "") -> None:
    """Draw a frame with the boxes its relations were checked on (one pair's ``relations_json``).

    Each checked relation's subject box is drawn solid and its object box dashed, green
    when it held, red when it failed, blue for a proximity row; the statement is written
    on the subject box. Unverifiable relations have no boxes and are not drawn.
    """
    from helpers.plots import draw_boxes

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


def plot_relation_samples(frames: Mapping[tuple[str, int], bytes], table: pd.DataFrame, *, n: int = 4,
                          title: str = "") -> "matplotlib.figure.Figure":
    """Up to ``n`` pairs whose relations were checked, drawn with :func:`plot_relations`.

    ``table`` has ``pair_id``, ``story_id``, ``frame``, ``label``, ``negative_type`` and
    ``relations_json``; ``frames`` maps ``(story_id, frame)`` to the frame's bytes. Pairs
    with a failed relation and pairs whose relations all held alternate, each in
    ``pair_id`` order, so the choice is reproducible and shows both outcomes.
    """
    import matplotlib.pyplot as plt

    from helpers.data import frame_image

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

# %%
with_checks = dev_detected[dev_detected["relations_checked"] > 0]
shown, source = ((with_checks, "detector") if len(with_checks)
                 else (dev_oracle[dev_oracle["relations_checked"] > 0], "oracle"))
if len(shown):
    plot_relation_samples(frames, shown, n=4, title=f"Relations checked on the {source}'s boxes")
    plt.show()
else:
    display(Markdown("No relation could be checked in this run, on either kind of box."))

# %% [markdown]
# ## The evidence, saved
#
# One row per pair goes to the feature table: the score, whether it rests on anything, how
# many relations were checked and held, and the checks themselves as JSON (with the boxes
# used, for the explanations in the dashboards). The study's score travels along for the
# comparisons of later chapters, and so does our score on the oracle's boxes, for the
# ablations.

# %%
features = detected[["pair_id", *SPATIAL_COLUMNS]].merge(
    oracle[["pair_id", "spatial_score"]].rename(columns={"spatial_score": "spatial_score_oracle"}), on="pair_id")
path = write_part(ctx.paths, "spatial", features)
display(Markdown(f"Wrote {len(features):,} rows to `{path.relative_to(ctx.paths.root.parent)}`."))
display(features[features["pair_id"].isin(dev_detected["pair_id"])].head())  # train and validation rows
