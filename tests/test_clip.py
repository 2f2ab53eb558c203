"""helpers.clip: weights, tokenizer, sentence splitting, cached embeddings and pair scores.

Most tests use a tiny CLIP (width 32, 2 layers, 32 px images) saved to disk and loaded
back through the same local-folder path real weights take; the ViT-B/32 architecture is
checked on its configuration, instantiated on the meta device (no memory, no time).
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers.weights
from helpers.weights import load_model, weights_available
import torch
from PIL import Image

from helpers import clip as hc
from helpers import semantics as hs
from helpers.smoke import clip as smoke_clip
from helpers.config import MissingAssetError
from helpers.io import read_cache
from helpers.tags import parse_story, strip_tags
from helpers.io import stable_hash

from conftest import STORY_3920 as FIXTURE  # a real story, verbatim from the Hub

#: A small story in the dataset's format (written for these tests), so the scoring tests
#: run anywhere. Segment 2 closes a tag with the wrong name, as the dataset sometimes does.
STORY = """
<gdi image1>
<gdo char1>Mr. Hale</gdo> <gda char1>enters</gda> a dim office full of <gdo obj1>cardboard boxes</gdo>. \
He looks around. The <gdl bg1>neutral lighting</gdl> makes the room feel colder than it is. Nobody answers. \
A chair lies on its side near the wall, and a coat hangs from a hook by the door, still damp from the rain.
</gdi>
<gdi image2>
<gdo char2>Ana</gdo> <gda char2>stands</gdo> by the <gdo obj2>window</gdo>, holding a <gdo obj3>cell phone</gdo>. \
"Not now!" she whispers. The street below is empty. She waits for the call that never comes. \
Her reflection in the glass looks tired, and the city lights blink on one by one behind it.
</gdi>
<gdi image3>
The two of <gdo char1 char2>them</gdo> <gda char1>sit</gda> at a <gdo obj4>table</gdo>. A lamp flickers above. \
Neither of them speaks. The tension in the room is palpable, and the clock on the wall ticks on. \
A cup of coffee has gone cold between them, and a folded letter waits on the edge of the table.
</gdi>
<gdi image4>
<gdo char1>Hale</gdo> <gda char1>opens</gda> the <gdo obj5>door</gdo> to the hallway. Light spills in. \
He hesitates... Then he steps out, leaving the boxes, the phone and the silence behind him. \
His footsteps echo down the long corridor until the elevator doors close.
</gdi>
<gdi image5>
A <gdo obj6>dog</gdo> <gda obj6>sleeps</gda> on the <gdo obj7>couch</gdo>. Outside, rain falls on the city. \
Dr. Ruiz watches from across the street. She has seen this before. \
A bus passes, its windows fogged, and a man with an umbrella hurries toward the corner shop.
</gdi>
"""


def tiny_config(tokenizer):
    from transformers import CLIPConfig

    size = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    return CLIPConfig(
        text_config=dict(size, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(size, image_size=32, patch_size=8),
        projection_dim=16,
    )


def png(seed: int, size=(575, 240)) -> bytes:
    """A random RGB frame of the dataset's shape, PNG-encoded."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def segments():
    return parse_story(STORY)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random CLIP, saved and loaded back through the local-folder path."""
    tokenizer = smoke_clip.offline_tokenizer()
    folder = smoke_clip.build_random_clip(tmp_path_factory.mktemp("models") / "tiny", seed=0,
                                  config=tiny_config(tokenizer), tokenizer=tokenizer)
    return load_model(hc.CLIP, str(folder), models_dir=folder.parent, device="cpu")


@pytest.fixture()
def pairs(segments):
    """Five pairs over two stories: positives, a swapped text, and a frame that does not decode."""
    seg = {s.frame: s for s in segments}
    rows = [("p1", "s1", 1, seg[1]), ("p2", "s1", 2, seg[2]), ("n1", "s1", 1, seg[3]),
            ("p3", "s2", 1, seg[4]), ("bad", "s2", 2, seg[5])]
    table = pd.DataFrame([{"pair_id": p, "story_id": s, "frame": f, "text": g.plain, "tagged_text": g.tagged,
                           "label": int(p != "n1"), "negative_type": "same_story" if p == "n1" else ""}
                          for p, s, f, g in rows])
    frames = {("s1", 1): png(1), ("s1", 2): png(2), ("s2", 1): png(3), ("s2", 2): b"\xff\xd8 not a jpeg"}
    return table, frames


# ----------------------------------------------------------------------------- weights


def test_offline_tokenizer_is_deterministic_and_clip_shaped(tmp_path):
    from transformers import CLIPTokenizer

    a, b = smoke_clip.offline_tokenizer(), smoke_clip.offline_tokenizer()
    assert a.get_vocab() == b.get_vocab() and a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert (a.bos_token, a.eos_token, a.pad_token) == ("<|startoftext|>", "<|endoftext|>", "<|endoftext|>")
    assert a.model_max_length == hc.MAX_TOKENS and len(a) <= 49408
    ids = a("The room looks dark.")["input_ids"]
    assert a.convert_ids_to_tokens(ids) == ["<|startoftext|>", "the</w>", "room</w>", "looks</w>", "dark</w>",
                                            ".</w>", "<|endoftext|>"]
    odd = a("Zürich — C-3PO's 42° café")["input_ids"]  # unlisted words and non-ASCII fall back to bytes
    assert a.unk_token_id not in odd[1:-1] and a.decode(odd, skip_special_tokens=True).startswith("zürich")
    a.save_pretrained(tmp_path)
    assert CLIPTokenizer.from_pretrained(tmp_path)("The room looks dark.")["input_ids"] == ids


def test_vit_b32_config_is_the_real_architecture():
    from transformers import CLIPModel

    config = smoke_clip.vit_b32_config(smoke_clip.offline_tokenizer())
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (512, 12, 8)
    assert (text.intermediate_size, vision.intermediate_size) == (2048, 3072)
    assert (text.vocab_size, text.max_position_embeddings) == (49408, 77)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (768, 12, 12)
    assert (vision.image_size, vision.patch_size, config.projection_dim) == (224, 32, 512)
    with torch.device("meta"):
        model = CLIPModel(config)
    assert sum(p.numel() for p in model.parameters()) == 151_277_313  # openai/clip-vit-base-patch32's count


def test_random_spec_saves_then_loads_from_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(smoke_clip, "vit_b32_config", tiny_config)  # same path, tiny size
    first = load_model(hc.CLIP, "random", models_dir=tmp_path, seed=7, device="cpu")
    folder = tmp_path / hc.RANDOM_FOLDER
    saved = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= saved
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = load_model(hc.CLIP, "random", models_dir=tmp_path, seed=7, device="cpu")
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp, "same seed: the saved folder is reused"
    assert again.identity == first.identity
    rebuilt = load_model(hc.CLIP, "random", models_dir=tmp_path / "elsewhere", seed=7, device="cpu")
    assert rebuilt.identity == first.identity, "the seed alone fixes the weights"
    tokenizer = hc.load_tokenizer("random", models_dir=tmp_path, seed=7)
    assert tokenizer.get_vocab() == first.tokenizer.get_vocab() == smoke_clip.offline_tokenizer().get_vocab()
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    other = load_model(hc.CLIP, "random", models_dir=tmp_path, seed=8, device="cpu")
    assert other.identity != first.identity
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*")), "no staging folder left behind"


def test_offline_uncached_hub_id_raises_missing_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(helpers.weights, "hub_reachable", lambda *a, **k: False)
    assert not weights_available(hc.CLIP, hc.MODEL_ID)
    with pytest.raises(MissingAssetError, match="HF_HOME"):
        hc.load_tokenizer(hc.MODEL_ID, models_dir=tmp_path)
    with pytest.raises(MissingAssetError) as err:
        load_model(hc.CLIP, hc.MODEL_ID, models_dir=tmp_path)
    message = str(err.value)
    assert hc.MODEL_ID in message and "HF_HOME" in message and str(tmp_path / "hf") in message
    assert "PROFILE=smoke" in message


def test_cached_hub_id_loads_offline_from_hf_home(tmp_path, monkeypatch, tiny):
    """A Hub id found in HF_HOME's cache loads with no network, from that cache."""
    snapshot = tmp_path / "hf" / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny.model.name_or_path, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(helpers.weights, "hub_reachable", lambda *a, **k: False)
    assert weights_available(hc.CLIP, hc.MODEL_ID)
    loaded = load_model(hc.CLIP, hc.MODEL_ID, models_dir=tmp_path, device="cpu")
    assert loaded.identity == tiny.identity and loaded.source == hc.MODEL_ID


