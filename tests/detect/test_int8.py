"""The int8 detector (engine.detect.yolo.quantize): the agreement score it is judged by, the model it makes
and caches, when ``auto`` picks it, and its bad inputs. At imgsz 160 (quantising takes seconds there)."""

from __future__ import annotations

import logging

import onnx
import pytest
import torch

from engine.detect import DetectorConfig, load_detector
from engine.detect.yolo import quantize
from engine.errors import ConfigError
from engine.types import Detections

IMGSZ = 160


def _dets(boxes, classes=None, masks=None) -> Detections:
    """Detections on a 20x20 frame; masks default to each box's rectangle."""
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = len(b)
    if masks is None:
        masks = torch.zeros((n, 20, 20), dtype=torch.bool)
        for k, (x1, y1, x2, y2) in enumerate(b.int().tolist()):
            masks[k, y1:y2, x1:x2] = True
    return Detections(boxes=b, scores=torch.linspace(0.9, 0.5, n), class_ids=torch.tensor(classes or [0] * n),
                      masks=masks)


@pytest.mark.parametrize("reference, candidate, recall, box_iou, mask_iou", [
    (_dets([[0, 0, 10, 10]]), _dets([[0, 0, 10, 10]]), 1.0, 1.0, 1.0),  # identical
    (_dets([[0, 0, 10, 10], [10, 10, 20, 20]]), _dets([[10, 10, 20, 20]]), 0.5, 1.0, 1.0),  # one missed
    (_dets([[0, 0, 10, 10]]), _dets([[0, 0, 10, 10]], classes=[1]), 0.0, 1.0, 1.0),  # another class: no match
    (_dets([[0, 0, 10, 10]]), _dets([[0, 0, 10, 8]]), 1.0, 0.8, 0.8),  # a shorter box and mask
    (_dets([[0, 0, 10, 10]]), _dets([[0, 5, 10, 15]]), 0.0, 1.0, 1.0),  # IoU 1/3: below the match IoU
    (_dets([[0, 0, 10, 10]]), _dets([[10, 10, 20, 20], [0, 0, 10, 10]]), 1.0, 1.0, 1.0),  # an extra one
], ids=["same", "missed", "other-class", "shifted", "below-match-iou", "extra"])
def test_agreement_matches_one_to_one_by_class_and_box(reference, candidate, recall, box_iou, mask_iou):
    result = quantize.agreement([reference], [candidate])
    assert result.detections == len(reference) and result.frames == 1
    assert result.recall == pytest.approx(recall)
    assert result.box_iou == pytest.approx(box_iou) and result.mask_iou == pytest.approx(mask_iou)


@pytest.mark.parametrize("recall, box_iou, mask_iou, detections, meets", [
    (0.95, 0.95, 0.95, 10, True),  # at the bar
    (0.949, 1.0, 1.0, 10, False),
    (1.0, 0.949, 1.0, 10, False),
    (1.0, 1.0, 0.949, 10, False),
    (0.0, 1.0, 1.0, 0, False),  # nothing detected: nothing shows the model is right
], ids=["at-bar", "recall", "box", "mask", "nothing-detected"])
def test_the_bar_needs_every_measure(recall, box_iou, mask_iou, detections, meets):
    result = quantize.Agreement(frames=3, detections=detections, recall=recall, box_iou=box_iou,
                                mask_iou=mask_iou)
    assert result.meets() is meets


@pytest.fixture(scope="module")
def fp32_detector():
    return load_detector(DetectorConfig(weights="random", backend="onnxruntime", device="cpu", imgsz=IMGSZ))


@pytest.fixture(scope="module")
def int8_detector():
    return load_detector(DetectorConfig(weights="random", backend="onnxruntime-int8", device="cpu", imgsz=IMGSZ))


