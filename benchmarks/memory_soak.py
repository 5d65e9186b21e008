"""Memory over a long run: a synthetic stream through the detector, the tracker with 5 objects and the
fuser, with the process's resident memory sampled throughout; the figure is RSS's slope after warm-up.

    python -m benchmarks.memory_soak [--minutes 30] [--warmup-minutes 3] [--objects 5]
                                     [--tracks prompted|fused] [--size 640x480] [--tracker-size 256]

The engine runs as ``streamseg run`` runs it on a CPU: YOLOv8n-seg (ONNX Runtime) and SAM 2.1 hiera-t
(ONNX Runtime image encoder) on random weights, the fuser, a JSONL sink, and the synthetic scene rendered
frame by frame (it holds no frames). Random weights cost what trained ones cost, but their output means
nothing: random SAM 2 masks are near-identical blobs over much of the frame, so the fuser, rightly,
merges their tracks as duplicates and keeps about 2 alive. Hence two ways to hold tracks:

- ``prompted`` (default): the ``--objects`` objects are prompted on the first frame (boxes on a grid)
  and tracked to the end, while the detector runs on every frame: the tracker's memory bank holds
  ``--objects`` objects throughout, which is where unbounded growth would show.
- ``fused``: the fuser's own policy, starting a track from any kept detection (``spawn_conf`` =
  ``conf``, ``spawn_after`` 1, ``spawn_max_overlap`` 1) up to ``--objects``: fewer live tracks, but
  spawn, merge and retire run all along.

Memory must not grow with stream length (DESIGN.md decision 1): the goal is a slope under 1 MiB per
10 minutes once the allocators and caches have warmed up.

RSS is not smooth: per-frame buffers (the detector's masks, the encoder's activations, whose size
follows the number of detections) are taken and handed back to the system, so it jumps between a floor
and peaks tens of MiB above it (45-70 MiB on the 2-core CPU) several times a minute; and glibc's
allocator may hold a freed region for many minutes, lifting every sample of those minutes, before it
trims its heap and RSS falls back in one step. Leaked memory is never handed back, so it lifts the level
RSS falls back to; held memory does not. The figure held to the goal is therefore the slope of the
returns (``return_slope_mib_per_10min``: a line through the samples where RSS fell by more than 10 MiB,
after warm-up). Also reported: a least-squares line through every sample, one through each window's
lowest sample (``--window-s``) and one through each window's highest; a window inside a held stretch
reports the held level, so these rise while memory is held even when it is handed back later. A slope
of 1 MiB per 10 minutes is resolved only over a long run (30 minutes); a few minutes check the
benchmark, not the goal. The report also gives
RSS at the start and end of the fit, its maximum, the tracker's own tensor bytes (bounded by its
memory-bank policy), and the number of live tracks.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import environment, write_json

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float  # seconds since the first frame
    frames: int
    rss_mib: float
    tracker_mib: float  # tensors the tracker holds (memory bank, current frame), weights excluded
    tracks: int  # live tracked objects


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def slope_mib_per_10min(samples: Sequence[Sample], *, after_s: float) -> float | None:
    """Least-squares slope of RSS over time for samples after ``after_s``; None with fewer than 3."""
    kept = [s for s in samples if s.t_s >= after_s]
    if len(kept) < 3:
        return None
    t = np.array([s.t_s for s in kept])
    rss = np.array([s.rss_mib for s in kept])
    return float(np.polyfit(t, rss, 1)[0] * 600.0)


def envelope_slope_mib_per_10min(samples: Sequence[Sample], *, after_s: float, window_s: float = 60.0,
                                 lowest: bool = True) -> float | None:
    """Slope of each window's lowest (or highest) RSS sample after ``after_s`` (see the module
    docstring); None with fewer than 3 whole windows."""
    windows: dict[int, list[Sample]] = {}
    for s in samples:
        if s.t_s >= after_s:
            windows.setdefault(int((s.t_s - after_s) // window_s), []).append(s)
    last = max(windows, default=-1)
    pick = min if lowest else max
    points = [pick(w, key=lambda s: s.rss_mib) for k, w in sorted(windows.items()) if k < last]  # whole ones
    if len(points) < 3:
        return None
    return float(np.polyfit([s.t_s for s in points], [s.rss_mib for s in points], 1)[0] * 600.0)


RETURN_DROP_MIB = 10.0  # a fall in one sample larger than this is the allocator handing memory back


def returns_after(samples: Sequence[Sample], *, after_s: float, drop_mib: float = RETURN_DROP_MIB) -> list[Sample]:
    """The samples after ``after_s`` that are more than ``drop_mib`` below the one before them."""
    fit = [s for s in samples if s.t_s >= after_s]
    return [b for a, b in zip(fit, fit[1:]) if a.rss_mib - b.rss_mib > drop_mib]


def return_slope_mib_per_10min(samples: Sequence[Sample], *, after_s: float,
                               drop_mib: float = RETURN_DROP_MIB) -> float | None:
    """Slope of the level RSS falls back to: a line through every sample after ``after_s`` that is more
    than ``drop_mib`` below the one before it (the allocator handing memory back). Memory that is handed
    back was held, not leaked; a leak lifts the level every return reaches. None with fewer than two
    returns, or returns less than a third of the span apart (too short a run to tell)."""
    fit = [s for s in samples if s.t_s >= after_s]
    returns = returns_after(samples, after_s=after_s, drop_mib=drop_mib)
    if len(returns) < 2 or returns[-1].t_s - returns[0].t_s < (fit[-1].t_s - fit[0].t_s) / 3:
        return None
    return float(np.polyfit([s.t_s for s in returns], [s.rss_mib for s in returns], 1)[0] * 600.0)


def soak(*, minutes: float, warmup_minutes: float, objects: int = 5, tracks: str = "prompted",
         size: str = "640x480", tracker_size: int = 256, sample_s: float = 1.0, window_s: float = 60.0,
         seed: int = 0) -> dict:
    """Run the engine for ``minutes`` of wall time and sample memory every ``sample_s`` seconds."""
    spec = f"synthetic:seed={seed},frames=100000000,size={size},objects={objects}"
    with tempfile.TemporaryDirectory(prefix="streamseg-soak-") as tmp:
        pipeline = _engine(spec, Path(tmp) / "r.jsonl", objects=objects, tracks=tracks,
                           tracker_size=tracker_size, seed=seed)
        samples: list[Sample] = []
        started = next_sample = None
        for _ in pipeline:
            now = time.monotonic()
            if started is None:
                started = next_sample = now
            if now >= next_sample:
                tracker = pipeline.tracker
                samples.append(Sample(t_s=round(now - started, 2), frames=pipeline.frames,
                                      rss_mib=round(rss_bytes() / MIB, 2),
                                      tracker_mib=round(tracker.memory_bytes() / MIB, 2),
                                      tracks=len(tracker.object_ids)))
                next_sample += sample_s
                if now - started >= minutes * 60:
                    break
        gc.collect()
    warmup_s = warmup_minutes * 60
    if not samples:
        raise RuntimeError(f"{spec}: the engine delivered no frame")
    fit = [s for s in samples if s.t_s >= warmup_s]
    elapsed = samples[-1].t_s
    return {
        **environment(), "source": spec, "minutes": minutes, "warmup_minutes": warmup_minutes,
        "tracker_size": tracker_size, "objects": objects, "tracks": tracks, "frames": pipeline.frames,
        "fps": round(pipeline.frames / elapsed, 2) if elapsed else None,
        "slope_mib_per_10min": slope_mib_per_10min(samples, after_s=warmup_s),
        "window_s": window_s,
        "floor_slope_mib_per_10min": envelope_slope_mib_per_10min(samples, after_s=warmup_s,
                                                                  window_s=window_s),
        "peak_slope_mib_per_10min": envelope_slope_mib_per_10min(samples, after_s=warmup_s, window_s=window_s,
                                                                 lowest=False),
        "return_slope_mib_per_10min": return_slope_mib_per_10min(samples, after_s=warmup_s),
        "returns": len(returns_after(samples, after_s=warmup_s)),
        "rss_fit_start_mib": fit[0].rss_mib if fit else None, "rss_end_mib": samples[-1].rss_mib,
        "rss_max_mib": max(s.rss_mib for s in samples),
        "tracker_mib_max": max(s.tracker_mib for s in samples),
        "tracks_mean": round(float(np.mean([s.tracks for s in fit or samples])), 2),
        "samples": [asdict(s) for s in samples],
    }


def _engine(spec: str, jsonl: Path, *, objects: int, tracks: str, tracker_size: int, seed: int):
    from engine.detect import DetectorConfig, load_detector
    from engine.fuse import Fuser, FuserConfig
    from engine.pipeline import Pipeline
    from engine.prompts import PromptQueue
    from engine.sinks import JsonlWriter
    from engine.sources import open_source
    from engine.track import load_tracker
    from engine.track.config import TrackerConfig

    detector = load_detector(DetectorConfig(weights="random", device="cpu", seed=seed))
    tracker = load_tracker("sam2.1_hiera_t", weights="random", image_size=tracker_size, device="cpu",
                           seed=seed, options=TrackerConfig(encoder_backend="onnxruntime"))
    source = open_source(spec)
    prompts = PromptQueue()
    if tracks == "prompted":
        # the user's objects fill max_tracks, so the fuser spawns none, and it never retires or merges a
        # user's track: exactly ``objects`` objects in the memory bank on every frame
        policy = FuserConfig(max_tracks=objects)
        for obj_id, box in _grid_boxes(objects, source.info.width, source.info.height).items():
            prompts.track(box=box, obj_id=obj_id)
    else:
        policy = FuserConfig(spawn_conf=detector.config.conf, spawn_after=1, spawn_max_overlap=1.0,
                             max_tracks=objects)
    fuser = Fuser(policy, names=detector.names)
    return Pipeline(source, detector=detector, tracker=tracker, fuser=fuser, prompts=prompts,
                    sinks=[JsonlWriter(jsonl)], device="cpu")


def _grid_boxes(n: int, width: int, height: int) -> dict[int, list[float]]:
    """``n`` boxes, object ids 1..n, on a grid over the frame (a third of a cell's side inset)."""
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    w, h = width / cols, height / rows
    cells = [(i % cols, i // cols) for i in range(n)]
    return {i + 1: [(c + 1 / 3) * w, (r + 1 / 3) * h, (c + 2 / 3) * w, (r + 2 / 3) * h]
            for i, (c, r) in enumerate(cells)}


def run(*, minutes: float, warmup_minutes: float, objects: int, tracks: str, size: str, tracker_size: int,
        sample_s: float, window_s: float, out: Path | None = None) -> dict:
    """Soak, write the JSON report, print the summary; returns the report."""
    report = soak(minutes=minutes, warmup_minutes=warmup_minutes, objects=objects, tracks=tracks, size=size,
                  tracker_size=tracker_size, sample_s=sample_s, window_s=window_s)
    path = write_json("memory_soak", report, out=out)
    slope, floor, peaks = (report[f"{k}slope_mib_per_10min"] for k in ("", "floor_", "peak_"))
    print(f"{report['frames']} frames in {report['minutes']} min ({report['fps']} frames/s), "
          f"{report['tracks_mean']} tracks on average")
    print(f"RSS after {warmup_minutes} min warm-up: {report['rss_fit_start_mib']} -> "
          f"{report['rss_end_mib']} MiB "
          f"(max {report['rss_max_mib']})")
    print(f"slope of the level RSS returns to {_slope(report['return_slope_mib_per_10min'])} over "
          f"{report['returns']} returns (goal: < 1); of the windows' floor {_slope(floor)}; of their peaks "
          f"{_slope(peaks)}; of all samples {_slope(slope)}")
    print(f"tracker tensors at most {report['tracker_mib_max']} MiB")
    print(f"{report['device']}; written to {path}")
    return report


def _slope(value: float | None) -> str:
    return "n/a (run longer)" if value is None else f"{value:+.2f} MiB/10 min"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="wall time to run (default 30)")
    parser.add_argument("--warmup-minutes", type=float, default=3.0,
                        help="samples before this are left out of the slope (default 3)")
    parser.add_argument("--objects", type=int, default=5,
                        help="objects in the scene and tracks kept (default 5)")
    parser.add_argument("--tracks", choices=["prompted", "fused"], default="prompted",
                        help="prompted objects kept to the end, or the fuser's spawn and retire "
                             "(see the module docstring)")
    parser.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    parser.add_argument("--tracker-size", type=int, default=256, help="SAM 2 input size (default 256)")
    parser.add_argument("--sample-s", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--window-s", type=float, default=60.0,
                        help="window whose lowest and highest RSS are points of the floor and peak slopes")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/out/...)")
    args = parser.parse_args(argv)
    run(minutes=args.minutes, warmup_minutes=args.warmup_minutes, objects=args.objects, tracks=args.tracks,
        size=args.size,
        tracker_size=args.tracker_size, sample_s=args.sample_s, window_s=args.window_s, out=args.out)


if __name__ == "__main__":
    main()
