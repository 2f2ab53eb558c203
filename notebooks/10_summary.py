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
# findings is computed from them when this chapter runs; the prose around them is fixed.

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
# text a model scores above its negative of that kind (0.5 is chance). The blind controls (`text_only`,
# `clip_text_only`, `pairwise_text`, `flags_only`, the primary head against a stranger's frame, and those of
# chapter 07: `mlm_plausibility`, `causal_lm`, `story_consistency`) say how much of it the
# text alone could decide, and whether each is shown equivalent to chance (two one-sided tests
# against a margin; an interval that merely covers 0.5 shows nothing); `text_only` (the
# filter's recipe) and `mlm_plausibility` (the score that chose the edits) were aimed at chance
# by the construction itself, so they are not evidence that it worked. Then every model's
# pooled metrics at its validation-tuned threshold. Every value carries its 95% interval over
# the test split's id blocks (chapter 07), whose coverage chapter 07 simulates at this split's
# own blocks.

# %%
from helpers.evaluation import VERDICTS, control_table, equivalence_table, paired_table, summary_table
from helpers.report import format_estimate
from helpers.io import read_json

metrics = read_json(ctx.paths.metrics_json)
if metrics is None:
    raise FileNotFoundError(f"{ctx.paths.metrics_json} is missing: run chapter 07 (evaluation) first")
n = metrics["n"]
boot, cover = metrics["bootstrap"], metrics["bootstrap"]["simulated_coverage"]
display(Markdown(
    f"Test split: {n['pairs']:,} pairs from {n['stories']:,} stories in {n['blocks']:,} id blocks "
    f"({n['positives']:,} aligned); `{boot['method']}` intervals over the id blocks, whose simulated coverage at "
    f"these blocks is {cover['coverage']:.0%} for a nominal {boot['confidence']:.0%}"
    + (" (below 90%: the intervals are too narrow for this split)." if cover["coverage"] < 0.9 else ".")))
display(paired_table(metrics))
display(control_table(metrics))
display(summary_table(metrics))
db.summary_dashboard(metrics)
plt.show()

# %% [markdown]
# ## Findings
#
# Each finding is a table read from the results files, with a sentence where a number needs
# one. The sentences are assembled, when this chapter runs, by the functions of chapter 08
# (`helpers.dashboards`) and chapter 09 (`helpers.ablations`); a chapter that has not run
# contributes nothing.
#
# ### What the head reaches
#
# The fusion head's pooled metrics on the test split, at the threshold tuned on the
# validation split, with what the split holds:

# %%
primary = metrics["primary_model"]
display(Markdown(db.headline_finding(metrics)))

# %% [markdown]
# That head is one training run, the profile's seed. Chapters 06 and 07 trained and measured
# every head with each seed of the profile; the spread over seeds is the training noise that
# sits beside the id-block interval of the primary run:

# %%
from helpers.evaluation import seed_table

if "seeds" not in metrics["models"][primary]:
    raise KeyError(f"metrics.json holds no seed spread for {primary!r}: rerun chapters 06 and 07")
display(seed_table(metrics).style.format(precision=3))
_seeds = metrics["models"][primary]["seeds"]
display(Markdown(
    f"Over {len(_seeds['seeds'])} training seeds, `{primary}`'s test ROC-AUC averages "
    f"{_seeds['roc_auc']['mean']:.3f} with a standard deviation of {_seeds['roc_auc']['std']:.3f} (from "
    f"{_seeds['roc_auc']['min']:.3f} to {_seeds['roc_auc']['max']:.3f}), and its paired score "
    f"{_seeds['paired']['mean']:.3f} (standard deviation {_seeds['paired']['std']:.3f}); the primary seed's "
    f"ROC-AUC is {format_estimate(metrics['models'][primary]['overall']['roc_auc'])} over id blocks. A "
    "difference between heads smaller than the seed spread is not shown by this training."))

# %% [markdown]
# ### What the text alone gives away
#
# A blind control never sees the frame that goes with the text: `text_only` and
# `clip_text_only` read one text alone, `pairwise_text` the two texts of a frame, `flags_only`
# the counts and flags the text decides alone, and the
# controls of chapter 07 score the primary head against a stranger's frame, the texts by a
# masked and by a causal language model, and an object swap by the rest of its story. Two were
# aimed at chance by the construction itself and say so below: `text_only` is the filter's own recipe and
# `mlm_plausibility` the score that chose the edits. Where a blind control's paired score lies
# above chance with its whole interval, the negatives of that kind can be told from the
# aligned texts by the text itself (an odd word, a swap that reads wrong), so a model's paired score against
# them does not show that it looked at the frame. The control table above has the numbers;
# in words:

