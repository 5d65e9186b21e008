"""resize_threshold: the reference against bilinear interpolation written out in float64, then the CUDA
kernel against the reference; pixels may differ only within the float32 rounding bound of the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.ops import resize_threshold
from engine.ops.resize_threshold import resize_threshold_reference

EPS32 = float(np.finfo(np.float32).eps)


def bilinear_float64(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """align_corners=False from its definition: output pixel centre (d + 0.5) maps to source coordinate
    (d + 0.5) * in / out - 0.5, clamped at 0; the two neighbours floor() and floor() + 1 (clamped to the
    last pixel) are weighted by distance. In float64, as a yardstick for float32 implementations."""

    def axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0)
        low = np.floor(src).astype(np.int64)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, src - low

    y0, y1, wy = axis(logits.shape[1], height)
    x0, x1, wx = axis(logits.shape[2], width)
    wy, wx = wy[:, None], wx[None, :]
    top = logits[:, y0][:, :, x0] * (1 - wx) + logits[:, y0][:, :, x1] * wx
    bottom = logits[:, y1][:, :, x0] * (1 - wx) + logits[:, y1][:, :, x1] * wx
    return top * (1 - wy) + bottom * wy


def boundary_tolerance(logits: torch.Tensor) -> float:
    """How far from the threshold a float32 evaluation of bilinear interpolation can land on the other
    side. The source coordinate is a float32 product and difference of magnitude <= max(h, w), so the
    interpolation weights are off by up to ~max(h, w) ulp(1), and a weight error moves the value by up
    to 2 max|x| per axis; the four products and three sums add ~4 ulp of max|x|. Both together:
    (4 max(h, w) + 4) * eps * max|x|."""
    magnitude = float(logits.abs().max()) if logits.numel() else 0.0
    return (4 * max(logits.shape[1], logits.shape[2]) + 4) * EPS32 * magnitude


def assert_masks_agree(out: torch.Tensor, expected: np.ndarray, values: np.ndarray, threshold: float,
                       tolerance: float) -> int:
    """``out`` equals the ``expected`` mask except where the exact interpolated ``values`` lie within
    ``tolerance`` of the threshold; returns how many such pixels flipped."""
    flipped = out.cpu().numpy() != expected
    near = np.abs(values - np.float32(threshold)) <= tolerance
    assert not (flipped & ~near).any(), (
        f"{int((flipped & ~near).sum())} pixels differ away from the threshold (tolerance {tolerance:.3g})")
    return int(flipped.sum())


# (n, in_h, in_w, out_h, out_w)
SHAPES = [
    pytest.param(0, 8, 8, 16, 16, id="no-masks"),
    pytest.param(1, 1, 1, 1, 1, id="1x1-to-1x1"),
    pytest.param(1, 1, 1, 7, 13, id="1x1-to-odd"),
    pytest.param(3, 7, 13, 7, 13, id="same-size"),
    pytest.param(4, 64, 64, 7, 13, id="downscale-odd"),
    pytest.param(100, 16, 16, 37, 53, id="100-masks"),
    pytest.param(3, 7, 13, 719, 1281, id="odd-719x1281"),
    pytest.param(2, 256, 256, 1080, 1920, id="sam2-256-to-1080p"),
]


def random_logits(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n, height, width), generator=generator) * 3


@pytest.mark.parametrize("threshold", [0.0, 0.5])
@pytest.mark.parametrize(("n", "in_h", "in_w", "out_h", "out_w"), SHAPES)
def test_reference_matches_bilinear_definition(n, in_h, in_w, out_h, out_w, threshold):
    logits = random_logits(n, in_h, in_w, seed=n + in_h + out_w)
    out = resize_threshold(logits, size=(out_h, out_w), threshold=threshold)
    assert out.shape == (n, out_h, out_w) and out.dtype == torch.bool
    if n == 0:
        return
    values = bilinear_float64(logits.double().numpy(), out_h, out_w)
    flips = assert_masks_agree(out, values > np.float32(threshold), values, threshold,
                               boundary_tolerance(logits))
    # A guard on the count as well: random logits put a tiny share of pixels within the bound, and only
    # some of those flip; many flips would mean a systematic offset hiding inside the tolerance.
    assert flips <= 1e-4 * out.numel() + 1


def test_interpolation_matches_torch_interpolate_values():
    """The yardstick itself is align_corners=False bilinear: within float32 rounding of interpolate."""
    logits = random_logits(2, 9, 17, seed=1)
    ours = bilinear_float64(logits.double().numpy(), 31, 23)
    torch_values = torch.nn.functional.interpolate(logits[:, None].double(), size=(31, 23), mode="bilinear",
                                                   align_corners=False)[:, 0].numpy()
    assert np.allclose(ours, torch_values, rtol=0, atol=1e-12)  # float64 rounding only


def test_source_pixels_sampled_exactly_keep_threshold_values_background():
    # Tripling the size samples each source pixel exactly at the middle output pixel (weight 0 on the
    # neighbour): a logit equal to the threshold must stay background there (> is strict).
    logits = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])
    out = resize_threshold(logits, size=(6, 6))
    assert not out[0, 1, 1] and not out[0, 4, 4]  # the two 0.0 source pixels
    assert out[0, 1, 4] and not out[0, 4, 1]


def test_constant_logits_at_the_threshold():
    # Exactly, every output equals the threshold; in float32 the weights (1 - l) + l can round either
    # way, so a pixel may come out by an ulp: all of them are within the bound, none far from it.
    logits = torch.full((1, 5, 7), 0.25)
    out = resize_threshold(logits, size=(17, 23), threshold=0.25)
    values = np.full((1, 17, 23), 0.25)
    assert_masks_agree(out, values > np.float32(0.25), values, 0.25, boundary_tolerance(logits))


def test_half_precision_input_is_computed_in_float32():
    logits = random_logits(2, 8, 8, seed=4)
    out = resize_threshold(logits.half(), size=(13, 11))
    expected = resize_threshold_reference(logits.half().float(), size=(13, 11))
    assert torch.equal(out, expected)


@pytest.mark.parametrize(("logits", "kwargs", "message"), [
    pytest.param(torch.zeros(2, 4, 4), {"size": (0, 4)}, "positive ints", id="zero-size"),
    pytest.param(torch.zeros(2, 4, 4), {"size": (4.0, 4)}, "positive ints", id="float-size"),
    pytest.param(torch.zeros(4, 4), {"size": (8, 8)}, r"\[N, h, w\]", id="two-dims"),
    pytest.param(torch.zeros(2, 0, 4), {"size": (8, 8)}, "empty 0x4", id="empty-input"),
    pytest.param(torch.zeros(2, 4, 4), {"size": (8, 8), "threshold": float("nan")}, "finite", id="nan"),
])
def test_bad_input_names_the_problem(logits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        resize_threshold(logits, **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("threshold", [0.0, 0.5])
@pytest.mark.parametrize(("n", "in_h", "in_w", "out_h", "out_w"), SHAPES + [
    pytest.param(100, 256, 256, 1080, 1920, id="100-sam2-to-1080p"),
    pytest.param(10, 160, 160, 719, 1281, id="yolo-protos-to-odd"),
])
def test_kernel_matches_reference(kernels, n, in_h, in_w, out_h, out_w, threshold):
    logits = random_logits(n, in_h, in_w, seed=n + in_h + out_w).cuda()
    out = resize_threshold(logits, size=(out_h, out_w), threshold=threshold)
    assert out.is_cuda and out.shape == (n, out_h, out_w) and out.dtype == torch.bool
    if n == 0:
        return
    # The yardstick: torch's interpolate in float64 on the same device (float64 rounding is negligible).
    values = torch.nn.functional.interpolate(logits[:, None].double(), size=(out_h, out_w), mode="bilinear",
                                             align_corners=False)[:, 0].cpu().numpy()
    tolerance = boundary_tolerance(logits)
    flips = assert_masks_agree(out, values > np.float32(threshold), values, threshold, tolerance)
    assert flips <= 1e-4 * out.numel() + 1  # see test_reference_matches_bilinear_definition
    # Against the float32 reference: two evaluations each within the bound, so within twice it.
    reference = resize_threshold_reference(logits, size=(out_h, out_w), threshold=threshold).cpu().numpy()
    assert_masks_agree(out, reference, values, threshold, 2 * tolerance)


@pytest.mark.gpu
def test_kernel_adversarial_inputs(kernels):
    logits = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]], device="cuda")
    out = resize_threshold(logits, size=(6, 6)).cpu()
    assert not out[0, 1, 1] and not out[0, 4, 4] and out[0, 1, 4] and not out[0, 4, 1]
    constant = torch.full((1, 5, 7), 0.25, device="cuda")
    out = resize_threshold(constant, size=(17, 23), threshold=0.25)
    values = np.full((1, 17, 23), 0.25)
    assert_masks_agree(out, values > np.float32(0.25), values, 0.25, boundary_tolerance(constant))
    # Non-finite logits at the same size are a plain comparison, as in torch (no 0 * inf).
    special = torch.tensor([[[float("inf"), float("-inf"), float("nan")]]], device="cuda")
    assert resize_threshold(special, size=(1, 3))[0, 0].tolist() == [True, False, False]
