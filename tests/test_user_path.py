"""The user's path: every CLI command with weights FILES as users have them (tests/checkpoints.py: saved
the way Ultralytics and Meta save theirs, nothing marking them random), and the README's
fetch -> demo -> run flow from a server on 127.0.0.1, on the CLI's defaults.

Tests elsewhere pass ``random``; the branches only trained weights reach (the fuser's default spawn
threshold, the checkpoint readers, the cache look-up of fetched files, the encoder export keyed by the
weights' digest) are walked here. Kept few and short: 4-8 frames, the tracker at 256 px.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import av
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCENE = "synthetic:seed=3,frames=6,size=320x240,objects=3"
SMALL_TRACKER = ("--tracker-size", "256", "--max-tracks", "4")


def streamseg(*args: str, cache: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache is not None:
        env["STREAMSEG_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "engine", *args], check=False, capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Exit 0, and nothing on stderr about random weights: these are a user's files."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "RANDOM WEIGHTS" not in proc.stderr and "random" not in proc.stderr.lower(), proc.stderr
    return proc


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_the_checkpoint_files_are_what_users_have(user_checkpoints):
    """Ultralytics' own loader reads the detector file as a COCO segmentation model; the tracker file
    is a plain ``{"model": state_dict}`` readable with ``weights_only``; the engine loads both as
    trained weights."""
    from ultralytics import YOLO

    from engine.detect import DetectorConfig, load_detector
    from engine.track import load_tracker

    yolo = YOLO(str(user_checkpoints.detector))
    assert yolo.task == "segment" and len(yolo.names) == 80 and yolo.names[0] == "person"
    released = torch.load(user_checkpoints.detector, map_location="cpu", weights_only=False)
    assert released["epoch"] == -1 and released["optimizer"] is None and "train_args" in released
    assert next(released["model"].parameters()).dtype == torch.float16  # released files are fp16
    assert not any("random" in key for key in released)
    detector = load_detector(DetectorConfig(weights=str(user_checkpoints.detector), device="cpu"))
    assert not detector.random_weights and detector.names[0] == "person"

    blob = torch.load(user_checkpoints.tracker, map_location="cpu", weights_only=True)
    assert list(blob) == ["model"] and all(v.dtype != torch.float16 for v in blob["model"].values())
    tracker = load_tracker("sam2.1_hiera_t", weights=str(user_checkpoints.tracker), image_size=256)
    key = "memory_encoder.out_proj.weight"
    assert torch.equal(tracker.model.state_dict()[key], blob["model"][key])


@pytest.mark.slow
@pytest.mark.timeout(900)  # CLI start-up dominates; several times slower on a loaded machine
def test_run_on_a_real_clip_with_weights_by_path_tracks_and_writes_every_output(tmp_path, user_checkpoints,
                                                                                bedroom_clip):
    """The default mode (detector + tracker + fusion) with trained weights: the fuser's default spawn
    threshold is read here (a class attribute of a slotted dataclass crashed this once)."""
    jsonl, video = tmp_path / "r.jsonl", tmp_path / "o.mp4"
    ok(streamseg("run", str(bedroom_clip), "--weights", str(user_checkpoints.detector), "--tracker-weights",
                 str(user_checkpoints.tracker), *SMALL_TRACKER, "--max-frames", "8", "--jsonl", str(jsonl),
                 "--out", str(video), "--quiet"))
    lines = records(jsonl)
    assert [r["frame"] for r in lines] == list(range(8)) and video_frames(video) == 8
    instances = [inst for r in lines for inst in r["instances"]]
    assert instances, "no track started on the CLI's default spawn threshold"
    from ultralytics.utils import ROOT as ULTRALYTICS_ROOT
    from ultralytics.utils import YAML

    coco = set(YAML.load(ULTRALYTICS_ROOT / "cfg" / "datasets" / "coco.yaml")["names"].values())
    assert {inst["label"] for inst in instances} <= coco


@pytest.mark.slow
@pytest.mark.timeout(900)  # CLI start-up dominates; several times slower on a loaded machine
@pytest.mark.parametrize("mode", [
    pytest.param((), id="detector-tracker-fusion"),
    pytest.param(("--tracker", "none"), id="detector-alone"),
    pytest.param(("--detector", "none", "--prompt", "1:40,40,160,160"), id="tracker-from-a-prompt"),
])
def test_every_run_mode_on_a_synthetic_scene_with_weights_by_path(tmp_path, user_checkpoints, mode):
    jsonl = tmp_path / "r.jsonl"
    ok(streamseg("run", SCENE, "--weights", str(user_checkpoints.detector), "--tracker-weights",
                 str(user_checkpoints.tracker), *SMALL_TRACKER, *mode, "--jsonl", str(jsonl), "--quiet"))
    assert [r["frame"] for r in records(jsonl)] == list(range(6))
    if "--prompt" in mode:
        assert all([i["id"] for i in r["instances"]] == [1] for r in records(jsonl))
    if not mode:  # and the results score against the scene's truth
        report = tmp_path / "report.json"
        ok(streamseg("eval", str(jsonl), "--truth", SCENE, "--json", str(report)))
        assert json.loads(report.read_text())["frames"] == 6


@pytest.mark.slow
@pytest.mark.timeout(900)  # CLI start-up dominates; several times slower on a loaded machine
def test_export_both_networks_from_the_checkpoints_and_run_the_detector_export(tmp_path, user_checkpoints):
    onnx = tmp_path / "det.onnx"
    ok(streamseg("export", "detector", "--weights", str(user_checkpoints.detector), "--imgsz", "320",
                 "--out", str(onnx)))
    jsonl = tmp_path / "r.jsonl"
    ok(streamseg("run", SCENE, "--weights", str(onnx), "--imgsz", "320", "--tracker", "none",
                 "--jsonl", str(jsonl), "--quiet"))
    assert len(records(jsonl)) == 6
    proc = ok(streamseg("export", "tracker", "--tracker-weights", str(user_checkpoints.tracker),
                        "--tracker-size", "256", "--out-dir", str(tmp_path / "tracker")))
    parts = [Path(line) for line in proc.stdout.splitlines() if line.endswith(".onnx")]
    assert parts and all(p.is_file() for p in parts)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def weights_server(user_checkpoints):
    """The two files on a static HTTP server on 127.0.0.1, as a mirror of the official URLs."""
    root = user_checkpoints.detector.parent
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.timeout(900)  # CLI start-up dominates; several times slower on a loaded machine
def test_the_readme_flow_fetch_then_demo_then_run_on_the_cli_defaults(tmp_path, weights_server,
                                                                       user_checkpoints, bedroom_clip):
    """``streamseg fetch`` both files into an empty cache, then ``demo`` and ``run`` with no weights
    option, no --spawn-conf, no ``random``: both find the fetched files. ``info`` and ``export`` work
    with the cache as it now is."""
    cache = tmp_path / "cache"
    files = {"yolov8n-seg": user_checkpoints.detector, "sam2.1_hiera_tiny": user_checkpoints.tracker}
    for name, path in files.items():
        proc = ok(streamseg("fetch", name, "--url", f"{weights_server}/{path.name}", "--sha256",
                            _sha256(path), cache=cache))
        assert Path(proc.stdout.strip()) == cache / path.name
        assert (cache / path.name).read_bytes() == path.read_bytes()

    demo = tmp_path / "demo"
    ok(streamseg("demo", "--out-dir", str(demo), "--max-frames", "4", "--quiet", cache=cache))
    assert [r["frame"] for r in records(demo / "demo.jsonl")] == [0, 1, 2, 3]
    assert video_frames(demo / "demo.mp4") == 4

    jsonl = tmp_path / "r.jsonl"
    ok(streamseg("run", str(bedroom_clip), *SMALL_TRACKER, "--max-frames", "4", "--jsonl", str(jsonl),
                 "--quiet", cache=cache))
    assert len(records(jsonl)) == 4

    ok(streamseg("info", cache=cache))
    onnx = tmp_path / "default.onnx"
    ok(streamseg("export", "detector", "--imgsz", "320", "--out", str(onnx), cache=cache))
    assert onnx.stat().st_size > 1_000_000
