"""overlay: the fixed-point reference against the blend in exact arithmetic, then the CUDA kernel against
the reference, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.ops import masks_to_id_map, overlay
from engine.ops.overlay import overlay_reference


def exact_blend(image: torch.Tensor, id_map: torch.Tensor, colors: torch.Tensor, alpha: float) -> np.ndarray:
    """The blend with weight a / 256 (a = round(alpha * 256)), rounded half up, in float64 where every
    term is a multiple of 1/256 and so exact; ids outside [0, K) leave the pixel alone."""
    a = round(alpha * 256) / 256
    img = image.numpy().astype(np.float64)
    ids = id_map.numpy()
    covered = (ids >= 0) & (ids < colors.shape[0])
    out = img.copy()
    paint = colors.numpy().astype(np.float64)[ids[covered]]
    out[covered] = np.floor(img[covered] * (1 - a) + paint * a + 0.5)
    return out.astype(np.uint8)


def random_case(height: int, width: int, k: int,
                seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A frame, an id map with background (-1), valid ids and ids past the colour table, and K colours."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
    id_map = torch.randint(-1, k + 2, (height, width), dtype=torch.int32, generator=generator)
    colors = torch.randint(0, 256, (k, 3), dtype=torch.uint8, generator=generator)
    return image, id_map, colors


# (height, width, K, alpha): every alpha on small frames, one uneven alpha on the large ones.
CASES = [
    pytest.param(h, w, k, alpha, id=f"{name}-alpha{alpha}")
    for h, w, k, name in [(1, 1, 1, "one-pixel"), (7, 13, 0, "no-colours"), (7, 13, 1, "one-colour"),
                          (7, 13, 100, "100-colours")]
    for alpha in (0.0, 0.3, 0.5, 1.0)
] + [
    pytest.param(719, 1281, 10, 0.3, id="odd-719x1281"),
    pytest.param(1080, 1920, 100, 0.3, id="1080p"),
]


@pytest.mark.parametrize(("height", "width", "k", "alpha"), CASES)
def test_reference_matches_exact_blend(height, width, k, alpha):
    image, id_map, colors = random_case(height, width, k, seed=height + k)
    before = image.clone()
    out = overlay(image, id_map, colors, alpha=alpha)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    assert np.array_equal(out.numpy(), exact_blend(image, id_map, colors, alpha))
    assert torch.equal(image, before)  # a new tensor; the frame is not painted in place


def test_alpha_extremes_and_background():
    image = torch.full((2, 2, 3), 10, dtype=torch.uint8)
    colors = torch.tensor([[250, 0, 128]], dtype=torch.uint8)
    id_map = torch.tensor([[0, -1], [1, 0]], dtype=torch.int32)
    full = overlay(image, id_map, colors, alpha=1.0)
    assert full[0, 0].tolist() == [250, 0, 128]  # alpha 1: the colour exactly
    assert full[0, 1].tolist() == [10, 10, 10]  # background
    assert full[1, 0].tolist() == [10, 10, 10]  # id 1 has no colour row: left alone
    assert torch.equal(overlay(image, id_map, colors, alpha=0.0), image)


def test_int64_id_maps_and_masks_to_id_map():
    masks = torch.zeros((2, 3, 3), dtype=torch.bool)
    masks[0, :2] = True
    masks[1, 1:] = True
    ids = masks_to_id_map(masks)
    assert ids.tolist() == [[0, 0, 0], [1, 1, 1], [1, 1, 1]]  # the later mask wins where they overlap
    image = torch.zeros((3, 3, 3), dtype=torch.uint8)
    colors = torch.tensor([[255, 255, 255], [0, 0, 255]], dtype=torch.uint8)
    assert torch.equal(overlay(image, ids.long(), colors), overlay(image, ids, colors))


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"image": torch.zeros(4, 4, 3)}, "uint8 image", id="float-image"),
    pytest.param({"id_map": torch.zeros(4, 5, dtype=torch.int32)}, "does not match", id="id-map-size"),
    pytest.param({"id_map": torch.zeros(4, 4)}, "int32", id="float-id-map"),
    pytest.param({"colors": torch.zeros(3, 4, dtype=torch.uint8)}, r"\[K, 3\] uint8", id="rgba-colours"),
    pytest.param({"alpha": 1.5}, r"\[0, 1\]", id="alpha-range"),
])
def test_bad_input_names_the_problem(kwargs, message):
    args = {"image": torch.zeros(4, 4, 3, dtype=torch.uint8), "id_map": torch.zeros(4, 4, dtype=torch.int32),
            "colors": torch.zeros(2, 3, dtype=torch.uint8), "alpha": 0.5}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        overlay(**args)


@pytest.mark.gpu
@pytest.mark.parametrize(("height", "width", "k", "alpha"), CASES + [
    pytest.param(1080, 1920, 100, alpha, id=f"1080p-alpha{alpha}") for alpha in (0.0, 0.5, 1.0)
])
def test_kernel_matches_reference_bit_for_bit(kernels, height, width, k, alpha):
    image, id_map, colors = random_case(height, width, k, seed=height + k)
    out = overlay(image.cuda(), id_map.cuda(), colors.cuda(), alpha=alpha)
    assert out.is_cuda
    assert torch.equal(out.cpu(), overlay_reference(image, id_map, colors, alpha))


@pytest.mark.gpu
def test_kernel_takes_host_colours_int64_ids_and_views(kernels):
    image, id_map, colors = random_case(64, 48, 5, seed=2)
    frame = image.cuda().transpose(0, 1)  # a strided view of a [W, H, 3] frame
    ids = id_map.cuda().long().T
    out = overlay(frame, ids, colors, alpha=0.5)  # colours still on the host
    assert torch.equal(out.cpu(), overlay_reference(image.transpose(0, 1), id_map.T, colors, 0.5))
