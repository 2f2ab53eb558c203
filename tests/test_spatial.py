"""Spatial evidence: the geometry on hand-made boxes, relation extraction on hand-made and real
text, the evidence of a pair, the feature table, and the original study's rule."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from helpers import spatial
from helpers.tags import (
    ChainOfThought,
    Entity,
    FrameAnnotation,
    ParsedStory,
    parse_chain_of_thought,
    parse_row,
    parse_segment,
    parse_story,
)
from helpers.detection import Detection, parse_detections
from helpers.objects import character_descriptions, ground_truth_frames
from helpers.spatial import (
    RELATIONS,
    SPATIAL_COLUMNS,
    UNINFORMATIVE_SCORE,
    SpatialInputError,
    extract_relations,
    relation_holds,
    spatial_evidence,
    spatial_features,
    study_spatial_score,
)
from helpers.smoke.synthetic import make_dataset

#: Real rows of the dataset (verbatim from the Hub, in tests/fixtures).
from conftest import FIXTURES
IMAGE = (600, 240)

# --------------------------------------------------------------------------- geometry

# (relation, subject box, object box, expected); y grows downwards, image 600 x 240.
CASES = [
    ("left of", (10, 100, 60, 200), (300, 100, 350, 200), True),
    ("left of", (300, 100, 350, 200), (10, 100, 60, 200), False),
    ("left of", (100, 100, 160, 200), (110, 100, 170, 200), False),  # offset 10 < margin 12
    ("right of", (300, 100, 350, 200), (10, 100, 60, 200), True),
    ("right of", (10, 100, 60, 200), (300, 100, 350, 200), False),
    ("above", (100, 10, 150, 50), (100, 150, 150, 230), True),
    ("above", (100, 150, 150, 230), (100, 10, 150, 50), False),
    ("below", (100, 150, 150, 230), (100, 10, 150, 50), True),
    ("below", (100, 10, 150, 50), (100, 150, 150, 230), False),
    ("on", (200, 80, 240, 120), (100, 110, 400, 230), True),  # a cup on a table
    ("on", (290, 30, 390, 230), (250, 120, 560, 230), True),  # a person sitting on a couch
    ("on", (200, 10, 240, 40), (100, 110, 400, 230), False),  # floating far above it
    ("on", (450, 80, 490, 120), (100, 110, 400, 230), False),  # beside it
    ("on", (200, 180, 260, 230), (100, 110, 400, 230), False),  # under it
    ("under", (200, 180, 260, 230), (100, 110, 400, 230), True),  # a dog under a table
    ("under", (200, 80, 240, 120), (100, 110, 400, 230), False),
    ("in", (120, 60, 200, 200), (100, 50, 400, 220), True),  # a person in a car
    ("in", (350, 60, 500, 200), (100, 50, 400, 220), False),  # a third inside
    ("near", (0, 0, 100, 100), (120, 0, 220, 100), True),  # gap 20, limit 50
    ("near", (0, 0, 100, 100), (140, 0, 240, 100), True),  # gap 40, limit 50
    ("near", (0, 0, 100, 100), (400, 0, 500, 100), False),  # gap 300
    ("near", (0, 0, 20, 20), (60, 0, 80, 20), False),  # gap 40 > half of 20
    ("in front of", (100, 50, 200, 230), (50, 120, 300, 200), True),
    ("in front of", (100, 20, 200, 150), (50, 120, 300, 200), False),
    ("in front of", (400, 50, 500, 230), (50, 120, 300, 200), False),  # no overlap
    ("behind", (100, 20, 200, 150), (50, 120, 300, 200), True),
    ("behind", (100, 50, 200, 230), (50, 120, 300, 200), False),
    ("holding", (100, 20, 250, 230), (200, 100, 230, 140), True),  # a phone inside the person's box
    ("holding", (100, 20, 250, 230), (252, 100, 282, 140), True),  # touching (gap 2 <= 3)
    ("holding", (100, 20, 250, 230), (500, 100, 530, 140), False),
]


def test_every_relation_has_true_and_false_cases():
    assert {(r, e) for r, _, _, e in CASES} == {(r, e) for r in RELATIONS for e in (True, False)}


CASE_IDS = [f"{relation}-{expected}-{i}" for i, (relation, _, _, expected) in enumerate(CASES)]


@pytest.mark.parametrize("relation, subject, obj, expected", CASES, ids=CASE_IDS)
def test_relation_holds_on_hand_made_boxes(relation, subject, obj, expected):
    assert relation_holds(relation, subject, obj, IMAGE) is expected


@pytest.mark.parametrize("relation, subject, obj, expected", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("factor", [2, 0.5])
def test_relation_holds_is_scale_invariant(relation, subject, obj, expected, factor):
    def scale(values):
        return tuple(v * factor for v in values)

    assert relation_holds(relation, scale(subject), scale(obj), scale(IMAGE)) is expected


def x_at(cx, width, y=(100, 200)):
    """A box of ``width`` centred on ``cx``."""
    return (cx - width / 2, y[0], cx + width / 2, y[1])


def y_at(cy, height, x=(100, 200)):
    """A box of ``height`` centred on ``cy``."""
    return (x[0], cy - height / 2, x[1], cy + height / 2)


TABLE_BOX = (100, 110, 400, 230)  # 300 x 120, centre (250, 170)
WALL = (50, 120, 300, 200)  # 250 x 80, bottom at 200

# Each rule just inside and just outside each of its margins, at the boundary itself (where
# the docstring's < or <= decides), and with boxes of different sizes, so that the margin's
# sign, its factor and which sizes it adds up are all pinned. Image 400 x 300: diagonal 500.
MARGIN_IMAGE = (400, 300)
MARGIN_CASES = [
    # left/right of: the margin is 0.1 * (w_s + w_o): 10 for two 50-wide boxes around x = 325
    ("left of", x_at(314, 50), x_at(325, 50), True),
    ("left of", x_at(315, 50), x_at(325, 50), False),  # offset 10 = margin: strict
    ("left of", x_at(336, 50), x_at(325, 50), False),  # on the other side
    ("left of", x_at(304, 150), x_at(325, 50), True),  # margin 0.1 * (150 + 50) = 20
    ("left of", x_at(305, 150), x_at(325, 50), False),
    ("left of", x_at(295, 50), x_at(325, 250), False),  # margin 0.1 * (50 + 250) = 30
    ("left of", x_at(294, 50), x_at(325, 250), True),
    ("right of", x_at(336, 50), x_at(325, 50), True),
    ("right of", x_at(335, 50), x_at(325, 50), False),  # offset 10 = margin: strict
    ("right of", x_at(314, 50), x_at(325, 50), False),  # on the other side
    ("right of", x_at(346, 150), x_at(325, 50), True),  # margin 20
    ("right of", x_at(345, 150), x_at(325, 50), False),
    ("right of", x_at(355, 50), x_at(325, 250), False),  # margin 30
    ("right of", x_at(356, 50), x_at(325, 250), True),
    # above/below: the margin is 0.1 * (h_s + h_o), around y = 125
    ("above", y_at(114, 50), y_at(125, 50), True),
    ("above", y_at(115, 50), y_at(125, 50), False),
    ("above", y_at(104, 150), y_at(125, 50), True),  # margin 20
    ("above", y_at(105, 150), y_at(125, 50), False),
    ("above", y_at(95, 50), y_at(125, 250), False),  # margin 30
    ("above", y_at(94, 50), y_at(125, 250), True),
    ("below", y_at(136, 50), y_at(125, 50), True),
    ("below", y_at(135, 50), y_at(125, 50), False),
    ("below", y_at(146, 150), y_at(125, 50), True),
    ("below", y_at(145, 150), y_at(125, 50), False),
    ("below", y_at(155, 50), y_at(125, 250), False),
    ("below", y_at(156, 50), y_at(125, 250), True),
    # on: horizontal overlap >= half the narrower width (a 40-wide cup: 20 px)
    ("on", (380, 80, 420, 120), TABLE_BOX, True),  # overlap 20
    ("on", (381, 80, 421, 120), TABLE_BOX, False),  # overlap 19
    ("on", (80, 80, 120, 120), TABLE_BOX, True),  # overlap 20 on the left edge
    ("on", (79, 80, 119, 120), TABLE_BOX, False),
    # on: the bottom edge no higher than the top minus slack = 0.1 * mean height (8 px here)
    ("on", (200, 62, 240, 102), TABLE_BOX, True),  # 102 = 110 - 8
    ("on", (200, 61, 240, 101), TABLE_BOX, False),
    # ...and no lower than the bottom plus slack (a 240-high subject: slack 18, 248 = 230 + 18)
    ("on", (200, 8, 240, 248), TABLE_BOX, True),
    ("on", (200, 8, 240, 249), TABLE_BOX, False),
    # on: the subject's centre strictly higher than the object's (170)
    ("on", (200, 109, 240, 229), TABLE_BOX, True),
    ("on", (200, 110, 240, 230), TABLE_BOX, False),
    # under: the same overlap, centre strictly lower, top not above the object's top
    ("under", (380, 150, 420, 230), TABLE_BOX, True),
    ("under", (381, 150, 421, 230), TABLE_BOX, False),
    ("under", (200, 111, 240, 231), TABLE_BOX, True),
    ("under", (200, 110, 240, 230), TABLE_BOX, False),  # same centre
    ("under", (200, 110, 240, 232), TABLE_BOX, True),  # tops level
    ("under", (200, 109, 240, 233), TABLE_BOX, False),  # top above the object's
    # in: >= 60% of the subject's area (100 x 100) inside the object
    ("in", (340, 100, 440, 200), (100, 50, 400, 220), True),  # 60 x 100 inside
    ("in", (341, 100, 441, 200), (100, 50, 400, 220), False),  # 59 x 100
    ("in", (40, 100, 140, 200), (100, 50, 400, 220), False),  # 40 x 100 on the left edge
    ("in", (200, 160, 300, 260), (100, 50, 400, 220), True),  # 100 x 60 at the bottom
    ("in", (200, 161, 300, 261), (100, 50, 400, 220), False),  # 100 x 59
    ("in", (200, 10, 300, 110), (100, 50, 400, 220), True),  # 100 x 60 at the top
    ("in", (200, 9, 300, 109), (100, 50, 400, 220), False),
    ("in", (150, 0, 151, 1), (100, 50, 400, 220), False),  # above it: no area inside
    ("in", (0, 100, 1, 101), (100, 50, 400, 220), False),  # beside it
    # near: gap <= half the mean longer side (100 x 100 boxes: 50) ...
    ("near", (0, 0, 100, 100), (150, 0, 250, 100), True),
    ("near", (0, 0, 100, 100), (151, 0, 251, 100), False),
    ("near", (150, 0, 250, 100), (0, 0, 100, 100), True),  # the other way round
    ("near", (151, 0, 251, 100), (0, 0, 100, 100), False),
    ("near", (0, 150, 100, 250), (0, 0, 100, 100), True),  # vertically
    ("near", (0, 151, 100, 251), (0, 0, 100, 100), False),
    ("near", (0, 0, 100, 100), (0, 150, 100, 250), True),
    ("near", (0, 0, 100, 100), (0, 151, 100, 251), False),
    ("near", (0, 0, 100, 100), (130, 140, 230, 240), True),  # diagonally: hypot(30, 40) = 50
    ("near", (0, 0, 100, 100), (131, 140, 231, 240), False),
    ("near", (0, 0, 100, 20), (150, 0, 250, 20), True),  # the longer side, not the shorter
    ("near", (0, 0, 100, 20), (200, 0, 220, 20), False),  # mean longer side 60: limit 30, gap 100
    ("near", (0, 0, 100, 20), (130, 0, 150, 20), True),  # gap 30
    ("near", (0, 0, 100, 20), (131, 0, 151, 20), False),
    # ... and <= 0.2 * image diagonal (100 px): two 400-wide boxes 100 apart are near, 101 not
    ("near", (0, 0, 400, 400), (500, 0, 900, 400), True),
    ("near", (0, 0, 400, 400), (501, 0, 901, 400), False),
    ("near", (0, 0, 100, 100), (50, 50, 150, 150), True),  # overlapping: gap 0
    # holding: gap <= 0.1 * the smaller box's longer side (a 30 x 40 phone: 4 px)
    ("holding", (100, 20, 250, 230), (254, 100, 284, 140), True),
    ("holding", (100, 20, 250, 230), (255, 100, 285, 140), False),
    ("holding", (254, 100, 284, 140), (100, 20, 250, 230), True),  # the phone holding the man: same gap
    ("holding", (100, 20, 250, 230), (100, 235, 140, 265), False),  # 5 px below
    ("holding", (100, 20, 250, 230), (100, 234, 140, 264), True),
    # in front of / behind: horizontal overlap (strictly) and bottoms apart by more than
    # 0.05 * mean height (120-high subject, 80-high wall: 5 px)
    ("in front of", (100, 86, 200, 206), WALL, True),
    ("in front of", (100, 85, 200, 205), WALL, False),
    ("in front of", (299, 86, 399, 206), WALL, True),  # overlap 1
    ("in front of", (300, 86, 400, 206), WALL, False),  # touching: no overlap
    ("in front of", (100, 174, 200, 294), (50, 120, 300, 200), True),  # far lower
    ("behind", (100, 74, 200, 194), WALL, True),
    ("behind", (100, 75, 200, 195), WALL, False),
    ("behind", (299, 74, 399, 194), WALL, True),
    ("behind", (300, 74, 400, 194), WALL, False),
    ("behind", (-49, 74, 51, 194), WALL, True),  # overlap 1 on the left
    ("behind", (-50, 74, 50, 194), WALL, False),
]


def test_every_relation_has_margin_cases_both_ways():
    assert {(r, e) for r, _, _, e in MARGIN_CASES} == {(r, e) for r in RELATIONS for e in (True, False)}


@pytest.mark.parametrize("relation, subject, obj, expected", MARGIN_CASES,
                         ids=[f"{r}-{e}-{i}" for i, (r, _, _, e) in enumerate(MARGIN_CASES)])
def test_relation_holds_just_inside_and_outside_each_margin(relation, subject, obj, expected):
    assert relation_holds(relation, subject, obj, MARGIN_IMAGE) is expected


def test_opposite_relations_never_both_hold():
    rng = random.Random(0)

    def box():
        x, y = rng.uniform(0, 500), rng.uniform(0, 200)
        return (x, y, x + rng.uniform(5, 200), y + rng.uniform(5, 120))

    for _ in range(500):
        s, o = box(), box()
        for a, b in [("on", "under"), ("left of", "right of"), ("above", "below"), ("in front of", "behind")]:
            assert not (relation_holds(a, s, o, IMAGE) and relation_holds(b, s, o, IMAGE)), (a, b, s, o)


@pytest.mark.parametrize("args, needle", [
    (("beneath", (0, 0, 1, 1), (0, 0, 1, 1), IMAGE), "unknown relation"),
    (("on", (10, 10, 5, 20), (0, 0, 1, 1), IMAGE), "subject_box"),
    (("on", (0, 0, 1, 1), (0, 0, 1, float("nan")), IMAGE), "object_box"),
    (("on", (0, 0, 1), (0, 0, 1, 1), IMAGE), "subject_box"),
    (("on", (0, 0, 1, 1), (0, 0, 1, 1), (0, 240)), "image_size"),
])
def test_bad_input_raises_a_value_error_naming_it(args, needle):
    with pytest.raises(ValueError, match=needle) as raised:
        relation_holds(*args)
    assert raised.type is SpatialInputError


@pytest.mark.parametrize("subject, obj, image, message", [
    ((10, 10, 10, 20), (0, 0, 5, 5), IMAGE, r"^subject_box \(10, 10, 10, 20\) is empty or inverted"),  # no width
    ((0, 0, 5, 5), (10, 10, 20, 10), IMAGE, r"^object_box \(10, 10, 20, 10\) is empty or inverted"),  # no height
    (("a", 0, 5, 5), (0, 0, 5, 5), IMAGE, r"^subject_box must be four numbers \(x1, y1, x2, y2\), got"),
    ((0, 0, 5, 5), (0, 0, 5, float("inf")), IMAGE, r"^object_box must be four finite numbers"),
    ((0, 0, 5, 5), (0, 0, 5, 5), ("wide", 240), r"^image_size must be \(width, height\), got \('wide', 240\)"),
    ((0, 0, 5, 5), (0, 0, 5, 5), (600, 240, 3), r"^image_size must be \(width, height\)"),
    ((0, 0, 5, 5), (0, 0, 5, 5), (600, 0), r"^image_size must be two positive numbers"),
    ((0, 0, 5, 5), (0, 0, 5, 5), (0, 240), r"^image_size must be two positive numbers"),
    ((0, 0, 5, 5), (0, 0, 5, 5), (float("inf"), 240), r"^image_size must be two positive numbers"),
    ((0, 0, 5, 5), (0, 0, 5, 5), (600, float("inf")), r"^image_size must be two positive numbers"),
])
def test_bad_boxes_and_image_sizes_are_named_in_the_error(subject, obj, image, message):
    with pytest.raises(SpatialInputError, match=message):
        relation_holds("near", subject, obj, image)


def test_any_positive_image_size_is_accepted():
    # a thumbnail's size, under one pixel wide after scaling, is still a size
    assert relation_holds("near", (0, 0, 0.1, 0.1), (0.15, 0, 0.25, 0.1), (0.5, 0.5)) is True


# ------------------------------------------------------------------------- extraction


def triples(text):
    return [(r.subject, r.relation, r.object) for r in extract_relations(text)]


def typed(text):
    return [(r.subject_category, r.relation, r.object_category) for r in extract_relations(text)]


@pytest.mark.parametrize("text, expected", [
    ("A cup rests on the table.", [("cup", "on", "table")]),
    ("The laptop sits atop the desk.", [("laptop", "on", "desk")]),
    ("He sits on the couch, holding a cup.", [("He", "on", "couch"), ("He", "holding", "cup")]),
    ("A woman stands to the left of the tv.", [("woman", "left of", "tv")]),
    ("The dog sleeps under the bed.", [("dog", "under", "bed")]),
    ("The man waits in front of the car, a teddy bear beside a hot dog.",
     [("man", "in front of", "car"), ("teddy bear", "near", "hot dog")]),
    ("She is on high alert.", []),
    ("The car door is open.", []),
    ("The wall behind the lamp.", []),  # neither names a COCO thing
])
def test_extract_relations_from_plain_text(text, expected):
    assert triples(text) == expected


@pytest.mark.parametrize("text, expected", [
    # a COCO noun right before a noun COCO lacks is a modifier ("car door"), in any case or number
    ("The dog sleeps under the car door.", []),
    ("The dog sleeps under the car doors.", []),
    ("The dog sleeps under the Car Door.", []),
    ("The dog sleeps under the car.", [("dog", "under", "car")]),
    # two words naming one thing are one object, not its first word
    ("A man stands beside a teddy bear.", [("man", "near", "teddy bear")]),
    # the object is looked for before the next phrase only ("under or on": on the table)
    ("The cat is under or on the table.", [("cat", "on", "table")]),
    # each statement once
    ("A cup rests on the table. A cup rests on the table.", [("cup", "on", "table")]),
    # at most 4 words between the subject and the phrase, at most 3 between the phrase and the object
    ("A cup that was left there rests on the table.", [("cup", "on", "table")]),
    ("A cup that was left over there rests on the table.", []),
    ("A cup rests on the old wooden table.", [("cup", "on", "table")]),
    ("A cup rests on the big old wooden table.", []),
])
def test_extraction_windows_and_compound_nouns(text, expected):
    assert triples(text) == expected


def test_a_compound_noun_keeps_its_category():
    assert typed("A man stands beside a teddy bear.") == [("person", "near", "teddy bear")]


def test_plain_text_relations_carry_coco_categories():
    assert typed("A man sits on the sofa next to a mug.") == [("person", "on", "couch"), ("couch", "near", "cup")]


def test_extract_relations_from_tagged_text():
    def seg(tagged):
        return parse_segment(tagged, 1)

    james = seg("<gdo char1>James</gdo> <gda char1>sits</gda> on <gdo obj2>the couch</gdo>.")
    assert [(r.subject, r.subject_category, r.relation, r.object, r.object_category, r.phrase)
            for r in extract_relations(james)] == [("James", "person", "on", "the couch", "couch", "sits on")]
    assert triples(seg("<gdo obj3>a cup</gdo> rests on <gdo obj4>the table</gdo>")) == [("a cup", "on", "the table")]
    # subject: the nearest preceding mention of the sentence; a lamp is no COCO thing
    lamp = extract_relations(seg("In the corner, <gdo obj1>a vase</gdo> stands next to <gdo obj5>a lamp</gdo>."))
    assert [(r.subject, r.relation, r.object, r.object_category) for r in lamp] == [("a vase", "near", "a lamp", None)]
    # an agent phrase's subject is the acting <gda> character, not the nearest thing
    agent = seg("<gdo char1>Mia</gdo> <gda char1>sits</gda> on <gdo obj1>the bed</gdo>, "
                "<gda char1>holding</gda> <gdo obj2>a book</gdo>.")
    assert triples(agent) == [("Mia", "on", "the bed"), ("Mia", "holding", "a book")]
    # nouns outside the tags count: the action text names the umbrella
    umbrella = seg("<gdo char1>James</gdo> <gda char1>holds an umbrella</gda>.")
    assert triples(umbrella) == [("James", "holding", "umbrella")]
    # no possessives, no thing related to itself, no figure of speech about a person
    assert triples(seg("<gdo char1>James</gdo> <gda char1>holds</gda> <gdo char1>his</gdo> face.")) == []
    assert triples(seg("The <gdo bg1>walls</gdo> close in on <gdo char2>him</gdo>.")) == []
    # a relation never crosses a sentence
    assert triples(seg("<gdo char1>Ann</gdo> waits. On <gdo obj1>the table</gdo> lies a note.")) == []


def test_tagged_possessors_self_references_and_unknown_objects():
    def seg(tagged):
        return parse_segment(tagged, 1)

    # a possessor ("James's laptop", curly apostrophe too) and a possessive ("His") are not the object
    for possessor in ("<gdo char1>James</gdo>'s", "<gdo char1>James</gdo>\u2019s", "<gdo char1>His</gdo>"):
        text = f"<gdo obj1>A cup</gdo> rests next to {possessor} <gdo obj2>laptop</gdo>."
        assert triples(seg(text)) == [("A cup", "near", "laptop")], possessor
    # two mentions of one character are one thing: never related to each other
    assert triples(seg("<gdo char1>Ann</gdo> stands next to <gdo char1>the woman</gdo>.")) == []
    # an object mention whose words name nothing COCO has has no category (it is no person)
    gizmo = seg("<gdo char1>Ann</gdo> stands next to <gdo obj1>the gizmo</gdo>.")
    assert [(r.subject_category, r.relation, r.object_category) for r in extract_relations(gizmo)] == [
        ("person", "near", None)]


@pytest.mark.parametrize("tagged", [
    # the phrase inside the actor's <gda>, after a nearer person
    "<gdo char1>Mia</gdo> sits next to <gdo char2>Tom</gdo>, <gda char1>holding</gda> <gdo obj1>a cup</gdo>.",
    # the phrase right after the actor's <gda>
    "<gdo char1>Mia</gdo> sits next to <gdo char2>Tom</gdo> and <gda char1>smiles</gda> holding <gdo obj1>a cup</gdo>.",
    # an earlier action of someone else is not the phrase's
    "<gdo char2>Tom</gdo> <gda char2>nods</gda> to <gdo char1>Mia</gdo>, who <gda char1>is holding</gda> "
    "<gdo obj1>a cup</gdo>.",
])
def test_an_agent_phrase_belongs_to_its_actor_not_the_nearest_person(tagged):
    assert ("Mia", "holding", "a cup") in triples(parse_segment(tagged, 1))
    assert not any(s == "Tom" and r == "holding" for s, r, _ in triples(parse_segment(tagged, 1)))


def test_characters_take_the_category_of_their_description():
    segment = parse_segment("<gdo char1>Henry</gdo> <gda char1>waits</gda> beside <gdo char4>Milo</gdo>. "
                            "<gdo char1 char4>They</gdo> rest on <gdo obj1>the couch</gdo>.", 1)
    assert typed(segment) == [("person", "near", "person"), ("person", "on", "couch")]  # no description: people
    described = {"char1": "Man in an orange shirt", "char4": "A small grey cat"}
    assert [(r.subject_category, r.relation, r.object_category) for r in extract_relations(segment, described)] == [
        ("person", "near", "cat"), (None, "on", "couch")]  # a man and a cat together are no one category


def test_extract_relations_rejects_other_types():
    with pytest.raises(SpatialInputError, match="Segment or a str, got int$"):
        extract_relations(42)


def _fixture_segments(story: str) -> dict[int, object]:
    return {s.frame: s for s in parse_story((FIXTURES / story / "story.txt").read_text())}


def test_extract_relations_on_real_segments():
    s3920 = _fixture_segments("story_3920")
    # frame 14: "<gdo char3>Jack</gdo> <gda char3>holds</gda> <gdo obj9>a cell phone</gdo>"
    assert triples(s3920[14]) == [("Jack", "holding", "a cell phone")]
    assert typed(s3920[14]) == [("person", "holding", "cell phone")]
    # frame 17: "<gdo char1>James</gdo> <gda char1>holds an umbrella</gda>"
    assert triples(s3920[17]) == [("James", "holding", "umbrella")]
    # frame 6: "<gdo char1>James</gdo> <gda char1>holds a gun</gda>": COCO has no gun; "the <gdl>wall</gdl>"
    # is a place, not a named thing
    assert triples(s3920[6]) == []
    s1831 = _fixture_segments("story_1831")
    # frame 1: "<gdo obj3>The laptop</gdo> on the desk nearby"
    assert ("The laptop", "on", "desk") in triples(s1831[1])
    # frame 10: "The <gdo obj4>refrigerator</gdo> behind <gdo char1>him</gdo>"
    assert ("refrigerator", "behind", "him") in triples(s1831[10])


def test_rules_hold_on_the_chain_of_thought_boxes_of_a_real_frame():
    segments = _fixture_segments("story_3920")
    cot = parse_chain_of_thought((FIXTURES / "story_3920" / "chain_of_thought.md").read_text())
    truth = ground_truth_frames([ParsedStory("3920", len(segments), tuple(segments.values()), cot)])
    boxes = {f: parse_detections(cell) for f, cell in zip(truth["frame"], truth["detections"])}
    held = spatial_evidence(segments[14], boxes[14], (575, 240))
    assert (held.spatial_source, held.relations_checked, held.relations_held) == ("relations", 1, 1)
    assert held.spatial_score == 1.0
    assert json.loads(held.relations_json)[0]["object_box"] == [250.0, 124.0, 297.0, 176.0]
    # frame 16 says James holds an umbrella, but its chain of thought boxes no umbrella
    unverifiable = spatial_evidence(segments[16], boxes[16], (575, 240))
    assert unverifiable.relations_checked == 0
    assert json.loads(unverifiable.relations_json)[0]["status"] == "unverifiable"


def test_synthetic_stories_and_the_spatial_rules_agree(tmp_path):
    """A consistency check, not an independent one: helpers.smoke.synthetic was written to lay its
    boxes out so that these rules accept every relation its text states. This checks that
    extraction finds those statements (at least 100 of them) and that the generator and the
    rules still agree (none fails). Whether the rules themselves are right is pinned by the
    hand-made boxes above, just inside and just outside each margin."""
    path = make_dataset(tmp_path, n_stories=16, frames=(4, 6), seed=42)
    stories = [parse_row(row) for row in pd.read_parquet(path, columns=["story_id", "frame_count", "story",
                                                                        "chain_of_thought"]).to_dict("records")]
    truth = ground_truth_frames(stories).set_index(["story_id", "frame"])["detections"]
    statuses = Counter()
    for story in stories:
        for segment in story.segments:
            boxes = parse_detections(truth[(story.story_id, segment.frame)])
            described = character_descriptions(story.cot, segment.frame)  # some characters are cats
            evidence = spatial_evidence(segment, boxes, (576, 240), described)
            statuses.update(r["status"] for r in json.loads(evidence.relations_json))
    assert statuses["held"] >= 100 and statuses["failed"] == 0, statuses


# --------------------------------------------------------------------------- evidence

PERSON = Detection("person", 0.9, (250, 20, 350, 230))
TABLE = Detection("dining table", 0.8, (100, 110, 400, 230))
CUP_ON = Detection("cup", 0.7, (200, 80, 240, 120))
CUP_UNDER = Detection("cup", 0.6, (200, 190, 240, 230))


def test_uninformative_text_gives_the_neutral_value_and_says_so():
    ev = spatial_evidence("The tension in the room is palpable.", [PERSON, TABLE, CUP_ON], IMAGE)
    assert ev.spatial_informative is False and ev.spatial_source == "none" and ev.spatial_state == "nothing to check"
    assert ev.spatial_score == UNINFORMATIVE_SCORE and (ev.relations_checked, ev.relations_held) == (0, 0)
    assert json.loads(ev.relations_json) == []


def test_relation_with_undetected_category_is_reported_not_scored():
    ev = spatial_evidence("A cup rests on the table.", [PERSON, TABLE], IMAGE)
    assert ev.spatial_informative is False and ev.relations_checked == 0
    [row] = json.loads(ev.relations_json)
    assert row["status"] == "unverifiable" and "no cup" in row["reason"]


def test_share_of_relations_that_hold_uses_the_best_pair_of_boxes():
    text = "A cup rests on the table. A man stands next to the table."
    assert spatial_evidence(text, [PERSON, TABLE, CUP_ON], IMAGE).spatial_score == 1.0
    failed = spatial_evidence(text, [PERSON, TABLE, CUP_UNDER], IMAGE)
    assert (failed.relations_checked, failed.relations_held, failed.spatial_score) == (2, 1, 0.5)
    # a second, lower-scoring cup that is on the table makes the relation hold, with that box
    both = spatial_evidence(text, [PERSON, TABLE, Detection("cup", 0.95, CUP_UNDER.box), CUP_ON], IMAGE)
    assert both.spatial_score == 1.0
    assert json.loads(both.relations_json)[0]["subject_box"] == list(CUP_ON.box)


def test_two_things_of_one_category_need_two_boxes():
    text = "A man stands next to a woman."
    assert spatial_evidence(text, [PERSON], IMAGE).relations_checked == 0
    other = Detection("person", 0.5, (360, 20, 450, 230))
    assert spatial_evidence(text, [PERSON, other], IMAGE).spatial_score == 1.0


def test_proximity_fallback_when_no_relation_is_stated():
    ev = spatial_evidence("The man looks at the tv.", [PERSON, Detection("tv", 0.9, (450, 20, 550, 100))], IMAGE)
    gap, diagonal = 450 - 350, (600**2 + 240**2) ** 0.5
    assert ev.spatial_source == "proximity" and ev.spatial_informative and ev.spatial_state == "checked"
    assert ev.spatial_score == pytest.approx(1 - gap / diagonal, abs=1e-4)
    assert ev.relations_checked == 0
    # no person in the frame: nothing to measure
    alone = spatial_evidence("The man looks at the tv.", [Detection("tv", 0.9, (450, 20, 550, 100))], IMAGE)
    assert not alone.spatial_informative


# ---------------------------------------------------------------------- the feature table


def test_spatial_features_read_characters_from_the_text_not_the_chain_of_thought():
    """Milo's chain-of-thought row says "A small grey cat": it annotates the frame judged, so no
    feature reads it (``spatial_features`` takes no stories). A name is a person; the text's
    own words ("the cat") say otherwise."""
    pairs = pd.DataFrame({"pair_id": ["named", "said"], "story_id": ["b", "b"], "frame": [1, 1], "text": ["", ""],
                          "tagged_text": ["<gdo char1>Henry</gdo> waits beside <gdo char4>Milo</gdo>.",
                                          "<gdo char1>Henry</gdo> waits beside <gdo char4>the cat</gdo>."],
                          "source_story_id": ["b", "b"], "source_frame": [1, 1]})
    cell = json.dumps([d.to_json() for d in (PERSON, Detection("cat", 0.9, (360, 190, 420, 230)))])
    frames = pd.DataFrame({"story_id": ["b"], "frame": [1], "status": ["ok"], "detections": [cell],
                           "width": [600], "height": [240]})
    named, said = spatial_features(pairs, frames, threshold=0.5, read_tags=True).to_dict("records")
    assert named["relations_checked"] == 0  # "person beside person" with a single person box
    assert (said["relations_checked"], said["relations_held"]) == (1, 1)
    assert json.loads(said["relations_json"])[0]["object_category"] == "cat"
    milo = Entity("char4", "char", "Milo", "A small grey cat", (360, 190, 420, 230))
    cot = ChainOfThought(frames={1: FrameAnnotation(1, (milo,), (), ())}, skipped_rows=0, skip_reasons={})
    described = extract_relations(parse_segment(pairs.at[0, "tagged_text"], 1), {"char4": "A small grey cat"})
    assert [r.object_category for r in described] == ["cat"], "what a feature would read from the annotation"
    with pytest.raises(TypeError):
        spatial_features(pairs, frames, threshold=0.5, stories=[ParsedStory("b", 1, (), cot)], read_tags=True)


def test_spatial_features_one_row_per_pair_sharing_each_frame():
    pairs = pd.DataFrame({
        "pair_id": ["a-1-pos", "a-1-neg-relation_swap", "a-2-pos"], "story_id": ["a", "a", "a"], "frame": [1, 1, 2],
        "text": ["", "", "Nothing here."], "source_story_id": ["a", "a", "a"], "source_frame": [1, 1, 2],
        "tagged_text": ["<gdo obj1>A cup</gdo> rests on <gdo obj2>the table</gdo>.",
                        "<gdo obj1>A cup</gdo> rests under <gdo obj2>the table</gdo>.", ""],
    })
    cells = json.dumps([d.to_json() for d in (PERSON, TABLE, CUP_ON, Detection("chair", 0.2, (0, 0, 10, 10)))])
    frames = pd.DataFrame({"story_id": ["a", "a"], "frame": [1, 2], "status": ["ok", "corrupt"],
                           "detections": [cells, "[]"], "width": [600, 0], "height": [240, 0]})
    table = spatial_features(pairs, frames, threshold=0.5, read_tags=True)
    assert list(table.columns) == ["pair_id", *SPATIAL_COLUMNS]
    # The plain text of the same pairs (the default, and the verifier's input) gives the same verdicts
    # here; only the explanation's wording differs ("cup" read from the words, "A cup" from the tag).
    plain = pairs.assign(text=["A cup rests on the table.", "A cup rests under the table.", "Nothing here."])
    verdicts = [c for c in SPATIAL_COLUMNS if c != "relations_json"]
    pd.testing.assert_frame_equal(spatial_features(plain, frames, threshold=0.5)[verdicts], table[verdicts])
    assert list(table["pair_id"]) == list(pairs["pair_id"])
    assert list(table["spatial_score"]) == [1.0, 0.0, UNINFORMATIVE_SCORE]
    assert list(table["spatial_informative"]) == [True, True, False]
    assert list(table["spatial_state"]) == ["checked", "checked", "not computed"]  # frame 2 did not decode
    decoded = spatial_features(pairs, frames.assign(status="ok"), threshold=0.5, read_tags=True)
    assert decoded["spatial_state"].iloc[2] == "nothing to check"  # the same text on a decoded frame
    assert list(table["study_spatial_score"]) == [0.5, 0.5, 0.5]  # the chair is below the threshold
    stated = spatial.relations_long(table.merge(pairs.assign(label=[1, 0, 1], negative_type=["", "relation_swap", ""])))
    assert list(zip(stated["pair_id"], stated["relation"], stated["status"])) == [("a-1-pos", "on", "held"),
                                                                                 ("a-1-neg-relation_swap", "under", "failed")]
    [swapped] = spatial.edited_statements(stated).itertuples()
    assert (swapped.pair_id, swapped.relation, swapped.status) == ("a-1-neg-relation_swap", "under", "failed")
    with pytest.raises(SpatialInputError, match="width"):
        spatial_features(pairs, frames.drop(columns="width"), threshold=0.5)
    with pytest.raises(SpatialInputError, match="lacks 1 frame"):
        spatial_features(pairs, frames.iloc[:1], threshold=0.5)


# ---------------------------------------------------------------------- the study's rule


def test_study_rule_near_far_and_no_pair():
    person = Detection("person", 0.9, (0, 0, 100, 200))  # centre (50, 100)
    assert study_spatial_score([person, Detection("tv", 0.8, (150, 0, 250, 100))]) == 1.0  # 158 px
    assert study_spatial_score([person, Detection("couch", 0.8, (450, 100, 560, 200))]) == 0.0  # 455 px
    assert study_spatial_score([person]) == 0.5
    assert study_spatial_score([]) == 0.5
    # "toy" is no COCO label, so a teddy bear next to a person is still "no pair"
    assert study_spatial_score([person, Detection("teddy bear", 0.9, (60, 0, 100, 40))]) == 0.5
    # only the first (most confident) box of each label counts
    far_first = [person, Detection("chair", 0.9, (500, 0, 560, 60)), Detection("chair", 0.4, (60, 0, 100, 40))]
    assert study_spatial_score(far_first) == 0.0


@pytest.mark.parametrize("dx, expected", [(399, 1.0), (400, 0.0), (401, 0.0)])
def test_study_rule_threshold_is_400_pixels_between_centres_strictly(dx, expected):
    person = Detection("person", 0.9, (0, 0, 100, 200))  # centre (50, 100)
    tv = Detection("tv", 0.8, (dx, 0, dx + 100, 200))  # centre (50 + dx, 100)
    assert study_spatial_score([person, tv]) == expected
    # the distance is Euclidean: 240 px across and 320 px down is 400 px
    assert study_spatial_score([person, Detection("tv", 0.8, (240, 320, 340, 520))]) == 0.0
    assert study_spatial_score([person, Detection("tv", 0.8, (239, 320, 339, 520))]) == 1.0
