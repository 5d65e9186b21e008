"""The MQTT sink against a real Mosquitto broker on 127.0.0.1, stopped and restarted under it."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import torch

from engine.errors import SinkError
from engine.pipeline import Pipeline
from engine.sinks import JsonlWriter
from engine.sinks.mqtt import MqttConfig, MqttPublisher, MqttSink, encode_line
from engine.types import Frame, FrameResult, Instances, StageTimes
from tests.doubles import ArraySource, SquareDetector, moving_square_frames

pytestmark = pytest.mark.timeout(90)

_WAIT_S = 15.0  # longest any single broker/client step may take on a loaded 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float = _WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Mosquitto:
    """Debian's Mosquitto on 127.0.0.1:PORT. Sessions persist across ``stop()``/``start()`` (its
    database is saved at a clean stop), as a broker restarted by its service manager would."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {workdir}/\nuser root\n")
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("the MQTT tests need Debian's mosquitto broker: `sudo apt-get install -y mosquitto` "
                        "(scripts/install.sh --test installs it)", pytrace=False)
        deadline = time.monotonic() + _WAIT_S
        while True:  # the port of a broker that just stopped can take a moment to free
            with open(self.workdir / "mosquitto.log", "ab") as log:  # the broker keeps its own copy
                self._proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=log, stderr=log)
            while self._proc.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {(self.workdir / 'mosquitto.log').read_text()[-500:]}")
            time.sleep(0.2)

    def stop(self, *, crash: bool = False) -> None:
        """A clean stop saves the broker's sessions, as `systemctl restart` does; a crash (SIGKILL) loses
        what the broker held in memory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill() if crash else proc.terminate()
            proc.wait(timeout=_WAIT_S)


class Subscriber:
    """A durable QoS 1 subscriber to ``streamseg/#`` (its session outlives broker restarts)."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}",
                                   clean_session=False)
        self._client.reconnect_delay_set(0.1, 0.5)
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe("streamseg/#", qos=1)
        self._client.on_subscribe = lambda *a: self.subscribed.set()
        self._client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self._client.connect_async("127.0.0.1", port, keepalive=5)
        self._client.loop_start()
        assert self.subscribed.wait(_WAIT_S), "the test subscriber could not subscribe"

    def frames(self, topic: str) -> set[int]:
        return {json.loads(p)["frame"] for t, p in list(self.messages) if t == topic}

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


def _result(index: int) -> FrameResult:
    masks = torch.zeros((1, 24, 32), dtype=torch.bool)
    masks[0, 4:12, index % 20:index % 20 + 8] = True
    frame = Frame(image=torch.zeros((24, 32, 3), dtype=torch.uint8), index=index, pts=index / 30,
                  capture_time=1764000000.0 + index / 30)
    inst = Instances(ids=torch.tensor([7]), class_ids=torch.tensor([0]), scores=torch.tensor([0.5]),
                     boxes=torch.tensor([[1.0, 2.0, 9.0, 12.0]]), masks=masks, labels=("square",))
    return FrameResult(frame=frame, instances=inst, times=StageTimes(total=3.0), age_ms=5.0)


