import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest
import torch

from engine.errors import SinkError
from engine.sinks import Mp4Writer
from engine.types import Frame, FrameResult, Instances, StageTimes


def _result(index: int, image: np.ndarray, *, capture_time: float | None = None) -> FrameResult:
    h, w = image.shape[:2]
    frame = Frame(image=torch.from_numpy(image), index=index, pts=index / 30,
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


def test_every_frame_is_written_at_the_source_rate(tmp_path):
    path = tmp_path / "o.mp4"
    writer = Mp4Writer(path, fps=30000 / 1001)
    for i, img in enumerate(_frames(45, 120, 160)):
        writer.write(_result(i, img))
    writer.close()
    count, size, times = _decode(path)
    assert (count, size) == (45, (160, 120))
    assert times[-1] - times[0] == pytest.approx(44 * 1001 / 30000, abs=1e-3)


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


def test_live_video_is_timed_by_capture_clock_so_drops_keep_real_time(tmp_path):
    path = tmp_path / "live.mp4"
    writer = Mp4Writer(path, fps=30, live=True)
    for i, img in enumerate(_frames(5, 64, 64)):
        writer.write(_result(i, img, capture_time=50.0 + 0.2 * i))  # 5 fps actually delivered
    writer.close()
    times = _decode(path)[2]
    assert times[-1] - times[0] == pytest.approx(0.8, abs=0.01)


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
            f = Frame(image=torch.from_numpy(img), index=i, pts=None, capture_time=0.0)
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
