"""The byte-level BPE that the smoke profile's offline tokenizers share (CLIP's, RoBERTa's, GPT-2's).

:func:`learn_bpe` learns merges from a word list by one fixed rule, so a tokenizer built on it
depends on its words alone (the ``tokenizers`` trainer breaks ties differently from run to run).
Each caller spells its words in its own model's symbols and lays out its own special tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["learn_bpe"]


def learn_bpe(spelled: Sequence[Sequence[str]], vocab: Mapping[str, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Merges learnt from ``spelled`` (each word a list of symbols) and ``vocab`` extended by them.

    The rule: take the words in order and, while the current one is still several symbols,
    merge its first two symbols everywhere. Every listed word thus becomes one token, and any
    other text still encodes in smaller pieces. Each merge's joined symbol gets the next id
    unless ``vocab`` already has it. Returns the new vocabulary and the merges in rank order.
    """
    vocab = dict(vocab)
    words = [list(w) for w in spelled]
    merges: list[tuple[str, str]] = []
    for i, word in enumerate(words):
        while len(word) > 1:
            pair = (word[0], word[1])
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            for other in words[i:]:  # earlier words are single symbols already
                if pair[0] in other:
                    _merge_pair(other, pair)
    return vocab, merges


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> None:
    """Merge every occurrence of ``pair`` in ``symbols`` in place, left to right (as BPE encodes)."""
    i = 0
    while i < len(symbols) - 1:
        if symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            symbols[i : i + 2] = [pair[0] + pair[1]]
        i += 1
