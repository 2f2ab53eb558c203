# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10 · Summary: the verifier, its results, and what they do not show
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/story-align/story-image-alignment/blob/main/notebooks/10_summary.ipynb)
#
# The whole study on one page: how a (frame, text) pair becomes a verdict, the headline
# numbers of the test split, the findings they support, and the limits of what they can
# say. Every number below is read from the files the earlier chapters wrote
# (`metrics.json`, `ablations.json`, `robustness.parquet`), and every comparison in the
# findings is computed from them when this chapter runs.

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full: see profiles/*.yaml

# %%
# Setup: makes `helpers` importable here, or clones the repository first in Colab.
import os, subprocess, sys
from pathlib import Path

if "google.colab" in sys.modules and not Path("story-image-alignment").exists():
    subprocess.run(["git", "clone", "--depth=1", "https://github.com/story-align/story-image-alignment"], check=True)
    os.chdir("story-image-alignment")
sys.path.insert(0, str(next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "helpers").is_dir())))

from helpers.notebook import start

ctx = start(profile, chapter="10_summary")

# %% [markdown]
# ## The architecture
#
# A frame and the text of one story segment go through three independent checks. Faster
# R-CNN finds COCO objects in the frame; the object evidence asks whether the things the
# text names are among them. CLIP embeds the frame and each sentence; the semantic
# evidence is how close they come. The relations the text states ("sits on", "left of")
# are checked on the boxes; the spatial evidence is the share that hold. A small MLP fuses
# the three scores into P(aligned), and the evidence itself (what was found, what was
# missing, which relations held) explains the verdict.

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from helpers import ablations as ab
from helpers import dashboards as db

db.architecture_figure()
plt.show()

# %% [markdown]
# ## Headline results
#
# Per kind of negative, the headline is the paired score: the share of test frames whose own
# text a model scores above its negative (0.5 is chance). The blind controls (`text_only`,
# `clip_text_only`, and the primary head against a stranger's frame) say how much of it the
# text alone could decide. Then every model's pooled metrics at its validation-tuned
# threshold. Every value carries its 95% interval from resampling the test split's id blocks
# (chapter 07).

# %%
from helpers.evaluation import control_table, paired_table, summary_table
from helpers.io import read_json

metrics = read_json(ctx.paths.metrics_json)
if metrics is None:
    raise FileNotFoundError(f"{ctx.paths.metrics_json} is missing: run chapter 07 (evaluation) first")
n = metrics["n"]
display(Markdown(f"Test split: {n['pairs']:,} pairs from {n['stories']:,} stories in {n['blocks']:,} id blocks "
                 f"({n['positives']:,} aligned); intervals from {metrics['bootstrap']['n_resamples']:,} resamples "
                 "of the id blocks."))
display(paired_table(metrics))
display(control_table(metrics))
display(summary_table(metrics))
db.summary_dashboard(metrics)
plt.show()

# %% [markdown]
# ## Findings
#
# Each sentence below is assembled from the results files: which evidence ranks the pairs
# best, whether the fusion head beats it by more than the test split's uncertainty, which
# kind of negative is hardest, what the ablations and the perturbations of chapter 09
# showed. A chapter that has not run contributes no sentence.

# %%
ablations = ab.read_ablations(ctx.paths)
robustness = ab.read_robustness(ctx.paths)
summary = ab.robustness_summary(robustness) if robustness is not None else None
display(Markdown("\n".join(f"- {sentence}" for sentence in db.findings(metrics, ablations, summary))))
if ablations is not None:
    display(ab.ablation_table(ablations, "roc_auc"))

# %% [markdown]
# ## Limitations
#
# What these results cannot tell, whatever their values.

# %%
display(Markdown("\n".join(f"- {sentence}" for sentence in db.limitations(ctx.cfg))))

# %% [markdown]
# ## Reproducing this report
#
# `make run-all PROFILE=<profile>` runs chapters 01 to 10 and writes every number above;
# `make bench` measures the pipeline's speed and memory (`outputs/bench.json`). The run
# record (`run.json` in the profile's output folder) lists the commit, the parameters, the
# package versions and the device.

# %%
from helpers.config import read_run_record

run = read_run_record(ctx.profile)
record = {key: run.get(key, "not recorded") for key in ("git_commit", "device", "started", "dataset_fingerprint")}
chapters = run.get("chapters", {})
timings = [f"{name} {info.get('seconds', 0):.0f} s" for name, info in chapters.items()]
record["chapters"] = ", ".join(timings) or "not recorded"
display(pd.Series(record, name="run").to_frame())
