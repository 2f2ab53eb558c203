# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Dashboards: the verdicts, one pair at a time
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/08_dashboards.ipynb)
#
# Metrics summarise; examples explain. This chapter shows test pairs the fusion head got
# right and wrong, in the four cells of the confusion matrix, each with everything the head
# saw: the frame and its boxes, the text with what it names marked as found or missing, the
# word a negative pair swapped in, and the three evidence scores behind the probability.
# It ends with the headline results of chapter 07 on one figure, and in words.
#
# The functions are written below in cells that start with `#@save`; `make lib` collects
# them into `helpers/dashboards.py`, from which chapters 09 and 10 import them. Most of
# them only draw (cells marked `# extra code`); what is worth reading is how an outcome is
# assigned, how the gallery is sampled, how a swapped word is found, and how a number
# becomes a sentence.

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full: see profiles/*.yaml

# %%
# Setup: makes `helpers` importable here, or clones the repository first in Colab.
import os, subprocess, sys
from pathlib import Path

if "google.colab" in sys.modules and not Path("story-image-alignment").exists():
    subprocess.run(["git", "clone", "--depth=1", "https://github.com/story-align/story-image-alignment"], check=True)
    os.chdir("story-image-alignment")
sys.path.insert(0, str(next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "helpers").is_dir())))

from helpers.notebook import start

ctx = start(profile, chapter="08_dashboards")

# %% [markdown]
# The imports the saved cells need (they open `helpers/dashboards.py`):

# %%
#@save
import base64
import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from PIL import Image

    from helpers.tags import ParsedStory, Segment

# %% [markdown]
# ## The test pairs in four groups
#
# The fusion head of chapter 06 (early stopping, the study's three scores) calls a pair
# aligned when its probability reaches the threshold tuned on the validation split: a
# score equal to the threshold is accepted. Against the true labels that puts every test
# pair in one of four groups, the cells of the confusion matrix ("positive" means the pair
# is called aligned). How far a score lies from the threshold, `|score - threshold|`, is
# the verdict's *confidence*: how much the score would have to move for the verdict to flip.

# %%
#@save
#: Confusion-matrix cells, in gallery order ("positive" = the pair is called aligned).
OUTCOMES: tuple[str, ...] = ("TP", "FP", "TN", "FN")


OUTCOME_TITLES: dict[str, str] = {
    "TP": "True positives: aligned pairs the verifier accepted",
    "FP": "False positives: misaligned pairs the verifier accepted",
    "TN": "True negatives: misaligned pairs the verifier rejected",
    "FN": "False negatives: aligned pairs the verifier rejected",
}


def outcomes(labels: Sequence[int] | np.ndarray, decisions: Sequence[bool] | np.ndarray) -> np.ndarray:
    """The confusion-matrix cell of each pair: ``"TP"``, ``"FP"``, ``"TN"`` or ``"FN"``.

    ``labels`` are 1 (aligned) / 0 (misaligned), ``decisions`` True where the pair was
    called aligned.
    """
    y = np.asarray(labels)
    d = np.asarray(decisions, dtype=bool)
    if y.shape != d.shape or y.ndim != 1:
        raise ValueError(f"labels and decisions must be 1-D of one length, got {y.shape} and {d.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    y = y.astype(bool)
    return np.select([y & d, ~y & d, ~y & ~d], ["TP", "FP", "TN"], default="FN")


def gallery_table(predictions: pd.DataFrame, model: str, split: str = "test") -> pd.DataFrame:
    """One model's predictions on one split (chapter 06's ``predictions.parquet``) with ``outcome``
    and ``confidence`` (``|score - threshold|``) columns."""
    needed = {"pair_id", "model", "split", "label", "score", "threshold"}
    if missing := needed - set(predictions.columns):
        raise ValueError(f"predictions lack column(s) {sorted(missing)}")
    rows = predictions[(predictions["model"] == model) & (predictions["split"] == split)]
    if rows.empty:
        known = sorted(set(predictions["model"]))
        raise ValueError(f"no predictions of model {model!r} on the {split!r} split (models: {known})")
    decided = rows["score"] >= rows["threshold"]
    return rows.assign(outcome=outcomes(rows["label"].to_numpy(), decided.to_numpy()),
                       confidence=(rows["score"] - rows["threshold"]).abs()).reset_index(drop=True)

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from helpers.training import DEFAULT_RUN, load_predictions

per_group = 2 if ctx.is_smoke else 4  # cards per group
table = gallery_table(load_predictions(ctx.paths), DEFAULT_RUN)
counts = table["outcome"].value_counts().reindex(list(OUTCOMES), fill_value=0)
display(counts.rename(index=OUTCOME_TITLES).rename("test pairs").to_frame())
by_type = (table[table["label"] == 0].groupby("negative_type")["outcome"].value_counts().unstack(fill_value=0)
           .reindex(columns=["TN", "FP"], fill_value=0).rename(columns={"TN": "rejected (TN)", "FP": "accepted (FP)"}))
display(by_type)
display(Markdown(
    f"Of {len(table):,} test pairs the head gets {counts['TP'] + counts['TN']:,} right "
    f"({(counts['TP'] + counts['TN']) / len(table):.1%}); it accepts {counts['FP']:,} misaligned pairs and rejects "
    f"{counts['FN']:,} aligned ones. The table above splits the misaligned pairs by how they were made."))

# %% [markdown]
# The gallery shows, for each group, the pairs furthest from the threshold: the head's most
# confident verdicts, and so, among the errors, its most confident mistakes (ties broken by
# pair id, so the choice is reproducible).

# %%
#@save
def sample_gallery(table: pd.DataFrame, per_group: int, *, seed: int = 42, most_confident: bool = True) -> pd.DataFrame:
    """Up to ``per_group`` pairs of each outcome, in ``OUTCOMES`` order: the furthest from the
    threshold with ``most_confident``, otherwise a seeded random sample."""
    if per_group < 1:
        raise ValueError(f"per_group must be at least 1, got {per_group}")
    parts = []
    for outcome in OUTCOMES:
        group = table[table["outcome"] == outcome]
        if most_confident:
            group = group.sort_values(["confidence", "pair_id"], ascending=[False, True]).head(per_group)
        else:
            group = group.sample(n=min(per_group, len(group)), random_state=seed)
        parts.append(group)
    return pd.concat(parts, ignore_index=True)

# %% [markdown]
# ## What a card shows
#
# Each card is one pair. **Frame**: the detector's boxes at the profile's score threshold
# (solid, with their scores) and the chain of thought's boxes mapped onto COCO categories
# (dashed). **Text**: every tagged mention, green when the detector found the COCO category
# it names, red when it did not, grey when it names nothing a COCO detector reports; the
# words a negative pair swapped in are amber and underlined (hover for what they
# replaced). Under the text, the relations the spatial evidence read and what the boxes
# said about them. **Bars**: the three evidence scores and P(aligned), with the decision
# threshold as a black tick. A card is plain data:

# %%
#@save
#: Background colour of each kind of highlighted text span.
HIGHLIGHT_COLOURS: dict[str, str] = {
    "found": "#c8e6c9",  # the detector found what the mention names
    "missing": "#ffcdd2",  # it did not
    "unchecked": "#e8e8e8",  # the mention names nothing a COCO detector reports
    "swapped": "#ffd54f",  # the word a negative pair put in
}


@dataclass(frozen=True)
class Highlight:
    """A span ``text[start:end]`` to colour as ``kind`` (a key of ``HIGHLIGHT_COLOURS``), with a tooltip."""

    start: int
    end: int
    kind: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in HIGHLIGHT_COLOURS:
            raise ValueError(f"unknown highlight kind {self.kind!r}: expected one of {list(HIGHLIGHT_COLOURS)}")
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad highlight span [{self.start}, {self.end})")


@dataclass(frozen=True)
class LabelledBox:
    """A box ``(x1, y1, x2, y2)`` in frame pixels with the label drawn next to it."""

    box: tuple[float, float, float, float]
    label: str


@dataclass(frozen=True)
class Card:
    """Everything one gallery card shows about one pair."""

    pair_id: str
    outcome: str  # one of OUTCOMES
    label: int
    negative_type: str  # "" for an aligned pair
    text: str  # the pair's plain text
    probability: float  # P(aligned) from the head
    threshold: float
    scores: Mapping[str, float]  # display name -> evidence score in [0, 1] (NaN: not available)
    highlights: tuple[Highlight, ...] = ()
    change: str = ""  # what a negative pair changed, in words
    image: "Image.Image | None" = field(default=None, compare=False)
    predicted: tuple[LabelledBox, ...] = ()
    truth: tuple[LabelledBox, ...] = ()
    notes: tuple[str, ...] = ()  # further explanation lines (e.g. the relations checked)

# %% [markdown]
# ### Where a negative changed the text
#
# A swap replaces one stretch of the frame's own text, so the edit lies between the longest
# common prefix and the longest common suffix of the original and the edited text, widened
# to whole words (a one-letter edit, "table" -> "cable", marks the whole word). Without the
# original text the swapped-in word is looked for as a whole word, plural allowed ("cell
# phones" for "cell phone").

# %%
#@save
def changed_span(original: str, edited: str) -> tuple[int, int] | None:
    """Where ``edited`` differs from ``original``, as ``(start, end)`` in ``edited``, widened to whole
    words; None when the texts are equal."""
    if original == edited:
        return None
    prefix = 0
    limit = min(len(original), len(edited))
    while prefix < limit and original[prefix] == edited[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and original[-1 - suffix] == edited[-1 - suffix]:
        suffix += 1
    start, end = prefix, len(edited) - suffix
    while start > 0 and edited[start - 1].isalnum():
        start -= 1
    while end < len(edited) and edited[end].isalnum():
        end += 1
    return start, end


def swap_highlight(text: str, *, original: str | None = None, swapped_from: str = "",
                   swapped_to: str = "") -> Highlight | None:
    """The words a negative pair swapped into ``text``, as a ``"swapped"`` highlight: the edit
    against ``original`` when given, else the first whole-word ``swapped_to``; None when neither is found."""
    note = f"swapped in for '{swapped_from}'" if swapped_from else "swapped in"
    if original is not None and (span := changed_span(original, text)) is not None:
        return Highlight(*span, "swapped", note)
    if not swapped_to.strip():
        return None
    pattern = r"\s+".join(re.escape(w) for w in swapped_to.split())
    match = re.search(rf"(?<!\w){pattern}(?:e?s)?(?!\w)", text, re.IGNORECASE)
    return Highlight(match.start(), match.end(), "swapped", note) if match else None

# %%
original, edited = "He puts the cup on a table near the door.", "He puts the cup on a cable near the door."
start_, end_ = changed_span(original, edited)
display(Markdown(f"`{edited}` differs from `{original}` in `{edited[start_:end_]}`."))

# %% [markdown]
# Spans may overlap: a swapped word sits inside a mention. The overlap is coloured by the
# higher kind, swapped > missing > found > unchecked, character by character, so the swapped
# word stands out within its mention. The text is HTML-escaped.

# %%
#@save
#: When spans overlap, the higher kind colours the overlap.
_PRIORITY = {"unchecked": 0, "found": 1, "missing": 2, "swapped": 3}


def highlight_html(text: str, highlights: Iterable[Highlight]) -> str:
    """``text`` as HTML with each highlighted span in a coloured ``<mark>`` (text escaped; overlaps
    go to the higher kind)."""
    kinds: list[Highlight | None] = [None] * len(text)
    for h in highlights:
        for i in range(h.start, min(h.end, len(text))):
            if kinds[i] is None or _PRIORITY[h.kind] > _PRIORITY[kinds[i].kind]:
                kinds[i] = h
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and kinds[j] is kinds[i]:
            j += 1
        piece, h = html.escape(text[i:j]), kinds[i]
        if h is None:
            out.append(piece)
        else:
            extra = "font-weight:bold;text-decoration:underline;" if h.kind == "swapped" else ""
            title = f' title="{html.escape(h.note, quote=True)}"' if h.note else ""
            out.append(f'<mark class="{h.kind}" style="background:{HIGHLIGHT_COLOURS[h.kind]};{extra}'
                       f'padding:0 1px;border-radius:2px"{title}>{piece}</mark>')
        i = j
    return "".join(out)

# %%
demo = "A man holds a blue cup."
display(HTML(highlight_html(demo, [Highlight(0, 5, "found"), Highlight(demo.index("a blue"), len(demo) - 1, "missing"),
                                   Highlight(demo.index("cup"), demo.index("cup") + 3, "swapped", "was 'mug'")])))

# %% [markdown]
# A mention is marked with what the object evidence of chapter 02 made of it: the COCO
# category it names (through its words or, for a character, its chain-of-thought
# description, `helpers.objects.mention_category`), found or missing among the
# detections; a mention that names no category, or one the object evidence did not need,
# is "unchecked". The relations are the spatial evidence's, one line each.

# %%
#@save
def mention_highlights(segment: "Segment", found: Iterable[str], missing: Iterable[str],
                       descriptions: Mapping[str, str] | None = None) -> list[Highlight]:
    """A highlight per ``<gdo>`` mention: ``"found"`` / ``"missing"`` when the COCO category it
    names is among ``found`` / ``missing``, ``"unchecked"`` otherwise."""
    from helpers.objects import mention_category

    found, missing = set(found), set(missing)
    out = []
    for m in segment.mentions:
        category = mention_category(m, descriptions)
        if category in found:
            out.append(Highlight(m.start, m.end, "found", f"{category}: detected"))
        elif category in missing:
            out.append(Highlight(m.start, m.end, "missing", f"{category}: not detected"))
        else:
            out.append(Highlight(m.start, m.end, "unchecked", "no COCO category to look for" if category is None
                                 else f"{category}: not needed by the object evidence"))
    return out


def relation_notes(relations_json: str) -> list[str]:
    """One line per relation the spatial evidence read: "James sits on the couch: held"."""
    notes = []
    for r in json.loads(relations_json or "[]"):
        if r.get("status") == "proximity":
            notes.append(f"person near {r['object_category']}: proximity {r['proximity']:.2f}")
        else:
            reason = f" ({r['reason']})" if r.get("reason") else ""
            notes.append(f"{r['subject']} {r.get('phrase') or r['relation']} {r['object']}: {r['status']}{reason}")
    return notes

# %%
#@save
# extra code: drawing the frame and the card as self-contained HTML (inline styles, the frame as a base64
# PNG), so that a card looks the same in Jupyter, in Colab and in the HTML report
_OUTCOME_COLOURS = {"TP": "#2e7d32", "TN": "#2e7d32", "FP": "#c62828", "FN": "#c62828"}
_PREDICTED_COLOUR, _TRUTH_COLOUR = "#ff6f00", "#00e5ff"


def draw_frame(ax: "Axes", image: "Image.Image", predicted: Sequence[LabelledBox] = (),
               truth: Sequence[LabelledBox] = ()) -> None:
    """Draw ``image`` on ``ax`` with predicted boxes (solid, orange) and ground truth (dashed, cyan)."""
    from helpers.plots import draw_boxes

    ax.imshow(image)
    # labels inside their boxes: truth's along the bottom edge, predictions' along the top
    styles = ((truth, _TRUTH_COLOUR, "--", "bottom"), (predicted, _PREDICTED_COLOUR, "-", "top"))
    for boxes, colour, style, place in styles:
        draw_boxes(ax, [b.box for b in boxes], [b.label for b in boxes], colour=colour, style=style, width=1.6,
                   text_colour="black", label_at=place, inside=True)
    ax.set_axis_off()


def frame_png(image: "Image.Image", predicted: Sequence[LabelledBox] = (), truth: Sequence[LabelledBox] = (),
              *, width_in: float = 4.6, dpi: int = 100) -> bytes:
    """The frame with its boxes drawn (``draw_frame``), as PNG bytes."""
    from matplotlib.figure import Figure

    w, h = image.size
    fig = Figure(figsize=(width_in, width_in * h / w), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    draw_frame(ax, image, predicted, truth)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _bar(name: str, value: float, colour: str, marker: float | None = None) -> str:
    known = value is not None and math.isfinite(value)
    width = 100 * min(max(value, 0.0), 1.0) if known else 0.0
    tick = (f'<div style="position:absolute;left:{100 * marker:.1f}%;top:-2px;bottom:-2px;width:2px;'
            f'background:#000" title="threshold {marker:.3f}"></div>') if marker is not None else ""
    shown = f"{value:.3f}" if known else "n/a"
    return (f'<div style="display:flex;align-items:center;gap:6px;margin:2px 0">'
            f'<span style="width:92px;font-size:12px">{html.escape(name)}</span>'
            f'<div style="position:relative;flex:1;height:10px;background:#eee;border-radius:2px">'
            f'<div style="width:{width:.1f}%;height:100%;background:{colour};border-radius:2px"></div>{tick}</div>'
            f'<span style="width:44px;font-size:12px;text-align:right;font-family:monospace">{shown}</span></div>')


def card_html(card: Card) -> str:
    """One gallery card as a self-contained HTML fragment (inline styles, image embedded)."""
    if card.outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {card.outcome!r}: expected one of {OUTCOMES}")
    kind = "aligned pair" if card.label == 1 else f"negative: {card.negative_type or 'unknown'}"
    verdict = "accepted" if card.probability >= card.threshold else "rejected"
    head = (f'<div style="display:flex;justify-content:space-between;font-size:12px;margin-bottom:4px">'
            f'<b style="color:{_OUTCOME_COLOURS[card.outcome]}">{card.outcome} · {html.escape(kind)}</b>'
            f'<span style="color:#666;font-family:monospace">{html.escape(card.pair_id)}</span></div>')
    image = ""
    if card.image is not None:
        data = base64.b64encode(frame_png(card.image, card.predicted, card.truth)).decode("ascii")
        image = (f'<img src="data:image/png;base64,{data}" style="width:100%;border-radius:3px" '
                 f'alt="frame of {html.escape(card.pair_id)}">')
    change = (f'<div style="font-size:12px;margin:4px 0;color:#6d4c00"><b>change:</b> {html.escape(card.change)}</div>'
              if card.change else "")
    text = (f'<div style="font-size:12px;line-height:1.45;max-height:11em;overflow-y:auto;margin:4px 0;'
            f'padding:4px;background:#fafafa;border-radius:3px">{highlight_html(card.text, card.highlights)}</div>')
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in card.notes)
    notes = f'<ul style="font-size:11px;margin:2px 0 4px 16px;padding:0;color:#444">{notes}</ul>' if notes else ""
    bars = "".join(_bar(name, value, "#5c6bc0") for name, value in card.scores.items())
    bars += _bar("P(aligned)", card.probability, _OUTCOME_COLOURS[card.outcome], marker=card.threshold)
    footer = (f'<div style="font-size:12px;margin-top:2px">P(aligned) = <b>{card.probability:.3f}</b> '
              f'(threshold {card.threshold:.3f}: {verdict})</div>')
    return (f'<div class="story-align-card" style="border:1px solid #ccc;border-left:5px solid '
            f'{_OUTCOME_COLOURS[card.outcome]};border-radius:4px;padding:8px;background:#fff;color:#222;'
            f'font-family:system-ui,sans-serif">{head}{image}{change}{text}{notes}{bars}{footer}</div>')


def _legend_html() -> str:
    marks = " ".join(f'<mark style="background:{c};padding:0 3px">{k}</mark>' for k, c in HIGHLIGHT_COLOURS.items())
    return (f'<div style="font-size:12px;margin:6px 0">Boxes: '
            f'<span style="color:{_PREDICTED_COLOUR}">solid = detector</span>, '
            f'<span style="color:#00838f">dashed = chain-of-thought boxes (drawn by COCO detectors, not by '
            f'people)</span>. Mentions: {marks} '
            f'(hover a swapped word for the original). Bars: evidence scores (n/a: nothing to check, the head sees a '
            f'placeholder); black tick: the decision threshold.</div>')


def gallery_html(cards: Sequence[Card], *, columns: int = 2) -> str:
    """Cards grouped by outcome (``OUTCOMES`` order, each under its title), ``columns`` per row."""
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    sections = [_legend_html()]
    for outcome in OUTCOMES:
        group = [c for c in cards if c.outcome == outcome]
        title = f'<h4 style="margin:14px 0 6px">{html.escape(OUTCOME_TITLES[outcome])} ({len(group)} shown)</h4>'
        if not group:
            sections.append(title + '<p style="font-size:12px;color:#666">No pair of this kind on the test split.</p>')
            continue
        grid = "".join(card_html(c) for c in group)
        sections.append(f'{title}<div style="display:grid;grid-template-columns:repeat({columns},minmax(0,1fr));'
                        f'gap:10px">{grid}</div>')
    return "\n".join(sections)

# %%
#@save
# extra code: one card per sampled pair, from the feature table, the frames and both kinds of boxes
#: Evidence columns shown on a card, with the flag saying whether each was checked (else the score is a placeholder).
CARD_SCORES: dict[str, tuple[str, str | None]] = {
    "object": ("object_score", "object_informative"),
    "semantic": ("clip_score", None),
    "spatial": ("spatial_score", "spatial_informative"),
    "open-vocabulary": ("openvocab_score", "openvocab_informative"),  # when the profile computes it (chapter 02)
    "questions": ("question_score", "question_informative"),  # when the profile computes it (chapter 03)
}


def gallery_cards(sample: pd.DataFrame, features: pd.DataFrame, frames: Mapping[tuple[str, int], bytes],
                  detections: pd.DataFrame, ground_truth: pd.DataFrame, stories: Iterable["ParsedStory"], *,
                  threshold: float) -> list[Card]:
    """The cards of the pairs in ``sample`` (rows of ``sample_gallery``), in its order.

    ``features`` is ``features.parquet`` (the pairs with their evidence); ``frames`` the
    frames' encoded bytes; ``detections`` the detector's per-frame table and
    ``ground_truth`` the chain of thought's (``helpers.detection``), both drawn at
    ``threshold``; ``stories`` the parsed stories (for character descriptions). A swapped
    word is located against the frame's own text, the aligned pair of the same frame.
    """
    from helpers.data import CorruptFrameError, frame_image
    from helpers.tags import parse_segment
    from helpers.objects import character_descriptions
    from helpers.detection import parse_detections

    rows = features.set_index("pair_id").loc[sample["pair_id"]]
    own_text = (features[features["label"] == 1].drop_duplicates(["story_id", "frame"])
                .set_index(["story_id", "frame"])["text"].to_dict())
    boxes = {name: {(str(s), int(f)): parse_detections(c, threshold) if status == "ok" else []
                    for s, f, status, c in table[["story_id", "frame", "status", "detections"]].itertuples(index=False)}
             for name, table in (("predicted", detections), ("truth", ground_truth.assign(status="ok")))}
    cots = {s.story_id: s.cot for s in stories}
    cards = []
    for pick, (pair_id, row) in zip(sample.itertuples(index=False), rows.iterrows()):
        key = (str(row["story_id"]), int(row["frame"]))
        segment = parse_segment(row["tagged_text"], int(row["source_frame"]))
        cot = cots.get(str(row["source_story_id"]))
        descriptions = character_descriptions(cot, int(row["source_frame"])) if cot is not None else {}
        found = [f["category"] for f in json.loads(row.get("objects_found") or "[]")]
        highlights = mention_highlights(segment, found, json.loads(row.get("objects_missing") or "[]"), descriptions)
        if row["negative_type"] in ("object_swap", "relation_swap"):
            swap = swap_highlight(segment.plain, original=own_text.get(key), swapped_from=row["swapped_from"],
                                  swapped_to=row["swapped_to"])
            highlights += [swap] if swap else []
        try:
            image = frame_image([frames[key]], 1)
        except (CorruptFrameError, KeyError):
            image = None
        scores = {name: (float(row[column]) if flag is None or bool(row.get(flag, True)) else math.nan)
                  for name, (column, flag) in CARD_SCORES.items() if column in row}
        cards.append(Card(
            pair_id=str(pair_id), outcome=pick.outcome, label=int(row["label"]),
            negative_type=str(row["negative_type"]),
            text=segment.plain, probability=float(pick.score), threshold=float(pick.threshold), scores=scores,
            highlights=tuple(highlights), change=str(row.get("change") or ""), image=image,
            predicted=tuple(LabelledBox(d.box, f"{d.label} {d.score:.2f}") for d in boxes["predicted"].get(key, [])),
            truth=tuple(LabelledBox(d.box, d.label) for d in boxes["truth"].get(key, [])),
            notes=tuple(relation_notes(row.get("relations_json") or "[]")),
        ))
    return cards

# %% [markdown]
# ## The gallery

# %%
from helpers import detection as det
from helpers import objects as obj
from helpers.data import load_study_data, pair_frames
from helpers.features import load_features

data = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
sample = sample_gallery(table, per_group=per_group, seed=ctx.cfg["seed"])
frames = pair_frames(sample, data.datasets)
_, run = det.profile_detections(ctx.cfg, ctx.paths, frames, device=ctx.device)  # chapter 02's cache: no forward pass
cards = gallery_cards(sample, load_features(ctx.paths), frames, run.frames, obj.ground_truth_frames(data.stories),
                      data.stories, threshold=det.settings_from_profile(ctx.cfg).score_threshold)
display(HTML(gallery_html(cards)))

# %% [markdown]
# ## A random sample of negatives of every kind
#
# The gallery above shows extremes. These cards are drawn at random (seeded) among the test
# negatives of each kind, so they show what the negatives are really like, including any
# that are positives in disguise: an object swapped in that the frame shows after all.

# %%
#@save
def sample_negatives(table: pd.DataFrame, per_type: int, *, seed: int = 42) -> pd.DataFrame:
    """Up to ``per_type`` misaligned pairs of each kind of negative, drawn at random (seeded)."""
    if per_type < 1:
        raise ValueError(f"per_type must be at least 1, got {per_type}")
    negatives = table[table["label"] == 0]
    parts = [group.sample(n=min(per_type, len(group)), random_state=seed)
             for _, group in negatives.groupby("negative_type", sort=True)]
    return pd.concat(parts, ignore_index=True) if parts else negatives.iloc[:0]

# %%
random_negatives = sample_negatives(table, per_type=per_group, seed=ctx.cfg["seed"])
random_frames = pair_frames(random_negatives, data.datasets)
_, random_run = det.profile_detections(ctx.cfg, ctx.paths, random_frames, device=ctx.device)
random_cards = gallery_cards(random_negatives, load_features(ctx.paths), random_frames, random_run.frames,
                             obj.ground_truth_frames(data.stories), data.stories,
                             threshold=det.settings_from_profile(ctx.cfg).score_threshold)
display(HTML(gallery_html(random_cards)))

# %% [markdown]
# ## The audit sheet: negatives for a person to judge
#
# Whether a negative is really false of its frame only a person can say. The audit sheet is a
# seeded random sample of up to `audit.per_type` negatives of each kind, drawn from every
# split (the `split` column says which; the study's numbers are about the test split, which
# this chapter, after chapter 07, may show): the frame, the frame's own text and the edited
# text with the changed words marked, the kind and the pair id. `audit/sheet.html` is for
# looking (the frames inline, as JPEG thumbnails); `audit/sheet.csv` has the columns chapter
# 07 reads (`AUDIT_COLUMNS`) with `judgement` empty. A person writes `true` (the edited text is
# true of the frame: a hidden positive) or `false` in it and saves the file as
# `audit/labels.csv`; chapter 07, rerun, reports each kind's share of hidden positives.

# %%
#@save
#: Height in pixels of a frame's thumbnail on the audit sheet.
AUDIT_THUMBNAIL_HEIGHT = 200


def audit_sample(pairs: pd.DataFrame, per_type: int, *, seed: int = 42) -> pd.DataFrame:
    """Up to ``per_type`` negatives of each kind from every split of ``pairs`` (``pairs.parquet``), drawn
    at random (seeded, ``sample_negatives``), as the audit sheet's rows: ``AUDIT_COLUMNS`` of chapter 07,
    ``original_text`` the frame's own (aligned) text, ``edited_text`` the negative's, ``judgement`` empty."""
    from helpers.evaluation import AUDIT_COLUMNS

    drawn = sample_negatives(pairs, per_type, seed=seed)
    own = (pairs[pairs["label"] == 1].drop_duplicates(["story_id", "frame"])
           .set_index(["story_id", "frame"])["text"])
    keys = list(zip(drawn["story_id"], drawn["frame"]))
    if missing := [k for k in keys if k not in own.index]:
        raise ValueError(f"{len(missing)} sampled negative(s) have no aligned pair of their frame, e.g. {missing[:3]}")
    return pd.DataFrame({"pair_id": drawn["pair_id"].astype(str), "story_id": drawn["story_id"].astype(str),
                         "frame": drawn["frame"].astype(int), "split": drawn["split"].astype(str),
                         "negative_type": drawn["negative_type"].astype(str),
                         "original_text": [str(own[k]) for k in keys], "edited_text": drawn["text"].astype(str),
                         "judgement": ""}, columns=list(AUDIT_COLUMNS)).reset_index(drop=True)


def audit_highlights(original: str, edited: str, negative_type: str) -> tuple[list[Highlight], list[Highlight]]:
    """The changed words of an edit: (highlights in ``original``, highlights in ``edited``). A swap marks
    the words it replaced and the words it put in (``changed_span``); a text from another frame marks nothing."""
    from helpers.evaluation import SWAP_TYPES

    if negative_type not in SWAP_TYPES:
        return [], []
    old, new = changed_span(edited, original), changed_span(original, edited)
    if old is None or new is None:
        return [], []
    return ([Highlight(*old, "missing", f"replaced by '{edited[new[0]:new[1]]}'")],
            [Highlight(*new, "swapped", f"was '{original[old[0]:old[1]]}'")])

# %%
original_text = "Anna sets the cup on the table."
edited_text = "Anna sets the cup under the table."
display(HTML(" → ".join(highlight_html(t, h) for t, h in zip((original_text, edited_text),
                                                             audit_highlights(original_text, edited_text,
                                                                              "relation_swap")))))

# %% [markdown]
# The page lists the rows in the sheet's order, one row per negative: the thumbnail (or a note
# when the frame does not decode: counted, never dropped), the pair, and the two texts.

# %%
#@save
# extra code: the audit sheet as one self-contained HTML page (inline styles, frames as base64 JPEG)
def audit_thumbnail(image: "Image.Image", height: int = AUDIT_THUMBNAIL_HEIGHT) -> bytes:
    """``image`` scaled to ``height`` pixels high (aspect kept), as JPEG bytes."""
    width = max(1, round(image.width * height / image.height))
    buffer = io.BytesIO()
    image.convert("RGB").resize((width, height)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def audit_sheet_html(sample: pd.DataFrame, thumbnails: Mapping[tuple[str, int], bytes | None], *,
                     title: str = "Audit sheet") -> str:
    """The audit sheet (rows of :func:`audit_sample`) as an HTML page; ``thumbnails`` maps ``(story_id, frame)``
    to JPEG bytes, None for a frame that does not decode."""
    legend = (f'<p>For each negative, is the <b>edited text</b> true of the frame? Write <code>true</code> or '
              f'<code>false</code> in the <code>judgement</code> column of <code>sheet.csv</code> (blank: not judged) '
              f'and save it as <code>labels.csv</code> beside it. Marked: '
              f'<mark style="background:{HIGHLIGHT_COLOURS["missing"]}">words replaced</mark>, '
              f'<mark style="background:{HIGHLIGHT_COLOURS["swapped"]}">words put in</mark>; a text from another '
              f'frame is marked nowhere. {len(sample)} negatives: '
              + ", ".join(f"{t} {n}" for t, n in sample["negative_type"].value_counts().sort_index().items())
              + ".</p>")
    rows = []
    for i, r in enumerate(sample.itertuples(index=False), start=1):
        data = thumbnails.get((str(r.story_id), int(r.frame)))
        image = (f'<img src="data:image/jpeg;base64,{base64.b64encode(data).decode("ascii")}" '
                 f'style="height:{AUDIT_THUMBNAIL_HEIGHT}px;border-radius:3px" alt="frame {r.frame} of story '
                 f'{html.escape(r.story_id)}">' if data else '<i>the frame does not decode</i>')
        old, new = audit_highlights(r.original_text, r.edited_text, r.negative_type)
        edited_label = "edited text" if old or new else "edited text (another frame's)"
        rows.append(
            f'<tr><td style="vertical-align:top">{i}</td><td style="vertical-align:top">{image}</td>'
            f'<td style="vertical-align:top;font-size:12px;white-space:nowrap"><b>{html.escape(r.negative_type)}</b>'
            f'<br><code>{html.escape(r.pair_id)}</code><br>story {html.escape(r.story_id)}, frame {r.frame}'
            f'<br>split {html.escape(r.split)}</td><td style="vertical-align:top;font-size:13px;line-height:1.4">'
            f'<div style="color:#555"><b>frame\'s own text:</b> {highlight_html(r.original_text, old)}</div>'
            f'<div style="margin-top:6px"><b>{edited_label}:</b> {highlight_html(r.edited_text, new)}</div></td></tr>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
            f'<body style="font-family:system-ui,sans-serif;margin:16px;color:#222"><h1 style="font-size:20px">'
            f'{html.escape(title)}</h1>{legend}<table style="border-collapse:collapse" cellpadding="6" border="1">'
            f'<tr><th>#</th><th>frame</th><th>negative</th><th>texts</th></tr>{"".join(rows)}</table></body></html>')


def write_audit_sheet(folder: "str | os.PathLike", sample: pd.DataFrame,
                      thumbnails: Mapping[tuple[str, int], bytes | None], *, title: str = "Audit sheet") -> dict[str, Any]:
    """Write ``sheet.html`` and ``sheet.csv`` (``AUDIT_COLUMNS``, ``judgement`` empty) into ``folder``,
    atomically; return their paths."""
    from pathlib import Path

    from helpers.evaluation import AUDIT_COLUMNS
    from helpers.io import atomic_write_text

    if list(sample.columns) != list(AUDIT_COLUMNS):
        raise ValueError(f"the audit sample's columns must be {list(AUDIT_COLUMNS)}, got {list(sample.columns)}")
    folder = Path(folder)
    return {"html": atomic_write_text(folder / "sheet.html", audit_sheet_html(sample, thumbnails, title=title)),
            "csv": atomic_write_text(folder / "sheet.csv", sample.to_csv(index=False))}

# %%
from helpers.data import CorruptFrameError, frame_image

per_type = int(ctx.cfg["audit"]["per_type"])
audit = audit_sample(pd.read_parquet(ctx.paths.pairs), per_type, seed=int(ctx.cfg["seed"]))
thumbnails = {}
for key, encoded in pair_frames(audit, data.datasets).items():
    try:
        thumbnails[key] = audit_thumbnail(frame_image([encoded], 1))
    except CorruptFrameError:
        thumbnails[key] = None
written = write_audit_sheet(ctx.paths.audit, audit, thumbnails,
                            title=f"Audit sheet ({ctx.profile} profile): are these negatives false of their frame?")
undecoded = sum(v is None for v in thumbnails.values())
display(pd.crosstab(audit["negative_type"], audit["split"], margins=True, margins_name="all")
        .rename_axis(index="negative type", columns="split"))
display(Markdown(f"Wrote `{written['html'].relative_to(ctx.paths.root)}` and `{written['csv'].relative_to(ctx.paths.root)}`: "
                 f"{len(audit):,} negatives, up to {per_type} of each kind"
                 + (f"; {undecoded} of their frames do not decode and show a note instead." if undecoded else ".")))
display(HTML(audit_sheet_html(audit.groupby("negative_type", sort=False).head(1), thumbnails,
                              title="The sheet's first row of each kind")))

# %% [markdown]
# ## The headline results on one figure
#
# From `metrics.json` (chapter 07): (a) the head's test metrics, (b) every model's ROC-AUC,
# best first, (c) the head's paired score against each kind of negative, beside the blind
# `text_only` control, (d) its confusion matrix. Every bar carries its 95% interval from
# resampling the test split's id blocks.

# %%
#@save
# extra code: the headline figure (chapter 10 draws it too)
#: How metric names of metrics.json read in prose.
METRIC_LABELS: dict[str, str] = {"accuracy": "accuracy", "precision": "precision", "recall": "recall",
                                 "macro_f1": "macro-F1", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC"}


def _estimate(entry: Mapping[str, Any] | None) -> tuple[float, float, float]:
    """(value, low, high) of a metrics.json estimate, NaN where undefined."""
    entry = entry or {}
    value, low, high = (math.nan if entry.get(k) is None else float(entry[k]) for k in ("value", "low", "high"))
    return value, low, high


def _interval_bars(ax: "Axes", names: Sequence[str], estimates: Sequence[tuple[float, float, float]],
                   colours: Sequence[str], xlabel: str) -> None:
    values = np.array([e[0] for e in estimates])
    low = np.array([e[1] for e in estimates])
    high = np.array([e[2] for e in estimates])
    err = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0).clip(min=0)
    y = np.arange(len(names))
    ax.barh(y, np.nan_to_num(values), xerr=err, color=colours, capsize=3)
    for yi, v in zip(y, values):
        inside = not math.isnan(v) and v > 0.15  # white on the bar, black beside a short one
        ax.text(0.01, yi, "n/a" if math.isnan(v) else f"{v:.3f}", va="center", ha="left", fontsize=8,
                color="white" if inside else "black")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.02), xlabel=xlabel)


def summary_dashboard(metrics: Mapping[str, Any], *, metric: str = "roc_auc") -> "Figure":
    """The headline results of ``metrics.json`` on one figure, every value with its 95% interval.

    Panels: (a) the primary model's test metrics; (b) ``metric`` of every model, best first;
    (c) the primary model's ``metric`` and accuracy by kind of negative; (d) its confusion
    matrix at the validation-tuned threshold.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    models = metrics.get("models") or {}
    primary = metrics.get("primary_model")
    if primary not in models:
        raise ValueError(f"metrics.json has no primary model {primary!r} (models: {sorted(models)})")
    main = models[primary]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (a, b), (c, d) = axes

    names = list(metrics.get("metrics") or main["overall"])
    label = METRIC_LABELS.get(metric, metric)
    _interval_bars(a, [METRIC_LABELS.get(m, m) for m in names], [_estimate(main["overall"].get(m)) for m in names],
                   ["#3949ab"] * len(names), "value")
    a.set_title(f"(a) {primary}: test metrics (threshold {main['threshold']:.3f})")

    order = sorted(models, key=lambda n: -np.nan_to_num(_estimate(models[n]["overall"].get(metric))[0], nan=-1))
    palette = {"fusion_mlp": "#3949ab", "single_score": "#8d6e63", "logistic_regression": "#00897b",
               "gradient_boosting": "#f4511e"}
    _interval_bars(b, order, [_estimate(models[n]["overall"].get(metric)) for n in order],
                   [palette.get(models[n].get("kind"), "#757575") for n in order], label)
    if metric == "roc_auc":
        b.axvline(0.5, color="black", linestyle=":", linewidth=1)
    b.set_title(f"(b) {label} of every model (colour: kind" + ("; dotted: chance)" if metric == "roc_auc" else ")"))

    groups = list(main.get("paired", {}))
    if groups:
        shown = [m for m in (primary, "text_only") if m in models]
        rows = [{"group": g, "model": m, "value": _estimate(models[m]["paired"].get(g))[0]}
                for m in shown for g in groups]
        sns.barplot(pd.DataFrame(rows), y="group", x="value", hue="model", ax=c, orient="h")
        for m_i, m in enumerate(shown):
            for g_i, g in enumerate(groups):
                value, low, high = _estimate(models[m]["paired"].get(g))
                if not math.isnan(low):
                    offset = (m_i - (len(shown) - 1) / 2) * 0.8 / len(shown)
                    c.plot([low, high], [g_i + offset] * 2, color="black", linewidth=1)
        c.axvline(0.5, color="black", linestyle=":", linewidth=1)
        c.set(xlim=(0, 1.02), xlabel="paired score (line: 95% interval; dotted: chance)", ylabel="")
        c.legend(fontsize="small", loc="lower right")
    else:
        c.text(0.5, 0.5, "no paired scores", ha="center", va="center")
    c.set_title("(c) own text scored above its negative, by kind (text_only: blind control)")

    cm = main["confusion"]
    grid = pd.DataFrame([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]], index=["misaligned", "aligned"],
                        columns=["rejected", "accepted"])
    sns.heatmap(grid, annot=True, fmt="d", cbar=False, cmap="Blues", ax=d)
    d.set(title=f"(d) {primary}: confusion on the test split", xlabel="verdict", ylabel="true")

    n = metrics.get("n", {})
    boot = metrics.get("bootstrap", {})
    fig.suptitle(f"Headline results: {n.get('pairs', '?')} test pairs from {n.get('stories', '?')} stories, "
                 f"95% intervals over id blocks ({boot.get('method', '?')})"
                 + (" (SMOKE RUN: numbers mean nothing)" if metrics.get("profile") == "smoke" else ""),
                 fontsize=12)
    fig.tight_layout()
    return fig

# %% [markdown]
# Which model is best is a choice, so it is made on the validation split: the model with the
# best validation ROC-AUC (`validation_scores`, from chapter 06's predictions) is named, and
# shown with its test value; ranking on the test split would pick the luckiest there.

# %%
#@save
def validation_scores(predictions: pd.DataFrame, split: str = "val") -> dict[str, float]:
    """Each model's ROC-AUC on the validation split of ``predictions.parquet`` (NaN where the split has one
    class): what a choice among models may read, the test split being only for showing the choice."""
    from sklearn.metrics import roc_auc_score

    rows = predictions[predictions["split"] == split]
    if rows.empty:
        raise ValueError(f"no predictions on the {split!r} split")
    return {str(name): float(roc_auc_score(g["label"], g["score"])) if g["label"].nunique() == 2 else math.nan
            for name, g in rows.groupby("model", sort=False)}

# %%
from helpers.report import format_estimate
from helpers.io import read_json

metrics = read_json(ctx.paths.metrics_json)
if metrics is None:
    raise FileNotFoundError(f"{ctx.paths.metrics_json} is missing: run chapter 07 (evaluation) first")
summary_dashboard(metrics)
plt.show()
validation_auc = validation_scores(load_predictions(ctx.paths))
auc = {name: model["overall"]["roc_auc"] for name, model in metrics["models"].items()
       if model.get("kind") not in ("text_only", "blind_control")}  # a blind control is no verifier to choose
chosen = max((n for n in auc if not math.isnan(validation_auc.get(n, math.nan))), key=validation_auc.get)
head = metrics["primary_model"]
display(Markdown(
    f"Chosen on the validation split: `{chosen}` has the best validation ROC-AUC of the {len(auc)} models "
    f"that see the frame "
    f"({validation_auc[chosen]:.3f}); on the test split it reaches {format_estimate(auc[chosen])}, and the head "
    f"(`{head}`, validation {validation_auc[head]:.3f}) reaches {format_estimate(auc[head])}."))

# %% [markdown]
# ## The headline in words
#
# A number that needs a sentence around it gets one, assembled from `metrics.json` when the
# chapter runs, never typed in; chapter 10 places these sentences next to the tables they
# read. These rules decide the wording:
#
# - a **difference** between two models is paired (both on the same resamples of id
#   blocks): when its 95% interval excludes zero the test split tells the two apart, when
#   it includes zero it cannot (`difference_phrase`);
# - a **blind control** (a model that never sees the frame, or a head scored against a
#   stranger's frame) whose paired score's interval excludes chance, 0.5, on a kind of
#   negative shows that those negatives can be told from their text alone (`blind_leaks`).
# - a **choice** among models (the best evidence used alone) is made on the validation split
#   (`validation_scores`) and its value shown on the test split;
# - kinds of negative are compared by the head's **paired score**, the headline per kind, on the
#   test frames that have a negative of every kind (the `common:<kind>` groups of chapter 07),
#   so that every kind is scored on the same frames.
#
# Models are ranked by the metric's point value; a model whose metric is undefined is left
# out of the ranking. Two kinds of negative whose values print the same are called equal.

# %%
#@save
def _value(estimate: Mapping[str, Any] | None) -> float:
    """The point value of a metrics.json estimate, NaN where undefined."""
    return _estimate(estimate)[0]


def difference_phrase(estimate: Mapping[str, Any] | None) -> str:
    """"+0.041 [0.012, 0.070]: the interval excludes zero, so ..." and the like."""
    from helpers.report import format_estimate

    value, low, high = _estimate(estimate)
    if math.isnan(value):
        return "n/a"
    text = format_estimate(estimate)
    if math.isnan(low) or math.isnan(high):
        return f"{text} (no interval)"
    if low > 0 or high < 0:
        return f"{text}: the interval excludes zero, so the test split tells the two apart"
    return f"{text}: the interval includes zero, so the test split cannot tell the two apart"


def ranked(models: Mapping[str, Any], names: Iterable[str], metric: str) -> list[str]:
    """``names`` with a defined ``metric``, best first."""
    defined = [n for n in names if not math.isnan(_value(models[n]["overall"].get(metric)))]
    return sorted(defined, key=lambda n: -_value(models[n]["overall"].get(metric)))


def headline_finding(metrics: Mapping[str, Any], metric: str = "roc_auc") -> str:
    """The primary head's ``metric`` and macro-F1 on the test split, and what the split holds."""
    from helpers.report import format_estimate

    primary = metrics["primary_model"]
    overall = metrics["models"][primary]["overall"]
    n = metrics.get("n", {})
    return (f"The fusion head (`{primary}`) reaches {METRIC_LABELS.get(metric, metric)} "
            f"{format_estimate(overall.get(metric))} and macro-F1 {format_estimate(overall.get('macro_f1'))} on "
            f"{n.get('pairs', 0):,} test pairs from {n.get('stories', 0):,} stories in {n.get('blocks', 0):,} id "
            "blocks (value [95% interval, resampling id blocks]).")


def blind_leaks(paired: Mapping[str, Any]) -> list[str]:
    """The kinds of negative (each over every frame it applies to) whose paired-score interval excludes chance, 0.5."""
    from helpers.evaluation import NEGATIVE_TYPES

    return [t for t, e in paired.items()
            if t in NEGATIVE_TYPES and e.get("low") is not None and (e["low"] > 0.5 or e["high"] < 0.5)]


#: The blind controls the construction aimed at chance (what chose the negatives), and why.
BY_CONSTRUCTION: dict[str, str] = {"text_only": "the blind filter's own recipe",
                                   "mlm_plausibility": "the score that chose the edits"}


def blind_findings(metrics: Mapping[str, Any]) -> list[str]:
    """One sentence per blind control (``text_only``, ``clip_text_only``, ``pairwise_text``, ``flags_only``, the
    ``controls``):
    the kinds of negative it tells apart without seeing the frame; those of ``BY_CONSTRUCTION`` say so."""
    models = metrics["models"]
    blind = {name: models[name]["paired"] for name in ("text_only", "clip_text_only", "pairwise_text", "flags_only")
             if name in models}
    blind |= {name: c["paired"] for name, c in metrics.get("controls", {}).items()}
    out = []
    for name, groups in blind.items():
        leaks = blind_leaks(groups)
        why = f" (aimed at chance by the construction: {BY_CONSTRUCTION[name]})" if name in BY_CONSTRUCTION else ""
        out.append(f"Blind control `{name}`{why}: " + (
            f"its interval excludes chance for {', '.join(f'`{t}`' for t in leaks)}: those negatives can be told "
            "from their text alone." if leaks else "no interval excludes chance."))
    return out


def beyond_text_finding(metrics: Mapping[str, Any]) -> str:
    """The flags-only control's equivalence verdict on the paired score, and what each head adds beyond it
    (``beyond_text`` of chapter 07, each difference with its paired interval); empty when chapter 07 did not
    record it."""
    from helpers.report import format_estimate

    beyond = metrics.get("beyond_text")
    if not beyond:
        return ""
    control = beyond["control"]
    entry = metrics["models"][control]
    verdict = entry["equivalence"]["paired"]["all"]["verdict"]
    gains = "; ".join(f"`{head}` minus it {difference_phrase(d['paired'].get('all'))}"
                      for head, d in beyond["heads"].items())
    return (f"The flags-only control `{control}` (a model on every input the text alone decides, which the "
            f"extended head reads too) has a paired score of {format_estimate(entry['paired'].get('all'))} on the "
            f"test split; the equivalence test against chance says **{verdict}**. Paired score over every (frame, "
            f"kind): {gains}.")


def evidence_findings(metrics: Mapping[str, Any], validation: Mapping[str, float]) -> list[str]:
    """The best and worst evidence used alone, chosen by ROC-AUC on the validation split (``validation``, from
    :func:`validation_scores`) and shown on the test split, and the fusion head minus the best, with its paired
    interval."""
    from helpers.report import format_estimate

    metric, label = "roc_auc", METRIC_LABELS["roc_auc"]
    models = metrics["models"]
    singles = [m for m, info in models.items()
               if info.get("kind") == "single_score" and not math.isnan(validation.get(m, math.nan))]
    if not singles:
        return []
    singles.sort(key=lambda m: -validation[m])
    best, worst = singles[0], singles[-1]
    sentence = (f"Used alone, `{best}` separates the pairs best on the validation split ({label} "
                f"{validation[best]:.3f}; on the test split {format_estimate(models[best]['overall'].get(metric))})")
    if worst != best:
        sentence += (f" and `{worst}` worst ({validation[worst]:.3f}; on the test split "
                     f"{format_estimate(models[worst]['overall'].get(metric))})")
    out = [sentence + "."]
    difference = metrics.get("differences", {}).get(best, {}).get(metric)
    if difference is not None:
        out.append(f"The fusion head minus `{best}` in {label}: {difference_phrase(difference)}.")
    return out


def negative_type_finding(metrics: Mapping[str, Any]) -> str | None:
    """The kinds of negative the primary head finds hardest and easiest by its paired score (own text above
    that negative, the headline per kind) on the test frames that have a negative of every kind (chapter 07's
    ``common:<kind>`` groups), so both on the same frames; None with fewer than two kinds there."""
    from helpers.evaluation import COMMON_FRAMES, NEGATIVE_TYPES, common_group
    from helpers.report import format_estimate

    paired = metrics["models"][metrics["primary_model"]].get("paired", {})
    by_type = {t: _value(paired.get(common_group(t))) for t in NEGATIVE_TYPES if common_group(t) in paired}
    by_type = {t: v for t, v in by_type.items() if not math.isnan(v)}
    if len(by_type) < 2:
        return None
    hardest, easiest = min(by_type, key=by_type.get), max(by_type, key=by_type.get)
    frames = paired[COMMON_FRAMES].get("frames", 0)
    where = (f"on the {frames:,} test frames that have a negative of every kind ({', '.join(f'`{t}`' for t in by_type)}), "
             "each kind scored on those same frames")
    if f"{by_type[hardest]:.3f}" == f"{by_type[easiest]:.3f}":  # equal as printed
        return f"The fusion head reaches the same paired score ({by_type[hardest]:.3f}) on every kind of negative {where}."
    return (f"By the paired score (own text above its negative) {where}, the fusion head's hardest kind of negative "
            f"is `{hardest}` ({format_estimate(paired[common_group(hardest)])}) and the easiest `{easiest}` "
            f"({format_estimate(paired[common_group(easiest)])}).")

# %%
display(Markdown("\n".join(f"- {s}" for s in [headline_finding(metrics), *blind_findings(metrics),
                                                beyond_text_finding(metrics),
                                                *evidence_findings(metrics, validation_auc),
                                                negative_type_finding(metrics)] if s)))

# %% [markdown]
# ## The architecture, drawn
#
# Chapter 10 opens with the verifier's architecture: the inputs, the text rules and the two
# frozen models, the three evidences, the fusion head (its layer sizes and parameter count
# read from chapter 05's `FusionMLP`), and what it returns.

# %%
#@save
# extra code: the architecture figure (matplotlib boxes and arrows)
#: The boxes of the architecture figure: name -> (centre x, centre y, text, colour).
_ARCHITECTURE_BOXES: dict[str, tuple[float, float, str, str]] = {
    "text": (0.08, 0.80, "Story segment\n(tagged text)", "#eceff1"),
    "frame": (0.08, 0.42, "Frame\n(movie still)", "#eceff1"),
    "parsing": (0.31, 0.85, "Text rules: mentions ->\nCOCO, stated relations", "#ffe0b2"),
    "detector": (0.31, 0.55, "Faster R-CNN\nResNet-50 FPN (COCO)", "#ffe0b2"),
    "clip": (0.31, 0.22, "CLIP ViT-B/32\nframe + each sentence", "#e1bee7"),
    "object": (0.56, 0.85, "Object evidence\nneeded vs detected", "#c8e6c9"),
    "spatial": (0.56, 0.55, "Spatial evidence\nrelations held on boxes", "#c8e6c9"),
    "semantic": (0.56, 0.22, "Semantic evidence\nsentence cosines", "#c8e6c9"),
    "fusion": (0.745, 0.55, "FusionMLP\n{layers}", "#bbdefb"),
    "probability": (0.925, 0.74, "P(aligned)\nvs threshold", "#fff9c4"),
    "explanation": (0.925, 0.34, "Explanation\nfound / missing,\nheld / failed", "#fff9c4"),
}


#: Arrows between boxes, with an optional label.
_ARCHITECTURE_ARROWS: tuple[tuple[str, str, str], ...] = (
    ("text", "parsing", ""), ("text", "clip", "sentences"), ("frame", "detector", ""), ("frame", "clip", "pixels"),
    ("parsing", "object", "categories"), ("parsing", "spatial", "relations"), ("detector", "object", "labels"),
    ("detector", "spatial", "boxes"), ("clip", "semantic", ""),
    ("object", "fusion", "score"), ("spatial", "fusion", "score"), ("semantic", "fusion", "score"),
    ("fusion", "probability", ""), ("fusion", "explanation", ""),
)


def architecture_figure() -> "Figure":
    """The verifier's architecture as boxes and arrows (matplotlib): inputs, the two frozen
    models, the three evidences, the fusion head, and what it returns."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    from helpers.fusion import FusionMLP, count_parameters

    hidden = FusionMLP().network[0].out_features
    layers = f"3 -> {hidden} -> {hidden} -> 1"
    fig, ax = plt.subplots(figsize=(13, 5.6))
    ax.set(xlim=(-0.01, 1.01), ylim=(0.08, 1.0))
    ax.set_axis_off()
    half_w, half_h = 0.07, 0.075
    for x, y, label, colour in _ARCHITECTURE_BOXES.values():
        ax.add_patch(FancyBboxPatch((x - half_w, y - half_h), 2 * half_w, 2 * half_h, boxstyle="round,pad=0.01",
                                    facecolor=colour, edgecolor="#455a64", linewidth=1.2))
        ax.text(x, y, label.format(layers=layers), ha="center", va="center", fontsize=9)
    for source, target, label in _ARCHITECTURE_ARROWS:
        (x0, y0, *_), (x1, y1, *_) = _ARCHITECTURE_BOXES[source], _ARCHITECTURE_BOXES[target]
        start = (x0 + half_w + 0.01, y0)
        end = (x1 - half_w - 0.01, y1)
        ax.annotate("", xy=end, xytext=start,
                    arrowprops={"arrowstyle": "-|>", "color": "#37474f", "linewidth": 1.1, "shrinkA": 0, "shrinkB": 0})
        if label:
            at = 0.3  # along the arrow: labels of crossing arrows stay apart
            ax.text(start[0] + at * (end[0] - start[0]), start[1] + at * (end[1] - start[1]) + 0.012, label,
                    ha="center", va="bottom", fontsize=7.5, color="#37474f",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    ax.text(0.31, 0.99, "text rules and frozen pretrained models", ha="center", va="top", fontsize=8, style="italic",
            color="#607d8b")
    ax.text(0.56, 0.99, "evidence scores, nothing trained", ha="center", va="top", fontsize=8, style="italic",
            color="#607d8b")
    ax.text(0.745, 0.99, f"trained ({count_parameters(FusionMLP()):,} parameters)", ha="center", va="top", fontsize=8,
            style="italic", color="#607d8b")
    fig.tight_layout()
    return fig

# %%
architecture_figure()
plt.show()
