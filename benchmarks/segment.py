"""Cost per frame of each semantic backend and of Mask R-CNN, on 1280x720 frames.

    python -m benchmarks.segment --frames 5 --every 1 5 --imgsz 512 [--threads 1]

Each segmenter (random spread weights: the cost does not depend on the values) is loaded once and run
through a fresh ``SegmentCadence`` for each ``every`` over ``frames`` synthetic street frames
(``synthetic:...,stuff=1``, 1280x720); a frame's time is what the cadence step took (the model's run on
the frames it is due, the reuse of the last map on the others), and the cost per frame is the mean. The
engine's own detector (YOLOv8n-seg, torch backend, imgsz 640) and Mask R-CNN (torchvision's defaults:
shorter side 800, longer at most 1333) run on the same frames: their ratio is the cost of
``--detector maskrcnn``, and the segmenter's share of a frame is taken against YOLOv8n-seg detection plus
segmentation (tracking and fusion, which the semantic stage does not change, are not in it). Results go
to ``benchmarks/out/segment-<time>.json`` with the machine, versions and date, and a short table prints.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from importlib import metadata

import torch

from benchmarks.common import environment, percentiles, write_json

BACKENDS = ("deeplabv3plus", "unet", "deeplabv3-mobilenet", "mask2former")


def street_frames(count: int, *, width: int = 1280, height: int = 720) -> list[torch.Tensor]:
    """``count`` frames of the synthetic street scene, [H, W, 3] uint8 RGB."""
    from engine.sources.synthetic import SyntheticScene

    scene = SyntheticScene(seed=0, frames=count + 1, width=width, height=height, stuff=True)
    return [torch.from_numpy(scene.render(i)) for i in range(count + 1)]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU work is asynchronous: a frame ends when its kernels have


def _per_frame_ms(step: Callable[[int, torch.Tensor], object], frames: Sequence[torch.Tensor]) -> list[float]:
    """Milliseconds of ``step(i, frame)`` per frame; frame 0 is a warm-up (first-call allocations and
    kernel selection) and is not counted."""
    step(0, frames[0])
    _sync()
    samples = []
    for i, frame in enumerate(frames[1:], start=1):
        started = time.perf_counter()
        step(i, frame)
        _sync()
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def segmenter_costs(backend: str, frames: Sequence[torch.Tensor], *, every: Sequence[int],
                    imgsz: int, device: str) -> dict[int, list[float]]:
    """Per-frame milliseconds of ``backend`` through a cadence of each ``every`` (one model load)."""
    from engine.segment import SegmentCadence, SegmenterConfig, load_segmenter

    seg = load_segmenter(SegmenterConfig(backend=backend, imgsz=imgsz, device=device))
    h, w = frames[0].shape[:2]
    out = {}
    for k in every:
        cadence = SegmentCadence(k)

        def step(i: int, frame: torch.Tensor, cadence: SegmentCadence = cadence) -> None:
            cadence.step(i, h, w, lambda: seg(frame, frame_indices=[i])[0])

        out[k] = _per_frame_ms(step, frames)
    return out


def detector_costs(frames: Sequence[torch.Tensor], *, device: str) -> dict[str, list[float]]:
    """Per-frame milliseconds of YOLOv8n-seg (the engine's detector) and Mask R-CNN, one frame a call."""
    from engine.detect import DetectorConfig, load_detector
    from engine.detect.maskrcnn import MaskRCNNConfig, load_maskrcnn

    yolo = load_detector(DetectorConfig(weights="random", backend="torch", device=device))
    maskrcnn = load_maskrcnn(MaskRCNNConfig(device=device))
    return {"yolov8n-seg": _per_frame_ms(lambda i, f: yolo([f]), frames),
            "maskrcnn": _per_frame_ms(lambda i, f: maskrcnn([f]), frames)}


def _versions() -> dict[str, str | None]:
    found = {}
    for dist in ("segmentation-models-pytorch", "transformers", "torchmetrics"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5, help="timed frames per run (after one warm-up)")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--imgsz", type=int, default=512, help="the segmenters' input size (shorter side)")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--no-detectors", action="store_true")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own). On a machine other jobs load, use 1: "
                             "measured here at load 10 on 2 cores, YOLOv8n-seg took ~9 s a frame with 2 threads "
                             "(each parallel region waits for a descheduled thread) and ~0.55 s with 1")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    frames = street_frames(args.frames)
    detectors = {} if args.no_detectors else detector_costs(frames, device=args.device)
    detect_ms = percentiles(detectors["yolov8n-seg"])["mean"] if detectors else None
    rows = {}
    for backend in args.backends:
        for k, samples in segmenter_costs(backend, frames, every=args.every, imgsz=args.imgsz,
                                             device=args.device).items():
            row = percentiles(samples)
            if detect_ms is not None:
                row["share_of_detect_plus_segment"] = row["mean"] / (row["mean"] + detect_ms)
            rows[f"{backend} every={k}"] = row
    for name, samples in detectors.items():
        rows[name] = percentiles(samples)
    if detectors:
        rows["maskrcnn"]["vs_yolov8n-seg"] = rows["maskrcnn"]["mean"] / rows["yolov8n-seg"]["mean"]
    result = {"environment": {**environment(), **_versions()}, "frame": "1280x720", "imgsz": args.imgsz,
              "frames": args.frames, "ms_per_frame": rows}
    path = write_json("segment", result)
    print(f"{'':<34}{'mean ms':>10}{'p50':>10}{'p95':>10}{'share':>8}")
    for name, row in rows.items():
        share = row.get("share_of_detect_plus_segment")
        print(f"{name:<34}{row['mean']:10.1f}{row['p50']:10.1f}{row['p95']:10.1f}"
              + (f"{share:8.0%}" if share is not None else ""))
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
