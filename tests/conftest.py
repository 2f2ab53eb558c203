"""Shared test settings.

``FIXTURES`` is the one place the tests find real StoryReasoning text: verbatim rows of the
Hub dataset copied into the repository (see ``fixtures/storyreasoning/README.md`` for the
source, licence and which rows they are), so the suite runs on a bare clone.
"""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "storyreasoning"
STORY_3920 = FIXTURES / "story_3920" / "story.txt"
COT_3920 = FIXTURES / "story_3920" / "chain_of_thought.md"
STORY_1831 = FIXTURES / "story_1831" / "story.txt"
