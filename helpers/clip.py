"""CLIP evidence: how well a frame and its story segment agree, one sentence at a time.

A frame's segment is 430-700 characters, several times what CLIP's text encoder reads
(77 tokens, start and end tokens included). The original study cut the whole story to its
first 150 characters, tags included; this module instead splits a segment into sentences,
embeds each one, and aggregates the per-sentence similarities (``max``, ``mean`` or the
mean of the ``top_k`` best). The study's 150-character cut and a plain 77-token truncation
of the segment are computed too, as baselines.

Every embedding is computed once and cached on disk, L2-normalised: one per distinct frame
(keyed by the SHA-1 of its encoded bytes) and one per distinct text, both also keyed by the
identity of the weights (a hash of the parameters, tokenizer and image preprocessing). A
pair's score is then a dot product of cached vectors, never a new forward pass.

Score mapping: a cosine ``c`` in [-1, 1] becomes ``(c + 1) / 2`` in [0, 1]. It is monotone
(rankings and ROC-AUC are those of the cosine), needs no constant fitted to data, and is
affine, so the mean of mapped scores is the mapped mean cosine and the fusion head sees
the cosine up to a fixed scale. CLIP's cosines sit in a narrow band (about 0.1-0.4 for
ViT-B/32), so the scores do too: read them relative to each other, not as probabilities.

Weights (profile key ``clip.weights``): a Hub id such as ``openai/clip-vit-base-patch32``
(cached under ``HF_HOME``; offline and not cached raises ``MissingAssetError``), a local
folder written by ``save_pretrained``, or ``"random"``: the ViT-B/32 architecture with
seeded random weights and a tokenizer built without the Hub, saved under the profile's
``models`` folder and loaded back through the local-folder path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .config import MissingAssetError, hub_reachable
from .io import compute_cached, read_random_marker, save_random_model, stable_hash

if TYPE_CHECKING:
    import datasets
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

__all__ = [
    "MODEL_ID",
    "MAX_TOKENS",
    "FIRST_CHARS",
    "AGGREGATES",
    "SCORE_COLUMNS",
    "IMAGE_COLUMNS",
    "TEXT_COLUMNS",
    "RANDOM_FOLDER",
    "Clip",
    "ClipResult",
    "clip_weights_available",
    "offline_tokenizer",
    "vit_b32_config",
    "build_random_clip",
    "load_clip",
    "load_tokenizer",
    "split_sentences",
    "token_lengths",
    "embed_images",
    "embed_texts",
    "text_embeddings",
    "visible_fraction",
    "cosine_to_score",
    "aggregate_scores",
    "clip_features",
    "scorer_labels",
    "length_table",
    "plot_token_lengths",
    "plot_score_distributions",
    "auc_table",
    "plot_auc",
    "cost_table",
]

MODEL_ID = "openai/clip-vit-base-patch32"
#: CLIP's text context: 75 text tokens between <|startoftext|> and <|endoftext|>.
MAX_TOKENS = 77
#: The original study's text cut: the first 150 characters, tags included.
FIRST_CHARS = 150
AGGREGATES = ("max", "mean", "topk")
#: The columns ``clip_features`` writes, besides ``pair_id``.
SCORE_COLUMNS = ("clip_score", "clip_score_max", "clip_score_mean", "clip_score_topk",
                 "clip_score_trunc77", "clip_score_first150", "n_sentences")

#: Columns of the tables ``embed_images`` and ``embed_texts`` return (and cache, with ``key``).
IMAGE_COLUMNS = ["name", "key", "decoded", "error", "width", "height", "embedding"]
TEXT_COLUMNS = ["text", "key", "n_tokens", "truncated", "embedding"]

#: Part of every cache key: bumped when the cached row format changes, so old rows are recomputed, not misread.
_CACHE_VERSION = 1

RANDOM_FOLDER = "clip-random"
#: Files a Hub snapshot of a CLIP model needs; each entry lists acceptable alternatives.
_HUB_FILES = (("config.json",), ("preprocessor_config.json", "processor_config.json"),
              ("tokenizer.json", "vocab.json"), ("model.safetensors", "pytorch_model.bin"))


@dataclass(frozen=True)
class Clip:
    """A loaded CLIP model with its processor, the device it runs on, and a content identity.

    ``identity`` hashes the parameters, the tokenizer and the image preprocessing (and the
    compute precision), so embeddings cached under it are valid exactly for this model.
    """

    model: "CLIPModel"
    processor: "CLIPProcessor"
    device: "torch.device"
    identity: str
    source: str

    @property
    def tokenizer(self) -> "CLIPTokenizer":
        return self.processor.tokenizer


# --------------------------------------------------------------------------- weights


def _hub_cache_dir() -> Path:
    """The Hub cache folder as the environment says *now* (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"


def _is_hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    cache = _hub_cache_dir()
    return all(any(isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache), str) for name in choices)
               for choices in _HUB_FILES)


