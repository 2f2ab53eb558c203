"""Ablations and robustness: the subsets, the study's rules, the perturbations, the bookkeeping."""

from __future__ import annotations

import io
import itertools
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from PIL import Image, ImageChops

from helpers import ablations as ab
from helpers.tags import parse_story, strip_tags

from conftest import STORY_3920 as FIXTURE  # a real story, verbatim from the Hub
TAGGED = (
    "<gdo char1>Dr. Mary Jones</gdo> <gda char1>sits</gda> on <gdo obj1>the couch</gdo>. "
    "<gdo char2>Tom</gdo> holds <gdo obj2>a cup</gdo>! Is it late? "
    "The <gdl bg1>dim light</gdl> falls on <gdo obj3>a table</gdo>."
)


# ------------------------------------------------------------------------- subsets


def test_seven_subsets_are_exactly_the_non_empty_subsets():
    subsets = ab.evidence_subsets()
    assert len(subsets) == 7 == len(set(subsets))
    expected = {frozenset(c) for r in (1, 2, 3) for c in itertools.combinations(ab.EVIDENCES, r)}
    assert {frozenset(s) for s in subsets} == expected
    assert subsets[-1] == tuple(ab.EVIDENCES) and ab.subset_name(subsets[-1]) == ab.REFERENCE
    assert [len(s) for s in subsets] == sorted(len(s) for s in subsets)


def test_the_profile_adds_the_evidences_it_switches_on_to_the_subsets():
    cfg = {"seed": 7, "training": {"lr": 0.01, "batch_size": 8, "max_epochs": 5, "patience": 2},
           "openvocab": {"enabled": True}, "questions": {"enabled": False}}
    assert ab.profile_evidences(cfg) == {**ab.EVIDENCES, "open-vocabulary": "openvocab_score"}
    variants = {v.name: v.settings.features for v in ab.subset_variants(pd.DataFrame(), cfg)}
    assert len(variants) == 2 ** 4 - 1
    assert variants["open-vocabulary"] == ("openvocab_score",)
    assert variants[ab.REFERENCE] == ("object_score", "clip_score", "spatial_score")  # the study's head, still
    assert variants[ab.REFERENCE + " + open-vocabulary"][-1] == "openvocab_score"
    cfg["questions"]["enabled"] = True
    assert len(ab.subset_variants(pd.DataFrame(), cfg)) == 2 ** 5 - 1
    assert ab.profile_evidences({}) == ab.EVIDENCES


def test_subset_variants_train_on_the_named_columns():
    cfg = {"seed": 7, "training": {"lr": 0.01, "batch_size": 8, "max_epochs": 5, "patience": 2}}
    variants = ab.subset_variants(pd.DataFrame(), cfg)
    by_name = {v.name: v.settings.features for v in variants}
    assert by_name["object"] == ("object_score",)
    assert by_name["semantic + spatial"] == ("clip_score", "spatial_score")
    assert by_name[ab.REFERENCE] == ("object_score", "clip_score", "spatial_score")
    assert {v.settings.seed for v in variants} == {7}


def test_study_rules_split_into_variants_that_differ_from_their_neighbours_in_one_part():
    cfg = {"seed": 42, "training": {"lr": 0.001, "batch_size": 8, "max_epochs": 200, "patience": 15}}
    ours = pd.DataFrame({"pair_id": ["a", "b"], "object_score": [0.2, 0.9]})
    theirs = ours.assign(object_score=[1.0, 1.0])
    variants = {v.name: v for v in ab.study_variants(ours, theirs, cfg)}
    assert list(variants) == ["study features", "study training", "study rules"]
    assert {v.family for v in variants.values()} == {"study rules"}
    reference = next(v for v in ab.subset_variants(ours, cfg) if v.name == ab.REFERENCE)
    features, training, both = variants["study features"], variants["study training"], variants["study rules"]
    # the study's scores, our training: the reference's settings on the study's table
    assert features.settings == reference.settings and features.table.equals(theirs)
    assert not features.table.equals(reference.table)
    # our scores, the study's training: the reference's table, 3 epochs with the last kept
    assert training.table.equals(reference.table) and training.settings != reference.settings
    assert (training.settings.max_epochs, training.settings.patience) == (3, None)
    assert {k for k, v in vars(training.settings).items() if v != vars(reference.settings)[k]} == {
        "max_epochs", "patience"}
    # both: the study's table and the study's training
    assert both.table.equals(features.table) and both.settings == training.settings
    table = ab.variant_table([*variants.values(), ab.detector_variant(pd.DataFrame(), cfg)])
    assert table.loc["study rules", "epochs"] == table.loc["study training", "epochs"] == "3 (last kept)"
    assert table.loc["study features", "epochs"].startswith("up to 200, patience 15")
    assert table.loc["oracle detector", "epochs"].startswith("up to 200, patience 15")


