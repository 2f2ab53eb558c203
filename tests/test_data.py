"""Tests for helpers.data: story and chain-of-thought parsing, validation, loading, tables.

The real rows in tests/fixtures/storyreasoning pin the parser to the dataset as
it is (story 3920: 17 segments, 48 boxes, 3 mismatched closing tags); small hand-made
texts cover each kind of malformed input. Loading is tested on tiny parquet files in the
Hub schema; the Hub itself is replaced by local stand-ins (no network here).
"""

from __future__ import annotations

import io
import re
import sys
import types
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import data, pairs, tags
from helpers.config import MissingAssetError
from helpers.data import (
    CorruptFrameError,
    frame_bytes,
    frame_image,
    load_external_test,
    load_stories,
    parse_dataset,
    story_index,
    validate_dataset,
)
from helpers.pairs import entity_table, segment_table, story_table
from helpers.tags import (
    StoryFormatError,
    edit_segment,
    parse_chain_of_thought,
    parse_row,
    parse_story,
    strip_tags,
    validate_story,
)

from conftest import FIXTURES
STORY_3920 = (FIXTURES / "story_3920" / "story.txt").read_text(encoding="utf-8")
COT_3920 = (FIXTURES / "story_3920" / "chain_of_thought.md").read_text(encoding="utf-8")
PARTIALS = sorted((FIXTURES / "partial").glob("*_TRUNCATED.txt"))


def read_partial(path: Path) -> tuple[str, int, str, str]:
    """(story_id, frame_count, story text, chain-of-thought text) of a truncated fixture."""
    text = path.read_text(encoding="utf-8")
    header = re.search(r"story_id=(\d+) split=\w+ frame_count=(\d+)", text)
    story = text.split("=== STORY (first 1500 chars) ===", 1)[1].split("=== CHAIN_OF_THOUGHT", 1)[0]
    cot = text.split("=== CHAIN_OF_THOUGHT (first 1500 chars) ===", 1)[1]
    return header.group(1), int(header.group(2)), story, cot


def assert_consistent(segment: tags.Segment) -> None:
    """Plain text is the tag-stripped text, and every mention's offsets point at its text."""
    assert segment.plain == strip_tags(segment.tagged)
    assert "<" not in segment.plain and "  " not in segment.plain
    for m in (*segment.mentions, *segment.actions, *segment.locations):
        assert segment.plain[m.start : m.end] == m.text


# ------------------------------------------------------------------ real story 3920


def test_story_3920_has_17_intact_segments():
    segments = parse_story(STORY_3920)
    assert [s.frame for s in segments] == list(range(1, 18))
    for segment in segments:
        assert_consistent(segment)
        assert 300 < len(segment.plain) < 800
    first = segments[0]
    assert first.plain.startswith("In the sterile environment of a sparse room filled with cardboard boxes")
    assert [m.text for m in first.mentions[:3]] == ["cardboard boxes", "a blue blanket", "a table"]
    assert first.mentions[1].ids == ("obj5",) and first.mentions[1].kind == "obj"
    assert first.mentions[2].kind == "bg"  # <gdo bg26>a table</gdo>
    assert [(m.text, m.ids) for m in first.locations] == [
        ("neutral lighting", ("bg1",)),
        ("simple, minimalistic architecture", ("bg2",)),
    ]
    them = next(m for m in segments[3].mentions if m.text == "them")
    assert them.ids == ("char1", "char4") and them.kind == "char"


def test_mismatched_closing_tags_keep_the_segment():
    assert len(re.findall(r"<gda [^>]*>[^<]*</gdo>", STORY_3920)) == 3
    by_frame = {s.frame: s for s in parse_story(STORY_3920)}
    for frame, action, following in [
        (4, "stands", "stands in the hallway. Alex looks alert"),
        (6, "points a gun", "points a gun back at James. The hallway turns into a standoff"),
        (11, "lies motionless", "lies motionless on the floor, injured and in pain. A handbag"),
    ]:
        segment = by_frame[frame]
        assert action in [a.text for a in segment.actions]
        assert following in segment.plain
        assert len(segment.mentions) == segment.tagged.count("<gdo ")
        assert len(segment.actions) == segment.tagged.count("<gda ")
        assert_consistent(segment)


