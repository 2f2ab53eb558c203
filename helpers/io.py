"""Atomic writes, stable hashes and a resumable on-disk cache.

Every file the study produces goes through one of the ``atomic_*`` functions: the bytes
are written to a temporary file in the destination folder and moved into place with
``os.replace``, so a crash leaves either the old file or the new one, never half of one.
Each file gets the mode a plain ``open`` would give it (0644 under the usual umask 022), not
the temporary file's private 0600, so the reports and tables can be read by others.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_parquet",
    "read_json",
    "stable_hash",
    "file_sha1",
    "read_cache",
    "compute_cached",
]


def _umask() -> int:
    """This process's umask (read by setting it and putting it back: there is no other way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders; return the path.

    The file's mode is 0666 less the umask, as for ``open(path, "w")``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600 whatever the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as pretty JSON atomically (non-JSON values are written with ``str``)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """Read a JSON file, or return ``default`` when it does not exist."""
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def atomic_write_parquet(df: "pandas.DataFrame", path: str | os.PathLike) -> Path:  # noqa: F821
    """Write a DataFrame to parquet atomically (index dropped)."""
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


#: The file a randomly initialised model's folder carries: how it was made (seed, configuration).
RANDOM_MARKER = "random_init.json"


def read_random_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of a folder written by :func:`save_random_model`, None when there is none."""
    return read_json(Path(folder) / RANDOM_MARKER)


def save_random_model(folder: str | os.PathLike, marker: dict[str, Any], *parts: Any) -> Path:
    """Save ``parts`` (a model and its tokenizer or processor: anything with ``save_pretrained``)
    and ``marker`` to ``folder``, which appears whole or not at all (written beside it, then
    renamed over whatever was there)."""
    import shutil

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700 whatever the umask
        for part in parts:
            part.save_pretrained(staging)
        atomic_write_json(staging / RANDOM_MARKER, marker)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short hex digest of ``obj``'s canonical JSON: equal inputs give equal keys across runs."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode("utf-8")
    return hashlib.sha1(blob).hexdigest()[:length]


def file_sha1(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes, read in chunks."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_cache(cache_dir: str | os.PathLike) -> "pandas.DataFrame":  # noqa: F821
    """All rows of a :func:`compute_cached` cache folder (an empty frame with a ``key`` column if none)."""
    import pandas as pd

    parts = sorted(Path(cache_dir).glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame({"key": pd.Series([], dtype=str)})
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).drop_duplicates("key", keep="last")


def compute_cached(
    cache_dir: str | os.PathLike,
    keys: Sequence[str],
    compute: Callable[[list[str]], list[dict[str, Any]]],
    *,
    batch_size: int,
    desc: str = "computing",
    flush_every: int = 8,
) -> tuple["pandas.DataFrame", int]:  # noqa: F821
    """Return one row per key, computing only the keys the cache folder does not hold yet.

    ``compute(batch_keys)`` must return one dict per key, in order (the ``key`` column is
    added here). The cache is a folder of parquet parts: rows found there are reused as
    they are, and new rows are written as a new part, atomically, every ``flush_every``
    batches, so an interrupted run resumes where it stopped and no flush rewrites what an
    earlier one wrote. Returns ``(rows in the order of keys, number of keys computed now)``.
    """
    import uuid

    import pandas as pd
    from tqdm.auto import tqdm

    cache_dir = Path(cache_dir)
    cached = read_cache(cache_dir)
    have = set(cached["key"])
    todo = list(dict.fromkeys(k for k in keys if k not in have))
    frames = [cached] if len(cached) else []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal pending
        if pending:
            part = pd.DataFrame(pending)
            frames.append(part)
            pending = []
            atomic_write_parquet(part, cache_dir / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet")

    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    for n, batch in enumerate(tqdm(batches, desc=desc, unit="batch", disable=not batches), start=1):
        rows = compute(batch)
        if len(rows) != len(batch):
            raise ValueError(f"compute returned {len(rows)} rows for {len(batch)} keys")
        pending.extend({"key": k, **row} for k, row in zip(batch, rows))
        if n % flush_every == 0:
            flush()
    flush()

    if not frames:
        return pd.DataFrame({"key": pd.Series([], dtype=str)}), 0
    table = pd.concat(frames, ignore_index=True).drop_duplicates("key", keep="last").set_index("key")
    return table.loc[list(keys)].reset_index(), len(todo)
