"""Engine workers on Ray: each worker is one Ray actor that loads the models once and runs a set of
streams; results leave it as encoded JSONL lines for the driver to write (``engine.fleet.supervisor``).

Ray is optional (``pip install 'streamseg[ray]'``) and imported only when used: ``require_ray`` gives
the one-line error where it is missing, ``connect`` joins a cluster or says in one line why it cannot.

What runs the streams is pluggable: a ``RunStreams`` callable, given the worker's models, the
assignments and a ``WorkerContext``, runs those streams until they end, handing each result to
``ctx.emit``. The multi-stream processor is one; tests use a small double.

Why the driver writes the outputs: a stream's files and MQTT topics are named in the driver's config,
and worker nodes need not share its filesystem; a worker that dies (SIGKILL, node lost) can then never
leave a cut line or truncate a file when it restarts, because it never held the file; and a stream
moved to another worker keeps appending to the same writer. The cost is the lines crossing the network
(a few KB a frame with RLE masks); overlay video, which would cost MBs a frame, is not sent this way.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from engine.errors import ConfigError, StreamsegError
from engine.fleet.placement import StreamSpec

log = logging.getLogger(__name__)

RAY_INSTALL = "pip install 'streamseg[ray]'"


def require_ray() -> Any:
    """The ``ray`` module.

    Raises:
        ConfigError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed in this environment; install it with "
                          f"{RAY_INSTALL} (or run without --ray on this machine alone)") from None
    return ray


@dataclass(frozen=True, slots=True)
class Assignment:
    """A stream given to a worker."""

    stream: StreamSpec
    session: int  # 0 on first placement, +1 each time the stream is placed again: its track ids restart
    resume_after: int | None  # the last frame index the driver holds; a replayable source skips up to it


@dataclass(frozen=True, slots=True)
class EncodedResult:
    """One frame's result, encoded on the worker."""

    stream: str
    session: int  # ids are unique within one session of the stream only
    frame: int  # Frame.index
    line: bytes  # the JSONL line (engine.sinks.jsonl), without its newline


@dataclass(frozen=True, slots=True)
class StreamEnd:
    stream: str
    session: int
    error: str | None  # None: the source ended; otherwise the one-line reason it failed


@dataclass(frozen=True, slots=True)
class Drained:
    """What a worker hands the driver at one poll."""

    results: list[EncodedResult]
    ended: list[StreamEnd]


@dataclass(frozen=True, slots=True)
class WorkerIdent:
    pid: int
    incarnation: str  # new each time Ray (re)creates the actor
    node_id: str


class WorkerContext(Protocol):
    """What a ``RunStreams`` callable reports to, and asks, its worker."""

    def emit(self, stream: str, frame: int, line: bytes) -> None:
        """Hand over one encoded result; waits while the worker holds ``queue_limit`` undrained results
        (back-pressure, as a slow sink applies on one machine); returns at once for a stopped stream."""

    def stopping(self, stream: str) -> bool:
        """True once the stream should stop (removed, or the fleet drains)."""

    def end(self, stream: str, error: str | None = None) -> None:
        """The stream is done: its source ended (``error`` None) or failed (one line saying why)."""

    def options(self, stream: str) -> object:
        """The stream's options as last updated by the driver (``EngineWorker.configure``); at first its
        ``StreamSpec.options``."""


# models, the streams to run, the context -> returns when every stream has ended or was stopped
RunStreams = Callable[[Any, Sequence[Assignment], WorkerContext], None]


