"""StoryReasoning stories: records, parsing, validation, loading and summary tables.

A dataset row holds a ``story`` (one ``<gdi imageN>`` segment per frame, with inline
``<gdo>``/``<gda>``/``<gdl>`` grounding tags), a ``chain_of_thought`` (markdown tables per
``## Image N`` with an entity id, a description and a bounding box per row) and the
frames themselves. This module turns that text into the frozen records below, checks
that the three agree, and loads rows from the Hub or from local parquet files with the
frames left as undecoded bytes until :func:`frame_image` asks for one.

Parsing never loses a segment over the dataset's known slips (mismatched closing tags,
cited ids without a table row, a missing final ``</gdi>``); a story that cannot be
parsed at all raises :class:`StoryFormatError`, and a table row that cannot be read is
skipped and counted in :attr:`ChainOfThought.skip_reasons`.
"""

from __future__ import annotations

import io
import math
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .config import MissingAssetError, hub_reachable
from .io import stable_hash

if TYPE_CHECKING:
    import datasets
    from PIL import Image as PILImage

__all__ = [
    "HUB_DATASET",
    "ENTITY_KINDS",
    "StoryFormatError",
    "CorruptFrameError",
    "Mention",
    "Segment",
    "Entity",
    "FrameAnnotation",
    "ChainOfThought",
    "ParsedStory",
    "id_kind",
    "strip_tags",
    "parse_segment",
    "parse_story",
    "edit_segment",
    "parse_chain_of_thought",
    "parse_row",
    "validate_story",
    "parse_dataset",
    "validate_dataset",
    "load_stories",
    "load_external_test",
    "dataset_available",
    "story_index",
    "frame_bytes",
    "frame_image",
    "dataset_fingerprint",
    "pair_frames",
    "StudyData",
    "load_study_data",
    "frame_size",
    "sample_frames",
    "story_table",
    "segment_table",
    "segment_token_lengths",
    "box_area_fraction",
    "entity_table",
]

HUB_DATASET = "daniel3303/StoryReasoning"
#: Id prefixes with a meaning: character, object, background element, landmark.
ENTITY_KINDS = ("char", "obj", "bg", "lm")
TEXT_COLUMNS = ["story_id", "frame_count", "chain_of_thought", "story"]


class StoryFormatError(ValueError):
    """A story's text cannot be split into frame segments."""


class CorruptFrameError(ValueError):
    """A frame's image bytes are missing or cannot be decoded."""


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


def parse_dataset(ds: datasets.Dataset, *, check_images: bool = False) -> tuple[list[ParsedStory], pd.DataFrame]:
    """Parse and validate every row; return the usable stories and a table of exclusions.

    The exclusions table has one row per problem: ``story_id``, ``reason`` (e.g.
    ``"missing segments"``, ``"story format"``, ``"corrupt frame"``, ``"duplicate story
    id"``) and ``detail``. With ``check_images`` every frame is decoded once (slow on
    the full dataset); otherwise only the number of images is checked.
    """
    from tqdm.auto import tqdm

    counts = _image_counts(ds)
    text_rows = ds.select_columns(TEXT_COLUMNS)
    stories: list[ParsedStory] = []
    excluded: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, row in enumerate(tqdm(text_rows, desc="parsing stories", unit="story")):
        story_id = str(row["story_id"])
        problems: list[str] = []
        if story_id in seen:
            problems.append("duplicate story id: the id occurs earlier in the dataset")
        seen.add(story_id)
        try:
            story = parse_row(row)
        except StoryFormatError as err:
            problems.append(f"story format: {err}")
        else:
            problems += validate_story(story_id, story.frame_count, story.segments, story.cot, counts[i])
        if check_images:
            problems += _corrupt_frames(ds[i]["images"])
        if problems:
            for problem in problems:
                reason, _, detail = problem.partition(": ")
                excluded.append({"story_id": story_id, "reason": reason, "detail": detail})
        else:
            stories.append(story)
    return stories, pd.DataFrame(excluded, columns=["story_id", "reason", "detail"])


