"""Prometheus metrics of the streams one process (or one Ray worker) runs, and the HTTP endpoints that
serve them: ``/metrics`` (read-only), ``/healthz`` (liveness), ``/readyz`` (readiness).

Every metric carries a ``stream`` label; names follow Prometheus' conventions (base units in the name,
``_total`` on counters). Rates are the scraper's job: frames per second of one stream is
``rate(streamseg_frames_total{stream="cam1"}[1m])``.

=========================================================  =========  ==============================
name                                                       type       labels
=========================================================  =========  ==============================
streamseg_frames_total                                     counter    stream: results handed out
streamseg_frames_dropped_total                             counter    stream, reason: ``buffer`` (a
                                                                      live buffer kept a newer frame),
                                                                      ``late`` (older than the budget)
streamseg_decoder_corrupt_packets_total                    counter    stream
streamseg_source_reconnects_total                          counter    stream
streamseg_source_gap_seconds_total                         counter    stream: time without frames
                                                                      while reconnecting
streamseg_frame_age_seconds                                histogram  stream: capture to hand-out
streamseg_stage_latency_seconds                            histogram  stream, stage (the stage list)
streamseg_live_tracks                                      gauge      stream
streamseg_degradation_level                                gauge      stream: 0 = full quality
streamseg_degradation_events_total                         counter    stream, kind (DegradeKind)
streamseg_sink_delivered_messages_total                    counter    stream, sink
streamseg_sink_dropped_messages_total                      counter    stream, sink
streamseg_sink_pending_messages                            gauge      stream, sink
=========================================================  =========  ==============================

Counters come from each result's ``SourceStats`` snapshot (cumulative per stream), so a counter
always equals what the stream's latest result says; a stream restarted from zero (a re-placed Ray
stream) keeps counting up, as Prometheus counters must.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from engine.errors import ConfigError
from engine.fleet.degrade import DegradeEvent, DegradeKind
from engine.fleet.http import WsgiService, plain
from engine.sinks.mqtt import MqttStats
from engine.types import TIMING_KEYS, FrameResult, SourceStats

log = logging.getLogger(__name__)

# Seconds. From 1 ms (one stage of a fast GPU pipeline) to 10 s (a stream that fell far behind); the
# 33 ms bucket is one frame at 30 fps, so "within one frame" is a single bucket read.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)

# SourceStats field -> (counter attribute, extra label values); gap_s is seconds, the others counts.
_COUNTED = {"dropped": ("dropped", ("buffer",)), "late": ("dropped", ("late",)), "corrupt": ("corrupt", ()),
            "reconnects": ("reconnects", ()), "gap_s": ("gap", ())}


class FleetMetrics:
    """Per-stream metrics in a registry of their own (never the process-global one), so several engines
    or tests in one process do not mix their counts.

    Args:
        stages: the stage names of the per-stage latency histogram, in the pipeline's order (default:
            every stage and the total, ``engine.types.TIMING_KEYS``); a stage missing from a result's times is not
            observed for that result.
        buckets_s: histogram bucket bounds in seconds.
    """

    def __init__(self, *, stages: Sequence[str] = TIMING_KEYS, buckets_s: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        if not stages or len(set(stages)) != len(stages):
            raise ConfigError(f"metrics need a list of distinct stage names, got {list(stages)}")
        self.stages = tuple(stages)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = Counter("streamseg_frames", "Results handed out", ["stream"], registry=r)
        self.dropped = Counter("streamseg_frames_dropped", "Frames dropped before processing: 'buffer' "
                               "(a live buffer kept a newer frame), 'late' (older than the latency budget)",
                               ["stream", "reason"], registry=r)
        self.corrupt = Counter("streamseg_decoder_corrupt_packets", "Damaged packets the decoder skipped",
                               ["stream"], registry=r)
        self.reconnects = Counter("streamseg_source_reconnects", "Successful reconnections of a lost source",
                                  ["stream"], registry=r)
        self.gap = Counter("streamseg_source_gap_seconds", "Seconds without frames while reconnecting",
                           ["stream"], registry=r)
        self.age = Histogram("streamseg_frame_age_seconds", "Frame age from capture to hand-out",
                             ["stream"], buckets=buckets_s, registry=r)
        self.latency = Histogram("streamseg_stage_latency_seconds", "Time each stage spent on a frame",
                                 ["stream", "stage"], buckets=buckets_s, registry=r)
        self.live_tracks = Gauge("streamseg_live_tracks", "Objects tracked in the latest frame",
                                 ["stream"], registry=r)
        self.level = Gauge("streamseg_degradation_level", "Quality level (0 = full quality)", ["stream"],
                           registry=r)
        self.degrade_events = Counter("streamseg_degradation_events", "Degradation decisions by kind",
                                      ["stream", "kind"], registry=r)
        self.sink_delivered = Counter("streamseg_sink_delivered_messages", "Messages a sink delivered",
                                      ["stream", "sink"], registry=r)
        self.sink_dropped = Counter("streamseg_sink_dropped_messages", "Messages a sink dropped undelivered",
                                    ["stream", "sink"], registry=r)
        self.sink_pending = Gauge("streamseg_sink_pending_messages", "Messages a sink holds undelivered",
                                  ["stream", "sink"], registry=r)
        self._lock = threading.Lock()
        self._last: dict[str, SourceStats] = {}  # each stream's latest counters, to turn into increments
        self._last_sink: dict[tuple[str, str], MqttStats] = {}
        self._last_record: dict[str, tuple[int | None, int]] = {}  # stream -> (frame, quality level)

    def observe(self, stream: str, result: FrameResult, *, live_tracks: int | None = None) -> None:
        """Count one result of ``stream``. ``live_tracks``: objects the tracker holds; by default the
        number of distinct instance ids in the frame."""
        self.frames.labels(stream).inc()
        self.age.labels(stream).observe(max(result.age_ms, 0.0) / 1000.0)
        times = result.times.as_dict()
        for stage in self.stages:
            if stage in times:
                self.latency.labels(stream, stage).observe(max(times[stage], 0.0) / 1000.0)
        if live_tracks is None:
            live_tracks = len(set(result.instances.ids.tolist()))
        self.live_tracks.labels(stream).set(live_tracks)
        self._count_stats(stream, result.stats)
        self.level.labels(stream)  # the stream's level series exists (at 0) before its first event

    def observe_record(self, stream: str, record: Mapping) -> None:
        """Count one JSONL record (``engine.sinks.jsonl``) of ``stream``: what a Ray driver receives.
        Frames dropped before processing are the gaps in its frame numbers (``reason="buffer"``);
        level changes count as steps down or up. Reconnects, decoder errors and reports that a budget
        cannot be held are not in the record, so these series stay at zero here."""
        self.frames.labels(stream).inc()
        self.age.labels(stream).observe(max(float(record["age_ms"]), 0.0) / 1000.0)
        times = record.get("times_ms", {})
        for stage in self.stages:
            if stage in times:
                self.latency.labels(stream, stage).observe(max(float(times[stage]), 0.0) / 1000.0)
        self.live_tracks.labels(stream).set(len({inst["id"] for inst in record["instances"]}))
        frame, level = int(record["frame"]), int(record.get("quality", 0))
        with self._lock:
            last_frame, last_level = self._last_record.get(stream, (None, 0))
            self._last_record[stream] = (frame, level)
        gap = frame - last_frame - 1 if last_frame is not None and frame > last_frame else 0
        self.dropped.labels(stream, "buffer").inc(gap)  # a restarted stream (frame <= last) counts none
        if level != last_level:
            kind = DegradeKind.STEP_DOWN if level > last_level else DegradeKind.STEP_UP
            self.degrade_events.labels(stream, kind.value).inc()
        self.level.labels(stream).set(level)

    def observe_degradation(self, event: DegradeEvent) -> None:
        self.level.labels(event.stream).set(event.level)
        self.degrade_events.labels(event.stream, event.kind.value).inc()

    def observe_sink(self, stream: str, sink: str, stats: MqttStats) -> None:
        """A message sink's cumulative counts (``MqttSink.stats``) for ``stream``."""
        with self._lock:
            last = self._last_sink.get((stream, sink), MqttStats())
            self._last_sink[(stream, sink)] = stats
        self.sink_delivered.labels(stream, sink).inc(_increment(stats.delivered, last.delivered))
        self.sink_dropped.labels(stream, sink).inc(_increment(stats.dropped, last.dropped))
        self.sink_pending.labels(stream, sink).set(stats.pending)

    def remove_stream(self, stream: str) -> None:
        """Forget a stream that was removed from the fleet, so its series stop being exported."""
        labelled = [(self.frames, [()]), (self.corrupt, [()]), (self.reconnects, [()]), (self.gap, [()]),
                    (self.age, [()]), (self.live_tracks, [()]), (self.level, [()]),
                    (self.dropped, [("buffer",), ("late",)]),
                    (self.latency, [(s,) for s in self.stages]),
                    (self.degrade_events, [(k.value,) for k in DegradeKind])]
        sinks = {sink for s, sink in self._last_sink if s == stream}
        labelled += [(m, [(s,) for s in sinks]) for m in (self.sink_delivered, self.sink_dropped, self.sink_pending)]
        for metric, rest in labelled:
            for extra in rest:
                try:
                    metric.remove(stream, *extra)
                except KeyError:
                    pass  # never observed
        with self._lock:
            self._last.pop(stream, None)
            self._last_record.pop(stream, None)
            for key in [k for k in self._last_sink if k[0] == stream]:
                del self._last_sink[key]

    def _count_stats(self, stream: str, stats: SourceStats) -> None:
        with self._lock:
            last = self._last.get(stream, SourceStats())
            self._last[stream] = stats.snapshot()
        for f in fields(SourceStats):
            if f.name not in _COUNTED:
                continue
            attr, extra = _COUNTED[f.name]
            delta = _increment(getattr(stats, f.name), getattr(last, f.name))
            metric = getattr(self, attr).labels(stream, *extra)
            metric.inc(delta)  # inc(0) still creates the series, so a stream shows zeros from its first frame


