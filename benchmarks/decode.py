"""Decode throughput per clip, and the source machinery's own per-frame overhead, in one run.

For every clip, three ways of reading it, interleaved repeat by repeat so machine drift hits them alike:
- ``pyav``: a bare PyAV loop (``thread_type="AUTO"``), pictures left in YUV: the decoder's ceiling;
- ``pyav_rgb``: the same loop plus ``to_ndarray(format="rgb24")``: the baseline the engine must match;
- ``source``: ``engine.sources.open_source(clip)`` iterated as the pipeline does (decode thread, RGB,
  tensor wrap, bounded hand-off).
``source`` against ``pyav_rgb`` is the threading machinery's cost (or gain: the decode thread overlaps
the consumer). Per-frame times are the gaps between successive frames as the consumer sees them.
Optionally, ``synthetic``: rendering a SyntheticScene of the clip's size (the evaluator's frame cost).

    python -m benchmarks.decode [--clips tests/media/*.mp4] [--repeats 3] [--max-frames N] [--out PATH]

Writes JSON (device, versions, date, per-clip results) under benchmarks/out/ and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import environment, write_json

ROOT = Path(__file__).resolve().parents[1]
MODES = ("pyav", "pyav_rgb", "source")


@dataclass(frozen=True, slots=True)
class ModeResult:
    clip: str
    mode: str
    width: int
    height: int
    frames: int  # frames read per repeat
    fps: float  # median over repeats of frames / wall seconds
    fps_runs: tuple[float, ...]
    p50_ms: float  # per-frame gap, over every frame of every repeat
    p95_ms: float
    p99_ms: float


def _bare_pyav(path: Path, *, rgb: bool, max_frames: int | None) -> Iterator[object]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for n, frame in enumerate(container.decode(stream)):
            if max_frames is not None and n >= max_frames:
                return
            yield frame.to_ndarray(format="rgb24") if rgb else frame


def _through_source(path: Path, *, max_frames: int | None) -> Iterator[object]:
    from engine.sources import open_source

    with open_source(path) as src:
        for n, frame in enumerate(src):
            if max_frames is not None and n >= max_frames:
                return
            yield frame


def _synthetic(width: int, height: int, frames: int) -> Iterator[object]:
    from engine.sources import SyntheticScene

    scene = SyntheticScene(seed=0, frames=frames, width=width, height=height, objects=6)
    for i in range(frames):
        yield scene.render(i)


def _time(frames: Callable[[], Iterator[object]]) -> tuple[int, float, list[float]]:
    """(frames, wall seconds, per-frame gaps in ms) for one pass."""
    gaps = []
    start = last = time.perf_counter()
    count = 0
    for _ in frames():
        now = time.perf_counter()
        gaps.append((now - last) * 1000.0)
        last = now
        count += 1
    return count, time.perf_counter() - start, gaps


def bench_clip(path: Path, *, repeats: int = 3, max_frames: int | None = None,
               synthetic: bool = False) -> list[ModeResult]:
    """Every mode on one clip, ``repeats`` interleaved passes each."""
    import av

    with av.open(str(path)) as container:
        s = container.streams.video[0]
        width, height = s.codec_context.width, s.codec_context.height
    runs: dict[str, Callable[[], Iterator[object]]] = {
        "pyav": lambda: _bare_pyav(path, rgb=False, max_frames=max_frames),
        "pyav_rgb": lambda: _bare_pyav(path, rgb=True, max_frames=max_frames),
        "source": lambda: _through_source(path, max_frames=max_frames),
    }
    if synthetic:
        n = max_frames or 100
        runs["synthetic"] = lambda: _synthetic(width - width % 2, height - height % 2, n)
    fps: dict[str, list[float]] = {m: [] for m in runs}
    gaps: dict[str, list[float]] = {m: [] for m in runs}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for mode, run in runs.items():
            count, seconds, g = _time(run)
            counts[mode] = count
            fps[mode].append(count / seconds)
            gaps[mode].extend(g)
    results = []
    for mode in runs:
        p50, p95, p99 = np.percentile(gaps[mode], [50, 95, 99])
        results.append(ModeResult(
            clip=path.name, mode=mode, width=width, height=height, frames=counts[mode],
            fps=round(statistics.median(fps[mode]), 1), fps_runs=tuple(round(f, 1) for f in fps[mode]),
            p50_ms=round(float(p50), 3), p95_ms=round(float(p95), 3), p99_ms=round(float(p99), 3),
        ))
    return results


def machine() -> dict[str, object]:
    import av

    return {**environment(), "av": av.__version__, "ffmpeg": av.ffmpeg_version_info}


def run(clips: Sequence[Path], *, repeats: int = 3, max_frames: int | None = None, synthetic: bool = False,
        out: Path | None = None) -> dict[str, object]:
    """Benchmark every clip, write the JSON report, print a table; returns the report."""
    results = [r for clip in clips for r in bench_clip(clip, repeats=repeats, max_frames=max_frames,
                                                       synthetic=synthetic)]
    by_clip: dict[str, dict[str, ModeResult]] = {}
    for r in results:
        by_clip.setdefault(r.clip, {})[r.mode] = r
    overhead = {
        clip: {
            # > 1: the threaded source delivers faster than the bare RGB loop (decode overlaps the consumer)
            "source_vs_pyav_rgb_fps_ratio": round(m["source"].fps / m["pyav_rgb"].fps, 3),
            "source_overhead_ms_per_frame": round(1000.0 / m["source"].fps - 1000.0 / m["pyav_rgb"].fps, 3),
            "rgb_cost_ms_per_frame": round(1000.0 / m["pyav_rgb"].fps - 1000.0 / m["pyav"].fps, 3),
        }
        for clip, m in by_clip.items()
    }
    report = {**machine(), "repeats": repeats, "max_frames": max_frames,
              "results": [asdict(r) for r in results], "overhead": overhead}
    out = write_json("decode", report, out=out)
    _print_table(results, overhead)
    print(f"\n{report['device']}; av {report['av']} (FFmpeg {report['ffmpeg']}); written to {out}")
    return report


def _print_table(results: Sequence[ModeResult], overhead: dict[str, dict[str, float]]) -> None:
    print(f"{'clip':<24}{'size':>10}{'mode':>11}{'fps':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for r in results:
        print(f"{r.clip:<24}{f'{r.width}x{r.height}':>10}{r.mode:>11}{r.fps:>9.1f}"
              f"{r.p50_ms:>9.2f}{r.p95_ms:>9.2f}{r.p99_ms:>9.2f}")
    print(f"\n{'clip':<24}{'source/pyav_rgb fps':>21}{'source ms/frame extra':>23}{'rgb ms/frame':>14}")
    for clip, o in overhead.items():
        print(f"{clip:<24}{o['source_vs_pyav_rgb_fps_ratio']:>21.3f}{o['source_overhead_ms_per_frame']:>23.3f}"
              f"{o['rgb_cost_ms_per_frame']:>14.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, nargs="+",
                        default=sorted((ROOT / "tests" / "media").glob("*.mp4")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-frames", type=int, default=None, help="read at most this many per pass")
    parser.add_argument("--synthetic", action="store_true", help="also time SyntheticScene rendering")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/out/...)")
    args = parser.parse_args(argv)
    run(args.clips, repeats=args.repeats, max_frames=args.max_frames, synthetic=args.synthetic, out=args.out)


if __name__ == "__main__":
    main()
