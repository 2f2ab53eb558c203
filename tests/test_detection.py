"""The detector (weights, batching, cache, corrupt frames), the oracle and the object evidence.

The model tests run the real Faster R-CNN architecture on CPU with random weights, on
images of a few dozen pixels (``min_size`` 64), so each forward pass takes a fraction of a
second. The random detector is built and saved once per module.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers import detection as det
from helpers import objects as obj
from helpers.weights import load_model, weights_available
from helpers.smoke.detector import save_random_detector
from helpers.config import MissingAssetError
from helpers.tags import ParsedStory, parse_chain_of_thought, parse_segment

from conftest import FIXTURES
MIN_SIZE = 64
SEED = 7


def _image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def detector(models_dir) -> det.Detector:
    return load_model(det.DETECTOR, "random", models_dir=models_dir, seed=SEED, device="cpu")


def _same(a: list[det.Detection], b: list[det.Detection], atol: float = 0.0) -> bool:
    return (len(a) == len(b) and [x.label for x in a] == [y.label for y in b]
            and np.allclose([x.box for x in a], [y.box for y in b], atol=atol, rtol=0)
            and np.allclose([x.score for x in a], [y.score for y in b], atol=atol / 100, rtol=0))


def _same_unordered(a: list[det.Detection], b: list[det.Detection], atol: float) -> bool:
    """Like ``_same``, but each detection of ``a`` may match any unmatched one of ``b``."""
    unmatched = list(b)
    for x in a:
        match = next((y for y in unmatched if y.label == x.label and abs(y.score - x.score) <= atol / 100
                      and np.allclose(x.box, y.box, atol=atol, rtol=0)), None)
        if match is None:
            return False
        unmatched.remove(match)
    return not unmatched


# ----------------------------------------------------------------------------- weights


def test_random_weights_are_saved_and_reload_through_the_file_path_identically(detector, models_dir):
    saved = models_dir / f"fasterrcnn_resnet50_fpn_random_seed{SEED}.pth"
    assert saved.is_file() and detector.identity.startswith("file:")
    assert len(detector.categories) == 91 and detector.categories[1] == "person"

    with torch.random.fork_rng(devices=[]):  # the same seeded initialisation, never saved
        torch.manual_seed(SEED)
        reference = det._architecture().eval()
    as_user_file = load_model(det.DETECTOR, str(saved), models_dir=models_dir, device="cpu")
    assert as_user_file.identity == detector.identity

    images = [_image(96, 64, 1), _image(96, 64, 2)]
    tensors = [torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in images]
    reference.transform.min_size = (MIN_SIZE,)
    with torch.inference_mode():
        expected = reference(tensors)
    for loaded in (detector, as_user_file):
        loaded.model.transform.min_size = (MIN_SIZE,)
        loaded.model.roi_heads.score_thresh = reference.roi_heads.score_thresh
        with torch.inference_mode():
            got = loaded.model(tensors)
        for e, g in zip(expected, got):
            assert len(e["boxes"]) > 0
            assert all(torch.equal(e[k], g[k]) for k in ("boxes", "scores", "labels"))


def _proposals(detector: det.Detector, image: torch.Tensor) -> int:
    """How many region proposals survive the RPN's non-maximum suppression on ``image``."""
    model = detector.model
    with torch.inference_mode():
        images, _ = model.transform([image])
        proposals, _ = model.rpn(images, model.backbone(images.tensors))
    return len(proposals[0])


