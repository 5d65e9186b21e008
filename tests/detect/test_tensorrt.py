"""TensorRT: the pure parts (cache key, optimisation profile, engine file layout, I/O names from the ONNX) run
everywhere; building and running an engine needs TensorRT and a GPU and skips elsewhere, saying why."""

from __future__ import annotations

import importlib.util

import pytest

from engine.errors import BackendError, WeightsError
from engine.runtime import tensorrt as trt_runtime

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(not HAVE_TENSORRT, reason="TensorRT is not installed here (it comes from "
                                    "NVIDIA's package index, which this machine cannot reach)")

PROFILE = trt_runtime.Profile("images", (1, 3, 640, 640), (4, 3, 640, 640), (4, 3, 640, 640))
KEY_ARGS = dict(trt_version="10.8.0", gpu_name="NVIDIA H100 80GB HBM3", fp16=True, profile=PROFILE)


def test_cache_key_is_stable_and_names_everything_the_engine_depends_on():
    key = trt_runtime.cache_key("ab" * 32, **KEY_ARGS)
    assert key == trt_runtime.cache_key("ab" * 32, **KEY_ARGS) and len(key) == 24
    changed = [
        trt_runtime.cache_key("cd" * 32, **KEY_ARGS),  # another ONNX file
        trt_runtime.cache_key("ab" * 32, **{**KEY_ARGS, "trt_version": "10.9.0"}),
        trt_runtime.cache_key("ab" * 32, **{**KEY_ARGS, "gpu_name": "NVIDIA L4"}),
        trt_runtime.cache_key("ab" * 32, **{**KEY_ARGS, "fp16": False}),
        trt_runtime.cache_key("ab" * 32, **{**KEY_ARGS, "profile": trt_runtime.Profile(
            "images", (1, 3, 640, 640), (8, 3, 640, 640), (8, 3, 640, 640))}),
    ]
    assert len({key, *changed}) == 6


@pytest.mark.parametrize("dims, batch, imgsz, expected", [
    # name: dynamic batch, height and width (the detector's own export)
    (("batch", 3, "height", "width"), 4, 640, ((1, 3, 640, 640), (4, 3, 640, 640), (4, 3, 640, 640))),
    # dynamic batch, fixed 320 input
    (("batch", 3, 320, 320), 2, 320, ((1, 3, 320, 320), (2, 3, 320, 320), (2, 3, 320, 320))),
    # fully static
    ((1, 3, 640, 640), 1, 640, ((1, 3, 640, 640), (1, 3, 640, 640), (1, 3, 640, 640))),
], ids=["dynamic", "dynamic_batch", "static"])
def test_profile_covers_batches_up_to_the_requested_one(dims, batch, imgsz, expected):
    profile = trt_runtime.profile_for("images", dims, batch=batch, imgsz=imgsz)
    assert (profile.min, profile.opt, profile.max) == expected


@pytest.mark.parametrize("dims, batch, imgsz, message", [
    ((1, 3, 640, 640), 4, 640, "batch 1 only"),  # a static batch-1 ONNX asked for batch 4
    (("batch", 3, 320, 320), 1, 640, "imgsz=320"),  # a fixed-size ONNX asked for another size
    (("batch", 3, 640), 1, 640, "expected \\[B, 3, H, W\\]"),  # not an image input
], ids=["static_batch", "fixed_size", "rank"])
def test_profile_refuses_what_the_onnx_cannot_take(dims, batch, imgsz, message):
    with pytest.raises(WeightsError, match=message):
        trt_runtime.profile_for("images", dims, batch=batch, imgsz=imgsz)


def test_engine_file_carries_its_metadata(tmp_path):
    path = tmp_path / "model.engine"
    metadata = {"task": "segment", "names": {"0": "person"}, "imgsz": [640, 640]}
    trt_runtime.write_engine_file(path, metadata, b"\x00serialized-engine\xff")
    assert trt_runtime.read_engine_file(path) == (metadata, b"\x00serialized-engine\xff")
    assert not path.with_name("model.engine.part").exists()
    raw = tmp_path / "raw.engine"  # an engine written without metadata reads as itself
    raw.write_bytes(b"\xff\xff\xff\x7fengine-bytes")
    assert trt_runtime.read_engine_file(raw) == ({}, b"\xff\xff\xff\x7fengine-bytes")


def test_io_names_and_roles_come_from_the_onnx_file(onnx_file):
    from engine.detect.yolo.loading import read_onnx_signature

    signature = read_onnx_signature(str(onnx_file))
    names = (signature.input_name, signature.preds_name, signature.protos_name)
    assert names == ("images", "output0", "output1")
    assert signature.input_dims == ("batch", 3, "height", "width")
    assert signature.fixed_batch is None and signature.fixed_hw is None
    assert signature.info.nc == 80 and signature.info.nm == 32 and signature.info.stride == 32
    profile = trt_runtime.profile_for(signature.input_name, signature.input_dims, batch=2, imgsz=640)
    assert profile.max == (2, 3, 640, 640)


@pytest.mark.skipif(HAVE_TENSORRT, reason="checks the message shown where TensorRT is missing")
def test_missing_tensorrt_is_a_clear_backend_error(onnx_file, tmp_path):
    import torch

    with pytest.raises(BackendError, match="TensorRT is not installed"):
        trt_runtime.build_engine(onnx_file, profile=PROFILE, fp16=True, cache_dir=tmp_path, metadata={},
                                 device=torch.device("cpu"))


@pytest.mark.gpu
@needs_tensorrt
def test_engine_is_built_once_and_matches_the_torch_backend(onnx_file, tmp_path, parity_frames,
                                                           torch_detector):
    import time

    import torch

    from engine.detect import DetectorConfig, load_detector
    from engine.detect.yolo import build_engine

    from .matching import as_tensor, match_instances

    path = build_engine(onnx_file, batch=2, imgsz=640, cache_dir=tmp_path)
    built = path.stat().st_mtime
    time.sleep(0.01)
    assert build_engine(onnx_file, batch=2, imgsz=640, cache_dir=tmp_path) == path  # cached
    assert path.stat().st_mtime == built
    detector = load_detector(DetectorConfig(weights=str(path), device="cuda"))
    assert detector.names == torch_detector.names
    frames = [as_tensor(parity_frames[n]) for n in ("bedroom_960x540", "cars_1280x720")]
    for ours, reference in zip(detector([f.cuda() for f in frames]), torch_detector(frames)):
        assert ours.masks.device.type == "cuda"
        rows, _, iou = match_instances(ours.boxes.cpu(), reference.boxes)
        # fp16 engine against fp32 torch: most instances pair up closely (see test_cuda_fp16_matches_cpu_fp32)
        assert len(rows) >= 0.8 * max(len(ours), len(reference))
        assert float(torch.tensor(iou).median()) >= 0.98
