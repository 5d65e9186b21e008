"""Where a tracking frame's time goes: torch.profiler over a few frames of our streaming tracker and of
the official SAM 2 video predictor (optionally under bf16 autocast), same clip, weights, box prompts and
image size as ``benchmarks.tracker``; the top operators by self CPU time, each with its share of the
side's total, and the share of the matrix products (the work a faster code path cannot remove).

    python -m benchmarks.tracker_profile [--image-size 512] [--objects 10] [--frames 3] [--warmup 2]
        [--baseline official_bf16] [--precision auto] [--threads N] [--top 12] [--out PATH]

Each side runs alone (not interleaved), prompts on frame 0, ``--warmup`` frames unprofiled, then
``--frames`` profiled frames. Writes JSON under benchmarks/out/.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from benchmarks.common import environment, write_json
from benchmarks.tracker import BASELINES, CONFIG, ROOT, boxes_for, build_baseline, read_clip

# aten operators that are matrix products (what bf16 / AMX speed up, and what both sides must do)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
              "aten::mkldnn_convolution", "aten::convolution", "aten::_convolution", "aten::conv2d",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention",
              "aten::_scaled_dot_product_attention_math", "aten::_mkldnn_linear", "aten::mkldnn_rnn_layer")


def profile_frames(step: Callable[[int], object], frames: range) -> list[dict]:
    """Operators of ``step(i)`` for ``i`` in ``frames``, by self CPU time, as dicts (name, ms, calls)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for index in frames:
            step(index)
    rows = [{"op": e.key, "self_ms": e.self_cpu_time_total / 1000.0 / len(frames), "calls": e.count}
            for e in prof.key_averages()]
    return sorted(rows, key=lambda r: -r["self_ms"])


def summarise(rows: list[dict], top: int) -> dict:
    total = sum(r["self_ms"] for r in rows)
    matmul = sum(r["self_ms"] for r in rows if r["op"] in MATMUL_OPS)
    return {"ms_per_frame": total, "matmul_share": matmul / total if total else 0.0,
            "top": [{**r, "share": r["self_ms"] / total} for r in rows[:top]]}


def run(*, clip: Path, image_size: int, objects: int, frames: int, warmup: int, baseline: str,
        precision: str, top: int, seed: int = 0) -> dict:
    from engine.track import StreamingTracker
    from engine.track.config import TrackerConfig
    from engine.track.model import build_model
    from engine.track.official import official_state

    model = build_model(CONFIG, image_size=image_size, device="cpu", seed=seed)
    state_dict = {k: v.cpu() for k, v in model.state_dict().items()}
    video = read_clip(clip, 1 + warmup + frames, image_size)
    boxes = boxes_for(objects, image_size)
    timed = range(1 + warmup, 1 + warmup + frames)
    sides = {}
    with torch.inference_mode():
        tracker = StreamingTracker(model, options=TrackerConfig(image_size=image_size, precision=precision))
        images = torch.from_numpy(video)
        tracker.step(images[0])
        for obj_id, box in enumerate(boxes):
            tracker.add_object(obj_id, box=box)
        for index in range(1, 1 + warmup):
            tracker.step(images[index])
        sides["ours"] = summarise(profile_frames(lambda i: tracker.step(images[i]), timed), top)

        base = build_baseline(baseline, state_dict, image_size, "cpu")
        with base.running():
            state = official_state(base.predictor, video)
            for obj_id, box in enumerate(boxes):
                base.predictor.add_new_points_or_box(state, 0, obj_id, box=box)
            propagation = base.predictor.propagate_in_video(state)
            for _ in range(1 + warmup):
                next(propagation)
            sides[baseline] = summarise(profile_frames(lambda i: next(propagation), timed), top)
    return {"benchmark": "tracker_profile", "environment": environment(),
            "settings": {"clip": str(clip), "image_size": image_size, "objects": objects, "frames": frames,
                         "warmup": warmup, "baseline": baseline, "precision": precision},
            "sides": sides}


def print_report(payload: dict) -> None:
    s = payload["settings"]
    print(f"{payload['environment']['device']}, {payload['environment']['torch_threads']} threads, "
          f"{s['image_size']} px, {s['objects']} objects, {s['frames']} profiled frames")
    for name, side in payload["sides"].items():
        print(f"\n{name}: {side['ms_per_frame']:.0f} ms of operator self time a frame; matrix products "
              f"{side['matmul_share']:.0%}")
        for r in side["top"]:
            print(f"  {r['op']:<55} {r['self_ms']:>8.1f} ms {r['share']:>6.1%} {r['calls']:>6} calls")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", type=Path, default=ROOT / "tests" / "media" / "bedroom.mp4")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--objects", type=int, default=10)
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--baseline", default="official_bf16", choices=[b for b in BASELINES if b != "vos_optimized"])
    p.add_argument("--precision", default="auto", choices=["auto", "exact", "fast"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    payload = run(clip=args.clip, image_size=args.image_size, objects=args.objects, frames=args.frames,
                  warmup=args.warmup, baseline=args.baseline, precision=args.precision, top=args.top)
    print_report(payload)
    print(f"\nwrote {write_json('tracker_profile', payload, out=args.out)}")


if __name__ == "__main__":
    main()
