"""Run the chapters with papermill and render their reports: ``python -m helpers.runner``.

``make run-all PROFILE=...`` and ``make run-one NB=NN`` call this. Each chapter is executed
into ``outputs/<profile>/notebooks/``, rendered to ``outputs/<profile>/reports/``, and timed
(wall and CPU seconds) in ``outputs/<profile>/run.json``, and the run's total time is printed at
the end. The chapters' progress bars and warnings (the kernel's stderr) stream to this terminal
as they run. A failing chapter stops
the run with exit code 1 and a message naming the chapter and the failing cell.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from .config import REPO_ROOT, MissingAssetError, git_commit, load_profile, output_paths, package_versions, update_run_record

__all__ = ["chapters", "preflight", "execute", "run_chapter", "total_time", "cpu_seconds", "main"]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "story-align"

#: jupyter_client's settings for the chapters' kernels: the runner talks to each kernel over local
#: TCP sockets, encrypted with CurveZMQ keys the manager provisions when the kernel declares it can
#: ("auto"; ipykernel's kernels do). Unencrypted, ipykernel warns about it at every start.
KERNEL_CONFIG = {"KernelManager": {"transport_encryption": "auto"}}


def chapters(only: list[str] | None = None) -> list[Path]:
    """The chapter notebooks ``notebooks/NN_*.ipynb`` in order, optionally only those numbered in ``only``."""
    found = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {n.zfill(2) for n in only}
        unknown = wanted - {p.name[:2] for p in found}
        if unknown:
            raise ValueError(f"no chapter numbered {sorted(unknown)} in {NOTEBOOKS_DIR}")
        found = [p for p in found if p.name[:2] in wanted]
    return found


def preflight(cfg: dict) -> None:
    """Stop at once, before any chapter runs, when a real profile's data or weights are unavailable.

    Raises MissingAssetError naming everything that is missing (smoke needs nothing).
    """
    from .clip import CLIP
    from .data import dataset_available
    from .detection import DETECTOR
    from .mlm import CAUSAL_LM, MLM
    from .owlvit import OWLVIT
    from .vqa import VQA
    from .weights import weights_available

    from .config import _default_cache
    from .data import HUB_DATASET

    data_source = cfg["data"]["source"]
    problems = []
    if not dataset_available(cfg["data"]):
        problems.append(f"the dataset {HUB_DATASET if data_source == 'hub' else data_source}")
    # each model the profile uses: its section, its row of the table of models, how it is named when missing
    needed = [("detector", DETECTOR, "the Faster R-CNN weights {!r} (torchvision's cache, TORCH_HOME)"),
              ("clip", CLIP, "the CLIP weights {!r}"),
              ("mlm", MLM, "the masked language model weights {!r} (chapter 01's pair construction)"),
              ("control_lm", CAUSAL_LM, "the control language model weights {!r} (chapter 07's control)")]
    if cfg.get("openvocab", {}).get("enabled"):
        needed.append(("openvocab", OWLVIT, "the OWL-ViT weights {!r} (chapter 02's open-vocabulary evidence)"))
    if cfg.get("questions", {}).get("enabled"):
        needed.append(("questions", VQA, "the BLIP-VQA weights {!r} (chapter 03's question evidence)"))
    problems += [named.format(cfg[section]["weights"]) for section, model, named in needed
                 if not weights_available(model, cfg[section]["weights"])]
    if problems:
        torch_home = os.environ.get("TORCH_HOME") or _default_cache("TORCH_HOME")
        raise MissingAssetError("; ".join(problems), cache_var="HF_HOME",
                                detail=f"Faster R-CNN weights are cached under TORCH_HOME={torch_home}; "
                                       "the dataset and the Hugging Face models (CLIP, the two language models, OWL-ViT, BLIP-VQA) under HF_HOME.")


def execute(nb: Path, executed: Path, parameters: dict, *, stream: TextIO | None = None,
            kernel_name: str = KERNEL_NAME, cwd: Path = NOTEBOOKS_DIR) -> None:
    """Execute ``nb`` into ``executed`` with papermill, writing the kernel's stderr to ``stream``
    as it arrives (default: this process's stderr).

    The chapters' progress bars (tqdm's text bars, written to the kernel's stderr) and their
    warnings thus reach the terminal live, with each loop's rate and time left, instead of
    papermill's cell counter alone. The executed notebook keeps them too; the HTML reports
    filter the progress bars out (``helpers.report``).
    """
    import papermill as pm
    from traitlets.config import Config

    pm.execute_notebook(str(nb), str(executed), parameters=parameters, kernel_name=kernel_name, cwd=str(cwd),
                        progress_bar=False, stderr_file=sys.stderr if stream is None else stream,
                        config=Config(KERNEL_CONFIG))


def run_chapter(nb: Path, profile: str, *, stream: TextIO | None = None) -> float:
    """Execute one chapter (see :func:`execute`) and render its report; return the seconds it took."""
    paths = output_paths(profile)
    executed = paths.notebooks / nb.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        execute(nb, executed, {"profile": profile}, stream=stream)
    finally:
        if executed.exists():  # a failed chapter still gets its report, up to the failing cell
            from .report import render_html

            render_html(executed, paths.reports / f"{nb.stem}.html")
    return time.perf_counter() - t0


def total_time(seconds: float) -> str:
    """Seconds as a reader counts them: "48 s", "4 min 31 s", "1 h 02 min"."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and its finished children (the
    chapters' kernels, reaped when papermill shuts them down): the difference over a chapter
    is that chapter's CPU time, which other processes competing for the CPUs do not inflate."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    from papermill.exceptions import PapermillExecutionError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="smoke | quick | full (default: quick)")
    parser.add_argument("--only", nargs="*", help="chapter numbers to run, e.g. 01 03")
    args = parser.parse_args(argv)

    try:
        cfg = load_profile(args.profile)
        nbs = chapters(args.only)
        if args.profile != "smoke":
            preflight(cfg)
    except (MissingAssetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from .config import device
    from .report import write_index

    paths = output_paths(args.profile)
    if not args.only:  # a full run starts a fresh record; a partial run adds to the last one
        paths.run_json.unlink(missing_ok=True)
    update_run_record(args.profile, profile=args.profile, description=cfg.get("description", ""), parameters=cfg,
                      git_commit=git_commit(), versions=package_versions(), device=str(device()),
                      started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    print(f"Running {len(nbs)} chapter(s) with profile {args.profile!r} -> {paths.root}")
    status, done, started = 0, 0, time.perf_counter()
    for i, nb in enumerate(nbs, start=1):
        print(f"[{i}/{len(nbs)}] {nb.stem}", flush=True)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        try:
            seconds = run_chapter(nb, args.profile)
        except Exception as err:  # any failure stops the run, naming the chapter (and cell when known)
            update_run_record(args.profile, chapters={nb.stem: {"status": "failed", "seconds": time.perf_counter() - t0}})
            where = (f"in cell {err.cell_index} (execution count {err.exec_count}): {err.ename}: {err.evalue}"
                     if isinstance(err, PapermillExecutionError) else f"before running: {type(err).__name__}: {err}")
            print(f"\nChapter {nb.stem} failed {where}\nExecuted notebook: {paths.notebooks / nb.name}", file=sys.stderr)
            status = 1
            break
        update_run_record(args.profile, chapters={nb.stem: {"status": "ok", "seconds": round(seconds, 1),
                                                            "cpu_seconds": round(cpu_seconds() - cpu0, 1)}})
        done += 1
        print(f"    done in {seconds:.0f} s -> {paths.reports / (nb.stem + '.html')}", flush=True)
    update_run_record(args.profile, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    index = write_index(args.profile, paths)
    print(f"Reports: {index}")
    print(f"Total: {total_time(time.perf_counter() - started)} for {done} of {len(nbs)} chapter(s)"
          + ("" if status == 0 else " (stopped at the failing chapter)"), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
