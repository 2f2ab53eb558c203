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
# # 02 · Objects: what the detector finds, and what the text needs
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/02_detection.ipynb)
#
# The first piece of evidence is the plainest: if the text says there is a phone on the
# table, a detector trained on COCO should find a phone and a table in the frame. This
# chapter runs torchvision's Faster R-CNN over every frame the pairs use, checks it against
# the boxes of the dataset's chain of thought, chooses nothing by eye (the input size and the
# number of region proposals are measured, not assumed), and turns "what the text needs"
# against "what the frame shows" into an object score for every pair.
#
# The functions of the method are written here, in cells marked `#@save`; `make lib` copies
# them into `helpers/objects.py`, where later chapters, the ablations and the verifier import
# them. Change a cell, rerun the chapter, then run `make lib`. Loading the detectors and caching
# their output is plumbing, in `helpers/detection.py` (Faster R-CNN) and `helpers/owlvit.py`
# (OWL-ViT, the open-vocabulary detector of the last section).
#
# **Splits shown:** the object score is computed for every pair, but every table, figure
# and choice below reads the train and validation splits only; the test split is looked
# at once, from chapter 07 on.

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

ctx = start(profile, chapter="02_detection")

# %% [markdown]
# The imports of the method (the first cell of `helpers/objects.py`):

# %%
#@save
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from helpers.detection import FRAME_COLUMNS, Detection, Detector, detect_frames, detections_long, dumps_detections
from helpers.detection import parse_detections
from helpers.features import require_development

if TYPE_CHECKING:
    import matplotlib.axes
    import matplotlib.figure
    from PIL import Image as PILImage

    from helpers.owlvit import OwlVit
    from helpers.tags import ChainOfThought, Mention, ParsedStory, Segment

# %% [markdown]
# ## The detector and the frames
#
# The profile names the detector's weights: the COCO weights torchvision publishes, a
# weights file of our own, or (in the smoke profile) the same network randomly initialised,
# saved to disk and loaded back like any weights file. Every frame that appears in a pair
# goes through the network once; its detections are cached on disk, so rerunning this
# chapter, or reading the detections in later chapters, costs no forward pass. The cache
# keeps every detection above a low floor, so the score threshold below can change freely.
# A frame that cannot be decoded is skipped and counted here, never silently dropped.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from helpers import detection as det
from helpers.data import load_study_data, pair_frames
from helpers.features import development, development_stories, write_part

cfg = ctx.cfg["detector"]
threshold = det.settings_from_profile(ctx.cfg).score_threshold
study = load_study_data(ctx.cfg, ctx.paths.pairs, ctx.paths.cache)
stories, pairs = study.stories, study.pairs
frames = pair_frames(pairs, study.datasets)
detector, run = det.profile_detections(ctx.cfg, ctx.paths, frames, device=ctx.device)
decoded = run.frames[run.frames["status"] == "ok"]
dev_stories = development_stories(pairs)  # train and validation: what every table below shows
dev_run_frames = run.frames[run.frames["story_id"].astype(str).isin(dev_stories)]

display(Markdown(
    f"**Weights:** {detector.source}.  \n"
    f"**Frames:** {len(run.frames):,} used by {len(pairs):,} pairs; {run.forward_passes:,} went through the network in "
    f"this run (the rest came from the cache); frames that could not be decoded and were skipped: "
    f"{len(run.corrupt):,}. "
    f"Frames are resized to a shorter side of {cfg['min_size']} pixels (they are "
    f"{decoded['height'].median():.0f} pixels high); the cache keeps detections scoring at least "
    f"{det.CACHE_SCORE_FLOOR}, the evidence below uses those scoring at least {threshold}."
))
if len(run.corrupt):
    display(run.corrupt)

# %% [markdown]
# ## From words to COCO categories: the lexicon
#
# The detector answers in COCO's 80 categories; stories speak of "a blue blanket", "the
# man's cell phone", "Counter or table". Everything below (the oracle's boxes, what a text
# needs, the relations of chapter 04, the object swaps of chapter 01) rests on one mapping
# from a noun phrase to a COCO category or nothing. It reads the *head noun* of the phrase,
# so adjectives and attachments cannot change the answer: "a coffee table" is a table, "a
# car door" is a door, "a man holding a phone" is a man.
#
# The rule of thumb for every table entry: map a word only when a COCO-trained detector would
# label the thing it names with that category. When that is doubtful the word maps to
# nothing: a missing mapping only costs coverage, a wrong one makes the verifier report a
# contradiction that is not there. Character names are never in the tables; characters go
# through their chain-of-thought description. The tables are plain data, meant to be read:
# COCO's own names, synonyms (debatable choices carry a comment), and the frequent story
# nouns COCO has no category for, listed so the decision is visible (and so that "glasses"
# do not fall back to "glass").

# %%
#@save
#: The 80 COCO detection categories, spelled and ordered as torchvision's
#: ``FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]`` (minus "__background__"
#: and the "N/A" placeholders).
COCO_CATEGORIES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

#: Words (singular, lower case; multiword allowed) for a COCO category, besides the
#: category names themselves. Debatable choices carry a comment.
SYNONYMS: dict[str, str] = {
    # person: COCO labels every human, whatever the role
    **dict.fromkeys(
        [
            "man", "woman", "boy", "girl", "person", "people", "child", "kid", "baby",
            "toddler", "teenager", "teen", "adult", "guy", "lady", "gentleman", "human",
            "individual", "figure", "crowd", "audience", "stranger",
            "soldier", "officer", "policeman", "policewoman", "cop", "guard", "agent",
            "detective", "doctor", "nurse", "driver", "passenger", "pedestrian", "worker",
            "waiter", "waitress", "bartender", "student", "teacher", "priest", "mother",
            "father", "wife", "husband", "son", "daughter", "brother", "sister",
        ],
        "person",
    ),
    # vehicles ("vehicle" and "van" stay unmapped: car or truck is a guess)
    "automobile": "car", "taxi": "car", "cab": "car", "sedan": "car", "jeep": "car",
    "suv": "car", "limousine": "car", "bike": "bicycle", "motorbike": "motorcycle",
    "plane": "airplane", "aeroplane": "airplane", "jet": "airplane", "aircraft": "airplane",
    "lorry": "truck", "pickup": "truck", "ship": "boat", "yacht": "boat", "canoe": "boat",
    "kayak": "boat", "rowboat": "boat", "locomotive": "train", "hydrant": "fire hydrant",
    "traffic signal": "traffic light", "stoplight": "traffic light",
    # animals (COCO "bird" covers every bird)
    "puppy": "dog", "pup": "dog", "hound": "dog", "kitten": "cat", "kitty": "cat",
    "pony": "horse", "stallion": "horse", "mare": "horse", "foal": "horse", "lamb": "sheep",
    "cattle": "cow", "bull": "cow", "calf": "cow", "ox": "cow", "pigeon": "bird",
    "crow": "bird", "parrot": "bird", "owl": "bird", "eagle": "bird", "seagull": "bird",
    "gull": "bird", "duck": "bird", "goose": "bird", "swan": "bird", "chicken": "bird",
    "hen": "bird",
    # bags: a plain "bag" in these films is carried like a handbag; a briefcase is
    # annotated as a suitcase in COCO
    "bag": "handbag", "purse": "handbag", "clutch": "handbag", "rucksack": "backpack",
    "knapsack": "backpack", "luggage": "suitcase", "briefcase": "suitcase",
    "necktie": "tie", "bow tie": "tie", "parasol": "umbrella",
    # sport
    "ski": "skis", "ball": "sports ball", "football": "sports ball",
    "basketball": "sports ball", "soccer ball": "sports ball", "racket": "tennis racket",
    "racquet": "tennis racket", "mitt": "baseball glove",
    # kitchen and food ("glass" is a drinking glass: COCO's only glass category)
    "glass": "wine glass", "goblet": "wine glass", "mug": "cup", "teacup": "cup",
    "doughnut": "donut", "hotdog": "hot dog", "cupcake": "cake",
    # furniture (COCO "dining table" is every table; a "counter" is not one)
    "table": "dining table", "desk": "dining table", "sofa": "couch", "settee": "couch",
    "loveseat": "couch", "armchair": "chair", "stool": "chair", "plant": "potted plant",
    "houseplant": "potted plant", "flowerpot": "potted plant",
    # electronics (COCO "tv" includes computer monitors; "phone" is a mobile in films)
    "television": "tv", "television set": "tv", "tv set": "tv", "telly": "tv",
    "monitor": "tv", "computer screen": "tv", "tv screen": "tv", "television screen": "tv",
    "phone": "cell phone", "mobile": "cell phone", "mobile phone": "cell phone",
    "cellphone": "cell phone", "smartphone": "cell phone", "remote control": "remote",
    "fridge": "refrigerator", "stove": "oven", "microwave oven": "microwave",
    # small things
    "novel": "book", "textbook": "book", "paperback": "book", "teddy": "teddy bear",
    "stuffed animal": "teddy bear", "hair dryer": "hair drier", "hairdryer": "hair drier",
    "blow dryer": "hair drier",
}  # fmt: skip

#: Frequent story nouns that name something COCO has no category for. Listing them makes
#: the decision visible, and stops the plural fallback ("glasses" must not become "glass").
#: A ``char`` whose description's head noun is here is not a person (robot, statue, lion).
NOT_COCO: frozenset[str] = frozenset(
    {
        # architecture, scenery, light
        "wall", "ceiling", "floor", "door", "doorway", "window", "room", "hallway",
        "corridor", "staircase", "stairs", "elevator", "building", "house", "street",
        "road", "pavement", "sidewalk", "sky", "tree", "grass", "light", "lighting",
        "background", "interior", "structure",
        # furnishings and containers COCO lacks
        "blanket", "pillow", "curtain", "rug", "carpet", "lamp", "shelf", "shelves",
        "cabinet", "cupboard", "drawer", "counter", "box", "crate", "mirror", "painting",
        "picture", "photo", "photograph", "poster", "sign", "plate", "tray", "basket",
        # weapons: COCO has knife and scissors only
        "gun", "pistol", "rifle", "revolver", "weapon", "sword",
        # worn things (eyeglasses are not wine glasses)
        "glasses", "eyeglasses", "sunglasses", "spectacles", "hat", "cap", "helmet",
        "jacket", "coat", "shirt", "suit", "dress", "scarf", "watch",
        # ambiguous between categories: a computer may be a laptop or a tv and keyboard,
        # a vehicle a car or a truck, a telephone a landline COCO has no class for
        "computer", "screen", "vehicle", "van", "telephone",
        # animals COCO lacks
        "lion", "tiger", "wolf", "fox", "deer", "monkey", "ape", "gorilla", "pig", "goat",
        "rabbit", "rat", "snake", "fish", "dragon", "dinosaur",
        # figures that are not people
        "robot", "droid", "android", "cyborg", "statue", "sculpture", "mannequin", "doll",
        "puppet", "alien", "creature", "monster",
    }
)  # fmt: skip

