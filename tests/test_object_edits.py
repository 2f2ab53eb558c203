"""Object swaps written into the sentence, not into the tag, on every object mention of the real stories.

In StoryReasoning a tag often holds only the noun ("The <gdo obj4>refrigerator</gdo>"): the
determiner before the tag is the phrase's own. These tests run the edit over every COCO object
mention of every real fixture story (the partial ones included) against several categories.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import COT_3920, STORY_3920, real_story_texts
from helpers.objects import COCO_CATEGORIES, to_coco
from helpers.pairs import (
    CONFUSABLE_GROUPS, MASS_CATEGORIES, _edit_parts, _object_drafts, _object_edit, _swapped_heads, confusable_with,
    double_determiner_rate, double_determiners, object_phrase_edit, phrase_start, swap_object_phrase,
    word_frequency_prior,
)  # fmt: skip
from helpers.tags import ParsedStory, parse_chain_of_thought, parse_segment, parse_story

#: Categories that test each rule: a/an (umbrella, apple, oven), a capitalised acronym (tv),
#: multi-word (cell phone, hair drier), pair nouns (scissors, skis), a mass noun (broccoli).
CATEGORIES = ("tv", "cup", "umbrella", "apple", "oven", "cell phone", "hair drier", "scissors", "skis", "broccoli")
_WRONG_ARTICLE = re.compile(r"\b[Aa] (?!uni|use|one|eu)[aeiouAEIOU]"
                            r"|\b[Aa]n (?!hour|honest|MRI)[b-df-hj-np-tv-zB-DF-HJ-NP-TV-Z]")


def _object_mentions():
    for name, text in real_story_texts().items():
        for segment in parse_story(text):
            for m in segment.mentions:
                if to_coco(m.text) not in (None, "person"):
                    yield name, segment, m


def _swap(segment, mention, category):
    found = object_phrase_edit(segment.plain, mention, category)
    if found is None:
        return None
    a, b, new = found
    story = ParsedStory("0", segment.frame, (segment,), None)
    return found, _edit_parts(story, segment, a, b, new, mention, "change")


def test_every_object_mention_of_every_real_story_is_edited_without_a_double_determiner():
    mentions = list(_object_mentions())
    outside = [m for _, s, m in mentions if phrase_start(s.plain, m.start, m.text) < m.start]
    assert len(mentions) >= 13 and len(outside) >= 6
    assert {name.split("/")[0] for name, _, _ in mentions} >= {"partial", "story_1831", "story_3920"}
    for name, segment, m in mentions:
        assert not double_determiners(segment.plain), (name, segment.plain)
        for category in sorted(set(CATEGORIES) - {to_coco(m.text)}):
            swapped = _swap(segment, m, category)
            if swapped is None:  # only a mass noun in a plural's place ("the cars" -> no "the broccoli")
                assert category in MASS_CATEGORIES and m.text.endswith("s"), (name, m.text, category)
                continue
            (a, b, new), done = swapped
            assert done is not None, (name, m.text, category)
            text = done.segment.plain
            assert text == segment.plain[:a] + new + segment.plain[b:]
            assert not double_determiners(text), (name, m.text, category, text[max(0, a - 20) : b + 20])
            assert not _WRONG_ARTICLE.search(text[max(0, a - 3) : a + len(new)]), (name, new)
            # every tag keeps its place and its kind; the edited mention names the new category
            assert [(x.ids, x.tag) for x in done.segment.mentions] == [(x.ids, x.tag) for x in segment.mentions]
            edited = done.segment.mentions[segment.mentions.index(m)]
            assert to_coco(edited.text) == category, (name, edited.text, category)
            assert done.swapped_from == segment.plain[a:b] and done.swapped_to == new
            assert text[done.swap_start : done.swap_end] in new


@pytest.mark.parametrize(
    ("tagged", "category", "expected"),
    [
        ("The <gdo obj4>refrigerator</gdo> behind <gdo char1>him</gdo> hums.", "tv", "The TV behind him hums."),
        ("John stood, his <gdo obj2>tie</gdo> neatly knotted.", "cup", "John stood, his cup neatly knotted."),
        ("A <gdo obj2>tie</gdo> hangs.", "cup", "A cup hangs."),
        ("A <gdo obj2>tie</gdo> hangs.", "umbrella", "An umbrella hangs."),
        ("He sees a <gdo obj2>tie</gdo>.", "umbrella", "He sees an umbrella."),
        ("A <gdo obj2>tie</gdo> hangs.", "broccoli", "Some broccoli hangs."),
        ("He sees a <gdo obj2>tie</gdo>.", "scissors", "He sees a pair of scissors."),
        ("The <gdo obj2>tie</gdo> hangs there.", "scissors", "The scissors hang there."),
        ("The <gdo obj2>tie</gdo> <gda obj2>is</gda> red.", "scissors", "The scissors are red."),
        ("He grabs his <gdo obj2>tie</gdo>.", "scissors", "He grabs his scissors."),
        ("The <gdo obj2>tie</gdo>, which hangs, is red.", "scissors", "The pair of scissors, which hangs, is red."),
        ("The <gdo obj2>tie</gdo> behind him hums.", "scissors", "The pair of scissors behind him hums."),
        ("The old <gdo obj2>tie</gdo> hangs.", "apple", "The old apple hangs."),
        ("An old <gdo obj2>tie</gdo> hangs.", "cup", "An old cup hangs."),
        ("The <gdo obj2>cars</gdo> behind him seem out of place.", "truck", "The trucks behind him seem out of place."),
        ("Jack holds <gdo obj9>a cell phone</gdo>.", "umbrella", "Jack holds an umbrella."),
        ("Boxes and <gdo obj1>chairs</gdo>.", "cup", "Boxes and cups."),
        ("Two <gdo obj1>glasses</gdo> sit on the table.", "scissors", "Two pairs of scissors sit on the table."),
        ("Several <gdo obj2>books</gdo> lie open.", "scissors", "Several pairs of scissors lie open."),
        ("Her <gdo obj5>bags</gdo> are packed.", "scissors", "Her scissors are packed."),
        ("An <gdo obj2>old lamp</gdo> flickers.", "broccoli", "Some old broccoli flickers."),
    ],
)
def test_the_words_before_the_tag_are_the_phrases_own(tagged, category, expected):
    segment = parse_segment(tagged, 1)
    mention = next(m for m in segment.mentions if m.kind == "obj")
    _, done = _swap(segment, mention, category)
    assert done.segment.plain == expected
    # the determiner stays outside the tag, the noun inside
    assert re.sub(r"<gd[a-z]+ [^>]*>|</gd[a-z]+>", "", done.segment.tagged) == expected
    assert "<gdo obj" in done.segment.tagged


def test_an_edit_inside_the_tag_alone_writes_the_double_determiner_the_check_finds():
    segment = parse_segment("The <gdo obj4>refrigerator</gdo> behind <gdo char1>him</gdo> hums.", 1)
    m = segment.mentions[0]
    inside = swap_object_phrase(m.text, "tv", sentence_start=False)
    inside_only = segment.plain[: m.start] + inside + segment.plain[m.end :]
    assert inside_only == "The a TV behind him hums." and double_determiners(inside_only) == ["The a"]
    assert double_determiners("his a cup, A a cup, a the cup; gives her a cup") == ["his a", "A a", "a the"]


def test_confusable_categories_never_replace_one_another():
    assert all(len(g) > 1 and g <= set(COCO_CATEGORIES) for g in CONFUSABLE_GROUPS)
    assert confusable_with(["cell phone"]) == {"remote", "mouse"}
    assert "truck" in confusable_with(["car"]) and "car" in confusable_with(["truck"])
    assert confusable_with(["person", None, "clock"]) == set()
    frames = max(int(n) for n in re.findall(r"<gdi image(\d+)>", STORY_3920.read_text(encoding="utf-8")))
    story = ParsedStory("3920", frames, tuple(parse_story(STORY_3920.read_text(encoding="utf-8"))),
                        parse_chain_of_thought(COT_3920.read_text(encoding="utf-8")))
    seen = 0
    for segment in story.segments:
        for text, start, end, mention, old, new in _object_drafts(story, segment):
            seen += 1
            assert new not in confusable_with([old]), (mention.text, old, new)
            assert not double_determiners(text)
            # the draft, scored as plain text, is the text the tagged edit writes
            assert _object_edit(story, segment, mention, old, new).segment.plain == text
    assert seen > 100


def test_double_determiner_rate_and_the_word_frequency_prior():
    pairs = pd.DataFrame({
        "split": ["train"] * 4 + ["val"] * 2 + ["test"] * 2,
        "label": [1, 0, 1, 0, 1, 0, 1, 0],
        "negative_type": ["", "object_swap", "", "object_swap", "", "object_swap", "", "object_swap"],
        "text": ["The cup falls. The cup.", "The a TV falls.", "A cup. The cup.", "A clock.", "The cup.", "The vase.",
                 "x", "The a x"],
        "swapped_from": ["", "The cup", "", "A cup", "", "The cup", "", "The cup"],
        "swapped_to": ["", "The a TV", "", "A clock", "", "The vase", "", "The x"],
    })  # fmt: skip
    rate = double_determiner_rate(pairs).set_index(["split", "negative_type"])
    assert rate.loc[("train", "object_swap"), "rate"] == 0.5 and rate.loc[("train", "(positive)"), "double"] == 0
    assert "test" not in rate.index.get_level_values("split")
    prior = word_frequency_prior(pairs).set_index("split")
    # "cup" is seen 4 times in the training texts, "tv", "clock" and "vase" never: always the rarer
    assert prior.loc["train", "paired_auc"] == 1.0 and prior.loc["val", "paired_auc"] == 1.0
    assert list(prior.index) == ["train", "val"]
    assert _swapped_heads("The tie hangs", "The scissors hang") == ("tie", "scissors")
    assert _swapped_heads("A tie", "A pair of scissors") == ("tie", "scissors")


def test_a_possessor_is_not_swapped():
    # "The car's engine" -> "The TV's engine": whatever is put in, the possessed thing gives the edit away
    for tagged in ("The <gdo obj4>car</gdo>'s engine roars.", "The <gdo obj4>car</gdo>\u2019s engine roars.",
                   "The <gdo obj4>car's</gdo> engine roars."):
        segment = parse_segment(tagged, 1)
        mention = next(m for m in segment.mentions if m.kind == "obj")
        assert object_phrase_edit(segment.plain, mention, "tv") is None
    segment = parse_segment("The <gdo obj4>car</gdo> roars.", 1)
    assert object_phrase_edit(segment.plain, segment.mentions[0], "tv") == (0, 7, "The TV")

