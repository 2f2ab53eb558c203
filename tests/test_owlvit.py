"""helpers.owlvit (loading, cached phrase detection) and chapter 02's open-vocabulary evidence.

The model is the smoke profile's small OWL-ViT (random weights, 128 px, 16 boxes), saved and
loaded back through the local-folder path real weights take; B/32's configuration is checked
on the meta device. Where a test needs to know the boxes, the box head's last layer is zeroed:
each box is then its patch's grid cell (OWL-ViT's box bias), so the answer in pixels is known.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import helpers.weights
from helpers.weights import load_model, weights_available
from helpers import objects as ho
from helpers import owlvit as hv
from helpers.config import MissingAssetError
from helpers.detection import Detection, dumps_detections
from helpers.io import read_cache, read_random_marker
from helpers.smoke import owlvit as smoke_owl
from helpers.tags import ParsedStory, parse_chain_of_thought, parse_segment


def png(seed: int, size=(575, 240)) -> bytes:
    """A random RGB frame (width, height), PNG-encoded."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return smoke_owl.build_random_owlvit(tmp_path_factory.mktemp("models") / "owl", seed=0)


@pytest.fixture(scope="module")
def owl(folder):
    return load_model(hv.OWLVIT, str(folder), models_dir=folder.parent, device="cpu")


@pytest.fixture()
def grid_owl(folder):
    """The small OWL-ViT with its box head's last layer zeroed: box k is grid cell k's box."""
    loaded = load_model(hv.OWLVIT, str(folder), models_dir=folder.parent, device="cpu")
    with torch.no_grad():
        loaded.model.box_head.dense2.weight.zero_()
        loaded.model.box_head.dense2.bias.zero_()
    return loaded


class Passes:
    """Counts the forward passes of a detector's image encoder and the images in each, and
    those of its text encoder and the phrases in each."""

    def __init__(self, model):
        self.images: list[int] = []
        self.texts: list[int] = []
        self.handle = model.owlvit.vision_model.register_forward_hook(lambda module, args, kwargs, out: self.images.append(
            int(kwargs["pixel_values"].shape[0])), with_kwargs=True)
        self.text_handle = model.owlvit.text_model.register_forward_hook(lambda module, args, kwargs, out: self.texts.append(
            int(kwargs["input_ids"].shape[0])), with_kwargs=True)

    def remove(self) -> None:
        self.handle.remove()
        self.text_handle.remove()


# ----------------------------------------------------------------------------- weights


def test_random_spec_saves_a_small_model_then_loads_it_from_its_folder(tmp_path):
    first = load_model(hv.OWLVIT, "random", models_dir=tmp_path, seed=3, device="cpu")
    folder = tmp_path / smoke_owl.RANDOM_FOLDER
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= {
        p.name for p in folder.iterdir()}
    assert read_random_marker(folder)["seed"] == 3
    config = first.model.config
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (smoke_owl.SMALL_IMAGE, 32)
    assert config.vision_config.hidden_size == config.text_config.hidden_size == 64
    assert config.text_config.max_position_embeddings == first.processor.tokenizer.model_max_length == 16
    assert first.processor.image_processor.size.height == smoke_owl.SMALL_IMAGE
    assert not first.processor.image_processor.do_center_crop
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = load_model(hv.OWLVIT, "random", models_dir=tmp_path, seed=3, device="cpu")
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp, "same seed: the saved folder is reused"
    assert again.identity == first.identity and again.source == "random"
    assert load_model(hv.OWLVIT, "random", models_dir=tmp_path, seed=4, device="cpu").identity != first.identity
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*")), "no staging folder left behind"


