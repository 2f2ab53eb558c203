"""Join the per-chapter evidence tables onto the pairs: ``features/features.parquet``.

Chapters 02, 03 and 04 write the parts (``objects`` and ``openvocab``; ``clip`` and
``questions``; ``spatial``), keyed by ``pair_id``. A part a profile switches off is removed
(:func:`drop_part`), so a table never carries the evidence of an earlier run's settings. ``assemble`` joins whichever parts exist, so every chapter can refresh the
table and later chapters read a single file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .config import Paths
from .io import atomic_write_parquet

__all__ = ["PARTS", "DEVELOPMENT_SPLITS", "development", "development_stories", "require_development", "write_part",
           "drop_part", "assemble", "load_features"]

PARTS = ("objects", "openvocab", "clip", "questions", "spatial")

#: The splits every exploratory table, figure and choice of chapters 02-05 reads. The test
#: split is looked at once, from chapter 07 on.
DEVELOPMENT_SPLITS = ("train", "val")


def development(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a pair table (with a ``split`` column) in the train and validation splits."""
    if "split" not in table:
        raise ValueError("the table has no split column: cannot keep the test split out")
    return table[table["split"].isin(DEVELOPMENT_SPLITS)]


def development_stories(pairs: pd.DataFrame) -> set[str]:
    """Ids of the stories in the train and validation splits, to filter per-frame tables."""
    return set(development(pairs)["story_id"].astype(str))


def require_development(table: pd.DataFrame, what: str) -> None:
    """Raise ``ValueError`` when ``table`` has a ``split`` column with rows outside train and
    validation: the exploratory helpers of chapters 02-05 (``what``) refuse test rows."""
    if "split" in table:
        other = sorted(set(table["split"].astype(str)) - set(DEVELOPMENT_SPLITS))
        if other:
            raise ValueError(f"{what} explores the development splits only {DEVELOPMENT_SPLITS}, got rows of {other}: "
                             "pass helpers.features.development(table); the test split is read from chapter 07 on")


def write_part(paths: Paths, part: str, table: pd.DataFrame) -> Path:
    """Save one chapter's evidence (must have a unique ``pair_id`` column) and refresh the joined table."""
    if part not in PARTS:
        raise ValueError(f"unknown feature part {part!r}: expected one of {PARTS}")
    if "pair_id" not in table or table["pair_id"].duplicated().any():
        raise ValueError(f"{part} features need a unique pair_id column")
    path = atomic_write_parquet(table, paths.features / f"{part}.parquet")
    assemble(paths)
    return path


def drop_part(paths: Paths, part: str) -> bool:
    """Remove one chapter's evidence (the profile switched it off) and refresh the joined table;
    True when there was a part to remove."""
    if part not in PARTS:
        raise ValueError(f"unknown feature part {part!r}: expected one of {PARTS}")
    path = paths.features / f"{part}.parquet"
    existed = path.exists()
    path.unlink(missing_ok=True)
    if paths.pairs.exists():
        assemble(paths)
    return existed


def assemble(paths: Paths) -> pd.DataFrame:
    """Join the existing parts onto ``pairs.parquet`` and write ``features.parquet``.

    Raises if a part does not cover every pair: a feature table with holes would silently
    shrink the training set.
    """
    if not paths.pairs.exists():
        raise FileNotFoundError(f"{paths.pairs} is missing: run chapter 01 (data) first")
    table = pd.read_parquet(paths.pairs)
    for part in PARTS:
        path = paths.features / f"{part}.parquet"
        if not path.exists():
            continue
        extra = pd.read_parquet(path)
        missing = set(table["pair_id"]) - set(extra["pair_id"])
        if missing:
            raise ValueError(f"{path.name} lacks {len(missing)} pairs (e.g. {sorted(missing)[:3]}): rerun its chapter")
        clash = (set(extra.columns) & set(table.columns)) - {"pair_id"}
        table = table.merge(extra.drop(columns=sorted(clash)), on="pair_id", how="left", validate="one_to_one")
    atomic_write_parquet(table, paths.features_table)
    return table


def load_features(paths: Paths, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read ``features.parquet``, checking that the ``required`` columns are present."""
    if not paths.features_table.exists():
        raise FileNotFoundError(f"{paths.features_table} is missing: run chapters 01-04 first")
    table = pd.read_parquet(paths.features_table)
    absent = [c for c in required if c not in table.columns]
    if absent:
        raise ValueError(f"features.parquet lacks {absent}: rerun the chapter that computes them")
    return table