# %% [markdown]
# Finding the head noun. The phrase is lower-cased and split into alternatives on "or", "and"
# and "/" ("Counter or table": the first alternative that maps). In each alternative leading
# determiners and possessors ("the man's") are dropped, and the head chunk ends at the first
# preposition, relative pronoun, comma, later determiner, or participle after a known noun
# ("man holding a phone" is "man"). The head is the longest known word sequence (up to three
# words) ending the chunk, singular or plural ("cell phones", "knives", "women"). A part or
# quantity before "of" defers to what follows ("a section of a wall" is a wall, "a group of
# soldiers" people); anything else keeps its own head ("a cup of coffee" is a cup).

# %%
#@save
# Internal lookup: every COCO name maps to itself, then the synonyms.
_LOOKUP: dict[str, str] = {**{c: c for c in COCO_CATEGORIES}, **SYNONYMS}

_IRREGULAR_PLURALS: dict[str, str] = {
    "men": "man", "women": "woman", "gentlemen": "gentleman", "policemen": "policeman",
    "policewomen": "policewoman", "children": "child", "people": "person", "mice": "mouse",
    "geese": "goose", "oxen": "ox", "teeth": "tooth", "feet": "foot",
}  # fmt: skip

#: Nouns naming a part or a quantity of what follows "of": "a section of a wall" is a
#: wall, "a pair of glasses" glasses, "a group of soldiers" people.
_PARTITIVES: frozenset[str] = frozenset(
    {
        "section", "part", "piece", "pair", "group", "bunch", "stack", "pile", "row", "set",
        "couple", "slice", "handful", "lot", "lots", "number", "cluster", "collection",
        "line", "series", "variety", "kind", "type", "sort", "edge", "corner", "side",
        "top", "bottom", "half", "rest", "bit", "silhouette",
    }
)  # fmt: skip

#: "glasses of wine" are drinking glasses although "glasses" alone are eyeglasses.
_BEFORE_OF: dict[str, str] = {"glasses": "wine glass"}

# Words that end the head chunk: prepositions and relative pronouns start a modifier
# ("man *with* a neutral look"); a determiner after the first word starts a new noun
# phrase ("man holding *a* phone").
_PREPOSITIONS = frozenset(
    "of with without in on at near by from under underneath beneath behind beside between "
    "next against inside outside for over above below into onto through to like across "
    "along around atop upon during toward towards among".split()
)
_RELATIVES = frozenset("that which who whose where when while".split())
_DETERMINERS = frozenset(
    "a an the this that these those his her their its my your our some any several many few "
    "one two three four five six seven eight nine ten another each every both all no".split()
)

_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*'?|,|;")
_ALTERNATIVES = re.compile(r"\s+(?:or|and|&)\s+|\s*/\s*")

def _alternatives(text: str) -> list[list[str]]:
    """Lower-cased tokens of each alternative of ``text`` ("counter or table")."""
    text = text.lower().replace("\u2019", "'")
    return [_TOKEN.findall(part) for part in _ALTERNATIVES.split(text)]


def _head(tokens: list[str]) -> tuple[str, str | None] | None:
    """The head noun of a tokenised phrase and its category, or ``None`` when no word of
    the head chunk is known. Returns ``(matched words, category or None)``."""
    tokens = [t for t in tokens if not _is_possessor(t)]
    while tokens and tokens[0] in _DETERMINERS:
        tokens = tokens[1:]
    chunk, after_of = _head_chunk(tokens)
    if not chunk:
        return None
    found = _lookup_suffix(chunk)
    if found is not None and found[1] is not None:
        return found
    last = chunk[-1]
    if after_of:
        if last in _BEFORE_OF:
            return last, _BEFORE_OF[last]
        if last in _PARTITIVES:
            return _head(after_of)
    return found


def _head_chunk(tokens: list[str]) -> tuple[list[str], list[str]]:
    """Split tokens into the head chunk and, when the chunk ends at "of", what follows."""
    for i, token in enumerate(tokens):
        if token in (",", ";") or token in _RELATIVES:
            return tokens[:i], []
        if token in _PREPOSITIONS:
            return tokens[:i], tokens[i + 1 :] if token == "of" else []
        if i > 0 and token in _DETERMINERS:
            return tokens[:i], []
        if i > 0 and token.endswith("ing") and _lookup_suffix([token]) is None:
            if _lookup_suffix([tokens[i - 1]]) is not None:  # "man holding", "dog sleeping"
                return tokens[:i], []
    return tokens, []


def _lookup_suffix(chunk: list[str]) -> tuple[str, str | None] | None:
    """Longest known word sequence (up to three words) ending the chunk, with its category.

    Only the last word is put into singular form ("wine glasses" -> "wine glass"). Returns
    ``None`` when nothing is known, ``(words, None)`` for a ``NOT_COCO`` word.
    """
    for n in range(min(3, len(chunk)), 0, -1):
        prefix = " ".join(chunk[-n:-1])
        for last in _singular_forms(chunk[-1]):
            words = f"{prefix} {last}" if prefix else last
            if words in _LOOKUP:
                return words, _LOOKUP[words]
            if words in NOT_COCO:
                return words, None
    return None


def _singular_forms(word: str) -> list[str]:
    """The word itself, then the singulars it could be the plural of, most specific first."""
    forms = [word]
    if word in _IRREGULAR_PLURALS:
        forms.append(_IRREGULAR_PLURALS[word])
    if word.endswith("ies") and len(word) > 4:
        forms.append(word[:-3] + "y")  # puppies, ladies
    if word.endswith("ves"):
        forms += [word[:-3] + "f", word[:-3] + "fe"]  # shelves, knives
    if word.endswith("s") and not word.endswith("ss"):
        forms.append(word[:-1])  # chairs, bottles
        if word.endswith("es"):
            forms.append(word[:-2])  # boxes, couches, buses
    return forms


def _is_possessor(token: str) -> bool:
    """``True`` for "man's", "james'" and the like: the head comes after them."""
    return token.endswith(("'s", "s'"))

# %% [markdown]
# The two lookups everything else calls: `to_coco` for a noun phrase, `char_category` for a
# character's chain-of-thought description. A character is a person unless the head noun of
# its description says otherwise: an animal or thing COCO has ("A small brown dog") gives that
# category, one COCO lacks ("A golden humanoid robot", "A stone statue") gives none, and heads
# the lexicon does not know ("Unidentified", "A Jedi in brown robes") stay "person", by far the
# most common case. Both are cached; the undecorated functions underneath are what mutation
# testing reaches.

# %%
#@save
@lru_cache(maxsize=1 << 16)
def to_coco(phrase: str) -> str | None:
    """The COCO category the noun phrase ``phrase`` refers to (its head noun), or ``None``.

    >>> to_coco("the man's cell phone"), to_coco("Counter or table"), to_coco("Blue blanket")
    ('cell phone', 'dining table', None)
    """
    return _phrase_category(phrase)


@lru_cache(maxsize=1 << 14)
def char_category(description: str) -> str | None:
    """The COCO category of a character from its chain-of-thought description: "person"
    unless the head noun of the description says otherwise."""
    return _description_category(description)


# The two lookups, undecorated (the cached functions above only call them), so that
# mutation testing reaches them.


def _phrase_category(phrase: str) -> str | None:
    """What :func:`to_coco` returns."""
    for tokens in _alternatives(phrase):
        head = _head(tokens)
        if head is not None and head[1] is not None:
            return head[1]
    return None


def _description_category(description: str) -> str | None:
    """What :func:`char_category` returns."""
    for tokens in _alternatives(description):
        head = _head(tokens)
        if head is not None:  # the first head noun the lexicon knows decides
            return head[1]
    return "person"

# %%
examples = ["the man's cell phone", "Counter or table", "Blue blanket", "a section of a wall", "two wine glasses",
            "a pair of glasses", "a cup of coffee", "a man holding a phone"]
display(pd.DataFrame({"phrase": examples, "to_coco": [to_coco(p) for p in examples]}).set_index("phrase").T)
descriptions = ["Man in a coat", "A small brown dog", "A golden humanoid robot with a sophisticated design.",
                "Unidentified"]
display(pd.DataFrame({"description": descriptions, "char_category": [char_category(d) for d in descriptions]})
        .set_index("description").T)

# %% [markdown]
# ## The oracle: the chain of thought's own boxes
#
# Each frame's chain of thought lists its characters and objects with a bounding box. Mapped
# onto COCO's categories (characters through their description, so a robot is not a person;
# objects through the lexicon), they make a second "detector" with perfect confidence: the
# reference the real detector is compared with, and the object evidence's score if every
# annotated box were found. Entities that COCO has no category for (walls, doors, blankets)
# drop out, and are counted.
#
# These boxes are not ground truth drawn by people: StoryReasoning's authors made them with
# COCO detectors (`ANNOTATION_DETECTORS`). The real detector's "recall" against them, below,
# is agreement between detectors, and an oracle built on them replays their choices. It also
# replays how some negatives were built (`ORACLE_REPLAYS`): an aligned text names the very
# entities its frame's chain of thought annotates, so the oracle finds what a positive names
# by construction, while an `other_story` or `same_story` negative brings another frame's
# entities, and an `object_swap` an object chosen because these annotations do not place it
# in the frame. On those kinds of negative the oracle's score measures the construction, not
# the frame; on `relation_swap` the named things stay the same and nothing is replayed.

# %%
#@save
#: Who drew the chain of thought's boxes: StoryReasoning's annotation pipeline ran these COCO detectors.
ANNOTATION_DETECTORS = "DETR-R101 and Mask2Former Swin-L panoptic"

#: Negative types on which evidence read from the chain-of-thought boxes (the oracle) replays the
#: construction of the labels rather than measuring the frame, with the reason.
ORACLE_REPLAYS: dict[str, str] = {
    "other_story": "the aligned text names the entities its frame's annotations hold, the negative another "
                   "story's",
    "same_story": "the aligned text names the entities its frame's annotations hold, the negative another "
                  "frame's",
    "object_swap": "the swapped-in object was chosen as one the chain-of-thought annotations do not place in the "
                   "frame, and the oracle reads the same annotations",
}

# %%
#@save
def ground_truth_frames(stories: Iterable["ParsedStory"]) -> pd.DataFrame:
    """The chain-of-thought boxes as a per-frame detection table, every score 1.0, plus
    ``n_entities`` (entities with a box) and ``n_unmapped`` (of those, without a COCO category)."""
    rows = []
    for story in stories:
        for number, annotation in sorted(story.cot.frames.items()):
            found, n_entities = [], 0
            for entities, categorise in ((annotation.characters, char_category), (annotation.objects, to_coco)):
                for entity in entities:
                    if entity.box is None:
                        continue
                    n_entities += 1
                    if (category := categorise(entity.description)) is not None:
                        found.append(Detection(category, 1.0, tuple(float(v) for v in entity.box)))
            rows.append({"story_id": story.story_id, "frame": int(number), "status": "ok",
                         "detections": dumps_detections(found), "n_entities": n_entities,
                         "n_unmapped": n_entities - len(found)})
    return pd.DataFrame(rows, columns=[*FRAME_COLUMNS, "n_entities", "n_unmapped"])


