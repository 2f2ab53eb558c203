"""Dashboards: gallery grouping, card rendering, the summary and architecture figures, findings."""

from __future__ import annotations

import re

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import dashboards as db
from helpers.dashboards import (
    OUTCOMES,
    Card,
    Highlight,
    LabelledBox,
    card_html,
    changed_span,
    gallery_html,
    gallery_table,
    highlight_html,
    outcomes,
    sample_gallery,
    summary_dashboard,
    swap_highlight,
)

matplotlib.use("Agg")


def predictions() -> pd.DataFrame:
    """Six test pairs of one model with known outcomes, plus rows that must be ignored."""
    rows = [
        # pair, label, score       -> threshold 0.5
        ("tp-strong", 1, 0.95),  # TP
        ("tp-weak", 1, 0.55),  # TP
        ("fp", 0, 0.80),  # FP
        ("tn", 0, 0.10),  # TN
        ("fn", 1, 0.20),  # FN
        ("at-threshold", 0, 0.50),  # FP: score == threshold counts as accepted
    ]
    table = pd.DataFrame(rows, columns=["pair_id", "label", "score"]).assign(
        model="fusion", split="test", threshold=0.5, story_id="1",
        negative_type=lambda t: np.where(t.label == 1, "", "same_story"))
    noise = table.assign(model="clip_score_only", score=1 - table["score"])  # another model
    val = table.assign(split="val", pair_id=table["pair_id"] + "-val")  # another split
    return pd.concat([table, noise, val], ignore_index=True)


def test_outcomes_are_the_confusion_cells():
    got = outcomes(np.array([1, 1, 0, 0]), np.array([True, False, True, False]))
    assert got.tolist() == ["TP", "FN", "FP", "TN"]


def test_outcomes_reject_bad_labels():
    with pytest.raises(ValueError, match="0 or 1"):
        outcomes(np.array([2]), np.array([True]))


def test_gallery_table_groups_one_model_on_one_split():
    table = gallery_table(predictions(), "fusion")
    by_pair = dict(zip(table["pair_id"], table["outcome"]))
    assert by_pair == {"tp-strong": "TP", "tp-weak": "TP", "fp": "FP", "tn": "TN", "fn": "FN", "at-threshold": "FP"}
    assert table.set_index("pair_id").loc["fp", "confidence"] == pytest.approx(0.30)


def test_gallery_table_names_a_missing_model():
    with pytest.raises(ValueError, match="no predictions of model 'nope'"):
        gallery_table(predictions(), "nope")


def test_sample_gallery_takes_most_confident_per_group_in_order():
    sample = sample_gallery(gallery_table(predictions(), "fusion"), per_group=1)
    assert sample["outcome"].tolist() == list(OUTCOMES)
    assert sample["pair_id"].tolist() == ["tp-strong", "fp", "tn", "fn"]  # fp (0.30 off) beats at-threshold (0.0)


def test_sample_negatives_draws_each_kind_at_random():
    rows = [(f"n{i}", 0, 0.1 * (i % 10), ("other_story", "object_swap", "relation_swap")[i % 3]) for i in range(30)]
    rows += [(f"p{i}", 1, 0.9, "") for i in range(10)]
    table = gallery_table(pd.DataFrame(rows, columns=["pair_id", "label", "score", "negative_type"]).assign(
        model="fusion", split="test", threshold=0.5, story_id="1"), "fusion")
    sample = db.sample_negatives(table, per_type=4, seed=1)
    assert (sample["label"] == 0).all() and sample["negative_type"].value_counts().to_dict() == {
        "object_swap": 4, "other_story": 4, "relation_swap": 4}
    assert sample.equals(db.sample_negatives(table, per_type=4, seed=1))
    assert not sample["pair_id"].equals(db.sample_negatives(table, per_type=4, seed=2)["pair_id"])
    with pytest.raises(ValueError, match="per_type"):
        db.sample_negatives(table, per_type=0)