def _local_folder(spec: str) -> Path | None:
    """``spec`` as a local folder when it names one (or clearly means one), else None for a Hub id."""
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        return path
    return None


def clip_weights_available(spec: str) -> bool:
    """Whether ``load_clip(spec)`` can get its weights: ``"random"`` always, a folder if it holds
    a saved model, a Hub id if it is cached or the Hub answers."""
    if spec == "random":
        return True
    folder = _local_folder(spec)
    if folder is not None:
        return (folder / "config.json").is_file()
    return _is_hub_cached(spec) or hub_reachable()


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
    BPE with a fixed rule: take the words in order and, while the current one is still
    several symbols, merge its first two symbols everywhere. Every listed word thus becomes
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
    merges: list[tuple[str, str]] = []
    for i, word in enumerate(spelled):
        while len(word) > 1:
            pair = (word[0], word[1])
            merges.append(pair)
            vocab[pair[0] + pair[1]] = len(vocab)
            for other in spelled[i:]:  # earlier words are single symbols already
                if pair[0] in other:
                    _merge_pair(other, pair)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> None:
    """Merge every occurrence of ``pair`` in ``symbols`` in place, left to right (as BPE encodes)."""
    i = 0
    while i < len(symbols) - 1:
        if symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            symbols[i : i + 2] = [pair[0] + pair[1]]
        i += 1


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




def _precision(device: "torch.device") -> str:
    return "fp16-autocast" if device.type == "cuda" else "fp32"


def _autocast(device: "torch.device") -> contextlib.AbstractContextManager:
    import torch

    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()


def _identity(model: "CLIPModel", processor: "CLIPProcessor", device: "torch.device") -> str:
    """SHA-1 of every parameter and buffer, the tokenizer, the image preprocessing and the precision."""
    import torch

    h = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    h.update(processor.tokenizer.backend_tokenizer.to_str().encode())
    h.update(processor.image_processor.to_json_string().encode())
    h.update(_precision(device).encode())
    return h.hexdigest()[:16]


def _resolve(spec: str, models_dir: str | os.PathLike, seed: int) -> tuple[str | Path, dict[str, Any]]:
    """Where ``from_pretrained`` finds the weights ``spec`` names, and the options it needs.

    ``"random"`` is built (or reused) under ``models_dir`` first; a Hub id must be cached or
    the Hub reachable (else ``MissingAssetError``); a folder must hold a saved model.
    """
    if spec == "random":
        return build_random_clip(Path(models_dir) / RANDOM_FOLDER, seed=seed), {"local_files_only": True}
    if (folder := _local_folder(spec)) is not None:
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"CLIP weights folder {folder} holds no config.json: "
                                    "expected a folder written by save_pretrained")
        return folder, {"local_files_only": True}
    online = hub_reachable()
    if not online and not _is_hub_cached(spec):
        raise MissingAssetError(f"CLIP weights {spec!r}", cache_var="HF_HOME",
                                detail=f"Looked in the Hub cache {_hub_cache_dir()}.")
    return spec, {"cache_dir": _hub_cache_dir(), "local_files_only": not online}


