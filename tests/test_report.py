"""Reports: progress bars stay out of them, real messages stay in; the index links and tabulates."""

from __future__ import annotations

import re

import nbformat
import pytest

from helpers import report
from helpers.config import Paths


def test_progress_bars_are_dropped_and_warnings_kept():
    bar = "parsing stories:  50%|█████     | 7/14 [00:00<00:00]\rparsing stories: 100%|██████████| 14/14 [00:00<00:00]\n"
    cell = nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("stream", name="stderr", text=bar),
        nbformat.v4.new_output("stream", name="stderr", text=bar + "UserWarning: 3 frames could not be decoded\n"),
        nbformat.v4.new_output("stream", name="stdout", text="12%|██ kept: stdout is never filtered\n"),
    ])
    nb = report.without_progress_bars(nbformat.v4.new_notebook(cells=[cell]))
    outputs = nb.cells[0].outputs
    assert [o.name for o in outputs] == ["stderr", "stdout"]
    assert outputs[0].text == "UserWarning: 3 frames could not be decoded\n"


@pytest.mark.parametrize("bar", [
    "Generating train split: 100%|██████████| 14/14 [00:00<00:00, 1432.17 examples/s]",  # datasets, a unit with a space
    "Generating train split: 0 examples [00:00, ? examples/s]",                          # no total: no percentage
    "detecting (min_size 240, 1000 proposals):   8%|▊         | 1/12 [00:04<00:47,  4.29s/batch]",
    "scoring: 3batch [01:02:03, 20.68s/batch]",                                           # past an hour
    "parsing stories: 14story [00:00, 636.48story/s]",
])
def test_a_progress_bar_of_any_unit_is_dropped(bar):
    cell = nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("stream", name="stderr", text=bar + "\rUserWarning: kept [see the docs]\n")])
    nb = report.without_progress_bars(nbformat.v4.new_notebook(cells=[cell]))
    assert nb.cells[0].outputs[0].text == "UserWarning: kept [see the docs]\n"


def test_headline_rows_format_intervals_and_undefined_values():
    metrics = {"models": {"fusion": {"overall": {"accuracy": {"value": 0.75, "low": 0.5, "high": 0.9},
                                                 "roc_auc": {"value": None, "low": None, "high": None},
                                                 "pr_auc": {"value": 0.6, "low": None, "high": None}}}}}
    assert report.headline_rows(metrics) == [{"model": "fusion", "accuracy": "0.750 [0.500, 0.900]",
                                              "roc_auc": "n/a", "pr_auc": "0.600 [n/a]"}]


def test_one_estimate_formatter_serves_the_reports_and_the_chapters():
    from helpers import evaluation

    assert evaluation.format_estimate is report.format_estimate  # chapter 07 imports it, defines none
    cases = {"n/a": ({"value": None, "low": None, "high": None}, {"value": float("nan"), "low": 0.1, "high": 0.2}, None, {}),
             "0.600 [n/a]": ({"value": 0.6, "low": None, "high": None, "reason": "one id block holds these pairs"},
                             {"value": 0.6, "low": None, "high": None}, {"value": 0.6},
                             {"value": 0.6, "low": float("nan"), "high": 0.7}),
             "0.600 [0.500, 0.700]": ({"value": 0.6, "low": 0.5, "high": 0.7},)}
    for text, estimates in cases.items():
        for est in estimates:
            assert report.format_estimate(est) == text, est
    assert report.format_estimate({"value": 0.61234, "low": 0.5, "high": 0.7}, digits=2) == "0.61 [0.50, 0.70]"


def test_a_rendered_report_loads_nothing_from_the_network(tmp_path):
    badge = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             "(https://colab.research.google.com/github/o/r/blob/main/notebooks/01_data.ipynb)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# 01 · Data\n\n{badge}\n\nProse."),
                                         nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output(
                                             "execute_result", data={"text/plain": "1"}, execution_count=1)])])
    source = tmp_path / "01_data.ipynb"
    nbformat.write(nb, source)
    page = report.render_html(source, tmp_path / "01_data.html").read_text()
    assert "Prose." in page and "<style" in page  # the page and its styles are there
    assert not re.search(r"<script[^>]*src=[\"']?https?:", page)  # require.js, MathJax: none from a CDN
    assert "import(\"http" not in page and "cdnjs" not in page  # nor mermaid's module
    assert not re.search(r"<img[^>]*src=[\"']?https?:", page)  # the badge is gone ...
    assert re.search(r'<a href="https://colab\.research\.google\.com/[^"]+">Open In Colab</a>', page)  # ... its link stays


