"""The fast precision path against the exact one: the same tracker, weights, clip and box prompts run with
``precision="fast"`` (bf16 image encoder and memory attention, engine.track.bf16) and ``"exact"`` (fp32),
frame by frame in turn; per object, the mask IoU of fast against exact on every frame, and how far the
low-res logits and object scores drift (random weights give logits of about +-0.2, so masks move little
whatever the error: the drift is the sharper measure). The bar (engine.runtime.precision): mean IoU >=
0.98 and every object's mean >= 0.95 over 100 frames at 512 px with 10 objects.

    python -m benchmarks.precision [--clip tests/media/bedroom.mp4] [--frames 100] [--objects 10]
        [--image-size 512] [--threads N] [--out PATH]

Writes JSON (device, versions, date, settings, per-frame results) under benchmarks/out/ and prints a
summary: IoU (mean, worst object, worst frame), drift by tenths of the clip (does the error compound
through the memory?), and the time per frame of each side.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment, percentiles, write_json
from benchmarks.tracker import CONFIG, boxes_for, read_clip

ROOT = Path(__file__).resolve().parents[1]


def compare_precisions(clip: Path, *, frames: int = 100, objects: int = 10, image_size: int = 512,
                       seed: int = 0, fast: str = "fast") -> dict:
    """Run the exact and the ``fast`` tracker over ``frames`` frames of ``clip``; returns the results."""
    from engine.track import StreamingTracker, TrackerConfig

    video = read_clip(clip, frames, image_size)
    exact = StreamingTracker.from_config(CONFIG, seed=seed, options=TrackerConfig(image_size=image_size,
                                                                                 precision="exact"))
    other = StreamingTracker(exact.model, options=TrackerConfig(image_size=image_size, precision=fast))
    boxes = boxes_for(objects, image_size)
    for tracker in (exact, other):
        tracker.step(video[0])
        for obj_id, box in enumerate(boxes):
            tracker.add_object(obj_id, box=box)
    per_frame = []
    for index in range(1, frames):
        start = time.perf_counter()
        a = exact.step(video[index])
        mid = time.perf_counter()
        b = other.step(video[index])
        end = time.perf_counter()
        inter = (a.masks & b.masks).flatten(1).sum(1).float()
        union = (a.masks | b.masks).flatten(1).sum(1).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        diff = (a.logits - b.logits).abs().flatten(1)
        per_frame.append({"frame": index, "iou": iou.tolist(), "logit_max": diff.max(1).values.tolist(),
                          "logit_mean": diff.mean(1).tolist(),
                          "score_diff": (a.scores - b.scores).abs().tolist(),
                          "logit_range": float(a.logits.abs().max()), "foreground": float(a.masks.float().mean()),
                          "exact_ms": (mid - start) * 1e3, "fast_ms": (end - mid) * 1e3})
    return {"benchmark": "precision", "environment": environment(),
            "settings": {"clip": str(clip), "config": CONFIG, "frames": frames, "objects": objects,
                         "image_size": image_size, "weights": f"random (seed {seed})", "fast": fast,
                         "policy": other.precision.reason},
            "summary": summarise(per_frame), "frames": per_frame}


def summarise(per_frame: list[dict]) -> dict:
    iou = np.array([f["iou"] for f in per_frame])  # [frames, objects]
    logit_max = np.array([f["logit_max"] for f in per_frame])
    tenths = np.array_split(np.arange(len(per_frame)), min(10, len(per_frame)))
    return {"iou_mean": float(iou.mean()), "iou_worst_object": float(iou.mean(0).min()),
            "iou_worst_frame": float(iou.min()), "logit_drift_max": float(logit_max.max()),
            "logit_drift_mean": float(np.mean([f["logit_mean"] for f in per_frame])),
            "logit_range": float(max(f["logit_range"] for f in per_frame)),
            "score_drift_max": float(np.max([f["score_diff"] for f in per_frame])),
            "logit_drift_max_by_tenth": [float(logit_max[t].max()) for t in tenths],
            "exact_ms": percentiles([f["exact_ms"] for f in per_frame]),
            "fast_ms": percentiles([f["fast_ms"] for f in per_frame])}


def print_summary(payload: dict) -> None:
    s, r = payload["settings"], payload["summary"]
    print(f"{payload['environment']['device']}, {payload['environment']['torch_threads']} threads, "
          f"{s['image_size']} px, {s['objects']} objects, {s['frames']} frames; {s['policy']}")
    print(f"mask IoU fast vs exact: mean {r['iou_mean']:.4f}, worst object {r['iou_worst_object']:.4f}, "
          f"worst frame {r['iou_worst_frame']:.4f}")
    print(f"logit drift: max {r['logit_drift_max']:.4f}, mean {r['logit_drift_mean']:.5f} "
          f"(logits within +-{r['logit_range']:.3f}); object score drift max {r['score_drift_max']:.4f}")
    print("logit drift max by tenth of the clip: " + " ".join(f"{v:.4f}" for v in r["logit_drift_max_by_tenth"]))
    e, f = r["exact_ms"], r["fast_ms"]
    print(f"ms per frame p50: exact {e['p50']:.0f}, fast {f['p50']:.0f} ({e['p50'] / f['p50']:.2f}x)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "tests" / "media" / "bedroom.mp4")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    payload = compare_precisions(args.clip, frames=args.frames, objects=args.objects, image_size=args.image_size)
    out = write_json("precision", payload, out=args.out)
    print_summary(payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