def test_weights_available_for_random_and_folders(tmp_path, tiny):
    assert weights_available(hc.CLIP, "random")
    assert weights_available(hc.CLIP, str(Path(tiny.model.name_or_path)))
    assert not weights_available(hc.CLIP, str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(hc.CLIP, str(tmp_path), models_dir=tmp_path)


# -------------------------------------------------------------------------------- text


def test_split_sentences_keeps_all_text_and_strips_tags_on_a_real_story():
    segments = parse_story(FIXTURE.read_text(encoding="utf-8"))
    assert len(segments) == 17
    for seg in segments:
        sentences = hs.split_sentences(seg.tagged)
        assert len(sentences) >= 3, seg.frame
        assert " ".join(sentences) == strip_tags(seg.tagged) == seg.plain
        assert all("<" not in s and ">" not in s and s == s.strip() and s[-1] in ".!?\"'" for s in sentences)
    first = hs.split_sentences(segments[0].tagged)
    assert first[1] == "His face reflects the calm before the storm."


def test_split_sentences_on_the_built_in_story(segments):
    assert [len(hs.split_sentences(seg.tagged)) for seg in segments] == [5, 5, 5, 5, 5]
    for seg in segments:
        assert " ".join(hs.split_sentences(seg.tagged)) == seg.plain
    assert hs.split_sentences(segments[1].tagged)[:2] == ["Ana stands by the window, holding a cell phone.",
                                                          '"Not now!" she whispers.']


@pytest.mark.parametrize("text, expected", [
    ("Mr. Smith enters. Dr. Jones waits.", ["Mr. Smith enters.", "Dr. Jones waits."]),
    ('He says, "Stop!" She runs.', ['He says, "Stop!"', "She runs."]),
    ('"Run!" he shouts. Then silence.', ['"Run!" he shouts.', "Then silence."]),
    ("He waits... Nothing. J. R. Ewing leaves!", ["He waits...", "Nothing.", "J. R. Ewing leaves!"]),
    ("At 5 p.m. Then Mrs. Doe, e.g. Jane, left? yes.", ["At 5 p.m.", "Then Mrs. Doe, e.g. Jane, left? yes."]),
    ("She says no. Then I. Then etc. Gone.", ["She says no.", "Then I.", "Then etc.", "Gone."]),
    ("  ", []),
])
def test_split_sentences_cases(text, expected):
    assert hs.split_sentences(text) == expected


def test_split_sentences_keeps_tags_when_asked(segments):
    """The one splitter reads tagged text too: same sentences as the plain ones, tags kept whole."""
    tagged = '<gdi image1> <gdo char1>Dr. J. Doe</gdo> waits. <gda char1>He. Sits</gda> down. "Go!" I. </gdi>'
    assert hs.split_sentences(tagged, keep_tags=True) == [
        "<gdo char1>Dr. J. Doe</gdo> waits.", "<gda char1>He. Sits</gda> down.", '"Go!"', "I."]
    for seg in segments:
        kept = hs.split_sentences(seg.tagged, keep_tags=True)
        assert [strip_tags(s) for s in kept] == hs.split_sentences(seg.tagged)
        assert all(s.count("<gd") == s.count("</gd") for s in kept)


def test_visible_fraction_is_the_centre_square(tiny):
    assert hs.visible_fraction(tiny, 575, 240) == pytest.approx(240 / 575)
    assert hs.visible_fraction(tiny, 240, 600) == pytest.approx(240 / 600)
    assert hs.visible_fraction(tiny, 300, 300) == pytest.approx(1.0)


def test_token_lengths_count_special_tokens(tiny):
    assert hc.token_lengths(tiny.tokenizer, ["the room", ""]) == [4, 2]
    assert hc.token_lengths(tiny.tokenizer, []) == []


# ------------------------------------------------------------------------------ scores


def test_aggregates_on_known_values():
    values = [0.2, 0.9, 0.5, 0.7]
    assert hs.aggregate_scores(values, "max") == pytest.approx(0.9)
    assert hs.aggregate_scores(values, "mean") == pytest.approx(0.575)
    assert hs.aggregate_scores(values, "topk", top_k=2) == pytest.approx(0.8)
    assert hs.aggregate_scores(values, "topk", top_k=9) == pytest.approx(0.575)
    assert np.isnan(hs.aggregate_scores([], "max"))
    with pytest.raises(ValueError, match="aggregate"):
        hs.aggregate_scores(values, "median")
    assert hs.cosine_to_score(-1.0) == 0.0 and hs.cosine_to_score(1.0) == 1.0
    assert np.all(np.diff(hs.cosine_to_score(np.linspace(-1, 1, 9))) > 0)


def test_pair_scores_are_dot_products_of_cached_embeddings(tiny, pairs, tmp_path):
    table, frames = pairs
    result = hs.clip_features(tiny, table, frames, tmp_path, aggregate="topk", top_k=2, batch_size=4)
    feats = result.features.set_index("pair_id")
    assert list(result.features.columns) == ["pair_id", *hs.SCORE_COLUMNS, "clip_state"]

    # Read the vectors back from the cache files themselves, by their documented keys.
    images = read_cache(tmp_path / "images").set_index("key")
    texts = read_cache(tmp_path / "texts").set_index("key")

    def text_vec(text):
        return np.asarray(texts.at[hc._text_key(tiny, text), "embedding"])

    frame_key = hc._image_key(tiny, frames[("s1", 2)])
    sha1 = hashlib.sha1(frames[("s1", 2)]).hexdigest()
    assert frame_key == stable_hash({"v": 1, "clip": tiny.identity, "frame_sha1": sha1})
    image = np.asarray(images.at[frame_key, "embedding"])
    assert np.linalg.norm(image) == pytest.approx(1.0, abs=1e-5)
    row = table.set_index("pair_id").loc["p2"]
    sentence_scores = [(text_vec(s) @ image + 1) / 2 for s in hs.split_sentences(row["text"])]
    assert feats.at["p2", "n_sentences"] == len(sentence_scores)
    assert feats.at["p2", "clip_score_max"] == pytest.approx(max(sentence_scores))
    assert feats.at["p2", "clip_score_mean"] == pytest.approx(np.mean(sentence_scores))
    assert feats.at["p2", "clip_score_topk"] == pytest.approx(np.mean(sorted(sentence_scores)[-2:]))
    assert feats.at["p2", "clip_score"] == feats.at["p2", "clip_score_topk"]
    assert feats.at["p2", "clip_score_trunc77"] == pytest.approx((text_vec(row["text"]) @ image + 1) / 2)
    assert feats.at["p2", "clip_score_first150"] == pytest.approx((text_vec(row["tagged_text"][:150]) @ image + 1) / 2)

    # The cached vector is the model's own output, normalised.
    inputs = tiny.processor.image_processor(images=[Image.open(io.BytesIO(frames[("s1", 2)])).convert("RGB")],
                                            return_tensors="pt")
    with torch.inference_mode():
        direct = tiny.model.get_image_features(**inputs).pooler_output[0]
    assert np.allclose(image, (direct / direct.norm()).numpy(), atol=1e-5)

    # The undecodable frame is skipped and counted; its pair has no score rather than a made-up one.
    assert result.counts["frames_skipped"] == 1 and (~images["decoded"]).sum() == 1
    assert feats.loc["bad", ["clip_score", "clip_score_trunc77"]].isna().all()
    assert feats.at["bad", "clip_state"] == "not computed" and set(feats.drop(index="bad")["clip_state"]) == {"checked"}
    assert feats.drop(index="bad")[list(hs.SCORE_COLUMNS)].notna().all().all()
    assert feats.drop(index="bad")["clip_score"].between(0, 1).all()

    frame_rows = result.frames.set_index(["story_id", "frame"])
    assert frame_rows.loc[("s2", 1), ["decoded", "width", "height"]].tolist() == [True, 575, 240]
    counts = result.counts
    assert counts["frames"] == counts["frames_computed"] == 4
    distinct = {s for t in table["text"] for s in hs.split_sentences(t)}
    assert counts["sentences"] == counts["sentences_computed"] == len(distinct)
    assert counts["baseline_texts"] == counts["baseline_texts_computed"] == 2 * table["text"].nunique()
    assert len(result.sentences) == feats["n_sentences"].sum()
    segments = result.segments
    assert (segments["segment_truncated"] == (segments["segment_tokens"] > hc.MAX_TOKENS)).all()
    assert 0 < segments["segment_truncated"].sum() < len(segments), "the fixture has segments on both sides of 77"


def test_cached_rerun_computes_nothing(tiny, pairs, tmp_path):
    table, frames = pairs
    first = hs.clip_features(tiny, table, frames, tmp_path, batch_size=3)
    assert first.counts["frames_computed"] == 4 and first.counts["sentences_computed"] > 0
    again = hs.clip_features(tiny, table, frames, tmp_path, batch_size=3)
    assert again.counts["frames_computed"] == again.counts["sentences_computed"] == 0
    assert again.counts["baseline_texts_computed"] == 0
    pd.testing.assert_frame_equal(first.features, again.features)


def test_long_sentences_are_truncated_and_counted(tiny, tmp_path):
    long = "The " + " ".join(["room"] * 100) + " is dark."
    table, n = hc.embed_texts(tiny, [long, "A door."], tmp_path / "t.parquet", batch_size=8)
    assert n == 2
    assert table["truncated"].tolist() == [True, False] and table["n_tokens"].tolist() == [106, 5]
    assert all(np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5) for e in table["embedding"])


