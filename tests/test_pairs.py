"""Tests for helpers.pairs: block-wise story splits and matched / mismatched pairs.

Pairs are built on two corpora: copies of the real story 3920 under other ids (real
text, where only some frames allow an object or relation swap) and small made-up
stories in which every negative type applies to every frame, so each frame gets all four.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.objects import char_category, to_coco
from helpers.evaluation import blind_auc_table
from helpers.pairs import NEGATIVE_TYPES, PAIR_COLUMNS, make_pairs, object_swap, relation_swap, split_stories
from helpers.pairs import relation_swap_options
from helpers.tags import ParsedStory, parse_chain_of_thought, parse_row, parse_segment, parse_story, strip_tags

from conftest import COT_3920, FIXTURES, STORY_1831, STORY_3920


@pytest.fixture(scope="module")
def story_3920() -> ParsedStory:
    return parse_row(
        {
            "story_id": "3920",
            "frame_count": 17,
            "story": (FIXTURES / "story_3920" / "story.txt").read_text(encoding="utf-8"),
            "chain_of_thought": (FIXTURES / "story_3920" / "chain_of_thought.md").read_text(encoding="utf-8"),
        }
    )


def toy_story(story_id: int, frames: int = 4) -> ParsedStory:
    """A story where every frame has a swappable object and spatial expression."""
    story = "".join(
        f"<gdi image{k}>In scene {k} of story {story_id}, <gdo char1>Ann</gdo> <gda char1>puts</gda> "
        f"<gdo obj1>a cup</gdo> on the table; the lamp stands to the left.</gdi>"
        for k in range(1, frames + 1)
    )
    cot = "".join(
        f"## Image {k}\n### Characters\n| Character ID | Name | Description | Bounding Box |\n|---|---|---|---|\n"
        f"| char1 | Ann | A woman | 10,10,50,90 |\n### Objects\n| Object ID | Description | Bounding Box |\n"
        f"|---|---|---|\n| obj1 | Cup | 60,60,70,70 |\n| obj2 | Table | 40,70,120,100 |\n"
        f"### Setting\n| Setting Element | Description |\n|---|---|\n| Location | A kitchen |\n\n"
        for k in range(1, frames + 1)
    )
    return ParsedStory(str(story_id), frames, tuple(parse_story(story)), parse_chain_of_thought(cot))


TOYS = [toy_story(i) for i in range(0, 120, 3)]  # 40 stories, ids 0, 3, ..., 117


def blocks_of(ids: list[str], block_size: int) -> dict[str, int]:
    ordered = sorted(ids, key=int)
    return {sid: i // block_size for i, sid in enumerate(ordered)}


def toy_pairs(seed: int = 42, stories=TOYS, types=NEGATIVE_TYPES, **kwargs) -> tuple[pd.DataFrame, dict[str, str]]:
    split = split_stories([s.story_id for s in stories], block_size=2, seed=seed)
    return make_pairs(stories, split_of=split, negative_types=types, seed=seed, block_size=2, **kwargs), split


# ------------------------------------------------------------------------------ split


def test_split_is_blockwise_and_close_to_fractions():
    ids = [str(i) for i in range(1000)]
    split = split_stories(ids, block_size=10, seed=3)
    assert sorted(split, key=int) == ids
    counts = Counter(split.values())
    for side, fraction in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
        assert abs(counts[side] - fraction * 1000) <= 10  # within one block
    for block in range(100):  # ids 10b .. 10b+9 share a side
        assert len({split[str(i)] for i in range(10 * block, 10 * block + 10)}) == 1


def test_split_sorts_ids_numerically_and_is_deterministic():
    ids = [str(i) for i in range(0, 400, 2)]
    shuffled = random.Random(0).sample(ids, len(ids))
    split = split_stories(shuffled, block_size=4, seed=42)
    assert split == split_stories(ids, block_size=4, seed=42)
    assert split != split_stories(ids, block_size=4, seed=43)
    numeric_blocks = blocks_of(ids, 4)  # "98" and "100" are neighbours, not "10" and "100"
    for block in set(numeric_blocks.values()):
        assert len({split[s] for s, b in numeric_blocks.items() if b == block}) == 1


def test_small_split_gives_every_side_two_blocks():
    split = split_stories([str(i) for i in range(24)], block_size=4, seed=1)
    assert Counter(split.values()) == {"train": 8, "val": 8, "test": 8}
    blocks = blocks_of([str(i) for i in range(24)], 4)
    for side in ("train", "val", "test"):
        assert len({blocks[s] for s, v in split.items() if v == side}) == 2
    # one side only: two blocks are enough
    assert set(split_stories(["5", "6", "7"], block_size=2, fractions=(1.0, 0.0, 0.0)).values()) == {"train"}


def test_split_with_too_few_blocks_is_an_error():
    with pytest.raises(ValueError, match="5 blocks, but each of the 3 sides needs at least 2"):
        split_stories([str(i) for i in range(20)], block_size=4, seed=1)
    assert len(set(split_stories([str(i) for i in range(20)], block_size=4, min_blocks=1).values())) == 3


@pytest.mark.parametrize(
    ("ids", "kwargs", "message"),
    [
        (["1", "2"], {"fractions": (0.5, 0.5, 0.5)}, "fractions"),
        (["1", "2"], {"fractions": (0.7, 0.3)}, "fractions"),
        (["1", "x2"], {}, "not a number"),
        (["1", "1"], {}, "duplicates"),
        (["1", "2"], {"block_size": 0}, "block_size"),
    ],
)
def test_split_rejects_bad_input(ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_stories(ids, **{"block_size": 2, **kwargs})


# ------------------------------------------------------------------------------ pairs


def test_every_frame_gets_a_negative_of_every_type_that_applies():
    pairs, split = toy_pairs()
    assert list(pairs.columns) == PAIR_COLUMNS
    assert pairs.pair_id.is_unique
    assert len(pairs) == 5 * sum(s.frame_count for s in TOYS) and pairs.attrs["frames_without_negative"] == 0
    per_frame = pairs.groupby(["story_id", "frame"]).label.agg(["sum", "count"])
    assert (per_frame["sum"] == 1).all() and (per_frame["count"] == 5).all()  # one positive, four negatives
    kinds = pairs[pairs.label == 0].groupby(["story_id", "frame"]).negative_type.agg(tuple)
    assert (kinds == NEGATIVE_TYPES).all()  # every type, in the spec's order
    expected = [f"{r.story_id}-{r.frame}-" + ("pos" if r.label else f"neg-{r.negative_type}")
                for r in pairs.itertuples()]
    assert pairs.pair_id.tolist() == expected
    assert (pairs.split == pairs.story_id.map(split)).all()
    positives = pairs[pairs.label == 1]
    assert (positives.negative_type == "").all() and (positives.change == "").all()
    assert (positives.source_story_id == positives.story_id).all() and (positives.source_frame == positives.frame).all()
    assert (pairs.text == pairs.tagged_text.map(strip_tags)).all()


@pytest.mark.parametrize("variant", ["naive", "fluent"])
def test_a_types_negative_does_not_depend_on_the_other_types(variant):
    every, _ = toy_pairs(variant=variant)
    for kind in NEGATIVE_TYPES:
        alone, _ = toy_pairs(types=[kind], variant=variant)
        expected = every[(every.label == 1) | (every.negative_type == kind)].reset_index(drop=True)
        pd.testing.assert_frame_equal(alone, expected)


def test_object_swap_names_an_object_absent_from_the_frame():
    pairs, _ = toy_pairs()
    swaps = pairs[pairs.negative_type == "object_swap"]
    assert len(swaps) > 10
    stories = {s.story_id: s for s in TOYS}
    for row in swaps.itertuples():
        frame = stories[row.story_id].cot.frames[row.frame]
        annotated = {char_category(e.description) for e in frame.characters}
        annotated |= {to_coco(e.description) for e in frame.objects}
        category = to_coco(row.swapped_to)
        assert row.swapped_from == "a cup" and category not in annotated | {"person", None}
        mention = parse_segment(row.tagged_text, row.frame).mentions[1]  # <gdo obj1>
        assert mention.ids == ("obj1",) and mention.text == row.swapped_to
        original = stories[row.story_id].segments[row.frame - 1].plain
        assert row.text == original.replace("a cup", row.swapped_to, 1) != original
        assert row.change == f'object "a cup" -> "{row.swapped_to}" (cup -> {category})'


def test_relation_swap_reverses_one_expression():
    pairs, _ = toy_pairs()
    swaps = pairs[pairs.negative_type == "relation_swap"]
    assert len(swaps) > 5 and set(swaps.swapped_from) == {"on"}  # "to the left." relates nothing: never swapped
    for row in swaps.itertuples():
        original = TOYS[int(row.story_id) // 3].segments[row.frame - 1].plain
        assert row.text == original.replace("a cup on the table", "a cup under the table") != original
        assert row.swapped_to == "under" and row.text[row.swap_start : row.swap_end] == "under"
    naive, _ = toy_pairs(variant="naive")
    assert set(naive[naive.negative_type == "relation_swap"].swapped_from) == {"on", "left"}


def test_naive_relation_swap_keeps_case_and_skips_non_spatial_uses(story_3920):
    rng = random.Random(0)
    (behind,) = parse_story("<gdi image1>Behind <gdo obj1>the door</gdo>, a dog waits.</gdi>")
    swapped = relation_swap(story_3920, behind, rng, naive=True)
    assert swapped.segment.plain == "In front of the door, a dog waits."
    assert (swapped.swapped_from, swapped.swapped_to) == ("Behind", "In front of")
    assert swapped.segment.tagged == "In front of <gdo obj1>the door</gdo>, a dog waits."
    for text in [
        "James left the room and made the right decision.",
        "She had to leave behind the conflict, on the other side of town.",
        "He stays behind. The plan is on hold under pressure.",
    ]:
        assert relation_swap(story_3920, parse_segment(text, 1), rng, naive=True) is None, text
        assert relation_swap(story_3920, parse_segment(text, 1), rng) is None, text


def test_naive_relation_swap_in_real_text_is_what_the_issue_shows(story_3920):
    segments = {s.frame: s for s in story_3920.segments}
    rng = random.Random(0)
    swapped = relation_swap(story_3920, segments[6], rng, naive=True)
    assert (swapped.swapped_from, swapped.swapped_to) == ("behind", "in front of")
    assert "The wall in front of them seems to close in" in swapped.segment.plain
    assert "<gdl bg5>wall</gdl> in front of <gdo char1 char4>them</gdo>" in swapped.segment.tagged
    swapped = relation_swap(story_3920, segments[11], rng, naive=True)
    assert "lies motionless under the floor" in swapped.segment.plain
    assert relation_swap(story_3920, segments[1], rng, naive=True) is None


#: A frame for the relation checks: Ann (char1) stands left of a cup (obj1) that rests on a table (obj2);
#: a clock (obj3) hangs above the TV (obj4); a second table (obj5) makes "table" ambiguous when untagged.
RELATION_COT = (
    "## Image 1\n### Characters\n| Character ID | Name | Description | Bounding Box |\n|---|---|---|---|\n"
    "| char1 | Ann | A woman | 10,10,50,90 |\n### Objects\n| Object ID | Description | Bounding Box |\n"
    "|---|---|---|\n| obj1 | Thing | 60,60,70,70 |\n| obj2 | Thing | 40,70,120,100 |\n"
    "| obj3 | Clock | 200,10,220,30 |\n| obj4 | TV | 190,40,240,80 |\n| obj6 | Thing | 300,0,300,40 |\n"
    "| bg1 | Floor | 0,200,500,240 |\n| bg2 | Wall | 0,0,500,100 |\n"
)


@pytest.mark.parametrize(
    ("text", "expected", "check"),
    [
        ("<gdo obj1>A cup</gdo> rests on <gdo obj2>the table</gdo>.", "A cup rests under the table.", ""),
        ("<gdo obj2>The table</gdo> stands under <gdo obj1>the cup</gdo>.", "The table stands on the cup.", ""),
        ("<gdo char1>Ann</gdo> stands to the left of <gdo obj1>the cup</gdo>.",
         "Ann stands to the right of the cup.", ""),
        ("A clock hangs above the TV.", "A clock hangs below the TV.", ""),  # untagged: one box per category
        # the boxes contradict the stated relation: the cup is above the table, right of Ann
        ("<gdo obj1>The cat</gdo> hides under <gdo obj2>the bed</gdo>.", None, "boxes contradict the original"),
        ("<gdo obj1>The lamp</gdo> is to the left of <gdo char1>Ann</gdo>.", None, "boxes contradict the original"),
        ("<gdo char1>Ann</gdo> stands behind <gdo obj1>the couch</gdo>.", None, "boxes contradict the original"),
        ("<gdo char1>Ann</gdo> lies motionless on <gdo bg1>the floor</gdo>.", None, "not visible"),
        ("<gdo char1>Ann</gdo> sits on the ground near a dog.", None, "no opposite"),
        ("<gdo obj1>A bird</gdo> flies above the sky.", None, None),  # the sky is no thing read
        ("<gdo bg2>The wall</gdo> behind <gdo char1>him</gdo> seems to close in.", None, "not visible"),
        ("<gdo char1>Ann</gdo> stands behind <gdo bg3>the counter</gdo>.", None, "not visible"),  # no box in the frame
        ("<gdo char1>Ann</gdo> sits on <gdo obj1>the couch</gdo>.", None, "no opposite"),  # an agent phrase
        ("<gdo char1>Ann</gdo> is under pressure, on the other side of town.", None, None),  # no relation read
        ("A dog sleeps under the bench.", None, "no boxes"),  # COCO things the frame has no entity of
        ("<gdo obj1>A cup</gdo> rests on <gdo obj6>the tray</gdo>.", None, "no boxes"),  # a box with no area
        ("<gdo obj1>A cup</gdo> rests on the table.", None, "no boxes"),  # "Thing" names no table
    ],
)
def test_relation_swap_only_between_things_the_frame_can_show(text, expected, check):
    (segment,) = parse_story(f"<gdi image1>{text}</gdi>")
    story = ParsedStory("1", 1, (segment,), parse_chain_of_thought(RELATION_COT))
    options = relation_swap_options(story, segment)
    assert [o.segment.plain for o in options] == ([expected] if expected else [])
    review = hp.relation_swap_review(story, segment)
    assert [reason for reason, _ in review] == ([] if check is None else [check])
    assert check is None or check in hp.RELATION_CHECKS or check == ""
    for option in options:  # the span is the changed words only ("left" -> "right" in "to the left of")
        changed = option.segment.plain[option.swap_start : option.swap_end]
        assert changed and changed in option.swapped_to and changed not in option.swapped_from


def _frame_story(boxes: dict[str, str], text: str) -> tuple[ParsedStory, object]:
    """A one-frame story whose chain of thought gives each object id (described as "Thing") its box."""
    rows = "".join(f"| {i} | Thing | {box} |\n" for i, box in boxes.items())
    cot = parse_chain_of_thought("## Image 1\n### Objects\n| Object ID | Description | Bounding Box |\n|---|---|---|\n"
                                 + rows)
    (segment,) = parse_story(f"<gdi image1>{text}</gdi>")
    return ParsedStory("1", 1, (segment,), cot), segment


def test_a_relation_is_reversed_only_where_the_boxes_support_it_and_contradict_the_reversal():
    text = "<gdo obj1>The cup</gdo> sits left of <gdo obj2>the plate</gdo>, and <gdo obj3>a fork</gdo> rests on " \
           "<gdo obj2>the plate</gdo>."
    fits = {"obj1": "0,0,10,10", "obj2": "40,40,80,60", "obj3": "50,35,60,45"}
    story, segment = _frame_story(fits, text)
    assert [o.swapped_to for o in relation_swap_options(story, segment)] == ["right of", "rests under"]
    # move the cup right of the plate and the fork under it: the boxes now contradict both statements
    story, segment = _frame_story({**fits, "obj1": "100,0,110,10", "obj3": "50,70,60,80"}, text)
    assert relation_swap_options(story, segment) == []
    assert [r for r, _ in hp.relation_swap_review(story, segment)] == ["boxes contradict the original"] * 2
    # one of the fork's two boxes (a mention of two ids) fails: the relation must hold for every box
    two = text.replace("<gdo obj3>a fork</gdo>", "<gdo obj3 obj4>two forks</gdo>")
    story, segment = _frame_story({**fits, "obj4": "50,70,60,80"}, two)
    assert [r for r, _ in hp.relation_swap_review(story, segment)] == ["", "boxes contradict the original"]
    # an id without a box: no boxes for that side
    story, segment = _frame_story({k: v for k, v in fits.items() if k != "obj2"}, text)
    assert [r for r, _ in hp.relation_swap_review(story, segment)] == ["not visible", "not visible"]


def test_relation_candidates_count_what_each_check_removed_per_split(tiny_mlm, tmp_path):
    good = "<gdo obj1>A cup</gdo> rests on <gdo obj2>the table</gdo>."
    bad = "<gdo obj1>The cat</gdo> hides under <gdo obj2>the bed</gdo>."
    agent = "<gdo char1>Ann</gdo> sits on <gdo obj1>the couch</gdo>."
    cot = parse_chain_of_thought(RELATION_COT)
    stories = [ParsedStory(str(i), 1, (parse_story(f"<gdi image1>{text}</gdi>")[0],), cot)
               for i, text in enumerate([good, bad, bad, agent, good])]
    split = {"0": "train", "1": "train", "2": "val", "3": "val", "4": "test"}
    table = hp.relation_candidates(stories, split_of=split, mlm=tiny_mlm, cache_dir=tmp_path)
    assert list(table.story_id) == ["0", "4"]
    removed = pd.DataFrame(table.attrs["removed"]).T
    assert list(removed.index) == list(hp.RELATION_CHECKS) and list(removed.columns) == ["train", "val", "test"]
    assert removed.loc["boxes contradict the original"].tolist() == [1, 1, 0]
    assert removed.loc["no opposite"].tolist() == [0, 1, 0]
    assert removed.to_numpy().sum() == 3


def test_relation_swaps_of_real_stories_never_touch_scenery(story_3920):
    story_1831 = ParsedStory("1831", 19, tuple(parse_story(STORY_1831.read_text(encoding="utf-8"))),
                             parse_chain_of_thought(""))
    scenery = re.compile(r"\b(floor|ground|sky|wall|walls|ceiling)\b", re.IGNORECASE)
    found = 0
    for story in (story_3920, story_1831):
        for segment in story.segments:
            for option in relation_swap_options(story, segment):
                found += 1
                sentence = option.segment.plain[max(0, option.swap_start - 60) : option.swap_end + 40]
                after = option.segment.plain[option.swap_end : option.swap_end + 30]
                assert not scenery.search(after.split(".")[0]), sentence
    # 3920's naive swaps were all to a wall or the floor: none is left
    assert all(not relation_swap_options(story_3920, s) for s in story_3920.segments)
    assert found >= 0


def test_object_swap_in_real_text(story_3920):
    segments = {s.frame: s for s in story_3920.segments}
    swapped = object_swap(story_3920, segments[9], random.Random(0))
    assert swapped.swapped_from == "a cell phone"
    frame = story_3920.cot.frames[9]
    category = to_coco(swapped.swapped_to)
    assert category not in {to_coco(e.description) for e in frame.objects} | {"person", "cell phone", None}
    assert swapped.segment.mentions[1].ids == ("obj9",) and swapped.segment.mentions[1].text == swapped.swapped_to
    assert swapped.segment.tagged.count("<gdo") == segments[9].tagged.count("<gdo")
    assert object_swap(story_3920, segments[2], random.Random(0)) is None  # only "Jack": a person


def test_other_story_comes_from_a_distant_block_of_the_same_split():
    pairs, split = toy_pairs()
    others = pairs[pairs.negative_type == "other_story"]
    assert len(others) > 10
    for side in ("train", "val", "test"):
        block = blocks_of([s for s, v in split.items() if v == side], 2)
        rows = others[others.split == side]
        assert (rows.source_story_id.map(split) == side).all()
        gaps = (rows.story_id.map(block) - rows.source_story_id.map(block)).abs()
        assert (gaps >= 1).all()
        if side == "train":  # many blocks: the donor is at least two blocks away
            assert (gaps >= 2).all()


def test_same_story_uses_another_frame():
    pairs, _ = toy_pairs()
    same = pairs[pairs.negative_type == "same_story"]
    assert len(same) > 10
    assert (same.source_story_id == same.story_id).all() and (same.source_frame != same.frame).all()
    assert all(f"In scene {row.source_frame} " in row.text for row in same.itertuples())


def test_pairs_are_deterministic():
    first, _ = toy_pairs(seed=42)
    shuffled = random.Random(1).sample(TOYS, len(TOYS))
    again, _ = toy_pairs(seed=42, stories=shuffled)
    pd.testing.assert_frame_equal(first, again)
    other, _ = toy_pairs(seed=7)
    assert not first.equals(other)


def test_inapplicable_types_are_renormalised_away(story_3920):
    stories = [dataclasses.replace(story_3920, story_id=str(i)) for i in range(0, 80, 10)]
    split = dict.fromkeys((s.story_id for s in stories), "train")
    pairs = make_pairs(stories, split_of=split, negative_types=NEGATIVE_TYPES, seed=42, block_size=2)
    assert pairs.label.sum() == 8 * 17 and pairs.pair_id.is_unique
    negatives = pairs[pairs.label == 0]
    assert len(negatives) > 2 * 8 * 17  # other_story and same_story apply to every frame, object_swap to some
    # no relation of 3920 is between two things a frame can show, so no frame gets a relation swap
    assert set(negatives.negative_type) == set(NEGATIVE_TYPES) - {"relation_swap"}
    naive = make_pairs(stories, split_of=split, negative_types=NEGATIVE_TYPES, seed=42, block_size=2, variant="naive")
    assert set(naive[naive.label == 0].negative_type) == set(NEGATIVE_TYPES)
    # only frames 1, 9, 11, 12 and 14 name a COCO object other than a person
    assert set(negatives[negatives.negative_type == "object_swap"].frame) <= {1, 9, 11, 12, 14}
    assert (negatives.text.str.len() > 300).all() and not negatives.text.str.contains("<").any()

    only_relations = make_pairs(stories, split_of=split, negative_types=["relation_swap"], seed=42, block_size=2,
                                variant="naive")
    assert set(only_relations.negative_type) == {"", "relation_swap"}
    n_frames = len(only_relations) // 2
    assert only_relations.attrs["frames_without_negative"] == 8 * 17 - n_frames
    assert 0 < n_frames < 8 * 17 and only_relations.label.sum() == n_frames
    # the fluent construction finds no relation between two visible things in 3920 (walls, the floor)
    fluent = make_pairs(stories, split_of=split, negative_types=["relation_swap"], seed=42, block_size=2)
    assert len(fluent) == 0 and fluent.attrs["frames_without_negative"] == 8 * 17


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"negative_types": ["swap_everything"]}, "negative_types"),
        ({"negative_types": []}, "negative_types"),
        ({"negative_types": ["same_story", "same_story"]}, "negative_types"),
        ({"negative_types": "same_story"}, "negative_types"),
        ({"split_of": {}}, "no side for 40 stories"),
        ({"block_size": 0}, "block_size"),
        ({"variant": "clever"}, "unknown pair construction"),
        ({"variant": "adversarial"}, "masked language model"),
        ({"n_candidates": 0}, "n_candidates"),
    ],
)
def test_make_pairs_rejects_bad_input(kwargs, message):
    split = dict.fromkeys((s.story_id for s in TOYS), "train")
    with pytest.raises(ValueError, match=message):
        make_pairs(TOYS, **{"split_of": split, "negative_types": NEGATIVE_TYPES, "seed": 0, "block_size": 2, **kwargs})


def test_concat_pairs_rejects_shared_pair_ids():
    from helpers.pairs import concat_pairs

    a = pd.DataFrame({"pair_id": ["1-1-pos", "1-1-neg-same_story"], "split": ["train", "train"]})
    b = pd.DataFrame({"pair_id": ["9-1-pos"], "split": ["external"]})
    assert concat_pairs(a, b)["pair_id"].tolist() == ["1-1-pos", "1-1-neg-same_story", "9-1-pos"]
    with pytest.raises(ValueError, match="more than one table"):
        concat_pairs(a, a)


# ------------------------------------------------------------------ fluent object edits

from helpers.objects import COCO_CATEGORIES  # noqa: E402
from helpers.pairs import MASS_CATEGORIES, _object_phrase, article, is_plural, plural, swap_object_phrase  # noqa: E402


@pytest.mark.parametrize(
    ("phrase", "category", "expected"),
    [
        ("a stack of books", "cup", "a stack of cups"),
        ("his old phone", "clock", "his old clock"),
        ("a bus", "dog", "a dog"),
        ("buses", "dog", "dogs"),
        ("TV", "clock", "a clock"),
        ("The TV", "clock", "The clock"),
        ("a TV", "oven", "an oven"),
        ("a cup", "tv", "a TV"),
        ("two glasses", "clock", "two clocks"),
        ("the glass", "bottle", "the bottle"),
        ("an umbrella", "clock", "a clock"),
        ("a cup", "apple", "an apple"),
        ("A cup", "umbrella", "An umbrella"),
        ("An umbrella", "cup", "A cup"),
        ("the people", "dog", "the dogs"),
        ("three men", "umbrella", "three umbrellas"),
        ("the children", "horse", "the horses"),
        ("the man's cell phone", "book", "the man's book"),
        ("James's phone", "remote", "James's remote"),
        ("a small coffee table", "laptop", "a small laptop"),
        ("a cup of coffee on the table", "vase", "a vase on the table"),
        ("Cups", "clock", "Clocks"),
        ("Old phone", "oven", "An old oven"),
        ("the glasses", "wine glass", "the wine glasses"),
        ("a bottle", "wine glass", "a wine glass"),
        ("two bottles", "cell phone", "two cell phones"),
        ("the tables", "dining table", "the dining tables"),
        ("a knife", "scissors", "a pair of scissors"),
        ("the mice", "knife", "the knives"),
        ("several books", "sheep", "several sheep"),
        ("a pair of glasses", "cup", "a pair of cups"),
        ("a blue blanket and a cup", "bowl", "a blue blanket and a bowl"),
        ("his phone,", "book", "his book,"),
        ("a half-empty glass of wine", "bowl", "a half-empty bowl"),
        ("her red handbag", "umbrella", "her red umbrella"),
        ("an old leather suitcase", "backpack", "an old leather backpack"),
        ("the dusty bottles", "hair drier", "the dusty hair dryers"),
    ],
)
def test_swap_object_phrase_replaces_the_head_noun_only(phrase, category, expected):
    assert swap_object_phrase(phrase, category) == expected


def test_swap_object_phrase_sentence_start_is_the_only_capital():
    assert swap_object_phrase("TV", "clock", sentence_start=True) == "A clock"
    assert swap_object_phrase("The TV", "clock", sentence_start=False) == "The clock"
    assert swap_object_phrase("Cups", "bowl", sentence_start=False) == "bowls"
    with pytest.raises(ValueError, match="not a COCO category"):
        swap_object_phrase("a cup", "spaceship")
    with pytest.raises(ValueError, match="non-empty"):
        swap_object_phrase("  ", "cup")


def test_the_naive_edit_is_the_one_the_issue_reports():
    assert _object_phrase("a stack of books", "cup") == "a cups"
    assert _object_phrase("a bus", "dog") == "a dogs"
    assert _object_phrase("TV", "clock") == "A CLOCK"


def test_number_and_article_helpers():
    assert [plural(w) for w in ("bus", "glass", "wine glass", "knife", "person", "couch", "box", "sheep")] == [
        "buses", "glasses", "wine glasses", "knives", "people", "couches", "boxes", "sheep"]
    assert [is_plural(w) for w in ("bus", "glass", "glasses", "people", "cups", "lens", "children", "iris")] == [
        False, False, True, True, True, False, True, False]
    assert [article(w) for w in ("apple", "TV", "umbrella", "unicorn", "hour", "MRI", "cup")] == [
        "an", "a", "an", "a", "an", "an", "a"]


_A_BEFORE_VOWEL = re.compile(r"\b[Aa] (?!uni|use|one|eu)[aeiouAEIOU]")
_AN_BEFORE_CONSONANT = re.compile(r"\b[Aa]n (?!hour|honest|MRI)[b-df-hj-np-tv-zB-DF-HJ-NP-TV-Z]")


def _fixture_mentions() -> list[tuple[str, bool]]:
    """Every COCO-mappable non-person <gdo> mention of the real fixture stories, with whether it opens a sentence."""
    out = []
    for path in (STORY_3920, STORY_1831):
        for segment in parse_story(path.read_text(encoding="utf-8")):
            for m in segment.mentions:
                if to_coco(m.text) not in (None, "person"):
                    before = segment.plain[: m.start].rstrip()
                    out.append((m.text, not before or before[-1] in ".!?"))
    return out


def test_swap_object_phrase_on_every_object_mention_of_the_real_stories():
    mentions = _fixture_mentions()
    assert len(mentions) >= 10
    for text, opens in mentions:
        head_plural = is_plural(text.split()[-1].strip(",."))
        for category in COCO_CATEGORIES:
            if category == "person":
                continue
            if head_plural and category in MASS_CATEGORIES:  # no "two broccoli"
                with pytest.raises(ValueError, match="mass noun"):
                    swap_object_phrase(text, category, sentence_start=opens)
                continue
            new = swap_object_phrase(text, category, sentence_start=opens)
            assert to_coco(new) == category, (text, category, new)
            assert not _A_BEFORE_VOWEL.search(new) and not _AN_BEFORE_CONSONANT.search(new), (text, new)
            last = new.rstrip(",.").split()[-1]
            if not head_plural and category not in ("skis", "scissors"):
                assert not is_plural(last), (text, new)
            assert new[:1].isupper() == (opens and new[:1].isalpha()) or new.startswith("TV"), (text, new)
            assert not any(w.isupper() and len(w) > 1 and w != "TV" for w in new.split()), (text, new)
            if head_plural and category not in ("sheep", "tv"):
                assert is_plural(last), (text, new)


# ------------------------------------------------------------- the adversarial construction

from helpers import pairs as hp  # noqa: E402
from helpers.mlm import MLM  # noqa: E402
from helpers.weights import load_model  # noqa: E402

SMALL = TOYS[:12]  # 6 id blocks of 2: two per side


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory):
    return load_model(MLM, "random", models_dir=tmp_path_factory.mktemp("models"), seed=0, device="cpu")


class _LengthModel:
    """A stand-in blind classifier whose P(positive) depends on the text alone (its length)."""

    def predict_proba(self, texts):
        p = np.array([(len(t) % 89) / 89 for t in texts])
        return np.column_stack([1 - p, p])


class _DigestModel:
    """A stand-in blind classifier whose P(positive) is a digest of the text: unrelated to its
    length or to how the language model ranked it."""

    def predict_proba(self, texts):
        p = np.array([zlib.crc32(t.encode()) / 2**32 for t in texts])
        return np.column_stack([1 - p, p])


def _story_of(text: str) -> str:
    return re.search(r"of story (\d+)", text).group(1)


def test_adversarial_construction_on_story_3920_is_fluent(story_3920, tiny_mlm, tmp_path):
    stories = [dataclasses.replace(story_3920, story_id=str(i)) for i in range(0, 120, 10)]
    split = split_stories([s.story_id for s in stories], block_size=2, seed=1)
    pairs = make_pairs(stories, split_of=split, negative_types=NEGATIVE_TYPES, seed=42, block_size=2, variant="adversarial",
                       mlm=tiny_mlm, cache_dir=tmp_path, n_candidates=4)
    assert list(pairs.columns) == PAIR_COLUMNS and pairs.pair_id.is_unique
    per_frame = pairs.groupby(["story_id", "frame"]).label.agg(["sum", "count"])
    kinds = pairs.groupby(["story_id", "frame"]).negative_type.nunique()  # "" and the negatives' types
    assert (per_frame["sum"] == 1).all() and (per_frame["count"] == kinds).all() and (kinds >= 3).all()
    assert pairs.label.sum() == 12 * 17  # every frame of 3920 has some negative: other_story and same_story
    negatives = pairs[pairs.label == 0]
    assert negatives.blind_score.between(0, 1).all() and (negatives.n_candidates.between(1, 4)).all()
    assert (negatives.n_candidates == 4).mean() > 0.5
    swaps = negatives[negatives.negative_type == "object_swap"]
    assert len(swaps) >= 5
    own = pairs[pairs.label == 1].set_index(["story_id", "frame"]).text
    for row in swaps.itertuples():
        original = own[(row.story_id, row.frame)]
        end_old = row.swap_end + len(original) - len(row.text)
        assert row.text[: row.swap_start] == original[: row.swap_start]
        assert row.text[row.swap_end :] == original[end_old:]
        assert row.text[row.swap_start : row.swap_end] in row.swapped_to
        frame = story_3920.cot.frames[row.frame]
        present = {to_coco(e.description) for e in frame.objects} | {to_coco(row.swapped_from), "person"}
        assert to_coco(row.swapped_to) not in present | {None}, row.change
        assert not _A_BEFORE_VOWEL.search(row.swapped_to) and not _AN_BEFORE_CONSONANT.search(row.swapped_to)
        assert not re.search(r"\b[Aa]n? \w+s\b", row.swapped_to.replace("pair of", "")), row.swapped_to
        assert not any(w.isupper() and len(w) > 1 and w != "TV" for w in row.swapped_to.split()), row.swapped_to
    assert not negatives.text.str.contains(r"\b(?:a cups|a dogs|A CLOCK)\b").any()
    assert not (negatives.negative_type == "relation_swap").any()  # 3920 relates nothing visible


def test_adversarial_construction_is_deterministic(tiny_mlm, tmp_path):
    split = split_stories([s.story_id for s in SMALL], block_size=2, seed=42)
    args = dict(split_of=split, negative_types=NEGATIVE_TYPES, block_size=2, variant="adversarial", mlm=tiny_mlm)
    first = make_pairs(SMALL, seed=42, cache_dir=tmp_path / "a", **args)
    again = make_pairs(random.Random(3).sample(SMALL, len(SMALL)), seed=42, cache_dir=tmp_path / "b", **args)
    pd.testing.assert_frame_equal(first, again)
    assert set(first[first.label == 0].negative_type) == set(NEGATIVE_TYPES)
    per_frame = first.groupby(["story_id", "frame"]).label.agg(["sum", "count"])
    assert (per_frame["sum"] == 1).all() and (per_frame["count"] == 5).any()  # frames with all four types
    assert first.pair_id.is_unique and first.pair_id.str.fullmatch(r"\d+-\d+-(pos|neg-[a-z_]+)").all()
    assert not first.equals(make_pairs(SMALL, seed=7, cache_dir=tmp_path / "a", **args))
    # a frame cap keeps exactly the pairs the whole construction makes for the frames it keeps
    capped = make_pairs(SMALL, seed=42, cache_dir=tmp_path / "a", frames_per_story=2, **args)
    assert _same_pairs_on_kept_frames(first, capped, 2)


def _same_pairs_on_kept_frames(whole: pd.DataFrame, capped: pd.DataFrame, k: int) -> bool:
    kept = {(sid, f) for sid, g in whole.groupby("story_id") for f in hp.evenly_spaced(g["frame"].unique(), k)}
    expected = whole[[key in kept for key in zip(whole["story_id"], whole["frame"])]].reset_index(drop=True)
    pd.testing.assert_frame_equal(capped, expected)
    assert capped.groupby("story_id")["frame"].nunique().max() == k < whole.groupby("story_id")["frame"].nunique().max()
    return capped.attrs["frames_not_sampled"] == whole[["story_id", "frame"]].drop_duplicates().shape[0] - len(kept)


def test_frames_per_story_keeps_evenly_spaced_frames_of_the_same_construction():
    assert hp.evenly_spaced(range(13, 0, -1), 6) == [1, 3, 6, 8, 11, 13]  # StoryReasoning's median story
    assert hp.evenly_spaced([4, 2], 5) == [2, 4] and hp.evenly_spaced([2, 4, 9], None) == [2, 4, 9]
    assert hp.evenly_spaced([2, 4, 9], 1) == [2]
    whole, split = toy_pairs()
    capped = make_pairs(TOYS, split_of=split, negative_types=NEGATIVE_TYPES, seed=42, block_size=2, frames_per_story=2)
    assert _same_pairs_on_kept_frames(whole, capped, 2)
    empty = hp.keep_frames_per_story(whole.iloc[:0], 2)
    assert empty.empty and list(empty.columns) == list(whole.columns) and empty.attrs["frames_not_sampled"] == 0
    with pytest.raises(ValueError, match="frames_per_story must be >= 1"):
        make_pairs(TOYS, split_of=split, negative_types=NEGATIVE_TYPES, seed=42, block_size=2, frames_per_story=0)


def test_filter_keeps_the_candidate_most_like_a_positive(tiny_mlm, tmp_path, monkeypatch):
    """With a fixed text-only scorer, more candidates (a superset for these types) never score lower."""
    monkeypatch.setattr(hp, "_fit_blind", lambda *a, **k: _DigestModel())
    split = split_stories([s.story_id for s in SMALL], block_size=2, seed=42)
    args = dict(split_of=split, negative_types=NEGATIVE_TYPES, seed=42, block_size=2, variant="adversarial", mlm=tiny_mlm,
                cache_dir=tmp_path)
    one = make_pairs(SMALL, n_candidates=1, **args).set_index("pair_id")
    four = make_pairs(SMALL, n_candidates=4, **args).set_index("pair_id")
    negatives = four[four.label == 0]
    assert np.allclose(negatives.blind_score, _DigestModel().predict_proba(list(negatives.text))[:, 1])
    superset = negatives[negatives.negative_type.isin(["other_story", "object_swap", "relation_swap"])].index
    assert len(superset) > 10 and (one.loc[superset, "n_candidates"] == 1).all()
    assert (four.loc[superset, "blind_score"] >= one.loc[superset, "blind_score"] - 1e-12).all()
    assert (four.loc[superset, "blind_score"] > one.loc[superset, "blind_score"]).any()


def test_the_blind_classifier_never_fits_on_validation_or_test_text(tiny_mlm, tmp_path, monkeypatch):
    fitted: list[str] = []

    def record(texts, labels, weights, seed):
        fitted.extend(texts)
        return _LengthModel()

    monkeypatch.setattr(hp, "_fit_blind", record)
    split = split_stories([s.story_id for s in SMALL], block_size=2, seed=42)
    pairs = make_pairs(SMALL, split_of=split, negative_types=NEGATIVE_TYPES, seed=42, block_size=2, variant="adversarial",
                       mlm=tiny_mlm, cache_dir=tmp_path)
    block_of = hp.id_blocks([s.story_id for s in SMALL], 2)
    blind_auc_table(pairs, block_of=block_of, n_resamples=10)
    margin, _ = hp.choose_relation_margin(
        hp.relation_candidates(SMALL, split_of=split, mlm=tiny_mlm, cache_dir=tmp_path), [1.0, math.inf],
        block_of=block_of)
    assert fitted and {split[_story_of(t)] for t in fitted} == {"train"}  # the margin too: training stories only
    fitted.clear()
    make_pairs(SMALL, split_of=split, negative_types=NEGATIVE_TYPES, seed=42, block_size=2, variant="adversarial",
               mlm=tiny_mlm, cache_dir=tmp_path)
    blind_auc_table(pairs, block_of=block_of, n_resamples=10)
    assert fitted and {split[_story_of(t)] for t in fitted} == {"train"}
    # and a training frame is never scored by a model that saw its story
    scores = hp.blind_predictions(pairs, block_of=block_of)
    assert scores.notna().all()


def test_blind_predictions_are_cross_fitted_by_story_block():
    pairs, split = toy_pairs(stories=SMALL)
    seen: list[set[str]] = []
    original = hp._fit_blind

    def record(texts, labels, weights, seed):
        seen.append({_story_of(t) for t in texts})
        return original(texts, labels, weights, seed)

    import unittest.mock

    with unittest.mock.patch.object(hp, "_fit_blind", record):
        scores = hp.blind_predictions(pairs, block_of=hp.id_blocks([s.story_id for s in SMALL], 2), n_folds=2)
    train = {s for s, side in split.items() if side == "train"}
    # two folds (each fitted on the other's stories, with none of the held-out stories' texts), then one
    # fit on all training stories
    assert len(seen) == 3 and seen[-1] == train
    assert seen[0] | seen[1] == train and not seen[0] & seen[1]
    assert scores.between(0, 1).all()
    table = blind_auc_table(pairs, block_of=hp.id_blocks([s.story_id for s in SMALL], 2), n_resamples=20)
    assert set(table.split) == {"train", "val"} and set(table.negative_type) == {*NEGATIVE_TYPES, "all"}
    assert (table.low <= table.high).all() and table.roc_auc.between(0, 1).all()
    every = table[table.negative_type == "all"]  # SMALL: every frame gets all four types
    assert (every.n_negative == 4 * every.n_positive).all()
    per_type = table[table.negative_type != "all"]  # each type against its own frames' positives: 1:1
    assert (per_type.n_negative == per_type.n_positive).all()
    assert (table.n_unscored == 0).all()
    train_only = {s: b for s, b in hp.id_blocks([s.story_id for s in SMALL], 2).items() if split[s] == "train"}
    with pytest.raises(ValueError, match="no id block for 8 stories"):  # validation and test stories
        blind_auc_table(pairs, block_of=train_only, n_resamples=20)


def test_relation_margin_is_the_one_whose_swaps_a_blind_reader_cannot_spot():
    rows = []
    for i in range(40):
        word, other = ("on", "under") if i % 2 else ("under", "on")  # both words on both sides
        original = f"In scene {i} of story {i}, a cup stands {word} the table near lamp {i}."
        plausible = original.replace(f" {word} ", f" {other} ")
        odd = original.replace(f"stands {word} the table", f"stands {other} the table zzz qqq")
        split = "train" if i < 30 else "val"
        rows.append({"story_id": str(i), "frame": 1, "split": split, "text": plausible, "original": original,
                     "plausibility": -0.5})
        rows.append({"story_id": str(i), "frame": 1, "split": split, "text": odd, "original": original,
                     "plausibility": -6.0})
    candidates = pd.DataFrame(rows)
    block_of = hp.id_blocks([str(i) for i in range(40)], 4)
    margin, table = hp.choose_relation_margin(candidates, [1.0, 2.0, math.inf], block_of=block_of)
    assert list(table.margin) == [1.0, 2.0, math.inf] and list(table.swaps_kept) == [30, 30, 60]  # train only
    assert table.blind_roc_auc.iloc[2] > 0.6 and abs(table.blind_roc_auc.iloc[0] - 0.5) < 0.15
    # (the odd swaps give themselves away; the plausible ones do not)
    assert margin == 2.0  # ties between 1 and 2: the larger margin


# ------------------------------------------------------------------------------ folds, margin and fallbacks


def test_folds_never_cut_an_id_block_of_the_study():
    block_of = hp.id_blocks([str(i) for i in range(10, 16)], 3)  # blocks 10-12 and 13-15
    folds = hp._folds(["10", "12", "13", "14", "15"], block_of, 3)  # story 11 has no pair, say
    assert sorted(map(sorted, folds)) == [["10", "12"], ["13", "14", "15"]]
    for fold in folds:
        assert len({block_of[s] for s in fold}) == 1 and all(block_of[s] in {block_of[f] for f in fold} for s in fold)
    assert hp._folds(["10", "12"], block_of, 3) == []  # one block: nothing to cross-fit
    with pytest.raises(ValueError, match="no id block for 1 stories"):
        hp._folds(["10", "99"], block_of, 3)
    # a subset of the training stories is folded by the study's blocks, never re-cut
    ids = [str(i) for i in range(40)]
    block_of = hp.id_blocks(ids, 4)
    subset = [i for i in ids if int(i) % 3]
    for fold in hp._folds(subset, block_of, 5):
        blocks = {block_of[s] for s in fold}
        assert not {s for s in subset if block_of[s] in blocks} - fold


def test_the_relation_margin_never_reads_validation_or_test():
    rows = []
    for i in range(40):
        original = f"In scene {i} of story {i}, a cup stands on the table near lamp {i}."
        split = "train" if i < 24 else ("val" if i < 32 else "test")
        for plausibility, text in ((-0.5, original.replace(" on ", " under ")),
                                   (-6.0, original.replace("on the table", "under the table zzz"))):
            rows.append({"story_id": str(i), "frame": 1, "split": split, "text": text, "original": original,
                         "plausibility": plausibility})
    candidates = pd.DataFrame(rows)
    block_of = hp.id_blocks([str(i) for i in range(40)], 4)
    margin, table = hp.choose_relation_margin(candidates, [1.0, math.inf], block_of=block_of)
    held_out = ~candidates.split.eq("train")
    changed = candidates.copy()
    changed.loc[held_out, "text"] = changed.loc[held_out, "text"] + " qqq"
    changed.loc[held_out, "plausibility"] = -0.1
    again, again_table = hp.choose_relation_margin(changed, [1.0, math.inf], block_of=block_of)
    assert margin == again and table.equals(again_table)
    assert list(table.swaps_kept) == [24, 48] and table.attrs["unmeasured"] == 0 and (table.n_unscored == 0).all()


def test_a_margin_grid_without_a_measurable_auc_is_reported():
    rows = [{"story_id": str(i), "frame": 1, "split": "train", "text": f"a cup under the table {i}",
             "original": f"a cup on the table {i}", "plausibility": -1.0} for i in range(8)]
    one_block = dict.fromkeys((str(i) for i in range(8)), "0-7")  # nothing to cross-fit over
    margin, table = hp.choose_relation_margin(pd.DataFrame(rows), [0.5, 2.0], block_of=one_block)
    assert margin == math.inf and table.attrs["no_margin_measurable"] and table.attrs["unmeasured"] == 2
    assert table.blind_roc_auc.isna().all() and list(table.n_unscored) == [0, 16]  # none kept; 8 + 8 texts


def test_frames_the_filter_could_not_score_are_counted(tiny_mlm, tmp_path):
    split = split_stories([s.story_id for s in SMALL], block_size=2, seed=42)
    args = dict(split_of=split, negative_types=NEGATIVE_TYPES, seed=42, block_size=2, variant="adversarial", mlm=tiny_mlm,
                cache_dir=tmp_path)
    scored = make_pairs(SMALL, **args)
    assert scored.attrs["frames_unfiltered"] == {"train": 0, "val": 0, "test": 0}
    # every training story in one id block: no fold to cross-fit, so no training frame can be scored
    one_block = dict.fromkeys((s.story_id for s in SMALL), "all")
    pairs = make_pairs(SMALL, block_of=one_block, **args)
    negatives = pairs[pairs.label == 0]
    train = negatives[negatives.split == "train"]
    assert train.blind_score.isna().all() and negatives[negatives.split != "train"].blind_score.notna().all()
    n_train = train[["story_id", "frame"]].drop_duplicates().shape[0]  # frames, not negatives
    assert pairs.attrs["frames_unfiltered"] == {"train": n_train, "val": 0, "test": 0} and n_train > 5
    assert len(train) > n_train
    table = blind_auc_table(pairs, block_of=one_block, n_resamples=10)
    unscored = table.set_index(["split", "negative_type"]).n_unscored
    assert unscored[("train", "all")] == (pairs.split == "train").sum() and unscored[("val", "all")] == 0
    assert table[table.split == "train"].roc_auc.isna().all() and table[table.split == "val"].n_negative.sum() > 0
    both = hp.concat_pairs(scored, pairs.assign(pair_id=pairs.pair_id + "-x"))
    assert both.attrs["frames_unfiltered"] == {"train": n_train, "val": 0, "test": 0}  # summed per split


def test_the_blind_filter_sees_each_frames_own_text_once_and_its_candidates_as_much(tiny_mlm, tmp_path, monkeypatch):
    """A frame has candidates of several types: its own text enters the filter's fit once (label 1, weight 1)
    and all its candidates together weigh 1, whatever the number of types."""
    fits = []

    def record(texts, labels, weights, seed):
        fits.append((list(texts), np.asarray(labels), np.asarray(weights, dtype=float)))
        return _LengthModel()

    monkeypatch.setattr(hp, "_fit_blind", record)
    split = split_stories([s.story_id for s in SMALL], block_size=2, seed=42)
    pairs = make_pairs(SMALL, split_of=split, negative_types=NEGATIVE_TYPES, seed=42, block_size=2,
                       variant="adversarial", mlm=tiny_mlm, cache_dir=tmp_path)
    assert (pairs[pairs.label == 0].groupby(["story_id", "frame"]).size() > 1).all()  # several types per frame
    train_frames = pairs[(pairs.split == "train") & (pairs.label == 1)]
    texts, labels, weights = fits[-1]  # the fit on every training frame, which scores validation and test
    own = [t for t, y in zip(texts, labels) if y == 1]
    assert sorted(own) == sorted(train_frames.text) and (weights[labels == 1] == 1).all()
    assert weights[labels == 0].sum() == pytest.approx(len(own))  # each frame's candidates weigh 1 in all
    for texts, labels, weights in fits[:-1]:  # cross-fitting: a held-out story's texts are never lent
        assert len(set(t for t, y in zip(texts, labels) if y == 1)) == int((labels == 1).sum())
        assert weights[labels == 0].sum() <= (labels == 1).sum() + 1e-9
