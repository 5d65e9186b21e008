"""DetectorConfig: Ultralytics' defaults, and every invalid value refused with a message naming it."""

from __future__ import annotations

import pytest

from engine.detect import DetectorConfig
from engine.errors import ConfigError


def test_defaults_are_ultralytics_predict_defaults():
    cfg = DetectorConfig()
    assert (cfg.conf, cfg.iou, cfg.imgsz, cfg.max_det) == (0.25, 0.7, 640, 300)
    assert (cfg.model, cfg.weights, cfg.backend, cfg.half) == ("yolov8n-seg", "random", "auto", None)


@pytest.mark.parametrize("weights, kind", [
    ("random", "random"), ("yolov8s-seg.yaml", "yaml"), ("/w/x.PT", "pt"), ("x.onnx", "onnx"),
    ("x.engine", "engine"),
])
def test_weights_kind_follows_the_file_type(weights, kind):
    assert DetectorConfig(weights=weights).source_kind == kind


@pytest.mark.parametrize("changes, message", [
    ({"weights": "model.bin"}, "unknown file type"),  # not a weights format
    ({"weights": ""}, "weights must be"),  # empty
    ({"backend": "tflite"}, "backend 'tflite'"),  # unknown runtime
    ({"device": "gpu"}, "device 'gpu'"),  # not a torch device name
    ({"conf": 1.5}, "conf=1.5"),  # out of [0, 1]
    ({"iou": -0.1}, "iou=-0.1"),
    ({"conf": True}, "conf=True"),  # a bool is not a threshold
    ({"imgsz": 500}, "imgsz=500"),  # not a multiple of the stride
    ({"imgsz": 0}, "imgsz=0"),
    ({"max_det": 0}, "max_det=0"),
    ({"seed": 1.5}, "seed=1.5"),
    ({"half": "yes"}, "half='yes'"),
    ({"half": True, "device": "cpu"}, "half=True needs a CUDA device"),
], ids=["weights_type", "weights_empty", "backend", "device", "conf_range", "iou_range", "conf_bool",
        "imgsz_stride", "imgsz_zero", "max_det", "seed", "half_type", "half_on_cpu"])
def test_invalid_values_are_refused_by_name(changes, message):
    with pytest.raises(ConfigError, match=message):
        DetectorConfig(**changes)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        DetectorConfig().conf = 0.5
