"""Random weights for tests, benchmarks and the demo: seeded, and giving many instances with distinct
scores."""

from __future__ import annotations

import torch

from engine.detect.yolo.loading import build_from_yaml

from .matching import as_tensor


def test_same_seed_gives_the_same_weights(spread_state):
    again = build_from_yaml("yolov8n-seg.yaml", seed=0, spread=True).state_dict()
    assert again.keys() == spread_state.keys()
    # Bit-identical at one thread count; oneDNN splits the calibration pass's reductions differently across
    # thread counts (Ultralytics' predict drops torch to one thread in some runs), which moves weights ~1e-5.
    for key, value in spread_state.items():
        assert torch.allclose(again[key].float(), value.float(), rtol=1e-4, atol=1e-5), key


def test_seed_changes_the_calibration_and_the_class_ladder():
    from engine.detect.yolo.random_weights import calibration_batch

    a, b = (calibration_batch(torch.Generator().manual_seed(s)) for s in (0, 1))
    assert a.shape == (6, 3, 320, 320) and not torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_random_weights_find_many_distinct_instances_on_real_frames(torch_detector, parity_frames):
    """Unspread, yaml-initialised weights find nothing at conf=0.25 (all class scores ~1e-4); spread ones
    find dozens per real frame, with scores that are all different (no ties for NMS to break arbitrarily)."""
    assert torch_detector.random_weights
    for name, frame in parity_frames.items():
        (dets,) = torch_detector([as_tensor(frame)])
        assert len(dets) >= 25, name
        assert dets.scores.unique().numel() == len(dets), name
        assert dets.class_ids.unique().numel() >= 1 and dets.masks.flatten(1).any(1).all(), name