def load_clip(spec: str, *, models_dir: str | os.PathLike, seed: int = 42,
              device: "torch.device | str | None" = None) -> Clip:
    """Load CLIP from a Hub id, a local folder, or ``"random"`` (see the module docstring).

    ``models_dir`` is the profile's models folder (``ctx.paths.models``), where ``"random"``
    saves its weights. Raises ``MissingAssetError`` (naming ``HF_HOME`` and ``PROFILE=smoke``)
    for a Hub id that is neither cached nor downloadable, and ``FileNotFoundError`` for a
    folder that holds no saved model.
    """
    from transformers import CLIPModel, CLIPProcessor

    from .config import device as pick_device

    source, options = _resolve(spec, models_dir, seed)
    dev = pick_device(str(device)) if device is not None else pick_device()
    model = CLIPModel.from_pretrained(source, **options).to(dev).eval()
    processor = CLIPProcessor.from_pretrained(source, **options)
    return Clip(model=model, processor=processor, device=dev, identity=_identity(model, processor, dev),
                source=str(spec))


def load_tokenizer(spec: str, *, models_dir: str | os.PathLike, seed: int = 42) -> "CLIPTokenizer":
    """Only the tokenizer of the weights ``spec`` names (as ``load_clip`` would load it), to
    count tokens without loading the model. Same errors as ``load_clip``."""
    from transformers import AutoTokenizer

    source, options = _resolve(spec, models_dir, seed)
    return AutoTokenizer.from_pretrained(source, **options)


# --------------------------------------------------------------------------- text


#: Abbreviations that take a period without ending the sentence ("Mr. Smith", "e.g. Paris").
#: Words that often do end one ("etc.", "no.") are left out: a missed split costs less
#: than a sentence glued to the next.
_ABBREVIATIONS = frozenset(
    "mr mrs ms mx dr prof st jr sr mt ft lt col gen sgt capt cpt rev hon pres gov sen vs e.g i.e cf approx "
    "inc ltd corp dept".split()
)
#: A run of sentence-final punctuation, any closing quotes or brackets, then whitespace and
#: the start of a new sentence (an upper-case letter or digit, maybe after an opening quote).
_BOUNDARY = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s+["'“‘(\[]*[A-Z0-9])""")


def split_sentences(text: str) -> list[str]:
    """The sentences of a story segment, tags stripped and whitespace normalised.

    A sentence ends at ``.``, ``!``, ``?`` or ``…`` (with any closing quotes) followed by a
    capital letter or digit (after any opening quote), except after a known abbreviation
    (``Mr.``, ``e.g.``) or a single-letter initial (``J. R. Ewing``). Nothing is lost:
    ``" ".join(sentences)`` is the whole stripped text.
    """
    from .data import strip_tags

    plain = " ".join(strip_tags(text).split())
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(plain):
        word = plain[start:match.start()].rsplit(" ", 1)[-1].lstrip("\"'“‘([")
        if match.group().startswith(".") and not match.group().startswith("..") and (
            word.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-HJ-Z]", word)  # an initial; "I." ends sentences
        ):
            continue
        sentences.append(plain[start:match.end()])
        start = match.end() + 1  # the boundary's whitespace is a single space after normalising
    if start < len(plain):
        sentences.append(plain[start:])
    return sentences


def token_lengths(tokenizer: "CLIPTokenizer", texts: Sequence[str]) -> list[int]:
    """The number of tokens each text has before truncation, start and end tokens included."""
    if not texts:
        return []
    # verbose=False: measuring long texts is the point, so no "longer than the maximum" warning.
    return [len(ids) for ids in tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]


# --------------------------------------------------------------------------- embeddings


