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

from conftest import STORY_1831
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


def test_the_no_op_perturbations_are_gone():
    names = {p.family for p in ab.TEXT_PERTURBATIONS}
    assert not {"tags stripped", "sentence order shuffled"} & names
    assert {"object removed", "object synonym", "relation paraphrased", "negation", "typos (3 letters)"} <= names
    for p in [*ab.TEXT_PERTURBATIONS, *ab.image_perturbations()]:
        assert p.expected and p.score in ab.ROBUSTNESS_SCORES and p.direction in ab.DIRECTIONS


EDITABLE = ("<gdo char1>Mr. Smith</gdo> puts <gdo obj1>an apple</gdo> on the table next to "
            "<gdo obj2>a television</gdo>. <gdo char2>Anna</gdo> sits on the sofa. The apples roll.")
NOTHING = "<gdo char1>Anna</gdo> <gda char1>smiles</gda> at <gdo char2>him</gdo>. The light is dim."


def _deterministic(perturb, text):
    outs = [perturb(text, np.random.default_rng(s)) for s in range(8)]
    assert outs == [perturb(text, np.random.default_rng(s)) for s in range(8)]  # same rng, same edit
    return outs


def test_remove_object_drops_one_category_from_what_the_text_needs():
    from helpers.objects import needed_categories

    before = set(needed_categories(strip_tags(EDITABLE)))
    removed = set()
    for out in _deterministic(ab.remove_object, EDITABLE):
        after = set(needed_categories(strip_tags(out)))
        assert after < before and len(before - after) == 1
        removed |= before - after
        assert ab._MARKUP.findall(out) == ab._MARKUP.findall(EDITABLE)  # every tag kept
        assert "an thing" not in out.lower() and "thing" in out
    assert len(removed) >= 2  # the rng chooses among the categories
    apples = ab.remove_object(EDITABLE.replace("a television", "an oven"), np.random.default_rng(0))
    assert "an thing" not in apples.lower()
    with pytest.raises(ab.PerturbationError, match="names no COCO object"):
        ab.remove_object(NOTHING, np.random.default_rng(0))


def test_every_mention_of_the_removed_category_goes_with_the_right_number_and_article():
    text = "<gdo obj1>An apple</gdo> lies there. Two apples roll away."
    out = ab.remove_object(text, np.random.default_rng(0))
    assert strip_tags(out) == "A thing lies there. Two things roll away."


def test_a_synonym_keeps_what_the_text_needs_and_changes_the_words():
    from helpers.objects import needed_categories

    for out in _deterministic(ab.replace_synonym, EDITABLE):
        assert out != EDITABLE
        assert needed_categories(strip_tags(out)) == needed_categories(strip_tags(EDITABLE))
        assert ab._MARKUP.findall(out) == ab._MARKUP.findall(EDITABLE)
    assert "an stove" not in strip_tags(ab.replace_synonym("He opens an oven.", np.random.default_rng(0))).lower()
    assert ab.category_names()["couch"] == ("couch", "loveseat", "settee", "sofa")
    with pytest.raises(ab.PerturbationError, match="no object"):
        ab.replace_synonym(NOTHING, np.random.default_rng(0))


def test_every_paraphrase_is_read_as_the_same_relation():
    from helpers.spatial import extract_relations

    for phrase, other in ab.PARAPHRASES.items():
        assert phrase != other
        read = [extract_relations(f"The cup {p} the table.") for p in (phrase, other)]
        assert read[0] and [r.relation for r in read[0]] == [r.relation for r in read[1]], phrase


def test_a_paraphrased_relation_is_read_the_same_and_is_counted_when_absent():
    seen = set()
    for out in _deterministic(ab.paraphrase_relation, EDITABLE):
        assert out != EDITABLE and ab._relation_keys(strip_tags(out)) == ab._relation_keys(strip_tags(EDITABLE))
        seen.add(strip_tags(out))
    assert len(seen) == 2  # "on" and "next to" are both paraphrased by some draw
    with pytest.raises(ab.PerturbationError, match="no relation"):
        ab.paraphrase_relation("<gdo obj1>A cup</gdo> stands there.", np.random.default_rng(0))


def test_negation_denies_one_named_thing_which_the_readers_still_find():
    from helpers.objects import needed_categories

    assert strip_tags(ab.negate("There is a cup.", np.random.default_rng(0))) == "There is no cup."
    assert strip_tags(ab.negate("<gdo obj1>The cup</gdo> is red.", np.random.default_rng(0))) == "No cup is red."
    assert strip_tags(ab.negate("He sees cups.", np.random.default_rng(0))) == "He sees no cups."
    for out in _deterministic(ab.negate, EDITABLE):
        assert " no " in f" {strip_tags(out).lower()} " and len(out.split()) == len(EDITABLE.split())
        assert needed_categories(strip_tags(out)) == needed_categories(strip_tags(EDITABLE))
    with pytest.raises(ab.PerturbationError):
        ab.negate(NOTHING, np.random.default_rng(0))


