"""The one setup call at the top of every chapter (in the spirit of fastbook's ``setup``).

``start(profile, chapter)`` installs what is missing (in Colab), loads the profile, seeds
every generator, sets how tables show (three decimals, "n/a" for a missing value), shows
package versions and the device as a sentence, and shows the provenance of
the run, with a banner on smoke runs saying their numbers mean nothing. This module
imports only the standard library at import time so it works before anything is installed.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from .config import REPO_ROOT, Paths, load_profile, output_paths, package_versions, read_run_record

__all__ = ["Context", "start", "ensure_packages", "smoke_banner_html", "provenance_html", "frame_html",
           "show_tables_readably"]

#: import name -> pip requirement, for what the chapters need beyond a Colab image.
REQUIRED_MODULES = {
    "torch": "torch", "torchvision": "torchvision", "transformers": "transformers",
    "datasets": "datasets", "pandas": "pandas", "pyarrow": "pyarrow", "sklearn": "scikit-learn", "inflect": "inflect",
    "seaborn": "seaborn", "tqdm": "tqdm", "yaml": "pyyaml", "PIL": "pillow", "matplotlib": "matplotlib",
}

#: tqdm.auto, imported in a Jupyter kernel without ipywidgets, warns once that it cannot draw a widget
#: ("IProgress not found") and falls back to the text bars, which are what the chapters want: they
#: stream to the runner's terminal and stay out of the reports. The notice says nothing to a reader.
warnings.filterwarnings("ignore", message="IProgress not found")

#: How every table of a chapter shows: three decimals, and "n/a" for a missing value (NaN or None),
#: the spelling the reports use for whatever is undefined.
DISPLAY_PRECISION = 3
MISSING = "n/a"
NOWRAP_CHARS = 32

SMOKE_WARNING = (
    "SMOKE RUN: synthetic data and randomly initialised models. This run only checks that the "
    "study executes end to end; every number and figure in this report means nothing."
)


@dataclass(frozen=True)
class Context:
    """What a chapter needs to know about its run."""

    profile: str
    chapter: str
    cfg: dict[str, Any]
    paths: Paths
    device: Any  # torch.device

    @property
    def is_smoke(self) -> bool:
        return self.profile == "smoke"


def ensure_packages(modules: dict[str, str] = REQUIRED_MODULES) -> list[str]:
    """pip-install the requirements whose module cannot be imported; return what was installed."""
    missing = [req for mod, req in modules.items() if importlib.util.find_spec(mod) is None]
    if missing:
        print("Installing missing packages:", ", ".join(missing))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
    return missing


def smoke_banner_html() -> str:
    """A red banner for the top of every smoke report."""
    return (
        '<div style="background:#b00020;color:white;padding:12px 16px;border-radius:6px;'
        f'font-size:1.1em;font-weight:bold">{SMOKE_WARNING}</div>'
    )


def provenance_html(profile: str, cfg: dict[str, Any]) -> str:
    """A compact table of where this run's numbers come from (profile, data, weights, commit)."""
    run = read_run_record(profile)
    rows = {
        "profile": f"{profile}: {cfg.get('description', '')}",
        "data": f"{cfg['data']['source']} (stories: {cfg['data'].get('n_stories') or 'all'}; "
        f"fingerprint: {run.get('dataset_fingerprint', 'computed in chapter 01')})",
        "detector weights": str(cfg["detector"]["weights"]),
        "CLIP weights": str(cfg["clip"]["weights"]),
        "language model weights": str(cfg.get("mlm", {}).get("weights", "not used")),
        "control language model weights": str(cfg.get("control_lm", {}).get("weights", "not used")),
        **{f"{name} weights": (str(cfg[section]["weights"]) if cfg.get(section, {}).get("enabled")
                               else f"off ({section}.enabled: false)")
           for section, name in (("openvocab", "OWL-ViT"), ("questions", "BLIP-VQA"))},
        "git commit": run.get("git_commit", "not recorded (chapter run outside the runner)"),
        "run started": run.get("started", "not recorded"),
    }
    cells = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def frame_html(frame: "pandas.DataFrame") -> str:  # noqa: F821
    """A DataFrame as the notebook shows it (rows and columns cut as pandas' display options say),
    with every missing value written as ``MISSING`` (NaN, None, and an empty text: a blank cell)
    and a float column that holds only whole numbers (counts after a merge) written as integers."""
    import pandas as pd

    shown = frame.copy()
    for i in range(shown.shape[1]):  # None would print as "None", not as na_rep; "" as a blank cell
        column = shown.iloc[:, i]
        if pd.api.types.is_float_dtype(column.dtype) and column.notna().any() \
                and column.dropna().map(lambda v: float(v).is_integer() and abs(v) < 2**53).all():
            whole = pd.Series([v if v != v else int(v) for v in column], index=column.index, dtype=object)
            shown.isetitem(i, whole)  # counts that went through a float show as counts: 15, not 15.0
        elif column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            blank = column.map(lambda value: isinstance(value, str) and not value.strip()).astype(bool)
            shown.isetitem(i, column.astype(object).where(column.notna() & ~blank, float("nan")))
    page = shown.to_html(na_rep=MISSING, max_rows=pd.get_option("display.max_rows"),
                         max_cols=pd.get_option("display.max_columns"),
                         show_dimensions=pd.get_option("display.show_dimensions"), notebook=True)
    # A short cell (a number, an estimate "0.520 [0.000, 1.000]") stays on one line; a wide table
    # scrolls instead of squeezing it over three. Longer texts still wrap.
    return re.sub(rf"<td>([^<]{{1,{NOWRAP_CHARS}}})</td>", r'<td style="white-space: nowrap">\1</td>', page)


