"""Fleet metrics: fed with results, scraped over HTTP, parsed with Prometheus' own text parser."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import prometheus_client
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from engine.errors import ConfigError
from engine.fleet.degrade import DegradeEvent, DegradeKind, QualityLevel
from engine.fleet.metrics import FleetMetrics, MetricsServer, MetricsSink
from engine.pipeline import Pipeline
from engine.types import TIMING_KEYS as STAGES
from engine.sinks import JsonlWriter
from engine.sinks.base import Sink
from engine.sinks.mqtt import MqttStats
from engine.sources.memory import ArraySource
from engine.types import Frame, FrameResult, Instances, SourceStats, StageTimes
from tests.doubles import SquareDetector, moving_square_frames

pytestmark = pytest.mark.timeout(60)


def _result(index: int, *, stats: SourceStats, ids: tuple[int, ...] = (1, 2), age_ms: float = 40.0,
            stream: int = 0) -> FrameResult:
    n = len(ids)
    frame = Frame(image=torch.zeros((8, 8, 3), dtype=torch.uint8), index=index, pts=None,
                  capture_time=1764000000.0, stream=stream)
    inst = Instances(ids=torch.tensor(ids, dtype=torch.int64), class_ids=torch.zeros(n, dtype=torch.int64),
                     scores=torch.ones(n), boxes=torch.zeros((n, 4)), masks=torch.zeros((n, 8, 8), dtype=torch.bool),
                     labels=("x",) * n)
    times = StageTimes(decode=1.0, detect=20.0, track=5.0, fuse=2.0, render=0.0, total=30.0)
    return FrameResult(frame=frame, instances=inst, times=times, age_ms=age_ms, stats=stats)


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from a live /metrics, through Prometheus' parser."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _get(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def served():
    metrics = FleetMetrics(stages=STAGES)
    with MetricsServer(metrics.registry) as server:
        yield metrics, server


def test_counters_equal_what_the_results_said(served):
    metrics, server = served
    # cumulative counters, as a source reports them: 3 buffer drops, 1 late, 2 corrupt, 1 reconnect
    snapshots = [SourceStats(dropped=0), SourceStats(dropped=2, corrupt=1),
                 SourceStats(dropped=3, late=1, corrupt=2, reconnects=1, gap_s=1.5)]
    for i, stats in enumerate(snapshots):
        metrics.observe("cam1", _result(i, stats=stats))
    metrics.observe("cam2", _result(0, stats=SourceStats(), ids=(4,), age_ms=2000.0))
    s = _scrape(server.url)
    assert _get(s, "streamseg_frames_total", stream="cam1") == 3
    assert _get(s, "streamseg_frames_dropped_total", stream="cam1", reason="buffer") == 3
    assert _get(s, "streamseg_frames_dropped_total", stream="cam1", reason="late") == 1
    assert _get(s, "streamseg_decoder_corrupt_packets_total", stream="cam1") == 2
    assert _get(s, "streamseg_source_reconnects_total", stream="cam1") == 1
    assert _get(s, "streamseg_source_gap_seconds_total", stream="cam1") == 1.5
    assert _get(s, "streamseg_live_tracks", stream="cam1") == 2
    assert _get(s, "streamseg_degradation_level", stream="cam1") == 0  # present from the first frame
    # cam2: its own series, untouched by cam1
    assert _get(s, "streamseg_frames_total", stream="cam2") == 1
    assert _get(s, "streamseg_frames_dropped_total", stream="cam2", reason="buffer") == 0
    assert _get(s, "streamseg_frame_age_seconds_bucket", stream="cam2", le="1.0") == 0
    assert _get(s, "streamseg_frame_age_seconds_bucket", stream="cam2", le="2.5") == 1


def test_every_stage_of_the_stage_list_has_its_histogram_in_seconds(served):
    metrics, server = served
    for i in range(4):
        metrics.observe("cam1", _result(i, stats=SourceStats()))
    s = _scrape(server.url)
    for stage, ms in {"decode": 1.0, "detect": 20.0, "track": 5.0, "fuse": 2.0, "total": 30.0}.items():
        assert _get(s, "streamseg_stage_latency_seconds_count", stream="cam1", stage=stage) == 4
        assert _get(s, "streamseg_stage_latency_seconds_sum", stream="cam1", stage=stage) == pytest.approx(4 * ms / 1000)
    # 20 ms falls in the (0.01, 0.02] bucket
    assert _get(s, "streamseg_stage_latency_seconds_bucket", stream="cam1", stage="detect", le="0.01") == 0
    assert _get(s, "streamseg_stage_latency_seconds_bucket", stream="cam1", stage="detect", le="0.02") == 4


def test_a_restarted_stream_keeps_counting_up(served):
    """A stream re-placed on another worker starts its counters from zero; Prometheus counters never go
    back, so the new run's counts are added."""
    metrics, server = served
    metrics.observe("cam1", _result(0, stats=SourceStats(dropped=5, reconnects=2)))
    metrics.observe("cam1", _result(0, stats=SourceStats(dropped=1)))  # the restarted stream's first result
    s = _scrape(server.url)
    assert _get(s, "streamseg_frames_dropped_total", stream="cam1", reason="buffer") == 6
    assert _get(s, "streamseg_source_reconnects_total", stream="cam1") == 2