def validate_dataset(ds: datasets.Dataset, *, check_images: bool = False) -> tuple[list[str], pd.DataFrame]:
    """The ids of the usable stories and the exclusions table (see :func:`parse_dataset`)."""
    stories, excluded = parse_dataset(ds, check_images=check_images)
    return [s.story_id for s in stories], excluded


def _image_counts(ds: datasets.Dataset) -> list[int]:
    """Number of images of each row, read from the Arrow list lengths (no bytes copied)."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(ds.with_format("arrow")["images"])
    return [0 if n is None else n for n in lengths.to_pylist()]


def _corrupt_frames(images: Sequence[Any]) -> list[str]:
    problems = []
    for frame in range(1, len(images) + 1):
        try:
            frame_image(images, frame)
        except CorruptFrameError as err:
            problems.append(f"corrupt frame: {err}")
    return problems


# ----------------------------------------------------------------------------- loading


def _split_files(cfg_data: Mapping[str, Any], split: str, cache_dir: Path | None, seed: int) -> list[Path]:
    """The files of ``split`` (``"train"`` | ``"test"``) from the profile's source: the Hub's
    shards needed for ``n_stories`` rows, else the local (or generated synthetic) folder's."""
    source = str(cfg_data["source"])
    if source == "hub":
        return _hub_split_files(split, cfg_data.get("n_stories"))
    return _local_split_files(_local_dir(source, cfg_data, cache_dir, seed), split)


def load_stories(cfg_data: Mapping[str, Any], cache_dir: Path | None = None, *, seed: int = 42) -> datasets.Dataset:
    """Load the stories a profile's ``data`` section asks for, images left undecoded.

    ``cfg_data["source"]`` is ``"hub"`` (the Hub's ``train`` split), ``"synthetic"``
    (generated once by :func:`helpers.synthetic.make_dataset` with ``n_stories``, ``seed``
    and the options in ``cfg_data["synthetic"]``, into ``cache_dir/synthetic-<hash of
    those>``) or a folder of parquet files in the Hub schema (``train-*``/``test-*`` files
    when it holds both splits). ``cfg_data["n_stories"]`` keeps the first N rows (all
    when null); from the Hub only the shards needed for them are downloaded.
    ``cache_dir`` also holds the ``datasets`` Arrow cache; Hub downloads go to the
    Hugging Face cache (``HF_HOME``). Offline with nothing cached raises
    :class:`helpers.config.MissingAssetError`.
    """
    return _load_parquet(_split_files(cfg_data, "train", cache_dir, seed), cfg_data.get("n_stories"), cache_dir)


def load_external_test(
    cfg_data: Mapping[str, Any], cache_dir: Path | None = None, *, seed: int = 42
) -> datasets.Dataset | None:
    """The Hub's own ``test`` split (or a local source's ``test-*`` files) when
    ``cfg_data["hub_external_test"]`` is true, else None. ``n_stories`` caps it too, so
    a quick run stays quick. Raises ``ValueError`` if a local source has no test files.
    """
    if not cfg_data.get("hub_external_test"):
        return None
    source = str(cfg_data["source"])
    files = _split_files(cfg_data, "test", cache_dir, seed)
    if source != "hub" and not files:
        raise ValueError(f"hub_external_test is set but {source!r} has no test-*.parquet files")
    return _load_parquet(files, cfg_data.get("n_stories"), cache_dir)


def dataset_available(cfg_data: Mapping[str, Any]) -> bool:
    """Whether :func:`load_stories` (and :func:`load_external_test` when asked for) can get
    their data: a synthetic source always can, a local folder when it holds parquet
    files, the Hub when it is reachable or its cache holds the shards needed."""
    import huggingface_hub as hf

    source = str(cfg_data["source"])
    if source == "synthetic":
        return True
    if source != "hub":
        return any(Path(source).expanduser().rglob("*.parquet"))
    if not hf.is_offline_mode() and hub_reachable():
        return True
    splits = ["train", "test"] if cfg_data.get("hub_external_test") else ["train"]
    try:
        for split in splits:
            _cached_hub_files(split, cfg_data.get("n_stories"))
    except MissingAssetError:
        return False
    return True


