"""StoryReasoning stories: loading (Hub, local folder, synthetic), frames, validation, and the study's data.

Rows are loaded from the Hub or from local parquet files with the frames left as
undecoded bytes until :func:`frame_image` asks for one; their text is parsed by
:mod:`helpers.tags`. :func:`parse_dataset` keeps the stories whose text, chain of thought
and frames agree; :func:`load_study_data` is where the chapters after 01 start.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .config import MissingAssetError, hub_reachable
from .io import stable_hash
from .tags import ParsedStory, StoryFormatError, parse_row, validate_story

if TYPE_CHECKING:
    import datasets
    from PIL import Image as PILImage

HUB_DATASET = "daniel3303/StoryReasoning"
TEXT_COLUMNS = ["story_id", "frame_count", "chain_of_thought", "story"]


class CorruptFrameError(ValueError):
    """A frame's image bytes are missing or cannot be decoded."""


# -------------------------------------------------------------------------- validation


def parse_dataset(ds: datasets.Dataset, *, check_images: bool = False) -> tuple[list[ParsedStory], pd.DataFrame]:
    """Parse and validate every row; return the usable stories and a table of exclusions.

    The exclusions table has one row per problem: ``story_id``, ``reason`` (e.g.
    ``"missing segments"``, ``"story format"``, ``"corrupt frame"``, ``"duplicate story
    id"``) and ``detail``. With ``check_images`` every frame is decoded once (slow on
    the full dataset); otherwise only the number of images is checked.
    """
    from tqdm.auto import tqdm

    counts = _image_counts(ds)
    text_rows = ds.select_columns(TEXT_COLUMNS)
    stories: list[ParsedStory] = []
    excluded: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, row in enumerate(tqdm(text_rows, desc="parsing stories", unit="story")):
        story_id = str(row["story_id"])
        problems: list[str] = []
        if story_id in seen:
            problems.append("duplicate story id: the id occurs earlier in the dataset")
        seen.add(story_id)
        try:
            story = parse_row(row)
        except StoryFormatError as err:
            problems.append(f"story format: {err}")
        else:
            problems += validate_story(story_id, story.frame_count, story.segments, story.cot, counts[i])
        if check_images:
            problems += _corrupt_frames(ds[i]["images"])
        if problems:
            for problem in problems:
                reason, _, detail = problem.partition(": ")
                excluded.append({"story_id": story_id, "reason": reason, "detail": detail})
        else:
            stories.append(story)
    return stories, pd.DataFrame(excluded, columns=["story_id", "reason", "detail"])


def validate_dataset(ds: datasets.Dataset, *, check_images: bool = False) -> tuple[list[str], pd.DataFrame]:
    """The ids of the usable stories and the exclusions table (see :func:`parse_dataset`)."""
    stories, excluded = parse_dataset(ds, check_images=check_images)
    return [s.story_id for s in stories], excluded


def _image_counts(ds: datasets.Dataset) -> list[int]:
    """Number of images of each row, read from the Arrow list lengths (no bytes copied)."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(ds.with_format("arrow")["images"])
    return [0 if n is None else n for n in lengths.to_pylist()]


def _corrupt_frames(images: Sequence[Any]) -> list[str]:
    problems = []
    for frame in range(1, len(images) + 1):
        try:
            frame_image(images, frame)
        except CorruptFrameError as err:
            problems.append(f"corrupt frame: {err}")
    return problems


# ----------------------------------------------------------------------------- loading


def _split_files(cfg_data: Mapping[str, Any], split: str, cache_dir: Path | None, seed: int) -> list[Path]:
    """The files of ``split`` (``"train"`` | ``"test"``) from the profile's source: the Hub's
    shards needed for ``n_stories`` rows, else the local (or generated synthetic) folder's."""
    source = str(cfg_data["source"])
    if source == "hub":
        return _hub_split_files(split, cfg_data.get("n_stories"))
    return _local_split_files(_local_dir(source, cfg_data, cache_dir, seed), split)


