"""The rules that decide which pairs the study has, pinned by small cases worked out by hand:
how ids are cut into blocks and blocks dealt to the sides, which stories may donate an
``other_story`` text, and which negatives a frame gets when a type does not apply.

Written against the public functions (``split_stories``, ``make_pairs``) only.
"""

from __future__ import annotations

from collections import Counter

import pytest

from helpers.pairs import make_pairs, split_stories
from helpers.tags import ParsedStory, parse_chain_of_thought, parse_story


def story(story_id: str, frames: int = 3) -> ParsedStory:
    """A story whose frames have distinct texts naming nothing COCO has (no object or relation swap)."""
    text = "".join(f"<gdi image{k}>Scene {k} of story {story_id}: the wind rises.</gdi>" for k in range(1, frames + 1))
    cot = "".join(f"## Image {k}\n### Setting\n| Setting Element | Description |\n|---|---|\n| Location | A field |\n\n"
                  for k in range(1, frames + 1))
    return ParsedStory(story_id, frames, tuple(parse_story(text)), parse_chain_of_thought(cot))


def ids(*numbers: int) -> list[str]:
    return [str(n) for n in numbers]


# ------------------------------------------------------------------------------- split


def test_blocks_are_dealt_round_robin_then_to_the_largest_deficit():
    # 10 blocks of one story, at least one per side: one each, then (targets 7, 1.5, 1.5)
    # train takes six more until its deficit (0) falls below the others' (0.5), and the last
    # block goes to val, the earlier of the two tied sides; whatever the shuffle
    for seed in range(5):
        split = split_stories(ids(*range(10)), block_size=1, min_blocks=1, seed=seed)
        assert Counter(split.values()) == {"train": 7, "val": 2, "test": 1}


def test_round_robin_stops_after_min_blocks_per_side():
    # fractions 0.2, 0.4, 0.4 over 5 one-story blocks, one block per side first: then the
    # 4th block goes to the largest deficit (val: 2 - 1, tied with test, earlier), not round
    # robin to train, and the 5th to test
    split = split_stories(ids(*range(5)), fractions=(0.2, 0.4, 0.4), block_size=1, min_blocks=1, seed=0)
    assert Counter(split.values()) == {"train": 1, "val": 2, "test": 2}


def test_the_default_seed_is_42():
    some = ids(*range(0, 60, 3))
    assert split_stories(some, block_size=2) == split_stories(some, block_size=2, seed=42)
    assert split_stories(some, block_size=2) != split_stories(some, block_size=2, seed=43)


def test_deficit_ties_go_to_the_earlier_side_and_empty_sides_get_nothing():
    # two sides of 50% (targets 2.5), five one-story blocks: train, val; then deficits 1.5
    # and 1.5 tie: train; then 0.5 against 1.5: val; then 0.5 and 0.5 tie: train. 3 to 2
    split = split_stories(ids(*range(5)), fractions=(0.5, 0.5, 0.0), block_size=1, min_blocks=1, seed=0)
    assert Counter(split.values()) == {"train": 3, "val": 2}
    split = split_stories(ids(*range(5)), fractions=(0.0, 0.5, 0.5), block_size=1, min_blocks=1, seed=0)
    assert Counter(split.values()) == {"val": 3, "test": 2}


def test_block_size_cuts_consecutive_ids_and_the_last_block_may_be_short():
    # 7 ids in blocks of 3: {1,2,3} {4,5,6} {7}; each block on one side, three sides of one block
    split = split_stories(ids(*range(1, 8)), block_size=3, min_blocks=1, seed=4)
    sides = [split[i] for i in ids(*range(1, 8))]
    assert sides[0] == sides[1] == sides[2] and sides[3] == sides[4] == sides[5]
    assert set(sides) == {"train", "val", "test"}  # three blocks, one per side
    assert Counter(sides)[sides[6]] == 1  # the short last block is alone on its side


