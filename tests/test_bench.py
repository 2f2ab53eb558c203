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
    inputs = bench.synthetic_inputs(tmp_path, n_stories=2, frames_per_story=2)
    assert len(inputs.frames) == len(inputs.images) == 4
    assert {image.size for image in inputs.images} == {(576, 240)}
    assert set(inputs.pairs["label"]) == {0, 1}
    assert set(zip(inputs.pairs["story_id"], inputs.pairs["frame"])) <= set(inputs.frames)
    assert inputs.sentences and all("<gd" not in s for s in inputs.sentences)