# %%
display(Markdown("\n".join(f"- {sentence}" for sentence in db.blind_findings(metrics))))

# %% [markdown]
# The extended head reads inputs the text alone decides (whether and how much the text names
# objects and relations, how many sentences, phrases and questions it gives). The flags-only
# control of chapter 06 reads those and nothing else: if it is better than chance, part of the
# extended head's result can be text cues, and only what the head adds beyond the control shows
# that it used the frame.

# %%
if finding := db.beyond_text_finding(metrics):
    display(Markdown(finding))

# %% [markdown]
# Being at chance has to be shown, not read off an interval that covers 0.5 (a small test split
# always gives one): each blind control's paired score and ROC-AUC gets two one-sided tests
# against chance plus or minus a margin (chapter 07). Its verdict is **equivalent to chance**,
# **better than chance** (the text gives the negatives away), **worse than chance**, or **not
# shown** (the split cannot tell).

# %%
eq = boot["equivalence"]
blind = [m for m, info in metrics["models"].items() if info.get("kind") in ("text_only", "blind_control")]
display(pd.concat([equivalence_table(metrics), equivalence_table(metrics, "models", blind)]))
lines = []
for name, info in [*metrics["controls"].items(), *((m, metrics["models"][m]) for m in blind)]:
    found = [v["verdict"] for part in info["equivalence"].values() for v in part.values()]
    lines.append(f"- `{name}`: " + ", ".join(f"{found.count(v)} {v}" for v in VERDICTS if found.count(v))
                 + f" (of {len(found)}; margin {eq['margin']}, each test at {eq['alpha']}).")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ### The head against each evidence alone
#
# Every evidence is also a model of its own (its score thresholded on the validation split).
# The head earns its place only if it beats the best of them by more than the test split's
# uncertainty: the difference is paired (both models with the same id blocks left out),
# and the test split tells the two apart only when its interval excludes zero.

# %%
from helpers.training import load_predictions

singles = [m for m, info in metrics["models"].items() if info.get("kind") == "single_score"]
display(summary_table(metrics).loc[[primary, *singles], ["roc_auc", "macro_f1"]])
display(Markdown(" ".join(db.evidence_findings(metrics, db.validation_scores(load_predictions(ctx.paths))))))

# %% [markdown]
# ### The hardest kind of negative
#
# The head's paired score against each kind of negative (each frame's own text scored above
# its negative of that kind), the headline per kind. A low value says which construction of
# negatives the evidences see least. Each frame gets a negative of every kind that applies to
# it, so the kinds are compared on the test frames that have all of them (`common`); each
# kind over every frame it applies to is shown beside, on sets of frames that differ.

# %%
from helpers.evaluation import NEGATIVE_TYPES, common_group

head_paired = metrics["models"][primary]["paired"]
shown = [t for t in NEGATIVE_TYPES if t in head_paired]
display(pd.DataFrame({
    "paired score, common frames": {t: format_estimate(head_paired.get(common_group(t))) for t in shown},
    "common frames": {t: head_paired.get(common_group(t), {}).get("frames", 0) for t in shown},
    "paired score, every frame of the kind": {t: format_estimate(head_paired[t]) for t in shown},
    "frames of the kind": {t: head_paired[t].get("frames") for t in shown},
}).rename_axis("negative type"))
hardest = db.negative_type_finding(metrics)
if hardest:
    display(Markdown(hardest))

# %% [markdown]
# ### What each part is worth (chapter 09)
#
# The ablations, on the same test pairs: each subset of the evidences with its own head, the
# chain-of-thought boxes in place of the detector, the original study's rules (its scores
# alone, its training alone, and both), and the
# evidence read from the tags. The oracle detector replays the labelling rule on some kinds
# of negative, so its headroom is the difference with those negatives left out (last column).

# %%
ablations = ab.read_ablations(ctx.paths)
if ablations is None:
    display(Markdown("Chapter 09 has not run: no ablation results."))
else:
    display(ab.ablation_table(ablations, "roc_auc"))
    display(Markdown("\n".join(f"- {sentence}" for sentence in ab.ablation_findings(ablations))))

# %% [markdown]
# ### Evidence beyond COCO (chapters 02 and 03)
#
# Most of what a segment names is not a COCO category, and no action is. Two evidences look
# further when the profile switches them on: OWL-ViT queried with the text's own entity
# phrases (chapter 02) and BLIP-VQA answering yes/no questions built from the text
# (chapter 03). The study's three-score head stays the replication; `fusion_extended` also
# reads these scores, beside the two baselines that read the same inputs (`_extended`, tuned
# on validation like the head), and chapter 09 trains a head on every subset of the evidences. The
# paired gain says, per kind of negative, where a subset ranks more frames' own text above
# their negative than the study's three do.

