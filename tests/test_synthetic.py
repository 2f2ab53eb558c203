"""Tests for helpers.smoke.synthetic: the Hub's schema, the real text format, true boxes and relations.

The format checks read the parquet with pyarrow and the text with small regexes of their
own, so they do not depend on the project's parser; one test then runs helpers.data on it.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, UnidentifiedImageError

from helpers.objects import COCO_CATEGORIES, char_category, to_coco
from helpers.smoke.synthetic import DATA_FILE, KINDS, RELATIONS, make_dataset

SIZE = (576, 240)
CHAR_COLUMNS = "| Character ID | Name | Description | Emotions | Actions | Narrative Function | Bounding Box |"
OBJ_COLUMNS = "| Object ID | Description | Function | Interaction | Narrative Function | Bounding Box |"
SETTING_COLUMNS = "| Setting Element | Description | Mood | Time | Narrative Function |"


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default dataset: 12 stories of 5-8 frames, seed 42."""
    return make_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


# ----------------------------------------------------------------------------- helpers


def _sections(cot: str) -> dict[int, str]:
    """``## Image N`` sections of a chain of thought, by frame."""
    body = cot.split("\n## Narrative Structure")[0]
    parts = re.split(r"^## Image (\d+)\n", body, flags=re.MULTILINE)
    return {int(n): text for n, text in zip(parts[1::2], parts[2::2])}


def _rows_of(section: str) -> dict[str, tuple[str, tuple[int, int, int, int]]]:
    """Entity rows of a section: id -> (description, box)."""
    out = {}
    for line in section.splitlines():
        if m := re.fullmatch(r"\| ((?:char|obj|bg)\d+) \| (.*) \|", line):
            cells = m.group(2).split(" | ")
            description = cells[1] if m.group(1).startswith("char") else cells[0]
            out[m.group(1)] = (description, tuple(int(v) for v in cells[-1].split(",")))
    return out


def _segments(story: str) -> dict[int, str]:
    """Tagged text of each ``<gdi imageN>`` segment, by frame."""
    return {int(n): text for n, text in re.findall(r"<gdi image(\d+)>\n(.*?)\n</gdi>", story, flags=re.DOTALL)}


# Two consecutive single-id mentions in one sentence, and what lies between them.
_PAIR = re.compile(r"<gdo ([a-z]+\d+)>[^<]*</gdo>((?:[^<.;!?]|<gda[^>]*>[^<]*</gd[ao]>)*?)(?=<gdo ([a-z]+\d+)>)")
# Words ending the text between two mentions -> the relation they state.
_PHRASES = [
    ("is sitting on", "sitting on"), ("sits on", "sitting on"), ("in front of", "in front of"),
    ("next to", "next to"), ("beside", "beside"), ("to the left of", "left of"), ("to the right of", "right of"),
    ("behind", "behind"), ("under", "under"), ("holding", "holding"), ("holds", "holding"), ("on", "on"),
]  # fmt: skip


def _stated_relations(segment: str) -> list[tuple[str, str, str]]:
    """``(subject id, relation, object id)`` for each "<subject> ... <phrase> <object>" of a segment."""
    found = []
    for m in _PAIR.finditer(segment):
        between = re.sub(r"<[^>]+>", "", m.group(2)).strip()
        for phrase, relation in _PHRASES:
            if between == phrase or between.endswith((" " + phrase, "," + phrase)):
                found.append((m.group(1), relation, m.group(3)))
                break
    return found


