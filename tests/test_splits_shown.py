"""The test split is looked at once: chapters 02-05 and their exploratory helpers read the
train and validation splits only (the smoke run's check is in test_notebooks)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from helpers import objects as obj
from helpers import semantics as hs
from helpers.features import DEVELOPMENT_SPLITS, development, development_stories, require_development

ROOT = Path(__file__).resolve().parent.parent
EXPLORATORY = sorted((ROOT / "notebooks").glob("0[2-5]_*.py"))


def pairs_of(splits: list[str]) -> pd.DataFrame:
    n = len(splits)
    return pd.DataFrame({"pair_id": [f"p{i}" for i in range(n)], "story_id": [str(i // 2) for i in range(n)],
                         "split": splits, "label": [i % 2 for i in range(n)],
                         "negative_type": ["" if i % 2 else "other_story" for i in range(n)],
                         "score": [0.1 + 0.8 * (i % 2) for i in range(n)]})


def test_development_keeps_train_and_validation_rows_only():
    table = pairs_of(["train", "train", "val", "val", "test", "test", "external", "external"])
    kept = development(table)
    assert DEVELOPMENT_SPLITS == ("train", "val") and set(kept["split"]) == {"train", "val"} and len(kept) == 4
    assert development_stories(table) == {"0", "1"}
    with pytest.raises(ValueError, match="no split column"):
        development(table.drop(columns="split"))


@pytest.mark.parametrize("split", ["test", "external"])
def test_the_exploratory_helpers_refuse_test_rows(split):
    table = pairs_of(["train", "train", "val", "val", split, split])
    with pytest.raises(ValueError, match="development splits only"):
        require_development(table, "a table")
    with pytest.raises(ValueError, match="auc_by_negative_type"):
        obj.auc_by_negative_type(table, "score")
    with pytest.raises(ValueError, match="plot_score_by_group"):
        obj.plot_score_by_group(table, "score")
    clip_table = table.assign(**{c: table["score"] for c in hs.scorer_labels(2)})
    with pytest.raises(ValueError, match="development splits only"):
        hs.auc_table(clip_table, 2)
    auc = obj.auc_by_negative_type(development(table), "score").set_index("negative_type")
    assert auc.loc["all negatives", "roc_auc"] == 1.0  # the same table without its test rows is fine


@pytest.mark.parametrize("source", EXPLORATORY, ids=lambda p: p.stem)
def test_chapters_02_to_05_say_which_splits_they_show_and_never_select_the_test_split(source):
    text = source.read_text(encoding="utf-8")
    assert "**Splits shown:**" in text and "train and validation" in text
    assert "development" in text  # they filter through helpers.features
    assert not re.search(r"""["']test["']""", text), "chapters 02-05 may not select the test split"


def test_sweep_note_flags_a_setting_far_below_the_best_and_names_the_knob():
    sweep = pd.DataFrame({"min_size": [240, 480, 800, 240], "proposals": [300, 300, 300, 1000],
                          "seconds_per_frame": [0.5, 1.5, 3.0, 0.8], "recall": [0.40, 0.52, 0.53, 0.41]})
    note = obj.sweep_note(sweep, 240, 300, profile="quick")
    assert note.startswith("**Note") and "40.0%" in note and "53.0%" in note and "min_size 800" in note
    assert "6.0x" in note and "`detector.min_size: 800`" in note and "detector.proposals" not in note
    fewer = obj.sweep_note(sweep.assign(recall=[0.40, 0.41, 0.42, 0.50]), 240, 300, profile="quick")
    assert "1000 proposals" in fewer and "`detector.proposals: 1000`" in fewer and "detector.min_size" not in fewer
    assert "confirms" in obj.sweep_note(sweep.assign(recall=[0.50, 0.52, 0.53, 0.51]), 240, 300, profile="quick")
    assert "does not measure" in obj.sweep_note(sweep, 320, 300, profile="quick")
    assert "does not measure" in obj.sweep_note(sweep, 480, 1000, profile="quick")
    assert "cannot confirm" in obj.sweep_note(sweep.assign(recall=float("nan")), 240, 300, profile="quick")