def test_changed_span_finds_the_edit_and_widens_it_to_words():
    original = "He puts the cup on a table near the door."
    edited = "He puts the cup on a cable near the door."  # one letter differs
    start, end = changed_span(original, edited)
    assert edited[start:end] == "cable"
    assert changed_span(original, original) is None


def test_swap_highlight_prefers_the_edit_over_an_earlier_occurrence():
    original = "The cup is on the left. She stands on the left side."
    edited = "The cup is on the left. She stands on the right side."
    h = swap_highlight(edited, original=original, swapped_from="left", swapped_to="right")
    assert edited[h.start:h.end] == "right" and h.kind == "swapped" and "left" in h.note
    # without the original text: first whole-word occurrence, plural allowed
    h = swap_highlight("Two cell phones lie there.", swapped_to="cell phone")
    assert "Two cell phones lie there."[h.start:h.end] == "cell phones"


def test_highlight_html_escapes_and_lets_the_swap_win_inside_a_mention():
    text = "A <b> man holds a blue cup."
    found = Highlight(text.index("a blue cup"), len(text) - 1, "found")
    swapped = Highlight(text.index("cup"), text.index("cup") + 3, "swapped", "was 'mug'")
    out = highlight_html(text, [found, swapped])
    assert "&lt;b&gt;" in out and "<b>" not in out
    assert re.search(r'<mark class="found"[^>]*>a blue </mark>'
                     r'<mark class="swapped"[^>]*title="was &#x27;mug&#x27;"[^>]*>cup</mark>', out)


def test_card_html_shows_swapped_word_probability_boxes_and_scores():
    text = "James sits on a couch near the tv."
    card = Card(
        pair_id="3920-1-neg-object_swap", outcome="FP", label=0, negative_type="object_swap", text=text,
        probability=0.734, threshold=0.5, scores={"object": 0.5, "semantic": 0.61, "spatial": float("nan")},
        highlights=(Highlight(0, 5, "found"),
                    Highlight(text.index("couch"), text.index("couch") + 5, "swapped", "was 'chair'")),
        change='object "a chair" -> "a couch"', image=Image.new("RGB", (576, 240), "gray"),
        predicted=(LabelledBox((10, 10, 100, 200), "person 0.91"),), truth=(LabelledBox((12, 8, 98, 210), "char1"),),
    )
    out = card_html(card)
    assert re.search(r'<mark class="swapped"[^>]*>couch</mark>', out)
    assert "0.734" in out and "threshold 0.500" in out and "accepted" in out
    assert out.count("data:image/png;base64,") == 1
    assert "n/a" in out  # the NaN spatial score is shown as unavailable, not as 0
    assert "object_swap" in out and "&quot;a chair&quot;" in out


def test_gallery_html_has_a_section_per_outcome_even_when_empty():
    card = Card(pair_id="p", outcome="TN", label=0, negative_type="other_story", text="x", probability=0.1,
                threshold=0.5, scores={})
    out = gallery_html([card])
    for outcome in ("True positives", "False positives", "True negatives", "False negatives"):
        assert outcome in out
    assert out.count("story-align-card") == 1 and "No pair of this kind" in out


def metrics_document() -> dict:
    est = lambda v: {"value": v, "low": v - 0.05, "high": v + 0.05}  # noqa: E731
    metrics = ["accuracy", "precision", "recall", "macro_f1", "roc_auc", "pr_auc"]

    def model(kind, auc):
        return {"kind": kind, "features": [], "threshold": 0.5, "overall": {m: est(auc) for m in metrics},
                "by_negative_type": {t: {m: est(auc - 0.1) for m in metrics} for t in ("other_story", "object_swap")},
                "paired": {g: est(auc + 0.05) for g in ("all", "other_story", "object_swap")},
                "confusion": {"tn": 5, "fp": 2, "fn": 1, "tp": 6}}

    return {"profile": "smoke", "primary_model": "fusion", "metrics": metrics,
            "n": {"pairs": 14, "stories": 3, "blocks": 2}, "bootstrap": {"n_resamples": 200},
            "models": {"fusion": model("fusion_mlp", 0.8), "clip_score_only": model("single_score", 0.7),
                       "object_score_only": model("single_score", 0.6), "text_only": model("text_only", 0.5)},
            "controls": {"shuffled_frames": {"paired": {"all": est(0.5), "object_swap": est(0.5)}}}}