def test_full_size_config_is_owlvit_b32_at_768_px():
    from transformers import OwlViTForObjectDetection
    from helpers.smoke.clip import offline_tokenizer

    config = smoke_owl.owlvit_config(offline_tokenizer(), full_size=True)
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size) == (
        512, 12, 8, 2048)
    assert (text.vocab_size, text.max_position_embeddings) == (49408, 16)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (768, 12, 12)
    assert (vision.image_size, vision.patch_size, config.projection_dim) == (768, 32, 512)
    with torch.device("meta"):
        model = OwlViTForObjectDetection(config)
    assert model.box_bias.shape == (24 * 24, 4)  # one box per 32 px patch of a 768 px input


def test_saved_folder_loads_by_path_with_the_same_identity(folder, owl):
    again = load_model(hv.OWLVIT, str(folder), models_dir=folder.parent, device="cpu")
    assert again.identity == owl.identity and again.source == str(folder)
    assert weights_available(hv.OWLVIT, str(folder)) and weights_available(hv.OWLVIT, "random")


def test_offline_uncached_hub_id_raises_missing_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(helpers.weights, "hub_reachable", lambda *a, **k: False)
    assert not weights_available(hv.OWLVIT, hv.MODEL_ID)
    with pytest.raises(MissingAssetError) as err:
        load_model(hv.OWLVIT, hv.MODEL_ID, models_dir=tmp_path)
    assert hv.MODEL_ID in str(err.value) and "HF_HOME" in str(err.value)


