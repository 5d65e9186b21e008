"""YOLOv8-seg detection: frames in, ``Detections`` (boxes, scores, classes, frame-resolution masks) out.

    cfg = DetectorConfig(model="yolov8n-seg", weights="random" | "x.pt" | "x.yaml" | "x.onnx" | "x.engine")
    det = load_detector(cfg)
    dets = det([frame0, frame1])  # each [H, W, 3] uint8 RGB tensor

Importing this package loads no model and imports neither ultralytics nor onnxruntime; it registers the
official weights names with ``engine.weights`` for ``streamseg fetch``.
"""

from engine.detect import registry as _registry  # noqa: F401  (registers the known weights)
from engine.detect.config import DetectorConfig
from engine.detect.detector import YoloSegDetector, load_detector
from engine.detect.export import build_engine, export_onnx
from engine.detect.random_weights import spread_random_weights

__all__ = ["DetectorConfig", "YoloSegDetector", "build_engine", "export_onnx", "load_detector",
           "spread_random_weights"]
