"""StoryReasoning's text, parsed: the tagged story and the chain-of-thought tables as records.

A dataset row holds a ``story`` (one ``<gdi imageN>`` segment per frame, with inline
``<gdo>``/``<gda>``/``<gdl>`` grounding tags) and a ``chain_of_thought`` (markdown tables per
``## Image N`` with an entity id, a description and a bounding box per row). This module
turns that text into the frozen records below and checks that the two agree with the
frame count; :mod:`helpers.data` loads the rows and their frames.

Parsing never loses a segment over the dataset's known slips (mismatched closing tags,
cited ids without a table row, a missing final ``</gdi>``); a story that cannot be
parsed at all raises :class:`StoryFormatError`, and a table row that cannot be read is
skipped and counted in :attr:`ChainOfThought.skip_reasons`.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

#: Id prefixes with a meaning: character, object, background element, landmark.
ENTITY_KINDS = ("char", "obj", "bg", "lm")


class StoryFormatError(ValueError):
    """A story's text cannot be split into frame segments."""


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Mention:
    """One inline tag of a segment: ``<gdo char1 char4>them</gdo>``."""

    ids: tuple[str, ...]
    kind: str  # prefix of the first id: "char" | "obj" | "bg" | "lm", else "other"
    text: str  # surface text, whitespace normalised
    tag: str  # "gdo" | "gda" | "gdl"
    start: int  # offsets of ``text`` in Segment.plain
    end: int


@dataclass(frozen=True)
class Segment:
    """The story text of one frame."""

    frame: int  # 1-based, from <gdi imageN>
    tagged: str  # the text between <gdi imageN> and </gdi>, tags kept
    plain: str  # tags stripped, whitespace normalised
    mentions: tuple[Mention, ...]  # <gdo> tags, in text order
    actions: tuple[Mention, ...]  # <gda> tags
    locations: tuple[Mention, ...]  # <gdl> tags


@dataclass(frozen=True)
class Entity:
    """One row of a frame's Characters or Objects table."""

    id: str
    kind: str  # id prefix: "char" | "obj" | "bg" | "lm", else "other"
    name: str  # the Characters table's Name; "" for objects
    description: str
    box: tuple[float, float, float, float] | None  # x1, y1, x2, y2 in pixels of the frame


@dataclass(frozen=True)
class FrameAnnotation:
    """The chain-of-thought tables of one ``## Image N`` section."""

    frame: int
    characters: tuple[Entity, ...]
    objects: tuple[Entity, ...]
    setting: tuple[dict[str, str], ...]  # Setting rows as column -> value


@dataclass(frozen=True)
class ChainOfThought:
    """A story's chain of thought, by frame, with the rows that could not be read."""

    frames: dict[int, FrameAnnotation]
    skipped_rows: int
    skip_reasons: dict[str, int]


@dataclass(frozen=True)
class ParsedStory:
    """A dataset row with its story and chain of thought parsed (no images)."""

    story_id: str
    frame_count: int
    segments: tuple[Segment, ...]  # frame order
    cot: ChainOfThought


def id_kind(entity_id: str) -> str:
    """The kind of an entity id from its prefix: ``"char3"`` -> ``"char"``; unknown -> ``"other"``."""
    prefix = re.match(r"[a-z]*", entity_id.lower()).group()
    return prefix if prefix in ENTITY_KINDS else "other"


# ------------------------------------------------------------------------------- story

_GD_TAG = re.compile(r"<(/?)(gd[a-z])\b([^>]*)>", re.IGNORECASE)
_SEGMENT_OPEN = re.compile(r"<gdi\s+image\s*(\d+)\s*>", re.IGNORECASE)
_SEGMENT_CLOSE = re.compile(r"</gdi\s*>", re.IGNORECASE)
_INLINE_TAGS = ("gdo", "gda", "gdl")
_WORD = re.compile(r"\S+")


def strip_tags(tagged: str) -> str:
    """Remove every ``<gd?...>`` / ``</gd?>`` tag and normalise whitespace to single spaces."""
    return " ".join(_WORD.findall(_GD_TAG.sub("", tagged)))