# %%
truth = ground_truth_frames(stories)
dev_truth = truth[truth["story_id"].astype(str).isin(dev_stories)]
truth_long = det.detections_long(dev_truth)
display(Markdown(
    f"In the train and validation frames, the chain of thought gives a box to {dev_truth['n_entities'].sum():,} "
    f"entities in {len(dev_truth):,} frames; {len(truth_long):,} of them "
    f"({len(truth_long) / max(dev_truth['n_entities'].sum(), 1):.0%}) fall in a COCO category, "
    f"spread over {truth_long['label'].nunique()} categories."
))
display(truth_long["label"].value_counts().rename("boxes").to_frame().head(12).T)

# %% [markdown]
# The frames with the most chain-of-thought boxes, those boxes dashed and the detector's
# solid (its most confident detections at or above the score threshold):

# %%
#@save
# extra code: drawing detections over a frame
def plot_detections(ax: "matplotlib.axes.Axes", image: "PILImage.Image", predicted: Sequence[Detection],
                    ground_truth: Sequence[Detection] = (), *, title: str = "", max_predicted: int = 15) -> None:
    """A frame with its ``max_predicted`` best detections (solid orange) under the
    ground-truth boxes (dashed green, drawn last so they show)."""
    from helpers.plots import draw_boxes

    ax.imshow(image)
    best = sorted(predicted, key=lambda d: -d.score)[:max_predicted]
    draw_boxes(ax, [d.box for d in best], [f"{d.label} {d.score:.2f}" for d in best], colour="#ff7f0e", width=1.2)
    draw_boxes(ax, [d.box for d in ground_truth], [d.label for d in ground_truth], colour="#2ca02c", style="--",
               width=2.0)
    shown = f" (best {len(best)} of {len(predicted)} detections)" if len(best) < len(predicted) else ""
    ax.set_title(title + shown, fontsize=9)
    ax.axis("off")


