"""Join the per-chapter evidence tables onto the pairs: ``features/features.parquet``.

Chapters 02, 03 and 04 each write one part (``objects``, ``clip``, ``spatial``), keyed by
``pair_id``. ``assemble`` joins whichever parts exist, so every chapter can refresh the
table and later chapters read a single file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .config import Paths
from .io import atomic_write_parquet

__all__ = ["PARTS", "write_part", "assemble", "load_features"]

PARTS = ("objects", "clip", "spatial")


def write_part(paths: Paths, part: str, table: pd.DataFrame) -> Path:
    """Save one chapter's evidence (must have a unique ``pair_id`` column) and refresh the joined table."""
    if part not in PARTS:
        raise ValueError(f"unknown feature part {part!r}: expected one of {PARTS}")
    if "pair_id" not in table or table["pair_id"].duplicated().any():
        raise ValueError(f"{part} features need a unique pair_id column")
    path = atomic_write_parquet(table, paths.features / f"{part}.parquet")
    assemble(paths)
    return path


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
