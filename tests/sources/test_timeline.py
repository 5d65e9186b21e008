"""The delivered pts: the stream's own where it gives usable ones, strictly increasing always, every
repair counted (engine.sources.timeline)."""

from __future__ import annotations

import itertools

import pytest

from engine.sources.timeline import Timeline
from engine.types import SourceStats

F = 1 / 30  # one frame at 30 fps
NEW = "new session"  # marks a reconnection in a case's input


def _run(fps, inputs):
    stats = SourceStats()
    timeline = Timeline(stats, fps)
    out = []
    now = 100.0
    for item in inputs:
        if item == NEW:
            timeline.new_session()
            continue
        pts, now = item if isinstance(item, tuple) else (item, now + F)
        out.append(timeline.stamp(pts, now))
    return out, stats


# (fps, inputs: pts or (pts, wall time) or NEW, delivered pts, (guessed, fixed, lost))
CASES = [
    pytest.param(30, [0, F, 2 * F], [0, F, 2 * F], (0, 0, 0), id="clean-kept-as-is"),
    pytest.param(30, [1.4, 1.4 + F], [1.4, 1.4 + F], (0, 0, 0), id="late-start-kept"),
    pytest.param(30, [None, F, 2 * F], [0, F, 2 * F], (1, 0, 0), id="first-without-pts-gets-0"),
    pytest.param(25, [None] * 4, [0, 0.04, 0.08, 0.12], (4, 0, 0), id="no-pts-at-all-timed-by-rate"),
    pytest.param(None, [0, 0.1, None], [0, 0.1, 0.2], (1, 0, 0), id="no-rate-spacing-learned"),
    pytest.param(30, [0, F, 2 * F, 4 * F, 3 * F, 5 * F], [0, F, 2 * F, 4 * F, 4.1 * F, 5 * F], (0, 1, 1),
                 id="reordered-frame-nudged-then-stream-resumes"),
    pytest.param(30, [0, F, F, 2 * F], [0, F, 1.1 * F, 2 * F], (0, 1, 0), id="repeated-pts"),
    pytest.param(30, [10, 10 + F, 2, 2 + F], [10, 10 + F, 10 + 2 * F, 10 + 3 * F], (0, 1, 0),
                 id="clock-restart-rebased-once"),
    pytest.param(30, [0, F, 5 * F, 6 * F], [0, F, 5 * F, 6 * F], (0, 0, 3), id="gap-counts-lost-frames"),
    pytest.param(None, [0, F, 5 * F], [0, F, 5 * F], (0, 0, 0), id="no-rate-no-loss-claimed"),
    pytest.param(30, [0, F, 3600, 3600 + F], [0, F, 2 * F, 3 * F], (0, 1, 0), id="clock-jump-ahead-rebased"),
    pytest.param(30, [(1.0, 100.0), NEW, (0.0, 103.0), (F, 103.0 + F)], [1.0, 4.0, 4.0 + F], (0, 0, 0),
                 id="reconnect-keeps-the-wall-clock-gap"),
    pytest.param(30, [(1.0, 100.0), NEW, (None, 102.0), (5.0, 102.0 + F), (5.0 + F, 102.0 + 2 * F)],
                 [1.0, 3.0, 3.0 + F, 3.0 + 2 * F], (1, 0, 0), id="reconnect-first-without-pts"),
    pytest.param(30, [(1.0, 100.0), NEW, (0.9, 100.001)], [1.0, 1.0 + F], (0, 0, 0),
                 id="reconnect-at-once-still-increases"),
]


@pytest.mark.parametrize(("fps", "inputs", "expected", "counts"), CASES)
def test_delivered_pts(fps, inputs, expected, counts) -> None:
    out, stats = _run(fps, inputs)
    assert out == pytest.approx(expected, abs=1e-9)
    assert all(b > a for a, b in itertools.pairwise(out))
    assert (stats.pts_guessed, stats.pts_fixed, stats.lost) == counts


def test_a_long_glitch_stays_increasing_and_rejoins_the_stream() -> None:
    # Half a second of frames stamped a second back: squeezed after their predecessor, then the
    # stream's own times take over again once they pass the squeezed ones.
    inputs = [i * F for i in range(30)] + [(i - 30) * F + 0.5 for i in range(30, 45)] + \
             [i * F for i in range(45, 70)]
    out, stats = _run(30, inputs)
    assert all(b > a for a, b in itertools.pairwise(out))
    assert out[-1] == pytest.approx(69 * F)
    assert 0 < stats.pts_fixed <= 15
