"""Shared fixtures: the real media clips, device markers, and no leaking random state."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

MEDIA = Path(__file__).parent / "media"
CLIPS = sorted(MEDIA.glob("*.mp4"))

# Ultralytics writes settings under $HOME and looks up hosts on import; keep both inside the test run.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "streamseg-yolo"))
# streamseg's cache (fetched weights, exported encoders) starts empty for every test run and stays out of $HOME.
os.environ["STREAMSEG_CACHE"] = tempfile.mkdtemp(prefix="streamseg-test-cache-")
atexit.register(shutil.rmtree, os.environ["STREAMSEG_CACHE"], ignore_errors=True)



def _a_share_of_the_cores_per_worker() -> None:
    """Under pytest-xdist, each worker's torch (and the commands its tests start, through OMP_NUM_THREADS)
    computes on its share of the cores: at torch's default every worker takes every core, and two workers on
    two cores then run four threads that wait on each other (benchmarks/RESULTS.md: runs several times
    slower on this project's 2-core machine)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    share = max(1, len(os.sched_getaffinity(0)) // workers)
    os.environ["OMP_NUM_THREADS"] = str(share)
    torch.set_num_threads(share)


_a_share_of_the_cores_per_worker()

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is present")


def pytest_collection_modifyitems(config, items):
    _slow_files_first(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    for item in items:
        # the marker, not item.keywords: keywords also hold the names of parent folders (a checkout in a
        # folder named "gpu" would skip every test)
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def _slow_files_first(items) -> None:
    """Files with the most ``slow`` tests first, the rest in their usual order. pytest-xdist's ``loadfile``
    hands whole files to workers in this order, so the long files start first and the short ones fill the
    gaps (longest first), instead of one long file running alone at the end while the other worker idles."""
    slow: dict[str, int] = {}
    for item in items:
        slow[item.location[0]] = slow.get(item.location[0], 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.location[0]])


@pytest.fixture(autouse=True)
def _fixed_random_state():
    """Every test starts from the same seeds and leaves the global generators as it found them."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
    random.setstate(py)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return MEDIA


@pytest.fixture(scope="session")
def bedroom_clip() -> Path:
    return MEDIA / "bedroom.mp4"


@pytest.fixture(scope="session")
def user_checkpoints(tmp_path_factory):
    """yolov8n-seg.pt and sam2.1_hiera_tiny.pt saved as Ultralytics and Meta save theirs, with seeded
    random weights and nothing marking them random (tests/checkpoints.py); built once per session."""
    from tests.checkpoints import write_user_checkpoints

    return write_user_checkpoints(tmp_path_factory.mktemp("user-checkpoints"))
