"""Frames to network input, the way each library's own pipeline prepares them.

Every backend here was trained on ImageNet-normalised RGB: ``(x / 255 - mean) / std`` with ImageNet's
mean and std (segmentation_models_pytorch's ``preprocess_input`` with its encoders' ``imagenet``
settings; torchvision's ``SemanticSegmentation`` preset; transformers' ``Mask2FormerImageProcessor``).
All three resize the uint8 picture first (bilinear, antialiased) and normalise after, so this module
does the same with the same function, on whatever device the frames are on: transformers (and smp, which
has no resize of its own) use ``torchvision.transforms.v2.functional.resize``, whose CPU uint8 kernel
rounds differently from the v1 ``torchvision.transforms.functional.resize`` that torchvision's own
preset calls (1 grey level apart in ~7 % of values, enough to move ~0.2 % of a random model's labels);
``legacy_resize`` picks v1 for the torchvision backend.

Input size: the shorter side becomes ``imgsz`` and the longer side ``int(imgsz * long / short)``
(torchvision's and transformers' rule); where the network needs it (smp, Mask2Former: stride 32) both
sides are then rounded up to the stride, as Mask2Former's processor does with ``size_divisor``. No
padding: the whole network input is picture, so output maps scale straight back to the frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import functional as tvF1
from torchvision.transforms.v2 import functional as tvF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_size(height: int, width: int, *, imgsz: int, stride: int) -> tuple[int, int]:
    """The network input (height, width) for a frame of ``height`` x ``width`` (module docstring)."""
    short, long = min(height, width), max(height, width)
    new_short, new_long = imgsz, int(imgsz * long / short)
    h, w = (new_short, new_long) if height <= width else (new_long, new_short)
    if stride > 1:
        h, w = (int(math.ceil(v / stride) * stride) for v in (h, w))
    return h, w


def as_batch(images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:  # -> [B, H, W, 3] uint8
    """One frame [H, W, 3], a batch [B, H, W, 3] or a list of same-size frames, as a [B, H, W, 3] batch."""
    if isinstance(images, torch.Tensor):
        batch = images.unsqueeze(0) if images.dim() == 3 else images
    else:
        if not images:
            raise ValueError("segmenter input: no frames")
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) != 1:
            raise ValueError(f"segmenter input: frames of one batch must share a size, got {sorted(shapes)}")
        batch = torch.stack(list(images))
    if batch.dim() != 4 or batch.shape[3] != 3 or batch.dtype != torch.uint8:
        raise ValueError(f"segmenter input must be [H, W, 3] or [B, H, W, 3] uint8 RGB, got "
                         f"{tuple(batch.shape)} {batch.dtype}")
    return batch


def normalised_input(batch: torch.Tensor, size: tuple[int, int], *, device: torch.device,
                     legacy_resize: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Resize a [B, H, W, 3] uint8 batch to ``size`` (uint8, bilinear, antialiased; v1 torchvision
    resize when ``legacy_resize``) and normalise it with ImageNet's mean and std, on ``device``.
    Returns [B, 3, h, w] ``dtype``."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).contiguous()
    if tuple(x.shape[2:]) != tuple(size):
        resize = tvF1.resize if legacy_resize else tvF.resize
        x = resize(x, list(size), interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x.float() / 255.0 - mean) / std).to(dtype)
