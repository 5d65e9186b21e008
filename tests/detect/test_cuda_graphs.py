"""CUDA graphs for the detector's network: replays give what eager runs give."""

import pytest
import torch

from engine.runtime.cuda_graphs import GraphedCall


def test_on_the_cpu_the_call_is_the_plain_function():
    calls = []
    graphed = GraphedCall(lambda x: (calls.append(1), x * 2)[1:])
    assert torch.equal(graphed(torch.ones(3))[0], torch.full((3,), 2.0)) and calls == [1]


@pytest.mark.gpu
def test_graph_replays_equal_eager_runs_for_each_shape():
    from engine.detect import DetectorConfig, load_detector

    det = load_detector(DetectorConfig(weights="random", backend="torch", device="cuda"))
    eager = load_detector(DetectorConfig(weights="random", backend="torch", device="cuda"))
    eager.backend._forward = eager.backend._eager
    g = torch.Generator().manual_seed(0)
    for shape in [(720, 1280), (540, 960), (720, 1280)]:  # a new shape captures, a known one replays
        frames = [torch.randint(0, 255, (*shape, 3), dtype=torch.uint8, generator=g).cuda() for _ in range(2)]
        for a, b in zip(det(frames), eager(frames)):
            assert torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks)
    assert len(det.backend._forward._graphs) == 2