def test_degradation_events_set_the_level_and_count_by_kind(served):
    metrics, server = served
    for kind, level in [(DegradeKind.STEP_DOWN, 1), (DegradeKind.STEP_DOWN, 2), (DegradeKind.CANNOT_HOLD, 2),
                        (DegradeKind.STEP_UP, 1)]:
        metrics.observe_degradation(DegradeEvent(stream="cam1", kind=kind, level=level, previous=level,
                                                 quality=QualityLevel(), age_ms=90.0, budget_ms=50.0, time=0.0))
    s = _scrape(server.url)
    assert _get(s, "streamseg_degradation_level", stream="cam1") == 1
    assert _get(s, "streamseg_degradation_events_total", stream="cam1", kind="step_down") == 2
    assert _get(s, "streamseg_degradation_events_total", stream="cam1", kind="cannot_hold") == 1
    assert _get(s, "streamseg_degradation_events_total", stream="cam1", kind="step_up") == 1


def test_message_sink_counts_follow_its_stats(served):
    metrics, server = served
    metrics.observe_sink("cam1", "mqtt", MqttStats(accepted=10, delivered=6, dropped=1, pending=3))
    metrics.observe_sink("cam1", "mqtt", MqttStats(accepted=12, delivered=11, dropped=1, pending=0))
    s = _scrape(server.url)
    assert _get(s, "streamseg_sink_delivered_messages_total", stream="cam1", sink="mqtt") == 11
    assert _get(s, "streamseg_sink_dropped_messages_total", stream="cam1", sink="mqtt") == 1
    assert _get(s, "streamseg_sink_pending_messages", stream="cam1", sink="mqtt") == 0


def test_a_removed_stream_disappears_and_the_others_stay(served):
    metrics, server = served
    for name in ("cam1", "cam2"):
        metrics.observe(name, _result(0, stats=SourceStats(dropped=1)))
    metrics.observe_sink("cam1", "mqtt", MqttStats(accepted=1, delivered=1))
    metrics.remove_stream("cam1")
    streams = {dict(labels).get("stream") for _, labels in _scrape(server.url)}
    assert streams == {"cam2"}


