"""What boundary refinement buys (J, boundary F) and costs (ms per frame), on synthetic scenes with exact truth.

The masks to refine are the scenes' true masks as SAM 2 delivers them: through its square low-resolution
mask grid (the model's input side / 4: 64 at 256 px, 128 at 512 px), area-downsampled and bilinearly
upsampled back to the frame, then made disjoint. J and F are TrackEval's (engine.eval), per frame.

    python -m benchmarks.refine --frames 8 --grid 64 128
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from benchmarks.common import OUT, environment
from engine.refine import REFINE_METHODS, label_map, refine_masks
from engine.eval import evaluate
from engine.eval.fusion import frame_masks
from engine.sources.synthetic import SyntheticScene


def degrade(masks: np.ndarray, grid: int) -> np.ndarray:  # [N, H, W] bool -> [N, H, W] bool, disjoint
    h, w = masks.shape[1:]
    up = [cv2.resize(cv2.resize(m.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA), (w, h),
                     interpolation=cv2.INTER_LINEAR) > 0.5 for m in masks]
    return label_map(np.stack(up))[None] == np.arange(1, len(masks) + 1)[:, None, None]


def run(*, frames: int, grids: list[int], width: int, height: int, seeds: list[int]) -> list[dict]:
    rows = []
    for grid in grids:
        for method in REFINE_METHODS:
            truth, predicted, times = [], [], []
            for seed in seeds:
                scene = SyntheticScene(seed=seed, frames=frames * 10, width=width, height=height, objects=6)
                for i in range(0, frames * 10, 10):
                    gt = scene.ground_truth(i)
                    keep = gt.masks.reshape(len(gt.ids), -1).any(1)
                    masks, ids = gt.masks[keep], gt.ids[keep]
                    image, blocky = scene.render(i), degrade(masks, grid)
                    start = time.perf_counter()
                    refined = refine_masks(image, blocky, method)
                    times.append((time.perf_counter() - start) * 1e3)
                    truth.append(frame_masks(ids, masks, (height, width)))
                    predicted.append(frame_masks(ids, refined, (height, width)))
            report = evaluate(truth, predicted)
            rows.append({"grid": grid, "method": method, "frames": len(times), "J": report.j_mean,
                         "F": report.f_mean, "J&F": report.j_and_f, "ms_p50": float(np.median(times)),
                         "ms_p95": float(np.percentile(times, 95))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="frames per scene (default 8)")
    parser.add_argument("--grid", type=int, nargs="+", default=[64, 128], help="low-res mask grid sides")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="scenes")
    parser.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    rows = run(frames=args.frames, grids=args.grid, width=width, height=height, seeds=args.seeds)
    OUT.mkdir(exist_ok=True)
    (OUT / "refine.json").write_text(json.dumps({"environment": environment(), "size": args.size, "rows": rows},
                                                indent=2) + "\n")
    print(f"| grid | method | J | F | J&F | ms p50 | ms p95 |  ({args.size}, {rows[0]['frames']} frames)")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['grid']} | {r['method']} | {r['J']:.3f} | {r['F']:.3f} | {r['J&F']:.3f} | {r['ms_p50']:.1f} | "
              f"{r['ms_p95']:.1f} |")


if __name__ == "__main__":
    main()
