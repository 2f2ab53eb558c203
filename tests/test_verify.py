"""The verifier: bad input gets one line and a non-zero exit; good input gets the verdict and its evidence.

The end-to-end tests run the smoke profile's models (Faster R-CNN with random weights,
saved and reloaded like a user's file) with a tiny random CLIP in place of ViT-B/32, and
a head trained in seconds on a synthetic feature table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import config
from helpers.detection import Detection
from helpers.training import DEFAULT_RUN, TrainSettings, load_head, train_fusion
from helpers.verify import VerifyError, load_verifier, main, read_image, read_text, verify

ROOT = Path(__file__).resolve().parent.parent
STORY = "<gdi image1><gdo char1>James</gdo> waits.</gdi> <gdi image2>A cup rests on the table.</gdi>"


def run_cli(*args: str, outputs: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "STORY_ALIGN_OUTPUTS": str(outputs)}
    return subprocess.run([sys.executable, "-m", "helpers.verify", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def frame_image(seed: int = 0) -> Image.Image:
    """A random RGB frame of the dataset's shape (575 x 240)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (240, 575, 3), dtype=np.uint8))


@pytest.fixture()
def frame_file(tmp_path) -> Path:
    path = tmp_path / "frame.png"
    frame_image().save(path)
    return path


# ------------------------------------------------------------------------ bad input, CLI


def test_missing_image(tmp_path):
    assert_one_line_error(run_cli(str(tmp_path / "nope.jpg"), "a man", outputs=tmp_path), "image not found", "nope.jpg")