# ------------------------------------------------------------------- study's rules


def test_study_object_score_matches_keywords_anywhere_in_the_whole_story():
    story = ("<gdi image1>\n<gdo char1>James</gdo> enters.\n</gdi>\n\n"
             "<gdi image2>\nHe puts the <gdo obj1>mugs</gdo> down by the sofa.\n</gdi>")
    keywords = {"person": ("man", "james"), "cup": ("mug", "mugs"), "couch": ("sofa",), "tv": ("television",)}
    # person (via "James" in frame 1), cup ("mugs"), couch ("sofa") found; tv not; duplicates count once
    assert ab.study_object_score(["person", "cup", "couch", "tv", "person"], story, keywords) == pytest.approx(3 / 4)
    # whole words only: "cupboard" is not a cup, and tags are not text ("gdo" never matches)
    assert ab.study_object_score(["cup"], "<gdo obj1>a cupboard</gdo>", {"cup": ()}) == 0.0
    assert ab.study_object_score([], story, keywords) == 0.0
    assert ab.study_object_score([], story, keywords, empty=0.5) == 0.5


def test_study_keywords_come_from_the_lexicon():
    words = ab.study_keywords()
    assert "sofa" in words["couch"] and words["couch"][0] == "couch" and "television" in words["tv"]
    assert len(words) == 80


def test_whole_story_rebuilds_the_story_and_replaces_one_segment():
    segments = parse_story(FIXTURE.read_text())
    rebuilt = ab.whole_story(segments)
    assert [s.tagged for s in parse_story(rebuilt)] == [s.tagged for s in segments]
    assert rebuilt.startswith("<gdi image1>\n")
    edited = ab.whole_story(segments, 2, "A new text.")
    assert [s.tagged for s in parse_story(edited)][1] == "A new text."
    assert parse_story(edited)[0].tagged == segments[0].tagged
    with pytest.raises(ValueError, match="no frame 99"):
        ab.whole_story(segments, 99, "x")


def test_study_features_use_whole_story_labels_first_frame_clip_and_the_400px_rule():
    table = pd.DataFrame({"pair_id": ["a", "b"], "story_id": ["1", "1"], "frame": [1, 2],
                          "object_score": [0.9, 0.9], "clip_score": [0.9, 0.9], "spatial_score": [0.9, 0.9]})
    person = {"label": "person", "score": 0.9, "box": [0, 0, 50, 100]}
    tv = {"label": "tv", "score": 0.8, "box": [60, 0, 90, 30]}
    frames = pd.DataFrame({"story_id": ["1", "1"], "frame": [1, 2], "status": ["ok", "ok"],
                           "detections": [json.dumps([person, tv]), json.dumps([{**tv, "score": 0.2}])]})
    texts = pd.Series({"a": "A man watches.", "b": "A man watches."})
    clip = pd.Series({"a": 0.61, "b": np.nan})
    out = ab.study_features(table, frames, texts, clip, threshold=0.5).set_index("pair_id")
    assert out.loc["a", "object_score"] == pytest.approx(0.5)  # person via "man"; tv not named
    assert out.loc["b", "object_score"] == 0.0  # nothing detected at the threshold
    assert out.loc["a", "spatial_score"] == 1.0 and out.loc["b", "spatial_score"] == 0.5  # pair near / no pair
    assert out.loc["a", "clip_score"] == 0.61 and out.loc["b", "clip_score"] == 0.5  # undecodable frame 1 -> 0.5
    # the study's scores are numbers for every pair: a head reads them all, none as a placeholder
    assert set(out["object_state"]) == set(out["spatial_state"]) == {"checked"}
    from helpers.fusion import feature_matrix

    placeholders = table.assign(object_state="nothing to check", spatial_state="not computed")
    x = feature_matrix(ab.study_features(placeholders, frames, texts, clip, threshold=0.5), "study")
    assert not np.isnan(x).any()