def _load_parquet(files: Sequence[Path], n_stories: int | None, cache_dir: Path | None) -> datasets.Dataset:
    import datasets

    ds = datasets.load_dataset(
        "parquet",
        data_files=[str(f) for f in files],
        split="train",
        cache_dir=str(cache_dir / "datasets") if cache_dir is not None else None,
    )
    if n_stories is not None and n_stories < len(ds):
        ds = ds.select(range(n_stories))
    return ds.cast_column("images", datasets.List(datasets.Image(decode=False)))


def _local_dir(source: str, cfg_data: Mapping[str, Any], cache_dir: Path | None, seed: int) -> Path:
    """The parquet folder of a local source, generating the synthetic one on first use."""
    if source != "synthetic":
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ValueError(f"data source {source!r} is neither 'hub', 'synthetic' nor a folder")
        return folder
    if cache_dir is None:
        raise ValueError("the synthetic source needs a cache_dir to generate its parquet files in")
    from .synthetic import make_dataset

    options = {"seed": seed, **(cfg_data.get("synthetic") or {})}
    if cfg_data.get("n_stories") is not None:
        options["n_stories"] = cfg_data["n_stories"]
    folder = Path(cache_dir) / f"synthetic-{stable_hash(options)}"
    if not any(folder.rglob("*.parquet")):
        make_dataset(folder, **options)
    return folder


def _split_of_file(name: str) -> str | None:
    """``"data/train-00000-of-00002.parquet"`` -> ``"train"``; None when the name has no split."""
    parts = Path(name).parts
    stem = Path(name).name
    for split in ("train", "test", "validation"):
        if stem.startswith((f"{split}-", f"{split}.")) or split in parts[:-1]:
            return split
    return None


def _local_split_files(folder: Path, split: str) -> list[Path]:
    """Sorted parquet files of ``split`` under ``folder``; all files when none is split-named."""
    files = sorted(folder.rglob("*.parquet"))
    named = [f for f in files if _split_of_file(f.relative_to(folder).as_posix()) is not None]
    if not named:
        return files if split == "train" else []
    return [f for f in named if _split_of_file(f.relative_to(folder).as_posix()) == split]


def _shard_number(name: str) -> tuple[int, int] | None:
    """``"...-00001-of-00004.parquet"`` -> ``(1, 4)``."""
    m = re.search(r"(\d+)-of-(\d+)\.parquet$", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _hub_split_files(split: str, n_rows: int | None) -> list[Path]:
    """Local paths of the first Hub shards of ``split`` holding at least ``n_rows`` rows.

    Online, the repository's files are listed and shards are downloaded in order only
    until the row count (read from each file's parquet footer) reaches ``n_rows``; all
    of them when ``n_rows`` is None. Offline, the same prefix is taken from the cache.
    """
    import huggingface_hub as hf
    import pyarrow.parquet as pq

    remote = None
    if not hf.is_offline_mode() and hub_reachable():
        try:
            remote = hf.list_repo_files(HUB_DATASET, repo_type="dataset")
        except Exception:  # noqa: BLE001 - any failure to list the repo (network, proxy, HTTP): use the cache
            remote = None
    if remote is None:
        return _cached_hub_files(split, n_rows)

    names = sorted(n for n in remote if n.endswith(".parquet") and _split_of_file(n) == split)
    if not names:
        raise ValueError(f"{HUB_DATASET} lists no parquet file for split {split!r}")
    paths, rows = [], 0
    for name in names:
        if n_rows is not None and rows >= n_rows:
            break
        path = Path(hf.hf_hub_download(HUB_DATASET, name, repo_type="dataset"))
        paths.append(path)
        rows += pq.ParquetFile(path).metadata.num_rows
    return paths


def _cached_hub_files(split: str, n_rows: int | None) -> list[Path]:
    """The cached prefix of ``split``'s shards when the Hub cannot be reached."""
    import huggingface_hub as hf
    import pyarrow.parquet as pq
    from huggingface_hub.errors import LocalEntryNotFoundError

    what = f"the Hugging Face dataset {HUB_DATASET} ({split} split"
    what += f", first {n_rows} stories)" if n_rows is not None else ", all shards)"
    try:
        folder = Path(hf.snapshot_download(HUB_DATASET, repo_type="dataset", local_files_only=True))
    except LocalEntryNotFoundError as err:
        raise MissingAssetError(what, cache_var="HF_HOME") from err

    names = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*.parquet")
        if _split_of_file(p.relative_to(folder).as_posix()) == split
    )
    paths, rows, total = [], 0, None
    for expected, name in enumerate(names):
        number = _shard_number(name)
        if number is not None and number[0] != expected:
            break  # a gap: later shards would not be the rows that follow
        total = number[1] if number is not None else None
        if n_rows is not None and rows >= n_rows:
            break
        paths.append(folder / name)
        rows += pq.ParquetFile(folder / name).metadata.num_rows
    enough = rows >= n_rows if n_rows is not None else (total is None or len(paths) == total)
    if not paths or not enough:
        cached = f"{len(paths)} shard(s) with {rows} rows" if paths else "nothing"
        raise MissingAssetError(what, cache_var="HF_HOME", detail=f"The cache holds {cached} of that split.")
    return paths


