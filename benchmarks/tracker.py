"""The streaming tracker against the official ``SAM2VideoPredictor``, in one run: per-frame propagation time
at 1, 4 and 10 objects on the same clip, weights and box prompts, and the memory each holds as the stream
goes on.

- Both sides get the clip's frames already at the model's size (no resampling choice differs) and the
  same random weights built from the sam2 config (no trained weights are needed to time the networks).
- Official: ``propagate_in_video``, one frame per ``next()``. Streaming: ``StreamingTracker.step`` per
  frame, objects prompted with ``add_object`` on frame 0. The two advance frame by frame in turn, so
  that a shared machine's load hits both alike. Frame 0 (the prompted frame, no propagation) and the
  first ``warmup`` frames are left out on both sides.
- Memory: the tracker's ``memory_bytes()`` after 100 (and, with ``--long``, 2,000) frames; the official
  predictor's inference state (its frames and per-frame outputs) after 100 frames, for comparison.

    python -m benchmarks.tracker [--image-size 256] [--objects 1 4 10] [--frames 30] [--long]
                                 [--encoder torch|onnxruntime|tensorrt] [--out PATH]

Writes JSON (device, versions, date, results) under benchmarks/out/ and prints a table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment, write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@dataclass(frozen=True, slots=True)
class SpeedResult:
    objects: int
    frames: int  # timed frames per side
    ours: dict[str, float]  # p50/p95/p99/mean ms per frame
    official: dict[str, float]
    speedup_p50: float  # official p50 / ours p50
    speedup_mean: float


@dataclass(frozen=True, slots=True)
class MemoryResult:
    objects: int
    ours_bytes: dict[int, int]  # frames seen -> tensor bytes the tracker holds
    official_bytes: dict[int, int]  # frames seen -> tensor bytes in the official inference state


def read_clip(path: Path, count: int, size: int) -> np.ndarray:
    """``count`` frames at size x size (the clip played back and forth when it is shorter)."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for picture in container.decode(video=0):
            frames.append(picture.to_ndarray(format="rgb24", width=size, height=size))
            if len(frames) == count:
                break
    loop = frames + frames[-2:0:-1]
    return np.stack([loop[i % len(loop)] for i in range(count)])


def boxes_for(objects: int, size: int) -> list[list[float]]:
    """``objects`` overlapping boxes spread over the frame (a grid of windows, half the frame wide)."""
    side = max(1, int(np.ceil(np.sqrt(objects))))
    step = size / (2 * side)
    corners = [((i % side) * step, (i // side) * step) for i in range(objects)]
    return [[x, y, x + size / 2, y + size / 2] for x, y in corners]


def _percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=float)
    return {"n": int(a.size), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99))}


def _official(state_dict: dict, frames: np.ndarray, image_size: int, device: str):
    """The official predictor with ``state_dict`` and an inference state over ``frames``."""
    from engine.track.official import official_predictor, official_state

    predictor = official_predictor(state_dict, config=CONFIG, image_size=image_size, device=device)
    return predictor, official_state(predictor, frames)


def time_both(state_dict: dict, frames: np.ndarray, boxes: list, *, image_size: int, warmup: int,
              device: str, encoder: str = "torch") -> tuple[list[float], list[float]]:
    """Per-frame ms of (official, ours), frame by frame in turn so that a shared machine's load hits both
    alike; the prompted frame 0 and the next ``warmup`` frames are left out."""
    from engine.track import StreamingTracker
    from engine.track.config import TrackerConfig
    from engine.track.model import build_model

    predictor, state = _official(state_dict, frames, image_size, device)
    model = build_model(CONFIG, image_size=image_size, device=device)
    model.load_state_dict(state_dict)  # before the tracker: an exported encoder is taken from these weights
    tracker = StreamingTracker(model, options=TrackerConfig(image_size=image_size, encoder_backend=encoder))
    official, ours = [], []
    with torch.inference_mode():
        for obj_id, box in enumerate(boxes):
            predictor.add_new_points_or_box(state, 0, obj_id, box=box)
        propagation = predictor.propagate_in_video(state)
        next(propagation)  # frame 0 comes from the prompts: nothing is propagated
        tracker.step(frames[0])
        for obj_id, box in enumerate(boxes):
            tracker.add_object(obj_id, box=box)
        for frame in frames[1:]:
            start = time.perf_counter()
            next(propagation)
            _sync(device)
            official.append((time.perf_counter() - start) * 1000.0)
            start = time.perf_counter()
            tracker.step(frame)
            _sync(device)
            ours.append((time.perf_counter() - start) * 1000.0)
    return official[warmup:], ours[warmup:]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _state_bytes(obj) -> int:
    """Bytes of the distinct tensor storages reachable from a nested dict/list state."""
    seen: dict[int, int] = {}
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return sum(seen.values())