def test_chain_of_thought_3920_has_48_boxes():
    cot = parse_chain_of_thought(COT_3920)
    assert sorted(cot.frames) == list(range(1, 18))
    assert cot.skipped_rows == 0 and cot.skip_reasons == {}
    entities = [e for f in cot.frames.values() for e in (*f.characters, *f.objects)]
    assert len(entities) == 48 and all(e.box is not None for e in entities)
    assert Counter(e.kind for e in entities) == {"char": 21, "obj": 17, "bg": 10}
    frame1 = cot.frames[1]
    assert frame1.characters[0] == tags.Entity(
        id="char1", kind="char", name="James", description="Man with a neutral look", box=(318.0, 48.0, 345.0, 135.0)
    )
    assert [(e.id, e.kind, e.name) for e in frame1.objects] == [
        ("obj1", "obj", ""),
        ("obj5", "obj", ""),
        ("bg26", "bg", ""),
        ("bg29", "bg", ""),
    ]
    assert frame1.setting[0] == {
        "Setting Element": "Location",
        "Description": "A sparse room",
        "Mood": "Neutral",
        "Time": "Unknown",
        "Narrative Function": "Establishes setting",
    }
    # the Narrative Structure table after the last frame is not read as a frame
    assert all(len(f.setting) == 3 for f in cot.frames.values())


def test_story_3920_validates_and_cites_ids_without_rows():
    story = parse_row({"story_id": "3920", "frame_count": 17, "story": STORY_3920, "chain_of_thought": COT_3920})
    assert validate_story(story.story_id, 17, story.segments, story.cot, n_images=17) == []
    segments = segment_table([story])
    assert len(segments) == 17
    # <gdl bg1>neutral lighting</gdl> in frame 1 has no row in the chain of thought
    assert segments.set_index("frame").loc[1, "n_unannotated_ids"] >= 1
    stories = story_table([story]).iloc[0]
    assert (stories.n_segments, stories.n_cot_frames, stories.n_boxes) == (17, 17, 48)
    assert (stories.n_char, stories.n_obj, stories.n_bg, stories.n_lm) == (21, 17, 10, 0)


def test_entity_table_maps_descriptions_to_coco():
    story = parse_row({"story_id": "3920", "frame_count": 17, "story": STORY_3920, "chain_of_thought": COT_3920})
    entities = entity_table([story])
    assert len(entities) == 48
    assert entities.has_box.all() and (entities.box_w > 0).all() and (entities.box_h > 0).all()
    coco = dict(zip(entities.description, entities.coco))
    assert coco["Table"] == "dining table" and coco["Cell phone"] == "cell phone"
    assert pd.isna(coco["Blue blanket"]) and coco["Man with a neutral look"] == "person"
    first = entities.iloc[0]
    assert (first.id, first.box_w, first.box_h) == ("char1", 27.0, 87.0)


def test_story_1831_parses_without_its_chain_of_thought():
    segments = parse_story((FIXTURES / "story_1831" / "story.txt").read_text(encoding="utf-8"))
    assert [s.frame for s in segments] == list(range(1, 20))
    walls = next(m for m in segments[0].mentions if m.text == "walls")
    assert walls.ids == ("bg1", "bg2", "bg3") and walls.kind == "bg"
    for segment in segments:
        assert_consistent(segment)


@pytest.mark.parametrize("path", PARTIALS, ids=lambda p: p.stem)
def test_truncated_fixtures_parse_and_fail_validation(path):
    story_id, frame_count, story_text, cot_text = read_partial(path)
    segments = parse_story(story_text)
    cot = parse_chain_of_thought(cot_text)
    assert [s.frame for s in segments] == list(range(1, len(segments) + 1))
    for segment in segments:
        assert_consistent(segment)
    assert segments[-1].plain.endswith("...")  # the cut segment has no </gdi> and is kept
    assert 1 <= len(cot.frames) < frame_count
    problems = validate_story(story_id, frame_count, segments, cot)
    assert any(p.startswith("missing segments:") for p in problems)
    assert any(p.startswith("missing chain-of-thought frames:") for p in problems)


