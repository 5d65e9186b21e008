"""Fixtures for the detector tests: one random-weights model (seed 0, spread), built once per session and
shared by the torch detector, the ONNX export and Ultralytics' reference predictor; real frames from
tests/media."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

SEED = 0


@pytest.fixture(scope="session")
def spread_state() -> dict[str, torch.Tensor]:
    """The state dict of yolov8n-seg.yaml with seed-0 spread random weights (unfused)."""
    from engine.detect.yolo.loading import build_from_yaml

    return build_from_yaml("yolov8n-seg.yaml", seed=SEED, spread=True).state_dict()


@pytest.fixture(scope="session")
def reference(spread_state):
    """Ultralytics' own YOLO wrapper holding the same weights: the parity reference."""
    from ultralytics import YOLO

    model = YOLO("yolov8n-seg.yaml")
    model.model.load_state_dict(spread_state)
    return model


@pytest.fixture(scope="session")
def torch_detector():
    from engine.detect import DetectorConfig, load_detector

    return load_detector(DetectorConfig(weights="random", backend="torch", device="cpu", seed=SEED))


@pytest.fixture(scope="session")
def onnx_file(tmp_path_factory, torch_detector) -> Path:
    """The same network exported with a dynamic batch and dynamic height and width."""
    from engine.detect.yolo import export_onnx

    return export_onnx(torch_detector, tmp_path_factory.mktemp("onnx") / "yolov8n-seg-random.onnx")


@pytest.fixture(scope="session")
def ort_detector(onnx_file):
    from engine.detect import DetectorConfig, load_detector

    return load_detector(DetectorConfig(weights=str(onnx_file), device="cpu"))


def _decode(path: Path, indices: set[int]) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        frames = []
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                frames.append(frame.to_ndarray(format="rgb24"))
            if i >= max(indices):
                return frames
    return frames


@pytest.fixture(scope="session")
def parity_frames(media_dir) -> dict[str, np.ndarray]:
    """Real RGB frames at the sizes the parity tests use: native clip sizes, resizes and crops, odd ones
    included (the letterbox then has odd padding and the mask path an intermediate upsample)."""
    cars = cv2.imread(str(media_dir / "cars.jpg"))[..., ::-1]
    truck = cv2.imread(str(media_dir / "truck.jpg"))[..., ::-1]
    bedroom = _decode(media_dir / "bedroom.mp4", {0, 60})
    (cups,) = _decode(media_dir / "02_cups.mp4", {10})
    frames = {
        "cars_1280x720": cv2.resize(np.ascontiguousarray(cars), (1280, 720), interpolation=cv2.INTER_AREA),
        "truck_641x479": cv2.resize(np.ascontiguousarray(truck), (641, 479), interpolation=cv2.INTER_AREA),
        "bedroom_960x540": bedroom[0],
        "bedroom_crop_641x479": bedroom[1][:479, :641],
        "cups_crop_333x517": cups[100:617, 200:533],
    }
    return {name: np.ascontiguousarray(f) for name, f in frames.items()}
