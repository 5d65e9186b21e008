import errno
import subprocess
import sys
import textwrap
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from engine.errors import SinkError
from engine.sinks import Mp4Writer
from engine.types import Frame, FrameResult, Instances, StageTimes


def _result(index: int, image: np.ndarray, *, pts: float | None = None,
            capture_time: float | None = None) -> FrameResult:
    h, w = image.shape[:2]
    frame = Frame(image=torch.from_numpy(image), index=index, pts=pts,
                  capture_time=capture_time if capture_time is not None else 1000.0 + index / 30)
    return FrameResult(frame=frame, instances=Instances.empty(h, w), times=StageTimes(), age_ms=0.0)


def _decode(path) -> tuple[int, tuple[int, int], list[float]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    return len(frames), (frames[0].width, frames[0].height), [float(f.time) for f in frames]


def _frames(n, h, w):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _write(path, pts, *, fps=30.0, live=False, capture=None, size=(64, 96)):
    writer = Mp4Writer(path, fps=fps, live=live)
    for i, img in enumerate(_frames(len(pts), *size)):
        writer.write(_result(i, img, pts=pts[i], capture_time=None if capture is None else capture[i]))
    writer.close()
    return _decode(path)


# Timestamps are kept on a 90 kHz clock: half a tick (5.6 us) of rounding, nothing else.
HALF_TICK = 0.5 / 90_000


def test_frames_carry_the_source_timestamps_with_the_first_at_zero(tmp_path):
    """A variable-rate live stream whose buffer dropped frames: gaps of 10-200 ms, starting at 5 s.
    Read back with PyAV, every frame is where the source put it, shifted so the first is at 0."""
    rng = np.random.default_rng(1)
    pts = list(5.0 + np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 0.2, 59))]))
    count, _, times = _write(tmp_path / "vfr.mp4", pts, live=True)
    assert count == 60
    np.testing.assert_allclose(times, np.asarray(pts) - pts[0], atol=HALF_TICK)


def test_a_constant_rate_source_keeps_its_exact_rate(tmp_path):
    pts = [i * 1001 / 30000 for i in range(45)]
    count, size, times = _write(tmp_path / "ntsc.mp4", pts, fps=30000 / 1001, size=(120, 160))
    assert (count, size) == (45, (160, 120))
    np.testing.assert_allclose(times, pts, atol=HALF_TICK)


@pytest.mark.parametrize("live, expected", [
    (True, [0.0, 0.2, 0.4, 0.6, 0.8]),  # live: the capture clock (5 fps actually delivered)
    (False, [0.0, 0.04, 0.08, 0.12, 0.16]),  # a file: frames spaced at its rate, 25 fps
])
def test_frames_without_pts_are_timed_by_capture_clock_live_or_by_rate(tmp_path, live, expected):
    capture = [50.0 + 0.2 * i for i in range(5)]
    count, _, times = _write(tmp_path / "nopts.mp4", [None] * 5, fps=25, live=live, capture=capture)
    assert count == 5
    np.testing.assert_allclose(times, expected, atol=HALF_TICK)


def test_timestamps_that_go_backwards_stay_increasing_and_keep_their_spacing(tmp_path):
    """A stream whose clock restarts (a damaged file): the video goes on one frame later, at the
    source's spacing, instead of squeezing the frames together or failing in the encoder."""
    pts = [0.0, 0.1, 0.2, 0.3, 0.0, 0.1, 0.2]
    count, _, times = _write(tmp_path / "back.mp4", pts, fps=10)
    assert count == 7
    np.testing.assert_allclose(times, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], atol=HALF_TICK)


def test_a_missing_pts_mid_stream_is_one_frame_after_the_last(tmp_path):
    count, _, times = _write(tmp_path / "gap.mp4", [0.0, 0.5, None, 1.5], fps=10)
    assert count == 4
    np.testing.assert_allclose(times, [0.0, 0.5, 0.6, 1.5], atol=HALF_TICK)


def test_odd_sizes_are_padded_by_one_pixel_for_420_chroma(tmp_path):
    path = tmp_path / "odd.mp4"
    writer = Mp4Writer(path, fps=25)
    for i, img in enumerate(_frames(5, 121, 161)):
        writer.write(_result(i, img))
    writer.close()
    assert _decode(path)[:2] == (5, (162, 122))


def test_a_resolution_change_mid_stream_keeps_one_video_size(tmp_path):
    path = tmp_path / "change.mp4"
    writer = Mp4Writer(path, fps=30)
    for i, img in enumerate(_frames(4, 120, 160) + _frames(4, 240, 320)):
        writer.write(_result(i, img))
    writer.close()
    assert _decode(path)[:2] == (8, (160, 120))


