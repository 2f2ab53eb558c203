"""The generated modules: every chapter's #@save cells, in step with the chapters."""

from __future__ import annotations

import pytest

from helpers import lib

CHAPTER = '''# %% [markdown]
# # 04 · A chapter

# %%
#@save
def rule(a, b):
    return a < b

# %%
rule(1, 2)  # run, not saved

# %%
# a comment first: not saved
#@save
x = 1

# %%
#@save
RULES = {"lt": rule}
'''


def test_generated_modules_are_in_step_with_their_chapters():
    assert lib.stale(lib.targets()) == [], "run `make lib`"


def test_only_cells_that_open_with_the_marker_are_saved():
    assert lib.saved_cells(CHAPTER) == ["def rule(a, b):\n    return a < b", 'RULES = {"lt": rule}']


def test_a_generated_module_says_where_it_comes_from_and_runs():
    text = lib.generate("04_x", CHAPTER)
    assert text.splitlines()[0] == lib.header("04_x").strip()
    namespace: dict = {}
    exec(compile(text, "generated", "exec"), namespace)
    assert namespace["RULES"]["lt"](1, 2) and not namespace["rule"](2, 1)
    assert lib.generate("04_x", "# %%\nx = 1\n") is None


def test_writing_never_overwrites_a_hand_written_module(tmp_path):
    hand = tmp_path / "hand.py"
    hand.write_text('"""hand-written"""\n')
    with pytest.raises(FileExistsError, match="hand-written"):
        lib.write({hand: lib.generate("04_x", CHAPTER)})
    generated = tmp_path / "gen.py"
    assert lib.write({generated: lib.generate("04_x", CHAPTER)}) == [generated]
    assert lib.is_generated(generated) and lib.stale({generated: lib.generate("04_x", CHAPTER)}) == []
    generated.write_text(generated.read_text() + "# edited by hand\n")
    assert lib.stale({generated: lib.generate("04_x", CHAPTER)}) != []
