"""HTML reports: one per executed chapter (code hidden, images embedded) and an index.

Each report is self-contained, so ``outputs/<profile>/reports/`` can be hosted or mailed
as it is, and read offline: the styles and images are inside the page, and nothing is fetched
from elsewhere (nbconvert's page loads require.js, MathJax and mermaid from a CDN; the template
below leaves them out, as the chapters write no TeX, draw no mermaid diagram and use no widgets).
A remote image in the prose (the "Open in Colab" badge) becomes its alt text, still a link.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import Paths, read_run_record
from .io import atomic_write_text, read_json

__all__ = ["render_html", "without_progress_bars", "without_remote_images", "write_index", "headline_rows", "paired_rows", "control_rows",
           "ablation_rows", "format_estimate"]


#: stderr lines that are progress reports, not messages: tqdm bars (with their carriage returns),
#: whatever their unit ("it/s", "story/s", " examples/s", "s/batch"), with or without a total: a
#: percentage before a bar, or the bracket of elapsed time ("[00:04<00:47, 4.29s/batch]", "[00:00, ?it/s]").
_PROGRESS = re.compile(r"\d+%\||\[(?:\d+:)?\d\d:\d\d(?:<[^\]]*)?(?:,[^\]]*)?\]")

#: The page around a report: nbconvert's lab template without the scripts it loads from a CDN.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""

#: A remote image in markdown, ``![alt](https://...)``: offline it is a broken image, so it becomes its alt text.
_REMOTE_IMAGE = re.compile(r"!\[([^\]]*)\]\(https?://[^)\s]+\)")


def without_progress_bars(nb: "nbformat.NotebookNode") -> "nbformat.NotebookNode":
    """Drop progress-bar lines from the stderr outputs (the executed notebook keeps them).

    Any other stderr line (a warning, say) stays in the report.
    """
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = [ln for ln in re.split(r"[\r\n]+", output.get("text", "")) if ln.strip() and not _PROGRESS.search(ln)]
                if not lines:
                    continue
                output["text"] = "\n".join(lines) + "\n"
            kept.append(output)
        cell.outputs = kept
    return nb


def without_remote_images(nb: "nbformat.NotebookNode") -> "nbformat.NotebookNode":
    """Replace each remote image of the markdown cells by its alt text (a linked badge stays a link)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _REMOTE_IMAGE.sub(r"\1", cell.source)
    return nb


def render_html(notebook: Path, out: Path) -> Path:
    """Render an executed notebook to a self-contained HTML report with the code hidden."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True,
                            extra_loaders=[DictLoader({"offline.html.j2": _OFFLINE_TEMPLATE})],
                            template_file="offline.html.j2")
    nb = without_remote_images(without_progress_bars(nbformat.read(notebook, as_version=4)))
    body, _ = exporter.from_notebook_node(nb)
    return atomic_write_text(out, body)


def headline_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """One row per model of ``metrics.json``: its overall test metrics as 'value [low, high]'."""
    rows = []
    for name, model in metrics.get("models", {}).items():
        row = {"model": name}
        for metric, est in model.get("overall", {}).items():
            if isinstance(est, dict) and "value" in est:
                row[metric] = format_estimate(est)
        rows.append(row)
    return rows


def paired_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """One row per model of ``metrics.json``: its paired score ("all" frames, then each kind of
    negative) as 'value [low, high]', the headline per kind."""
    return [{"model": name, **{group: format_estimate(est) for group, est in model.get("paired", {}).items()}}
            for name, model in metrics.get("models", {}).items()]


def control_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """One row per blind control of ``metrics.json``: paired score per group, then pooled ROC-AUC."""
    rows = []
    for name, control in metrics.get("controls", {}).items():
        row = {"control": name, **{f"paired {g}": format_estimate(e) for g, e in control.get("paired", {}).items()}}
        row["ROC-AUC overall"] = format_estimate(control["overall"]["roc_auc"])
        rows.append(row)
    return rows


def ablation_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """One row per evidence subset of ``metrics.json``'s ``"ablations"`` (chapter 09): its ROC-AUC,
    then its paired score minus the reference's, over all frames and per kind of negative."""
    subsets = metrics.get("ablations", {}).get("subsets", {})
    return [{"subset": name, "ROC-AUC": format_estimate(info["roc_auc"]),
             **{f"paired gain {g}": format_estimate(e) for g, e in (info.get("paired_gain") or {}).items()}}
            for name, info in subsets.items()]


