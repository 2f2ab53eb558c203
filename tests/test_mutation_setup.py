"""``make mutation`` measures what it says: its targets exist, its equivalent-mutant list names
only those targets with a reason each, it runs only fast unit tests, and mutmut stays a dev tool."""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from pathlib import Path

from mutation import TARGETS, equivalents

ROOT = Path(__file__).resolve().parent.parent


def test_every_target_is_an_undecorated_function_of_its_module():
    # mutmut 3 mutates neither decorated functions nor lambdas: a target that became one would
    # silently drop out of the score
    for module, functions in TARGETS.items():
        mod = importlib.import_module(f"helpers.{module}")
        for name in functions:
            if name == "*":
                continue
            function = getattr(mod, name, None)
            assert inspect.isfunction(function), f"helpers.{module}.{name}"
            assert function.__name__ == name and not hasattr(function, "__wrapped__"), f"helpers.{module}.{name}"


def test_equivalent_mutants_name_a_target_and_give_a_reason():
    listed = equivalents()
    assert listed
    for name, reason in listed.items():
        match = re.fullmatch(r"helpers\.(\w+)\.x_(\w+?)__mutmut_\d+", name)
        assert match, name
        module, function = match.groups()
        assert module in TARGETS and ("*" in TARGETS[module] or function in TARGETS[module]), name
        assert len(reason.split()) >= 4, name


def test_mutation_runs_unit_tests_only_and_mutmut_is_no_dependency():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    selected = config["pytest_add_cli_args_test_selection"]
    assert all((ROOT / path).is_file() for path in selected), selected
    assert "tests/test_notebooks.py" not in selected
    assert config["pytest_add_cli_args"][:2] == ["-m", "not slow"]
    assert sorted(config["only_mutate"]) == sorted(f"helpers/{m}.py" for m in TARGETS)
    for requirements in ("requirements.in", "requirements.lock"):
        assert "mutmut" not in (ROOT / requirements).read_text().lower(), requirements
