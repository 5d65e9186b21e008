"""The threaded source's policies, seen from the consumer: newest-frame-wins for live sources, pacing
for realtime files, and resources freed however the source ends."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from engine.sources import open_source

MEDIA = Path(__file__).parents[1] / "media"


def test_live_source_keeps_the_newest_frames_and_counts_the_rest() -> None:
    src = open_source("synthetic:seed=1,frames=40,size=64x48,objects=2", live=True, buffer_size=3)
    with src:
        deadline = time.monotonic() + 30
        while src.stats.decoded < 40 and time.monotonic() < deadline:
            time.sleep(0.01)  # a consumer busy elsewhere while the decoder runs to the end
        frames = list(src)
    assert src.stats.decoded == 40
    assert [f.index for f in frames] == [37, 38, 39]  # the newest three, in order
    assert (src.stats.delivered, src.stats.dropped) == (3, 37)


def test_file_source_never_drops_however_slow_the_consumer() -> None:
    src = open_source("synthetic:seed=1,frames=12,size=64x48,objects=2", buffer_size=1)
    with src:
        indices = []
        for frame in src:
            time.sleep(0.01)
            indices.append(frame.index)
    assert indices == list(range(12)) and src.stats.dropped == 0


def test_realtime_paces_frames_at_their_timestamps() -> None:
    src = open_source("synthetic:seed=1,frames=10,size=64x48,objects=2,fps=20", realtime=True)
    with src:
        times = [f.capture_time for f in src]
    # A lower bound only (a loaded machine can be slower, never faster): 9 frame intervals of 50 ms,
    # less 10 % for the clock's granularity.
    assert times[-1] - times[0] >= 0.9 * 9 / 20


def test_info_without_iterating_is_released_on_close() -> None:
    src = open_source(MEDIA / "bedroom.mp4")
    assert src.info.frame_count == 200
    assert src._decoder is not None
    src.close()
    assert src._decoder is None


@pytest.mark.parametrize("uri", [
    pytest.param(str(MEDIA / "bedroom.mp4"), id="file"),
    pytest.param("synthetic:frames=100,size=64x48", id="synthetic"),
])
def test_close_mid_stream_stops_the_decoder(uri: str) -> None:
    src = open_source(uri, buffer_size=2)
    with src:
        assert src.read(timeout=30) is not None
    assert not src._thread.is_alive()
    # Back-pressure bounds the work: the frame read, two buffered, one waiting to be put.
    assert src.stats.decoded <= 4


def test_realtime_does_not_stall_on_a_jump_in_timestamps(tmp_path: Path) -> None:
    # A spliced recording whose clock jumps an hour ahead: paced frames keep coming at the clip's
    # rate; the jump is rebased, not waited out nor counted as 100,000 lost frames.
    from tests.sources import media

    before = media.copy_packets(media.DOG, tmp_path / "a.ts", frames=5)
    after = media.copy_packets(media.DOG, tmp_path / "b.ts", frames=5, start_s=3600.0)
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(before.read_bytes() + after.read_bytes())
    src = open_source(spliced, realtime=True)
    started = time.monotonic()
    with src:
        frames = [src.read(timeout=30) for _ in range(8)]
    assert all(f is not None for f in frames)
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts)) and pts[-1] < 1.0  # rebased, not an hour on
    assert src.stats.pts_fixed == 1 and src.stats.lost == 0
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(("stats", "declared", "expected"), [
    pytest.param({}, 300, None, id="nothing-lost"),
    pytest.param({"pts_guessed": 1}, None, None, id="a-live-session-starting-without-pts-is-normal"),
    pytest.param({"corrupt": 3, "lost": 3}, 289, "3 damaged packets skipped; 3 of 289 frames lost",
                 id="damaged-file"),
    pytest.param({"lost": 1}, None, "1 frame lost", id="live-gap"),
    pytest.param({"concealed": 2, "pts_fixed": 1},
                 None, "2 frames shown with concealed damage; 1 timestamp out of order, moved forward",
                 id="concealed-and-reordered"),
    pytest.param({"pts_guessed": 30}, None, "30 frames without a timestamp, timed by the frame rate",
                 id="raw-stream-without-pts"),
    pytest.param({"dropped": 37, "reconnects": 2, "gap_s": 4.25}, None,
                 "37 frames dropped to stay current (newest-frame-wins); 2 reconnections, 4.2 s without frames",
                 id="live-drops-and-reconnections"),
    pytest.param({"gap_s": 12.0}, None, "0 reconnections, 12.0 s without frames", id="gave-up"),
])
def test_loss_summary_words(stats: dict, declared, expected) -> None:
    from engine.sources.base import describe_losses
    from engine.types import SourceStats

    summary = describe_losses("cam", SourceStats(**stats), declared)
    assert summary == (None if expected is None else f"cam: {expected}")