# %%
from helpers.fusion import NEW_EVIDENCE, evidence_enabled

switched = {section: evidence_enabled(ctx.cfg, section) for section in NEW_EVIDENCE}
display(Markdown("In this profile: " + "; ".join(
    f"`{section}` evidence **{'on' if on else 'off'}**" for section, on in switched.items()) + "."
    + ("" if all(switched.values()) else " An evidence that is off has no column, no subset and no gain below; the "
       "profile's YAML says why (the `quick` profile leaves the questions off for its 30-minute CPU budget).")))
extended = [m for m in ("fusion_extended", "logistic_regression_extended", "gradient_boosting_extended", primary)
            if m in metrics["models"]]
display(summary_table(metrics).loc[extended, ["roc_auc", "macro_f1"]])
display(pd.Series({m: ", ".join(metrics["models"][m]["features"]) for m in extended}, name="inputs").to_frame())
if ablations is not None and ablations.get("paired_gains"):
    display(ab.paired_gain_table(ablations))

# %% [markdown]
# ### How much the verdicts move (chapter 09)
#
# Per perturbation of the frame or the text, on the profile's sample of test pairs: on how
# many pairs it applied, how far P(aligned) moved, the share of decisions that flipped, and
# the change chapter 09 stated beforehand against the change measured. Only perturbations
# that change what the pipeline reads are measured; a text with nothing to edit is counted,
# not scored as unchanged.

# %%
robustness = ab.read_robustness(ctx.paths)
if robustness is None:
    display(Markdown("Chapter 09 has not run: no robustness results."))
else:
    summary = ab.robustness_summary(robustness)
    shown = ["kind", "perturbation", "pairs", "not_applicable", "mean |change| probability", "decisions_flipped",
             "expected_score", "expected_pairs", "direction", "measured", "verdict"]
    display(summary[shown].style.format({"mean |change| probability": "{:.3f}", "decisions_flipped": "{:.0%}",
                                         "measured": "{:+.3g}"}, na_rep="-").hide(axis="index"))
    display(Markdown("\n".join(f"- {sentence}" for sentence in ab.robustness_findings(summary))))

# %% [markdown]
# ## Limitations
#
# What these results cannot tell, whatever their values.
#
# - **The labels are built, not judged.** A misaligned pair is another story's text,
#   another frame's text, or the frame's own text with one object or one spatial word
#   swapped. The metrics measure how well these kinds of negative are told apart, not
#   agreement with people judging alignment; chapter 08's audit sheet is where a person can
#   judge a sample of them, and chapter 07 reports those judgements once they exist.
# - **The annotations are taken as they are.** The chain-of-thought boxes were drawn by COCO
#   detectors (DETR-R101 and Mask2Former), and the text was written from them; they are not
#   checked against the frames here, so recall against them is agreement between detectors
#   and the oracle detector is only as good as they are.
# - **Only COCO things are checked by the study's evidence.** Object and spatial evidence only
#   see the categories a COCO detector reports. A text that names nothing among them gives no
#   object evidence, and relations between such things cannot be checked: for those pairs the
#   object and spatial scores say nothing about the frame. The open-vocabulary and question
#   evidence reach further only in the profiles that switch them on, and read the story's
#   tags; a plain text (the verifier's input) gives them fewer phrases and no action questions.
# - **A movie may cross the split.** Stories are split by blocks of neighbouring ids to keep
#   a movie on one side of a split, but a movie can span blocks, so the test split may share
#   movies (and characters) with the training split: the numbers may flatter the verifier
#   on unseen films.
# - **CLIP reads at most 77 tokens.** Every sentence is scored on its own, and a sentence
#   longer than that is cut.
# - **One training run.** The intervals resample the test split's id blocks; they do not
#   include the variation between training runs (one seed).
#
# The sizes behind two of these, for this run:

# %%
from helpers.objects import COCO_CATEGORIES

display(Markdown(
    f"The detector reports {len(COCO_CATEGORIES)} COCO categories; this profile splits the stories by blocks of "
    f"{ctx.cfg['data'].get('block_size', '?')} neighbouring ids."
    + (" This is a smoke run: synthetic data and random weights, so every number above is meaningless; it only "
       "shows that the study executes end to end." if ctx.is_smoke else "")))

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
