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

MAX_TAPS = 3  # prototype cells that can reach one frame pixel along an axis, through both bilinear stages
# CUDA evaluates instances in groups, sorted by box size and padded to the group's largest box: fewer, larger
# kernels. The CPU evaluates them one by one, exactly inside each box, with contiguous row/column selections.
GROUP = 16


@dataclass(frozen=True, slots=True)
class AxisTaps:
    """For each frame pixel along one axis: the first of the prototype cells it reads, and their weights."""

    start: torch.Tensor  # [n] int64 first prototype index (the taps read start, start+1, ...)
    weight: torch.Tensor  # [n, T] float32, T = 2 (no intermediate upsample) or 3
    first: tuple[int, ...]  # start, on the host, for cutting per-box windows without a device sync

    @property
    def taps(self) -> int:
        return int(self.weight.shape[1])


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
    first = nonzero.argmax(axis=1)
    span = n_proto - nonzero[:, ::-1].argmax(axis=1) - first  # cells each pixel reads
    taps = 2 if span.max() <= 2 else MAX_TAPS
    # A pixel mixes two neighbours of two neighbours: at most three consecutive cells. Checked, not assumed.
    if span.max() > MAX_TAPS:
        raise RuntimeError(f"mask upsampling needs {span.max()} taps for {n_out} px from {n_proto} cells")
    start = np.minimum(first, n_proto - taps)
    weight = np.take_along_axis(matrix, start[:, None] + np.arange(taps), axis=1)
    return AxisTaps(start=torch.from_numpy(start).to(device),
                    weight=torch.from_numpy(weight.astype(np.float32)).to(device),
                    first=tuple(start.tolist()))


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
        masks [K, H, W] bool and keep [N] bool: the K = keep.sum() instances with a non-empty mask, in order.
    """
    n, device = coefficients.shape[0], coefficients.device
    masks = _zeros(n, frame_h, frame_w, device)
    if n == 0:
        return masks, torch.zeros((0,), dtype=torch.bool, device=device)
    nm, ph, pw = protos.shape
    logits = (coefficients @ protos.float().view(nm, -1)).view(n, ph, pw)
    # First and one-past-last pixel inside each box: pixel c is inside when x1 <= c < x2.
    spans = boxes.ceil().to(torch.int64)
    spans[:, 0::2].clamp_(0, frame_w)
    spans[:, 1::2].clamp_(0, frame_h)
    x0, y0, x1, y1 = spans.T.tolist()
    boxes_px = [(y0[i], x0[i], max(y1[i] - y0[i], 0), max(x1[i] - x0[i], 0)) for i in range(n)]
    if device.type == "cuda":
        nonempty = _paste_grouped(logits, boxes_px, geometry, masks)
    else:
        nonempty = _paste_each(logits, boxes_px, geometry, masks)
    if not bool(nonempty.all()):
        masks = masks[nonempty]
    return masks, nonempty


def _zeros(n: int, height: int, width: int, device: torch.device) -> torch.Tensor:  # -> [n, H, W] bool
    """The zeroed output. On the CPU it comes from ``numpy.zeros`` (calloc): the kernel maps its pages to the
    shared zero page until written, so only the pages a box touches are ever faulted in, and the N x H x W
    memset is skipped: 55 ms -> 10 ms for 100 masks at 1280x720 (benchmarks/detector.py); untouched pages
    take no memory either. ``torch.zeros`` writes every byte."""
    if device.type == "cpu":
        return torch.from_numpy(np.zeros((n, height, width), dtype=np.bool_))
    return torch.zeros((n, height, width), dtype=torch.bool, device=device)


def _paste_each(logits: torch.Tensor,  # [N, ph, pw]
                boxes_px: list[tuple[int, int, int, int]],  # (top, left, height, width) per instance
                geometry: MaskGeometry, masks: torch.Tensor) -> torch.Tensor:  # -> [N] bool
    """One instance at a time, exactly inside its box: interpolate the box's window of prototype cells
    along columns (few rows), then along rows; both are contiguous selections plus multiply-adds."""
    rows, cols = geometry.rows, geometry.cols
    filled = []
    for i, (top, left, height, width) in enumerate(boxes_px):
        if height == 0 or width == 0:
            filled.append(masks.new_zeros(()))
            continue
        r0, r1 = rows.first[top], rows.first[top + height - 1] + rows.taps
        c0, c1 = cols.first[left], cols.first[left + width - 1] + cols.taps
        window = logits[i, r0:r1, c0:c1]
        col_start = cols.start[left:left + width] - c0
        col_weight = cols.weight[left:left + width]
        across = _mix(window, 1, col_start, col_weight)
        row_start = rows.start[top:top + height] - r0
        values = _mix(across, 0, row_start, rows.weight[top:top + height, :, None])
        torch.gt(values, 0, out=masks[i, top:top + height, left:left + width])
        filled.append(values.amax() > 0)  # same as any() of the mask, and 20x cheaper than any() on a view
    return torch.stack(filled)


def _mix(cells: torch.Tensor, dim: int, start: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum_t weight[:, t] * cells.index_select(dim, start + t)`` (weight [n, T] for columns, [n, T, 1] for
    rows); two taps as one lerp (a pixel's weights sum to one), which saves a pass over the box."""
    first = cells.index_select(dim, start)
    taps = weight.shape[1]
    if taps == 2:
        return torch.lerp(first, cells.index_select(dim, start + 1), weight[:, 1])
    out = first * weight[:, 0]
    for t in range(1, taps):
        out.addcmul_(cells.index_select(dim, start + t), weight[:, t])
    return out


