"""What every benchmark records beside its numbers: the machine, the versions, the date; and where the
JSON goes."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import platform
from concurrent.futures import ProcessPoolExecutor
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


# -- side-by-side jobs: one spawned process per core ---------------------------------------------------------
# ``settings`` below is any object with ``workers`` (processes side by side) and ``threads`` (torch threads
# each): the closed loop's and the selection benchmark's settings.


def _workers(settings) -> ProcessPoolExecutor:
    """A pool for one phase. Spawned, not forked (torch's thread pools do not survive a fork), and shut down
    with the phase, so its processes are reaped and their CPU time counted."""
    return ProcessPoolExecutor(max_workers=settings.workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_start, initargs=(settings.threads,))


def _worker_start(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ.setdefault("YOLO_OFFLINE", "1")


def in_parallel(settings, jobs: dict, *, done: dict | None = None) -> dict:
    """{key: (function, *args)} run on the phase's workers; {key: result}. ``done``: {key: callback} called
    (in this process) with the job's future when it ends."""
    with _workers(settings) as pool:
        futures = {key: pool.submit(*job) for key, job in jobs.items()}
        for key, callback in (done or {}).items():
            futures[key].add_done_callback(callback)
        return {key: future.result() for key, future in futures.items()}


def in_rounds(settings, jobs: dict) -> dict:
    """{key: (function, *args)} whose function takes the torch threads to use as its last argument: whole
    rounds of ``workers`` jobs side by side at ``threads`` each, then the jobs left over side by side with
    the cores shared among them (three scenes on two cores: two, then one on both cores)."""
    keys, results = list(jobs), {}
    whole = len(keys) - len(keys) % settings.workers
    results.update(in_parallel(settings, {k: (*jobs[k], settings.threads) for k in keys[:whole]}))
    rest = keys[whole:]
    if rest:
        share = max(settings.threads, settings.workers * settings.threads // len(rest))
        results.update(in_parallel(settings, {k: (*jobs[k], share) for k in rest}))
    return results


def use_threads(threads: int) -> None:
    """A worker's torch threads for the job it runs now (its pool started it with ``settings.threads``)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
