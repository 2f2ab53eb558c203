"""The benchmark's inputs (``helpers.bench``): synthetic frames, their sentences and pairs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image


@dataclass(frozen=True)
class BenchInputs:
    """Synthetic inputs of the benchmark: frames (encoded and decoded), sentences, and pairs."""

    frames: dict[tuple[str, int], bytes]
    images: list["Image.Image"]
    sentences: list[str]
    pairs: "pd.DataFrame"


def synthetic_inputs(folder: str | os.PathLike, *, n_stories: int, frames_per_story: int,
                     seed: int = 42) -> BenchInputs:
    """A small synthetic dataset (:mod:`helpers.smoke.synthetic`, 576x240 frames) as benchmark inputs.

    Pairs are built as chapter 01 builds them (one aligned and one misaligned text per frame).
    """
    import pandas as pd

    from ..semantics import split_sentences
    from ..data import frame_image
    from ..tags import parse_row
    from ..pairs import make_pairs
    from .synthetic import make_dataset

    path = make_dataset(Path(folder), n_stories=n_stories, frames=(frames_per_story, frames_per_story), seed=seed,
                        image_size=(576, 240))
    rows = pd.read_parquet(path).to_dict("records")
    frames = {(str(r["story_id"]), i + 1): image["bytes"] for r in rows for i, image in enumerate(r["images"])}
    stories = [parse_row(r) for r in rows]
    pairs = make_pairs(stories, split_of={s.story_id: "test" for s in stories}, seed=seed, block_size=1)
    sentences = list(dict.fromkeys(s for seg in (seg for story in stories for seg in story.segments)
                                   for s in split_sentences(seg.tagged)))
    return BenchInputs(frames=frames, images=[frame_image([b], 1) for b in frames.values()], sentences=sentences,
                       pairs=pairs)
