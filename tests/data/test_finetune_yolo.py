"""YOLOv8-seg fine-tuning through Ultralytics' trainer: offline, loadable with --weights, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data.finetune.yolo import YoloOptions, finetune_yolo

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # Ultralytics training, two epochs (~40 s on 2 loaded cores)
def test_fine_tunes_offline_and_the_result_loads_with_weights(labelled_collection, yolo_weights, tmp_path):
    from engine.detect import DetectorConfig, load_detector
    from engine.sources.synthetic import SyntheticScene

    network = []

    def audit(event, args):  # every name look-up and connection attempt, from any library
        if event in ("socket.getaddrinfo", "socket.connect", "urllib.Request"):
            network.append((event, args[:2]))

    sys.addaudithook(audit)  # hooks cannot be removed; this one only records
    out = tmp_path / "yolo.pt"
    result = finetune_yolo(YoloOptions(data=labelled_collection, out=out, weights=str(yolo_weights), epochs=2,
                                       imgsz=64, batch=4, progress=False), log=lambda _: None)
    training_network, network[:] = list(network), []
    assert training_network == []
    assert result.checkpoint == out and out.is_file()
    assert {"metrics/mAP50-95(M)", "metrics/mAP50(B)"} <= set(result.metrics)
    detector = load_detector(DetectorConfig(weights=str(out), imgsz=64, conf=0.001, backend="torch", device="cpu"))
    assert detector.names == SyntheticScene.class_names
    image = SyntheticScene(seed=7, frames=1, width=128, height=96, objects=3).render(0)
    (detections,) = detector([torch.from_numpy(image)])
    assert detections.masks.shape[1:] == (96, 128)
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["epochs"] == 2 and report["resumed_from"] == 0
    again = finetune_yolo(YoloOptions(data=labelled_collection, out=out, weights=str(yolo_weights), epochs=2,
                                      imgsz=64, batch=4, progress=False), log=lambda _: None)
    assert again.resumed_from == 2  # a finished run is not trained again


@pytest.mark.slow  # two Ultralytics training processes
@pytest.mark.timeout(900)  # two processes with their own time limits; margin for a loaded machine
def test_a_killed_yolo_fine_tune_resumes(labelled_collection, tmp_path):
    out = tmp_path / "killed.pt"
    command = [sys.executable, "-m", "engine", "finetune", "yolo", "--data", str(labelled_collection), "--out",
               str(out), "--weights", "random", "--epochs", "4", "--imgsz", "64", "--batch", "4", "--device", "cpu",
               "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    weights = out.with_name(out.name + ".run") / "ultralytics" / "weights"
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not (weights / "epoch1.pt").exists():
            time.sleep(0.1)
        assert (weights / "epoch1.pt").exists() and proc.poll() is None, "no second epoch saved before the end"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "yolo: resuming from epoch" in done.stderr
    report = json.loads((out.with_name(out.name + ".run") / "report.json").read_text())
    assert report["resumed_from"] >= 2 and out.is_file()


def test_label_lines_are_checked_before_training(tmp_path, labelled_collection):
    import shutil

    from engine.data.finetune.yolo import check_yolo_dataset
    from engine.errors import DatasetError

    copy = tmp_path / "c"
    shutil.copytree(labelled_collection, copy)
    label = next((copy / "labels" / "train").glob("*.txt"))
    label.write_text("7 0.1 0.1 0.2 0.1 0.2 0.2\n")  # class 7 of 4
    with pytest.raises(DatasetError, match=r":1: class 7 is not among the dataset's 4 classes"):
        check_yolo_dataset(copy)
    label.write_text("0 0.1 0.1 0.2\n")
    with pytest.raises(DatasetError, match="at least 3 x, y pairs"):
        check_yolo_dataset(copy)
    assert np.isfinite(len(check_yolo_dataset(labelled_collection)[1]["names"]))


@pytest.mark.parametrize("args", [{"lr_zero": 0.1}, {"device": "cuda"}, {"data": "other.yaml"}],
                         ids=["unknown", "owned_device", "owned_data"])
def test_train_args_outside_the_trainers_own_settings_are_refused_before_training(tmp_path, labelled_collection, args):
    from engine.data.finetune.yolo import YoloOptions, finetune_yolo
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="is not a setting of Ultralytics' trainer"):
        finetune_yolo(YoloOptions(data=labelled_collection, out=tmp_path / "y.pt", weights="random", train_args=args))
    assert not (tmp_path / "y.pt.run").exists()