class EngineWorker:
    """One engine worker; the supervisor makes it a Ray actor (``ray.remote(EngineWorker)``) with
    ``max_restarts``, so Ray restarts it when its process dies, and calls it from the driver.

    Args:
        load_models: called once per actor process; its value is given to every ``run_streams`` call
            (one copy of the weights however many streams run here). None: no models.
        run_streams: runs a group of streams (module docstring); each ``start`` runs one group on a
            thread of its own, so streams placed later do not wait for the earlier ones.
        queue_limit: undrained results held before ``emit`` waits.
    """

    def __init__(self, load_models: Callable[[], Any] | None, run_streams: RunStreams, *,
                 queue_limit: int = 512) -> None:
        self.models = load_models() if load_models is not None else None
        self.incarnation = uuid.uuid4().hex
        self._run_streams = run_streams
        self._queue_limit = queue_limit
        self._cond = threading.Condition()
        self._results: deque[EncodedResult] = deque()
        self._ended: list[StreamEnd] = []
        self._sessions: dict[str, int] = {}  # running streams -> session
        self._stopping: set[str] = set()
        self._options: dict[str, object] = {}  # running streams -> their latest options

    def ident(self) -> WorkerIdent:
        node = ""
        try:
            import ray

            node = ray.get_runtime_context().get_node_id()
        except Exception as exc:  # noqa: BLE001 - outside Ray (tests of the class alone) there is no node
            log.debug("no Ray node id: %s", exc)
        return WorkerIdent(pid=os.getpid(), incarnation=self.incarnation, node_id=node)

    def start(self, assignments: list[Assignment]) -> None:
        with self._cond:
            for a in assignments:
                self._sessions[a.stream.name] = a.session
                self._options[a.stream.name] = a.stream.options
                self._stopping.discard(a.stream.name)
        threading.Thread(target=self._run_group, args=(assignments,), daemon=True,
                         name="streams:" + ",".join(a.stream.name for a in assignments)).start()

    def configure(self, stream: str, options: object) -> None:
        """New options for a running stream (its runner reads them through ``WorkerContext.options``)."""
        with self._cond:
            if stream in self._sessions:
                self._options[stream] = options

    def options(self, stream: str) -> object:
        return self._options.get(stream)

    def stop(self, streams: list[str]) -> None:
        with self._cond:
            self._stopping.update(s for s in streams if s in self._sessions)
            self._cond.notify_all()

    def drain(self, wait_s: float = 0.5, max_items: int = 1024) -> Drained:
        """Results and ends since the last call; waits up to ``wait_s`` for the first one."""
        with self._cond:
            self._cond.wait_for(lambda: self._results or self._ended, timeout=wait_s)
            results = [self._results.popleft() for _ in range(min(max_items, len(self._results)))]
            # A stream's end goes out only after its last result has.
            waiting = {r.stream for r in self._results}
            ended = [e for e in self._ended if e.stream not in waiting]
            self._ended = [e for e in self._ended if e.stream in waiting]
            self._cond.notify_all()
            return Drained(results=results, ended=ended)

    # ---- the WorkerContext side, on the group's thread ------------------------------------------
    def emit(self, stream: str, frame: int, line: bytes) -> None:
        with self._cond:
            self._cond.wait_for(lambda: len(self._results) < self._queue_limit or stream in self._stopping)
            if stream in self._stopping or stream not in self._sessions:
                return
            self._results.append(EncodedResult(stream=stream, session=self._sessions[stream], frame=frame, line=line))
            self._cond.notify_all()

    def stopping(self, stream: str) -> bool:
        return stream in self._stopping

    def end(self, stream: str, error: str | None = None) -> None:
        with self._cond:
            session = self._sessions.pop(stream, None)
            self._stopping.discard(stream)
            if session is not None:
                self._ended.append(StreamEnd(stream=stream, session=session, error=error))
                self._cond.notify_all()

    def _run_group(self, assignments: list[Assignment]) -> None:
        error = None
        try:
            self._run_streams(self.models, assignments, self)
        except StreamsegError as exc:
            error = str(exc)
        except Exception as exc:  # a bug in the runner ends its streams, not the worker
            log.exception("the streams %s failed", [a.stream.name for a in assignments])
            error = f"{type(exc).__name__}: {exc} (a bug in streamseg; the worker's log has the traceback)"
        for a in assignments:  # streams the runner left without an end, ended or failed with the group
            self.end(a.stream.name, error)


def _host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ConfigError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT); pass the address "
                          f"`ray start --head` printed, or --ray auto")
    return parts.hostname, port


def _check_answers(address: str, timeout_s: float) -> None:
    """Fail in one line, within ``timeout_s``, unless something at ``address`` speaks gRPC (Ray's
    protocol). Ray's own connect retries a silent address for minutes."""
    host, port = _host_port(address)
    started = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        why = "nothing listens there" if isinstance(exc, ConnectionRefusedError) else (
            f"no answer in {timeout_s:.0f} s" if isinstance(exc, TimeoutError) else exc.strerror or str(exc))
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {why}; start it with `ray start --head` "
                          f"or pass the address it printed") from None
    import grpc  # Ray's own dependency

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=max(0.5, timeout_s - (time.monotonic() - started)))
    except grpc.FutureTimeoutError:
        raise ConfigError(f"{address} accepts connections but does not answer as a Ray cluster; check the "
                          f"address (the head's GCS port, 6379 by default)") from None
    finally:
        channel.close()


def connect(address: str, *, timeout_s: float = 5.0, log_to_driver: bool = True, **init_options: Any) -> None:
    """Join the Ray cluster at ``address`` (``HOST:PORT``, ``ray://HOST:PORT``), or with ``"auto"`` the
    one this machine belongs to (``RAY_ADDRESS``, or the last ``ray start`` here), starting a private one
    when there is none. Does nothing when this process is already connected.

    Raises:
        ConfigError: Ray is missing; the address is malformed, refuses, stays silent for ``timeout_s``,
            or is not a Ray cluster: one line, within ``timeout_s``. A cluster that answers and then
            stalls while joining is given 60 s.
    """
    ray = require_ray()
    if ray.is_initialized():
        return
    target = None if address == "auto" else address
    if target is None:
        from ray._private.services import canonicalize_bootstrap_address  # how ray.init resolves "auto"

        known = canonicalize_bootstrap_address(None)
        if known is None:
            # A private cluster: Ray starts its processes with a parent-death signal, which Linux ties
            # to the starting *thread*, so they must be started on a thread that lives on (the caller's).
            try:
                ray.init(log_to_driver=log_to_driver, logging_level=logging.WARNING, **init_options)
            except Exception as exc:  # noqa: BLE001 - Ray's own start-up failures, as one line
                raise ConfigError(f"cannot start a local Ray cluster: {str(exc).splitlines()[0]}") from None
            return
        _check_answers(known, timeout_s)
    else:
        _check_answers(target, timeout_s)
    failure: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=target, log_to_driver=log_to_driver, logging_level=logging.WARNING, **init_options)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=init, name="ray-init", daemon=True)
    thread.start()
    # The address answered as gRPC, so this only bounds a cluster that stalls half-way (or, for "auto",
    # the start of a private one, ~5-20 s on a loaded 2-core machine).
    thread.join(timeout=60.0)
    if thread.is_alive():
        raise ConfigError(f"joining the Ray cluster at {address} did not finish in time; check that its head "
                          f"node is healthy (`ray status --address {address}`)")
    if failure:
        raise ConfigError(f"cannot join the Ray cluster at {address}: {str(failure[0]).splitlines()[0]}") from None
