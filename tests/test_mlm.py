"""Tests for helpers.mlm: loading (random, local folder, Hub id offline) and cached span scores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import helpers.weights
from helpers.weights import load_model, weights_available

from helpers import mlm as hm
from helpers.smoke import mlm as smoke_mlm
from helpers.config import MissingAssetError

TEXT = "James sits on the couch and holds a cup of tea. The dog sleeps under the table."


@pytest.fixture(scope="module")
def random_mlm(tmp_path_factory) -> hm.Mlm:
    return load_model(hm.MLM, "random", models_dir=tmp_path_factory.mktemp("models"), seed=3, device="cpu")


class _NoForward:
    """Stands in for a model: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was used ({name}) although every score was cached")


def test_random_model_is_saved_and_loaded_back_through_its_folder(tmp_path):
    first = load_model(hm.MLM, "random", models_dir=tmp_path, seed=5, device="cpu")
    folder = tmp_path / smoke_mlm.RANDOM_FOLDER
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert first.model.config.model_type == "roberta" and first.model.config.num_hidden_layers == 2
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = load_model(hm.MLM, "random", models_dir=tmp_path, seed=5, device="cpu")  # reused, not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp and again.identity == first.identity
    from_folder = load_model(hm.MLM, str(folder), models_dir=tmp_path / "unused", device="cpu")
    assert from_folder.identity == first.identity and from_folder.tokenizer.mask_token == "<mask>"
    other = load_model(hm.MLM, "random", models_dir=tmp_path, seed=6, device="cpu")
    assert other.identity != first.identity
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*")), "no staging folder left behind"


def test_offline_tokenizer_is_deterministic_and_encodes_anything():
    a, b = smoke_mlm.offline_tokenizer(), smoke_mlm.offline_tokenizer()
    assert a.get_vocab() == b.get_vocab() and a.mask_token_id == len(a) - 1
    assert a.convert_ids_to_tokens(a(" a cup on the table")["input_ids"])[1:-1] == ["Ġa", "Ġcup", "Ġon", "Ġthe",
                                                                                   "Ġtable"]
    ids = a("Zyxw, qq!")["input_ids"]
    assert a.decode(ids, skip_special_tokens=True) == "Zyxw, qq!" and a.unk_token_id not in ids


