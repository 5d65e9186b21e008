import json
import os
import shutil
import socket
import struct
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
import torch

from engine.errors import SinkError
from engine.sinks import PreviewServer
from engine.types import Frame, FrameResult, Instances, StageTimes


def _result(index: int, color: tuple[int, int, int]) -> FrameResult:
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    image[:, :] = color
    frame = Frame(image=torch.from_numpy(image), index=index, pts=None, capture_time=time.time())
    return FrameResult(frame=frame, instances=Instances.empty(120, 160), times=StageTimes(total=3.0),
                       age_ms=5.0)


@pytest.fixture
def preview():
    server = PreviewServer(port=0)
    yield server
    server.close()


def _read_parts(url: str, count: int, timeout: float = 10.0) -> list[bytes]:
    """The first ``count`` JPEG parts of a multipart MJPEG stream."""
    parts = []
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        while len(parts) < count:
            line = response.readline()
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                response.readline()  # blank line after the part headers
                parts.append(response.read(length))
    return parts


def test_binds_to_loopback_by_default(preview):
    assert preview.url.startswith("http://127.0.0.1:")


def test_serves_latest_frame_stats_and_page(preview):
    preview.write(_result(7, (0, 0, 255)))
    with urllib.request.urlopen(preview.url + "frame.jpg", timeout=5) as r:
        jpeg = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == (120, 160, 3) and jpeg[60, 80, 0] > 200  # blue in BGR: the RGB frame, not swapped
    with urllib.request.urlopen(preview.url + "stats.json", timeout=5) as r:
        assert json.load(r)["frame"] == 7
    with urllib.request.urlopen(preview.url, timeout=5) as r:
        assert b'src="/stream.mjpg"' in r.read()


def test_stream_sends_each_new_frame(preview):
    def feed():
        for i in range(40):
            preview.write(_result(i, (10 * (i % 20), 100, 100)))
            time.sleep(0.05)

    thread = threading.Thread(target=feed)
    thread.start()
    parts = _read_parts(preview.url + "stream.mjpg", 3)
    thread.join()
    assert len(parts) == 3 and all(p[:2] == b"\xff\xd8" for p in parts)  # JPEG start-of-image markers


def test_without_viewers_only_the_first_frame_is_encoded(preview, monkeypatch):
    calls = []
    real = cv2.imencode
    monkeypatch.setattr(cv2, "imencode", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    for i in range(10):
        preview.write(_result(i, (0, 0, 0)))
    assert len(calls) == 1  # kept for /frame.jpg; the rest skipped while nobody watches


def _wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _connect(server: PreviewServer) -> socket.socket:
    host, port = server._server.server_address[:2]
    return socket.create_connection((host, port), timeout=5)


def _reset(sock: socket.socket) -> None:
    """Close as a crashed browser or a dropped network does: RST, no orderly shutdown."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_watched_frames_are_encoded_at_most_max_fps(monkeypatch):
    """An engine faster than a monitor needs: 50 frames in about a second, a cap of 10 a second."""
    server = PreviewServer(port=0, max_fps=10)
    calls = []
    real = cv2.imencode
    monkeypatch.setattr(cv2, "imencode", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    try:
        server.write(_result(0, (0, 0, 0)))
        viewer = _connect(server)
        viewer.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        assert _wait_until(lambda: server.viewers == 1)
        calls.clear()
        started = time.monotonic()
        for i in range(50):
            server.write(_result(i + 1, (i, 0, 0)))
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        assert 1 <= len(calls) <= elapsed * 10 + 1
        viewer.close()
    finally:
        server.close()


def test_a_busy_port_fails_naming_the_port_and_the_option():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SinkError, match=f"127.0.0.1:{port}.*--preview-port"):
            PreviewServer(port=port)


def test_a_connection_that_never_sends_a_request_is_dropped_after_the_idle_timeout():
    server = PreviewServer(port=0, idle_timeout_s=0.5)
    try:
        silent = _connect(server)
        assert _wait_until(lambda: server.connections == 1)
        started = time.monotonic()
        assert silent.recv(1) == b""  # the server closed it
        assert time.monotonic() - started < 3.0
        assert _wait_until(lambda: server.connections == 0)
        silent.close()
    finally:
        server.close()


def test_connections_past_the_limit_are_refused_at_once_and_served_again_when_freed():
    server = PreviewServer(port=0, max_connections=2, idle_timeout_s=30)
    try:
        holders = [_connect(server) for _ in range(2)]  # idle: each holds a slot until its timeout
        assert _wait_until(lambda: server.connections == 2)
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + "stats.json", timeout=5)
        assert refused.value.code == 503 and time.monotonic() - started < 1.0
        for sock in holders:
            _reset(sock)
        assert _wait_until(lambda: server.connections == 0)
        with urllib.request.urlopen(server.url + "stats.json", timeout=5) as response:
            assert response.status == 200
    finally:
        server.close()


def test_viewers_that_vanish_abruptly_free_their_threads(preview):
    """Twenty MJPEG viewers reset their connections mid-stream, some while frames flow and some while
    none come: every handler thread ends, and no viewer is left counted."""
    threads_before = threading.active_count()
    preview.write(_result(0, (0, 0, 0)))
    viewers = []
    for _ in range(20):
        sock = _connect(preview)
        sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        viewers.append(sock)
    assert _wait_until(lambda: preview.viewers == 20)
    for i in range(5):
        preview.write(_result(i + 1, (i * 40, 0, 0)))
    for sock in viewers[:10]:
        _reset(sock)
    for i in range(5):
        preview.write(_result(i + 6, (0, i * 40, 0)))
    for sock in viewers[10:]:  # reset while no frame comes: noticed by the handler's hang-up check
        _reset(sock)
    assert _wait_until(lambda: preview.viewers == 0 and preview.connections == 0), \
        (preview.viewers, preview.connections)
    assert _wait_until(lambda: threading.active_count() <= threads_before)


def test_close_ends_open_connections(preview):
    viewer = _connect(preview)
    viewer.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
    assert _wait_until(lambda: preview.viewers == 1)
    preview.close()
    viewer.settimeout(5)
    received = b""
    while chunk := viewer.recv(65536):  # ends with EOF, not the 5 s timeout
        received += chunk
    assert received.startswith(b"HTTP/1.0 200")
    viewer.close()


@pytest.mark.skipif(os.environ.get("STREAMSEG_SKIP_BROWSER") == "1", reason="STREAMSEG_SKIP_BROWSER=1")
def test_a_real_browser_shows_the_stream(preview):
    """Headless Chromium loads the page; the <img> must decode the MJPEG stream and the stats line
    must update from /stats.json."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, ("Chromium is needed for this test: apt-get install chromium "
                                      "chromium-driver (scripts/install.sh --test does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    options.page_load_strategy = "eager"  # an MJPEG <img> never finishes loading; DOMContentLoaded is enough
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    browser.set_page_load_timeout(15)
    stop = time.monotonic() + 20
    try:
        preview.write(_result(0, (255, 0, 0)))
        browser.get(preview.url)
        width = text = None
        while time.monotonic() < stop:
            preview.write(_result(1, (255, 0, 0)))
            width = browser.execute_script("return document.getElementById('stream').naturalWidth")
            text = browser.execute_script("return document.getElementById('stats').textContent")
            if width == 160 and text.startswith("frame 1"):
                break
            time.sleep(0.1)
        assert width == 160, "the browser did not decode the MJPEG stream"
        assert text.startswith("frame 1"), text
    finally:
        browser.quit()
