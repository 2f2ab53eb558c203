"""Training the fusion head: learning, determinism, checkpoints and resuming, and the baselines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers.evaluation import tune_threshold
from helpers.fusion import FEATURE_SETS, feature_matrix
from helpers.training import (
    CheckpointError,
    TrainSettings,
    fit_baselines,
    head_scorer,
    load_checkpoint,
    load_head,
    predict,
    settings_from_profile,
    train_fusion,
    validation_table,
)

NEGATIVE_TYPES = ("other_story", "same_story", "object_swap", "relation_swap")


def make_feature_table(n_stories: int = 40, frames: int = 5, seed: int = 0, signal: float = 1.0) -> pd.DataFrame:
    """A learnable synthetic ``features.parquet``: one aligned and one misaligned text per frame.

    Aligned pairs score higher on every evidence, by ``signal`` standard deviations; each
    kind of negative fails on different evidence, as the real ones are meant to. Stories
    are split 60/20/20 into train/val/test.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_stories):
        split = "train" if s < 0.6 * n_stories else "val" if s < 0.8 * n_stories else "test"
        for frame in range(1, frames + 1):
            for label in (1, 0):
                negative = "" if label else NEGATIVE_TYPES[(s + frame) % 4]
                shift = {"": (1, 1, 1), "other_story": (0, 0, 0.5), "same_story": (0.5, 0, 0.5),
                         "object_swap": (0, 0.7, 0.5), "relation_swap": (1, 0.7, 0)}[negative]
                obj, clip, spatial = (np.clip(0.35 + 0.3 * signal * np.array(shift) + rng.normal(0, 0.15, 3), 0, 1))
                checked = int(rng.integers(0, 4))
                rows.append({
                    "pair_id": f"s{s:03d}f{frame:02d}{'p' if label else 'n'}", "story_id": f"s{s:03d}", "frame": frame,
                    "block": f"b{s // 2:03d}", "split": split, "label": label, "negative_type": negative,
                    "object_score": obj, "object_informative": bool(rng.random() < 0.8),
                    "clip_score": clip, "clip_score_mean": clip - 0.05 * rng.random(),
                    "spatial_score": spatial, "spatial_informative": checked > 0,
                    "relations_checked": checked, "relations_held": int(rng.integers(0, checked + 1)),
                })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_feature_table()


FAST = TrainSettings(batch_size=32, max_epochs=12, patience=None, seed=42)


def test_training_lowers_the_loss_and_separates_the_classes(table):
    result = train_fusion(table, FAST, progress=False)
    history = result.history
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy",
                                     "train_f1", "val_f1"]
    assert history["epoch"].tolist() == list(range(1, 13))
    assert history["train_loss"].iloc[-1] < 0.7 * history["train_loss"].iloc[0]
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]
    test = table[table["split"] == "test"]
    assert roc_auc_score(test["label"], result.head.predict_proba(test)) > 0.9
    assert 0 < result.head.threshold < 1


