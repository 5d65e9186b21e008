"""``streamseg serve CONFIG.toml``: many streams from one config file, changed at run time through a
control API, watched through Prometheus metrics, on one machine or on a Ray cluster."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from pathlib import Path

from engine.fleet.config import ServeConfig, parse_host_port, read_serve_config


def add_to(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve", help="run the streams of a config file as a service (control API, metrics, MQTT, Ray)",
        description="Run every [[streams]] entry of CONFIG.toml (format: examples/serve.toml) until every "
                    "source has ended or POST /drain. Flags override the file's [serve] table.")
    serve.add_argument("config", type=Path, metavar="CONFIG.toml", help="the streams and the server's settings")
    serve.add_argument("--control", metavar="HOST:PORT", default=None,
                       help="the control API's address (default: [serve] control, else 127.0.0.1:0, any free port)")
    serve.add_argument("--token-file", type=Path, default=None, metavar="PATH",
                       help="bearer token of the control API; required when it is bound beyond loopback")
    serve.add_argument("--metrics-port", type=int, default=None, metavar="P",
                       help="serve /metrics, /healthz and /readyz on this port (0: any free port; default off)")
    serve.add_argument("--metrics-host", default=None, metavar="HOST", help="where metrics listen (default 127.0.0.1)")
    serve.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                       help="run the streams on Ray engine workers: 'auto' (this machine's cluster, or a private "
                            "one) or the head's HOST:PORT (needs pip install 'streamseg[ray]')")
    serve.add_argument("-v", "--verbose", action="store_true", help="log every event, not only warnings")
    serve.set_defaults(command=cmd_serve)


def _with_flags(config: ServeConfig, args: argparse.Namespace) -> ServeConfig:
    changes: dict[str, object] = {}
    if args.control is not None:
        changes["control_host"], changes["control_port"] = parse_host_port(args.control, where="--control")
    if args.token_file is not None:
        changes["token_file"] = args.token_file
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            from engine.errors import ConfigError

            raise ConfigError(f"--metrics-port {args.metrics_port}: allowed: 0..65535 (0: any free port)")
        changes["metrics_port"] = args.metrics_port
    if args.metrics_host is not None:
        changes["metrics_host"] = args.metrics_host
    if args.ray is not None:
        changes["ray"] = args.ray
    return dataclasses.replace(config, **changes)


def _say(line: str) -> None:
    print(f"streamseg: {line}", file=sys.stderr, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.fleet.control import ControlServer, read_token
    from engine.fleet.metrics import FleetMetrics, MetricsServer

    config = _with_flags(read_serve_config(args.config), args)
    token = read_token(config.token_file) if config.token_file is not None else None
    metrics = FleetMetrics() if config.metrics_port is not None else None
    fleet = _fleet(config, metrics)
    control = ControlServer(fleet, host=config.control_host, port=config.control_port, token=token)
    publisher = fleet.mqtt if config.mqtt is not None else None
    servers = [control.start()]
    try:
        _say(f"control API at {control.url} (GET /streams, POST /streams, DELETE /streams/NAME, "
             f"PUT /streams/NAME/budget, POST /drain)")
        if metrics is not None:
            served = MetricsServer(metrics.registry, host=config.metrics_host, port=config.metrics_port,
                                   ready=lambda: fleet.started and not fleet.draining).start()
            servers.append(served)
            _say(f"metrics at {served.url}/metrics (health: /healthz, readiness: /readyz)")
        views = _run(fleet)
    finally:
        for server in servers:
            server.close()
        if publisher is not None:
            publisher.close()
            stats = publisher.stats()
            _say(f"MQTT {publisher.name}: {stats.delivered} of {stats.accepted} results delivered, "
                 f"{stats.undelivered} not ({stats.dropped} dropped, {stats.pending} pending at exit)")
    for view in views:
        line = f"{view.name:<16} {view.state:<9} {view.frames:>7} frames  session {view.session}"
        print(line + (f"  error: {view.error}" if view.error else ""))
    return 1 if any(v.state == "failed" for v in views) else 0


def _fleet(config: ServeConfig, metrics):
    from engine.sinks.mqtt import MqttPublisher

    mqtt = MqttPublisher(config.mqtt, close_with_last_sink=False) if config.mqtt is not None else None
    if config.ray is not None:
        from engine.fleet.ray_fleet import RayFleet

        return RayFleet(config, metrics=metrics, mqtt=mqtt, on_event=_say)
    from engine.fleet.local import LocalFleet

    return LocalFleet(config, metrics=metrics, mqtt=mqtt, on_event=_say)


def _run(fleet) -> list:
    """Run until done; SIGTERM and Ctrl-C drain the fleet (outputs closed whole) instead of cutting it."""
    def drain(signum, frame) -> None:
        _say(f"{signal.Signals(signum).name}: draining (every stream stops, its outputs are closed)")
        threading.Thread(target=fleet.drain, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, drain) if threading.current_thread() is threading.main_thread() else None
    try:
        fleet.start()
        while not fleet.wait(timeout_s=0.5):
            pass
    except KeyboardInterrupt:
        _say("interrupted: draining (every stream stops, its outputs are closed)")
        fleet.drain()
        fleet.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return fleet.views()