def memory_held(state_dict: dict, clip: Path, *, objects: int, image_size: int, long: bool,
                device: str) -> MemoryResult:
    from engine.track import StreamingTracker

    checkpoints = (100, 2000) if long else (100,)
    frames = read_clip(clip, checkpoints[-1] + 1, image_size)
    boxes = boxes_for(objects, image_size)
    tracker = StreamingTracker.from_config(CONFIG, seed=0, image_size=image_size, device=device)
    tracker.model.load_state_dict(state_dict)
    ours = {}
    for index, frame in enumerate(frames):
        tracker.step(frame)
        if index == 0:
            for obj_id, box in enumerate(boxes):
                tracker.add_object(obj_id, box=box)
        if index in checkpoints:
            ours[index] = tracker.memory_bytes()
    predictor, state = _official(state_dict, frames[:101], image_size, device)
    with torch.inference_mode():
        for obj_id, box in enumerate(boxes):
            predictor.add_new_points_or_box(state, 0, obj_id, box=box)
        for _ in predictor.propagate_in_video(state):
            pass
    return MemoryResult(objects=objects, ours_bytes=ours, official_bytes={100: _state_bytes(state)})


def run(*, clip: Path, image_size: int = 256, objects: Sequence[int] = (1, 4, 10), frames: int = 30,
        warmup: int = 3, long: bool = False, memory_objects: int = 1, device: str = "cpu",
        seed: int = 0, encoder: str = "torch") -> dict:
    """Time both trackers at each object count, then measure memory; returns the JSON payload."""
    from engine.track.model import build_model

    state_dict = build_model(CONFIG, image_size=image_size, seed=seed).state_dict()
    video = read_clip(clip, frames, image_size)
    speed = []
    for n in objects:
        boxes = boxes_for(n, image_size)
        # official first, then ours, per count: a machine that drifts hits both within minutes
        official, ours = time_both(state_dict, video, boxes, image_size=image_size, warmup=warmup,
                                   device=device, encoder=encoder)
        o, s = _percentiles(official), _percentiles(ours)
        speed.append(SpeedResult(objects=n, frames=len(ours), ours=s, official=o,
                                 speedup_p50=o["p50"] / s["p50"], speedup_mean=o["mean"] / s["mean"]))
    memory = memory_held(state_dict, clip, objects=memory_objects, image_size=image_size, long=long,
                         device=device)
    return {"benchmark": "tracker", "environment": environment(),
            "settings": {"clip": str(clip), "config": CONFIG, "image_size": image_size, "frames": frames,
                         "warmup": warmup, "weights": f"random (seed {seed})", "encoder": encoder},
            "speed": [asdict(r) for r in speed], "memory": asdict(memory)}


def print_table(payload: dict) -> None:
    print(f"{payload['environment']['device']}, image size {payload['settings']['image_size']}, "
          f"{payload['environment']['torch_threads']} threads, image encoder in {payload['settings']['encoder']}")
    print(f"{'objects':>7} {'ours p50':>9} {'p95':>8} {'p99':>8} {'official p50':>13} {'p95':>8} {'p99':>8} "
          f"{'speedup':>8}")
    for r in payload["speed"]:
        o, s = r["official"], r["ours"]
        print(f"{r['objects']:>7} {s['p50']:>9.1f} {s['p95']:>8.1f} {s['p99']:>8.1f} {o['p50']:>13.1f} "
              f"{o['p95']:>8.1f} {o['p99']:>8.1f} {r['speedup_p50']:>7.2f}x")
    mem = payload["memory"]
    for frames, held in mem["ours_bytes"].items():
        print(f"memory held after {frames} frames, {mem['objects']} object(s): ours {held / 2**20:.2f} MiB")
    for frames, held in mem["official_bytes"].items():
        print(f"memory held after {frames} frames, {mem['objects']} object(s): official "
              f"{held / 2**20:.2f} MiB")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "tests" / "media" / "bedroom.mp4")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--frames", type=int, default=30, help="frames per timed run, prompt frame included")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--long", action="store_true", help="also measure memory after 2,000 frames")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--encoder", default="torch", choices=["torch", "onnxruntime", "tensorrt"],
                        help="what runs our image encoder (the CLI's default on a CPU is onnxruntime)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    payload = run(clip=args.clip, image_size=args.image_size, objects=args.objects, frames=args.frames,
                  warmup=args.warmup, long=args.long, device=args.device, encoder=args.encoder)
    out = write_json("tracker", payload, out=args.out)
    print_table(payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
