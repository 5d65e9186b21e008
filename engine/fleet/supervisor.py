"""The driver of a fleet on Ray: starts the engine workers, places streams on them, writes their
results, and re-places the streams of a worker that dies.

Fault tolerance is Ray's: every worker is an actor with ``max_restarts``, so when its process dies Ray
starts a new one (the models load again) on a node with the resources. The supervisor notices the loss
at its next poll, waits for the restart, and places the lost streams on the restarted worker (or, if
it does not come back within ``restart_timeout_s``, on any worker with room). A re-placed stream is a
new *session*: its tracker starts empty, so its track ids restart; a replayable source (file, synthetic)
resumes after the last frame the driver wrote, a live one from the present. Streams on other workers
are never touched. See ``engine.fleet.ray_workers`` for why the driver, not the worker, writes outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from engine.errors import ConfigError, StreamsegError
from engine.fleet.lines import LineSink
from engine.fleet.placement import SlotTable, StreamSpec, WorkerSpec
from engine.fleet.ray_workers import (
    Assignment,
    Drained,
    EngineWorker,
    RunStreams,
    WorkerIdent,
    require_ray,
)

log = logging.getLogger(__name__)


class StreamState(str, Enum):
    PENDING = "pending"  # placed, no result yet
    RUNNING = "running"
    RESTARTING = "restarting"  # its worker was lost; waiting for a worker and its first new result
    ENDED = "ended"  # the source ended, or the stream was stopped
    FAILED = "failed"  # its source, a sink or its placement failed: ``error`` says why
    REMOVED = "removed"


_DONE = (StreamState.ENDED, StreamState.FAILED, StreamState.REMOVED)


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """A stream as the control API lists it."""

    name: str
    state: StreamState
    worker: int | None  # index into the supervisor's workers
    session: int  # 0, then +1 each time it was placed again (its track ids restarted)
    frames: int  # results written to its outputs
    last_frame: int | None  # the newest frame index written
    error: str | None
    resumed_after_s: float | None  # its last re-placement: from the worker's loss to its first new result


class EventKind(str, Enum):
    WORKER_LOST = "worker_lost"
    WORKER_RESTARTED = "worker_restarted"
    PLACED = "placed"
    RESUMED = "resumed"
    ENDED = "ended"
    FAILED = "failed"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class FleetEvent:
    kind: EventKind
    stream: str | None
    worker: int | None
    session: int
    time: float  # the supervisor's clock
    message: str


@dataclass(eq=False, slots=True)
class _Stream:
    spec: StreamSpec
    sinks: list[LineSink]
    state: StreamState = StreamState.PENDING
    worker: int | None = None
    session: int = 0
    frames: int = 0
    last_frame: int | None = None
    error: str | None = None
    lost_at: float | None = None
    resumed_after_s: float | None = None
    sinks_open: bool = True


@dataclass(eq=False, slots=True)
class _Worker:
    spec: WorkerSpec
    handle: Any
    ident: WorkerIdent | None = None
    up: bool = True
    lost_at: float | None = None
    permanent: bool = False  # Ray will not restart it (restarts used up)
    orphans: list[str] = field(default_factory=list)  # its streams, waiting to be placed again
    drain_ref: Any = None
    ping_ref: Any = None
    next_ping: float = 0.0


class RaySupervisor:
    """Runs ``streams`` on ``workers`` (see the module docstring). Connect first (``ray_workers.connect``).

    Args:
        streams: the fleet's streams; names must be unique.
        workers: one actor per entry, placed by Ray on a node with its ``num_cpus`` / ``num_gpus``.
        run_streams: what runs a group of streams inside a worker (``ray_workers.RunStreams``).
        load_models: called once in each worker process; its value goes to ``run_streams``.
        sinks_for: the driver-side outputs of a stream, made when the stream is first placed.
        max_restarts: Ray restarts each worker this many times; after that its streams move elsewhere.
        restart_timeout_s: a worker not back after this long loses its streams to other workers.
        start_timeout_s: every worker must be running after this long, or ``start`` fails.
        on_event: called with every ``FleetEvent`` (they are also logged and kept in ``events``).
    """

    def __init__(self, streams: Sequence[StreamSpec], *, workers: Sequence[WorkerSpec], run_streams: RunStreams,
                 load_models: Callable[[], Any] | None = None,
                 sinks_for: Callable[[StreamSpec], list[LineSink]] = lambda spec: [], max_restarts: int = 3,
                 restart_timeout_s: float = 60.0, start_timeout_s: float = 120.0, drain_wait_s: float = 0.2,
                 queue_limit: int = 512, on_event: Callable[[FleetEvent], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        names = [s.name for s in streams]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"stream names must be unique; {', '.join(duplicates)} appear more than once")
        self._slots = SlotTable(workers)
        self._worker_specs = tuple(workers)
        self._initial = list(streams)
        self._run_streams, self._load_models, self._sinks_for = run_streams, load_models, sinks_for
        self.max_restarts, self.restart_timeout_s, self.start_timeout_s = max_restarts, restart_timeout_s, start_timeout_s
        self.drain_wait_s, self.queue_limit = drain_wait_s, queue_limit
        self.on_event, self.clock = on_event, clock
        self.events: deque[FleetEvent] = deque(maxlen=1000)
        self._streams: dict[str, _Stream] = {}
        self._workers: list[_Worker] = []
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.RLock()
        self._ray: Any = None

    # ---- public, thread-safe ------------------------------------------------------------------
    def run(self) -> list[StreamStatus]:
        """Start, run until every stream has ended, failed or been removed, shut the workers down."""
        self.start()
        try:
            while not self.done():
                self.step()
        finally:
            self.close()
        return self.status()

    def status(self) -> list[StreamStatus]:
        with self._lock:
            return [StreamStatus(name=s.spec.name, state=s.state, worker=s.worker, session=s.session,
                                 frames=s.frames, last_frame=s.last_frame, error=s.error,
                                 resumed_after_s=s.resumed_after_s) for s in self._streams.values()]

    def worker_idents(self) -> list[WorkerIdent | None]:
        with self._lock:
            return [w.ident if w.up else None for w in self._workers]

    def done(self) -> bool:
        with self._lock:
            return self._commands.empty() and all(s.state in _DONE for s in self._streams.values())

    def add(self, spec: StreamSpec) -> None:
        """Place and start one more stream (from any thread); a duplicate name is refused at once."""
        with self._lock:
            if spec.name in self._streams and self._streams[spec.name].state not in _DONE:
                raise ConfigError(f"a stream named {spec.name} is already running; remove it first or rename")
        self._commands.put(lambda: self._place_new([spec]))

    def remove(self, name: str) -> None:
        """Stop one stream (from any thread); its outputs are closed whole."""
        with self._lock:
            if name not in self._streams:
                raise ConfigError(f"no stream named {name}; the streams are {sorted(self._streams)}")
        self._commands.put(lambda: self._stop_stream(name, StreamState.REMOVED))

    def update(self, name: str, options: object) -> None:
        """New options for a stream (from any thread): sent to its worker, and kept for its re-placement."""
        with self._lock:
            if name not in self._streams:
                raise ConfigError(f"no stream named {name}; the streams are {sorted(self._streams)}")
        self._commands.put(lambda: self._update(name, options))

    def _update(self, name: str, options: object) -> None:
        stream = self._streams[name]
        stream.spec = dataclasses.replace(stream.spec, options=options)
        if stream.worker is not None and self._workers[stream.worker].up and stream.state not in _DONE:
            self._workers[stream.worker].handle.configure.remote(name, options)

    def stop_all(self) -> None:
        """Drain: stop every stream; ``run`` then returns."""
        self._commands.put(lambda: [self._stop_stream(n, StreamState.ENDED) for n in list(self._streams)])

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the workers, wait until each runs, place the initial streams.

        Raises:
            ConfigError: not connected to Ray; a worker cannot be placed (the cluster lacks its
                resources) or fails while loading its models.
        """
        ray = self._ray = require_ray()
        if not ray.is_initialized():
            raise ConfigError("not connected to a Ray cluster; call engine.fleet.ray_workers.connect(ADDRESS) first")
        actor = ray.remote(EngineWorker)
        for spec in self._worker_specs:
            handle = actor.options(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, max_restarts=self.max_restarts,
                                   max_task_retries=0, max_concurrency=8).remote(
                self._load_models, self._run_streams, queue_limit=self.queue_limit)
            self._workers.append(_Worker(spec=spec, handle=handle))
        refs = [w.handle.ident.remote() for w in self._workers]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.start_timeout_s)
        for k, (worker, ref) in enumerate(zip(self._workers, refs)):
            if ref not in ready:
                self.close()
                raise ConfigError(f"worker {k} ({worker.spec.num_cpus:g} CPU, {worker.spec.num_gpus:g} GPU) did not "
                                  f"start within {self.start_timeout_s:.0f} s: no node has its resources free; add "
                                  f"nodes or lower the workers' num_cpus/num_gpus")
            try:
                worker.ident = ray.get(ref)
            except ray.exceptions.RayError as exc:
                self.close()
                raise ConfigError(f"worker {k} failed while starting: {_first_line(exc)}") from None
        with self._lock:
            self._place_new(self._initial)

    def step(self, timeout_s: float = 0.2) -> None:
        """One round: apply queued commands, take whatever workers have ready, look after lost workers."""
        ray = self._ray
        while not self._commands.empty():
            with self._lock:
                self._commands.get()()
        refs = {}
        for k, w in enumerate(self._workers):
            for ref in (w.drain_ref, w.ping_ref):
                if ref is not None:
                    refs[ref] = k
        if refs:
            ready, rest = ray.wait(list(refs), num_returns=1, timeout=timeout_s)
            if ready and rest:
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        else:
            ready = []
            time.sleep(timeout_s)
        with self._lock:
            for ref in ready:
                worker = self._workers[refs[ref]]
                if ref is worker.drain_ref:
                    self._on_drained(refs[ref], ref)
                elif ref is worker.ping_ref:
                    self._on_ping(refs[ref], ref)
            self._look_after_lost_workers()

    def close(self) -> None:
        """Stop every worker (no restart) and close every output still open."""
        ray = self._ray
        for w in self._workers:
            try:
                ray.kill(w.handle, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - already gone: nothing to stop
                log.debug("worker already gone: %s", exc)
        with self._lock:
            for s in self._streams.values():
                self._close_sinks(s)

    # ---- placement ----------------------------------------------------------------------------
    def _place_new(self, specs: Sequence[StreamSpec]) -> None:
        groups: dict[int, list[Assignment]] = {}
        for spec in specs:
            try:
                sinks = self._sinks_for(spec)
            except StreamsegError as exc:
                self._streams[spec.name] = _Stream(spec=spec, sinks=[], state=StreamState.FAILED, error=str(exc))
                self._event(EventKind.FAILED, spec.name, None, 0, f"stream {spec.name} failed: {exc}")
                continue
            previous = self._streams.get(spec.name)
            if previous is not None and previous.state not in _DONE:
                log.error("stream %s is already running; not added twice", spec.name)
                continue
            session = previous.session + 1 if previous is not None else 0
            stream = self._streams[spec.name] = _Stream(spec=spec, sinks=sinks, session=session)
            self._assign(stream, groups, prefer=None)
        self._start_groups(groups)

    def _assign(self, stream: _Stream, groups: dict[int, list[Assignment]], *, prefer: int | None) -> None:
        down = [k for k, w in enumerate(self._workers) if not w.up]
        try:
            worker = self._slots.assign(stream.spec, exclude=down, prefer=prefer)
        except ConfigError as exc:
            self._fail(stream, str(exc))
            return
        stream.worker = worker
        groups.setdefault(worker, []).append(Assignment(stream=stream.spec, session=stream.session,
                                                        resume_after=stream.last_frame))
        self._event(EventKind.PLACED, stream.spec.name, worker, stream.session,
                    f"stream {stream.spec.name} placed on worker {worker} (session {stream.session})")

    def _start_groups(self, groups: dict[int, list[Assignment]]) -> None:
        for worker, assignments in groups.items():
            w = self._workers[worker]
            w.handle.start.remote(assignments)
            if w.drain_ref is None:
                w.drain_ref = w.handle.drain.remote(self.drain_wait_s)

    def _replace(self, names: list[str], *, prefer: int | None) -> None:
        groups: dict[int, list[Assignment]] = {}
        for name in names:
            stream = self._streams[name]
            if stream.state is not StreamState.RESTARTING:
                continue
            stream.session += 1
            self._assign(stream, groups, prefer=prefer)
        self._start_groups(groups)

    # ---- results ------------------------------------------------------------------------------
    def _on_drained(self, k: int, ref: Any) -> None:
        worker = self._workers[k]
        worker.drain_ref = None
        try:
            drained: Drained = self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:
            self._lose(k, exc)
            return
        for result in drained.results:
            stream = self._streams.get(result.stream)
            if stream is None or stream.session != result.session or stream.state in _DONE:
                continue  # a stream stopped here, or an older session's last words
            if stream.state is not StreamState.RUNNING:
                self._first_result(stream, k, result.frame)
            try:
                for sink in stream.sinks:
                    sink.write_line(result.line)
            except StreamsegError as exc:
                self._fail(stream, str(exc))
                worker.handle.stop.remote([stream.spec.name])
                continue
            stream.frames += 1
            stream.last_frame = result.frame
        for end in drained.ended:
            stream = self._streams.get(end.stream)
            if stream is None or stream.session != end.session or stream.state in _DONE:
                continue
            if end.error is None:
                self._finish(stream, StreamState.ENDED, f"stream {end.stream} ended after {stream.frames} results")
            else:
                self._fail(stream, end.error)
        if any(s.worker == k and s.state not in _DONE for s in self._streams.values()):
            worker.drain_ref = worker.handle.drain.remote(self.drain_wait_s)

    def _first_result(self, stream: _Stream, worker: int, frame: int) -> None:
        if stream.state is StreamState.RESTARTING and stream.lost_at is not None:
            stream.resumed_after_s = self.clock() - stream.lost_at
            self._event(EventKind.RESUMED, stream.spec.name, worker, stream.session,
                        f"stream {stream.spec.name} resumed on worker {worker} {stream.resumed_after_s:.1f} s after "
                        f"its worker was lost, at frame {frame}; its track ids restart (session {stream.session})")
        stream.state = StreamState.RUNNING

    # ---- lost workers -------------------------------------------------------------------------
    def _lose(self, k: int, exc: BaseException) -> None:
        worker = self._workers[k]
        if not worker.up:
            return
        now = self.clock()
        worker.up, worker.lost_at, worker.drain_ref = False, now, None
        worker.permanent = isinstance(exc, self._ray.exceptions.ActorDiedError)
        names = [n for n in self._slots.streams_on(k) if self._streams[n].state not in _DONE]
        for name in self._slots.streams_on(k):
            self._slots.release(name)
        for name in names:
            stream = self._streams[name]
            stream.state, stream.lost_at, stream.worker = StreamState.RESTARTING, now, None
        worker.orphans = names
        pid = worker.ident.pid if worker.ident else "?"
        self._event(EventKind.WORKER_LOST, None, k, 0,
                    f"worker {k} (pid {pid}) was lost: {_first_line(exc)}; its streams {names} "
                    + ("move to other workers" if worker.permanent else "wait for Ray to restart it"))
        if worker.permanent:
            self._move_orphans(k)

    def _on_ping(self, k: int, ref: Any) -> None:
        worker = self._workers[k]
        worker.ping_ref = None
        errors = self._ray.exceptions
        try:
            ident: WorkerIdent = self._ray.get(ref)
        except errors.ActorDiedError:
            worker.permanent = True
            self._move_orphans(k)
            return
        except errors.RayActorError:  # still restarting
            worker.next_ping = self.clock() + 0.2
            return
        restarted = worker.ident is None or ident.incarnation != worker.ident.incarnation
        worker.ident, worker.up = ident, True
        orphans, worker.orphans = worker.orphans, []
        if not restarted:  # only unreachable for a moment: its streams never stopped running there
            self._restore(orphans, k)
            return
        self._event(EventKind.WORKER_RESTARTED, None, k, 0,
                    f"worker {k} is back (pid {ident.pid}) {self.clock() - worker.lost_at:.1f} s after it was lost")
        self._replace(orphans, prefer=k)

    def _restore(self, names: list[str], k: int) -> None:
        for name in names:
            stream = self._streams[name]
            if stream.state is StreamState.RESTARTING:
                self._slots.assign(stream.spec, prefer=k)
                stream.worker, stream.state, stream.lost_at = k, StreamState.RUNNING, None
        if self._workers[k].drain_ref is None:
            self._workers[k].drain_ref = self._workers[k].handle.drain.remote(self.drain_wait_s)

    def _look_after_lost_workers(self) -> None:
        now = self.clock()
        for k, worker in enumerate(self._workers):
            if worker.up:
                continue
            if worker.orphans and now - worker.lost_at > self.restart_timeout_s:
                self._move_orphans(k)
            if not worker.permanent and worker.ping_ref is None and now >= worker.next_ping:
                worker.ping_ref = worker.handle.ident.remote()

    def _move_orphans(self, k: int) -> None:
        orphans, self._workers[k].orphans = self._workers[k].orphans, []
        self._replace(orphans, prefer=None)

    # ---- endings ------------------------------------------------------------------------------
    def _stop_stream(self, name: str, state: StreamState) -> None:
        stream = self._streams.get(name)
        if stream is None or stream.state in _DONE:
            return
        if stream.worker is not None and self._workers[stream.worker].up:
            self._workers[stream.worker].handle.stop.remote([name])
        kind = EventKind.REMOVED if state is StreamState.REMOVED else EventKind.ENDED
        self._finish(stream, state, f"stream {name} {'removed' if kind is EventKind.REMOVED else 'stopped'} after "
                                    f"{stream.frames} results", kind=kind)

    def _fail(self, stream: _Stream, error: str) -> None:
        stream.error = error
        self._finish(stream, StreamState.FAILED, f"stream {stream.spec.name} failed: {error}", kind=EventKind.FAILED)

    def _finish(self, stream: _Stream, state: StreamState, message: str, *, kind: EventKind = EventKind.ENDED) -> None:
        stream.state = state
        self._slots.release(stream.spec.name)
        for worker in self._workers:
            if stream.spec.name in worker.orphans:
                worker.orphans.remove(stream.spec.name)
        self._close_sinks(stream)
        self._event(kind, stream.spec.name, stream.worker, stream.session, message)

    def _close_sinks(self, stream: _Stream) -> None:
        if not stream.sinks_open:
            return
        stream.sinks_open = False
        for sink in stream.sinks:
            try:
                sink.close()
            except StreamsegError as exc:
                stream.error = stream.error or str(exc)
                log.error("stream %s: %s", stream.spec.name, exc)

    def _event(self, kind: EventKind, stream: str | None, worker: int | None, session: int, message: str) -> None:
        event = FleetEvent(kind=kind, stream=stream, worker=worker, session=session, time=self.clock(), message=message)
        self.events.append(event)
        level = logging.WARNING if kind in (EventKind.WORKER_LOST, EventKind.FAILED) else logging.INFO
        log.log(level, "%s", message)
        if self.on_event is not None:
            self.on_event(event)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
