"""Chance is shown by two one-sided tests against a margin, never by an interval that covers 0.5;
the intervals' coverage is simulated, and the study's interval is the one that covers with few blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers.evaluation import (
    CHANCE,
    EQUIVALENCE_MARGIN,
    INTERVAL_METHOD,
    NEGATIVE_TYPES,
    VERDICTS,
    equivalence_table,
    equivalence_test,
    evaluate,
    simulate_coverage,
)


def _estimate(value, se, df=5, confidence=0.95):
    half = stats.t.ppf(1 - (1 - confidence) / 2, df) * se
    return {"value": value, "low": max(0.0, value - half), "high": min(1.0, value + half), "n_undefined": 0,
            "se": se, "df": df}


@pytest.mark.parametrize(("value", "se", "verdict"), [
    (0.52, 0.02, "equivalent to chance"),   # 90% interval 0.48-0.56: inside 0.4-0.6
    (0.55, 0.02, "equivalent to chance"),   # 95% interval above 0.5 too, but within the margin: negligible
    (0.80, 0.04, "better than chance"),
    (0.30, 0.04, "worse than chance"),
    (0.55, 0.10, "not shown"),              # covers 0.5, and covers 0.6: the small-sample case
    (0.50, 0.06, "not shown"),              # exactly 0.5 but too imprecise to show equivalence
    (0.90, 0.30, "not shown"),              # its 90% interval clipped to [0, 1]
])
def test_each_verdict(value, se, verdict):
    result = equivalence_test(_estimate(value, se))
    assert result["verdict"] == verdict
    q = stats.t.ppf(0.95, 5)
    assert (result["low"], result["high"]) == pytest.approx((max(0, value - q * se), min(1, value + q * se)))
    # TOST p-value by hand: the larger of the two one-sided t tests
    p = max(stats.t.sf((value - 0.4) / se, 5), stats.t.cdf((value - 0.6) / se, 5))
    assert result["p_value"] == pytest.approx(p)
    assert (result["p_value"] < 0.05) == (verdict == "equivalent to chance")


def test_the_margin_and_the_level_decide():
    e = _estimate(0.57, 0.01)  # 90% interval about 0.55-0.59
    assert equivalence_test(e)["verdict"] == "equivalent to chance"
    assert equivalence_test(e, margin=0.05)["verdict"] == "better than chance"
    assert equivalence_test(_estimate(0.55, 0.02))["verdict"] == "equivalent to chance"
    assert equivalence_test(_estimate(0.55, 0.02), alpha=0.005)["verdict"] == "not shown"  # a 99% interval
    assert (CHANCE, EQUIVALENCE_MARGIN) == (0.5, 0.10)
    with pytest.raises(ValueError, match="margin"):
        equivalence_test(e, margin=0)


def test_no_standard_error_shows_nothing():
    # The same value with every block left out: no t test. Two blocks (p = 0.5 by a sign test) show nothing
    # whatever the value; six blocks all above chance show a leak (p = 0.031); equivalence is never shown so.
    for value in (0.5, 1.0, 0.0):
        flat = {"value": value, "low": value, "high": value, "n_undefined": 0, "se": 0.0, "df": 1}
        verdict = equivalence_test(flat)
        assert verdict["verdict"] == "not shown" and "sign test over the blocks (p = " in verdict["reason"]
    many = {"value": 1.0, "low": 1.0, "high": 1.0, "n_undefined": 0, "se": 0.0}
    assert equivalence_test({**many, "df": 5})["verdict"] == "better than chance"
    assert equivalence_test({**many, "df": 4})["verdict"] == "not shown"  # five blocks: p = 0.0625
    assert equivalence_test({**many, "value": 0.0, "df": 5})["verdict"] == "worse than chance"
    assert equivalence_test({**many, "value": 0.5, "df": 9})["verdict"] == "not shown"
    null = {"value": 0.7, "low": None, "high": None, "n_undefined": 1, "se": None, "df": 1, "reason": "why"}
    assert equivalence_test(null) == {"verdict": "not shown", "p_value": None, "low": None, "high": None,
                                      "reason": "why"}
    assert equivalence_test(None)["verdict"] == "not shown"
    percentile = {"value": 0.5, "low": 0.45, "high": 0.55, "n_undefined": 0}  # no se: no test
    assert equivalence_test(percentile)["verdict"] == "not shown"


def test_every_control_gets_the_verdicts_whatever_its_name():
    from tests.test_evaluation import make_predictions

    predictions = make_predictions()
    test = predictions[(predictions["model"] == "fusion") & (predictions["split"] == "test")]
    rng = np.random.default_rng(0)
    noise = test.assign(score=rng.random(len(test)))                       # knows nothing
    leak = test.assign(score=test["label"] + 0.1 * rng.random(len(test)))  # the text gives it away
    doc = evaluate(predictions, profile="smoke", n_resamples=20, seed=0, primary_model="fusion", threshold_rule="",
                   block_size=2, controls={"pairwise_text": ("new", noise), "leaky": ("leaks", leak)})
    for name in ("pairwise_text", "leaky"):
        eq = doc["controls"][name]["equivalence"]
        assert set(eq["paired"]) == {"all", *NEGATIVE_TYPES} and set(eq["roc_auc"]) == {"overall", *NEGATIVE_TYPES}
    assert doc["controls"]["leaky"]["equivalence"]["paired"]["all"]["verdict"] == "better than chance"
    assert doc["controls"]["leaky"]["equivalence"]["roc_auc"]["overall"]["verdict"] == "better than chance"
    assert doc["controls"]["pairwise_text"]["equivalence"]["paired"]["all"]["verdict"] != "better than chance"
    table = equivalence_table(doc)
    assert list(table.index) == ["pairwise_text", "leaky"] and table.loc["leaky", "paired all"].startswith(
        "better than chance [")
    assert set(equivalence_table(doc, "models").index) == set(doc["models"])
    assert all(any(cell.startswith(v) for v in VERDICTS) for cell in table.to_numpy().ravel() if cell)


def test_the_percentile_interval_undercovers_with_few_blocks_and_the_jackknife_t_does_not():
    two = simulate_coverage([18] * 2, n_sims=600, n_resamples=300, seed=1)
    four = simulate_coverage([18] * 4, n_sims=600, n_resamples=300, seed=1)
    many = simulate_coverage([18] * 30, n_sims=400, n_resamples=300, seed=1)
    assert two["percentile"] < 0.65 and four["percentile"] < 0.85   # about 52% and 78% for nominal 95%
    assert four["bca"] < 0.88                                        # BCa does not rescue few blocks
    assert four["jackknife_t"] > 0.9 and two["jackknife_t"] > 0.85
    assert all(0.88 < c < 0.99 for c in many.values())               # many blocks: every method near 95%
    # the study's choice is the simulation's: clearly better with few blocks
    assert INTERVAL_METHOD == "jackknife_t" and four["jackknife_t"] - four["percentile"] > 0.1
    # a narrower nominal level covers less; the same seed gives the same coverage
    assert simulate_coverage([18] * 8, confidence=0.8, n_sims=400, seed=2)["jackknife_t"] < 0.9
    assert simulate_coverage([5, 7, 9], n_sims=50, seed=3) == simulate_coverage([5, 7, 9], n_sims=50, seed=3)


@pytest.mark.parametrize(("sizes", "kwargs", "message"), [
    ([18], {}, "at least two blocks"), ([18, 0], {}, "at least two blocks"),
    ([18, 18], {"methods": ["basic"]}, "unknown interval method"), ([18, 18], {"icc": 0}, "must lie in"),
])
def test_the_simulation_refuses_what_it_cannot_simulate(sizes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_coverage(sizes, n_sims=10, **kwargs)


def test_quick_profiles_test_split_covers_at_least_90_percent():
    """quick's test split, counted with split_stories on its number of ids (also with one story excluded by
    chapter 01), simulated at its own blocks: the study's interval covers at least 90%."""
    from helpers.config import load_profile
    from helpers.pairs import split_stories

    cfg = load_profile("quick")
    data, frames = cfg["data"], cfg["pairs"]["frames_per_story"]
    ids = [str(1000 + i) for i in range(data["n_stories"])]
    for kept in (ids, ids[1:], ids[:-1]):
        split = split_stories(kept, fractions=tuple(data["split_fractions"]), block_size=data["block_size"], seed=42)
        test = pd.Series([kept.index(s) // data["block_size"] for s in kept if split[s] == "test"])
        sizes = (test.value_counts() * frames).tolist()
        assert simulate_coverage(sizes, n_sims=800, seed=0)[INTERVAL_METHOD] >= 0.9, sizes


def test_the_jackknife_of_a_pooled_metric_leaves_out_each_block_in_chunks():
    from helpers.evaluation import bootstrap_difference, bootstrap_metrics

    rng = np.random.default_rng(4)
    n_blocks = 300  # more than one chunk of 250 left-out blocks
    blocks = np.repeat([f"b{i:03d}" for i in range(n_blocks)], 2)
    y = np.tile([1, 0], n_blocks)
    s = rng.random(2 * n_blocks)
    est = bootstrap_metrics(y, s, 0.5, blocks, n_resamples=5, seed=0)["accuracy"]
    right = ((s >= 0.5) == (y == 1)).reshape(n_blocks, 2).sum(axis=1)
    left_out = (right.sum() - right) / (2 * n_blocks - 2)
    se = np.sqrt((n_blocks - 1) / n_blocks * ((left_out - left_out.mean()) ** 2).sum())
    assert est["se"] == pytest.approx(se) and est["df"] == n_blocks - 1
    assert est["high"] - est["value"] == pytest.approx(stats.t.ppf(0.975, n_blocks - 1) * se)
    # a difference is clipped to [-1, 1], a metric to [0, 1]
    perfect = np.where(y == 1, 0.9, 0.1)
    worst = bootstrap_difference(y[:8], 1 - perfect[:8], 0.5, perfect[:8], 0.5, blocks[:8], n_resamples=5, seed=0)
    assert worst["accuracy"]["value"] == -1.0 and worst["accuracy"]["low"] == -1.0


def test_flags_only_gets_its_verdict_and_each_head_its_gain_beyond_it():
    from helpers.evaluation import BEYOND_TEXT, beyond_control, bootstrap_paired_difference, paired_outcomes
    from tests.test_evaluation import make_predictions

    predictions = make_predictions()
    fusion = predictions[predictions["model"] == "fusion"]
    rng = np.random.default_rng(1)
    flags = fusion.assign(model="flags_only", kind="blind_control", features="n_sentences",
                          score=rng.random(len(fusion)))                         # the text-only inputs know nothing
    extended = fusion.assign(model="fusion_extended", score=fusion["label"] * 0.5 + 0.4 * rng.random(len(fusion)))
    predictions = pd.concat([predictions, flags, extended], ignore_index=True)
    doc = evaluate(predictions, profile="smoke", n_resamples=20, seed=0, primary_model="fusion", threshold_rule="",
                   block_size=2)
    entry = doc["models"]["flags_only"]
    assert entry["kind"] == "blind_control" and entry["equivalence"]["paired"]["all"]["verdict"] in VERDICTS
    assert entry["equivalence"]["paired"]["all"]["verdict"] != "better than chance"

    beyond = beyond_control(predictions, ["fusion_extended", "fusion"], "flags_only", n_resamples=20, seed=0)
    assert BEYOND_TEXT == "beyond_text" and beyond["control"] == "flags_only" and beyond["split"] == "test"
    assert list(beyond["heads"]) == ["fusion_extended", "fusion"]
    gain = beyond["heads"]["fusion_extended"]
    assert gain["paired"]["all"]["value"] > 0.3 and gain["paired"]["all"]["low"] > 0  # the head sees the label
    assert gain["roc_auc"]["low"] > 0
    # the same numbers as a paired difference computed directly, on the same resamples
    test = predictions[predictions["split"] == "test"]
    frames = {m: paired_outcomes(test[test["model"] == m].sort_values("pair_id")) for m in ("fusion", "flags_only")}
    assert beyond["heads"]["fusion"]["paired"] == bootstrap_paired_difference(
        frames["fusion"], frames["flags_only"], n_resamples=20, seed=0)
    with pytest.raises(ValueError, match="no test predictions"):
        beyond_control(predictions, ["fusion_extended"], "absent_control", n_resamples=20, seed=0)
