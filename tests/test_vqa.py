"""helpers.vqa (BLIP-VQA: weights, P(yes) scored and cached) and chapter 03's question evidence.

The model tests use the smoke profile's small BLIP-VQA (random weights, saved to disk and
loaded back through the local-folder path real weights take); blip-vqa-base's size is
checked on its configuration, instantiated on the meta device (no memory, no time).
"""

from __future__ import annotations

import dataclasses
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
from helpers import semantics as hs
from helpers import vqa as hv
from helpers.config import MissingAssetError
from helpers.smoke import vqa as smoke_vqa
from helpers.tags import ParsedStory, parse_chain_of_thought, parse_segment, parse_story

from conftest import COT_3920, STORY_3920  # a real story and its chain of thought, verbatim from the Hub

QUESTIONS = ["Is there a man?", "Is a man holding a cardboard box?", "Is the cup on the table?"]


def png(seed: int, size=(120, 60)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def vqa(tmp_path_factory) -> hv.Vqa:
    return load_model(hv.VQA, "random", models_dir=tmp_path_factory.mktemp("models"), seed=3, device="cpu")


@pytest.fixture(scope="module")
def story_3920() -> ParsedStory:
    segments = tuple(parse_story(STORY_3920.read_text(encoding="utf-8")))
    return ParsedStory("3920", len(segments), segments, parse_chain_of_thought(COT_3920.read_text(encoding="utf-8")))


class _NoForward:
    """Stands in for a model: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was used ({name}) although every answer was cached")


def _no_model(vqa: hv.Vqa) -> hv.Vqa:
    return dataclasses.replace(vqa, model=_NoForward())


# ----------------------------------------------------------------------------- weights


def test_random_model_is_saved_and_loaded_back_through_its_folder(tmp_path):
    first = load_model(hv.VQA, "random", models_dir=tmp_path, seed=5, device="cpu")
    folder = tmp_path / hv.RANDOM_FOLDER
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert type(first.model).__name__ == "BlipForQuestionAnswering"
    assert type(first.processor).__name__ == "BlipProcessor"
    vision = first.model.config.vision_config
    assert vision.num_hidden_layers == 2 and vision.hidden_size == 64 and 96 <= vision.image_size <= 128
    assert first.processor.image_processor.size["height"] == vision.image_size
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = load_model(hv.VQA, "random", models_dir=tmp_path, seed=5, device="cpu")  # reused, not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp and again.identity == first.identity
    from_folder = load_model(hv.VQA, str(folder), models_dir=tmp_path / "unused", device="cpu")
    assert from_folder.identity == first.identity and from_folder.source == str(folder)
    assert load_model(hv.VQA, "random", models_dir=tmp_path, seed=6, device="cpu").identity != first.identity
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*")), "no staging folder left behind"


def test_decoder_ids_are_the_tokenizers_as_blip_expects(vqa):
    tokenizer, text = vqa.processor.tokenizer, vqa.model.config.text_config
    assert vqa.model.decoder_start_token_id == text.bos_token_id == tokenizer.convert_tokens_to_ids("[DEC]")
    assert text.sep_token_id == tokenizer.sep_token_id and text.pad_token_id == tokenizer.pad_token_id == 0
    assert text.vocab_size == len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Is a man holding a phone?")["input_ids"])
    assert tokens == ["[CLS]", "is", "a", "man", "holding", "a", "phone", "?", "[SEP]"]
    assert [len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in ("yes", "no")] == [1, 1]


def test_offline_tokenizer_is_deterministic_and_encodes_anything():
    a, b = smoke_vqa.offline_tokenizer(), smoke_vqa.offline_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert a.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert a.bos_token == "[DEC]" and a.bos_token_id == len(a) - 1
    ids = a("Zyxw qq 42!")["input_ids"]
    assert a.unk_token_id not in ids and a.decode(ids, skip_special_tokens=True).replace(" ", "") == "zyxwqq42!"


def test_full_size_is_blip_vqa_base():
    from transformers import BlipForQuestionAnswering

    config = smoke_vqa.blip_vqa_config(smoke_vqa.offline_tokenizer(), full_size=True)
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (384, 16)
    assert (config.vision_config.num_hidden_layers, config.vision_config.hidden_size) == (12, 768)
    assert (config.text_config.num_hidden_layers, config.text_config.hidden_size) == (12, 768)
    assert config.text_config.num_attention_heads == 12
    with torch.device("meta"):
        model = BlipForQuestionAnswering(config)
    assert model.vision_model.embeddings.position_embedding.shape[1] == 577  # 24 x 24 patches + [CLS]
    assert len(model.text_decoder.bert.encoder.layer) == 12


def test_weights_available_and_missing(tmp_path, monkeypatch):
    assert weights_available(hv.VQA, "random") and weights_available(hv.VQA, "random-full-size")
    assert not weights_available(hv.VQA, str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(hv.VQA, str(tmp_path), models_dir=tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(helpers.weights, "hub_reachable", lambda *a, **k: False)
    assert not weights_available(hv.VQA, hv.MODEL_ID)
    with pytest.raises(MissingAssetError) as err:
        load_model(hv.VQA, hv.MODEL_ID, models_dir=tmp_path)
    message = str(err.value)
    assert hv.MODEL_ID in message and "HF_HOME" in message and "PROFILE=smoke" in message


# ----------------------------------------------------------------------------- answers


def _direct(vqa: hv.Vqa, frame: bytes, question: str) -> tuple[float, torch.Tensor, torch.Tensor]:
    """P(yes) computed by hand, one unpadded question, from the model's three parts; and the
    decoder's first-step logits next to what ``generate`` computes at its first step."""
    model, processor = vqa.model, vqa.processor
    tokenizer = processor.tokenizer
    inputs = processor(images=Image.open(io.BytesIO(frame)).convert("RGB"), text=question, return_tensors="pt")
    start, sep = tokenizer.convert_tokens_to_ids("[DEC]"), tokenizer.sep_token_id
    with torch.no_grad():
        image = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        states = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                    encoder_hidden_states=image,
                                    encoder_attention_mask=torch.ones(image.shape[:-1], dtype=torch.long))[0]
        logprob, first = {}, None
        for word in ("yes", "no"):
            ids = torch.tensor([[start, tokenizer.convert_tokens_to_ids(word), sep]])
            logits = model.text_decoder(input_ids=ids, encoder_hidden_states=states).logits[0]
            steps = logits.log_softmax(-1)
            logprob[word] = float(steps[0, ids[0, 1]] + steps[1, ids[0, 2]])
            first = logits[0]
        generated = model.generate(**inputs, max_new_tokens=1, do_sample=False, output_logits=True,
                                   return_dict_in_generate=True).logits[0][0]
    return 1.0 / (1.0 + math.exp(logprob["no"] - logprob["yes"])), first, generated


