"""COCO run-length encoding of instance masks (the JSONL mask format).

The reference is pycocotools itself, so what the JSONL holds is what ``pycocotools.mask.decode`` reads.
On CUDA tensors the run boundaries are found on the GPU (kernels/rle.cu: the column-major positions
where a mask changes value) and only those positions cross to the host, where they become counts and
the COCO string; the result is identical to pycocotools', character for character.
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch
from pycocotools import mask as mask_util

from engine.ops import _library


def rle_encode(masks: torch.Tensor) -> list[dict]:  # masks: [N, H, W] bool
    """Encode each mask as COCO compressed RLE: ``{"size": [H, W], "counts": str}``.

    Args:
        masks: [N, H, W] bool, any device (other dtypes: nonzero is foreground).
    Returns:
        N dicts, in order; an empty list for N == 0.
    """
    if masks.dim() != 3:
        raise ValueError(f"rle_encode expects [N, H, W] masks, got {tuple(masks.shape)}")
    if masks.shape[1] * masks.shape[2] >= 2**31:
        raise ValueError(f"rle_encode: masks of {masks.shape[1]}x{masks.shape[2]} exceed 2**31 pixels")
    if masks.dtype != torch.bool:
        masks = masks != 0
    if masks.shape[0] == 0:
        return []
    library = _library.kernels_for(masks)
    if library is None:
        return rle_encode_reference(masks)
    return _rle_encode_kernel(library, masks)


def rle_encode_reference(masks: torch.Tensor) -> list[dict]:  # masks: [N, H, W] bool
    """pycocotools' own encoder, on a host copy of the masks."""
    if masks.shape[0] == 0:
        return []
    # pycocotools wants [H, W, N] uint8 in column-major order: COCO runs go down columns.
    array = np.asfortranarray(masks.to("cpu", torch.uint8).permute(1, 2, 0).numpy())
    encoded = mask_util.encode(array)
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
            for r in encoded]


def _rle_encode_kernel(library: ctypes.CDLL, masks: torch.Tensor) -> list[dict]:  # masks: [N, H, W] bool
    masks = masks.contiguous()
    n, height, width = masks.shape
    segments = int(library.streamseg_rle_segment_count(height, width))
    offsets = torch.empty((n, segments), dtype=torch.int32, device=masks.device)
    totals = torch.empty((n,), dtype=torch.int32, device=masks.device)
    _library.launch(library, "streamseg_rle_count", masks, masks.data_ptr(), n, height, width,
                    offsets.data_ptr(), totals.data_ptr())
    # The one synchronisation before the second pass: its output size depends on the counts.
    host_totals = totals.cpu().numpy().astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(host_totals)[:-1]]).astype(np.int64)
    positions = torch.empty((int(host_totals.sum()),), dtype=torch.int32, device=masks.device)
    mask_offsets = torch.from_numpy(starts).to(masks.device)
    _library.launch(library, "streamseg_rle_transitions", masks, masks.data_ptr(), n, height, width,
                    offsets.data_ptr(), mask_offsets.data_ptr(), positions.data_ptr())
    return _encode_transitions(positions.cpu().numpy(), host_totals, height, width)


def _encode_transitions(positions: np.ndarray,  # [T] int32, column-major indices, mask after mask
                        totals: np.ndarray,  # [N] int64, transitions per mask
                        height: int, width: int) -> list[dict]:
    """COCO RLE dicts from each mask's transition positions: the j where M[j] != M[j - 1], M[-1] = 0."""
    pixels = height * width
    result = []
    start = 0
    for total in totals.tolist():
        bounds = np.empty(total + 2, dtype=np.int64)
        bounds[0] = 0
        bounds[1:-1] = positions[start:start + total]
        bounds[-1] = pixels
        start += total
        result.append({"size": [height, width], "counts": _coco_string(np.diff(bounds))})
    return result


def _coco_string(counts: np.ndarray) -> str:  # counts: [K] int64 run lengths, background first
    """The COCO compressed form of uncompressed RLE counts, as pycocotools' ``rleToString`` writes it:
    from the fourth count on, each is stored as its difference from the count two before; every value
    is written as 5-bit groups, least significant first, 6 bits per character offset by 48, the 0x20 bit
    set on all but the last group; the last group's 0x10 bit is the value's sign."""
    values = counts.astype(np.int64)
    if values.size > 3:
        values[3:] = counts[3:] - counts[1:-2]
    # Five bits per group: 13 groups cover any int64, real masks need at most 7.
    groups = np.zeros((values.size, 13), dtype=np.uint8)
    lengths = np.zeros(values.size, dtype=np.int64)
    active = np.ones(values.size, dtype=bool)
    rest = values
    for k in range(groups.shape[1]):
        chunk = rest & 0x1F
        rest = rest >> 5  # arithmetic shift: negative values end at -1
        more = np.where(chunk & 0x10 != 0, rest != -1, rest != 0)
        groups[:, k] = (chunk | (more.astype(np.int64) << 5)) + 48
        lengths += active
        active &= more
        if not active.any():
            break
    keep = np.arange(groups.shape[1])[None, :] < lengths[:, None]
    return groups[keep].tobytes().decode("ascii")