def _fast(url: str, **options) -> MqttConfig:
    """Short backoff and keepalive so outages are noticed and healed within a test's time."""
    return MqttConfig(url=url, **{"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "keepalive_s": 2, **options})


def test_a_pipeline_run_reaches_the_broker_frame_for_frame_as_its_jsonl_lines(broker, tmp_path):
    subscriber = Subscriber(broker.port)
    publisher = MqttPublisher(_fast(broker.url))
    sinks = [JsonlWriter(tmp_path / "r.jsonl"), publisher.sink("cam1")]
    assert Pipeline(ArraySource(moving_square_frames(30)), detector=SquareDetector(), sinks=sinks).run() == 30
    _wait(lambda: len(subscriber.frames("streamseg/cam1")) == 30, what="30 frames at the subscriber")
    subscriber.close()
    lines = (tmp_path / "r.jsonl").read_bytes().splitlines()
    payloads = {json.loads(p)["frame"]: p for _, p in subscriber.messages}
    assert [payloads[i] for i in range(30)] == lines  # exactly the JSONL line, byte for byte
    stats = sinks[1].stats
    assert (stats.accepted, stats.delivered, stats.undelivered) == (30, 30, 0)


def test_streams_share_one_connection_with_a_topic_each(broker):
    subscriber = Subscriber(broker.port)
    publisher = MqttPublisher(_fast(broker.url, topic_prefix="streamseg/site-a"))
    cam1, cam2 = publisher.sink("cam1"), publisher.sink("cam2")
    for i in range(5):
        cam1.write(_result(i))
        cam2.write(_result(100 + i))
    cam1.close()
    assert publisher.wait_connected(_WAIT_S)  # cam2 still uses the connection
    cam2.close()
    _wait(lambda: len(subscriber.messages) == 10, what="10 messages")
    subscriber.close()
    assert subscriber.frames("streamseg/site-a/cam1") == set(range(5))
    assert subscriber.frames("streamseg/site-a/cam2") == set(range(100, 105))
    assert publisher.connects == 1 and not publisher.connected


@pytest.mark.parametrize("crash", [pytest.param(False, id="clean-restart"), pytest.param(True, id="crash")])
def test_a_broker_restart_mid_run_loses_nothing_and_the_engine_never_waits(broker, caplog, crash):
    """The broker stops after frame 20 and comes back after frame 40: writes during the outage return at
    once, the sink reconnects by itself and the broker acknowledges every frame. After a clean restart
    every frame reaches the (durable) subscriber; a crash loses what the broker itself held, not ours."""
    caplog.set_level(logging.WARNING, logger="engine.sinks.mqtt")
    subscriber = Subscriber(broker.port)
    sink = MqttSink.connect(_fast(broker.url, flush_timeout_s=_WAIT_S), stream="cam1")
    results = [_result(i) for i in range(60)]
    for i in range(20):
        sink.write(results[i])
        time.sleep(0.01)
    _wait(lambda: sink.stats.delivered == 20, what="20 acknowledged")
    broker.stop(crash=crash)
    _wait(lambda: not sink.publisher.connected, what="the sink to notice the outage")
    started = time.monotonic()
    for i in range(20, 40):
        sink.write(results[i])
    outage_writes_s = time.monotonic() - started
    assert sink.stats.pending == 20 and sink.stats.delivered == 20
    subscriber.subscribed.clear()
    broker.start()
    assert subscriber.subscribed.wait(_WAIT_S)
    for i in range(40, 60):
        sink.write(results[i])
        time.sleep(0.01)
    sink.close()
    stats = sink.stats
    assert (stats.accepted, stats.delivered, stats.undelivered) == (60, 60, 0)
    assert sink.publisher.connects == 2
    if not crash:
        _wait(lambda: subscriber.frames("streamseg/cam1") == set(range(60)), what="all 60 frames at the subscriber")
    else:  # the outage's frames may have reached the broker before the subscriber's new session did
        _wait(lambda: subscriber.frames("streamseg/cam1") >= set(range(20)) | set(range(40, 60)),
              what="the frames before and after the outage at the subscriber")
    subscriber.close()
    # 20 writes, each encoding a mask and appending to the outbox: nowhere near a network timeout.
    assert outage_writes_s < 1.0
    assert any("connection lost" in r.message for r in caplog.records)
    assert any("connected again" in r.message for r in caplog.records)


def test_a_broker_gone_for_good_costs_only_what_was_pending_and_says_so(broker, caplog):
    caplog.set_level(logging.WARNING, logger="engine.sinks.mqtt")
    sink = MqttSink.connect(_fast(broker.url, flush_timeout_s=0.5), stream="cam1")
    for i in range(10):
        sink.write(_result(i))
    _wait(lambda: sink.stats.delivered == 10, what="10 acknowledged")
    broker.stop()
    for i in range(10, 25):
        sink.write(_result(i))
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 0.5 + 5.0 + 2.0  # flush timeout + one connect attempt + slack
    stats = sink.stats
    assert (stats.accepted, stats.delivered, stats.pending, stats.dropped) == (25, 10, 15, 0)
    assert stats.undelivered == 15
    assert any("15 of 25 results were not delivered" in r.message for r in caplog.records)


def test_a_full_outbox_drops_the_oldest_and_counts_them(tmp_path):
    """No broker yet: 12 results into an outbox of 5 keep the newest 5; once the broker comes up,
    exactly those reach it."""
    broker = Mosquitto(tmp_path)
    sink = MqttSink.connect(_fast(broker.url, outbox=5, flush_timeout_s=_WAIT_S), stream="cam1")
    for i in range(12):
        sink.write(_result(i))
    assert (sink.stats.accepted, sink.stats.dropped, sink.stats.pending) == (12, 7, 5)
    broker.start()
    try:
        subscriber = Subscriber(broker.port)
        sink.close()
        _wait(lambda: len(subscriber.frames("streamseg/cam1")) == 5, what="5 frames")
        subscriber.close()
    finally:
        broker.stop()
    assert subscriber.frames("streamseg/cam1") == set(range(7, 12))
    assert (sink.stats.delivered, sink.stats.dropped, sink.stats.undelivered) == (5, 7, 7)


def test_payload_is_the_jsonl_line_without_its_newline(tmp_path):
    writer = JsonlWriter(tmp_path / "r.jsonl")
    writer.write(_result(3))
    writer.close()
    assert encode_line(_result(3)) + b"\n" == (tmp_path / "r.jsonl").read_bytes()


def test_building_a_publisher_opens_no_connection():
    publisher = MqttPublisher(MqttConfig(url=f"mqtt://127.0.0.1:{_free_port()}"))
    sink = publisher.sink("cam1")
    assert publisher.connects == 0 and not publisher.connected
    assert not [t for t in threading.enumerate() if "mqtt" in t.name]  # nothing starts before the first write
    sink.close()


@pytest.mark.parametrize(("options", "message"), [
    pytest.param({"url": "http://127.0.0.1:1883"}, "not a broker URL", id="wrong-scheme"),
    pytest.param({"url": "mqtt://"}, "not a broker URL", id="no-host"),
    pytest.param({"url": "mqtt://broker:99999"}, "port is not a number", id="port-out-of-range"),
    pytest.param({"url": "mqtt://broker/streamseg"}, "no path or query", id="topic-in-url"),
    pytest.param({"url": "mqtt://broker", "topic_prefix": "site/+/cams"}, "cannot be part of a topic",
                 id="wildcard-prefix"),
    pytest.param({"url": "mqtt://broker", "topic_prefix": "site/"}, "empty levels", id="empty-level"),
    pytest.param({"url": "mqtt://broker", "qos": 3}, "qos must be 0, 1 or 2", id="bad-qos"),
    pytest.param({"url": "mqtt://broker", "outbox": 0}, "outbox must be >= 1", id="no-outbox"),
    pytest.param({"url": "mqtt://broker", "reconnect_min_s": 5, "reconnect_max_s": 1},
                 "reconnect_max_s must be >= reconnect_min_s", id="backoff-upside-down"),
])
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(SinkError, match=message):
        MqttConfig(**options)


@pytest.mark.parametrize(("streams", "message"), [
    pytest.param(["cam/1"], "stream name 'cam/1' cannot be part of a topic", id="slash-in-name"),
    pytest.param(["cam#"], "cannot be part of a topic", id="wildcard-in-name"),
    pytest.param(["cam1", "cam1"], "already publishes here", id="duplicate-name"),
])
def test_bad_stream_names_are_one_clear_error(streams, message):
    publisher = MqttPublisher(MqttConfig(url="mqtt://127.0.0.1"))
    with pytest.raises(SinkError, match=message):
        for name in streams:
            publisher.sink(name)


def test_the_password_stays_out_of_messages():
    publisher = MqttPublisher(MqttConfig(url="mqtt://user:s3cret@127.0.0.1:1883"))
    assert publisher.name == "mqtt://127.0.0.1:1883" and "s3cret" not in repr(publisher.name)