def _holds(relation: str, s: tuple[int, ...], o: tuple[int, ...]) -> bool:
    """A plain reading of each relation on two boxes (y grows downwards)."""
    sx1, sy1, sx2, sy2 = s
    ox1, oy1, ox2, oy2 = o
    x_overlap = min(sx2, ox2) - max(sx1, ox1)
    y_overlap = min(sy2, oy2) - max(sy1, oy1)
    s_cx, s_cy, o_cx, o_cy = (sx1 + sx2) / 2, (sy1 + sy2) / 2, (ox1 + ox2) / 2, (oy1 + oy2) / 2
    narrower = min(sx2 - sx1, ox2 - ox1)
    if relation == "on":  # over it, resting on its top part
        return x_overlap >= 0.5 * narrower and s_cy < o_cy and oy1 - 3 <= sy2 <= oy2
    if relation == "sitting on":  # over the seat, bottom within it, top above it
        return ox1 <= s_cx <= ox2 and oy1 < sy2 <= oy2 and sy1 < oy1
    if relation == "under":  # between its legs, top below its top
        return x_overlap >= 0.5 * narrower and s_cy > o_cy and sy1 >= oy1
    if relation in ("next to", "beside"):  # a small gap, level with each other
        gap = math.hypot(max(0, ox1 - sx2, sx1 - ox2), max(0, oy1 - sy2, sy1 - oy2))
        return gap <= 0.5 * (max(sx2 - sx1, sy2 - sy1) + max(ox2 - ox1, oy2 - oy1)) / 2 and y_overlap > 0
    if relation == "left of":
        return s_cx < o_cx and sx1 < ox1
    if relation == "right of":
        return s_cx > o_cx and sx2 > ox2
    if relation == "behind":  # overlapping, standing further back (bottom higher in the frame)
        return x_overlap > 0 and sy2 < oy2 - 3
    if relation == "in front of":
        return x_overlap > 0 and sy2 > oy2 + 3
    if relation == "holding":  # touching
        return x_overlap > 0 and y_overlap > 0
    raise AssertionError(f"no check for {relation!r}")


# ----------------------------------------------------------------------------- schema and images


def test_schema_is_the_hubs(path: Path) -> None:
    assert path.name == DATA_FILE
    schema = pq.read_schema(path)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.names == ["story_id", "images", "frame_count", "chain_of_thought", "story"]
    assert [schema.field(n).type for n in schema.names] == [
        pa.string(), pa.list_(image), pa.int32(), pa.string(), pa.string(),
    ]  # fmt: skip


def test_datasets_reads_images_back(path: Path, tmp_path: Path) -> None:
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path))
    assert ds.features["images"] == datasets.List(datasets.Image())
    assert ds.features["frame_count"] == datasets.Value("int32")
    frame = ds[0]["images"][0]
    assert isinstance(frame, Image.Image) and frame.size == SIZE


def test_frames_decode_to_rgb_of_the_size(rows: list[dict]) -> None:
    for row in rows:
        assert len(row["images"]) == row["frame_count"]
        for entry in row["images"]:
            image = Image.open(io.BytesIO(entry["bytes"]))
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", SIZE)


def test_image_size_option(tmp_path: Path) -> None:
    row = pq.read_table(make_dataset(tmp_path, n_stories=1, frames=(2, 2), image_size=(400, 200))).to_pylist()[0]
    for entry in row["images"]:
        assert Image.open(io.BytesIO(entry["bytes"])).size == (400, 200)
    for section in _sections(row["chain_of_thought"]).values():
        for _, (x1, y1, x2, y2) in _rows_of(section).values():
            assert 0 <= x1 < x2 <= 399 and 0 <= y1 < y2 <= 199


