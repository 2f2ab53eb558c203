"""Verify one image against one text with the trained head, and say why.

    python -m helpers.verify [--profile quick] [--frame N] IMAGE TEXT      (TEXT "-" reads stdin)

or, in Python, ``verify(image, text, profile="quick")``. The image is any picture (a path or
a PIL image); the text is a story segment, tagged (``<gdo char1>James</gdo> sits ...``,
with or without its ``<gdi imageN>`` wrapper) or plain. The three pieces of evidence come
from the functions the chapters use on the dataset, with the profile's detector, CLIP,
input size and score threshold (one difference: a query has no chain of thought, so a
character mention is read through its own text). The head is the ``best.pt`` of the
profile's default training run (chapter 06), and the decision uses the threshold tuned
with it on the validation split.

The result (JSON on the command line) holds the probability, the decision, the threshold,
the three scores and every input of the head, and the explanation: the COCO categories
the text needs, those found (with their best box) and those missing; each relation the
text states, held, failed or unverifiable, with the boxes used; CLIP's score per
sentence. Bad input (a missing or unreadable image, an empty text, a profile with no
trained checkpoint, weights that are not available) ends the command with a one-line
error naming the problem and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import json
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
    from .data import Segment
    from .detection import Detector
    from .fusion import TrainedHead

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


def load_verifier(profile: str = "quick", overrides: dict[str, Any] | None = None) -> Verifier:
    """Load the head of ``profile``'s default training run and the profile's detector and CLIP.

    ``overrides`` changes profile values (as in ``helpers.notebook.start``). Raises
    ``VerifyError`` when the profile has no trained checkpoint, ``MissingAssetError`` when
    its pretrained weights are unavailable offline.
    """
    from .clip import load_clip
    from .detection import load_detector
    from .training import CheckpointError, default_checkpoint, load_head

    cfg = load_profile(profile, overrides)
    paths: Paths = output_paths(profile)
    checkpoint = default_checkpoint(paths)
    try:
        head = load_head(checkpoint)
    except CheckpointError as err:
        raise VerifyError(f"profile {profile!r} has no usable trained checkpoint ({err}); train it first: "
                          f"make run-all PROFILE={profile}") from None
    seed = int(cfg.get("seed", 42))
    detector = load_detector(str(cfg["detector"]["weights"]), models_dir=paths.models, seed=seed)
    clip = load_clip(str(cfg["clip"]["weights"]), models_dir=paths.models, seed=seed)
    return Verifier(profile=profile, cfg=cfg, checkpoint=checkpoint, head=head, detector=detector, clip=clip)


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
    from .data import StoryFormatError, parse_segment, parse_story, strip_tags

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
) -> dict[str, Any]:
    """Whether ``image`` shows ``text``, by the trained head of ``profile``, with the evidence behind it.

    Pass a ``verifier`` (``load_verifier``) to score many pairs without reloading the models.
    Returns a JSON-ready dict: ``probability``, ``aligned`` (probability >= ``threshold``),
    ``threshold``, ``scores`` (the three evidence scores), ``inputs`` (every input of the
    head), ``explanation`` (``objects``: needed / found with boxes / missing; ``relations``:
    held / failed / unverifiable, with boxes, or the proximity fallback; ``clip``: per
    sentence), plus ``profile``, ``checkpoint`` and ``image_size``.
    """
    parsed = read_text(text, frame)  # cheap checks first: bad input never waits for a model
    picture = read_image(image)
    v = verifier or load_verifier(profile)

    import pandas as pd

    from .clip import clip_features, split_sentences
    from .detection import detect_images
    from .objects import needed_categories, object_evidence
    from .spatial import spatial_evidence

    det_cfg, clip_cfg = v.cfg["detector"], v.cfg["clip"]
    threshold = float(det_cfg["score_threshold"])

    detections = [d for d in detect_images(v.detector, [picture], min_size=int(det_cfg["min_size"]))[0]
                  if d.score >= threshold]
    # Every score comes from the plain text, as the head was trained (helpers.objects.object_features
    # and helpers.spatial.spatial_features read the pairs' plain text): a tagged segment and its
    # plain text get the same verdict.
    plain, tagged = (parsed, parsed) if isinstance(parsed, str) else (parsed.plain, parsed.tagged)
    objects = object_evidence(needed_categories(plain), detections, threshold)
    spatial = spatial_evidence(plain, detections, picture.size)
    pair = pd.DataFrame([{"pair_id": "query", "story_id": "query", "frame": 1, "text": plain, "tagged_text": tagged}])
    with tempfile.TemporaryDirectory(prefix="verify-clip-") as cache:
        clip = clip_features(v.clip, pair, {("query", 1): _png(picture)}, cache, aggregate=clip_cfg["aggregate"],
                             top_k=int(clip_cfg["top_k"]), batch_size=int(clip_cfg["batch_size"]))
    clip_row = clip.features.iloc[0]
    if pd.isna(clip_row["clip_score"]):
        raise VerifyError("CLIP found no sentence to score in the text")

    inputs = {
        "object_score": objects["object_score"], "object_informative": objects["object_informative"],
        **{c: float(clip_row[c]) for c in clip.features.columns if c.startswith("clip_score")},
        "spatial_score": spatial.spatial_score, "spatial_informative": spatial.spatial_informative,
        "relations_checked": spatial.relations_checked, "relations_held": spatial.relations_held,
    }
    probability = float(v.head.predict_proba(pd.DataFrame([inputs]))[0])
    relations = json.loads(spatial.relations_json)
    return {
        "profile": v.profile,
        "checkpoint": str(v.checkpoint),
        "probability": probability,
        "threshold": v.head.threshold,
        "aligned": probability >= v.head.threshold,
        "scores": {name: inputs[name] for name in ("object_score", "clip_score", "spatial_score")},
        "inputs": {name: inputs[name] for name in v.head.features},
        "image_size": list(picture.size),
        "explanation": {
            "objects": {
                "informative": objects["object_informative"],
                "needed": objects["objects_needed"],
                "found": objects["objects_found"],
                "missing": objects["objects_missing"],
            },
            "relations": {
                "informative": spatial.spatial_informative,
                "source": spatial.spatial_source,
                **{status: [r for r in relations if r["status"] == status]
                   for status in ("held", "failed", "unverifiable", "proximity")},
            },
            "clip": {
                "aggregate": clip_cfg["aggregate"],
                "sentences": [{"text": s, "score": float(score)} for s, score in
                              zip(split_sentences(plain), clip.sentences.sort_values("sentence")["score"])],
            },
        },
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
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # standard error carries errors only
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    text = sys.stdin.read() if args.text == "-" else args.text
    try:
        load_profile(args.profile)  # an unknown profile fails before anything is read
        result = verify(args.image, text, args.profile, frame=args.frame)
    except (VerifyError, MissingAssetError, ValueError, OSError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
