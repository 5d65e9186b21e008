"""The live preview under load: the engine's frame rate and memory with 20 concurrent viewers that keep
hanging up abruptly, against the same engine with nobody watching, in one run.

    python -m benchmarks.reliability_preview [--viewers 20] [--phase-s 20] [--cycles 3]
                                             [--detector random|none] [--size 640x480]

One pipeline runs throughout (a synthetic stream through ``--detector``, no tracker, the preview sink),
as ``streamseg run --preview`` builds it. Phases alternate: nobody watching, then ``--viewers`` MJPEG
viewers, ``--cycles`` times, so machine load falls on both alike. The viewers run in another process
(their threads and buffers are not the engine's), reading the stream; every ``--churn-s`` one of them
resets its connection (SO_LINGER 0: RST, as a crashed browser or a dropped network does) and a new one
connects in its place. Two more connections per viewer phase connect and never send a request; they
must be dropped by the preview's idle timeout.

Reported per phase: engine frames per second and RSS; at the end, the ratio of the viewer phases' rate
to the idle phases', the RSS change, and whether the preview's connections and the process's threads
came back to where they were once the viewers left. The goal: rate and RSS unchanged (within noise).
With viewers the preview JPEG-encodes every frame (without, it encodes none), which is the cost this
measures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import selectors
import socket
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Phase:
    viewers: int
    seconds: float
    frames: int
    fps: float
    rss_mib: float  # at the end of the phase
    threads: int  # threads of the engine process at the end of the phase
    connections: int  # preview connections open at the end of the phase


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _viewer_process(host: str, port: int, viewers: int, churn_s: float, idle: int, ready: mp.Event,
                    stop: mp.Event, results: mp.Queue) -> None:
    """Keep ``viewers`` MJPEG viewers reading until ``stop``; reset one every ``churn_s`` seconds and
    connect a new one; also open ``idle`` connections that never send a request. This module imports
    nothing heavy at the top, so the spawned process starts quickly."""
    rng = random.Random(0)
    selector = selectors.DefaultSelector()
    totals = {"bytes": 0, "resets": 0, "refused": 0, "connects": 0, "idle_dropped": 0}

    def connect() -> None:
        sock = socket.create_connection((host, port), timeout=5)
        sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, "viewer")
        totals["connects"] += 1

    def reset(sock: socket.socket) -> None:
        selector.unregister(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    for _ in range(viewers):
        connect()
    silent = [socket.create_connection((host, port), timeout=5) for _ in range(idle)]
    for sock in silent:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, "idle")
    ready.set()
    next_churn = time.monotonic() + churn_s
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if key.data == "idle":  # readable means closed by the server: the idle timeout worked
                selector.unregister(sock)
                sock.close()
                totals["idle_dropped"] += 1
                continue
            if data.startswith(b"HTTP/1.0 503"):
                totals["refused"] += 1
            if not data:
                selector.unregister(sock)
                sock.close()
                connect()
                continue
            totals["bytes"] += len(data)
        if time.monotonic() >= next_churn:
            next_churn += churn_s
            live = [k.fileobj for k in selector.get_map().values() if k.data == "viewer"]
            if live:
                reset(rng.choice(live))
                totals["resets"] += 1
                connect()
    for key in list(selector.get_map().values()):
        reset(key.fileobj)
    results.put(totals)


def _phase(pipeline_iter, pipeline, seconds: float, viewers: int, preview) -> Phase:
    start_frames, start = pipeline.frames, time.monotonic()
    while time.monotonic() - start < seconds:
        next(pipeline_iter)
    elapsed = time.monotonic() - start
    frames = pipeline.frames - start_frames
    return Phase(viewers=viewers, seconds=round(elapsed, 2), frames=frames, fps=round(frames / elapsed, 2),
                 rss_mib=round(_rss_bytes() / MIB, 2), threads=threading.active_count(),
                 connections=preview.connections)


def measure(*, viewers: int = 20, phase_s: float = 20.0, cycles: int = 3, churn_s: float = 0.25,
            idle_connections: int = 2, detector: str = "random", size: str = "640x480",
            warmup_s: float = 10.0) -> dict:
    """Alternate idle and watched phases over one running pipeline; returns the report."""
    from benchmarks.common import environment
    from engine.app import RunOptions, build_pipeline
    from engine.sinks import PreviewServer

    spec = f"synthetic:seed=1,frames=100000000,size={size},objects=6"
    with tempfile.TemporaryDirectory(prefix="streamseg-preview-bench-") as tmp:
        options = RunOptions(source=spec, jsonl=Path(tmp) / "r.jsonl", preview=True, preview_port=0,
                             device="cpu", detector="none" if detector == "none" else "yolov8n-seg",
                             weights="random", tracker="none")
        pipeline = build_pipeline(options).pipeline
        preview = next(s for s in pipeline.sinks if isinstance(s, PreviewServer))
        host, port = preview._server.server_address[:2]
        frames = iter(pipeline)
        _phase(frames, pipeline, warmup_s, 0, preview)  # allocators, caches, first JPEG
        threads_before, connections_before = threading.active_count(), preview.connections
        ctx = mp.get_context("spawn")
        phases: list[Phase] = []
        viewer_totals = []
        for _ in range(cycles):
            phases.append(_phase(frames, pipeline, phase_s, 0, preview))
            ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
            proc = ctx.Process(target=_viewer_process, daemon=True,
                               args=(host, port, viewers, churn_s, idle_connections, ready, stop, results))
            proc.start()
            while not ready.is_set():  # the engine runs on while the viewers connect
                if not proc.is_alive():
                    raise RuntimeError("the viewer process died before its viewers connected")
                next(frames)
            phases.append(_phase(frames, pipeline, phase_s, viewers, preview))
            stop.set()
            viewer_totals.append(results.get(timeout=30))
            proc.join(timeout=10)
        settle = _phase(frames, pipeline, 3.0, 0, preview)  # viewers gone: handlers notice within 1 s
        frames.close()
    fps_idle = round(statistics.median(p.fps for p in phases if p.viewers == 0), 2)
    fps_watched = round(statistics.median(p.fps for p in phases if p.viewers), 2)
    return {
        **environment(), "source": spec, "detector": detector, "viewers": viewers, "phase_s": phase_s,
        "cycles": cycles, "churn_s": churn_s, "idle_connections": idle_connections,
        "fps_idle": fps_idle, "fps_watched": fps_watched, "fps_ratio": round(fps_watched / fps_idle, 3),
        "rss_first_mib": phases[0].rss_mib, "rss_last_mib": settle.rss_mib,
        "rss_change_mib": round(settle.rss_mib - phases[0].rss_mib, 2),
        "threads_before": threads_before, "threads_after": settle.threads,
        "connections_before": connections_before, "connections_after": settle.connections,
        "viewer_resets": sum(t["resets"] for t in viewer_totals),
        "viewer_connects": sum(t["connects"] for t in viewer_totals),
        "viewer_mib_received": round(sum(t["bytes"] for t in viewer_totals) / MIB, 1),
        "refused": sum(t["refused"] for t in viewer_totals),
        "idle_dropped": sum(t["idle_dropped"] for t in viewer_totals),
        "phases": [asdict(p) for p in phases],
    }


def run(out: Path | None = None, **kwargs) -> dict:
    """Measure, write the JSON report, print a table; returns the report."""
    from benchmarks.common import write_json

    report = measure(**kwargs)
    path = write_json("reliability_preview", report, out=out)
    print(f"{'phase':>6}{'viewers':>9}{'fps':>9}{'RSS MiB':>10}{'threads':>9}{'conns':>7}")
    for i, p in enumerate(report["phases"]):
        print(f"{i:>6}{p['viewers']:>9}{p['fps']:>9.2f}{p['rss_mib']:>10.1f}{p['threads']:>9}"
              f"{p['connections']:>7}")
    print(f"\nfps watched / idle: {report['fps_ratio']:.3f} ({report['fps_watched']} vs "
          f"{report['fps_idle']}); "
          f"RSS {report['rss_first_mib']} -> {report['rss_last_mib']} MiB ({report['rss_change_mib']:+.1f})")
    print(f"threads {report['threads_before']} -> {report['threads_after']}, preview connections "
          f"{report['connections_before']} -> {report['connections_after']}; "
          f"{report['viewer_resets']} abrupt "
          f"hang-ups, {report['viewer_connects']} connects, {report['refused']} refused, "
          f"{report['idle_dropped']} of {report['idle_connections'] * report['cycles']} silent connections "
          f"dropped by the idle timeout; {report['viewer_mib_received']} MiB sent to viewers")
    print(f"{report['device']}; written to {path}")
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--phase-s", type=float, default=20.0, help="seconds per phase (default 20)")
    parser.add_argument("--cycles", type=int, default=3, help="idle + watched phase pairs (default 3)")
    parser.add_argument("--churn-s", type=float, default=0.25, help="one viewer hangs up this often")
    parser.add_argument("--detector", choices=["random", "none"], default="random",
                        help="YOLOv8n-seg on random weights, or no network (default random)")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/out/...)")
    args = parser.parse_args(argv)
    run(out=args.out, viewers=args.viewers, phase_s=args.phase_s, cycles=args.cycles, churn_s=args.churn_s,
        detector=args.detector, size=args.size)


if __name__ == "__main__":
    main()
