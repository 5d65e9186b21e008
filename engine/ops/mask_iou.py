"""Pairwise intersection-over-union of two sets of binary masks (the fuser's association cost).

IoU(a, b) = |a & b| / |a | b|, and 0 where both masks are empty (their union is 0), so an empty mask
never matches anything. The counts are exact integers; the quotient is one float32 division of the two
counts rounded to float32, so the CUDA kernel (kernels/mask_iou.cu, on bit-packed masks), the packed
CPU path (numpy popcount) and the reference below agree bit for bit.
"""

from __future__ import annotations

import ctypes

import torch

from engine.ops import _library

# Pixels per matmul step of the reference: float32 sums of 0/1 values stay exact integers below 2**24,
# and 2**16 pixels keeps a step's float copies of 100 masks at ~26 MB.
_REFERENCE_CHUNK = 1 << 16


def mask_iou(masks_a: torch.Tensor,  # [N, H, W] bool
             masks_b: torch.Tensor,  # [M, H, W] bool
             ) -> torch.Tensor:  # [N, M] float32
    """IoU of every mask in ``masks_a`` with every mask in ``masks_b``.

    Args:
        masks_a: [N, H, W] bool.
        masks_b: [M, H, W] bool, same H, W and device.
    Returns:
        [N, M] float32 on the same device; ``out[i, j]`` is 0 when both masks are empty.
    """
    _check("masks_a", masks_a)
    _check("masks_b", masks_b)
    if masks_a.shape[1:] != masks_b.shape[1:]:
        raise ValueError(f"mask_iou needs masks of one size, got masks_a {tuple(masks_a.shape)} and "
                         f"masks_b {tuple(masks_b.shape)}; resize one set first")
    if masks_a.device != masks_b.device:
        raise ValueError(f"mask_iou got masks_a on {masks_a.device} and masks_b on {masks_b.device}; "
                         f"move them to one device")
    n, m = masks_a.shape[0], masks_b.shape[0]
    if n == 0 or m == 0:
        return torch.zeros((n, m), dtype=torch.float32, device=masks_a.device)
    library = _library.kernels_for(masks_a)
    if library is not None:
        return _mask_iou_kernel(library, masks_a, masks_b)
    if masks_a.device.type == "cpu" and _library.mode() != "reference":
        return mask_iou_packed_cpu(masks_a, masks_b)
    return mask_iou_reference(masks_a, masks_b)


def mask_iou_packed_cpu(masks_a: torch.Tensor,  # [N, H, W] bool, CPU
                        masks_b: torch.Tensor,  # [M, H, W] bool, CPU
                        ) -> torch.Tensor:  # [N, M] float32
    """The kernel's algorithm on the CPU: masks packed to bits (numpy), intersections by popcount.

    torch's boolean reductions run at a fraction of memory bandwidth on the CPU (measured: 64 ms for the
    areas of 10 masks at 1080p, against 6 ms to pack them): this path makes association cheap there.
    Counts are exact integers and the division is the reference's, so results are bit-identical.
    """
    import numpy as np

    def pack(masks: torch.Tensor) -> np.ndarray:  # [K, ceil(P / 64)] uint64
        bits = np.packbits(masks.reshape(masks.shape[0], -1).numpy(), axis=1)
        pad = (-bits.shape[1]) % 8
        if pad:
            bits = np.pad(bits, ((0, 0), (0, pad)))
        return bits.view(np.uint64)

    def extent(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # first and last nonzero word
        nonzero = words != 0
        first = nonzero.argmax(axis=1)
        last = words.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1)
        empty = ~nonzero.any(axis=1)
        first[empty], last[empty] = words.shape[1], -1
        return first, last

    a = pack(masks_a)
    b = a if masks_b is masks_a else pack(masks_b)
    area_a = np.bitwise_count(a).sum(axis=1, dtype=np.int64)
    area_b = area_a if b is a else np.bitwise_count(b).sum(axis=1, dtype=np.int64)
    # Masks are packed row by row, so a mask's bits lie between its first and last nonzero word: a
    # pair is counted only over the overlap of their spans (compact objects share few rows).
    (first_a, last_a), (first_b, last_b) = extent(a), extent(b)
    inter = np.zeros((a.shape[0], b.shape[0]), dtype=np.int64)
    for i in range(a.shape[0]):
        lo, hi = np.maximum(first_a[i], first_b), np.minimum(last_a[i], last_b)
        for j in np.nonzero(lo <= hi)[0].tolist():
            inter[i, j] = np.bitwise_count(a[i, lo[j]:hi[j] + 1] & b[j, lo[j]:hi[j] + 1]).sum(dtype=np.int64)
    inter_t = torch.from_numpy(inter)
    union = torch.from_numpy(area_a[:, None] + area_b[None, :] - inter)
    iou = inter_t.to(torch.float32) / union.to(torch.float32)
    return torch.where(union > 0, iou, torch.zeros_like(iou))