def format_estimate(estimate: Mapping[str, float | None] | None, digits: int = 3) -> str:
    """One ``{"value", "low", "high"}`` estimate as text, the one spelling of every report and chapter:
    "0.812 [0.771, 0.850]"; "0.812 [n/a]" when its interval is undefined (too few id blocks, or null
    in metrics.json); "n/a" when its value is."""
    if not estimate or estimate.get("value") is None or not math.isfinite(estimate["value"]):
        return "n/a"
    low, high = estimate.get("low"), estimate.get("high")
    defined = low is not None and high is not None and math.isfinite(low) and math.isfinite(high)
    interval = f"{low:.{digits}f}, {high:.{digits}f}" if defined else "n/a"
    return f"{estimate['value']:.{digits}f} [{interval}]"


def _table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p>No metrics yet: chapter 07 writes them.</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, 'n/a')))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'  # n/a: not applicable


def write_index(profile: str, paths: Paths) -> Path:
    """Write ``reports/index.html``: links to every chapter report, headline metrics, provenance."""
    from .notebook import smoke_banner_html

    run = read_run_record(profile)
    reports = sorted(p for p in paths.reports.glob("[0-9][0-9]_*.html"))
    links = "".join(
        f'<li><a href="{p.name}">{html.escape(p.stem.replace("_", " ", 1))}</a>'
        f'{_status(run, p.stem)}</li>'
        for p in reports
    )
    metrics = read_json(paths.metrics_json, default={})
    ablations = metrics.get("ablations", {})
    evidences = ", ".join(f"{name}: {column}" for name, column in ablations.get("evidences", {}).items()) or "not run"
    reference = ablations.get("reference", "")
    provenance = {k: run[k] for k in ("profile", "description", "git_commit", "started", "finished", "device", "dataset_fingerprint") if k in run}
    prov_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in provenance.items())
    versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Story-image alignment: {html.escape(profile)} run</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
td{{white-space:nowrap}}.wide{{overflow-x:auto}}</style>
</head><body>
{smoke_banner_html() if profile == "smoke" else ""}
<h1>Story-image alignment verification: {html.escape(profile)} run</h1>
<h2>Chapters</h2><ol style="list-style:none;padding-left:0">{links}</ol>
<h2>Headline: paired scores on the test split</h2>
<p>Share of test frames whose own text the model scores above its negative (0.5 = chance), overall
and per kind of negative; 95% intervals from resampling the test split's id blocks.</p>
{_table(paired_rows(metrics))}
<h2>Blind controls (near 0.5 = the text alone decides nothing)</h2>
<p>The models <code>text_only</code> and <code>clip_text_only</code> never see the frame (their rows
above); <code>shuffled_frames</code> is the primary head scoring each text against another block's frame.</p>
{_table(control_rows(metrics))}
<h2>Pooled metrics (test split, every pair; 95% intervals over id blocks)</h2>
{_table(headline_rows(metrics))}
<h2>What each evidence adds (chapter 09)</h2>
<p>One head per subset of the evidences this profile computes ({html.escape(evidences)}); the paired gain
is the subset's paired score minus that of <code>{html.escape(reference)}</code>, the study's three, on the same resamples.</p>
{_table(ablation_rows(metrics)) if ablation_rows(metrics) else "<p>No ablations yet: chapter 09 writes them.</p>"}
<h2>Provenance</h2><table>{prov_rows}</table>
<p><small>{html.escape(versions)}</small></p>
<p><small>Full record: <code>run.json</code> in the profile's output folder.</small></p>
</body></html>
"""
    return atomic_write_text(paths.reports / "index.html", page)


def _status(run: dict[str, Any], stem: str) -> str:
    info = run.get("chapters", {}).get(stem)
    if not info:
        return ""
    return f" <small>({info.get('status', '')}, {info.get('seconds', 0):.0f} s)</small>"
