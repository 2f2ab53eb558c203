"""Reports: progress bars stay out of them, real messages stay in; the index links and tabulates."""

from __future__ import annotations

import nbformat

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


def test_headline_rows_format_intervals_and_undefined_values():
    metrics = {"models": {"fusion": {"overall": {"accuracy": {"value": 0.75, "low": 0.5, "high": 0.9},
                                                 "roc_auc": {"value": None, "low": None, "high": None}}}}}
    assert report.headline_rows(metrics) == [{"model": "fusion", "accuracy": "0.750 [0.500, 0.900]",
                                              "roc_auc": "n/a [n/a, n/a]"}]


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
