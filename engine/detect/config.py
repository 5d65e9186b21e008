"""The detector's configuration: which model, which weights, which runtime, which thresholds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
WEIGHT_SUFFIXES = (".pt", ".yaml", ".yml", ".onnx", ".engine")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# YOLOv8's coarsest feature map has stride 32; every input side must be a multiple of it.
MAX_STRIDE = 32


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """What ``load_detector`` builds. Thresholds and sizes default to Ultralytics' ``predict`` defaults, so
    the same weights give the same instances in both.

    ``weights`` is ``"random"`` (the model's own yaml with random, seeded, spread weights: the instances mean
    nothing), a model yaml such as ``"yolov8n-seg.yaml"`` (random init, no spreading), or a path to an
    Ultralytics ``.pt``, an exported ``.onnx`` or a TensorRT ``.engine``.
    """

    model: str = "yolov8n-seg"  # model name; its yaml ("<model>.yaml") is used for weights="random"
    weights: str = "random"
    # "auto": .onnx -> onnxruntime, .engine -> tensorrt; .pt/.yaml/random -> torch on CUDA (fp16), and on the
    # CPU onnxruntime (exported at load, ~1 s): 1.8x faster per frame than torch (benchmarks/detector.py)
    backend: str = "auto"
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"
    conf: float = 0.25  # keep detections whose best class score is above this
    iou: float = 0.7  # class-aware NMS IoU threshold
    imgsz: int = 640  # letterbox target side; frames are scaled to fit imgsz x imgsz
    max_det: int = 300  # most detections per frame, best first
    seed: int = 0  # random initialisation seed for weights="random" or a yaml
    # fp16 network (torch and TensorRT; ONNX Runtime runs the file's own precision): None = on CUDA only
    half: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"detector model must be a name such as 'yolov8n-seg', got {self.model!r}")
        if not isinstance(self.weights, str) or not self.weights:
            raise ConfigError("detector weights must be 'random' or a .pt, .yaml, .onnx or .engine file")
        if self.weights != "random" and Path(self.weights).suffix.lower() not in WEIGHT_SUFFIXES:
            raise ConfigError(
                f"detector weights {self.weights!r}: unknown file type; pass 'random' or a .pt, .yaml, .onnx "
                "or .engine file"
            )
        if self.backend not in BACKENDS:
            raise ConfigError(f"detector backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ConfigError(f"detector device {self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        for name in ("conf", "iou"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"detector {name}={value!r} must be a number between 0 and 1")
        if isinstance(self.imgsz, bool) or not isinstance(self.imgsz, int) or self.imgsz < MAX_STRIDE \
                or self.imgsz % MAX_STRIDE:
            raise ConfigError(
                f"detector imgsz={self.imgsz!r} must be a positive multiple of {MAX_STRIDE} (e.g. 320, 640)"
            )
        if isinstance(self.max_det, bool) or not isinstance(self.max_det, int) or self.max_det < 1:
            raise ConfigError(f"detector max_det={self.max_det!r} must be a positive integer")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"detector seed={self.seed!r} must be an integer")
        if self.half is not None and not isinstance(self.half, bool):
            raise ConfigError(f"detector half={self.half!r} must be True, False or None")
        if self.half and self.device == "cpu":
            raise ConfigError("detector half=True needs a CUDA device; use half=None or device='cuda'")

    @property
    def source_kind(self) -> str:
        """What the weights are: "random", "yaml", "pt", "onnx" or "engine"."""
        if self.weights == "random":
            return "random"
        suffix = Path(self.weights).suffix.lower()
        return "yaml" if suffix in (".yaml", ".yml") else suffix[1:]