def mask_iou_reference(masks_a: torch.Tensor,  # [N, H, W] bool
                       masks_b: torch.Tensor,  # [M, H, W] bool
                       ) -> torch.Tensor:  # [N, M] float32
    """Pure-torch IoU: intersections as float32 matmuls of 0/1 values (exact, see _REFERENCE_CHUNK),
    accumulated in int64."""
    n, m = masks_a.shape[0], masks_b.shape[0]
    pixels = masks_a.shape[1] * masks_a.shape[2]
    a = masks_a.reshape(n, pixels)
    b = masks_b.reshape(m, pixels)
    inter = torch.zeros((n, m), dtype=torch.int64, device=a.device)
    for start in range(0, pixels, _REFERENCE_CHUNK):
        stop = min(start + _REFERENCE_CHUNK, pixels)
        chunk_a = a[:, start:stop].to(torch.float32)
        chunk_b = b[:, start:stop].to(torch.float32)
        inter += (chunk_a @ chunk_b.T).to(torch.int64)
    area_a = a.sum(dim=1, dtype=torch.int64)
    area_b = b.sum(dim=1, dtype=torch.int64)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter.to(torch.float32) / union.to(torch.float32)
    return torch.where(union > 0, iou, torch.zeros_like(iou))


def _check(name: str, masks: torch.Tensor) -> None:
    if masks.dim() != 3 or masks.dtype != torch.bool:
        raise ValueError(f"mask_iou expects {name} as [N, H, W] bool, got {tuple(masks.shape)} "
                         f"{masks.dtype}; threshold logits first (logits > 0)")
    if masks.shape[1] * masks.shape[2] >= 2**31:
        raise ValueError(f"mask_iou: {name} masks of {masks.shape[1]}x{masks.shape[2]} exceed 2**31 pixels")


def _pack(library: ctypes.CDLL, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, H, W] bool -> ([N, ceil(H*W / 32)] 32-bit words, bit k of word w = pixel 32 w + k; [N] areas)."""
    n = masks.shape[0]
    pixels = masks.shape[1] * masks.shape[2]
    words = (pixels + 31) // 32
    # int32 storage for the uint32 words: the kernel only sees the bits.
    packed = torch.empty((n, words), dtype=torch.int32, device=masks.device)
    areas = torch.empty((n,), dtype=torch.int32, device=masks.device)
    _library.launch(library, "streamseg_pack_masks", masks,
                    masks.data_ptr(), n, pixels, packed.data_ptr(), areas.data_ptr())
    return packed, areas


def _mask_iou_kernel(library: ctypes.CDLL, masks_a: torch.Tensor, masks_b: torch.Tensor) -> torch.Tensor:
    same = masks_b is masks_a
    masks_a = masks_a.contiguous()
    packed_a, areas_a = _pack(library, masks_a)
    if same:
        packed_b, areas_b = packed_a, areas_a
    else:
        packed_b, areas_b = _pack(library, masks_b.contiguous())
    n, m, words = packed_a.shape[0], packed_b.shape[0], packed_a.shape[1]
    iou = torch.empty((n, m), dtype=torch.float32, device=masks_a.device)
    _library.launch(library, "streamseg_mask_iou_packed", masks_a,
                    packed_a.data_ptr(), areas_a.data_ptr(), n,
                    packed_b.data_ptr(), areas_b.data_ptr(), m, words, iou.data_ptr())
    return iou