def test_training_is_deterministic_and_leaves_global_state_alone(table):
    torch.manual_seed(123)
    before, threads = torch.get_rng_state(), torch.get_num_threads()
    a = train_fusion(table, FAST, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert not torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == threads
    b = train_fusion(table, FAST, progress=False)
    pd.testing.assert_frame_equal(a.history, b.history)
    for (name, p), q in zip(a.head.model.state_dict().items(), b.head.model.state_dict().values()):
        assert torch.equal(p, q), name


def test_features_are_standardised_with_training_statistics_only(table):
    result = train_fusion(table, dataclasses.replace(FAST, max_epochs=1), progress=False)
    train = feature_matrix(table[table["split"] == "train"], "study")
    np.testing.assert_allclose(result.head.scaler.mean_, train.mean(axis=0), rtol=1e-5)
    assert not np.allclose(result.head.scaler.mean_, feature_matrix(table, "study").mean(axis=0), rtol=1e-5)


def test_early_stopping_keeps_the_epoch_with_the_lowest_validation_loss(table):
    result = train_fusion(table, TrainSettings(batch_size=32, max_epochs=300, patience=3, lr=0.05), progress=False)
    history = result.history.set_index("epoch")
    assert result.stopped_early
    assert len(history) == result.best_epoch + 3
    assert result.best_epoch == history["val_loss"].idxmin()


def test_the_studys_fixed_epochs_keep_the_last_one(table):
    cfg = {"seed": 42, "training": {"lr": 0.001, "batch_size": 32, "max_epochs": 200, "patience": 15}}
    study = settings_from_profile(cfg, max_epochs=3, patience=None)
    result = train_fusion(table, study, progress=False)
    assert (len(result.history), result.best_epoch, result.stopped_early) == (3, 3, False)
    # Chapter 06 compares the two settings as one trajectory: they share their first three epochs.
    longer = train_fusion(table, settings_from_profile(cfg, max_epochs=5), progress=False)
    pd.testing.assert_frame_equal(longer.history.head(3), result.history)
    assert settings_from_profile(cfg, features="extended").features == FEATURE_SETS["extended"]


def test_checkpoints_round_trip(table, tmp_path):
    result = train_fusion(table, FAST, tmp_path / "run", progress=False)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert {"model_state", "optimizer_state", "scaler", "settings", "epoch", "progress", "threshold"} <= set(best)
    assert best["epoch"] == result.best_epoch and best["settings"]["features"] == ("object_score", "clip_score", "spatial_score")
    assert len(best["progress"]["history"]) == result.best_epoch
    head = load_head(tmp_path / "run" / "best.pt")
    assert head.threshold == result.head.threshold and head.features == result.head.features
    np.testing.assert_array_equal(head.predict_proba(table), result.head.predict_proba(table))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["threshold"] is None


def test_an_interrupted_run_resumes_to_the_same_result(table, tmp_path):
    settings = TrainSettings(batch_size=32, max_epochs=60, patience=3)
    reference = train_fusion(table, settings, tmp_path / "whole", progress=False)
    assert reference.stopped_early and reference.best_epoch > 5  # the cut falls well inside the run

    def crash_after_5(row):
        if row["epoch"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fusion(table, settings, tmp_path / "cut", on_epoch_end=crash_after_5, progress=False)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 5
    resumed = train_fusion(table, settings, tmp_path / "cut", progress=False)

    assert resumed.resumed_from_epoch == 5
    pd.testing.assert_frame_equal(resumed.history, reference.history)
    assert resumed.best_epoch == reference.best_epoch and resumed.head.threshold == reference.head.threshold
    for p, q in zip(resumed.head.model.state_dict().values(), reference.head.model.state_dict().values()):
        assert torch.equal(p, q)
    # A finished run is not trained again.
    again = train_fusion(table, settings, tmp_path / "cut", progress=False)
    assert again.resumed_from_epoch == len(reference.history)
    pd.testing.assert_frame_equal(again.history, reference.history)


def test_checkpoints_of_other_settings_are_not_resumed(table, tmp_path):
    train_fusion(table, dataclasses.replace(FAST, max_epochs=2), tmp_path, progress=False)
    with pytest.warns(UserWarning, match="other settings or data"):
        result = train_fusion(table, dataclasses.replace(FAST, max_epochs=3, lr=0.002), tmp_path, progress=False)
    assert result.resumed_from_epoch == 0 and len(result.history) == 3


def test_unusable_checkpoints_are_named(tmp_path, table):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_head(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_head(tmp_path / "junk.pt")

    def crash(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fusion(table, FAST, tmp_path / "cut", on_epoch_end=crash, progress=False)
    with pytest.raises(CheckpointError, match="did not finish"):
        load_head(tmp_path / "cut" / "best.pt")


def test_training_needs_both_classes_in_train_and_validation(table):
    with pytest.raises(ValueError, match="'val' split needs aligned and misaligned"):
        train_fusion(table[~((table["split"] == "val") & (table["label"] == 0))], FAST, progress=False)


def test_baselines_and_predictions(table):
    baselines = fit_baselines(table, seed=42)
    names = [b.name for b in baselines]
    assert names == ["object_score_only", "clip_score_only", "spatial_score_only", "logistic_regression",
                     "gradient_boosting"]
    clip = baselines[1]
    np.testing.assert_allclose(clip.predict_proba(table), table["clip_score"])
    test = table[table["split"] == "test"]
    for b in baselines[3:]:
        assert roc_auc_score(test["label"], b.predict_proba(test)) > 0.9, b.name

    # Thresholds depend on the validation split only.
    scrambled = table.assign(label=np.where(table["split"] == "test", 1 - table["label"], table["label"]))
    assert [b.threshold for b in fit_baselines(scrambled, seed=42)] == [b.threshold for b in baselines]

    head = train_fusion(table, dataclasses.replace(FAST, max_epochs=2), progress=False).head
    scorers = [head_scorer("fusion", head), *baselines]
    predictions = predict(table, scorers)
    assert len(predictions) == len(table) * len(scorers)
    fusion = predictions[predictions["model"] == "fusion"]
    np.testing.assert_array_equal(fusion["decision"], fusion["score"] >= head.threshold)
    assert set(predictions["features"]) >= {"object_score,clip_score,spatial_score", "clip_score"}
    summary = validation_table(table, scorers)
    assert list(summary.index) == [s.name for s in scorers] and summary["macro_f1"].between(0, 1).all()


def _folds(x: np.ndarray, y: np.ndarray, n_train: int):
    """Train and validation folds of arrays, every pair weighing 1."""
    w = np.ones(len(y))
    return (x[:n_train], y[:n_train], w[:n_train]), (x[n_train:], y[n_train:], w[n_train:])


def test_logistic_regression_chooses_its_strength_from_the_data():
    """A table the inputs separate wants the weakest regularisation of the grid; pure noise the strongest."""
    from helpers.training import LOGISTIC_C_GRID, tune_logistic_regression

    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 150)
    separable = np.column_stack([np.where(y == 1, 1.0, -1.0) + rng.normal(0, 0.3, len(y)), rng.normal(size=len(y))])
    noise = rng.normal(size=(len(y), 4))
    strong = tune_logistic_regression(*_folds(separable, y, 200))
    weak = tune_logistic_regression(*_folds(noise, y, 200))
    assert strong.setting["C"] == max(LOGISTIC_C_GRID) and weak.setting["C"] <= 1e-2, (strong.grid, weak.grid)
    for tuned in (strong, weak):  # the chosen setting is the validation-best of the grid, and its model is the one kept
        assert list(tuned.grid["C"]) == sorted(LOGISTIC_C_GRID)
        assert tuned.validation_loss == tuned.grid["validation_loss"].min()
        assert tuned.estimator[-1].C == tuned.setting["C"]


def test_gradient_boosting_keeps_the_validation_best_number_of_trees_and_setting():
    from helpers.training import BOOSTING_GRID, tune_gradient_boosting, validation_loss
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(1)
    x = rng.normal(size=(340, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(0, 0.8, 340) > 0.5).astype(int)
    train, val = _folds(x, y, 240)
    tuned = tune_gradient_boosting(train, val, max_iter=120, patience=5, seed=0)
    grid = tuned.grid
    assert len(grid) == len(BOOSTING_GRID["learning_rate"]) * len(BOOSTING_GRID["min_samples_leaf"])
    assert grid["validation_loss"].nunique() > 1
    best = grid.loc[grid["validation_loss"].idxmin()]
    assert tuned.setting == {k: best[k] for k in ("learning_rate", "min_samples_leaf", "max_iter")}
    assert tuned.validation_loss == pytest.approx(best["validation_loss"])  # the refit grows the same trees
    assert tuned.estimator.n_iter_ == tuned.setting["max_iter"]
    # Independently: grown tree by tree without early stopping, the validation loss is lowest at the kept count.
    with threadpool_limits(1, user_api="openmp"):
        full = HistGradientBoostingClassifier(learning_rate=best["learning_rate"], max_iter=int(best["grown"]),
                                              min_samples_leaf=int(best["min_samples_leaf"]), early_stopping=False,
                                              random_state=0).fit(*train[:2])
        losses = [validation_loss(val[1], p[:, 1], val[2]) for p in full.staged_predict_proba(val[0])]
    assert int(np.argmin(losses)) + 1 == tuned.setting["max_iter"]
    assert losses[tuned.setting["max_iter"] - 1] == pytest.approx(tuned.validation_loss)


def test_unchecked_inputs_nan_sit_at_the_training_mean_or_go_their_own_way():
    """NaN (a score whose evidence checked nothing): logistic regression scores it as the training mean; the
    boosted trees take it natively. Both fit and predict finite probabilities."""
    from helpers.training import tune_gradient_boosting, tune_logistic_regression

    rng = np.random.default_rng(2)
    y = np.tile([0, 1], 100)
    x = np.column_stack([y + rng.normal(0, 0.7, len(y)), rng.normal(size=len(y))])
    x[rng.random(len(y)) < 0.3, 0] = np.nan
    train, val = _folds(x, y, 150)
    logistic = tune_logistic_regression(train, val)
    mean = np.nanmean(train[0][:, 0])
    probe = np.array([[np.nan, 0.4], [mean, 0.4]])
    p = logistic.estimator.predict_proba(probe)[:, 1]
    assert np.isfinite(logistic.validation_loss) and p[0] == pytest.approx(p[1])
    boosting = tune_gradient_boosting(train, val, max_iter=30, patience=3)
    assert np.isfinite(boosting.estimator.predict_proba(x)).all() and np.isfinite(boosting.validation_loss)


def test_validation_loss_is_the_heads_early_stopping_loss(table):
    from helpers.training import frame_weights, validation_loss

    result = train_fusion(table, dataclasses.replace(FAST, max_epochs=3), progress=False)
    val = table[table["split"] == "val"]
    kept = result.history.set_index("epoch").at[result.best_epoch, "val_loss"]
    loss = validation_loss(val["label"], result.head.predict_proba(val), frame_weights(val))
    assert loss == pytest.approx(kept, abs=1e-5)


def test_extended_baselines_read_the_extended_inputs(table):
    def states(informative: pd.Series) -> np.ndarray:
        return np.where(informative, "checked", "nothing to check")

    table = table.assign(object_state=states(table["object_informative"]),
                         spatial_state=states(table["spatial_informative"]))
    baselines = {s.name: s for s in fit_baselines(table, "study", extended="extended", seed=0)}
    assert [n for n in baselines if n.endswith("_extended")] == ["logistic_regression_extended",
                                                                 "gradient_boosting_extended"]
    assert "relations_held_only" not in baselines  # single scores: the study's only
    for kind in ("logistic_regression", "gradient_boosting"):
        study, extended = baselines[kind], baselines[f"{kind}_extended"]
        assert study.features == FEATURE_SETS["study"] and extended.features == FEATURE_SETS["extended"]
        assert extended.kind == study.kind == kind and set(extended.setting) == set(study.setting)
    # Only the extended models move when an extended-only column changes.
    moved = table.assign(relations_checked=table["relations_checked"][::-1].to_numpy(),
                         clip_score_mean=table["clip_score_mean"][::-1].to_numpy())
    for name, scorer in baselines.items():
        changed = not np.allclose(scorer.predict_proba(table), scorer.predict_proba(moved))
        assert changed == name.endswith("_extended"), name
    # Thresholds and settings come from validation: the test labels do not move them.
    scrambled = table.assign(label=np.where(table["split"] == "test", 1 - table["label"], table["label"]))
    again = fit_baselines(scrambled, "study", extended="extended", seed=0)
    assert [(s.threshold, s.setting) for s in again] == [(s.threshold, s.setting) for s in baselines.values()]
    val = table[table["split"] == "val"]
    for scorer in baselines.values():
        assert scorer.threshold == pytest.approx(tune_threshold(val["label"].to_numpy(), scorer.predict_proba(val)))


def test_blind_controls_learn_a_cue_the_text_gives_away_and_nothing_else():
    from helpers.training import fit_blind_controls, predict

    table = make_feature_table(n_stories=30, frames=4, seed=3)
    rng = np.random.default_rng(0)
    words = ["door", "table", "window", "chair", "lamp", "street", "car", "coat"]

    def sentence(label: int, leak: bool) -> str:
        body = " ".join(rng.choice(words, 6))
        return f"He sees the {body}." + (" Suddenly a zebra appears." if leak and not label else "")

    # Texts that leak: every negative mentions a zebra. Texts that do not: labels are not in the words.
    leaky = table.assign(text=[sentence(y, True) for y in table["label"]])
    fair = table.assign(text=[sentence(y, False) for y in table["label"]])
    for frame, expect_leak in ((leaky, True), (fair, False)):
        vectors = {t: rng.normal(size=8) for t in frame["text"]}  # stand-in text embeddings: no signal
        scorers = fit_blind_controls(frame, vectors, seed=0)
        assert [(s.name, s.kind) for s in scorers] == [("text_only", "text_only"), ("clip_text_only", "blind_control")]
        test = predict(frame, scorers).query("split == 'test'")
        text_only = test[test["model"] == "text_only"]
        auc = roc_auc_score(text_only["label"], text_only["score"])
        assert (auc > 0.95) if expect_leak else (0.25 < auc < 0.75), auc
        val = frame[frame["split"] == "val"]
        for scorer in scorers:  # thresholds come from validation
            assert scorer.threshold == pytest.approx(tune_threshold(val["label"].to_numpy(), scorer.predict_proba(val)))


def _pairwise_table(tell: bool, seed: int) -> pd.DataFrame:
    """Frames whose negative is their own text with one noun swapped; with ``tell``, every negative also says
    "The a" (the double determiner a tag-only edit writes), the one trace a pairwise reader can find."""
    rng = np.random.default_rng(seed)
    nouns = ["door", "table", "window", "chair", "lamp", "street", "car", "coat", "cup", "dog", "book", "phone"]
    table = make_feature_table(n_stories=30, frames=4, seed=seed)
    texts = {}
    for (story, frame), _ in table.groupby(["story_id", "frame"]):
        a, b, c = rng.choice(nouns, 3, replace=False)
        own = f"The {a} stands near the {c}. He looks at it."
        texts[(story, frame, 1)] = own
        texts[(story, frame, 0)] = (f"The a {b} stands near the {c}. He looks at it." if tell
                                    else f"The {b} stands near the {c}. He looks at it.")
    return table.assign(text=[texts[k] for k in zip(table["story_id"], table["frame"], table["label"])])


def test_pairwise_text_finds_a_planted_tell_on_held_out_frames_and_nothing_without_one():
    from helpers.evaluation import paired_outcomes
    from helpers.training import fit_pairwise_text, pairwise_scorer

    for tell in (True, False):
        table = _pairwise_table(tell, seed=1)
        model = fit_pairwise_text(table, seed=0)
        scorer = pairwise_scorer(model, table)
        assert (scorer.name, scorer.kind) == ("pairwise_text", "blind_control")
        rows = predict(table, [scorer]).query("split == 'test'").assign(block="b")
        frames = paired_outcomes(rows)
        assert len(frames) == 24 and (rows.loc[rows["label"] == 1, "score"] == 0.5).all()  # own text vs itself
        paired = frames["outcome"].mean()
        assert (paired > 0.95) if tell else (0.25 < paired < 0.75), (tell, paired)
        assert set(model.validation_log_loss) == {0.01, 0.1, 1.0, 10.0, 100.0, 1000.0}
        assert model.C == min(model.validation_log_loss, key=lambda c: (model.validation_log_loss[c], c))


def test_pairwise_text_is_antisymmetric_trained_on_train_only_and_scores_a_lone_pair_half():
    from helpers.training import fit_pairwise_text, frame_partners

    table = _pairwise_table(True, seed=2)
    model = fit_pairwise_text(table, seed=0)
    a, b = ["The a cup stands near the dog."], ["The cup stands near the dog."]
    assert model.prob_first(a, b)[0] == pytest.approx(1 - model.prob_first(b, a)[0])
    assert model.prob_first(b, a)[0] > 0.5  # the tell is read from the pair
    test_words = set(" ".join(table.loc[table["split"] == "test", "text"]).lower().split())
    vocabulary = set(model.vectorizer.transformer_list[0][1].vocabulary_)
    train_words = set(" ".join(table.loc[table["split"] == "train", "text"]).lower().replace(".", "").split())
    assert {w for w in vocabulary if " " not in w} == train_words and test_words  # vocabulary of training texts
    lone = table.drop(index=table.index[(table["split"] == "test") & (table["label"] == 1)][:1]).reset_index(drop=True)
    partners = frame_partners(lone)
    assert sum(p is None for p, y in zip(partners, lone["label"]) if y == 0) == 1  # the negative without its positive
    assert model.predict_proba(lone)[[p is None for p in partners]].tolist() == [0.5] * partners.count(None)
    with pytest.raises(ValueError, match="two positives"):
        frame_partners(pd.concat([table, table.iloc[:1]]))
    # a frame with several negatives: each is compared with the frame's own text
    own = table.iloc[0]
    several = pd.DataFrame([own, own.copy(), own.copy()]).assign(
        label=[1, 0, 0], text=[own["text"], "The a cup stands near the dog.", "The cup stands near the dog."])
    assert frame_partners(several) == [None, own["text"], own["text"]]
    scores = model.predict_proba(several)
    assert scores[0] == 0.5 and scores[1] == pytest.approx(model.prob_first([several["text"].iloc[1]], [own["text"]])[0])
    # the order each training frame is shown in is drawn with the seed: another seed, another fit
    assert fit_pairwise_text(table, seed=5).classifier.coef_.tolist() != model.classifier.coef_.tolist()


def test_frame_weights_weigh_a_frames_negatives_together_as_its_positive():
    from helpers.training import frame_weights

    rows = pd.DataFrame({"story_id": ["a"] * 5 + ["b"] * 2 + ["c"], "frame": [1] * 5 + [2] * 2 + [1],
                         "label": [1, 0, 0, 0, 0, 0, 1, 1]})
    assert frame_weights(rows).tolist() == [1, 0.25, 0.25, 0.25, 0.25, 1, 1, 1]
    both = rows.iloc[:7]
    w = frame_weights(both)
    assert w[both["label"].to_numpy() == 1].sum() == w[both["label"].to_numpy() == 0].sum() == 2


def test_losses_are_weighed_so_copies_of_a_negative_count_once():
    """Three copies of every negative, each weighed a third, fit and score as the one negative does."""
    from helpers.fusion import FusionMLP
    from helpers.training import _epoch_metrics, fit_baselines, frame_weights

    table = make_feature_table(n_stories=20, frames=3, seed=4)
    negatives = table[table["label"] == 0]
    copies = pd.concat([table, negatives.assign(pair_id=negatives["pair_id"] + "2"),
                        negatives.assign(pair_id=negatives["pair_id"] + "3")]).sort_values("pair_id")
    assert frame_weights(copies)[copies["label"].to_numpy() == 0] == pytest.approx(1 / 3)
    one = {s.name: s for s in fit_baselines(table, "study", seed=0)}
    three = {s.name: s for s in fit_baselines(copies, "study", seed=0)}
    test = table[table["split"] == "test"]
    assert np.allclose(one["logistic_regression"].predict_proba(test),
                       three["logistic_regression"].predict_proba(test), atol=0.02)  # the scaler sees the copies
    torch.manual_seed(0)
    model = FusionMLP(3, 8, 0.0)
    columns = ["object_score", "clip_score", "spatial_score"]

    def loss(rows):
        x = torch.tensor(rows[columns].to_numpy(np.float32))
        y = torch.tensor(rows["label"].to_numpy(np.float32))
        return _epoch_metrics(model, x, y, torch.tensor(frame_weights(rows).astype(np.float32)))[0]

    assert loss(copies) == pytest.approx(loss(table), rel=1e-5)
    unweighted = _epoch_metrics(model, torch.tensor(copies[columns].to_numpy(np.float32)),
                                torch.tensor(copies["label"].to_numpy(np.float32)), torch.ones(len(copies)))[0]
    assert unweighted != pytest.approx(loss(table), rel=1e-3)  # without the weights the copies count thrice


def test_placeholder_scores_are_missing_values_for_the_head_the_baselines_and_the_checkpoints(tmp_path):
    """A score whose state is not "checked" is a placeholder: whatever number it holds changes no model's
    output; a single score ranks it at the training mean of the checked scores; checkpoints keep the
    statistics of a column with missing values."""
    table = make_feature_table(n_stories=20, frames=4, seed=1)
    rng = np.random.default_rng(2)
    state = np.where(table["object_informative"], "checked", "nothing to check")
    state[rng.random(len(table)) < 0.05] = "not computed"
    table = table.assign(object_state=state, object_score=table["object_score"].where(state == "checked", 0.0))
    other_placeholder = table.assign(object_score=table["object_score"].where(state == "checked", 0.77))

    baselines = {b.name: b for b in fit_baselines(table, seed=42)}
    for b in baselines.values():
        scores = b.predict_proba(table)
        assert np.isfinite(scores).all(), b.name
        np.testing.assert_allclose(b.predict_proba(other_placeholder), scores, err_msg=b.name)
    checked_train = table[(table["split"] == "train") & (state == "checked")]
    unchecked = table[state != "checked"]
    np.testing.assert_allclose(baselines["object_score_only"].predict_proba(unchecked),
                               checked_train["object_score"].mean())

    result = train_fusion(table, dataclasses.replace(FAST, max_epochs=3), tmp_path / "run", progress=False)
    np.testing.assert_allclose(result.head.scaler.mean_[0], checked_train["object_score"].mean())
    np.testing.assert_array_equal(result.head.predict_proba(other_placeholder), result.head.predict_proba(table))
    loaded = load_head(tmp_path / "run" / "best.pt")
    np.testing.assert_array_equal(loaded.predict_proba(table), result.head.predict_proba(table))


def test_the_logistic_regression_baseline_standardises_with_the_scale_floor():
    from helpers.fusion import MIN_SCALE

    table = make_feature_table(n_stories=20, frames=4, seed=4)
    table = table.assign(clip_score_mean=0.5 + np.random.default_rng(0).normal(0, 1e-4, len(table)))
    columns = ["object_score", "clip_score", "clip_score_mean"]
    lr = {b.name: b for b in fit_baselines(table, columns, seed=42)}["logistic_regression"]
    scaler = lr.predict_proba.keywords["estimator"][0]
    assert scaler.scale_[2] == MIN_SCALE and scaler.scale_[1] > MIN_SCALE
    # At a fixed C, the floor keeps a 2e-4 wobble of the near-constant column from moving P(aligned).
    from sklearn.preprocessing import StandardScaler

    from helpers.training import logistic_pipeline

    train = table[table["split"] == "train"]
    x, y = feature_matrix(train, columns), train["label"].to_numpy()
    probe = feature_matrix(table.head(1), columns)
    nudged = probe + np.array([0.0, 0.0, 2e-4], dtype=probe.dtype)

    def move(model) -> float:
        model.fit(x, y)
        return abs(float(model.predict_proba(nudged)[0, 1] - model.predict_proba(probe)[0, 1]))

    plain = logistic_pipeline(1.0)
    plain.steps[0] = ("standardscaler", StandardScaler())
    assert move(logistic_pipeline(1.0)) < 0.01 < move(plain)


def test_baselines_fit_when_a_score_is_never_checked_on_the_train_split():
    """The smoke run's spatial evidence checks nothing: every model must still fit, and ignore that column."""
    table = make_feature_table(n_stories=20, frames=4, seed=5).assign(spatial_state="nothing to check")
    baselines = fit_baselines(table, seed=42)
    moved = table.assign(spatial_score=0.9, spatial_state=np.where(table["split"] == "train", "nothing to check",
                                                                   "checked"))
    for b in baselines:
        assert np.isfinite(b.predict_proba(table)).all(), b.name
        if b.name != "spatial_score_only":
            np.testing.assert_allclose(b.predict_proba(moved), b.predict_proba(table), err_msg=b.name)


def _flags_table(flag_decides: bool, seed: int) -> pd.DataFrame:
    """``make_feature_table`` with the text-only source columns; with ``flag_decides``, an aligned text names a COCO
    object and a misaligned one names none, otherwise the lists, relations and sentences are drawn at random."""
    import json

    rng = np.random.default_rng(seed)
    table = make_feature_table(n_stories=30, frames=4, seed=seed)
    n = len(table)
    named = table["label"].to_numpy() == 1 if flag_decides else rng.random(n) < 0.5
    relation = {"subject": "man", "subject_category": "person", "relation": "on", "object": "couch",
                "object_category": "couch", "status": "unverifiable"}
    return table.assign(
        objects_needed=[json.dumps(["cup", "person"] if k else []) for k in named],
        relations_json=[json.dumps([relation] * int(k) + [{"relation": "proximity", "status": "proximity"}] * int(p))
                        for k, p in zip(rng.integers(0, 3, n), rng.integers(0, 2, n))],
        n_sentences=rng.integers(1, 6, n), openvocab_phrases=[json.dumps(["a man"] * int(k)) for k in rng.integers(0, 3, n)],
        openvocab_score=rng.random(n), openvocab_informative=rng.random(n) < 0.5,
        n_questions=rng.integers(0, 4, n), question_score=rng.random(n), question_informative=rng.random(n) < 0.5)


FLAG_CFG = {"openvocab": {"enabled": True}, "questions": {"enabled": True}}


@pytest.mark.parametrize("name", ["smoke", "quick", "full"])
def test_every_extended_input_is_sorted_into_text_only_or_frame_dependent(name):
    """A new input of the extended head must say whether the text alone decides it (chapter 06 raises otherwise)."""
    from helpers.config import load_profile
    from helpers.fusion import extended_features
    from helpers.training import FRAME_DEPENDENT_INPUTS, TEXT_ONLY_INDICATORS, TEXT_ONLY_INPUTS, flags_only_inputs

    cfg = load_profile(name)
    inputs = extended_features(cfg)
    assert set(inputs) <= set(FRAME_DEPENDENT_INPUTS) | set(TEXT_ONLY_INDICATORS)
    assert not set(FRAME_DEPENDENT_INPUTS) & set(TEXT_ONLY_INDICATORS)
    # Each text-only indicator of the head mirrors an input the control reads under the same profile.
    assert {TEXT_ONLY_INDICATORS[c] for c in inputs if c in TEXT_ONLY_INDICATORS} <= set(flags_only_inputs(cfg))
    assert set(TEXT_ONLY_INDICATORS.values()) <= set(TEXT_ONLY_INPUTS)


def test_flags_only_reads_the_text_only_inputs_counted_from_their_lists():
    from helpers.training import TEXT_ONLY_INPUTS, flags_only_inputs, text_only_inputs

    assert flags_only_inputs({}) == ("n_objects_needed", "object_informative", "n_relations_stated",
                                     "n_relations_coco", "n_sentences")
    assert flags_only_inputs(FLAG_CFG) == tuple(TEXT_ONLY_INPUTS)
    rows = pd.DataFrame({"objects_needed": ['["cup", "tv"]', "[]"], "n_sentences": [3, 1],
                         "relations_json": ['[{"status": "held", "subject_category": "person", "object_category": '
                                            '"tv"}, {"status": "unverifiable", "subject_category": null, '
                                            '"object_category": "tv"}, {"status": "proximity"}]', "[]"],
                         "openvocab_phrases": ['["a man"]', "[]"], "n_questions": [0, 2]})
    got = text_only_inputs(rows, flags_only_inputs(FLAG_CFG))
    assert got.to_dict("list") == {
        "n_objects_needed": [2, 0], "object_informative": [1, 0], "n_relations_stated": [2, 0],
        "n_relations_coco": [1, 0], "n_sentences": [3, 1], "n_openvocab_phrases": [1, 0],
        "openvocab_informative": [1, 0], "n_questions": [0, 2], "question_informative": [0, 1]}
    from helpers.fusion import FeatureTableError

    with pytest.raises(FeatureTableError, match="relations_json"):
        text_only_inputs(rows.drop(columns="relations_json"), ["n_relations_stated"])
    with pytest.raises(FeatureTableError, match="missing values"):
        text_only_inputs(rows.assign(n_sentences=[3, None]), ["n_sentences"])
    with pytest.raises(ValueError, match="not text-only"):
        text_only_inputs(rows, ["object_score"])


def test_flags_only_reads_no_score_and_finds_a_label_the_flag_decides():
    from helpers.evaluation import tune_threshold
    from helpers.training import fit_flags_only, flags_only_inputs, flags_only_scorer

    table = _flags_table(flag_decides=True, seed=4)
    inputs = flags_only_inputs(FLAG_CFG)
    model = fit_flags_only(table, inputs, seed=0)
    scorer = flags_only_scorer(model, table)
    assert (scorer.name, scorer.kind, scorer.features) == ("flags_only", "blind_control", inputs)
    test = table[table["split"] == "test"]
    assert roc_auc_score(test["label"], scorer.predict_proba(test)) > 0.99  # the flag decides the label
    assert set(model.validation_log_loss) == {0.001, 0.01, 0.1, 1.0, 10.0, 100.0}
    assert model.C == min(model.validation_log_loss, key=lambda c: (model.validation_log_loss[c], c))
    val = table[table["split"] == "val"]
    assert scorer.threshold == pytest.approx(tune_threshold(val["label"].to_numpy(), scorer.predict_proba(val)))

    # Every score and every frame-dependent input changed: the same predictions. One list changed: others.
    rng = np.random.default_rng(1)
    frame_dependent = ["object_score", "clip_score", "clip_score_mean", "spatial_score", "spatial_informative",
                       "relations_checked", "relations_held", "openvocab_score", "openvocab_informative",
                       "question_score", "question_informative", "object_informative"]
    scrambled = table.assign(**{c: rng.permutation(table[c].to_numpy()) for c in frame_dependent})
    np.testing.assert_array_equal(scorer.predict_proba(scrambled), scorer.predict_proba(table))
    flipped = table.assign(objects_needed=table["objects_needed"].map(lambda c: '["cup"]' if c == "[]" else "[]"))
    assert np.abs(scorer.predict_proba(flipped) - scorer.predict_proba(table)).min() > 0.1

    # No label in the text-only inputs: near chance on held-out pairs.
    fair = _flags_table(flag_decides=False, seed=5)
    fair_scorer = flags_only_scorer(fit_flags_only(fair, inputs, seed=0), fair)
    held_out = fair[fair["split"] == "test"]
    assert 0.25 < roc_auc_score(held_out["label"], fair_scorer.predict_proba(held_out)) < 0.75


# ---------------------------------------------------------------------- seeds


def test_every_profile_trains_every_head_over_at_least_five_seeds_starting_with_its_own():
    from helpers.config import load_profile
    from helpers.training import training_seeds

    for name in ("smoke", "quick", "full"):
        cfg = load_profile(name)
        seeds = training_seeds(cfg)
        assert len(seeds) >= 5 and seeds[0] == cfg["seed"] and len(set(seeds)) == len(seeds)
    with pytest.raises(ValueError, match="training.seeds"):
        load_profile("smoke", {"training": {"seeds": 0}})
    with pytest.raises(ValueError, match="training.seeds"):
        load_profile("smoke", {"training": {"seeds": "5"}})
    for name in ("quick", "full"):  # the real profiles train each evidence subset over at least five seeds too
        assert load_profile(name)["training"]["subset_seeds"] >= 5
    with pytest.raises(ValueError, match="subset_seeds"):
        load_profile("smoke", {"training": {"seeds": 5, "subset_seeds": 6}})


def test_seeds_give_different_runs_and_leave_the_primary_checkpoint_as_it_was(table, tmp_path):
    from helpers.training import seed_predictions, seed_run_dir, train_seeds

    alone = train_seeds(table, FAST, (42,), tmp_path / "alone" / "fusion")
    many = train_seeds(table, FAST, (42, 43, 44), tmp_path / "many" / "fusion")
    assert set(many) == {42, 43, 44} and many[43].settings.seed == 43
    primary_alone = load_checkpoint(tmp_path / "alone" / "fusion" / "best.pt")
    primary_many = load_checkpoint(tmp_path / "many" / "fusion" / "best.pt")
    assert primary_alone["fingerprint"] == primary_many["fingerprint"]
    for key, value in primary_alone["model_state"].items():
        assert torch.equal(value, primary_many["model_state"][key]), key
    assert primary_alone["threshold"] == primary_many["threshold"]
    other = seed_run_dir(tmp_path / "many" / "fusion", 43, 42)
    assert other == tmp_path / "many" / "seeds" / "fusion" / "seed_43" and (other / "best.pt").is_file()
    val = table[table["split"] == "val"]
    scores = {s: r.head.predict_proba(val) for s, r in many.items()}
    assert not np.allclose(scores[42], scores[43]) and not np.allclose(scores[43], scores[44])
    again = train_seeds(table, FAST, (42, 43, 44), tmp_path / "many" / "fusion")  # resumed: returns at once
    assert all(r.resumed_from_epoch == FAST.max_epochs for r in again.values())
    np.testing.assert_array_equal(again[43].head.predict_proba(val), scores[43])
    with pytest.raises(ValueError, match="primary seed"):
        train_seeds(table, FAST, (43, 44))

    long = seed_predictions(table, {"fusion": many})
    assert set(long["split"]) == {"val", "test"} and len(long) == 3 * int(table["split"].isin(["val", "test"]).sum())
    one = long[(long["seed"] == 43) & (long["split"] == "val")]
    np.testing.assert_allclose(one["score"], scores[43])
    assert (one["threshold"] == many[43].head.threshold).all()
