"""Atomic writes, the resumable cache, profiles and the run record."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import config, io
from helpers.pairs import profile_negative_types


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    io.atomic_write_json(target, {"x": 1})
    io.atomic_write_json(target, {"x": 2})
    assert io.read_json(target) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_mode_a_plain_open_would_under_the_umask(tmp_path, umask, mode):
    import os
    import stat

    old = os.umask(umask)
    try:
        written = [io.atomic_write_text(tmp_path / "r.html", "<p>report</p>"),
                   io.atomic_write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")]
        folder = io.save_random_model(tmp_path / "model", {"seed": 0})
        with open(tmp_path / "plain.txt", "w") as f:  # what the umask gives a file written the usual way
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode
    for path in [*written, folder / io.RANDOM_MARKER]:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask  # as mkdir would make it


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    target = tmp_path / "t.parquet"
    io.atomic_write_parquet(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(Exception):
        io.atomic_write_parquet(pd.DataFrame({"a": [object()]}), target)
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert len(list(tmp_path.iterdir())) == 1


def test_stable_hash_is_order_independent_for_dicts_and_sensitive_to_values():
    assert io.stable_hash({"a": 1, "b": [1, 2]}) == io.stable_hash({"b": [1, 2], "a": 1})
    assert io.stable_hash({"a": 1}) != io.stable_hash({"a": 2})


def test_compute_cached_computes_each_key_once_and_resumes(tmp_path):
    calls: list[list[str]] = []

    def square(keys):
        calls.append(list(keys))
        return [{"value": int(k) ** 2} for k in keys]

    cache = tmp_path / "cache"
    table, n = io.compute_cached(cache, ["1", "2", "3"], square, batch_size=2)
    assert n == 3 and table["value"].tolist() == [1, 4, 9]
    table, n = io.compute_cached(cache, ["3", "4", "1", "3"], square, batch_size=2)
    assert n == 1 and calls[-1] == ["4"]
    assert table["key"].tolist() == ["3", "4", "1", "3"] and table["value"].tolist() == [9, 16, 1, 9]
    assert table["value"].dtype == "int64"
    assert len(list(cache.glob("part-*.parquet"))) == 2  # the second run wrote one new part, rewrote nothing


def test_compute_cached_keeps_flushed_batches_after_a_crash(tmp_path):
    def flaky(keys):
        if "5" in keys:
            raise RuntimeError("interrupted")
        return [{"value": 0} for _ in keys]

    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError):
        io.compute_cached(cache, [str(i) for i in range(6)], flaky, batch_size=1, flush_every=1)
    assert sorted(io.read_cache(cache)["key"]) == ["0", "1", "2", "3", "4"]
    table, n = io.compute_cached(cache, [str(i) for i in range(5)], flaky, batch_size=1)
    assert n == 0 and len(table) == 5


@pytest.mark.parametrize("name", ["smoke", "quick", "full"])
def test_profiles_load_and_declare_what_the_chapters_read(name):
    cfg = config.load_profile(name)
    assert cfg["profile"] == name
    for section, keys in {"data": ["source", "n_stories", "block_size", "check_images"], "detector": ["weights", "min_size", "proposals"],
                          "clip": ["weights", "aggregate"], "pairs": ["negative_types"]}.items():
        assert set(keys) <= set(cfg[section]), (section, keys)
    assert profile_negative_types(cfg["pairs"]) == ("other_story", "same_story", "object_swap", "relation_swap")


@pytest.mark.parametrize("pairs", [{"negative_types": []}, {"negative_types": ["swap_everything"]},
                                   {"negative_types": ["same_story", "same_story"]}, {"negative_types": "same_story"},
                                   {}, {"negative_types": ["same_story"], "negative_mix": {"same_story": 1.0}}])
def test_profiles_refuse_bad_negative_types(pairs):
    with pytest.raises(ValueError, match="negative_types"):
        profile_negative_types(pairs)
    # a profile that still draws from a mix is refused, even beside a valid negative_types
    with pytest.raises(ValueError, match="negative_mix is gone"):
        profile_negative_types(config.load_profile("smoke", {"pairs": {"negative_mix": {"same_story": 1.0}}})["pairs"])


def test_smoke_is_offline_and_real_profiles_use_pretrained_weights():
    smoke, quick = config.load_profile("smoke"), config.load_profile("quick")
    assert (smoke["data"]["source"], smoke["detector"]["weights"], smoke["clip"]["weights"]) == ("synthetic", "random", "random")
    assert quick["data"]["source"] == "hub" and quick["detector"]["weights"] == "coco"
    assert quick["clip"]["weights"] == "openai/clip-vit-base-patch32"


def test_unknown_profile_and_overrides():
    with pytest.raises(ValueError, match="unknown profile"):
        config.load_profile("nope")
    cfg = config.load_profile("smoke", {"detector": {"min_size": 480}})
    assert cfg["detector"]["min_size"] == 480 and cfg["detector"]["weights"] == "random"


def test_missing_asset_message_names_cache_and_smoke(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    msg = str(config.MissingAssetError("Faster R-CNN COCO weights", cache_var="TORCH_HOME"))
    assert "Faster R-CNN COCO weights" in msg and f"TORCH_HOME={tmp_path}" in msg and "PROFILE=smoke" in msg


def test_run_record_merges_nested_fields(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "OUTPUTS_DIR", tmp_path)
    config.update_run_record("smoke", chapters={"01_data": {"seconds": 1}})
    record = config.update_run_record("smoke", chapters={"02_detection": {"seconds": 2}}, profile="smoke")
    assert set(record["chapters"]) == {"01_data", "02_detection"} and record["profile"] == "smoke"
    assert config.read_run_record("smoke")["chapters"]["01_data"] == {"seconds": 1}
