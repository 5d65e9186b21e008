"""The fleet in one process: every stream of a ``serve`` config through the multi-stream loop.

Streams whose network options agree (``engine.app.MODEL_OPTIONS``) share one loaded copy of the
networks and one ``MultiStreamPipeline`` on a thread of its own: one detector batch and one
image-encoder pass per tick for all of them. Streams join and leave while it runs (the control API),
each with its own outputs: its JSONL / video / preview, its MQTT topic, and its metrics.

On the loop's thread, each result feeds the stream's ``DegradeController``; a change of level is
applied to the stream before its next frame (the detector's cadence, the tracked-object cap), logged,
counted in the metrics, and carried by the stream's results (``FrameResult.quality``, the JSONL
``quality`` key). A stream that fails (its source cannot open or gives up, an output cannot be
written) ends alone, with its one-line error; the others go on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from engine.app import SharedModels, build_stream, load_models, model_key
from engine.errors import NoSuchStream, StreamExists, StreamsegError
from engine.fleet.config import ServeConfig, StreamConfig
from engine.fleet.control import StreamView
from engine.fleet.degrade import DegradeConfig, DegradeController, DegradeEvent, default_levels
from engine.fleet.metrics import FleetMetrics, MetricsSink
from engine.multistream import MultiStreamPipeline
from engine.options import RunOptions
from engine.processor import Stream
from engine.sinks.mqtt import MqttPublisher
from engine.types import FrameResult

log = logging.getLogger(__name__)

_DONE = ("ended", "failed", "removed")
_FPS_WINDOW_S = 3.0  # the API's frames per second: results over the last few seconds


@dataclass(eq=False, slots=True)
class _Served:
    config: StreamConfig
    session: int = 0
    state: str = "pending"
    stream: Stream | None = None
    pipeline: MultiStreamPipeline | None = None
    controller: DegradeController | None = None
    error: str | None = None
    frames: int = 0
    stats: tuple[int, int, int] = (0, 0, 0)  # dropped, late, reconnects of the latest result
    recent: deque = field(default_factory=lambda: deque(maxlen=512))  # monotonic times of recent results
    lock: threading.Lock = field(default_factory=threading.Lock)  # the controller: loop thread vs API
    closed: threading.Event = field(default_factory=threading.Event)  # its outputs are closed


class LocalFleet:
    """The streams of ``config`` in this process (see the module docstring).

    Args:
        config: the server's config; its streams start with ``start``.
        metrics: where every stream's results and degradation events are counted; None: nowhere.
        mqtt: the shared broker connection; streams with ``mqtt = true`` publish through it.
        on_event: a one-line message for the operator (a stream failed, ended, changed quality).
        clock: seconds, monotonic (the degradation controllers' clock).
        load: loads the networks of a group of streams (``engine.app.load_models``; tests pass doubles).
    """

    def __init__(self, config: ServeConfig, *, metrics: FleetMetrics | None = None,
                 mqtt: MqttPublisher | None = None, on_event: Callable[[str], None] = log.warning,
                 clock: Callable[[], float] = time.monotonic,
                 load: Callable[[RunOptions], SharedModels] = load_models) -> None:
        self.config = config
        self._load = load
        self.metrics, self.mqtt, self.on_event, self.clock = metrics, mqtt, on_event, clock
        self._models: dict[tuple, SharedModels] = {}
        self._loops: dict[tuple, MultiStreamPipeline] = {}
        self._threads: list[threading.Thread] = []
        self._streams: dict[str, _Served] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._draining = False
        self.started = False  # readiness: the configured streams have been started (or failed)

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start every configured stream; one that cannot start fails alone with its error line."""
        for stream in self.config.streams:
            try:
                self._start(stream)
            except StreamsegError:
                pass  # recorded as failed and reported by _start
        self.started = True

    def run(self) -> list[StreamView]:
        """Start, then wait until every stream is done (or the fleet drained); returns the final views."""
        self.start()
        self.wait()
        return self.views()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Until every stream is done, at least one having been started, or the fleet drained and its
        loops finished; True when that happened within ``timeout_s``."""
        with self._changed:
            done = self._changed.wait_for(self._finished, timeout_s)
        if done:
            for thread in list(self._threads):
                thread.join()
        return done

    def drain(self) -> None:
        """Stop every stream; their outputs are flushed and closed whole; ``wait`` then returns."""
        with self._lock:
            self._draining = True
            for loop in self._loops.values():
                loop.close()
            self._changed.notify_all()

    @property
    def draining(self) -> bool:
        return self._draining

    def _finished(self) -> bool:
        loops_done = all(loop.finished for loop in self._loops.values())
        streams_done = all(s.state in _DONE for s in self._streams.values())
        if self._draining:
            return loops_done
        return bool(self._streams) and streams_done and loops_done

    # ---- the control API's side ------------------------------------------------------------------
    def views(self) -> list[StreamView]:
        with self._lock:
            return [self._view(s) for s in self._streams.values()]

    def add(self, table: Mapping[str, object]) -> StreamView:
        config = self.config.stream(table, where="POST /streams")
        return self._start(config)

    def remove(self, name: str, *, timeout_s: float = 10.0) -> StreamView:
        """Stop a stream; returns once its outputs are closed whole (or after ``timeout_s``)."""
        with self._lock:
            served = self._get(name)
            if served.state in _DONE:
                return self._view(served)
            served.state = "removed"
            if served.pipeline is not None and served.stream is not None:
                served.pipeline.remove(served.stream)
            else:
                served.closed.set()
        served.closed.wait(timeout_s)
        if self.metrics is not None:
            self.metrics.remove_stream(name)
        self.on_event(f"stream {name} removed after {served.frames} results")
        return self._view(served)

    def set_budget(self, name: str, budget_ms: float | None) -> StreamView:
        with self._lock:
            served = self._get(name)
        DegradeConfig(budget_ms=budget_ms)  # checks the value
        with served.lock:
            served.config = dataclasses.replace(served.config, budget_ms=budget_ms)
            if served.controller is not None:
                self._apply(served, served.controller.set_budget(budget_ms))
        return self._view(served)

    # ---- starting a stream --------------------------------------------------------------------------
    def _start(self, config: StreamConfig) -> StreamView:
        with self._lock:
            if self._draining:
                raise StreamExists("the server is draining; it takes no new streams")
            old = self._streams.get(config.name)
            if old is not None and old.state not in _DONE:
                raise StreamExists(f"a stream named {config.name} is already {old.state}; remove it first "
                                   f"(DELETE /streams/{config.name}) or choose another name")
            served = _Served(config=config, session=old.session + 1 if old is not None else 0)
            self._streams[config.name] = served
        try:
            stream, models = self._open(served)
        except StreamsegError as exc:
            self._ended(served, exc)
            raise
        with self._lock:  # the loop may end the stream at once: it must be known before it joins
            served.stream, served.state = stream, "running"
            try:
                served.pipeline = self._join(config, models, stream)
            except BaseException as exc:
                stream.source.close()
                for sink in stream.sinks:
                    sink.close()
                self._ended(served, exc)
                raise
        return self._view(served)

    def _open(self, served: _Served) -> tuple[Stream, SharedModels]:
        config = served.config
        extra = [MetricsSink(self.metrics, config.name)] if self.metrics is not None else []
        if self.mqtt is not None and config.mqtt:
            extra.append(self.mqtt.sink(config.name))
        built = build_stream(config.options, lambda: self._models_for(config), extra_sinks=extra)
        stream, models = built.stream, built.models
        stream.session = served.session
        levels = default_levels(tracker=stream.tracker is not None, semantic=False)
        served.controller = DegradeController(
            config.name, dataclasses.replace(self.config.degrade, budget_ms=config.budget_ms, levels=levels),
            clock=self.clock)
        for line in built.notes:
            self.on_event(f"stream {config.name}: {line}")
        return stream, models

    def _models_for(self, config: StreamConfig) -> SharedModels:
        key = model_key(config.options)
        with self._lock:
            models = self._models.get(key)
        if models is None:  # loading takes seconds: outside the lock, so the API stays responsive
            models = self._load(config.options)
            if models.random_weights:
                self.on_event(f"RANDOM WEIGHTS: {', '.join(models.random_weights)}: the results MEAN NOTHING "
                              f"(they exercise the engine at its real cost); pass trained weights for real ones")
            for line in models.notes:
                self.on_event(line)
            with self._lock:
                models = self._models.setdefault(key, models)
        return models

    def _join(self, config: StreamConfig, models: SharedModels, stream: Stream) -> MultiStreamPipeline:
        key = model_key(config.options)
        with self._lock:
            loop = self._loops.get(key)
            if loop is not None:
                try:
                    loop.add(stream)
                    return loop
                except StreamsegError:
                    pass  # that loop has just finished: start a new one
            loop = MultiStreamPipeline([stream], shared=models.shared, device=models.device, on_end=self._on_end)
            self._loops[key] = loop
            thread = threading.Thread(target=self._run_loop, args=(loop,), daemon=True,
                                      name=f"streams:{config.name}")
            self._threads.append(thread)
            thread.start()
            return loop

    # ---- on a loop's thread ---------------------------------------------------------------------------
    def _run_loop(self, loop: MultiStreamPipeline) -> None:
        try:
            for result in loop:
                self._observe(self._served_by(loop.stream_of(result)), result)
        except Exception as exc:  # a failure of the shared stages ends this loop's streams
            log.exception("a stream loop failed")
            with self._lock:
                for served in self._streams.values():
                    if served.pipeline is loop and served.state not in _DONE:
                        self._ended(served, exc)
        finally:
            with self._changed:
                self._changed.notify_all()

    def _observe(self, served: _Served | None, result: FrameResult) -> None:
        if served is None:
            return
        now = time.monotonic()
        stats = result.stats
        with self._lock:
            served.frames += 1
            served.recent.append(now)
            served.stats = (stats.dropped, stats.late, stats.reconnects)
        if self.metrics is not None and self.mqtt is not None and served.config.mqtt:
            self.metrics.observe_sink(served.config.name, "mqtt", self.mqtt.stats(served.config.name))
        with served.lock:
            if served.controller is not None:
                self._apply(served, served.controller.observe(result.age_ms))

    def _apply(self, served: _Served, event: DegradeEvent | None) -> None:
        """A controller's decision, applied to the stream before its next frame."""
        if event is None:
            return
        if served.stream is not None:
            apply_quality(served.stream, served.config.options, event)
        if self.metrics is not None:
            self.metrics.observe_degradation(event)
        self.on_event(event.message())

    def _on_end(self, stream: Stream, error: StreamsegError | None) -> None:
        served = self._served_by(stream)
        if served is not None:
            self._ended(served, error)

    def _ended(self, served: _Served, error: BaseException | None) -> None:
        name = served.config.name
        with self._lock:
            served.closed.set()
            if served.state in ("ended", "failed"):
                return
            if served.state == "removed":
                self._changed.notify_all()
                return
            if error is None:
                served.state = "ended"
                self.on_event(f"stream {name} ended after {served.frames} results")
            else:
                served.state, served.error = "failed", str(error).splitlines()[0] if str(error) else repr(error)
                self.on_event(f"stream {name} failed: {served.error}")
            self._changed.notify_all()

    # ---- helpers --------------------------------------------------------------------------------
    def _served_by(self, stream: Stream) -> _Served | None:
        with self._lock:
            return next((s for s in self._streams.values() if s.stream is stream), None)

    def _get(self, name: str) -> _Served:
        served = self._streams.get(name)
        if served is None:
            raise NoSuchStream(f"no stream named {name}; the streams are {sorted(self._streams)}")
        return served

    def _view(self, served: _Served) -> StreamView:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in served.recent if t > now - _FPS_WINDOW_S]
            span = (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
            fps = (len(recent) - 1) / span if span > 0 and served.state == "running" else 0.0
            dropped, late, reconnects = served.stats
            return StreamView(name=served.config.name, state=served.state, session=served.session,
                              frames=served.frames, fps=round(fps, 2), dropped=dropped, late=late,
                              reconnects=reconnects, quality=served.stream.quality if served.stream else 0,
                              budget_ms=served.config.budget_ms, error=served.error)


def apply_quality(stream: Stream, options: RunOptions, event: DegradeEvent) -> None:
    """A degradation level applied to a stream (from its next frame): its results carry the level, its
    detector runs every k-th frame (never more often than its own ``detect_every``), and the
    detector-driven policy starts no track beyond the level's cap (tracks above it retire as usual)."""
    quality = event.quality
    stream.quality = event.level
    stream.detect_every = max(options.detect_every, quality.detect_every)
    fusion_config = getattr(stream.fusion, "config", None)
    if hasattr(fusion_config, "max_tracks"):
        cap = quality.max_tracked_objects
        limit = options.max_tracks if cap is None else min(cap, options.max_tracks)
        stream.fusion.config = dataclasses.replace(fusion_config, max_tracks=limit)