def test_p_yes_is_the_decoders_yes_against_no_with_generates_conditioning(vqa, tmp_path):
    frames = {("s", 1): png(1), ("s", 2): png(2)}
    table, encoded = hv.answer_yes(vqa, frames, {("s", 1): QUESTIONS, ("s", 2): QUESTIONS[:1]}, tmp_path,
                                   batch_size=2)
    assert list(table.columns) == hv.ANSWER_COLUMNS and encoded == 2
    assert list(zip(table["frame"], table["question"])) == [(1, q) for q in QUESTIONS] + [(2, QUESTIONS[0])]
    assert (table["status"] == "ok").all() and table["p_yes"].between(0, 1, inclusive="neither").all()
    for question, p in zip(QUESTIONS, table["p_yes"]):
        expected, first, generated = _direct(vqa, frames[("s", 1)], question)
        assert p == pytest.approx(expected, abs=1e-5), question
        torch.testing.assert_close(first, generated, atol=1e-4, rtol=1e-4)  # [DEC] starts the answer, as in generate
    assert table["p_yes"].iloc[0] != table["p_yes"].iloc[3], "the frame must matter"


def test_answers_do_not_depend_on_batching(vqa, tmp_path):
    frames = {("s", 1): png(1), ("t", 4): png(4)}
    questions = {("s", 1): QUESTIONS, ("t", 4): QUESTIONS[::-1]}
    one, _ = hv.answer_yes(vqa, frames, questions, tmp_path / "one", batch_size=1)
    many, _ = hv.answer_yes(vqa, frames, questions, tmp_path / "many", batch_size=5)
    np.testing.assert_allclose(one["p_yes"], many["p_yes"], atol=2e-6)  # padding masked: unpadded answers


