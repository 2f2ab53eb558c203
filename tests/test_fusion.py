"""The fusion head's architecture and how its inputs are built from the feature table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from helpers.fusion import (
    FEATURE_SETS,
    STUDY_FEATURES,
    FeatureTableError,
    FusionMLP,
    TrainedHead,
    count_parameters,
    feature_matrix,
    resolve_features,
    response_grid,
)


def test_architecture_is_the_studys_layer_for_layer():
    model = FusionMLP()
    assert [type(m) for m in model.network] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Linear, nn.Sigmoid]
    shapes = [(m.in_features, m.out_features) for m in model.network if isinstance(m, nn.Linear)]
    assert shapes == [(3, 64), (64, 64), (64, 1)]
    assert model.network[2].p == 0.1
    # 3*64+64 + 64*64+64 + 64+1
    assert count_parameters(model) == 4481
    assert count_parameters(FusionMLP(input_dim=8)) == 4481 + 5 * 64


def test_forward_is_the_sigmoid_of_the_logits():
    torch.manual_seed(0)
    model = FusionMLP().eval()
    x = torch.randn(7, 3)
    probs = model(x)
    assert probs.shape == (7,)
    assert ((probs > 0) & (probs < 1)).all()
    torch.testing.assert_close(probs, torch.sigmoid(model.logits(x)))


def test_feature_sets():
    assert FEATURE_SETS["study"] == STUDY_FEATURES == ("object_score", "clip_score", "spatial_score")
    assert FEATURE_SETS["extended"][:3] == STUDY_FEATURES
    assert {"object_nothing_to_check", "object_not_computed", "spatial_nothing_to_check",
            "spatial_not_computed"} <= set(FEATURE_SETS["extended"])
    assert resolve_features(["clip_score"]) == ("clip_score",)
    with pytest.raises(ValueError, match="unknown feature set"):
        resolve_features("everything")
    with pytest.raises(ValueError, match="repeats"):
        resolve_features(["clip_score", "clip_score"])


def test_feature_matrix_turns_booleans_into_floats_in_the_requested_order():
    table = pd.DataFrame({"clip_score": [0.2, 0.9], "object_informative": [True, False], "text": ["a", "b"]})
    x = feature_matrix(table, ["object_informative", "clip_score"])
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, np.array([[1.0, 0.2], [0.0, 0.9]], dtype=np.float32))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pd.DataFrame({"object_score": [0.1], "clip_score": [0.2]}), r"lacks column\(s\) \['spatial_score'\]"),
        (pd.DataFrame({"object_score": [0.1, None], "clip_score": [0.2, 0.3], "spatial_score": [0.5, 0.5]}),
         "missing values.*object_score"),
        (pd.DataFrame({"object_score": ["high"], "clip_score": [0.2], "spatial_score": [0.5]}), "numeric"),
    ],
)
def test_feature_matrix_rejects_unusable_tables(table, message):
    with pytest.raises(FeatureTableError, match=message):
        feature_matrix(table, "study")


# --------------------------------------------------------------- three states, placeholders as missing values


def _head_of(train: pd.DataFrame) -> TrainedHead:
    from helpers.fusion import FlooredScaler

    torch.manual_seed(0)
    return TrainedHead(FusionMLP().eval(), FlooredScaler().fit(feature_matrix(train, "study")), STUDY_FEATURES, 0.5)


def test_a_text_naming_nothing_and_an_object_not_found_give_the_head_different_inputs():
    """Both store object_score 0.0; only the one that was checked is a measured zero."""
    from helpers.fusion import standardise

    train = pd.DataFrame({"object_score": [0.0, 0.4, 0.8, 0.0], "clip_score": [0.2, 0.3, 0.4, 0.5],
                          "spatial_score": [0.0, 0.5, 1.0, 0.5],
                          "object_state": ["checked", "checked", "checked", "nothing to check"]})
    head = _head_of(train)
    assert head.scaler.mean_[0] == pytest.approx(0.4)  # the placeholder is left out of the statistics
    probe = pd.DataFrame({"object_score": [0.0, 0.0, 0.0], "clip_score": [0.3] * 3, "spatial_score": [0.5] * 3,
                          "object_state": ["checked", "nothing to check", "not computed"]})
    x = standardise(head.scaler, feature_matrix(probe, "study"))
    assert x[0, 0] < 0 and x[1, 0] == 0.0 == x[2, 0]  # absent: below the mean; unchecked: the training mean
    p = head.predict_proba(probe)
    assert p[0] != p[1] and p[1] == p[2]


def test_state_indicators_tell_nothing_to_check_from_not_computed():
    table = pd.DataFrame({"object_score": [0.5, 0.0, 0.0],
                          "object_state": ["checked", "nothing to check", "not computed"]})
    x = feature_matrix(table, ["object_score", "object_nothing_to_check", "object_not_computed"])
    np.testing.assert_array_equal(x[:, 1:], [[0, 0], [1, 0], [0, 1]])
    assert x[0, 0] == 0.5 and np.isnan(x[1:, 0]).all()
    with pytest.raises(FeatureTableError, match="unknown state"):
        feature_matrix(table.assign(object_state=["checked", "uninformative", "checked"]), ["object_score"])
    with pytest.raises(FeatureTableError, match="missing values"):  # a checked score with a hole is a real hole
        feature_matrix(table.assign(object_score=[None, 0.0, 0.0]), ["object_score"])


def test_complete_rows_sets_aside_real_holes_only():
    from helpers.fusion import complete_rows

    table = pd.DataFrame({"object_score": [0.0, 0.0, 0.3], "clip_score": [0.2, None, 0.4],
                          "spatial_score": [0.5, 0.5, 0.5],
                          "object_state": ["nothing to check", "checked", "checked"]})
    kept, holes = complete_rows(table, "study")
    assert list(kept.index) == [0, 2] and holes == {"clip_score": 1}


def test_the_scale_floor_keeps_a_near_constant_column_from_moving_the_head():
    """A column with training std 1e-4: under a plain StandardScaler a 2e-4 difference is two units of
    input; under the floor, 0.02, so P(aligned) moves much less."""
    from helpers.fusion import MIN_SCALE, FlooredScaler

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"object_score": rng.uniform(0, 1, 200), "clip_score": 0.5 + rng.normal(0, 1e-4, 200),
                          "spatial_score": rng.uniform(0, 1, 200)})
    x = feature_matrix(train, "study")
    plain, floored = StandardScaler().fit(x), FlooredScaler().fit(x)
    assert plain.scale_[1] < 2e-4 and floored.scale_[1] == MIN_SCALE
    np.testing.assert_allclose(floored.scale_[[0, 2]], plain.scale_[[0, 2]])  # columns that vary keep their scale
    torch.manual_seed(1)
    model = FusionMLP().eval()
    probe = pd.DataFrame({"object_score": [0.5, 0.5], "clip_score": [0.5, 0.5002], "spatial_score": [0.5, 0.5]})
    moves = {name: float(np.ptp(TrainedHead(model, scaler, STUDY_FEATURES, 0.5).predict_proba(probe)))
             for name, scaler in (("plain", plain), ("floored", floored))}
    assert moves["floored"] < moves["plain"] / 10


def test_response_grid_spans_two_inputs_and_holds_the_third_at_its_median():
    torch.manual_seed(0)
    reference = pd.DataFrame({"object_score": [0.1, 0.5, 0.9], "clip_score": [0.2, 0.3, 0.4], "spatial_score": [0.0, 0.25, 1.0]})
    head = TrainedHead(FusionMLP().eval(), StandardScaler().fit(feature_matrix(reference, "study")), STUDY_FEATURES, 0.5)
    grid = response_grid(head, reference, "object_score", "clip_score", n=5)
    assert len(grid) == 25 and list(grid.columns) == ["object_score", "clip_score", "probability"]
    assert grid["object_score"].min() == 0 and grid["clip_score"].max() == 1
    expected = head.predict_proba(grid.assign(spatial_score=0.25))  # median of spatial_score
    np.testing.assert_allclose(grid["probability"], expected)
    with pytest.raises(ValueError, match="not an input"):
        response_grid(head, reference, "object_score", "relations_held")


# --------------------------------------------------------------- evidence beyond the study


def test_the_extended_head_reads_the_new_evidence_the_profile_switches_on():
    from helpers.fusion import NEW_EVIDENCE, evidence_enabled, extended_features, without_new_evidence

    off = {"openvocab": {"enabled": False}, "questions": {"enabled": False}}
    assert extended_features(off) == FEATURE_SETS["extended"] == extended_features({})
    one = {"openvocab": {"enabled": True}, "questions": {"enabled": False}}
    assert extended_features(one) == FEATURE_SETS["extended"] + (
        "openvocab_score", "openvocab_nothing_to_check", "openvocab_not_computed")
    both = {"openvocab": {"enabled": True}, "questions": {"enabled": True, "weights": "random"}}
    assert extended_features(both)[-6:] == NEW_EVIDENCE["openvocab"] + NEW_EVIDENCE["questions"]
    study = without_new_evidence(both)
    assert not evidence_enabled(study, "openvocab") and not evidence_enabled(study, "questions")
    assert study["questions"]["weights"] == "random" and both["questions"]["enabled"]  # a copy, the rest kept
    assert extended_features(study) == FEATURE_SETS["extended"]


def test_score_pairs_refuses_a_switched_on_evidence_without_its_model(monkeypatch):
    from helpers import fusion

    monkeypatch.setattr("helpers.detection.detect_frames", lambda *a, **k: type("R", (), {"frames": None})())
    monkeypatch.setattr("helpers.objects.object_features", lambda *a, **k: pd.DataFrame({"pair_id": ["p"]}))
    monkeypatch.setattr("helpers.spatial.spatial_features", lambda *a, **k: pd.DataFrame({"pair_id": ["p"]}))
    monkeypatch.setattr("helpers.semantics.clip_features",
                        lambda *a, **k: type("C", (), {"features": pd.DataFrame({"pair_id": ["p"]})})())
    cfg = {"detector": {"min_size": 240, "proposals": 1000, "batch_size": 1, "score_threshold": 0.5},
           "clip": {"aggregate": "max", "top_k": 2, "batch_size": 1},
           "openvocab": {"enabled": True}, "questions": {"enabled": False}}
    pairs = pd.DataFrame({"pair_id": ["p"]})
    with pytest.raises(ValueError, match="openvocab evidence: pass the OWL-ViT model or its loader"):
        fusion.score_pairs(pairs, {}, detector=None, clip=None, cfg=cfg, cache_dir="unused")
    assert list(fusion.score_pairs(pairs, {}, detector=None, clip=None, cfg=fusion.without_new_evidence(cfg),
                                   cache_dir="unused")["pair_id"]) == ["p"]


def test_score_pairs_given_loaders_holds_one_model_at_a_time(monkeypatch):
    """Given loading functions, score_pairs loads each model just before its evidence and has freed
    the one before by then; given loaded models, it uses them as they are."""
    import weakref

    from helpers import fusion

    class Model:  # a loaded model's stand-in, weakly referenceable so that its release shows
        def __init__(self, name: str) -> None:
            self.name = name

    alive: dict[str, weakref.ref] = {}
    log: list[tuple] = []

    def loader(name: str):
        def load() -> Model:
            log.append(("load", name, sorted(n for n, ref in alive.items() if ref() is not None)))
            model = Model(name)
            alive[name] = weakref.ref(model)
            return model
        return load

    def uses(name: str, result):
        def run(model, *args, **kwargs):
            assert model.name == name
            log.append(("use", name))
            return result
        return run

    one = pd.DataFrame({"pair_id": ["p"]})
    monkeypatch.setattr("helpers.detection.detect_frames", uses("detector", type("R", (), {"frames": None})()))
    monkeypatch.setattr("helpers.semantics.clip_features", uses("clip", type("C", (), {"features": one})()))
    monkeypatch.setattr("helpers.objects.openvocab_features", uses("openvocab", one))
    monkeypatch.setattr("helpers.semantics.question_features", uses("vqa", one))
    monkeypatch.setattr("helpers.objects.object_features", lambda *a, **k: one)
    monkeypatch.setattr("helpers.spatial.spatial_features", lambda *a, **k: one)
    cfg = {"detector": {"min_size": 240, "proposals": 1000, "batch_size": 1, "score_threshold": 0.5},
           "clip": {"aggregate": "max", "top_k": 2, "batch_size": 1},
           "openvocab": {"enabled": True, "score_threshold": 0.1, "batch_size": 1},
           "questions": {"enabled": True, "batch_size": 1}}
    names = ("detector", "clip", "openvocab", "vqa")
    out = fusion.score_pairs(one, {}, cfg=cfg, cache_dir="unused", **{n: loader(n) for n in names})
    assert list(out["pair_id"]) == ["p"]
    assert log == [entry for n in names for entry in (("load", n, []), ("use", n))]
    assert all(ref() is None for ref in alive.values())

    log.clear()
    models = {n: Model(n) for n in names}  # loaded already: used as they are, and kept
    fusion.score_pairs(one, {}, cfg=cfg, cache_dir="unused", **models)
    assert log == [("use", n) for n in names]


def test_a_score_never_checked_on_train_reads_as_a_constant_and_the_probes_still_work():
    import warnings

    from helpers.fusion import FlooredScaler, input_effects

    reference = pd.DataFrame({"object_score": [0.1, 0.5, 0.9], "clip_score": [0.2, 0.3, 0.4],
                              "spatial_score": [0.0, 0.0, 0.0], "spatial_state": ["nothing to check"] * 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaler = FlooredScaler().fit(feature_matrix(reference, "study"))
    assert (scaler.mean_[2], scaler.scale_[2]) == (0.0, 1.0)
    torch.manual_seed(0)
    head = TrainedHead(FusionMLP().eval(), scaler, STUDY_FEATURES, 0.5)
    assert np.isfinite(head.predict_proba(reference)).all()
    grid = response_grid(head, reference, "object_score", "clip_score", n=3)  # spatial held at "no value"
    assert np.isfinite(grid["probability"]).all()
    assert len(input_effects(head, reference)) == 3