def test_truncated_table_row_is_counted_not_parsed():
    _, _, _, cot_text = read_partial(FIXTURES / "partial" / "story_1726_TRUNCATED.txt")
    cot = parse_chain_of_thought(cot_text)
    assert cot.skip_reasons == {"wrong cell count": 1}  # "| bg1 | Wooden wall on the right | Setting | None |..."
    assert cot.frames[2].objects == ()
    assert cot.frames[2].characters[0].box == (95.0, 13.0, 266.0, 239.0)


def test_robot_characters_keep_kind_char():
    _, _, _, cot_text = read_partial(FIXTURES / "partial" / "story_308_TRUNCATED.txt")
    cot = parse_chain_of_thought(cot_text)
    assert cot.frames[1].characters[0].name == "C-3PO" and cot.frames[1].characters[0].kind == "char"
    assert cot.frames[2].characters == ()  # a table with a header and no rows
    assert cot.frames[2].objects[0].kind == "bg"


# ------------------------------------------------------------------- malformed story


@pytest.mark.parametrize("text", ["", "   \n", "A story without any frame tags."])
def test_story_without_segments_raises(text):
    with pytest.raises(StoryFormatError, match="empty|no <gdi"):
        parse_story(text)


def test_duplicate_frame_numbers_raise():
    with pytest.raises(StoryFormatError, match="two <gdi image2> segments"):
        parse_story("<gdi image1>a</gdi><gdi image2>b</gdi><gdi image2>c</gdi>")


def test_segments_out_of_order_are_sorted():
    segments = parse_story("<gdi image3>three</gdi>\n<gdi image1>one</gdi><gdi image2>two</gdi>")
    assert [(s.frame, s.plain) for s in segments] == [(1, "one"), (2, "two"), (3, "three")]


def test_missing_closing_gdi_ends_at_next_segment_or_end():
    segments = parse_story("<gdi image1>first <gdo obj1>cup</gdo>\n<gdi image2>second <gdo obj2>a lamp")
    assert [s.plain for s in segments] == ["first cup", "second a lamp"]
    assert segments[1].mentions[0].text == "a lamp"  # an unclosed tag ends with the segment


def test_unclosed_stray_and_unknown_tags():
    text = (
        "<gdi image1><gdo zz9>It</gdo> moved </gda> past <gdo char2>Ann <gda char2>waving</gda> "
        "and <gdo>someone</gdo>.  \n Then <gdl lm1>the  tower</gdl>.</gdi>"
    )
    (segment,) = parse_story(text)
    assert segment.plain == "It moved past Ann waving and someone. Then the tower."
    assert [(m.text, m.kind) for m in segment.mentions] == [("It", "other"), ("Ann", "char"), ("someone", "other")]
    assert segment.mentions[2].ids == ()
    assert [(a.text, a.ids) for a in segment.actions] == [("waving", ("char2",))]
    assert [(m.text, m.kind) for m in segment.locations] == [("the tower", "lm")]
    assert_consistent(segment)


def test_whitespace_inside_tags_is_trimmed_from_mentions():
    segment = tags.parse_segment("<gdo char1>  James \n</gdo>'s <gdo obj3> </gdo>hat", 1)
    assert segment.plain == "James 's hat"
    assert (segment.mentions[0].text, segment.mentions[0].start, segment.mentions[0].end) == ("James", 0, 5)
    assert segment.mentions[1].text == "" and segment.mentions[1].start == segment.plain.index("hat")


def test_edit_segment_changes_text_inside_a_tag():
    segment = tags.parse_segment("He holds <gdo obj9>a cell phone</gdo>, <gda char1>smiling</gdo>.", 9)
    mention = segment.mentions[0]
    edited = edit_segment(segment, mention.start, mention.end, "a cup")
    assert edited.tagged == "He holds <gdo obj9>a cup</gdo>, <gda char1>smiling</gdo>."
    assert edited.plain == "He holds a cup, smiling."
    assert edited.mentions[0].text == "a cup" and edited.mentions[0].ids == ("obj9",)
    start = segment.plain.index("phone")
    with pytest.raises(ValueError, match="crosses a tag"):
        edit_segment(segment, start, segment.plain.index("smiling") + 3, "x")
    with pytest.raises(ValueError, match="not a word span"):
        edit_segment(segment, 2, 4, "x")  # " h" starts on a space