def test_weights_available_and_missing(tmp_path, monkeypatch):
    assert weights_available(hm.MLM, "random")
    assert not weights_available(hm.MLM, str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(hm.MLM, str(tmp_path), models_dir=tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(helpers.weights, "hub_reachable", lambda *a, **k: False)
    assert not weights_available(hm.MLM, hm.MODEL_ID)
    with pytest.raises(MissingAssetError) as err:
        load_model(hm.MLM, hm.MODEL_ID, models_dir=tmp_path)
    assert hm.MODEL_ID in str(err.value) and "HF_HOME" in str(err.value) and "PROFILE=smoke" in str(err.value)


def test_preflight_names_the_language_model_when_offline(tmp_path, monkeypatch):
    from helpers import runner
    from helpers.config import load_profile

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    cfg = load_profile("quick")
    with pytest.raises(MissingAssetError, match="masked language model weights 'distilroberta-base'"):
        runner.preflight(cfg)
    cfg["mlm"]["weights"] = "random"
    with pytest.raises(MissingAssetError) as err:
        runner.preflight(cfg)
    assert "masked language model weights" not in str(err.value)


def test_span_logprob_batched_equals_unbatched_and_cache_hits_skip_the_model(random_mlm, tmp_path):
    import torch

    items = [(TEXT, TEXT.index("cup"), TEXT.index("cup") + 3), (TEXT, TEXT.index("couch"), TEXT.index("couch") + 5),
             (TEXT, 0, 5), (TEXT, TEXT.index("cup of tea"), TEXT.index("cup of tea") + 10), ("A TV.", 2, 4)]
    one = hm.span_logprob(random_mlm, items, tmp_path / "one", batch_size=1)
    many = hm.span_logprob(random_mlm, items, tmp_path / "many", batch_size=64)
    assert one.shape == (5,) and np.all(one < 0)
    np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-5)
    # a span of several tokens is the mean of its tokens, each masked in turn
    span = (TEXT, TEXT.index("cup of tea"), TEXT.index("cup of tea") + 10)
    ids, inside = hm._encode(random_mlm, *span)
    per_token = []
    for i in inside:
        masked = list(ids)
        masked[i] = random_mlm.tokenizer.mask_token_id
        with torch.inference_mode():
            logits = random_mlm.model(input_ids=torch.tensor([masked])).logits[0, i]
        per_token.append(float(logits.log_softmax(-1)[ids[i]]))
    assert len(per_token) > 1
    assert one[3] == pytest.approx(np.mean(per_token), abs=1e-4)
    blind = dataclasses.replace(random_mlm, model=_NoForward())
    np.testing.assert_array_equal(hm.span_logprob(blind, items[::-1], tmp_path / "many"), many[::-1])
    with pytest.raises(AssertionError, match="the model was used"):
        hm.span_logprob(blind, [(TEXT, 5, 9)], tmp_path / "many")


def test_span_logprob_is_the_masked_token_probability(random_mlm, tmp_path):
    """For a one-token span, the pseudo-log-likelihood is fill-mask's score of that token."""
    import torch

    start = TEXT.index(" cup") + 1
    (score,) = hm.span_logprob(random_mlm, [(TEXT, start, start + 3)], tmp_path / "a")
    masked = TEXT[:start] + random_mlm.tokenizer.mask_token + TEXT[start + 3 :]
    enc = random_mlm.tokenizer(masked, return_tensors="pt")
    position = enc["input_ids"][0].tolist().index(random_mlm.tokenizer.mask_token_id)
    with torch.inference_mode():
        logits = random_mlm.model(**enc).logits[0, position]
    cup = random_mlm.tokenizer(" cup", add_special_tokens=False)["input_ids"]
    assert len(cup) == 1
    assert score == pytest.approx(float(logits.log_softmax(-1)[cup[0]]), abs=1e-4)
    (fill,) = hm.fill_logprob(random_mlm, [(TEXT, start, start + 3)], [["cup", "clock"]], tmp_path / "f")
    assert fill[0] == pytest.approx(score, abs=1e-4) and fill[1] != fill[0]


def test_long_texts_are_windowed_around_the_span(random_mlm, tmp_path):
    long = " ".join(["the room is quiet"] * 300) + " and a cup stands there."
    start = long.index("cup")
    (score,) = hm.span_logprob(random_mlm, [(long, start, start + 3)], tmp_path / "long")
    assert np.isfinite(score)
    with pytest.raises(ValueError, match="not inside"):
        hm.span_logprob(random_mlm, [(TEXT, 5, 500)], tmp_path / "bad")


def test_fill_logprob_scores_every_token_of_a_candidate(random_mlm, tmp_path):
    """A candidate of several tokens is the mean, over its tokens, of each token's log-probability
    at its own mask, the masks filled at once; candidates of one length share one forward pass."""
    import torch

    start = TEXT.index(" cup") + 1
    words = ["cup", "cell phone", "wine glass", "clock"]
    tokens = [random_mlm.tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in words]
    assert sorted({len(t) for t in tokens}) != [1]
    (fill,) = hm.fill_logprob(random_mlm, [(TEXT, start, start + 3)], [words], tmp_path / "f")
    assert fill.shape == (4,) and np.all(np.isfinite(fill))
    for w, t, score in zip(words, tokens, fill):
        masked = TEXT[:start] + random_mlm.tokenizer.mask_token * len(t) + TEXT[start + 3 :]
        enc = random_mlm.tokenizer(masked, return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        first = ids.index(random_mlm.tokenizer.mask_token_id)
        with torch.inference_mode():
            logits = random_mlm.model(**enc).logits[0].log_softmax(-1)
        expected = np.mean([float(logits[first + j, tok]) for j, tok in enumerate(t)])
        assert score == pytest.approx(expected, abs=1e-4), w
    # the first token alone is not the score of a longer candidate
    two = next(n for n, t in enumerate(tokens) if len(t) > 1)
    (first_only,) = hm.fill_logprob(random_mlm, [(TEXT, start, start + 3)], [[words[two].split()[0]]], tmp_path / "g")
    assert first_only[0] != pytest.approx(fill[two], abs=1e-6)
