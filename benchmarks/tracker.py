"""The streaming tracker against the official SAM 2 video predictor, in one run: per-frame propagation time,
throughput, peak memory and mask agreement at 1, 4, 10 and 30 objects on the same clip, weights, box
prompts and image size; then the memory each holds as the stream goes on.

Baselines (``--baselines``):
- ``official``: ``SAM2VideoPredictor``, eager, fp32: the parity reference (tests/track/test_parity.py).
- ``official_bf16``: the same predictor with every call under ``torch.autocast(device, bfloat16)``: the
  speed a user gets by wrapping the official code in one line (on a CPU with bf16 matrix instructions,
  the fair baseline for our fast precision path).
- ``vos_optimized``: ``build_sam2_video_predictor(..., vos_optimized=True)``, the official predictor's
  fastest mode: its image encoder, memory attention, memory encoder, prompt encoder and mask decoder
  compiled by ``torch.compile(mode="max-autotune")``. On CUDA it runs as sam2's own benchmark.py runs it,
  under bf16 autocast with TF32 matmuls (switched on around its calls only). Compiling takes minutes (5
  minutes for 8 frames at 256 px on this project's 2-core CPU), so on a CPU it is skipped unless
  ``--vos-on-cpu``; its compile and warm-up time is reported as ``warmup_s``.

How it is timed:
- Both sides get the clip's frames already at the model's size (no resampling choice differs), already
  on the device (the official predictor loads the whole clip up front), and the same random weights
  built from the sam2 config (no trained weights are needed to time the networks).
- Baseline: ``propagate_in_video``, one frame per ``next()``. Ours: ``StreamingTracker.step`` per frame
  (``--step``: graphed on CUDA by default), objects prompted with ``add_object`` on frame 0. The two
  advance frame by frame in turn, so that machine load hits both alike. Frame 0 (the prompts) and the
  next ``warmup`` frames are left out on both sides; the warm-up frames also absorb compiles (vos) and
  graph captures (ours), and sam2's memory fills in the first 7 frames, which changes shapes.
- Each side's frame is timed to completion (CUDA synchronised). Throughput is 1000 / mean ms.
- Peak memory: on CUDA, per side, the most a frame's step allocated above what was allocated before it
  (``step_peak_mib``), and the process's peak (``peak_gpu_mib``: both sides' weights and state). On the
  CPU, the process's peak RSS.
- Mask IoU: our masks against the baseline's on every timed frame, per object (min and mean). With random
  weights, logits sit near 0 (about +-0.2), so a precision difference (vos runs in bf16) moves boundary
  pixels that trained weights would not.

Memory held: the tracker's ``memory_bytes()`` after 100 (and, with ``--long``, 2,000) frames; the
official predictor's inference state (its frames and per-frame outputs) after 100 frames.

    python -m benchmarks.tracker [--image-size 256] [--objects 1 4 10 30] [--frames 30] [--warmup 3]
        [--baselines official official_bf16 vos_optimized] [--step auto] [--encoder torch]
        [--precision auto] [--threads N] [--skip-memory] [--long] [--out PATH]

The JSON (device, versions, date, settings, results) is rewritten after every object count, so a run
cut short keeps what it measured; a table is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment, percentiles, write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
BASELINES = ("official", "official_bf16", "vos_optimized")
_MIB = 2.0 ** 20


@dataclass(frozen=True, slots=True)
class SpeedResult:
    baseline: str
    objects: int
    frames: int  # timed frames per side
    ours: dict[str, float]  # n, mean, p50, p95, p99 (ms per frame), fps
    base: dict[str, float]  # the same for the baseline
    speedup_p50: float  # baseline p50 / ours p50
    speedup_mean: float
    mask_iou_min: float  # ours against the baseline, over timed frames and objects
    mask_iou_mean: float
    ours_step_peak_mib: float | None  # CUDA only, see the module docstring
    base_step_peak_mib: float | None
    peak_gpu_mib: float | None  # CUDA only: the process's peak during this pair (both sides' weights, state)


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


@dataclass
class _Baseline:
    """An official predictor built once and reused for every object count (a compiled one keeps its
    compiled code across inference states: its calls are per object, so shapes do not change)."""

    name: str
    predictor: object
    autocast: torch.dtype | None  # the dtype its calls run under, None for none
    tf32: bool
    warmup_s: float | None = None  # the first run's prompt and warm-up frames (compiles, for vos)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The precision mode this baseline runs in, around its own calls only; any error in them is a
        BaselineFailed (the baseline cannot run here), not a fault of ours."""
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.tf32 or saved[0]
        torch.backends.cudnn.allow_tf32 = self.tf32 or saved[1]
        autocast = (contextlib.nullcontext() if self.autocast is None
                    else torch.autocast(self.predictor.device.type, dtype=self.autocast))
        try:
            with autocast:
                yield
        except Exception as exc:
            raise BaselineFailed(self.name, exc) from exc
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class BaselineFailed(RuntimeError):
    """A baseline that cannot run on this machine (e.g. torch.compile without a working compiler)."""

    def __init__(self, name: str, exc: BaseException) -> None:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        super().__init__(f"{name}: {type(exc).__name__}: {reason}"[:300])


