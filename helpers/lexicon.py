"""Map the nouns of StoryReasoning text onto the 80 COCO categories a detector reports.

The object evidence of the study asks "does the detector see what the text names?". That
needs one function from a noun phrase ("a blue blanket", "the man's cell phone", "Counter
or table") to a COCO category or ``None``. It works on the *head noun* of the phrase, so
adjectives and attachments cannot change the answer: "a coffee table" is a table, "a car
door" is a door, "a man holding a phone" is a man.

The rule of thumb for every table entry: map a word only when a COCO-trained detector
would label the thing it names with that category. When that is doubtful the word maps to
``None``: a missing mapping only costs coverage, a wrong one makes the verifier report a
contradiction that is not there. Character names are never in the tables; characters go
through :func:`char_category`, which reads their chain-of-thought description.

Everything here is plain data (a few dicts and sets, meant to be read) plus two small
cached functions; nothing heavy is imported.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["COCO_CATEGORIES", "SYNONYMS", "NOT_COCO", "PERSON_PRONOUNS", "to_coco", "char_category"]

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

#: Personal pronouns that can only refer to a person (or, rarely, a pet): a text using one
#: needs a person in the frame. "it" and "they" can refer to anything, so they are not here.
PERSON_PRONOUNS: frozenset[str] = frozenset("he she him her his hers himself herself".split())

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


@lru_cache(maxsize=1 << 16)
def to_coco(phrase: str) -> str | None:
    """Return the COCO category the noun phrase ``phrase`` refers to, or ``None``.

    The phrase is lower-cased and split into alternatives on "or", "and" and "/" ("Counter
    or table" -> the first alternative that maps, "dining table"). In each alternative,
    leading determiners and possessors ("the man's") are dropped and the head chunk ends
    at the first preposition, relative pronoun, comma, later determiner, or participle
    after a known noun ("man holding a phone" -> "man"). The head is the longest known
    word sequence at the end of the chunk, singular or plural ("cell phones", "knives",
    "women"); ``NOT_COCO`` words answer ``None``. A part or quantity before "of" defers to
    what follows ("a section of a wall" -> wall -> ``None``), anything else keeps its own
    head ("a cup of coffee" -> "cup").

    >>> to_coco("the man's cell phone"), to_coco("Counter or table"), to_coco("Blue blanket")
    ('cell phone', 'dining table', None)
    """
    return _phrase_category(phrase)


@lru_cache(maxsize=1 << 14)
def char_category(description: str) -> str | None:
    """Return the COCO category of a ``char`` entity from its chain-of-thought description.

    A character is a person unless the head noun of its description says otherwise, read
    as in :func:`to_coco`: an animal COCO has ("A small brown dog" -> "dog") or any other
    COCO thing ("A teddy bear") gives that category; an animal or thing COCO lacks ("A
    golden humanoid robot with a sophisticated design." -> robot, "A stone statue", "A
    lion") gives ``None``. Heads the lexicon does not know ("Unidentified", "A Jedi in
    brown robes", a truncated "A man i") and empty descriptions stay "person", by far
    the most common case.
    """
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
