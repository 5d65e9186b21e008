"""Every branch on whether weights are random, walked on the side users walk: checkpoint FILES saved the
way Ultralytics and sam2 save theirs, not flagged random (their values are seeded random numbers; no test
here reads meaning into the instances)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from engine.app import build_pipeline
from engine.fuse import FuserConfig
from engine.options import RunOptions
from tests.test_cli import streamseg

TRACKER_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.fixture(scope="module")
def user_weights(tmp_path_factory) -> tuple[Path, Path]:
    """(yolov8n-seg.pt written by Ultralytics' own save, sam2.1_hiera_tiny.pt as {"model": state_dict})."""
    from ultralytics import YOLO

    from engine.detect.yolo.loading import build_from_yaml
    from engine.track.model import build_model

    folder = tmp_path_factory.mktemp("user-weights")
    yolo = YOLO("yolov8n-seg.yaml")
    yolo.model.load_state_dict(build_from_yaml("yolov8n-seg.yaml", seed=0, spread=True).state_dict())
    yolo.save(str(folder / "yolov8n-seg.pt"))
    torch.save({"model": build_model(TRACKER_CONFIG, image_size=64, seed=0).state_dict()},
               folder / "sam2.1_hiera_tiny.pt")
    return folder / "yolov8n-seg.pt", folder / "sam2.1_hiera_tiny.pt"


@pytest.mark.parametrize("random", [False, True], ids=["checkpoint_files", "random"])
def test_what_random_weights_change_is_declared_by_the_networks_and_follows_them(user_weights, random):
    """The banner, the note and the spawn threshold all follow the networks' own random_weights flag:
    files give the trained threshold and no banner."""
    detector_pt, tracker_pt = user_weights
    opts = RunOptions(source="synthetic:seed=1,frames=2,size=96x64", device="cpu", imgsz=64,
                      weights="random" if random else str(detector_pt), tracker_size=64,
                      tracker_weights="random" if random else str(tracker_pt), tracker_encoder="torch")
    built = build_pipeline(opts)
    pipeline = built.pipeline
    assert pipeline.detector.random_weights is random and pipeline.tracker.random_weights is random
    if random:
        assert built.random_weights == ["detector yolov8n-seg", "tracker sam2.1_hiera_t"]
        assert pipeline.fuser.config.spawn_conf == opts.conf
        assert any("random detector weights" in note for note in built.notes)
    else:
        assert built.random_weights == [] and built.notes == []
        assert pipeline.fuser.config.spawn_conf == FuserConfig().spawn_conf
    assert pipeline.run() == 2  # the fused path end to end, on each side


def test_run_with_checkpoint_files_on_the_clis_defaults(user_weights, bedroom_clip, tmp_path):
    """The user's command: checkpoint files by path, no --spawn-conf, no 'random' anywhere."""
    detector_pt, tracker_pt = user_weights
    proc = streamseg("run", str(bedroom_clip), "--weights", str(detector_pt), "--tracker-weights",
                     str(tracker_pt), "--tracker-size", "256", "--max-frames", "2", "--jsonl",
                     str(tmp_path / "r.jsonl"), "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM" not in proc.stderr and "random" not in proc.stderr, proc.stderr
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_the_demo_uses_fetched_weights_from_the_cache(user_weights, tmp_path):
    """The demo's other branch: with the official files in the cache it runs on them, without a banner."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for file in user_weights:
        shutil.copy(file, cache / file.name)
    proc = streamseg("demo", "--out-dir", str(tmp_path / "demo"), "--max-frames", "2", "--quiet",
                     env={**os.environ, "STREAMSEG_CACHE": str(cache)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM" not in proc.stderr and "using random weights" not in proc.stderr, proc.stderr
    assert "2 frames in" in proc.stdout


def test_export_of_a_checkpoint_file_goes_beside_it_and_loads_as_trained(user_weights, tmp_path):
    from engine.detect import DetectorConfig, load_detector

    weights = tmp_path / "mine.pt"
    shutil.copy(user_weights[0], weights)
    proc = streamseg("export", "detector", "--weights", str(weights), "--imgsz", "320")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "mine.onnx")
    detector = load_detector(DetectorConfig(weights=str(tmp_path / "mine.onnx"), imgsz=320, device="cpu"))
    assert not detector.random_weights
