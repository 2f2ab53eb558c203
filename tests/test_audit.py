"""The audit sheet (chapter 08 writes it) and a person's judgements of it (chapter 07 reads them):
the sample, the page and the CSV, the share of hidden positives with its Wilson interval, and
the labels files that must be refused."""

from __future__ import annotations

import base64
import io
import re

import pandas as pd
import pytest
from PIL import Image
from scipy.stats import binomtest

from helpers import config
from helpers import dashboards as db
from helpers.evaluation import AUDIT_COLUMNS, audit_section, audit_table, read_audit_labels


def pairs_table() -> pd.DataFrame:
    """Twelve frames of three stories: each an aligned pair and one negative, the types in turn."""
    types = ["other_story", "same_story", "object_swap", "relation_swap"]
    rows = []
    for i in range(12):
        story, frame, split = str(100 + i // 4), i % 4 + 1, ("train", "val", "test")[i // 4]
        own = f"Anna puts the cup {i} on the table."
        kind = types[i % 4]
        edited = {"other_story": "A dog runs across a field.", "same_story": f"Ben reads by the window {i}.",
                  "object_swap": f"Anna puts the clock {i} on the table.",
                  "relation_swap": f"Anna puts the cup {i} under the table."}[kind]
        common = {"story_id": story, "frame": frame, "split": split}
        rows.append({"pair_id": f"{story}-{frame}-pos", **common, "label": 1, "negative_type": "", "text": own})
        rows.append({"pair_id": f"{story}-{frame}-neg-{kind}", **common, "label": 0, "negative_type": kind, "text": edited})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the profile key


def test_every_profile_sets_a_valid_audit_size_and_a_bad_one_is_refused():
    assert [config.load_profile(p)["audit"]["per_type"] for p in ("smoke", "quick", "full")] == [10, 25, 50]
    assert config.load_profile("quick-bench")["audit"]["per_type"] == 25
    for bad in (0, -3, 2.5, "10", True, None):
        with pytest.raises(ValueError, match=r"audit.per_type \(negatives of each type .*\) must be a positive integer"):
            config.load_profile("smoke", {"audit": {"per_type": bad}})
    assert config.output_paths("smoke").audit == config.output_paths("smoke").root / "audit"


# ----------------------------------------------------------------------------- the sheet (chapter 08)


def test_audit_sample_draws_every_type_from_every_split_with_the_frames_own_text():
    pairs = pairs_table()
    sample = db.audit_sample(pairs, per_type=2, seed=0)
    assert list(sample.columns) == list(AUDIT_COLUMNS)
    assert sample["negative_type"].value_counts().to_dict() == {t: 2 for t in
                                                                ("other_story", "same_story", "object_swap",
                                                                 "relation_swap")}
    assert (sample["judgement"] == "").all() and set(sample["pair_id"]) <= set(pairs.loc[pairs["label"] == 0, "pair_id"])
    own = pairs[pairs["label"] == 1].set_index(["story_id", "frame"])["text"]
    for row in sample.itertuples(index=False):
        assert row.original_text == own[(row.story_id, row.frame)]
        assert row.split == pairs.set_index("pair_id").loc[row.pair_id, "split"]
    assert sample.equals(db.audit_sample(pairs, per_type=2, seed=0))  # seeded
    assert len(db.audit_sample(pairs, per_type=50, seed=0)) == 12  # every negative, when there are fewer
    whole = db.audit_sample(pairs, per_type=3, seed=0)
    assert set(whole["split"]) == {"train", "val", "test"}  # no split left out


def test_audit_highlights_mark_the_changed_words_of_a_swap_only():
    old, new = db.audit_highlights("Anna puts the cup on the table.", "Anna puts the clock on the table.",
                                   "object_swap")
    assert ("Anna puts the cup on the table."[old[0].start:old[0].end], old[0].kind) == ("cup", "missing")
    assert ("Anna puts the clock on the table."[new[0].start:new[0].end], new[0].kind) == ("clock", "swapped")
    assert new[0].note == "was 'cup'"
    assert db.audit_highlights("Anna puts the cup down.", "A dog runs.", "other_story") == ([], [])


def test_write_audit_sheet_writes_a_page_with_inline_jpegs_and_a_csv_to_fill(tmp_path):
    sample = db.audit_sample(pairs_table(), per_type=1, seed=0)
    keys = list(zip(sample["story_id"], sample["frame"]))
    thumbnails = {k: db.audit_thumbnail(Image.new("RGB", (576, 240), (200, 30, 30))) for k in keys[1:]}
    thumbnails[keys[0]] = None  # a frame that does not decode
    written = db.write_audit_sheet(tmp_path / "audit", sample, thumbnails)
    page = written["html"].read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert len(images) == len(sample) - 1 and "the frame does not decode" in page
    with Image.open(io.BytesIO(base64.b64decode(images[0]))) as thumb:
        assert thumb.format == "JPEG" and thumb.height == db.AUDIT_THUMBNAIL_HEIGHT
    assert all(p in page for p in sample["pair_id"]) and page.startswith("<!DOCTYPE html>")
    swap = sample[sample["negative_type"] == "object_swap"].iloc[0]
    assert f'title="was &#x27;cup' in page and swap["edited_text"].split()[3] in page
    sheet = pd.read_csv(written["csv"], dtype=str, keep_default_na=False)
    assert list(sheet.columns) == list(AUDIT_COLUMNS) and (sheet["judgement"] == "").all()
    assert sheet["pair_id"].tolist() == sample["pair_id"].tolist()
    assert not list((tmp_path / "audit").glob(".*.tmp"))  # written atomically, nothing left behind
    with pytest.raises(ValueError, match="columns"):
        db.write_audit_sheet(tmp_path / "audit", sample.drop(columns="split"), thumbnails)


# ----------------------------------------------------------------------------- the labels (chapter 07)


def filled_labels(tmp_path, judgements: dict[str, str]):
    """The sheet of every negative in a tmp outputs folder, ``judgements`` written in, saved as labels.csv."""
    paths = config.Paths(tmp_path / "smoke")
    sheet = db.audit_sample(pairs_table(), per_type=10, seed=0)
    sheet["judgement"] = sheet["pair_id"].map(judgements).fillna("")
    path = paths.audit / "labels.csv"
    path.parent.mkdir(parents=True)
    sheet.to_csv(path, index=False)
    return path, sheet


def test_filled_labels_give_the_share_of_hidden_positives_per_type_with_a_wilson_interval(tmp_path):
    swaps = [f"{100 + i // 4}-{i % 4 + 1}-neg-object_swap" for i in (2, 6, 10)]  # the three object swaps
    judgements = {swaps[0]: "true", swaps[1]: " FALSE ", swaps[2]: "True", "100-1-neg-other_story": "false"}
    path, _ = filled_labels(tmp_path, judgements)
    labels = read_audit_labels(path, pairs_table())
    assert len(labels) == 4 and labels.attrs["unjudged"] == 8
    section = audit_section(labels)
    assert section["judged"] == 4 and section["unjudged"] == 8 and section["file"] == "audit/labels.csv"
    assert section["judged_by_split"] == {"test": 1, "train": 2, "val": 1}
    swap = section["by_negative_type"]["object_swap"]
    expected = binomtest(2, 3).proportion_ci(confidence_level=0.95, method="wilson")
    assert (swap["judged"], swap["true_of_frame"]) == (3, 2) and swap["share"] == pytest.approx(2 / 3)
    assert (swap["low"], swap["high"]) == pytest.approx((expected.low, expected.high))
    assert 0 < swap["low"] < 2 / 3 < swap["high"] < 1
    assert section["by_negative_type"]["other_story"]["true_of_frame"] == 0
    table = audit_table(section)
    assert list(table.index) == ["other_story", "object_swap"]
    assert table.loc["object_swap", "share of hidden positives"] == (
        f"0.667 [{expected.low:.3f}, {expected.high:.3f}]")
    assert audit_section(None) == {**section, "judged": 0, "unjudged": 0, "by_negative_type": {},
                                   "judged_by_split": {}}


def test_malformed_labels_are_refused_with_a_clear_error(tmp_path):
    pairs = pairs_table()
    path, sheet = filled_labels(tmp_path, {"100-1-neg-other_story": "maybe"})
    with pytest.raises(ValueError, match=r"neither 'true' nor 'false'.*100-1-neg-other_story: 'maybe'"):
        read_audit_labels(path, pairs)
    sheet["judgement"] = "true"
    for broken, message in ((sheet.assign(pair_id=sheet["pair_id"].replace("100-1-neg-other_story", "999-1-neg-other_story")),
                             "no negative of this run, e.g. \\['999-1-neg-other_story'\\]"),
                            (sheet.assign(pair_id=sheet["pair_id"].replace("100-1-neg-other_story", "100-1-pos")),
                             "no negative of this run"),  # an aligned pair is no negative
                            (pd.concat([sheet, sheet.iloc[:1]]), "judged twice"),
                            (sheet.drop(columns="judgement"), "missing"),
                            (sheet.assign(negative_type="object_swap"), "negative_type differs")):
        broken.to_csv(path, index=False)
        with pytest.raises(ValueError, match=message):
            read_audit_labels(path, pairs)