def plot_detection_samples(frames: Mapping[tuple[str, int], bytes], predicted: pd.DataFrame,
                           ground_truth: pd.DataFrame, *, threshold: float, n: int = 4) -> "matplotlib.figure.Figure":
    """The ``n`` decoded frames with the most ground-truth boxes (ties by story id and frame),
    detections at or above ``threshold`` over the oracle's boxes."""
    import matplotlib.pyplot as plt

    from helpers.data import frame_image

    counts = ground_truth.assign(n_boxes=ground_truth["detections"].map(lambda c: len(json.loads(c))))
    decoded = predicted.loc[predicted["status"] == "ok", ["story_id", "frame", "detections"]]
    chosen = (counts.merge(decoded, on=["story_id", "frame"], suffixes=("_truth", ""))
              .sort_values(["n_boxes", "story_id", "frame"], ascending=[False, True, True]).head(n))
    n_rows = max(1, math.ceil(len(chosen) / 2))
    fig, axes = plt.subplots(n_rows, 2, figsize=(12, 2.8 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, chosen.itertuples(index=False)):
        image = frame_image([frames[(row.story_id, row.frame)]], 1)
        plot_detections(ax, image, parse_detections(row.detections, threshold), parse_detections(row.detections_truth),
                        title=f"story {row.story_id}, frame {row.frame}")
    fig.tight_layout()
    return fig


# %%
plot_detection_samples(frames, dev_run_frames, dev_truth, threshold=threshold, n=4)
plt.show()

# %% [markdown]
# ## How many of the chain of thought's entities the detector finds
#
# A box of the chain of thought counts as found when a detection of the same category, at or
# above the score threshold, overlaps it enough (an IoU of at least `IOU_MATCH`). Within a
# frame and category the detections are taken in descending score order, each matching the
# still unmatched box it overlaps most: one detection finds at most one box, so ten
# detections of one person do not find ten people. Only frames the detector could decode
# count.

# %%
#@save
#: A ground-truth box counts as found by a detection of its category overlapping it this much.
IOU_MATCH = 0.5


def _by_frame_and_label(long: pd.DataFrame) -> dict[tuple[tuple[str, int], str], np.ndarray]:
    """(frame, label) -> array of rows (score, x1, y1, x2, y2)."""
    return {
        ((sid, int(frame)), label): group[["score", "x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
        for (sid, frame, label), group in long.groupby(["story_id", "frame", "label"], sort=False)
    }


def _matched(detections: np.ndarray, boxes: np.ndarray, iou: float) -> int:
    """How many ``boxes`` (x1, y1, x2, y2) the ``detections`` (score, x1, y1, x2, y2) find,
    each detection in descending score order taking the free box it overlaps most."""
    return int(_found_boxes(detections, boxes, iou).sum())


def _found_boxes(detections: np.ndarray, boxes: np.ndarray, iou: float) -> np.ndarray:
    """Which of ``boxes`` the ``detections`` find (a boolean per box), matched as :func:`_matched` counts them."""
    import torch
    from torchvision.ops import box_iou

    if not len(detections) or not len(boxes):
        return np.zeros(len(boxes), dtype=bool)
    overlaps = box_iou(torch.tensor(detections[:, 1:]), torch.tensor(boxes))  # copies: pandas arrays are read-only
    free = torch.ones(len(boxes), dtype=torch.bool)
    for row in np.argsort(-detections[:, 0], kind="stable"):
        candidates = overlaps[row].masked_fill(~free, -1.0)
        best = int(candidates.argmax())
        if candidates[best] >= iou:
            free[best] = False
    return (~free).numpy()


def detection_recall(predicted: pd.DataFrame, ground_truth: pd.DataFrame, *, threshold: float,
                     iou: float = IOU_MATCH) -> pd.DataFrame:
    """Per COCO category: ``ground_truth`` boxes, ``predicted`` detections at the threshold,
    ``found`` and ``recall``, most frequent first, then an ``"all categories"`` row."""
    decoded = predicted[predicted["status"] == "ok"]
    pred = _by_frame_and_label(detections_long(decoded, threshold))
    truth = _by_frame_and_label(detections_long(ground_truth.merge(decoded[["story_id", "frame"]])))
    columns = ["ground_truth", "predicted", "found"]
    counts = pd.DataFrame(0, index=sorted({label for _, label in (*truth, *pred)}), columns=columns)
    for (frame_key, label), gt_boxes in truth.items():
        counts.loc[label, "ground_truth"] += len(gt_boxes)
        counts.loc[label, "found"] += _matched(pred.get((frame_key, label), np.zeros((0, 5))), gt_boxes[:, 1:], iou)
    for (_, label), boxes in pred.items():
        counts.loc[label, "predicted"] += len(boxes)
    total = pd.DataFrame([counts.sum()], index=["all categories"])
    table = counts[counts["ground_truth"] > 0].sort_values("ground_truth", ascending=False, kind="stable")
    table = pd.concat([table, total]).rename_axis("category").reset_index().astype(dict.fromkeys(columns, int))
    table["recall"] = table["found"] / table["ground_truth"].where(table["ground_truth"] > 0)
    return table


# %% [markdown]
# Recall per category over the train and validation frames, most frequent categories first:

# %%
recall = detection_recall(dev_run_frames, dev_truth, threshold=threshold)
display(Markdown(f"A box counts as found at an IoU of at least {IOU_MATCH}. Over all categories the detector "
                 f"finds {recall['recall'].iloc[-1]:.1%} of the {recall['ground_truth'].iloc[-1]:,} boxes. The boxes "
                 f"were drawn by COCO detectors ({ANNOTATION_DETECTORS}), not by people: this \"recall\" is "
                 "agreement between detectors, not recall against ground truth."))
display(recall.style.format({"recall": "{:.1%}"}, na_rep="n/a").hide(axis="index"))

# %% [markdown]
# ## Input size and proposals: recall against time
#
# torchvision resizes every image so that its shorter side reaches `min_size` before the
# network sees it (the longer side is capped), while StoryReasoning frames are small. Larger
# inputs help a detector with small objects and cost time roughly in proportion to the
# pixels. The second knob is how many region proposals, the most confident after the RPN's
# NMS, go on to the box head: its two fully connected layers run once per proposal, so at
# torchvision's 1000 they cost a CPU about as much as the backbone, while Ren et al. (2015)
# test Faster R-CNN with 300. The sweep runs the same frames (the first of the train and
# validation splits) at each size of the profile's `min_size_sweep` with the profile's
# proposals, and at the profile's size with each count of its `proposals_sweep`, each setting
# an ordinary cached detection run (a setting already computed costs nothing, and its time is
# the one measured when it was computed, on whatever device computed it). The profile's
# settings were chosen for their cost; this table is where real data confirm them, or call
# for more: when recall at the profile's settings falls `RECALL_SHORTFALL` or more below the
# best setting's, the chapter says so. Recall here is, as above, agreement with the detectors
# that drew the chain of thought's boxes (`ANNOTATION_DETECTORS`), not recall of what the
# frames show.

# %%
#@save
#: How far (absolute) recall at the profile's settings may fall below the sweep's best
#: before chapter 02 says the choice should be revisited.
RECALL_SHORTFALL = 0.05


def sweep_settings(min_size: int, proposals: int, *, sizes: Sequence[int],
                   proposal_counts: Sequence[int]) -> list[tuple[int, int]]:
    """The ``(min_size, proposals)`` settings the sweep measures: every size at the profile's
    proposals, then every other proposal count at the profile's size."""
    settings = [(int(size), int(proposals)) for size in sizes]
    settings += [(int(min_size), int(n)) for n in proposal_counts if (int(min_size), int(n)) not in settings]
    return settings


def detector_sweep(detector: Detector, frames: Mapping[tuple[str, int], bytes], ground_truth: pd.DataFrame,
                   cache_path: Any, *, settings: Sequence[tuple[int, int]], threshold: float,
                   batch_size: int) -> pd.DataFrame:
    """Recall of the ground-truth boxes and time per frame at each ``(min_size, proposals)`` of
    ``settings``: ``min_size``, ``proposals``, ``input_height`` (mean height after torchvision's
    resize), ``frames``, ``computed_now``, ``seconds_per_frame``, ``recall``."""
    rows = []
    max_size = int(detector.model.transform.max_size)
    for size, proposals in settings:
        run = detect_frames(detector, frames, cache_path, min_size=size, proposals=proposals, batch_size=batch_size)
        ok = run.frames[run.frames["status"] == "ok"]
        scale = np.minimum(size / ok[["width", "height"]].min(axis=1), max_size / ok[["width", "height"]].max(axis=1))
        recall = detection_recall(run.frames, ground_truth, threshold=threshold)
        rows.append({"min_size": int(size), "proposals": int(proposals),
                     "input_height": float((ok["height"] * scale).mean()), "frames": len(ok),
                     "computed_now": run.forward_passes, "seconds_per_frame": float(ok["seconds"].mean()),
                     "recall": float(recall["recall"].iloc[-1])})
    return pd.DataFrame(rows)


def sweep_note(sweep: pd.DataFrame, min_size: int, proposals: int, *, profile: str,
               shortfall: float = RECALL_SHORTFALL) -> str:
    """A Markdown sentence on whether the profile's ``min_size`` and ``proposals`` hold up in
    ``sweep``: a bold note when recall there falls ``shortfall`` or more below the best setting's,
    or when the sweep lacks them."""
    measured = sweep.dropna(subset=["recall"])
    if measured.empty:
        return "The sweep could not measure recall, so it cannot confirm the profile's detector settings."
    best = measured.loc[measured["recall"].idxmax()]
    chosen = measured[(measured["min_size"] == min_size) & (measured["proposals"] == proposals)]
    if chosen.empty:
        return (f"**Note:** the sweep does not measure this profile's setting (min_size {min_size}, {proposals} "
                f"proposals); add them to `detector.min_size_sweep` and `detector.proposals_sweep` in "
                f"`profiles/{profile}.yaml` to confirm the choice.")
    recall, gap = float(chosen["recall"].iloc[0]), float(best["recall"]) - float(chosen["recall"].iloc[0])
    cost = float(best["seconds_per_frame"]) / max(float(chosen["seconds_per_frame"].iloc[0]), 1e-9)
    where = f"min_size {int(best['min_size'])} with {int(best['proposals'])} proposals"
    if gap >= shortfall:
        knobs = " and ".join(f"`detector.{key}: {int(best[key])}`" for key, value in
                             (("min_size", min_size), ("proposals", proposals)) if int(best[key]) != value)
        return (f"**Note: at this profile's min_size {min_size} with {proposals} proposals recall is {recall:.1%}, "
                f"{gap:.1%} below the best, {float(best['recall']):.1%} at {where}** (which costs {cost:.1f}x the "
                f"time per frame here). The settings were chosen for their cost; on these frames others find "
                f"clearly more, so consider {knobs} in `profiles/{profile}.yaml`.")
    return (f"At this profile's min_size {min_size} with {proposals} proposals recall is {recall:.1%}, within "
            f"{shortfall:.0%} of the best ({float(best['recall']):.1%} at {where}): the sweep confirms the choice.")


# %%
#@save
# extra code: the sweep as a figure
def plot_detector_sweep(sweep: pd.DataFrame) -> "matplotlib.figure.Figure":
    """Recall and seconds per frame against ``min_size``, one line per proposal count
    (:func:`detector_sweep`'s table)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    for proposals, rows in sweep.groupby("proposals"):
        style = dict(marker="o", label=f"{proposals} proposals")
        left.plot(rows["min_size"], rows["recall"], **style)
        right.plot(rows["min_size"], rows["seconds_per_frame"], **style)
    left.set(xlabel="min_size (pixels)", ylabel=f"recall at IoU >= {IOU_MATCH}", ylim=(0, 1), title="Recall")
    right.set(xlabel="min_size (pixels)", ylabel="seconds per frame", ylim=(0, None), title="Time")
    for ax in (left, right):
        ax.set_xticks(sorted(sweep["min_size"].unique()))
        ax.legend()
    fig.tight_layout()
    return fig


# %%
dev_frames = sorted((key, data) for key, data in frames.items() if str(key[0]) in dev_stories)
sweep_frames = dict(dev_frames[: cfg["sweep_frames"]])
settings = sweep_settings(cfg["min_size"], cfg["proposals"], sizes=cfg["min_size_sweep"],
                          proposal_counts=cfg["proposals_sweep"])
sweep = detector_sweep(detector, sweep_frames, dev_truth, ctx.paths.cache / det.CACHE_FILE, settings=settings,
                       threshold=threshold, batch_size=cfg["batch_size"])
display(sweep.style.format({"input_height": "{:.0f}", "seconds_per_frame": "{:.2f}", "recall": "{:.1%}"})
        .hide(axis="index"))
plot_detector_sweep(sweep)
plt.show()
if sweep["recall"].notna().any():
    best = sweep.loc[sweep["recall"].idxmax()]
    display(Markdown(f"On these {len(sweep_frames)} frames the best recall, {best['recall']:.1%}, comes at min_size "
                     f"{int(best['min_size'])} with {int(best['proposals'])} proposals for "
                     f"{best['seconds_per_frame']:.2f} s per frame; this profile runs at min_size {cfg['min_size']} "
                     f"with {cfg['proposals']} proposals."))
    display(Markdown(sweep_note(sweep, cfg["min_size"], cfg["proposals"], profile=ctx.profile)))
else:
    display(Markdown(f"These {len(sweep_frames)} frames hold no box of a COCO category: recall cannot be measured."))

# %% [markdown]
# ## The things a text names
#
# One reader decides which COCO things a text names, for the object evidence here and for
# the relations of chapter 04 (chapter 01's edits use the lexicon too). It reads the words
# of a text left to right and returns each named thing with its span and category:
#
# - each word goes through `to_coco`; a pronoun that stands for someone (`PERSON_PRONOUNS`:
#   he, she, they, someone, ...) names a person, since in these stories they stand for
#   characters, and a character is a person unless described otherwise;
# - two adjacent words can name one thing: the pair wins when it names something neither
#   word names alone ("hot dog", "traffic light") or when the second word only completes the
#   first ("teddy bear");
# - a word right before a noun is a modifier, not a thing: "car door" is a door (COCO has
#   none), "dog bowl" a bowl, and "his dog" a dog (a possessive pronoun names no one by itself);
# - words in the `skip` spans (a segment's tagged mentions, read on their own) are left out,
#   and words either side of them never pair up.

# %%
#@save
#: Pronouns that stand for a person (a character, in these stories): a text using one names a person.
PERSON_PRONOUNS: frozenset[str] = frozenset(
    "he she him her his hers himself herself they them someone somebody".split())

_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019-][A-Za-z0-9]+)*")


class Thing(NamedTuple):
    """A named thing of a plain text: characters ``start:end``, its words, its COCO category
    (None for a tagged mention that names none) and, for a ``<gdo>`` mention, its ids."""

    start: int
    end: int
    text: str
    category: str | None
    ids: tuple[str, ...] = ()


def _non_coco_noun(word: str) -> bool:
    """Whether ``word`` (or it without a plural -s) is a noun COCO lacks; not -es, which ends verbs too ("watches")."""
    word = word.lower()
    return word in NOT_COCO or (word.endswith("s") and word[:-1] in NOT_COCO)


def named_things(plain: str, skip: Sequence[tuple[int, int]] = ()) -> list[Thing]:
    """The COCO things and person pronouns ``plain`` names outside the ``skip`` spans, in text order."""
    words = [m for m in _WORD.finditer(plain) if not any(s < m.end() and m.start() < e for s, e in skip)]
    found: list[Thing] = []
    previous: re.Match[str] | None = None
    for word in words:
        text = word.group()
        category = to_coco(text.lower()) or ("person" if text.lower() in PERSON_PRONOUNS else None)
        if previous is not None and plain[previous.end() : word.start()] == " ":
            first = to_coco(previous.group().lower())
            pair = to_coco(f"{previous.group()} {text}".lower())
            first_found = bool(found) and found[-1].start == previous.start()
            if pair is not None and pair != category and (pair != first or category is not None):
                if first_found:
                    found.pop()
                found.append(Thing(previous.start(), word.end(), f"{previous.group()} {text}", pair))
                previous = None
                continue
            if first_found and pair != first and (category is not None or _non_coco_noun(text)):
                found.pop()  # a modifier of the next noun
        if category is not None:
            found.append(Thing(word.start(), word.end(), text, category))
        previous = word
    return found


def other_nouns(plain: str, skip: Sequence[tuple[int, int]] = ()) -> list[Thing]:
    """The nouns COCO lacks (``NOT_COCO``: wall, door, box) that ``plain`` names outside the
    ``skip`` spans, each a ``Thing`` without a category, in text order: what the open-vocabulary
    detector and the questions can still look for in a plain text."""
    return [Thing(m.start(), m.end(), m.group(), None) for m in _WORD.finditer(plain)
            if _non_coco_noun(m.group()) and not any(s < m.end() and m.start() < e for s, e in skip)]


# %%
for text in ["A man watches television while his dog sleeps on the couch.",
             "The hot dog sits in an orange light near a car door.",
             "They sit beside a teddy bear; she holds two cell phones."]:
    display(Markdown(f"*{text}* names " + ", ".join(f"`{t.text}` ({t.category})" for t in named_things(text))))

# %% [markdown]
# ## What each text needs, and the object score
#
# A text needs the COCO categories of the things it names. In a tagged segment (chapter 09
# reads the tags), a `<gdo>` mention is read through its own words first: a mention naming a
# COCO thing needs that thing, whatever its ids (so an edited mention needs what its new words
# name). A character mention whose words name nothing ("James", "him") needs what its
# chain-of-thought description says it is (a robot or a statue needs nothing); without a
# description, a person unless its words say otherwise ("the droid"). A mention of several
# characters needs each one's category. The rest of the segment, and all of a plain text,
# goes through `named_things`. The verifier and the fusion head read plain text, so the pairs
# are scored on their plain text too. The descriptions are the chain of thought's, which
# annotates the very frame an aligned pair is judged on: `needed_category_table` may read
# them (it describes the data), no feature of a pair does. Read from its tags for a feature
# (chapter 09), a character needs what its mention's own words say, a person by default.

# %%
#@save
def character_descriptions(cot: "ChainOfThought", frame: int | None = None) -> dict[str, str]:
    """Each character id's chain-of-thought description: its description in ``frame`` when
    the character has a row there, else its first description in frame order."""
    out: dict[str, str] = {}
    for number in sorted(cot.frames):
        for entity in cot.frames[number].characters:
            if entity.description and (entity.id not in out or number == frame):
                out[entity.id] = entity.description
    return out


def mention_categories(mention: "Mention", char_descriptions: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The COCO categories one tagged mention names: its words' category, else each ``char``
    id's (from its description, else from the mention's words), in id order, without repeats."""
    named = to_coco(mention.text)
    if named is not None:
        return (named,)
    descriptions = char_descriptions or {}
    categories = (char_category(descriptions.get(i, mention.text)) for i in mention.ids if i.startswith("char"))
    return tuple(dict.fromkeys(c for c in categories if c is not None))


def mention_category(mention: "Mention", char_descriptions: Mapping[str, str] | None = None) -> str | None:
    """The first of :func:`mention_categories` (what a highlight names), or None."""
    return next(iter(mention_categories(mention, char_descriptions)), None)


def needed_categories(segment: "Segment | str", char_descriptions: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The COCO categories a text (a parsed segment or a plain string) needs the frame to show, sorted."""
    if isinstance(segment, str):
        return tuple(sorted({t.category for t in named_things(" ".join(segment.split()))}))
    needed = {c for m in segment.mentions for c in mention_categories(m, char_descriptions)}
    needed.update(t.category for t in named_things(segment.plain, [(m.start, m.end) for m in segment.mentions]))
    return tuple(sorted(needed))


def needed_category_table(stories: Iterable["ParsedStory"]) -> pd.DataFrame:
    """One row per (``story_id``, ``frame``, ``category``) a frame segment needs; ``category``
    None for a segment that needs nothing."""
    rows = []
    for story in stories:
        for segment in story.segments:
            needed = needed_categories(segment, character_descriptions(story.cot, segment.frame)) or (None,)
            rows += [{"story_id": story.story_id, "frame": segment.frame, "category": c} for c in needed]
    return pd.DataFrame(rows, columns=["story_id", "frame", "category"])


# %% [markdown]
# The **object score** of a pair is the mean, over the categories the text needs, of the best
# detection score of that category in the frame at or above the threshold (zero when it is
# not detected): a confidence-weighted share of what the text needs that the frame shows.
#
# Every evidence is in one of three states, in its `*_state` column (here `object_state`):
#
# - **checked**: the text names something and the frame's detections were read: the score
#   is a measurement (zero means "named and not found");
# - **nothing to check**: the text names no COCO thing, so it gives no evidence either way;
# - **not computed**: the text names something but the evidence could not be computed (the
#   frame did not decode, so the detector never ran on it).
#
# The stored score is a placeholder, `UNINFORMATIVE_SCORE`, unless the state is "checked":
# never a pretend "half found" 0.5, and never read as a measurement. Chapter 05 gives the
# heads an unchecked score as a missing value, so "nothing to check" does not look like
# "checked and absent". `object_informative` is kept as the shorthand for "checked". The
# same score against the oracle's boxes (`object_score_oracle`) shows what the score would
# be if the real detector agreed with every annotated box (the oracle, with the reservations
# above).

# %%
#@save
#: The three states of an evidence (its ``*_state`` column): a measurement, a text that gives
#: nothing to look for, and an evidence that could not be computed (e.g. an undecodable frame).
CHECKED, NOTHING_TO_CHECK, NOT_COMPUTED = "checked", "nothing to check", "not computed"
EVIDENCE_STATES = (CHECKED, NOTHING_TO_CHECK, NOT_COMPUTED)
#: The stored score of an evidence whose state is not ``CHECKED``: a placeholder, not a measurement.
UNINFORMATIVE_SCORE = 0.0
#: The columns of the ``objects`` feature part, after ``pair_id``.
OBJECT_COLUMNS = ("object_score", "object_state", "object_informative", "objects_needed", "objects_found",
                  "objects_missing")


def object_evidence(needed: Sequence[str], detections: Sequence[Detection], threshold: float) -> dict[str, Any]:
    """The object score of a frame's detections against the categories a text needs, with
    ``object_state`` (:data:`CHECKED`, or :data:`NOTHING_TO_CHECK` when nothing is needed),
    ``object_informative`` (checked), ``objects_needed``, ``objects_found`` (the best detection
    of each found category) and ``objects_missing``."""
    needed = sorted(set(needed))
    best: dict[str, Detection] = {}
    for d in detections:
        if d.score >= threshold and d.label in needed and (d.label not in best or d.score > best[d.label].score):
            best[d.label] = d
    found = [{"category": c, "score": round(best[c].score, 5), "box": [round(v, 2) for v in best[c].box]}
             for c in needed if c in best]
    score = sum(best[c].score for c in best) / len(needed) if needed else UNINFORMATIVE_SCORE
    return {"object_score": float(score), "object_state": CHECKED if needed else NOTHING_TO_CHECK,
            "object_informative": bool(needed), "objects_needed": needed,
            "objects_found": found, "objects_missing": [c for c in needed if c not in best]}


def object_features(pairs: pd.DataFrame, detections: pd.DataFrame, *, threshold: float,
                    oracle: pd.DataFrame | None = None, read_tags: bool = False) -> pd.DataFrame:
    """The ``objects`` feature part: ``pair_id`` and :data:`OBJECT_COLUMNS` (lists as JSON), one row per pair.

    ``detections`` is a per-frame table covering the pairs' frames (``ValueError`` otherwise).
    Needs come from the pair's plain ``text``; with ``read_tags`` (chapter 09) from its
    ``tagged_text``, each character by its mention's own words (no chain of thought: it
    annotates the frame judged). With ``oracle`` (e.g. :func:`ground_truth_frames`), also
    ``object_score_oracle``, which is never an input of a head.
    """
    from tqdm.auto import tqdm

    from helpers.tags import parse_segment

    def per_frame(table: pd.DataFrame) -> dict[tuple[str, int], list[Detection]]:
        ok = table.loc[table["status"] == "ok", ["story_id", "frame", "detections"]]
        return {(str(s), int(f)): parse_detections(cell, threshold) for s, f, cell in ok.itertuples(index=False)}

    found_by_frame = per_frame(detections)
    frame_keys = set(zip(pairs["story_id"].astype(str), pairs["frame"].astype(int)))
    if missing := sorted(frame_keys - set(zip(detections["story_id"].astype(str), detections["frame"].astype(int)))):
        raise ValueError(f"the detections table lacks {len(missing)} frames of the pairs, e.g. {missing[:3]}")
    oracle_by_frame = per_frame(oracle) if oracle is not None else None
    rows = []
    columns = ["pair_id", "story_id", "frame", "text", "tagged_text", "source_frame"]
    for pair_id, story_id, frame, text, tagged, source_frame in tqdm(
        pairs[columns].itertuples(index=False), total=len(pairs), desc="object evidence", unit="pair"
    ):
        if read_tags and isinstance(tagged, str) and tagged:
            needed = needed_categories(parse_segment(tagged, int(source_frame)))
        else:
            needed = needed_categories(str(text))
        frame_key = (str(story_id), int(frame))
        if frame_key in found_by_frame or not needed:
            evidence = object_evidence(needed, found_by_frame.get(frame_key, []), threshold)
        else:  # the frame did not decode: nothing was looked at
            evidence = {"object_score": UNINFORMATIVE_SCORE, "object_state": NOT_COMPUTED, "object_informative": False,
                        "objects_needed": list(needed), "objects_found": [], "objects_missing": []}
        row = {"pair_id": pair_id, **{k: evidence[k] for k in OBJECT_COLUMNS}}
        for k in ("objects_needed", "objects_found", "objects_missing"):
            row[k] = json.dumps(row[k])
        if oracle_by_frame is not None:
            oracle_boxes = oracle_by_frame.get(frame_key, [])
            row["object_score_oracle"] = object_evidence(needed, oracle_boxes, threshold)["object_score"]
        rows.append(row)
    extra = ["object_score_oracle"] if oracle is not None else []
    return pd.DataFrame(rows, columns=["pair_id", *OBJECT_COLUMNS, *extra])


def state_table(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """How many train and validation pairs of ``table`` are in each state (:data:`EVIDENCE_STATES`)
    of the state ``column``, one row per split and kind of pair (positive or the negative's type)."""
    require_development(table, "state_table")
    kind = table["negative_type"].where(table["label"] == 0, "positive").rename("kind")
    counts = pd.crosstab([table["split"], kind], table[column].rename("state"))
    return counts.reindex(columns=list(EVIDENCE_STATES), fill_value=0)


# %%
objects = object_features(pairs, run.frames, threshold=threshold, oracle=truth)
scored = development(pairs[["pair_id", "label", "negative_type", "split"]]).merge(objects, on="pair_id")
display(Markdown(
    f"{scored['object_informative'].mean():.1%} of the train and validation pairs were checked; the others hold the "
    f"placeholder object_score = {UNINFORMATIVE_SCORE}. Pairs per state, by split and kind of pair (a frame that did "
    f"not decode is \"not computed\", never a silent zero):"
))
display(state_table(scored, "object_state"))
display(Markdown("Mean of each column by kind of pair:"))
display(scored.assign(kind=scored["negative_type"].where(scored["label"] == 0, "positive"))
        .groupby("kind")[["object_informative", "object_score", "object_score_oracle"]].mean()
        .style.format("{:.2f}"))

# %% [markdown]
# How the scores spread, positives against each kind of negative. An empirical CDF shows the
# point masses these scores have (many exact zeros) that a histogram would blur; a curve to
# the right of another means higher scores. Like every table here, the figure refuses rows
# outside the train and validation splits.

# %%
#@save
# extra code: score distributions by kind of pair
def _type_order(negative_types: Iterable[str], order: Sequence[str] = ()) -> list[str]:
    """The negative types present: those of ``order`` first, then the others as they first appear."""
    present = [t for t in dict.fromkeys(negative_types) if t]
    return [t for t in order if t in present] + [t for t in present if t not in order]


def plot_score_by_group(table: pd.DataFrame, score_col: str, ax: "matplotlib.axes.Axes | None" = None,
                        order: Sequence[str] = ()) -> "matplotlib.axes.Axes":
    """Empirical CDF of ``score_col`` for the positives and for each negative type (train and validation rows only)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    require_development(table, "plot_score_by_group")
    groups = np.where(table["label"] == 1, "positive", table["negative_type"].astype(str))
    hue_order = ["positive", *_type_order(table.loc[table["label"] == 0, "negative_type"].astype(str), order)]
    ax = ax if ax is not None else plt.figure(figsize=(6, 3.5)).gca()
    sns.ecdfplot(data=table.assign(group=groups), x=score_col, hue="group", hue_order=hue_order, ax=ax)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(score_col)
    ax.set_ylabel("share of pairs at or below")
    return ax


# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), sharey=True)
informative = scored[scored["object_informative"]]
plot_score_by_group(informative, "object_score", ax=axes[0]).set_title("Detector (informative pairs)")
plot_score_by_group(informative, "object_score_oracle", ax=axes[1]).set_title("Oracle (informative pairs)")
plt.show()

# %% [markdown]
# How well the object score alone tells positives from each kind of negative: the ROC-AUC of
# the positives against that type's negatives (0.5 is chance; below 0.5 the score ranks that
# type above the positives), then against all negatives. Chapters 03 and 04 measure their
# evidence the same way. It is an exploratory measure, so it refuses test rows. The negative
# types come in the order given, else in the order they first appear in the table.

# %%
#@save
def auc_by_negative_type(table: pd.DataFrame, score_col: str, order: Sequence[str] = ()) -> pd.DataFrame:
    """ROC-AUC of ``score_col`` (positives against each negative type's negatives, then
    ``"all negatives"``): ``negative_type``, ``positives``, ``negatives``, ``roc_auc`` (NaN when a side is empty)."""
    from sklearn.metrics import roc_auc_score

    require_development(table, "auc_by_negative_type")
    if table[score_col].isna().any():
        raise ValueError(f"{score_col} has {int(table[score_col].isna().sum())} missing values: cannot rank them")
    positives = table.loc[table["label"] == 1, score_col].to_numpy(dtype=float)
    negatives = table[table["label"] == 0]
    types = _type_order(negatives["negative_type"].astype(str), order)
    rows = []
    for name, scores in [*((t, negatives.loc[negatives["negative_type"] == t, score_col]) for t in types),
                         ("all negatives", negatives[score_col])]:
        scores = scores.to_numpy(dtype=float)
        auc = math.nan
        if len(positives) and len(scores):
            y = np.r_[np.ones(len(positives)), np.zeros(len(scores))]
            auc = float(roc_auc_score(y, np.r_[positives, scores]))
        rows.append({"negative_type": name, "positives": len(positives), "negatives": len(scores), "roc_auc": auc})
    return pd.DataFrame(rows)


# %% [markdown]
# Over all train and validation pairs (the uninformative ones included at their placeholder
# score) and over the informative ones only. The oracle's column replays how the negatives of
# the types in `ORACLE_REPLAYS` were made (the section on the oracle above says why): its AUC
# there measures the labelling rule, not headroom a better detector could reach. Those cells
# are greyed and the `oracle replays the label` column marks their rows; chapter 09 leaves
# those negatives out of the oracle's headroom.

# %%
auc = pd.concat({
    name: auc_by_negative_type(table, column).set_index("negative_type")["roc_auc"]
    for name, table, column in [("detector, all train+val pairs", scored, "object_score"),
                                ("detector, informative", informative, "object_score"),
                                ("oracle, informative", informative, "object_score_oracle")]
}, axis=1)
auc["oracle replays the label"] = auc.index.isin(list(ORACLE_REPLAYS))
replayed_cell = pd.DataFrame("", index=auc.index, columns=auc.columns)
replayed_cell.loc[auc["oracle replays the label"], "oracle, informative"] = "background-color: #e0e0e0; font-style: italic"
display(auc.style.format("{:.3f}", na_rep="n/a", subset=[c for c in auc.columns if c != "oracle replays the label"])
        .apply(lambda _: replayed_cell, axis=None))
replayed = [t for t in auc.index if t in ORACLE_REPLAYS]
oracle_positives = informative.loc[informative["label"] == 1, "object_score_oracle"]
display(Markdown(
    f"A score that ranks at random has an AUC of {0.5}. Against object swaps, the negative this evidence is "
    f"built for, the detector reaches an AUC of {auc.loc['object_swap', 'detector, informative']:.3f} on "
    f"informative pairs and the oracle "
    f"{auc.loc['object_swap', 'oracle, informative']:.3f}."
    if "object_swap" in auc.index else "This run has no object-swap negatives."
))
display(Markdown(
    (f"The oracle's cells on {', '.join(f'`{t}`' for t in replayed)} (greyed) replay the construction, not the frame: "
     + "; ".join(f"`{t}`: {ORACLE_REPLAYS[t]}" for t in replayed) + ". "
     f"It scores {(oracle_positives == 1.0).mean():.1%} of the {len(oracle_positives):,} informative aligned pairs "
     "at 1.0, the most it can give. Its boxes are themselves the output of COCO detectors "
     f"({ANNOTATION_DETECTORS}): even where it replays nothing, it is another detector, not the truth.")
    if replayed else "No negative type of this run is one the oracle replays."
))

# %% [markdown]
# ## Negatives that may be positives
#
# An object swap puts in a COCO category that the frame's annotations do not contain (its
# `change` says which: 'object "a cup" -> "a clock" (cup -> clock)'). The annotations can miss
# things, so the frame may show that object after all: then the "negative" is a positive. How
# often the detector finds the swapped-in category with high confidence (at least
# `LABEL_NOISE_SCORE`) estimates that label noise, per split (train and validation here;
# chapter 07 gives the test split's). A frame that did not decode finds nothing.

# %%
#@save
#: A detection at least this confident of a swapped-in category counts as the object being there.
LABEL_NOISE_SCORE = 0.7
_SWAPPED_CATEGORY = re.compile(r"\(([^()]*) -> ([^()]*)\)\s*$")


def swapped_category(change: str) -> str | None:
    """The COCO category an ``object_swap`` put in, read from the pair's ``change``; None for any other change."""
    match = _SWAPPED_CATEGORY.search(str(change)) if str(change).startswith("object ") else None
    return match.group(2).strip() if match else None


def hidden_positives(pairs: pd.DataFrame, frames: pd.DataFrame, *, high_score: float = LABEL_NOISE_SCORE
                     ) -> pd.DataFrame:
    """One row per ``object_swap`` negative: ``pair_id``, ``split``, the ``category`` put in, the
    detector's best ``score`` for it in the frame (0 when absent) and ``hidden`` (score >= ``high_score``)."""
    swaps = pairs[(pairs["label"] == 0) & (pairs["negative_type"] == "object_swap")]
    ok = frames[frames["status"] == "ok"]
    found = {(str(s), int(f)): parse_detections(cell, 0.0) for s, f, cell in
             ok[["story_id", "frame", "detections"]].itertuples(index=False)}
    rows = []
    columns = ["pair_id", "story_id", "frame", "split", "change"]
    for pair_id, story_id, frame, split, change in swaps[columns].itertuples(index=False):
        category = swapped_category(change)
        scores = [d.score for d in found.get((str(story_id), int(frame)), []) if d.label == category]
        best = max(scores, default=0.0)
        rows.append({"pair_id": pair_id, "split": split, "category": category, "score": best,
                     "hidden": best >= high_score})
    return pd.DataFrame(rows, columns=["pair_id", "split", "category", "score", "hidden"])


# %%
hidden = hidden_positives(development(pairs), run.frames)
if len(hidden):
    display(hidden.groupby("split").agg(object_swaps=("hidden", "size"), detected_confidently=("hidden", "sum"),
                                        share=("hidden", "mean")).style.format({"share": "{:.1%}"}))
    display(Markdown(f"A detection scoring at least {LABEL_NOISE_SCORE} counts. Most often put in and found: "
                     + (", ".join(f"`{c}` ({n})" for c, n in hidden[hidden["hidden"]]["category"].value_counts()
                                  .head(5).items()) or "none") + "."))
else:
    display(Markdown("This run has no object swaps in train and validation."))

# %% [markdown]
# ## The evidence, saved
#
# One row per pair goes to the feature table the fusion chapters read; the lists of needed,
# found (with their boxes, for the explanations in the dashboards) and missing categories
# travel along as JSON. The oracle's score stays here: the ablations recompute it.

# %%
path = write_part(ctx.paths, "objects", objects[["pair_id", *OBJECT_COLUMNS]])
display(Markdown(f"Wrote {len(objects):,} rows to `{path.relative_to(ctx.paths.root.parent)}`."))
display(objects.loc[objects["pair_id"].isin(scored["pair_id"]), ["pair_id", *OBJECT_COLUMNS]].head())  # train, val

# %% [markdown]
# ## Beyond COCO: open-vocabulary detection
#
# The COCO detector can only check what COCO has a category for, and most of what a story
# segment names is not among COCO's 80 categories: walls, doors, shelves, cardboard boxes, a
# blue blanket. The count below, over the train and validation segments, says how much of what
# the tags name the object score above cannot check at all.

# %%
dev_segments = [(story, segment) for story in stories if story.story_id in dev_stories for segment in story.segments]
tagged_kinds = pd.DataFrame([{"kind": m.kind, "coco": mention_category(m) is not None}
                             for _, segment in dev_segments for m in segment.mentions if m.kind in ("obj", "bg")],
                            columns=["kind", "coco"])
display(Markdown(
    "In the train and validation segments, " + "; ".join(
        f"{int(group['coco'].sum()):,} of the {len(group):,} `{kind}` mentions name a COCO category"
        for kind, group in tagged_kinds.groupby("kind")) + "."
    if len(tagged_kinds) else "The train and validation segments tag no object or background mention."
))

# %% [markdown]
# An open-vocabulary detector reads the query as text. OWL-ViT (Minderer et al., 2022) puts
# a CLIP-style text encoder beside a vision transformer whose every output token predicts a box,
# and scores each box against each text query; T2I-CompBench and GenEval check the objects of
# generated images the same way. Here it is asked for the text's own entity phrases, so "a blue
# blanket" is looked for as a blue blanket, not dropped for lack of a category.
#
# **Which phrases a text names.** In a tagged segment every `<gdo>` mention is an entity: an
# object or background mention is asked for by its own words, lower-cased and without leading
# determiners or possessives ("his blue blanket" is "blue blanket"); a character mention that
# is a common noun phrase ("a man in a coat") by its words too, while a name or pronoun
# ("James", "them") becomes "person". `entity_phrases` could take the head of a
# chain-of-thought description instead (a robot, a dog), but the features never give it one:
# that description annotates the frame an aligned pair is judged on, and the verifier has
# none. Plain text, what the verifier reads, has no tags: `named_things` finds its COCO things
# and person pronouns (a pronoun is a "person"), and the nouns the lexicon lists as `NOT_COCO`
# are kept too (`other_nouns`). A name in plain text is not recognised: the plain reading finds
# what the lexicon knows, no more.

# %%
#@save
#: Words that stand for a character without describing it: a mention made only of them is asked for as "person".
_PRONOUNS: frozenset[str] = PERSON_PRONOUNS | frozenset(
    "i me my mine myself we us our ours ourselves you your yours yourself yourselves it its itself themselves "
    "everyone everybody anyone anybody nobody".split())


class Phrase(NamedTuple):
    """A phrase a text names, as the open-vocabulary detector is asked for it, with the entity
    kind of its mention ("char", "obj", "bg", ...; None when read from plain text)."""

    text: str
    kind: str | None = None


def _words(text: str) -> list[str]:
    """Lower-cased tokens of ``text`` without leading determiners and possessors."""
    tokens = _TOKEN.findall(text.lower().replace("\u2019", "'"))
    while tokens and (tokens[0] in _DETERMINERS or _is_possessor(tokens[0])):
        tokens = tokens[1:]
    return tokens


def _phrase(tokens: Sequence[str]) -> str:
    """Tokens joined by single spaces, punctuation dropped."""
    return " ".join(t for t in tokens if t not in (",", ";"))


def _character_phrases(mention: "Mention", char_descriptions: Mapping[str, str]) -> list[str]:
    """What a ``char`` mention is asked for: its words when they are a common noun phrase the
    lexicon knows ("a man", "the driver"), else "person" for each character, or the head of
    its description when that says it is not a person ("golden humanoid robot")."""
    tokens = _words(mention.text)
    words = [t for t in tokens if t not in (",", ";")]
    if words and not set(words) <= _PRONOUNS and _head(tokens) is not None:
        return [_phrase(tokens)]
    phrases = []
    for entity_id in [i for i in mention.ids if i.startswith("char")] or [""]:
        description = char_descriptions.get(entity_id, "")
        if description and char_category(description) != "person":
            phrases.append(_phrase(_head_chunk(_words(description))[0]) or "person")
        else:
            phrases.append("person")
    return phrases


def entity_phrases(text: "Segment | str", char_descriptions: Mapping[str, str] | None = None) -> list[Phrase]:
    """The phrases a text names, each once, in text order: from a parsed segment's ``<gdo>``
    mentions (with their kind), or from a plain string's named things and ``NOT_COCO`` nouns."""
    found: list[Phrase] = []
    if isinstance(text, str):
        plain = " ".join(text.split())
        spans = [(t.start, "person" if t.text.lower() in PERSON_PRONOUNS else t.text.lower())
                 for t in named_things(plain)]
        spans += [(t.start, t.text.lower()) for t in other_nouns(plain)]
        found = [Phrase(p) for _, p in sorted(spans)]
    else:
        descriptions = char_descriptions or {}
        for mention in text.mentions:
            phrases = (_character_phrases(mention, descriptions) if mention.kind == "char"
                       else [_phrase(_words(mention.text))])
            found += [Phrase(p, mention.kind) for p in phrases if p]
    first: dict[str, Phrase] = {}
    for phrase in found:
        first.setdefault(phrase.text, phrase)
    return list(first.values())


# %%
from helpers.tags import parse_segment

example = parse_segment("<gdo char1>James</gdo> <gda char1>drops</gda> <gdo obj5>his blue blanket</gdo> by "
                        "<gdo bg2>the elevator doors</gdo>; <gdo char2>a man in a grey coat</gdo> watches "
                        "<gdo char1 char3>them</gdo>.", 1)
plain_example = "He drops his blue blanket by the elevator doors while a man watches the TV."
display(Markdown(
    f"The tagged segment *{example.plain}* names " + ", ".join(f"`{p.text}` ({p.kind})" for p in entity_phrases(example))
    + "; read as plain text, " + ", ".join(f"`{p.text}`" for p in entity_phrases(example.plain))
    + f". The plain text *{plain_example}* names " + ", ".join(f"`{p.text}`" for p in entity_phrases(plain_example))
    + "."
))

# %% [markdown]
# **The score.** OWL-ViT gives, for each phrase, its best box in the frame and that box's
# score (a sigmoid probability). A phrase is found when that score reaches the profile's
# `openvocab.score_threshold`; the **open-vocabulary score** of a pair mirrors the object
# score: the sum of the best scores of the phrases found, divided by the number of phrases
# the text names (a missing phrase counts zero). Its state, `openvocab_state`, is one of the
# object evidence's three: a text that names nothing is "nothing to check", a pair whose
# frame did not decode "not computed", both with the same placeholder score. Found phrases
# keep their box, missing ones their best score, for the explanations.

# %%
#@save
#: The columns of the ``openvocab`` feature part, after ``pair_id``.
OPENVOCAB_COLUMNS = ("openvocab_score", "openvocab_state", "openvocab_informative", "openvocab_phrases",
                     "openvocab_found", "openvocab_missing")


def openvocab_evidence(phrases: Sequence[str], found: Mapping[str, tuple[float, Sequence[float] | None]],
                       threshold: float) -> dict[str, Any]:
    """The open-vocabulary score of a frame for the ``phrases`` a text names, from ``found``
    (phrase -> the detector's best score and box in the frame), with ``openvocab_state`` (as
    :func:`object_evidence`), ``openvocab_informative`` (checked),
    ``openvocab_phrases``, ``openvocab_found`` ({phrase, score, box}) and ``openvocab_missing`` ({phrase, score})."""
    phrases = list(dict.fromkeys(phrases))
    answered = {p: found[p] for p in phrases if p in found and math.isfinite(float(found[p][0]))}
    best = {p: hit for p, hit in answered.items() if float(hit[0]) >= threshold and hit[1] is not None}
    hits = [{"phrase": p, "score": round(float(best[p][0]), 5), "box": [round(float(v), 2) for v in best[p][1]]}
            for p in phrases if p in best]
    misses = [{"phrase": p, "score": round(float(answered[p][0]), 5) if p in answered else None}
              for p in phrases if p not in best]
    score = sum(float(best[p][0]) for p in best) / len(phrases) if phrases else UNINFORMATIVE_SCORE
    return {"openvocab_score": float(score), "openvocab_state": CHECKED if phrases else NOTHING_TO_CHECK,
            "openvocab_informative": bool(phrases), "openvocab_phrases": phrases,
            "openvocab_found": hits, "openvocab_missing": misses}


def pair_text(text: str, tagged: Any, frame: int) -> "Segment | str":
    """What a pair's evidence reads beyond the study's: its ``tagged`` text parsed as the segment
    of ``frame`` when it holds a grounding tag (``<gdo ...>`` and the like), else its plain
    ``text`` (the verifier passes plain text as both)."""
    from helpers.tags import parse_segment

    if isinstance(tagged, str) and re.search(r"<\s*/?\s*gd[a-z]", tagged, re.IGNORECASE):
        return parse_segment(tagged, int(frame))
    return str(text)


def openvocab_features(owl: "OwlVit", pairs: pd.DataFrame, frames: Mapping[tuple[str, int], bytes], *,
                       threshold: float, cache_path: Any, batch_size: int,
                       extra_queries: Mapping[tuple[str, int], Sequence[str]] | None = None) -> pd.DataFrame:
    """The ``openvocab`` feature part: ``pair_id`` and :data:`OPENVOCAB_COLUMNS` (lists as JSON), one row per pair.

    Phrases come from each pair's ``tagged_text`` (a character by its mention's own words,
    else "person": no chain of thought, which annotates the frame judged), or from its plain
    ``text`` when the tagged text holds no tag. Every frame runs through OWL-ViT once for all
    the phrases of its pairs and its ``extra_queries`` (cached in ``cache_path``: see
    :func:`helpers.owlvit.detect_phrases`). ``attrs["frames_encoded"]`` says how many frames ran now.
    """
    from helpers.owlvit import detect_phrases

    columns = ["pair_id", "story_id", "frame", "text", "tagged_text", "source_frame"]
    phrases_of, queries = [], {}
    for pair_id, story_id, frame, text, tagged, source_frame in pairs[columns].itertuples(index=False):
        phrases = [" ".join(p.text.split()) for p in entity_phrases(pair_text(text, tagged, int(source_frame)))]
        phrases_of.append((pair_id, (str(story_id), int(frame)), phrases))
        queries.setdefault((str(story_id), int(frame)), []).extend(phrases)
    for key, extra in (extra_queries or {}).items():
        queries.setdefault((str(key[0]), int(key[1])), []).extend(extra)
    table, encoded = detect_phrases(owl, frames, queries, cache_path, batch_size=batch_size)
    ok = table[table["status"] == "ok"]
    found: dict[tuple[str, int], dict[str, tuple[float, Any]]] = {}
    for story_id, frame, phrase, score, box in ok[["story_id", "frame", "phrase", "score", "box"]].itertuples(
            index=False):
        found.setdefault((story_id, frame), {})[phrase] = (score, box)
    rows = []
    for pair_id, key, phrases in phrases_of:
        if key in found or not phrases:
            evidence = openvocab_evidence(phrases, found.get(key, {}), threshold)
        else:  # the frame did not decode
            evidence = {"openvocab_score": UNINFORMATIVE_SCORE, "openvocab_state": NOT_COMPUTED,
                        "openvocab_informative": False, "openvocab_phrases": list(dict.fromkeys(phrases)),
                        "openvocab_found": [],
                        "openvocab_missing": []}
        row = {"pair_id": pair_id, **{k: evidence[k] for k in OPENVOCAB_COLUMNS}}
        for k in ("openvocab_phrases", "openvocab_found", "openvocab_missing"):
            row[k] = json.dumps(row[k])
        rows.append(row)
    out = pd.DataFrame(rows, columns=["pair_id", *OPENVOCAB_COLUMNS])
    out.attrs["frames_encoded"] = encoded
    return out


# %% [markdown]
# ### How many of the chain of thought's entities each detector finds
#
# The chain of thought gives every entity of a frame a description and a box, whether COCO
# can name it or not; `cot_entities` lists them by kind (`char` characters, `obj` objects,
# `bg` background elements). OWL-ViT is asked for each entity's description: the entity
# counts as found when the description's best box scores at least the threshold and overlaps
# the entity's box with an IoU of at least `IOU_MATCH`. The COCO detector can only look for an
# entity whose description maps to a COCO category (the lexicon's `char_category` for a
# character, `to_coco` otherwise); the table gives that coverage per kind, and the detector's
# recall both over those entities and over all of them, an entity COCO cannot name counting as
# not found. Only train and validation frames that both detectors decoded count. The boxes
# were drawn by COCO detectors (`ANNOTATION_DETECTORS`): both recalls are agreement with them,
# and OWL-ViT, no COCO detector, is measured against what COCO detectors chose to box.

# %%
#@save
#: The entity kinds the chain of thought gives boxes to, as the recall reports them.
RECALL_KINDS = ("char", "obj", "bg")


def description_query(description: str) -> str:
    """A chain-of-thought description as an open-vocabulary query: whitespace normalised, final full stop dropped."""
    return " ".join(description.split()).rstrip(".").strip()


def cot_entities(stories: Iterable["ParsedStory"], frames: set[tuple[str, int]] | None = None) -> pd.DataFrame:
    """One row per chain-of-thought entity of kind ``char``/``obj``/``bg`` with a box (in
    ``frames`` when given): ``story_id``, ``frame``, ``kind``, ``entity_id``, ``phrase`` (its
    :func:`description_query`), ``category`` (its COCO category, or None) and ``x1``..``y2``."""
    rows = []
    for story in stories:
        for number, annotation in sorted(story.cot.frames.items()):
            if frames is not None and (story.story_id, int(number)) not in frames:
                continue
            for entity in (*annotation.characters, *annotation.objects):
                if entity.kind not in RECALL_KINDS or entity.box is None or not description_query(entity.description):
                    continue
                category = (char_category if entity.kind == "char" else to_coco)(entity.description)
                rows.append({"story_id": story.story_id, "frame": int(number), "kind": entity.kind,
                             "entity_id": entity.id, "phrase": description_query(entity.description),
                             "category": category, **dict(zip(("x1", "y1", "x2", "y2"), map(float, entity.box)))})
    return pd.DataFrame(rows, columns=["story_id", "frame", "kind", "entity_id", "phrase", "category",
                                       "x1", "y1", "x2", "y2"])


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes (torchvision's ``box_iou``; 0 when both are empty)."""
    import torch
    from torchvision.ops import box_iou

    value = float(box_iou(torch.tensor([list(a)], dtype=torch.float64), torch.tensor([list(b)], dtype=torch.float64)))
    return value if value == value else 0.0  # two empty boxes: 0 / 0


def entity_recall(entities: pd.DataFrame, openvocab: pd.DataFrame, detections: pd.DataFrame, *,
                  threshold: float, detector_threshold: float, iou: float = IOU_MATCH) -> pd.DataFrame:
    """Both detectors' recall of the ``entities`` (:func:`cot_entities`) per kind, then over all kinds.

    ``openvocab`` is :func:`helpers.owlvit.detect_phrases`' table for the entities' phrases,
    ``detections`` the COCO detector's per-frame table. Only frames both decoded count. Columns:
    ``kind``, ``entities``, ``owlvit_found``, ``owlvit_recall``, ``coco_nameable``,
    ``coco_coverage``, ``frcnn_found``, ``frcnn_recall_nameable`` (over the nameable entities)
    and ``frcnn_recall`` (over all: an entity COCO cannot name is not found).
    """
    owl_ok = openvocab[openvocab["status"] == "ok"]
    best = {(str(s), int(f), p): (float(score), box)
            for s, f, p, score, box in owl_ok[["story_id", "frame", "phrase", "score", "box"]].itertuples(index=False)}
    decoded = detections[detections["status"] == "ok"]
    coco = {(str(s), int(f)): parse_detections(cell, detector_threshold)
            for s, f, cell in decoded[["story_id", "frame", "detections"]].itertuples(index=False)}
    keys = list(zip(entities["story_id"].astype(str), entities["frame"].astype(int)))
    both = set(coco) & {(s, f) for s, f, _ in best}
    table = entities[[k in both for k in keys]].reset_index(drop=True)
    boxes = table[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
    owl_found = []
    for (story_id, frame, phrase), box in zip(table[["story_id", "frame", "phrase"]].itertuples(index=False), boxes):
        score, found_box = best.get((str(story_id), int(frame), phrase), (0.0, None))
        owl_found.append(found_box is not None and score >= threshold and _iou(found_box, box) >= iou)
    coco_found = np.zeros(len(table), dtype=bool)
    nameable = table["category"].notna().to_numpy()
    for (story_id, frame, category), rows in table[nameable].groupby(["story_id", "frame", "category"]).groups.items():
        found = [d for d in coco[(str(story_id), int(frame))] if d.label == category]
        scored = np.array([[d.score, *d.box] for d in found], dtype=np.float64).reshape(-1, 5)
        coco_found[np.asarray(rows)] = _found_boxes(scored, boxes[np.asarray(rows)], iou)
    table = table.assign(owlvit_found=owl_found, frcnn_found=coco_found, coco_nameable=nameable)
    out = []
    for kind, group in [*((k, table[table["kind"] == k]) for k in RECALL_KINDS), ("all kinds", table)]:
        n, named = len(group), int(group["coco_nameable"].sum())
        out.append({"kind": kind, "entities": n, "owlvit_found": int(group["owlvit_found"].sum()),
                    "owlvit_recall": group["owlvit_found"].mean() if n else math.nan, "coco_nameable": named,
                    "coco_coverage": named / n if n else math.nan, "frcnn_found": int(group["frcnn_found"].sum()),
                    "frcnn_recall_nameable": group["frcnn_found"].sum() / named if named else math.nan,
                    "frcnn_recall": group["frcnn_found"].mean() if n else math.nan})
    return pd.DataFrame(out)


# %%
#@save
# extra code: the recall by kind as a figure
def plot_entity_recall(recall: pd.DataFrame) -> "matplotlib.axes.Axes":
    """Bars of :func:`entity_recall`'s recalls per entity kind: OWL-ViT and Faster R-CNN over
    every description, and Faster R-CNN over the descriptions COCO can name."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    names = {"owlvit_recall": "OWL-ViT, every description", "frcnn_recall": "Faster R-CNN, every description",
             "frcnn_recall_nameable": "Faster R-CNN, COCO-nameable only"}
    long = recall.melt(id_vars="kind", value_vars=list(names), var_name="detector", value_name="recall")
    ax = plt.figure(figsize=(7, 3.2)).gca()
    sns.barplot(data=long.assign(detector=long["detector"].map(names)), x="kind", y="recall", hue="detector", ax=ax)
    ax.set(ylim=(0, 1), xlabel="entity kind", ylabel=f"recall at IoU >= {IOU_MATCH}")
    ax.legend(fontsize=8, loc="upper right")
    return ax


# %% [markdown]
# ### Running it
#
# One large model at a time: the Faster R-CNN work of this chapter is done, so its network is
# freed before OWL-ViT is loaded (from the profile's `openvocab.weights`, like the other
# models: a Hub id, a saved folder, or random weights in the smoke profile). Every pair is
# scored; each frame goes through OWL-ViT once, for the phrases of all its pairs together with,
# in the train and validation frames, the chain of thought's descriptions of its entities,
# which the recall below asks for. Detections are cached per frame and phrase, so a rerun, or a
# negative that shares its phrases with its positive, costs nothing.

# %%
import gc
import time

from helpers.features import drop_part

ov_cfg = ctx.cfg["openvocab"]
openvocab_on = bool(ov_cfg["enabled"])
ov_threshold = float(ov_cfg["score_threshold"])
ov_cache = ctx.paths.cache / "owlvit"
if openvocab_on:
    import torch

    from helpers.owlvit import OWLVIT, detect_phrases
    from helpers.weights import load_model

    detector = None  # frees the Faster R-CNN network: its detections are cached
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    owl = load_model(OWLVIT, ov_cfg["weights"], models_dir=ctx.paths.models, seed=ctx.cfg["seed"], device=ctx.device)
    dev_entities = cot_entities([s for s in stories if s.story_id in dev_stories], frames=set(frames))
    description_queries = dev_entities.groupby(["story_id", "frame"])["phrase"].agg(list).to_dict()
    started = time.perf_counter()
    openvocab = openvocab_features(owl, pairs, frames, threshold=ov_threshold, cache_path=ov_cache,
                                   batch_size=int(ov_cfg["batch_size"]), extra_queries=description_queries)
    elapsed = time.perf_counter() - started
    encoded = openvocab.attrs["frames_encoded"]
    path = write_part(ctx.paths, "openvocab", openvocab)
    display(Markdown(
        f"**Weights:** {owl.source}. **Cost:** {encoded:,} frames went through OWL-ViT in this run (the rest came "
        f"from the cache), in {elapsed:.1f} s: "
        + (f"{elapsed / encoded:.2f} s per frame on {owl.device.type}" if encoded else "nothing was computed")
        + f". Wrote {len(openvocab):,} rows to `{path.relative_to(ctx.paths.root.parent)}`; "
        f"{openvocab['openvocab_informative'].mean():.1%} of all pairs were checked. Train and validation pairs per "
        f"state, by split and kind of pair:"
    ))
    dev_openvocab = development(pairs[["pair_id", "label", "negative_type", "split"]]).merge(openvocab, on="pair_id")
    display(state_table(dev_openvocab, "openvocab_state"))
else:
    dropped = drop_part(ctx.paths, "openvocab")
    display(Markdown(
        f"**The profile `{ctx.profile}` switches the open-vocabulary evidence off** (`openvocab.enabled: false`): "
        f"OWL-ViT is not loaded and the features carry no open-vocabulary score"
        + (" (the part an earlier run wrote was removed)." if dropped else ".")
    ))

# %% [markdown]
# The recall per entity kind over the train and validation frames, for both detectors:

# %%
if openvocab_on:
    description_run, _ = detect_phrases(owl, frames, description_queries, ov_cache,
                                        batch_size=int(ov_cfg["batch_size"]))  # cached above: no forward pass
    kind_recall = entity_recall(dev_entities, description_run, dev_run_frames, threshold=ov_threshold,
                                detector_threshold=threshold)
    display(Markdown(f"OWL-ViT counts a description found at a score of at least {ov_threshold}, Faster R-CNN a "
                     f"detection at {threshold}; both at an IoU of at least {IOU_MATCH}."))
    display(kind_recall.style.format({c: "{:.1%}" for c in kind_recall.columns if "recall" in c or "coverage" in c},
                                     na_rep="n/a").hide(axis="index"))
    plot_entity_recall(kind_recall)
    plt.show()

# %% [markdown]
# What OWL-ViT found for a few positive pairs of the train and validation splits, those naming
# the most phrases: each found phrase at its best box, with its score, and the phrases it did
# not find listed under the frame.

# %%
#@save
# extra code: found and missing phrases drawn on frames
def plot_openvocab_samples(frames: Mapping[tuple[str, int], bytes], pairs: pd.DataFrame, features: pd.DataFrame, *,
                           n: int = 4) -> "matplotlib.figure.Figure":
    """The ``n`` decodable positive pairs (train and validation only) naming the most phrases, one
    per frame: found phrases at their boxes, missing phrases listed under each frame."""
    import matplotlib.pyplot as plt

    from helpers.data import frame_image
    from helpers.plots import draw_boxes

    require_development(pairs, "plot_openvocab_samples")
    table = pairs.loc[pairs["label"] == 1, ["pair_id", "story_id", "frame"]].merge(features, on="pair_id")
    table = table[table["openvocab_informative"]].assign(
        n_phrases=lambda t: t["openvocab_phrases"].map(lambda c: len(json.loads(c))))
    chosen = (table.sort_values(["n_phrases", "story_id", "frame"], ascending=[False, True, True])
              .drop_duplicates(["story_id", "frame"]).head(n))
    n_rows = max(1, math.ceil(len(chosen) / 2))
    fig, axes = plt.subplots(n_rows, 2, figsize=(12, 3.2 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, chosen.itertuples(index=False)):
        ax.imshow(frame_image([frames[(row.story_id, row.frame)]], 1))
        found = json.loads(row.openvocab_found)
        draw_boxes(ax, [f["box"] for f in found], [f"{f['phrase']} {f['score']:.2f}" for f in found],
                   colour="#1f77b4", width=1.4)
        missing = [m["phrase"] for m in json.loads(row.openvocab_missing)]
        ax.set_title(f"story {row.story_id}, frame {row.frame}: {len(found)} of {row.n_phrases} phrases found",
                     fontsize=9)
        ax.text(0, -0.03, "missing: " + (", ".join(missing) or "none"), transform=ax.transAxes, va="top",
                fontsize=8, wrap=True)
    fig.tight_layout()
    return fig


# %%
if openvocab_on:
    plot_openvocab_samples(frames, development(pairs), openvocab, n=4)
    plt.show()

# %% [markdown]
# How well the open-vocabulary score alone tells positives from each kind of negative, beside
# the object score of the COCO detector on the same train and validation pairs (ROC-AUC, 0.5
# is chance). Object swaps are the negatives both are built for; the open-vocabulary score
# also sees the swaps of things COCO cannot name.

# %%
if openvocab_on:
    both_scores = scored.merge(openvocab[["pair_id", *OPENVOCAB_COLUMNS]], on="pair_id")
    ov_auc = pd.concat({
        name: auc_by_negative_type(table, column).set_index("negative_type")["roc_auc"]
        for name, table, column in [
            ("object_score, all pairs", both_scores, "object_score"),
            ("openvocab_score, all pairs", both_scores, "openvocab_score"),
            ("openvocab_score, informative", both_scores[both_scores["openvocab_informative"]], "openvocab_score")]
    }, axis=1)
    display(ov_auc.style.format("{:.3f}", na_rep="n/a"))
    display(Markdown(
        f"Against object swaps the open-vocabulary score reaches an AUC of "
        f"{ov_auc.loc['object_swap', 'openvocab_score, all pairs']:.3f} over all train and validation pairs, the "
        f"COCO detector's object score {ov_auc.loc['object_swap', 'object_score, all pairs']:.3f}."
        if "object_swap" in ov_auc.index else "This run has no object-swap negatives."
    ))