def test_no_chapter_writes_tex_math_the_offline_reports_would_show_raw():
    from pathlib import Path

    for chapter in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.py")):
        prose = "\n".join(line for line in chapter.read_text(encoding="utf-8").splitlines() if line.startswith("# "))
        assert not re.search(r"\$[^$\s][^$]*\$", prose), chapter.name


def test_ablation_rows_show_each_subsets_paired_gain():
    est = {"value": 0.25, "low": 0.1, "high": 0.4}
    metrics = {"ablations": {"subsets": {
        "object": {"roc_auc": {"value": 0.6, "low": 0.5, "high": 0.7}, "paired_gain": {"all": est, "object_swap": est}},
        "object + semantic + spatial": {"roc_auc": {"value": 0.8, "low": 0.7, "high": 0.9}, "paired_gain": None}}}}
    assert report.ablation_rows(metrics) == [
        {"subset": "object", "ROC-AUC": "0.600 [0.500, 0.700]", "paired gain all": "0.250 [0.100, 0.400]",
         "paired gain object_swap": "0.250 [0.100, 0.400]"},
        {"subset": "object + semantic + spatial", "ROC-AUC": "0.800 [0.700, 0.900]"}]
    assert report.ablation_rows({}) == []


def test_index_links_reports_and_flags_smoke(tmp_path, monkeypatch):
    from helpers import config

    monkeypatch.setattr(config, "OUTPUTS_DIR", tmp_path)
    paths = Paths(tmp_path / "smoke")
    paths.reports.mkdir(parents=True)
    for stem in ("01_data", "02_detection"):
        (paths.reports / f"{stem}.html").write_text("<html></html>")
    config.update_run_record("smoke", chapters={"01_data": {"status": "ok", "seconds": 3.0}})
    page = report.write_index("smoke", paths).read_text()
    assert 'href="01_data.html"' in page and 'href="02_detection.html"' in page
    assert "SMOKE RUN" in page and "No metrics yet" in page and "No ablations yet" in page
    real = report.write_index("quick", Paths(tmp_path / "quick")).read_text()
    assert "SMOKE RUN" not in real


def test_provenance_names_every_models_weights_or_says_it_is_off():
    from helpers.config import load_profile
    from helpers.notebook import provenance_html

    quick = provenance_html("quick", load_profile("quick"))
    assert "google/owlvit-base-patch32" in quick and "distilroberta-base" in quick
    assert "control language model weights</th><td style='text-align:left'>gpt2" in quick
    assert "BLIP-VQA weights</th><td style='text-align:left'>off (questions.enabled: false)" in quick
    smoke = provenance_html("smoke", load_profile("smoke"))
    assert "BLIP-VQA weights</th><td style='text-align:left'>random" in smoke


def test_chapter_tables_round_to_three_decimals_and_spell_a_missing_value_n_a():
    import numpy as np
    import pandas as pd

    from helpers.notebook import frame_html, show_tables_readably

    with pd.option_context("display.precision", 6, "styler.format.precision", 6, "styler.format.na_rep", None,
                           "display.max_colwidth", 50):
        show_tables_readably()  # what every chapter's setup call does
        frame = pd.DataFrame({"score": [1 / 3, np.nan], "kind": ["object_swap", None]})
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", frame_html(frame))
        styled = re.findall(r"<td[^>]*>([^<]*)</td>", frame.style.to_html())
        blank = pd.DataFrame({"kind": pd.Series(["", "same_story"], dtype="str"), "n": [1, 2]})  # a positive's type
        blank_cells = re.findall(r"<td[^>]*>([^<]*)</td>", frame_html(blank))
    assert cells == styled == ["0.333", "object_swap", "n/a", "n/a"]
    assert blank_cells == ["n/a", "1", "same_story", "2"]
    counts = pd.DataFrame({"frames": [15.0, np.nan], "score": [1.0, 0.5]})
    assert re.findall(r"<td[^>]*>([^<]*)</td>", frame_html(counts)) == ["15", "1.0", "n/a", "0.5"]
    reason = "undefined with 1 of 2 id blocks left out (one class only, or no pair of this kind remains)"
    with pd.option_context("display.max_colwidth", 50):
        show_tables_readably()
        assert reason in frame_html(pd.DataFrame({"reason": [reason]}))  # whole, not cut at 50 characters


def test_an_index_table_writes_n_a_where_a_row_lacks_a_column():
    page = report._table([{"control": "causal_lm", "paired other_story": "0.600 [0.000, 1.000]"},
                          {"control": "mlm_plausibility"}])  # a swap-only control has no other_story
    assert re.findall(r"<td>([^<]*)</td>", page) == ["causal_lm", "0.600 [0.000, 1.000]", "mlm_plausibility", "n/a"]
