"""fuse_masks: the reference against an argmax over all instances at once, adversarial ties and
thresholds, then the CUDA kernel against the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.ops import fuse_masks
from engine.ops.fuse_masks import fuse_masks_reference


def random_inputs(n: int, height: int, width: int, generator: torch.Generator,
                  probabilities: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits around 0 (each instance covering a different share of the frame) and scores in (0, 1]."""
    offset = torch.randn((n, 1, 1), generator=generator) * 2
    logits = torch.randn((n, height, width), generator=generator) * 4 + offset
    scores = torch.rand((n,), generator=generator) * 0.9 + 0.1
    return (torch.sigmoid(logits) if probabilities else logits), scores


def argmax_fusion(masks: torch.Tensor, scores: torch.Tensor, probabilities: bool) -> np.ndarray:
    """The rule read literally: evidence of every instance at every pixel, non-candidates at -inf, the
    first maximum (np.argmax), -1 where no instance is a candidate. sigmoid is evaluated per instance
    slice, as the reference does, so both see the same float32 evidence."""
    n, height, width = masks.shape
    if n == 0:
        return np.full((height, width), -1, dtype=np.int32)
    foreground = 0.5 if probabilities else 0.0
    evidence = np.stack([(scores[i] * (masks[i] if probabilities else torch.sigmoid(masks[i]))).numpy()
                         for i in range(n)])
    candidate = masks.numpy() > foreground
    evidence = np.where(candidate, evidence, -np.inf)
    best = np.argmax(evidence, axis=0).astype(np.int32)
    return np.where(candidate.any(axis=0), best, -1).astype(np.int32)


# (n, height, width)
SHAPES = [
    pytest.param(0, 7, 13, id="no-masks"),
    pytest.param(1, 1, 1, id="one-pixel"),
    pytest.param(1, 7, 13, id="one-mask"),
    pytest.param(100, 7, 13, id="100-masks-odd"),
    pytest.param(3, 719, 1281, id="odd-719x1281"),
    pytest.param(2, 1080, 1920, id="1080p"),
]


@pytest.mark.parametrize("probabilities", [False, True], ids=["logits", "probabilities"])
@pytest.mark.parametrize(("n", "height", "width"), SHAPES)
def test_reference_matches_argmax(n, height, width, probabilities):
    generator = torch.Generator().manual_seed(n * 100 + height)
    masks, scores = random_inputs(n, height, width, generator, probabilities)
    expected = argmax_fusion(masks, scores, probabilities)
    out = fuse_masks(masks, scores, probabilities=probabilities)
    assert out.shape == (height, width) and out.dtype == torch.int32
    assert np.array_equal(out.numpy(), expected)
    if n:
        assert np.array_equal(fuse_masks_reference(masks, scores, probabilities=probabilities).numpy(),
                              expected)


def _adversarial() -> list:
    """(masks, scores, probabilities, expected id row) on a 1 x W frame, one named case each."""
    nan, inf = math.nan, math.inf
    return [
        # Same logits and scores: the tie goes to the lower index.
        pytest.param([[2.0, 2.0]] * 2, [0.7, 0.7], False, [0, 0], id="exact-tie-lowest-index"),
        # Same logits, a higher score later wins.
        pytest.param([[2.0], [2.0]], [0.5, 0.6], False, [1], id="score-breaks-tie"),
        # Saturated sigmoid (1.0 in float32 for both): equal scores tie again -> index 0.
        pytest.param([[40.0], [90.0]], [0.5, 0.5], False, [0], id="saturated-tie"),
        # A logit of exactly 0 is not foreground, however high the score.
        pytest.param([[0.0, 1e-30], [-1.0, -1.0]], [1.0, 1.0], False, [-1, 0], id="logit-exactly-zero"),
        # NaN is never foreground; +inf is (sigmoid = 1).
        pytest.param([[nan, inf], [1.0, 1.0]], [0.9, 0.5], False, [1, 0], id="nan-and-inf"),
        # A low score with a confident mask loses to a higher score with a weak one:
        # 0.3 * sigmoid(6) = 0.299 < 0.9 * sigmoid(0.1) = 0.472.
        pytest.param([[6.0], [0.1]], [0.3, 0.9], False, [1], id="score-weighting"),
        # Negative scores still resolve: -0.1 * sigmoid(2) > -0.5 * sigmoid(2).
        pytest.param([[2.0], [2.0]], [-0.5, -0.1], False, [1], id="negative-scores"),
        # Probabilities: 0.5 exactly is background; ties by index; evidence is score * p exactly.
        pytest.param([[0.5, 0.75, 0.6], [0.25, 0.75, 0.6]], [1.0, 1.0], True, [-1, 0, 0],
                     id="probability-threshold-and-tie"),
        # 0.8 * 0.6 = 0.48 < 0.6 * 0.9 = 0.54; and 0.9 * 0.6 == 0.6 * 0.9 is a tie -> index 0.
        pytest.param([[0.6, 0.6], [0.9, 0.9]], [0.8, 0.9], True, [1, 1], id="probability-products"),
        pytest.param([[0.6], [0.9]], [0.9, 0.6], True, [0], id="probability-commuted-tie"),
    ]


