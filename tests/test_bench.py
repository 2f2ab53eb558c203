"""The benchmark's bookkeeping: ratios, the table, the JSON document. No timing is asserted."""

from __future__ import annotations

import json
import math

import pytest

from helpers import bench
from helpers.bench import Measurement, bench_document, format_table, ratio, time_per_call, write_bench


def fake_measurements() -> list[Measurement]:
    slow = Measurement("pair scoring", "a forward pass per pair", "8 pairs", 12.0, "s", n=8, repeats=1)
    fast = Measurement("pair scoring", "cached embeddings", "8 pairs", 0.5, "s", n=8, repeats=3)
    one = Measurement("detection", "frames per second", "min_size 240, batch 1", 2.0, "frames/s", n=4, repeats=2)
    four = Measurement("detection", "frames per second", "min_size 240, batch 4", 3.0, "frames/s", n=4, repeats=2)
    return [one, four, ratio("detection", "batching speed-up", one, four, "batch 4 vs 1"), slow, fast,
            ratio("pair scoring", "speed-up", slow, fast),
            Measurement("memory", "peak RSS", "this process", 1234.5, "MiB")]


def test_ratio_is_times_faster_for_seconds_and_for_rates():
    m = fake_measurements()
    assert m[2].value == pytest.approx(1.5) and m[2].unit == "x" and m[2].setting == "batch 4 vs 1"
    assert m[5].value == pytest.approx(24.0) and m[5].setting == "8 pairs vs 8 pairs"


def test_ratio_refuses_mixed_units_and_survives_zero():
    with pytest.raises(ValueError, match="cannot compare"):
        ratio("x", "y", Measurement("x", "a", "", 1.0, "s"), Measurement("x", "b", "", 1.0, "frames/s"))
    assert math.isnan(ratio("x", "y", Measurement("x", "a", "", 1.0, "s"), Measurement("x", "b", "", 0.0, "s")).value)


def test_time_per_call_runs_warmup_then_times_each_repeat_and_takes_the_median(monkeypatch):
    # A fake clock that advances only inside fn: the timed calls take 5, 1 and 3 "seconds"
    # (warmup calls are not read), so the median is 3 whatever the machine.
    now, durations, calls = [0.0], iter([9.0, 9.0, 5.0, 1.0, 3.0]), []

    def fn():
        calls.append(1)
        now[0] += next(durations)

    monkeypatch.setattr(bench.time, "perf_counter", lambda: now[0])
    assert time_per_call(fn, repeats=3, warmup=2) == 3.0
    assert len(calls) == 5
    with pytest.raises(ValueError):
        time_per_call(lambda: None, repeats=0)


def test_format_table_lists_every_measurement_once_per_section():
    table = format_table(fake_measurements())
    lines = table.splitlines()
    assert lines[0].split() == ["section", "measurement", "setting", "value", "unit"]
    assert len(lines) == 2 + len(fake_measurements())
    assert sum(line.startswith("detection") for line in lines) == 1  # the section is named on its first row only
    assert "24.00" in table and "1,234" in table and "0.5" in table


def test_bench_json_is_written_atomically_with_every_measurement(tmp_path):
    path = write_bench(tmp_path / "out" / "bench.json", bench_document(fake_measurements(), options={"quick": True}))
    document = json.loads(path.read_text())
    assert document["schema_version"] == bench.SCHEMA_VERSION and document["options"] == {"quick": True}
    assert document["machine"]["cpu_count"] >= 1 and "torch" in document["versions"]
    assert [m["name"] for m in document["measurements"]] == [m.name for m in fake_measurements()]
    assert document["measurements"][5]["value"] == pytest.approx(24.0)
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temporary file left behind


def test_peak_memory_reports_this_process():
    rows = bench.peak_memory()
    assert rows[0].setting == "this process" and rows[0].value > 10 and rows[0].unit == "MiB"
    assert all(r.setting != "largest child process (the series)" for r in rows)


def test_synthetic_inputs_are_576x240_frames_with_pairs_and_sentences(tmp_path):
    from helpers.smoke.bench_inputs import synthetic_inputs

    inputs = synthetic_inputs(tmp_path, n_stories=2, frames_per_story=2)
    assert len(inputs.frames) == len(inputs.images) == 4
    assert {image.size for image in inputs.images} == {(576, 240)}
    assert set(inputs.pairs["label"]) == {0, 1}
    assert set(zip(inputs.pairs["story_id"], inputs.pairs["frame"])) <= set(inputs.frames)
    assert inputs.sentences and all("<gd" not in s for s in inputs.sentences)


# ----------------------------------------------------------------- the quick-shaped series


def _without(cfg: dict, *paths: tuple[str, ...]) -> dict:
    import copy

    out = copy.deepcopy(cfg)
    for path in paths:
        node = out
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return out