def show_tables_readably() -> None:
    """Set, once per kernel, how tables show: ``DISPLAY_PRECISION`` decimals, ``MISSING`` for a
    missing value (for DataFrames, and for Stylers that do not format a column themselves), and
    every cell's text whole."""
    import pandas as pd
    from IPython import get_ipython

    pd.set_option("display.precision", DISPLAY_PRECISION)
    pd.set_option("display.max_colwidth", None)  # a finding or a verdict's reason is shown whole, never cut with "..."
    pd.set_option("styler.format.precision", DISPLAY_PRECISION)
    pd.set_option("styler.format.na_rep", MISSING)
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, frame_html)


def start(profile: str, chapter: str, overrides: dict[str, Any] | None = None) -> Context:
    """Prepare a chapter: packages, profile, seeds, plotting style, versions, provenance.

    ``overrides`` (nested dict) changes profile values for this chapter only, for quick
    experiments in a notebook; runs through the Makefile never pass any.
    """
    if "google.colab" in sys.modules:
        ensure_packages()
    import numpy as np
    import seaborn as sns
    import torch
    from IPython.display import HTML, display

    from .config import device as pick_device
    from .config import synthetic_or_random

    cfg = load_profile(profile, overrides)
    seed = int(cfg.get("seed", 42))
    np.random.seed(seed)
    torch.manual_seed(seed)
    sns.set_theme(context="notebook", style="whitegrid")
    show_tables_readably()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dev = pick_device()

    if synthetic_or_random(cfg):  # smoke, and the bench profiles (helpers.bench --quick-series)
        display(HTML(smoke_banner_html()))
    display(HTML(provenance_html(profile, cfg)))
    versions = package_versions()
    device_name = f"{dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
    display(HTML(f"<p>Chapter {html.escape(chapter)}, profile <code>{html.escape(profile)}</code>, on "
                 f"{html.escape(device_name)}.<br><small>"
                 + ", ".join(f"{html.escape(k)} {html.escape(str(v))}" for k, v in versions.items()) + "</small></p>"))
    return Context(profile=profile, chapter=chapter, cfg=cfg, paths=output_paths(profile), device=dev)
