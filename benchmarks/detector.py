"""Detector end to end per frame, masks at frame resolution included, against Ultralytics' own ``predict``.

Both sides get the same decoded frames (RGB tensors for the engine, the BGR arrays Ultralytics expects), the
same weights (``spread_random_weights`` on ``yolov8n-seg.yaml``, seed 0: the instances mean nothing but are
many, with spread scores) and the same thresholds; Ultralytics runs ``predict(..., retina_masks=True)`` so its
masks are at frame resolution too. The number of instances per frame is swept with ``max_det`` at a low
``conf`` (every frame has more candidates than the largest sweep value), and the engine's and Ultralytics'
calls alternate frame by frame so machine drift hits both alike. The engine's time per frame should stay
near-flat in the number of instances; Ultralytics' grows with it (it upsamples every mask over the whole
frame).

    python -m benchmarks.detector [--clip tests/media/02_cups.mp4] [--frames 8] [--repeats 3]
        [--instances 1 10 50 100] [--backends torch onnxruntime onnxruntime-int8]
        [--ultralytics torch onnx onnx-dynamic] [--size 1280x720] [--threads N] [--out PATH]

Baselines: Ultralytics ``predict`` on its PyTorch model, on its own ONNX export with its defaults
(``YOLO("model.onnx")``: a static 640x640 input, what a CPU user of Ultralytics runs), and on its
dynamic-shape export (then its predictor pads to the stride only, as the engine does: the same input
size on both sides). Ultralytics' ONNX sessions get the engine's session options (the same thread
count, idle workers not spinning); its own take every core and spin, which on a shared machine measured
the scheduler (2-4x slower than its PyTorch model here). The engine's ``onnxruntime-int8`` is the int8 model of engine.detect.yolo.quantize
(on random weights it misses its accuracy bar, so the engine's ``auto`` would not pick it: the row shows
its speed).

Both sides run with the same torch thread count (``--threads``, default torch's own). Ultralytics' first
``predict`` sets it to cpu_count - 1 for the process, so it is set again before every pass. On a machine
shared with other jobs, ``--threads 1`` avoids OpenMP workers waiting on descheduled siblings, which made
2-thread timings here swing by 10x.

Writes JSON (device, versions, date, settings, per-sweep-point p50/p95/p99 and ratios) under benchmarks/out/
and prints a table. Timings on a shared machine are noisy; compare the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import environment, write_json

ROOT = Path(__file__).resolve().parents[1]


ULTRALYTICS_BASELINES = ("torch", "onnx", "onnx-dynamic")


@dataclass(frozen=True, slots=True)
class SweepPoint:
    backend: str  # the engine's backend for this row
    max_det: int
    instances_engine: float  # mean instances per frame the engine returned
    engine_p50_ms: float
    engine_p95_ms: float
    engine_p99_ms: float
    # per Ultralytics baseline ("ultralytics" on PyTorch, "ultralytics-onnx", "ultralytics-onnx-dynamic"):
    # instances, p50_ms, p95_ms, p99_ms, speedup_p50 (its p50 / the engine's), speedup_p95
    baselines: dict[str, dict[str, float]]


def read_frames(clip: Path, *, count: int, size: tuple[int, int] | None) -> list[np.ndarray]:
    """``count`` RGB frames spread over the clip, resized to ``size`` = (width, height) when given."""
    import av
    import cv2

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        total = stream.frames or 200
        wanted = set(np.linspace(0, total - 1, count).astype(int).tolist())
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(stream)) if i in wanted]
    if size is not None:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return frames[:count]


def ultralytics_models(seed: int, kinds: tuple[str, ...], imgsz: int, workdir: Path) -> dict[str, object]:
    """Ultralytics' ``YOLO`` on the benchmark's weights, per baseline kind: ``torch`` (the model itself),
    ``onnx`` (its own ONNX export with its defaults: a static imgsz x imgsz input, which its predictor
    letterboxes every frame to) and ``onnx-dynamic`` (``dynamic=True``: its predictor then pads to the
    stride only, as the engine does). The exports are written in ``workdir``."""
    from ultralytics import YOLO

    from engine.detect.yolo.loading import build_from_yaml

    reference = YOLO("yolov8n-seg.yaml")
    reference.model.load_state_dict(build_from_yaml("yolov8n-seg.yaml", seed=seed, spread=True).state_dict())
    models: dict[str, object] = {}
    if "torch" in kinds:
        models["ultralytics"] = reference
    for kind, dynamic in (("onnx", False), ("onnx-dynamic", True)):
        if kind in kinds:
            checkpoint = workdir / f"reference-{kind}.pt"
            reference.save(str(checkpoint))  # the export lands beside its .pt, here, not in the cwd
            path = YOLO(str(checkpoint)).export(format="onnx", imgsz=imgsz, dynamic=dynamic, verbose=False)
            models[f"ultralytics-{kind}"] = YOLO(str(path), task="segment")
    return models


def bench_detector(frames: list[np.ndarray], *, instances: tuple[int, ...] = (1, 10, 50, 100),
                   backends: tuple[str, ...] = ("torch", "onnxruntime"),
                   ultralytics: tuple[str, ...] = ULTRALYTICS_BASELINES, repeats: int = 3, warmup: int = 2,
                   conf: float = 0.05, iou: float = 0.7, imgsz: int = 640, seed: int = 0,
                   threads: int | None = None, device: str = "cpu") -> list[SweepPoint]:
    """Time the engine's detector (each backend) and Ultralytics' predict (each baseline) on the same
    frames, one frame per call, alternating between them frame by frame. ``threads``: torch's intra-op
    threads for all sides (default: torch's own choice); Ultralytics' predict otherwise sets cpu_count - 1
    on its first call. On CUDA every side's frames start on the host and every call is timed to
    completion (synchronised)."""
    import tempfile

    import torch

    threads = threads or torch.get_num_threads()
    from engine.detect import DetectorConfig, load_detector

    tensors = [torch.from_numpy(np.ascontiguousarray(f)) for f in frames]
    bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
    loaded = {name: load_detector(DetectorConfig(weights="random", backend=name, device=device, conf=conf,
                                                 iou=iou, imgsz=imgsz, seed=seed)) for name in backends}
    points = []
    with tempfile.TemporaryDirectory(prefix="streamseg-bench-") as tmp:
        references = ultralytics_models(seed, ultralytics, imgsz, Path(tmp))
        for model in references.values():
            _same_threads(model, threads, bgr[0], imgsz=imgsz, device=device)
        for max_det in instances:
            detectors = {name: detector.with_thresholds(max_det=max_det) for name, detector in loaded.items()}
            times: dict[str, list[float]] = {name: [] for name in (*backends, *references)}
            counts: dict[str, list[int]] = {name: [] for name in times}
            for rep in range(warmup + repeats):
                torch.set_num_threads(threads)  # after Ultralytics' first predict has set its own count
                for tensor, image in zip(tensors, bgr):
                    for name, detector in detectors.items():
                        start = time.perf_counter()
                        found = len(detector([tensor])[0])
                        _sync(device)
                        _record(times, counts, name, start, found, rep >= warmup)
                    for name, model in references.items():
                        start = time.perf_counter()
                        result = model.predict([image], conf=conf, iou=iou, imgsz=imgsz, max_det=max_det,
                                               retina_masks=True, verbose=False, device=device)[0]
                        _sync(device)
                        _record(times, counts, name, start, len(result.boxes), rep >= warmup)
            points += _points(backends, references, max_det, times, counts)
    return points


def _same_threads(model, threads: int, image: np.ndarray, *, imgsz: int, device: str) -> None:
    """Give an Ultralytics ONNX model's session the engine's session options: ``threads`` intra-op threads
    and idle workers that do not spin. Its own session takes every core and spins, which on a shared
    machine (or beside a torch thread pool) measures the scheduler rather than the model."""
    backend = getattr(getattr(model, "predictor", None), "model", None)
    if backend is None:
        model.predict([image], imgsz=imgsz, verbose=False, device=device)  # sets up its predictor
        backend = model.predictor.model
    onnx_backend = getattr(backend, "backend", None)
    if device != "cpu" or not hasattr(onnx_backend, "session"):
        return
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = onnx_backend.session._model_path
    onnx_backend.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _points(backends, references, max_det: int, times: dict, counts: dict) -> list[SweepPoint]:
    out = []
    for name in backends:
        e50, e95, e99 = np.percentile(times[name], [50, 95, 99])
        baselines = {}
        for ref in references:
            u50, u95, u99 = np.percentile(times[ref], [50, 95, 99])
            baselines[ref] = {"instances": float(np.mean(counts[ref])), "p50_ms": float(u50), "p95_ms": float(u95),
                              "p99_ms": float(u99), "speedup_p50": float(u50 / e50), "speedup_p95": float(u95 / e95)}
        out.append(SweepPoint(backend=name, max_det=max_det, instances_engine=float(np.mean(counts[name])),
                              engine_p50_ms=float(e50), engine_p95_ms=float(e95), engine_p99_ms=float(e99),
                              baselines=baselines))
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _record(times: dict[str, list[float]], counts: dict[str, list[int]], name: str, start: float, found: int,
            keep: bool) -> None:
    if keep:
        times[name].append((time.perf_counter() - start) * 1000)
        counts[name].append(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "tests" / "media" / "02_cups.mp4")
    parser.add_argument("--frames", type=int, default=8, help="distinct frames, spread over the clip")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the frames per sweep point")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--backends", nargs="+", choices=("torch", "onnxruntime", "onnxruntime-int8"),
                        default=["torch", "onnxruntime", "onnxruntime-int8"])
    parser.add_argument("--ultralytics", nargs="+", choices=ULTRALYTICS_BASELINES, default=list(ULTRALYTICS_BASELINES),
                        help="Ultralytics baselines: its PyTorch model, its ONNX export (static, its default), "
                             "its dynamic-shape ONNX export")
    parser.add_argument("--size", default=None, help="resize frames to WIDTHxHEIGHT first (default: native)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda where present)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch

    threads = args.threads or torch.get_num_threads()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    machine = environment()
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    frames = read_frames(args.clip, count=args.frames, size=size)
    points = bench_detector(frames, instances=tuple(args.instances), backends=tuple(args.backends),
                            ultralytics=tuple(args.ultralytics), repeats=args.repeats, warmup=args.warmup, conf=args.conf, imgsz=args.imgsz,
                            threads=threads, device=device)
    height, width = frames[0].shape[:2]
    report = {**machine, "threads": threads, "engine_device": device, "clip": str(args.clip),
              "frame_size": [width, height],
              "frames": len(frames), "repeats": args.repeats, "conf": args.conf, "imgsz": args.imgsz,
              "weights": "random (spread_random_weights, seed 0)", "points": [asdict(p) for p in points]}
    out = write_json("detector", report, out=args.out)
    print(f"{report['device']}, {width}x{height}, {len(frames)} frames x {args.repeats} repeats, "
          f"{threads} threads, ms per frame")
    names = list(points[0].baselines) if points else []
    print(f"{'backend':>16} {'max_det':>7} {'inst':>6} {'p50':>7} {'p95':>7}"
          + "".join(f" {name + ' p50 (x)':>30}" for name in names))
    for p in points:
        cells = "".join(f" {p.baselines[n]['p50_ms']:>22.1f} ({p.baselines[n]['speedup_p50']:.2f}x)" for n in names)
        print(f"{p.backend:>16} {p.max_det:>7} {p.instances_engine:>6.1f} {p.engine_p50_ms:>7.1f} "
              f"{p.engine_p95_ms:>7.1f}{cells}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