# -------------------------------------------------------------------- perturbations


def test_typos_change_exactly_k_letters_and_no_tag():
    rng = np.random.default_rng(0)
    for k in (1, 3, 10):
        out = ab.typos(TAGGED, rng, k=k)
        assert len(out) == len(TAGGED)
        assert sum(a != b for a, b in zip(out, TAGGED)) == k
        assert all(a.isalpha() and b.isalpha() for a, b in zip(out, TAGGED) if a != b)
        assert ab._MARKUP.findall(out) == ab._MARKUP.findall(TAGGED)
    with pytest.raises(ab.PerturbationError, match="fewer than"):
        ab.typos("<gdo char1>ab</gdo>", rng, k=3)


def test_strip_tags_leaves_no_tag():
    out = ab.strip_tags(TAGGED)
    assert "<gd" not in out and "</gd" not in out and "Dr. Mary Jones sits on the couch." in out


def test_sentences_never_split_inside_a_tag_or_after_a_title():
    sentences = ab.split_tagged_sentences(TAGGED)
    assert len(sentences) == 4
    assert sentences[0].startswith("<gdo char1>Dr. Mary Jones</gdo>")
    for s in sentences:
        assert s.count("<gd") == s.count("</gd")


def test_shuffle_keeps_the_multiset_of_sentences_and_changes_the_order():
    for seed in range(5):
        out = ab.shuffle_sentences(TAGGED, np.random.default_rng(seed))
        assert Counter(ab.split_tagged_sentences(out)) == Counter(ab.split_tagged_sentences(TAGGED))
        assert out != TAGGED
    wrapped = ab.shuffle_sentences(f"<gdi image2>\n{TAGGED}\n</gdi>", np.random.default_rng(0))
    assert wrapped.startswith("<gdi image2>") and wrapped.rstrip().endswith("</gdi>")
    assert ab.shuffle_sentences("Only one.", np.random.default_rng(0)) == "Only one."


def test_shuffle_on_real_segments_keeps_every_sentence():
    for segment in parse_story(FIXTURE.read_text()):
        out = ab.shuffle_sentences(segment.tagged, np.random.default_rng(1))
        assert sorted(ab.split_tagged_sentences(out)) == sorted(ab.split_tagged_sentences(segment.tagged))
        assert sorted(strip_tags(out).split()) == sorted(segment.plain.split())


@pytest.fixture(scope="module")
def frame() -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(240, 576, 3), dtype=np.uint8)
    pixels[60:180, 200:380] = (200, 40, 40)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("name", list(ab.IMAGE_PERTURBATIONS))
def test_image_perturbations_change_pixels_and_keep_the_size(frame, name):
    out = ab.IMAGE_PERTURBATIONS[name](frame)
    assert out.size == frame.size and out.mode == "RGB"
    assert ImageChops.difference(out, frame).getbbox() is not None


def test_image_perturbations_do_what_they_claim(frame):
    gray = np.asarray(frame.convert("L"), dtype=float)
    assert np.asarray(ab.blur(frame).convert("L"), dtype=float).std() < gray.std()  # blur smooths
    assert np.asarray(ab.brightness(frame, 1.6), dtype=float).mean() > np.asarray(frame, dtype=float).mean()
    cropped = np.asarray(ab.crop(frame, keep=0.5))
    assert (cropped[120, 288] == (200, 40, 40)).all()  # the centre is magnified: the red block fills it
    with pytest.raises(ab.PerturbationError):
        ab.crop(frame, keep=1.2)
    with pytest.raises(ab.PerturbationError):
        ab.jpeg(frame, quality=0)


# ---------------------------------------------------------------------- robustness


def sample_pairs() -> pd.DataFrame:
    return pd.DataFrame({"pair_id": ["p1", "p2"], "story_id": ["1", "1"], "frame": [1, 2], "label": [1, 0],
                         "negative_type": ["", "object_swap"], "split": ["test", "test"],
                         "tagged_text": [TAGGED, "<gdo obj1>A cup</gdo> stands on a table. It is red."],
                         "text": [strip_tags(TAGGED), "A cup stands on a table. It is red."]})


