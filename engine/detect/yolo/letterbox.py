"""Letterbox: scale a frame to fit the network input, keep its aspect ratio, pad the rest with grey.

The geometry is Ultralytics' ``LetterBox`` (ultralytics/data/augment.py) to the pixel, because parity with its
``predict`` depends on it: scale ``r = min(S/h, S/w)``, content ``round(h*r) x round(w*r)``, padding split
around the content with ``round(d - 0.1)`` before and ``round(d + 0.1)`` after, value 114.

Ultralytics' ``predict`` letterboxes a batch to the *minimum rectangle* (padding only up to a multiple of the
stride, ``auto=True``) when every image in the batch has the same shape and the runtime takes any input size
(a PyTorch model or a dynamic-shape export), and to the full ``S x S`` square otherwise (``auto=False``):
``BasePredictor.pre_transform``. Batch 1 is the "same shape" case. ``batch_geometry`` makes the same choice,
so a 1280x720 stream runs at 640x384 rather than 640x640 (40% fewer pixels) and matches Ultralytics exactly.

The resize is OpenCV's uint8 ``INTER_LINEAR`` (what Ultralytics uses) bit for bit: ``cv2.resize`` itself on
the CPU, and on a GPU ``resize_linear``, which reproduces it in integer tensor arithmetic on the device:
half-pixel centres, no antialiasing, 11-bit fixed-point weights, a horizontal pass in full precision, then
a vertical pass on values shifted right by 4 with 16-bit high-half multiplies and a rounding shift by 2.
A float bilinear resize differs from it by one level on ~10% of pixels, and a randomly initialised network
turns that into score differences of ~2e-3 and visibly different masks; with the same arithmetic the inputs
are identical (checked against ``cv2.resize`` on 46 size pairs, up- and downscaling, in tests/detect).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

PAD_VALUE = 114  # Ultralytics' LetterBox padding_value
_WEIGHT_ONE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: 11-bit fixed-point interpolation weights


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where a frame lands in the network input."""

    frame_h: int
    frame_w: int
    input_h: int  # network input size, padding included
    input_w: int
    content_h: int  # the scaled frame inside the input
    content_w: int
    top: int  # padding rows above the content
    left: int  # padding columns left of the content


def letterbox(frame_h: int, frame_w: int, *, imgsz: int, stride: int, auto: bool) -> Letterbox:
    """The letterbox of one frame: ``auto`` pads only up to a multiple of ``stride`` (minimum rectangle)."""
    r = min(imgsz / frame_h, imgsz / frame_w)
    content_w, content_h = max(round(frame_w * r), 1), max(round(frame_h * r), 1)
    dw, dh = imgsz - content_w, imgsz - content_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return Letterbox(frame_h=frame_h, frame_w=frame_w, input_h=content_h + top + bottom,
                     input_w=content_w + left + right, content_h=content_h, content_w=content_w, top=top,
                     left=left)


def batch_geometry(shapes: list[tuple[int, int]], *, imgsz: int, stride: int,
                   dynamic_hw: bool) -> list[Letterbox]:
    """Letterboxes for a batch of (height, width) frame shapes, choosing Ultralytics' ``auto`` rule:
    minimum rectangle when all shapes are equal and the runtime takes any input size, else the square."""
    auto = dynamic_hw and len(set(shapes)) == 1
    return [letterbox(h, w, imgsz=imgsz, stride=stride, auto=auto) for h, w in shapes]


def letterbox_batch(images: list[torch.Tensor],  # each [H, W, 3] uint8 RGB
                    boxes: list[Letterbox], *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Scale and pad each frame into one network batch.

    Args:
        images: B frames, [H_i, W_i, 3] uint8 RGB, on the CPU or ``device``.
        boxes: their letterboxes, all with the same input size.
        device, dtype: where and in which precision the batch is made.
    Returns:
        [B, 3, input_h, input_w] ``dtype`` in [0, 1], RGB.
    """
    h, w = boxes[0].input_h, boxes[0].input_w
    batch = torch.full((len(images), 3, h, w), float(PAD_VALUE), dtype=torch.float32, device=device)
    for i, (image, box) in enumerate(zip(images, boxes)):
        pixels = image.to(device, non_blocking=True)
        if (box.content_h, box.content_w) != (box.frame_h, box.frame_w):
            if pixels.device.type == "cpu":  # OpenCV itself: the reference, and faster than tensor ops here
                import cv2

                pixels = torch.from_numpy(cv2.resize(pixels.numpy(), (box.content_w, box.content_h),
                                                     interpolation=cv2.INTER_LINEAR))
            else:
                pixels = resize_linear(pixels, box.content_h, box.content_w)
        rows, cols = slice(box.top, box.top + box.content_h), slice(box.left, box.left + box.content_w)
        batch[i, :, rows, cols] = pixels.permute(2, 0, 1)
    # Divide (not multiply by 1/255) so the values are bit-identical to Ultralytics' ``float().div_(255)``.
    return batch.div_(255).to(dtype)


def resize_linear(image: torch.Tensor,  # [H, W, C] uint8
                  height: int, width: int) -> torch.Tensor:  # -> [height, width, C] uint8
    """OpenCV's ``cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)`` for uint8 images, in
    integer tensor arithmetic on the image's device."""
    x0, x1, a0, a1 = _taps(width, image.shape[1], clamp_weights=True, device=str(image.device))
    y0, y1, b0, b1 = _taps(height, image.shape[0], clamp_weights=False, device=str(image.device))
    pixels = image.to(torch.int32)

    def horizontal(rows: torch.Tensor) -> torch.Tensor:  # [h, W, C] -> [h, width, C], weights scaled by 2048
        return rows[:, x0] * a0[:, None] + rows[:, x1] * a1[:, None]

    top, bottom = horizontal(pixels[y0]) >> 4, horizontal(pixels[y1]) >> 4
    mixed = ((top * b0[:, None, None]) >> 16) + ((bottom * b1[:, None, None]) >> 16)
    return ((mixed + 2) >> 2).clamp_(0, 255).to(torch.uint8)


@lru_cache(maxsize=64)
def _taps(n_out: int, n_in: int, *, clamp_weights: bool, device: str) -> tuple[torch.Tensor, ...]:
    """Source indices and fixed-point weights along one axis, as OpenCV computes them: the coordinate in
    double, cast to float; horizontally a sample left of the first or right of the last pixel takes that
    pixel whole (weight 2048, 0); vertically the weights stay and only the row indices are clamped."""
    scale = 1.0 / (n_out / n_in)
    coord = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(coord).astype(np.int64)
    frac = (coord - first).astype(np.float32)
    if clamp_weights:
        outside = (first < 0) | (first >= n_in - 1)
        frac[outside] = 0
        first = np.clip(first, 0, n_in - 1)
    w0 = np.rint((np.float32(1) - frac) * np.float32(_WEIGHT_ONE))
    w1 = np.rint(frac * np.float32(_WEIGHT_ONE))
    arrays = (np.clip(first, 0, n_in - 1), np.clip(first + 1, 0, n_in - 1), w0, w1)
    return tuple(torch.from_numpy(a.astype(np.int64 if k < 2 else np.int32)).to(device)
                 for k, a in enumerate(arrays))
