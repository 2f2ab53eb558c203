"""The runner's execution path: the chapters' progress bars reach the terminal, with rate
and time left, and each chapter's CPU time is recorded. Nothing here is timed."""

from __future__ import annotations

import io
import re

import nbformat

from helpers import runner

LOOP = """\
import time
from tqdm.auto import tqdm
for _ in tqdm(range(5), desc="detecting (test loop)", mininterval=0):
    time.sleep(0.05)
print("stdout stays in the notebook")
"""


def test_a_chapters_progress_bar_streams_to_the_terminal_with_rate_and_time_left(tmp_path):
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": kernelspec})
    nb.cells = [nbformat.v4.new_code_cell("profile = 'x'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(LOOP)]
    source, executed = tmp_path / "tiny.ipynb", tmp_path / "out" / "tiny.ipynb"
    executed.parent.mkdir()
    nbformat.write(nb, source)
    terminal = io.StringIO()
    runner.execute(source, executed, {"profile": "smoke"}, stream=terminal, cwd=tmp_path)
    shown = terminal.getvalue()
    assert "detecting (test loop)" in shown and "5/5" in shown
    assert re.search(r"\d+(\.\d+)?it/s", shown) and re.search(r"<\d\d:\d\d", shown)  # rate, and time left
    assert "stdout stays in the notebook" not in shown  # only the kernel's stderr is streamed
    outputs = [o for cell in nbformat.read(executed, as_version=4).cells for o in cell.get("outputs", [])]
    assert any(o.get("name") == "stdout" for o in outputs)  # the executed notebook keeps its outputs


def test_cpu_seconds_counts_this_process_and_grows():
    before = runner.cpu_seconds()
    sum(i * i for i in range(300_000))
    assert runner.cpu_seconds() > before > 0
