"""Instance masks at frame resolution, computed only inside each box.

A YOLOv8-seg mask is ``sigmoid(coefficients @ prototypes) > 0.5`` on the prototype grid (input / 4), upsampled
to the frame and cropped to the detection's box. Ultralytics (``ops.process_mask_native``, retina masks)
upsamples every instance's full mask to full frame resolution and then zeroes everything outside the box,
so its cost grows with instances x frame pixels: at 100 instances on a 1280x720 frame that is 92 M
interpolated floats for masks that are mostly zero.

Here the upsampling is written as two 1-D linear maps, one per axis, from the prototype grid to frame pixels
(``AxisTaps``). Ultralytics' chain (an optional x1/x2/x4 bilinear upsample so the letterbox padding falls on
whole pixels, crop of the padding, bilinear resize to the frame) is linear along each axis, so its
composition is one small matrix per axis; each frame pixel depends on at most three consecutive prototype
cells per axis. A mask is then evaluated only at the pixels inside its box: rows first (3 taps on the
prototype grid), then columns (3 taps on the row-interpolated values). Work and memory scale with the boxes'
area, not with instances x frame. The values equal Ultralytics' up to float rounding (the parity tests hold
masks to IoU >= 0.99; in practice they agree to a few boundary pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

TAPS = 3  # prototype cells that can reach one frame pixel along an axis, through both bilinear stages
# Instances evaluated together: sorted by box size and padded to the largest box of their group. Larger groups
# mean fewer kernel launches (GPU) and Python steps (CPU) but more padding. Tuned with benchmarks/detector.py.
GROUP = 16


@dataclass(frozen=True, slots=True)
class AxisTaps:
    """For each frame pixel along one axis: the first of the prototype cells it reads, and their weights."""

    start: torch.Tensor  # [n] int64 first prototype index (the taps read start, start+1, start+2)
    weight: torch.Tensor  # [n, 3] float32


@dataclass(frozen=True, slots=True)
class MaskGeometry:
    rows: AxisTaps  # frame rows from prototype rows
    cols: AxisTaps  # frame columns from prototype columns


def mask_geometry(frame_h: int, frame_w: int, proto_h: int, proto_w: int, *,
                  device: torch.device) -> MaskGeometry:
    """The per-axis maps from a prototype grid to a frame, as Ultralytics' retina-mask path computes them
    (``ops.process_mask_native`` and ``ops.scale_masks``): upsample factor ``f`` from the letterbox padding,
    then the crop and resize are worked out from the shapes alone, exactly as there. Cached per geometry."""
    return _mask_geometry(frame_h, frame_w, proto_h, proto_w, str(device))


@lru_cache(maxsize=32)
def _mask_geometry(frame_h: int, frame_w: int, proto_h: int, proto_w: int, device: str) -> MaskGeometry:
    gain = min(4 * proto_h / frame_h, 4 * proto_w / frame_w)
    pad = (4 * proto_h - max(round(frame_h * gain), 1)) | (4 * proto_w - max(round(frame_w * gain), 1))
    f = 4 // math.gcd(4, pad | pad // 2)  # smallest upsample that puts the padding on whole pixels
    up_h, up_w = f * proto_h, f * proto_w
    gain = min(up_h / frame_h, up_w / frame_w)
    content_h, content_w = max(round(frame_h * gain), 1), max(round(frame_w * gain), 1)
    top, left = round((up_h - content_h) / 2 - 0.1), round((up_w - content_w) / 2 - 0.1)
    rows = _axis_taps(frame_h, proto_h, f, top, content_h, device)
    cols = _axis_taps(frame_w, proto_w, f, left, content_w, device)
    return MaskGeometry(rows=rows, cols=cols)


def _bilinear_matrix(n_out: int, n_in: int, scale: np.float32) -> np.ndarray:  # -> [n_out, n_in] float64
    """torch's ``interpolate(mode="bilinear", align_corners=False)`` along one axis, as a matrix; the source
    coordinate is computed in float32 as torch's CPU kernel does."""
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5),
                     np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (src - i0.astype(np.float32)).astype(np.float64)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(matrix, (np.arange(n_out), i1), frac)
    return matrix


def _axis_taps(n_out: int, n_proto: int, f: int, crop_start: int, crop_len: int, device: str) -> AxisTaps:
    upsample = _bilinear_matrix(f * n_proto, n_proto, np.float32(1 / f))  # interpolate(scale_factor=f)
    resize = _bilinear_matrix(n_out, crop_len, np.float32(crop_len) / np.float32(n_out))  # interpolate(size)
    matrix = resize @ upsample[crop_start:crop_start + crop_len]  # [n_out, n_proto]
    nonzero = matrix != 0
    start = np.minimum(nonzero.argmax(axis=1), n_proto - TAPS)
    offsets = start[:, None] + np.arange(TAPS)
    weight = np.take_along_axis(matrix, offsets, axis=1)
    # Each pixel mixes two neighbours of two neighbours: at most three consecutive cells. Checked, not assumed.
    if not np.allclose(weight.sum(axis=1), matrix.sum(axis=1)):
        raise RuntimeError(f"mask upsampling needs more than {TAPS} taps for {n_out} px from {n_proto} cells")
    return AxisTaps(start=torch.from_numpy(start).to(device),
                    weight=torch.from_numpy(weight.astype(np.float32)).to(device))


