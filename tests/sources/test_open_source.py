"""``open_source`` picks the source kind and the buffering policy from the input's text."""

from __future__ import annotations

import math
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
    assert src.options() == {"rtsp_transport": "tcp", "timeout": "2500000", "allowed_media_types": "video",
                             "fpsprobesize": "0"}
    assert (src.reconnect_attempts, src.io_timeout_s) == (7, 2.5)
    assert open_source("http://127.0.0.1/x.mp4", io_timeout_s=3.0).io_timeout_s == 3.0


@pytest.mark.parametrize(("kwargs", "bound"), [
    # The read that noticed the loss (io), then per attempt the interval and up to three I/O waits.
    pytest.param({"io_timeout_s": 2.5, "reconnect_attempts": 7}, 2.5 + 7 * (1.0 + 3 * 2.5),
                 id="attempt-budget"),
    pytest.param({"io_timeout_s": 2.0, "give_up_s": 30.0}, 2.0 + 30.0 + 3 * 2.0, id="give-up-time"),
    pytest.param({"io_timeout_s": 1.0, "give_up_s": 30.0, "reconnect_attempts": 2}, 1.0 + 2 * (1.0 + 3.0),
                 id="the-smaller-bound-wins"),
    pytest.param({"io_timeout_s": 1.0, "give_up_s": None}, math.inf, id="never-give-up"),
    pytest.param({"io_timeout_s": 1.0, "reconnect_attempts": 0}, 1.0, id="no-reconnection"),
    pytest.param({}, 5.0 + 600.0 + 15.0, id="defaults"),
])
def test_give_up_after_bounds_an_outage(kwargs: dict, bound: float) -> None:
    for uri in ("rtsp://127.0.0.1/clip", "/dev/video0"):
        assert open_source(uri, **kwargs).give_up_after_s == pytest.approx(bound)


def test_a_source_that_never_gives_up_can_be_read_with_an_infinite_timeout() -> None:
    # The pipeline's stall timer is the source's give-up time plus a margin: infinite for never.
    src = open_source("synthetic:seed=1,frames=2,size=64x48,objects=1")
    with src:
        assert src.read(timeout=math.inf) is not None


@pytest.mark.parametrize(("kwargs", "pattern"), [
    pytest.param({"buffer_size": 0}, "buffer_size must be an integer >= 1", id="no-buffer"),
    pytest.param({"buffer_size": 1.5}, "buffer_size must be an integer", id="fractional-buffer"),
    pytest.param({"io_timeout_s": 0}, "io_timeout_s must be a number of seconds > 0", id="no-timeout"),
    pytest.param({"io_timeout_s": math.inf}, "io_timeout_s must be", id="infinite-timeout"),
    pytest.param({"io_timeout_s": math.nan}, "io_timeout_s must be", id="nan-timeout"),
    pytest.param({"reconnect_attempts": -1}, "reconnect_attempts must be an integer >= 0", id="negative-attempts"),
    pytest.param({"reconnect_attempts": 2.5}, "reconnect_attempts must be an integer", id="fractional-attempts"),
    pytest.param({"reconnect_attempts": True}, "reconnect_attempts must be an integer", id="bool-attempts"),
    pytest.param({"reconnect_interval_s": 0}, "reconnect_interval_s must be", id="zero-interval"),
    pytest.param({"reconnect_interval_s": -1.0}, "reconnect_interval_s must be", id="negative-interval"),
    pytest.param({"give_up_s": 0}, "give_up_s must be a number of seconds > 0, or None", id="zero-give-up"),
    pytest.param({"give_up_s": math.nan}, "give_up_s must be", id="nan-give-up"),
])
@pytest.mark.parametrize("uri", ["rtsp://127.0.0.1/clip", "clip.mp4"], ids=["rtsp", "file"])
def test_bad_options_are_config_errors_naming_the_option(uri: str, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        open_source(uri, **kwargs)


def test_infinite_give_up_is_never() -> None:
    assert open_source("rtsp://127.0.0.1/clip", give_up_s=math.inf).give_up_after_s == math.inf


@pytest.mark.parametrize("timeout", [0, -1.0, math.inf, math.nan, "5"], ids=["zero", "negative", "inf", "nan", "text"])
def test_an_http_source_built_directly_checks_its_timeout(timeout) -> None:
    from engine.sources import HttpSource

    with pytest.raises(ConfigError, match="io_timeout_s must be a number of seconds > 0"):
        HttpSource("http://127.0.0.1/x.mp4", io_timeout_s=timeout)
