"""Verify one image against one text with the trained head, and say why.

    python -m helpers.verify [--profile quick] [--frame N] IMAGE TEXT      (TEXT "-" reads stdin)

or, in Python, ``verify(image, text, profile="quick")``. The image is any picture (a path or
a PIL image); the text is a story segment, tagged (``<gdo char1>James</gdo> sits ...``,
with or without its ``<gdi imageN>`` wrapper) or plain. The three pieces of evidence come
from the function that scores the dataset's pairs (``helpers.fusion.score_pairs``, chapter
05), with the profile's detector, CLIP, input size and score threshold (one difference: a
query has no chain of thought, so a character mention is read through its own text). The head is the ``best.pt`` of the
profile's default training run (chapter 06), and the decision uses the threshold tuned
with it on the validation split.

The result (JSON on the command line) holds the probability, the decision, the threshold,
the scores and every input of the head, and the explanation: the COCO categories
the text needs, those found (with their best box) and those missing; each relation the
text states, held, failed or unverifiable, with the boxes used; CLIP's score per
sentence; and, when the profile switches them on, the entity phrases OWL-ViT found (with
their best box) and missed, and every yes/no question asked of BLIP-VQA with its P(yes)
(a question whose parent does not hold counts as no). ``--run fusion_extended`` decides with
the extended head, which reads those two scores too; the default head reads the study's three. Bad input (a missing or unreadable image, an empty text, a profile with no
trained checkpoint, weights that are not available) ends the command with a one-line
error naming the problem and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import MissingAssetError, Paths, load_profile, output_paths

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from .clip import Clip
    from .detection import Detector
    from .fusion import TrainedHead
    from .owlvit import OwlVit
    from .tags import Segment
    from .vqa import Vqa

__all__ = ["VerifyError", "Verifier", "load_verifier", "read_image", "read_text", "verify", "main"]


class VerifyError(ValueError):
    """Input the verifier cannot use; the message names the problem."""


@dataclass(frozen=True)
class Verifier:
    """A profile's trained head and evidence models, loaded once for any number of pairs."""

    profile: str
    cfg: dict[str, Any]
    checkpoint: Path
    head: "TrainedHead"
    detector: "Detector"
    clip: "Clip"
    owlvit: "OwlVit | None" = None
    vqa: "Vqa | None" = None


def load_verifier(profile: str = "quick", overrides: dict[str, Any] | None = None, *, run: str | None = None) -> Verifier:
    """Load the head of one of ``profile``'s training runs (default: its default run, the study's
    inputs; ``"fusion_extended"``: the extended inputs) and the profile's models: the detector,
    CLIP, and OWL-ViT and BLIP-VQA when the profile switches their evidence on.

    ``overrides`` changes profile values (as in ``helpers.notebook.start``). Raises
    ``VerifyError`` when the profile has no trained checkpoint, ``MissingAssetError`` when
    its pretrained weights are unavailable offline.
    """
    from .clip import CLIP
    from .detection import DETECTOR
    from .fusion import evidence_enabled
    from .owlvit import OWLVIT
    from .training import CheckpointError, default_checkpoint, load_head
    from .vqa import VQA
    from .weights import load_model

    cfg = load_profile(profile, overrides)
    paths: Paths = output_paths(profile)
    checkpoint = default_checkpoint(paths, *([run] if run else []))
    try:
        head = load_head(checkpoint)
    except CheckpointError as err:
        raise VerifyError(f"profile {profile!r} has no usable trained checkpoint ({err}); train it first: "
                          f"make run-all PROFILE={profile}") from None
    models = {"models_dir": paths.models, "seed": int(cfg.get("seed", 42))}
    return Verifier(profile=profile, cfg=cfg, checkpoint=checkpoint, head=head,
                    detector=load_model(DETECTOR, str(cfg["detector"]["weights"]), **models),
                    clip=load_model(CLIP, str(cfg["clip"]["weights"]), **models),
                    owlvit=load_model(OWLVIT, str(cfg["openvocab"]["weights"]), **models)
                    if evidence_enabled(cfg, "openvocab") else None,
                    vqa=load_model(VQA, str(cfg["questions"]["weights"]), **models)
                    if evidence_enabled(cfg, "questions") else None)