def test_exactly_enough_blocks_is_enough():
    assert len(split_stories(ids(*range(6)), block_size=1, seed=0)) == 6  # 3 sides x 2 blocks
    with pytest.raises(ValueError, match="5 blocks, but each of the 3 sides needs at least 2"):
        split_stories(ids(*range(5)), block_size=1, seed=0)
    with pytest.raises(ValueError, match="2 blocks, but each of the 2 sides needs at least 2"):
        split_stories(ids(1, 2, 3), fractions=(0.5, 0.5, 0.0), block_size=2, seed=0)


def test_the_split_lists_ids_in_numeric_order():
    split = split_stories(["100", "9", "10", "2", "33", "4"], block_size=1, seed=0)
    assert list(split) == ["2", "4", "9", "10", "33", "100"]


@pytest.mark.parametrize("fractions, ok", [
    ((0.7, 0.15, 0.15 + 1e-9), True),  # rounding is tolerated
    ((0.7, 0.15, 0.16), False),
    ((1.2, -0.2, 0.0), False),  # sums to 1, but a negative share
    ((1.0, 0.0, 0.0), True),
])
def test_fractions_must_be_non_negative_and_sum_to_one(fractions, ok):
    def call():
        return split_stories(ids(*range(12)), fractions=fractions, block_size=1, seed=0)

    if ok:
        assert len(call()) == 12
    else:
        with pytest.raises(ValueError, match="fractions"):
            call()


@pytest.mark.parametrize("bad", ["-3", "3a", "", "1.5"])
def test_story_ids_must_be_numbers(bad):
    with pytest.raises(ValueError, match="not a number"):
        split_stories([*ids(*range(6)), bad], block_size=1, seed=0)


def test_duplicate_ids_are_refused_with_a_plain_message():
    with pytest.raises(ValueError, match=r"^story_ids contains duplicates$"):
        split_stories(ids(1, 2, 3, 4, 5, 6, 1), block_size=1, seed=0)


# ------------------------------------------------------------------------------ other_story


def _donors(stories: list[ParsedStory], split_of: dict[str, str], block_size: int, seeds=range(8)):
    """story id -> the set of source stories of its other_story negatives over a few seeds."""
    found: dict[str, set[str]] = {}
    for seed in seeds:
        pairs = make_pairs(stories, split_of=split_of, negative_types=["other_story"], seed=seed,
                           block_size=block_size)
        negatives = pairs[pairs.label == 0]
        assert set(negatives.negative_type) == {"other_story"}
        for sid, source in zip(negatives.story_id, negatives.source_story_id):
            found.setdefault(sid, set()).add(source)
    return found


def test_other_story_donors_are_two_blocks_away_when_there_are_such_blocks():
    # ids 8..13 in numeric blocks {8, 9} {10, 11} {12, 13} (as text, "10" < "8"), all in train
    stories = [story(i) for i in ids(13, 8, 11, 9, 12, 10)]
    donors = _donors(stories, dict.fromkeys(ids(*range(8, 14)), "train"), block_size=2)
    assert donors["8"] == donors["9"] == {"12", "13"}  # the block two away, every story of it
    assert donors["12"] == donors["13"] == {"8", "9"}
    # the middle block has no block two away: any story one block away
    assert donors["10"] == donors["11"] == {"8", "9", "12", "13"}


def test_other_story_donors_come_from_the_same_side_only():
    stories = [story(i) for i in ids(*range(1, 9))]
    split_of = {**dict.fromkeys(ids(1, 2, 5, 6), "train"), **dict.fromkeys(ids(3, 4, 7, 8), "test")}
    donors = _donors(stories, split_of, block_size=2)
    # train's blocks (in train's own id order) are {1, 2} {5, 6}; test's {3, 4} {7, 8}
    assert donors["1"] == donors["2"] == {"5", "6"} and donors["5"] == donors["6"] == {"1", "2"}
    assert donors["3"] == donors["4"] == {"7", "8"} and donors["7"] == donors["8"] == {"3", "4"}