def test_a_killed_writer_leaves_a_playable_file(tmp_path):
    """The process dies without closing (no moov rewrite possible): the fragments before stay valid."""
    path = tmp_path / "killed.mp4"
    script = textwrap.dedent(f"""
        import os, numpy as np, torch
        from engine.sinks import Mp4Writer
        from engine.types import Frame, FrameResult, Instances, StageTimes
        w = Mp4Writer({str(path)!r}, fps=30)
        rng = np.random.default_rng(0)
        for i in range(100):
            img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
            f = Frame(image=torch.from_numpy(img), index=i, pts=i / 30, capture_time=0.0)
            w.write(FrameResult(frame=f, instances=Instances.empty(96, 128), times=StageTimes(), age_ms=0.0))
        os._exit(9)
    """)
    subprocess.run([sys.executable, "-c", script], check=False, timeout=120)
    count, size, _ = _decode(path)
    # One-second fragments (30 frames) and x264's lookahead: at least the first two whole fragments.
    assert count >= 60 and size == (128, 96)


@pytest.mark.parametrize("path, message", [
    ("{tmp}/no-such-dir/o.mp4", "does not exist"),
    ("{tmp}", "is a directory"),
    ("/proc/streamseg-test.mp4", "streamseg-test.mp4"),
])
def test_unwritable_paths_fail_naming_the_path(tmp_path, path, message):
    with pytest.raises(SinkError, match=message):
        Mp4Writer(path.format(tmp=tmp_path), fps=30)


def test_the_file_is_created_by_the_first_frame_not_by_the_writer(tmp_path):
    """An earlier video at the path survives a run that ends before its first frame."""
    earlier = tmp_path / "o.mp4"
    earlier.write_bytes(b"an earlier run's video")
    Mp4Writer(earlier, fps=30).close()
    assert earlier.read_bytes() == b"an earlier run's video"
    new = tmp_path / "new.mp4"
    writer = Mp4Writer(new, fps=30)
    assert not new.exists()
    for i, img in enumerate(_frames(3, 64, 64)):
        writer.write(_result(i, img))
    writer.close()
    assert _decode(new)[0] == 3


class _FillingContainer:
    """A real output container whose ``mux`` fails with ENOSPC from packet ``fail_at`` on, as a disk
    that fills mid-run does, and that counts every ``mux`` call."""

    def __init__(self, real, fail_at: int) -> None:
        self._real, self.fail_at, self.calls = real, fail_at, 0

    def mux(self, packet) -> None:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._real.mux(packet)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_after_a_failed_write_nothing_is_muxed_and_the_file_keeps_its_whole_fragments(tmp_path, monkeypatch):
    """FFmpeg crashes when a muxer that failed a write is written to again (the final flush included):
    after the failure neither ``write`` nor ``close`` may mux, and the file is cut back to the last
    whole fragment, so it plays to the end without a decoding error."""
    from engine.sinks import mp4

    containers = []
    real_open = mp4.av.open

    def open_filling(*args, **kwargs):
        containers.append(_FillingContainer(real_open(*args, **kwargs), fail_at=45))
        return containers[-1]

    monkeypatch.setattr(mp4.av, "open", open_filling)
    path = tmp_path / "full.mp4"
    writer = Mp4Writer(path, fps=30)
    images = _frames(80, 64, 64)
    with pytest.raises(SinkError, match="full.mp4.*No space left on device") as failure:
        for i, img in enumerate(images):
            writer.write(_result(i, img, pts=i / 30))
    calls = containers[0].calls
    with pytest.raises(SinkError) as again:  # a later frame repeats the failure, muxing nothing
        writer.write(_result(79, images[79], pts=79 / 30))
    assert str(again.value) == str(failure.value)
    writer.close()  # no flush after the failure
    assert containers[0].calls == calls
    monkeypatch.undo()
    # Cut back to the size after the last successful mux, which ends on a fragment boundary (noise
    # frames make x264 start fragments at scene cuts, so where exactly depends on the encoder).
    assert path.stat().st_size == writer._whole_bytes
    count, _, times = _decode(path)  # raises on a torn fragment
    assert 0 < count < 45
    np.testing.assert_allclose(times, [i / 30 for i in range(count)], atol=HALF_TICK)


@pytest.mark.timeout(120)
def test_a_variable_rate_file_keeps_its_timing_through_the_cli(tmp_path):
    """The user's path: a variable-rate clip through ``streamseg run --out``; the overlay video's
    frames are where the clip's frames are (PyAV reads both)."""
    from tests.sinks.outputs import streamseg

    clip = tmp_path / "vfr.mp4"
    rng = np.random.default_rng(2)
    pts_ms = np.concatenate([[0], np.cumsum(rng.integers(15, 120, 39))]).tolist()
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for img, pts in zip(_frames(40, 120, 160), pts_ms):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    source_times = _decode(clip)[2]
    video = tmp_path / "o.mp4"
    proc = streamseg("run", str(clip), "--detector", "none", "--tracker", "none", "--out", str(video),
                     "--quiet")
    assert proc.returncode == 0, proc.stderr
    count, _, times = _decode(video)
    assert count == 40
    np.testing.assert_allclose(times, np.asarray(source_times) - source_times[0], atol=HALF_TICK)
