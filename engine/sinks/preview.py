"""A live preview in the browser: MJPEG over HTTP, and click-to-track.

``GET /`` is the page (``engine.sinks.preview_page``): the stream, the latest frame's stats, the live
tracks, and prompts by clicking on the picture; ``GET /stream.mjpg`` the multipart JPEG stream,
``GET /frame.jpg`` the latest picture, ``GET /stats.json`` the latest numbers; ``POST /prompts``,
``DELETE /tracks/N`` and ``GET /tracks`` the prompt API (``engine.sinks.prompt_api``).
Viewers never slow the pipeline: each one is sent the newest picture when it is ready for one, and
frames are JPEG-encoded only while somebody is watching, at most ``max_fps`` a second (a monitor needs
no more, and an engine running faster than that would spend its cores encoding pictures nobody can
follow). Bound to 127.0.0.1 unless told otherwise; bound beyond loopback, the server needs a token, and
the API's writes carry it.

Connections are bounded in time and number, so no client can hold the server's threads: a connection
that sends no request, or stops reading its stream, is dropped after ``idle_timeout_s``; past
``max_connections`` open at once, a new one is answered 503 at once, without a thread; a viewer that
hangs up is noticed within a second even while no new frame comes.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from engine.errors import ConfigError, SinkError
from engine.prompts import PromptQueue
from engine.sinks.preview_page import PAGE
from engine.sinks.prompt_api import MAX_BODY_BYTES, ApiError, PromptApi, is_loopback
from engine.types import FrameResult

log = logging.getLogger(__name__)

_BOUNDARY = "streamsegframe"


class PreviewServer:
    """Serves the newest rendered frame to browsers, a bounded number at a time.

    Binding happens here, so a busy port fails before the run starts (and before any other output is
    written); the server runs on its own thread until ``close``.

    Args:
        host: interface to bind; 127.0.0.1 keeps the preview on this machine.
        port: TCP port; 0 picks a free one (see ``url``).
        quality: JPEG quality, 1-100.
        idle_timeout_s: a connection that sends nothing, or accepts no data, for this long is closed.
        max_connections: connections served at once (a browser tab holds one for the stream and one
            for its stats while polling); more are answered 503 and closed.
        max_fps: most pictures encoded and sent a second while somebody watches; None: every frame.
        prompts: the pipeline's prompt queue, which the page's clicks and the API feed; None: a
            pipeline without a tracker (the API refuses prompts).
        token: the bearer token the API's writes must carry (``engine.sinks.prompt_api``); required
            when ``host`` is not loopback.
        apply_timeout_s: how long an API request waits for the pipeline to apply it.

    Raises:
        SinkError: the address cannot be bound (port in use, no such interface), a bind beyond
            loopback without a token, or a bad setting.
    """

    wants_overlay = True

    def __init__(self, *, host: str = "127.0.0.1", port: int = 8080, quality: int = 80,
                 idle_timeout_s: float = 10.0, max_connections: int = 32,
                 max_fps: float | None = 30.0, prompts: PromptQueue | None = None, token: str | None = None,
                 apply_timeout_s: float = 10.0) -> None:
        if not is_loopback(host) and token is None:
            raise SinkError(f"preview on {host}: other machines could prompt the tracker; give a token "
                            "(--preview-token-file FILE or STREAMSEG_PREVIEW_TOKEN), or bind 127.0.0.1")
        try:
            self.api = PromptApi(prompts, token=token, apply_timeout_s=apply_timeout_s)
        except ConfigError as exc:
            raise SinkError(f"preview: {exc}") from None
        if idle_timeout_s <= 0 or max_connections < 1 or not 1 <= quality <= 100 or (max_fps or 1) <= 0:
            raise SinkError(f"preview: idle_timeout_s and max_fps must be > 0, max_connections >= 1 and "
                            f"quality in 1..100, got {idle_timeout_s}, {max_fps}, {max_connections} and "
                            f"{quality}")
        self.quality = quality
        self._min_interval_s = 1.0 / max_fps if max_fps else 0.0
        self._encoded_at = float("-inf")  # monotonic time of the last picture encoded
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._jpeg_frame: int | None = None  # the frame index of the picture in _jpeg
        self._seq = 0  # bumps with every new picture; viewers wait for a change
        self._stats: dict = {}
        self._viewers = 0
        self._closed = False
        handler = type("_Handler", (_PreviewHandler,), {"preview": self, "timeout": idle_timeout_s})
        try:
            self._server = _BoundedHTTPServer((host, port), handler, max_connections=max_connections)
        except OSError as exc:
            raise SinkError(f"cannot serve the preview on {host}:{port}: {exc.strerror}; "
                            "pick another --preview-port") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="preview", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def viewers(self) -> int:
        """Clients receiving the MJPEG stream now."""
        return self._viewers

    @property
    def connections(self) -> int:
        """Connections being served now (each holds one thread)."""
        return self._server.active_connections

    def write(self, result: FrameResult) -> None:
        self.api.book.update(result)
        stats = {"frame": result.frame.index, "instances": len(result.instances),
                 "total_ms": round(result.times.total, 1), "age_ms": round(result.age_ms, 1)}
        jpeg = None
        now = time.monotonic()
        if self._jpeg is None or (self._viewers and now - self._encoded_at >= self._min_interval_s):
            self._encoded_at = now
            image = (result.overlay if result.overlay is not None else result.frame.image).cpu().numpy()
            ok, buf = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            jpeg = buf.tobytes() if ok else None
        with self._cond:
            if jpeg is not None:
                self._jpeg, self._jpeg_frame = jpeg, result.frame.index
                self._seq += 1
            self._stats = {**stats, "picture_frame": self._jpeg_frame}
            self._cond.notify_all()

    def close(self) -> None:
        """Stop serving: the listening socket closes and every open connection is ended."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._server.end_connections()
        self._thread.join(timeout=5)

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

    def do_GET(self) -> None:  # http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE.encode())
        elif path == "/tracks":
            self._send_json(HTTPStatus.OK, self.preview.api.tracks())
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

    def do_POST(self) -> None:  # http.server's name
        self._write(lambda api: api.post_prompt(self._body(), self.headers.get("Content-Type") or "")
                    if self.path.split("?", 1)[0] == "/prompts" else _not_found(self.path))

    def do_DELETE(self) -> None:  # http.server's name
        path = self.path.split("?", 1)[0]
        self._write(lambda api: api.delete_track(path[len("/tracks/"):]) if path.startswith("/tracks/")
                    else _not_found(path))

    def _write(self, answer) -> None:
        """Answer a write request of the API: authorised first, then ``answer(api)``; a refusal is
        its status and one line of reason."""
        api = self.preview.api
        try:
            api.authorize(self.headers)
            status, body = answer(api)
        except ApiError as refused:
            self.close_connection = True  # an unread body may be left on the socket
            extra = {"WWW-Authenticate": "Bearer"} if refused.status == HTTPStatus.UNAUTHORIZED else {}
            self._send_json(refused.status, {"error": refused.reason}, extra)
            return
        self._send_json(status, body)

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "send the prompt with a Content-Length") from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a prompt is at most {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _send_json(self, status: HTTPStatus, body: dict, headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(body).encode() + b"\n", headers)

    def _send(self, status: HTTPStatus, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the client went away before reading the answer

    def _stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.preview._watch(+1)
        seen = -1
        try:
            while True:
                # A short wait, so a viewer that hung up is noticed even while no frame comes.
                seen, jpeg = self.preview._next(seen, timeout=1.0)
                if jpeg is None:
                    if self.preview._closed or _hung_up(self.connection):
                        return
                    continue
                # A viewer that stops reading blocks this write until the socket's timeout (OSError).
                self.wfile.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                 f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                self.wfile.flush()
        except OSError:
            return  # the viewer went away, reset the connection, or stopped reading
        finally:
            self.preview._watch(-1)

    def log_message(self, format: str, *args) -> None:  # http.server's signature
        log.debug("preview %s: " + format, self.address_string(), *args)


def _not_found(path: str):
    raise ApiError(HTTPStatus.NOT_FOUND, f"no {path}: the API is POST /prompts, DELETE /tracks/ID, GET /tracks")


_REFUSAL_BODY = b"too many preview viewers; retry later\n"
_REFUSAL = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 5\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY))


