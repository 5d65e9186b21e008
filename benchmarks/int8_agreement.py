"""The int8 detector against fp32 with TRAINED weights on the scenes they were trained for: the accuracy
bar of ``engine.detect.yolo.quantize`` (recall of fp32 detections, box and mask IoU of matched pairs), and
what ``backend="auto"`` then picks, with the speed of each on this CPU.

    python -m benchmarks.int8_agreement --weights ~/.cache/streamseg/closed_loop/yolov8n-seg-synthetic.pt

The closed loop's YOLOv8n-seg (``python -m benchmarks.closed_loop``) is trained on the synthetic scenes,
so its instances mean something there, unlike random weights (whose masks are noise around logit 0).
Calibration: a training scene of the loop (seed 101) written to a video, as a user passes their own clip
(``--calibration``); validation: the int8 cache's own check on that clip's other frames, and the frames of
a held-out scene (seed 201), which neither the detector nor the calibration saw.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.common import environment, write_json
from engine.data.synthetic_loop import DETECTOR_IMGSZ, scene_spec


def _video(seed: int, frames: int, folder: Path) -> Path:
    from engine.sources.synthetic import SyntheticScene, to_video

    path = folder / f"scene-{seed}.mp4"
    to_video(SyntheticScene.from_spec(scene_spec(seed, frames).removeprefix("synthetic:")), path)
    return path


def _timed(detector, frames: list[torch.Tensor]) -> tuple[list, float]:
    """The detections of each frame, and the p50 milliseconds of a one-frame call (after two warm-ups)."""
    for frame in frames[:2]:
        detector([frame])
    out, times = [], []
    for frame in frames:
        start = time.perf_counter()
        out.append(detector([frame])[0])
        times.append((time.perf_counter() - start) * 1000.0)
    return out, sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    from engine.detect import DetectorConfig, load_detector
    from engine.detect.yolo.quantize import INT8_BAR, agreement, calibration_frames

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a trained YOLOv8-seg .pt")
    parser.add_argument("--frames", type=int, default=120, help="frames of each scene video")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        calibration, held_out = _video(101, args.frames, Path(tmp)), _video(201, args.frames, Path(tmp))
        common = dict(weights=str(args.weights), device="cpu", imgsz=DETECTOR_IMGSZ, calibration=str(calibration),
                      threads=args.threads)
        fp32 = load_detector(DetectorConfig(backend="onnxruntime", **common))
        int8 = load_detector(DetectorConfig(backend="onnxruntime-int8", **common))
        auto = load_detector(DetectorConfig(backend="auto", **common))
        report = {"environment": environment(), "args": {k: str(v) for k, v in vars(args).items()},
                  "bar": asdict(INT8_BAR),
                  "auto_picks": auto.backend.name, "scenes": {}}
        for name, clip in (("calibration clip, other frames", calibration), ("held-out scene 201", held_out)):
            frames = calibration_frames(clip, validation=True)
            ref, fp32_ms = _timed(fp32, frames)
            cand, int8_ms = _timed(int8, frames)
            result = agreement(ref, cand)
            report["scenes"][name] = {"agreement": asdict(result), "meets_bar": result.meets(),
                                      "fp32_ms_p50": fp32_ms, "int8_ms_p50": int8_ms}
            print(f"{name}: {result.describe()}; meets the bar: {result.meets()}; p50 fp32 {fp32_ms:.1f} ms, "
                  f"int8 {int8_ms:.1f} ms ({fp32_ms / int8_ms:.2f}x)")
    print(f"backend=auto picks: {report['auto_picks']}")
    print(f"wrote {write_json('int8_agreement', report, out=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