@dataclass(frozen=True)
class _Layout:
    """Where the characters of a tagged text end up once tags and extra spaces are gone.

    ``raw`` is the text with tags removed; ``plain`` joins its words with single spaces.
    The offset tables map a character of ``plain`` back to ``raw`` and to the tagged text.
    """

    raw: str
    plain: str
    piece_raw: list[int]  # start in raw of each run of text between two tags
    piece_tagged: list[int]  # start of the same run in the tagged text
    word_raw: list[int]  # start in raw of each word
    word_plain: list[int]  # start in plain of each word
    spans: list[tuple[str, tuple[str, ...], int, int]]  # inline tag, ids, raw start, raw end

    def raw_to_plain(self, r: int) -> int:
        """Plain offset of the non-space raw character ``r``."""
        i = bisect_right(self.word_raw, r) - 1
        return self.word_plain[i] + (r - self.word_raw[i])

    def plain_to_tagged(self, p: int) -> int:
        """Tagged-text offset of the non-space plain character ``p``."""
        i = bisect_right(self.word_plain, p) - 1
        r = self.word_raw[i] + (p - self.word_plain[i])
        j = bisect_right(self.piece_raw, r) - 1
        return self.piece_tagged[j] + (r - self.piece_raw[j])

    def plain_span(self, raw_start: int, raw_end: int) -> tuple[int, int]:
        """Plain offsets of the non-space part of ``raw[raw_start:raw_end]``."""
        text = self.raw[raw_start:raw_end]
        if not text.strip():
            i = bisect_left(self.word_raw, raw_start)
            p = self.word_plain[i] if i < len(self.word_plain) else len(self.plain)
            return p, p
        first = raw_start + len(text) - len(text.lstrip())
        last = raw_start + len(text.rstrip()) - 1
        return self.raw_to_plain(first), self.raw_to_plain(last) + 1


def _layout(tagged: str) -> _Layout:
    pieces: list[str] = []
    piece_raw: list[int] = []
    piece_tagged: list[int] = []
    spans: list[tuple[str, tuple[str, ...], int, int]] = []
    open_tag: tuple[str, tuple[str, ...], int] | None = None
    raw_len = pos = 0

    def add_text(start: int, end: int) -> None:
        nonlocal raw_len
        if end > start:
            pieces.append(tagged[start:end])
            piece_raw.append(raw_len)
            piece_tagged.append(start)
            raw_len += end - start

    for m in _GD_TAG.finditer(tagged):
        add_text(pos, m.start())
        pos = m.end()
        closing, name, attrs = m.group(1) == "/", m.group(2).lower(), m.group(3)
        if name not in _INLINE_TAGS:
            continue
        # Any inline closing tag closes the open one (</gdo> may close a <gda>); an opening
        # tag while another is open closes that one first (tags do not nest in this data).
        if open_tag is not None:
            spans.append((*open_tag, raw_len))
            open_tag = None
        if not closing:
            open_tag = (name, tuple(attrs.split()), raw_len)
    add_text(pos, len(tagged))
    if open_tag is not None:
        spans.append((*open_tag, raw_len))

    raw = "".join(pieces)
    words = list(_WORD.finditer(raw))
    texts = [w.group() for w in words]
    return _Layout(
        raw=raw,
        plain=" ".join(texts),
        piece_raw=piece_raw,
        piece_tagged=piece_tagged,
        word_raw=[w.start() for w in words],
        word_plain=list(accumulate((len(t) + 1 for t in texts), initial=0))[:-1],
        spans=spans,
    )


def parse_segment(tagged: str, frame: int) -> Segment:
    """Parse the tagged text of one frame segment (without its ``<gdi>`` wrapper).

    Mismatched closing tags are accepted (any ``</gdo|gda|gdl>`` closes the open inline
    tag), a tag left open is closed at the next tag or at the end, and stray closing
    tags are ignored.
    """
    layout = _layout(tagged)
    by_tag: dict[str, list[Mention]] = {tag: [] for tag in _INLINE_TAGS}
    for tag, ids, raw_start, raw_end in layout.spans:
        start, end = layout.plain_span(raw_start, raw_end)
        by_tag[tag].append(
            Mention(
                ids=ids,
                kind=id_kind(ids[0]) if ids else "other",
                text=layout.plain[start:end],
                tag=tag,
                start=start,
                end=end,
            )
        )
    return Segment(
        frame=frame,
        tagged=tagged,
        plain=layout.plain,
        mentions=tuple(by_tag["gdo"]),
        actions=tuple(by_tag["gda"]),
        locations=tuple(by_tag["gdl"]),
    )


