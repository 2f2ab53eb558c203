"""Metrics agree with scikit-learn, thresholds come from validation, intervals resample id blocks,
paired scores compare each frame with its own negative, blind controls are computed."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from helpers.evaluation import (
    EQUIVALENCE_MARGIN,
    INTERVAL_METHOD,
    METRICS,
    VERDICTS,
    NEGATIVE_TYPES,
    MIN_DEFINED_SHARE,
    bootstrap_difference,
    bootstrap_metrics,
    bootstrap_paired,
    bootstrap_paired_difference,
    cluster_resample_weights,
    control_section,
    equivalence_test,
    evaluate,
    evaluate_split,
    metrics_frame,
    own_frames_mask,
    paired_outcomes,
    paired_table,
    point_metrics,
    shuffled_frame_pairs,
    swap_plausibility_rows,
    tune_threshold,
    weighted_metrics,
)
from helpers.report import format_estimate

Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])
S = np.array([0.9, 0.8, 0.4, 0.6, 0.3, 0.6, 0.2, 0.1, 0.7, 0.6])  # ties across the classes at 0.6


def test_point_metrics_on_a_hand_checked_example():
    m = point_metrics(Y, S, threshold=0.5)
    # predicted aligned: 0.9 0.8 0.6 0.6 0.7 0.6 -> tp=4 (0.9, 0.8, 0.6, 0.6), fp=2 (0.6, 0.7); fn=1 (0.4); tn=3
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(4 / 6)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["macro_f1"] == pytest.approx((8 / 11 + 6 / 9) / 2)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(Y, S))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(Y, S))
    assert math.isnan(point_metrics([1, 1], [0.2, 0.3], 0.5)["roc_auc"])


def test_weighted_metrics_equal_sklearn_on_explicit_resamples():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = np.round(rng.random(80) * 0.6 + 0.3 * y, 1)  # coarse scores: many ties
    weights = rng.integers(0, 3, size=(40, 80)).astype(float)
    weights[0] = np.where(y == 1, 1, 0)  # a resample with positives only
    weights[1] = 1
    batch = weighted_metrics(y, s, 0.55, weights)
    for r in range(len(weights)):
        index = np.repeat(np.arange(80), weights[r].astype(int))
        expected = point_metrics(y[index], s[index], 0.55)
        for name in METRICS:
            np.testing.assert_allclose(batch[name][r], expected[name], rtol=1e-12, atol=1e-12, err_msg=f"{name} r={r}")
    assert math.isnan(batch["roc_auc"][0]) and math.isnan(batch["pr_auc"][0])  # one class: undefined


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_tuned_threshold_is_the_best_of_every_possible_cut(metric):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    t = tune_threshold(y, s, metric)
    score = {"macro_f1": lambda p: skm.f1_score(y, p, average="macro"), "accuracy": lambda p: skm.accuracy_score(y, p)}[metric]
    best = max(score(s >= c) for c in np.r_[np.unique(s), np.inf])
    assert score(s >= t) == pytest.approx(best)
    assert not np.isin(t, s)  # midway between two scores, not on one
    with pytest.raises(ValueError, match="both aligned and misaligned"):
        tune_threshold(np.ones(5), s[:5])
    with pytest.raises(ValueError, match="unknown threshold metric"):
        tune_threshold(y, s, "recall")


def test_cluster_resampling_moves_whole_blocks():
    stories = np.array(["a", "a", "a", "b", "c", "c", "d"])
    w = cluster_resample_weights(stories, 500, seed=3)
    assert w.shape == (500, 7)
    for story in "abcd":
        block = w[:, stories == story]
        assert (block == block[:, :1]).all()  # every pair of a story shares its multiplicity
    per_story = w[:, [0, 3, 4, 6]]
    assert (per_story.sum(axis=1) == 4).all()  # as many draws as stories
    np.testing.assert_array_equal(w, cluster_resample_weights(stories, 500, seed=3))
    assert not np.array_equal(w, cluster_resample_weights(stories, 500, seed=4))


def test_bootstrap_intervals_contain_the_estimate_and_widen_with_clustered_errors():
    rng = np.random.default_rng(2)
    n_stories, per_story = 30, 10
    stories = np.repeat([f"s{i}" for i in range(n_stories)], per_story)
    y = np.tile([1, 0], n_stories * per_story // 2)
    # Each story is either easy (scores follow the labels) or hard (scores inverted): errors cluster by story.
    hard = np.repeat(rng.random(n_stories) < 0.3, per_story)
    s = np.clip(np.where(hard, 1 - y, y) * 0.6 + 0.2 + rng.normal(0, 0.05, len(y)), 0, 1)
    by_story = bootstrap_metrics(y, s, 0.5, stories, n_resamples=400, seed=0)
    by_pair = bootstrap_metrics(y, s, 0.5, np.arange(len(y)).astype(str), n_resamples=400, seed=0)
    for name in METRICS:
        est = by_story[name]
        assert est["low"] <= est["value"] <= est["high"], name
        assert est["value"] == pytest.approx(point_metrics(y, s, 0.5)[name])
    width = lambda e: e["high"] - e["low"]  # noqa: E731
    assert width(by_story["accuracy"]) > 2 * width(by_pair["accuracy"])


def test_paired_differences_cancel_what_two_models_share():
    rng = np.random.default_rng(4)
    stories = np.repeat([f"s{i}" for i in range(25)], 8)
    y = np.tile([1, 0], 100)
    difficulty = np.repeat(rng.normal(0, 0.3, 25), 8)  # both models find the same stories hard
    a = np.clip(0.3 + 0.4 * y - difficulty * (2 * y - 1) + rng.normal(0, 0.05, 200), 0, 1)
    b = np.clip(a + rng.normal(0, 0.02, 200), 0, 1)
    kwargs = dict(n_resamples=300, seed=1)
    diff = bootstrap_difference(y, a, 0.5, b, 0.5, stories, **kwargs)
    alone_a, alone_b = bootstrap_metrics(y, a, 0.5, stories, **kwargs), bootstrap_metrics(y, b, 0.5, stories, **kwargs)
    for name in METRICS:
        assert diff[name]["value"] == pytest.approx(alone_a[name]["value"] - alone_b[name]["value"])
        assert diff[name]["low"] <= diff[name]["value"] <= diff[name]["high"]
    # Pairing removes the shared story effect: the difference is far surer than either model.
    assert diff["roc_auc"]["high"] - diff["roc_auc"]["low"] < 0.25 * (alone_a["roc_auc"]["high"] - alone_a["roc_auc"]["low"])
    same = bootstrap_difference(y, a, 0.5, a, 0.5, stories, **kwargs)
    # the jackknife over the 25 stories: a zero difference on every left-out story, se 0, 24 degrees of freedom
    assert all(same[name] == {"value": 0.0, "low": 0.0, "high": 0.0, "n_undefined": 0, "se": 0.0, "df": 24}
               for name in METRICS)


def test_an_interval_that_too_few_resamples_define_is_null_with_its_reason():
    # Two blocks, one holding the only negative: about half the resamples have one class only.
    y = np.array([1, 1, 0, 1])
    s = np.array([0.9, 0.8, 0.1, 0.7])
    est = bootstrap_metrics(y, s, 0.5, ["a", "a", "a", "b"], n_resamples=200, seed=0, method="percentile")["roc_auc"]
    assert est["value"] == 1.0 and est["low"] is None and est["high"] is None
    assert 60 < est["n_undefined"] < 140 and "undefined in" in est["reason"]
    # the jackknife: leaving out block "a" leaves one class, so there is no standard error
    jack = bootstrap_metrics(y, s, 0.5, ["a", "a", "a", "b"], n_resamples=200, seed=0)["roc_auc"]
    assert (jack["value"], jack["low"], jack["high"], jack["se"], jack["n_undefined"]) == (1.0, None, None, None, 1)
    assert jack["df"] == 1 and "undefined with 1 of 2 id blocks left out" in jack["reason"]
    assert format_estimate(jack) == "1.000 [n/a]"
    assert format_estimate(est) == "1.000 [n/a]"
    assert format_estimate({"value": None, "low": None, "high": None}) == "n/a"
    assert format_estimate({"value": 0.5, "low": 0.25, "high": 0.75}) == "0.500 [0.250, 0.750]"
    # With every block holding both classes, every resample defines it: an interval, no reason.
    est = bootstrap_metrics(np.tile([1, 0], 4), np.tile([0.9, 0.1], 4), 0.5, list("aabbccdd"), n_resamples=50,
                            seed=0, method="percentile")["roc_auc"]
    assert est == {"value": 1.0, "low": 1.0, "high": 1.0, "n_undefined": 0}
    est = bootstrap_metrics(np.tile([1, 0], 4), np.tile([0.9, 0.1], 4), 0.5, list("aabbccdd"), n_resamples=50,
                            seed=0)["roc_auc"]
    assert est == {"value": 1.0, "low": 1.0, "high": 1.0, "n_undefined": 0, "se": 0.0, "df": 3}
    assert 0.5 < MIN_DEFINED_SHARE < 1


def test_the_interval_is_the_central_95_percent_of_the_resamples():
    rng = np.random.default_rng(7)
    y = np.tile([1, 0], 60)
    s = np.clip(0.5 + 0.2 * (2 * y - 1) + rng.normal(0, 0.3, 120), 0, 1)
    blocks = np.repeat([f"b{i}" for i in range(20)], 6)
    w = cluster_resample_weights(blocks, 300, seed=11)
    accuracy = weighted_metrics(y, s, 0.5, w)["accuracy"]
    est = bootstrap_metrics(y, s, 0.5, blocks, n_resamples=300, seed=11, method="percentile")["accuracy"]
    assert (est["low"], est["high"]) == pytest.approx(tuple(np.percentile(accuracy, [2.5, 97.5])))
    narrow = bootstrap_metrics(y, s, 0.5, blocks, n_resamples=300, seed=11, confidence=0.9,
                               method="percentile")["accuracy"]
    assert (narrow["low"], narrow["high"]) == pytest.approx(tuple(np.percentile(accuracy, [5, 95])))
    assert narrow["high"] - narrow["low"] < est["high"] - est["low"]


def make_predictions(external: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    splits = ["test"] * 12 + (["external"] * 6 if external else [])
    for i, split in enumerate(splits):
        for frame in range(4):
            for label in (1, 0):
                rows.append({"pair_id": f"{split}{i}-{frame}-{label}", "story_id": f"{split}{i}", "frame": frame,
                             "block": f"{split}-block{i // 2}", "split": split, "label": label,
                             "negative_type": "" if label else NEGATIVE_TYPES[(i + frame) % 4]})
    pairs = pd.DataFrame(rows)
    parts = []
    for name, kind, noise in (("fusion", "fusion_mlp", 0.2), ("clip_score_only", "single_score", 0.4)):
        score = np.clip(0.3 + 0.4 * pairs["label"] + rng.normal(0, noise, len(pairs)), 0, 1)
        parts.append(pairs.assign(model=name, kind=kind, features="clip_score" if kind == "single_score" else
                                  "object_score,clip_score,spatial_score", score=score, threshold=0.5,
                                  decision=score >= 0.5))
    return pd.concat(parts, ignore_index=True)


def test_paired_outcomes_compare_each_frame_with_its_own_negative():
    rows = pd.DataFrame({
        "pair_id": ["a-1-pos", "a-1-neg-object_swap", "a-2-pos", "a-2-neg-object_swap", "b-1-pos",
                    "b-1-neg-same_story"],
        "story_id": ["a", "a", "a", "a", "b", "b"], "frame": [1, 1, 2, 2, 1, 1], "block": ["x"] * 4 + ["y"] * 2,
        "label": [1, 0, 1, 0, 1, 0], "negative_type": ["", "object_swap", "", "object_swap", "", "same_story"],
        "score": [0.7, 0.6, 0.4, 0.4, 0.2, 0.9],
    })
    frames = paired_outcomes(rows)
    assert frames["outcome"].tolist() == [1.0, 0.5, 0.0]  # above, tie, below
    assert frames["negative_type"].tolist() == ["object_swap", "object_swap", "same_story"]
    # A frame's pairs are paired even though a pooled ranking would mix frames: a-1's negative (0.6)
    # scores above a-2's positive (0.4), which a pooled ROC-AUC counts against the model.
    paired = bootstrap_paired(frames, n_resamples=100, seed=0)
    assert paired["all"]["value"] == pytest.approx(0.5) and paired["all"]["frames"] == 3
    assert paired["object_swap"]["value"] == pytest.approx(0.75) and paired["same_story"]["value"] == 0.0
    # same_story lives in block y only: resamples without y leave it undefined, so its interval is null.
    assert paired["same_story"]["low"] is None and paired["same_story"]["n_undefined"] > 0
    # A frame that lost one of its pairs (a missing feature) is left out of the pairing, and counted.
    partial = paired_outcomes(rows.iloc[1:])
    assert len(partial) == 2 and partial.attrs["unpaired_frames"] == 1
    with pytest.raises(ValueError, match="one positive and at most one negative of each type per frame"):
        paired_outcomes(rows.assign(label=1))


def test_per_type_metrics_set_a_type_against_its_own_frames_positives():
    # Frames 1-3 have a relation swap and a well-scored positive; frames 4-9 have only another story's text
    # and a badly scored positive. Against every positive the relation swap would look hard (ROC-AUC 1/3,
    # ratio 9:3); against its own frames' positives it is found every time, at a 1:1 ratio.
    rows = []
    for frame in range(1, 10):
        kind = "relation_swap" if frame <= 3 else "other_story"
        rows += [{"pair_id": f"s-{frame}-pos", "story_id": "s", "frame": frame, "block": f"b{frame % 3}",
                  "split": "test", "label": 1, "negative_type": "", "score": 0.9 if frame <= 3 else 0.1},
                 {"pair_id": f"s-{frame}-neg", "story_id": "s", "frame": frame, "block": f"b{frame % 3}",
                  "split": "test", "label": 0, "negative_type": kind, "score": 0.5 if frame <= 3 else 0.05}]
    rows = pd.DataFrame(rows)
    mask = own_frames_mask(rows, "relation_swap")
    chosen = rows[mask]
    assert sorted(chosen["frame"].unique()) == [1, 2, 3]
    assert (chosen["label"] == 1).sum() == (chosen["label"] == 0).sum() == 3
    every = rows[(rows["label"] == 1) | (rows["negative_type"] == "relation_swap")]
    assert skm.roc_auc_score(every["label"], every["score"]) == pytest.approx(1 / 3)  # what all positives give
    assert skm.roc_auc_score(chosen["label"], chosen["score"]) == 1.0
    document = evaluate_split(rows.assign(model="fusion", kind="fusion_mlp", features="clip_score", threshold=0.6),
                              "test", n_resamples=20, seed=0)
    by_type = document["models"]["fusion"]["by_negative_type"]
    assert by_type["relation_swap"]["roc_auc"]["value"] == 1.0 and by_type["relation_swap"]["accuracy"]["value"] == 1.0
    assert by_type["other_story"]["accuracy"]["value"] == pytest.approx(6 / 12)  # its own frames: 6 + 6 pairs
    # a control's positive that names a type counts for that type only
    named = rows.assign(negative_type=np.where(rows["label"] == 1, "other_story", rows["negative_type"]))
    assert not (own_frames_mask(named, "relation_swap") & (named["label"] == 1)).any()
    assert (own_frames_mask(named, "other_story") & (named["label"] == 1)).sum() == 6
    section = control_section(rows, "control", n_resamples=20, seed=0)
    assert section["by_negative_type"]["relation_swap"]["roc_auc"]["value"] == 1.0


def test_paired_outcomes_compare_the_positive_with_each_of_its_negatives_and_on_common_frames():
    kinds = ["other_story", "same_story", "object_swap", "relation_swap"]
    rows = []
    for story, block, n_kinds in (("a", "x", 4), ("b", "x", 2), ("c", "y", 4), ("d", "y", 1)):
        rows.append({"pair_id": f"{story}-1-pos", "story_id": story, "frame": 1, "block": block, "label": 1,
                     "negative_type": "", "score": 0.5})
        for k, kind in enumerate(kinds[:n_kinds]):  # a, c: all four types; b: two; d: one
            score = {"other_story": 0.1, "same_story": 0.9, "object_swap": 0.5}.get(kind, 0.2 if story == "a" else 0.8)
            rows.append({"pair_id": f"{story}-1-neg-{kind}", "story_id": story, "frame": 1, "block": block,
                         "label": 0, "negative_type": kind, "score": score})
    table = pd.DataFrame(rows).sample(frac=1, random_state=3)  # the order of the rows does not matter
    frames = paired_outcomes(table)
    assert len(frames) == 4 + 2 + 4 + 1 and frames.attrs["unpaired_frames"] == 0
    assert frames[["story_id", "negative_type"]].values.tolist()[:4] == [["a", k] for k in kinds]  # spec order
    assert frames.groupby("story_id")["common"].all().to_dict() == {"a": True, "b": False, "c": True, "d": False}
    assert frames.set_index(["story_id", "negative_type"])["outcome"].to_dict()[("a", "relation_swap")] == 1.0
    paired = bootstrap_paired(frames, n_resamples=50, seed=0)
    # "all" is the mean over the eleven (frame, type) outcomes; each type's group over the frames it applies to
    assert paired["all"]["value"] == pytest.approx(frames["outcome"].mean()) and paired["all"]["outcomes"] == 11
    assert paired["all"]["frames"] == 4 and paired["other_story"]["frames"] == 4 and paired["same_story"]["frames"] == 3
    assert paired["object_swap"]["value"] == 0.5 and paired["other_story"]["value"] == 1.0
    # common: the frames with every type (a and c), each type on the same two frames
    assert set(paired) == {"all", *kinds, "common", *(f"common:{k}" for k in kinds)}
    assert all(paired[f"common:{k}"]["frames"] == 2 for k in kinds) and paired["common"]["outcomes"] == 8
    assert paired["same_story"]["value"] == 0.0 and paired["relation_swap"]["frames"] == 2
    assert paired["common:relation_swap"]["value"] == pytest.approx(0.5)  # a above, c below
    # a second model on the same rows: the paired difference works group by group, common groups included
    other = paired_outcomes(table.assign(score=np.where(table["label"] == 1, 1.0, 0.0)))
    diff = bootstrap_paired_difference(frames, other, n_resamples=50, seed=0)
    assert diff["common:same_story"]["value"] == pytest.approx(-1.0) and set(diff) == set(paired)
    with pytest.raises(ValueError, match="same frames"):
        bootstrap_paired_difference(frames, other.iloc[::-1], n_resamples=50, seed=0)
    # a positive that names its negative's type counts for that type only (a control scored per edit)
    per_edit = pd.DataFrame([
        {"story_id": "e", "frame": 1, "block": "x", "label": 1, "negative_type": "object_swap", "score": 0.3},
        {"story_id": "e", "frame": 1, "block": "x", "label": 0, "negative_type": "object_swap", "score": 0.2},
        {"story_id": "e", "frame": 1, "block": "x", "label": 1, "negative_type": "relation_swap", "score": 0.1},
        {"story_id": "e", "frame": 1, "block": "x", "label": 0, "negative_type": "relation_swap", "score": 0.2}])
    assert paired_outcomes(per_edit)["outcome"].tolist() == [1.0, 0.0]


def test_paired_outcomes_name_the_frames_that_cannot_be_paired():
    def frame(story, labels):
        return [{"pair_id": f"{story}-{i}", "story_id": story, "frame": 1, "block": "x", "label": label,
                 "negative_type": "" if label else "object_swap", "score": 0.5} for i, label in enumerate(labels)]

    fine = frame("g", [1, 0]) + frame("u", [0])  # a complete frame, and one left with its negative only
    for bad, named in ((frame("t", [1, 0, 0]), "story t frame 1"),  # a pair too many
                       (frame("p", [1, 1]), "story p frame 1"),  # two positives
                       ([r for s in "abcd" for r in frame(s, [0, 0])],  # four frames of two negatives: the first three
                        "story a frame 1, story b frame 1, story c frame 1")):
        with pytest.raises(ValueError, match="one positive and at most one negative of each type per frame") as error:
            paired_outcomes(pd.DataFrame(fine + bad))
        assert str(error.value).endswith(f"not so for {named}")
    assert paired_outcomes(pd.DataFrame(fine)).attrs["unpaired_frames"] == 1


def test_paired_bootstrap_resamples_blocks_and_differences_share_the_resamples():
    predictions = make_predictions()
    test = predictions[predictions["split"] == "test"]
    fa = paired_outcomes(test[test["model"] == "fusion"])
    fb = paired_outcomes(test[test["model"] == "clip_score_only"])
    a = bootstrap_paired(fa, n_resamples=200, seed=3, method="percentile")
    b = bootstrap_paired(fb, n_resamples=200, seed=3, method="percentile")
    diff = bootstrap_paired_difference(fa, fb, n_resamples=200, seed=3, method="percentile")
    for group in ("all", *NEGATIVE_TYPES):
        assert diff[group]["value"] == pytest.approx(a[group]["value"] - b[group]["value"])
    # By hand: the mean outcome over frames of the drawn blocks, each block as often as drawn.
    w = cluster_resample_weights(fa["block"].to_numpy(), 200, seed=3)
    by_hand = (w @ fa["outcome"].to_numpy()) / w.sum(axis=1)
    assert (a["all"]["low"], a["all"]["high"]) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))
    self_diff = bootstrap_paired_difference(fa, fa, n_resamples=50, seed=0, method="percentile")
    assert all(e["value"] == e["low"] == e["high"] == 0.0 for e in self_diff.values())
    assert all(e["value"] == e["low"] == e["high"] == e["se"] == 0.0 for e in
               bootstrap_paired_difference(fa, fa, n_resamples=50, seed=0).values())
    # The interval of a difference is drawn with the seed given: the same seed, the same interval.
    varied = fa.assign(outcome=np.linspace(0.0, 1.0, len(fa)))  # block means that differ, so draws matter
    by_hand = (w @ (varied["outcome"] - fb["outcome"]).to_numpy()) / w.sum(axis=1)
    drawn = bootstrap_paired_difference(varied, fb, n_resamples=200, seed=3, method="percentile")["all"]
    assert (drawn["low"], drawn["high"]) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))
    assert drawn["low"] < drawn["high"]
    with pytest.raises(ValueError, match="^paired differences need both models scored on the same frames"):
        bootstrap_paired_difference(fa, fb.iloc[::-1], n_resamples=10, seed=0)


def test_the_jackknife_t_interval_leaves_out_each_block_that_holds_the_group():
    from scipy import stats

    rng = np.random.default_rng(8)
    frames = pd.DataFrame({"story_id": [f"s{i}" for i in range(30)], "frame": 0,
                           "block": np.repeat([f"b{i}" for i in range(6)], [3, 4, 5, 6, 5, 7]),
                           "negative_type": ["object_swap" if i < 12 else "same_story" for i in range(30)],
                           "outcome": rng.integers(0, 3, 30) / 2})
    est = bootstrap_paired(frames, n_resamples=10, seed=0)
    for group, rows in (("all", frames), ("object_swap", frames[frames["negative_type"] == "object_swap"])):
        sums, sizes = rows.groupby("block")["outcome"].sum(), rows.groupby("block").size()
        left_out = (sums.sum() - sums) / (sizes.sum() - sizes)  # one value per block that holds the group
        g = len(sums)
        se = np.sqrt((g - 1) / g * ((left_out - left_out.mean()) ** 2).sum())
        half = stats.t.ppf(0.975, g - 1) * se
        value = rows["outcome"].mean()
        assert est[group]["df"] == g - 1 and est[group]["se"] == pytest.approx(se)
        assert (est[group]["low"], est[group]["high"]) == pytest.approx((max(0, value - half), min(1, value + half)))
    assert est["object_swap"]["df"] == 2  # its 12 frames lie in 3 of the 6 blocks
    narrow = bootstrap_paired(frames, n_resamples=10, seed=0, confidence=0.9)["all"]
    assert narrow["high"] - narrow["low"] < est["all"]["high"] - est["all"]["low"]
    with pytest.raises(ValueError, match="unknown interval method"):
        bootstrap_paired(frames, n_resamples=10, seed=0, method="bootstrap")


def test_metrics_document_follows_the_schema():
    predictions = make_predictions()
    doc = evaluate(predictions, profile="smoke", n_resamples=50, seed=42, primary_model="fusion", threshold_rule="rule",
                   block_size=2)
    json.dumps(doc, allow_nan=False)  # strict JSON: undefined values are null, never NaN
    assert doc["schema_version"] == 4 and doc["split"] == "test" and doc["primary_model"] == "fusion"
    assert doc["bootstrap"]["unit"] == "id_block" and doc["bootstrap"]["block_size"] == 2
    assert doc["bootstrap"]["confidence"] == 0.95
    assert doc["n"] == {"pairs": 96, "frames": 48, "stories": 12, "blocks": 6, "positives": 48,
                        "negatives": {t: 12 for t in NEGATIVE_TYPES}, "unpaired_frames": 0}
    assert doc["n_by_split"] == {"test": {k: v for k, v in doc["n"].items() if k != "unpaired_frames"}}
    assert list(doc["models"]) == ["fusion", "clip_score_only"] and "external" not in doc
    fusion = doc["models"]["fusion"]
    assert fusion["features"] == ["object_score", "clip_score", "spatial_score"] and fusion["threshold"] == 0.5
    assert set(fusion["overall"]) == set(METRICS) and set(fusion["by_negative_type"]) == set(NEGATIVE_TYPES)
    assert set(fusion["paired"]) == {"all", *NEGATIVE_TYPES} and fusion["paired"]["all"]["frames"] == 48
    assert sum(fusion["confusion"].values()) == 96
    test = predictions[(predictions["model"] == "fusion") & (predictions["split"] == "test")]
    assert fusion["overall"]["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(test["label"], test["score"]))
    # per type: the type's negatives against the positives of their own frames, not every positive
    swapped_frames = test.loc[test["negative_type"] == "object_swap", ["story_id", "frame"]]
    own = test.merge(swapped_frames, on=["story_id", "frame"])
    assert len(own) == 2 * len(swapped_frames) == 24
    assert fusion["by_negative_type"]["object_swap"]["accuracy"]["value"] == pytest.approx(
        skm.accuracy_score(own["label"], own["score"] >= 0.5))
    assert fusion["by_negative_type"]["object_swap"]["roc_auc"]["value"] == pytest.approx(
        skm.roc_auc_score(own["label"], own["score"]))
    pos = test[test["label"] == 1].set_index(["story_id", "frame"])["score"]
    neg = test[test["label"] == 0].set_index(["story_id", "frame"])
    own_above = (pos.loc[neg.index] > neg["score"]).astype(float) + 0.5 * (pos.loc[neg.index] == neg["score"])
    swapped = (neg["negative_type"] == "relation_swap").to_numpy()
    assert fusion["paired"]["relation_swap"]["value"] == pytest.approx(own_above[swapped].mean())
    assert sum(fusion["calibration"]["count"]) == 96
    assert doc["models"]["clip_score_only"]["calibration"] is None  # a single score is not a probability

    assert set(doc["differences"]) == {"clip_score_only"} == set(doc["paired_differences"])
    clip = doc["models"]["clip_score_only"]
    assert doc["differences"]["clip_score_only"]["macro_f1"]["value"] == pytest.approx(
        fusion["overall"]["macro_f1"]["value"] - clip["overall"]["macro_f1"]["value"])
    assert doc["paired_differences"]["clip_score_only"]["all"]["value"] == pytest.approx(
        fusion["paired"]["all"]["value"] - clip["paired"]["all"]["value"])

    alone = evaluate_split(predictions, "test", n_resamples=50, seed=42)  # no primary model: no differences
    assert alone["differences"] == {}
    assert alone["models"] == {name: {k: v for k, v in info.items() if k != "equivalence"}
                               for name, info in doc["models"].items()}

    # Every model gets its equivalence verdicts: the paired score per group, ROC-AUC overall and per type.
    for info in doc["models"].values():
        eq = info["equivalence"]
        assert set(eq["paired"]) == set(info["paired"]) and set(eq["roc_auc"]) == {"overall", *NEGATIVE_TYPES}
        assert all(v["verdict"] in VERDICTS for part in eq.values() for v in part.values())
        assert eq["paired"]["all"] == equivalence_test(info["paired"]["all"])
    assert doc["bootstrap"]["method"] == INTERVAL_METHOD == "jackknife_t"
    assert doc["bootstrap"]["equivalence"]["margin"] == EQUIVALENCE_MARGIN
    coverage = doc["bootstrap"]["simulated_coverage"]
    assert coverage["n_blocks"] == 6 and coverage["frames_per_block"] == [8] * 6  # 2 stories of 4 frames each
    assert coverage["interval_method"] == "jackknife_t" and coverage["coverage"] == coverage["by_method"]["jackknife_t"]
    assert coverage["n_sims"] >= 1000 and set(coverage["by_method"]) == {"percentile", "bca", "jackknife_t"}
    assert coverage["coverage"] > coverage["by_method"]["percentile"]

    frame = metrics_frame(doc)
    assert len(frame) == 2 * ((1 + len(NEGATIVE_TYPES)) * len(METRICS) + 1 + len(NEGATIVE_TYPES))
    assert list(frame.columns) == ["model", "kind", "group", "metric", "value", "low", "high"]
    table = paired_table(doc)
    assert list(table.columns) == ["all (48 frames)", *(f"{t} (12 frames)" for t in NEGATIVE_TYPES)]


def test_metrics_document_carries_each_tuned_baselines_setting():
    from helpers.evaluation import format_setting

    settings = {"clip_score_only": {"learning_rate": 0.1, "min_samples_leaf": 20, "max_iter": 37,
                                    "validation_loss": 0.61}, "not_a_model": {"C": 1.0}}
    doc = evaluate(make_predictions(), profile="smoke", n_resamples=20, seed=0, primary_model="fusion",
                   threshold_rule="rule", block_size=2, settings=settings)
    assert doc["models"]["clip_score_only"]["setting"] == settings["clip_score_only"]
    assert doc["models"]["fusion"]["setting"] is None and "not_a_model" not in doc["models"]
    assert format_setting(doc["models"]["clip_score_only"]["setting"]) == "rate=0.1, leaf=20, trees=37"
    assert format_setting({"C": 0.001, "validation_loss": 0.69}) == "C=0.001" and format_setting(None) == ""


def test_blind_controls_are_evaluated_on_shuffled_frames():
    predictions = make_predictions()
    test = predictions[(predictions["model"] == "fusion") & (predictions["split"] == "test")]
    shuffled = shuffled_frame_pairs(test, seed=0)
    own = list(zip(shuffled["own_story_id"], shuffled["own_frame"]))
    stranger = list(zip(shuffled["story_id"], shuffled["frame"]))
    block_of = dict(zip(test["story_id"], test["block"]))
    assert all(block_of[o[0]] != block_of[s[0]] for o, s in zip(own, stranger))  # always another block
    assert shuffled.groupby(["own_story_id", "own_frame"])["story_id"].nunique().eq(1).all()  # one per frame
    assert len(set(stranger)) > 1 and shuffled_frame_pairs(test, seed=0).equals(shuffled)
    with pytest.raises(ValueError, match="one id block"):
        shuffled_frame_pairs(test.assign(block="same"), seed=0)

    # A control that scores every text alike knows nothing: paired score and ROC-AUC exactly 0.5.
    flat = test.assign(score=0.3)
    section = control_section(flat, "flat", n_resamples=30, seed=0)
    assert section["paired"]["all"]["value"] == 0.5 and section["overall"]["roc_auc"]["value"] == 0.5
    assert set(section["by_negative_type"]) == set(NEGATIVE_TYPES)
    doc = evaluate(predictions, profile="smoke", n_resamples=30, seed=0, primary_model="fusion", threshold_rule="",
                   block_size=2, controls={"shuffled_frames": ("desc", test)})
    assert doc["controls"]["shuffled_frames"]["paired"] == doc["models"]["fusion"]["paired"]
    assert doc["controls"]["shuffled_frames"]["description"] == "desc"


def test_the_external_split_gets_its_own_section():
    doc = evaluate(make_predictions(external=True), profile="full", n_resamples=20, seed=0, primary_model="fusion",
                   threshold_rule="rule", block_size=2)
    assert doc["n"]["stories"] == 12 and doc["external"]["n"]["stories"] == 6
    assert set(doc["external"]["models"]) == {"fusion", "clip_score_only"}
    assert len(metrics_frame(doc, "external")) == len(metrics_frame(doc))


def test_evaluation_rejects_inconsistent_predictions():
    predictions = make_predictions()
    with pytest.raises(ValueError, match="primary model 'missing'"):
        evaluate(predictions, profile="smoke", n_resamples=5, seed=0, primary_model="missing", threshold_rule="",
                 block_size=2)
    partial = predictions.drop(index=predictions.index[-1])
    with pytest.raises(ValueError, match="not scored on the same test pairs"):
        evaluate(partial, profile="smoke", n_resamples=5, seed=0, primary_model="fusion", threshold_rule="",
                 block_size=2)


def test_the_language_model_control_scores_own_words_against_edited_words(monkeypatch):
    own = "He holds a cup. The dog sits on the couch."
    swapped = own.replace("a cup", "a clock")
    moved = own.replace("on the couch", "under the couch")
    rows = []
    at = own.index("on the couch")
    negatives = {1: [(swapped, "object_swap", 9, 16), (moved, "relation_swap", at, at + len("under"))],
                 2: [("Another story.", "other_story", -1, -1)], 3: [("He holds a vase!", "object_swap", 9, 15)]}
    for frame, texts in negatives.items():  # frame 1 has two swaps, each scored against its own words
        common = {"story_id": "s", "frame": frame, "block": "b", "split": "test"}
        rows.append({**common, "pair_id": f"s-{frame}-pos", "label": 1, "negative_type": "", "text": own,
                     "swap_start": -1, "swap_end": -1})
        for text, kind, start, end in texts:
            rows.append({**common, "pair_id": f"s-{frame}-neg-{kind}", "label": 0, "negative_type": kind,
                         "text": text, "swap_start": start, "swap_end": end})
    seen = []

    def fake_logprobs(mlm, edits, cache_dir, *, batch_size):
        seen.extend(edits)
        return np.array([-5.0, -1.0]), np.array([-2.0, -2.0])  # (edited, original) per edit

    monkeypatch.setattr("helpers.pairs.edit_logprobs", fake_logprobs)
    out = swap_plausibility_rows(pd.DataFrame(rows), mlm=None, cache_dir="unused")
    assert [(e[1][e[2]:e[3]]) for e in seen] == ["a clock", "under"]  # the changed words, located in place
    assert out.attrs["unlocated"] == 1  # "a vase!" is not an in-place edit of the frame's own text
    assert out["pair_id"].tolist() == ["s-1-pos", "s-1-neg-object_swap", "s-1-pos", "s-1-neg-relation_swap"]
    assert out["negative_type"].tolist() == ["object_swap"] * 2 + ["relation_swap"] * 2  # the positive's: its edit's
    assert out["score"].tolist() == [-2.0, -5.0, -2.0, -1.0]
    frames = paired_outcomes(out)
    assert frames["outcome"].tolist() == [1.0, 0.0]  # the swap read as less plausible; the relation as more
    assert frames["negative_type"].tolist() == ["object_swap", "relation_swap"] and frames["common"].all()


def test_every_seed_is_measured_and_metrics_json_holds_the_seed_spread_beside_the_primary_interval():
    from helpers.evaluation import add_seed_spread, seed_scores, seed_spread, seed_table

    predictions = make_predictions()
    doc = evaluate(predictions, profile="smoke", n_resamples=50, seed=42, primary_model="fusion", threshold_rule="rule",
                   block_size=2)
    base = predictions[predictions["model"] == "fusion"].drop(columns=["kind", "features", "decision"])
    rng = np.random.default_rng(0)
    by_seed = pd.concat([base.assign(seed=s, score=base["score"] if s == 42 else rng.random(len(base)))
                         for s in (42, 43, 44)], ignore_index=True)
    scores = seed_scores(by_seed, "test")
    assert list(scores["seed"]) == [42, 43, 44] and scores["roc_auc"].nunique() == 3
    assert scores.loc[0, "roc_auc"] == pytest.approx(doc["models"]["fusion"]["overall"]["roc_auc"]["value"])
    assert scores.loc[0, "paired"] == pytest.approx(doc["models"]["fusion"]["paired"]["all"]["value"])
    spread = seed_spread(scores, 42)
    entry = spread["fusion"]
    assert entry["seeds"] == [42, 43, 44] and entry["primary_seed"] == 42
    assert entry["roc_auc"]["mean"] == pytest.approx(scores["roc_auc"].mean())
    assert entry["roc_auc"]["std"] == pytest.approx(np.std(scores["roc_auc"], ddof=1))
    assert entry["roc_auc"]["min"] <= entry["roc_auc"]["by_seed"]["43"] <= entry["roc_auc"]["max"]
    add_seed_spread(doc, spread)
    json.dumps(doc, allow_nan=False)
    assert doc["models"]["fusion"]["seeds"] == entry and "seeds" not in doc["models"]["clip_score_only"]
    table = seed_table(doc)
    assert list(table.index) == ["fusion"] and table.loc["fusion", "seeds"] == 3
    assert table.loc["fusion", "roc_auc: seed 42 [blocks]"].startswith(f"{scores.loc[0, 'roc_auc']:.3f} [")
    with pytest.raises(ValueError, match="primary seed"):
        seed_spread(scores, 7)
    with pytest.raises(ValueError, match="does not hold"):
        add_seed_spread(doc, {"nonesuch": entry})
