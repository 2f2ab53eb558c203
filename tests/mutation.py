"""Mutation testing of the rules that decide the study's numbers (``make mutation``).

Runs mutmut (configured in ``pyproject.toml``, ``[tool.mutmut]``) over the functions listed
in :data:`TARGETS`, then prints one row per module: mutants, killed, survived, listed as
equivalent, and the score = killed / (mutants - equivalent). A mutant counts as killed when
a test failed, crashed or timed out on it. Equivalent mutants (no behaviour changes, so no
test can kill them) are listed with a reason in ``tests/mutation_equivalent.txt``.

Run it with the mutation venv (``make mutation`` builds it; mutmut is a dev tool, not in
``requirements.lock``)::

    .venv-mutation/bin/python tests/mutation.py [--keep] [--max-children N] [module ...]

``--keep`` reuses an earlier ``mutants/`` folder (mutmut then only reruns what changed);
by default it starts from scratch so the table is a fresh measurement. Survivors that are
not listed as equivalent are printed below the table, for ``mutmut show NAME``.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "tests" / "mutation_equivalent.txt"

#: module -> the functions measured (mutmut names a mutant ``helpers.<module>.x_<function>__mutmut_<n>``).
TARGETS: dict[str, tuple[str, ...]] = {
    # the spatial rules: relation_holds, its geometry helpers, one function per relation, and extraction
    # (not _phrase_table: it runs once, at import, before any mutant is switched on)
    "spatial": (
        "relation_holds", "_coords", "_box", "_diagonal", "_x_overlap", "_intersection", "_gap", "_supported",
        "_rests_on", "_left_of", "_right_of", "_above", "_below", "_on", "_under", "_in", "_near",
        "_in_front_of", "_behind", "_holding",
        "extract_relations", "_read_relations", "_read_entities", "_mention_category", "_pick_subject",
        "_pick_object", "_actors", "_word_count",
    ),
    # chapter 02's lexicon (every function under the two cached lookups) and its reader of named things
    "objects": (
        "_phrase_category", "_description_category", "_alternatives", "_head", "_head_chunk", "_lookup_suffix",
        "_singular_forms", "_is_possessor", "named_things", "_non_coco_noun", "mention_categories",
    ),
    # metrics, threshold, the percentile interval over id blocks, and the paired score
    "evaluation": (
        "_check_inputs", "point_metrics", "_ratio", "weighted_metrics", "tune_threshold", "_clean", "_estimate",
        "bootstrap_metrics", "bootstrap_difference", "_cluster_draws", "paired_outcomes", "_paired_resampled",
        "bootstrap_paired", "bootstrap_paired_difference",
    ),
    # splits, the mix of negatives, and the edit of an object swap
    "pairs": ("_id_number", "_blocks", "id_blocks", "split_stories", "_other_story", "make_pairs",
              "swap_object_phrase", "plural", "is_plural", "article"),
}  # fmt: skip

_STATUS = re.compile(r"^\s*(helpers\.\S+): (.+?)\s*$")
_NAME = re.compile(r"^helpers\.(\w+)\.x_(\w+?)__mutmut_\d+$")
KILLED = {"killed", "timeout", "segfault"}


def patterns(modules: list[str]) -> list[str]:
    return [f"helpers.{m}.x_{f}__mutmut_*" for m in modules for f in TARGETS[m]]


def equivalents() -> dict[str, str]:
    """Mutant name -> reason, from ``tests/mutation_equivalent.txt`` ("name  # reason" lines)."""
    listed = {}
    for line in EQUIVALENT.read_text(encoding="utf-8").splitlines():
        name, _, reason = line.partition("#")
        if name.strip():
            listed[name.strip()] = reason.strip()
    return listed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"some of {list(TARGETS)} (default: all)")
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ from an earlier run")
    parser.add_argument("--max-children", type=int, default=None, help="parallel mutants (default: CPU count)")
    args = parser.parse_args(argv)
    modules = args.modules or list(TARGETS)
    if unknown := set(modules) - set(TARGETS):
        parser.error(f"unknown module(s) {sorted(unknown)}: expected some of {list(TARGETS)}")
    mutmut = str(Path(sys.executable).parent / "mutmut")
    if not args.keep:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    run = [mutmut, "run", *(["--max-children", str(args.max_children)] if args.max_children else []),
           *patterns(modules)]
    subprocess.run(run, cwd=ROOT, check=True)
    out = subprocess.run([mutmut, "results", "--all", "true"], cwd=ROOT, check=True, capture_output=True, text=True)

    listed = equivalents()
    wanted = patterns(modules)
    counts: dict[str, Counter] = {m: Counter() for m in modules}
    survivors: list[str] = []
    statuses = {}  # name -> status, each mutant once
    for line in out.stdout.splitlines():
        match = _STATUS.match(line)
        if match and any(fnmatch.fnmatch(match[1], p) for p in wanted):
            statuses[match[1]] = match[2]
    for name, status in statuses.items():
        module = _NAME.match(name)[1]
        counts[module]["mutants"] += 1
        if name in listed:
            counts[module]["equivalent"] += 1
        elif status in KILLED:
            counts[module]["killed"] += 1
        else:
            counts[module]["survived"] += 1
            survivors.append(f"{name}: {status}")
    if stale := [n for n in listed if n.split(".")[1] in modules and not any(fnmatch.fnmatch(n, p) for p in wanted)]:
        print(f"warning: {len(stale)} listed equivalent mutant(s) are not among the targets: {stale[:5]}")

    print(f"\n{'module':<20}{'mutants':>9}{'killed':>8}{'survived':>10}{'equivalent':>12}{'score':>8}")
    for module, c in counts.items():
        scored = c["mutants"] - c["equivalent"]
        score = f"{100 * c['killed'] / scored:.1f}%" if scored else "n/a"
        print(f"{'helpers/' + module + '.py':<20}{c['mutants']:>9}{c['killed']:>8}{c['survived']:>10}"
              f"{c['equivalent']:>12}{score:>8}")
    print("\nscore = killed / (mutants - equivalent); equivalent mutants: tests/mutation_equivalent.txt")
    if survivors:
        print(f"\nsurvivors not listed as equivalent ({len(survivors)}; see `mutmut show NAME`):")
        print("\n".join(f"  {s}" for s in survivors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
