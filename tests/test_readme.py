"""The README stays true to the code: its commands, its schema copy, its chapter list."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import lib
from helpers.evaluation import METRICS_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_carries_the_metrics_schema_verbatim():
    assert METRICS_SCHEMA.rstrip() in README


def test_ci_runs_the_readme_test_command():
    assert "make test" in README and "make run-all" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_lists_every_chapter_and_every_helpers_module():
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for stem in chapters:
        assert f"(notebooks/{stem}.ipynb)" in README, stem
    modules = {p.stem for p in (ROOT / "helpers").glob("*.py")} - {"__init__", "__main__"}
    listing = README.split("`helpers`, generated from the chapters", 1)[1].split("\n\n", 1)[0]
    generated, hand_written = listing.split("Hand-written, the plumbing:", 1)
    assert set(lib.MODULES.values()) <= set(re.findall(r"`(\w+)` \(0\d:", generated))
    assert modules - set(lib.MODULES.values()) <= set(re.findall(r"`(\w+)`", hand_written))


def test_makefile_targets_named_in_the_readme_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"make ([a-z-]+)", README)):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
