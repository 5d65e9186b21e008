"""Results on an MQTT bus: every frame's JSONL line (``engine.sinks.jsonl``), one topic per stream.

One ``MqttPublisher`` holds one broker connection (``paho-mqtt`` 2.x, its own network thread and its
own reconnect with exponential backoff) for any number of streams; ``publisher.sink(name)`` gives the
stream's ``Sink``, which publishes to ``{topic_prefix}/{name}``::

    publisher = MqttPublisher(MqttConfig(url="mqtt://127.0.0.1:1883"))
    sinks = [publisher.sink("cam1"), publisher.sink("cam2")]  # closing the last sink closes the publisher

Delivery is at-least-once (QoS 1 by default: a message counts as delivered when the broker
acknowledges it; after a reconnect, messages not yet acknowledged are sent again, so a subscriber can
see a frame twice). ``write`` never waits for the network: it puts the line into a bounded outbox and
returns. While the broker is away the outbox fills; when it is full the oldest message is dropped and
counted, so memory stays bounded (``outbox + inflight`` messages at most) and what reaches the bus
after an outage is the newest. ``stats()`` says, per stream, what was accepted, delivered, dropped and
is still pending; ``close`` waits up to ``flush_timeout_s`` for the broker, then logs and keeps the
count of what was never delivered.

The network starts on the first write (no connection is made by building a publisher); the URL and
topics are checked when they are given. A broker that cannot be reached is not an error: it is an
outage like any other, retried with backoff and reported once in the log.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from engine.errors import SinkError
from engine.sinks.jsonl import result_to_record
from engine.types import FrameResult

log = logging.getLogger(__name__)

_SCHEMES = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """Where and how results are published."""

    url: str  # mqtt://[user[:password]@]host[:port] (port 1883) or mqtts://... (TLS, port 8883)
    topic_prefix: str = "streamseg"  # a stream's topic is {topic_prefix}/{stream name}
    qos: int = 1  # 1: at least once; 0: at most once, nothing is retried; 2: exactly once (slower)
    outbox: int = 1000  # messages kept while the broker is away (~33 s of one 30 fps stream); oldest dropped beyond
    inflight: int = 100  # messages handed to the broker and not yet acknowledged
    reconnect_min_s: float = 0.5  # first wait after a lost connection; doubles on each failed attempt
    reconnect_max_s: float = 30.0  # the longest wait between attempts
    connect_timeout_s: float = 5.0  # one connection attempt; also bounds how long close() can take
    keepalive_s: int = 30  # a dead broker is noticed within ~1.5x this when nothing is being sent
    flush_timeout_s: float = 5.0  # close() waits this long for the outbox to drain
    client_id: str = ""  # empty: the broker's session is fresh on each connect (clean session)

    def __post_init__(self) -> None:
        _parse_url(self.url)
        _check_topic_level(self.topic_prefix, what="topic prefix", allow_slash=True)
        checks = {
            "qos": (self.qos in (0, 1, 2), "0, 1 or 2"),
            "outbox": (self.outbox >= 1, ">= 1"),
            "inflight": (self.inflight >= 1, ">= 1"),
            "reconnect_min_s": (self.reconnect_min_s > 0, "> 0"),
            "reconnect_max_s": (self.reconnect_max_s >= self.reconnect_min_s, ">= reconnect_min_s"),
            "connect_timeout_s": (self.connect_timeout_s > 0, "> 0"),
            "keepalive_s": (self.keepalive_s >= 1, ">= 1"),
            "flush_timeout_s": (self.flush_timeout_s >= 0, ">= 0"),
        }
        for name, (ok, want) in checks.items():
            if not ok:
                raise SinkError(f"MQTT option {name} must be {want}, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class MqttStats:
    """Message counts of one stream (or of all, from ``MqttPublisher.stats()``)."""

    accepted: int = 0  # lines given to write()
    delivered: int = 0  # acknowledged by the broker (QoS 0: written to the connection)
    dropped: int = 0  # pushed out of the full outbox, oldest first (QoS 0: also sent while disconnected)
    pending: int = 0  # in the outbox or awaiting acknowledgement; after close(), never delivered

    @property
    def undelivered(self) -> int:
        """Messages that did not (yet) reach the broker: dropped + pending."""
        return self.dropped + self.pending


@dataclass(slots=True)
class _Counts:
    accepted: int = 0
    delivered: int = 0
    dropped: int = 0
    queued: int = 0  # in the outbox
    inflight: int = 0  # handed to paho, not yet acknowledged


def _parse_url(url: str) -> tuple[str, str, int, str | None, str | None]:
    """(scheme, host, port, user, password) of an mqtt:// or mqtts:// URL; SinkError otherwise."""
    parts = urlsplit(str(url))
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise SinkError(f"MQTT broker {url!r} is not a broker URL; pass mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    try:
        port = parts.port or _SCHEMES[parts.scheme]
    except ValueError:
        raise SinkError(f"MQTT broker {url!r}: the port is not a number in 1-65535") from None
    if parts.path not in ("", "/") or parts.query:
        raise SinkError(f"MQTT broker {url!r}: a broker URL has no path or query; set the topic with topic_prefix")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.scheme, parts.hostname, port, user, password


def _check_topic_level(text: str, *, what: str, allow_slash: bool) -> None:
    bad = [c for c in ("+", "#", "\0") if c in text] + (["/"] if "/" in text and not allow_slash else [])
    if not text or bad or text.startswith("/") or text.endswith("/") or "//" in text:
        raise SinkError(
            f"MQTT {what} {text!r} cannot be part of a topic: it must be non-empty, without '+', '#' or "
            f"empty levels{'' if allow_slash else ' or /'}; choose another"
        )


def _safe_url(url: str) -> str:
    """The URL without its password, for log lines and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def encode_line(result: FrameResult) -> bytes:
    """The result's JSONL record as compact UTF-8 JSON, exactly as ``JsonlWriter`` writes it (no newline)."""
    return json.dumps(result_to_record(result), separators=(",", ":")).encode("utf-8")


class MqttPublisher:
    """One broker connection that publishes many streams' lines; see the module docstring.

    Raises:
        SinkError: the URL, topic prefix or an option is invalid (nothing is connected yet).
    """

    def __init__(self, config: MqttConfig, *, close_with_last_sink: bool = True) -> None:
        self.config = config
        # False: streams come and go (a server) and the owner closes the publisher itself
        self.close_with_last_sink = close_with_last_sink
        self._scheme, self._host, self._port, user, password = _parse_url(config.url)
        self.name = _safe_url(config.url)
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id,
                                   clean_session=True)
        if user is not None:
            self._client.username_pw_set(user, password)
        if self._scheme == "mqtts":
            self._client.tls_set()
        self._client.max_inflight_messages_set(config.inflight)
        self._client.max_queued_messages_set(0)  # the outbox here bounds memory, oldest first
        self._client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        self._client.connect_timeout = config.connect_timeout_s
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._lock = threading.Condition()
        self._outbox: deque[tuple[str, bytes]] = deque()  # (stream, payload), oldest first
        self._counts: dict[str, _Counts] = {}
        self._open_sinks: set[str] = set()
        self._inflight: dict[int, str] = {}  # message id -> stream, handed to paho, not yet acknowledged
        self._early_acks: set[int] = set()  # acknowledged before publish() returned its message id
        self._users = 0
        self._started = self._closing = self._closed = False
        self._connected = False
        self._outage_logged = False
        self.connects = 0  # successful connections, the first included
        self._pump: threading.Thread | None = None

    # ---- streams -------------------------------------------------------------------------------
    def sink(self, stream: str) -> MqttSink:
        """The ``Sink`` of one stream, publishing to ``{topic_prefix}/{stream}``.

        Raises:
            SinkError: ``stream`` cannot be a topic level, or already has a sink here.
        """
        _check_topic_level(stream, what="stream name", allow_slash=False)
        with self._lock:
            if self._closed:
                raise SinkError(f"{self.name}: the MQTT publisher is closed; make a new one")
            if stream in self._open_sinks:
                raise SinkError(f"{self.name}: stream {stream!r} already publishes here; stream names must be unique")
            self._counts.setdefault(stream, _Counts())  # a stream back under its old name keeps counting up
            self._open_sinks.add(stream)
            self._users += 1
        return MqttSink(self, stream)

    def topic(self, stream: str) -> str:
        return f"{self.config.topic_prefix}/{stream}"

    @property
    def connected(self) -> bool:
        return self._connected

    def publish_line(self, stream: str, line: bytes) -> None:
        """Queue one encoded line for ``stream``'s topic; never waits. Drops (and counts) the oldest
        queued message of any stream when the outbox is full."""
        with self._lock:
            if self._closing:
                raise SinkError(f"{self.name}: cannot publish to {self.topic(stream)}: the publisher is closed")
            self._counts[stream].accepted += 1
            if len(self._outbox) >= self.config.outbox:
                old_stream, _ = self._outbox.popleft()
                self._counts[old_stream].dropped += 1
                self._counts[old_stream].queued -= 1
            self._outbox.append((stream, line))
            self._counts[stream].queued += 1
            self._start_locked()
            self._lock.notify_all()

    def stats(self, stream: str | None = None) -> MqttStats:
        """Counts for one stream, or summed over every stream when ``stream`` is None."""
        with self._lock:
            counts = [self._counts[stream]] if stream is not None else list(self._counts.values())
            return MqttStats(accepted=sum(c.accepted for c in counts), delivered=sum(c.delivered for c in counts),
                             dropped=sum(c.dropped for c in counts),
                             pending=sum(c.queued + c.inflight for c in counts))

    def wait_connected(self, timeout: float) -> bool:
        """Start the connection (if not yet) and wait up to ``timeout`` seconds for it; True once connected."""
        with self._lock:
            self._start_locked()
            return self._lock.wait_for(lambda: self._connected, timeout)

    def release(self, stream: str | None = None) -> None:
        """One sink is done; the last one closes the publisher (unless ``close_with_last_sink`` is off)."""
        with self._lock:
            self._open_sinks.discard(stream)
            self._users -= 1
            last = self._users <= 0
        if last and self.close_with_last_sink:
            self.close()

    def close(self) -> None:
        """Wait up to ``flush_timeout_s`` for pending messages, then disconnect. What was not delivered
        stays counted in ``stats()`` (``pending``) and is logged once."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            if self._started:  # a broker that is away gets until the timeout to come back
                # counts' inflight, not only the _inflight map: a message the pump took off the outbox is in
                # neither until publish() returns its mid.
                self._lock.wait_for(lambda: not self._outbox and not any(c.inflight for c in self._counts.values()),
                                    self.config.flush_timeout_s)
            self._closed = True
            self._lock.notify_all()
        if self._pump is not None:
            self._pump.join()
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()  # bounded by connect_timeout_s: the loop may be mid-attempt
        stats = self.stats()
        if stats.undelivered:
            log.warning("%s: %d of %d results were not delivered (%d dropped from the full outbox, %d pending "
                        "at close)", self.name, stats.undelivered, stats.accepted, stats.dropped, stats.pending)

    # ---- the pump: outbox -> paho, only while connected -----------------------------------------
    def _start_locked(self) -> None:
        if self._started:
            return
        self._started = True
        self._client.connect_async(self._host, self._port, keepalive=self.config.keepalive_s)
        self._client.loop_start()
        self._pump = threading.Thread(target=self._run_pump, name=f"mqtt-pump:{self.name}", daemon=True)
        self._pump.start()

    def _run_pump(self) -> None:
        qos = self.config.qos
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closed or (
                    self._connected and self._outbox and len(self._inflight) < self.config.inflight))
                if self._closed:
                    return
                stream, payload = self._outbox.popleft()
                counts = self._counts[stream]
                counts.queued -= 1
                counts.inflight += 1
            # Never under self._lock: paho calls on_publish holding its own lock, which publish() takes.
            info = self._client.publish(self.topic(stream), payload, qos=qos)
            with self._lock:
                if qos == 0:  # no acknowledgement: delivered if it went on the wire, lost otherwise
                    self._counts[stream].inflight -= 1
                    if info.rc == mqtt.MQTT_ERR_SUCCESS:
                        self._counts[stream].delivered += 1
                    else:
                        self._counts[stream].dropped += 1
                    self._lock.notify_all()
                elif info.mid in self._early_acks:
                    self._early_acks.discard(info.mid)
                    self._acknowledged(stream)
                else:
                    self._inflight[info.mid] = stream

    def _acknowledged(self, stream: str) -> None:
        counts = self._counts[stream]
        counts.inflight -= 1
        counts.delivered += 1
        self._lock.notify_all()

    # ---- paho callbacks (its network thread) ---------------------------------------------------
    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if self.config.qos == 0:
            return  # counted when handed over: QoS 0 has no acknowledgement
        with self._lock:
            stream = self._inflight.pop(mid, None)
            if stream is None:
                self._early_acks.add(mid)
            else:
                self._acknowledged(stream)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("%s refused the connection: %s; check the broker's credentials and access rules",
                      self.name, reason_code)
            return
        with self._lock:
            self.connects += 1
            if self._outage_logged or self.connects > 1:
                log.warning("%s: connected again (connection %d); %d results waiting", self.name, self.connects,
                            len(self._outbox) + len(self._inflight))
            self._connected = True
            self._outage_logged = False
            self._lock.notify_all()

    def _on_connect_fail(self, client, userdata) -> None:
        self._log_outage("cannot connect")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            self._connected = False
            self._lock.notify_all()
        if not self._closing:
            self._log_outage(f"connection lost ({reason_code})")

    def _log_outage(self, what: str) -> None:
        with self._lock:
            if self._outage_logged or self._closing:
                return
            self._outage_logged = True
        log.warning("%s: %s; retrying every %.1f-%.1f s; results wait in an outbox of %d (oldest dropped and "
                    "counted beyond)", self.name, what, self.config.reconnect_min_s, self.config.reconnect_max_s,
                    self.config.outbox)


class MqttSink:
    """One stream's results as MQTT messages on ``{topic_prefix}/{stream}`` (see the module docstring).

    Build it with ``MqttPublisher.sink(stream)`` to share a connection, or ``MqttSink.connect(config,
    stream=...)`` for a sink with a connection of its own.
    """

    wants_overlay = False

    def __init__(self, publisher: MqttPublisher, stream: str) -> None:
        self.publisher = publisher
        self.stream = stream
        self.topic = publisher.topic(stream)
        self._closed = False

    @classmethod
    def connect(cls, config: MqttConfig, *, stream: str) -> MqttSink:
        return MqttPublisher(config).sink(stream)

    def write(self, result: FrameResult) -> None:
        self.publisher.publish_line(self.stream, encode_line(result))

    def write_line(self, line: bytes) -> None:
        """Publish a line already encoded by ``encode_line`` (the Ray driver receives lines, not results)."""
        self.publisher.publish_line(self.stream, line.rstrip(b"\n"))

    @property
    def stats(self) -> MqttStats:
        return self.publisher.stats(self.stream)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.publisher.release(self.stream)
