"""A small synthetic StoryReasoning: the Hub's schema and text format, with true boxes.

:func:`make_dataset` writes stories that look like the real ones to every consumer of the
data (the same parquet columns, ``<gdi>``/``<gdo>``/``<gda>``/``<gdl>`` tags and
chain-of-thought tables), so the whole study runs offline in seconds and tests can assert
on known answers:

* every frame is drawn from the boxes its chain of thought lists: people as tall figures
  in the colour of their clothes, each object category as its own coloured shape;
* every spatial statement of the story ("a mug rests on the table", "Anna sits on the
  sofa", "the plant stands behind the couch") is true of those boxes: a scene is laid
  out first (furniture on the floor, small things touching the top of a table, nearer
  things lower in the frame), and the text states only relations the layout made;
* stories come from a few synthetic *movies* in contiguous id blocks, each with its own
  room, cast and props, as the real stories do, so a split by id block keeps movies apart;
* the real data's quirks appear at a small rate: mismatched closing tags
  (``<gda char2>stands</gdo>``), settings cited with no chain-of-thought row (every
  ``<gdl bgN>``), characters mentioned in a frame they are not in, empty tables.

Options add the faults the loaders must survive: frames whose bytes do not decode, and
stories whose number of ``<gdi>`` segments disagrees with ``frame_count``.

The objects use nouns the lexicon maps to COCO (couch, "sofa", cup, "mug", ...) and a few
it must map to ``None`` (wall, window, door, blanket, cardboard box, lamp): see
:data:`KINDS`.
"""

from __future__ import annotations

import io
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, ImageDraw

from ..io import atomic_write_bytes

__all__ = ["DATA_FILE", "RELATIONS", "ThingKind", "KINDS", "make_dataset"]

#: Name of the parquet file :func:`make_dataset` writes (the Hub's split prefix, one shard).
DATA_FILE = "train-00000-of-00001.parquet"

#: The spatial relations synthetic stories state, each true of the frame's boxes.
RELATIONS: tuple[str, ...] = (
    "on", "under", "next to", "beside", "left of", "right of", "behind", "in front of",
    "holding", "sitting on",
)  # fmt: skip

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]
Painter = Callable[[ImageDraw.ImageDraw, Box, RGB], None]

# Reference frame height: sizes below are pixels of a 240 px high frame (the Hub's).
_REF_HEIGHT = 240
# Where the wall meets the floor, as a fraction of the frame height.
_HORIZON = 0.62


# ----------------------------------------------------------------------------- painters
# Each draws one thing filling its box (x1, y1, x2, y2); shapes differ per category.