def test_the_int8_model_quantises_the_convolutions_and_keeps_the_box_decoding_in_float(int8_detector):
    assert int8_detector.backend.name == "onnxruntime-int8" and int8_detector.random_weights
    model = onnx.load(str(int8_detector.backend.path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["random_weights"] == "true" and meta["quantization"] == quantize._scheme() and "names" in meta
    quantized_inputs = {i for n in model.graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    for node in model.graph.node:
        if node.op_type == "Softmax":  # the DFL's: box coordinates come from it in pixel units
            assert not set(node.input) & quantized_inputs, node.name


def test_the_int8_detector_finds_what_fp32_finds_on_real_frames(fp32_detector, int8_detector):
    frames = quantize.calibration_frames(validation=True, limit=4)
    result = quantize.agreement(fp32_detector(frames), int8_detector(frames))
    # Random weights: boxes hold (recall 0.99 measured at 640), masks are noise near logit 0 and do not
    # (the reason auto never picks int8 for random weights). This bounds the int8 model from below.
    assert result.detections > 20
    assert result.recall >= 0.9 and result.box_iou >= 0.85, result.describe()


class _Captured(Exception):
    pass


@pytest.mark.parametrize("features, reduce_range, scheme_ends", [
    (("avx512_vnni",), False, "-v1"),  # VNNI: 8-bit weights
    ((), True, "-v1-7bit"),  # AVX2 / AVX-512 without VNNI: VPMADDUBSW saturates 8-bit weights
], ids=["int8-dot-products", "no-int8-dot-products"])
def test_the_weights_are_7_bit_where_the_cpu_lacks_int8_dot_products(fp32_detector, monkeypatch, tmp_path, features,
                                                                      reduce_range, scheme_ends):
    import onnxruntime.quantization

    import engine.runtime.precision as precision

    monkeypatch.setattr(precision, "cpu_int8_features", lambda: features)
    captured = {}

    def capture(*args, **kwargs):
        captured.update(kwargs)
        raise _Captured

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", capture)
    frames = [torch.zeros((120, 160, 3), dtype=torch.uint8)] * 2  # never read: the capture stops first
    with pytest.raises(_Captured):
        quantize.quantize(fp32_detector.backend.path, tmp_path / "int8.onnx", frames, imgsz=IMGSZ)
    assert captured["reduce_range"] is reduce_range
    assert quantize._scheme().endswith(scheme_ends)  # part of the cache key: each kind of CPU its own model


def test_the_int8_model_is_made_once_and_cached(int8_detector, monkeypatch):
    monkeypatch.setattr(quantize, "quantize", lambda *a, **k: pytest.fail("quantised again"))
    again = load_detector(DetectorConfig(weights="random", backend="onnxruntime-int8", device="cpu", imgsz=IMGSZ))
    assert again.backend.path == int8_detector.backend.path


@pytest.fixture
def int8_cpu(monkeypatch):
    import engine.runtime.precision as precision

    monkeypatch.setattr(precision, "cpu_int8_features", lambda: ("avx512_vnni",))


def test_auto_never_quantises_random_weights(int8_cpu, monkeypatch):
    monkeypatch.setattr(quantize, "quantized_model", lambda *a, **k: pytest.fail("quantised"))
    detector = load_detector(DetectorConfig(weights="random", device="cpu", imgsz=IMGSZ))
    assert detector.backend.name == "onnxruntime"


def test_auto_skips_int8_on_a_cpu_where_it_is_not_faster(user_checkpoints, monkeypatch):
    import engine.runtime.precision as precision

    monkeypatch.setattr(precision, "cpu_int8_features", lambda: ())  # no int8 dot products
    monkeypatch.setattr(precision, "cpu_has_avx2", lambda: False)  # nor x86 AVX2
    monkeypatch.setattr(quantize, "quantized_model", lambda *a, **k: pytest.fail("quantised"))
    detector = load_detector(DetectorConfig(weights=str(user_checkpoints.detector), device="cpu", imgsz=IMGSZ))
    assert detector.backend.name == "onnxruntime"


def test_auto_runs_int8_only_where_it_meets_the_bar_and_measures_once(user_checkpoints, int8_cpu, monkeypatch,
                                                                       caplog):
    config = DetectorConfig(weights=str(user_checkpoints.detector), device="cpu", imgsz=IMGSZ)
    with caplog.at_level(logging.WARNING, logger="engine.detect.yolo.detector"):
        first = load_detector(config)
    # seeded weights (tests/checkpoints.py): their masks are as noisy as random ones, so the bar is missed
    assert first.backend.name == "onnxruntime"
    assert "misses its accuracy bar" in caplog.text and "mask IoU" in caplog.text
    monkeypatch.setattr(quantize, "agreement", lambda *a, **k: pytest.fail("measured again"))
    assert load_detector(config).backend.name == "onnxruntime"  # the cached record decides
    # another threshold setting is measured on its own; where it meets the bar, auto runs int8
    passing = quantize.Agreement(frames=15, detections=100, recall=0.99, box_iou=0.97, mask_iou=0.96)
    monkeypatch.setattr(quantize, "agreement", lambda *a, **k: passing)
    chosen = load_detector(DetectorConfig(weights=str(user_checkpoints.detector), device="cpu", imgsz=IMGSZ,
                                          conf=0.3))
    assert chosen.backend.name == "onnxruntime-int8"


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("clip, message", [
    (lambda tmp: tmp / "missing.mp4", "no such calibration clip"),
    (lambda tmp: _write(tmp / "garbage.mp4", b"\x00not a video" * 100), "cannot read calibration frames"),
], ids=["missing", "not-a-video"])
def test_a_bad_calibration_clip_names_the_file(tmp_path, clip, message):
    path = clip(tmp_path)
    with pytest.raises(ConfigError, match=message) as err:
        load_detector(DetectorConfig(weights="random", backend="onnxruntime-int8", device="cpu", imgsz=IMGSZ,
                                     calibration=str(path)))
    assert str(path) in str(err.value)


def test_a_clip_too_short_to_calibrate_says_how_long_it_must_be(tmp_path):
    import av
    import numpy as np

    path = tmp_path / "short.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height = 64, 48
        for _ in range(5):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode())
    with pytest.raises(ConfigError, match="at least 24 frames"):
        quantize.calibration_frames(path)


def test_int8_is_refused_on_cuda_before_anything_loads():
    with pytest.raises(ConfigError, match="runs on the CPU"):
        load_detector(DetectorConfig(weights="random", backend="onnxruntime-int8", device="cuda", imgsz=IMGSZ))


def test_weights_that_detect_nothing_on_the_calibration_clip_keep_fp32_and_say_why(user_checkpoints, int8_cpu,
                                                                                    monkeypatch, caplog):
    """Weights trained on other scenes may find nothing in the calibration clip: then there is nothing to
    agree on, and the log says to pass a clip of the user's scenes rather than that int8 missed a bar."""
    nothing = quantize.Agreement(frames=15, detections=0, recall=0.0, box_iou=1.0, mask_iou=1.0)
    monkeypatch.setattr(quantize, "agreement", lambda *a, **k: nothing)
    with caplog.at_level(logging.WARNING, logger="engine.detect.yolo.detector"):
        detector = load_detector(DetectorConfig(weights=str(user_checkpoints.detector), device="cpu",
                                                imgsz=IMGSZ, conf=0.45))
    assert detector.backend.name == "onnxruntime"
    assert "detect nothing" in caplog.text and "--calibration" in caplog.text
    assert "misses its accuracy bar" not in caplog.text
