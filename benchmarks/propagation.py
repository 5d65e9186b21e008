"""Does SAM 2's memory path follow each object it was prompted on? The tracker alone, no detector or fuser.

Every object visible on frame 0 of a held-out synthetic scene (``engine.data.synthetic_loop``) is prompted
with its exact box; the tracker then propagates them all through the next frames. Per frame: each object's
mask IoU with its own truth (0 where the object has left), and the largest IoU between two objects'
masks, which is ~1 when the memory path has collapsed (every track given the same mask, whatever its
memory holds). What the closed loop's HOTA rests on, measured in a minute a checkpoint.

    python -m benchmarks.propagation CHECKPOINT [CHECKPOINT ...] [--scenes 201 202] [--frames 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment, write_json
from engine.data.synthetic_loop import HELD_OUT_SEEDS, OBJECTS, SIZE, TRACKER_SIZE

MIN_PIXELS = 50  # objects smaller than this on frame 0 are not prompted (the engine's detector misses them too)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def follow(weights: str, seed: int, frames: int) -> dict:
    """One scene: {"prompt_iou": {id: IoU on frame 0}, "iou": [[per object] per frame 1..], "max_pair": [...]}."""
    from engine.sources.synthetic import SyntheticScene
    from engine.track import TrackerConfig, load_tracker

    tracker = load_tracker("sam2.1_hiera_t", weights=weights, image_size=TRACKER_SIZE, device="cpu",
                           options=TrackerConfig(image_size=TRACKER_SIZE, encoder_backend="torch", precision="exact"))
    scene = SyntheticScene(seed=seed, frames=frames, width=SIZE[0], height=SIZE[1], objects=OBJECTS)
    tracker.step(scene.render(0))
    first = scene.ground_truth(0)
    prompt_iou = {}
    for obj, mask in zip(first.ids.tolist(), first.masks):
        if mask.sum() >= MIN_PIXELS:
            ys, xs = np.nonzero(mask)
            out = tracker.add_object(obj + 1, box=[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            prompt_iou[obj + 1] = _iou(out.masks[out.obj_ids.index(obj + 1)].cpu().numpy(), mask)
    per_frame, max_pair = [], []
    for t in range(1, frames):
        out = tracker.step(scene.render(t))
        truth = scene.ground_truth(t)
        own = dict(zip((truth.ids + 1).tolist(), truth.masks))
        masks = out.masks.cpu().numpy()
        per_frame.append([_iou(m, own.get(obj, np.zeros_like(m))) for obj, m in zip(out.obj_ids, masks)])
        pairs = [_iou(masks[i], masks[j]) for i in range(len(masks)) for j in range(i + 1, len(masks))]
        max_pair.append(max(pairs, default=0.0))
    return {"prompt_iou": prompt_iou, "iou": per_frame, "max_pair": max_pair}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="sam2.1_hiera_t checkpoints (e.g. the closed loop's)")
    parser.add_argument("--scenes", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    parser.add_argument("--frames", type=int, default=20, help="frames per scene, the prompted one included")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {"frames": args.frames, "checkpoints": {}}
    print(f"{'checkpoint':<48}{'scene':>6}{'prompt IoU':>12}{'followed IoU':>14}{'max pair IoU':>14}")
    for weights in args.checkpoints:
        scenes = {seed: follow(weights, seed, args.frames) for seed in args.scenes}
        report["checkpoints"][weights] = scenes
        for seed, s in scenes.items():
            followed = float(np.mean([np.mean(f) for f in s["iou"]]))
            print(f"{Path(weights).name[-48:]:<48}{seed:>6}{np.mean(list(s['prompt_iou'].values())):>12.3f}"
                  f"{followed:>14.3f}{np.median(s['max_pair']):>14.2f}")
    report["environment"] = environment()
    print(f"\nJSON: {write_json('propagation', report, out=args.out)}")
    print("followed IoU: each object's mask IoU with its own truth, mean over objects and frames 1..; "
          "max pair IoU: the median over frames of the largest overlap between two objects' masks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