def test_each_frame_is_encoded_once_per_call_and_a_rerun_computes_nothing(vqa, tmp_path):
    frames = {("s", 1): png(1), ("s", 2): png(2)}
    questions = {("s", 1): QUESTIONS, ("s", 2): QUESTIONS}
    seen = []
    hook = vqa.model.vision_model.register_forward_hook(lambda m, args, out: seen.append(len(out.last_hidden_state)))
    try:
        first, encoded = hv.answer_yes(vqa, frames, questions, tmp_path, batch_size=2)
    finally:
        hook.remove()
    assert encoded == 2 and sum(seen) == 2, "three questions per frame, one encoding per frame"
    again, encoded = hv.answer_yes(_no_model(vqa), frames, questions, tmp_path, batch_size=2)
    assert encoded == 0
    pd.testing.assert_frame_equal(again, first)
    more, encoded = hv.answer_yes(vqa, frames, {("s", 1): [*QUESTIONS, "Is there a dog?"]}, tmp_path, batch_size=2)
    assert encoded == 1, "a new question about a seen frame encodes that frame again"
    assert more["p_yes"].iloc[:3].tolist() == first["p_yes"].iloc[:3].tolist()


def test_corrupt_frame_is_skipped_cached_and_counted(vqa, tmp_path):
    frames = {("s", 1): png(1), ("s", 2): b"\xff\xd8 not a jpeg"}
    questions = {("s", 1): QUESTIONS[:1], ("s", 2): QUESTIONS}
    table, encoded = hv.answer_yes(vqa, frames, questions, tmp_path, batch_size=2)
    assert encoded == 1
    assert table["status"].tolist() == ["ok", "corrupt", "corrupt", "corrupt"]
    assert table["p_yes"].iloc[1:].isna().all() and not math.isnan(table["p_yes"].iloc[0])
    again, encoded = hv.answer_yes(_no_model(vqa), frames, questions, tmp_path, batch_size=2)
    assert encoded == 0 and again["status"].tolist() == table["status"].tolist()
    nothing, encoded = hv.answer_yes(vqa, frames, {("s", 1): []}, tmp_path, batch_size=2)
    assert nothing.empty and list(nothing.columns) == hv.ANSWER_COLUMNS and encoded == 0
    with pytest.raises(ValueError, match="no image"):
        hv.answer_yes(vqa, {}, {("s", 9): QUESTIONS}, tmp_path, batch_size=2)


# ----------------------------------------------------------------------------- questions


@pytest.mark.parametrize("verb, expected", [
    ("holds", "holding"), ("points", "pointing"), ("lies", "lying"), ("sits", "sitting"), ("grabbed", "grabbing"),
    ("took", "taking"), ("urged", "urging"), ("watches", "watching"), ("smiles", "smiling"), ("stand", "standing"),
    ("pointing", "pointing"), ("tries", "trying"), ("sees", "seeing"), ("whispered", "whispering"),
])
def test_participle(verb, expected):
    assert hs.participle(verb) == expected


def _asked(questions):
    return {q.question: q for q in questions}


def test_questions_from_a_real_segment(story_3920):
    segments = {s.frame: s for s in story_3920.segments}
    asked = _asked(hs.build_questions(segments[12]))
    # James, John and Alex are only named: each is "a person", asked once under char1's id (the chain
    # of thought's "Man in a black jacket" and "Man sitting on the floor" describe the frame, not the text)
    assert asked["Is there a person?"].id == "entity:char1"
    assert not [q for q in asked if "jacket" in q or "floor" in q]
    assert asked["Are there cardboard boxes?"].kind == "entity"
    gun = asked["Is a person pointing a gun at a person?"]
    assert gun.kind == "action" and gun.parents == ("entity:char1",), "John's question is James's: one person"
    assert not any("finding" in q for q in asked), "'find themselves' is not something a frame shows"

    asked = _asked(hs.build_questions(segments[9]))  # "he", "his": James is a man
    assert asked["Is a man grabbing a cell phone?"].parents == ("entity:char1", "entity:obj9")
    holding = asked["Is the man holding the cell phone?"]
    assert holding.kind == "relation" and holding.parents == ("entity:char1", "entity:obj9")
    assert "Is there a phone?" not in asked, "the untagged 'phone' is the tagged cell phone"

    asked = _asked(hs.build_questions(segments[5]))
    assert "Is there a figure?" in asked and "Is there a man?" in asked
    assert "Is there a blurred person?" not in asked, "the chain of thought's description of char5"
    assert not [q for q in asked.values() if q.kind == "action"], "appears, can't make out, is, feels"