def fake_score(pairs: pd.DataFrame, frames) -> pd.DataFrame:
    """Evidence that reacts to tags (object), to the image's brightness (clip) and to any edit of the text (spatial)."""
    brightness = {k: np.asarray(Image.open(io.BytesIO(v)), dtype=float).mean() / 255 for k, v in frames.items()}
    keys = list(zip(pairs["story_id"], pairs["frame"]))
    return pairs.assign(
        object_score=[float("<gdo" in t) for t in pairs["tagged_text"]],
        clip_score=[brightness[k] for k in keys],
        spatial_score=[float(t in set(sample_pairs()["tagged_text"])) for t in pairs["tagged_text"]],
    )


def test_robustness_measures_changes_and_flips_against_the_clean_pairs(frame):
    buffer = io.BytesIO()
    frame.save(buffer, format="PNG")
    frames = {("1", 1): buffer.getvalue(), ("1", 2): buffer.getvalue(), ("9", 9): b"unused"}
    head = SimpleNamespace(threshold=0.5, predict_proba=lambda t: t["object_score"].to_numpy() * 0.8 + 0.1)
    long = ab.robustness(sample_pairs(), frames, fake_score, head, seed=0)
    assert len(long) == 2 * (len(ab.IMAGE_PERTURBATIONS) + len(ab.TEXT_PERTURBATIONS))
    stripped = long[long["perturbation"] == "tags stripped"]
    assert (stripped["object_score_clean"] == 1).all() and (stripped["object_score_perturbed"] == 0).all()
    assert stripped["flipped"].all()  # P goes from 0.9 to 0.1 across the 0.5 threshold
    assert not long.loc[long["kind"] == "image", "flipped"].any()
    bright = long[long["perturbation"].str.startswith("brightness")]
    assert (bright["clip_score_perturbed"] > bright["clip_score_clean"]).all()
    shuffled = long[long["perturbation"].str.startswith("sentence order")]
    assert (shuffled["spatial_score_perturbed"] == 0).all()  # the order changed in both texts
    summary = ab.robustness_summary(long).set_index("perturbation")
    assert summary.loc["tags stripped", "decisions_flipped"] == 1.0
    assert summary.loc["tags stripped", "mean |change| object_score"] == 1.0
    assert summary.loc["tags stripped", "pairs"] == 2


def test_robustness_sample_is_balanced_and_seeded():
    table = pd.DataFrame({"pair_id": [f"p{i}" for i in range(20)], "split": ["test"] * 16 + ["train"] * 4,
                          "label": [i % 2 for i in range(20)]})
    a = ab.robustness_sample(table, 6, seed=1)
    assert len(a) == 6 and a["label"].sum() == 3 and set(a["split"]) == {"test"}
    assert a.equals(ab.robustness_sample(table, 6, seed=1))


# ---------------------------------------------------------------------- the table


def fake_predictions(n_stories: int = 12, heads: tuple[tuple[str, float], ...] = (
        (ab.REFERENCE, 2.0), ("object", 0.5), ("oracle detector", 3.0))) -> tuple[pd.DataFrame, list]:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(n_stories):
        for label, negative in ((1, ""), (0, ("other_story", "object_swap")[s % 2])):
            rows.append({"pair_id": f"{s}-{label}", "story_id": str(s), "frame": 1, "block": f"b{s // 3}",
                         "split": "test", "label": label, "negative_type": negative})
    base = pd.DataFrame(rows)
    preds, variants = [], []
    for name, signal in heads:
        score = 1 / (1 + np.exp(-(signal * (base["label"] - 0.5) + rng.normal(0, 1, len(base)))))
        preds.append(base.assign(model=name, kind="fusion_mlp", features="x", score=score, threshold=0.5))
        family = "detector" if "oracle" in name else "study rules" if name in ab.STUDY_PARTS else "evidence subset"
        variants.append(SimpleNamespace(name=name, family=family, description=name))
    return pd.concat(preds, ignore_index=True), variants


def test_ablation_metrics_and_table_compare_every_variant_with_the_reference():
    predictions, variants = fake_predictions()
    document = ab.ablation_metrics(predictions, variants, n_resamples=50, seed=0)
    assert set(document["models"]) == {ab.REFERENCE, "object", "oracle detector"}
    assert set(document["differences"]) == {"object", "oracle detector"}
    diff = document["differences"]["object"]["roc_auc"]["value"]
    auc = {m: document["models"][m]["overall"]["roc_auc"]["value"] for m in document["models"]}
    assert diff == pytest.approx(auc["object"] - auc[ab.REFERENCE])
    assert document["bootstrap"]["unit"] == "id_block"
    assert set(document["models"]["object"]["paired"]) == {"all", "other_story", "object_swap"}
    table = ab.ablation_table(document)
    assert table.loc[ab.REFERENCE, f"minus {ab.REFERENCE}"] == "(reference)"
    assert {"overall", "other_story", "object_swap", "family"} <= set(table.columns)
    assert table.loc["oracle detector", "family"] == "detector"


