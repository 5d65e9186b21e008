"""The Python side of the kernel path, on the CPU: each wrapper's calls into the C ABI (argument order,
sizes, buffers, the host work around them) against a numpy emulation of the entry points as
kernels/README.md specifies them, reading and writing the tensors' host memory through their pointers.
What this cannot cover, the CUDA code itself, the GPU parity tests do."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine import ops
from engine.ops import _library
from engine.ops.fuse_masks import fuse_masks_reference
from engine.ops.mask_iou import mask_iou_reference
from engine.ops.overlay import overlay_reference
from engine.ops.resize_threshold import resize_threshold_reference
from engine.ops.rle import rle_encode_reference

SEGMENT_ROWS = 64  # kernels/rle.cu kSegmentRows


def _view(pointer: int, dtype, shape) -> np.ndarray:
    count = int(np.prod(shape))
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    raw = (ctypes.c_uint8 * (count * np.dtype(dtype).itemsize)).from_address(pointer)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _pack(masks, n, pixels, packed, areas):
    bits = _view(masks, np.uint8, (n, pixels)) != 0
    words = (pixels + 31) // 32
    padded = np.zeros((n, words * 32), dtype=np.uint64)
    padded[:, :pixels] = bits
    weights = (np.uint64(1) << np.arange(32, dtype=np.uint64))
    _view(packed, np.uint32, (n, words))[:] = (padded.reshape(n, words, 32) * weights).sum(axis=2)
    _view(areas, np.int32, (n,))[:] = bits.sum(axis=1)


def _iou(a, areas_a, n, b, areas_b, m, words, iou):
    bits_a = np.unpackbits(_view(a, np.uint32, (n, words)).view(np.uint8), axis=1).astype(np.int64)
    bits_b = np.unpackbits(_view(b, np.uint32, (m, words)).view(np.uint8), axis=1).astype(np.int64)
    inter = bits_a @ bits_b.T
    union = _view(areas_a, np.int32, (n,))[:, None].astype(np.int64) + _view(areas_b, np.int32, (m,)) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        result = inter.astype(np.float32) / union.astype(np.float32)
    _view(iou, np.float32, (n, m))[:] = np.where(union > 0, result, 0)


def _fuse(masks, scores, n, pixels, probabilities, id_map):
    x = torch.from_numpy(_view(masks, np.float32, (n, 1, pixels)).copy())
    s = torch.from_numpy(_view(scores, np.float32, (n,)).copy())
    _view(id_map, np.int32, (pixels,))[:] = fuse_masks_reference(x, s, probabilities=bool(probabilities))[0]


def _resize(logits, n, in_h, in_w, out_h, out_w, threshold, out):
    x = torch.from_numpy(_view(logits, np.float32, (n, 1, in_h, in_w)).copy())
    resized = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)[:, 0]
    _view(out, np.uint8, (n, out_h, out_w))[:] = (resized > threshold).numpy()


def _overlay(image, id_map, pixels, colors, num_colors, alpha256, out):
    img = _view(image, np.uint8, (pixels, 3)).astype(np.int32)
    ids = _view(id_map, np.int32, (pixels,))
    table = _view(colors, np.uint8, (num_colors, 3)).astype(np.int32)
    result = img.copy()
    covered = (ids >= 0) & (ids < num_colors)
    result[covered] = (img[covered] * (256 - alpha256) + table[ids[covered]] * alpha256 + 128) >> 8
    _view(out, np.uint8, (pixels, 3))[:] = result


def _segment_transitions(mask: np.ndarray) -> list[list[int]]:
    """Per column segment, (x, segment) column-major, the column-major j where the value changes."""
    h, w = mask.shape
    flat = np.concatenate([[0], mask.T.reshape(-1).astype(np.int8)])
    changes = np.flatnonzero(np.diff(flat) != 0)
    per_column = -(-h // SEGMENT_ROWS)
    segments: list[list[int]] = [[] for _ in range(w * per_column)]
    for j in changes.tolist():
        x, y = divmod(j, h)
        segments[x * per_column + y // SEGMENT_ROWS].append(j)
    return segments


def _rle_count(masks, n, h, w, segment_offsets, totals):
    per_mask = w * -(-h // SEGMENT_ROWS)
    offsets = _view(segment_offsets, np.int32, (n, per_mask))
    for i, mask in enumerate(_view(masks, np.uint8, (n, h, w))):
        counts = np.array([len(s) for s in _segment_transitions(mask)], dtype=np.int64)
        offsets[i] = np.cumsum(counts) - counts
        _view(totals, np.int32, (n,))[i] = counts.sum()


def _rle_transitions(masks, n, h, w, segment_offsets, mask_offsets, positions):
    starts = _view(mask_offsets, np.int64, (n,))
    per_mask = w * -(-h // SEGMENT_ROWS)
    offsets = _view(segment_offsets, np.int32, (n, per_mask))
    segments = [_segment_transitions(mask) for mask in _view(masks, np.uint8, (n, h, w))]
    out = _view(positions, np.int32, (sum(len(s) for mask in segments for s in mask),))
    for i, mask_segments in enumerate(segments):
        for k, segment in enumerate(mask_segments):
            at = int(starts[i]) + int(offsets[i, k])
            out[at:at + len(segment)] = segment


EMULATED = {
    "streamseg_pack_masks": _pack,
    "streamseg_mask_iou_packed": _iou,
    "streamseg_fuse_masks": _fuse,
    "streamseg_resize_threshold": _resize,
    "streamseg_overlay": _overlay,
    "streamseg_rle_count": _rle_count,
    "streamseg_rle_transitions": _rle_transitions,
}


class EmulatedLibrary:
    """Stands in for the ctypes library: host functions computed here, launches via `launch` below."""

    @staticmethod
    def streamseg_rle_segment_count(height: int, width: int) -> int:
        return width * -(-height // SEGMENT_ROWS) if height > 0 and width > 0 else 0


@pytest.fixture
def emulated(monkeypatch):
    calls = []

    def launch(library, name, tensor, *args):
        _, argtypes = _library._SIGNATURES[name]
        assert len(args) + 2 == len(argtypes), f"{name}: {len(args)} arguments for {len(argtypes) - 2}"
        assert all(isinstance(a, (int, float)) for a in args), f"{name}: {args}"
        calls.append(name)
        EMULATED[name](*args)

    monkeypatch.setattr(_library, "kernels_for", lambda tensor: EmulatedLibrary())
    monkeypatch.setattr(_library, "launch", launch)
    return calls


def test_mask_iou_wrapper(emulated):
    generator = torch.Generator().manual_seed(0)
    a = torch.rand((5, 13, 37), generator=generator) < 0.4
    b = torch.rand((3, 13, 37), generator=generator) < 0.6
    b[0] = False
    assert torch.equal(ops.mask_iou(a, b), mask_iou_reference(a, b))
    assert torch.equal(ops.mask_iou(a, a), mask_iou_reference(a, a))
    assert emulated == ["streamseg_pack_masks", "streamseg_pack_masks", "streamseg_mask_iou_packed",
                        "streamseg_pack_masks", "streamseg_mask_iou_packed"]  # a set with itself packs once


@pytest.mark.parametrize("probabilities", [False, True])
def test_fuse_masks_wrapper(emulated, probabilities):
    generator = torch.Generator().manual_seed(1)
    masks = torch.randn((4, 9, 11), generator=generator).double()
    masks = torch.sigmoid(masks) if probabilities else masks
    scores = torch.rand((4,), generator=generator)
    out = ops.fuse_masks(masks.transpose(1, 2), scores, probabilities=probabilities)
    expected = fuse_masks_reference(masks.transpose(1, 2).float(), scores, probabilities=probabilities)
    assert out.dtype == torch.int32 and torch.equal(out, expected)
    assert emulated == ["streamseg_fuse_masks"]


def test_resize_threshold_wrapper(emulated):
    logits = torch.randn((3, 8, 6), generator=torch.Generator().manual_seed(2))
    out = ops.resize_threshold(logits.half(), size=(17, 5), threshold=0.25)
    assert out.dtype == torch.bool
    assert torch.equal(out, resize_threshold_reference(logits.half().float(), size=(17, 5), threshold=0.25))
    assert emulated == ["streamseg_resize_threshold"]


def test_overlay_wrapper(emulated):
    generator = torch.Generator().manual_seed(3)
    image = torch.randint(0, 256, (7, 9, 3), dtype=torch.uint8, generator=generator)
    ids = torch.randint(-1, 6, (7, 9), generator=generator)  # int64, some past the 4 colours
    colors = torch.randint(0, 256, (4, 3), dtype=torch.uint8, generator=generator)
    out = ops.overlay(image.transpose(0, 1), ids.T, colors, alpha=0.3)
    assert torch.equal(out, overlay_reference(image.transpose(0, 1), ids.T, colors, 0.3))
    assert emulated == ["streamseg_overlay"]


@pytest.mark.parametrize(("n", "height", "width"), [(1, 1, 1), (4, 70, 9), (3, 130, 5), (2, 0, 4)])
def test_rle_encode_wrapper(emulated, n, height, width):
    generator = torch.Generator().manual_seed(n + height)
    masks = torch.rand((n, height, width), generator=generator) < torch.rand((n, 1, 1), generator=generator)
    if n > 1:
        masks[0] = False
        masks[1] = True
    assert ops.rle_encode(masks) == rle_encode_reference(masks)
    assert emulated == ["streamseg_rle_count", "streamseg_rle_transitions"]
