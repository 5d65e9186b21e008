"""The YOLO family: YOLOv8 / YOLO11 instance segmentation from Ultralytics weights, behind
``engine.interfaces.Detector``.

- ``detector``: the stage (letterbox, network, NMS, masks) and ``load`` / ``check`` for the registry;
- ``backends``: the network on torch, ONNX Runtime or TensorRT, all with YOLO's output layout;
- ``loading``: reading .pt, .yaml and .onnx files, with one clear error for anything else;
- ``letterbox``, ``postprocess``, ``masks``: Ultralytics' own geometry, reproduced to the pixel;
- ``export``: ONNX export and TensorRT engine build (``streamseg export detector``);
- ``random_weights``: seeded random weights with real score spread (tests, benchmarks, the demo);
- ``weights``: the official files ``streamseg fetch`` knows (registered on import).

Importing it imports neither ultralytics nor onnxruntime.
"""

from engine.detect.yolo import weights as _weights  # noqa: F401  (registers the official weights)
from engine.detect.yolo.detector import YoloSegDetector, check, load, weights_kind
from engine.detect.yolo.export import build_engine, export_onnx
from engine.detect.yolo.random_weights import spread_random_weights

__all__ = ["YoloSegDetector", "build_engine", "check", "export_onnx", "load", "spread_random_weights",
           "weights_kind"]
