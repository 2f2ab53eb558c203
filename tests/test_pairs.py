"""Tests for helpers.pairs: block-wise story splits and matched / mismatched pairs.

Pairs are built on two corpora: copies of the real story 3920 under other ids (real
text, where only some frames allow an object or relation swap) and small made-up
stories in which every negative type applies to every frame, so the mix can be checked.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from helpers.data import ParsedStory, parse_chain_of_thought, parse_row, parse_segment, parse_story, strip_tags
from helpers.lexicon import char_category, to_coco
from helpers.pairs import NEGATIVE_TYPES, PAIR_COLUMNS, make_pairs, object_swap, relation_swap, split_stories

from conftest import FIXTURES
MIX = {"other_story": 0.25, "same_story": 0.25, "object_swap": 0.3, "relation_swap": 0.2}


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


def toy_pairs(seed: int = 42, stories=TOYS, mix=MIX) -> tuple[pd.DataFrame, dict[str, str]]:
    split = split_stories([s.story_id for s in stories], block_size=2, seed=seed)
    return make_pairs(stories, split_of=split, negative_mix=mix, seed=seed, block_size=2), split


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


def test_pairs_are_balanced_and_complete():
    pairs, split = toy_pairs()
    assert list(pairs.columns) == PAIR_COLUMNS
    assert pairs.pair_id.is_unique
    assert len(pairs) == 2 * sum(s.frame_count for s in TOYS) and pairs.attrs["frames_without_negative"] == 0
    per_frame = pairs.groupby(["story_id", "frame"]).label.agg(["sum", "count"])
    assert (per_frame["sum"] == 1).all() and (per_frame["count"] == 2).all()
    assert (pairs.split == pairs.story_id.map(split)).all()
    positives = pairs[pairs.label == 1]
    assert (positives.negative_type == "").all() and (positives.change == "").all()
    assert (positives.source_story_id == positives.story_id).all() and (positives.source_frame == positives.frame).all()
    assert (pairs.text == pairs.tagged_text.map(strip_tags)).all()


def test_negative_mix_is_followed_when_every_type_applies():
    pairs, _ = toy_pairs()
    counts = pairs[pairs.label == 0].negative_type.value_counts()
    n = counts.sum()
    assert set(counts.index) == set(NEGATIVE_TYPES)
    for kind, weight in MIX.items():
        assert abs(counts[kind] / n - weight) < 0.08, counts.to_dict()


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
    assert set(swaps.swapped_from) == {"on", "left"}
    for row in swaps.itertuples():
        original = TOYS[int(row.story_id) // 3].segments[row.frame - 1].plain
        old, new = {"on": ("on the table", "under the table"), "left": ("to the left.", "to the right.")}[
            row.swapped_from
        ]
        assert row.text == original.replace(old, new) != original
        assert row.swapped_to == {"on": "under", "left": "right"}[row.swapped_from]


def test_relation_swap_keeps_case_and_skips_non_spatial_uses(story_3920):
    rng = random.Random(0)
    (behind,) = parse_story("<gdi image1>Behind <gdo obj1>the door</gdo>, a dog waits.</gdi>")
    swapped = relation_swap(story_3920, behind, rng)
    assert swapped.segment.plain == "In front of the door, a dog waits."
    assert (swapped.swapped_from, swapped.swapped_to) == ("Behind", "In front of")
    assert swapped.segment.tagged == "In front of <gdo obj1>the door</gdo>, a dog waits."
    for text in [
        "James left the room and made the right decision.",
        "She had to leave behind the conflict, on the other side of town.",
        "He stays behind. The plan is on hold under pressure.",
    ]:
        assert relation_swap(story_3920, parse_segment(text, 1), rng) is None, text


def test_relation_swap_in_real_text(story_3920):
    segments = {s.frame: s for s in story_3920.segments}
    rng = random.Random(0)
    swapped = relation_swap(story_3920, segments[6], rng)
    assert (swapped.swapped_from, swapped.swapped_to) == ("behind", "in front of")
    assert "The wall in front of them seems to close in" in swapped.segment.plain
    assert "<gdl bg5>wall</gdl> in front of <gdo char1 char4>them</gdo>" in swapped.segment.tagged
    swapped = relation_swap(story_3920, segments[11], rng)
    assert "lies motionless under the floor" in swapped.segment.plain
    assert relation_swap(story_3920, segments[1], rng) is None


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
    pairs = make_pairs(stories, split_of=split, negative_mix=MIX, seed=42, block_size=2)
    assert len(pairs) == 2 * 8 * 17 and pairs.label.sum() == 8 * 17
    negatives = pairs[pairs.label == 0]
    assert set(negatives.negative_type) == set(NEGATIVE_TYPES)
    # only frames 1, 9, 11, 12 and 14 name a COCO object other than a person
    assert set(negatives[negatives.negative_type == "object_swap"].frame) <= {1, 9, 11, 12, 14}
    assert (negatives.text.str.len() > 300).all() and not negatives.text.str.contains("<").any()

    only_relations = make_pairs(stories, split_of=split, negative_mix={"relation_swap": 1.0}, seed=42, block_size=2)
    assert set(only_relations.negative_type) == {"", "relation_swap"}
    n_frames = len(only_relations) // 2
    assert only_relations.attrs["frames_without_negative"] == 8 * 17 - n_frames
    assert 0 < n_frames < 8 * 17 and only_relations.label.sum() == n_frames


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"negative_mix": {"swap_everything": 1.0}}, "negative_mix"),
        ({"negative_mix": {"same_story": 0.0}}, "negative_mix"),
        ({"split_of": {}}, "no side for 40 stories"),
        ({"block_size": 0}, "block_size"),
    ],
)
def test_make_pairs_rejects_bad_input(kwargs, message):
    split = dict.fromkeys((s.story_id for s in TOYS), "train")
    with pytest.raises(ValueError, match=message):
        make_pairs(TOYS, **{"split_of": split, "negative_mix": MIX, "seed": 0, "block_size": 2, **kwargs})


def test_concat_pairs_rejects_shared_pair_ids():
    from helpers.pairs import concat_pairs

    a = pd.DataFrame({"pair_id": ["1-1-pos", "1-1-neg"], "split": ["train", "train"]})
    b = pd.DataFrame({"pair_id": ["9-1-pos"], "split": ["external"]})
    assert concat_pairs(a, b)["pair_id"].tolist() == ["1-1-pos", "1-1-neg", "9-1-pos"]
    with pytest.raises(ValueError, match="more than one table"):
        concat_pairs(a, a)