def test_names_follow_prometheus_conventions_and_stay_out_of_the_global_registry(served):
    metrics, server = served
    metrics.observe("cam1", _result(0, stats=SourceStats()))
    FleetMetrics(stages=STAGES)  # a second engine in the same process: no duplicate-series error
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    for family in families:
        assert family.name.startswith("streamseg_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
    global_names = {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("streamseg_") for name in global_names)


def test_a_run_scraped_while_it_runs_matches_its_jsonl(tmp_path):
    """A live source faster than its detector drops frames (gaps in the JSONL's frame numbers); the
    scraped counters agree with the file: frames = lines, buffer drops = gaps."""

    class SlowSquares(SquareDetector):
        def __call__(self, images):
            time.sleep(0.03)
            return super().__call__(images)

    metrics = FleetMetrics(stages=STAGES)
    # frames arrive at 100 fps, as from a camera; the detector manages ~30
    source = ArraySource(moving_square_frames(60), fps=100.0, live=True, realtime=True)
    jsonl = tmp_path / "cam1.jsonl"
    pipeline = Pipeline(source, detector=SlowSquares(), sinks=[JsonlWriter(jsonl), MetricsSink(metrics, "cam1")])
    scraped_mid_run = None
    with MetricsServer(metrics.registry) as server:
        for result in pipeline:
            if result.frame.index >= 20 and scraped_mid_run is None:
                scraped_mid_run = _scrape(server.url)
        final = _scrape(server.url)
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    indices = [rec["frame"] for rec in lines]
    gaps = indices[-1] + 1 - len(indices)
    assert gaps > 0, "the test needs a run with drops"
    assert _get(final, "streamseg_frames_total", stream="cam1") == len(lines)
    assert _get(final, "streamseg_frames_dropped_total", stream="cam1", reason="buffer") == gaps
    assert _get(final, "streamseg_frame_age_seconds_count", stream="cam1") == len(lines)
    assert 0 < _get(scraped_mid_run, "streamseg_frames_total", stream="cam1") < len(lines)


def test_metrics_sink_is_a_sink():
    assert isinstance(MetricsSink(FleetMetrics(stages=STAGES), "cam1"), Sink)


def _status(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_and_readiness():
    state = {"ready": False}
    with MetricsServer(FleetMetrics(stages=STAGES).registry, ready=lambda: state["ready"]) as server:
        assert _status(f"{server.url}/healthz") == (200, "ok\n")
        assert _status(f"{server.url}/readyz") == (503, "not ready\n")
        state["ready"] = True
        assert _status(f"{server.url}/readyz") == (200, "ready\n")


def test_a_readiness_check_that_fails_is_not_ready_and_says_why():
    def broken() -> bool:
        raise RuntimeError("worker 2 unreachable")

    with MetricsServer(FleetMetrics(stages=STAGES).registry, ready=broken) as server:
        assert _status(f"{server.url}/readyz") == (503, "not ready: RuntimeError: worker 2 unreachable\n")


@pytest.mark.parametrize(("path", "method", "status"), [
    pytest.param("/metrics", "POST", 405, id="metrics-is-read-only"),
    pytest.param("/readyz", "DELETE", 405, id="no-writes-anywhere"),
    pytest.param("/", "GET", 404, id="unknown-path"),
    pytest.param("/metrics", "PUT", 405, id="no-puts"),
    pytest.param("/healthz", "GET", 200, id="get-is-fine"),
])
def test_endpoints_only_read(path, method, status):
    with MetricsServer(FleetMetrics(stages=STAGES).registry) as server:
        assert _status(f"{server.url}{path}", method)[0] == status


def test_a_port_in_use_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}: the port is in use"):
            MetricsServer(FleetMetrics(stages=STAGES).registry, port=port).start()


def test_idle_connections_cannot_hold_the_server():
    """Clients that connect and send nothing take at most ``max_connections`` slots, and only until the
    request timeout; then scrapes are answered again."""
    with MetricsServer(FleetMetrics(stages=STAGES).registry, max_connections=2, request_timeout_s=0.5) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        time.sleep(0.1)
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"{server.url}/healthz", timeout=5).read()  # closed unanswered: no slot
        time.sleep(1.0)  # past the request timeout: the idle clients were cut off
        assert _status(f"{server.url}/healthz") == (200, "ok\n")
        for s in idle:
            s.close()


@pytest.mark.parametrize(("stages", "message"), [
    pytest.param((), "distinct stage names", id="no-stages"),
    pytest.param(("detect", "detect"), "distinct stage names", id="duplicate-stage"),
])
def test_bad_stage_lists_are_one_clear_error(stages, message):
    with pytest.raises(ConfigError, match=message):
        FleetMetrics(stages=stages)
