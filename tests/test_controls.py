"""The blind controls the construction never used: the causal language model (loading from a folder the
test writes, the Hub offline, the scoring against a hand computation, batching and the cache), the
control_lm profile key, and the story-consistency statistic of object swaps."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import helpers.weights
from helpers.weights import load_model
from helpers import mlm as hm
from helpers.config import MissingAssetError, check_control_lm, load_profile
from helpers.evaluation import causal_lm_rows, control_section, mean_token_logprob, story_consistency_rows
from helpers.pairs import noun_forms, story_consistency
from helpers.smoke import mlm as smoke_mlm

TEXTS = ["James sits on the couch and holds a cup of tea.", "The dog sleeps.",
         "A man in a coat stands near the window of the car and looks at the street for a long time."]


class _NoForward:
    """Stands in for a model: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was used ({name}) although every score was cached")


@pytest.fixture(scope="module")
def causal(tmp_path_factory) -> hm.Mlm:
    folder = smoke_mlm.build_random_causal_lm(tmp_path_factory.mktemp("gpt2") / "weights", seed=7)
    return load_model(hm.CAUSAL_LM, str(folder), models_dir=tmp_path_factory.mktemp("unused"), device="cpu")


# ----------------------------------------------------------------------------- loading


def test_random_gpt2_is_saved_and_loaded_back_through_its_folder(tmp_path):
    first = load_model(hm.CAUSAL_LM, "random", models_dir=tmp_path, seed=5, device="cpu")
    folder = tmp_path / smoke_mlm.RANDOM_CAUSAL_FOLDER
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert first.model.config.model_type == "gpt2" and first.model.config.n_layer == 2
    assert type(first.model).__name__ == "GPT2LMHeadModel" and first.tokenizer.bos_token == "<|endoftext|>"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = load_model(hm.CAUSAL_LM, "random", models_dir=tmp_path, seed=5, device="cpu")  # reused, not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp and again.identity == first.identity
    from_folder = load_model(hm.CAUSAL_LM, str(folder), models_dir=tmp_path / "unused", device="cpu")
    assert from_folder.identity == first.identity
    assert load_model(hm.CAUSAL_LM, "random", models_dir=tmp_path, seed=6, device="cpu").identity != first.identity
    masked = load_model(hm.MLM, "random", models_dir=tmp_path, seed=5, device="cpu")  # the two live side by side
    assert masked.model.config.model_type == "roberta" and (tmp_path / smoke_mlm.RANDOM_FOLDER).is_dir()


def test_offline_gpt2_tokenizer_encodes_anything_with_gpt2s_special_token():
    tok = smoke_mlm.offline_gpt2_tokenizer()
    assert tok.bos_token_id == tok.eos_token_id == len(tok) - 1 and tok.mask_token is None
    ids = tok("Zyxw, qq! a cup")["input_ids"]
    assert tok.decode(ids) == "Zyxw, qq! a cup" and tok.convert_ids_to_tokens(ids)[-1] == "Ġcup"


