"""What every benchmark records beside its numbers: the machine, the versions, the date; and where the
JSON goes."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Device, CPU, versions and date, for every result file."""
    from engine import ops

    cuda = torch.cuda.is_available()
    env = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if cuda else f"cpu: {cpu_model()}",
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "ops_backend": ops.backend(),
    }
    if cuda:
        env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        env["driver"] = _nvidia_driver()
    for dist in ("torchvision", "av", "ultralytics", "sam2", "onnxruntime", "numpy"):
        env[dist] = _version(dist)
    return env


def _nvidia_driver() -> str | None:
    try:
        return Path("/proc/driver/nvidia/version").read_text().split("Kernel Module")[1].split()[0]
    except (OSError, IndexError):
        return None


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 and mean of per-frame milliseconds."""
    a = np.asarray(samples_ms, dtype=float)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99))}


def write_json(name: str, payload: dict, *, out: Path | None = None) -> Path:
    """Write ``payload`` as benchmarks/out/NAME-<timestamp>.json (or ``out``); returns the path."""
    path = out or OUT / f"{name}-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