# -------------------------------------------------------------- malformed chain of thought

GARBLED_COT = """## Image 1

### Characters
| Bounding Box | Name | Character ID | Description |
|---|---|---|---|
| 1,2,30,40 | Ann | char1 | A woman |
| 1,2,30 | Bob | char2 | Bad box: three numbers |
| 10,10,5,5 | Cy | char3 | Bad box: x2 < x1 |
| a,b,c,d | Di | char4 | Bad box: not numbers |
|  | Ed | char5 | No box given |
| 1,2,3,4 | Fay |  | Missing id |
| 1,2,3,4 | Gus | char7 |
| 1,2,3,4 | Hal | char8 | Extra | cell |

### Objects
| Object  ID | Description | Bounding Box |
|-----------|-------------|--------------|
| obj1 | Cup | [5, 6, 7.5, 8] |
| bg2 | Wall | 0,0,100,50 |
| lm3 | Tower | not a box |

### Setting
| Setting Element | Description |
|---|---|
| Location | Kitchen |
| Broken row |

## Image 2

### Characters
| Name | Description |
|---|---|
| Ivy | No id column |

## Image 1

### Objects
| Object ID | Description | Bounding Box |
|---|---|---|
| obj9 | Duplicate section | 1,1,2,2 |

## Image 3:

## Narrative Structure

## Image 4

### Objects
| Object ID | Description | Bounding Box |
|---|---|---|
| obj4 | After the narrative | 1,1,2,2 |
"""


def test_garbled_rows_are_skipped_and_counted():
    cot = parse_chain_of_thought(GARBLED_COT)
    assert sorted(cot.frames) == [1, 2, 3]  # nothing after ## Narrative Structure
    frame1 = cot.frames[1]
    assert [(e.id, e.name, e.box) for e in frame1.characters] == [
        ("char1", "Ann", (1.0, 2.0, 30.0, 40.0)),
        ("char5", "Ed", None),
    ]
    assert [(e.id, e.kind, e.box) for e in frame1.objects] == [
        ("obj1", "obj", (5.0, 6.0, 7.5, 8.0)),
        ("bg2", "bg", (0.0, 0.0, 100.0, 50.0)),
    ]
    assert frame1.setting == ({"Setting Element": "Location", "Description": "Kitchen"},)
    assert cot.skip_reasons == {
        "bad box": 4,
        "missing or bad id": 1,
        "wrong cell count": 3,
        "missing id column": 1,
        "duplicate image section": 1,
    }
    assert cot.skipped_rows == 10
    assert cot.frames[3] == tags.FrameAnnotation(frame=3, characters=(), objects=(), setting=())


def test_empty_chain_of_thought_has_no_frames():
    cot = parse_chain_of_thought("")
    assert cot.frames == {} and cot.skipped_rows == 0


# ------------------------------------------------------------------------- validation


def test_validate_story_reports_each_mismatch():
    segments = parse_story("<gdi image1>a</gdi><gdi image2>b</gdi><gdi image5>e</gdi>")
    cot = parse_chain_of_thought("## Image 1\n## Image 3\n")
    problems = validate_story("s7", 3, segments, cot, n_images=4)
    assert problems == [
        "bad story id: 's7' is not a number",
        "missing segments: frames 3 of 3",
        "unexpected segments: frames 5 beyond 1..3",
        "missing chain-of-thought frames: frames 2 of 3",
        "image count mismatch: 4 images for frame_count 3",
    ]
    assert validate_story("7", 0, segments, cot) == ["bad frame_count: 0"]