def test_text_perturbations_apply_to_real_segments():
    applied = Counter()
    segments = [s for f in (FIXTURE, STORY_1831) for s in parse_story(f.read_text())]
    for p in ab.TEXT_PERTURBATIONS:
        for segment in segments:
            try:
                out = p.apply(segment.tagged, np.random.default_rng(0))
            except ab.PerturbationError:
                continue
            applied[p.family] += 1
            assert out != segment.tagged and ab._MARKUP.findall(out) == ab._MARKUP.findall(segment.tagged)
    assert set(applied) == {p.family for p in ab.TEXT_PERTURBATIONS}, applied


@pytest.fixture(scope="module")
def frame() -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(240, 576, 3), dtype=np.uint8)
    pixels[60:180, 200:380] = (200, 40, 40)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("p", ab.image_perturbations(), ids=lambda p: p.name)
def test_image_perturbations_change_pixels_and_keep_the_size(frame, p):
    out = p.apply(frame)
    assert out.size == frame.size and out.mode == "RGB"
    assert ImageChops.difference(out, frame).getbbox() is not None


def test_image_perturbations_are_graded_from_mild_to_strong(frame):
    original = np.asarray(frame, dtype=float)
    for family, *_ in ab.IMAGE_FAMILIES:
        levels = [p for p in ab.image_perturbations() if p.family == family]
        assert len(levels) == 3
        distance = [np.abs(np.asarray(p.apply(frame), dtype=float) - original).mean() for p in levels]
        assert distance == sorted(distance), family  # a stronger setting moves the pixels further
    assert ab.image_levels((1, 2, 4), 1) == (4,) and ab.image_levels((1, 2, 4), 2) == (1, 4)
    assert ab.image_levels((1, 2, 4), "all") == (1, 2, 4) == ab.image_levels((1, 2, 4), 5)
    with pytest.raises(ValueError):
        ab.image_levels((1, 2, 4), 0)


def test_image_perturbations_do_what_they_claim(frame):
    gray = np.asarray(frame.convert("L"), dtype=float)
    assert np.asarray(ab.blur(frame).convert("L"), dtype=float).std() < gray.std()  # blur smooths
    assert np.asarray(ab.brightness(frame, 0.5), dtype=float).mean() < np.asarray(frame, dtype=float).mean()
    cropped = np.asarray(ab.crop(frame, keep=0.5))
    assert (cropped[120, 288] == (200, 40, 40)).all()  # the centre is magnified: the red block fills it
    with pytest.raises(ab.PerturbationError):
        ab.crop(frame, keep=1.2)
    with pytest.raises(ab.PerturbationError):
        ab.jpeg(frame, quality=0)


# ---------------------------------------------------------------------- robustness


def sample_pairs() -> pd.DataFrame:
    texts = [EDITABLE, "<gdo obj1>A cup</gdo> is under a table. It is red.", NOTHING]
    return pd.DataFrame({"pair_id": ["p1", "p2", "p3"], "story_id": ["1", "1", "1"], "frame": [1, 2, 2],
                         "label": [1, 0, 1], "negative_type": ["", "object_swap", ""], "split": ["test"] * 3,
                         "tagged_text": texts, "text": [strip_tags(t) for t in texts]})


def fake_score(pairs: pd.DataFrame, frames) -> pd.DataFrame:
    """Object evidence from the lexicon, spatial from the relation reader, 'clip' from the image's
    brightness and the text's length: each reacts to what it should."""
    from helpers.objects import needed_categories
    from helpers.spatial import extract_relations

    brightness = {k: np.asarray(Image.open(io.BytesIO(v)), dtype=float).mean() / 255 for k, v in frames.items()}
    keys = list(zip(pairs["story_id"], pairs["frame"]))
    return pairs.assign(
        object_score=[len(needed_categories(t)) / 5 for t in pairs["text"]],
        clip_score=[brightness[k] + len(t) / 1e4 for k, t in zip(keys, pairs["text"])],
        spatial_score=[sorted(r.relation for r in extract_relations(t)).__len__() / 3 for t in pairs["text"]],
    )