def test_paired_gains_are_each_variant_minus_the_reference_per_kind_of_negative(tmp_path):
    from helpers.config import Paths

    predictions, variants = fake_predictions()
    document = ab.ablation_metrics(predictions, variants, n_resamples=50, seed=0)
    assert set(document["paired_gains"]) == {"object", "oracle detector"}
    gain = document["paired_gains"]["object"]
    assert set(gain) == {"all", "other_story", "object_swap"}
    paired = {m: document["models"][m]["paired"] for m in document["models"]}
    for group in gain:  # the point estimate is the difference of the two paired scores
        assert gain[group]["value"] == pytest.approx(paired["object"][group]["value"] - paired[ab.REFERENCE][group]["value"])
    assert gain["all"]["value"] < 0  # the object variant's signal is weaker than the reference's
    table = ab.paired_gain_table(document)
    assert list(table.index) == ["object"] and list(table.columns) == ["all", "other_story", "object_swap"]
    assert table.loc["object", "all"].startswith(f"{gain['all']['value']:.3f} [")

    paths = Paths(tmp_path / "smoke")
    with pytest.raises(FileNotFoundError, match="chapter 07"):
        ab.record_in_metrics(paths, document, ab.EVIDENCES)
    paths.root.mkdir(parents=True)
    paths.metrics_json.write_text(json.dumps({"models": {"fusion": {}}}))
    ab.record_in_metrics(paths, document, ab.EVIDENCES)
    metrics = json.loads(paths.metrics_json.read_text())
    assert metrics["models"] == {"fusion": {}}  # chapter 07's content is kept
    section = metrics["ablations"]
    assert section["reference"] == ab.REFERENCE and section["evidences"] == ab.EVIDENCES
    assert set(section["subsets"]) == {ab.REFERENCE, "object"}  # evidence subsets only, not the oracle
    assert section["subsets"]["object"]["paired_gain"] == json.loads(json.dumps(gain))
    assert section["subsets"][ab.REFERENCE]["paired_gain"] is None


def test_the_oracle_is_not_credited_with_the_negatives_it_replays():
    predictions, variants = fake_predictions()
    variants = [SimpleNamespace(**vars(v), replays=("object_swap",) if v.family == "detector" else ())
                for v in variants]
    document = ab.ablation_metrics(predictions, variants, n_resamples=50, seed=0)
    assert document["replays"] == {"oracle detector": ["object_swap"]}
    assert document["differences_without_replayed"]["object"] == document["differences"]["object"]
    fair = document["differences_without_replayed"]["oracle detector"]["roc_auc"]["value"]
    # the same difference computed by hand on the pairs without object_swap negatives
    kept = predictions[~((predictions["label"] == 0) & (predictions["negative_type"] == "object_swap"))]
    auc = {m: roc_auc_score(g["label"], g["score"]) for m, g in kept.groupby("model")}
    assert fair == pytest.approx(auc["oracle detector"] - auc[ab.REFERENCE])
    assert fair != pytest.approx(document["differences"]["oracle detector"]["roc_auc"]["value"])
    table = ab.ablation_table(document)
    assert table.loc["oracle detector", "object_swap"].endswith(ab.REPLAYS_MARK)
    assert not table.loc["object", "object_swap"].endswith(ab.REPLAYS_MARK)
    column = f"minus {ab.REFERENCE}, replayed negatives left out"
    assert table.loc[ab.REFERENCE, column] == "(reference)"
    assert table.loc["oracle detector", column].startswith(f"{fair:.3f} [")

    sentence = next(s for s in ab.ablation_findings(document) if "chain-of-thought boxes" in s)
    assert "not headroom" in sentence and "`object_swap`" in sentence and "left out" in sentence
    assert f"buy is {fair:.3f} [" in sentence  # the headroom quoted is the one without the replayed negatives