def load_stories(cfg_data: Mapping[str, Any], cache_dir: Path | None = None, *, seed: int = 42) -> datasets.Dataset:
    """Load the stories a profile's ``data`` section asks for, images left undecoded.

    ``cfg_data["source"]`` is ``"hub"`` (the Hub's ``train`` split), ``"synthetic"``
    (generated once by :func:`helpers.smoke.synthetic.make_dataset` with ``n_stories``, ``seed``
    and the options in ``cfg_data["synthetic"]``, into ``cache_dir/synthetic-<hash of those and
    of the generator's VERSION>``) or a folder of parquet files in the Hub schema (``train-*``/``test-*`` files
    when it holds both splits). ``cfg_data["n_stories"]`` keeps the first N rows (all
    when null); from the Hub only the shards needed for them are downloaded.
    ``cache_dir`` also holds the ``datasets`` Arrow cache; Hub downloads go to the
    Hugging Face cache (``HF_HOME``). Offline with nothing cached raises
    :class:`helpers.config.MissingAssetError`.
    """
    return _load_parquet(_split_files(cfg_data, "train", cache_dir, seed), cfg_data.get("n_stories"), cache_dir)


def load_external_test(
    cfg_data: Mapping[str, Any], cache_dir: Path | None = None, *, seed: int = 42
) -> datasets.Dataset | None:
    """The Hub's own ``test`` split (or a local source's ``test-*`` files) when
    ``cfg_data["hub_external_test"]`` is true, else None. ``n_stories`` caps it too, so
    a quick run stays quick. Raises ``ValueError`` if a local source has no test files.
    """
    if not cfg_data.get("hub_external_test"):
        return None
    source = str(cfg_data["source"])
    files = _split_files(cfg_data, "test", cache_dir, seed)
    if source != "hub" and not files:
        raise ValueError(f"hub_external_test is set but {source!r} has no test-*.parquet files")
    return _load_parquet(files, cfg_data.get("n_stories"), cache_dir)


def dataset_available(cfg_data: Mapping[str, Any]) -> bool:
    """Whether :func:`load_stories` (and :func:`load_external_test` when asked for) can get
    their data: a synthetic source always can, a local folder when it holds parquet
    files, the Hub when it is reachable or its cache holds the shards needed."""
    import huggingface_hub as hf

    source = str(cfg_data["source"])
    if source == "synthetic":
        return True
    if source != "hub":
        return any(Path(source).expanduser().rglob("*.parquet"))
    if not hf.is_offline_mode() and hub_reachable():
        return True
    splits = ["train", "test"] if cfg_data.get("hub_external_test") else ["train"]
    try:
        for split in splits:
            _cached_hub_files(split, cfg_data.get("n_stories"))
    except MissingAssetError:
        return False
    return True


def _load_parquet(files: Sequence[Path], n_stories: int | None, cache_dir: Path | None) -> datasets.Dataset:
    import datasets

    ds = datasets.load_dataset(
        "parquet",
        data_files=[str(f) for f in files],
        split="train",
        cache_dir=str(cache_dir / "datasets") if cache_dir is not None else None,
    )
    if n_stories is not None and n_stories < len(ds):
        ds = ds.select(range(n_stories))
    return ds.cast_column("images", datasets.List(datasets.Image(decode=False)))


def _local_dir(source: str, cfg_data: Mapping[str, Any], cache_dir: Path | None, seed: int) -> Path:
    """The parquet folder of a local source, generating the synthetic one on first use."""
    if source != "synthetic":
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ValueError(f"data source {source!r} is neither 'hub', 'synthetic' nor a folder")
        return folder
    if cache_dir is None:
        raise ValueError("the synthetic source needs a cache_dir to generate its parquet files in")
    from .smoke.synthetic import VERSION, make_dataset

    options = {"seed": seed, **(cfg_data.get("synthetic") or {})}
    if cfg_data.get("n_stories") is not None:
        options["n_stories"] = cfg_data["n_stories"]
    folder = Path(cache_dir) / f"synthetic-{stable_hash({'generator': VERSION, **options})}"
    if not any(folder.rglob("*.parquet")):
        make_dataset(folder, **options)
    return folder


def _split_of_file(name: str) -> str | None:
    """``"data/train-00000-of-00002.parquet"`` -> ``"train"``; None when the name has no split."""
    parts = Path(name).parts
    stem = Path(name).name
    for split in ("train", "test", "validation"):
        if stem.startswith((f"{split}-", f"{split}.")) or split in parts[:-1]:
            return split
    return None


def _local_split_files(folder: Path, split: str) -> list[Path]:
    """Sorted parquet files of ``split`` under ``folder``; all files when none is split-named."""
    files = sorted(folder.rglob("*.parquet"))
    named = [f for f in files if _split_of_file(f.relative_to(folder).as_posix()) is not None]
    if not named:
        return files if split == "train" else []
    return [f for f in named if _split_of_file(f.relative_to(folder).as_posix()) == split]


