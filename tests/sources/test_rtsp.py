"""RTSP through a real server (GStreamer's, on 127.0.0.1): reading, losing the server mid-stream and
resuming, giving up when it never returns, newest-frame-wins under a slow consumer, and a resolution
change mid-stream. Every read has a timeout, so a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from engine.errors import SourceError
from engine.sources import RtspSource, open_source
from tests.rtsp_server import APT_PACKAGES, RtspServer
from tests.sources.silent_rtsp import sprop_parameter_sets

READ_TIMEOUT_S = 20.0  # far above any wait here (the longest, a reconnection, takes ~4 s)


def _read(src, n: int) -> list:
    return [src.read(timeout=READ_TIMEOUT_S) for _ in range(n)]


def test_reads_the_stream_as_the_clip_encodes_it(rtsp_server, bedroom_clip: Path) -> None:
    src = open_source(rtsp_server.url)
    assert isinstance(src, RtspSource)
    info = src.info
    assert (info.live, info.width, info.height, info.codec) == (True, 960, 540, "h264")
    assert info.frame_count is None  # a live stream never says how long it is
    with src:
        frames = _read(src, 30)
    assert all(f is not None for f in frames)
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))
    pts = [f.pts for f in frames if f.pts is not None]
    assert len(pts) >= 29 and all(b > a for a, b in itertools.pairwise(pts))
    # decode_ms is the decoder's work on a frame (a few ms at 960x540), not the wait for the server's
    # next packet: counted with the wait, every frame of this 30 fps stream took ~33 ms.
    assert np.median([f.decode_ms for f in frames[1:]]) < 0.6 * 1000 / 30
    # The server relays the clip's own H.264 packets: the pictures decode to the file's pixels.
    with av.open(str(bedroom_clip)) as container:
        clip = [f.to_ndarray(format="rgb24") for _, f in zip(range(60), container.decode(video=0))]
    last = frames[-1].image.numpy()
    assert any(np.array_equal(last, c) for c in clip), "no clip frame matches the streamed picture"


def test_server_restart_mid_stream_resumes_by_itself(rtsp_server) -> None:
    src = open_source(rtsp_server.url, reconnect_attempts=5)
    with src:
        before = _read(src, 20)
        rtsp_server.stop()  # the socket closes under the client, as when a camera reboots
        time.sleep(1.5)
        rtsp_server.start()  # same port
        after = _read(src, 40)
    stats = src.stats
    assert stats.reconnects >= 1 and stats.gap_s > 0
    indices = [f.index for f in before + after]
    assert indices == sorted(set(indices)), "frame indices must keep counting across the reconnection"
    pts = [f.pts for f in before + after if f.pts is not None]
    assert all(b > a for a, b in itertools.pairwise(pts)), "pts must keep increasing across the reconnection"
    assert stats.decoded >= 60 and stats.delivered == 60


def test_server_that_hangs_is_timed_out_and_reconnected(rtsp_server) -> None:
    src = open_source(rtsp_server.url, io_timeout_s=1.0)
    with src:
        assert all(f is not None for f in _read(src, 10))
        # Frozen, not dead: the socket stays open but nothing comes, as with a wedged camera.
        os.kill(rtsp_server.pid, signal.SIGSTOP)
        try:
            time.sleep(2.5)
        finally:
            os.kill(rtsp_server.pid, signal.SIGCONT)
        after = _read(src, 30)
    assert all(f is not None for f in after)
    assert src.stats.reconnects >= 1 and src.stats.gap_s > 0


def test_server_that_never_returns_ends_in_one_clear_error(rtsp_server) -> None:
    src = open_source(rtsp_server.url, reconnect_attempts=3)
    started = time.monotonic()
    with src:
        assert all(f is not None for f in _read(src, 10))
        rtsp_server.stop()
        with pytest.raises(SourceError) as err:
            while src.read(timeout=READ_TIMEOUT_S) is not None:  # frames still buffered come first
                pass
    message = str(err.value)
    assert message.startswith(f"{rtsp_server.url}: stream lost (")
    assert "3 reconnect attempts over" in message and "(the budget of 3 attempts is reached)" in message
    assert "the last: connection refused" in message
    assert message.endswith("check the address and that the server is up") and "\n" not in message
    assert src.stats.reconnects == 0 and src.stats.gap_s > 0
    # Hang guard, not a speed check: three 1 s intervals, then the error.
    assert time.monotonic() - started < READ_TIMEOUT_S


def test_slow_consumer_gets_the_newest_frames_and_drops_are_counted(rtsp_server) -> None:
    src = open_source(rtsp_server.url, buffer_size=1)
    got = []
    with src:
        for _ in range(12):
            time.sleep(0.15)  # ~4.5 frames of the 30 fps stream arrive while the consumer works
            newest_before = src.stats.decoded - 1
            frame = src.read(timeout=READ_TIMEOUT_S)
            assert frame is not None
            # A one-frame newest-wins buffer hands out the newest picture decoded before the read
            # (or one decoded since): never an old one.
            assert frame.index >= newest_before
            got.append(frame.index)
    assert src.stats.dropped > 0
    assert any(b - a > 1 for a, b in itertools.pairwise(got)), "drops show as gaps in the frame indices"
    assert src.stats.dropped + src.stats.delivered <= src.stats.decoded


def test_resolution_change_mid_stream(rtsp_server_for, resolution_change: Path) -> None:
    server = rtsp_server_for(resolution_change)
    src = open_source(server.url, live=False, reconnect_attempts=0)  # every frame; the end is final
    sizes = []
    with src, pytest.raises(SourceError, match=r"stream lost \(the server ended the stream\); reconnection"):
        while (frame := src.read(timeout=READ_TIMEOUT_S)) is not None:
            sizes.append(tuple(frame.image.shape))
    assert sizes[0] == (240, 320, 3) and sizes[-1] == (144, 256, 3)
    assert set(sizes) == {(240, 320, 3), (144, 256, 3)}


def test_missing_gstreamer_fails_the_test_with_the_packages_to_install(bedroom_clip: Path) -> None:
    without_gi = sys.executable  # the project's virtualenv has no GStreamer bindings
    with pytest.raises(pytest.fail.Exception, match=f"apt-get install -y {APT_PACKAGES}"):
        RtspServer(bedroom_clip, python=without_gi).start()


# --- content, not form: a connection counts once a picture has decoded ----------------------------


@pytest.mark.parametrize("with_sprop", [False, True], ids=["bare-sdp", "sdp-with-sps-pps"])
def test_a_server_that_answers_and_never_sends_video_fails_at_open(silent_rtsp, bedroom_clip: Path,
                                                                   with_sprop: bool) -> None:
    server = silent_rtsp(sprop=sprop_parameter_sets(bedroom_clip) if with_sprop else None)
    src = open_source(server.url, io_timeout_s=1.0, reconnect_attempts=1)
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        _ = src.info
    elapsed = time.monotonic() - started
    src.close()
    message = str(err.value)
    assert message.startswith(f"{server.url}: cannot connect: the server answers but sent no picture "
                              f"within 1 s of connecting") and "\n" not in message
    assert server.sessions == 1, "the handshake is tried once: the first connection is not retried"
    # Bounded by the I/O timeout: the probe and the first read each wait at most 1 s (three waits).
    assert elapsed < 3 * 1.0 + 2.0


def test_the_reconnect_budget_runs_out_against_a_server_that_answers_without_video(
        rtsp_server, silent_rtsp) -> None:
    # The camera's server comes back after a crash but its encoder is stuck: every request is
    # answered, no picture ever comes. Each attempt is one session; the budget ends it.
    src = open_source(rtsp_server.url, io_timeout_s=1.0, reconnect_attempts=2, reconnect_interval_s=0.2)
    with src:
        assert all(f is not None for f in _read(src, 5))
        port = rtsp_server.port
        rtsp_server.stop()
        silent = silent_rtsp(port=port)
        started = time.monotonic()
        with pytest.raises(SourceError) as err:
            while src.read(timeout=READ_TIMEOUT_S) is not None:
                pass
        elapsed = time.monotonic() - started
    message = str(err.value)
    assert "2 reconnect attempts over" in message and "(the budget of 2 attempts is reached)" in message
    assert "the last: the server answers but sent no picture within 1 s" in message
    assert silent.sessions == 2 and src.stats.reconnects == 0
    # Two attempts of at most three 1 s waits each, two 0.2 s intervals, the read that saw the loss.
    assert elapsed < src.give_up_after_s + 2.0 < 12.0