def test_characters_are_drawn_where_their_boxes_say(rows: list[dict]) -> None:
    """Inside a character's box, at chest height, the frame shows the figure, not the room."""
    for row in rows:
        for frame, section in _sections(row["chain_of_thought"]).items():
            image = Image.open(io.BytesIO(row["images"][frame - 1]["bytes"]))
            wall, floor = image.getpixel((2, 2)), image.getpixel((2, SIZE[1] - 3))
            for entity_id, (_, (x1, y1, x2, y2)) in _rows_of(section).items():
                if entity_id.startswith("char"):
                    pixel = image.getpixel(((x1 + x2) // 2, y1 + 11 * (y2 - y1) // 20))
                    for background in (wall, floor):
                        assert max(abs(a - b) for a, b in zip(pixel, background)) > 24, (row["story_id"], frame)


# ----------------------------------------------------------------------------- determinism and options


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_differs(path: Path, tmp_path: Path) -> None:
    assert _sha(make_dataset(tmp_path / "again")) == _sha(path)
    other = pq.read_table(make_dataset(tmp_path / "other", seed=43)).to_pylist()
    assert _sha(tmp_path / "other" / DATA_FILE) != _sha(path)
    assert [r["story"] for r in other] != [r["story"] for r in pq.read_table(path).to_pylist()]


def test_corrupt_and_malformed_change_only_what_they_say(rows: list[dict], tmp_path: Path) -> None:
    faulty = pq.read_table(make_dataset(tmp_path, corrupt_frames=3, malformed_stories=2)).to_pylist()
    corrupt = 0
    for clean, bad in zip(rows, faulty):
        assert (bad["story_id"], bad["frame_count"], bad["chain_of_thought"]) == (
            clean["story_id"], clean["frame_count"], clean["chain_of_thought"],
        )  # fmt: skip
        for good_frame, bad_frame in zip(clean["images"], bad["images"]):
            if good_frame != bad_frame:
                corrupt += 1
                with pytest.raises(UnidentifiedImageError):
                    Image.open(io.BytesIO(bad_frame["bytes"]))
    assert corrupt == 3
    malformed = [bad for clean, bad in zip(rows, faulty) if bad["story"] != clean["story"]]
    assert len(malformed) == 2
    for row in malformed:
        assert len(_segments(row["story"])) == row["frame_count"] - 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_stories": 0},
        {"frames": (0, 3)},
        {"frames": (6, 5)},
        {"image_size": (200, 80)},
        {"image_size": (200, 300)},
        {"malformed_stories": 13},
        {"n_stories": 1, "frames": (2, 2), "corrupt_frames": 3},
    ],
)
def test_bad_arguments_raise(kwargs: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_dataset(tmp_path, **kwargs)
    assert not (tmp_path / DATA_FILE).exists()


# ----------------------------------------------------------------------------- text format


def test_story_ids_are_contiguous_and_movies_are_id_blocks(rows: list[dict]) -> None:
    assert [r["story_id"] for r in rows] == [str(i) for i in range(1000, 1012)]
    blocks = [rows[i : i + 4] for i in range(0, 12, 4)]  # four stories per movie
    locations = []
    for block in blocks:
        names = set(re.findall(r"^\| char\d+ \| (\w+) \|", "".join(r["chain_of_thought"] for r in block), re.M))
        assert 2 <= len(names) <= 4  # the movie's cast: three people and maybe a pet
        places = {re.search(r"^\| Location \| ([^|]+) \|", r["chain_of_thought"], re.M).group(1) for r in block}
        assert len(places) == 1
        walls = {Image.open(io.BytesIO(r["images"][0]["bytes"])).getpixel((2, 2)) for r in block}
        assert max(abs(a - b) for w in walls for v in walls for a, b in zip(w, v)) <= 6
        locations.append(places.pop())
    assert len(set(locations)) == 3


def test_text_layout_matches_the_real_data(rows: list[dict]) -> None:
    for row in rows:
        n = row["frame_count"]
        assert 5 <= n <= 8
        segments = _segments(row["story"])
        assert list(segments) == list(range(1, n + 1))
        assert row["story"] == "\n\n".join(f"<gdi image{i}>\n{t}\n</gdi>" for i, t in segments.items())
        cot = row["chain_of_thought"]
        assert list(_sections(cot)) == list(range(1, n + 1))
        assert cot.count("\n\n\n## Image ") == n - 1 and cot.startswith("## Image 1\n\n### Characters\n")
        assert "\n\n\n## Narrative Structure\n\n| Narrative Phase | Description | Key Events | Images |\n" in cot
        for section in _sections(cot).values():
            lines = section.splitlines()
            for title, columns in (("### Characters", CHAR_COLUMNS), ("### Objects", OBJ_COLUMNS),
                                   ("### Setting", SETTING_COLUMNS)):  # fmt: skip
                i = lines.index(title)
                assert lines[i + 1] == columns and re.fullmatch(r"(\|-+)+\|", lines[i + 2])
                for line in lines[i + 3 :]:
                    if not line:
                        break
                    assert line.count(" | ") == columns.count(" | ")


def test_segment_lengths_are_like_the_real_data(rows: list[dict]) -> None:
    for row in rows:
        for tagged in _segments(row["story"]).values():
            assert 300 <= len(re.sub(r"<[^>]+>", "", tagged)) <= 700


def test_boxes_are_inside_the_frame(rows: list[dict]) -> None:
    n = 0
    for row in rows:
        for section in _sections(row["chain_of_thought"]).values():
            for _, (x1, y1, x2, y2) in _rows_of(section).values():
                assert 0 <= x1 < x2 <= SIZE[0] - 1 and 0 <= y1 < y2 <= SIZE[1] - 1
                n += 1
    assert n > 100


def test_mentions_have_rows_except_the_real_quirks(rows: list[dict]) -> None:
    """Objects cited in a frame have a row there; characters at least somewhere in the
    story (cited while off screen, as real stories do); <gdl> settings never have one."""
    quirks = {"absent character": 0, "closing tag": 0, "empty characters": 0, "empty objects": 0}
    for row in rows:
        sections = _sections(row["chain_of_thought"])
        story_ids = {i for s in sections.values() for i in _rows_of(s)}
        for frame, tagged in _segments(row["story"]).items():
            frame_ids = set(_rows_of(sections[frame]))
            for ids in re.findall(r"<gdo ([^>]+)>", tagged):
                for entity_id in ids.split():
                    if entity_id.startswith("char") and entity_id not in frame_ids:
                        assert entity_id in story_ids
                        quirks["absent character"] += 1
                    else:
                        assert entity_id in frame_ids, (row["story_id"], frame, entity_id)
            assert not set(re.findall(r"<gdl (\w+)>", tagged)) & story_ids
            quirks["closing tag"] += len(re.findall(r"<gda [^>]+>[^<]*</gdo>", tagged))
            quirks["empty characters"] += "|--------------|\n\n### Objects" in sections[frame]
            quirks["empty objects"] += "|--------------|\n\n### Setting" in sections[frame]
    assert all(quirks.values()), quirks


def test_stated_relations_hold_on_the_boxes(rows: list[dict]) -> None:
    checked: dict[str, int] = dict.fromkeys(RELATIONS, 0)
    frames_with_relations = frames = 0
    for row in rows:
        sections = _sections(row["chain_of_thought"])
        for frame, tagged in _segments(row["story"]).items():
            boxes = {i: box for i, (_, box) in _rows_of(sections[frame]).items()}
            stated = _stated_relations(tagged)
            frames += 1
            frames_with_relations += bool(stated)
            for subject, relation, obj in stated:
                assert _holds(relation, boxes[subject], boxes[obj]), (row["story_id"], frame, subject, relation, obj)
                checked[relation] += 1
    assert all(checked.values()), checked  # every relation the generator knows is stated somewhere
    assert frames_with_relations >= 0.6 * frames


def test_synthetic_relations_hold_under_the_spatial_rules(rows: list[dict]) -> None:
    """The generator lays its boxes out for helpers.spatial's rules, so this is a consistency
    check (the generator and the rules agree on every stated relation), not independent
    evidence that the rules are right: tests/test_spatial.py pins those on hand-made boxes."""
    from helpers import spatial

    canonical = {"next to": "near", "beside": "near", "sitting on": "on"}
    for row in rows:
        sections = _sections(row["chain_of_thought"])
        for frame, tagged in _segments(row["story"]).items():
            boxes = {i: box for i, (_, box) in _rows_of(sections[frame]).items()}
            for subject, relation, obj in _stated_relations(tagged):
                relation = canonical.get(relation, relation)
                assert spatial.relation_holds(relation, boxes[subject], boxes[obj], SIZE), (row["story_id"], frame)


# ----------------------------------------------------------------------------- vocabulary


@pytest.mark.parametrize("category", KINDS)
def test_every_name_maps_to_its_category_through_the_lexicon(category: str) -> None:
    expected = category if category in COCO_CATEGORIES else None
    for description, noun in KINDS[category].names:
        assert (to_coco(description), to_coco(noun)) == (expected, expected)


def test_characters_are_people_or_pets(rows: list[dict]) -> None:
    categories = set()
    for row in rows:
        for section in _sections(row["chain_of_thought"]).values():
            for entity_id, (description, _) in _rows_of(section).items():
                if entity_id.startswith("char"):
                    categories.add(char_category(description))
    assert "person" in categories and categories <= {"person", "dog", "cat"}


# ----------------------------------------------------------------------------- helpers.data


def test_parses_with_helpers_data(rows: list[dict]) -> None:
    from helpers import tags

    for row in rows:
        segments = tags.parse_story(row["story"])
        cot = tags.parse_chain_of_thought(row["chain_of_thought"])
        assert [s.frame for s in segments] == list(range(1, row["frame_count"] + 1))
        assert sorted(cot.frames) == list(range(1, row["frame_count"] + 1))
        assert cot.skipped_rows == 0
        assert tags.validate_story(row["story_id"], row["frame_count"], segments, cot, len(row["images"])) == []
        for segment in segments:
            annotation = cot.frames[segment.frame]
            ids = {e.id for e in (*annotation.characters, *annotation.objects)}
            assert {i for m in segment.mentions if m.kind == "obj" for i in m.ids} <= ids
            assert all(e.box is not None for e in (*annotation.characters, *annotation.objects))
            assert len(segment.mentions) == segment.tagged.count("<gdo ")
            assert len(segment.actions) == segment.tagged.count("<gda ")


def _outside_determiners(segments) -> tuple[int, int]:
    """How many ``obj`` mentions have their determiner before the tag, and how many there are."""
    from helpers.pairs import phrase_start

    mentions = [(s, m) for s in segments for m in s.mentions if m.kind == "obj"]
    return sum(phrase_start(s.plain, m.start, m.text) < m.start for s, m in mentions), len(mentions)


def test_determiners_stand_outside_the_tag_about_as_often_as_in_the_real_data(rows: list[dict]) -> None:
    """The real stories often tag the noun only ("The <gdo obj4>refrigerator</gdo>"); the smoke
    data must too, or the smoke run never exercises an edit of the words before a tag."""
    from conftest import real_story_texts

    from helpers import tags

    real = [_outside_determiners(tags.parse_story(text)) for text in real_story_texts().values()]
    real_out, real_n = map(sum, zip(*real))
    synthetic_out, synthetic_n = _outside_determiners(s for row in rows for s in tags.parse_story(row["story"]))
    assert real_n >= 20 and synthetic_n >= 100
    assert 0.3 < real_out / real_n < 0.7
    assert abs(synthetic_out / synthetic_n - real_out / real_n) < 0.12, (synthetic_out, synthetic_n, real_out, real_n)


# ----------------------------------------------------------------------------- the real data's shape


def _frame_counts(folder: Path, **kwargs) -> list[int]:
    path = make_dataset(folder, n_stories=24, image_size=(160, 96), **kwargs)
    return pq.read_table(path, columns=["frame_count"]).column("frame_count").to_pylist()


def test_frames_mode_skews_the_frame_counts_and_stays_in_range(tmp_path: Path) -> None:
    import statistics

    low = _frame_counts(tmp_path / "low", frames=(5, 22), frames_mode=5)
    high = _frame_counts(tmp_path / "high", frames=(5, 22), frames_mode=22)
    real = _frame_counts(tmp_path / "real", frames=(5, 22), frames_mode=12)  # StoryReasoning: median 13
    assert all(5 <= n <= 22 for n in low + high + real)
    assert statistics.median(low) <= 11 < 16 <= statistics.median(high)
    assert 11 <= statistics.median(real) <= 15
    assert _frame_counts(tmp_path / "again", frames=(5, 22), frames_mode=12) == real


def test_widths_vary_per_story_within_the_range(tmp_path: Path) -> None:
    path = make_dataset(tmp_path, n_stories=6, frames=(2, 2), image_size=(576, 240), widths=(560, 580))
    rows = pq.read_table(path).to_pylist()
    sizes = [{Image.open(io.BytesIO(e["bytes"])).size for e in row["images"]} for row in rows]
    assert all(len(s) == 1 for s in sizes)  # one width per story
    widths = [next(iter(s))[0] for s in sizes]
    assert all(560 <= w <= 580 for w in widths) and len(set(widths)) > 1
    assert {next(iter(s))[1] for s in sizes} == {240}


@pytest.mark.parametrize("kwargs", [{"frames": (5, 22), "frames_mode": 23}, {"widths": (200, 580)},
                                    {"widths": (580, 560)}])
def test_bad_shape_options_raise(kwargs: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_dataset(tmp_path, n_stories=1, **kwargs)
