"""helpers.smoke.bpe: the one byte-level BPE builder of the offline CLIP, RoBERTa and GPT-2 tokenizers.

The reference below is the merge loop each tokenizer carried before they shared the builder,
copied as it was: the shared builder must give the same vocabulary and merges on the words
each caller uses, or every cached random model would be tokenised differently.
"""

from __future__ import annotations

import re

import pytest

from helpers.objects import COCO_CATEGORIES
from helpers.smoke import clip as smoke_clip
from helpers.smoke import mlm as smoke_mlm
from helpers.smoke.bpe import learn_bpe


def _reference_merge_pair(symbols, pair):
    i = 0
    while i < len(symbols) - 1:
        if symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            symbols[i : i + 2] = [pair[0] + pair[1]]
        i += 1


def _reference_clip_tables(words):
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    vocab.update({symbol + "</w>": len(alphabet) + i for i, symbol in enumerate(alphabet)})
    spelled = [[*w[:-1], w[-1] + "</w>"] for w in dict.fromkeys(w.lower() for w in words) if re.fullmatch(r"[a-z]+", w)]
    merges = []
    for i, word in enumerate(spelled):
        while len(word) > 1:
            pair = (word[0], word[1])
            merges.append(pair)
            vocab[pair[0] + pair[1]] = len(vocab)
            for other in spelled[i:]:
                if pair[0] in other:
                    _reference_merge_pair(other, pair)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, merges


def _reference_roberta_tables(words):
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({symbol: len(vocab) + i for i, symbol in enumerate(alphabet)})
    forms = dict.fromkeys(f for w in words if re.fullmatch(r"[A-Za-z]+", w)
                          for f in ("\u0120" + w.lower(), w.capitalize()))
    spelled = [list(f) for f in forms]
    merges = []
    for i, word in enumerate(spelled):
        while len(word) > 1:
            pair = (word[0], word[1])
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            for other in spelled[i:]:
                if pair[0] in other:
                    _reference_merge_pair(other, pair)
    vocab["<mask>"] = len(vocab)
    return vocab, merges


MLM_WORDS = [*smoke_clip._OFFLINE_WORDS, *(w for c in COCO_CATEGORIES for w in c.split()), "TV", "people"]


def _merges_of(tokenizer):
    """The merges a saved tokenizer holds, as ``(left, right)`` pairs in rank order."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        model = json.load(open(f"{folder}/tokenizer.json"))["model"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def test_the_clip_tokenizer_keeps_the_vocabulary_and_merges_of_its_former_loop():
    vocab, merges = _reference_clip_tables(smoke_clip._OFFLINE_WORDS)
    tokenizer = smoke_clip.offline_tokenizer()
    assert len(merges) > 1000
    assert tokenizer.get_vocab() == vocab
    assert _merges_of(tokenizer) == merges


def test_the_roberta_and_gpt2_tokenizers_keep_the_vocabulary_and_merges_of_their_former_loop():
    vocab, merges = _reference_roberta_tables(MLM_WORDS)
    assert smoke_mlm._bpe_tables(tuple(MLM_WORDS)) == (tuple(vocab.items()), tuple(merges))
    roberta = smoke_mlm.offline_tokenizer()
    assert roberta.get_vocab() == vocab
    assert _merges_of(roberta) == merges
    gpt2 = smoke_mlm.offline_gpt2_tokenizer()
    assert _merges_of(gpt2) == merges
    assert list(gpt2.get_vocab()) != [] and gpt2.get_vocab()["<|endoftext|>"] == len(vocab) - 5


def test_learn_bpe_makes_every_word_one_token_and_never_reuses_an_id():
    start = {c: i for i, c in enumerate("abcdt")}
    vocab, merges = learn_bpe([list("cat"), list("bat"), list("at")], start)
    assert merges == [("c", "a"), ("ca", "t"), ("b", "a"), ("ba", "t"), ("a", "t")]
    assert {"cat", "bat", "at"} <= set(vocab)
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert start == {c: i for i, c in enumerate("abcdt")}  # the caller's table is left as it was
    # two merges that join to one symbol ("ab"+"c", "a"+"bc") share its id
    vocab, merges = learn_bpe([list("abc"), ["a", "bc"]], {c: i for i, c in enumerate(["a", "b", "c", "bc"])})
    assert merges == [("a", "b"), ("ab", "c"), ("a", "bc")]
    assert sorted(vocab.values()) == list(range(len(vocab))) and len(vocab) == 6


@pytest.mark.parametrize("text", ["a man holds a cup", "The refrigerator hums.", "zyxwv 123"])
def test_every_text_still_encodes_with_the_shared_builder(text):
    for tokenizer in (smoke_clip.offline_tokenizer(), smoke_mlm.offline_tokenizer()):
        ids = tokenizer(text)["input_ids"]
        assert len(ids) > 2 and tokenizer.unk_token_id not in ids[1:-1]