def test_each_part_of_the_study_rules_gets_its_own_difference_and_sentence():
    heads = ((ab.REFERENCE, 2.0), ("study features", 0.5), ("study training", 1.5), ("study rules", 0.3))
    predictions, variants = fake_predictions(heads=heads)
    document = ab.ablation_metrics(predictions, variants, n_resamples=50, seed=0)
    auc = {m: document["models"][m]["overall"]["roc_auc"]["value"] for m in document["models"]}
    sentences = ab.ablation_findings(document)
    for name, opening in (("study features", "Scoring with the original study's rules alone"),
                          ("study training", "Training as the original study did alone"),
                          ("study rules", "Doing both as the original study did")):
        diff = document["differences"][name]["roc_auc"]["value"]
        assert diff == pytest.approx(auc[name] - auc[ab.REFERENCE])  # against the reference, same resamples
        sentence = next(s for s in sentences if s.startswith(opening))
        assert f"by {diff:.3f} [" in sentence
    assert len({document["differences"][name]["roc_auc"]["value"] for name in ab.STUDY_PARTS}) == 3


def test_the_oracle_variant_declares_what_it_replays():
    # chapter 02 writes the list: the positives name their own frame's annotated entities (so other_story and
    # same_story are separated by construction) and object_swap chose an object the annotations lack
    from helpers.objects import ORACLE_REPLAYS

    assert ab.ORACLE_REPLAYS is ORACLE_REPLAYS
    assert set(ab.ORACLE_REPLAYS) == {"other_story", "same_story", "object_swap"} and all(ab.ORACLE_REPLAYS.values())
    table = pd.DataFrame({"pair_id": ["a"], "split": ["train"], "label": [1]})
    variant = ab.detector_variant(table, {"training": {"max_epochs": 2, "patience": 1, "batch_size": 4, "lr": 0.01},
                                          "seed": 0})
    assert variant.replays == ("other_story", "same_story", "object_swap")


# ---------------------------------------------------------------------- seeds and the best subset


def test_every_subset_reads_scores_only_like_the_reference_which_is_chapter_06s_study_head():
    from helpers.fusion import FEATURE_SETS
    from helpers.training import settings_from_profile

    cfg = {"seed": 7, "training": {"lr": 0.01, "batch_size": 8, "max_epochs": 5, "patience": 2, "seeds": 5},
           "openvocab": {"enabled": True}, "questions": {"enabled": True}}
    variants = ab.subset_variants(pd.DataFrame(), cfg)
    scores = set(ab.profile_evidences(cfg).values())
    assert all(set(v.settings.features) <= scores and v.family == ab.SUBSET_FAMILY for v in variants)
    every = variants[-1]
    assert set(every.settings.features) == scores != set(FEATURE_SETS["extended"])  # not fusion_extended
    reference = next(v for v in variants if v.name == ab.REFERENCE)
    assert reference.settings == settings_from_profile(cfg, "study")  # chapter 06's fusion, same settings
    assert "scores only" in every.description
    assert ab.subset_seeds({**cfg, "training": {**cfg["training"], "subset_seeds": 3}}) == (7, 8, 9)
    with pytest.raises(ValueError, match="subset_seeds"):
        ab.subset_seeds({**cfg, "training": {**cfg["training"], "subset_seeds": 6}})


def fake_seed_predictions(shuffle_test: bool = False) -> pd.DataFrame:
    """Validation and test pairs scored by three subsets over three seeds: "b" is best on validation, "c" best on
    test."""
    rng = np.random.default_rng(1)
    rows = []
    for split in ("val", "test"):
        for s in range(10):
            for label, negative in ((1, ""), (0, ("other_story", "object_swap")[s % 2])):
                rows.append({"pair_id": f"{split}{s}-{label}", "story_id": f"{split}{s}", "frame": 1,
                             "block": f"{split}b{s // 2}", "split": split, "label": label, "negative_type": negative})
    base = pd.DataFrame(rows)
    signal = {("a", "val"): 0.5, ("b", "val"): 2.0, ("c", "val"): 1.0,
              ("a", "test"): 0.5, ("b", "test"): 0.5, ("c", "test"): 3.0}
    parts = []
    for name in ("a", "b", "c"):
        for seed in (42, 43, 44):
            strength = base["split"].map(lambda split: signal[(name, split)]).to_numpy()
            score = 1 / (1 + np.exp(-(strength * (base["label"] - 0.5) * 2 + rng.normal(0, 0.7, len(base)))))
            parts.append(base.assign(model=name, seed=seed, score=score, threshold=0.5))
    out = pd.concat(parts, ignore_index=True)
    if shuffle_test:  # every test label and score redrawn: the choice must not move
        test = out["split"] == "test"
        out.loc[test, "score"] = rng.random(int(test.sum()))
    return out