def test_full_size_random_detector_costs_what_trained_weights_cost(detector, models_dir):
    """make bench's detector keeps the RPN's full post-NMS count of proposals, as trained weights
    do, so its box head costs what the COCO model's does. Plain random weights may keep far fewer,
    depending on the seed: with the profiles' seed 42 about a third on this frame."""
    full = load_model(det.DETECTOR, "random-full-size", models_dir=models_dir, seed=SEED, device="cpu")
    assert (models_dir / f"fasterrcnn_resnet50_fpn_random_full_cost_seed{SEED}.pth").is_file()
    assert full.identity != detector.identity and weights_available(det.DETECTOR, "random-full-size")
    plain, zeroed = detector.model.state_dict(), full.model.state_dict()
    differing = [k for k in plain if not torch.equal(plain[k], zeroed[k])]
    assert differing == ["rpn.head.bbox_pred.weight"]  # torchvision initialises the bias at zero already
    assert not zeroed["rpn.head.bbox_pred.weight"].any() and not zeroed["rpn.head.bbox_pred.bias"].any()

    frame = torch.rand(3, 240, 575, generator=torch.Generator().manual_seed(0))  # StoryReasoning's frame size
    for spec in ("random", "random-full-size"):  # the seed of every profile, so of make bench
        loaded = load_model(det.DETECTOR, spec, models_dir=models_dir, seed=42, device="cpu")
        loaded.model.transform.min_size = (240,)
        top_n = loaded.model.rpn.post_nms_top_n()
        assert top_n == 1000
        if spec == "random":
            assert _proposals(loaded, frame) < top_n // 2
        else:
            assert _proposals(loaded, frame) == top_n
    # a profile's detector.proposals reaches the RPN: that many proposals go on to the box head
    det.detect_images(loaded, [_image(96, 64, 1)], min_size=240, proposals=300)
    assert loaded.model.rpn.post_nms_top_n() == 300 and _proposals(loaded, frame) == 300