@pytest.mark.parametrize(("masks", "scores", "probabilities", "expected"), _adversarial())
def test_adversarial_rule(masks, scores, probabilities, expected):
    masks_t = torch.tensor(masks, dtype=torch.float32)[:, None, :]
    scores_t = torch.tensor(scores, dtype=torch.float32)
    out = fuse_masks(masks_t, scores_t, probabilities=probabilities)
    assert out[0].tolist() == expected


@pytest.mark.parametrize(("masks", "scores", "message"), [
    pytest.param(torch.zeros(2, 4, 4), torch.zeros(3), r"\[2\] float", id="scores-count"),
    pytest.param(torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(2), "float logits", id="bool-masks"),
    pytest.param(torch.zeros(2, 4, 4), torch.tensor([0.5, math.nan]), r"finite scores, got \[nan\]",
                 id="nan-score"),
])
def test_bad_input_names_the_problem(masks, scores, message):
    with pytest.raises(ValueError, match=message):
        fuse_masks(masks, scores)


# Evidence is s * sigmoid(x) in float32: exp() is within 2 ulp on CUDA and 1 ulp in torch's CPU code,
# and the add, divide and multiply round once each, so each side's evidence is within ~4 ulp of the exact
# value. Two implementations can pick different winners only where the exact evidences of their picks
# are within ~8 ulp; 16 ulp leaves a margin.
NEAR_TIE_ULPS = 16


def _check_parity(out: torch.Tensor, masks: torch.Tensor, scores: torch.Tensor, probabilities: bool) -> None:
    expected = fuse_masks_reference(masks, scores, probabilities=probabilities)
    # Coverage (-1 or not) is an exact comparison on both sides.
    assert torch.equal(out < 0, expected < 0)
    if probabilities:
        assert torch.equal(out, expected)
        return
    differ = (out != expected).nonzero()
    for y, x in differ.tolist():
        i, j = int(out[y, x]), int(expected[y, x])
        exact = [float(scores[k]) / (1.0 + math.exp(-float(masks[k, y, x]))) for k in (i, j)]
        assert masks[i, y, x] > 0
        assert abs(exact[0] - exact[1]) <= NEAR_TIE_ULPS * np.finfo(np.float32).eps * abs(exact[1]), (
            f"pixel ({y}, {x}): kernel chose {i}, reference {j}, evidences {exact}")


@pytest.mark.gpu
@pytest.mark.parametrize("probabilities", [False, True], ids=["logits", "probabilities"])
@pytest.mark.parametrize(("n", "height", "width"), SHAPES + [pytest.param(100, 1080, 1920, id="100-1080p")])
def test_kernel_matches_reference(kernels, n, height, width, probabilities):
    generator = torch.Generator().manual_seed(n * 100 + height)
    masks, scores = random_inputs(n, height, width, generator, probabilities)
    masks, scores = masks.cuda(), scores.cuda()
    out = fuse_masks(masks, scores, probabilities=probabilities)
    assert out.is_cuda and out.shape == (height, width) and out.dtype == torch.int32
    if n:
        _check_parity(out.cpu(), masks.cpu(), scores.cpu(), probabilities)
    else:
        assert (out == -1).all()


@pytest.mark.gpu
@pytest.mark.parametrize(("masks", "scores", "probabilities", "expected"), _adversarial())
def test_kernel_adversarial_rule(kernels, masks, scores, probabilities, expected):
    masks_t = torch.tensor(masks, dtype=torch.float32, device="cuda")[:, None, :]
    scores_t = torch.tensor(scores, dtype=torch.float32, device="cuda")
    assert fuse_masks(masks_t, scores_t, probabilities=probabilities)[0].tolist() == expected


@pytest.mark.gpu
def test_kernel_takes_half_precision_and_views(kernels):
    generator = torch.Generator().manual_seed(3)
    masks, scores = random_inputs(5, 64, 48, generator)
    masks_cuda = masks.cuda().half().transpose(1, 2)  # computed in float32 after the cast
    out = fuse_masks(masks_cuda, scores.cuda())
    _check_parity(out.cpu(), masks_cuda.float().cpu(), scores, False)