def _paste_grouped(logits: torch.Tensor,  # [N, ph, pw]
                   boxes_px: list[tuple[int, int, int, int]],
                   geometry: MaskGeometry, masks: torch.Tensor) -> torch.Tensor:  # -> [N] bool
    """Instances in groups of similar box size, each group padded to its largest box: a handful of batched
    gathers per group instead of a dozen small kernels per instance."""
    device, n = logits.device, logits.shape[0]
    rows, cols = geometry.rows, geometry.cols
    order = sorted(range(n), key=lambda i: (boxes_px[i][2], boxes_px[i][3]), reverse=True)
    nonempty = torch.zeros((n,), dtype=torch.bool, device=device)
    for g in range(0, n, GROUP):
        members = [i for i in order[g:g + GROUP] if boxes_px[i][2] and boxes_px[i][3]]
        if not members:
            continue
        tops, lefts, heights, widths = (torch.tensor([boxes_px[i][k] for i in members], device=device)
                                        for k in range(4))
        hb, wb = max(boxes_px[i][2] for i in members), max(boxes_px[i][3] for i in members)
        row_ids = (tops[:, None] + torch.arange(hb, device=device)).clamp_(max=rows.start.shape[0] - 1)
        col_ids = (lefts[:, None] + torch.arange(wb, device=device)).clamp_(max=cols.start.shape[0] - 1)
        cells = logits[members]  # [g, ph, pw]
        g_, ph = len(members), cells.shape[1]
        col_start, col_weight = cols.start[col_ids], cols.weight[col_ids]  # [g, wb], [g, wb, T]
        across = torch.zeros((g_, ph, wb), dtype=torch.float32, device=device)
        for t in range(cols.taps):
            across.addcmul_(cells.gather(2, (col_start + t)[:, None, :].expand(g_, ph, wb)),
                            col_weight[:, None, :, t])
        row_start, row_weight = rows.start[row_ids], rows.weight[row_ids]  # [g, hb], [g, hb, T]
        values = torch.zeros((g_, hb, wb), dtype=torch.float32, device=device)
        for t in range(rows.taps):
            values.addcmul_(across.gather(1, (row_start + t)[:, :, None].expand(g_, hb, wb)),
                            row_weight[:, :, t, None])
        inside = values > 0
        inside &= torch.arange(hb, device=device)[None, :, None] < heights[:, None, None]
        inside &= torch.arange(wb, device=device)[None, None, :] < widths[:, None, None]
        for k, i in enumerate(members):
            top, left, height, width = boxes_px[i]
            masks[i, top:top + height, left:left + width] = inside[k, :height, :width]
        nonempty[members] = inside.flatten(1).any(1)
    return nonempty
