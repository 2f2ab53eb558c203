"""The smoke profile's language models: seeded random weights and offline tokenizers.

``mlm.weights: random`` (the smoke profile) is a small ``RobertaForMaskedLM`` (2 layers of
width 64, distilroberta's class and layout at a fraction of its size, so smoke runs stay
fast) with seeded random weights and a byte-level BPE tokenizer built without the network.
``random-full-size`` (:data:`RANDOM_FULL_SIZE`, ``make bench``'s quick series) is the same at
distilroberta's size, so a forward pass costs what it costs. Both are saved under the
profile's ``models`` folder and loaded back by ``helpers.weights.load_model(MLM, ...)`` as a local folder.
``control_lm.weights: random`` (chapter 07's causal control) is a small ``GPT2LMHeadModel``
with a GPT-2 tokenizer of the same merges (:func:`build_random_causal_lm`), loaded back by
``load_model(CAUSAL_LM, ...)`` the same way. Their scores mean nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import RANDOM_FULL_SIZE
from ..io import read_random_marker, save_random_model, stable_hash
from .bpe import learn_bpe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

RANDOM_FOLDER = "mlm-random"
#: distilroberta-base's layout (its vocabulary aside: the offline tokenizer's is small, and only
#: the masked positions go through the output projection).
DISTILROBERTA_SIZE = {"hidden_size": 768, "num_hidden_layers": 6, "num_attention_heads": 12,
                      "intermediate_size": 3072}
#: Part of the saved folder's marker: bumped when the builder changes, so old folders are rebuilt.
_MARKER_VERSION = 1


def offline_tokenizer(words: Sequence[str] | None = None) -> "PreTrainedTokenizerBase":
    """A RoBERTa tokenizer built without the network: byte-level BPE on a fixed word list.

    The vocabulary is laid out as RoBERTa's: ``<s> <pad> </s> <unk>``, the 256 byte symbols,
    one token per merge, and ``<mask>`` last. Merges are learnt from ``words`` (by default
    the offline CLIP tokenizer's list plus the COCO category names), each word spelled both
    after a space in lower case (``Ġword``) and capitalised at the start of a text, by the same
    fixed rule as :func:`helpers.clip.offline_tokenizer`, so the result depends on ``words``
    alone. Any text still encodes (down to single bytes). It goes with random weights only.
    """
    from tokenizers import AddedToken
    from transformers import RobertaTokenizer

    from .clip import _OFFLINE_WORDS
    from ..objects import COCO_CATEGORIES

    if words is None:
        words = [*_OFFLINE_WORDS, *(w for c in COCO_CATEGORIES for w in c.split()), "TV", "people"]
    vocab, merges = _bpe_tables(tuple(words))
    # As RoBERTa's: "<mask>" takes the space before it, so "a <mask>" masks the token "Ġcup" of "a cup".
    mask = AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
    return RobertaTokenizer(vocab=dict(vocab), merges=list(merges), mask_token=mask, model_max_length=512)


@lru_cache(maxsize=4)
def _bpe_tables(words: tuple[str, ...]) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """The vocabulary and merges of :func:`offline_tokenizer` (computed once per word list):
    :func:`helpers.smoke.bpe.learn_bpe` on each word's two spellings."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({symbol: len(vocab) + i for i, symbol in enumerate(alphabet)})
    forms = dict.fromkeys(f for w in words if re.fullmatch(r"[A-Za-z]+", w)
                          for f in ("\u0120" + w.lower(), w.capitalize()))
    vocab, merges = learn_bpe([list(f) for f in forms], vocab)
    vocab["<mask>"] = len(vocab)
    return tuple(vocab.items()), tuple(merges)


def small_roberta_config(tokenizer: "PreTrainedTokenizerBase", **overrides: Any) -> "Any":
    """A ``RobertaConfig`` of distilroberta's layout at a small size (2 layers, width 64, 2
    heads, 514 positions), with ``tokenizer``'s vocabulary size and special-token ids."""
    from transformers import RobertaConfig

    settings = {"vocab_size": len(tokenizer), "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 128, "max_position_embeddings": 514, "type_vocab_size": 1,
                "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id, **overrides}
    return RobertaConfig(**settings)


def build_random_mlm(folder: str | os.PathLike, *, seed: int, words: Sequence[str] | None = None,
                     **config_overrides: Any) -> Path:
    """Save a randomly initialised ``RobertaForMaskedLM`` and its offline tokenizer to ``folder``.

    The tokenizer is :func:`offline_tokenizer` of ``words``, the configuration
    :func:`small_roberta_config` with ``config_overrides``. Initialisation is seeded
    without touching the global random state. A folder already holding the same seed,
    words and configuration is reused as it is; anything else there is replaced. The
    folder appears whole or not at all (written beside it, then renamed).
    """
    import torch
    from transformers import RobertaForMaskedLM

    folder = Path(folder)
    marker = {"v": _MARKER_VERSION, "seed": seed, "words": stable_hash(list(words) if words is not None else None),
              "config": stable_hash(config_overrides)}
    if read_random_marker(folder) == marker:
        return folder
    tokenizer = offline_tokenizer(words)
    config = small_roberta_config(tokenizer, **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RobertaForMaskedLM(config)
    return save_random_model(folder, marker, model, tokenizer)


def random_mlm_folder(spec: str, models_dir: str | os.PathLike, seed: int) -> Path | None:
    """The folder of a random-weight ``spec`` (``"random"`` or :data:`RANDOM_FULL_SIZE`), built
    on first use under ``models_dir``; None for any other spec."""
    if spec == "random":
        return build_random_mlm(Path(models_dir) / RANDOM_FOLDER, seed=seed)
    if spec == RANDOM_FULL_SIZE:
        return build_random_mlm(Path(models_dir) / f"{RANDOM_FOLDER}-full", seed=seed, **DISTILROBERTA_SIZE)
    return None


# ----------------------------------------------------------------------------- the control's causal model

#: The folder of the control language model's random weights (``control_lm.weights: random``).
RANDOM_CAUSAL_FOLDER = "causal-lm-random"
#: GPT-2's (124M) layout, for ``random-full-size`` (its vocabulary aside, as for the masked model).
GPT2_SIZE = {"n_embd": 768, "n_layer": 12, "n_head": 12}


def offline_gpt2_tokenizer(words: Sequence[str] | None = None) -> "PreTrainedTokenizerBase":
    """GPT-2's tokenizer layout built without the network: the byte-level BPE of
    :func:`offline_tokenizer` (same words, same merges, RoBERTa's special tokens left out) and
    GPT-2's one special token ``<|endoftext|>`` last, its begin, end and unknown token."""
    from transformers import GPT2Tokenizer

    if words is None:
        from .clip import _OFFLINE_WORDS
        from ..objects import COCO_CATEGORIES

        words = [*_OFFLINE_WORDS, *(w for c in COCO_CATEGORIES for w in c.split()), "TV", "people"]
    table, merges = _bpe_tables(tuple(words))
    symbols = [s for s, _ in table if s not in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
    vocab = {s: i for i, s in enumerate(symbols)} | {"<|endoftext|>": len(symbols)}
    return GPT2Tokenizer(vocab=vocab, merges=list(merges), model_max_length=1024)


def build_random_causal_lm(folder: str | os.PathLike, *, seed: int, words: Sequence[str] | None = None,
                           **config_overrides: Any) -> Path:
    """Save a randomly initialised ``GPT2LMHeadModel`` (2 layers of width 64, 2 heads, 1,024
    positions unless ``config_overrides`` say otherwise) and :func:`offline_gpt2_tokenizer` to
    ``folder``; seeded without touching the global random state, reused when the seed, words and
    configuration match, written whole or not at all (as :func:`build_random_mlm`)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    marker = {"v": _MARKER_VERSION, "kind": "causal", "seed": seed,
              "words": stable_hash(list(words) if words is not None else None), "config": stable_hash(config_overrides)}
    if read_random_marker(folder) == marker:
        return folder
    tokenizer = offline_gpt2_tokenizer(words)
    settings = {"vocab_size": len(tokenizer), "n_positions": 1024, "n_embd": 64, "n_layer": 2, "n_head": 2,
                "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, **config_overrides}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(GPT2Config(**settings))
    return save_random_model(folder, marker, model, tokenizer)


def random_causal_lm_folder(spec: str, models_dir: str | os.PathLike, seed: int) -> Path | None:
    """The folder of a random-weight causal ``spec`` (``"random"``: small; :data:`RANDOM_FULL_SIZE`:
    GPT-2's size), built on first use under ``models_dir``; None for any other spec."""
    if spec == "random":
        return build_random_causal_lm(Path(models_dir) / RANDOM_CAUSAL_FOLDER, seed=seed)
    if spec == RANDOM_FULL_SIZE:
        return build_random_causal_lm(Path(models_dir) / f"{RANDOM_CAUSAL_FOLDER}-full", seed=seed, **GPT2_SIZE)
    return None
