"""The preview's prompt API: users point at objects in the live view and the pipeline tracks them.

    POST   /prompts     {"points": [[x, y], ...], "labels": [1, 0, ...], "box": [x1, y1, x2, y2],
                         "id": N, "frame": N}                      -> 202 {"id": N}
    DELETE /tracks/N                                               -> 200 {"id": N}
    GET    /tracks                                                 -> 200 {"frame": N, "width": W, "height": H,
                                                                           "tracks": [{"id", "label", "origin",
                                                                                       "box", "visible"}]}

Coordinates are frame pixels (x right, y down), whatever size the page shows the picture at. A prompt
needs points (labels: 1 foreground, 0 background; all 1 when left out) or a box, or both; ``id`` refines a
tracked object, left out it starts a new one; ``frame`` is the index of the picture the user clicked on
(the prompt applies to the frame the pipeline processes next; the JSONL's ``prompt`` decision says which).

A request goes through the pipeline's ``PromptQueue`` and is answered once the pipeline has applied it
(``202`` with the object's id), or refused with a 4xx and one line ``{"error": reason}``: malformed JSON
or fields (400), a point or box outside the frame or a frame not yet shown (422), an id that is not
tracked (404), a full queue (429), a write without the bearer token where one is needed (401). A prompt
the pipeline does not apply within ``apply_timeout_s`` (the stream ended or stalled) is withdrawn: 503.
A refused prompt changes nothing; the stream goes on.

Writes need ``Content-Type: application/json`` (POST), which a browser never sends across origins
without asking the server first, and this server never agrees: another site open in the user's browser
cannot prompt. Without a token the server is on loopback, and writes must also name a loopback host
(``Host`` header), which a DNS-rebinding page cannot. With a token (required beyond loopback), writes
carry ``Authorization: Bearer TOKEN``, compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import threading
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http import HTTPStatus

from engine.errors import ConfigError, StreamsegError, UnknownTrackError
from engine.prompts import PromptQueue
from engine.types import Adopt, FrameResult, Origin, Reidentify, Retire, RetireReason, Spawn, UserPrompt

MAX_BODY_BYTES = 64 * 1024  # a prompt is a few dozen bytes; 64 points of two floats fit many times over
_PROMPT_KEYS = frozenset({"points", "labels", "box", "id", "frame"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


class ApiError(Exception):
    """A refused request: its status and the one-line reason the client is sent."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name, as bound or as a ``Host`` header without port) is this machine
    only."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_prompt(body: bytes) -> tuple[UserPrompt, int | None]:
    """The prompt of a ``POST /prompts`` body and the frame index it names (None if not given).

    Raises:
        ApiError: 400 naming the first thing wrong (not JSON, not an object, an unknown key, a field of
            the wrong type, non-finite numbers, labels not 0/1, neither points nor a box).
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"body is not JSON ({exc}); send {{\"points\": [[x, y]]}}") from None
    if not isinstance(data, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "body must be a JSON object like {\"points\": [[x, y]], \"labels\": [1]}")
    unknown = sorted(set(data) - _PROMPT_KEYS)
    if unknown:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown key(s) {', '.join(unknown)}; allowed: "
                                               f"{', '.join(sorted(_PROMPT_KEYS))}")
    points = _points(data.get("points", []))
    labels = data.get("labels")
    if labels is None:
        labels = [1] * len(points)
    if not isinstance(labels, list) or not all(_is_int(v) for v in labels):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"labels must be a list of 1 (foreground) or 0 (background), "
                                               f"got {labels!r}")
    box = data.get("box")
    if box is not None and (not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box)):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"box must be [x1, y1, x2, y2] in frame pixels, got {box!r}")
    obj_id, frame = data.get("id"), data.get("frame")
    for name, value in (("id", obj_id), ("frame", frame)):
        if value is not None and (not _is_int(value) or value < (1 if name == "id" else 0)):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer >= {1 if name == 'id' else 0}, "
                                                   f"got {value!r}")
    try:
        prompt = UserPrompt(obj_id=obj_id, box=None if box is None else tuple(float(v) for v in box),
                            points=points, labels=tuple(labels), refine=obj_id is not None)
    except ConfigError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, str(exc)) from None
    return prompt, frame


def _points(value) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 and all(map(_is_number, p))
                                              for p in value):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"points must be a list of [x, y] number pairs, got {value!r}")
    return tuple((float(x), float(y)) for x, y in value)


def _is_number(v) -> bool:  # NaN and infinity parse from JSON's NaN / Infinity; UserPrompt refuses them
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(slots=True)
class _Track:
    id: int
    origin: str
    label: str = ""
    box: list[float] | None = None
    visible: bool = False


class TrackBook:
    """The live tracks as the pipeline's results tell them (their decisions and instances): what
    ``GET /tracks`` lists. A track is live from the decision that started it (spawn, adoption, prompt)
    to the one that ended it (retirement); without decisions (a detector alone), the latest frame's
    instances are its tracks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracks: dict[int, _Track] = {}
        # Tracks a user removed whose removal no result has reported yet: a result of an earlier frame,
        # handed to the sinks after the removal was applied, must not list them again.
        self._ended: set[int] = set()
        self.frame: int | None = None
        self.size: tuple[int, int] | None = None  # (height, width) of the latest frame

    def update(self, result: FrameResult) -> None:
        with self._lock:
            self.frame, self.size = result.frame.index, (result.frame.height, result.frame.width)
            for d in result.decisions:
                if isinstance(d, (Spawn, Adopt)) and d.obj_id not in self._ended:
                    self._tracks.setdefault(d.obj_id, _Track(d.obj_id, d.origin.value))
                elif isinstance(d, UserPrompt) and d.obj_id is not None and d.obj_id not in self._ended:
                    self._tracks.setdefault(d.obj_id, _Track(d.obj_id, Origin.USER.value))
                elif isinstance(d, Reidentify):
                    old = self._tracks.pop(d.spawned_id, None)
                    self._tracks[d.obj_id] = _Track(d.obj_id, old.origin if old else Origin.DETECTOR.value)
                elif isinstance(d, Retire):
                    self._tracks.pop(d.obj_id, None)
                    self._ended.discard(d.obj_id)
            inst = result.instances
            seen = dict(zip(inst.ids.tolist(), zip(inst.labels, inst.boxes.tolist())))
            if not result.decisions and not any(i in self._tracks for i in seen):
                self._tracks = {i: _Track(i, Origin.DETECTOR.value) for i in seen if i not in self._ended}
            for track in self._tracks.values():
                track.visible = track.id in seen
                if track.visible:
                    track.label, box = seen[track.id]
                    track.box = [round(v, 1) for v in box]

    def started(self, obj_id: int) -> None:
        """A user's prompt was applied: its track is live now, before its first result arrives here."""
        with self._lock:
            self._tracks.setdefault(obj_id, _Track(obj_id, Origin.USER.value))

    def ended(self, obj_id: int) -> None:
        """A user's removal was applied: its track is gone now, whatever results still on their way say."""
        with self._lock:
            self._tracks.pop(obj_id, None)
            self._ended.add(obj_id)

    def snapshot(self) -> dict:
        with self._lock:
            size = self.size or (None, None)
            return {"frame": self.frame, "height": size[0], "width": size[1],
                    "tracks": [{"id": t.id, "label": t.label, "origin": t.origin, "box": t.box, "visible": t.visible}
                               for t in sorted(self._tracks.values(), key=lambda t: t.id)]}


