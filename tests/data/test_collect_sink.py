"""The collector as a pipeline sink (``streamseg run --collect DIR``): real networks on a synthetic
stream, the evidence the pipeline fills for it, and its options and bad folders."""

from __future__ import annotations

import json

import jsonschema
import pytest

from engine.data import Collector, CollectorConfig, SelectorConfig
from engine.errors import ConfigError
from engine.options import RunOptions, read_config, to_toml
from tests.data.label_studio_schema import TASKS, config_problems
from tests.test_cli import _user_error, streamseg

SOURCE = "synthetic:seed=3,frames=24,size=160x128,objects=3"
TINY = ["--weights", "random", "--tracker-weights", "random", "--tracker-size", "128", "--tracker-encoder", "torch",
        "--imgsz", "160", "--quiet"]


@pytest.mark.slow  # ~30 s on a loaded 2-core CPU: both networks (random weights, tiny sizes) on 24 frames
def test_run_with_collect_writes_a_collection_that_every_tool_reads(tmp_path):
    from pycocotools.coco import COCO
    from ultralytics.data.utils import check_det_dataset

    folder = tmp_path / "kept"
    proc = streamseg("run", SOURCE, *TINY, "--collect", str(folder), "--collect-window", "8",
                     "--collect-per-window", "1", "--collect-spacing", "4", "--collect-val-every", "2", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "collected: " in proc.stdout and f"collection: {folder}" in proc.stdout
    records = [json.loads(line) for line in (folder / "collection.jsonl").read_text().splitlines()]
    assert 1 <= len(records) <= 3  # at most one frame per 8-frame window
    frames = [r["frame"] for r in records]
    assert all(b - a >= 4 for a, b in zip(frames, frames[1:]))  # the spacing holds
    assert all(0 < r["uncertainty"]["total"] <= 1 for r in records)  # scored from the engine's evidence
    assert any(r["instances"] for r in records)  # the engine's own instances as pre-annotations
    coco = COCO(str(folder / "annotations.json"))
    assert len(coco.getImgIds()) == len(records)
    for image in coco.loadImgs(coco.getImgIds()):
        assert (folder / image["file_name"]).is_file()
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            assert coco.annToMask(ann).shape == (128, 160)
    check_det_dataset(str(folder / "data.yaml"), autodownload=False)
    tasks = json.loads((folder / "label_studio/tasks.json").read_text())
    jsonschema.validate(tasks, TASKS)
    assert config_problems((folder / "label_studio/config.xml").read_text(), tasks) == []


def test_an_unusable_collect_folder_stops_the_run_before_the_networks_load(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("not a collection")
    err = _user_error(streamseg("run", SOURCE, *TINY, "--collect", str(tmp_path / "busy")),
                      "not a streamseg collection", "--collect")
    assert str(tmp_path / "busy") in err
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["mine.txt"]


def test_a_collector_that_saw_no_frame_writes_nothing(tmp_path):
    collector = Collector(tmp_path / "new" / "kept", names=("a",))
    collector.close()
    assert not (tmp_path / "new").exists()


def test_a_result_without_evidence_is_refused_with_the_fix(tmp_path):
    from engine.sources.synthetic import SyntheticScene
    from tests.data.helpers import truth_result

    scene = SyntheticScene(seed=1, frames=2, width=64, height=48, objects=1)
    with pytest.raises(ValueError, match="carries no evidence: give the collector to the pipeline"):
        Collector(tmp_path / "c", names=scene.class_names).write(truth_result(scene, 0))


def test_collect_options_default_to_the_selector_and_round_trip_through_toml(tmp_path):
    opts, selector, collector = RunOptions(source="x"), SelectorConfig(), CollectorConfig()
    assert (opts.collect_window, opts.collect_per_window, opts.collect_spacing, opts.collect_budget,
            opts.collect_val_every) == (selector.window, selector.per_window, selector.min_spacing,
                                        selector.budget, collector.val_every)
    mine = RunOptions(source="x", collect=tmp_path / "kept", collect_budget=20, collect_window=50,
                      collect_per_window=2, collect_spacing=10)
    config = tmp_path / "run.toml"
    config.write_text(to_toml(mine))
    assert "[collect]" in config.read_text() and RunOptions(**read_config(config)) == mine


@pytest.mark.parametrize(("values", "needle"), [
    ({"collect_per_window": 4, "collect_spacing": 100, "collect_window": 300}, "do not fit"),  # 4 x 100 > 300
    ({"collect_budget": 0}, "--collect-budget ([collect] budget)"),
    ({"collect_spacing": -1}, "--collect-spacing ([collect] spacing)"),
], ids=["spacing_too_wide", "budget_zero", "spacing_negative"])
def test_bad_collect_options_are_named(values, needle):
    with pytest.raises(ConfigError) as info:
        RunOptions(source="x", **values)
    assert needle in str(info.value) and "\n" not in str(info.value)
