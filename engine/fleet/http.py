"""The HTTP plumbing the fleet's endpoints share (``MetricsServer``, ``ControlServer``): a WSGI app on
the standard library's server, one thread per request, a bounded number at once, and a timeout for
clients that connect and say nothing."""

from __future__ import annotations

import errno
import functools
import logging
import socketserver
import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from engine.errors import ConfigError

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


class _BoundedServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request, at most ``max_connections`` at once; beyond that a connection is closed
    unanswered, so a flood of clients cannot pile up threads."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, address, handler, *, max_connections: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _QuietHandler(WSGIRequestHandler):
    timeout = 5.0  # seconds a client may take to send its request (per server: request_timeout_s)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s: " + format, self.server.server_address, *args)


class WsgiService:
    """``app`` served on ``host:port`` on a background thread (``start`` / ``close``, or ``with``).

    Args:
        what: names the service in errors ("metrics", "the control API").
        option: the setting a user changes when the address cannot be bound.
        port: 0 picks a free port (read ``.port`` after ``start``).
        max_connections: requests served at once.
        request_timeout_s: a client that sends nothing for this long is disconnected, freeing its slot.

    Raises:
        ConfigError: from ``start``, when the address cannot be bound (in use, not this machine's).
    """

    def __init__(self, app: WsgiApp, *, what: str, option: str, host: str = "127.0.0.1", port: int = 0,
                 max_connections: int = 8, request_timeout_s: float = 5.0) -> None:
        self.app, self.what, self.option = app, what, option
        self.host, self.port = host, port
        self.max_connections = max_connections
        self._handler = type("_Handler", (_QuietHandler,), {"timeout": request_timeout_s})
        self._server: _BoundedServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self):
        try:
            server = make_server(self.host, self.port, self.app, handler_class=self._handler,
                                 server_class=functools.partial(_BoundedServer, max_connections=self.max_connections))
        except OSError as exc:
            why = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise ConfigError(f"cannot serve {self.what} on {self.host}:{self.port}: {why}; choose another "
                              f"{self.option} (or port 0 for a free one)") from None
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"{self.what}:{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5.0)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def plain(start_response: Callable, status: str, body: str, headers: list | None = None) -> list[bytes]:
    """A text/plain answer."""
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))),
                            *(headers or [])])
    return [data]
