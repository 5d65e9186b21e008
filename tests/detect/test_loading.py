"""Loading weights: what loads, and every bad input ending in one clear error that names it."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from engine.detect import DetectorConfig, load_detector
from engine.errors import BackendError, ConfigError, WeightsError

from .matching import as_bgr, as_tensor, match_instances


def _save_ultralytics(yaml: str, path, state=None):
    """An Ultralytics checkpoint written by Ultralytics itself (fp16 weights, its pickle layout)."""
    from ultralytics import YOLO

    model = YOLO(yaml)
    if state is not None:
        model.model.load_state_dict(state)
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def seg_checkpoint(tmp_path_factory, spread_state):
    return _save_ultralytics("yolov8n-seg.yaml", tmp_path_factory.mktemp("pt") / "seg.pt", spread_state)


def test_ultralytics_checkpoint_loads_and_matches_ultralytics(seg_checkpoint, parity_frames):
    """A .pt written by Ultralytics gives what ``YOLO(path).predict`` gives from the same file (on the CPU
    the automatic backend exports it to ONNX Runtime, so this also covers .pt -> ONNX)."""
    from ultralytics import YOLO

    detector = load_detector(DetectorConfig(weights=str(seg_checkpoint), device="cpu"))
    assert detector.backend.name == "onnxruntime"
    assert not detector.random_weights and len(detector.names) == 80
    frame = parity_frames["cups_crop_333x517"]
    (ours,) = detector([as_tensor(frame)])
    (theirs,) = YOLO(str(seg_checkpoint)).predict([as_bgr(frame)], retina_masks=True, verbose=False)
    rows, cols, iou = match_instances(ours.boxes, theirs.boxes.xyxy)
    assert len(ours) == len(theirs.boxes) >= 20 and len(rows) == len(ours)
    assert iou.min() >= 0.99  # same tolerance as the parity tests, same reasons
    assert (ours.scores[rows] - theirs.boxes.conf[cols]).abs().max() <= 1e-3


@pytest.mark.parametrize("yaml, kind", [
    ("yolov8n.yaml", "detection-only"),
    ("yolov8n-pose.yaml", "pose"),
    ("yolov8n-cls.yaml", "classification"),
], ids=["detect", "pose", "classify"])
def test_checkpoint_of_another_task_is_refused(yaml, kind, tmp_path):
    path = _save_ultralytics(yaml, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=rf"{path}.*{kind}.*YOLOv8-seg"):
        load_detector(DetectorConfig(weights=str(path), device="cpu"))


@pytest.mark.parametrize("content", [
    b"",  # empty file
    b"not a checkpoint at all, just text" * 10,  # text renamed .pt
    # noise: random bytes read as pickle opcodes fail in many ways; these seeds give, in torch 2.14's
    # unpickler, a refused global (TypeError), an IndexError, a UnicodeDecodeError and a KeyError
    *(np.random.default_rng(seed).bytes(4096) for seed in (0, 17, 54, 62)),
], ids=["empty", "text", "noise_global", "noise_index", "noise_unicode", "noise_key"])
def test_corrupt_checkpoint_is_refused(content, tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=rf"{path}: not a readable Ultralytics checkpoint"):
        load_detector(DetectorConfig(weights=str(path), device="cpu"))


def test_truncated_checkpoint_is_refused(seg_checkpoint, tmp_path):
    path = tmp_path / "truncated.pt"
    data = seg_checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable Ultralytics checkpoint"):
        load_detector(DetectorConfig(weights=str(path), device="cpu"))


class _RunsCommand:
    """Pickles as a call to os.system: what a malicious .pt does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"model": _RunsCommand(marker)}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(WeightsError, match="not a readable Ultralytics checkpoint"):
        load_detector(DetectorConfig(weights=str(path), device="cpu"))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["missing.pt", "missing.onnx", "missing.yaml"])
def test_missing_file_is_named(name, tmp_path):
    path = tmp_path / name
    with pytest.raises(WeightsError, match=rf"{path}.*(does not exist|not found)"):
        load_detector(DetectorConfig(weights=str(path), device="cpu"))


