"""BLIP-VQA plumbing: load the weights, and answer yes/no questions about frames, cached on disk.

Chapter 03 (``helpers.semantics``) builds the questions from a text's tags and scores the answers.
An answer is P(yes), scored, never sampled: the frame goes through the vision encoder, the
question through the text encoder (attending to the frame's patch encodings), and the answer
decoder is teacher-forced on ``[DEC] yes [SEP]`` and on ``[DEC] no [SEP]``, the conditioning
``BlipForQuestionAnswering.generate`` gives it (it starts the decoder from
``decoder_start_token_id``, BLIP's ``[DEC]``, and stops at ``[SEP]``). With p(a) the
decoder's probability of the whole answer sequence, P(yes) = p(yes) / (p(yes) + p(no)).

Answers are cached on disk per (cache version, weights identity, frame SHA-1, question). Weights
(profile key ``questions.weights``): a Hub id (``Salesforce/blip-vqa-base``; offline and not
cached raises ``MissingAssetError``), a local folder written by ``save_pretrained``, or
``"random"`` / ``"random-full-size"``: seeded random weights of the same class at a small size
or at blip-vqa-base's (:mod:`helpers.smoke.vqa`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .clip import _autocast
from .config import RANDOM_FULL_SIZE
from .io import compute_cached, stable_hash
from .weights import HubModel

if TYPE_CHECKING:
    import torch
    from transformers import BlipForQuestionAnswering, BlipProcessor

__all__ = ["MODEL_ID", "ANSWER_COLUMNS", "RANDOM_FOLDER", "Vqa", "VQA", "answer_yes"]

MODEL_ID = "Salesforce/blip-vqa-base"
#: Columns of the table :func:`answer_yes` returns.
ANSWER_COLUMNS = ["story_id", "frame", "question", "status", "p_yes"]
RANDOM_FOLDER = "vqa-random"
#: Part of every cache key: bumped when the scoring changes, so old rows are recomputed, not misread.
_CACHE_VERSION = 1
#: Files a Hub snapshot of a BLIP-VQA model needs; each entry lists acceptable alternatives.
_HUB_FILES = (("config.json",), ("preprocessor_config.json", "processor_config.json"),
              ("tokenizer.json", "vocab.txt"), ("model.safetensors", "pytorch_model.bin"))


@dataclass(frozen=True)
class Vqa:
    """A loaded BLIP-VQA model with its processor, device and content identity (parameters,
    tokenizer, image preprocessing and precision: answers cached under it are valid exactly for it)."""

    model: "BlipForQuestionAnswering"
    processor: "BlipProcessor"
    device: "torch.device"
    identity: str
    source: str


def _build_random(spec: str, models_dir: Path, seed: int) -> Path:
    from .smoke.vqa import build_random_blip_vqa

    full = spec == RANDOM_FULL_SIZE
    return build_random_blip_vqa(models_dir / (f"{RANDOM_FOLDER}-full" if full else RANDOM_FOLDER), seed=seed,
                                 full_size=full)


#: BLIP-VQA in the table of models: ``helpers.weights.load_model(VQA, spec, models_dir=...)`` loads it.
VQA = HubModel(what="BLIP-VQA weights", build_random=_build_random, hub_files=_HUB_FILES,
               model_class="BlipForQuestionAnswering", processor_class="BlipProcessor", wrap=Vqa)


def _answer_ids(vqa: Vqa, answer: str) -> list[int]:
    """The decoder's input for ``answer``: ``[DEC]`` (the model's decoder start), its tokens, ``[SEP]``."""
    tokens = vqa.processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
    return [vqa.model.decoder_start_token_id, *tokens, vqa.model.config.text_config.sep_token_id]


def answer_yes(vqa: Vqa, frames: Mapping[tuple[str, int], bytes], questions: Mapping[tuple[str, int], Sequence[str]],
               cache_path: str | os.PathLike, *, batch_size: int) -> tuple[pd.DataFrame, int]:
    """P(yes) of each yes/no question about its frame (see the module docstring), cached on disk.

    ``frames`` maps ``(story_id, frame)`` to the frame's encoded bytes, ``questions`` maps
    the same keys to the questions to ask about it. Returns ``(table, n_encoded)``: one row
    per distinct (frame, question) with :data:`ANSWER_COLUMNS` (``status`` ``"ok"``, or
    ``"corrupt"`` for a frame that does not decode: skipped, cached as such, ``p_yes`` NaN),
    and the number of frames whose image was encoded in this call.

    Questions are answered ``batch_size`` at a time, grouped by frame. The vision encoder
    runs once per frame and call, its patch encodings kept in memory for every question
    of that frame; they are not cached on disk (BLIP's 577 x 768 patch encodings per frame
    would outweigh the answers many times), so a new question about a frame seen in an
    earlier run encodes that frame again. A rerun with the same questions computes nothing.
    """
    import torch

    from .data import CorruptFrameError, frame_image

    items = [(str(s), int(f), str(q)) for (s, f), qs in questions.items() for q in dict.fromkeys(qs)]
    if not items:
        return pd.DataFrame(columns=ANSWER_COLUMNS), 0
    if absent := sorted({(s, f) for s, f, _ in items} - {(str(s), int(f)) for s, f in frames}):
        raise ValueError(f"{len(absent)} frame(s) with questions have no image, e.g. {absent[:3]}")
    data = {(str(s), int(f)): b for (s, f), b in frames.items()}
    sha = {key: hashlib.sha1(data[key]).hexdigest() for key in {(s, f) for s, f, _ in items}}
    keys = [stable_hash({"v": _CACHE_VERSION, "vqa": vqa.identity, "frame_sha1": sha[(s, f)], "question": q})
            for s, f, q in items]
    item_of = dict(zip(keys, items))
    # a frame's questions together, similar lengths side by side (less padding)
    order = sorted(range(len(items)), key=lambda i: (sha[items[i][:2]], len(items[i][2]), items[i][2]))
    model = vqa.model
    encoded: dict[str, Any] = {}  # frame SHA-1 -> patch encodings (or None: does not decode), this batch's frames
    n_encoded = 0

    def encode(batch_frames: list[tuple[str, int]]) -> None:
        nonlocal n_encoded
        todo = {sha[k]: k for k in batch_frames if sha[k] not in encoded}
        images = {}
        for digest, key in todo.items():
            try:
                images[digest] = frame_image([data[key]], 1)
            except CorruptFrameError:
                encoded[digest] = None
        if images:
            pixels = vqa.processor.image_processor(images=list(images.values()), return_tensors="pt")["pixel_values"]
            with torch.inference_mode(), _autocast(vqa.device):
                out = model.vision_model(pixel_values=pixels.to(vqa.device)).last_hidden_state
            encoded.update(zip(images, out))
            n_encoded += len(images)

    def compute(batch: list[str]) -> list[dict[str, Any]]:
        frames_here = [item_of[k][:2] for k in batch]
        for digest in [d for d in encoded if d not in {sha[k] for k in frames_here}]:
            del encoded[digest]  # keys are grouped by frame: an earlier batch's frame is not needed again
        encode(list(dict.fromkeys(frames_here)))
        ok = [i for i, key in enumerate(frames_here) if encoded[sha[key]] is not None]
        rows: list[dict[str, Any]] = [{"status": "corrupt", "p_yes": math.nan} for _ in batch]
        if ok:
            answers = [_answer_ids(vqa, "yes"), _answer_ids(vqa, "no")]
            for i, p in zip(ok, _p_yes(vqa, [encoded[sha[frames_here[i]]] for i in ok],
                                       [item_of[batch[i]][2] for i in ok], answers)):
                rows[i] = {"status": "ok", "p_yes": p}
        return rows

    table, _ = compute_cached(cache_path, [keys[i] for i in order], compute, batch_size=batch_size,
                              desc="VQA answers")
    table = table.set_axis(order).sort_index()  # back in the order of ``questions``
    table = table.assign(story_id=[s for s, _, _ in items], frame=[f for _, f, _ in items],
                         question=[q for _, _, q in items], p_yes=table["p_yes"].astype(float))
    return table[ANSWER_COLUMNS].reset_index(drop=True), n_encoded


def _p_yes(vqa: Vqa, image_embeds: Sequence["torch.Tensor"], questions: Sequence[str],
           answers: Sequence[list[int]]) -> list[float]:
    """P(first answer) among ``answers`` (token ids from ``[DEC]`` to ``[SEP]``) for each question
    about the frame whose patch encodings go with it: teacher-forced sequence probabilities.

    The questions of a batch are padded, and their padding masked in the answer decoder's
    cross-attention (:func:`_masking_question_padding`): each answer is what ``generate``
    conditions on for that question alone, whatever else shares its batch.
    """
    import torch

    model, device, k = vqa.model, vqa.device, len(answers)
    q = vqa.processor.tokenizer(list(questions), padding=True, truncation=True, return_tensors="pt",
                                max_length=model.config.text_config.max_position_embeddings)
    q_ids, q_mask = q["input_ids"].to(device), q["attention_mask"].to(device)
    width, pad = max(len(a) for a in answers), model.config.text_config.pad_token_id
    dec = torch.tensor([a + [pad] * (width - len(a)) for a in answers for _ in questions], device=device)
    dec_mask = (dec != pad).long()
    with torch.inference_mode(), _autocast(device), _masking_question_padding(model):
        images = torch.stack(list(image_embeds))
        states = model.text_encoder(input_ids=q_ids, attention_mask=q_mask, encoder_hidden_states=images,
                                    return_dict=False)[0]
        logits = model.text_decoder(input_ids=dec, attention_mask=dec_mask, encoder_hidden_states=states.repeat(k, 1, 1),
                                    encoder_attention_mask=q_mask.repeat(k, 1), use_cache=False).logits
    logprobs = logits[:, :-1].float().log_softmax(-1).gather(-1, dec[:, 1:, None])[..., 0]
    sequence = (logprobs * dec_mask[:, 1:]).sum(-1).view(k, len(questions))  # log p(answer | question, frame)
    return sequence.softmax(0)[0].cpu().tolist()


@contextlib.contextmanager
def _masking_question_padding(model: "BlipForQuestionAnswering") -> Iterator[None]:
    """Within the block, the answer decoder's cross-attention masks the questions' padding: BLIP's
    text layers in transformers 5 pass that mask under the self-attention's name, and the
    attention then reads the (absent) encoder mask. A no-op where it already has one."""
    def restore(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if kwargs.get("encoder_hidden_states") is not None and kwargs.get("encoder_attention_mask") is None:
            kwargs["encoder_attention_mask"] = kwargs.get("attention_mask")
        return args, kwargs

    hooks = [layer.crossattention.self.register_forward_pre_hook(restore, with_kwargs=True)
             for layer in model.text_decoder.bert.encoder.layer]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