def test_unreadable_image(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert_one_line_error(run_cli(str(tmp_path / "broken.jpg"), "a man", outputs=tmp_path), "cannot read image")


@pytest.mark.parametrize("text", ["", "   ", "<gdi image1> </gdi>"])
def test_empty_text(frame_file, tmp_path, text):
    assert_one_line_error(run_cli(str(frame_file), text, outputs=tmp_path), "text is empty")


def test_empty_text_from_stdin(frame_file, tmp_path):
    assert_one_line_error(run_cli(str(frame_file), "-", outputs=tmp_path, stdin="\n"), "text is empty")


def test_unknown_profile(frame_file, tmp_path):
    assert_one_line_error(run_cli("--profile", "huge", str(frame_file), "a man", outputs=tmp_path), "unknown profile 'huge'")


def test_profile_without_trained_checkpoint(frame_file, tmp_path):
    result = run_cli("--profile", "smoke", str(frame_file), "A man sits on a chair.", outputs=tmp_path)
    assert_one_line_error(result, "'smoke' has no usable trained checkpoint", str(tmp_path / "smoke"), "PROFILE=smoke")


# ------------------------------------------------------------------------- reading text


def test_plain_text_is_one_segment_without_tags():
    assert read_text("  A man\n sits on a  chair. ") == "A man sits on a chair."


def test_tagged_text_with_and_without_its_frame_wrapper():
    inline = read_text("<gdo char1>James</gdo> <gda char1>holds</gda> an umbrella.")
    assert inline.plain == "James holds an umbrella." and [m.ids for m in inline.mentions] == [("char1",)]
    assert read_text(STORY, frame=2).plain == "A cup rests on the table."
    with pytest.raises(VerifyError, match=r"2 frame segments \[1, 2\]: choose one with --frame"):
        read_text(STORY)
    with pytest.raises(VerifyError, match="no segment for frame 3"):
        read_text(STORY, frame=3)
    with pytest.raises(VerifyError, match="text of frame 2 is empty"):
        read_text("<gdi image1>James waits.</gdi><gdi image2> <gdo char1></gdo> </gdi>", frame=2)


def test_images_are_read_from_a_path_or_taken_as_they_are(frame_file):
    from_path = read_image(frame_file)
    assert from_path.mode == "RGB" and from_path.size == (575, 240)
    given = read_image(frame_image().convert("RGBA"))
    assert given.mode == "RGB" and np.array_equal(np.asarray(given), np.asarray(from_path))


# --------------------------------------------------------------------- the real pipeline


@pytest.fixture(scope="module")
def verifier(tmp_path_factory):
    """The smoke profile's detector, a tiny random CLIP, and a head trained on synthetic features."""
    from test_training import make_feature_table
    from transformers import CLIPConfig

    from helpers.smoke import clip as hc

    outputs = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "OUTPUTS_DIR", outputs)
        train_fusion(make_feature_table(), TrainSettings(max_epochs=3, patience=None),
                     config.output_paths("smoke").checkpoints / DEFAULT_RUN, progress=False)
        tokenizer = hc.offline_tokenizer()
        size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        tiny = CLIPConfig(text_config=dict(size, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
                          vision_config=dict(size, image_size=32, patch_size=8), projection_dim=16)
        folder = hc.build_random_clip(outputs / "tiny-clip", seed=0, config=tiny, tokenizer=tokenizer)
        yield load_verifier("smoke", overrides={"clip": {"weights": str(folder)}})


def test_verify_runs_the_pipeline_on_a_synthetic_frame(verifier, frame_file):
    result = verify(frame_file, "A man sits on a chair. He holds a cup.", verifier=verifier)
    json.dumps(result, allow_nan=False)
    head = load_head(verifier.checkpoint)
    assert result["threshold"] == head.threshold and result["profile"] == "smoke"
    assert 0 <= result["probability"] <= 1 and result["aligned"] == (result["probability"] >= head.threshold)
    # the smoke profile switches on both evidences beyond the study
    assert set(result["scores"]) == {"object_score", "clip_score", "spatial_score", "openvocab_score", "question_score"}
    assert all(0 <= v <= 1 for v in result["scores"].values())
    import pandas as pd

    assert result["probability"] == pytest.approx(
        head.predict_proba(pd.DataFrame([{**result["inputs"], **result["states"]}]))[0])
    # every evidence says its state; a score is a head input only when it was checked
    assert set(result["states"]) == {"object_state", "spatial_state", "openvocab_state", "question_state"}
    assert result["explanation"]["objects"]["state"] == result["states"]["object_state"] == "checked"
    for name in ("relations", "clip", "openvocab", "questions"):
        assert result["explanation"][name]["state"] in ("checked", "nothing to check", "not computed")
    assert (result["inputs"]["spatial_score"] is None) == (result["states"]["spatial_state"] != "checked")
    objects = result["explanation"]["objects"]
    assert {"person", "chair", "cup"} <= set(objects["needed"])
    assert sorted(objects["missing"] + [f["category"] for f in objects["found"]]) == objects["needed"]
    assert [s["text"] for s in result["explanation"]["clip"]["sentences"]] == ["A man sits on a chair.", "He holds a cup."]
    assert result["scores"]["clip_score"] == pytest.approx(max(s["score"] for s in result["explanation"]["clip"]["sentences"]))

    # OWL-ViT: every phrase the plain text names is either found (with a box) or missing
    openvocab = result["explanation"]["openvocab"]
    assert openvocab["informative"] and {"person", "chair", "cup"} <= set(openvocab["phrases"])
    assert sorted([f["phrase"] for f in openvocab["found"]] + [m["phrase"] for m in openvocab["missing"]]) == sorted(
        openvocab["phrases"])
    assert all(len(f["box"]) == 4 for f in openvocab["found"])
    # BLIP-VQA: the questions of the plain text, each with its P(yes); the score is their DSG mean
    questions = result["explanation"]["questions"]
    assert questions["informative"] and questions["score"] == result["scores"]["question_score"]
    asked = {q["question"]: q for q in questions["questions"]}
    assert "Is there a cup?" in asked and all(0 < q["p_yes"] < 1 for q in asked.values())
    counted = [q["p_yes"] if q["counted"] else 0.0 for q in asked.values()]
    assert questions["score"] == pytest.approx(sum(counted) / len(counted), abs=1e-4)  # the JSON rounds P(yes)


def test_verify_explains_found_missing_and_relations_with_boxes(verifier, monkeypatch):
    cup, table = (200.0, 100.0, 240.0, 141.0), (150.0, 140.0, 420.0, 230.0)
    boxes = [Detection("cup", 0.9, cup), Detection("dining table", 0.8, table), Detection("dog", 0.2, (0, 0, 50, 50))]
    monkeypatch.setattr("helpers.detection._run_model",  # the detector's forward pass, inside score_pairs
                        lambda detector, images: ([boxes] * len(images), [0.0] * len(images)))
    result = verify(frame_image(), STORY, frame=2, verifier=verifier)
    objects = result["explanation"]["objects"]
    assert objects["needed"] == ["cup", "dining table"] and objects["missing"] == []
    assert [(f["category"], f["box"]) for f in objects["found"]] == [("cup", list(cup)), ("dining table", list(table))]
    assert result["scores"]["object_score"] == pytest.approx((0.9 + 0.8) / 2)
    relations = result["explanation"]["relations"]
    assert relations["source"] == "relations" and relations["failed"] == []
    [held] = relations["held"]
    assert (held["subject"], held["relation"], held["object"]) == ("cup", "on", "table")
    assert held["subject_box"] == list(cup) and held["object_box"] == list(table)
    assert result["scores"]["spatial_score"] == 1.0

    # Below the profile's score threshold a detection does not count: the dog is missing.
    dog = verify(frame_image(), "A dog sleeps.", verifier=verifier)["explanation"]["objects"]
    assert dog["needed"] == ["dog"] and dog["missing"] == ["dog"] and dog["found"] == []


def test_cli_prints_the_verdict_as_json(frame_file, monkeypatch, capsys):
    seen = {}

    def fake_verify(image, text, profile, frame=None, run=None):
        seen.update(image=image, text=text, profile=profile, frame=frame, run=run)
        return {"probability": 0.75, "aligned": True}

    monkeypatch.setattr("helpers.verify.verify", fake_verify)
    for variable in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):  # main() sets them: undone after the test
        monkeypatch.setenv(variable, "1")
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("A cup rests on the table."))
    assert main(["--profile", "smoke", "--frame", "2", str(frame_file), "-"]) == 0
    assert json.loads(capsys.readouterr().out) == {"probability": 0.75, "aligned": True}
    assert seen == {"image": str(frame_file), "text": "A cup rests on the table.", "profile": "smoke", "frame": 2,
                    "run": None}
    assert main(["--profile", "smoke", "--run", "fusion_extended", str(frame_file), "text"]) == 0
    assert seen["run"] == "fusion_extended"


