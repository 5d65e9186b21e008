"""Official weights by name: the registry entries, and an explicit fetch against a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from functools import partial

import pytest

from engine.detect import DetectorConfig, load_detector
from engine.errors import DownloadError
from engine.weights import KNOWN_WEIGHTS, fetch


def test_every_yolov8_seg_scale_is_registered():
    from engine.detect.registry import load_known_weights

    load_known_weights()
    for scale in "nsmlx":
        entry = KNOWN_WEIGHTS[f"yolov8{scale}-seg"]
        assert entry.kind == "detector" and entry.filename == f"yolov8{scale}-seg.pt"
        assert entry.url == f"https://github.com/ultralytics/assets/releases/download/v8.4.0/yolov8{scale}-seg.pt"
        assert entry.sha256 is None  # no published digest could be confirmed (see engine/detect/yolo/weights.py)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory, spread_state):
    """A static HTTP server on 127.0.0.1 serving a real Ultralytics segmentation checkpoint."""
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("served")
    model = YOLO("yolov8n-seg.yaml")
    model.model.load_state_dict(spread_state)
    model.save(str(root / "yolov8n-seg.pt"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.mark.timeout(60)
def test_fetch_with_the_right_checksum_keeps_a_loadable_file(server, tmp_path):
    url, root = server
    digest = hashlib.sha256((root / "yolov8n-seg.pt").read_bytes()).hexdigest()
    dest = fetch(f"{url}/yolov8n-seg.pt", tmp_path / "yolov8n-seg.pt", sha256=digest, timeout=10,
                 progress=False)
    assert dest.read_bytes() == (root / "yolov8n-seg.pt").read_bytes()
    detector = load_detector(DetectorConfig(weights=str(dest), device="cpu"))
    assert len(detector.names) == 80 and not detector.random_weights


@pytest.mark.timeout(60)
def test_fetch_with_a_wrong_checksum_discards_the_download(server, tmp_path):
    url, _ = server
    dest = tmp_path / "yolov8n-seg.pt"
    with pytest.raises(DownloadError, match="checksum mismatch.*discarded"):
        fetch(f"{url}/yolov8n-seg.pt", dest, sha256="0" * 64, timeout=10, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part is left behind


@pytest.mark.timeout(30)
def test_fetch_from_a_refused_connection_fails_clearly(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago, with nothing listening now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot connect"):
        fetch(f"http://127.0.0.1:{port}/yolov8n-seg.pt", tmp_path / "w.pt", sha256=None, timeout=5,
              progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(30)
def test_fetch_of_a_missing_file_reports_the_http_status(server, tmp_path):
    url, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{url}/no-such-weights.pt", tmp_path / "w.pt", sha256=None, timeout=5, progress=False)
    assert list(tmp_path.iterdir()) == []
