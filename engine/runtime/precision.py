"""The precision policy: which dtype each network part computes in.

- the detector and SAM 2's image encoder are feed-forward: an error stays in its frame, so they run in
  half precision on a GPU (fp16 for YOLO, as Ultralytics does; bf16 for hiera, whose activations exceed
  fp16's range in its late stages); ``YoloSegDetector`` and ``StreamingTracker`` read their dtype here;
- SAM 2's recurrent path (memory attention, mask decoder, memory encoder) feeds each frame's output into
  the next frame's memory, so an error compounds over the stream: it always runs in fp32, the model's
  own precision, and is not a choice of this policy.
On the CPU everything is fp32 (half precision is slower there, not faster).

The GPU test that holds this policy to account (300 frames, masks against an fp32 run, IoU >= 0.98 every
frame) is tests/track/test_precision.py (marked gpu).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import ConfigError

_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True, slots=True)
class PrecisionPolicy:
    detector: torch.dtype
    image_encoder: torch.dtype

    @classmethod
    def for_device(cls, device: torch.device | str) -> PrecisionPolicy:
        if torch.device(device).type == "cuda":
            return cls(detector=torch.float16, image_encoder=torch.bfloat16)
        return cls.full()

    @classmethod
    def full(cls) -> PrecisionPolicy:
        return cls(detector=torch.float32, image_encoder=torch.float32)


def dtype_named(name: str | None, *, default: torch.dtype) -> torch.dtype:
    """``"float32"``, ``"bfloat16"``, ``"float16"``, or None / ``"auto"`` for ``default``."""
    if name is None or name == "auto":
        return default
    if name not in _NAMES:
        raise ConfigError(f"unknown precision {name!r}; use auto, {', '.join(_NAMES)}")
    return _NAMES[name]