def story_index(ds: datasets.Dataset) -> dict[str, int]:
    """Row number of each story id, to fetch a story's images."""
    return {str(sid): i for i, sid in enumerate(ds["story_id"])}


def _image_entry(row_or_images: Mapping[str, Any] | Sequence[Any], frame: int) -> Any:
    images = row_or_images["images"] if isinstance(row_or_images, Mapping) else row_or_images
    if not 1 <= frame <= len(images):
        raise CorruptFrameError(f"frame {frame} requested but the story has {len(images)} images")
    return images[frame - 1]


def frame_bytes(row_or_images: Mapping[str, Any] | Sequence[Any], frame: int) -> bytes:
    """The encoded bytes of 1-based ``frame`` (from a row or its ``images`` list), for hashing.

    Accepts the undecoded ``{"bytes", "path"}`` entries of :func:`load_stories` and raw
    ``bytes``. Raises :class:`CorruptFrameError` when the entry holds no bytes.
    """
    entry = _image_entry(row_or_images, frame)
    if isinstance(entry, (bytes, bytearray)):
        return bytes(entry)
    if isinstance(entry, Mapping):
        if entry.get("bytes"):
            return bytes(entry["bytes"])
        if entry.get("path") and Path(entry["path"]).is_file():
            return Path(entry["path"]).read_bytes()
    raise CorruptFrameError(f"frame {frame} has no image bytes ({type(entry).__name__} entry)")


def frame_image(row_or_images: Mapping[str, Any] | Sequence[Any], frame: int) -> PILImage.Image:
    """Decode 1-based ``frame`` to an RGB PIL image; :class:`CorruptFrameError` if it cannot be.

    Also accepts an already decoded PIL image entry.
    """
    from PIL import Image, UnidentifiedImageError

    entry = _image_entry(row_or_images, frame)
    if isinstance(entry, Image.Image):
        return entry.convert("RGB")
    try:
        with Image.open(io.BytesIO(frame_bytes(row_or_images, frame))) as image:
            return image.convert("RGB")  # convert() forces the full decode
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        # the class name only: PIL's messages hold memory addresses, which would make
        # the exclusion table differ from run to run
        raise CorruptFrameError(f"frame {frame} cannot be decoded ({type(err).__name__})") from err


# ---------------------------------------------------------------------- summary tables


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
    """One row per chain-of-thought entity, with its box size and COCO category (or missing).

    Characters are mapped with :func:`helpers.objects.char_category` (a person unless the
    description says otherwise), objects with :func:`helpers.objects.to_coco`.
    """
    from .objects import char_category, to_coco

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


def dataset_fingerprint(ds: datasets.Dataset) -> str:
    """A content hash of the loaded rows (ids, texts and every frame's bytes), in row order.

    Two runs report the same fingerprint exactly when they saw the same data, whatever
    the files were called or where they were cached.
    """
    import hashlib

    h = hashlib.sha1()
    for row in ds.with_format("arrow").iter(batch_size=64):
        for column in ("story_id", "story", "chain_of_thought"):
            for value in row[column].to_pylist():
                h.update(str(value).encode("utf-8"))
                h.update(b"\0")
        for images in row["images"].to_pylist():
            for entry in images or []:
                h.update((entry or {}).get("bytes") or b"")
                h.update(b"\0")
    return h.hexdigest()[:16]


