"""Decoding frees each frame as it goes: nothing a source decodes waits for Python's cyclic garbage
collector, so a long stream's threads and memory stay flat between collections."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from engine.sources import open_source
from tests.sources import media


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux /proc")
@pytest.mark.parametrize("rotated", [False, True], ids=["as-stored", "display-matrix-90"])
def test_frames_are_freed_without_the_cycle_collector(tmp_path: Path, bedroom_clip: Path, rotated: bool) -> None:
    # A decoded frame kept alive by a reference cycle keeps its pixels and its swscale context's
    # threads (two per frame) until a full collection: over 200 frames that was ~400 threads.
    path = media.rotated(tmp_path / "portrait.mp4", 90, frames=120) if rotated else bedroom_clip
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        threads = []
        with open_source(path) as src:
            for frame in src:  # noqa: B007  (the last frame is checked below)
                threads.append(_native_threads())
    finally:
        if enabled:
            gc.enable()
    assert len(threads) >= 100
    assert (frame.image.shape[0] > frame.image.shape[1]) == rotated  # the matrix was still applied
    # The decoder's and swscale's threads exist by the 20th frame; later frames add none (a few come
    # and go as the decoder drains at the end), where a frame kept alive adds two.
    assert max(threads[20:]) - threads[20] <= 8, f"threads by frame: {threads[::10]}"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux /proc")
def test_closed_sources_leave_no_threads_behind(bedroom_clip: Path) -> None:
    # What a live source does on every reconnection: a new decoder, some frames, close. Each session
    # that left a frame to the cycle collector kept two swscale threads alive until a full collection.
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        before = _native_threads()
        for _ in range(6):
            with open_source(bedroom_clip) as src:
                for _, _frame in zip(range(20), src, strict=False):
                    pass
            del _frame
        after = _native_threads()
    finally:
        if enabled:
            gc.enable()
    assert after <= before + 1, f"{after - before} threads left behind by 6 closed sources"