def test_characters_are_described_by_the_text_alone(story_3920):
    segment = parse_segment("<gdo char3>Bo</gdo> <gda char3>waits</gda>. <gdo char3>The tall man in a grey coat</gdo> "
                            "<gda char3>holds</gda> <gdo obj1>a cup</gdo>. <gdo char3>He</gdo> <gda char3>smiles</gda>. "
                            "<gdo char4>Ann</gdo> and <gdo char5>her</gdo> <gdo char4 char5>friends</gdo> wait.", 1)
    assert hs.text_descriptions(segment) == {"char3": "The tall man in a grey coat", "char5": "woman"}
    asked = _asked(hs.build_questions(segment))
    assert asked["Is there a tall man in a grey coat?"].id == "entity:char3"
    assert asked["Is a tall man holding a cup?"].parents == ("entity:char3", "entity:obj1")
    assert "Is there a person?" in asked and "Is there a woman?" in asked  # Ann only named; "her" alone
    assert hs.text_descriptions("He waits.") == {}, "plain text has no ids"
    frame_3 = {s.frame: s for s in story_3920.segments}[3]
    assert hs.text_descriptions(frame_3) == {"char1": "man"}  # "him", "his"; the chain of thought: "white shirt"
    assert [q.question for q in hs.build_questions(frame_3)] == [
        "Is there a man?", "Is there an elevator?", "Is a man entering an elevator?"]


def test_questions_from_hand_made_tags():
    segment = parse_segment(
        "<gdo char1>He</gdo> <gda char1>sits</gda> on the couch. <gdo char2>Mia</gdo> <gda char2>holds</gda> "
        "<gdo obj1>a phone</gdo>. <gdo char1 char3>They</gdo> <gda char1 char3>walk</gda> to the car. "
        "<gdo char2>She</gdo> <gda char2>realizes</gda> it. <gdo obj2>Cardboard boxes</gdo> fill "
        "<gdl bg1>a dim kitchen</gdl>.", 1)
    questions = hs.build_questions(segment)
    asked = _asked(questions)
    assert [q.question for q in questions if q.kind == "entity"] == [
        "Is there a man?", "Is there a couch?", "Is there a woman?", "Is there a phone?",
        "Is there a person?", "Is there a car?", "Are there cardboard boxes?"]
    assert len(questions) == hs.MAX_QUESTIONS, "the place, asked last, is left out"
    assert asked["Is a man sitting on the couch?"].parents == ("entity:char1", "entity:couch")
    assert asked["Is a woman holding a phone?"].parents == ("entity:char2", "entity:obj1")
    assert asked["Are a man and a person walking to the car?"].parents == (
        "entity:char1", "entity:char3", "entity:car")
    assert asked["Is the man on the couch?"].kind == "relation"
    assert not any("realiz" in q for q in asked)
    place = hs.build_questions(parse_segment("<gdo char1>Al</gdo> <gda char1>waits</gda> in <gdl bg1>a dim "
                                             "kitchen</gdl>. <gdo obj1>A cup</gdo> is on the table.", 1))
    assert [(q.id, q.question) for q in place] == [
        ("entity:char1", "Is there a person?"), ("entity:obj1", "Is there a cup?"), ("entity:table", "Is there a table?"),
        ("action:0", "Is a person waiting in a dim kitchen?"), ("relation:0", "Is the cup on the table?"),
        ("place:bg1", "Is there a dim kitchen?")]
    ids = [q.id for q in questions]
    assert all(ids.index(p) < ids.index(q.id) for q in questions for p in q.parents), "parents come first"
    twins = parse_segment("<gdo char1>The man</gdo> and <gdo char2>the man beside him</gdo> "
                          "<gda char1 char2>stand</gda>.", 1)
    assert _asked(hs.build_questions(twins))["Are two men standing?"]


