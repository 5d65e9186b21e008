"""Low-resolution instance logits -> one instance-id map at frame resolution, without ever holding every
instance's full-resolution logits at once.

Each instance's logits are upsampled as ``F.interpolate(mode="bilinear", align_corners=False)`` does
(the tracker's own masks are that upsampling > 0), then ``fuse_masks``' rule decides each pixel: among
the instances whose logit is > 0 there, the largest ``score * sigmoid(logit)`` wins, the lowest index on
ties, -1 where none is foreground.

On the CPU each instance is visited only inside the box where its upsampled logit can be positive: a
bilinear sample is a convex combination of its four source cells, so it is <= 0 wherever all four are.
The cost follows the objects' area instead of instances x frame pixels. On CUDA the logits are
upsampled in one call and ``fuse_masks`` runs (its kernel where built).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.ops.fuse_masks import fuse_masks


def fuse_logits(logits: torch.Tensor,  # [N, h, w] float low-resolution mask logits
                scores: torch.Tensor,  # [N] float, finite
                *, size: tuple[int, int]) -> torch.Tensor:  # [H, W] int32
    """The instance-id map at ``size`` = (H, W) of ``logits`` upsampled bilinearly, resolved by score.

    Args:
        logits: [N, h, w] float, per-instance low-resolution logits (> 0 is foreground).
        scores: [N] float, each instance's fused score, on the same device.
        size: (H, W) of the output.
    Returns:
        [H, W] int32: the winning instance's index, -1 where no instance is foreground.
    """
    if logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(f"fuse_logits expects [N, h, w] float logits, got {tuple(logits.shape)} {logits.dtype}")
    n = logits.shape[0]
    if scores.shape != (n,):
        raise ValueError(f"fuse_logits expects [{n}] scores, got {tuple(scores.shape)}")
    height, width = size
    if logits.is_cuda:
        full = F.interpolate(logits[:, None].float(), size=(height, width), mode="bilinear",
                             align_corners=False)[:, 0]
        return fuse_masks(full, scores.float())
    return fuse_logits_reference(logits, scores, size=size)


def fuse_logits_reference(logits: torch.Tensor, scores: torch.Tensor, *,
                          size: tuple[int, int]) -> torch.Tensor:  # [H, W] int32
    height, width = size
    best = torch.full((height, width), -1, dtype=torch.int32, device=logits.device)
    best_evidence = torch.zeros((height, width), dtype=torch.float32, device=logits.device)
    low = logits.float()
    h, w = low.shape[1:]
    for i in range(low.shape[0]):
        rows, cols = _foreground_span(low[i] > 0, out=(height, width))
        if rows is None:
            continue
        x = _bilinear(low[i], rows, cols, out=(height, width))  # [rows, cols]
        evidence = scores[i].float() * torch.sigmoid(x)
        region = (slice(rows[0], rows[1]), slice(cols[0], cols[1]))
        taken = best[region]
        # Strictly greater: an equal later instance never displaces an earlier one (fuse_masks' rule).
        take = (x > 0) & ((taken < 0) | (evidence > best_evidence[region]))
        best[region] = torch.where(take, torch.tensor(i, dtype=torch.int32), taken)
        best_evidence[region] = torch.where(take, evidence, best_evidence[region])
    return best


def split_id_map(id_map: torch.Tensor,  # [H, W] int32 from fuse_logits
                 logits: torch.Tensor,  # [N, h, w] the logits it was made from
                 ) -> tuple[torch.Tensor, torch.Tensor]:  # [N, H, W] bool, [N, 4] float32
    """Each instance's mask (``id_map == i``) and box (pixel edges, zeros when empty).

    On the CPU only the region where instance i can be foreground (see ``fuse_logits``) is compared, so
    the cost follows the objects' area; on CUDA the whole map is compared at once.
    """
    from engine.ops.boxes import mask_boxes

    n = logits.shape[0]
    height, width = id_map.shape
    if id_map.is_cuda:
        masks = id_map[None] == torch.arange(n, device=id_map.device, dtype=id_map.dtype)[:, None, None]
        return masks, mask_boxes(masks)
    masks = torch.zeros((n, height, width), dtype=torch.bool)
    boxes = torch.zeros((n, 4), dtype=torch.float32)
    for i in range(n):
        rows, cols = _foreground_span(logits[i] > 0, out=(height, width))
        if rows is None:
            continue
        region = id_map[rows[0]:rows[1], cols[0]:cols[1]] == i
        masks[i, rows[0]:rows[1], cols[0]:cols[1]] = region
        ys = torch.nonzero(region.any(dim=1)).flatten()
        if len(ys):
            xs = torch.nonzero(region.any(dim=0)).flatten()
            boxes[i] = torch.tensor([cols[0] + int(xs[0]), rows[0] + int(ys[0]),
                                     cols[0] + int(xs[-1]) + 1, rows[0] + int(ys[-1]) + 1], dtype=torch.float32)
    return masks, boxes


def _foreground_span(cells: torch.Tensor,  # [h, w] bool, low-resolution cells with logit > 0
                     *, out: tuple[int, int]) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """Output rows and columns [start, stop) whose bilinear sources can touch a positive cell."""
    row_any, col_any = cells.any(dim=1), cells.any(dim=0)
    if not bool(row_any.any()):
        return None, None
    r = torch.nonzero(row_any).flatten()
    c = torch.nonzero(col_any).flatten()
    return (_span(int(r[0]), int(r[-1]), cells.shape[0], out[0]),
            _span(int(c[0]), int(c[-1]), cells.shape[1], out[1]))


def _span(first: int, last: int, n_in: int, n_out: int) -> tuple[int, int]:
    """Output indices whose source coordinate (o + 0.5) * n_in / n_out - 0.5 lies within one cell of
    [first, last], widened by one output pixel against rounding."""
    scale = n_out / n_in
    start = math.floor((first - 1 + 0.5) * scale - 0.5) - 1
    stop = math.ceil((last + 1 + 0.5) * scale - 0.5) + 2
    return max(0, start), min(n_out, stop)


def _axis(start: int, stop: int, n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source cells and weights of output indices [start, stop), as align_corners=False bilinear."""
    src = ((torch.arange(start, stop, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, src - i0


def _bilinear(low: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int], *,
              out: tuple[int, int]) -> torch.Tensor:  # [h, w] -> [rows, cols]
    y0, y1, wy = _axis(*rows, low.shape[0], out[0])
    x0, x1, wx = _axis(*cols, low.shape[1], out[1])
    top = low[y0][:, x0] * (1 - wx) + low[y0][:, x1] * wx
    bottom = low[y1][:, x0] * (1 - wx) + low[y1][:, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]
