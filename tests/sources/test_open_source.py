"""``open_source`` picks the source kind and the buffering policy from the input's text."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.sources import CameraSource, FileSource, HttpSource, RtspSource, SyntheticSource, open_source


@pytest.mark.parametrize(("uri", "kwargs", "kind", "live"), [
    pytest.param("clip.mp4", {}, FileSource, False, id="relative-path"),
    pytest.param(Path("/data/clip.mkv"), {}, FileSource, False, id="pathlib"),
    pytest.param("file:///data/my%20clip.mp4", {}, FileSource, False, id="file-url"),
    pytest.param("clip.mp4", {"live": True}, FileSource, True, id="file-forced-live"),
    pytest.param("rtsp://127.0.0.1:8554/clip", {}, RtspSource, True, id="rtsp"),
    pytest.param("rtsps://cam.local/stream", {}, RtspSource, True, id="rtsps"),
    pytest.param("RTSP://127.0.0.1/clip", {"live": False}, RtspSource, False, id="rtsp-every-frame"),
    pytest.param("http://127.0.0.1/x.mp4", {}, HttpSource, False, id="http"),
    pytest.param("https://example.org/x.mp4", {}, HttpSource, False, id="https"),
    pytest.param("/dev/video0", {}, CameraSource, True, id="device-path"),
    pytest.param("v4l2:///dev/video2", {}, CameraSource, True, id="v4l2-url"),
    pytest.param("synthetic:seed=1,frames=5", {}, SyntheticSource, False, id="synthetic"),
    pytest.param("synthetic:frames=5", {"live": True}, SyntheticSource, True, id="synthetic-live"),
])
def test_kind_and_policy(uri, kwargs, kind, live) -> None:
    src = open_source(uri, **kwargs)  # nothing is opened yet
    assert type(src) is kind and src.live is live


def test_file_url_is_unquoted() -> None:
    assert open_source("file:///data/my%20clip.mp4").uri == "/data/my clip.mp4"


def test_network_options_reach_the_demuxer() -> None:
    src = open_source("rtsp://127.0.0.1/clip", io_timeout_s=2.5, reconnect_attempts=7)
    assert src.options() == {"rtsp_transport": "tcp", "timeout": "2500000", "allowed_media_types": "video"}
    assert (src.reconnect_attempts, src.io_timeout_s) == (7, 2.5)
    # Backoff 0.5, 1, 2, 4, 8, 8, 8 s plus a timeout for the read that noticed the loss and each attempt.
    assert src.give_up_after_s == pytest.approx(31.5 + 8 * 2.5)
    assert open_source("http://127.0.0.1/x.mp4", io_timeout_s=3.0).io_timeout_s == 3.0


@pytest.mark.parametrize("kwargs", [
    pytest.param({"buffer_size": 0}, id="no-buffer"),
    pytest.param({"io_timeout_s": 0}, id="no-timeout"),
    pytest.param({"reconnect_attempts": -1}, id="negative-attempts"),
])
def test_bad_options_are_config_errors(kwargs) -> None:
    with pytest.raises(ConfigError):
        open_source("rtsp://127.0.0.1/clip", **kwargs)
