"""The control API of ``streamseg serve``: JSON over HTTP, to change the fleet without a restart.

==========================  ===========================================  ==================================
request                     body                                         answers
==========================  ===========================================  ==================================
GET /streams                                                             200 {"streams": [STREAM, ...]}
GET /streams/NAME                                                        200 STREAM; 404
POST /streams               a [[streams]] table as JSON                  201 STREAM; 400 bad config; 409
                            ({"name": "cam3", "source": "...", ...})     a stream of that name runs
DELETE /streams/NAME                                                     200 STREAM (removed); 404
PUT /streams/NAME/budget    {"budget_ms": 80} ({"budget_ms": null}:      200 STREAM; 400; 404
                            no budget, back to full quality)
POST /drain                                                              202: every stream stops, its
                                                                         outputs are closed whole, and
                                                                         ``serve`` exits
==========================  ===========================================  ==================================

STREAM is ``StreamView.as_record()``: name, state, session, frames, fps, dropped, late, reconnects,
quality, budget_ms, error, worker. Every error answer is ``{"error": "one line saying why"}``.

Bound to loopback the API is open to this machine's users; bound beyond it, every request needs
``Authorization: Bearer TOKEN`` (the token file's content, compared in constant time), and the server
refuses to start without a token file. A request body is at most 64 KiB; at most ``max_connections``
requests are served at once and a silent client is cut off after ``request_timeout_s``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from engine.errors import ConfigError, NoSuchStream, StreamExists, StreamsegError
from engine.fleet.config import is_loopback
from engine.fleet.http import WsgiService

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class StreamView:
    """One stream as the control API lists it."""

    name: str
    state: str  # pending, running, restarting, ended, failed, removed
    session: int  # +1 each time the stream was placed again (its track ids restarted)
    frames: int  # results handed out
    fps: float  # results per second over the last few seconds
    dropped: int | None  # frames a live buffer dropped to stay current (None: not known here)
    late: int | None  # frames dropped for being older than the loop's budget
    reconnects: int | None  # reconnections of a lost source
    quality: int  # degradation level, 0 = full quality
    budget_ms: float | None
    error: str | None  # why it failed
    worker: int | None = None  # the Ray worker it runs on; None in one process

    def as_record(self) -> dict:
        return asdict(self)


class Fleet(Protocol):
    """What the control API drives: the single-process fleet or the Ray one."""

    def views(self) -> list[StreamView]: ...

    def add(self, table: Mapping[str, object]) -> StreamView:
        """Raises ConfigError (bad table, the source cannot open), StreamExists."""

    def remove(self, name: str) -> StreamView:
        """Raises NoSuchStream."""

    def set_budget(self, name: str, budget_ms: float | None) -> StreamView:
        """Raises NoSuchStream, ConfigError."""

    def drain(self) -> None: ...


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace dropped).

    Raises:
        ConfigError: the file cannot be read, or holds no token.
    """
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}; check [serve] token_file "
                          f"(or --token-file)") from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"the token file {path} must hold one token (a line without spaces); write one "
                          f"with e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))' > {path}`")
    return token


