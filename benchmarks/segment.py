"""Cost per frame of each semantic backend and of Mask R-CNN, on 1280x720 frames.

    python -m benchmarks.segment --frames 10 --every 1 5 --imgsz 512

For each segmenter (random spread weights: cost does not depend on the values) the benchmark runs a
``SegmentCadence`` over ``frames`` synthetic street frames (``synthetic:...,stuff=1``) with each
``every``, and reports the mean milliseconds per frame (the model's runs shared out over the frames it
serves). Mask R-CNN and YOLOv8n-seg (the engine's own detector, torch backend) run on the same frames;
their ratio is the cost of ``--detector maskrcnn``. Results go to benchmarks/out/segment.json with the
machine, versions and date.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence

import torch

from benchmarks.common import OUT, environment

BACKENDS = ("deeplabv3plus", "unet", "deeplabv3-mobilenet", "mask2former")


def street_frames(count: int, *, width: int = 1280, height: int = 720) -> list[torch.Tensor]:
    from engine.sources.synthetic import SyntheticScene

    scene = SyntheticScene(seed=0, frames=count, width=width, height=height, stuff=True)
    return [torch.from_numpy(scene.render(i)) for i in range(count)]


def _per_frame_ms(step: Callable[[int, torch.Tensor], object], frames: Sequence[torch.Tensor]) -> float:
    step(0, frames[0])  # warm-up: first-call allocations and kernel selection
    started = time.perf_counter()
    for i, frame in enumerate(frames, start=1):
        step(i, frame)
    return (time.perf_counter() - started) * 1000.0 / len(frames)


def segmenter_cost(backend: str, frames: Sequence[torch.Tensor], *, every: int, imgsz: int) -> float:
    """Mean ms per frame of ``backend`` run through a cadence of ``every``."""
    from engine.segment import SegmentCadence, SegmenterConfig, load_segmenter

    seg = load_segmenter(SegmenterConfig(backend=backend, imgsz=imgsz, device="cpu"))
    cadence = SegmentCadence(every)
    h, w = frames[0].shape[:2]
    return _per_frame_ms(lambda i, f: cadence.step(i, h, w, lambda: seg(f, frame_indices=[i])[0]), frames)


def detector_costs(frames: Sequence[torch.Tensor]) -> dict[str, float]:
    """Mean ms per frame of Mask R-CNN (torchvision defaults: shorter side 800) and YOLOv8n-seg (640)."""
    from engine.detect import DetectorConfig, load_detector
    from engine.detect.maskrcnn import MaskRCNNConfig, load_maskrcnn

    maskrcnn = load_maskrcnn(MaskRCNNConfig(device="cpu"))
    yolo = load_detector(DetectorConfig(weights="random", backend="torch", device="cpu"))
    return {"maskrcnn": _per_frame_ms(lambda i, f: maskrcnn([f]), frames),
            "yolov8n-seg": _per_frame_ms(lambda i, f: yolo([f]), frames)}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--imgsz", type=int, default=512)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--no-detectors", action="store_true")
    args = parser.parse_args(argv)
    frames = street_frames(args.frames)
    rows = {f"{b} every={k}": segmenter_cost(b, frames, every=k, imgsz=args.imgsz)
            for b in args.backends for k in args.every}
    if not args.no_detectors:
        rows.update(detector_costs(frames))
    result = {"environment": environment(), "frame": "1280x720", "imgsz": args.imgsz, "ms_per_frame": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "segment.json").write_text(json.dumps(result, indent=2))
    for name, ms in rows.items():
        print(f"{name:<32}{ms:10.1f} ms/frame")
    return result


if __name__ == "__main__":
    main()