def embed_images(clip: Clip, frames: Mapping[str, bytes], cache_path: str | os.PathLike, *,
                 batch_size: int) -> tuple[pd.DataFrame, int]:
    """Normalised image embeddings of encoded frames, computed once per distinct frame content.

    ``frames`` maps any name to a frame's encoded bytes (JPEG/PNG). Returns
    ``(table, n_computed)``: one row per name with ``name``, ``key`` (the cache key: weights
    identity + SHA-1 of the bytes), ``decoded`` (False for a frame that does not decode: it
    is skipped, cached as such, and has no embedding), ``error``, ``width`` and ``height``
    (pixels; 0 when not decoded) and ``embedding`` (float32 vector, or None).
    """
    import torch

    names = list(frames)
    if not names:
        return pd.DataFrame(columns=IMAGE_COLUMNS), 0
    keys = [_image_key(clip, frames[n]) for n in names]
    name_of_key = dict(zip(keys, names))

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        from .data import CorruptFrameError, frame_image

        images, rows = [], []
        for key in batch:
            try:
                image = frame_image([frames[name_of_key[key]]], 1)
            except CorruptFrameError as err:
                rows.append({"decoded": False, "error": str(err)[:200], "width": 0, "height": 0, "embedding": None})
            else:
                images.append(image)
                rows.append({"decoded": True, "error": "", "width": image.width, "height": image.height,
                             "embedding": None})
        if images:
            pixels = clip.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
            with torch.inference_mode(), _autocast(clip.device):
                out = clip.model.get_image_features(pixel_values=pixels.to(clip.device))
            vectors = iter(_normalise(out.pooler_output))
            for row in rows:
                if row["decoded"]:
                    row["embedding"] = next(vectors)
        return rows

    table, n_computed = compute_cached(cache_path, keys, compute, batch_size=batch_size, desc="CLIP frames")
    table = table.assign(name=names, decoded=table["decoded"].astype(bool), width=table["width"].astype(int),
                         height=table["height"].astype(int))
    return table[IMAGE_COLUMNS], n_computed