def _increment(now: float, before: float) -> float:
    """How far a cumulative count moved; a count that went back to zero (the stream restarted) counts
    its new value."""
    return now - before if now >= before else now


class MetricsSink:
    """A ``Sink`` that counts every result of one stream in ``metrics`` (on one machine, results reach
    metrics the way they reach every other output: through the sink thread)."""

    wants_overlay = False

    def __init__(self, metrics: FleetMetrics, stream: str) -> None:
        self.metrics = metrics
        self.stream = stream

    def write(self, result: FrameResult) -> None:
        self.metrics.observe(self.stream, result)

    def close(self) -> None:
        pass



class MetricsServer(WsgiService):
    """Serves ``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz`` over HTTP.

    Args:
        registry: what ``/metrics`` exports (``FleetMetrics.registry``).
        host: the address to bind; loopback by default. The endpoints only read, so binding beyond
            loopback (for a scraper on another machine) needs no token.
        port: 0 picks a free port (read ``.port`` after ``start``).
        ready: readiness: True once the streams are running; ``/readyz`` answers 503 otherwise (or if
            it raises). ``/healthz`` answers 200 while the server runs.
        max_connections: requests served at once.
        request_timeout_s: a client that sends nothing for this long is disconnected, freeing its slot.

    Raises:
        ConfigError: from ``start``, when the address cannot be bound (in use, not this machine's).
    """

    def __init__(self, registry: CollectorRegistry, *, host: str = "127.0.0.1", port: int = 0,
                 ready: Callable[[], bool] = lambda: True, max_connections: int = 8,
                 request_timeout_s: float = 5.0) -> None:
        super().__init__(self._app, what="metrics", option="--metrics-port", host=host, port=port,
                         max_connections=max_connections, request_timeout_s=request_timeout_s)
        self.registry = registry
        self.ready = ready
        self._metrics_app = make_wsgi_app(registry)

    def _app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
        if method != "GET":
            return plain(start_response, "405 Method Not Allowed", "read-only: use GET\n", [("Allow", "GET")])
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            return plain(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            try:
                ready = bool(self.ready())
            except Exception as exc:  # noqa: BLE001 - a failing check means "not ready", said in the body
                return plain(start_response, "503 Service Unavailable", f"not ready: {type(exc).__name__}: {exc}\n")
            return (plain(start_response, "200 OK", "ready\n") if ready
                    else plain(start_response, "503 Service Unavailable", "not ready\n"))
        return plain(start_response, "404 Not Found", "not found: try /metrics, /healthz or /readyz\n")
