"""A live preview in the browser: MJPEG over HTTP.

``GET /`` is a small page showing the stream and the latest frame's stats, ``GET /stream.mjpg`` the
multipart JPEG stream, ``GET /frame.jpg`` the latest picture, ``GET /stats.json`` the latest numbers.
Viewers never slow the pipeline: each one is sent the newest picture when it is ready for one, and
frames are JPEG-encoded only while somebody is watching. Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from engine.errors import SinkError
from engine.types import FrameResult

log = logging.getLogger(__name__)

_BOUNDARY = "streamsegframe"
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>streamseg preview</title>
<style>body{margin:0;background:#111;color:#ddd;font:14px monospace}img{display:block;max-width:100%}
#stats{padding:6px 10px}</style></head>
<body><img id="stream" src="/stream.mjpg" alt="streamseg live preview"><div id="stats">waiting for frames</div>
<script>
async function poll() {
  try {
    const s = await (await fetch('/stats.json', {cache: 'no-store'})).json();
    document.getElementById('stats').textContent =
      `frame ${s.frame}  instances ${s.instances}  total ${s.total_ms} ms  age ${s.age_ms} ms`;
  } catch (e) {}
  setTimeout(poll, 500);
}
poll();
</script></body></html>
"""


class PreviewServer:
    """Serves the newest rendered frame to any number of browsers.

    Args:
        host: interface to bind; 127.0.0.1 keeps the preview on this machine.
        port: TCP port; 0 picks a free one (see ``url``).
        quality: JPEG quality, 1-100.
    """

    wants_overlay = True

    def __init__(self, *, host: str = "127.0.0.1", port: int = 8080, quality: int = 80) -> None:
        self.quality = quality
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0  # bumps with every new picture; viewers wait for a change
        self._stats: dict = {}
        self._viewers = 0
        self._closed = False
        handler = type("_Handler", (_PreviewHandler,), {"preview": self})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise SinkError(f"cannot serve the preview on {host}:{port}: {exc.strerror}; "
                            "pick another --preview-port") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="preview", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def viewers(self) -> int:
        return self._viewers

    def write(self, result: FrameResult) -> None:
        stats = {"frame": result.frame.index, "instances": len(result.instances),
                 "total_ms": round(result.times.total, 1), "age_ms": round(result.age_ms, 1)}
        jpeg = None
        if self._viewers or self._jpeg is None:
            image = (result.overlay if result.overlay is not None else result.frame.image).cpu().numpy()
            ok, buf = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            jpeg = buf.tobytes() if ok else None
        with self._cond:
            self._stats = stats
            if jpeg is not None:
                self._jpeg = jpeg
                self._seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def _next(self, seen: int, timeout: float) -> tuple[int, bytes | None]:
        """Wait for a picture newer than ``seen``; (seq, jpeg), jpeg None when closed or timed out."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq != seen or self._closed, timeout)
            if self._closed or self._seq == seen:
                return seen, None
            return self._seq, self._jpeg

    def _snapshot(self) -> tuple[bytes | None, dict]:
        with self._cond:
            return self._jpeg, dict(self._stats)

    def _watch(self, delta: int) -> None:
        with self._cond:
            self._viewers += delta


class _PreviewHandler(BaseHTTPRequestHandler):
    preview: PreviewServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", _PAGE.encode())
        elif path == "/stats.json":
            self._send(HTTPStatus.OK, "application/json", json.dumps(self.preview._snapshot()[1]).encode())
        elif path == "/frame.jpg":
            jpeg = self.preview._snapshot()[0]
            if jpeg is None:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"no frame yet\n")
            else:
                self._send(HTTPStatus.OK, "image/jpeg", jpeg)
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")

    def _send(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.preview._watch(+1)
        seen = -1
        try:
            while True:
                seen, jpeg = self.preview._next(seen, timeout=5.0)
                if jpeg is None:
                    if self.preview._closed:
                        return
                    continue
                self.wfile.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                 f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return  # the viewer went away
        finally:
            self.preview._watch(-1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("preview %s: " + format, self.address_string(), *args)
