"""Real servers on 127.0.0.1 for the source tests: GStreamer's RTSP server (a subprocess under Debian's
python), an HTTP server with byte ranges, and a TCP "black hole" that accepts and never answers.
Every wait here is bounded."""

from __future__ import annotations

import functools
import http.server
import os
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, where python3-gi lives; not the project's virtualenv
SERVER_SCRIPT = Path(__file__).parent / "rtsp_server.py"
GSTREAMER_PACKAGES = ("gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
                      "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad")
_START_TIMEOUT_S = 15.0  # GStreamer's first start scans its plugins; later starts take ~0.2 s


@functools.cache
def _gstreamer_missing() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "missing = [e for e in ('qtdemux', 'tsdemux', 'h264parse', 'rtph264pay') "
             "if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing"
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "probing GStreamer took over 60 s"
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "the gi probe failed"
    return f"GStreamer elements missing: {done.stdout.strip()}" if done.stdout.strip() else None


class RtspServer:
    """GStreamer's RTSP server streaming one clip at rtsp://127.0.0.1:PORT/clip, as a camera would.

    ``stop()`` kills it the way a crash or a power cut would (the socket closes under the client);
    ``start()`` brings it back on the same port.
    """

    def __init__(self, clip: Path) -> None:
        self.clip = clip
        self.port = 0  # 0 until the first start picks a free one
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/clip"

    def start(self) -> RtspServer:
        missing = _gstreamer_missing()
        if missing:
            pytest.fail(f"the RTSP tests need GStreamer's RTSP server ({missing}); install it with "
                        f"`sudo apt-get install -y {GSTREAMER_PACKAGES}`", pytrace=False)
        assert self._proc is None, "already running"
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--clip", str(self.clip), "--port", str(self.port)]
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:  # the old process's port can take a moment to free after a kill
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = _read_line(self._proc, deadline)
            if line.startswith("READY "):
                self.port = int(line.split()[1])
                return self
            self.stop()
            if time.monotonic() > deadline or "cannot listen" not in line:
                raise RuntimeError(f"RTSP server did not start: {line or 'no answer'}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.communicate(timeout=10)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    """The server's first stdout line, or its stderr's last line if it exits first."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if sel.select(timeout=max(0.0, deadline - time.monotonic())):
            line = proc.stdout.readline().strip()
            if line:
                return line
    proc.kill()
    _, err = proc.communicate(timeout=10)
    return (err.strip().splitlines() or [""])[-1]


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

    def send_head(self):  # noqa: ANN201 - the base class's contract
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