def test_summary_dashboard_draws_four_panels_from_metrics():
    fig = summary_dashboard(metrics_document())
    assert len(fig.axes) == 4
    assert "SMOKE RUN" in fig._suptitle.get_text()
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert labels == ["fusion", "clip_score_only", "object_score_only", "text_only"]  # best ROC-AUC first


def test_summary_dashboard_names_a_missing_primary_model():
    doc = metrics_document()
    doc["primary_model"] = "absent"
    with pytest.raises(ValueError, match="absent"):
        summary_dashboard(doc)


def test_mention_highlights_mark_found_missing_and_unchecked_mentions():
    from helpers.tags import parse_segment

    segment = parse_segment("<gdo char1>James</gdo> holds <gdo obj1>a cup</gdo> by <gdo bg1>the wall</gdo>.", 1)
    marks = db.mention_highlights(segment, found=["person"], missing=["cup"], descriptions={"char1": "A tall man"})
    assert [(segment.plain[h.start:h.end], h.kind) for h in marks] == [
        ("James", "found"), ("a cup", "missing"), ("the wall", "unchecked")]
    robot = db.mention_highlights(segment, found=["person"], missing=[], descriptions={"char1": "A golden robot"})
    assert robot[0].kind == "unchecked"  # a robot is no COCO person, so nothing was looked for


def test_findings_compute_every_comparison():
    doc = metrics_document()
    doc["models"]["fusion"]["by_negative_type"]["object_swap"]["roc_auc"] = {"value": 0.55, "low": 0.4, "high": 0.7}
    doc["differences"] = {"clip_score_only": {"roc_auc": {"value": 0.1, "low": 0.02, "high": 0.2}}}
    headline = db.headline_finding(doc)
    assert "ROC-AUC 0.800 [0.750, 0.850]" in headline and "14 test pairs from 3 stories in 2 id blocks" in headline
    # text_only's paired score (0.55 [0.50, 0.60]) touches chance: no leak; the control at 0.5 neither.
    blind = "\n".join(db.blind_findings(doc))
    assert "Blind control `text_only`" in blind and "Blind control `shuffled_frames`" in blind
    assert "told from their text alone" not in blind
    doc["models"]["text_only"]["paired"]["object_swap"] = {"value": 0.7, "low": 0.6, "high": 0.8}
    assert "excludes chance for `object_swap`" in "\n".join(db.blind_findings(doc))
    assert db.blind_leaks(doc["models"]["text_only"]["paired"]) == ["object_swap"]
    doc["models"]["text_only"]["paired"]["object_swap"] = {"value": 0.55, "low": 0.5, "high": 0.6}
    validation = {"fusion": 0.9, "clip_score_only": 0.71, "object_score_only": 0.62, "text_only": 0.5}
    evidence = "\n".join(db.evidence_findings(doc, validation))
    assert ("`clip_score_only` separates the pairs best on the validation split (ROC-AUC 0.710; on the test split "
            "0.700 [0.650, 0.750])") in evidence and "`object_score_only` worst (0.620" in evidence
    assert "interval excludes zero" in evidence
    # the choice is the validation split's, whatever the test split says
    flipped = "\n".join(db.evidence_findings(doc, {**validation, "object_score_only": 0.8}))
    assert "`object_score_only` separates the pairs best" in flipped and "`clip_score_only` worst" in flipped
    assert db.evidence_findings(doc, {"fusion": 0.9}) == []  # no single evidence scored on validation
    # the hardest kind is read from the paired score (the headline) on the frames that have every kind
    assert db.negative_type_finding(doc) is None  # no common frames: the kinds cannot be compared
    doc["models"]["fusion"]["paired"] |= {
        "common": {"value": 0.7, "low": 0.6, "high": 0.8, "frames": 5, "outcomes": 10},
        "common:other_story": {"value": 0.85, "low": 0.8, "high": 0.9, "frames": 5},
        "common:object_swap": {"value": 0.6, "low": 0.5, "high": 0.7, "frames": 5}}
    hardest = db.negative_type_finding(doc)
    assert "on the 5 test frames that have a negative of every kind (`other_story`, `object_swap`)" in hardest
    assert ("hardest kind of negative is `object_swap` (0.600 [0.500, 0.700]) and the easiest `other_story` "
            "(0.850 [0.800, 0.900])") in hardest
    # a kind's paired score over all the frames it applies to does not decide it: those are other frames
    doc["models"]["fusion"]["paired"]["object_swap"] = {"value": 0.95, "low": 0.9, "high": 1.0, "frames": 9}
    assert db.negative_type_finding(doc) == hardest
    assert db.blind_leaks(doc["models"]["fusion"]["paired"]) == ["other_story", "object_swap"]  # kinds only
    doc["differences"]["clip_score_only"]["roc_auc"] = {"value": 0.1, "low": -0.02, "high": 0.2}
    assert "cannot tell the two apart" in "\n".join(db.evidence_findings(doc, validation))


