"""Real servers on 127.0.0.1 for the source tests: GStreamer's RTSP server (``tests/rtsp_server.py``, a
subprocess under Debian's python), an RTSP server that answers and never sends media
(``silent_rtsp.py``), an HTTP server with byte ranges, and a TCP "black hole" that accepts and never
answers. Every wait here is bounded."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.sources import SyntheticScene, to_video
from tests.rtsp_server import RtspServer
from tests.sources.silent_rtsp import SilentRtspServer


@pytest.fixture(scope="session")
def resolution_change(tmp_path_factory) -> Path:
    """An MPEG-TS stream whose pictures go from 320x240 to 256x144 after 30 frames, as a camera's does
    when its resolution is changed while it streams (TS segments concatenate into one stream). Played
    from a file and served over RTSP."""
    out = tmp_path_factory.mktemp("res")
    big = to_video(SyntheticScene(seed=1, frames=30, width=320, height=240), out / "a.ts")
    small = to_video(SyntheticScene(seed=2, frames=30, width=256, height=144), out / "b.ts")
    both = out / "change.ts"
    both.write_bytes(big.read_bytes() + small.read_bytes())
    return both


@pytest.fixture
def rtsp_server(bedroom_clip: Path) -> Iterator[RtspServer]:
    """bedroom.mp4 (200 frames, 960x540, 30 fps) on a running RTSP server; stopped after the test."""
    with RtspServer(bedroom_clip) as server:
        yield server


@pytest.fixture
def rtsp_server_for() -> Iterator:
    """A factory: ``rtsp_server_for(clip)`` starts a server for another clip; all stop after the test."""
    servers: list[RtspServer] = []

    def start(clip: Path) -> RtspServer:
        servers.append(RtspServer(clip).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte-range support (``Range: bytes=a-b``), which FFmpeg's http reader
    uses to seek: the standard library's handler ignores ranges."""

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):
        spec = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not spec.startswith("bytes=") or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, _, last = spec.removeprefix("bytes=").partition("-")
        start = int(first) if first else max(0, size - int(last))
        end = min(int(last), size - 1) if first and last else size - 1
        if start >= size:
            self.send_error(416, "Range Not Satisfiable")
            return None
        f = path.open("rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return _Limited(f, end - start + 1)

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()


class _Limited:
    """A file object that reads at most ``n`` bytes, for copyfile() of a range."""

    def __init__(self, f, n: int) -> None:
        self._f, self._left = f, n

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._f.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()


class HttpServer:
    """Serves ``root`` on 127.0.0.1; ``url(name)`` gives a file's URL."""

    def __init__(self, root: Path, *, ranges: bool) -> None:
        handler = _RangeHandler if ranges else http.server.SimpleHTTPRequestHandler
        quiet = type("Quiet", (handler,), {"log_message": lambda *a: None})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                       functools.partial(quiet, directory=str(root)))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def http_server(media_dir: Path) -> Iterator[HttpServer]:
    """tests/media over HTTP with byte-range support, as real web servers do."""
    server = HttpServer(media_dir, ranges=True)
    yield server
    server.close()


@pytest.fixture(scope="module")
def plain_http_server(media_dir: Path) -> Iterator[HttpServer]:
    """tests/media over Python's stock handler, which ignores byte ranges."""
    server = HttpServer(media_dir, ranges=False)
    yield server
    server.close()


@pytest.fixture(scope="module")
def black_hole() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a server that accepts connections and never answers: a hung host."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.fixture(scope="module")
def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_rtsp() -> Iterator:
    """A factory: ``silent_rtsp(sprop=..., port=...)`` starts an RTSP server that answers every request
    with 200 OK and an H.264 SDP and never sends media (tests/sources/silent_rtsp.py)."""
    servers: list[SilentRtspServer] = []

    def start(**kwargs) -> SilentRtspServer:
        servers.append(SilentRtspServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