def _rect(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.rectangle(b, fill=c, outline=_shade(c, 0.6))


def _ellipse(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.ellipse(b, fill=c, outline=_shade(c, 0.6))


def _rounded(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.rounded_rectangle(b, radius=min(b[2] - b[0], b[3] - b[1]) / 4, fill=c, outline=_shade(c, 0.7))


def _figure(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    """A person: head, torso in the clothes' colour, legs (a bust when the box is squat)."""
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    bust = h < 1.6 * w
    r = min(0.3 * w, 0.25 * h) if bust else min(0.3 * w, 0.09 * h)
    cx = (x1 + x2) / 2
    d.ellipse((cx - r, y1, cx + r, y1 + 2 * r), fill=(232, 166, 126))
    hips = y2 if bust else y1 + 0.6 * h
    d.rounded_rectangle((x1, y1 + 2 * r, x2, hips), radius=w / 5, fill=c)
    if not bust:
        d.rectangle((x1 + 0.12 * w, hips, cx - 0.05 * w, y2), fill=(45, 45, 60))
        d.rectangle((cx + 0.05 * w, hips, x2 - 0.12 * w, y2), fill=(45, 45, 60))


def _animal(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    d.rectangle((x1 + 0.15 * w, y1 + 0.6 * h, x1 + 0.25 * w, y2), fill=_shade(c, 0.7))
    d.rectangle((x2 - 0.4 * w, y1 + 0.6 * h, x2 - 0.3 * w, y2), fill=_shade(c, 0.7))
    d.ellipse((x1, y1 + 0.3 * h, x2 - 0.2 * w, y1 + 0.8 * h), fill=c)
    d.ellipse((x2 - 0.35 * w, y1, x2, y1 + 0.5 * h), fill=c)


def _table(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    legs = max(3.0, 0.06 * w)
    d.rectangle((x1 + 0.05 * w, y1, x1 + 0.05 * w + legs, y2), fill=_shade(c, 0.7))
    d.rectangle((x2 - 0.05 * w - legs, y1, x2 - 0.05 * w, y2), fill=_shade(c, 0.7))
    d.rectangle((x1, y1, x2, y1 + 0.18 * h), fill=c)


def _chair(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    d.rectangle((x1, y1, x1 + 0.18 * w, y2), fill=_shade(c, 0.8))
    d.rectangle((x2 - 0.12 * w, y1 + 0.5 * h, x2, y2), fill=_shade(c, 0.8))
    d.rectangle((x1, y1 + 0.45 * h, x2, y1 + 0.58 * h), fill=c)


def _couch(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    d.rounded_rectangle((x1 + 0.05 * w, y1, x2 - 0.05 * w, y1 + 0.55 * h), radius=h / 6, fill=_shade(c, 0.8))
    d.rectangle((x1, y1 + 0.45 * h, x2, y2 - 0.1 * h), fill=c)
    d.rectangle((x1, y1 + 0.3 * h, x1 + 0.08 * w, y2 - 0.1 * h), fill=_shade(c, 0.9))
    d.rectangle((x2 - 0.08 * w, y1 + 0.3 * h, x2, y2 - 0.1 * h), fill=_shade(c, 0.9))
    d.rectangle((x1 + 0.04 * w, y2 - 0.1 * h, x1 + 0.08 * w, y2), fill=(40, 30, 20))
    d.rectangle((x2 - 0.08 * w, y2 - 0.1 * h, x2 - 0.04 * w, y2), fill=(40, 30, 20))


def _bed(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    d.rectangle((x1, y1, x1 + 0.08 * w, y2), fill=(110, 80, 60))
    d.rectangle((x1, y1 + 0.55 * h, x2, y2), fill=(110, 80, 60))
    d.rounded_rectangle((x1 + 0.08 * w, y1 + 0.3 * h, x2, y1 + 0.62 * h), radius=h / 8, fill=c)


def _plant(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    d.ellipse((x1, y1, x2, y1 + 0.7 * h), fill=c)
    d.polygon([(x1 + 0.2 * w, y1 + 0.65 * h), (x2 - 0.2 * w, y1 + 0.65 * h), (x2 - 0.3 * w, y2), (x1 + 0.3 * w, y2)],
              fill=(180, 90, 50))  # fmt: skip


def _screen(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    d.rectangle((x1, y1, x2, y1 + 0.8 * h), fill=c)
    d.rectangle((x1 + 0.08 * w, y1 + 0.1 * h, x2 - 0.08 * w, y1 + 0.7 * h), fill=(70, 110, 170))
    d.rectangle((x1 + 0.3 * w, y1 + 0.8 * h, x2 - 0.3 * w, y2), fill=_shade(c, 0.7))


def _narrow_top(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    """Bottles, lamps, glasses: a wide body under a narrow neck (or stem)."""
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    d.rectangle((x1 + 0.35 * w, y1, x2 - 0.35 * w, y2), fill=_shade(c, 0.8))
    d.rounded_rectangle((x1, y1 + 0.4 * h, x2, y2), radius=w / 4, fill=c)


def _clock(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    d.ellipse(b, fill=c, outline=(20, 20, 20), width=2)
    d.line((cx, cy, cx, y1 + 0.2 * (y2 - y1)), fill=(20, 20, 20), width=2)
    d.line((cx, cy, x2 - 0.25 * (x2 - x1), cy), fill=(20, 20, 20), width=2)


def _umbrella(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    d.line(((x1 + x2) / 2, y1 + 0.3 * h, (x1 + x2) / 2, y2), fill=(30, 30, 30), width=max(2, round(w / 25)))
    d.pieslice((x1, y1, x2, y1 + 0.8 * h), 180, 360, fill=c)


def _handbag(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    d.arc((x1 + 0.2 * w, y1, x2 - 0.2 * w, y1 + 0.7 * h), 180, 360, fill=_shade(c, 0.6), width=2)
    d.rounded_rectangle((x1, y1 + 0.35 * h, x2, y2), radius=w / 6, fill=c)


def _window(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    d.rectangle(b, fill=c, outline=(245, 245, 245), width=4)
    d.line(((x1 + x2) / 2, y1, (x1 + x2) / 2, y2), fill=(245, 245, 245), width=3)
    d.line((x1, (y1 + y2) / 2, x2, (y1 + y2) / 2), fill=(245, 245, 245), width=3)


def _door(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    x1, y1, x2, y2 = b
    d.rectangle(b, fill=c, outline=_shade(c, 0.6), width=3)
    d.ellipse((x2 - 0.2 * (x2 - x1), (y1 + y2) / 2, x2 - 0.1 * (x2 - x1), (y1 + y2) / 2 + 0.05 * (y2 - y1)),
              fill=(220, 190, 60))  # fmt: skip


def _nothing(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    """The wall is the frame's background, painted before everything else."""


def _shade(c: RGB, f: float) -> RGB:
    return (round(c[0] * f), round(c[1] * f), round(c[2] * f))


# ----------------------------------------------------------------------------- things


@dataclass(frozen=True)
class ThingKind:
    """Everything a synthetic story knows about one kind of drawable thing.

    ``names`` are (chain-of-thought description, noun the story uses) variants; a story
    picks one per thing and keeps it. ``size`` is (min width, max width, min height, max
    height) in pixels of a 240 px high frame (a door's height and the wall's box come from
    the room instead). ``function`` fills the Objects table's Function column.
    """

    names: tuple[tuple[str, str], ...]
    size: tuple[int, int, int, int]
    function: str
    colour: RGB
    paint: Painter


#: Drawable things by category: a COCO category name, or a noun COCO lacks ("wall",
#: "window", "door", "blanket", "box", "lamp"), whose names the lexicon maps to ``None``.
#: Every name maps (through :func:`helpers.lexicon.to_coco`) to its category or ``None``.
KINDS: dict[str, ThingKind] = {
    # on the floor
    "dining table": ThingKind(
        names=(("Table", "table"), ("Wooden table", "table"), ("Desk", "desk")),
        size=(130, 170, 62, 72), function="Furniture", colour=(139, 94, 60), paint=_table,
    ),
    "couch": ThingKind(
        names=(("Couch", "couch"), ("Sofa", "sofa"), ("Grey sofa", "sofa")),
        size=(150, 190, 62, 74), function="Furniture", colour=(88, 104, 150), paint=_couch,
    ),
    "chair": ThingKind(
        names=(("Chair", "chair"), ("Wooden chair", "chair"), ("Armchair", "armchair")),
        size=(50, 60, 72, 84), function="Furniture", colour=(150, 84, 48), paint=_chair,
    ),
    "bed": ThingKind(
        names=(("Bed", "bed"), ("Double bed", "bed")),
        size=(170, 200, 55, 65), function="Furniture", colour=(228, 228, 238), paint=_bed,
    ),
    "bench": ThingKind(
        names=(("Bench", "bench"), ("Wooden bench", "bench")),
        size=(120, 150, 40, 50), function="Seating", colour=(120, 86, 52), paint=_table,
    ),
    "potted plant": ThingKind(
        names=(("Potted plant", "potted plant"), ("Plant", "plant"), ("Houseplant", "houseplant")),
        size=(38, 50, 80, 100), function="Decoration", colour=(46, 139, 60), paint=_plant,
    ),
    "dog": ThingKind(
        names=(("Dog", "dog"), ("Brown dog", "dog"), ("Puppy", "puppy")),
        size=(56, 70, 38, 46), function="Pet", colour=(150, 100, 55), paint=_animal,
    ),
    "cat": ThingKind(
        names=(("Cat", "cat"), ("Black cat", "cat"), ("Kitten", "kitten")),
        size=(38, 48, 28, 34), function="Pet", colour=(70, 70, 78), paint=_animal,
    ),
    "box": ThingKind(
        names=(("Cardboard box", "cardboard box"), ("Box", "box")),
        size=(48, 66, 36, 48), function="Storage", colour=(196, 154, 108), paint=_rect,
    ),
    # small things, on a support or in a hand
    "cup": ThingKind(
        names=(("Cup", "cup"), ("Coffee mug", "mug"), ("Mug", "mug")),
        size=(14, 20, 16, 22), function="Drink container", colour=(236, 236, 230), paint=_rounded,
    ),
    "bottle": ThingKind(
        names=(("Bottle", "bottle"), ("Wine bottle", "bottle")),
        size=(12, 16, 36, 46), function="Drink container", colour=(40, 120, 70), paint=_narrow_top,
    ),
    "wine glass": ThingKind(
        names=(("Wine glass", "wine glass"), ("Glass", "glass")),
        size=(12, 16, 26, 32), function="Drink container", colour=(200, 225, 235), paint=_narrow_top,
    ),
    "bowl": ThingKind(
        names=(("Bowl", "bowl"),),
        size=(30, 40, 12, 16), function="Container", colour=(230, 196, 140), paint=_ellipse,
    ),
    "vase": ThingKind(
        names=(("Vase", "vase"), ("Flower vase", "vase")),
        size=(18, 24, 34, 44), function="Decoration", colour=(70, 130, 180), paint=_ellipse,
    ),
    "book": ThingKind(
        names=(("Book", "book"), ("Old book", "book"), ("Novel", "novel")),
        size=(26, 36, 10, 14), function="Reading", colour=(150, 36, 40), paint=_rect,
    ),
    "laptop": ThingKind(
        names=(("Laptop", "laptop"),),
        size=(44, 56, 30, 36), function="Work", colour=(185, 185, 195), paint=_screen,
    ),
    "tv": ThingKind(
        names=(("Television", "television"), ("TV", "tv"), ("Computer monitor", "monitor")),
        size=(70, 90, 48, 60), function="Entertainment", colour=(25, 25, 30), paint=_screen,
    ),
    "cell phone": ThingKind(
        names=(("Cell phone", "cell phone"), ("Phone", "phone"), ("Smartphone", "smartphone")),
        size=(9, 12, 16, 20), function="Communication", colour=(20, 20, 24), paint=_rounded,
    ),
    "remote": ThingKind(
        names=(("Remote", "remote"), ("Remote control", "remote control")),
        size=(20, 26, 7, 9), function="Control", colour=(45, 45, 50), paint=_rect,
    ),
    "clock": ThingKind(
        names=(("Clock", "clock"), ("Alarm clock", "clock")),
        size=(24, 30, 24, 30), function="Timekeeping", colour=(245, 245, 240), paint=_clock,
    ),
    "teddy bear": ThingKind(
        names=(("Teddy bear", "teddy bear"),),
        size=(26, 34, 30, 38), function="Toy", colour=(170, 118, 64), paint=_animal,
    ),
    "handbag": ThingKind(
        names=(("Handbag", "handbag"), ("Leather bag", "bag"), ("Purse", "purse")),
        size=(26, 32, 22, 28), function="Storage", colour=(128, 66, 30), paint=_handbag,
    ),
    "umbrella": ThingKind(
        names=(("Umbrella", "umbrella"), ("Red umbrella", "umbrella")),
        size=(60, 76, 66, 80), function="Protection", colour=(170, 30, 60), paint=_umbrella,
    ),
    "lamp": ThingKind(
        names=(("Lamp", "lamp"), ("Desk lamp", "desk lamp")),
        size=(22, 30, 44, 56), function="Lighting", colour=(245, 222, 150), paint=_narrow_top,
    ),
    "blanket": ThingKind(
        names=(("Blanket", "blanket"), ("Blue blanket", "blue blanket"), ("Wool blanket", "wool blanket")),
        size=(60, 90, 22, 30), function="Bedding", colour=(60, 96, 196), paint=_rounded,
    ),
    # the room
    "window": ThingKind(
        names=(("Window", "window"), ("Large window", "window")),
        size=(70, 100, 60, 80), function="Structure", colour=(176, 212, 238), paint=_window,
    ),
    "door": ThingKind(
        names=(("Door", "door"), ("Wooden door", "door")),
        size=(55, 70, 0, 0), function="Access point", colour=(112, 74, 44), paint=_door,
    ),
    "wall": ThingKind(
        names=(("Wall", "wall"), ("Background wall", "wall")),
        size=(0, 0, 0, 0), function="Structure", colour=(0, 0, 0), paint=_nothing,
    ),
}

# Things that get a ``bg`` id (the room itself) rather than an ``obj`` id.
_ROOM = frozenset({"window", "door", "wall"})
# What can lie on a seat, and which furniture can be sat on.
_ON_SEAT = {"couch": ("blanket", "book", "cat", "handbag"), "bed": ("blanket", "teddy bear", "book", "cat"),
            "bench": ("handbag", "book")}  # fmt: skip
_SEATS = ("couch", "chair", "bed", "bench")


@dataclass(frozen=True)
class _Setting:
    """A room a movie is set in: colours, furniture and the props that go with it."""

    place: str  # the story's word for it: "the living room"
    location: str  # the Setting table's Location row
    lights: tuple[str, ...]  # <gdl> phrases, and the Setting table's Lighting row
    wall: RGB  # movies in this room jitter it a little
    floor: RGB
    furniture: tuple[str, ...]  # what stands on the floor
    on_table: tuple[str, ...]  # small things on a table or bench
    held: tuple[str, ...]  # what people carry
    under: tuple[str, ...]  # what hides under a table


_SETTINGS: tuple[_Setting, ...] = (
    _Setting(
        place="living room",
        location="A cosy living room",
        lights=("warm lamplight", "soft evening light"),
        wall=(214, 190, 160),
        floor=(128, 100, 74),
        furniture=("couch", "dining table", "potted plant", "chair"),
        on_table=("cup", "book", "remote", "vase", "tv", "lamp", "bottle"),
        held=("cup", "book", "remote", "cell phone"),
        under=("cat", "box"),
    ),
    _Setting(
        place="kitchen",
        location="A small kitchen",
        lights=("bright morning light", "harsh overhead light"),
        wall=(200, 226, 196),
        floor=(150, 150, 140),
        furniture=("dining table", "chair", "potted plant"),
        on_table=("cup", "bottle", "wine glass", "bowl", "vase"),
        held=("cup", "wine glass", "bottle"),
        under=("dog", "cat"),
    ),
    _Setting(
        place="office",
        location="A quiet office",
        lights=("cold fluorescent light", "grey daylight"),
        wall=(176, 194, 216),
        floor=(96, 96, 110),
        furniture=("dining table", "chair", "potted plant", "box"),
        on_table=("laptop", "tv", "book", "cup", "clock", "lamp"),
        held=("cell phone", "book", "cup", "handbag"),
        under=("box", "handbag"),
    ),
    _Setting(
        place="bedroom",
        location="A dim bedroom",
        lights=("dim bedside light", "pale moonlight"),
        wall=(206, 182, 222),
        floor=(110, 84, 70),
        furniture=("bed", "chair", "dining table"),
        on_table=("clock", "book", "lamp", "cup"),
        held=("book", "cell phone", "teddy bear"),
        under=("cat", "box"),
    ),
    _Setting(
        place="hallway",
        location="A narrow hallway",
        lights=("flickering light", "neutral lighting"),
        wall=(170, 168, 160),
        floor=(96, 84, 72),
        furniture=("bench", "potted plant", "box"),
        on_table=("handbag", "book", "cup"),
        held=("umbrella", "handbag", "cell phone"),
        under=("dog", "handbag"),
    ),
)

_WOMEN = ("Anna", "Clara", "Elena", "Grace", "Iris", "Kate", "Maya", "Olga", "Rosa", "Tara")
_MEN = ("Ben", "David", "Frank", "Henry", "Jack", "Leo", "Nick", "Paul", "Sam", "Victor")
_PETS = {"dog": ("Rex", "Biscuit", "Max"), "cat": ("Luna", "Milo", "Shadow")}
_CLOTHES: tuple[tuple[str, RGB], ...] = (
    ("red", (190, 40, 40)), ("blue", (40, 70, 180)), ("green", (40, 140, 70)), ("yellow", (220, 190, 40)),
    ("purple", (120, 60, 150)), ("orange", (230, 120, 30)), ("black", (30, 30, 30)), ("white", (240, 240, 240)),
)  # fmt: skip
_GARMENTS = ("coat", "jacket", "sweater", "shirt")
_EMOTIONS = ("Calm", "Tense", "Worried", "Focused", "Hopeful", "Sad", "Curious", "Determined", "Neutral")
_CHAR_FUNCTIONS = ("Introduces the protagonist", "Builds tension", "Shows the relationship", "Advances the plot")
_OBJ_FUNCTIONS = ("Sets the scene", "Adds detail", "Supports the action", "Adds to the atmosphere")
_PHASES = ("Introduction", "Development", "Conflict", "Turning Point", "Conclusion")


@dataclass(frozen=True)
class _Character:
    id: str  # "char1"
    name: str
    pronoun: str  # "she", "he" or "it"
    description: str  # chain-of-thought description: "Woman in a red coat", "A small brown dog"
    category: str  # "person", "dog" or "cat"
    colour: RGB


@dataclass(frozen=True)
class _Movie:
    setting: _Setting
    wall: RGB
    cast: tuple[_Character, ...]


@dataclass(frozen=True)
class _Placed:
    """One thing drawn in one frame. ``z`` orders drawing: higher is painted later."""

    id: str
    category: str
    box: Box
    z: int


@dataclass
class _Story:
    """Per-story state while a story is generated: its random stream and its ids.

    A story has one thing per category (the same couch, ``obj3``, in every frame it is
    in); ``in_frame`` holds the categories the frame being laid out already uses, so a
    frame never shows two things with one id.
    """

    rng: random.Random
    movie: _Movie
    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # thing id -> (description, noun)
    ids: dict[str, str] = field(default_factory=dict)  # category -> thing id
    counts: dict[str, int] = field(default_factory=lambda: {"obj": 0, "bg": 0})
    in_frame: set[str] = field(default_factory=set)

    def take(self, category: str) -> str:
        """The id of this story's thing of ``category`` (created on first use), now in the frame."""
        if category not in self.ids:
            self.ids[category] = self.new_id("bg" if category in _ROOM else "obj")
            self.names[self.ids[category]] = self.rng.choice(KINDS[category].names)
        self.in_frame.add(category)
        return self.ids[category]

    def free(self, categories: Sequence[str]) -> list[str]:
        """Those of ``categories`` the frame does not show yet, nor the cast's own pets."""
        pets = {c.category for c in self.movie.cast}
        return [c for c in categories if c not in self.in_frame and c not in pets]

    def new_id(self, prefix: str) -> str:
        self.counts[prefix] += 1
        return f"{prefix}{self.counts[prefix]}"

    def char(self, char_id: str) -> _Character:
        return next(c for c in self.movie.cast if c.id == char_id)

    def noun(self, thing_id: str) -> str:
        """What the story calls a thing: a character's name, an object's noun."""
        return self.char(thing_id).name if thing_id.startswith("char") else self.names[thing_id][1]


# ----------------------------------------------------------------------------- public


def make_dataset(
    out_dir: Path,
    *,
    n_stories: int = 12,
    frames: Sequence[int] = (5, 8),
    seed: int = 42,
    first_story_id: int = 1000,
    image_size: Sequence[int] = (576, 240),
    corrupt_frames: int = 0,
    malformed_stories: int = 0,
    stories_per_movie: int = 4,
    frames_mode: int | None = None,
    widths: Sequence[int] | None = None,
) -> Path:
    """Write a synthetic StoryReasoning split to ``out_dir/DATA_FILE``; return that path.

    The parquet file has the Hub's columns and types (``story_id`` string, ``images`` a
    list of ``datasets`` Image structs ``{bytes, path}`` holding JPEG bytes,
    ``frame_count`` int32, ``chain_of_thought`` and ``story`` strings), so
    ``datasets.load_dataset("parquet", ...)`` reads the frames back as images. Story ids
    are ``first_story_id, first_story_id + 1, ...``; each block of ``stories_per_movie``
    ids is one movie (own room, cast and props). Each story has between ``frames[0]`` and
    ``frames[1]`` frames of ``image_size`` (width, height) pixels. The same arguments
    always give the same bytes.

    The frame count is uniform over ``frames`` unless ``frames_mode`` is given: then it is
    drawn from a triangular distribution over ``frames`` peaking there (StoryReasoning's 5
    to 22 frames with median 13 are ``frames=(5, 22), frames_mode=12``). ``widths``
    ``(min, max)`` draws each story's frame width uniformly from that range (the real
    frames are 240 px high and about 560-580 wide), replacing ``image_size``'s width.

    ``corrupt_frames`` frames (chosen over the whole split) get bytes no image library
    decodes; ``malformed_stories`` stories lose their last ``<gdi>`` segment, so their
    segment count is ``frame_count - 1``. Neither option changes anything else: the
    other frames and stories are those of the clean dataset with the same seed.

    Raises ``ValueError`` for counts or sizes that cannot be honoured.
    """
    lo, hi = (int(v) for v in frames)
    width, height = (int(v) for v in image_size)
    if n_stories < 1 or stories_per_movie < 1:
        raise ValueError(f"n_stories ({n_stories}) and stories_per_movie ({stories_per_movie}) must be at least 1")
    if not 1 <= lo <= hi:
        raise ValueError(f"frames must be (min, max) with 1 <= min <= max, got {tuple(frames)}")
    if height < 96 or width < height:
        raise ValueError(f"image_size must be (width, height) with width >= height >= 96, got {tuple(image_size)}")
    if frames_mode is not None and not lo <= frames_mode <= hi:
        raise ValueError(f"frames_mode must lie within frames {tuple(frames)}, got {frames_mode}")
    if widths is not None:
        w_lo, w_hi = (int(v) for v in widths)
        if not height <= w_lo <= w_hi:
            raise ValueError(f"widths must be (min, max) with height ({height}) <= min <= max, got {tuple(widths)}")
    if not 0 <= malformed_stories <= n_stories:
        raise ValueError(f"malformed_stories must be between 0 and n_stories ({n_stories}), got {malformed_stories}")

    n_movies = math.ceil(n_stories / stories_per_movie)
    movies = [_make_movie(random.Random(f"{seed}:movie:{k}"), k) for k in range(n_movies)]
    rows = [
        _make_story(
            random.Random(f"{seed}:story:{i}"),
            movies[i // stories_per_movie],
            str(first_story_id + i),
            lo,
            hi,
            (random.Random(f"{seed}:width:{i}").randint(*widths) if widths is not None else width, height),
            frames_mode,
        )
        for i in range(n_stories)
    ]

    all_frames = [(i, f) for i, row in enumerate(rows) for f in range(row["frame_count"])]
    if not 0 <= corrupt_frames <= len(all_frames):
        raise ValueError(f"corrupt_frames must be between 0 and the {len(all_frames)} frames, got {corrupt_frames}")
    for i, f in random.Random(f"{seed}:corrupt").sample(all_frames, corrupt_frames):
        rows[i]["images"][f] = {"bytes": b"\x00not a JPEG: corrupt synthetic frame\x00", "path": None}
    for i in random.Random(f"{seed}:malformed").sample(range(n_stories), malformed_stories):
        story = rows[i]["story"]
        rows[i]["story"] = story[: max(0, story.rfind("\n\n<gdi image"))]

    path = Path(out_dir) / DATA_FILE
    atomic_write_bytes(path, _to_parquet(rows))
    return path


def _to_parquet(rows: list[dict]) -> bytes:
    """Parquet bytes of the rows in the Hub's schema (``datasets`` features metadata included)."""
    import datasets

    features = datasets.Features(
        {
            "story_id": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
            "frame_count": datasets.Value("int32"),
            "chain_of_thought": datasets.Value("string"),
            "story": datasets.Value("string"),
        }
    )
    columns = {name: [row[name] for row in rows] for name in features}
    buffer = io.BytesIO()
    datasets.Dataset.from_dict(columns, features=features).to_parquet(buffer)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- movies and stories


def _make_movie(rng: random.Random, index: int) -> _Movie:
    """A movie: a room (settings cycle), a wall colour near the room's, three people, maybe a pet."""
    setting = _SETTINGS[index % len(_SETTINGS)]
    r, g, b = (max(0, min(255, v + rng.randint(-8, 8))) for v in setting.wall)
    members = []
    women, men = rng.sample(_WOMEN, 2), rng.sample(_MEN, 2)
    names = [(n, "she", "Woman") for n in women] + [(n, "he", "Man") for n in men]
    for (name, pronoun, noun), (colour, rgb) in zip(rng.sample(names, 3), rng.sample(_CLOTHES, 3)):
        description = f"{noun} in {_a(colour)} {rng.choice(_GARMENTS)}"
        members.append((name, pronoun, description, "person", rgb))
    if rng.random() < 0.5:
        species = rng.choice(("dog", "cat"))
        colour, rgb = rng.choice((("golden", (218, 165, 32)), ("white", (236, 236, 230)), ("black", (28, 28, 30))))
        members.append((rng.choice(_PETS[species]), "it", f"A small {colour} {species}", species, rgb))
    cast = tuple(_Character(f"char{i}", *member) for i, member in enumerate(members, start=1))
    return _Movie(setting, (r, g, b), cast)


def _make_story(rng: random.Random, movie: _Movie, story_id: str, lo: int, hi: int, size: tuple[int, int],
                mode: int | None = None) -> dict:
    """One dataset row: frames, chain of thought and story text, all from ``rng``; the frame
    count uniform over ``lo..hi``, or triangular peaking at ``mode`` when given."""
    story = _Story(rng, movie)
    humans = [c for c in movie.cast if c.category == "person"]
    pets = [c for c in movie.cast if c.category != "person"]
    cast = rng.sample(humans, rng.randint(2, len(humans))) + (pets if rng.random() < 0.7 else [])
    count = rng.randint(lo, hi) if mode is None else round(rng.triangular(lo, hi, mode))
    shots = [rng.choices(("scene", "empty", "close-up"), weights=(80, 8, 12))[0] for _ in range(count)]
    layouts = [_layout(story, _frame_cast(rng, cast, shot), shot, size) for shot in shots]
    on_screen = [[c for c in cast if any(t.id == c.id for t in things)] for things, _ in layouts]
    seen = {c.id for chars in on_screen for c in chars}

    images, sections, segments = [], [], []
    for frame, (shot, (things, relations), chars) in enumerate(zip(shots, layouts, on_screen), start=1):
        absent = [c for c in cast if c.id in seen and c not in chars and c.category == "person"]
        text, setting_rows = _segment_text(story, shot, things, relations, chars, absent)
        images.append({"bytes": _render(story, things, size), "path": None})
        sections.append(_cot_section(story, frame, things, relations, setting_rows))
        segments.append(f"<gdi image{frame}>\n{text}\n</gdi>")
    cot = "\n\n\n".join(sections) + "\n\n\n" + _narrative_structure(len(shots), movie.setting.place)
    return {
        "story_id": story_id,
        "images": images,
        "frame_count": len(shots),
        "chain_of_thought": cot,
        "story": "\n\n".join(segments),
    }


def _frame_cast(rng: random.Random, cast: list[_Character], shot: str) -> list[_Character]:
    """Who is in a frame: nobody in an empty room, one person in a close-up, else one to three."""
    humans = [c for c in cast if c.category == "person"]
    if shot == "empty":
        return []
    if shot == "close-up":
        return [rng.choice(humans)]
    chars = rng.sample(humans, rng.randint(1, min(2, len(humans))))
    pets = [c for c in cast if c.category != "person"]
    if pets and rng.random() < 0.4:
        chars.append(pets[0])
    return chars


# ----------------------------------------------------------------------------- layout


def _layout(
    story: _Story, chars: list[_Character], shot: str, size: tuple[int, int]
) -> tuple[list[_Placed], list[tuple[str, str, str]]]:
    """Place a frame's things and return them with the relations the placement makes true.

    Relations are ``(subject id, relation, object id)`` with ``relation`` in
    :data:`RELATIONS`. Floor things stand side by side on a common floor line; nearer
    means lower in the frame; a small thing on a support touches its top edge. Boxes are
    whole pixels inside the frame, as in the real chain of thought.
    """
    rng, (width, height) = story.rng, size
    s = height / _REF_HEIGHT
    story.in_frame.clear()
    if shot == "close-up":
        w = rng.uniform(0.3, 0.42) * width
        x1 = rng.uniform(0.1, 0.9) * (width - w)
        things = [_Placed(chars[0].id, "person", (x1, rng.uniform(6, 20) * s, x1 + w, height - 1), 3)]
        return _snap(things, size), []

    floor = height - 1 - rng.uniform(2, 10) * s
    people = [c for c in chars if c.category == "person"]
    pets = [c for c in chars if c.category != "person"]
    furniture = story.free(story.movie.setting.furniture)
    groups = []
    for category in rng.sample(furniture, rng.randint(1, 2)):
        if category not in story.in_frame:  # unless the first piece brought it along (a plant behind it)
            groups.append(_furniture_group(story, category, people, floor, s))
    groups += [_standing_group(story, c, floor, s) for c in people]  # those no furniture took
    groups += [([_Placed(c.id, c.category, _floor_box(rng, c.category, 0, floor, s), 3)], []) for c in pets]
    rng.shuffle(groups)

    things, relations = _arrange(rng, groups, width, s)
    room, more = _add_room(story, things, size, s)
    return _snap(room + things, size), relations + more


def _snap(things: list[_Placed], size: tuple[int, int]) -> list[_Placed]:
    """Boxes rounded to whole pixels and clipped to the frame."""
    width, height = size
    snapped = []
    for t in things:
        x1, y1, x2, y2 = (round(v) for v in t.box)
        box = (max(0, x1), max(0, y1), min(width - 1, x2), min(height - 1, y2))
        snapped.append(replace(t, box=box))
    return snapped


def _floor_box(rng: random.Random, category: str, x: float, floor: float, s: float) -> Box:
    w, h = _size(rng, category, s)
    return (x, floor - h, x + w, floor)


def _size(rng: random.Random, category: str, s: float) -> tuple[float, float]:
    w_lo, w_hi, h_lo, h_hi = KINDS[category].size
    return rng.uniform(w_lo, w_hi) * s, rng.uniform(h_lo, h_hi) * s


_Group = tuple[list[_Placed], list[tuple[str, str, str]]]


def _furniture_group(story: _Story, category: str, people: list[_Character], floor: float, s: float) -> _Group:
    """A piece of furniture with what goes with it: someone sitting on it or standing
    behind it (taken from ``people``), things on it, something under it, a plant behind it.
    The piece itself comes first."""
    rng = story.rng
    base = _Placed(story.take(category), category, _floor_box(rng, category, 0, floor, s), 3)
    x1, y1, x2, y2 = base.box
    things, relations = [base], []

    def add(kind: str, box: Box, z: int, relation: str) -> None:  # a thing related to the piece
        thing = _Placed(story.take(kind), kind, box, z)
        things.append(thing)
        relations.append((thing.id, relation, base.id))

    if category in _SEATS and people and rng.random() < 0.6:  # someone sits on it
        person = people.pop(0)
        w, h = rng.uniform(46, 54) * s, rng.uniform(105, 120) * s
        cx = rng.uniform(x1 + w / 2, x2 - w / 2) if x2 - x1 > w else (x1 + x2) / 2
        things.append(_Placed(person.id, "person", (cx - w / 2, y2 - 4 * s - h, cx + w / 2, y2 - 4 * s), 4))
        relations.append((person.id, "sitting on", base.id))
    if category in _ON_SEAT and (options := story.free(_ON_SEAT[category])) and rng.random() < 0.5:
        on = rng.choice(options)  # lying on the seat, at one end
        w, h = _size(rng, on, s)
        w = min(w, 0.45 * (x2 - x1))
        left = rng.choice((x1 + 0.1 * (x2 - x1), x2 - 0.1 * (x2 - x1) - w))
        bottom = y1 + 0.5 * (y2 - y1)
        add(on, (left, bottom - h, left + w, bottom), 5, "on")
    if category in ("dining table", "bench"):
        options = story.free(story.movie.setting.on_table)
        left = x1 + rng.uniform(6, 16) * s
        for on in rng.sample(options, min(rng.randint(1, 2) if category == "dining table" else 1, len(options))):
            w, h = _size(rng, on, s)
            if left + w > x2 - 6 * s:
                break
            add(on, (left, y1 + 2 * s - h, left + w, y1 + 2 * s), 4, "on")  # touching the top
            left += w + rng.uniform(8, 24) * s
        fits = [k for k in story.free(story.movie.setting.under) if KINDS[k].size[3] * s < 0.8 * (y2 - y1)]
        if fits and rng.random() < 0.4:  # a cat, a box... between the legs
            under = rng.choice(fits)
            w, h = _size(rng, under, s)
            w = min(w, 0.6 * (x2 - x1))
            left = rng.uniform(x1 + 0.15 * (x2 - x1), x2 - 0.15 * (x2 - x1) - w)
            add(under, (left, y2 - h, left + w, y2), 4, "under")
    if category == "dining table" and people and rng.random() < 0.3:  # someone behind the table
        person = people.pop(0)
        w, h = rng.uniform(44, 56) * s, rng.uniform(150, 170) * s
        cx = rng.uniform(x1 + 0.3 * (x2 - x1), x2 - 0.3 * (x2 - x1))
        bottom = y2 - rng.uniform(20, 28) * s  # further back: higher in the frame
        things.append(_Placed(person.id, "person", (cx - w / 2, bottom - h, cx + w / 2, bottom), 2))
        relations.append((person.id, "behind", base.id))
    if category in ("couch", "bed") and story.free(["potted plant"]) and rng.random() < 0.3:
        w, h = _size(rng, "potted plant", s)  # behind one end, taller than the seat
        cx = rng.choice((x1 + 0.5 * w, x2 - 0.5 * w))
        bottom = y2 - rng.uniform(18, 26) * s
        add("potted plant", (cx - w / 2, bottom - h - 20 * s, cx + w / 2, bottom), 2, "behind")
    return things, relations


def _standing_group(story: _Story, person: _Character, floor: float, s: float) -> _Group:
    """A standing person, maybe holding something (a phone at the hand, an umbrella overhead)."""
    rng = story.rng
    w, h = rng.uniform(44, 56) * s, rng.uniform(150, 175) * s
    bottom = floor - rng.uniform(0, 4) * s
    body = _Placed(person.id, "person", (0, bottom - h, w, bottom), 3)
    options = story.free(story.movie.setting.held)
    if not options or rng.random() < 0.55:
        return [body], []
    held = rng.choice(options)
    hw, hh = _size(rng, held, s)
    if held == "umbrella":  # canopy above the head, handle at the hand
        box = (w - 4 * s - hw / 2, bottom - h - 18 * s, w - 4 * s + hw / 2, bottom - 0.45 * h)
    else:  # at hand height, overlapping the body's edge
        top = bottom - h + rng.uniform(0.45, 0.55) * h
        box = (w - 0.3 * hw, top, w + 0.7 * hw, top + hh)
    thing = _Placed(story.take(held), held, box, 5)
    return [body, thing], [(person.id, "holding", thing.id)]


def _arrange(rng: random.Random, groups: list[_Group], width: int, s: float) -> _Group:
    """Shift groups left to right with gaps, dropping those that do not fit; relate neighbours.

    Neighbouring groups are either close (a gap of a few pixels: "next to", "beside") or
    apart ("left of", "right of"); the relation is stated between their first things.
    """
    kept, total = [], 0.0
    for members, inner in groups:
        lo, hi = min(t.box[0] for t in members), max(t.box[2] for t in members)
        if total + (hi - lo) + 8 * s * (len(kept) + 1) <= width - 8 * s:
            kept.append((members, inner, lo, hi))
            total += hi - lo
    room = width - 8 * s - total  # for the gaps and the margins
    gaps = [rng.uniform(6, 16) * s if rng.random() < 0.6 else rng.uniform(30, 60) * s for _ in kept[1:]]
    if sum(gaps) > room:
        gaps = [rng.uniform(6, 8) * s for _ in gaps]
    x = 4 * s + rng.uniform(0, room - sum(gaps))
    things: list[_Placed] = []
    relations: list[tuple[str, str, str]] = []
    for k, (members, inner, lo, hi) in enumerate(kept):
        things += [replace(t, box=(t.box[0] + x - lo, t.box[1], t.box[2] + x - lo, t.box[3])) for t in members]
        relations += inner
        if k > 0:
            left, right = kept[k - 1][0][0].id, members[0].id
            if gaps[k - 1] < 20 * s:
                a, b = (left, right) if rng.random() < 0.5 else (right, left)
                relations.append((a, rng.choice(("next to", "beside")), b))
            else:
                relations.append((left, "left of", right) if rng.random() < 0.5 else (right, "right of", left))
        x += hi - lo + (gaps[k] if k < len(gaps) else 0)
    return things, relations


def _add_room(
    story: _Story, things: list[_Placed], size: tuple[int, int], s: float
) -> tuple[list[_Placed], list[tuple[str, str, str]]]:
    """The room's things: sometimes a wall row, a window, a door; a person standing on the
    floor may be in front of the window or door (nearer, so lower in the frame)."""
    rng, (width, height) = story.rng, size
    horizon = _HORIZON * height
    standing = [t for t in things if t.category == "person" and t.z == 3]
    added, relations = [], []
    if rng.random() < 0.35:
        wall = _Placed(story.take("wall"), "wall", (0, 0, width - 1, horizon), 0)
        added.append(wall)
        if standing and rng.random() < 0.5:
            relations.append((wall.id, "behind", rng.choice(standing).id))
    taken: list[tuple[float, float]] = []
    for category, chance in (("window", 0.5), ("door", 0.3)):
        if rng.random() >= chance:
            continue
        w, h = _size(rng, category, s)
        top = rng.uniform(16, 28) * s
        bottom = top + h if category == "window" else horizon + 10 * s
        front = rng.choice(standing) if standing and rng.random() < 0.6 else None
        centre = (front.box[0] + front.box[2]) / 2 + rng.uniform(-15, 15) * s if front else rng.uniform(0, width)
        left = min(max(0.0, centre - w / 2), width - 1 - w)
        if any(left < b and a < left + w for a, b in taken):
            continue
        taken.append((left, left + w))
        thing = _Placed(story.take(category), category, (left, top, left + w, bottom), 1)
        added.append(thing)
        if front is not None and min(front.box[2], left + w) > max(front.box[0], left):
            relations.append((front.id, "in front of", thing.id))
    return added, relations


# ----------------------------------------------------------------------------- text


def _segment_text(
    story: _Story,
    shot: str,
    things: list[_Placed],
    relations: list[tuple[str, str, str]],
    chars: list[_Character],
    absent: list[_Character],
) -> tuple[str, list[tuple[str, str, str, str]]]:
    """A frame's tagged story text and its Setting table rows (element, description, mood, time).

    The text opens on the setting (a ``<gdl bgN>`` with no chain-of-thought row, as in the
    real data), states up to four of the frame's relations, and is padded with formulaic
    sentences to about 450 characters of plain text. A character named once in the
    segment is then often a pronoun.
    """
    rng, setting = story.rng, story.movie.setting
    named: set[str] = set()

    def mention(thing_id: str, capital: bool = False, object_case: bool = False) -> str:
        if thing_id.startswith("char"):
            c = story.char(thing_id)
            text = c.name if thing_id not in named or rng.random() < 0.4 else _PRONOUNS[c.pronoun][int(object_case)]
            named.add(thing_id)
        else:
            noun = story.names[thing_id][1]
            article = rng.choice(("the", "an" if noun[0] in "aeiou" else "a")) if thing_id.startswith("obj") else "the"
            text = f"{article} {noun}"
        return f"<gdo {thing_id}>{text[0].upper() + text[1:] if capital else text}</gdo>"

    def act(char_ids: str, verb: str) -> str:
        closing = "gdo" if rng.random() < 0.04 else "gda"  # the real data's mismatched closing tag
        return f"<gda {char_ids}>{verb}</{closing}>"

    light, light_id = rng.choice(setting.lights), story.new_id("bg")
    if rng.random() < 0.5:
        sentences = [f"The {setting.place} is bathed in <gdl {light_id}>{light}</gdl>."]
    else:
        sentences = [f"<gdl {light_id}>{light.capitalize()}</gdl> fills the {setting.place}."]
    category = {t.id: t.category for t in things}
    for subject, relation, obj in rng.sample(relations, min(4, len(relations))):
        sentences.append(_relation_sentence(rng, subject, relation, obj, category, mention, act))
    people = [c for c in chars if c.category == "person"]
    if shot == "close-up":
        c = chars[0]
        mood = rng.choice(("tense", "unreadable", "pale", "calm"))
        sentences.append(f"A close-up shows {mention(c.id, object_case=True)}, {_POSSESSIVE[c.pronoun]} face {mood}.")
    elif not chars:
        sentences.append(f"No one is in the {setting.place}; only the furniture keeps watch.")
    if people and absent and rng.random() < 0.15:  # a character cited in a frame they are not in
        gone = rng.choice(absent)
        sentences.append(f"{mention(people[0].id, True)} {act(people[0].id, 'thinks')} about "
                         f"{mention(gone.id, object_case=True)}, who is nowhere to be seen.")  # fmt: skip
    fillers = _fillers(rng, people, setting.place, mention, act)
    while fillers and len(_TAG.sub("", " ".join(sentences))) < 450:
        sentences.append(fillers.pop())
    mood = rng.choice(_EMOTIONS)
    rows = [("Location", setting.location, mood, rng.choice(("Evening", "Night", "Morning", "Unknown"))),
            ("Lighting", light.capitalize(), mood, "Unknown")]  # fmt: skip
    return " ".join(sentences), rows


_PRONOUNS = {"she": ("she", "her"), "he": ("he", "him"), "it": ("it", "it")}
_POSSESSIVE = {"she": "her", "he": "his", "it": "its"}
_TAG = re.compile(r"</?gd[a-z]\b[^>]*>")
_TAILS = ("", "", ", as if waiting", ", half in shadow", ", quiet and still")
_HOLD_TAILS = ("tightly", "close", "without a word", "as the minutes pass")


def _relation_sentence(
    rng: random.Random,
    subject: str,
    relation: str,
    obj: str,
    category: dict[str, str],
    mention: Callable[..., str],
    act: Callable[[str, str], str],
) -> str:
    """One sentence stating ``subject relation obj``: the subject, a verb, the relation's words, the object."""
    s, o = mention(subject, True), mention(obj, object_case=True)
    if relation == "sitting on":
        return f"{s} {act(subject, rng.choice(('sits', 'is sitting')))} on {o}{rng.choice(_TAILS)}."
    if relation == "holding":
        if rng.random() < 0.5:
            return f"{s} {act(subject, rng.choice(('holds', 'is holding')))} {o} {rng.choice(_HOLD_TAILS)}."
        return f"{s} {act(subject, 'waits')}, holding {o}."
    if category[subject] == "person":
        verb = act(subject, rng.choice(("stands", "waits", "lingers")))
    elif subject.startswith("char"):  # a pet
        verb = act(subject, "lies")
    else:
        verb = _VERBS.get(category[subject], "rests")
    phrase = {"left of": "to the left of", "right of": "to the right of"}.get(relation, relation)
    return f"{s} {verb} {phrase} {o}{rng.choice(_TAILS)}."


# How a thing "is" somewhere in the story text (default: "rests").
_VERBS = {
    **dict.fromkeys(("dining table", "couch", "chair", "bed", "bench", "potted plant", "bottle", "vase", "lamp",
                     "tv", "wine glass", "clock", "box"), "stands"),
    **dict.fromkeys(("book", "blanket", "cell phone", "remote", "cat", "dog"), "lies"),
    "wall": "looms",
}  # fmt: skip


def _fillers(
    rng: random.Random,
    people: list[_Character],
    place: str,
    mention: Callable[..., str],
    act: Callable[[str, str], str],
) -> list[str]:
    """Formulaic narrative sentences, as the real stories are full of; none states a relation."""
    out = [f"The tension in the {place} is palpable.", "A heavy silence settles over everything.",
           "Something about the moment feels fragile.", "Time seems to slow down.",
           "Every small sound seems louder than it should.", "The air feels heavy with unspoken words.",
           "It is the kind of moment that changes everything."]  # fmt: skip
    for c in people:
        out += [
            f"{mention(c.id, True)} {act(c.id, 'takes')} a slow breath.",
            f"{mention(c.id, True)} {act(c.id, 'wonders')} what the evening will bring.",
            f"{mention(c.id, True)} {act(c.id, 'glances')} around, uneasy.",
            f"{mention(c.id, True)} {act(c.id, 'tries')} to steady <gdo {c.id}>{_POSSESSIVE[c.pronoun]}</gdo> nerves.",
        ]
    if len(people) >= 2:
        a, b = people[:2]
        out.append(f"{mention(a.id, True)} {act(a.id, 'looks')} at {mention(b.id, object_case=True)}, searching "
                   "for an answer.")  # fmt: skip
        out.append(f"<gdo {a.id} {b.id}>They</gdo> {act(f'{a.id} {b.id}', 'exchange')} a knowing look.")
    rng.shuffle(out)
    return out


# ----------------------------------------------------------------------------- chain of thought


_CHAR_HEADER = ("| Character ID | Name | Description | Emotions | Actions | Narrative Function | Bounding Box |\n"
                "|--------------|------|-------------|----------|---------|-------------------|--------------|")
_OBJ_HEADER = ("| Object ID | Description | Function | Interaction | Narrative Function | Bounding Box |\n"
               "|-----------|-------------|----------|------------|-------------------|--------------|")
_SETTING_HEADER = ("| Setting Element | Description | Mood | Time | Narrative Function |\n"
                   "|-----------------|-------------|------|------|-------------------|")  # fmt: skip


def _cot_section(
    story: _Story,
    frame: int,
    things: list[_Placed],
    relations: list[tuple[str, str, str]],
    setting_rows: list[tuple[str, str, str, str]],
) -> str:
    """The ``## Image N`` section of the chain of thought, in the real data's markdown layout:
    characters, then objects (``obj`` rows before ``bg`` rows), then the setting."""
    rng = story.rng
    pose: dict[str, tuple[str, str]] = {}  # character -> its relation, holding and sitting first
    used_by: dict[str, str] = {}  # object -> "Held by char1" / "Used by char2"
    for s, r, o in relations:
        if s.startswith("char") and (s not in pose or r in ("holding", "sitting on")):
            pose[s] = (r, o)
        if r in ("holding", "sitting on"):
            used_by[o] = f"{'Held' if r == 'holding' else 'Used'} by {s}"
    chars, objects = [], []
    for t in sorted(things, key=lambda t: _id_order(t.id)):
        box = ",".join(str(v) for v in t.box)
        if t.id.startswith("char"):
            c = story.char(t.id)
            relation, obj = pose.get(t.id, ("", ""))
            description = c.description
            if relation == "holding":
                description = f"{c.description.split(' in ')[0]} holding {_a(story.noun(obj))}"
            chars.append(f"| {t.id} | {c.name} | {description} | {rng.choice(_EMOTIONS)} | "
                         f"{_action(relation, story.noun(obj) if obj else '', c.category)} | "
                         f"{rng.choice(_CHAR_FUNCTIONS)} | {box} |")  # fmt: skip
        else:
            objects.append(f"| {t.id} | {story.names[t.id][0]} | {KINDS[t.category].function} | "
                           f"{used_by.get(t.id, 'None')} | {rng.choice(_OBJ_FUNCTIONS)} | {box} |")  # fmt: skip
    setting = [f"| {e} | {d} | {m} | {t} | {rng.choice(('Establishes the setting', 'Sets the mood'))} |"
               for e, d, m, t in setting_rows]  # fmt: skip
    return "\n".join([f"## Image {frame}", "", "### Characters", _CHAR_HEADER, *chars, "", "### Objects",
                      _OBJ_HEADER, *objects, "", "### Setting", _SETTING_HEADER, *setting])  # fmt: skip


def _id_order(thing_id: str) -> tuple[int, int]:
    """Table order: characters, objects, background elements, each by number."""
    prefix, number = re.fullmatch(r"([a-z]+)(\d+)", thing_id).groups()
    return ("char", "obj", "bg").index(prefix), int(number)


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _action(relation: str, noun: str, category: str) -> str:
    """The Characters table's Actions cell for a character's pose."""
    if relation == "sitting on":
        return f"Sitting on the {noun}"
    if relation == "holding":
        return f"Holding {_a(noun)}"
    if relation in ("behind", "next to", "beside", "in front of"):
        pose = "Standing" if category == "person" else "Lying"
        return f"{pose} {relation} {noun if noun[0].isupper() else 'the ' + noun}"  # a name, or "the couch"
    return "Standing" if category == "person" else "Resting"


def _narrative_structure(n_frames: int, place: str) -> str:
    """The closing ``## Narrative Structure`` table: phases over contiguous frame ranges."""
    phases = _PHASES[: min(len(_PHASES), n_frames)]
    bounds = [round(i * n_frames / len(phases)) for i in range(len(phases) + 1)]
    rows = []
    for phase, a, b in zip(phases, bounds, bounds[1:]):
        images = f"Image {a + 1}" if b - a == 1 else f"Image {a + 1} to Image {b}"
        rows.append(f"| {phase} | {phase} in the {place} | Events unfold in the {place} | {images} |")
    return "\n".join(["## Narrative Structure", "", "| Narrative Phase | Description | Key Events | Images |",
                      "|-----------------|-------------|-----------|--------|", *rows])  # fmt: skip


# ----------------------------------------------------------------------------- images


def _render(story: _Story, things: list[_Placed], size: tuple[int, int]) -> bytes:
    """JPEG bytes of a frame: wall and floor, then every thing in its box, back to front."""
    width, height = size
    movie = story.movie
    image = Image.new("RGB", size, movie.wall)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, _HORIZON * height, width, height), fill=movie.setting.floor)
    for t in sorted(things, key=lambda t: (t.z, t.box[3])):
        colour = story.char(t.id).colour if t.id.startswith("char") else KINDS[t.category].colour
        paint = _figure if t.category == "person" else KINDS[t.category].paint
        paint(draw, t.box, colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
