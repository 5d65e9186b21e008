"""The explicit weights download, against a real HTTP server on 127.0.0.1."""

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.errors import DownloadError
from engine.weights import fetch

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: more than one read chunk
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    requests = 0

    def do_GET(self):  # noqa: N802
        type(self).requests += 1
        if self.path == "/weights.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/short.pt":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.requests = 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _refused_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights.pt"


def test_download_with_the_right_checksum_lands_in_place(server, tmp_path):
    dest = fetch(f"{server}/weights.pt", tmp_path / "w.pt", sha256=DIGEST, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "w.pt.part").exists()


def test_an_existing_file_with_the_right_checksum_is_not_downloaded_again(server, tmp_path):
    fetch(f"{server}/weights.pt", tmp_path / "w.pt", sha256=DIGEST, progress=False)
    fetch(f"{server}/weights.pt", tmp_path / "w.pt", sha256=DIGEST, progress=False)
    assert _Handler.requests == 1


def test_without_a_pinned_checksum_the_digest_is_printed_for_pinning(server, tmp_path, capsys):
    fetch(f"{server}/weights.pt", tmp_path / "w.pt", sha256=None, progress=False)
    assert f"--sha256 {DIGEST}" in capsys.readouterr().err


@pytest.mark.parametrize("path, sha, message", [
    ("/weights.pt", "0" * 64, "checksum mismatch"),  # tampered or wrong file: discarded
    ("/missing.pt", DIGEST, "HTTP 404"),
    ("/short.pt", DIGEST, "download"),  # connection closed early: "ended after" or "broke off"
])
def test_failed_downloads_leave_nothing_behind(server, tmp_path, path, sha, message):
    with pytest.raises(DownloadError, match=message):
        fetch(f"{server}{path}", tmp_path / "w.pt", sha256=sha, progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_names_the_url(tmp_path):
    url = _refused_url()
    with pytest.raises(DownloadError, match="cannot connect") as err:
        fetch(url, tmp_path / "w.pt", sha256=DIGEST, progress=False, timeout=5)
    assert url in str(err.value)
