"""mask_iou: the reference against a brute-force count, then the CUDA kernel against the reference.

Every comparison is exact: intersections and unions are integers and both sides divide them once in
float32 (see engine/ops/mask_iou.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.ops import mask_iou
from engine.ops.mask_iou import mask_iou_reference


def random_masks(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """[n, H, W] bool with a different density per mask, from empty to full."""
    density = torch.rand((n, 1, 1), generator=generator)
    density[::7] = 0.0  # some empty masks
    density[3::7] = 1.0  # some full ones
    return torch.rand((n, height, width), generator=generator) < density


def brute_force_iou(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Counts by broadcasting every pair, divided in float32 as the definition says."""
    a, b = a.numpy(), b.numpy()
    inter = np.logical_and(a[:, None], b[None]).sum(axis=(2, 3))
    union = np.logical_or(a[:, None], b[None]).sum(axis=(2, 3))
    out = np.zeros(inter.shape, dtype=np.float32)
    nonzero = union > 0
    out[nonzero] = inter[nonzero].astype(np.float32) / union[nonzero].astype(np.float32)
    return out


# (n, m, height, width)
SHAPES = [
    pytest.param(0, 4, 7, 13, id="no-masks-a"),
    pytest.param(3, 0, 7, 13, id="no-masks-b"),
    pytest.param(1, 1, 1, 1, id="one-pixel"),
    pytest.param(5, 4, 7, 13, id="odd-7x13"),
    pytest.param(100, 100, 9, 16, id="100-masks"),
    pytest.param(2, 3, 719, 1281, id="odd-719x1281"),
    pytest.param(1, 2, 1080, 1920, id="1080p"),
]


@pytest.mark.parametrize(("n", "m", "height", "width"), SHAPES)
def test_reference_matches_brute_force(n, m, height, width):
    generator = torch.Generator().manual_seed(n * 1000 + width)
    a = random_masks(n, height, width, generator)
    b = random_masks(m, height, width, generator)
    expected = brute_force_iou(a, b)
    assert np.array_equal(mask_iou_reference(a, b).numpy(), expected)
    out = mask_iou(a, b)
    assert out.shape == (n, m) and out.dtype == torch.float32
    assert np.array_equal(out.numpy(), expected)


def test_adversarial_pairs():
    empty = torch.zeros((1, 5, 7), dtype=torch.bool)
    full = torch.ones((1, 5, 7), dtype=torch.bool)
    left = full.clone()
    left[..., 4:] = False
    right = ~left
    cases = torch.cat([empty, full, left, right])
    iou = mask_iou(cases, cases)
    assert iou[0, 0] == 0.0  # two empty masks: union 0 -> 0, not NaN
    assert iou[0, 1] == 0.0 and iou[1, 0] == 0.0  # empty vs anything
    assert iou[1, 1] == 1.0 and iou[2, 2] == 1.0  # a mask with itself
    assert iou[2, 3] == 0.0  # disjoint halves
    assert iou[1, 2] == np.float32(20) / np.float32(35)  # 4 of 7 columns inside the full mask
    assert not torch.isnan(iou).any()


@pytest.mark.parametrize(("a", "b", "message"), [
    pytest.param(torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(2, 4, 5, dtype=torch.bool),
                 "one size", id="sizes-differ"),
    pytest.param(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool), "bool", id="float-masks"),
    pytest.param(torch.zeros(4, 4, dtype=torch.bool), torch.zeros(2, 4, 4, dtype=torch.bool),
                 r"\[N, H, W\]", id="two-dims"),
])
def test_bad_input_names_the_problem(a, b, message):
    with pytest.raises(ValueError, match=message):
        mask_iou(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "m", "height", "width"), SHAPES + [
    pytest.param(100, 100, 1080, 1920, id="100x100-1080p"),
    pytest.param(37, 1, 33, 65, id="tile-edges"),
])
def test_kernel_matches_reference(kernels, n, m, height, width):
    generator = torch.Generator().manual_seed(n * 1000 + width)
    a = random_masks(n, height, width, generator).cuda()
    b = random_masks(m, height, width, generator).cuda()
    out = mask_iou(a, b)
    assert out.is_cuda and out.shape == (n, m) and out.dtype == torch.float32
    # The reference on the same device: float32 matmuls of 0/1 values are exact on cuBLAS too.
    assert torch.equal(out, mask_iou_reference(a, b))


@pytest.mark.gpu
def test_kernel_same_set_and_adversarial(kernels):
    generator = torch.Generator().manual_seed(5)
    masks = random_masks(20, 31, 47, generator).cuda()
    masks[0] = False
    masks[1] = True
    out = mask_iou(masks, masks)
    assert torch.equal(out, mask_iou_reference(masks, masks))
    assert out[0, 0] == 0.0 and out[1, 1] == 1.0
    # A non-contiguous view goes through the kernel as well.
    view = masks.transpose(1, 2)
    assert torch.equal(mask_iou(view, view), mask_iou_reference(view, view))


@pytest.mark.parametrize(("n", "height", "width"), [(6, 7, 13), (9, 33, 65), (3, 1080, 1920)])
def test_packed_cpu_path_equals_the_reference_bit_for_bit(n, height, width):
    """The numpy popcount path the CPU runs: pixel counts not a multiple of 64 pad with zero bits."""
    from engine.ops.mask_iou import mask_iou_packed_cpu

    generator = torch.Generator().manual_seed(height)
    a = random_masks(n, height, width, generator)
    b = random_masks(n + 2, height, width, generator)
    assert torch.equal(mask_iou_packed_cpu(a, b), mask_iou_reference(a, b))
    assert torch.equal(mask_iou_packed_cpu(a, a), mask_iou_reference(a, a))
