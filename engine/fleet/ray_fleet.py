"""``streamseg serve --ray``: the served fleet on Ray engine workers (``engine.fleet.supervisor``).

Each worker loads the networks once per set of network options (``engine.app.MODEL_OPTIONS``) and
runs its streams through the multi-stream loop (``run_streams``), with each stream's degradation
controller beside it; results come back as JSONL lines, which the driver writes to the stream's JSONL
file, publishes to MQTT and counts in the metrics (``FleetMetrics.observe_record``). The overlay video
and the preview need the pictures, which stay on the workers: a stream with ``out`` or ``preview`` is
refused under ``--ray``.

A worker that dies is restarted by Ray, and its streams are placed again (their results then carry
``session`` + 1: their track ids restart); a replayable source resumes after the last frame written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from engine.errors import ConfigError, NoSuchStream, StreamExists, StreamsegError
from engine.fleet.config import ServeConfig, StreamConfig
from engine.fleet.control import StreamView
from engine.fleet.degrade import DegradeConfig, DegradeController, DegradeEvent, default_levels
from engine.fleet.lines import JsonlLineWriter, LineSink
from engine.fleet.metrics import FleetMetrics
from engine.fleet.placement import StreamSpec
from engine.fleet.ray_workers import Assignment, WorkerContext, connect
from engine.fleet.supervisor import FleetEvent, RaySupervisor, StreamState
from engine.sinks.mqtt import MqttPublisher, encode_line

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RayJob:
    """What a worker needs to run one stream (``StreamSpec.options`` on Ray; pickled to the worker)."""

    config: StreamConfig
    degrade: DegradeConfig


# ---- on the workers ------------------------------------------------------------------------------------

def run_streams(models: dict, assignments: Sequence[Assignment], ctx: WorkerContext) -> None:
    """A ``RunStreams``: the assignments grouped by their network options, one multi-stream loop per group
    on the worker's cached networks (``models``, a dict this function fills), until every stream ends."""
    from engine.app import model_key

    groups: dict[tuple, list[Assignment]] = {}
    for a in assignments:
        groups.setdefault(model_key(a.stream.options.config.options), []).append(a)
    threads = [threading.Thread(target=_run_group, args=(models, group, ctx), daemon=True) for group in groups.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class _Emit:
    """The worker's only sink: each result as a JSONL line, handed to the driver."""

    wants_overlay = False

    def __init__(self, ctx: WorkerContext, name: str) -> None:
        self.ctx, self.name = ctx, name

    def write(self, result) -> None:
        self.ctx.emit(self.name, result.frame.index, encode_line(result))

    def close(self) -> None:
        pass


_LOADING = threading.Lock()  # one load per set of network options, however many groups start at once


def _models_for(models: dict, opts):
    from engine.app import load_models, model_key

    with _LOADING:
        key = model_key(opts)
        if key not in models:
            models[key] = load_models(opts)
        return models[key]


def _run_group(models: dict, group: list[Assignment], ctx: WorkerContext) -> None:
    from engine.app import build_stream
    from engine.multistream import MultiStreamPipeline

    controllers, streams, shared = {}, {}, None
    for a in group:
        job: RayJob = a.stream.options
        opts = dataclasses.replace(job.config.options, jsonl=None, out=None, preview=False,
                                   panoptic_dir=None)  # the driver writes the outputs
        try:
            built = build_stream(opts, lambda opts=opts: _models_for(models, opts), extra_sinks=[_Emit(ctx, a.stream.name)])
        except StreamsegError as exc:
            ctx.end(a.stream.name, str(exc))
            continue
        stream, shared = built.stream, built.models
        stream.session = a.session
        if a.resume_after is not None and not stream.source.live:
            stream.source.skip_frames = a.resume_after + 1
        levels = default_levels(tracker=stream.tracker is not None, semantic=False)
        controllers[a.stream.name] = DegradeController(
            a.stream.name, dataclasses.replace(job.degrade, budget_ms=job.config.budget_ms, levels=levels))
        streams[a.stream.name] = (stream, job)
    if shared is None:
        return
    names = {id(stream): name for name, (stream, _) in streams.items()}
    loop = MultiStreamPipeline([s for s, _ in streams.values()], shared=shared.shared,
                               device=shared.device,
                               on_end=lambda stream, error: ctx.end(names[id(stream)], None if error is None else str(error)))
    stop = threading.Event()
    threading.Thread(target=_watch_stops, args=(loop, streams, ctx, stop), daemon=True).start()
    try:
        for result in loop:
            name = names[id(loop.stream_of(result))]
            stream, job = streams[name]
            _follow_budget(controllers[name], ctx.options(name), stream, job)
            event = controllers[name].observe(result.age_ms)
            if event is not None:
                _apply(stream, job, event)
    finally:
        stop.set()


def _watch_stops(loop, streams: dict, ctx: WorkerContext, stop: threading.Event) -> None:
    """Streams the driver stopped leave the loop even while they deliver nothing."""
    removed: set[str] = set()
    while not stop.wait(0.2):
        for name, (stream, _) in streams.items():
            if name not in removed and ctx.stopping(name):
                removed.add(name)
                loop.remove(stream)


def _follow_budget(controller: DegradeController, options: object, stream, job: RayJob) -> None:
    budget = options.config.budget_ms if isinstance(options, RayJob) else job.config.budget_ms
    if budget != controller.config.budget_ms:
        event = controller.set_budget(budget)
        if event is not None:
            _apply(stream, job, event)


def _apply(stream, job: RayJob, event: DegradeEvent) -> None:
    from engine.fleet.local import apply_quality

    apply_quality(stream, job.config.options, event)
    log.warning("%s", event.message())  # the worker's log; the driver sees the level in the lines


# ---- on the driver --------------------------------------------------------------------------------------

class _Watch:
    """A driver-side ``LineSink``: counts each line in the metrics and keeps what the API lists."""

    def __init__(self, name: str, metrics: FleetMetrics | None) -> None:
        self.name, self.metrics = name, metrics
        self.recent: deque[float] = deque(maxlen=512)
        self.quality = 0
        self.dropped = 0
        self._last_frame: int | None = None

    def write_line(self, line: bytes) -> None:
        record = json.loads(line)
        frame = int(record["frame"])
        if self._last_frame is not None and frame > self._last_frame:
            self.dropped += frame - self._last_frame - 1
        self._last_frame = frame
        self.quality = int(record.get("quality", 0))
        self.recent.append(time.monotonic())
        if self.metrics is not None:
            self.metrics.observe_record(self.name, record)

    def close(self) -> None:
        pass


class RayFleet:
    """The ``Fleet`` of ``serve --ray`` (see the module docstring); the same surface as ``LocalFleet``."""

    def __init__(self, config: ServeConfig, *, metrics: FleetMetrics | None = None, mqtt: MqttPublisher | None = None,
                 on_event: Callable[[str], None] = log.warning, connect_timeout_s: float = 5.0,
                 run: Callable = run_streams, **ray_init) -> None:
        for stream in config.streams:
            _check_ray_outputs(stream, where=config.path)
        self.config, self.metrics, self.mqtt, self.on_event = config, metrics, mqtt, on_event
        self._connect_timeout_s, self._ray_init, self._run = connect_timeout_s, ray_init, run
        self._watches: dict[str, _Watch] = {}
        self._configs: dict[str, StreamConfig] = {s.name: s for s in config.streams}
        self._supervisor: RaySupervisor | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.started = self.draining = False

    def start(self) -> None:
        """Join the cluster (one line if it cannot), start the workers, place the streams."""
        connect(self.config.ray, timeout_s=self._connect_timeout_s, **self._ray_init)
        self._supervisor = RaySupervisor([self._spec(s) for s in self.config.streams], workers=self.config.workers,
                                         run_streams=self._run, load_models=dict, sinks_for=self._sinks_for,
                                         on_event=self._event)
        self._supervisor.start()
        self._thread = threading.Thread(target=self._steps, name="ray-supervisor", daemon=True)
        self._thread.start()
        self.started = True

    def _steps(self) -> None:
        try:
            # A fleet started without streams waits for some (the API), as in one process.
            while not (self._supervisor.done() and (self._supervisor.status() or self.draining)):
                self._supervisor.step()
        finally:
            self._supervisor.close()

    def wait(self, timeout_s: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def drain(self) -> None:
        self.draining = True
        if self._supervisor is not None:
            self._supervisor.stop_all()

    def views(self) -> list[StreamView]:
        if self._supervisor is None:
            return []
        now = time.monotonic()
        views = []
        for s in self._supervisor.status():
            watch = self._watches.get(s.name)
            recent = [t for t in (watch.recent if watch else ()) if t > now - 3.0]
            span = recent[-1] - recent[0] if len(recent) > 1 else 0.0
            running = s.state in (StreamState.RUNNING, StreamState.PENDING)
            views.append(StreamView(
                name=s.name, state=s.state.value, session=s.session, frames=s.frames,
                fps=round((len(recent) - 1) / span, 2) if span > 0 and running else 0.0,
                dropped=watch.dropped if watch else 0, late=None, reconnects=None,
                quality=watch.quality if watch else 0, budget_ms=self._configs[s.name].budget_ms,
                error=s.error, worker=s.worker))
        return views

    def add(self, table: Mapping[str, object]) -> StreamView:
        config = self.config.stream(table, where="POST /streams")
        _check_ray_outputs(config, where="POST /streams")
        if self.draining:
            raise StreamExists("the server is draining; it takes no new streams")
        previous = self._configs.get(config.name)
        self._configs[config.name] = config
        try:
            self._supervisor.add(self._spec(config))
        except ConfigError as exc:
            if previous is not None:
                self._configs[config.name] = previous
            raise StreamExists(str(exc)) from None
        return self._view(config.name, wait_s=5.0)

    def remove(self, name: str) -> StreamView:
        self._known(name)
        self._supervisor.remove(name)
        view = self._view(name, wait_s=10.0, until=lambda v: v.state in ("removed", "ended", "failed"))
        if self.metrics is not None:
            self.metrics.remove_stream(name)
        return view

    def set_budget(self, name: str, budget_ms: float | None) -> StreamView:
        self._known(name)
        DegradeConfig(budget_ms=budget_ms)
        config = self._configs[name] = dataclasses.replace(self._configs[name], budget_ms=budget_ms)
        self._supervisor.update(name, RayJob(config=config, degrade=self.config.degrade))
        return self._view(name)

    # ---- helpers --------------------------------------------------------------------------------
    def _spec(self, config: StreamConfig) -> StreamSpec:
        return dataclasses.replace(config.spec(), options=RayJob(config=config, degrade=self.config.degrade))

    def _sinks_for(self, spec: StreamSpec) -> list[LineSink]:
        config: StreamConfig = spec.options.config
        sinks: list[LineSink] = []
        if config.options.jsonl is not None:
            sinks.append(JsonlLineWriter(config.options.jsonl, option=f"stream {config.name}'s jsonl"))
        if self.mqtt is not None and config.mqtt:
            sinks.append(self.mqtt.sink(config.name))
        watch = self._watches[config.name] = _Watch(config.name, self.metrics)
        return [*sinks, watch]

    def _event(self, event: FleetEvent) -> None:
        self.on_event(event.message)

    def _known(self, name: str) -> None:
        if self._supervisor is None or name not in {s.name for s in self._supervisor.status()}:
            raise NoSuchStream(f"no stream named {name}")

    def _view(self, name: str, *, wait_s: float = 0.0, until=lambda v: True) -> StreamView:
        deadline = time.monotonic() + wait_s
        while True:
            view = next((v for v in self.views() if v.name == name), None)
            if (view is not None and until(view)) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if view is None:
            return StreamView(name=name, state="pending", session=0, frames=0, fps=0.0, dropped=None, late=None,
                              reconnects=None, quality=0, budget_ms=self._configs[name].budget_ms, error=None)
        return view


def _check_ray_outputs(config: StreamConfig, *, where: str) -> None:
    opts = config.options
    if opts.out is not None or opts.preview or opts.panoptic_dir is not None:
        what = ("out (the overlay video)" if opts.out is not None else "preview" if opts.preview
                else "panoptic_dir (the panoptic maps)")
        raise ConfigError(f"{where}: stream {config.name}: {what} needs the pictures, which stay on the Ray "
                          f"workers; drop it for --ray (the JSONL and MQTT results come back) or serve without --ray")