def parse_story(text: str) -> list[Segment]:
    """Split a story into its ``<gdi imageN>`` segments, sorted by frame number.

    A segment runs to its ``</gdi>``, or, when that is missing, to the next
    ``<gdi imageN>`` or the end of the text. Raises :class:`StoryFormatError` when the
    story has no segment at all or two segments with the same frame number (which of
    the two describes the frame cannot be known, so the story is rejected as a whole).
    """
    opens = list(_SEGMENT_OPEN.finditer(text))
    if not opens:
        what = "story is empty" if not text.strip() else "story has no <gdi imageN> segment"
        raise StoryFormatError(what)
    segments: dict[int, Segment] = {}
    for i, m in enumerate(opens):
        limit = opens[i + 1].start() if i + 1 < len(opens) else len(text)
        close = _SEGMENT_CLOSE.search(text, m.end(), limit)
        frame = int(m.group(1))
        if frame in segments:
            raise StoryFormatError(f"story has two <gdi image{frame}> segments")
        segments[frame] = parse_segment(text[m.end() : close.start() if close else limit].strip(), frame)
    return [segments[frame] for frame in sorted(segments)]


def edit_segment(segment: Segment, start: int, end: int, replacement: str) -> Segment:
    """Replace ``segment.plain[start:end]`` by ``replacement`` in the tagged text and re-parse.

    The span must start and end on a non-space character and must not cross a tag
    (editing the surface text inside one tag is fine). Raises ``ValueError`` otherwise.
    """
    layout = _layout(segment.tagged)
    plain = layout.plain
    if not (0 <= start < end <= len(plain)) or plain[start].isspace() or plain[end - 1].isspace():
        raise ValueError(f"cannot edit plain[{start}:{end}] of frame {segment.frame}: not a word span")
    t_start, t_end = layout.plain_to_tagged(start), layout.plain_to_tagged(end - 1) + 1
    if _GD_TAG.search(segment.tagged, t_start, t_end):
        raise ValueError(f"cannot edit {plain[start:end]!r} in frame {segment.frame}: the span crosses a tag")
    return parse_segment(segment.tagged[:t_start] + replacement + segment.tagged[t_end:], segment.frame)


# ---------------------------------------------------------------------- chain of thought

_H2 = re.compile(r"^##(?!#)[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_H3 = re.compile(r"^###[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_IMAGE_TITLE = re.compile(r"Image\s+(\d+)\b", re.IGNORECASE)
_NARRATIVE = re.compile(r"^##[ \t]+Narrative Structure", re.MULTILINE | re.IGNORECASE)
_ENTITY_ID = re.compile(r"[A-Za-z]+\d+")
_SEPARATOR_CELL = re.compile(r":?-+:?")
_NO_BOX = {"", "-", "n/a", "na", "none", "unknown"}
#: Accepted header names of each table's id column (lower case).
_ID_COLUMNS = {"characters": ("character id", "id"), "objects": ("object id", "id")}


def _cells(line: str) -> list[str]:
    line = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip() for cell in line.split("|")]


