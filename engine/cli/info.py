"""``streamseg info``: versions, the compute device, and whether the CUDA kernels are in use."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, device, kernels")
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
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
