"""What every detector family is built from: which model, which weights, which runtime, which thresholds.
A family checks what is its own (file types, input sizes) when it loads (``engine.detect.registry``)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ConfigError

BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-int8", "tensorrt")


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """What ``load_detector`` builds. Thresholds and sizes default to Ultralytics' ``predict`` defaults, so
    the same YOLO weights give the same instances in both.

    ``weights`` is ``"random"`` (the model's own config with random, seeded weights: the instances mean
    nothing) or a file the family reads (for YOLO: a model yaml, an Ultralytics ``.pt``, an exported
    ``.onnx`` or a TensorRT ``.engine``).
    """

    model: str = "yolov8n-seg"  # model name; it picks the family unless ``family`` is given
    weights: str = "random"
    # "auto": the family's choice for the weights and device (YOLO: .onnx -> onnxruntime, .engine ->
    # tensorrt; .pt/.yaml/random -> torch on CUDA and onnxruntime on the CPU, see engine.detect.yolo; on
    # the CPU, trained weights run as int8 where that model meets its accuracy bar against fp32).
    # "onnxruntime-int8": the int8 model (engine.detect.yolo.quantize), CPU only.
    backend: str = "auto"
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"
    conf: float = 0.25  # keep detections whose best class score is above this
    iou: float = 0.7  # class-aware NMS IoU threshold
    imgsz: int = 640  # network input side; frames are scaled to fit imgsz x imgsz
    max_det: int = 300  # most detections per frame, best first
    seed: int = 0  # random initialisation seed for weights="random"
    # fp16 network (torch and TensorRT; ONNX Runtime runs the file's own precision): None = the precision
    # policy's choice (engine.runtime.precision: fp16 on CUDA)
    half: bool | None = None
    family: str | None = None  # a family of engine.detect.registry; None: the one whose models match
    # a video whose frames calibrate (and validate) the int8 model; None: the clip bundled for the demo
    calibration: str | None = None
    # threads of the network's CPU runtime (ONNX Runtime's intra-op pool; torch's for this thread);
    # None: the runtime's own default (every core). A pipeline that overlaps stages gives the detector
    # its share of the cores (engine.overlap).
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"detector model must be a name such as 'yolov8n-seg', got {self.model!r}")
        if not isinstance(self.weights, str) or not self.weights:
            raise ConfigError("detector weights must be 'random' or a weights file")
        if self.backend not in BACKENDS:
            raise ConfigError(f"detector backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not isinstance(self.device, str) or not _is_device_name(self.device):
            raise ConfigError(f"detector device {self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        for name in ("conf", "iou"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"detector {name}={value!r} must be a number between 0 and 1")
        if isinstance(self.imgsz, bool) or not isinstance(self.imgsz, int) or self.imgsz < 1:
            raise ConfigError(f"detector imgsz={self.imgsz!r} must be a positive integer (e.g. 320, 640)")
        if isinstance(self.max_det, bool) or not isinstance(self.max_det, int) or self.max_det < 1:
            raise ConfigError(f"detector max_det={self.max_det!r} must be a positive integer")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"detector seed={self.seed!r} must be an integer")
        if self.half is not None and not isinstance(self.half, bool):
            raise ConfigError(f"detector half={self.half!r} must be True, False or None")
        if self.backend == "onnxruntime-int8" and self.device.startswith("cuda"):
            raise ConfigError("the int8 detector (backend onnxruntime-int8) runs on the CPU; use device='cpu', "
                              "or backend='tensorrt' on CUDA")
        if self.calibration is not None and (not isinstance(self.calibration, str) or not self.calibration):
            raise ConfigError(f"detector calibration={self.calibration!r} must be a video file path or None")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConfigError(f"detector threads={self.threads!r} must be a positive integer or None")
        if self.half and self.device == "cpu":
            raise ConfigError("detector half=True needs a CUDA device; use half=None or device='cuda'")

    @property
    def random(self) -> bool:
        """Random weights built from the model's config."""
        return self.weights == "random"


def _is_device_name(name: str) -> bool:
    head, _, index = name.partition(":")
    return (name in ("auto", "cpu", "cuda")) or (head == "cuda" and index.isdigit())