def test_weights_file_of_another_label_space_is_refused(tmp_path, models_dir):
    wrong = tmp_path / "five_classes.pth"
    torch.save({det._CLASSIFIER_KEY: torch.zeros(5, 1024)}, wrong)
    with pytest.raises(det.DetectorWeightsError, match="5 classes"):
        load_model(det.DETECTOR, str(wrong), models_dir=models_dir, device="cpu")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(det.DetectorWeightsError, match="cannot be read"):
        load_model(det.DETECTOR, str(garbage), models_dir=models_dir, device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(det.DETECTOR, str(tmp_path / "absent.pth"), models_dir=models_dir, device="cpu")


def test_missing_coco_weights_offline_raise_naming_torch_home_and_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(det, "hub_reachable", lambda host="": False)
    assert det.coco_checkpoint_path() == tmp_path / "hub" / "checkpoints" / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    assert not weights_available(det.DETECTOR, "coco")
    assert weights_available(det.DETECTOR, "random")
    with pytest.raises(MissingAssetError) as err:
        load_model(det.DETECTOR, "coco", models_dir=tmp_path, device="cpu")
    message = str(err.value)
    assert "TORCH_HOME" in message and str(tmp_path) in message and "PROFILE=smoke" in message
    assert "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in message

    det.coco_checkpoint_path().parent.mkdir(parents=True)
    det.coco_checkpoint_path().write_bytes(b"")  # a cached checkpoint makes it available offline
    assert weights_available(det.DETECTOR, "coco")


def test_coco_spec_loads_torchvision_weights_from_the_torch_home_cache_offline(detector, models_dir, tmp_path, monkeypatch):
    """The real pretrained path (torchvision's COCO_V1 through torch.hub's cache), on random weights put in the cache."""
    import shutil

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(det, "hub_reachable", lambda host="": False)
    det.coco_checkpoint_path().parent.mkdir(parents=True)
    shutil.copy(save_random_detector(models_dir, seed=SEED), det.coco_checkpoint_path())
    coco = load_model(det.DETECTOR, "coco", models_dir=models_dir, device="cpu")
    assert coco.identity == "torchvision:fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    assert coco.categories[1] == "person" and len(coco.categories) == 91
    image = _image(96, 64, 3)
    # the same weights give the same strongest detections; the builders' float op order differs slightly,
    # so detections right at the score floor may come and go
    top = [det.detect_images(d, [image], min_size=MIN_SIZE)[0][:5] for d in (coco, detector)]
    assert _same(*top, atol=0.05)


# ---------------------------------------------------------------------------- inference


def test_batched_detections_equal_per_frame_detections(detector):
    images = [_image(96, 64, 3), _image(96, 64, 4), _image(80, 64, 5)]
    batched = det.detect_images(detector, images, min_size=MIN_SIZE)
    single = [det.detect_images(detector, [im], min_size=MIN_SIZE)[0] for im in images]
    assert all(len(found) > 0 for found in batched)
    # padding a batch to its widest image moves scores by ~1e-5, enough to swap two detections whose
    # scores tie that closely: compare each frame's detections as a set, each matched once
    assert all(_same_unordered(b, s, atol=1e-2) for b, s in zip(batched, single))
    assert all(0 <= d.box[0] <= d.box[2] <= 96 and 0 <= d.box[1] <= d.box[3] <= 64 for d in batched[0])
    assert all(d.score >= det.CACHE_SCORE_FLOOR and d.label in detector.categories for d in batched[0])


def test_cached_rerun_does_no_forward_pass_and_corrupt_frames_are_skipped(detector, tmp_path):
    frames = {("10", 1): _jpeg(_image(96, 64, 6)), ("10", 2): b"\xff\xd8 truncated jpeg",
              ("11", 1): _jpeg(_image(96, 64, 7)), ("11", 2): b""}
    cache = tmp_path / "detections"
    first = det.detect_frames(detector, frames, cache, min_size=MIN_SIZE, batch_size=2)
    assert first.forward_passes == 2
    assert sorted(map(tuple, first.corrupt[["story_id", "frame"]].to_numpy().tolist())) == [("10", 2), ("11", 2)]
    assert first.corrupt["error"].str.contains("cannot identify image").all()  # the decoder says why
    ok = first.frames[first.frames["status"] == "ok"]
    assert (ok["n_detections"] > 0).all() and (ok[["width", "height"]].to_numpy() == [96, 64]).all()

    again = det.detect_frames(detector, frames, cache, min_size=MIN_SIZE, batch_size=2)
    assert again.forward_passes == 0
    pd.testing.assert_frame_equal(again.frames, first.frames)

    larger = det.detect_frames(detector, frames, cache, min_size=MIN_SIZE + 32, batch_size=2)
    assert larger.forward_passes == 2  # another input size is another cache entry
    fewer = det.detect_frames(detector, frames, cache, min_size=MIN_SIZE, proposals=300, batch_size=2)
    assert fewer.forward_passes == 2 and set(fewer.frames["proposals"]) == {300}  # and so is another proposal count
    with pytest.raises(ValueError, match="proposals must be a positive"):
        det.detect_frames(detector, frames, cache, min_size=MIN_SIZE, proposals=0, batch_size=2)

    edited = {**frames, ("10", 1): _jpeg(_image(96, 64, 8))}  # new bytes for one frame: only it is recomputed
    assert det.detect_frames(detector, edited, cache, min_size=MIN_SIZE, batch_size=2).forward_passes == 1


def test_detector_sweep_reports_each_setting_and_reuses_the_cache(detector, tmp_path):
    frames = {("20", 1): _jpeg(_image(96, 64, 9))}
    truth = pd.DataFrame({"story_id": ["20"], "frame": [1], "status": ["ok"],
                          "detections": [det.dumps_detections([det.Detection("person", 1.0, (0, 0, 40, 60))])]})
    settings = obj.sweep_settings(32, 1000, sizes=[32, 64], proposal_counts=[300, 1000])
    assert settings == [(32, 1000), (64, 1000), (32, 300)]  # sizes at the profile's count, counts at its size
    kwargs = {"settings": settings, "threshold": 0.5, "batch_size": 4}
    sweep = obj.detector_sweep(detector, frames, truth, tmp_path / "c.parquet", **kwargs)
    assert sweep[["min_size", "proposals"]].to_numpy().tolist() == [[32, 1000], [64, 1000], [32, 300]]
    assert sweep["computed_now"].tolist() == [1, 1, 1]
    assert sweep["input_height"].tolist() == [32.0, 64.0, 32.0] and (sweep["seconds_per_frame"] > 0).all()
    assert sweep["recall"].between(0, 1).all()
    assert obj.detector_sweep(detector, frames, truth, tmp_path / "c.parquet", **kwargs)["computed_now"].sum() == 0


# ------------------------------------------------------------------------- ground truth

COT = """## Image 1

### Characters
| Character ID | Name | Description | Emotions | Actions | Narrative Function | Bounding Box |
|---|---|---|---|---|---|---|
| char1 | James | Man with a neutral look | Calm | Enters | Lead | 318,48,345,135 |
| char2 | R2 | A small blue robot | None | Beeps | Sidekick | 10,20,30,40 |

### Objects
| Object ID | Description | Function | Interaction | Narrative Function | Bounding Box |
|---|---|---|---|---|---|
| obj1 | Cardboard boxes | Storage | None | Scene | 0,63,449,166 |
| bg26 | Table | Furniture | None | Interior | 119,162,237,238 |
| obj3 | Cell phone | Call | Held | Plot | 1,2,3,4 |

## Image 2

### Characters
| Character ID | Name | Description | Emotions | Actions | Narrative Function | Bounding Box |
|---|---|---|---|---|---|---|
| char1 | James | Man in a coat | Tense | Waits | Lead | 5,5,50,90 |
"""


def _story(cot_text: str = COT, story_id: str = "1") -> ParsedStory:
    return ParsedStory(story_id=story_id, frame_count=2, segments=(), cot=parse_chain_of_thought(cot_text))


def test_ground_truth_detector_maps_chain_of_thought_boxes_to_coco():
    gt = obj.ground_truth_frames([_story()])
    assert gt[["frame", "n_entities", "n_unmapped"]].to_numpy().tolist() == [[1, 5, 2], [2, 1, 0]]
    frame1 = det.parse_detections(gt.loc[gt["frame"] == 1, "detections"].item())
    assert [(d.label, d.score, d.box) for d in frame1] == [
        ("person", 1.0, (318.0, 48.0, 345.0, 135.0)),  # the robot and the boxes have no COCO category
        ("dining table", 1.0, (119.0, 162.0, 237.0, 238.0)),
        ("cell phone", 1.0, (1.0, 2.0, 3.0, 4.0)),
    ]


def test_ground_truth_detector_on_a_real_chain_of_thought():
    cot = parse_chain_of_thought((FIXTURES / "story_3920" / "chain_of_thought.md").read_text(encoding="utf-8"))
    gt = obj.ground_truth_frames([ParsedStory("3920", 17, (), cot)])
    assert len(gt) == 17 and gt["n_entities"].sum() == 48  # every entity row of story 3920 has a box
    labels = det.detections_long(gt)["label"]
    assert (labels == "person").sum() == 21  # its 21 character rows are all people
    frame1 = det.parse_detections(gt.loc[gt["frame"] == 1, "detections"].item())
    assert sorted(d.label for d in frame1) == ["dining table", "dining table", "person"]  # "Counter or table" too


def test_detection_recall_matches_one_detection_to_one_box_at_the_iou_threshold():
    def table(rows):
        return pd.DataFrame({"story_id": ["1"], "frame": [1], "status": ["ok"],
                             "detections": [det.dumps_detections(det.Detection(*r) for r in rows)]})

    truth = table([("person", 1.0, (0, 0, 10, 10)), ("person", 1.0, (20, 0, 30, 10)), ("cup", 1.0, (50, 50, 60, 60))])
    predicted = table([
        ("person", 0.9, (0, 0, 10, 12)),    # IoU 10/12 with the first person
        ("person", 0.8, (0, 0, 10, 11)),    # would match the first person too, which is taken
        ("person", 0.3, (20, 0, 30, 10)),   # exact, but under the threshold
        ("cup", 0.7, (55, 55, 65, 65)),     # IoU 25/175: too little
        ("dog", 0.9, (0, 0, 5, 5)),         # a category with no ground truth
    ])
    recall = obj.detection_recall(predicted, truth, threshold=0.5).set_index("category")
    assert recall.loc["person", ["ground_truth", "predicted", "found"]].tolist() == [2, 2, 1]
    assert recall.loc["cup", "found"] == 0 and "dog" not in recall.index
    assert recall.loc["all categories", ["ground_truth", "predicted", "found"]].tolist() == [3, 4, 1]
    assert recall.loc["all categories", "recall"] == pytest.approx(1 / 3)
    lenient = obj.detection_recall(predicted, truth, threshold=0.2, iou=0.1).set_index("category")
    assert lenient.loc["all categories", "found"] == 3


# ----------------------------------------------------------------------------- evidence


def test_needed_categories_of_a_tagged_segment():
    segment = parse_segment(
        "<gdo char1>James</gdo> <gda char1>puts</gda> <gdo obj2>a cell phone</gdo> on the table "
        "next to <gdo char2>R2</gdo> and <gdo char3>Rex</gdo>, near a car door. <gdl bg1>Dim light</gdl>.", 1)
    descriptions = {"char1": "Man in a coat", "char2": "A small blue robot", "char3": "A large brown dog"}
    assert obj.needed_categories(segment, descriptions) == ("cell phone", "dining table", "dog", "person")
    # without descriptions a character is a person, unless its own text says otherwise
    assert obj.needed_categories(parse_segment("<gdo char5>the droid</gdo> waits.", 1)) == ()
    assert obj.needed_categories(parse_segment("<gdo char5>Anna</gdo> waits.", 1)) == ("person",)
    # an edited mention needs what its new text names, whatever its id
    assert obj.needed_categories(parse_segment("<gdo obj2>a laptop</gdo> lies there.", 1)) == ("laptop",)


def test_mention_category_reads_the_words_then_the_character_description():
    segment = parse_segment("<gdo char1>James</gdo> hands <gdo obj2>a cell phone</gdo> to <gdo char1 char3>them</gdo>"
                            " beside <gdo char2>R2</gdo> and <gdo obj4>the lamp</gdo>.", 1)
    james, phone, them, r2, lamp = segment.mentions
    descriptions = {"char1": "Man in a coat", "char2": "A small blue robot", "char3": "A large brown dog"}
    assert obj.mention_category(james, descriptions) == "person"  # his description
    assert obj.mention_category(phone, descriptions) == "cell phone"  # its words
    assert obj.mention_category(r2, descriptions) is None  # a robot is no COCO thing
    assert obj.mention_category(lamp, descriptions) is None  # an object whose words name nothing COCO has
    # several characters: each needs its category, and the highlight names the first one's
    assert obj.mention_categories(them, descriptions) == ("person", "dog")
    assert obj.mention_category(them, descriptions) == "person"
    # without a description the mention's own words decide: a person unless they say otherwise
    assert obj.mention_category(james) == "person"
    assert obj.mention_category(parse_segment("<gdo char5>the droid</gdo> waits.", 1).mentions[0]) is None


def test_needed_categories_of_plain_text():
    assert obj.needed_categories("A man watches television while his dog sleeps on the couch.") == (
        "couch", "dog", "person", "tv")
    assert obj.needed_categories("The hot dog sits in an orange light near a car door.") == ("hot dog",)
    assert obj.needed_categories("The tension rises as the storm gathers in the hallway.") == ()


def test_one_reader_of_named_things_for_needs_and_relations():
    # a pronoun that stands for someone names a person ("they", "someone" too: in these stories they stand for
    # characters); a possessive before a noun only qualifies it ("his dog" is a dog)
    assert obj.needed_categories("They wait beside the car.") == ("car", "person")
    assert obj.needed_categories("Someone knocks.") == ("person",)
    assert obj.needed_categories("His dog sleeps on the couch.") == ("couch", "dog")
    things = obj.named_things("A man watches the hot dog near a car door.")
    assert [(t.text, t.category, t.start, t.end) for t in things] == [("man", "person", 2, 5),
                                                                    ("hot dog", "hot dog", 18, 25)]
    # the object evidence and the spatial evidence read the same things
    from helpers.spatial import _entities

    for text in ["He sits on the couch, holding a cup.", "They rest beside a teddy bear and a tv.",
                 "The dog sleeps under the car door.", "A woman puts her phone on the table."]:
        assert {t.category for t in _entities(text)[1]} == set(obj.needed_categories(text)), text


def test_needed_category_table_of_a_real_story():
    from helpers.tags import parse_story

    root = FIXTURES / "story_3920"
    story = ParsedStory("3920", 17, tuple(parse_story((root / "story.txt").read_text(encoding="utf-8"))),
                        parse_chain_of_thought((root / "chain_of_thought.md").read_text(encoding="utf-8")))
    table = obj.needed_category_table([story])
    assert table.groupby("frame").ngroups == 17 and table["category"].notna().all()  # every segment names someone
    frame1 = table.loc[table["frame"] == 1, "category"].tolist()
    assert frame1 == ["dining table", "person"]  # "cardboard boxes" and "a blue blanket" are not COCO things
    assert "cell phone" in table.loc[table["frame"] == 9, "category"].tolist()
    empty = ParsedStory("1", 1, (parse_segment("The tension rises.", 1),), parse_chain_of_thought(""))
    assert obj.needed_category_table([empty]).to_dict("records") == [{"story_id": "1", "frame": 1, "category": None}]


def test_object_evidence_scores_found_and_missing_categories():
    found = [det.Detection("person", 0.6, (0, 0, 5, 5)), det.Detection("person", 0.9, (1, 1, 9, 9)),
             det.Detection("dog", 0.3, (2, 2, 4, 4)), det.Detection("cup", 0.7, (3, 3, 6, 6)),
             det.Detection("car", 0.99, (0, 0, 1, 1))]
    evidence = obj.object_evidence(["person", "dog", "cup"], found, threshold=0.5)
    assert evidence["object_score"] == pytest.approx((0.9 + 0.0 + 0.7) / 3)
    assert evidence["object_informative"] is True and evidence["object_state"] == obj.CHECKED == "checked"
    assert evidence["objects_needed"] == ["cup", "dog", "person"]
    assert evidence["objects_missing"] == ["dog"]
    assert evidence["objects_found"] == [{"category": "cup", "score": 0.7, "box": [3, 3, 6, 6]},
                                         {"category": "person", "score": 0.9, "box": [1, 1, 9, 9]}]
    assert obj.object_evidence(["dog"], found, threshold=0.2)["object_score"] == pytest.approx(0.3)

    nothing_needed = obj.object_evidence([], found, threshold=0.5)
    assert nothing_needed["object_informative"] is False
    assert nothing_needed["object_state"] == obj.NOTHING_TO_CHECK == "nothing to check"
    assert nothing_needed["object_score"] == obj.UNINFORMATIVE_SCORE == 0.0
    assert nothing_needed["objects_found"] == nothing_needed["objects_missing"] == []


def test_object_features_reuse_frame_detections_across_pairs():
    found = [det.Detection("person", 0.8, (0, 0, 9, 9)), det.Detection("cup", 0.4, (1, 1, 2, 2))]
    detections = pd.DataFrame({"story_id": ["1", "1"], "frame": [1, 2], "status": ["ok", "corrupt"],
                               "detections": [det.dumps_detections(found), "[]"]})
    pairs = pd.DataFrame({
        "pair_id": ["p", "n1", "n2", "c"], "story_id": ["1", "1", "1", "1"], "frame": [1, 1, 1, 2],
        "label": [1, 0, 0, 1], "negative_type": ["", "object_swap", "other_story", ""],
        "text": ["", "", "The tension rises.", ""],
        "tagged_text": ["<gdo char1>James</gdo> holds <gdo obj3>a cup</gdo>.",
                        "<gdo char1>James</gdo> holds <gdo obj3>a dog</gdo>.", "", "<gdo char1>James</gdo> waits."],
        "source_story_id": ["1", "1", "9", "1"], "source_frame": [1, 1, 1, 2],
    })
    oracle = obj.ground_truth_frames([_story()])
    table = obj.object_features(pairs, detections, threshold=0.3, oracle=oracle, read_tags=True)
    assert list(table.columns) == ["pair_id", *obj.OBJECT_COLUMNS, "object_score_oracle"]
    rows = table.set_index("pair_id")
    assert rows.loc["p", "object_score"] == pytest.approx((0.8 + 0.4) / 2)
    assert rows.loc["n1", "object_score"] == pytest.approx(0.8 / 2)
    assert json.loads(rows.loc["n1", "objects_missing"]) == ["dog"]
    assert not rows.loc["n2", "object_informative"] and rows.loc["n2", "object_score"] == 0.0
    assert rows.loc["n2", "object_state"] == "nothing to check"  # the text names no COCO thing
    assert not rows.loc["c", "object_informative"]  # its frame did not decode: nothing was checked
    assert rows.loc["c", "object_state"] == obj.NOT_COMPUTED == "not computed"
    assert rows.loc["p", "object_state"] == rows.loc["n1", "object_state"] == "checked"
    counted = obj.state_table(pairs.assign(split="train").merge(table, on="pair_id"), "object_state")
    assert list(counted.columns) == list(obj.EVIDENCE_STATES)
    assert counted.loc[("train", "positive")].to_dict() == {"checked": 1, "nothing to check": 0, "not computed": 1}
    assert counted["not computed"].sum() == 1 and counted.to_numpy().sum() == len(pairs)
    assert json.loads(rows.loc["c", "objects_needed"]) == ["person"]
    assert rows.loc["p", "object_score_oracle"] == pytest.approx(0.5)  # the oracle has the person, no cup

    # By default the needs come from the plain text, as the verifier reads a user's text: a name
    # is not a person there, so "James holds a cup." needs the cup alone.
    plain = pairs.assign(text=["James holds a cup.", "James holds a dog.", "The tension rises.", "He waits."])
    rows = obj.object_features(plain, detections, threshold=0.3).set_index("pair_id")
    assert json.loads(rows.loc["p", "objects_needed"]) == ["cup"] and rows.loc["p", "object_score"] == 0.4
    assert json.loads(rows.loc["n1", "objects_missing"]) == ["dog"] and rows.loc["n1", "object_score"] == 0.0
    assert json.loads(rows.loc["c", "objects_needed"]) == ["person"]  # "he" needs a person, tags or not


def test_auc_by_negative_type_separates_each_type():
    table = pd.DataFrame({
        "label": [1, 1, 0, 0, 0, 0],
        "negative_type": ["", "", "other_story", "other_story", "object_swap", "object_swap"],
        "score": [0.9, 0.8, 0.1, 0.2, 0.85, 0.95],
    })
    auc = obj.auc_by_negative_type(table, "score").set_index("negative_type")
    assert list(auc.index) == ["other_story", "object_swap", "all negatives"]
    assert auc.loc["other_story", "roc_auc"] == 1.0
    assert auc.loc["object_swap", "roc_auc"] == pytest.approx(0.25)
    assert auc.loc["all negatives", "roc_auc"] == pytest.approx(5 / 8)
    assert auc.loc["all negatives", ["positives", "negatives"]].tolist() == [2, 4]
    assert math.isnan(obj.auc_by_negative_type(table[table["label"] == 0], "score").loc[0, "roc_auc"])
    with pytest.raises(ValueError, match="missing"):
        obj.auc_by_negative_type(table.assign(score=[0.1, None, 0, 0, 0, 0]), "score")


def test_profile_detections_read_what_an_earlier_chapter_cached(models_dir, tmp_path):
    from helpers.config import Paths

    paths = Paths(tmp_path / "smoke")
    cfg = {"seed": SEED, "detector": {"weights": "random", "min_size": MIN_SIZE, "proposals": 1000, "batch_size": 2,
                                      "score_threshold": 0.5}}
    frames = {("10", 1): _jpeg(_image(96, 64, 6)), ("10", 2): _jpeg(_image(96, 64, 9))}
    _, first = det.profile_detections(cfg, paths, frames, device="cpu")
    _, again = det.profile_detections(cfg, paths, frames, device="cpu")
    assert (first.forward_passes, again.forward_passes) == (2, 0)
    assert (paths.cache / det.CACHE_FILE).is_dir() and (paths.models).is_dir()
    pd.testing.assert_frame_equal(again.frames, first.frames)


def test_one_function_reads_the_detector_run_settings_of_a_profile(models_dir, tmp_path):
    cfg = {"seed": SEED, "detector": {"weights": "random", "min_size": str(MIN_SIZE), "proposals": 300,
                                      "batch_size": 2, "score_threshold": "0.25", "min_size_sweep": [32]}}
    settings = det.settings_from_profile(cfg)
    assert settings == det.DetectorSettings(min_size=MIN_SIZE, proposals=300, batch_size=2, score_threshold=0.25)
    with pytest.raises(KeyError):
        det.settings_from_profile({"detector": {k: v for k, v in cfg["detector"].items() if k != "proposals"}})
    detector = load_model(det.DETECTOR, "random", models_dir=models_dir, seed=SEED, device="cpu")
    frames = {("10", 1): _jpeg(_image(96, 64, 6))}
    run = det.detect_with_profile(detector, frames, cfg, tmp_path)
    # the same cache entry as detect_frames at those settings: no second forward pass, same key
    by_hand = det.detect_frames(detector, frames, tmp_path / det.CACHE_FILE, min_size=MIN_SIZE, proposals=300,
                                batch_size=2)
    assert (run.forward_passes, by_hand.forward_passes) == (1, 0)
    assert run.frames["key"].tolist() == by_hand.frames["key"].tolist()
    other = det.detect_with_profile(detector, frames, {"detector": {**cfg["detector"], "proposals": 1000}}, tmp_path)
    assert other.forward_passes == 1 and other.frames["key"].tolist() != run.frames["key"].tolist()


def test_hidden_positives_find_the_swapped_in_category_in_the_frame():
    assert obj.swapped_category('object "a cup" -> "a clock" (cup -> clock)') == "clock"
    assert obj.swapped_category('object "the TV" -> "a cell phone" (tv -> cell phone)') == "cell phone"
    assert obj.swapped_category('relation "on" -> "under"') is None
    boxes = [det.Detection("clock", 0.9, (0, 0, 5, 5)), det.Detection("dog", 0.6, (0, 0, 5, 5))]
    frames = pd.DataFrame({"story_id": ["1", "1", "2"], "frame": [1, 2, 1], "status": ["ok", "ok", "corrupt"],
                           "detections": [det.dumps_detections(boxes), det.dumps_detections(boxes[1:]), "[]"]})
    pairs = pd.DataFrame({
        "pair_id": ["a", "b", "c", "d", "e"], "story_id": ["1", "1", "1", "2", "1"], "frame": [1, 2, 1, 1, 1],
        "split": ["train", "val", "train", "val", "train"], "label": [0, 0, 0, 0, 1],
        "negative_type": ["object_swap", "object_swap", "object_swap", "object_swap", ""],
        "change": ['object "a cup" -> "a clock" (cup -> clock)', 'object "a cup" -> "a clock" (cup -> clock)',
                   'object "a cat" -> "a dog" (cat -> dog)', 'object "a cup" -> "a clock" (cup -> clock)', ""],
    })
    table = obj.hidden_positives(pairs, frames).set_index("pair_id")
    assert list(table.index) == ["a", "b", "c", "d"]  # object swaps only
    assert table.loc["a", "hidden"] and table.loc["a", "score"] == 0.9  # the clock is there, confidently
    assert not table.loc["b", "hidden"] and table.loc["b", "score"] == 0.0  # no clock in that frame
    assert not table.loc["c", "hidden"] and table.loc["c", "score"] == 0.6  # a dog, but not confidently
    assert not table.loc["d", "hidden"]  # the frame did not decode: nothing found
    assert obj.hidden_positives(pairs, frames, high_score=0.5).loc[lambda t: t["pair_id"] == "c", "hidden"].item()