def test_questions_from_plain_text_have_no_action():
    questions = hs.build_questions("A man sits on the couch and holds a cell phone. He looks at the dog under "
                                   "the table.")
    asked = _asked(questions)
    assert {q.kind for q in questions} == {"entity", "relation"}
    assert {"Is there a man?", "Is there a couch?", "Is there a phone?", "Is there a person?",
            "Is there a dog?", "Is there a table?"} <= set(asked)
    assert asked["Is the dog under the table?"].parents == ("entity:dog", "entity:table")
    assert asked["Is the man on the couch?"].parents == ("entity:man", "entity:couch")
    assert hs.build_questions("Nothing to see.") == []


def test_plain_text_asks_about_the_nouns_coco_lacks_as_the_open_vocabulary_detector_reads_them():
    from helpers.objects import entity_phrases, other_nouns

    text = "He drops his blue blanket by the elevator doors while a man watches the TV."
    assert [t.text for t in other_nouns(text)] == ["blanket", "elevator", "doors"]
    assert [t.text for t in other_nouns(text, skip=[(14, 26)])] == ["elevator", "doors"]  # "blue blanket" skipped
    asked = set(_asked(hs.build_questions(text)))
    assert {"Is there a blanket?", "Is there an elevator?", "Are there doors?", "Is there a man?"} <= asked
    # every phrase OWL-ViT is asked for in this plain text is also asked about (persons by their words)
    for phrase in (p.text for p in entity_phrases(text)):
        assert any(f" {phrase}?" in q.lower() for q in asked), phrase


def test_questions_are_capped_entities_first():
    things = ["cup", "dog", "cat", "car", "bus", "bed", "chair", "couch", "clock", "vase", "bowl", "book", "kite"]
    text = " ".join(f"<gdo obj{i}>a {t}</gdo>" for i, t in enumerate(things))
    questions = hs.build_questions(parse_segment(f"<gdo char1>Ann</gdo> <gda char1>holds</gda> {text}.", 1))
    assert len(questions) == hs.MAX_QUESTIONS < len(things) + 1
    assert all(q.kind == "entity" for q in questions)


# ----------------------------------------------------------------------------- evidence


def _q(qid, kind="entity", parents=()):
    return hs.Question(qid, f"{qid}?", kind, tuple(parents))


def test_question_evidence_zeroes_questions_whose_parents_fail():
    questions = [_q("e1"), _q("e2"), _q("a1", "action", ["e1"]), _q("r1", "relation", ["e1", "e2"]),
                 _q("a2", "action", ["a1"]), _q("r2", "relation", ["r1"]), _q("a3", "action", ["e3"]), _q("e3")]
    answers = {"e1?": 0.8, "e2?": 0.3, "a1?": 0.6, "r1?": 0.9, "a2?": 0.4, "r2?": 0.7, "a3?": 0.5, "e3?": 0.5}
    with pytest.raises(ValueError, match="not asked before"):
        hs.question_evidence(questions, answers)
    questions = [*questions[:6], questions[7], questions[6]]  # e3 before a3
    evidence = hs.question_evidence(questions, answers)
    # counted: e1 .8, e2 .3, a1 .6 (e1 holds), r1 0 (e2 fails), a2 .4 (a1 holds), r2 0 (r1 not counted),
    # e3 .5, a3 .5 (e3 holds at exactly 0.5): (0.8 + 0.3 + 0.6 + 0.4 + 0.5 + 0.5) / 8 = 0.3875
    assert evidence["question_score"] == pytest.approx(3.1 / 8)
    assert evidence["question_informative"] is True and evidence["n_questions"] == 8
    assert evidence["question_state"] == "checked"
    rows = {r["question"]: r for r in evidence["questions"]}
    assert [rows[f"{q}?"]["counted"] for q in ("e1", "e2", "a1", "r1", "a2", "r2", "e3", "a3")] == [
        True, True, True, False, True, False, True, True]
    assert rows["r1?"]["p_yes"] == 0.9 and rows["r1?"]["parents"] == ["e1?", "e2?"]
    assert rows["r1?"]["kind"] == "relation"
    with pytest.raises(ValueError, match="no answer"):
        hs.question_evidence([_q("e1")], {})


