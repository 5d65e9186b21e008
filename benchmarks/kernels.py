"""The mask kernels against their pure-torch references, in the same run, on the same inputs.

On a CUDA device with the kernel library built: each op's kernel and its reference on the same CUDA
tensors, at 1, 10 and 100 masks of a 1080p frame, with p50/p95 and the reference/kernel ratio. Without a
CUDA device it says so and times the references on the CPU (what the engine runs there). Results go to
benchmarks/out/kernels-<date>.json with the device, versions and date.

    python -m benchmarks.kernels                      # 1, 10, 100 masks at 1080p
    python -m benchmarks.kernels --masks 1 10 --size 270 480 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine import ops
from engine.ops.fuse_masks import fuse_masks_reference
from engine.ops.mask_iou import mask_iou_reference
from engine.ops.overlay import overlay_reference
from engine.ops.resize_threshold import resize_threshold_reference
from engine.ops.rle import rle_encode_reference

OPS = ("mask_iou", "fuse_masks", "resize_threshold", "overlay", "rle_encode")
LOW_RES = 256  # SAM 2's mask logits are 256 x 256 at the default image size


@dataclass(frozen=True)
class Timing:
    """One op at one size on one path: milliseconds per call."""

    op: str
    masks: int
    path: str  # "kernel" or "reference"
    device: str
    p50_ms: float
    p95_ms: float
    runs: int


def make_inputs(op: str, n: int, height: int, width: int, device: torch.device,
                generator: torch.Generator) -> tuple[tuple, dict]:
    """Realistic inputs for ``op``: blobby masks (bilinear-upsampled random low-res logits), not noise."""
    low = torch.randn((n, LOW_RES // 16, LOW_RES // 16), generator=generator) * 4
    logits = F.interpolate(low[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    masks = logits > 1.0
    if op == "mask_iou":
        return (masks.to(device), torch.roll(masks, shifts=7, dims=2).to(device)), {}
    if op == "fuse_masks":
        return (logits.to(device), torch.rand((n,), generator=generator).to(device)), {}
    if op == "resize_threshold":
        small = torch.randn((n, LOW_RES, LOW_RES), generator=generator) * 4
        return (small.to(device),), {"size": (height, width)}
    if op == "overlay":
        image = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
        id_map = torch.randint(-1, n, (height, width), dtype=torch.int32, generator=generator)
        colors = torch.randint(0, 256, (max(n, 1), 3), dtype=torch.uint8, generator=generator)
        return (image.to(device), id_map.to(device), colors.to(device)), {"alpha": 0.5}
    if op == "rle_encode":
        return (masks.to(device),), {}
    raise ValueError(f"unknown op {op!r}; pick from {', '.join(OPS)}")


def functions(op: str) -> tuple[Callable, Callable]:
    """(public function, which dispatches to the kernel on CUDA; the reference)."""
    return {
        "mask_iou": (ops.mask_iou, mask_iou_reference),
        "fuse_masks": (ops.fuse_masks, fuse_masks_reference),
        "resize_threshold": (ops.resize_threshold, resize_threshold_reference),
        "overlay": (ops.overlay, overlay_reference),
        "rle_encode": (ops.rle_encode, rle_encode_reference),
    }[op]


def time_call(call: Callable[[], object], *, device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Milliseconds per call; on CUDA each call is timed to completion (synchronised)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _timing(op: str, n: int, path: str, device: torch.device, times: list[float]) -> Timing:
    return Timing(op=op, masks=n, path=path, device=str(device), p50_ms=float(np.percentile(times, 50)),
                  p95_ms=float(np.percentile(times, 95)), runs=len(times))


def run(*, masks: tuple[int, ...] = (1, 10, 100), height: int = 1080, width: int = 1920,
        repeats: int = 20, warmup: int = 3, op_names: tuple[str, ...] = OPS,
        device: str = "auto") -> list[Timing]:
    """Time every op at every mask count: kernel and reference on CUDA, the reference alone on the CPU."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    target = torch.device("cuda" if use_cuda else "cpu")
    timings = []
    for op in op_names:
        public, reference = functions(op)
        for n in masks:
            args, kwargs = make_inputs(op, n, height, width, target, torch.Generator().manual_seed(n))
            if use_cuda:
                times = time_call(lambda: public(*args, **kwargs), device=target, repeats=repeats,
                                  warmup=warmup)
                timings.append(_timing(op, n, "kernel", target, times))
            reference_kwargs = dict(kwargs)
            alpha = reference_kwargs.pop("alpha", None)
            ref_args = args + ((alpha,) if alpha is not None else ())
            times = time_call(lambda: reference(*ref_args, **reference_kwargs), device=target,
                              repeats=repeats, warmup=min(warmup, 1))
            timings.append(_timing(op, n, "reference", target, times))
    return timings


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if cuda else _cpu_model(),
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "ops_backend": ops.backend(),
        "python": platform.python_version(),
    }


def report(timings: list[Timing]) -> str:
    """A table: one row per op and mask count, with the reference/kernel ratio where both ran."""
    rows = [f"{'op':<18}{'masks':>6}{'path':>11}{'p50 ms':>10}{'p95 ms':>10}{'ratio':>8}"]
    kernel = {(t.op, t.masks): t for t in timings if t.path == "kernel"}
    for t in timings:
        ratio = ""
        if t.path == "reference" and (t.op, t.masks) in kernel:
            ratio = f"{t.p50_ms / kernel[(t.op, t.masks)].p50_ms:.1f}x"
        rows.append(f"{t.op:<18}{t.masks:>6}{t.path:>11}{t.p50_ms:>10.3f}{t.p95_ms:>10.3f}{ratio:>8}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--size", type=int, nargs=2, default=[1080, 1920], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("no CUDA device: the kernels cannot run here; timing the torch references on the CPU only")
    elif not ops.backend().startswith("cuda kernels"):
        print(f"kernels not in use ({ops.backend()}): the 'kernel' rows time the references")
    timings = run(masks=tuple(args.masks), height=args.size[0], width=args.size[1], repeats=args.repeats,
                  op_names=tuple(args.ops))
    env = environment()
    print(f"{env['device']}, torch {env['torch']}, {env['ops_backend']}, {env['date']}")
    print(report(timings))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"kernels-{stamp}.json"
    path.write_text(json.dumps({"environment": env, "size": args.size,
                                "timings": [asdict(t) for t in timings]}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
