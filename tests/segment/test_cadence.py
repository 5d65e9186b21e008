"""The every-k-th-frame cadence: when the model runs, and what the frames between get."""

from __future__ import annotations

import pytest
import torch

from engine.errors import ConfigError
from engine.segment import SegmentCadence
from engine.types import SemanticMap


def _run(calls: list[int], index: int, size=(4, 6)):
    def run() -> SemanticMap:
        calls.append(index)
        return SemanticMap(labels=torch.full(size, index, dtype=torch.int64), frame_index=index, fresh=True)
    return run


@pytest.mark.parametrize(("every", "indices", "runs"), [
    pytest.param(1, range(6), [0, 1, 2, 3, 4, 5], id="every-frame"),
    pytest.param(5, range(12), [0, 5, 10], id="every-5th"),
    pytest.param(5, [0, 1, 3, 6, 7, 11, 12], [0, 6, 11], id="dropped-frames-count-by-index"),
    pytest.param(3, [0, 1, 2, 3, 1], [0, 3, 1], id="index-going-back-reruns"),
])
def test_the_model_runs_on_every_kth_frame_index(every, indices, runs) -> None:
    cadence, calls = SegmentCadence(every), []
    for i in indices:
        result = cadence.step(i, 4, 6, _run(calls, i))
        assert result.fresh == (i in runs and calls[-1] == i)
        assert int(result.labels[0, 0]) == result.frame_index == calls[-1]  # the map of the last run
    assert calls == runs
    assert (cadence.runs, cadence.reuses) == (len(runs), len(list(indices)) - len(runs))


def test_a_reused_map_says_so_and_names_the_frame_it_came_from() -> None:
    cadence, calls = SegmentCadence(4), []
    first = cadence.step(10, 4, 6, _run(calls, 10))
    again = cadence.step(12, 4, 6, _run(calls, 12))
    assert first.fresh and not again.fresh and again.frame_index == 10
    assert again.labels is first.labels  # no copy


def test_a_new_frame_size_runs_the_model_at_once() -> None:
    cadence, calls = SegmentCadence(10), []
    cadence.step(0, 4, 6, _run(calls, 0))
    result = cadence.step(1, 8, 6, _run(calls, 1, size=(8, 6)))
    assert result.fresh and calls == [0, 1]


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_bad_every_is_refused(every) -> None:
    with pytest.raises(ConfigError, match="every"):
        SegmentCadence(every)
