"""``streamseg info``: versions, the compute device, and whether the CUDA kernels are in use."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata

from engine.runtime.precision import PRECISIONS


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, device, kernels, the precision path")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="say what this --precision runs here (default: auto)")
    p.set_defaults(command=cmd_info)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from engine import __version__
    from engine.ops import backend

    rows = [("streamseg", __version__), ("python", platform.python_version()),
            ("platform", f"{platform.system()} {platform.machine()}")]
    for dist in ("torch", "torchvision", "sam2", "ultralytics", "av", "onnxruntime", "onnxruntime-gpu",
                 "tensorrt", "opencv-python-headless", "numpy", "pycocotools"):
        rows.append((dist, _version(dist)))
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = f"cuda:0 {props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
    else:
        device = "cpu (torch sees no CUDA device)"
    rows += [("torch cuda build", str(torch.version.cuda)), ("device", device), ("mask ops", backend())]
    rows += _precision_rows(args.precision, "cuda" if torch.cuda.is_available() else "cpu")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _precision_rows(precision: str, device: str) -> list[tuple[str, str]]:
    """Which precision path ``--precision`` runs on ``device`` and why, and the CPU's bf16 features."""
    from engine.runtime.precision import PrecisionPolicy, cpu_bf16_features

    policy = PrecisionPolicy.for_device(device, precision)
    rows = [("precision", policy.describe())]
    if device == "cpu":
        from engine.overlap import ThreadSplit, available_cores, thread_budget

        rows.append(("cpu bf16 matrix", ", ".join(cpu_bf16_features()) or "none (bf16 would be emulated)"))
        rows.append(("cpu threads", f"{thread_budget()} compute threads on {available_cores()} logical CPUs; "
                                    f"--overlap would run the {ThreadSplit.of().describe()}"))
    return rows