def _shard_number(name: str) -> tuple[int, int] | None:
    """``"...-00001-of-00004.parquet"`` -> ``(1, 4)``."""
    m = re.search(r"(\d+)-of-(\d+)\.parquet$", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _hub_split_files(split: str, n_rows: int | None) -> list[Path]:
    """Local paths of the first Hub shards of ``split`` holding at least ``n_rows`` rows.

    Online, the repository's files are listed and shards are downloaded in order only
    until the row count (read from each file's parquet footer) reaches ``n_rows``; all
    of them when ``n_rows`` is None. Offline, the same prefix is taken from the cache.
    """
    import huggingface_hub as hf
    import pyarrow.parquet as pq

    remote = None
    if not hf.is_offline_mode() and hub_reachable():
        try:
            remote = hf.list_repo_files(HUB_DATASET, repo_type="dataset")
        except Exception:  # noqa: BLE001 - any failure to list the repo (network, proxy, HTTP): use the cache
            remote = None
    if remote is None:
        return _cached_hub_files(split, n_rows)

    names = sorted(n for n in remote if n.endswith(".parquet") and _split_of_file(n) == split)
    if not names:
        raise ValueError(f"{HUB_DATASET} lists no parquet file for split {split!r}")
    paths, rows = [], 0
    for name in names:
        if n_rows is not None and rows >= n_rows:
            break
        path = Path(hf.hf_hub_download(HUB_DATASET, name, repo_type="dataset"))
        paths.append(path)
        rows += pq.ParquetFile(path).metadata.num_rows
    return paths


def _cached_hub_files(split: str, n_rows: int | None) -> list[Path]:
    """The cached prefix of ``split``'s shards when the Hub cannot be reached."""
    import huggingface_hub as hf
    import pyarrow.parquet as pq
    from huggingface_hub.errors import LocalEntryNotFoundError

    what = f"the Hugging Face dataset {HUB_DATASET} ({split} split"
    what += f", first {n_rows} stories)" if n_rows is not None else ", all shards)"
    try:
        folder = Path(hf.snapshot_download(HUB_DATASET, repo_type="dataset", local_files_only=True))
    except LocalEntryNotFoundError as err:
        raise MissingAssetError(what, cache_var="HF_HOME") from err

    names = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*.parquet")
        if _split_of_file(p.relative_to(folder).as_posix()) == split
    )
    paths, rows, total = [], 0, None
    for expected, name in enumerate(names):
        number = _shard_number(name)
        if number is not None and number[0] != expected:
            break  # a gap: later shards would not be the rows that follow
        total = number[1] if number is not None else None
        if n_rows is not None and rows >= n_rows:
            break
        paths.append(folder / name)
        rows += pq.ParquetFile(folder / name).metadata.num_rows
    enough = rows >= n_rows if n_rows is not None else (total is None or len(paths) == total)
    if not paths or not enough:
        cached = f"{len(paths)} shard(s) with {rows} rows" if paths else "nothing"
        raise MissingAssetError(what, cache_var="HF_HOME", detail=f"The cache holds {cached} of that split.")
    return paths


def story_index(ds: datasets.Dataset) -> dict[str, int]:
    """Row number of each story id, to fetch a story's images."""
    return {str(sid): i for i, sid in enumerate(ds["story_id"])}


def _image_entry(row_or_images: Mapping[str, Any] | Sequence[Any], frame: int) -> Any:
    images = row_or_images["images"] if isinstance(row_or_images, Mapping) else row_or_images
    if not 1 <= frame <= len(images):
        raise CorruptFrameError(f"frame {frame} requested but the story has {len(images)} images")
    return images[frame - 1]


def frame_bytes(row_or_images: Mapping[str, Any] | Sequence[Any], frame: int) -> bytes:
    """The encoded bytes of 1-based ``frame`` (from a row or its ``images`` list), for hashing.

    Accepts the undecoded ``{"bytes", "path"}`` entries of :func:`load_stories` and raw
    ``bytes``. Raises :class:`CorruptFrameError` when the entry holds no bytes.
    """
    entry = _image_entry(row_or_images, frame)
    if isinstance(entry, (bytes, bytearray)):
        return bytes(entry)
    if isinstance(entry, Mapping):
        if entry.get("bytes"):
            return bytes(entry["bytes"])
        if entry.get("path") and Path(entry["path"]).is_file():
            return Path(entry["path"]).read_bytes()
    raise CorruptFrameError(f"frame {frame} has no image bytes ({type(entry).__name__} entry)")


