"""The collector as a stream sees it: bounded memory over a long stream, files valid after a kill, a
collection continued, and bad output folders refused with one clear line."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.data import Collector, CollectorConfig, FrameEvidence, SelectorConfig
from engine.errors import ConfigError, SinkError
from engine.sources.synthetic import SyntheticScene
from tests.data.helpers import random_evidence, truth_result

REPO = Path(__file__).resolve().parents[2]


def _journal(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "collection.jsonl").read_text().splitlines()]


def _check_files_valid(folder: Path) -> int:
    """Every file a reader opens is whole; returns the number of images the COCO file holds."""
    from pycocotools.coco import COCO
    from ultralytics.data.utils import check_det_dataset

    coco = COCO(str(folder / "annotations.json"))
    for image in coco.dataset["images"]:
        assert (folder / image["file_name"]).is_file()
    json.loads((folder / "label_studio/tasks.json").read_text())
    check_det_dataset(str(folder / "data.yaml"), autodownload=False)
    return len(coco.dataset["images"])


@pytest.mark.slow  # ~30 s of CPU: 10,000 frames scored under tracemalloc
@pytest.mark.timeout(1200)  # a guard against a hang; a shared, loaded 2-core machine needs the margin
def test_memory_stays_bounded_over_10000_frames(tmp_path):
    scene = SyntheticScene(seed=2, frames=40, width=96, height=72, objects=3)
    results = [truth_result(scene, i) for i in range(scene.frames)]
    rng = np.random.default_rng(0)
    evidence = [random_evidence(i, rng, objects=3, size=12) for i in range(64)]
    config = CollectorConfig(selector=SelectorConfig(window=100, per_window=2, min_spacing=10, budget=10_000))
    collector = Collector(tmp_path / "c", names=scene.class_names, config=config)

    def stream(frames: range) -> int:
        held = 0
        for i in frames:
            base = results[i % len(results)]
            collector.write(replace(base, frame=replace(base.frame, index=i)),
                            replace(evidence[i % len(evidence)], frame=i))
            held = max(held, collector.selector.held)
        return held

    held = stream(range(1_000))  # warm-up: lazy imports and caches are not the collector's growth
    tracemalloc.start()
    try:
        held = max(held, stream(range(1_000, 2_000)))
        gc.collect()
        at_2000, kept_2000 = tracemalloc.get_traced_memory()[0], collector.kept
        held = max(held, stream(range(2_000, 10_000)))
        gc.collect()
        at_10000 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    collector.close()
    assert held <= config.selector.per_window
    assert collector.kept - kept_2000 >= 150  # it kept frames all along: 2 per 100-frame window
    # 160 more frames were kept (3.3 MB of pictures if they stayed in memory); Python's memory may grow
    # only by their file names (the collection's set of names, ~100 bytes each) and allocator noise.
    growth = at_10000 - at_2000
    assert growth < 100 * (collector.kept - kept_2000) + 128 * 1024, growth
    assert _check_files_valid(collector.folder) == collector.kept


_WRITER = """
import sys, time
import numpy as np
from engine.data import Collector, CollectorConfig, SelectorConfig
from engine.sources.synthetic import SyntheticScene
from tests.data.helpers import random_evidence, truth_result
scene = SyntheticScene(seed=4, frames=100000, width=96, height=72, objects=4)
config = CollectorConfig(selector=SelectorConfig(window=4, per_window=1, min_spacing=1, budget=100000))
collector = Collector(sys.argv[1], names=scene.class_names, config=config)
rng = np.random.default_rng(0)
for i in range(100000):
    collector.write(truth_result(scene, i), random_evidence(i, rng))