def test_folder_without_config_raises_file_not_found(tmp_path):
    assert not weights_available(hv.OWLVIT, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(hv.OWLVIT, str(tmp_path), models_dir=tmp_path)


# ----------------------------------------------------------------------------- detection


def test_one_row_per_frame_and_phrase_each_frame_encoded_once(owl, tmp_path):
    frames = {("s1", 1): png(1), ("s1", 2): png(2, (300, 400)), ("s2", 1): png(3)}
    queries = {("s1", 1): ["a man", "blue  blanket", "a man", ""], ("s1", 2): ["wall"],
               ("s2", 1): ["door", "lamp", "cup"]}
    passes = Passes(owl.model)
    table, n = hv.detect_phrases(owl, frames, queries, tmp_path / "cache", batch_size=2)
    passes.remove()
    assert list(table.columns) == hv.DETECTION_COLUMNS
    assert list(zip(table["story_id"], table["frame"], table["phrase"])) == [
        ("s1", 1, "a man"), ("s1", 1, "blue blanket"), ("s1", 2, "wall"),
        ("s2", 1, "door"), ("s2", 1, "lamp"), ("s2", 1, "cup")]
    assert n == 3 and sorted(passes.images) == [1, 2], "three frames, two at a time, each once"
    assert passes.texts == [6], "each distinct phrase through the text encoder once, whatever its frames"
    assert (table["status"] == "ok").all() and table["score"].between(0, 1).all()
    for (story_id, frame), box in zip(zip(table["story_id"], table["frame"]), table["box"]):
        width, height = (300, 400) if (story_id, frame) == ("s1", 2) else (575, 240)
        assert isinstance(box, list) and len(box) == 4 and all(isinstance(v, float) for v in box)
        assert 0 <= box[0] <= box[2] <= width and 0 <= box[1] <= box[3] <= height


def test_rerun_computes_nothing_and_a_new_phrase_runs_its_frame_for_it_alone(owl, tmp_path):
    frames = {("s1", 1): png(1), ("s1", 2): png(2)}
    queries = {("s1", 1): ["a man", "a dog"], ("s1", 2): ["wall"]}
    first, n = hv.detect_phrases(owl, frames, queries, tmp_path / "cache", batch_size=4)
    assert n == 2 and len(read_cache(tmp_path / "cache")) == 3
    again, n = hv.detect_phrases(owl, frames, queries, tmp_path / "cache", batch_size=4)
    assert n == 0
    pd.testing.assert_frame_equal(again, first)
    queries[("s1", 1)] = ["a man", "a dog", "a red door"]
    passes = Passes(owl.model)
    third, n = hv.detect_phrases(owl, frames, queries, tmp_path / "cache", batch_size=4)
    passes.remove()
    assert n == 1 and passes.images == [1] and passes.texts == [1]
    assert len(read_cache(tmp_path / "cache")) == 4, "only the new phrase was computed"
    pd.testing.assert_frame_equal(third.drop(index=2).reset_index(drop=True), first)
    assert third.loc[2, "phrase"] == "a red door"


def test_a_frame_split_across_key_batches_still_runs_once(owl, tmp_path):
    frames = {(f"s{i}", 1): png(i) for i in range(3)}
    queries = {("s0", 1): ["a", "b", "c", "d", "e"], ("s1", 1): ["f"], ("s2", 1): ["g", "h", "i"]}
    passes = Passes(owl.model)
    table, n = hv.detect_phrases(owl, frames, queries, tmp_path / "cache", batch_size=1)
    passes.remove()
    assert n == 3 and passes.images == [1, 1, 1] and len(table) == 9


def test_corrupt_frame_is_skipped_counted_and_cached(owl, tmp_path):
    frames = {("s1", 1): png(1), ("s1", 2): b"\xff\xd8 not a jpeg"}
    queries = {("s1", 1): ["a man"], ("s1", 2): ["a man", "a dog"]}
    table, n = hv.detect_phrases(owl, frames, queries, tmp_path / "cache", batch_size=4)
    assert n == 1
    bad = table[table["story_id"].eq("s1") & table["frame"].eq(2)]
    assert list(bad["status"]) == ["corrupt", "corrupt"] and bad["score"].isna().all() and bad["box"].isna().all()
    assert int((table["status"] == "corrupt").sum()) == 2
    again, n = hv.detect_phrases(owl, frames, queries, tmp_path / "cache", batch_size=4)
    assert n == 0 and list(again["status"]) == ["ok", "corrupt", "corrupt"]
    with pytest.raises(KeyError, match="frames lacks"):
        hv.detect_phrases(owl, frames, {("s9", 1): ["x"]}, tmp_path / "cache", batch_size=4)


def test_best_box_is_post_process_object_detections_best_box(owl, tmp_path):
    """Score and box of each phrase equal those of transformers' own post-processing with the
    frame's (height, width) as target size, restricted to that phrase, clipped to the frame."""
    frame = png(5, (575, 240))
    phrases = ["a man", "a blue blanket", "wall"]
    table, _ = hv.detect_phrases(owl, {("s", 1): frame}, {("s", 1): phrases}, tmp_path / "cache", batch_size=1)
    image = Image.open(io.BytesIO(frame)).convert("RGB")
    inputs = owl.processor(text=[phrases], images=[image], return_tensors="pt")
    with torch.inference_mode():
        out = owl.model(**inputs)
    for j, phrase in enumerate(phrases):
        out_j = type(out)(logits=out.logits[..., j : j + 1], pred_boxes=out.pred_boxes)
        result = owl.processor.image_processor.post_process_object_detection(out_j, threshold=0.0,
                                                                             target_sizes=[(240, 575)])[0]
        best = int(result["scores"].argmax())
        expected = torch.minimum(result["boxes"][best].clamp(min=0), torch.tensor([575.0, 240.0, 575.0, 240.0]))
        row = table[table["phrase"] == phrase].iloc[0]
        assert row["score"] == pytest.approx(float(result["scores"][best]), abs=1e-5)
        assert row["box"] == pytest.approx(expected.tolist(), abs=1e-3)


def test_boxes_map_to_the_frame_by_its_width_and_height(grid_owl, tmp_path):
    """With the box head zeroed every box is a grid cell of the square input: centre ((j+1)/4,
    (i+1)/4), size 1/4; in a 575 x 240 frame that is 143.75 x 60 pixels, clipped to the frame."""
    table, _ = hv.detect_phrases(grid_owl, {("s", 1): png(6, (575, 240)), ("s", 2): png(7, (200, 500))},
                                 {("s", 1): ["a man", "a cup", "wall"], ("s", 2): ["a dog"]}, tmp_path / "c",
                                 batch_size=2)

    def cells(width, height):
        return [[max(0.0, ((j + 1) / 4 - 1 / 8) * width), max(0.0, ((i + 1) / 4 - 1 / 8) * height),
                 min(width, ((j + 1) / 4 + 1 / 8) * width), min(height, ((i + 1) / 4 + 1 / 8) * height)]
                for i in range(4) for j in range(4)]

    for frame, box in zip(table["frame"], table["box"]):
        candidates = cells(575, 240) if frame == 1 else cells(200, 500)
        assert min(max(abs(a - b) for a, b in zip(box, cell)) for cell in candidates) < 0.5, box


# ----------------------------------------------------------------------------- chapter 02


def test_entity_phrases_from_tags():
    segment = parse_segment(
        "<gdo char1>James</gdo> <gda char1>drops</gda> <gdo obj5>his blue blanket</gdo> by <gdo bg2>the elevator "
        "doors</gdo>; <gdo char2>a man in a grey coat</gdo> takes <gdo obj1>the man's cell phone</gdo> from "
        "<gdo char1 char3>them</gdo>. <gdo char4>R2</gdo> beeps at <gdo char5>the dog</gdo>.", 1)
    descriptions = {"char1": "Man with a neutral look", "char4": "A golden humanoid robot with a sophisticated design."}
    found = ho.entity_phrases(segment, descriptions)
    assert found == [ho.Phrase("person", "char"), ho.Phrase("blue blanket", "obj"),
                     ho.Phrase("elevator doors", "bg"), ho.Phrase("man in a grey coat", "char"),
                     ho.Phrase("cell phone", "obj"), ho.Phrase("golden humanoid robot", "char"),
                     ho.Phrase("dog", "char")]
    assert [p.text for p in ho.entity_phrases(segment)] == [
        "person", "blue blanket", "elevator doors", "man in a grey coat", "cell phone", "dog"], "no description: a person"


def test_entity_phrases_from_plain_text():
    text = "He drops his blue blanket by the elevator doors while a man watches the TV and a hot dog."
    assert [p.text for p in ho.entity_phrases(text)] == ["person", "blanket", "elevator", "doors", "man", "tv",
                                                         "hot dog"]
    assert all(p.kind is None for p in ho.entity_phrases(text))
    assert ho.entity_phrases("Nobody. Silence settles.") == []


def test_openvocab_evidence_numbers():
    found = {"blue blanket": (0.8, [1.234, 2, 3, 4]), "wall": (0.05, [0, 0, 1, 1]), "door": (0.1, [5, 5, 6, 6])}
    evidence = ho.openvocab_evidence(["blue blanket", "wall", "door", "lamp", "wall"], found, 0.1)
    assert evidence["openvocab_score"] == pytest.approx((0.8 + 0.1) / 4)
    assert evidence["openvocab_informative"] is True and evidence["openvocab_state"] == "checked"
    assert evidence["openvocab_phrases"] == ["blue blanket", "wall", "door", "lamp"]
    assert evidence["openvocab_found"] == [{"phrase": "blue blanket", "score": 0.8, "box": [1.23, 2.0, 3.0, 4.0]},
                                           {"phrase": "door", "score": 0.1, "box": [5.0, 5.0, 6.0, 6.0]}]
    assert evidence["openvocab_missing"] == [{"phrase": "wall", "score": 0.05}, {"phrase": "lamp", "score": None}]
    empty = ho.openvocab_evidence([], found, 0.1)
    assert (empty["openvocab_score"], empty["openvocab_informative"], empty["openvocab_state"]) == (
        0.0, False, "nothing to check")
    assert ho.openvocab_evidence(["wall"], found, 0.01)["openvocab_score"] == pytest.approx(0.05)


COT = """## Image 1

### Characters
| Character ID | Name | Description | Emotions | Actions | Narrative Function | Bounding Box |
|---|---|---|---|---|---|---|
| char1 | R2 | A golden humanoid robot. | Calm | Beeps | Helper | 10,10,110,210 |
| char2 | Ana | Woman in a red coat | Calm | Waits | Lead | 300,20,400,230 |

### Objects
| Object ID | Description | Function | Interaction | Narrative Function | Bounding Box |
|---|---|---|---|---|---|
| obj1 | Blue blanket | Bedding | None | Detail | 120,150,280,230 |
| obj2 | Cup | Drink | None | Detail | 420,100,460,140 |
| bg1 | Wall | Structure | None | Setting | 0,0,575,120 |
"""


def test_openvocab_features_columns_json_and_the_reading_of_each_pair(owl, tmp_path):
    story = ParsedStory("s1", 2, (), parse_chain_of_thought(COT))
    tagged = "<gdo char1>R2</gdo> rests on <gdo obj1>a blue blanket</gdo> near <gdo char2>Ana</gdo>."
    plain = "R2 rests on a blanket near a cup."
    pairs = pd.DataFrame([
        {"pair_id": "tags", "story_id": "s1", "frame": 1, "text": plain, "tagged_text": tagged,
         "source_story_id": "s1", "source_frame": 1},
        {"pair_id": "plain", "story_id": "s1", "frame": 1, "text": plain, "tagged_text": plain,
         "source_story_id": "s1", "source_frame": 1},
        {"pair_id": "nan", "story_id": "s1", "frame": 2, "text": plain, "tagged_text": math.nan,
         "source_story_id": "s1", "source_frame": 1},
        {"pair_id": "bad", "story_id": "s2", "frame": 1, "text": plain, "tagged_text": tagged,
         "source_story_id": "s1", "source_frame": 1},
        {"pair_id": "none", "story_id": "s1", "frame": 2, "text": "Silence.", "tagged_text": "Silence.",
         "source_story_id": "s1", "source_frame": 1},
    ])
    frames = {("s1", 1): png(1), ("s1", 2): png(2), ("s2", 1): b"broken"}
    features = ho.openvocab_features(owl, pairs, frames, threshold=0.0, cache_path=tmp_path / "c",
                                     batch_size=4, extra_queries={("s1", 1): ["wall"]})
    assert list(features.columns) == ["pair_id", *ho.OPENVOCAB_COLUMNS]
    assert features.attrs["frames_encoded"] == 2
    rows = features.set_index("pair_id")
    phrases = {p: json.loads(rows.loc[p, "openvocab_phrases"]) for p in rows.index}
    # R2's chain-of-thought row says "A golden humanoid robot"; the features never read it (it
    # annotates the frame judged): a name is a person, and Ana's "person" is asked once.
    assert phrases == {"tags": ["person", "blue blanket"], "plain": ["blanket", "cup"],
                       "nan": ["blanket", "cup"], "bad": ["person", "blue blanket"], "none": []}
    assert not rows.loc["bad", "openvocab_informative"] and rows.loc["bad", "openvocab_score"] == 0.0
    assert rows.loc["bad", "openvocab_state"] == "not computed"  # its frame does not decode
    assert rows.loc["none", "openvocab_state"] == "nothing to check"
    assert rows.loc["tags", "openvocab_state"] == "checked"
    assert json.loads(rows.loc["bad", "openvocab_found"]) == []
    assert not rows.loc["none", "openvocab_informative"]
    found = json.loads(rows.loc["tags", "openvocab_found"])
    assert [f["phrase"] for f in found] == phrases["tags"], "threshold 0: every phrase is found"
    assert rows.loc["tags", "openvocab_score"] == pytest.approx(sum(f["score"] for f in found) / 2, abs=1e-4)
    # the extra query ran in the same pass: asking for it now computes nothing
    _, n = hv.detect_phrases(owl, frames, {("s1", 1): ["wall"]}, tmp_path / "c", batch_size=4)
    assert n == 0
    described = ho.entity_phrases(parse_segment(tagged, 1), ho.character_descriptions(story.cot, 1))
    assert described[0].text == "golden humanoid robot", "what the features would ask if they read the annotation"


def test_entity_recall_on_a_hand_made_frame():
    story = ParsedStory("s1", 2, (), parse_chain_of_thought(COT + COT.replace("## Image 1", "## Image 2")))
    entities = ho.cot_entities([story])
    assert list(entities["phrase"][:5]) == ["A golden humanoid robot", "Woman in a red coat", "Blue blanket", "Cup",
                                            "Wall"]
    assert list(entities["kind"][:5]) == ["char", "char", "obj", "obj", "bg"]
    assert [c if isinstance(c, str) else None for c in entities["category"][:5]] == [None, "person", None, "cup", None]
    assert len(ho.cot_entities([story], frames={("s1", 1)})) == 5
    owl_rows = [("A golden humanoid robot", 0.5, [12, 10, 110, 200]),   # found
                ("Woman in a red coat", 0.05, [300, 20, 400, 230]),     # right box, score too low
                ("Blue blanket", 0.9, [0, 0, 50, 50]),                   # wrong box
                ("Cup", 0.3, [420, 100, 460, 140]),                      # found
                ("Wall", 0.2, [0, 0, 575, 100])]                         # found: IoU 100/120
    openvocab = pd.DataFrame([{"story_id": "s1", "frame": 1, "phrase": p, "status": "ok", "score": s, "box": b}
                              for p, s, b in owl_rows]
                             + [{"story_id": "s1", "frame": 2, "phrase": p, "status": "ok", "score": 1.0,
                                 "box": [0, 0, 1, 1]} for p, _, _ in owl_rows])
    detections = pd.DataFrame([
        {"story_id": "s1", "frame": 1, "status": "ok", "detections": dumps_detections([
            Detection("person", 0.9, (300, 20, 400, 230)), Detection("cup", 0.4, (420, 100, 460, 140)),
            Detection("person", 0.95, (10, 10, 110, 210))])},
        {"story_id": "s1", "frame": 2, "status": "corrupt", "detections": "[]"},
    ])
    recall = ho.entity_recall(entities, openvocab, detections, threshold=0.1, detector_threshold=0.5).set_index("kind")
    assert list(recall.index) == ["char", "obj", "bg", "all kinds"]
    assert recall["entities"].tolist() == [2, 2, 1, 5], "frame 2 did not decode for the COCO detector"
    assert recall["owlvit_found"].tolist() == [1, 1, 1, 3]
    assert recall["coco_nameable"].tolist() == [1, 1, 0, 2]
    # the woman is found by the person detection; the robot is not a person; the cup scores 0.4 < 0.5
    assert recall["frcnn_found"].tolist() == [1, 0, 0, 1]
    assert recall.loc["all kinds", "owlvit_recall"] == pytest.approx(3 / 5)
    assert recall.loc["all kinds", "frcnn_recall"] == pytest.approx(1 / 5)
    assert recall.loc["all kinds", "frcnn_recall_nameable"] == pytest.approx(1 / 2)
    assert recall.loc["char", "coco_coverage"] == pytest.approx(1 / 2)
    assert math.isnan(recall.loc["bg", "frcnn_recall_nameable"])


def test_pair_text_reads_the_tags_when_there_are_any_else_the_plain_text():
    from helpers.tags import Segment

    tagged = "<gdo char1>James</gdo> sits on <gdo obj1>the couch</gdo>."
    read = ho.pair_text("James sits on the couch.", tagged, 3)
    assert isinstance(read, Segment) and read.frame == 3 and [m.text for m in read.mentions] == ["James", "the couch"]
    assert ho.pair_text("A man sits.", "A man sits.", 1) == "A man sits."  # the verifier's plain input
    assert ho.pair_text("A man sits.", float("nan"), 1) == "A man sits."