def embed_texts(clip: Clip, texts: Sequence[str], cache_path: str | os.PathLike, *,
                batch_size: int) -> tuple[pd.DataFrame, int]:
    """Normalised text embeddings, computed once per distinct text; texts over 77 tokens are truncated.

    Returns ``(table, n_computed)``: one row per distinct text with ``text``, ``key``
    (weights identity + the text), ``n_tokens`` (before truncation), ``truncated`` and
    ``embedding``.
    """
    import torch

    texts = list(dict.fromkeys(texts))
    if not texts:
        return pd.DataFrame(columns=TEXT_COLUMNS), 0
    by_length = sorted(texts, key=len)  # batches of similar lengths waste less on padding
    keys = [_text_key(clip, t) for t in by_length]
    by_key = dict(zip(keys, by_length))

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        chunk = [by_key[k] for k in batch]
        lengths = token_lengths(clip.tokenizer, chunk)
        inputs = clip.tokenizer(chunk, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode(), _autocast(clip.device):
            out = clip.model.get_text_features(input_ids=inputs["input_ids"].to(clip.device),
                                               attention_mask=inputs["attention_mask"].to(clip.device))
        return [{"n_tokens": n, "truncated": n > MAX_TOKENS, "embedding": v}
                for n, v in zip(lengths, _normalise(out.pooler_output))]

    table, n_computed = compute_cached(cache_path, keys, compute, batch_size=batch_size, desc="CLIP texts")
    table = table.assign(text=by_length, n_tokens=table["n_tokens"].astype(int),
                         truncated=table["truncated"].astype(bool))
    table = table.set_index("text").loc[texts].reset_index()
    return table[TEXT_COLUMNS], n_computed


def text_embeddings(clip: Clip, texts: Sequence[str], cache_dir: str | os.PathLike, *,
                    batch_size: int) -> np.ndarray:
    """One vector per text: the normalised mean of its sentences' normalised CLIP embeddings.

    The sentences are those ``clip_features`` scores (``split_sentences``), read from the same
    cache (``cache_dir/texts``), so after chapter 03 this costs no forward pass. A text with
    no sentence gets a zero vector.
    """
    sentences = {text: split_sentences(text) for text in dict.fromkeys(texts)}
    table, _ = embed_texts(clip, [s for ss in sentences.values() for s in ss], Path(cache_dir) / "texts",
                           batch_size=batch_size)
    vector_of = dict(zip(table["text"], table["embedding"]))
    dim = clip.model.config.projection_dim
    means = {}
    for text, parts in sentences.items():
        mean = np.mean([vector_of[s] for s in parts], axis=0) if parts else np.zeros(dim)
        norm = np.linalg.norm(mean)
        means[text] = mean / norm if norm > 0 else mean
    return np.stack([means[t] for t in texts]) if len(texts) else np.zeros((0, dim))


def _image_key(clip: Clip, data: bytes) -> str:
    return stable_hash({"v": _CACHE_VERSION, "clip": clip.identity, "frame_sha1": hashlib.sha1(data).hexdigest()})


def _text_key(clip: Clip, text: str) -> str:
    return stable_hash({"v": _CACHE_VERSION, "clip": clip.identity, "text": text})


def _normalise(projected: "torch.Tensor") -> list[np.ndarray]:
    """Rows of the projected embeddings, L2-normalised, as float32 arrays."""
    import torch

    vectors = torch.nn.functional.normalize(projected.float(), dim=-1).cpu().numpy()
    return list(vectors.astype(np.float32))


def visible_fraction(clip: Clip, width: int, height: int) -> float:
    """The share of a ``width`` x ``height`` frame that CLIP's image preprocessing keeps.

    CLIP resizes the short side to 224 px and keeps the central 224 x 224 square, so a
    frame of StoryReasoning's shape (about 575 x 240) loses its left and right sides.
    """
    processor = clip.processor.image_processor
    w, h = float(width), float(height)
    if processor.do_resize and processor.size.get("shortest_edge"):
        scale = processor.size["shortest_edge"] / min(w, h)
        w, h = w * scale, h * scale
    elif processor.do_resize and processor.size.get("height"):
        w, h = float(processor.size["width"]), float(processor.size["height"])
    if not processor.do_center_crop:
        return 1.0
    return min(processor.crop_size["width"], w) * min(processor.crop_size["height"], h) / (w * h)


# --------------------------------------------------------------------------- scores


def cosine_to_score(cosine: float | np.ndarray) -> float | np.ndarray:
    """Map a cosine in [-1, 1] to a score in [0, 1]: ``(c + 1) / 2`` (monotone and affine)."""
    return (cosine + 1.0) / 2.0


def aggregate_scores(scores: Sequence[float] | np.ndarray, how: str, top_k: int = 2) -> float:
    """One score from per-sentence scores: their ``max``, ``mean``, or ``topk`` (mean of the
    ``top_k`` highest; all of them when there are fewer). NaN for no sentences."""
    if how not in AGGREGATES:
        raise ValueError(f"unknown CLIP aggregate {how!r}: expected one of {AGGREGATES}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return math.nan
    if how == "max":
        return float(values.max())
    if how == "mean":
        return float(values.mean())
    return float(np.sort(values)[::-1][:top_k].mean())


@dataclass(frozen=True)
class ClipResult:
    """What ``clip_features`` computed.

    ``features``: one row per pair, ``pair_id`` plus ``SCORE_COLUMNS`` (scores NaN when the
    frame did not decode or the text has no sentence). ``sentences``: one row per pair and
    sentence (``pair_id``, ``sentence``, ``n_tokens``, ``truncated``, ``score``).
    ``segments``: one row per pair with the whole text's token count (``segment_tokens``)
    and whether 77 tokens cut it. ``frames``: one row per frame the pairs use (``story_id``,
    ``frame``, ``decoded``, ``width``, ``height``). ``counts``: how many frames and texts
    were needed, how many were computed now (a fully cached rerun computes none), frames
    skipped as undecodable, sentences truncated, and the seconds spent embedding.
    """

    features: pd.DataFrame
    sentences: pd.DataFrame
    segments: pd.DataFrame
    frames: pd.DataFrame
    counts: dict[str, int | float]


def clip_features(clip: Clip, pairs: pd.DataFrame, frames: Mapping[tuple[str, int], bytes],
                  cache_dir: str | os.PathLike, *, aggregate: str = "max", top_k: int = 2,
                  batch_size: int = 32) -> ClipResult:
    """The CLIP part of the feature table for every pair, from cached embeddings.

    ``pairs`` needs ``pair_id``, ``story_id``, ``frame``, ``text`` (plain) and
    ``tagged_text``; ``frames`` maps ``(story_id, frame)`` to the frame's encoded bytes.
    ``clip_score`` is the ``aggregate`` of the per-sentence scores; the variants are
    ``clip_score_max``/``_mean``/``_topk`` and the two baselines, ``clip_score_trunc77`` (the
    whole plain text, truncated to 77 tokens) and ``clip_score_first150`` (the first 150
    characters of the tagged text: the study cut its whole story that way, for the first
    frame only; here each pair's own text is cut). Embeddings live in
    the cache folders ``cache_dir/images`` and ``cache_dir/texts``.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown CLIP aggregate {aggregate!r}: expected one of {AGGREGATES}")
    if missing := {"pair_id", "story_id", "frame", "text", "tagged_text"} - set(pairs.columns):
        raise ValueError(f"pairs table lacks column(s) {sorted(missing)}")
    if pairs.empty:
        raise ValueError("no pairs to score")
    cache_dir = Path(cache_dir)
    frame_of_pair = list(zip(pairs["story_id"].astype(str), pairs["frame"].astype(int)))
    frame_ids = list(dict.fromkeys(frame_of_pair))
    if absent := [f for f in frame_ids if f not in frames]:
        raise ValueError(f"{len(absent)} frame(s) of the pairs have no image, e.g. {absent[:3]}")

    t0 = time.perf_counter()
    images, frames_computed = embed_images(clip, {f"{s}/{n}": frames[(s, n)] for s, n in frame_ids},
                                           cache_dir / "images", batch_size=batch_size)
    seconds_frames = time.perf_counter() - t0
    sentences = {text: split_sentences(text) for text in dict.fromkeys(pairs["text"])}
    t0 = time.perf_counter()
    sentence_table, sentences_computed = embed_texts(clip, [s for ss in sentences.values() for s in ss],
                                                     cache_dir / "texts", batch_size=batch_size)
    seconds_sentences = time.perf_counter() - t0
    first150 = [tagged[:FIRST_CHARS] for tagged in pairs["tagged_text"]]
    baseline_table, baselines_computed = embed_texts(clip, [*sentences, *first150], cache_dir / "texts",
                                                     batch_size=batch_size)

    # Scores from the cached vectors: one cosine per (pair, text) is a dot product.
    texts = pd.concat([sentence_table, baseline_table]).drop_duplicates("text").reset_index(drop=True)
    row_of_text = dict(zip(texts["text"], texts.index))
    text_matrix = np.stack(texts["embedding"].to_numpy()) if len(texts) else np.zeros((0, 0), np.float32)
    width = text_matrix.shape[1]
    image_matrix = np.stack([np.full(width, np.nan, np.float32) if e is None else e for e in images["embedding"]])
    row_of_frame = {fid: i for i, fid in enumerate(frame_ids)}

    def scores(frame: tuple[str, int], items: Sequence[str]) -> np.ndarray:
        rows = [row_of_text[t] for t in items]
        return cosine_to_score(text_matrix[rows].astype(np.float64) @ image_matrix[row_of_frame[frame]])

    feature_rows, sentence_rows = [], []
    for pair_id, frame, text, cut in zip(pairs["pair_id"], frame_of_pair, pairs["text"], first150):
        per_sentence = scores(frame, sentences[text])
        trunc77, first = scores(frame, [text, cut])
        by_aggregate = {how: aggregate_scores(per_sentence, how, top_k) for how in AGGREGATES}
        feature_rows.append({"pair_id": pair_id, "clip_score": by_aggregate[aggregate],
                             **{f"clip_score_{how}": value for how, value in by_aggregate.items()},
                             "clip_score_trunc77": trunc77, "clip_score_first150": first,
                             "n_sentences": len(sentences[text])})
        sentence_rows.extend({"pair_id": pair_id, "sentence": i, "text": s, "score": value}
                             for i, (s, value) in enumerate(zip(sentences[text], per_sentence)))

    token_info = texts.set_index("text")[["n_tokens", "truncated"]]
    sentence_frame = pd.DataFrame(sentence_rows, columns=["pair_id", "sentence", "text", "score"])
    sentence_frame = sentence_frame.join(token_info, on="text").drop(columns="text")
    segments = pairs[["pair_id"]].assign(
        segment_tokens=token_info.loc[pairs["text"], "n_tokens"].to_numpy(),
        segment_truncated=token_info.loc[pairs["text"], "truncated"].to_numpy(),
    )
    counts = {
        "pairs": len(pairs),
        "frames": len(images),
        "frames_computed": frames_computed,
        "frames_skipped": int((~images["decoded"].astype(bool)).sum()),
        "sentences": len(sentence_table),
        "sentences_computed": sentences_computed,
        "sentences_truncated": int(sentence_table["truncated"].sum()),
        "baseline_texts": len(baseline_table),
        "baseline_texts_computed": baselines_computed,
        "seconds_frames": round(seconds_frames, 3),
        "seconds_sentences": round(seconds_sentences, 3),
    }
    frame_table = pd.DataFrame({"story_id": [s for s, _ in frame_ids], "frame": [f for _, f in frame_ids]})
    frame_table = frame_table.assign(**{c: images[c].to_numpy() for c in ("decoded", "width", "height")})
    return ClipResult(features=pd.DataFrame(feature_rows, columns=["pair_id", *SCORE_COLUMNS]),
                      sentences=sentence_frame, segments=segments.reset_index(drop=True), frames=frame_table,
                      counts=counts)


# --------------------------------------------------------------------------- chapter tables


def scorer_labels(top_k: int) -> dict[str, str]:
    """Readable names of the score columns that compare text views, in display order."""
    return {
        "clip_score_max": "sentences, max",
        "clip_score_mean": "sentences, mean",
        "clip_score_topk": f"sentences, top-{top_k} mean",
        "clip_score_trunc77": f"whole segment, cut at {MAX_TOKENS} tokens",
        "clip_score_first150": f"first {FIRST_CHARS} characters, tags kept (study)",
    }


def length_table(result: ClipResult, pairs: pd.DataFrame) -> pd.DataFrame:
    """How long the dataset's own segments are, over the positive pairs (each frame's segment once).

    Rows: sentences per segment, tokens per sentence, tokens per whole segment (start and
    end tokens included, before truncation), and the share of a segment's plain text that
    survives the study's cut (its first 150 characters, tags included, with the tags then
    removed). Columns: ``n``, ``mean``, ``median``, ``p90``, ``max`` and ``share_over_77``
    (the share that a 77-token encoder would cut; token rows only).
    """
    from .data import strip_tags

    positives = pairs[pairs["label"] == 1]
    own = set(positives["pair_id"])
    features = result.features[result.features["pair_id"].isin(own)]
    kept = [len(strip_tags(re.sub(r"<[^>]*$", "", tagged[:FIRST_CHARS]))) / max(len(text), 1)
            for tagged, text in zip(positives["tagged_text"], positives["text"])]
    series = {
        "sentences per segment": features["n_sentences"],
        "tokens per sentence": result.sentences.loc[result.sentences["pair_id"].isin(own), "n_tokens"],
        "tokens per segment": result.segments.loc[result.segments["pair_id"].isin(own), "segment_tokens"],
        "plain characters kept by the study cut": pd.Series(kept, dtype=float),
    }
    rows = []
    for name, values in series.items():
        values = values.astype(float)
        over = (values > MAX_TOKENS).mean() if name.startswith("tokens") else math.nan
        rows.append({"": name, "n": len(values), "mean": values.mean(), "median": values.median(),
                     "p90": values.quantile(0.9), "max": values.max(), f"share_over_{MAX_TOKENS}": over})
    return pd.DataFrame(rows).set_index("")


def plot_token_lengths(result: ClipResult, pairs: pd.DataFrame) -> "matplotlib.figure.Figure":  # noqa: F821
    """Histogram of tokens per sentence and per whole segment (positive pairs), with CLIP's limit."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    own = set(pairs.loc[pairs["label"] == 1, "pair_id"])
    sentences = result.sentences.loc[result.sentences["pair_id"].isin(own), "n_tokens"]
    segments = result.segments.loc[result.segments["pair_id"].isin(own), "segment_tokens"]
    data = pd.concat([pd.DataFrame({"tokens": sentences, "text": "sentence"}),
                      pd.DataFrame({"tokens": segments, "text": "whole segment"})], ignore_index=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.histplot(data=data, x="tokens", hue="text", bins=40, element="step", stat="count", common_bins=True, ax=ax)
    ax.axvline(MAX_TOKENS, color="black", linestyle="--", linewidth=1)
    ax.text(MAX_TOKENS, ax.get_ylim()[1] * 0.95, f" CLIP's limit ({MAX_TOKENS})", va="top", fontsize=9)
    ax.set_xlabel("tokens (start and end tokens included, before truncation)")
    ax.set_title("Text length in CLIP tokens")
    fig.tight_layout()
    return fig


def plot_score_distributions(table: pd.DataFrame, aggregate: str,
                             top_k: int) -> "matplotlib.figure.Figure":  # noqa: F821
    """Score distributions by group (``helpers.objects.plot_score_by_group``) for the pair
    score and the two baselines, side by side on a shared x range zoomed to the data:
    CLIP's scores fill a narrow band of [0, 1]."""
    import matplotlib.pyplot as plt

    from .objects import plot_score_by_group

    labels = scorer_labels(top_k)
    columns = {"clip_score": f"clip_score: {labels[f'clip_score_{aggregate}']}",
               "clip_score_trunc77": labels["clip_score_trunc77"],
               "clip_score_first150": labels["clip_score_first150"]}
    values = table[list(columns)].to_numpy(dtype=float)
    low, high = np.nanmin(values), np.nanmax(values)
    margin = 0.05 * (high - low) or 0.01
    fig, axes = plt.subplots(1, len(columns), figsize=(15, 3.8), sharey=True)
    for ax, (column, title) in zip(axes, columns.items()):
        plot_score_by_group(table.dropna(subset=[column]), column, ax=ax)
        ax.set_xlim(low - margin, high + margin)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def auc_table(table: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """ROC-AUC of each text view (:func:`scorer_labels`) against each negative type, wide.

    ``table`` holds the pairs with their CLIP columns; pairs with no score (undecodable
    frame) are left out. Rows are the negative types then ``all negatives`` (as
    ``helpers.objects.auc_by_negative_type`` orders them), columns the text views.
    """
    from .objects import auc_by_negative_type

    labels = scorer_labels(top_k)
    scored = table.dropna(subset=list(labels))
    long = pd.concat([auc_by_negative_type(scored, column).assign(scorer=label) for column, label in labels.items()])
    wide = long.pivot(index="negative_type", columns="scorer", values="roc_auc")
    return wide.loc[list(dict.fromkeys(long["negative_type"])), list(labels.values())]


def plot_auc(auc: pd.DataFrame) -> "matplotlib.figure.Figure":  # noqa: F821
    """Grouped bars of :func:`auc_table`: one group per negative type, one bar per text view."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = auc.reset_index().melt(id_vars="negative_type", var_name="text view", value_name="ROC-AUC")
    fig, ax = plt.subplots(figsize=(11, 4))
    sns.barplot(data=long, x="negative_type", y="ROC-AUC", hue="text view", ax=ax)
    ax.axhline(0.5, color="black", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("negatives the positives are told apart from")
    ax.legend(title="text view", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title("CLIP: positives vs each kind of negative, by text view (dashed: chance)")
    fig.tight_layout()
    return fig


def cost_table(counts: Mapping[str, int | float]) -> pd.DataFrame:
    """Embeddings a run needs and computes, in total and per pair (``ClipResult.counts``).

    A pair's score costs no forward pass of its own: each distinct frame and each distinct
    sentence is embedded once and reused by every pair that contains it.
    """
    pairs = counts["pairs"]
    rows = [
        ("frames (image encoder)", counts["frames"], counts["frames_computed"]),
        ("sentences (text encoder)", counts["sentences"], counts["sentences_computed"]),
        ("baseline texts (text encoder)", counts["baseline_texts"], counts["baseline_texts_computed"]),
    ]
    table = pd.DataFrame(rows, columns=["embeddings of", "needed", "computed this run"]).set_index("embeddings of")
    table.loc["frames + sentences"] = table.iloc[:2].sum()
    table["needed per pair"] = table["needed"] / pairs
    table["computed per pair"] = table["computed this run"] / pairs
    return table