def test_a_side_of_one_block_has_no_other_story_negative():
    stories = [story(i) for i in ids(1, 2, 3)]
    split_of = dict.fromkeys(ids(1, 2, 3), "train")
    alone = make_pairs(stories, split_of=split_of, negative_types=["other_story"], seed=0, block_size=3)
    assert len(alone) == 0 and alone.attrs["frames_without_negative"] == 9
    # with a second block there is a donor for every frame
    split = make_pairs(stories, split_of=split_of, negative_types=["other_story"], seed=0, block_size=2)
    assert len(split) == 18 and split.attrs["frames_without_negative"] == 0


# ------------------------------------------------------------------------------ the types


def test_a_type_that_does_not_apply_leaves_the_others():
    stories = [story(i) for i in ids(1, 2, 3)]  # one block: no other_story; no COCO thing: no swaps
    split_of = dict.fromkeys(ids(1, 2, 3), "train")
    pairs = make_pairs(stories, split_of=split_of, negative_types=["other_story", "same_story", "object_swap"],
                       seed=0, block_size=3)
    negatives = pairs[pairs.label == 0]
    assert len(negatives) == 9 and set(negatives.negative_type) == {"same_story"}
    assert pairs.attrs["frames_without_negative"] == 0


def test_a_type_left_out_of_negative_types_is_never_built():
    stories = [story(i) for i in ids(1, 2, 3)]
    split_of = dict.fromkeys(ids(1, 2, 3), "train")
    pairs = make_pairs(stories, split_of=split_of, negative_types=["other_story"], seed=0, block_size=3)
    assert len(pairs) == 0 and pairs.attrs["frames_without_negative"] == 9


def test_a_one_frame_story_has_no_same_story_negative():
    stories = [story("1", frames=1), story("2", frames=2)]
    pairs = make_pairs(stories, split_of={"1": "train", "2": "train"}, negative_types=["same_story"], seed=0,
                       block_size=1)
    assert list(pairs.story_id) == ["2"] * 4 and pairs.attrs["frames_without_negative"] == 1
    negatives = pairs[pairs.label == 0]
    assert list(zip(negatives.frame, negatives.source_frame)) == [(1, 2), (2, 1)]


def test_each_frame_gets_its_own_positive_and_a_negative_of_each_type():
    stories = [story(i) for i in ids(1, 2, 3, 4)]
    pairs = make_pairs(stories, split_of=dict.fromkeys(ids(1, 2, 3, 4), "val"),
                       negative_types=["same_story", "other_story"], seed=3, block_size=2)
    assert list(pairs.pair_id[:6]) == ["1-1-pos", "1-1-neg-other_story", "1-1-neg-same_story",
                                       "1-2-pos", "1-2-neg-other_story", "1-2-neg-same_story"]
    assert list(pairs.label[:6]) == [1, 0, 0, 1, 0, 0] and pairs.pair_id.is_unique
    assert (pairs.split == "val").all() and len(pairs) == 3 * 4 * 3
    positives = pairs[pairs.label == 1]
    assert (positives.source_story_id == positives.story_id).all() and (positives.source_frame == positives.frame).all()
    kinds = Counter(pairs[pairs.label == 0].negative_type)
    assert kinds == {"other_story": 12, "same_story": 12}


@pytest.mark.parametrize("types", [["same_story", "swap_everything"], [], ["same_story", "same_story"], "same_story"])
def test_negative_types_must_be_distinct_known_types(types):
    with pytest.raises(ValueError, match="negative_types"):
        make_pairs([story("1")], split_of={"1": "train"}, negative_types=types, seed=0, block_size=1)


def test_stories_without_a_side_are_counted_and_listed_up_to_five():
    stories = [story(i) for i in ids(*range(1, 8))]
    with pytest.raises(ValueError, match=r"^split_of has no side for 6 stories, e.g. \['2', '3', '4', '5', '6'\]$"):
        make_pairs(stories, split_of={"1": "train"}, negative_types=["same_story"], seed=0, block_size=1)


def test_duplicate_stories_are_refused():
    with pytest.raises(ValueError, match=r"^stories contains duplicate story ids$"):
        make_pairs([story("1"), story("1")], split_of={"1": "train"}, negative_types=["same_story"], seed=0,
                   block_size=1)