def test_a_profile_without_the_new_evidence_neither_computes_nor_explains_it(verifier, frame_file):
    import dataclasses

    from helpers.fusion import without_new_evidence

    study_only = dataclasses.replace(verifier, cfg=without_new_evidence(verifier.cfg), owlvit=None, vqa=None)
    result = verify(frame_file, "A man sits on a chair.", verifier=study_only)
    assert set(result["scores"]) == {"object_score", "clip_score", "spatial_score"}
    assert {"openvocab", "questions"}.isdisjoint(result["explanation"])
    # a head that reads the question score cannot decide where the profile does not compute it
    reads_questions = dataclasses.replace(verifier.head, features=(*verifier.head.features, "question_score"))
    with pytest.raises(VerifyError, match=r"reads \['question_score'\].*switch that evidence on"):
        verify(frame_file, "A man sits on a chair.", verifier=dataclasses.replace(study_only, head=reads_questions))


def test_a_run_without_a_checkpoint_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUTS_DIR", tmp_path)
    with pytest.raises(VerifyError, match="no usable trained checkpoint.*fusion_extended"):
        load_verifier("smoke", run="fusion_extended")


def test_a_tagged_segment_and_its_plain_text_get_the_same_scores(verifier, monkeypatch):
    """One text path: the head sees what a user's plain text gives, tags or not."""
    from helpers.tags import parse_story

    person, couch = (100.0, 60.0, 180.0, 200.0), (60.0, 150.0, 400.0, 235.0)
    boxes = [Detection("person", 0.9, person), Detection("couch", 0.8, couch)]
    monkeypatch.setattr("helpers.detection._run_model",  # the detector's forward pass, inside score_pairs
                        lambda detector, images: ([boxes] * len(images), [0.0] * len(images)))
    tagged = ("<gdi image1>\n<gdo char1>James</gdo> <gda char1>sits</gda> on <gdo obj1>the couch</gdo>. "
              "<gdo char1>He</gdo> looks at <gdo obj2>a cup</gdo>.\n</gdi>")
    plain = parse_story(tagged)[0].plain
    from_tags, from_plain = verify(frame_image(), tagged, verifier=verifier), verify(frame_image(), plain,
                                                                                     verifier=verifier)
    study = ("object_score", "clip_score", "spatial_score")
    assert [from_tags["scores"][k] for k in study] == [from_plain["scores"][k] for k in study]
    assert from_tags["inputs"] == from_plain["inputs"]  # the default head reads the study's evidence only
    assert from_tags["probability"] == from_plain["probability"]
    assert from_tags["explanation"]["objects"] == from_plain["explanation"]["objects"]
    assert from_plain["explanation"]["objects"]["missing"] == ["cup"]  # read from the words, not the tags