# ---------------------------------------------------------------------------- loading


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (16, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def story_row(story_id: int, frames: int = 2, *, corrupt: bool = False, images: int | None = None) -> dict:
    story = "".join(f"<gdi image{k}><gdo char1>Ann</gdo> in frame {k}.</gdi>\n" for k in range(1, frames + 1))
    cot = "".join(
        f"## Image {k}\n### Characters\n| Character ID | Name | Description | Bounding Box |\n"
        f"|---|---|---|---|\n| char1 | Ann | A woman | 1,1,{k + 5},6 |\n\n"
        for k in range(1, frames + 1)
    )
    pictures = [{"bytes": jpeg((40 * k, 0, 0)), "path": None} for k in range(1, (images or frames) + 1)]
    if corrupt:
        pictures[-1] = {"bytes": b"\xff\xd8 not a jpeg", "path": None}
    return {
        "story_id": str(story_id),
        "images": pictures,
        "frame_count": frames,
        "chain_of_thought": cot,
        "story": story,
    }


def write_shards(folder: Path, split: str, shards: list[list[dict]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rows in enumerate(shards):
        path = folder / f"{split}-{i:05d}-of-{len(shards):05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        paths.append(path)
    return paths


def test_load_local_folder_keeps_images_undecoded(tmp_path):
    write_shards(tmp_path / "src", "train", [[story_row(i) for i in range(3)], [story_row(i) for i in range(3, 6)]])
    write_shards(tmp_path / "src", "test", [[story_row(100 + i) for i in range(2)]])
    cfg = {"source": str(tmp_path / "src"), "n_stories": 4, "hub_external_test": True}
    ds = load_stories(cfg, cache_dir=tmp_path / "cache")
    assert ds["story_id"][:] == ["0", "1", "2", "3"]
    assert ds.features["images"].feature.decode is False
    row = ds[1]
    assert set(row["images"][0]) == {"bytes", "path"}
    image = frame_image(row, 2)
    assert image.mode == "RGB" and image.size == (16, 8)
    assert frame_bytes(row["images"], 2) == story_row(1)["images"][1]["bytes"]
    assert story_index(ds) == {"0": 0, "1": 1, "2": 2, "3": 3}

    external = load_external_test(cfg, cache_dir=tmp_path / "cache")
    assert external["story_id"][:] == ["100", "101"]
    assert load_external_test({**cfg, "hub_external_test": False}) is None


def test_frame_image_rejects_corrupt_and_missing_frames():
    row = story_row(1, frames=2, corrupt=True)
    assert frame_image(row, 1).size == (16, 8)
    with pytest.raises(CorruptFrameError, match="frame 2 cannot be decoded"):
        frame_image(row, 2)
    with pytest.raises(CorruptFrameError, match="frame 3 requested but the story has 2 images"):
        frame_image(row, 3)
    with pytest.raises(CorruptFrameError, match="no image bytes"):
        frame_bytes([{"bytes": None, "path": None}], 1)


def test_parse_dataset_excludes_and_explains(tmp_path):
    broken = story_row(4)
    broken["story"] = "no frame tags at all"
    rows = [
        story_row(1),
        story_row(2, images=3),
        story_row(3, corrupt=True),
        broken,
        story_row(1),
        story_row(5, frames=3),
    ]
    write_shards(tmp_path / "src", "train", [rows])
    ds = load_stories({"source": str(tmp_path / "src"), "n_stories": None}, cache_dir=tmp_path / "cache")

    stories, excluded = parse_dataset(ds)
    assert [s.story_id for s in stories] == ["1", "3", "5"]
    assert excluded.to_dict("records") == [
        {"story_id": "2", "reason": "image count mismatch", "detail": "3 images for frame_count 2"},
        {"story_id": "4", "reason": "story format", "detail": "story has no <gdi imageN> segment"},
        {"story_id": "1", "reason": "duplicate story id", "detail": "the id occurs earlier in the dataset"},
    ]
    valid, excluded = validate_dataset(ds, check_images=True)
    assert valid == ["1", "5"]
    corrupt = excluded[excluded.reason == "corrupt frame"]
    assert corrupt.to_dict("records") == [
        {"story_id": "3", "reason": "corrupt frame", "detail": "frame 2 cannot be decoded (UnidentifiedImageError)"}
    ]


def test_synthetic_source_is_generated_once(tmp_path, monkeypatch):
    calls = []

    def make_dataset(out_dir, *, n_stories=12, seed=42, **options):  # helpers.smoke.synthetic's signature
        calls.append((n_stories, seed, options))
        write_shards(Path(out_dir), "train", [[story_row(i) for i in range(n_stories)]])

    generator = types.SimpleNamespace(make_dataset=make_dataset, VERSION=1)
    monkeypatch.setitem(sys.modules, "helpers.smoke.synthetic", generator)
    cfg = {"source": "synthetic", "n_stories": 3, "synthetic": {"frames": [4, 6]}}
    assert len(load_stories(cfg, cache_dir=tmp_path, seed=7)) == 3
    assert len(load_stories(cfg, cache_dir=tmp_path, seed=7)) == 3
    assert calls == [(3, 7, {"frames": [4, 6]})]
    generator.VERSION = 2  # a new generator: the same options are generated anew, not read from the cache
    assert len(load_stories(cfg, cache_dir=tmp_path, seed=7)) == 3
    assert calls == [(3, 7, {"frames": [4, 6]})] * 2
    with pytest.raises(ValueError, match="needs a cache_dir"):
        load_stories(cfg)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A Hub repo of three 4-row train shards served from local files; records downloads."""
    import huggingface_hub

    repo = tmp_path / "repo"
    shards = write_shards(repo / "data", "train", [[story_row(4 * s + i) for i in range(4)] for s in range(3)])
    names = ["README.md", *(f"data/{p.name}" for p in reversed(shards))]
    downloads = []

    def hf_hub_download(repo_id, filename, *, repo_type):
        assert (repo_id, repo_type) == (data.HUB_DATASET, "dataset")
        downloads.append(filename)
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(data, "hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id, repo_type: names)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return repo, downloads


def test_hub_downloads_only_the_shards_needed(fake_hub, tmp_path):
    _, downloads = fake_hub
    ds = load_stories({"source": "hub", "n_stories": 5}, cache_dir=tmp_path / "cache")
    assert downloads == ["data/train-00000-of-00003.parquet", "data/train-00001-of-00003.parquet"]
    assert ds["story_id"][:] == ["0", "1", "2", "3", "4"]


def offline(monkeypatch, snapshot):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)


def test_offline_without_cache_raises_missing_asset(tmp_path, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def snapshot(*args, **kwargs):
        raise LocalEntryNotFoundError("nothing cached")

    offline(monkeypatch, snapshot)
    with pytest.raises(MissingAssetError) as err:
        load_stories({"source": "hub", "n_stories": 5}, cache_dir=tmp_path)
    message = str(err.value)
    assert data.HUB_DATASET in message and "HF_HOME" in message and "PROFILE=smoke" in message
    assert not data.dataset_available({"source": "hub", "n_stories": 5})
    assert data.dataset_available({"source": "synthetic", "n_stories": 5})
    assert not data.dataset_available({"source": str(tmp_path), "n_stories": 5})


def test_offline_uses_a_cached_prefix_of_shards(fake_hub, tmp_path, monkeypatch):
    repo, _ = fake_hub
    (repo / "data" / "train-00002-of-00003.parquet").unlink()  # only the first two shards cached
    offline(monkeypatch, lambda *args, **kwargs: str(repo))
    assert len(load_stories({"source": "hub", "n_stories": 6}, cache_dir=tmp_path / "cache")) == 6
    assert data.dataset_available({"source": "hub", "n_stories": 6})
    assert not data.dataset_available({"source": "hub", "n_stories": 6, "hub_external_test": True})
    with pytest.raises(MissingAssetError, match="2 shard\\(s\\) with 8 rows"):
        load_stories({"source": "hub", "n_stories": None}, cache_dir=tmp_path / "cache")
    with pytest.raises(MissingAssetError, match="first 9 stories"):
        load_stories({"source": "hub", "n_stories": 9}, cache_dir=tmp_path / "cache")


def test_fingerprint_follows_content_not_file_names(tmp_path):
    rows = [story_row(i) for i in range(3)]
    write_shards(tmp_path / "a", "train", [rows])
    write_shards(tmp_path / "b", "train", [rows[:2], rows[2:]])
    changed = [*rows[:2], {**rows[2], "images": [rows[2]["images"][0], {"bytes": jpeg((1, 2, 3)), "path": None}]}]
    write_shards(tmp_path / "c", "train", [changed])
    prints = [data.dataset_fingerprint(load_stories({"source": str(tmp_path / d), "n_stories": None},
                                                    cache_dir=tmp_path / "cache")) for d in "abc"]
    assert prints[0] == prints[1] != prints[2]


def test_frame_size_reads_the_header_and_box_area_fraction(tmp_path):
    write_shards(tmp_path / "src", "train", [[story_row(7, frames=2)]])
    ds = load_stories({"source": str(tmp_path / "src"), "n_stories": None}, cache_dir=tmp_path / "cache")
    assert data.frame_size(ds[0], 1) == (16, 8)
    with pytest.raises(data.CorruptFrameError):
        data.frame_size(story_row(1, corrupt=True), 2)
    stories, _ = data.parse_dataset(ds)
    entities = pairs.entity_table(stories)
    # boxes 1,1,6,6 and 1,1,7,6 on 16x8 frames
    assert pairs.box_area_fraction(entities, ds).round(4).tolist() == [round(25 / 128, 4), round(30 / 128, 4)]


def test_sample_frames_is_reproducible_and_only_boxed_frames():
    stories = [tags.parse_row(story_row(i, frames=3)) for i in range(4)]
    first = pairs.sample_frames(stories, n=5, seed=1)
    assert [(s.story_id, f) for s, f in first] == [(s.story_id, f) for s, f in pairs.sample_frames(stories, n=5, seed=1)]
    assert len(first) == 5 and all(s.cot.frames[f].characters[0].box for s, f in first)


def test_pair_frames_reads_each_used_frame_once_and_marks_corrupt_ones(tmp_path):
    write_shards(tmp_path / "src", "train", [[story_row(1, frames=2), story_row(2, frames=2, corrupt=True)]])
    ds = load_stories({"source": str(tmp_path / "src"), "n_stories": None}, cache_dir=tmp_path / "cache")
    pairs = pd.DataFrame({"story_id": ["1", "1", "2", "2"], "frame": [2, 2, 1, 2]})
    frames = data.pair_frames(pairs, [ds])
    assert set(frames) == {("1", 2), ("2", 1), ("2", 2)}
    assert frames[("1", 2)] == story_row(1)["images"][1]["bytes"]
    assert frames[("2", 2)] == b"\xff\xd8 not a jpeg"
    with pytest.raises(ValueError, match="in no dataset"):
        data.pair_frames(pd.DataFrame({"story_id": ["9"], "frame": [1]}), [ds])
    with pytest.raises(ValueError, match="two of the datasets"):
        data.pair_frames(pairs, [ds, ds])


def test_load_study_data_needs_chapter_01_and_loads_the_external_split(tmp_path):
    write_shards(tmp_path / "src", "train", [[story_row(1), story_row(2)]])
    write_shards(tmp_path / "src", "test", [[story_row(50)]])
    cfg = {"seed": 1, "data": {"source": str(tmp_path / "src"), "n_stories": None, "hub_external_test": True}}
    with pytest.raises(FileNotFoundError, match="chapter 01"):
        data.load_study_data(cfg, tmp_path / "pairs.parquet", tmp_path / "cache")
    pd.DataFrame({"pair_id": ["1-1-pos"], "story_id": ["1"], "frame": [1]}).to_parquet(tmp_path / "pairs.parquet")
    study = data.load_study_data(cfg, tmp_path / "pairs.parquet", tmp_path / "cache")
    assert [len(ds) for ds in study.datasets] == [2, 1]
    assert [s.story_id for s in study.stories] == ["1", "2", "50"]
    assert study.pairs["pair_id"].tolist() == ["1-1-pos"]
