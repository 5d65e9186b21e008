"""The single-process fleet with its metrics and degradation wired in: counters scraped mid-run agree
with the JSONL, an impossible budget steps a stream down (and says when it cannot hold), a relaxed one
brings it back up; streams with other networks get their own loop; a stream that fails does so alone."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.fleet.config import read_serve_config
from engine.fleet.local import LocalFleet
from engine.fleet.metrics import FleetMetrics, MetricsServer
from tests.fleet.serve_doubles import loader, wait_for

pytestmark = pytest.mark.timeout(120)


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _get(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path.name} ends with a cut line"
    return [json.loads(line) for line in data.splitlines()]


def _last_quality(path: Path) -> int | None:
    """The quality of the last whole line written so far (None before the first)."""
    whole = path.read_bytes().rpartition(b"\n")[0] if path.exists() else b""
    return json.loads(whole.rpartition(b"\n")[2])["quality"] if whole else None


def _fleet(tmp_path: Path, text: str, **kwargs) -> LocalFleet:
    path = tmp_path / "serve.toml"
    path.write_text(text.replace("TMP", str(tmp_path)))
    events: list[str] = []
    fleet = LocalFleet(read_serve_config(path), on_event=events.append, **kwargs)
    fleet.events = events
    return fleet


def test_counters_scraped_during_the_run_match_each_stream_s_jsonl(tmp_path):
    """A camera-like source at 100 fps and a detector at ~30: the live buffer drops frames (gaps in the
    JSONL's frame numbers). Once the short stream has ended, its counters equal its file exactly."""
    metrics = FleetMetrics()
    fleet = _fleet(tmp_path, """
live = true
realtime = true
[[streams]]
name = "short"
source = "synthetic:seed=1,frames=90,size=64x48,fps=100"
jsonl = "TMP/short.jsonl"
[[streams]]
name = "long"
source = "synthetic:seed=2,frames=100000,size=64x48,fps=100"
jsonl = "TMP/long.jsonl"
""", metrics=metrics, load=loader(delay_s=0.03))
    with MetricsServer(metrics.registry) as server:
        fleet.start()
        try:
            mid = wait_for(lambda: (s := _scrape(server.url)) and _get(s, "streamseg_frames_total", stream="long") >= 5
                           and s, what="five results scraped")
            wait_for(lambda: {v.name: v.state for v in fleet.views()}["short"] == "ended", what="the short stream's end")
            final = _scrape(server.url)
        finally:
            fleet.drain()
            assert fleet.wait(timeout_s=20)
    lines = _lines(tmp_path / "short.jsonl")
    frames = [r["frame"] for r in lines]
    gaps = frames[-1] + 1 - len(frames)
    assert gaps > 0, "the test needs a run with drops"
    assert _get(final, "streamseg_frames_total", stream="short") == len(lines)
    assert _get(final, "streamseg_frames_dropped_total", stream="short", reason="buffer") == gaps
    assert _get(final, "streamseg_frame_age_seconds_count", stream="short") == len(lines)
    assert 0 < _get(mid, "streamseg_frames_total", stream="long") <= len(_lines(tmp_path / "long.jsonl"))
    view = {v.name: v for v in fleet.views()}["short"]
    assert (view.frames, view.dropped) == (len(lines), gaps)


DEGRADING = """
realtime = true
[serve.degrade]
down_after_s = 0.3
up_after_s = 0.3
window_s = 0.3
[[streams]]
name = "cam1"
source = "synthetic:seed=1,frames=100000,size=64x48,fps=30"
jsonl = "TMP/cam1.jsonl"
budget_ms = 1.0
"""


def test_an_impossible_budget_steps_down_to_the_floor_says_so_and_a_relaxed_one_steps_back_up(tmp_path):
    metrics = FleetMetrics()
    fleet = _fleet(tmp_path, DEGRADING, metrics=metrics, load=loader(delay_s=0.02, tracker=True))
    with MetricsServer(metrics.registry) as server:
        fleet.start()
        try:
            wait_for(lambda: _get(_scrape(server.url), "streamseg_degradation_events_total", stream="cam1",
                                  kind="cannot_hold") == 1, what="the lowest level, over budget")
            down = _scrape(server.url)
            fleet.set_budget("cam1", 100_000.0)
            # results already under way when the level changed still carry the old level: wait until one
            # made at full quality is written, so that the file ends at level 0
            wait_for(lambda: fleet.views()[0].quality == 0 and _last_quality(tmp_path / "cam1.jsonl") == 0,
                     what="full quality again, in the JSONL")
            up = _scrape(server.url)
        finally:
            fleet.drain()
            assert fleet.wait(timeout_s=20)
    assert _get(down, "streamseg_degradation_events_total", stream="cam1", kind="step_down") == 4
    assert _get(down, "streamseg_degradation_level", stream="cam1") == 4
    assert _get(up, "streamseg_degradation_events_total", stream="cam1", kind="step_up") == 4
    assert _get(up, "streamseg_degradation_level", stream="cam1") == 0
    # every change is in the log and in the results: the JSONL's quality goes 0..4 and back to 0
    assert sum(": quality level " in e and " -> " in e for e in fleet.events) == 8
    assert any("add capacity or raise the budget" in e for e in fleet.events)
    levels = [r["quality"] for r in _lines(tmp_path / "cam1.jsonl")]
    assert max(levels) == 4 and levels[0] == 0 and levels[-1] == 0
    assert [b - a for a, b in zip(levels, levels[1:]) if b != a] == [1, 1, 1, 1, -1, -1, -1, -1]


def test_without_a_budget_nothing_changes(tmp_path):
    fleet = _fleet(tmp_path, DEGRADING.replace("budget_ms = 1.0", ""), load=loader(delay_s=0.02, tracker=True))
    fleet.start()
    try:
        wait_for(lambda: fleet.views()[0].frames >= 30, what="thirty results")
    finally:
        fleet.drain()
        assert fleet.wait(timeout_s=20)
    assert {r["quality"] for r in _lines(tmp_path / "cam1.jsonl")} == {0}
    assert not any("quality level" in e for e in fleet.events)


def test_streams_with_other_networks_get_their_own_loop_and_a_bad_one_fails_alone(tmp_path):
    loads: list = []
    fleet = _fleet(tmp_path, """
[[streams]]
name = "a"
source = "synthetic:seed=1,frames=10,size=64x48"
jsonl = "TMP/a.jsonl"
[[streams]]
name = "b"
source = "synthetic:seed=2,frames=12,size=64x48"
jsonl = "TMP/b.jsonl"
imgsz = 320
[[streams]]
name = "broken"
source = "TMP/missing.mp4"
jsonl = "TMP/broken.jsonl"
[[streams]]
name = "c"
source = "synthetic:seed=3,frames=8,size=64x48"
jsonl = "TMP/c.jsonl"
""", load=loader(loads=loads))
    views = {v.name: v for v in fleet.run()}
    assert sorted(o.imgsz for o in loads) == [320, 640]  # a and c share one load; b has its own
    assert {n: (v.state, v.frames) for n, v in views.items()} == {
        "a": ("ended", 10), "b": ("ended", 12), "c": ("ended", 8), "broken": ("failed", 0)}
    assert "missing.mp4" in views["broken"].error and "\n" not in views["broken"].error
    assert not (tmp_path / "broken.jsonl").exists()
    assert any(e.startswith("stream broken failed: ") for e in fleet.events)
    for name, n in (("a", 10), ("b", 12), ("c", 8)):
        assert [r["frame"] for r in _lines(tmp_path / f"{name}.jsonl")] == list(range(n))


def test_streams_publish_to_a_real_broker_frame_for_frame_and_opted_out_ones_do_not(tmp_path):
    from engine.sinks.mqtt import MqttPublisher
    from tests.sinks.test_mqtt import Mosquitto, Subscriber

    broker = Mosquitto(tmp_path).start()
    try:
        subscriber = Subscriber(broker.port)
        metrics = FleetMetrics()
        path = tmp_path / "serve.toml"
        path.write_text(f"""
[serve.mqtt]
url = "{broker.url}"
[[streams]]
name = "cam1"
source = "synthetic:seed=1,frames=25,size=64x48"
jsonl = "{tmp_path}/cam1.jsonl"
[[streams]]
name = "cam2"
source = "synthetic:seed=2,frames=15,size=64x48"
mqtt = false
""")
        config = read_serve_config(path)
        publisher = MqttPublisher(config.mqtt, close_with_last_sink=False)
        fleet = LocalFleet(config, metrics=metrics, mqtt=publisher, load=loader(), on_event=lambda line: None)
        assert {v.state for v in fleet.run()} == {"ended"}
        publisher.close()
        wait_for(lambda: len(subscriber.frames("streamseg/cam1")) == 25, what="every frame at the subscriber")
        subscriber.close()
    finally:
        broker.stop()
    assert subscriber.frames("streamseg/cam1") == {r["frame"] for r in _lines(tmp_path / "cam1.jsonl")}
    assert not subscriber.frames("streamseg/cam2")
    assert publisher.stats("cam1").delivered == 25 and publisher.stats().undelivered == 0
    # the sink's counts reach the metrics as they go; the last ones may land after the last frame's
    assert 0 < metrics.sink_delivered.labels("cam1", "mqtt")._value.get() <= 25
