"""Detection: frames in, ``Detections`` (boxes, scores, classes, frame-resolution masks) out, from any
registered detector family (``engine.detect.registry``; YOLOv8-seg is ``engine.detect.yolo``, Mask R-CNN
``engine.detect.maskrcnn``).

    detector = load_detector(DetectorConfig(model="yolov8n-seg", weights="random" | "x.pt" | "x.onnx"))
    dets = detector([frame0, frame1])  # each [H, W, 3] uint8 RGB tensor

Every detector offers ``engine.interfaces.Detector``: ``names``, ``random_weights``, ``device`` and a call
on frames. Importing this package loads no model and imports no model library.
"""

from __future__ import annotations

from engine.detect.config import DetectorConfig
from engine.detect.registry import FAMILIES, DetectorFamily, family_for, register_family
from engine.interfaces import Detector


def check_detector(config: DetectorConfig) -> None:
    """ConfigError for anything in ``config`` its family cannot run, before anything loads."""
    family_for(config.model, config.family).load_module().check(config)


def load_detector(config: DetectorConfig) -> Detector:
    """The detector ``config`` describes, built by its family.

    Raises:
        ConfigError: no family takes the model, or the family cannot run ``config``.
        WeightsError: the weights are missing, unreadable, or for another model.
        BackendError: the runtime or device is not available here.
    """
    module = family_for(config.model, config.family).load_module()
    module.check(config)
    return module.load(config)


__all__ = ["FAMILIES", "Detector", "DetectorConfig", "DetectorFamily", "check_detector", "family_for",
           "load_detector", "register_family"]
