"""The smoke profile's BLIP-VQA: seeded random weights and a WordPiece tokenizer built without the Hub.

``questions.weights: random`` (the smoke profile) is a small ``BlipForQuestionAnswering`` (a
2-layer vision encoder of width 64 on 96 px images in 32 px patches, 2-layer text encoder and
answer decoder of width 64): the class and layout of ``Salesforce/blip-vqa-base`` at a fraction
of its size, so smoke runs stay fast. ``random-full-size`` (``make bench``) has blip-vqa-base's
sizes (384 px images in 16 px patches, a ViT-B vision encoder, BERT-base text encoder and
decoder), so a forward pass costs what it costs; only its vocabulary is the small tokenizer's.
Both are saved under the profile's ``models`` folder and loaded back by
``helpers.weights.load_model(VQA, ...)`` as a local folder. Their answers mean nothing.

What ``BlipForQuestionAnswering`` expects of its tokenizer and configuration (transformers 5):
the questions are tokenised ``[CLS] ... [SEP]`` by a BERT tokenizer (``BlipProcessor``); the
answer decoder starts from ``text_config.bos_token_id`` (BLIP's ``[DEC]`` token; the model's
``decoder_start_token_id``), stops at ``text_config.sep_token_id`` (``[SEP]``) and pads with
``text_config.pad_token_id`` (``[PAD]``). The configuration takes these ids from the tokenizer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import read_random_marker, save_random_model, stable_hash

if TYPE_CHECKING:
    from transformers import BertTokenizer, BlipConfig

__all__ = ["DECODER_BOS", "offline_tokenizer", "blip_vqa_config", "build_random_blip_vqa"]

#: BLIP's decoder start token: the answer decoder reads ``[DEC] answer [SEP]``.
DECODER_BOS = "[DEC]"
_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Part of the saved folder's marker: bumped when the builder changes, so old folders are rebuilt.
_MARKER_VERSION = 1

#: The small sizes: BLIP-VQA's classes and layout, a 2-layer vision encoder of width 64 on 96 px
#: images in 32 px patches (9 patches), and a 2-layer text encoder and decoder of width 64.
SMALL_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                "image_size": 96, "patch_size": 32}
SMALL_TEXT = {"hidden_size": 64, "encoder_hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 2, "max_position_embeddings": 128}
#: ``Salesforce/blip-vqa-base``'s sizes: ViT-B/16 at 384 px (577 patch encodings of width 768),
#: BERT-base text encoder and answer decoder (12 layers of width 768, 12 heads).
BLIP_VQA_BASE_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                        "num_attention_heads": 12, "image_size": 384, "patch_size": 16}
BLIP_VQA_BASE_TEXT = {"hidden_size": 768, "encoder_hidden_size": 768, "intermediate_size": 3072,
                      "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 512}

#: Words of the questions chapter 03 asks besides the stories' own (``helpers.smoke.clip``'s list).
_QUESTION_WORDS = """yes no is are there the a an and of at in on to with his her their its it
being holding pointing looking standing sitting walking entering lying grabbing wearing gun cardboard
""".split()


def offline_tokenizer(words: Sequence[str] | None = None) -> "BertTokenizer":
    """A BERT WordPiece tokenizer built without the Hub, lower-casing as ``bert-base-uncased``.

    Vocabulary: ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4), the single characters (letters,
    digits, punctuation) and their ``##`` continuations, then one token per distinct word of
    ``words`` (by default the offline CLIP tokenizer's story words and the questions' words,
    ``yes`` and ``no`` among them), and last BLIP's ``[DEC]``, the tokenizer's ``bos_token``.
    Any other word falls back to single characters, never ``[UNK]``. Goes with random weights only.
    """
    from transformers import BertTokenizer

    from .clip import _OFFLINE_WORDS

    words = [*_OFFLINE_WORDS, *_QUESTION_WORDS] if words is None else list(words)
    characters = [*"abcdefghijklmnopqrstuvwxyz0123456789", *".,;:!?'\"-()/&"]
    tokens = [*_SPECIALS, *characters, *(f"##{c}" for c in characters if c.isalnum())]
    tokens += [w for w in dict.fromkeys(w.lower() for w in words) if re.fullmatch(r"[a-z]+", w) and w not in tokens]
    vocab = {token: i for i, token in enumerate([*tokens, DECODER_BOS])}
    return BertTokenizer(vocab=vocab, do_lower_case=True, bos_token=DECODER_BOS, model_max_length=512)


def blip_vqa_config(tokenizer: "BertTokenizer", *, full_size: bool = False) -> "BlipConfig":
    """BLIP-VQA's configuration at the small size (or blip-vqa-base's, ``full_size``), with
    ``tokenizer``'s vocabulary size and its ``[DEC]``, ``[SEP]`` and ``[PAD]`` ids."""
    from transformers import BlipConfig

    ids = {"bos_token_id": tokenizer.bos_token_id, "sep_token_id": tokenizer.sep_token_id,
           "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.sep_token_id}
    if None in ids.values():
        raise ValueError(f"the tokenizer lacks a special token BLIP-VQA needs: {ids}")
    vision, text = (BLIP_VQA_BASE_VISION, BLIP_VQA_BASE_TEXT) if full_size else (SMALL_VISION, SMALL_TEXT)
    # BlipVisionConfig initialises its weights with a standard deviation of 1e-10 (a checkpoint
    # overwrites them): random weights that small would give every frame the same encoding.
    return BlipConfig(vision_config={**vision, "initializer_range": 0.02},
                      text_config={**text, **ids, "vocab_size": len(tokenizer)})


def build_random_blip_vqa(folder: str | os.PathLike, *, seed: int, full_size: bool = False) -> Path:
    """Save a randomly initialised ``BlipForQuestionAnswering`` and its processor to ``folder``.

    Writes what ``BlipForQuestionAnswering.from_pretrained`` and ``BlipProcessor.from_pretrained``
    read: the weights (:func:`blip_vqa_config`), the :func:`offline_tokenizer` and a
    ``BlipImageProcessor`` resizing frames to the configuration's square image size.
    Initialisation is seeded without touching the global random state. A folder already
    holding the same seed and configuration is reused as it is; anything else there is
    replaced. The folder appears whole or not at all (written beside it, then renamed).
    """
    import torch
    from transformers import BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    folder = Path(folder)
    tokenizer = offline_tokenizer()
    config = blip_vqa_config(tokenizer, full_size=full_size)
    marker: dict[str, Any] = {"v": _MARKER_VERSION, "seed": seed, "config": stable_hash(config.to_dict()),
                              "vocab": stable_hash(tokenizer.get_vocab())}
    if read_random_marker(folder) == marker:
        return folder
    side = config.vision_config.image_size
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": side, "width": side}),
                              tokenizer=tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForQuestionAnswering(config)
    return save_random_model(folder, marker, model, processor)
