"""Figures shared by the chapters: boxes on frames, and chapter 01's data overview.

``draw_boxes`` is the one place boxes are drawn; the chapter-specific figures in
``detection``, ``spatial`` and ``dashboards`` build on it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    import matplotlib.axes
    import matplotlib.figure
    from PIL import Image as PILImage

    from .tags import ParsedStory

__all__ = ["draw_boxes", "plot_data_overview", "plot_annotated_frames", "plot_pair_mix"]

Box = tuple[float, float, float, float]


def draw_boxes(ax: "matplotlib.axes.Axes", boxes: Sequence[Box], labels: Sequence[str] = (), *,
               colour: str = "#ff7f0e", style: str = "-", width: float = 1.6, text_colour: str = "white",
               label_at: str = "top", inside: bool = False, label_shift: float = 0.0) -> None:
    """Draw ``x1,y1,x2,y2`` boxes on ``ax`` (over an image already shown), each with its label.

    A label is written at the box's left end of its ``label_at`` edge (``"top"`` or ``"bottom"``),
    outside the box, or just inside it when ``inside`` is true, on a patch of the box's colour.
    ``label_shift`` moves the labels up (positive) or down (negative) by that many points, e.g.
    to stack several labels on one box. Empty labels, and boxes past the end of ``labels``, are
    drawn without one.
    """
    from matplotlib.patches import Rectangle

    labels = list(labels) + [""] * (len(boxes) - len(labels))
    above = (label_at == "top") != inside  # the text sits above its anchor
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linestyle=style, linewidth=width))
        if label:
            ax.annotate(label, (x1 + 1, y1 if label_at == "top" else y2), xytext=(0, label_shift),
                        textcoords="offset points", annotation_clip=False, color=text_colour, fontsize=7,
                        va="bottom" if above else "top",
                        bbox={"facecolor": colour, "alpha": 0.85, "pad": 1, "linewidth": 0})


def plot_data_overview(stories: pd.DataFrame, segments: pd.DataFrame, entities: pd.DataFrame,
                       clip_max_tokens: int = 77) -> "matplotlib.figure.Figure":
    """Six panels: frames per story, segment length in characters and in CLIP tokens,
    entity kinds, box sizes relative to the frame, and the COCO categories the annotations map to.

    ``segments`` needs ``n_chars`` and ``n_tokens``; ``entities`` the columns of
    :func:`helpers.pairs.entity_table` plus ``box_area_frac``.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ax = axes[0, 0]
    sns.histplot(stories["frame_count"], discrete=True, ax=ax)
    ax.set(title="Frames per story", xlabel="frames", ylabel="stories")
    ax = axes[0, 1]
    sns.histplot(segments["n_chars"], bins=30, ax=ax)
    ax.set(title="Segment length", xlabel="characters (tags stripped)", ylabel="segments")
    ax = axes[0, 2]
    sns.histplot(segments["n_tokens"], bins=30, ax=ax)
    ax.axvline(clip_max_tokens, color="crimson", linestyle="--", label=f"CLIP limit ({clip_max_tokens})")
    ax.set(title="Segment length in CLIP tokens", xlabel="tokens", ylabel="segments")
    ax.legend()
    ax = axes[1, 0]
    kinds = entities.groupby(["kind", "has_box"]).size().unstack(fill_value=0)
    kinds.plot.bar(stacked=True, ax=ax, rot=0)
    ax.set(title="Chain-of-thought entities by id kind", xlabel="", ylabel="entities")
    ax.legend(title="has box")
    ax = axes[1, 1]
    boxed = entities[entities["has_box"]]
    sns.histplot(data=boxed, x="box_area_frac", hue="kind", bins=25, multiple="stack", ax=ax)
    ax.set(title="Box area / frame area", xlabel="fraction of the frame", ylabel="boxes")
    ax = axes[1, 2]
    coco = entities["coco"].fillna("(no COCO category)").value_counts().head(15)
    sns.barplot(x=coco.values, y=coco.index, ax=ax, color="steelblue")
    ax.set(title="COCO categories of annotated entities (top 15)", xlabel="entities", ylabel="")
    fig.tight_layout()
    return fig


def plot_annotated_frames(images: Sequence["PILImage.Image"], stories: Sequence["ParsedStory"],
                          frames: Sequence[int], *, wrap: int = 70, max_chars: int = 700) -> "matplotlib.figure.Figure":
    """Each frame with its chain-of-thought boxes (characters orange, objects blue) beside its plain text."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(images), 2, figsize=(15, 3.4 * len(images)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.1, 1]})
    for (ax_img, ax_txt), image, story, frame in zip(axes, images, stories, frames):
        ax_img.imshow(image)
        annotation = story.cot.frames.get(frame)
        if annotation is not None:
            for entities, colour in ((annotation.characters, "#ff7f0e"), (annotation.objects, "#1f77b4")):
                boxed = [e for e in entities if e.box is not None]
                draw_boxes(ax_img, [e.box for e in boxed], [f"{e.id}: {e.name or e.description}"[:28] for e in boxed],
                           colour=colour)
        ax_img.set_title(f"story {story.story_id}, frame {frame}", fontsize=9)
        ax_img.axis("off")
        segment = next((s for s in story.segments if s.frame == frame), None)
        text = segment.plain if segment is not None else "(no segment)"
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0] + " ..."
        ax_txt.text(0, 1, "\n".join(textwrap.wrap(text, wrap)), va="top", ha="left", fontsize=8.5, family="serif")
        ax_txt.axis("off")
    fig.tight_layout()
    return fig


def plot_pair_mix(pairs: pd.DataFrame) -> "matplotlib.figure.Figure":
    """Pairs per split, stacked by kind (positive, or the negative's type)."""
    import matplotlib.pyplot as plt

    kind = pairs["negative_type"].where(pairs["label"] == 0, "positive")
    counts = pd.crosstab(pairs["split"], kind).reindex(["train", "val", "test", "external"]).dropna(how="all")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    counts.plot.barh(stacked=True, ax=ax)
    ax.set(xlabel="pairs", ylabel="", title="Pairs per split and kind")
    ax.invert_yaxis()
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
