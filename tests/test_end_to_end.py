"""The whole engine with the real networks (random weights): synthetic scenes in-process, and a real
RTSP camera stream through ``streamseg run``."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from engine.detect import DetectorConfig, load_detector
from engine.eval.results import evaluate_against_scene, read_results
from engine.fuse import Fuser, FuserConfig
from engine.pipeline import Pipeline
from engine.sinks import JsonlWriter, Mp4Writer
from engine.sources import open_source
from engine.sources.synthetic import SyntheticScene
from engine.track import TrackerConfig, load_tracker
from tests.rtsp_server import RtspServer
from tests.test_cli import streamseg

SPEC = "seed=7,frames=40,size=320x240,objects=4"
TRACKER_SIZE = 256  # the tracker's input: ENVIRONMENT.md, ~0.14 s/frame for 2 objects on 2 cores


def _decode_masks(record: dict) -> np.ndarray:  # [K, H, W] bool
    rles = [{"size": i["mask"]["size"], "counts": i["mask"]["counts"].encode()} for i in record["instances"]]
    if not rles:
        return np.zeros((0, 1, 1), dtype=bool)
    return mask_util.decode(rles).transpose(2, 0, 1).astype(bool)


@pytest.mark.slow
def test_a_synthetic_scene_runs_to_the_end_with_bounded_state_and_well_formed_outputs(tmp_path):
    detector = load_detector(DetectorConfig(weights="random", imgsz=320, device="cpu"))
    options = TrackerConfig(max_cond_frames=2)
    tracker = load_tracker("sam2.1_hiera_t", weights="random", image_size=TRACKER_SIZE, device="cpu",
                           options=options)
    config = FuserConfig(spawn_conf=0.25, max_tracks=4)  # random scores: any kept detection may spawn
    fuser = Fuser(config, names=detector.names)
    jsonl, video = tmp_path / "r.jsonl", tmp_path / "o.mp4"
    pipeline = Pipeline(open_source(f"synthetic:{SPEC}"), detector=detector, tracker=tracker, fuser=fuser,
                        sinks=[JsonlWriter(jsonl), Mp4Writer(video, fps=30)])
    most_tracks = 0
    for result in pipeline:
        most_tracks = max(most_tracks, len(fuser.tracks))
        masks = result.instances.masks
        assert not (masks.sum(dim=0) > 1).any()  # every pixel belongs to at most one instance
    assert pipeline.frames == 40 and most_tracks <= config.max_tracks
    assert fuser.counters.spawned >= 1  # the tracker really ran on objects
    # Bounded state: whatever happened, every object holds at most C prompted frames, N memory frames
    # and P pointers.
    model = tracker.model
    for slot in tracker._slots.values():
        assert len(slot.cond) <= options.max_cond_frames
        assert len(slot.recent_features) <= model.num_maskmem
        assert len(slot.recent_ptrs) <= model.max_obj_ptrs_in_encoder
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(40))
    for record in records:
        masks = _decode_masks(record)
        assert all(inst["mask"]["size"] == [240, 320] for inst in record["instances"])
        assert len({inst["id"] for inst in record["instances"]}) == len(record["instances"])
        if len(masks) > 1:
            assert masks.sum(axis=0).max() <= 1
    with av.open(str(video)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 40
    report = evaluate_against_scene(read_results(jsonl), SyntheticScene.from_spec(SPEC))
    assert report.frames == 40 and 0.0 <= report.hota <= 1.0  # random weights: only well-formedness


@pytest.mark.slow
def test_streamseg_run_over_rtsp_writes_video_and_jsonl_with_stage_times(tmp_path, bedroom_clip):
    out, jsonl = tmp_path / "o.mp4", tmp_path / "r.jsonl"
    with RtspServer(bedroom_clip) as server:
        proc = streamseg("run", server.url, "--weights", "random", "--tracker-weights", "random",
                         "--tracker-size", str(TRACKER_SIZE), "--imgsz", "320", "--max-tracks", "3",
                         "--max-frames", "12", "--out", str(out), "--jsonl", str(jsonl), "--quiet",
                         timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM WEIGHTS" in proc.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 12
    frames = [r["frame"] for r in records]
    assert frames == sorted(set(frames))  # live: newest frame wins, so indices may skip, never repeat
    for record in records:
        assert set(record["times_ms"]) == {"decode", "detect", "segment", "track", "fuse", "refine", "render", "total", "overlapped"}
        assert record["times_ms"]["total"] > 0 and record["age_ms"] >= record["times_ms"]["total"]
        masks = _decode_masks(record)  # COCO RLE that pycocotools reads
        assert len(masks) == len(record["instances"])
    with av.open(str(out)) as c:
        decoded = list(c.decode(video=0))
    assert len(decoded) == 12 and (decoded[0].width, decoded[0].height) == (960, 540)
    assert torch.cuda.is_available() or "device cpu" in proc.stdout
