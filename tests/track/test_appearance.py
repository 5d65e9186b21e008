"""Appearance embeddings: masked average pooling of image features under each object's mask."""

from __future__ import annotations

import pytest
import torch

from engine.track.appearance import pool_appearance


def _features() -> torch.Tensor:  # [3, 2, 2]: each cell holds a distinct direction
    f = torch.zeros(3, 2, 2)
    f[0, 0, 0] = 1.0  # top-left cell
    f[1, 0, 1] = 1.0  # top-right cell
    f[2, 1, :] = 1.0  # bottom row
    return f


def test_each_cell_weighs_by_the_fraction_of_it_the_mask_covers():
    logits = torch.full((1, 8, 8), -10.0)  # 4x4 pixels per cell
    logits[0, :4, :4] = 10.0  # all of the top-left cell
    logits[0, :4, 4:6] = 10.0  # half of the top-right cell
    emb, usable = pool_appearance(_features(), logits)
    expected = torch.nn.functional.normalize(torch.tensor([[1.0, 0.5, 0.0]]), dim=1)
    torch.testing.assert_close(emb, expected)
    assert usable.tolist() == [True]


@pytest.mark.parametrize("pixels, usable", [(0, False), (8, False), (16, True)], ids=["empty", "half a cell", "one cell"])
def test_a_mask_under_one_feature_cell_is_not_usable(pixels, usable):
    logits = torch.full((1, 8, 8), -10.0)
    logits[0].view(-1)[:pixels] = 10.0
    emb, ok = pool_appearance(_features(), logits, min_cells=1.0)
    assert ok.tolist() == [usable]
    assert bool(torch.isfinite(emb).all())
    if not usable:
        assert float(emb.abs().sum()) == 0.0


def test_embeddings_are_unit_vectors_one_per_object():
    torch.manual_seed(0)
    emb, ok = pool_appearance(torch.randn(256, 16, 16), torch.randn(5, 64, 64) * 4)
    assert emb.shape == (5, 256) and bool(ok.all())
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))


def test_no_objects_give_no_embeddings():
    emb, ok = pool_appearance(torch.randn(256, 16, 16), torch.zeros(0, 64, 64))
    assert emb.shape == (0, 256) and ok.shape == (0,)