def build_baseline(name: str, state_dict: dict, image_size: int, device: str) -> _Baseline:
    from engine.track.official import official_predictor

    vos = name == "vos_optimized"
    # the compiled forwards keep the modules: weights load as usual
    predictor = official_predictor(state_dict, config=CONFIG, image_size=image_size, device=device,
                                   vos_optimized=vos)
    cuda = device.startswith("cuda")
    bf16 = (vos and cuda) or name == "official_bf16"
    return _Baseline(name=name, predictor=predictor, autocast=torch.bfloat16 if bf16 else None,
                     tf32=vos and cuda)


@dataclass
class _Side:
    """One side's per-frame samples."""

    times: list[float] = field(default_factory=list)
    step_peak: float = 0.0  # bytes above what was allocated before the step
    process_peak: float = 0.0  # bytes: torch's peak (reset before each step) during any step

    def timed(self, call, *, device: str, keep: bool):
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = call()
        if cuda:
            torch.cuda.synchronize()
        elapsed = (time.perf_counter() - start) * 1000.0
        if keep:
            self.times.append(elapsed)
            if cuda:
                self.step_peak = max(self.step_peak, torch.cuda.max_memory_allocated() - before)
        if cuda:
            self.process_peak = max(self.process_peak, torch.cuda.max_memory_allocated())
        return out


def time_pair(model, baseline: _Baseline, frames: np.ndarray, boxes: list, *, warmup: int, device: str,
              options) -> SpeedResult:
    """Our tracker and ``baseline`` on ``frames``, frame by frame in turn; frame 0 (prompts) and the next
    ``warmup`` frames are not timed."""
    from engine.track import StreamingTracker
    from engine.track.official import official_state

    tracker = StreamingTracker(model, options=options)
    on_device = torch.from_numpy(frames).to(device)  # the baseline holds its clip on the device too
    ours, base = _Side(), _Side()
    ious: list[float] = []
    start = time.perf_counter()
    with torch.inference_mode():
        with baseline.running():
            state = official_state(baseline.predictor, frames)
            for obj_id, box in enumerate(boxes):
                baseline.predictor.add_new_points_or_box(state, 0, obj_id, box=box)
            propagation = baseline.predictor.propagate_in_video(state)
            next(propagation)  # frame 0 comes from the prompts: nothing is propagated
        tracker.step(on_device[0])
        for obj_id, box in enumerate(boxes):
            tracker.add_object(obj_id, box=box)
        for index in range(1, len(frames)):
            keep = index > warmup
            if index == warmup + 1 and baseline.warmup_s is None:
                baseline.warmup_s = time.perf_counter() - start
            with baseline.running():
                _, ids, video_masks = base.timed(partial(next, propagation), device=device, keep=keep)
            tracks = ours.timed(partial(tracker.step, on_device[index]), device=device, keep=keep)
            if keep:
                ious += _mask_ious(tracks, ids, video_masks)
    o, b = _summary(ours.times), _summary(base.times)
    cuda = device.startswith("cuda")
    return SpeedResult(baseline=baseline.name, objects=len(boxes), frames=len(ours.times), ours=o, base=b,
                       speedup_p50=b["p50"] / o["p50"], speedup_mean=b["mean"] / o["mean"],
                       mask_iou_min=float(min(ious)), mask_iou_mean=float(np.mean(ious)),
                       ours_step_peak_mib=ours.step_peak / _MIB if cuda else None,
                       base_step_peak_mib=base.step_peak / _MIB if cuda else None,
                       peak_gpu_mib=max(ours.process_peak, base.process_peak) / _MIB if cuda else None)