class PromptApi:
    """What the preview's handler calls for the API's requests (see the module docstring).

    Args:
        prompts: the pipeline's prompt queue; None when the pipeline has no tracker to prompt (writes are
            refused with 409).
        token: the bearer token writes must carry; None: none (only allowed on loopback).
        apply_timeout_s: how long a request waits for the pipeline to apply it.
    """

    def __init__(self, prompts: PromptQueue | None, *, token: str | None = None,
                 apply_timeout_s: float = 10.0) -> None:
        if token is not None and not token.strip():
            raise ConfigError("the preview token is empty; put a long random string in the token file")
        self.prompts = prompts
        self._token = token.strip().encode() if token is not None else None
        self.apply_timeout_s = apply_timeout_s
        self.book = TrackBook()

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def authorize(self, headers) -> None:
        """ApiError unless a write request may go on (see the module docstring)."""
        if self._token is None:
            if not is_loopback(_host_of(headers.get("Host") or "")):
                raise ApiError(HTTPStatus.FORBIDDEN, f"Host {headers.get('Host')!r} is not this machine; open the "
                                                     "preview at http://127.0.0.1:PORT/")
            return
        given = headers.get("Authorization") or ""
        scheme, _, value = given.partition(" ")
        # compare_digest's time depends only on the lengths, not on where the two differ
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token):
            raise ApiError(HTTPStatus.UNAUTHORIZED, "this preview needs its token: send 'Authorization: Bearer "
                                                    "TOKEN' (the page asks for it)")

    def post_prompt(self, body: bytes, content_type: str) -> tuple[HTTPStatus, dict]:
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the prompt as Content-Type: application/json")
        queue = self._queue()
        prompt, seen = parse_prompt(body)
        book = self.book
        if book.size is not None:
            try:
                prompt.check_in_frame(*book.size)
            except ConfigError as exc:
                raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
        if seen is not None and (book.frame is None or seen > book.frame):
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, f"frame {seen} has not been shown yet (the newest is "
                                                            f"{book.frame}); send the frame the user clicked on")
        obj_id = self._wait(queue, prompt)
        book.started(obj_id)
        return HTTPStatus.ACCEPTED, {"id": obj_id}

    def delete_track(self, text: str) -> tuple[HTTPStatus, dict]:
        queue = self._queue()
        if not text.isdigit() or int(text) < 1:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"track id must be a positive integer, got {text!r}")
        obj_id = self._wait(queue, Retire(int(text), RetireReason.USER))
        self.book.ended(obj_id)
        return HTTPStatus.OK, {"id": obj_id}

    def tracks(self) -> dict:
        return self.book.snapshot()

    def _queue(self) -> PromptQueue:
        if self.prompts is None:
            raise ApiError(HTTPStatus.CONFLICT, "this pipeline has no tracker to prompt; run it with a tracker")
        return self.prompts

    def _wait(self, queue: PromptQueue, request) -> int:
        try:
            future: Future = queue.put(request)
        except ConfigError as exc:  # the queue is full
            raise ApiError(HTTPStatus.TOO_MANY_REQUESTS, str(exc)) from None
        try:
            return int(future.result(timeout=self.apply_timeout_s))
        except FutureTimeout:
            if future.cancel():
                raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, f"the pipeline applied nothing within "
                                                               f"{self.apply_timeout_s:g} s; is the stream still "
                                                               "running?") from None
            return int(future.result())  # being applied right now: its answer is a moment away
        except CancelledError:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "the prompt was withdrawn") from None
        except UnknownTrackError as exc:
            raise ApiError(HTTPStatus.NOT_FOUND, str(exc)) from None
        except StreamsegError as exc:
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None


def _host_of(header: str) -> str:
    """The host of a ``Host`` header, without its port: ``127.0.0.1:8080`` -> ``127.0.0.1``,
    ``[::1]:8080`` -> ``::1``."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header