def test_question_evidence_without_questions_is_not_informative():
    assert hs.question_evidence([], {}) == {"question_score": 0.0, "question_state": "nothing to check",
                                            "question_informative": False, "n_questions": 0, "questions": []}


# ----------------------------------------------------------------------------- features


def test_question_features_reuse_answers_and_explain_them(vqa, story_3920, tmp_path):
    segment = {s.frame: s for s in story_3920.segments}[9]
    swapped = segment.tagged.replace("a cell phone", "an umbrella")
    rows = [("pos", "3920", 9, segment.plain, segment.tagged), ("neg", "3920", 9, parse_segment(swapped, 9).plain,
                                                                  swapped),
            ("plain", "3920", 9, "A man holds a cell phone on the couch.", "A man holds a cell phone on the couch."),
            ("bad", "3920", 2, segment.plain, segment.tagged)]
    pairs = pd.DataFrame([{"pair_id": p, "story_id": s, "frame": f, "text": t, "tagged_text": g,
                           "source_story_id": "3920", "source_frame": 9} for p, s, f, t, g in rows])
    frames = {("3920", 9): png(9), ("3920", 2): b"not an image"}
    table = hs.question_features(vqa, pairs, frames, cache_path=tmp_path, batch_size=4)
    assert list(table.columns) == ["pair_id", *hs.QUESTION_COLUMNS]
    by_pair = table.set_index("pair_id")
    built = {"pos": hs.build_questions(segment),
             "neg": hs.build_questions(parse_segment(swapped, 9)),
             "plain": hs.build_questions("A man holds a cell phone on the couch.")}
    answers, _ = hv.answer_yes(vqa, frames, {("3920", 9): [q.question for qs in built.values() for q in qs]},
                               tmp_path, batch_size=4)
    p_yes = dict(zip(answers["question"], answers["p_yes"]))
    for pair_id, questions in built.items():
        expected = hs.question_evidence(questions, p_yes)
        assert by_pair.at[pair_id, "question_score"] == pytest.approx(expected["question_score"])
        assert json.loads(by_pair.at[pair_id, "questions"]) == expected["questions"]
        assert by_pair.at[pair_id, "n_questions"] == len(questions) > 0
    assert "Is there a man?" in by_pair.at["pos", "questions"], "described by the text's 'he', not the chain of thought"
    assert "holding his face" not in by_pair.at["pos", "questions"], "the chain of thought's description of char1"
    assert "Is a man grabbing an umbrella?" in by_pair.at["neg", "questions"]
    assert '"action"' not in by_pair.at["plain", "questions"], "plain text asks no action"
    assert not by_pair.at["bad", "question_informative"] and by_pair.at["bad", "question_score"] == 0.0
    assert by_pair.at["bad", "question_state"] == "not computed" and by_pair.at["pos", "question_state"] == "checked"
    assert {q["p_yes"] for q in json.loads(by_pair.at["bad", "questions"])} == {None}
    counts = table.attrs["counts"]
    shared = {q.question for q in built["pos"]} & {q.question for q in built["neg"]}
    assert shared and counts["question_slots"] == sum(len(qs) for qs in built.values()) + len(built["pos"])
    assert counts["answers"] == len({q.question for qs in built.values() for q in qs}) + len(built["pos"])
    assert counts["answers"] < counts["question_slots"] and counts["frames_skipped"] == 1
    assert counts["frames_encoded"] == 1, "frame 9 once for all its pairs; frame 2 does not decode"
    alone = hs.question_features(vqa, pairs.iloc[2:3], frames, cache_path=tmp_path, batch_size=4)
    assert alone["question_score"].tolist() == [by_pair.at["plain", "question_score"]]
    assert alone.attrs["counts"]["frames_encoded"] == 0, "every answer was cached"
