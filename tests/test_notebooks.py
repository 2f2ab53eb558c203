"""The chapters: paired sources in sync, committed without outputs, and a smoke run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from helpers import config, runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_every_chapter_is_a_pair():
    assert NOTEBOOKS, "no chapters found"
    assert [p.stem for p in NOTEBOOKS] == [p.stem for p in SOURCES]


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_in_sync_and_without_outputs(ipynb):
    nb = nbformat.read(ipynb, as_version=4)
    py = jupytext.read(ipynb.with_suffix(".py"))
    assert _cells(nb) == _cells(py), f"{ipynb.name} and its .py differ: run `make sync`"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{ipynb.name} has outputs committed"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_opens_with_badge_parameters_and_setup(ipynb):
    nb = nbformat.read(ipynb, as_version=4)
    title, params, setup = nb.cells[:3]
    assert title.cell_type == "markdown" and title.source.startswith(f"# {ipynb.stem[:2]}")
    assert "colab.research.google.com/github/" in title.source and f"notebooks/{ipynb.name}" in title.source
    assert "parameters" in params.metadata.get("tags", []) and 'profile = "quick"' in params.source
    assert "google.colab" in setup.source and f'start(profile, chapter="{ipynb.stem}")' in setup.source


def _run(args, env_extra, timeout):
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "helpers.runner", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_quick_profile_offline_without_cache_stops_at_once(tmp_path):
    result = _run(["--profile", "quick"], {"HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
                                           "HF_HUB_OFFLINE": "1", "STORY_ALIGN_OUTPUTS": str(tmp_path / "out")}, 120)
    assert result.returncode == 2, result.stderr
    for needle in ("HF_HOME", "TORCH_HOME", "PROFILE=smoke", "daniel3303/StoryReasoning"):
        assert needle in result.stderr, needle
    assert not (tmp_path / "out" / "quick" / "notebooks").exists(), "no chapter may run"


def test_failing_chapter_names_itself_and_its_cell(tmp_path, monkeypatch, capsys):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('profile = "quick"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
    ], metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "01_broken.ipynb")
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", tmp_path / "nb")
    monkeypatch.setattr(config, "OUTPUTS_DIR", tmp_path / "out")
    status = runner.main(["--profile", "smoke"])
    err = capsys.readouterr().err
    assert status == 1
    assert "01_broken failed in cell" in err and "execution count" in err and "broken on purpose" in err
    run = json.loads((tmp_path / "out" / "smoke" / "run.json").read_text())
    assert run["chapters"]["01_broken"]["status"] == "failed"
    assert (tmp_path / "out" / "smoke" / "reports" / "01_broken.html").exists()


@pytest.mark.slow
def test_smoke_run_renders_every_chapter(tmp_path):
    out = tmp_path / "out"
    result = _run(["--profile", "smoke"], {"STORY_ALIGN_OUTPUTS": str(out)}, 1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    smoke = out / "smoke"
    run = json.loads((smoke / "run.json").read_text())
    assert set(run["chapters"]) == {p.stem for p in NOTEBOOKS}
    assert all(c["status"] == "ok" for c in run["chapters"].values())
    assert run["dataset_fingerprint"] and run["git_commit"] and run["versions"]["torch"]
    index = (smoke / "reports" / "index.html").read_text()
    for nb in NOTEBOOKS:
        report = (smoke / "reports" / f"{nb.stem}.html").read_text()
        assert "SMOKE RUN" in report and "numbers" in report
        assert f'href="{nb.stem}.html"' in index
    assert "SMOKE RUN" in index
    import pandas as pd

    pairs = pd.read_parquet(smoke / "data" / "pairs.parquet")
    assert {"story_id", "frame", "split", "label", "negative_type", "text"} <= set(pairs.columns)
    assert set(pairs["label"]) == {0, 1} and set(pairs["split"]) >= {"train", "val", "test"}
    features = pd.read_parquet(smoke / "features" / "features.parquet")
    assert len(features) == len(pairs)
    for column in ("object_score", "clip_score", "spatial_score", "object_informative", "spatial_informative"):
        assert column in features.columns, column
    for column in ("object_state", "clip_state", "spatial_state", "openvocab_state", "question_state"):
        assert set(features[column]) <= {"checked", "nothing to check", "not computed"}, column
    metrics = json.loads((smoke / "metrics.json").read_text())
    assert metrics["profile"] == "smoke" and "fusion" in metrics["models"]
    # the flags-only control is reported like every blind control, and each head's gain beyond it is recorded
    from helpers.evaluation import VERDICTS

    flags = metrics["models"]["flags_only"]
    assert flags["kind"] == "blind_control" and flags["equivalence"]["paired"]["all"]["verdict"] in VERDICTS
    assert flags["equivalence"]["roc_auc"]["overall"]["verdict"] in VERDICTS
    beyond = metrics["beyond_text"]
    assert beyond["control"] == "flags_only" and set(beyond["heads"]) == {"fusion_extended", "fusion"}
    assert all(d["paired"]["all"]["value"] is not None for d in beyond["heads"].values())
    # every robustness perturbation applied to some pair and moved something there
    from helpers.ablations import robustness_summary

    robustness = robustness_summary(pd.read_parquet(smoke / "robustness.parquet")).set_index("perturbation")
    assert (robustness["pairs"] > 0).all() and (robustness["largest |change|"] > 0).all(), robustness
    # chapters 02-05 show the train and validation splits only: no table has a test row
    import re

    for nb in NOTEBOOKS[1:5]:
        outputs = [o for c in nbformat.read(smoke / "notebooks" / nb.name, as_version=4).cells
                   for o in c.get("outputs", [])]
        tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
        assert tables and not any(re.search(r"<t[hd][^>]*>\s*(test|external)\s*</t[hd]>", t) for t in tables), nb.stem

    # the trained verifier on an image that is in no dataset
    image = tmp_path / "new.png"
    from PIL import Image

    Image.new("RGB", (400, 240), (90, 120, 160)).save(image)
    env = {**os.environ, "STORY_ALIGN_OUTPUTS": str(out)}
    verdict = subprocess.run([sys.executable, "-m", "helpers.verify", "--profile", "smoke", str(image),
                              "A man sits on the couch next to a dog."], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert verdict.returncode == 0, verdict.stderr
    result = json.loads(verdict.stdout)
    assert 0 <= result["probability"] <= 1 and isinstance(result["aligned"], bool)
    assert "person" in result["explanation"]["objects"]["needed"]

    # the README's offline example: the sample frame and its own text that chapter 01 wrote, the text on stdin
    sample = smoke / "sample"
    verdict = subprocess.run([sys.executable, "-m", "helpers.verify", "--profile", "smoke", str(sample / "frame.png"), "-"],
                             cwd=ROOT, env=env, input=(sample / "text.txt").read_text(), capture_output=True,
                             text=True, timeout=600)
    assert verdict.returncode == 0, verdict.stderr
    assert 0 <= json.loads(verdict.stdout)["probability"] <= 1

    # every report reads offline and by others: no script fetched, no progress bar, no "nan", the mode the umask gives
    import stat

    umask = os.umask(0o022)
    os.umask(umask)
    for page in sorted((smoke / "reports").glob("*.html")):
        html = page.read_text()
        assert not re.search(r"<script[^>]*src=[\"']?https?:", html) and "cdnjs" not in html, page.name
        assert not re.search(r"\[(\d+:)?\d\d:\d\d[<,][^\]]*\]", html), page.name  # a tqdm bar, whatever its unit
        assert not re.search(r"<td[^>]*>\s*(NaN|nan|None|\[nan, nan\])?\s*</td>", html), page.name  # n/a, not blank
        assert stat.S_IMODE(page.stat().st_mode) == 0o666 & ~umask, page.name  # 0644 under umask 022
