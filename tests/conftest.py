"""Shared test settings.

``FIXTURES`` is the one place the tests find real StoryReasoning text: verbatim rows of the
Hub dataset copied into the repository (see ``fixtures/storyreasoning/README.md`` for the
source, licence and which rows they are), so the suite runs on a bare clone.
"""

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "storyreasoning"
STORY_3920 = FIXTURES / "story_3920" / "story.txt"
COT_3920 = FIXTURES / "story_3920" / "chain_of_thought.md"
STORY_1831 = FIXTURES / "story_1831" / "story.txt"


@pytest.fixture(autouse=True)
def _fresh_caches_under_mutation():
    """Under mutation testing (``make mutation``: mutmut sets ``MUTANT_UNDER_TEST``), empty the
    lexicon's and the spatial extraction's caches before each test, so that the code under test
    answers, not a result remembered from another mutant or from the unmutated run."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        from helpers import objects, spatial

        for cached in (objects.to_coco, objects.char_category, spatial._entities, spatial._extract):
            cached.cache_clear()
    yield


def real_story_texts() -> dict[str, str]:
    """The tagged story text of every real fixture, the partial ones included (their first 1,500
    characters, between the ``=== STORY`` and ``=== CHAIN_OF_THOUGHT`` markers), by file name."""
    out = {}
    for path in sorted(FIXTURES.rglob("story*.txt")):
        text = path.read_text(encoding="utf-8")
        if "=== STORY" in text:
            text = text.split("=== STORY", 1)[1].split("\n", 1)[1].split("=== CHAIN_OF_THOUGHT")[0]
        out[f"{path.parent.name}/{path.name}"] = text
    return out
