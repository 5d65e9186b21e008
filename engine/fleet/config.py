"""The config file of ``streamseg serve``: run options for every stream, the server's own settings and
the streams, in one TOML file::

    weights = "random"            # top level: run options (the flags' names) that every stream starts from
    tracker = "none"

    [serve]                       # the server (all optional)
    control = "127.0.0.1:8000"    # the control API's HOST:PORT (port 0: any free port)
    token_file = "token.txt"      # bearer token of the control API; required when control is not loopback
    metrics_port = 9100           # /metrics, /healthz, /readyz (not set: off)
    metrics_host = "127.0.0.1"
    ray = false                   # false: one process; "auto" or "HOST:PORT": engine workers on Ray
    budget_ms = 200.0             # every stream's latency budget (not set: no degradation)
    workers = 2                   # Ray only: engine workers, their stream slots and resources
    worker_slots = 4
    worker_cpus = 1.0
    worker_gpus = 0.0

    [serve.degrade]               # how eagerly a stream over its budget steps down and back up
    down_after_s = 2.0

    [serve.mqtt]                  # publish every stream's results (one topic per stream)
    url = "mqtt://127.0.0.1:1883"

    [[streams]]                   # one table per stream
    name = "cam1"                 # unique; names its topic, metrics label and API path
    source = "rtsp://10.0.0.5/stream"
    jsonl = "out/cam1.jsonl"
    budget_ms = 100.0             # this stream's own budget
    mqtt = false                  # this stream stays off the bus
    slots = 1                     # Ray only: worker slots it takes

A stream's run options are the top-level ones, overridden by its own. Option keys are the fields of
``engine.options.RunOptions`` (the flags without dashes), or the sections of a ``--config`` file. Any
mistake is one ``ConfigError`` line naming the file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ConfigError, SinkError
from engine.fleet.degrade import DegradeConfig
from engine.fleet.placement import StreamSpec, WorkerSpec
from engine.options import RunOptions, load_toml, read_options
from engine.sinks.mqtt import MqttConfig

SERVE_EXAMPLE = "examples/serve.toml"

# key -> (type, check, what is allowed); a check of None accepts any value of the type
_Rule = tuple[type | tuple[type, ...], object, str]
_SERVE: dict[str, _Rule] = {
    "control": (str, None, "HOST:PORT, e.g. 127.0.0.1:8000 (port 0: any free port)"),
    "token_file": (str, None, "a path to a file holding the token"),
    "metrics_port": (int, lambda v: 0 <= v <= 65535, "an integer 0..65535 (0: any free port)"),
    "metrics_host": (str, None, "an address to bind, e.g. 127.0.0.1"),
    "ray": ((bool, str), lambda v: v is not True, 'false, "auto" or "HOST:PORT"'),
    "budget_ms": ((int, float), lambda v: v > 0 and math.isfinite(v), "a number of ms > 0"),
    "workers": (int, lambda v: v >= 1, "an integer >= 1"),
    "worker_slots": (int, lambda v: v >= 1, "an integer >= 1"),
    "worker_cpus": ((int, float), lambda v: v >= 0, "a number >= 0"),
    "worker_gpus": ((int, float), lambda v: v >= 0, "a number >= 0"),
}
_DEGRADE: dict[str, _Rule] = {
    name: ((int, float), lambda v: v > 0, "a number > 0")
    for name in ("over_fraction", "under_fraction", "down_after_s", "up_after_s", "window_s")
}
_STREAM: dict[str, _Rule] = {
    "name": (str, None, "a unique name without spaces, '/', '+' or '#'"),
    "budget_ms": _SERVE["budget_ms"],
    "mqtt": (bool, None, "true or false"),
    "slots": (int, lambda v: v >= 1, "an integer >= 1"),
}


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """One stream of the server."""

    name: str
    options: RunOptions  # the top-level options with the stream's own over them
    budget_ms: float | None = None  # latency budget; None: no degradation
    mqtt: bool = True  # publish to the bus, when the server has one
    slots: int = 1  # worker slots on Ray

    def spec(self) -> StreamSpec:
        """The stream as Ray placement sees it: a GPU slot for a CUDA device, a CPU slot otherwise."""
        device = "gpu" if self.options.device.startswith("cuda") else "cpu"
        return StreamSpec(name=self.name, source=self.options.source, device=device, slots=self.slots,
                          options=self)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """A whole ``serve`` config (see the module docstring)."""

    path: str  # where it was read from, for messages
    defaults: Mapping[str, object] = field(default_factory=dict)  # top-level options, {field: value}
    streams: tuple[StreamConfig, ...] = ()
    control_host: str = "127.0.0.1"
    control_port: int = 0
    token_file: Path | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    ray: str | None = None  # None: one process
    budget_ms: float | None = None
    degrade: DegradeConfig = DegradeConfig()
    mqtt: MqttConfig | None = None
    workers: tuple[WorkerSpec, ...] = ()

    def stream(self, table: Mapping[str, object], *, where: str) -> StreamConfig:
        """A stream from its table (a ``[[streams]]`` entry, or the body of ``POST /streams``).

        Raises:
            ConfigError: a missing or bad name, no source, an unknown key, a bad value (one line).
        """
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: a stream is a table of keys (name, source, ...), got {type(table).__name__}")
        own = {k: v for k, v in table.items() if k not in _STREAM}
        if isinstance(table.get("name"), str):
            where = f"{where} (stream {table['name']})"
        extra = _checked_keys({k: v for k, v in table.items() if k in _STREAM}, _STREAM, where=where)
        name = extra.get("name")
        if name is None:
            raise ConfigError(f"{where}: the stream has no name; give it name = \"cam1\" (unique)")
        values = {**self.defaults, **read_options(own, where=where)}
        if not values.get("source"):
            raise ConfigError(f"{where}: no source; set source = \"rtsp://...\" (or a file, or synthetic:...)")
        try:
            options = RunOptions(**values)
            config = StreamConfig(name=name, options=options, budget_ms=_float(extra.get("budget_ms", self.budget_ms)),
                                  mqtt=extra.get("mqtt", True), slots=extra.get("slots", 1))
            config.spec()  # the name's rules and the placement's
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return config


def read_serve_config(path: str | Path) -> ServeConfig:
    """``path`` read and checked whole (see the module docstring).

    Raises:
        ConfigError: one line naming the file, the key and what is allowed.
    """
    where = str(path)
    document = load_toml(path, flag="streamseg serve", example=SERVE_EXAMPLE)
    serve = document.pop("serve", {})
    streams = document.pop("streams", [])
    if not isinstance(serve, dict):
        raise ConfigError(f"{where}: serve must be a table, [serve]; see {SERVE_EXAMPLE}")
    if not isinstance(streams, list) or not all(isinstance(s, dict) for s in streams):
        raise ConfigError(f"{where}: streams must be an array of tables, [[streams]]; see {SERVE_EXAMPLE}")
    defaults = read_options(document, where=where)
    config = _server(serve, defaults, where=where)
    parsed, seen = [], {}
    for k, table in enumerate(streams, 1):
        stream = config.stream(table, where=f"{where}: [[streams]] {k}")
        if stream.name in seen:
            raise ConfigError(f"{where}: stream name {stream.name!r} appears twice ([[streams]] {seen[stream.name]} "
                              f"and {k}); names must be unique")
        seen[stream.name] = k
        parsed.append(stream)
    return dataclasses.replace(config, streams=tuple(parsed))


def _server(serve: dict, defaults: dict, *, where: str) -> ServeConfig:
    mqtt_table = serve.pop("mqtt", None)
    degrade_table = serve.pop("degrade", {})
    values = _checked_keys(serve, _SERVE, where=f"{where}: [serve]")
    host, port = parse_host_port(values.get("control", "127.0.0.1:0"), where=f"{where}: [serve] control")
    ray = values.get("ray", False)
    if not isinstance(degrade_table, dict):
        raise ConfigError(f"{where}: serve.degrade must be a table, [serve.degrade]")
    degrade_values = _checked_keys(degrade_table, _DEGRADE, where=f"{where}: [serve.degrade]")
    try:
        degrade = DegradeConfig(**{k: float(v) for k, v in degrade_values.items()})
        workers = tuple(WorkerSpec(device="gpu" if values.get("worker_gpus", 0) > 0 else "cpu",
                                   slots=values.get("worker_slots", 4), num_cpus=float(values.get("worker_cpus", 1.0)),
                                   num_gpus=float(values.get("worker_gpus", 0.0)))
                        for _ in range(values.get("workers", 2)))
    except ConfigError as exc:
        raise ConfigError(f"{where}: [serve]: {exc}") from None
    return ServeConfig(path=where, defaults=defaults, control_host=host, control_port=port,
                       token_file=Path(values["token_file"]) if "token_file" in values else None,
                       metrics_host=values.get("metrics_host", "127.0.0.1"), metrics_port=values.get("metrics_port"),
                       ray=ray or None, budget_ms=_float(values.get("budget_ms")), degrade=degrade,
                       mqtt=_mqtt(mqtt_table, where=where), workers=workers)


def _mqtt(table: object, *, where: str) -> MqttConfig | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: serve.mqtt must be a table, [serve.mqtt]")
    known = [f.name for f in dataclasses.fields(MqttConfig)]
    unknown = [k for k in table if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key [serve.mqtt] {unknown[0]}; allowed here: {', '.join(known)}")
    if "url" not in table:
        raise ConfigError(f"{where}: [serve.mqtt] needs url = \"mqtt://HOST:PORT\"")
    try:
        return MqttConfig(**table)
    except (SinkError, TypeError) as exc:
        raise ConfigError(f"{where}: [serve.mqtt]: {exc}") from None


def _checked_keys(table: Mapping[str, object], rules: dict[str, _Rule], *, where: str) -> dict[str, object]:
    out = {}
    for key, value in table.items():
        if key not in rules:
            raise ConfigError(f"{where}: unknown key {key}; allowed here: {', '.join(rules)}")
        kind, check, allowed = rules[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wrong_type = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
        if wrong_type or (check is not None and not check(value)):
            raise ConfigError(f"{where}: {key} = {value!r} is not allowed; allowed: {allowed}")
        out[key] = value
    return out


def parse_host_port(text: str, *, where: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ConfigError naming ``where`` otherwise."""
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: {text!r} is not HOST:PORT; allowed: e.g. 127.0.0.1:8000 (port 0: any free port)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _float(value: object) -> float | None:
    return None if value is None else float(value)