"""


def test_a_killed_run_leaves_valid_files_and_the_collection_continues(tmp_path):
    folder = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(folder)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            journal = folder / "collection.jsonl"
            if journal.exists() and journal.read_bytes().count(b"\n") >= 6:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the writer ended before it was killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    kept = len(_journal(folder))
    assert kept >= 6
    in_json = _check_files_valid(folder)
    assert kept - 1 <= in_json <= kept  # the JSON views trail the journal by at most the last frame
    scene = SyntheticScene(seed=4, frames=100000, width=96, height=72, objects=4)
    collector = Collector(folder, names=scene.class_names,
                          config=CollectorConfig(prefix="more_", selector=SelectorConfig(window=4, per_window=1,
                                                                                       min_spacing=1)))
    assert collector.kept == kept and _check_files_valid(folder) == kept  # reopening rebuilt the views
    assert not list(folder.rglob("*.tmp"))  # and removed the temporary file the kill left
    rng = np.random.default_rng(1)
    for i in range(12):
        collector.write(truth_result(scene, i), random_evidence(i, rng))
    collector.close()
    assert collector.kept == kept + 3 and _check_files_valid(folder) == kept + 3


def test_a_rerun_into_the_same_collection_does_not_overwrite_frames(tmp_path):
    scene = SyntheticScene(seed=5, frames=10, width=64, height=48, objects=2)
    config = CollectorConfig(selector=SelectorConfig(window=5, per_window=1, min_spacing=1))
    for attempt in range(2):
        collector = Collector(tmp_path / "c", names=scene.class_names, config=config)
        rng = np.random.default_rng(0)
        if attempt == 1:
            with pytest.raises(SinkError, match="already holds frame"):
                for i in range(10):
                    collector.write(truth_result(scene, i), random_evidence(i, rng))
            return
        for i in range(10):
            collector.write(truth_result(scene, i), random_evidence(i, rng))
        collector.close()


def test_budget_and_validation_split(tmp_path):
    scene = SyntheticScene(seed=6, frames=200, width=64, height=48, objects=3)
    config = CollectorConfig(selector=SelectorConfig(window=10, per_window=1, min_spacing=2, budget=7), val_every=3)
    collector = Collector(tmp_path / "c", names=scene.class_names, config=config)
    rng = np.random.default_rng(0)
    for i in range(scene.frames):
        collector.write(truth_result(scene, i), random_evidence(i, rng))
    collector.close()
    records = _journal(collector.folder)
    assert len(records) == 7 == collector.kept
    assert [r["split"] for r in records] == ["train", "train", "val"] * 2 + ["train"]
    assert "val: images/val" in (collector.folder / "data.yaml").read_text()


def test_until_a_frame_is_held_out_validation_reads_the_training_images(tmp_path):
    scene = SyntheticScene(seed=6, frames=20, width=64, height=48, objects=3)
    config = CollectorConfig(selector=SelectorConfig(window=10, per_window=1, min_spacing=2), val_every=5)
    collector = Collector(tmp_path / "c", names=scene.class_names, config=config)
    rng = np.random.default_rng(0)
    for i in range(scene.frames):
        collector.write(truth_result(scene, i), random_evidence(i, rng))
    collector.close()
    assert collector.kept == 2
    assert "val: images/train" in (collector.folder / "data.yaml").read_text()
    _check_files_valid(collector.folder)


def test_evidence_must_belong_to_the_frame(tmp_path):
    scene = SyntheticScene(seed=6, frames=3, width=64, height=48, objects=1)
    collector = Collector(tmp_path / "c", names=scene.class_names)
    with pytest.raises(ValueError, match="evidence of frame 1"):
        collector.write(truth_result(scene, 0), FrameEvidence.empty(1))


def _folder_with_other_files(tmp: Path) -> Path:
    (tmp / "x").mkdir()
    (tmp / "x" / "notes.txt").write_text("mine")
    return tmp / "x"


def _path_under_a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("")
    return tmp / "file" / "sub"


@pytest.mark.parametrize(("make", "message"), [
    (_folder_with_other_files, "not a streamseg collection"),
    (_path_under_a_file, "cannot create collection folder"),
    (lambda tmp: Path("/dev/full"), "cannot"),  # a device, not a folder
])
def test_bad_collection_folders_are_refused(tmp_path, make, message):
    with pytest.raises(SinkError, match=message) as info:
        Collector(make(tmp_path), names=("a",))
    assert "\n" not in str(info.value)


def test_random_ranking_keeps_as_many_frames_under_the_same_budget_and_differs_by_seed(tmp_path):
    scene = SyntheticScene(seed=6, frames=60, width=64, height=48, objects=3)
    kept = {}
    for rank, seed in (("uncertainty", 0), ("random", 0), ("random", 1)):
        config = CollectorConfig(rank=rank, seed=seed, selector=SelectorConfig(window=10, per_window=1, min_spacing=3))
        collector = Collector(tmp_path / f"{rank}{seed}", names=scene.class_names, config=config)
        rng = np.random.default_rng(0)  # the same evidence for every ranking
        for i in range(scene.frames):
            collector.write(truth_result(scene, i), random_evidence(i, rng))
        collector.close()
        kept[rank, seed] = [r["frame"] for r in _journal(collector.folder)]
    assert {len(frames) for frames in kept.values()} == {6}
    assert kept["random", 0] != kept["random", 1] and kept["random", 0] != kept["uncertainty", 0]
    with pytest.raises(ConfigError, match="rank must be one of"):
        CollectorConfig(rank="loudest")


def _collect(folder: Path, *, seed: int, prefix: str) -> Path:
    scene = SyntheticScene(seed=seed, frames=30, width=64, height=48, objects=3)
    config = CollectorConfig(selector=SelectorConfig(window=5, per_window=1, min_spacing=1), val_every=3, prefix=prefix)
    collector = Collector(folder, names=scene.class_names, config=config)
    rng = np.random.default_rng(seed)
    for i in range(scene.frames):
        collector.write(truth_result(scene, i), random_evidence(i, rng))
    collector.close()
    return folder


def test_collections_made_apart_merge_into_one_that_trainers_read(tmp_path):
    from engine.data.collector import merge_collections

    parts = [_collect(tmp_path / f"part{k}", seed=k, prefix=f"p{k}_") for k in range(2)]
    before = [(p / "collection.jsonl").read_bytes() for p in parts]
    assert merge_collections(parts, tmp_path / "all") == 12
    records = _journal(tmp_path / "all")
    assert [r["file"] for r in records] == [r["file"] for p in parts for r in _journal(p)]
    assert _check_files_valid(tmp_path / "all") == 12
    for record in records:  # each frame's label file came with its image
        assert (tmp_path / "all" / f"labels/{record['split']}/{Path(record['file']).stem}.txt").is_file()
    assert [(p / "collection.jsonl").read_bytes() for p in parts] == before  # the sources are untouched


def test_one_budget_across_collections_takes_the_most_uncertain_frames_of_all(tmp_path):
    from engine.data.collector import merge_collections

    parts = [_collect(tmp_path / f"part{k}", seed=k, prefix=f"p{k}_") for k in range(2)]
    everything = [r for p in parts for r in _journal(p)]
    best = sorted(everything, key=lambda r: -r["uncertainty"]["total"])[:5]
    assert merge_collections(parts, tmp_path / "top", budget=5) == 5
    kept = _journal(tmp_path / "top")
    assert {r["file"] for r in kept} == {r["file"] for r in best}
    assert {Path(r["file"]).stem[:3] for r in kept} == {"p0_", "p1_"}  # both cameras compete for the budget
    assert [r["file"] for r in kept] == [r["file"] for r in everything if r in best]  # journal order kept
    assert _check_files_valid(tmp_path / "top") == 5

    drawn = {}
    for seed in (0, 0, 1):  # the baseline: a seeded draw, the same budget
        folder = tmp_path / f"random{len(drawn)}-{seed}"
        assert merge_collections(parts, folder, budget=5, rank="random", seed=seed) == 5
        drawn.setdefault(seed, []).append({r["file"] for r in _journal(folder)})
    assert drawn[0][0] == drawn[0][1] != drawn[1][0]
    assert merge_collections(parts, tmp_path / "more", budget=100) == len(everything)
    assert merge_collections(parts, tmp_path / "none", budget=0) == 0
    assert merge_collections([], tmp_path / "empty") == 0


@pytest.mark.parametrize("kwargs", [{"budget": -1}, {"rank": "score"}])
def test_merging_with_a_bad_budget_or_rank_is_one_clear_error(tmp_path, kwargs):
    from engine.data.collector import merge_collections

    with pytest.raises(ConfigError, match="merging collections needs budget >= 0"):
        merge_collections([_collect(tmp_path / "a", seed=0, prefix="a_")], tmp_path / "all", **kwargs)
    assert not (tmp_path / "all").exists()


def test_merging_into_a_collection_a_killed_run_left_repairs_it_first(tmp_path):
    from engine.data.collector import merge_collections

    target = _collect(tmp_path / "target", seed=0, prefix="t_")
    journal = target / "collection.jsonl"
    whole = len(_journal(target))
    journal.write_bytes(journal.read_bytes() + b'{"file": "images/train/t_0000')  # killed mid-line
    assert merge_collections([_collect(tmp_path / "a", seed=1, prefix="a_")], target, budget=2) == whole + 2
    assert len(_journal(target)) == whole + 2


def _lose_a_label(tmp: Path) -> list[Path]:
    parts = [_collect(tmp / "a", seed=0, prefix="a_"), _collect(tmp / "b", seed=1, prefix="b_")]
    next((parts[1] / "labels" / "train").iterdir()).unlink()
    return parts


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: [_collect(tmp / "a", seed=0, prefix="a_"), _collect(tmp / "b", seed=1, prefix="a_")], "already holds frame"),
    (lambda tmp: [_collect(tmp / "a", seed=0, prefix="a_"), tmp / "a" / "images"], "not a streamseg collection"),
    (_lose_a_label, "is missing: the collection is incomplete"),
])
@pytest.mark.parametrize("budget", [None, 1])
def test_a_merge_that_fails_leaves_the_target_as_it_was(tmp_path, make, message, budget):
    """Checked before anything is written, whichever frames the budget would choose: an existing target
    keeps its files, a new one is not made."""
    from engine.data.collector import merge_collections

    sources = make(tmp_path)
    existing = _collect(tmp_path / "existing", seed=2, prefix="e_")
    before = {f: f.read_bytes() for f in existing.rglob("*") if f.is_file()}
    for into in (existing, tmp_path / "new"):
        with pytest.raises(SinkError, match=message):
            merge_collections(sources, into, budget=budget)
    assert {f: f.read_bytes() for f in existing.rglob("*") if f.is_file()} == before
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: [_collect(tmp / "a", seed=0, prefix=""), _collect(tmp / "b", seed=1, prefix="")], "already holds frame"),
    (lambda tmp: [tmp], "not a streamseg collection"),
])
def test_merging_collections_refuses_clashing_or_foreign_folders(tmp_path, make, message):
    from engine.data.collector import merge_collections

    with pytest.raises(SinkError, match=message):
        merge_collections(make(tmp_path), tmp_path / "all")