def _table(block: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the markdown table in ``block`` (separator lines dropped)."""
    rows = [_cells(line) for line in block.splitlines() if line.lstrip().startswith("|")]
    rows = [r for r in rows if not all(_SEPARATOR_CELL.fullmatch(c) for c in r)]
    return (rows[0], rows[1:]) if rows else ([], [])


def _parse_box(cell: str) -> tuple[float, float, float, float] | None:
    """``"x1,y1,x2,y2"`` -> floats; an empty or placeholder cell -> None; else ValueError."""
    if cell.strip().lower() in _NO_BOX:
        return None
    parts = cell.strip().strip("[]()").split(",")
    if len(parts) != 4:
        raise ValueError(f"bad box {cell!r}")
    x1, y1, x2, y2 = (float(p) for p in parts)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
        raise ValueError(f"bad box {cell!r}")
    return (x1, y1, x2, y2)


def _entities(table: str, block: str, skips: Counter) -> list[Entity]:
    header, rows = _table(block)
    columns = {" ".join(name.lower().split()): i for i, name in enumerate(header)}
    id_col = next((columns[c] for c in _ID_COLUMNS[table] if c in columns), None)
    if id_col is None:
        skips["missing id column"] += len(rows)
        return []
    name_col, desc_col, box_col = (columns.get(c) for c in ("name", "description", "bounding box"))
    entities = []
    for cells in rows:
        if len(cells) != len(header):
            skips["wrong cell count"] += 1
            continue
        entity_id = cells[id_col]
        if not _ENTITY_ID.fullmatch(entity_id):
            skips["missing or bad id"] += 1
            continue
        try:
            box = _parse_box(cells[box_col]) if box_col is not None else None
        except ValueError:
            skips["bad box"] += 1
            continue
        entities.append(
            Entity(
                id=entity_id,
                kind=id_kind(entity_id),
                name=cells[name_col] if name_col is not None else "",
                description=cells[desc_col] if desc_col is not None else "",
                box=box,
            )
        )
    return entities


def _setting(block: str, skips: Counter) -> list[dict[str, str]]:
    header, rows = _table(block)
    out = []
    for cells in rows:
        if len(cells) != len(header):
            skips["wrong cell count"] += 1
            continue
        out.append(dict(zip(header, cells)))
    return out


def _frame_annotation(frame: int, section: str, skips: Counter) -> FrameAnnotation:
    headings = list(_H3.finditer(section))
    tables: dict[str, Any] = {"characters": [], "objects": [], "setting": []}
    for i, h in enumerate(headings):
        title = h.group(1).rstrip(":").strip().lower()
        if title not in tables:
            continue
        block = section[h.end() : headings[i + 1].start() if i + 1 < len(headings) else len(section)]
        tables[title] = _setting(block, skips) if title == "setting" else _entities(title, block, skips)
    return FrameAnnotation(
        frame=frame,
        characters=tuple(tables["characters"]),
        objects=tuple(tables["objects"]),
        setting=tuple(tables["setting"]),
    )


def parse_chain_of_thought(text: str) -> ChainOfThought:
    """Parse the ``## Image N`` sections of a chain of thought (up to ``## Narrative Structure``).

    Columns are found by header name, so their order does not matter; a table may be a
    header without rows. Rows with the wrong number of cells, without a valid id or with
    an unreadable box are skipped and counted, as are the rows of a repeated
    ``## Image N`` section (the first one is kept). An empty or missing box cell gives
    ``box=None``. Background ids (``bg3``) listed in the Objects table keep kind ``"bg"``.
    """
    narrative = _NARRATIVE.search(text)
    text = text[: narrative.start()] if narrative else text
    headings = list(_H2.finditer(text))
    frames: dict[int, FrameAnnotation] = {}
    skips: Counter = Counter()
    for i, h in enumerate(headings):
        title = _IMAGE_TITLE.match(h.group(1))
        if not title:
            continue
        section = text[h.end() : headings[i + 1].start() if i + 1 < len(headings) else len(text)]
        frame = int(title.group(1))
        if frame in frames:
            extra: Counter = Counter()
            dup = _frame_annotation(frame, section, extra)
            skips["duplicate image section"] += (
                len(dup.characters) + len(dup.objects) + len(dup.setting) + sum(extra.values())
            )
            continue
        frames[frame] = _frame_annotation(frame, section, skips)
    return ChainOfThought(frames=frames, skipped_rows=sum(skips.values()), skip_reasons=dict(skips))


# -------------------------------------------------------------------------- validation


def parse_row(row: Mapping[str, Any]) -> ParsedStory:
    """Parse one dataset row (``story_id``, ``frame_count``, ``story``, ``chain_of_thought``)."""
    return ParsedStory(
        story_id=str(row["story_id"]),
        frame_count=int(row["frame_count"] or 0),
        segments=tuple(parse_story(row["story"] or "")),
        cot=parse_chain_of_thought(row["chain_of_thought"] or ""),
    )


def _frames(numbers: Iterable[int]) -> str:
    return ", ".join(str(n) for n in sorted(numbers))


def validate_story(
    story_id: str,
    frame_count: int,
    segments: Sequence[Segment],
    cot: ChainOfThought,
    n_images: int | None = None,
) -> list[str]:
    """The problems that make a parsed story unusable; empty when it is consistent.

    Each problem reads ``"<reason>: <detail>"`` with a short fixed reason, so problems
    can be counted by reason. Checked: the id is a number (splits sort ids numerically),
    ``frame_count`` >= 1, the story has exactly one segment and the chain of thought
    exactly one ``## Image N`` section for each frame 1..frame_count, and, when given,
    the number of images equals ``frame_count``.
    """
    problems = []
    if not str(story_id).isdigit():
        problems.append(f"bad story id: {story_id!r} is not a number")
    if frame_count < 1:
        return [*problems, f"bad frame_count: {frame_count}"]
    expected = set(range(1, frame_count + 1))
    for what, found in (("segments", {s.frame for s in segments}), ("chain-of-thought frames", set(cot.frames))):
        if missing := expected - found:
            problems.append(f"missing {what}: frames {_frames(missing)} of {frame_count}")
        if extra := found - expected:
            problems.append(f"unexpected {what}: frames {_frames(extra)} beyond 1..{frame_count}")
    if n_images is not None and n_images != frame_count:
        problems.append(f"image count mismatch: {n_images} images for frame_count {frame_count}")
    return problems
