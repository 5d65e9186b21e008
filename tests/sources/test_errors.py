"""Bad input: each case ends in one clear ``SourceError`` line that names the input and says what to do,
raised when the source opens (before any output exists), within a bounded time.

Decisions this table pins down (see engine/sources/file.py):
- a still image is valid input (a one-frame video): tested in test_file.py, not here;
- damaged bytes inside a file are skipped and counted, truncation after the index is reported after
  the frames before the cut: both in test_file.py, since neither fails at open.
"""

from __future__ import annotations

import re
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engine.errors import SourceError
from engine.sources import open_source

MEDIA = Path(__file__).parents[1] / "media"


@dataclass
class Inputs:
    """What the cases build their input from."""

    tmp: Path
    http: object  # conftest.HttpServer
    free_port: int
    black_hole: str  # 127.0.0.1:PORT of a server that never answers

    def file(self, name: str, data: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, http_server, free_port: int, black_hole: str) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("bad"), http_server, free_port, black_hole)


def _audio_only(i: Inputs) -> str:
    path = i.tmp / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    return str(path)


def _unknown_codec(i: Inputs) -> str:
    """01_dog.mp4 with its video sample entry renamed from avc1 to a codec no FFmpeg knows."""
    data = bytearray((MEDIA / "01_dog.mp4").read_bytes())
    at = data.find(b"avc1", data.find(b"stsd"))
    data[at:at + 4] = b"zzzz"
    return i.file("unknown_codec.mp4", bytes(data))


def _index_last_cut(i: Inputs) -> str:
    data = (MEDIA / "bedroom.mp4").read_bytes()  # index (moov) at the end: cut, nothing is readable
    return i.file("cut.mp4", data[: len(data) // 2])


IO_TIMEOUT_S = 1.0

# (case id, input builder, error pattern after "INPUT: ")
CASES: list[tuple[str, Callable[[Inputs], str], str]] = [
    ("missing-file", lambda i: str(i.tmp / "nope.mp4"), r"no such file; check the path"),
    ("directory", lambda i: str(i.tmp), r"is a directory"),
    ("text-file", lambda i: i.file("notes.mp4", b"just some words\n" * 64), r"is a text file, not a video"),
    ("random-bytes", lambda i: i.file("noise.mp4", np.random.default_rng(1).bytes(50_000)),
     r"not a video file PyAV can read"),
    ("empty-file", lambda i: i.file("empty.mp4", b""), r"not a video file PyAV can read"),
    ("truncated-index-last", _index_last_cut, r"truncated or damaged mp4, its index \(moov atom\) is"),
    ("audio-only", _audio_only, r"has no video stream \(streams: audio\)"),
    ("unsupported-codec", _unknown_codec, r"its video codec cannot be decoded by this PyAV build"),
    ("bad-scheme", lambda i: "ftp://127.0.0.1/clip.mp4", r"unsupported scheme 'ftp://'"),
    ("url-without-host", lambda i: "rtsp://:8554/clip", r"malformed URL, it names no host"),
    ("url-bad-port", lambda i: "rtsp://127.0.0.1:99999/clip", r"malformed URL, its port"),
    ("http-without-host", lambda i: "http:///clip.mp4", r"malformed URL, it names no host"),
    ("empty", lambda i: "  ", r"pass a file path"),
    ("rtsp-refused", lambda i: f"rtsp://127.0.0.1:{i.free_port}/clip",
     r"cannot connect: connection refused; check the address and that the server is up"),
    ("http-refused", lambda i: f"http://127.0.0.1:{i.free_port}/clip.mp4",
     r"connection refused; check the URL"),
    ("http-404", lambda i: i.http.url("missing.mp4"), r"the server answered 404 Not Found; check the URL"),
    ("rtsp-hung-server", lambda i: f"rtsp://{i.black_hole}/clip", rf"no answer within {IO_TIMEOUT_S:g} s"),
    ("http-hung-server", lambda i: f"http://{i.black_hole}/clip.mp4",
     rf"no answer within {IO_TIMEOUT_S:g} s"),
    # A non-routable address: where nothing intercepts it, the connect times out; on sandboxes whose
    # network answers every address, the answer is not RTSP. Either way: one error, bounded time.
    ("rtsp-unreachable-host", lambda i: "rtsp://10.255.255.1:554/clip", r"cannot connect: "),
    ("camera-missing", lambda i: "/dev/video99", r"no such camera device; list cameras"),
    ("camera-not-v4l2", lambda i: "v4l2:///dev/null", r"not a V4L2 capture device"),
    ("camera-bad-option", lambda i: "v4l2:///dev/video0?zoom=2", r"bad camera option 'zoom=2'"),
]


@pytest.mark.parametrize(("make", "pattern"), [pytest.param(m, p, id=c) for c, m, p in CASES])
def test_bad_input_fails_at_open_with_one_clear_line(inputs: Inputs, make, pattern: str) -> None:
    uri = make(inputs)
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        src = open_source(uri, io_timeout_s=IO_TIMEOUT_S, reconnect_attempts=1)
        try:
            _ = src.info
        finally:
            src.close()
    message = str(err.value)
    assert message.startswith(uri.strip() or "empty source"), message
    assert "\n" not in message
    assert re.search(pattern, message), message
    # A hang guard, not a speed check: the slowest case waits out one I/O timeout (PyAV's and the
    # socket's both fire, so up to two), far below this.
    assert time.monotonic() - started < 10 * IO_TIMEOUT_S + 5
