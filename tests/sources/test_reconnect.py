"""The live reconnect policy, on a scripted stream whose connections succeed or fail on cue: a fixed
interval (no growing backoff), a give-up time, an attempt budget, all settable. The real RTSP server's
kills and restarts are in test_rtsp.py and benchmarks/reliability.py."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import numpy as np
import pytest

from engine.errors import SourceError
from engine.sources.base import Picture
from engine.sources.live import LiveStreamSource
from engine.sources.orientation import Orientation
from engine.sources.timeline import Timeline

READ_TIMEOUT_S = 20.0


class _ScriptedDecoder:
    """Stands in for ``engine.sources._av.VideoDecoder``: ``n`` pictures, then the stream is lost."""

    codec, fps, notes, orientation = "raw", 30.0, [], Orientation()

    def __init__(self, n: int, timeline: Timeline) -> None:
        self.n, self.timeline, self.first = n, timeline, None

    def _picture(self, i: int) -> Picture:
        pts = self.timeline.stamp(i / 30, time.monotonic())
        return Picture(image=np.zeros((4, 6, 3), np.uint8), pts=pts, decode_ms=0.0)

    def start(self, *, timeout_s: float | None = None) -> Picture:
        self.first = self._picture(0)
        return self.first

    def pictures(self) -> Iterator[Picture]:
        yield self.first
        for i in range(1, self.n):
            time.sleep(1 / 30)
            yield self._picture(i)
        raise ConnectionResetError(104, "Connection reset by peer")

    def close(self) -> None:
        pass


class ScriptedSource(LiveStreamSource):
    """Each connection follows the script: an int n connects and delivers n pictures, then the stream
    is lost; "refused" fails. ``attempts`` records when each connection was tried (monotonic)."""

    def __init__(self, script: list, **kwargs) -> None:
        super().__init__("scripted://cam", **kwargs)
        self.script = list(script)
        self.attempts: list[float] = []

    def _connect(self, timeline: Timeline) -> _ScriptedDecoder:
        self.attempts.append(time.monotonic())
        step = self.script.pop(0) if self.script else "refused"
        if step == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        return _ScriptedDecoder(step, timeline)

    def _fix(self) -> str:
        return "check the scripted camera"


def _drain(src, frames: list | None = None) -> list:
    frames = [] if frames is None else frames
    while (frame := src.read(timeout=READ_TIMEOUT_S)) is not None:
        frames.append(frame)
    return frames


def test_retries_come_at_a_fixed_interval_and_pick_the_stream_up_at_once() -> None:
    # Lost after 3 pictures; eight refusals (a camera rebooting); back on the ninth try; lost again
    # for good, until the give-up time.
    src = ScriptedSource([3] + ["refused"] * 8 + [3], reconnect_interval_s=0.1, give_up_s=1.5,
                         reconnect_attempts=None)
    frames: list = []
    with src, pytest.raises(SourceError, match=r"the 1\.5 s limit is reached"):
        _drain(src, frames)
    gaps = np.diff(src.attempts[1:10])  # between the nine attempts of the first outage
    # Fixed, not growing: every wait is the interval (a loaded machine can add, never subtract).
    assert len(gaps) == 8 and np.all(gaps >= 0.099) and gaps.max() < 0.1 + 0.15, gaps
    assert src.stats.reconnects == 1 and len(frames) == 6
    # The last outage: attempts every 0.1 s until 1.5 s after the last picture (the last one cut to it).
    assert 12 <= len(src.attempts) - 10 <= 16


def test_a_stream_back_after_an_outage_longer_than_any_old_backoff_is_resumed() -> None:
    # 20 refusals at 0.1 s: a 2 s outage, picked up on the attempt after the server's return.
    src = ScriptedSource([2] + ["refused"] * 20 + [2], reconnect_interval_s=0.1, reconnect_attempts=None,
                         give_up_s=10.0)
    with src:
        frames = [src.read(timeout=READ_TIMEOUT_S) for _ in range(4)]
    assert all(f is not None for f in frames) and src.stats.reconnects == 1
    assert [f.index for f in frames] == [0, 1, 2, 3]
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert pts[2] - pts[1] >= 2.0, "the pts gap is the outage's real length"
    assert src.stats.gap_s >= 2.0


@pytest.mark.parametrize(("kwargs", "attempts", "pattern"), [
    pytest.param({"reconnect_attempts": 3}, 3, r"3 reconnect attempts over [\d.]+ s failed \(the budget of 3 "
                 r"attempts is reached\), the last: connection refused; check the scripted camera",
                 id="attempt-budget"),
    pytest.param({"reconnect_attempts": None, "give_up_s": 0.5}, 5,
                 r"reconnect attempts over [\d.]+ s failed \(the 0\.5 s limit is reached\)", id="give-up-time"),
    pytest.param({"reconnect_attempts": 0}, 0, r"stream lost \(connection reset by peer\); reconnection is off",
                 id="reconnection-off"),
])
def test_the_policy_gives_up_with_one_clear_line(kwargs: dict, attempts: int, pattern: str) -> None:
    src = ScriptedSource([2], reconnect_interval_s=0.1, **kwargs)
    started = time.monotonic()
    with src, pytest.raises(SourceError, match=pattern) as err:
        _drain(src)
    assert str(err.value).startswith("scripted://cam: stream lost (connection reset by peer); ")
    # The first connection plus the reconnection attempts (give-up time: one per 0.1 s interval).
    assert len(src.attempts) - 1 == pytest.approx(attempts, abs=1)
    assert time.monotonic() - started < src.give_up_after_s + 5.0


def test_never_giving_up_keeps_trying_until_closed() -> None:
    src = ScriptedSource([2], reconnect_interval_s=0.05, give_up_s=None)
    assert src.give_up_after_s == float("inf")
    with src:
        _ = [src.read(timeout=READ_TIMEOUT_S) for _ in range(2)]
        time.sleep(1.0)
        assert len(src.attempts) > 5  # still trying
        closed = time.monotonic()
    assert time.monotonic() - closed < 2.0 and not src._thread.is_alive()
