"""A masked language model that says how plausible a phrase is in its sentence.

Chapter 01 builds negatives by editing a frame's own text. An edit a reader can spot
without the frame ("Jack holds a microwave") measures the text, not the alignment; so the
object put in is the one the sentence makes plausible, and a reversed relation is kept
only when it reads about as well as the original. Both are judged by a masked language
model (``distilroberta-base`` by default): the log-probability of a span of a text in its
context, as a pseudo-log-likelihood (Salazar et al., 2020): each token of the span is
masked in turn and the model's log-probability of the true token there is averaged.

Every score is computed once and cached on disk (``helpers.io.compute_cached``), keyed by
the model's identity (a hash of its parameters and tokenizer), the text and the span; the
masked copies of all items in a call are batched together, shortest first.

Weights (profile key ``mlm.weights``): a Hub id (cached under ``HF_HOME``; offline and not
cached raises ``MissingAssetError``), a local folder written by ``save_pretrained`` (model
and tokenizer), or ``"random"`` / ``"random-full-size"``: seeded random weights and an
offline tokenizer (:mod:`helpers.smoke.mlm`), saved under the profile's ``models`` folder
and loaded back through the local-folder path (:data:`MLM`). :data:`CAUSAL_LM` is chapter 07's
control language model (profile key ``control_lm.weights``, ``gpt2``; ``"random"``: a small
GPT-2) the same three ways.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .io import compute_cached, stable_hash
from .weights import HubModel

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MODEL_ID = "distilroberta-base"
#: The control language model of chapter 07, of another family than the masked one.
CAUSAL_MODEL_ID = "gpt2"
#: Part of every cache key: bumped when the scoring changes, so old rows are recomputed.
_CACHE_VERSION = 2
#: Files a Hub snapshot of a masked language model needs; each entry lists alternatives.
_HUB_FILES = (("config.json",), ("tokenizer.json", "vocab.json"), ("model.safetensors", "pytorch_model.bin"))


@dataclass(frozen=True)
class Mlm:
    """A loaded masked language model, its tokenizer, device and content identity."""

    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    device: "torch.device"
    identity: str
    source: str

    @property
    def max_length(self) -> int:
        """The most tokens one input may have, special tokens included."""
        positions = getattr(self.model.config, "max_position_embeddings", 512)
        offset = 2 if self.model.config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
        return int(min(positions - offset, self.tokenizer.model_max_length or positions))


def _masked(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", device: "torch.device", identity: str,
            source: str) -> Mlm:
    """The loaded model as an :class:`Mlm`, refused when its tokenizer has no mask token."""
    if tokenizer.mask_token_id is None:
        raise ValueError(f"the tokenizer of {source!r} has no mask token: not a masked language model")
    return Mlm(model, tokenizer, device, identity, source)


def _random_mlm(spec: str, models_dir: Path, seed: int) -> Path:
    from .smoke.mlm import random_mlm_folder

    return random_mlm_folder(spec, models_dir, seed)


def _random_causal_lm(spec: str, models_dir: Path, seed: int) -> Path:
    from .smoke.mlm import random_causal_lm_folder

    return random_causal_lm_folder(spec, models_dir, seed)


#: The masked language model in the table of models (``helpers.weights.load_model(MLM, spec, ...)``).
MLM = HubModel(what="masked language model weights", build_random=_random_mlm, hub_files=_HUB_FILES,
               model_class="AutoModelForMaskedLM", processor_class="AutoTokenizer", wrap=_masked)
#: Chapter 07's control language model (``gpt2``; ``"random"``: a small GPT-2), loaded the same way.
CAUSAL_LM = HubModel(what="causal language model weights", build_random=_random_causal_lm, hub_files=_HUB_FILES,
                     model_class="AutoModelForCausalLM", processor_class="AutoTokenizer", wrap=Mlm)


def _item_key(mlm: Mlm, text: str, start: int, end: int) -> str:
    return stable_hash({"v": _CACHE_VERSION, "mlm": mlm.identity, "text": text, "span": [start, end]})


def _encode(mlm: Mlm, text: str, start: int, end: int) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` (special tokens included; cut to a window around the span when
    too long) and the positions of the tokens that overlap ``text[start:end]``."""
    enc = mlm.tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    special = set(mlm.tokenizer.all_special_ids)
    inside = [i for i, (a, b) in enumerate(offsets) if ids[i] not in special and b > a and a < end and b > start]
    if not inside:
        raise ValueError(f"span [{start}, {end}) of {text[:60]!r} covers no token")
    limit = mlm.max_length
    if len(ids) > limit:  # keep the span and as much context around it as fits
        body = ids[1:-1]
        first, last = inside[0] - 1, inside[-1] - 1
        room = limit - 2
        if last - first + 1 > room:
            raise ValueError(f"span [{start}, {end}) is longer than the model's {limit} tokens")
        lo = max(0, min(first - (room - (last - first + 1)) // 2, len(body) - room))
        ids = [ids[0], *body[lo : lo + room], ids[-1]]
        inside = [i - lo for i in inside]
    return ids, inside


def _masked_logits(mlm: Mlm, input_ids: "torch.Tensor", attention: "torch.Tensor", rows: "torch.Tensor",
                   positions: "torch.Tensor") -> "torch.Tensor":
    """The logits at one position per row. With a RoBERTa-style ``lm_head`` only those
    positions go through the vocabulary projection (the rest of the sequence is never
    projected onto 50,265 words); any other model computes all logits and picks."""
    head = getattr(mlm.model, "lm_head", None)
    if head is not None and getattr(mlm.model, "base_model", None) is not None:
        hidden = mlm.model.base_model(input_ids=input_ids, attention_mask=attention).last_hidden_state
        return head(hidden[rows, positions.to(hidden.device)])
    logits = mlm.model(input_ids=input_ids, attention_mask=attention).logits
    return logits[rows, positions.to(logits.device)]


def span_logprob(mlm: Mlm, items: Sequence[tuple[str, int, int]], cache_path: str | os.PathLike, *,
                 batch_size: int = 64) -> np.ndarray:
    """The log-probability of ``text[start:end]`` in ``text``, for each ``(text, start, end)``.

    A pseudo-log-likelihood per token: for every token overlapping the span, the text is copied
    with that token masked, and the model's log-probability of the true token there is averaged
    over the span's tokens (natural log): a long span is not less likely for its length alone.
    All masked copies of a batch of items are run together, ``batch_size`` copies at a time,
    shortest first; results are cached under ``cache_path`` per (model identity, text, span),
    so a rerun does no forward pass. Returns a float array in the order of ``items``.
    """
    import torch

    items = [(str(t), int(a), int(b)) for t, a, b in items]
    for text, start, end in items:
        if not 0 <= start < end <= len(text):
            raise ValueError(f"span [{start}, {end}) is not inside a text of {len(text)} characters")
    if not items:
        return np.zeros(0, dtype=np.float64)
    keys = [_item_key(mlm, *item) for item in items]
    by_key = dict(zip(keys, items))
    pad = mlm.tokenizer.pad_token_id
    mask = mlm.tokenizer.mask_token_id

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        copies: list[tuple[int, list[int], int, int]] = []  # (item, masked ids, position, true id)
        for n, key in enumerate(batch):
            ids, inside = _encode(mlm, *by_key[key])
            for i in inside:
                masked = list(ids)
                masked[i] = mask
                copies.append((n, masked, i, ids[i]))
        order = sorted(range(len(copies)), key=lambda c: len(copies[c][1]))
        total = np.zeros(len(batch), dtype=np.float64)
        for lo in range(0, len(order), batch_size):
            chunk = [copies[c] for c in order[lo : lo + batch_size]]
            width = max(len(c[1]) for c in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (_, ids, _, _) in enumerate(chunk):
                input_ids[r, : len(ids)] = torch.tensor(ids)
                attention[r, : len(ids)] = 1
            rows = torch.arange(len(chunk))
            positions = torch.tensor([c[2] for c in chunk])
            true_ids = torch.tensor([c[3] for c in chunk])
            with torch.inference_mode():
                logits = _masked_logits(mlm, input_ids.to(mlm.device), attention.to(mlm.device), rows, positions)
            picked = logits.float().log_softmax(-1)[rows, true_ids].cpu().numpy()
            for (n, _, _, _), value in zip(chunk, picked):
                total[n] += float(value)
        return [{"logprob": float(v)} for v in total / np.bincount([c[0] for c in copies], minlength=len(batch))]

    table, _ = compute_cached(cache_path, keys, compute, batch_size=max(1, batch_size // 2), desc="MLM spans")
    return table["logprob"].to_numpy(dtype=np.float64)


def fill_logprob(mlm: Mlm, contexts: Sequence[tuple[str, int, int]], candidates: Sequence[Sequence[str]],
                 cache_path: str | os.PathLike, *, batch_size: int = 64) -> list[np.ndarray]:
    """Fill-mask scores of whole candidates: ``text[start:end]`` replaced by as many mask tokens
    as a candidate has, and the mean over its tokens of each token's log-probability at its mask
    (the masks filled at once; natural log). One forward pass per context and candidate length,
    so it can shortlist many candidates before the exact :func:`span_logprob`. A candidate after
    a space is tokenised with that space. Cached per (model identity, masked text, candidates'
    tokens). Returns one array per context, in the order of its candidates."""
    import torch

    prepared, where = {}, []  # key -> (masked text, candidates' tokens); (context, candidates, key)
    for c, ((text, start, end), words) in enumerate(zip(contexts, candidates, strict=True)):
        if not 0 <= start <= end <= len(text):
            raise ValueError(f"span [{start}, {end}) is not inside a text of {len(text)} characters")
        space = " " if start > 0 and text[start - 1] == " " else ""
        tokens = [mlm.tokenizer(space + w, add_special_tokens=False)["input_ids"] for w in words]
        for k in sorted({len(t) for t in tokens}):
            chosen = [n for n, t in enumerate(tokens) if len(t) == k]
            masked, targets = text[:start] + mlm.tokenizer.mask_token * k + text[end:], [tokens[n] for n in chosen]
            key = stable_hash({"v": _CACHE_VERSION, "mlm": mlm.identity, "fill": masked, "targets": targets})
            prepared[key] = (masked, targets)
            where.append((c, chosen, key))
    pad, mask = mlm.tokenizer.pad_token_id, mlm.tokenizer.mask_token_id

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        encoded = []
        for key in batch:
            (masked, targets), k = prepared[key], len(prepared[key][1][0])
            ids = list(mlm.tokenizer(masked)["input_ids"])
            if not k or ids.count(mask) != k:
                raise ValueError(f"{k} mask tokens in {masked[:80]!r} were tokenised as {ids.count(mask)}")
            if len(ids) > mlm.max_length:  # a window around the masks
                room = mlm.max_length - 2
                lo = max(0, min(ids.index(mask) - 1 - (room - k) // 2, len(ids) - 2 - room))
                ids = [ids[0], *ids[1:-1][lo : lo + room], ids[-1]]
            encoded.append((ids, ids.index(mask) + np.arange(k), np.asarray(targets)))
        width = max(len(ids) for ids, _, _ in encoded)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _, _ in encoded])
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _, _ in encoded])
        rows = torch.tensor([r for r, (_, ps, _) in enumerate(encoded) for _ in ps])
        positions = torch.from_numpy(np.concatenate([ps for _, ps, _ in encoded]))
        with torch.inference_mode():
            logits = _masked_logits(mlm, input_ids.to(mlm.device), attention.to(mlm.device), rows, positions)
        per_mask = np.split(logits.float().log_softmax(-1).cpu().numpy(), np.cumsum([len(ps) for _, ps, _ in encoded]))
        return [{"logprobs": lp[np.arange(len(ps)), t].mean(axis=1)} for lp, (_, ps, t) in zip(per_mask, encoded)]

    scores = [np.full(len(words), np.nan) for words in candidates]
    if where:
        table, _ = compute_cached(cache_path, [key for *_, key in where], compute, batch_size=batch_size,
                                  desc="MLM fill-mask")
        for (c, chosen, _), values in zip(where, table["logprobs"]):
            scores[c][chosen] = np.asarray(values, dtype=np.float64)
    return scores