def frame_image(row_or_images: Mapping[str, Any] | Sequence[Any], frame: int) -> PILImage.Image:
    """Decode 1-based ``frame`` to an RGB PIL image; :class:`CorruptFrameError` if it cannot be.

    Also accepts an already decoded PIL image entry.
    """
    from PIL import Image, UnidentifiedImageError

    entry = _image_entry(row_or_images, frame)
    if isinstance(entry, Image.Image):
        return entry.convert("RGB")
    try:
        with Image.open(io.BytesIO(frame_bytes(row_or_images, frame))) as image:
            return image.convert("RGB")  # convert() forces the full decode
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        # the class name only: PIL's messages hold memory addresses, which would make
        # the exclusion table differ from run to run
        raise CorruptFrameError(f"frame {frame} cannot be decoded ({type(err).__name__})") from err


def dataset_fingerprint(ds: datasets.Dataset) -> str:
    """A content hash of the loaded rows (ids, texts and every frame's bytes), in row order.

    Two runs report the same fingerprint exactly when they saw the same data, whatever
    the files were called or where they were cached.
    """
    import hashlib

    h = hashlib.sha1()
    for row in ds.with_format("arrow").iter(batch_size=64):
        for column in ("story_id", "story", "chain_of_thought"):
            for value in row[column].to_pylist():
                h.update(str(value).encode("utf-8"))
                h.update(b"\0")
        for images in row["images"].to_pylist():
            for entry in images or []:
                h.update((entry or {}).get("bytes") or b"")
                h.update(b"\0")
    return h.hexdigest()[:16]


def frame_size(row_or_images: Mapping[str, Any] | Sequence[Any], frame: int) -> tuple[int, int]:
    """``(width, height)`` of a frame, read from its header without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(frame_bytes(row_or_images, frame))) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise CorruptFrameError(f"frame {frame} cannot be decoded ({type(err).__name__})") from err


def pair_frames(pairs: pd.DataFrame, stories: Sequence[datasets.Dataset]) -> dict[tuple[str, int], bytes]:
    """The encoded bytes of every ``(story_id, frame)`` the pairs use, read from the loaded datasets.

    ``stories`` are the datasets of :func:`load_stories` (and :func:`load_external_test`),
    images undecoded. A frame without bytes maps to ``b""``, which the detector and
    CLIP count as undecodable. Raises ``ValueError`` for a story id found in no dataset, or in two.
    """
    where: dict[str, tuple[datasets.Dataset, int]] = {}
    for ds in stories:
        images = ds.select_columns(["images"])
        for story_id, row in story_index(ds).items():
            if story_id in where:
                raise ValueError(f"story {story_id} occurs in two of the datasets given")
            where[story_id] = (images, row)
    wanted: dict[str, list[int]] = {}
    for story_id, frame in zip(pairs["story_id"].astype(str), pairs["frame"].astype(int)):
        wanted.setdefault(story_id, []).append(frame)
    if unknown := sorted(set(wanted) - set(where)):
        raise ValueError(f"{len(unknown)} story id(s) of the pairs are in no dataset given, e.g. {unknown[:3]}")

    out: dict[tuple[str, int], bytes] = {}
    for story_id, frames in wanted.items():
        images, row = where[story_id]
        entries = images[row]["images"]
        for frame in dict.fromkeys(frames):
            try:
                out[(story_id, frame)] = frame_bytes(entries, frame)
            except CorruptFrameError:
                out[(story_id, frame)] = b""
    return out


@dataclass(frozen=True)
class StudyData:
    """What the chapters after 01 start from: the loaded datasets, their usable stories, the pairs."""

    datasets: tuple[datasets.Dataset, ...]  # the study's stories, then the external test when loaded
    stories: tuple[ParsedStory, ...]
    pairs: pd.DataFrame


def load_study_data(cfg: Mapping[str, Any], pairs_path: Path, cache_dir: Path) -> StudyData:
    """Load a profile's datasets (and external test), parse their stories, and read chapter 01's pairs.

    ``cfg`` is the whole profile; ``pairs_path`` is ``paths.pairs``. Raises
    ``FileNotFoundError`` naming chapter 01 when the pairs have not been built.
    """
    if not Path(pairs_path).exists():
        raise FileNotFoundError(f"{pairs_path} is missing: run chapter 01 (data) first")
    seed = int(cfg.get("seed", 42))
    loaded = [load_stories(cfg["data"], cache_dir, seed=seed), load_external_test(cfg["data"], cache_dir, seed=seed)]
    sources = tuple(ds for ds in loaded if ds is not None)
    stories = tuple(story for ds in sources for story in parse_dataset(ds)[0])
    return StudyData(datasets=sources, stories=stories, pairs=pd.read_parquet(pairs_path))