class ControlServer(WsgiService):
    """Serves the control API (module docstring) for ``fleet`` on ``host:port``.

    Raises:
        ConfigError: at construction, when ``host`` is not loopback and there is no ``token``; from
            ``start``, when the address cannot be bound.
    """

    def __init__(self, fleet: Fleet, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 max_connections: int = 8, request_timeout_s: float = 10.0) -> None:
        if token is None and not is_loopback(host):
            raise ConfigError(f"the control API on {host} can be reached from other machines and would let them "
                              f"add, remove and stop streams; give it a token ([serve] token_file or --token-file) "
                              f"or bind it to 127.0.0.1")
        super().__init__(self._app, what="the control API", option="[serve] control (or --control)", host=host,
                         port=port, max_connections=max_connections, request_timeout_s=request_timeout_s)
        self.fleet = fleet
        self._token = token.encode() if token is not None else None

    def _app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        parts = [p for p in environ.get("PATH_INFO", "/").split("/") if p]
        if not self._authorised(environ):
            return _json(start_response, "401 Unauthorized", {"error": "this API needs Authorization: Bearer TOKEN "
                                                                        "(the server's token file)"},
                         [("WWW-Authenticate", 'Bearer realm="streamseg"')])
        try:
            return self._route(method, parts, environ, start_response)
        except StreamExists as exc:
            return _json(start_response, "409 Conflict", {"error": str(exc)})
        except NoSuchStream as exc:
            return _json(start_response, "404 Not Found", {"error": str(exc)})
        except StreamsegError as exc:
            return _json(start_response, "400 Bad Request", {"error": str(exc)})
        except Exception as exc:  # a bug: answered, logged with its traceback, and the server goes on
            log.exception("control API: %s %s failed", method, environ.get("PATH_INFO"))
            return _json(start_response, "500 Internal Server Error",
                         {"error": f"{type(exc).__name__}: {exc} (a bug in streamseg; the server's log has more)"})

    def _route(self, method: str, parts: list[str], environ: dict, start_response: Callable) -> Iterable[bytes]:
        fleet = self.fleet
        if parts == ["streams"]:
            if method == "GET":
                return _json(start_response, "200 OK", {"streams": [v.as_record() for v in fleet.views()]})
            if method == "POST":
                return _json(start_response, "201 Created", fleet.add(_body(environ)).as_record())
            return _not_allowed(start_response, "GET, POST")
        if len(parts) == 2 and parts[0] == "streams":
            if method == "GET":
                view = next((v for v in fleet.views() if v.name == parts[1]), None)
                if view is None:
                    raise NoSuchStream(f"no stream named {parts[1]}")
                return _json(start_response, "200 OK", view.as_record())
            if method == "DELETE":
                return _json(start_response, "200 OK", fleet.remove(parts[1]).as_record())
            return _not_allowed(start_response, "GET, DELETE")
        if len(parts) == 3 and parts[0] == "streams" and parts[2] == "budget":
            if method != "PUT":
                return _not_allowed(start_response, "PUT")
            return _json(start_response, "200 OK", fleet.set_budget(parts[1], _budget(_body(environ))).as_record())
        if parts == ["drain"]:
            if method != "POST":
                return _not_allowed(start_response, "POST")
            fleet.drain()
            return _json(start_response, "202 Accepted", {"draining": True})
        return _json(start_response, "404 Not Found",
                     {"error": "no such endpoint; try GET /streams, POST /streams, DELETE /streams/NAME, "
                               "PUT /streams/NAME/budget, POST /drain"})

    def _authorised(self, environ: dict) -> bool:
        if self._token is None:
            return True
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)


def _body(environ: dict) -> dict:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if not 0 < length <= MAX_BODY:
        raise ConfigError(f"the request needs a JSON object body of at most {MAX_BODY} bytes (Content-Length "
                          f"{environ.get('CONTENT_LENGTH')!r})")
    try:
        body = json.loads(environ["wsgi.input"].read(length))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ConfigError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _budget(body: dict) -> float | None:
    if set(body) != {"budget_ms"}:
        raise ConfigError(f'the body must be {{"budget_ms": MS}} (or null for no budget), got keys {sorted(body)}')
    value = body["budget_ms"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"budget_ms must be a number of ms > 0 (or null), got {value!r}")
    return float(value)


def _json(start_response: Callable, status: str, body: object, headers: list | None = None) -> list[bytes]:
    data = (json.dumps(body) + "\n").encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                            *(headers or [])])
    return [data]


def _not_allowed(start_response: Callable, allow: str) -> list[bytes]:
    return _json(start_response, "405 Method Not Allowed", {"error": f"use {allow} here"}, [("Allow", allow)])
