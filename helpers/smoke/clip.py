"""The smoke profile's CLIP: ViT-B/32 with seeded random weights and a tokenizer built without the Hub.

``helpers.weights.load_model(CLIP, "random", ...)`` builds it here (``build_random_clip``) and loads it
back from disk like any saved checkpoint. The offline tokenizer's merges are learnt from a
fixed word list, so token counts are realistic; its ids mean nothing to a pretrained model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import read_random_marker, save_random_model, stable_hash
from .bpe import learn_bpe

if TYPE_CHECKING:
    from transformers import CLIPConfig, CLIPTokenizer

__all__ = ["offline_tokenizer", "vit_b32_config", "build_random_clip"]

#: CLIP's text context (``helpers.clip.MAX_TOKENS``), repeated here so that this module imports nothing of ``helpers.clip``.
CLIP_CONTEXT = 77


#: A fixed word list for the offline tokenizer: common English and the vocabulary of the
#: stories (people, rooms, light, mood). Its only job is to make token counts realistic.
_OFFLINE_WORDS = """
a about above across after again against all along also among an and another any are around as at away back
be because been before behind being below beside between both but by can could did do does down during
each even every few for from further had has have he her here hers him his how i if in into is it its itself
just like many may me might more most much must my near never next no not now of off on once one only onto or
other our out over own quite rather same she should so some still such than that the their them then there
these they this those through to too toward towards under until up upon very was we were what when where which
while who whom whose why will with within without would yet you your
man woman men women boy girl child children person people figure friend stranger crowd group couple family
father mother son daughter brother sister husband wife officer soldier doctor driver guard king queen
face eyes hand hands arm arms head hair smile expression look gaze voice body shoulder back feet
room door window wall floor ceiling table chair desk bed couch sofa kitchen hallway corridor elevator stairs
office house home building street road car truck train bus city town park garden forest field river sea
beach sky sun moon night day morning evening light lights shadow shadows dark darkness bright lamp fire
phone cell book paper letter bag handbag box boxes blanket umbrella bottle glass cup cake food gun sword
television tv screen computer laptop camera picture clock dog cat horse bird ball toy
looks look looking stands stand standing sits sit sitting walks walk walking enters enter leaves leave
holds hold holding turns turn watches watch speaks speak says said talks talk smiles smile stares stare
runs run moves move opens open closes close reaches reach points point waits wait seems appears appear
feels feel thinks think knows know sees see hears hear tries try wonders realizes notices gestures glances
scene moment atmosphere tension mood silence sense feeling thoughts mind heart presence space air
calm quiet tense intense serious concerned curious surprised shocked worried happy sad angry afraid nervous
neutral focused determined alert cold warm soft heavy empty old new small large long short dim modern plain
first last left right front side middle center inside outside together alone again suddenly slowly quickly
""".split()


def offline_tokenizer(words: Sequence[str] = _OFFLINE_WORDS) -> "CLIPTokenizer":
    """A CLIP tokenizer built without the Hub: CLIP's byte-level BPE scheme, small vocabulary.

    The vocabulary is laid out as CLIP's own: the 256 byte symbols, the same with the
    end-of-word marker ``</w>``, one token per merge, then ``<|startoftext|>`` and
    ``<|endoftext|>`` (also padding and unknown). The merges are learnt from ``words`` by
    :func:`helpers.smoke.bpe.learn_bpe`'s fixed rule. Every listed word thus becomes
    one token, any other text falls back to smaller pieces down to single bytes (nothing
    is out of vocabulary), and the result depends on ``words`` alone (the ``tokenizers``
    trainer breaks ties differently from run to run). Token ids mean nothing to a
    pretrained model: this tokenizer goes with random weights only.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {symbol: i for i, symbol in enumerate(alphabet)}
    vocab.update({symbol + "</w>": len(alphabet) + i for i, symbol in enumerate(alphabet)})
    # Letters only: CLIP's normaliser lower-cases, and its pre-tokenizer splits words at
    # apostrophes, digits and punctuation, so other entries could never be seen whole.
    spelled = [[*w[:-1], w[-1] + "</w>"] for w in dict.fromkeys(w.lower() for w in words) if re.fullmatch(r"[a-z]+", w)]
    vocab, merges = learn_bpe(spelled, vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_CONTEXT)


def vit_b32_config(tokenizer: "CLIPTokenizer", **text_overrides: Any) -> "CLIPConfig":
    """The configuration of CLIP ViT-B/32, with the special-token ids of ``tokenizer``.

    ``CLIPConfig()``'s defaults are ViT-B/32's (text: 12 layers of width 512, 8 heads, a
    49,408-token vocabulary, 77 positions; vision: 12 layers of width 768, 12 heads, 224 px
    images in 32 px patches; 512-d projections; 151,277,313 parameters). The text encoder pools
    the first ``<|endoftext|>``, so its id must be the tokenizer's.
    """
    from transformers import CLIPConfig

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if len(tokenizer) > 49408:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than CLIP's 49,408 embeddings")
    return CLIPConfig(text_config={**ids, **text_overrides})


def build_random_clip(folder: str | os.PathLike, *, seed: int, config: "CLIPConfig | None" = None,
                      tokenizer: "CLIPTokenizer | None" = None) -> Path:
    """Save a randomly initialised CLIP (ViT-B/32 unless ``config`` says otherwise) to ``folder``.

    Writes what ``CLIPModel.from_pretrained`` and ``CLIPProcessor.from_pretrained`` read: the
    weights, the offline tokenizer and a ``CLIPImageProcessor`` sized to the config's image
    size. Initialisation is seeded without touching the global random state. A folder
    already holding the same seed and configuration is reused as it is; anything else there
    is replaced. The folder appears whole or not at all (written beside it, then renamed).
    """
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = Path(folder)
    tokenizer = tokenizer or offline_tokenizer()
    config = config or vit_b32_config(tokenizer)
    marker = {"seed": seed, "config": stable_hash(config.to_dict()), "vocab": stable_hash(tokenizer.get_vocab())}
    if read_random_marker(folder) == marker:
        return folder

    side = config.vision_config.image_size
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": side},
                                                                 crop_size={"height": side, "width": side}),
                              tokenizer=tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return save_random_model(folder, marker, model, processor)