def frame_size(row_or_images: Mapping[str, Any] | Sequence[Any], frame: int) -> tuple[int, int]:
    """``(width, height)`` of a frame, read from its header without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(frame_bytes(row_or_images, frame))) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise CorruptFrameError(f"frame {frame} cannot be decoded ({type(err).__name__})") from err


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


def segment_token_lengths(stories: Iterable[ParsedStory], tokenizer: Any) -> list[int]:
    """Length in tokens of every segment's plain text (the rows of :func:`segment_table`).

    ``tokenizer`` is a Hugging Face tokenizer; lengths are counted before any truncation.
    """
    texts = [seg.plain for s in stories for seg in s.segments]
    return [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]] if texts else []


def box_area_fraction(entities: pd.DataFrame, ds: datasets.Dataset) -> pd.Series:
    """Each entity's box area as a fraction of its frame's area (NaN without a box or a readable frame).

    ``entities`` is :func:`entity_table`'s output; frame sizes come from the image headers.
    """
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


def pair_frames(pairs: pd.DataFrame, stories: Sequence[datasets.Dataset]) -> dict[tuple[str, int], bytes]:
    """The encoded bytes of every ``(story_id, frame)`` the pairs use, read from the loaded datasets.

    ``stories`` are the datasets of :func:`load_stories` (and :func:`load_external_test`),
    images undecoded. A frame without bytes maps to ``b""``, which the detector and
    CLIP count as undecodable. Raises ``ValueError`` for a story id found in no dataset, or in two.
    """
    where: dict[str, tuple[datasets.Dataset, int]] = {}
    for ds in stories:
        images = ds.select_columns(["images"])
        for story_id, row in story_index(ds).items():
            if story_id in where:
                raise ValueError(f"story {story_id} occurs in two of the datasets given")
            where[story_id] = (images, row)
    wanted: dict[str, list[int]] = {}
    for story_id, frame in zip(pairs["story_id"].astype(str), pairs["frame"].astype(int)):
        wanted.setdefault(story_id, []).append(frame)
    if unknown := sorted(set(wanted) - set(where)):
        raise ValueError(f"{len(unknown)} story id(s) of the pairs are in no dataset given, e.g. {unknown[:3]}")

    out: dict[tuple[str, int], bytes] = {}
    for story_id, frames in wanted.items():
        images, row = where[story_id]
        entries = images[row]["images"]
        for frame in dict.fromkeys(frames):
            try:
                out[(story_id, frame)] = frame_bytes(entries, frame)
            except CorruptFrameError:
                out[(story_id, frame)] = b""
    return out


@dataclass(frozen=True)
class StudyData:
    """What the chapters after 01 start from: the loaded datasets, their usable stories, the pairs."""

    datasets: tuple[datasets.Dataset, ...]  # the study's stories, then the external test when loaded
    stories: tuple[ParsedStory, ...]
    pairs: pd.DataFrame


def load_study_data(cfg: Mapping[str, Any], pairs_path: Path, cache_dir: Path) -> StudyData:
    """Load a profile's datasets (and external test), parse their stories, and read chapter 01's pairs.

    ``cfg`` is the whole profile; ``pairs_path`` is ``paths.pairs``. Raises
    ``FileNotFoundError`` naming chapter 01 when the pairs have not been built.
    """
    if not Path(pairs_path).exists():
        raise FileNotFoundError(f"{pairs_path} is missing: run chapter 01 (data) first")
    seed = int(cfg.get("seed", 42))
    loaded = [load_stories(cfg["data"], cache_dir, seed=seed), load_external_test(cfg["data"], cache_dir, seed=seed)]
    sources = tuple(ds for ds in loaded if ds is not None)
    stories = tuple(story for ds in sources for story in parse_dataset(ds)[0])
    return StudyData(datasets=sources, stories=stories, pairs=pd.read_parquet(pairs_path))
