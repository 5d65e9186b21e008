"""V4L2 cameras. No camera exists on the test machines, so these cover the option plumbing into
FFmpeg's v4l2 demuxer and the error paths; capture from a real device is untested here."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from engine.errors import SourceError
from engine.sources import CameraSource, open_source


@pytest.mark.parametrize(("query", "options"), [
    pytest.param("", {}, id="device-defaults"),
    pytest.param("?size=1280x720", {"video_size": "1280x720"}, id="size"),
    pytest.param("?size=640x480&fps=30&pixel_format=mjpeg",
                 {"video_size": "640x480", "framerate": "30", "input_format": "mjpeg"}, id="all"),
    pytest.param("?fps=29.97", {"framerate": "29.97"}, id="fractional-fps"),
])
def test_url_options_become_demuxer_options(query: str, options: dict) -> None:
    src = open_source(f"v4l2:///dev/video0{query}")
    assert isinstance(src, CameraSource) and src.device == "/dev/video0"
    assert src.options() == options


def test_options_are_handed_to_pyav_with_the_v4l2_format(tmp_path: Path, monkeypatch) -> None:
    device = tmp_path / "video0"  # stands in for the device node; av.open is replaced below
    device.write_bytes(b"")
    calls = []

    def fake_open(file, **kwargs):
        calls.append((file, kwargs))
        raise av.error.FileNotFoundError(2, "No such file or directory", file)

    monkeypatch.setattr(av, "open", fake_open)
    src = CameraSource(device, size=(640, 480), fps=15, pixel_format="yuyv422", io_timeout_s=2.0)
    with pytest.raises(SourceError, match=r"video0: cannot connect: no such file or directory; check the"):
        _ = src.info
    assert calls == [(str(device), {"format": "v4l2", "timeout": 2.0, "options": {
        "video_size": "640x480", "framerate": "15", "input_format": "yuyv422"}})]


@pytest.mark.parametrize(("kwargs", "pattern"), [
    pytest.param({"size": (0, 480)}, "size must be", id="zero-width"),
    pytest.param({"fps": -1}, "fps must be > 0", id="negative-fps"),
    pytest.param({"fps": float("nan")}, "fps must be > 0", id="nan-fps"),
    pytest.param({"fps": 90000.0}, "fps must be > 0 and at most 1000", id="a-clock-rate-not-a-frame-rate"),
    pytest.param({"size": (1280.5, 720)}, "whole pixels", id="fractional-width"),
    pytest.param({"size": (100000, 720)}, "whole pixels from 1 to 16384", id="absurd-width"),
])
def test_bad_camera_options(kwargs: dict, pattern: str) -> None:
    with pytest.raises(SourceError, match=pattern):
        CameraSource("/dev/video0", **kwargs)


def test_unreadable_device_says_which_group(tmp_path: Path, monkeypatch) -> None:
    device = tmp_path / "video0"
    device.write_bytes(b"")
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(SourceError, match="permission denied; add your user to the 'video' group"):
        _ = CameraSource(device).info