def _summary(samples_ms: list[float]) -> dict[str, float]:
    stats = percentiles(samples_ms)
    stats["fps"] = 1000.0 / stats["mean"]
    return stats


def _mask_ious(tracks, obj_ids, video_masks) -> list[float]:
    """IoU of each object's mask between our tracks and the baseline's [n, 1, H, W] logits."""
    theirs = {obj_id: video_masks[k, 0] > 0 for k, obj_id in enumerate(obj_ids)}
    out = []
    for k, obj_id in enumerate(tracks.obj_ids):
        a, b = tracks.masks[k], theirs[obj_id].to(tracks.masks.device)
        union = int((a | b).sum())
        out.append(int((a & b).sum()) / union if union else 1.0)
    return out


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


def memory_held(model, official: _Baseline, clip: Path, *, objects: int, image_size: int, long: bool,
                device: str, options) -> MemoryResult:
    from engine.track import StreamingTracker
    from engine.track.official import official_state

    checkpoints = (100, 2000) if long else (100,)
    frames = read_clip(clip, checkpoints[-1] + 1, image_size)
    boxes = boxes_for(objects, image_size)
    tracker = StreamingTracker(model, options=options)
    ours = {}
    for index, frame in enumerate(frames):
        tracker.step(frame)
        if index == 0:
            for obj_id, box in enumerate(boxes):
                tracker.add_object(obj_id, box=box)
        if index in checkpoints:
            ours[index] = tracker.memory_bytes()
    with torch.inference_mode():
        state = official_state(official.predictor, frames[:101])
        for obj_id, box in enumerate(boxes):
            official.predictor.add_new_points_or_box(state, 0, obj_id, box=box)
        for _ in official.predictor.propagate_in_video(state):
            pass
    return MemoryResult(objects=objects, ours_bytes=ours, official_bytes={100: _state_bytes(state)})


def run(*, clip: Path, image_size: int = 256, objects: Sequence[int] = (1, 4, 10, 30), frames: int = 30,
        warmup: int = 3, baselines: Sequence[str] = BASELINES, vos_on_cpu: bool = False, long: bool = False,
        memory: bool = True, memory_objects: int = 1, device: str = "cpu", seed: int = 0,
        encoder: str = "torch", step: str = "auto", precision: str = "auto", out: Path | None = None) -> dict:
    """Time our tracker against each baseline at each object count, then measure memory held; returns the
    JSON payload (and rewrites ``out`` after every count when given)."""
    from engine.runtime.precision import PrecisionPolicy
    from engine.track.config import TrackerConfig
    from engine.track.model import build_model

    if frames < warmup + 2:
        raise ValueError(f"--frames {frames} leaves no timed frame after the prompt frame and {warmup} "
                         f"warm-up frames; use at least {warmup + 2}")
    model = build_model(CONFIG, image_size=image_size, device=device, seed=seed)
    state_dict = {k: v.cpu() for k, v in model.state_dict().items()}
    options = TrackerConfig(image_size=image_size, encoder_backend=encoder, step=step, precision=precision)
    video = read_clip(clip, frames, image_size)
    payload = {"benchmark": "tracker", "environment": environment(),
               "settings": {"clip": str(clip), "config": CONFIG, "image_size": image_size, "frames": frames,
                            "warmup": warmup, "weights": f"random (seed {seed})", "encoder": encoder,
                            "step": step, "precision": precision,
                            "policy": PrecisionPolicy.for_device(device, precision).reason,
                            "objects": list(objects), "baselines": list(baselines)},
               "speed": [], "skipped": {}, "warmup_s": {}}
    cuda = device.startswith("cuda")
    built: dict[str, _Baseline] = {}
    for name in baselines:
        if name == "vos_optimized" and not cuda and not vos_on_cpu:
            payload["skipped"][name] = ("torch.compile(mode='max-autotune') of five modules takes minutes on "
                                        "a CPU; pass --vos-on-cpu to wait for it")
            continue
        try:
            baseline = built[name] = build_baseline(name, state_dict, image_size, device)
            for n in objects:
                result = time_pair(model, baseline, video, boxes_for(n, image_size), warmup=warmup,
                                   device=device, options=options)
                payload["speed"].append(asdict(result))
                payload["warmup_s"][name] = baseline.warmup_s
                _checkpoint(payload, out)
        except BaselineFailed as exc:  # a baseline that cannot run here is a result, not the end of the run
            payload["skipped"][name] = str(exc)
            _checkpoint(payload, out)
    if memory:
        official = built.get("official") or build_baseline("official", state_dict, image_size, device)
        payload["memory"] = asdict(memory_held(model, official, clip, objects=memory_objects,
                                               image_size=image_size, long=long, device=device,
                                               options=options))
    peaks = [r["peak_gpu_mib"] for r in payload["speed"] if r["peak_gpu_mib"] is not None]
    payload["peak"] = ({"peak_gpu_mib": max(peaks, default=0.0)} if cuda else
                       {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0})
    _checkpoint(payload, out)
    return payload