def test_missing_frame_or_column_is_a_clear_error(tiny, pairs, tmp_path):
    table, frames = pairs
    with pytest.raises(ValueError, match="no image"):
        hs.clip_features(tiny, table, {k: v for k, v in frames.items() if k != ("s1", 1)}, tmp_path)
    with pytest.raises(ValueError, match="tagged_text"):
        hs.clip_features(tiny, table.drop(columns="tagged_text"), frames, tmp_path)
    with pytest.raises(ValueError, match="aggregate"):
        hs.clip_features(tiny, table, frames, tmp_path, aggregate="median")


def test_chapter_tables(tiny, pairs, tmp_path):
    table, frames = pairs
    result = hs.clip_features(tiny, table, frames, tmp_path, batch_size=8)

    lengths = hs.length_table(result, table)
    assert lengths.loc["sentences per segment", "n"] == (table["label"] == 1).sum()
    assert lengths.loc["tokens per sentence", "max"] <= hc.MAX_TOKENS
    assert lengths[f"share_over_{hc.MAX_TOKENS}"].notna().tolist() == [False, True, True, False]
    assert 0 < lengths.loc["plain characters kept by the study cut", "max"] < 1

    cost = hs.cost_table(result.counts)
    both = cost.loc["frames + sentences"]
    assert both["needed"] == 4 + result.counts["sentences"]
    assert both["needed per pair"] == pytest.approx(both["needed"] / len(table))

    auc = hs.auc_table(table.merge(result.features, on="pair_id"), top_k=2)
    assert list(auc.index) == ["same_story", "all negatives"]
    assert list(auc.columns) == list(hs.scorer_labels(2).values())
    assert auc.stack().between(0, 1).all()