def test_the_best_subset_is_chosen_on_validation_over_seeds_and_the_test_split_cannot_move_it():
    section = ab.ablation_seeds(fake_seed_predictions(), ["a", "b", "c"], 42)
    assert section["best_subset"] == "b" and section["seeds"] == [42, 43, 44] and section["n_subsets"] == 3
    assert "validation" in section["chosen_by"] and "3 seeds" in section["chosen_by"]
    test = section["test"]
    assert max(test, key=lambda m: test[m]["roc_auc"]["mean"]) == "c"  # on test another subset wins
    assert test["b"]["roc_auc"]["std"] is not None and test["b"]["seeds"] == [42, 43, 44]
    shuffled = ab.ablation_seeds(fake_seed_predictions(shuffle_test=True), ["a", "b", "c"], 42)
    assert shuffled["best_subset"] == "b" and shuffled["validation_roc_auc"] == section["validation_roc_auc"]
    assert shuffled["test"]["c"] != test["c"]
    best, means = ab.choose_best_subset(pd.DataFrame({"model": ["a", "b"], "seed": [1, 1], "roc_auc": [0.6, 0.6]}),
                                        ["a", "b"])
    assert best == "a" and list(means.index) == ["a", "b"]  # a tie goes to the subset listed first
    with pytest.raises(ValueError, match="no validation"):
        ab.choose_best_subset(pd.DataFrame({"model": ["a"], "seed": [1], "roc_auc": [0.6]}), ["a", "b"])


def test_the_seed_section_reaches_metrics_json_the_findings_and_the_table(tmp_path):
    from helpers.config import Paths

    predictions, variants = fake_predictions()
    document = ab.ablation_metrics(predictions, variants, n_resamples=50, seed=0)
    by_seed = fake_seed_predictions().replace({"model": {"a": "object", "b": ab.REFERENCE}})
    by_seed = by_seed[by_seed["model"] != "c"]
    document["seeds"] = ab.ablation_seeds(by_seed, ["object", ab.REFERENCE], 42)
    paths = Paths(tmp_path / "smoke")
    paths.root.mkdir(parents=True)
    paths.metrics_json.write_text(json.dumps({"models": {"fusion": {}}}))
    ab.record_in_metrics(paths, document, ab.EVIDENCES)
    section = json.loads(paths.metrics_json.read_text())["ablations"]
    assert section["best_subset"] == ab.REFERENCE and "validation" in section["chosen_by"]
    assert section["subsets"]["object"]["seeds"]["roc_auc"]["by_seed"].keys() == {"42", "43", "44"}
    findings = " ".join(ab.ablation_findings(document))
    assert "chosen on the validation split" in findings and f"`{ab.REFERENCE}`" in findings
    table = ab.subset_seed_table(document)
    assert table.loc[ab.REFERENCE, "chosen"] == "best (validation)" and table.loc["object", "chosen"] == ""
    assert table.loc["object", "test, seed mean"] == pytest.approx(
        document["seeds"]["test"]["object"]["roc_auc"]["mean"])


def test_subset_heads_over_seeds_reuse_the_primary_run(tmp_path):
    from test_training import make_feature_table

    cfg = {"seed": 7, "training": {"lr": 0.01, "batch_size": 32, "max_epochs": 4, "patience": None, "seeds": 2}}
    table = make_feature_table(n_stories=20, frames=3)
    variants = [v for v in ab.subset_variants(table, cfg) if v.name in ("object", ab.REFERENCE)]
    primary = ab.train_variants(variants, tmp_path)
    runs = ab.train_subset_seeds([*variants, ab.detector_variant(table, cfg)], (7, 8), tmp_path)
    assert set(runs) == {"object", ab.REFERENCE}  # evidence subsets only
    assert runs["object"][7].resumed_from_epoch == 4  # the primary run was not trained twice
    np.testing.assert_array_equal(runs["object"][7].head.predict_proba(table), primary["object"].head.predict_proba(table))
    long = ab.subset_seed_predictions(variants, runs)
    assert set(long["seed"]) == {7, 8} and set(long["split"]) == {"val", "test"}