def _checkpoint(payload: dict, out: Path | None) -> None:
    if out is not None:
        write_json("tracker", payload, out=out)


def print_table(payload: dict) -> None:
    s = payload["settings"]
    print(f"{payload['environment']['device']}, image size {s['image_size']}, "
          f"{payload['environment']['torch_threads']} threads, step {s['step']}, "
          f"image encoder in {s['encoder']}; precision {s['policy']}")
    print(f"{'baseline':>14} {'objects':>7} {'ours p50':>9} {'p95':>7} {'p99':>7} {'fps':>7} "
          f"{'base p50':>9} {'p95':>7} {'p99':>7} {'fps':>7} {'speedup':>8} {'IoU min':>8}")
    for r in payload["speed"]:
        o, b = r["ours"], r["base"]
        print(f"{r['baseline']:>14} {r['objects']:>7} {o['p50']:>9.1f} {o['p95']:>7.1f} {o['p99']:>7.1f} "
              f"{o['fps']:>7.1f} {b['p50']:>9.1f} {b['p95']:>7.1f} {b['p99']:>7.1f} {b['fps']:>7.1f} "
              f"{r['speedup_p50']:>7.2f}x {r['mask_iou_min']:>8.3f}")
    for name, reason in payload["skipped"].items():
        print(f"{name}: not run ({reason})")
    for name, seconds in payload["warmup_s"].items():
        if seconds is not None:
            print(f"{name}: prompts and warm-up frames of its first run took {seconds:.1f} s")
    for key, value in payload.get("peak", {}).items():
        print(f"{key}: {value:.0f}")
    mem = payload.get("memory")
    if mem:
        for side in ("ours", "official"):
            for frames, held in mem[f"{side}_bytes"].items():
                print(f"memory held after {frames} frames, {mem['objects']} object(s): {side} "
                      f"{held / _MIB:.2f} MiB")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "tests" / "media" / "bedroom.mp4")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 10, 30])
    parser.add_argument("--frames", type=int, default=30, help="frames per timed run, prompt frame included")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--baselines", nargs="+", choices=BASELINES, default=list(BASELINES))
    parser.add_argument("--vos-on-cpu", action="store_true", help="run vos_optimized on a CPU too (minutes)")
    parser.add_argument("--step", default="auto", choices=["auto", "grouped", "padded", "graphed"],
                        help="our tracker's step (TrackerConfig.step)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory-held measurement")
    parser.add_argument("--long", action="store_true", help="also measure memory after 2,000 frames")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--encoder", default="torch", choices=["torch", "onnxruntime", "tensorrt"],
                        help="what runs our image encoder (the CLI's default on a CPU is onnxruntime)")
    parser.add_argument("--precision", default="auto", choices=["auto", "exact", "fast"],
                        help="our tracker's precision (engine.runtime.precision)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or write_json("tracker", {"benchmark": "tracker", "status": "started"})
    payload = run(clip=args.clip, image_size=args.image_size, objects=args.objects, frames=args.frames,
                  warmup=args.warmup, baselines=args.baselines, vos_on_cpu=args.vos_on_cpu, long=args.long,
                  memory=not args.skip_memory, device=args.device, encoder=args.encoder, step=args.step,
                  precision=args.precision, out=out)
    print_table(payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