def test_causal_weights_missing_offline_or_in_an_empty_folder_are_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(hm.CAUSAL_LM, str(tmp_path), models_dir=tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(helpers.weights, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(MissingAssetError) as err:
        load_model(hm.CAUSAL_LM, "gpt2", models_dir=tmp_path)
    assert "causal language model weights 'gpt2'" in str(err.value) and "HF_HOME" in str(err.value)


def test_preflight_names_the_control_language_model_when_offline(tmp_path, monkeypatch):
    from helpers import runner

    for var in ("HF_HOME", "TORCH_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(MissingAssetError, match="control language model weights 'gpt2'"):
        runner.preflight(load_profile("quick"))


@pytest.mark.parametrize("name", ["smoke", "quick", "full"])
def test_every_profile_names_its_control_language_model(name):
    lm = load_profile(name)["control_lm"]
    assert lm["weights"] == ("random" if name == "smoke" else "gpt2") and lm["batch_size"] > 0


@pytest.mark.parametrize("bad", [None, {"weights": "gpt2"}, {"weights": "", "batch_size": 4},
                                 {"weights": "gpt2", "batch_size": 0}, {"weights": 3, "batch_size": 4}])
def test_a_bad_control_lm_section_is_refused(bad):
    cfg = load_profile("smoke")
    cfg["control_lm"] = bad
    with pytest.raises(ValueError, match="control_lm needs weights"):
        check_control_lm(cfg)
    with pytest.raises(ValueError, match="control_lm needs weights"):
        load_profile("smoke", {"control_lm": {"batch_size": -1}})


# ----------------------------------------------------------------------------- scoring


def test_mean_token_logprob_is_the_hand_computed_mean_of_next_token_logprobs(causal, tmp_path):
    text = "a cup on the table"
    ids = [causal.tokenizer.bos_token_id, *causal.tokenizer(text, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logits = causal.model(torch.tensor([ids])).logits[0]
    by_hand = np.mean([torch.log_softmax(logits[t - 1], -1)[ids[t]].item() for t in range(1, len(ids))])
    assert len(ids) > 3
    assert mean_token_logprob(causal, [text], tmp_path / "c")[0] == pytest.approx(by_hand, abs=1e-5)


def test_batching_and_padding_leave_the_scores_alone_and_the_cache_skips_the_model(causal, tmp_path):
    one = mean_token_logprob(causal, TEXTS, tmp_path / "one", batch_size=1)
    many = mean_token_logprob(causal, TEXTS, tmp_path / "many", batch_size=3)
    np.testing.assert_allclose(many, one, atol=1e-5)
    assert len(set(np.round(one, 6))) == 3 and (one < 0).all()
    cached = dataclasses.replace(causal, model=_NoForward())
    np.testing.assert_array_equal(mean_token_logprob(cached, TEXTS[::-1] + TEXTS[:1], tmp_path / "one"),
                                  np.r_[one[::-1], one[:1]])
    other = load_model(hm.CAUSAL_LM, "random", models_dir=tmp_path / "models", seed=8, device="cpu")
    assert not np.allclose(mean_token_logprob(other, TEXTS, tmp_path / "one"), one)  # keyed by the model too


def test_a_text_the_model_cannot_hold_is_an_error(tmp_path):
    folder = smoke_mlm.build_random_causal_lm(tmp_path / "short", seed=1, n_positions=6)
    lm = load_model(hm.CAUSAL_LM, str(folder), models_dir=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="tokens, the model scores 1 to 5"):
        mean_token_logprob(lm, [TEXTS[2]], tmp_path / "c")
    with pytest.raises(ValueError, match="0 tokens"):
        mean_token_logprob(lm, [""], tmp_path / "c")


def _frame_pairs() -> pd.DataFrame:
    own = "He sits down. He holds the cup near a dog. The room is dark."
    swap = own.replace("cup", "knife")
    start = own.index("cup")
    rows = [
        ("p1", "s1", 1, 1, "", own, -1, -1), ("n1", "s1", 1, 0, "object_swap", swap, start, start + len("knife")),
        ("p2", "s1", 2, 1, "", "She laughs.", -1, -1), ("n2", "s1", 2, 0, "other_story", "A car waits outside.", -1, -1),
        ("p3", "s2", 1, 1, "", "The dog sleeps.", -1, -1), ("n3", "s2", 1, 0, "object_swap", "The cat sleeps.", 0, 3),
    ]  # fmt: skip
    cols = ["pair_id", "story_id", "frame", "label", "negative_type", "text", "swap_start", "swap_end"]
    return pd.DataFrame(rows, columns=cols).assign(split="test", block=lambda t: t["story_id"].map({"s1": "b1",
                                                                                                    "s2": "b2"}))


def test_causal_rows_score_the_edited_sentence_for_swaps_and_whole_texts_otherwise(causal, tmp_path):
    rows = causal_lm_rows(_frame_pairs(), causal, tmp_path / "c", batch_size=2)
    assert rows.attrs["unlocated"] == 1  # "The cat" is not "The dog" edited at [0, 3)
    assert list(rows["pair_id"]) == ["p1", "n1", "p2", "n2"] and list(rows["label"]) == [1, 0, 1, 0]
    expected = mean_token_logprob(causal, ["He holds the cup near a dog.", "He holds the knife near a dog.",
                                           "She laughs.", "A car waits outside."], tmp_path / "c")
    np.testing.assert_allclose(rows["score"], expected)
    section = control_section(rows, "causal", n_resamples=20, seed=0)
    assert section["paired"]["all"]["frames"] == 2 and set(section["by_negative_type"]) == {"object_swap",
                                                                                             "other_story"}


def test_causal_rows_score_the_own_text_against_each_of_several_negatives_of_a_frame(causal, tmp_path):
    pairs = _frame_pairs()
    own = pairs.loc[0, "text"]
    start = own.index("The room")
    extra = pairs.iloc[[1]].assign(pair_id="n1b", negative_type="relation_swap", text=own.replace("The room", "A room"),
                                   swap_start=start, swap_end=start + len("A room"))
    rows = causal_lm_rows(pd.concat([pairs, extra], ignore_index=True), causal, tmp_path / "c", batch_size=2)
    frame = rows[(rows["story_id"] == "s1") & (rows["frame"] == 1)]
    assert list(frame["pair_id"]) == ["p1", "n1", "p1", "n1b"]  # the own text once per negative, read against it
    assert list(frame["negative_type"]) == ["object_swap"] * 2 + ["relation_swap"] * 2
    expected = mean_token_logprob(causal, ["He holds the cup near a dog.", "The room is dark."], tmp_path / "c")
    np.testing.assert_allclose(frame.loc[frame["label"] == 1, "score"], expected)  # each its edit's sentence
    section = control_section(rows, "causal", n_resamples=20, seed=0)
    assert section["paired"]["all"]["outcomes"] == 3 and section["paired"]["all"]["frames"] == 2
    assert section["paired"]["relation_swap"]["frames"] == 1


# ----------------------------------------------------------------------------- story consistency


def _story(story_id: str, *plains: str) -> SimpleNamespace:
    return SimpleNamespace(story_id=story_id, segments=tuple(SimpleNamespace(frame=i + 1, plain=p)
                                                             for i, p in enumerate(plains)))


def test_noun_forms_read_both_numbers():
    assert noun_forms("Cups,") == {"cup", "cups"} and noun_forms("knives") == {"knife", "knives"}
    assert noun_forms("box") == {"box", "boxes"} and noun_forms("glasses") == {"glasses"}


def test_story_consistency_counts_the_replaced_and_the_inserted_noun_in_the_other_frames():
    pairs = _frame_pairs()
    stories = [_story("s1", "He holds the cup near a dog. The room is dark.", "Two cups stand there. A cup falls.",
                      "Nobody has a knife? The cup!"),
               _story("s2", "The dog sleeps.")]
    counts = story_consistency(pairs, stories)
    assert counts.attrs == {"unlocated": 1, "unpaired": 0}
    assert counts[["pair_id", "own_pair_id", "replaced_word", "inserted_word", "replaced", "inserted"]].values.tolist() \
        == [["n1", "p1", "cup", "knife", 3, 1]]  # the frame's own segment is not counted
    rows = story_consistency_rows(pairs, stories)
    assert rows[["pair_id", "label", "block", "score"]].values.tolist() == [["p1", 1, "b1", 3.0],
                                                                          ["n1", 0, "b1", 1.0]]
    assert control_section(rows, "story", n_resamples=20, seed=0)["paired"]["object_swap"]["value"] == 1.0
    lone = story_consistency(pairs[pairs["pair_id"] != "p1"], stories)
    assert lone.empty and lone.attrs["unpaired"] == 1


def test_story_consistency_reads_the_head_nouns_not_an_agreeing_verb():
    # "The tie hangs." -> "The scissors hang.": the edit's last word is the verb; the nouns are what is counted
    own, edited = "The tie hangs.", "The scissors hang."
    common = {"story_id": "s1", "frame": 1, "split": "test", "block": "b1", "swap_start": 4, "swap_end": 17}
    pairs = pd.DataFrame([{**common, "pair_id": "p1", "label": 1, "negative_type": "", "text": own},
                          {**common, "pair_id": "n1", "label": 0, "negative_type": "object_swap", "text": edited}])
    stories = [_story("s1", own, "His tie is red. A tie again.", "Scissors cut.")]
    counts = story_consistency(pairs, stories)
    assert counts[["replaced_word", "inserted_word", "replaced", "inserted"]].values.tolist() == [
        ["tie", "scissors", 2, 1]]


def test_blind_findings_name_pairwise_text_and_label_the_controls_at_chance_by_construction():
    from helpers import dashboards as db

    est = {"value": 0.5, "low": 0.4, "high": 0.6}
    doc = {"models": {"text_only": {"paired": {"all": est}}, "pairwise_text": {"paired": {"all": est}}},
           "controls": {"mlm_plausibility": {"paired": {"all": est}}, "causal_lm": {"paired": {"all": est}}}}
    lines = db.blind_findings(doc)
    assert [line.split(":")[0] for line in lines] == [
        "Blind control `text_only` (aimed at chance by the construction", "Blind control `pairwise_text`",
        "Blind control `mlm_plausibility` (aimed at chance by the construction", "Blind control `causal_lm`"]
    assert "the blind filter's own recipe" in lines[0] and "the score that chose the edits" in lines[2]