def test_quick_bench_is_the_quick_profile_on_synthetic_data_with_random_weights():
    from helpers.config import BENCH_DATA_SHAPE, load_profile, synthetic_or_random

    quick, bench_cfg = load_profile("quick"), load_profile("quick-bench")
    assert bench_cfg["profile"] == "quick-bench" and synthetic_or_random(bench_cfg) and not synthetic_or_random(quick)
    assert bench_cfg["data"]["source"] == "synthetic" and bench_cfg["data"]["synthetic"] == BENCH_DATA_SHAPE
    assert bench_cfg["clip"]["weights"] == "random"
    assert bench_cfg["mlm"]["weights"] == "random-full-size"  # distilroberta's size, not smoke's small model
    assert bench_cfg["detector"]["weights"] == "random-full-size"  # as many proposals as trained weights keep
    # OWL-ViT B/32 at 768 px and BLIP-VQA base, switched on or off exactly as quick says
    assert bench_cfg["openvocab"]["weights"] == bench_cfg["questions"]["weights"] == "random-full-size"
    assert [bench_cfg[s]["enabled"] for s in ("openvocab", "questions")] == [quick[s]["enabled"]
                                                                               for s in ("openvocab", "questions")]
    assert all(s["weights"].startswith("random") for s in bench_cfg.values() if isinstance(s, dict) and "weights" in s)
    # every compute setting is quick's: only the data source and the weights differ
    differing = [("profile",), ("description",), ("data", "source"), ("data", "synthetic"),
                 ("data", "hub_external_test")]
    differing += [(name, "weights") for name, s in quick.items() if isinstance(s, dict) and "weights" in s]
    assert _without(bench_cfg, *differing) == _without(quick, *differing)
    assert bench_cfg["data"]["n_stories"] == quick["data"]["n_stories"]


def test_a_bench_profile_needs_a_number_of_stories_and_a_real_base():
    from helpers.config import load_profile

    with pytest.raises(ValueError, match="n_stories"):
        load_profile("full-bench")  # full reads every story
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile("nothing-bench")


def test_the_quick_split_gives_validation_and_test_12_stories_in_2_blocks_or_more():
    """The issue's check: quick's validation and test each get >= 12 stories and >= 2 id blocks
    (so an other_story donor from another block exists there), also when chapter 01 excludes a story."""
    from helpers.config import load_profile
    from helpers.pairs import split_stories

    data = load_profile("quick")["data"]
    ids = [str(1000 + i) for i in range(data["n_stories"])]
    for excluded in [None, *range(len(ids))]:
        kept = [s for s in ids if s != (ids[excluded] if excluded is not None else None)]
        split = split_stories(kept, fractions=tuple(data["split_fractions"]), block_size=data["block_size"], seed=42)
        for side in ("val", "test"):
            members = [s for s in kept if split[s] == side]
            blocks = {kept.index(s) // data["block_size"] for s in members}
            assert len(members) >= 12 and len(blocks) >= 2, (excluded, side, len(members), len(blocks))


def test_the_quick_series_runs_the_bench_profile_and_writes_its_own_document(tmp_path, monkeypatch):
    calls = []
    rows = [Measurement("quick series", "all chapters, wall", "cold", 600.0, "s", repeats=1)]
    monkeypatch.setattr(bench, "bench_profile_series", lambda base: calls.append(base) or rows)
    monkeypatch.setattr(bench, "run_bench", lambda **kw: pytest.fail("--quick-series runs the series only"))
    assert bench.main(["--quick-series", "--out", str(tmp_path / "q.json")]) == 0
    document = json.loads((tmp_path / "q.json").read_text())
    assert calls == ["quick"] and document["options"] == {"quick_series": True, "profile": "quick-bench"}
    assert document["measurements"][0]["value"] == 600.0


def test_series_composition_counts_frames_stories_and_negatives_per_split(tmp_path):
    import pandas as pd

    from helpers.smoke.synthetic import make_dataset

    root = tmp_path / "quick-bench"
    make_dataset(root / "cache" / "synthetic-x", n_stories=3, frames=(2, 4), image_size=(160, 96))
    pairs = pd.DataFrame({"story_id": ["1", "1", "2", "2", "3", "3"], "split": ["train"] * 2 + ["test"] * 4,
                          "label": [1, 0, 1, 0, 1, 0],
                          "negative_type": ["", "same_story", "", "other_story", "", "object_swap"]})
    (root / "data").mkdir()
    pairs.to_parquet(root / "data" / "pairs.parquet")
    rows = {(m.name, m.setting): m.value for m in bench._series_composition(root)}
    frames = pd.read_parquet(next((root / "cache").glob("synthetic-*/*.parquet")))["frame_count"].sum()
    assert rows[("frames", "in the data")] == frames
    assert rows[("stories", "split test")] == 2 and rows[("pairs", "split test")] == 4
    assert rows[("negatives", "split test: other_story")] == 1 and rows[("negatives", "split test: object_swap")] == 1
    assert ("negatives", "split train: other_story") not in rows
