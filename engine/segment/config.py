"""The semantic stage's configuration: which backend, which weights, which labels, how often."""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import ConfigError

# backend name -> what it is; the names are what --segmenter takes
BACKENDS = {
    "deeplabv3plus": "DeepLab v3+ (segmentation_models_pytorch), encoder set by `encoder`",
    "unet": "U-Net (segmentation_models_pytorch), encoder set by `encoder`",
    "deeplabv3-mobilenet": "torchvision DeepLabV3 with a MobileNetV3-Large backbone (the light option)",
    "mask2former": "Mask2Former (transformers): semantic and panoptic output from one model",
}
SMP_BACKENDS = ("deeplabv3plus", "unet")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True, slots=True)
class SegmenterConfig:
    """What ``load_segmenter`` builds.

    ``weights`` is ``"random"`` (seeded random initialisation, spread so the labels vary: they mean
    nothing) or a path: a state-dict file (``.pt``/``.pth``/``.bin``/``.safetensors``) for any backend,
    or a directory saved by the library (``save_pretrained``: segmentation_models_pytorch or
    transformers). Nothing is ever downloaded: encoders are built with no pretrained weights.
    """

    backend: str = "deeplabv3plus"
    weights: str = "random"
    encoder: str = "resnet34"  # smp encoder name (deeplabv3plus, unet); ignored by the others
    # mask2former with weights="random": a transformers config.json to build instead of the default
    # Mask2FormerConfig (Swin-Tiny backbone, 100 queries); num_labels is set from the label set
    model_config: str | None = None
    labels: str | None = None  # label file (JSON or text, see engine.segment.labels); None: Cityscapes' 19
    # Shorter side of the network input, in pixels; the longer side keeps the frame's aspect ratio and, for
    # smp and Mask2Former, both are rounded up to a multiple of 32 (their encoders downsample 32x).
    imgsz: int = 512
    every: int = 1  # run on every k-th frame; the frames between reuse the last map
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"
    seed: int = 0  # random initialisation seed for weights="random"
    panoptic: bool = False  # Mask2Former only: also return its thing segments (SemanticMap.things)
    keep_logits: bool = False  # put the class scores on each SemanticMap (memory: C x model input size)
    panoptic_threshold: float = 0.5  # Mask2Former: least class probability for a query to make a segment

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown segmenter {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if not isinstance(self.weights, str) or not self.weights:
            raise ConfigError("segmenter weights must be 'random' or a path to a weights file or directory")
        if isinstance(self.imgsz, bool) or not isinstance(self.imgsz, int) or not 32 <= self.imgsz <= 4096:
            raise ConfigError(f"segmenter imgsz={self.imgsz!r} must be an integer from 32 to 4096")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(f"segment every={self.every!r} must be a positive integer (1: every frame)")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ConfigError(f"segmenter device {self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"segmenter seed={self.seed!r} must be an integer")
        if self.model_config is not None and (self.backend != "mask2former" or self.weights != "random"):
            raise ConfigError("a model config builds random Mask2Former weights only; with trained weights "
                              "the config comes with them")
        if self.panoptic and self.backend != "mask2former":
            raise ConfigError(f"panoptic output needs the mask2former segmenter, not {self.backend!r}")
        if not 0.0 <= self.panoptic_threshold <= 1.0:
            raise ConfigError(f"panoptic_threshold={self.panoptic_threshold!r} must be between 0 and 1")

    @property
    def stride(self) -> int:
        """The multiple both input sides are rounded up to."""
        return 1 if self.backend == "deeplabv3-mobilenet" else 32
