"""Streams per machine with ``streamseg serve``, and the cost of running them on Ray.

    python -m benchmarks.fleet [--max-streams 3] [--seconds 10] [--warmup-s 5] [--fps 30] [--size 640x480]
                               [--conf 0.5]
                               [--tracker-size 256] [--ray-streams 2] [--ray-frames 60] [--weights PATH]

1. Real time: N cameras served in one process. Each is an H.264 clip of a synthetic street scene, read
   like a camera (``realtime`` + ``live``: frames arrive at ``--fps``, decoded by PyAV, and the newest
   wins); the scenes are encoded once, beforehand, because rendering them costs far more CPU than
   decoding (tens of ms a 640x480 frame against a few), which would measure the renderer, not the
   engine. Served N = 1 .. ``--max-streams`` (batching can raise the total rate while
   each stream falls behind, so every N runs); once with the detector alone (YOLOv8n-seg, ``--tracker
   none``) and once with the SAM 2.1 hiera-t tracker and the fuser (at most 5 tracks a stream). For
   each N, each stream's processed frames per second, the share of its frames dropped, and its age. A stream is at real time when it processes >= 95 % of its
   frames; "streams at real time" is the largest N where all are. "Capacity" is the frames processed
   per second over all streams, divided by ``--fps``: how many cameras the machine's rate would carry.
2. Ray against one process: the same ``--ray-streams`` clips (not paced: as fast as the engine goes) served once in one process and once on one Ray engine worker on a private local cluster
   holding all of them (so the batching is the same and the difference is Ray's: worker process,
   results sent to the driver as lines). Throughput is results per second from the first ticks (5 a
   stream, left out: lazy initialisation) to the last result handed out, read from the JSONL files
   (start-up and model loading excluded); the ratio is Ray's over the single process.

Measured through the served path (config file, ``LocalFleet`` / ``RayFleet``), on the engine's real
networks. The detector's weights are a user-like checkpoint (``tests/checkpoints.py``: random weights
spread so that it detects things, as trained ones do) unless ``--weights`` names a file; random weights
cost what trained ones cost, but a plain random detector finds nothing and the tracker would idle.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import environment, percentiles, write_json


def _config(tmp: Path, names: Sequence[str], *, source: str, top: str, serve: str = "") -> Path:
    text = [top, "[serve]", serve]
    for k, name in enumerate(names):
        text += ["[[streams]]", f'name = "{name}"', f'source = "{source.format(seed=k + 1)}"',
                 f'jsonl = "{tmp / (name + ".jsonl")}"']
    path = tmp / "serve.toml"
    path.write_text("\n".join(text) + "\n")
    return path


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _handed_out(record: dict) -> float:
    return record["capture_time"] + record["age_ms"] / 1000.0


def _serve(config_path: Path, *, ray: bool = False, ray_init: dict | None = None) -> float:
    """Serve the config to its end; returns the wall seconds."""
    from engine.fleet.config import read_serve_config

    config = read_serve_config(config_path)
    started = time.perf_counter()
    if ray:
        from engine.fleet.ray_fleet import RayFleet

        fleet = RayFleet(config, on_event=lambda line: None, **(ray_init or {}))
        fleet.start()
        fleet.wait()
    else:
        from engine.fleet.local import LocalFleet

        fleet = LocalFleet(config, on_event=lambda line: None)
        fleet.run()
    failed = [v for v in fleet.views() if v.state == "failed"]
    if failed:
        raise RuntimeError(f"stream {failed[0].name} failed: {failed[0].error}")
    return time.perf_counter() - started


def _network_options(weights: str, tracker: bool, tracker_size: int, imgsz: int, conf: float) -> str:
    lines = [f'weights = "{weights}"', 'device = "cpu"', f"imgsz = {imgsz}", f"conf = {conf}"]
    if tracker:
        lines += ['tracker = "sam2.1_hiera_t"', 'tracker_weights = "random"', f"tracker_size = {tracker_size}",
                  "max_tracks = 5"]
    else:
        lines += ['tracker = "none"']
    return "\n".join(lines)


def clips(directory: Path, *, count: int, frames: int, fps: float, size: str) -> str:
    """``count`` H.264 clips of synthetic scenes (seeds 1..count); returns the path pattern ({seed})."""
    from engine.sources.synthetic import SyntheticScene, to_video

    for seed in range(1, count + 1):
        scene = SyntheticScene.from_spec(f"seed={seed},frames={frames},size={size},objects=5,fps={fps:g}")
        to_video(scene, directory / f"clip{seed}.mp4")
    return str(directory / "clip{seed}.mp4")


def realtime(*, n: int, tracker: bool, seconds: float, warmup_s: float, fps: float, source: str, weights: str,
             tracker_size: int, imgsz: int, conf: float) -> dict:
    """N paced live streams in one process; per-stream rates over the window after ``warmup_s``."""
    names = [f"cam{k}" for k in range(n)]
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        tmp = Path(tmp)
        top = _network_options(weights, tracker, tracker_size, imgsz, conf) + "\nrealtime = true\nlive = true"
        _serve(_config(tmp, names, source=source, top=top))
        per_stream = [_records(tmp / f"{name}.jsonl") for name in names]
    start = min(r[0]["capture_time"] for r in per_stream if r) + warmup_s
    streams = []
    for name, records in zip(names, per_stream):
        window = [r for r in records if r["capture_time"] >= start and _handed_out(r) <= start + seconds]
        span = window[-1]["frame"] - window[0]["frame"] + 1 if len(window) > 1 else 0
        streams.append({"stream": name, "processed_fps": round(len(window) / seconds, 2),
                        "dropped_share": round(1 - len(window) / span, 3) if span else 1.0,
                        "age_ms": percentiles([r["age_ms"] for r in window]),
                        "tracks_mean": round(float(np.mean([len(r["instances"]) for r in window])), 2)
                        if window else 0.0})
    processed = sum(s["processed_fps"] for s in streams)
    return {"streams": n, "tracker": tracker, "per_stream": streams,
            "all_real_time": all(s["processed_fps"] >= 0.95 * fps for s in streams),
            "capacity_streams": round(processed / fps, 2)}


def ray_vs_single(*, n: int, frames: int, source: str, weights: str, tracker: bool, tracker_size: int,
                  imgsz: int, conf: float, rounds: int = 2) -> dict:
    """The same finite streams in one process and on one Ray worker, alternating ``rounds`` times (a
    shared machine's load drifts); throughput from the JSONL. The worker reserves every CPU, so Ray
    gives it as many threads (OMP_NUM_THREADS) as the single process has (``torch.get_num_threads``)."""
    names = [f"cam{k}" for k in range(n)]
    top = _network_options(weights, tracker, tracker_size, imgsz, conf) + f"\nmax_frames = {frames}"
    import torch

    cpus = torch.get_num_threads()  # Ray gives a worker OMP_NUM_THREADS = its CPUs: as many as here
    out: dict = {"single": [], "ray": []}
    for _ in range(rounds):
        for mode in ("single", "ray"):
            with tempfile.TemporaryDirectory(prefix="fleet-bench-", dir="/tmp") as tmp:
                tmp = Path(tmp)
                serve = f'ray = "auto"\nworkers = 1\nworker_slots = {n}\nworker_cpus = {cpus}' if mode == "ray" else ""
                ray_init = {"num_cpus": max(cpus, os.cpu_count() or 1), "include_dashboard": False, "_temp_dir": str(tmp / "r"),
                            "_node_ip_address": "127.0.0.1"}
                if mode == "ray":
                    _private_ray_environment(tmp)
                wall = _serve(_config(tmp, names, source=source, top=top, serve=serve), ray=mode == "ray",
                              ray_init=ray_init)
                if mode == "ray":
                    import ray

                    ray.shutdown()
                records = [r for name in names for r in _records(tmp / f"{name}.jsonl")]
            assert len(records) == n * frames, f"{mode}: {len(records)} of {n * frames} results"
            out[mode].append(_throughput(records, n=n, wall=wall))
    ratios = [r["results_per_s"] / s["results_per_s"] for s, r in zip(out["single"], out["ray"])]
    out["ray_over_single_throughput"] = [round(x, 3) for x in ratios]
    out["ray_over_single_throughput_mean"] = round(float(np.mean(ratios)), 3)
    out["streams"], out["frames"], out["tracker"] = n, frames, tracker
    return out


def _throughput(records: list[dict], *, n: int, wall: float) -> dict:
    times = sorted(_handed_out(r) for r in records)
    skip = min(5 * n, len(times) // 4)  # the first ticks pay for lazy initialisation (threads, allocators)
    return {"results": len(records), "wall_s": round(wall, 1),
            "results_per_s": round((len(times) - 1 - skip) / (times[-1] - times[skip]), 2),
            "total_ms": percentiles([r["times_ms"]["total"] for r in records]),
            "age_ms": percentiles([r["age_ms"] for r in records]),
            "load_average_1min": os.getloadavg()[0]}


def _private_ray_environment(tmp: Path) -> None:
    """A private cluster: its token and caches under a temporary HOME, loopback only, no token auth."""
    os.environ["HOME"] = str(tmp)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["PYTHONPATH"] = f"{Path(__file__).resolve().parents[1]}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"


def run(*, max_streams: int, seconds: float, warmup_s: float, fps: float, size: str, tracker_size: int,
        imgsz: int, conf: float, ray_streams: int, ray_frames: int, weights: str | None,
        parts: Sequence[str] = ("realtime", "ray"), out: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="fleet-inputs-") as tmp:
        if weights is None:
            from tests.checkpoints import write_yolo_checkpoint

            weights = str(write_yolo_checkpoint(Path(tmp) / "yolov8n-seg.pt"))
        frames = int(fps * (warmup_s + seconds))
        source = clips(Path(tmp), count=max(max_streams, ray_streams), frames=max(frames, ray_frames), fps=fps,
                       size=size)
        report: dict = {**environment(), "fps": fps, "size": size, "imgsz": imgsz, "conf": conf,
                        "tracker_size": tracker_size,
                        "seconds": seconds, "warmup_s": warmup_s, "load_average_start": os.getloadavg()}
        report["realtime"] = {}
        for tracker in (False, True) if "realtime" in parts else ():
            rows = []
            for n in range(1, max_streams + 1):
                row = realtime(n=n, tracker=tracker, seconds=seconds, warmup_s=warmup_s, fps=fps, source=source,
                               weights=weights, tracker_size=tracker_size, imgsz=imgsz, conf=conf)
                rows.append(row)
                _print_row(row)
            key = "detector+tracker" if tracker else "detector"
            report["realtime"][key] = {"rows": rows,
                                       "streams_at_real_time": max([r["streams"] for r in rows if r["all_real_time"]],
                                                                   default=0),
                                       "capacity_streams": max(r["capacity_streams"] for r in rows)}
        if "ray" in parts:
            report["ray_vs_single"] = ray_vs_single(n=ray_streams, frames=ray_frames, source=source, weights=weights,
                                                    tracker=False, tracker_size=tracker_size, imgsz=imgsz, conf=conf)
    report["load_average_end"] = os.getloadavg()
    path = write_json("fleet", report, out=out)
    for key, value in report["realtime"].items():
        print(f"{key}: {value['streams_at_real_time']} stream(s) at real time ({fps:g} fps {size}); capacity "
              f"{value['capacity_streams']} streams' worth of frames")
    if "ray_vs_single" in report:
        rv = report["ray_vs_single"]
        print(f"Ray / single process ({rv['streams']} streams, {rv['frames']} frames each, alternating): throughput "
              f"{[r['results_per_s'] for r in rv['ray']]} / {[r['results_per_s'] for r in rv['single']]} results/s; "
              f"ratios {rv['ray_over_single_throughput']} (mean {rv['ray_over_single_throughput_mean']})")
    print(f"{report['device']}; load average {report['load_average_start']}; written to {path}")
    return report


def _print_row(row: dict) -> None:
    rates = ", ".join(f"{s['processed_fps']:.1f} fps ({s['dropped_share']:.0%} dropped, age p50 "
                      f"{s['age_ms'].get('p50', float('nan')):.0f} ms)" for s in row["per_stream"])
    print(f"{'detector+tracker' if row['tracker'] else 'detector'} x{row['streams']}: {rates}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-streams", type=int, default=3, help="most streams tried (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per run (default 10)")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="left out before the window (default 5)")
    parser.add_argument("--fps", type=float, default=30.0, help="the cameras' frame rate (default 30)")
    parser.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    parser.add_argument("--imgsz", type=int, default=640, help="detector input size (default 640)")
    parser.add_argument("--conf", type=float, default=0.5,
                        help="detector threshold (default 0.5: the user-like checkpoint then keeps a few objects a "
                             "frame, as a trained one does on a street; at 0.25 it keeps ~100, and their masks and "
                             "RLE dominate the cost)")
    parser.add_argument("--tracker-size", type=int, default=256, help="SAM 2 input size (default 256)")
    parser.add_argument("--ray-streams", type=int, default=2, help="streams of the Ray comparison (default 2)")
    parser.add_argument("--ray-frames", type=int, default=60, help="frames per stream there (default 60)")
    parser.add_argument("--weights", default=None, help="detector weights (default: a user-like checkpoint)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own). On a loaded machine 1 thread avoids parallel "
                             "regions waiting for a descheduled thread")
    parser.add_argument("--parts", default="realtime,ray", help="what to run: realtime, ray or both (default)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/out/...)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    run(max_streams=args.max_streams, seconds=args.seconds, warmup_s=args.warmup_s, fps=args.fps, size=args.size,
        tracker_size=args.tracker_size, imgsz=args.imgsz, conf=args.conf, ray_streams=args.ray_streams, ray_frames=args.ray_frames,
        weights=args.weights, parts=args.parts.split(","), out=args.out)


if __name__ == "__main__":
    main()
