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


QUIET = """\
import sys
sys.path.insert(0, {root!r})
import helpers.notebook  # what the chapters' setup cell imports first
from tqdm.auto import tqdm
for _ in tqdm(range(3), desc="counting"):
    pass
"""


def test_the_terminal_gets_the_bars_but_no_kernel_or_tqdm_notice(tmp_path):
    # The kernel writes its own warnings to the stderr it inherits, past papermill's stream: run the
    # runner's execute in a child process and read everything that reaches its stderr.
    import subprocess
    import sys

    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": kernelspec})
    nb.cells = [nbformat.v4.new_code_cell(QUIET.format(root=str(runner.REPO_ROOT)))]
    nbformat.write(nb, tmp_path / "quiet.ipynb")
    code = (f"from pathlib import Path; from helpers import runner; "
            f"runner.execute(Path({str(tmp_path / 'quiet.ipynb')!r}), Path({str(tmp_path / 'out.ipynb')!r}), {{}}, "
            f"kernel_name='python3', cwd=Path({str(tmp_path)!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=runner.REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "counting" in done.stderr and "3/3" in done.stderr  # the bar still streams
    assert "without encryption" not in done.stderr and "IProgress" not in done.stderr, done.stderr


def test_total_time_reads_as_a_person_counts():
    assert [runner.total_time(s) for s in (4.4, 59.6, 271, 3725)] == ["4 s", "1 min 0 s", "4 min 31 s", "1 h 02 min"]