def read_image(image: "str | os.PathLike | PILImage.Image") -> "PILImage.Image":
    """An RGB PIL image from a path or an image; ``VerifyError`` when it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    if not path.is_file():
        raise VerifyError(f"image not found: {path}")
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")  # convert() forces the full decode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise VerifyError(f"cannot read image {path}: {err}") from None


def read_text(text: str, frame: int | None = None) -> "Segment | str":
    """The text as the evidence functions take it: a parsed ``Segment`` when it has tags, else the plain string.

    A tagged story with several ``<gdi imageN>`` segments needs ``frame`` to pick one.
    Raises ``VerifyError`` for an empty text or an ambiguous or missing segment.
    """
    from .tags import StoryFormatError, parse_segment, parse_story, strip_tags

    if not isinstance(text, str) or not strip_tags(text).strip():
        raise VerifyError("the text is empty")
    if "<gdi" in text.lower():
        try:
            segments = {s.frame: s for s in parse_story(text)}
        except StoryFormatError as err:
            raise VerifyError(f"cannot read the tagged text: {err}") from None
        if frame is None and len(segments) > 1:
            raise VerifyError(f"the text has {len(segments)} frame segments {sorted(segments)}: choose one with --frame")
        chosen = segments.get(frame) if frame is not None else next(iter(segments.values()))
        if chosen is None:
            raise VerifyError(f"the text has no segment for frame {frame} (it has {sorted(segments)})")
        if not chosen.plain.strip():
            raise VerifyError(f"the text of frame {chosen.frame} is empty")
        return chosen
    if "<gd" in text.lower():
        return parse_segment(text.strip(), frame or 1)
    return " ".join(text.split())


def _png(image: "PILImage.Image") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def verify(
    image: "str | os.PathLike | PILImage.Image",
    text: str,
    profile: str = "quick",
    *,
    frame: int | None = None,
    verifier: Verifier | None = None,
    run: str | None = None,
) -> dict[str, Any]:
    """Whether ``image`` shows ``text``, by the trained head of ``profile``, with the evidence behind it.

    Pass a ``verifier`` (``load_verifier``) to score many pairs without reloading the models.
    Returns a JSON-ready dict: ``probability``, ``aligned`` (probability >= ``threshold``),
    ``threshold``, ``scores`` (the evidence scores the profile computes), ``inputs`` (every input
    of the head), ``explanation`` (``objects``: needed / found with boxes / missing; ``relations``:
    held / failed / unverifiable, with boxes, or the proximity fallback; ``clip``: per
    sentence; ``openvocab``: phrases found with boxes / missing; ``questions``: each with its
    P(yes)), plus ``profile``, ``checkpoint`` and ``image_size``. ``run`` chooses the head as in
    ``load_verifier`` (ignored with a ``verifier``).
    """
    parsed = read_text(text, frame)  # cheap checks first: bad input never waits for a model
    picture = read_image(image)
    v = verifier or load_verifier(profile, run=run)

    import pandas as pd

    from .fusion import STATE_INDICATORS, STATE_OF, feature_matrix, score_pairs
    from .semantics import clip_features, split_sentences

    clip_cfg = v.cfg["clip"]
    # The three evidences come from score_pairs, as for every pair of the dataset (chapter 05), and
    # from the plain text, as the head was trained: a tagged segment and its plain text get the same verdict.
    plain, tagged = (parsed, parsed) if isinstance(parsed, str) else (parsed.plain, parsed.tagged)
    pair = pd.DataFrame([{"pair_id": "query", "story_id": "query", "frame": 1, "text": plain, "tagged_text": tagged,
                          "source_story_id": "query", "source_frame": 1}])
    frames = {("query", 1): _png(picture)}
    with tempfile.TemporaryDirectory(prefix="verify-") as cache:
        row = score_pairs(pair, frames, detector=v.detector, clip=v.clip, cfg=v.cfg,
                          cache_dir=cache, openvocab=v.owlvit, vqa=v.vqa).iloc[0]
        sentences = clip_features(v.clip, pair, frames, Path(cache) / "clip", aggregate=clip_cfg["aggregate"],
                                  top_k=int(clip_cfg["top_k"]), batch_size=int(clip_cfg["batch_size"])).sentences  # cached
    if pd.isna(row["clip_score"]):
        raise VerifyError("CLIP found no sentence to score in the text")

    inputs = {
        "object_score": float(row["object_score"]), "object_informative": bool(row["object_informative"]),
        **{c: float(row[c]) for c in row.index if c.startswith("clip_score")},
        "spatial_score": float(row["spatial_score"]), "spatial_informative": bool(row["spatial_informative"]),
        "relations_checked": int(row["relations_checked"]), "relations_held": int(row["relations_held"]),
        **{c: float(row[c]) for c in ("openvocab_score", "question_score") if c in row.index},
        **{c: bool(row[c]) for c in ("openvocab_informative", "question_informative") if c in row.index},
        **{c: str(row[c]) for c in STATE_OF.values() if c in row.index},  # a score is a placeholder unless "checked"
    }
    absent = [c for c in v.head.features if (STATE_INDICATORS[c][0] if c in STATE_INDICATORS else c) not in inputs]
    if absent:
        raise VerifyError(f"the head {v.checkpoint} reads {absent}, which profile {v.profile!r} does not compute: "
                          "switch that evidence on in the profile, or choose another run")
    probability = float(v.head.predict_proba(pd.DataFrame([inputs]))[0])
    head_inputs = feature_matrix(pd.DataFrame([inputs]), v.head.features)[0]  # NaN: a placeholder, read as missing
    relations = json.loads(row["relations_json"])
    explanation: dict[str, Any] = {
        "objects": {
            "state": inputs["object_state"], "informative": inputs["object_informative"],
            **{key: json.loads(row[f"objects_{key}"]) for key in ("needed", "found", "missing")},
        },
        "relations": {
            "state": inputs["spatial_state"], "informative": inputs["spatial_informative"],
            "source": str(row["spatial_source"]),
            **{status: [r for r in relations if r["status"] == status]
               for status in ("held", "failed", "unverifiable", "proximity")},
        },
        "clip": {
            **({"state": str(row["clip_state"])} if "clip_state" in row.index else {}),
            "aggregate": clip_cfg["aggregate"],
            "sentences": [{"text": s, "score": float(score)} for s, score in
                          zip(split_sentences(plain), sentences.sort_values("sentence")["score"])],
        },
    }
    if "openvocab_score" in row.index:
        explanation["openvocab"] = {"state": inputs["openvocab_state"], "informative": inputs["openvocab_informative"],
                                    **{key: json.loads(row[f"openvocab_{key}"]) for key in ("phrases", "found", "missing")}}
    if "question_score" in row.index:
        explanation["questions"] = {"state": inputs["question_state"], "informative": inputs["question_informative"],
                                    "score": inputs["question_score"],
                                    "questions": json.loads(row["questions"])}
    return {
        "profile": v.profile,
        "checkpoint": str(v.checkpoint),
        "probability": probability,
        "threshold": v.head.threshold,
        "aligned": probability >= v.head.threshold,
        "scores": {name: inputs[name] for name in ("object_score", "clip_score", "spatial_score", "openvocab_score",
                                                   "question_score") if name in inputs},
        "inputs": {name: None if math.isnan(x) else float(x) for name, x in zip(v.head.features, head_inputs)},
        "states": {c: inputs[c] for c in STATE_OF.values() if c in inputs},  # None above: a placeholder
        "image_size": list(picture.size),
        "explanation": explanation,
    }


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """The command line: print the verification as JSON, or one line of error and return 2."""
    parser = argparse.ArgumentParser(prog="python -m helpers.verify",
                                     description="Does this image show this text? Prints the verdict and its evidence as JSON.")
    parser.add_argument("image", help="path to an image file")
    parser.add_argument("text", help='the text, tagged or plain; "-" reads it from standard input')
    parser.add_argument("--profile", default="quick", help="whose trained head and models to use (default: quick)")
    parser.add_argument("--frame", type=int, default=None, help="which <gdi imageN> segment of a tagged story to check")
    parser.add_argument("--run", default=None,
                        help="whose head decides: a training run of chapter 06 (default: fusion; fusion_extended "
                             "reads the open-vocabulary and question scores too)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # standard error carries errors only
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    text = sys.stdin.read() if args.text == "-" else args.text
    try:
        load_profile(args.profile)  # an unknown profile fails before anything is read
        result = verify(args.image, text, args.profile, frame=args.frame, run=args.run)
    except (VerifyError, MissingAssetError, ValueError, OSError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
