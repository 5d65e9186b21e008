"""DetectorConfig: Ultralytics' defaults, every invalid value refused with a message naming it (the
generic values when the config is made, the YOLO family's own rules when it is checked or loaded), and
the family registry."""

from __future__ import annotations

import pytest

from engine.detect import DetectorConfig, check_detector, family_for
from engine.detect.yolo import weights_kind
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
    assert weights_kind(DetectorConfig(weights=weights)) == kind


@pytest.mark.parametrize("changes, message", [
    ({"weights": ""}, "weights must be"),  # empty
    ({"backend": "tflite"}, "backend 'tflite'"),  # unknown runtime
    ({"device": "gpu"}, "device 'gpu'"),  # not a torch device name
    ({"conf": 1.5}, "conf=1.5"),  # out of [0, 1]
    ({"iou": -0.1}, "iou=-0.1"),
    ({"conf": True}, "conf=True"),  # a bool is not a threshold
    ({"imgsz": 0}, "imgsz=0"),
    ({"max_det": 0}, "max_det=0"),
    ({"seed": 1.5}, "seed=1.5"),
    ({"half": "yes"}, "half='yes'"),
    ({"half": True, "device": "cpu"}, "half=True needs a CUDA device"),
], ids=["weights_empty", "backend", "device", "conf_range", "iou_range", "conf_bool", "imgsz_zero",
        "max_det", "seed", "half_type", "half_on_cpu"])
def test_invalid_values_are_refused_by_name(changes, message):
    with pytest.raises(ConfigError, match=message):
        DetectorConfig(**changes)


@pytest.mark.parametrize("changes, message", [
    ({"weights": "model.bin"}, "unknown file type"),  # not a weights format YOLO reads
    ({"imgsz": 500}, "imgsz=500"),  # not a multiple of YOLO's stride
    ({"model": "maskrcnn_r50"}, "no detector family takes model 'maskrcnn_r50'"),
    ({"family": "detr"}, "unknown detector family 'detr'"),
], ids=["weights_type", "imgsz_stride", "unknown_model", "unknown_family"])
def test_what_the_family_cannot_run_is_refused_before_anything_loads(changes, message):
    with pytest.raises(ConfigError, match=message):
        check_detector(DetectorConfig(**changes))


@pytest.mark.parametrize("model", ["yolov8n-seg", "yolov8x-seg", "yolo11s-seg", "my-model.yaml"])
def test_yolo_model_names_pick_the_yolo_family(model):
    assert family_for(model).name == "yolo"


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        DetectorConfig().conf = 0.5