def box_masks(coefficients: torch.Tensor,  # [N, nm] float32
              protos: torch.Tensor,  # [nm, ph, pw]
              boxes: torch.Tensor,  # [N, 4] float32 x1, y1, x2, y2 in frame pixels, clipped to the frame
              geometry: MaskGeometry, *, frame_h: int, frame_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks at frame resolution, zero outside each box, for the instances whose mask is not empty.

    Ultralytics keeps a frame pixel (column c, row r) of an instance when ``x1 <= c < x2`` and
    ``y1 <= r < y2`` and the upsampled logit is > 0, and then drops instances whose mask came out empty; this
    does the same.

    Args:
        coefficients: [N, nm] mask coefficients of the kept detections.
        protos: [nm, ph, pw] the frame's prototypes.
        boxes: [N, 4] boxes in frame pixels.
        geometry: ``mask_geometry(frame_h, frame_w, ph, pw)``.
    Returns:
        (masks [K, H, W] bool, keep [N] bool): K = keep.sum() instances, in input order.
    """
    n, device = coefficients.shape[0], coefficients.device
    if n == 0:
        return torch.zeros((0, frame_h, frame_w), dtype=torch.bool, device=device), \
            torch.zeros((0,), dtype=torch.bool, device=device)
    nm, ph, pw = protos.shape
    logits = (coefficients @ protos.float().view(nm, -1)).view(n, ph, pw)
    # First and one-past-last pixel inside each box: pixel c is inside when x1 <= c < x2.
    spans = boxes.ceil().to(torch.int64)
    spans[:, 0::2].clamp_(0, frame_w)
    spans[:, 1::2].clamp_(0, frame_h)
    x0, y0, x1, y1 = spans.T.tolist()
    heights = [max(b - a, 0) for a, b in zip(y0, y1)]
    widths = [max(b - a, 0) for a, b in zip(x0, x1)]
    order = sorted(range(n), key=lambda i: (heights[i], widths[i]), reverse=True)
    pieces: list[torch.Tensor | None] = [None] * n
    nonempty = torch.zeros((n,), dtype=torch.bool, device=device)
    for g in range(0, n, GROUP):
        members = [i for i in order[g:g + GROUP] if heights[i] and widths[i]]
        if members:
            nonempty[members] = _evaluate_group(members, logits, geometry, y0, x0, heights, widths, pieces)
    keep_list = nonempty.tolist()
    kept = [i for i in range(n) if keep_list[i]]
    masks = torch.zeros((len(kept), frame_h, frame_w), dtype=torch.bool, device=device)
    for k, i in enumerate(kept):
        masks[k, y0[i]:y0[i] + heights[i], x0[i]:x0[i] + widths[i]] = pieces[i]
    return masks, nonempty


def _evaluate_group(members: list[int], logits: torch.Tensor, geometry: MaskGeometry, y0: list[int],
                    x0: list[int], heights: list[int], widths: list[int],
                    pieces: list[torch.Tensor | None]) -> torch.Tensor:  # -> [g] bool
    """Evaluate the masks of a few instances inside their boxes, padded to the group's largest box; fills
    ``pieces`` with each one's box-sized mask and returns whether each has any pixel set."""
    device = logits.device
    g, hb, wb = len(members), max(heights[i] for i in members), max(widths[i] for i in members)
    pw = logits.shape[2]
    index = torch.tensor(members, device=device)
    row_ids = torch.tensor([y0[i] for i in members], device=device)[:, None] + torch.arange(hb, device=device)
    col_ids = torch.tensor([x0[i] for i in members], device=device)[:, None] + torch.arange(wb, device=device)
    row_ids.clamp_(max=geometry.rows.start.shape[0] - 1)  # padding rows/columns repeat the last pixel; unused
    col_ids.clamp_(max=geometry.cols.start.shape[0] - 1)
    cells = logits[index]  # [g, ph, pw]
    row_start, row_weight = geometry.rows.start[row_ids], geometry.rows.weight[row_ids]  # [g, hb], [g, hb, 3]
    rows = torch.zeros((g, hb, pw), dtype=torch.float32, device=device)
    for t in range(TAPS):
        picked = cells.gather(1, (row_start + t)[:, :, None].expand(g, hb, pw))
        rows.addcmul_(picked, row_weight[:, :, t, None])
    col_start, col_weight = geometry.cols.start[col_ids], geometry.cols.weight[col_ids]  # [g, wb], [g, wb, 3]
    values = torch.zeros((g, hb, wb), dtype=torch.float32, device=device)
    for t in range(TAPS):
        picked = rows.gather(2, (col_start + t)[:, None, :].expand(g, hb, wb))
        values.addcmul_(picked, col_weight[:, None, :, t])
    inside = values > 0
    inside &= torch.arange(hb, device=device)[None, :, None] < torch.tensor(
        [heights[i] for i in members], device=device)[:, None, None]
    inside &= torch.arange(wb, device=device)[None, None, :] < torch.tensor(
        [widths[i] for i in members], device=device)[:, None, None]
    for k, i in enumerate(members):
        pieces[i] = inside[k, :heights[i], :widths[i]]
    return inside.flatten(1).any(1)