def test_robustness_counts_what_does_not_apply_and_measures_the_rest(frame):
    buffer = io.BytesIO()
    frame.save(buffer, format="PNG")
    frames = {("1", 1): buffer.getvalue(), ("1", 2): buffer.getvalue(), ("9", 9): b"unused"}
    head = SimpleNamespace(threshold=0.5, predict_proba=lambda t: t["object_score"].to_numpy() * 0.8 + 0.1)
    perturbations = [*ab.image_perturbations(1), *ab.TEXT_PERTURBATIONS]
    long = ab.robustness(sample_pairs(), frames, fake_score, head, seed=0, perturbations=perturbations)
    assert len(long) == 3 * len(perturbations)
    summary = ab.robustness_summary(long).set_index("perturbation")
    # the text naming nothing is counted as not applicable, never as a zero change
    for family in ("object removed", "object synonym", "negation"):
        row = long[(long["perturbation"] == family) & (long["pair_id"] == "p3")].iloc[0]
        assert not row["applied"] and np.isnan(row["object_score_perturbed"]) and not row["flipped"]
        assert summary.loc[family, "not_applicable"] >= 1
    assert summary.loc["relation paraphrased", "pairs"] == 2  # p1 and p2 state a relation
    assert (summary["largest |change|"] > 0).all()  # every perturbation moves something
    assert summary.loc["object removed", "measured"] < 0 and summary.loc["object removed", "verdict"] == "as expected"
    assert summary.loc["object synonym", "verdict"] == "as expected"
    assert summary.loc["relation paraphrased", "verdict"] == "as expected"
    assert summary.loc["negation", "verdict"] == "as expected"  # the fake reads no negation either
    dark = summary[summary["family"].str.startswith("brightness")].iloc[0]
    assert dark["measured"] < 0 and dark["verdict"] == "as expected" and dark["strength"] == 0.3
    findings = ab.robustness_findings(summary.reset_index())
    assert any("*negation*" in f and "as expected" in f for f in findings)
    assert any("not as stated" in f for f in findings)
    again = ab.robustness(sample_pairs(), frames, fake_score, head, seed=0, perturbations=perturbations)
    pd.testing.assert_frame_equal(long, again)  # deterministic given the seed
    images = ab.robustness(sample_pairs(), frames, fake_score, head, seed=0, perturbations=perturbations,
                           image_sample=sample_pairs().iloc[:2])
    assert (images.groupby("kind")["pair_id"].nunique() == pd.Series({"image": 2, "text": 3})).all()
    with pytest.raises(ValueError, match="not in the sample"):
        ab.robustness(sample_pairs().iloc[:1], frames, fake_score, head, seed=0, perturbations=perturbations,
                      image_sample=sample_pairs())


def test_expectation_verdicts():
    assert ab.expectation_verdict("down", -0.1, 0.1) == "as expected"
    assert ab.expectation_verdict("down", 0.0, 0.0) == "did not move"
    assert ab.expectation_verdict("down", 0.1, 0.1) == "went the other way"
    assert ab.expectation_verdict("none", 0.0, 0.0) == "as expected"
    assert ab.expectation_verdict("none", 0.0, 0.2) == "moved"
    assert ab.expectation_verdict("not down", 0.01, 0.1) == "as expected"
    assert ab.expectation_verdict("not down", -0.01, 0.1) == "dropped"


def test_robustness_sample_is_balanced_and_seeded():
    table = pd.DataFrame({"pair_id": [f"p{i}" for i in range(20)], "split": ["test"] * 16 + ["train"] * 4,
                          "label": [i % 2 for i in range(20)], "story_id": "1", "frame": range(20)})
    a = ab.robustness_sample(table, 6, seed=1)
    assert len(a) == 6 and a["label"].sum() == 3 and set(a["split"]) == {"test"}
    assert a.equals(ab.robustness_sample(table, 6, seed=1))
    assert "asks for 6 pairs" in ab.sample_note(table, a, 6) and "8 aligned" in ab.sample_note(table, a, 6)
    short = table[(table["label"] == 0) | (table.index < 4)]  # 2 aligned pairs on the test split, 8 misaligned
    filled = ab.robustness_sample(short, 10, seed=1)
    assert len(filled) == 10 and filled["label"].sum() == 2  # misaligned pairs fill what the aligned lack


def test_the_profiles_size_the_robustness_sample():
    from helpers import config

    assert all(config.load_profile(p)["robustness"]["n_pairs"] >= 200 for p in ("quick", "full"))
    assert config.load_profile("quick")["robustness"]["image_levels"] == "all"
    assert config.load_profile("full")["robustness"]["image_pairs"] is None
    for bad in ({"n_pairs": 1}, {"n_pairs": "many"}, {"image_levels": 0}, {"image_levels": "some"},
                {"image_pairs": 1}, {"image_pairs": True}):
        with pytest.raises(ValueError, match="robustness"):
            config.load_profile("smoke", {"robustness": bad})


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
    assert table.loc[ab.REFERENCE, "chosen"] == "yes: best on validation" and table.loc["object", "chosen"] == "no"
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
