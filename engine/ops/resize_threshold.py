"""Low-resolution mask logits -> binary masks at frame size: bilinear resize, then a threshold.

The resize is exactly ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` (pixel
centres at half-integers, edges clamped), computed in float32, and a pixel is foreground where the
resized value is strictly greater than the threshold (the threshold rounded to float32, as torch compares
a float32 tensor with a Python float).

Tolerance at the boundary: the kernel (kernels/resize_threshold.cu) evaluates torch's formula in the same
order, but a compiler may fuse a multiply and an add into one rounding where torch's build does not, and
torch's CPU kernel orders the sums differently from its CUDA one. The float32 results can therefore differ
by a few ulp of the inputs' magnitude, and a pixel whose interpolated value is that close to the
threshold can flip. Away from the threshold the masks are identical; tests/ops/test_resize_threshold.py
counts the flipped pixels and checks each lies within that bound.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.ops import _library

# Masks per interpolate call in the reference: keeps its float32 intermediate under ~256 MB at 1080p.
_REFERENCE_ELEMENTS = 1 << 26


def resize_threshold(logits: torch.Tensor,  # [N, h, w] float
                     *,
                     size: tuple[int, int],  # (H, W) frame size
                     threshold: float = 0.0) -> torch.Tensor:  # [N, H, W] bool
    """Resize mask logits bilinearly to ``size`` and threshold them.

    Args:
        logits: [N, h, w] float (any float dtype; computed in float32), h, w >= 1.
        size: (H, W), the output size, each >= 1.
        threshold: foreground where the resized value is > threshold (0 for logits).
    Returns:
        [N, H, W] bool on the device of ``logits``.
    """
    if logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(f"resize_threshold expects logits as [N, h, w] float, got {tuple(logits.shape)} "
                         f"{logits.dtype}")
    if (len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)
            or min(size) < 1):
        raise ValueError(f"resize_threshold expects size=(H, W) with positive ints, got {size!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"resize_threshold expects a finite threshold, got {threshold!r}")
    n, in_h, in_w = logits.shape
    out_h, out_w = size
    if n == 0:
        return torch.zeros((0, out_h, out_w), dtype=torch.bool, device=logits.device)
    if in_h == 0 or in_w == 0:
        raise ValueError(f"resize_threshold cannot resize empty {in_h}x{in_w} logits to {out_h}x{out_w}")
    logits = logits.to(torch.float32)
    library = _library.kernels_for(logits)
    if library is None:
        return resize_threshold_reference(logits, size=size, threshold=threshold)
    logits = logits.contiguous()
    out = torch.empty((n, out_h, out_w), dtype=torch.bool, device=logits.device)
    _library.launch(library, "streamseg_resize_threshold", logits, logits.data_ptr(), n, in_h, in_w,
                    out_h, out_w, threshold, out.data_ptr())
    return out


def resize_threshold_reference(logits: torch.Tensor,  # [N, h, w] float32
                               *,
                               size: tuple[int, int],  # (H, W)
                               threshold: float = 0.0) -> torch.Tensor:  # [N, H, W] bool
    """``F.interpolate(..., mode="bilinear", align_corners=False) > threshold``, a few masks at a time."""
    n = logits.shape[0]
    out_h, out_w = size
    out = torch.empty((n, out_h, out_w), dtype=torch.bool, device=logits.device)
    step = max(1, _REFERENCE_ELEMENTS // (out_h * out_w))
    for start in range(0, n, step):
        resized = F.interpolate(logits[start:start + step, None], size=(out_h, out_w), mode="bilinear",
                                align_corners=False)
        out[start:start + step] = resized[:, 0] > threshold
    return out
