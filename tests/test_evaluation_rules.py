"""The rules behind the study's numbers, each pinned by a small case worked out by hand:
where the threshold cuts, how ties and undefined metrics are handled, which candidate
threshold wins, and which percentiles make the interval.

Written against the public functions only. The resampling unit (the 4th positional argument
of the bootstrap functions) is passed by position, and the estimates are read by key, so that
the tests hold whether that unit is a story or a block of ids.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import evaluation
from helpers.evaluation import (METRICS, MIN_DEFINED_SHARE, bootstrap_difference, bootstrap_metrics, point_metrics,
                                tune_threshold, weighted_metrics)

#: The seeded resampling of the bootstrap: ``(n_resamples, n)`` multiplicities of each pair.
resample_weights = evaluation.cluster_resample_weights


# ----------------------------------------------------------------------------- point metrics


def test_a_score_equal_to_the_threshold_is_called_aligned():
    m = point_metrics([1, 0], [0.5, 0.4], threshold=0.5)
    assert (m["accuracy"], m["precision"], m["recall"]) == (1.0, 1.0, 1.0)
    just_above = point_metrics([1, 0], [0.5, 0.4], threshold=0.5000001)
    assert (just_above["accuracy"], just_above["recall"]) == (0.5, 0.0)


def test_point_metrics_by_hand():
    # labels 1 1 1 0 0 0, threshold 0.5: predicted 1 1 0 1 0 0 -> tp 2, fn 1, fp 1, tn 2
    y, s = [1, 1, 1, 0, 0, 0], [0.9, 0.6, 0.2, 0.7, 0.4, 0.1]
    m = point_metrics(y, s, 0.5)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx(2 / 3)  # F1 of each class: 2*2 / (2*2 + 1 + 1)
    # ROC-AUC: of the 9 (positive, negative) orderings, the positive scores higher in 6
    # (0.9 beats all three, 0.6 beats 0.4 and 0.1, 0.2 beats 0.1)
    assert m["roc_auc"] == pytest.approx(6 / 9)
    # average precision: ranked 0.9+ 0.7- 0.6+ 0.4- 0.2+ 0.1-, positives at ranks 1, 3 and 5
    assert m["pr_auc"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)


def test_point_metrics_zero_division_and_one_class():
    nothing_accepted = point_metrics([1, 0, 0], [0.1, 0.2, 0.3], 0.9)
    assert (nothing_accepted["precision"], nothing_accepted["recall"]) == (0.0, 0.0)
    assert nothing_accepted["macro_f1"] == pytest.approx((0 + 2 * 2 / (2 * 2 + 1)) / 2)
    for labels in ([1, 1, 1], [0, 0, 0]):
        m = point_metrics(labels, [0.2, 0.5, 0.8], 0.5)
        assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"]), labels
        assert m["accuracy"] == pytest.approx(2 / 3 if labels[0] == 1 else 1 / 3)
    # no positive at all: recall is 0 (not 1); F1 of the negatives 2*1 / (2*1 + 2) and of
    # the positives, predicted twice, 0
    negatives_only = point_metrics([0, 0, 0], [0.2, 0.5, 0.8], 0.5)
    assert (negatives_only["recall"], negatives_only["precision"]) == (0.0, 0.0)
    assert negatives_only["macro_f1"] == pytest.approx((0 + 1 / 2) / 2)
    # a single positive is enough for the AUCs
    one = point_metrics([1, 0, 0], [0.9, 0.2, 0.3], 0.5)
    assert (one["roc_auc"], one["pr_auc"]) == (1.0, 1.0)


def test_yes_no_decisions_are_scores_too():
    # a rule that only says yes or no (booleans) is scored like 1.0 / 0.0
    y, decisions = [1, 0, 1, 0], [True, False, False, False]
    expected = point_metrics(y, [1.0, 0.0, 0.0, 0.0], 0.5)
    assert point_metrics(y, decisions, 0.5) == pytest.approx(expected)
    per_resample = weighted_metrics(y, decisions, 0.5, np.ones((1, 4)))
    assert {k: v[0] for k, v in per_resample.items()} == pytest.approx(expected)
    assert tune_threshold(y, decisions) == 0.5


@pytest.mark.parametrize("y, s, message", [
    ([1, 0, 1], [0.1, 0.2], "one length"),
    ([[1, 0]], [[0.1, 0.2]], "1-D"),
    ([1, 2], [0.1, 0.2], "0 or 1"),
    ([1, -1], [0.1, 0.2], "0 or 1"),
    ([1, 0], [0.1, float("nan")], "finite"),
    ([1, 0], [float("inf"), 0.2], "finite"),
])
def test_bad_labels_or_scores_are_refused_by_every_metric_function(y, s, message):
    for call in (lambda: point_metrics(y, s, 0.5), lambda: tune_threshold(y, s),
                 lambda: weighted_metrics(y, s, 0.5, np.ones((1, np.size(y))))):
        with pytest.raises(ValueError, match=message):
            call()


# --------------------------------------------------------------------- metrics per resample


Y4, S4 = np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1])  # at 0.5: tp, fn, fp, tn


def test_weighted_metrics_by_hand():
    weights = np.array([
        [1, 1, 1, 1],  # tp 1, fn 1, fp 1, tn 1
        [2, 0, 1, 1],  # tp 2, fp 1, tn 1
        [0, 0, 1, 3],  # negatives only: fp 1, tn 3
        [0, 0, 0, 2],  # negatives only, all rejected
        [0, 0, 0, 0],  # an empty resample
    ], dtype=float)
    m = weighted_metrics(Y4, S4, 0.5, weights)
    np.testing.assert_allclose(m["accuracy"][:4], [2 / 4, 3 / 4, 3 / 4, 1.0])
    assert math.isnan(m["accuracy"][4])
    assert m["macro_f1"][4] == 0.0  # no class present at all: 0, like the other undefined F-scores
    np.testing.assert_allclose(m["precision"], [1 / 2, 2 / 3, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(m["recall"], [1 / 2, 1.0, 0.0, 0.0, 0.0])
    # macro-F1: the mean over the classes present in labels or predictions
    np.testing.assert_allclose(m["macro_f1"][:4], [(1 / 2 + 1 / 2) / 2, (4 / 5 + 2 / 3) / 2, (0 + 6 / 7) / 2, 1.0])
    # ROC-AUC 3/4 on the first row: 0.9 beats both negatives, 0.4 beats 0.1 only
    np.testing.assert_allclose(m["roc_auc"][:2], [3 / 4, 1.0])
    # average precision of ranks (0.9 +, 0.6 -, 0.4 +): (1 + 2/3) / 2; row 2 weighs 0.9 twice
    np.testing.assert_allclose(m["pr_auc"][:2], [(1 + 2 / 3) / 2, 1.0])
    assert np.isnan(m["roc_auc"][2:]).all() and np.isnan(m["pr_auc"][2:]).all()  # one class: undefined


def test_weighted_metrics_count_tied_scores_as_half_ordered():
    y, s = np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.8, 0.2])
    m = weighted_metrics(y, s, 0.5, np.ones((1, 4)))
    # orderings: 0.8 beats both (2), 0.5 ties 0.5 (1/2) and beats 0.2 (1): 3.5 of 4
    assert m["roc_auc"][0] == pytest.approx(3.5 / 4)
    # the threshold is inclusive here too: both 0.5s are accepted (tp 2, fp 1, tn 1)
    assert (m["precision"][0], m["recall"][0], m["accuracy"][0]) == pytest.approx((2 / 3, 1.0, 3 / 4))
    assert m["roc_auc"][0] == pytest.approx(point_metrics(y, s, 0.5)["roc_auc"])
    # tied scores enter average precision together: 0.8 (1/1), then {0.5+, 0.5-} (2/3)
    assert m["pr_auc"][0] == pytest.approx((1 + 2 / 3) / 2)


def test_weighted_metrics_take_one_row_and_check_its_length():
    one_row = weighted_metrics(Y4, S4, 0.5, np.array([1, 1, 1, 1]))
    assert one_row["accuracy"].shape == (1,) and one_row["accuracy"][0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="3 columns for 4 pairs"):
        weighted_metrics(Y4, S4, 0.5, np.ones((2, 3)))


# ----------------------------------------------------------------------------- threshold

S_RANKED = [0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_ties_go_to_the_lowest_threshold(metric):
    # labels 0 1 0 1: cutting at 0.15 or at 0.35 gives accuracy 3/4 and macro-F1 11/15 both
    assert tune_threshold([0, 1, 0, 1], S_RANKED, metric) == pytest.approx(0.15)


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_candidates_include_accepting_and_rejecting_every_pair(metric):
    # labels 1 1 1 0: accepting all (threshold = the lowest score, accuracy 3/4) is best
    assert tune_threshold([1, 1, 1, 0], S_RANKED, metric) == 0.1
    # labels 1 0 0 0: rejecting all is best: a threshold just above the highest score
    rejecting = tune_threshold([1, 0, 0, 0], S_RANKED, metric)
    assert rejecting == np.nextafter(0.4, np.inf)
    assert point_metrics([1, 0, 0, 0], S_RANKED, rejecting)["accuracy"] == 0.75


def test_the_metric_decides_the_threshold():
    # one positive (at 0.4) among six: rejecting every pair is right 5 times in 6, the best
    # accuracy; macro-F1 weighs the lone positive: cutting at 0.35 gives F1+ = 2/4 and
    # F1- = 6/8 (0.625), rejecting all 0 and 10/11 (0.45)
    y, s = [0, 0, 0, 1, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert tune_threshold(y, s, "accuracy") == np.nextafter(0.6, np.inf)
    assert tune_threshold(y, s, "macro_f1") == pytest.approx(0.35)
    assert tune_threshold(y, s) == pytest.approx(0.35)  # macro-F1 by default
    # three positives of five: accepting all is right 3 times in 5 (the best accuracy) but has
    # F1+ = 6/8 and F1- = 0 (0.375); cutting at 0.35 gives F1+ = F1- = 2/5 (0.4)
    y, s = [1, 1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4, 0.5]
    assert tune_threshold(y, s, "accuracy") == 0.1
    assert tune_threshold(y, s, "macro_f1") == pytest.approx(0.35)


def test_tuning_needs_both_classes():
    for labels in ([1, 1, 1], [0, 0, 0]):
        with pytest.raises(ValueError, match=r"^tuning a threshold needs both aligned and misaligned pairs$"):
            tune_threshold(labels, [0.1, 0.2, 0.3])


# ------------------------------------------------------------------------------ intervals


def _clustered_example():
    """12 clusters of 2 to 5 pairs (42 in all, a third of them negatives): a model right on
    the first 8 clusters (28 pairs), wrong on the last 4. Unequal sizes make the resampled
    accuracies nearly all distinct, so neighbouring percentiles differ."""
    sizes = [2, 3, 4, 5] * 3
    clusters = np.repeat([f"{i:02d}" for i in range(12)], sizes)
    y = (np.arange(42) % 3 != 1).astype(int)
    right = np.repeat(np.arange(12) < 8, sizes)
    scores = np.where(right, y, 1 - y) * 0.8 + 0.1
    return y, scores, clusters, right


def test_the_interval_is_the_2_5th_and_97_5th_percentile_of_the_resampled_estimates():
    y, s, clusters, right = _clustered_example()
    weights = resample_weights(clusters, 200, 7)
    accuracy = weights @ right / weights.sum(axis=1)  # each resample's accuracy, by hand
    expected = np.percentile(accuracy, [2.5, 97.5])
    # the case tells 95% from 90%, and the 2.5th and 97.5th percentiles from their neighbours
    assert not np.allclose(expected, np.percentile(accuracy, [5, 95]))
    assert not np.allclose(expected, np.percentile(accuracy, [1.5, 98.5]))
    assert not np.allclose(expected, np.percentile(accuracy, [3.5, 96.5]))
    pct = {"method": "percentile"}
    for result in (bootstrap_metrics(y, s, 0.5, clusters, n_resamples=200, seed=7, **pct),
                   bootstrap_metrics(y, s, 0.5, clusters, n_resamples=200, seed=7, confidence=0.95, **pct)):
        est = result["accuracy"]
        assert est["value"] == pytest.approx(8 / 12)
        assert (est["low"], est["high"]) == pytest.approx(tuple(expected))
    half = bootstrap_metrics(y, s, 0.5, clusters, n_resamples=200, seed=7, confidence=0.5, **pct)["accuracy"]
    assert (half["low"], half["high"]) == pytest.approx(tuple(np.percentile(accuracy, [25, 75])))


def test_a_paired_difference_takes_the_percentiles_of_the_differences():
    y, s, clusters, right = _clustered_example()
    always = np.where(y == 1, 0.9, 0.1)  # a model right everywhere
    weights = resample_weights(clusters, 200, 7)
    difference = (weights @ right - weights.sum(axis=1)) / weights.sum(axis=1)  # accuracy of s minus 1
    for kwargs in ({}, {"confidence": 0.95}):
        est = bootstrap_difference(y, s, 0.5, always, 0.5, clusters, n_resamples=200, seed=7, **kwargs,
                                   method="percentile")["accuracy"]
        assert est["value"] == pytest.approx(8 / 12 - 1)
        assert (est["low"], est["high"]) == pytest.approx(tuple(np.percentile(difference, [2.5, 97.5])))
    # the first model minus the second, not the other way round, at each threshold given
    pct = {"method": "percentile"}
    swapped = bootstrap_difference(y, always, 0.5, s, 0.5, clusters, n_resamples=200, seed=7, **pct)["accuracy"]
    assert swapped["value"] == pytest.approx(1 - 8 / 12)
    shifted = bootstrap_difference(y, s, 0.5, always, 0.95, clusters, n_resamples=200, seed=7, **pct)["accuracy"]
    # at 0.95 the second model rejects every pair: its accuracy is the share of negatives, 1/3
    assert shifted["value"] == pytest.approx(8 / 12 - 1 / 3)


def test_undefined_resamples_are_left_out_of_the_interval_and_undefined_values_are_none():
    # two clusters, each of one class: a resample drawing one cluster twice has one class
    y, s, clusters = np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1]), np.array(["a", "a", "b", "b"])
    weights = resample_weights(clusters, 50, 3)
    both = (weights[:, 0] > 0) & (weights[:, 2] > 0)
    assert 0 < both.sum() < 50  # some resamples have both classes, some one
    est = bootstrap_metrics(y, s, 0.5, clusters, n_resamples=50, seed=3, method="percentile")["roc_auc"]
    # fewer than MIN_DEFINED_SHARE of the resamples define it: no interval, and the count says why
    assert both.sum() < MIN_DEFINED_SHARE * 50 and est["n_undefined"] == 50 - both.sum()
    assert (est["value"], est["low"], est["high"]) == (1.0, None, None) and "undefined in" in est["reason"]
    # a third cluster holding both classes makes almost every resample defined: the interval comes
    # from the defined resamples only
    y3, s3, c3 = np.r_[y, [1, 0] * 20], np.r_[s, [0.7, 0.3] * 20], np.r_[clusters, ["c"] * 40]
    est = bootstrap_metrics(y3, s3, 0.5, c3, n_resamples=200, seed=3, method="percentile")["roc_auc"]
    w = resample_weights(c3, 200, 3)
    defined = (w[:, y3 == 1].sum(axis=1) > 0) & (w[:, y3 == 0].sum(axis=1) > 0)
    assert est["n_undefined"] == (~defined).sum() and defined.mean() >= MIN_DEFINED_SHARE
    assert (est["value"], est["low"], est["high"]) == (1.0, 1.0, 1.0)
    one_class = bootstrap_metrics([1, 1], [0.2, 0.9], 0.5, ["a", "b"], n_resamples=20, seed=0, method="percentile")
    assert all(one_class["roc_auc"][k] is None for k in ("value", "low", "high"))
    assert one_class["accuracy"]["value"] == 0.5 and isinstance(one_class["accuracy"]["low"], float)


@pytest.mark.parametrize("confidence", [0, 1, 1.5, -0.1])
def test_confidence_must_be_strictly_between_0_and_1(confidence):
    y, s, clusters, _ = _clustered_example()
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_metrics(y, s, 0.5, clusters, n_resamples=10, seed=0, confidence=confidence)


def test_every_metric_gets_an_estimate():
    y, s, clusters, _ = _clustered_example()
    result = bootstrap_metrics(y, s, 0.5, clusters, n_resamples=50, seed=1)
    assert set(result) == set(METRICS)
    for name in METRICS:
        assert result[name]["value"] == pytest.approx(point_metrics(y, s, 0.5)[name]), name