class _BoundedHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with at most ``max_connections`` handler threads.

    A connection past the limit is answered 503 from the accepting thread, without blocking it (the
    answer fits the socket's send buffer) and closed. Open connections are remembered so ``close``
    can end them rather than wait for their timeouts.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, *, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    @property
    def active_connections(self) -> int:
        with self._open_lock:
            return len(self._open)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse(request)
            return
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: give its slot back
            self._forget(request)
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request) -> None:
        with self._open_lock:
            if request in self._open:
                self._open.discard(request)
                self._slots.release()

    def end_connections(self) -> None:
        with self._open_lock:
            open_now = list(self._open)
        for request in open_now:
            try:
                request.shutdown(socket.SHUT_RDWR)  # the handler's next read or write fails and it ends
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        # A client's misbehaviour (reset, timeout) is not the engine's error: no traceback on stderr.
        log.debug("preview: connection from %s ended: %r", client_address, sys.exc_info()[1])


def _refuse(request: socket.socket) -> None:
    try:
        request.setblocking(False)
        try:
            request.recv(65536)  # read what the client sent, so closing does not reset the connection
        except BlockingIOError:
            pass
        request.send(_REFUSAL)
        request.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        request.close()


def _hung_up(conn: socket.socket) -> bool:
    """True when the peer has closed or reset ``conn`` (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
