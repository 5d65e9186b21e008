"""rle_encode: pycocotools is the reference; the kernel path's host half (transition positions -> counts
-> COCO string) is checked against it here on the CPU, and the whole kernel path on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from engine.ops import rle_encode
from engine.ops.rle import _coco_string, _encode_transitions, rle_encode_reference

# pycocotools 2.0.11 decode() trips a numpy 2 deprecation on every call; it is theirs, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def random_masks(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Masks of three kinds in turn: pixel noise (runs of 1-2), blocky blobs (long runs), and noise at a
    per-mask density; plus an empty and a full mask where there is room."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand((n, height, width), generator=generator) < 0.5
    for i in range(1, n, 3):
        coarse = torch.rand((1, 1, (height + 7) // 8, (width + 7) // 8), generator=generator) < 0.4
        masks[i] = coarse.repeat_interleave(8, 2).repeat_interleave(8, 3)[0, 0, :height, :width]
    for i in range(2, n, 3):
        density = float(torch.rand(1, generator=generator))
        masks[i] = torch.rand((height, width), generator=generator) < density
    if n >= 5:
        masks[3] = False
        masks[4] = True
    return masks


def transitions(masks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """What kernels/rle.cu computes, the slow way: per mask, the column-major j where M[j] != M[j - 1]
    with M[-1] = 0; all masks' positions concatenated, and how many each has."""
    positions, totals = [], []
    for mask in masks.numpy():
        flat = mask.T.reshape(-1).astype(np.int8)
        changes = np.flatnonzero(np.diff(np.concatenate([[0], flat])) != 0)
        positions.append(changes.astype(np.int32))
        totals.append(changes.size)
    return np.concatenate(positions or [np.zeros(0, np.int32)]), np.array(totals, dtype=np.int64)


# (n, height, width)
SHAPES = [
    pytest.param(0, 7, 13, id="no-masks"),
    pytest.param(1, 1, 1, id="one-pixel"),
    pytest.param(6, 7, 13, id="odd-7x13"),
    pytest.param(100, 9, 16, id="100-masks"),
    pytest.param(100, 130, 65, id="100-masks-segment-edges"),
    pytest.param(3, 719, 1281, id="odd-719x1281"),
    pytest.param(2, 1080, 1920, id="1080p"),
]


@pytest.mark.parametrize(("n", "height", "width"), SHAPES)
def test_reference_round_trips_through_pycocotools(n, height, width):
    masks = random_masks(n, height, width, seed=n + height)
    encoded = rle_encode(masks)
    assert len(encoded) == n
    for mask, rle in zip(masks, encoded):
        assert rle["size"] == [height, width] and isinstance(rle["counts"], str)
        decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), mask.numpy())


@pytest.mark.parametrize(("n", "height", "width"), SHAPES)
def test_kernel_host_half_matches_pycocotools(n, height, width):
    masks = random_masks(n, height, width, seed=n + height)
    positions, totals = transitions(masks)
    assert _encode_transitions(positions, totals, height, width) == rle_encode_reference(masks)


def _edge_masks() -> list:
    h, w = 5, 4
    first = torch.zeros((h, w), dtype=torch.bool)
    first[0, 0] = True  # a leading run of 0 background pixels
    last = torch.zeros((h, w), dtype=torch.bool)
    last[-1, -1] = True
    column = torch.zeros((h, w), dtype=torch.bool)
    column[:, 1] = True  # one run spanning a whole column
    wrap = torch.zeros((h, w), dtype=torch.bool)
    wrap[-1, 0] = wrap[0, 1] = True  # a run across a column boundary
    stripes = torch.zeros((h, w), dtype=torch.bool)
    stripes[::2] = True  # every pixel a run boundary down each column
    return [
        pytest.param(torch.zeros((h, w), dtype=torch.bool), id="empty"),
        pytest.param(torch.ones((h, w), dtype=torch.bool), id="full"),
        pytest.param(first, id="first-pixel"),
        pytest.param(last, id="last-pixel"),
        pytest.param(column, id="whole-column"),
        pytest.param(wrap, id="run-wraps-columns"),
        pytest.param(stripes, id="row-stripes"),
    ]


@pytest.mark.parametrize("mask", _edge_masks())
def test_edge_masks(mask):
    masks = mask[None]
    reference = rle_encode_reference(masks)
    assert rle_encode(masks) == reference
    positions, totals = transitions(masks)
    assert _encode_transitions(positions, totals, *mask.shape) == reference


@pytest.mark.parametrize("counts", [
    pytest.param([12], id="one-run"),
    pytest.param([0, 12], id="leading-zero"),
    pytest.param([3, 1, 3, 1, 40, 1], id="small-deltas"),
    pytest.param([1, 2_000_000, 5, 1, 70_000, 2], id="huge-and-negative-deltas"),
    pytest.param(list(range(1, 200)), id="growing"),
    pytest.param([2**31 - 2, 1], id="near-int32"),
])
def test_coco_string_matches_pycocotools_compression(counts):
    size = [1, int(sum(counts))]
    expected = mask_util.frPyObjects({"size": size, "counts": counts}, *size)["counts"].decode()
    assert _coco_string(np.array(counts, dtype=np.int64)) == expected


def test_non_bool_masks_are_nonzero_foreground():
    masks = torch.tensor([[[0, 2], [1, 0]]], dtype=torch.uint8)
    assert rle_encode(masks) == rle_encode_reference(masks != 0)


def test_zero_area_masks():
    assert rle_encode(torch.zeros((2, 0, 5), dtype=torch.bool)) == [{"size": [0, 5], "counts": "0"}] * 2


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "height", "width"), SHAPES + [
    pytest.param(100, 1080, 1920, id="100-1080p"),
    pytest.param(2, 0, 5, id="zero-area"),
])
def test_kernel_matches_pycocotools(kernels, n, height, width):
    masks = random_masks(n, height, width, seed=n + height) if height else torch.zeros((n, 0, width),
                                                                                          dtype=torch.bool)
    assert rle_encode(masks.cuda()) == rle_encode_reference(masks)


@pytest.mark.gpu
@pytest.mark.parametrize("mask", _edge_masks())
def test_kernel_edge_masks(kernels, mask):
    assert rle_encode(mask[None].cuda()) == rle_encode_reference(mask[None])


@pytest.mark.gpu
def test_kernel_takes_views(kernels):
    masks = random_masks(4, 70, 90, seed=9).cuda()
    view = masks.transpose(1, 2)[:, 3:, ::2]
    assert rle_encode(view) == rle_encode_reference(view.cpu())