def test_validation_scores_read_the_validation_split_only():
    rows = []
    for split, scores in (("val", [0.9, 0.8, 0.2, 0.1]), ("test", [0.1, 0.2, 0.8, 0.9])):
        for label, score in zip([1, 1, 0, 0], scores):
            rows.append({"model": "m", "split": split, "label": label, "score": score})
    rows += [{"model": "one_class", "split": "val", "label": 1, "score": 0.5}]
    scores = db.validation_scores(pd.DataFrame(rows))
    assert scores["m"] == 1.0 and np.isnan(scores["one_class"])
    with pytest.raises(ValueError, match="no predictions on the 'val' split"):
        db.validation_scores(pd.DataFrame(rows).assign(split="test"))


def test_difference_phrase_and_ranking_handle_undefined_values():
    assert db.difference_phrase({"value": None, "low": None, "high": None}) == "n/a"
    assert db.difference_phrase({"value": 0.1, "low": None, "high": None}).endswith("(no interval)")
    models = {"a": {"overall": {"roc_auc": {"value": 0.6}}}, "b": {"overall": {"roc_auc": {"value": None}}},
              "c": {"overall": {"roc_auc": {"value": 0.9}}}}
    assert db.ranked(models, ["a", "b", "c"], "roc_auc") == ["c", "a"]


def test_architecture_figure_names_every_stage():
    fig = db.architecture_figure()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for stage in ("Faster R-CNN", "CLIP ViT-B/32", "Object evidence", "Semantic evidence", "Spatial evidence",
                  "FusionMLP", "P(aligned)", "Explanation", "4,481 parameters"):
        assert stage in texts, stage


def test_beyond_text_finding_reads_the_flags_only_verdict_and_each_heads_gain():
    doc = metrics_document()
    assert db.beyond_text_finding(doc) == ""  # chapter 07 recorded nothing: no sentence
    flags = doc["models"]["text_only"] | {"kind": "blind_control", "equivalence": {
        "paired": {"all": {"verdict": "better than chance", "low": 0.52, "high": 0.6}}}}
    doc["models"]["flags_only"] = flags
    doc["beyond_text"] = {"control": "flags_only", "split": "test", "heads": {
        "fusion_extended": {"paired": {"all": {"value": 0.2, "low": 0.1, "high": 0.3}}, "roc_auc": None},
        "fusion": {"paired": {"all": {"value": 0.02, "low": -0.05, "high": 0.09}}, "roc_auc": None}}}
    finding = db.beyond_text_finding(doc)
    assert "`flags_only`" in finding and "0.550 [0.500, 0.600]" in finding and "**better than chance**" in finding
    assert "`fusion_extended` minus it 0.200 [0.100, 0.300]: the interval excludes zero" in finding
    assert "`fusion` minus it" in finding and "includes zero, so the test split cannot tell the two apart" in finding
    assert "Blind control `flags_only`" in "\n".join(db.blind_findings(doc))