@pytest.mark.parametrize("yaml, message", [
    ("yolov8n.yaml", "detection-only"),
    ("yolov8n-pose.yaml", "pose"),
    ("no-such-model-seg.yaml", "not found"),
], ids=["detect", "pose", "unknown"])
def test_config_of_another_task_or_unknown_is_refused(yaml, message):
    with pytest.raises(WeightsError, match=message):
        load_detector(DetectorConfig(weights=yaml, device="cpu"))


@pytest.fixture(scope="module")
def detection_onnx(tmp_path_factory):
    """An ONNX export of a detection-only YOLOv8 (one output, no prototypes)."""
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", verbose=False).eval()
    head = model.model[-1]
    head.export, head.format = True, "onnx"
    path = tmp_path_factory.mktemp("onnx-detect") / "yolov8n.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, torch.zeros(1, 3, 64, 64), str(path), input_names=["images"],
                          output_names=["output0"], opset_version=17, dynamo=False)
    return path


def test_onnx_of_another_model_is_refused(detection_onnx):
    with pytest.raises(WeightsError, match=r"not a YOLOv8-seg export"):
        load_detector(DetectorConfig(weights=str(detection_onnx), device="cpu"))


def test_corrupt_onnx_is_refused(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(os.urandom(2048))
    with pytest.raises(WeightsError, match=rf"{path}"):
        load_detector(DetectorConfig(weights=str(path), device="cpu"))


def test_fixed_size_onnx_needs_its_size(torch_detector, tmp_path, parity_frames):
    from engine.detect.yolo import export_onnx

    path = export_onnx(torch_detector, tmp_path / "fixed320.onnx", imgsz=320, dynamic_hw=False,
                       dynamic_batch=False)
    with pytest.raises(ConfigError, match="320x320 inputs only; pass imgsz=320"):
        load_detector(DetectorConfig(weights=str(path), device="cpu"))
    detector = load_detector(DetectorConfig(weights=str(path), device="cpu", imgsz=320))
    names = ("cars_1280x720", "truck_641x479", "truck_641x479")
    results = detector([as_tensor(parity_frames[n]) for n in names])
    assert len(results) == 3 and results[1].masks.shape[1:] == (479, 641)  # a fixed batch of 1, run 3 times


@pytest.mark.parametrize("weights, backend, device, error, message", [
    # name: an ONNX file on the torch backend
    ("x.onnx", "torch", "cpu", ConfigError, "backend='onnxruntime'"),
    # an engine on ONNX Runtime
    ("x.engine", "onnxruntime", "cpu", ConfigError, "backend='tensorrt'"),
    # TensorRT without CUDA
    ("random", "tensorrt", "cpu", BackendError, "TensorRT needs a CUDA device"),
], ids=["onnx_on_torch", "engine_on_ort", "tensorrt_on_cpu"])
def test_backend_that_cannot_run_the_weights_is_refused(weights, backend, device, error, message):
    with pytest.raises(error, match=message):
        load_detector(DetectorConfig(weights=weights, backend=backend, device=device))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_refused():
    with pytest.raises(BackendError, match="no CUDA device"):
        load_detector(DetectorConfig(weights="random", device="cuda"))


def test_an_onnx_export_remembers_whether_its_weights_were_random(seg_checkpoint, onnx_file, tmp_path):
    """A user's trained .pt exported to ONNX loads as trained weights; random weights stay flagged
    random through their export, so the engine still says its instances mean nothing."""
    from engine.detect.yolo import export_onnx

    trained = export_onnx(DetectorConfig(weights=str(seg_checkpoint)), tmp_path / "trained.onnx", imgsz=320)
    assert not load_detector(DetectorConfig(weights=str(trained), imgsz=320, device="cpu")).random_weights
    assert not load_detector(DetectorConfig(weights=str(seg_checkpoint), device="cpu")).random_weights
    assert load_detector(DetectorConfig(weights=str(onnx_file), device="cpu")).random_weights
