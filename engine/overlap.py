"""Overlapped stages on the CPU: the detector of the next frame runs on its own thread while the caller's
thread tracks, fuses and renders this one.

Why the two can overlap: the detector's input is the frame alone, while the tracker's step on frame t
depends on the decisions fusion made on frame t-1 (spawns, re-prompts, retirements), so tracking is a
chain and detection is not. With one frame decoded ahead, detection of frame t+1 has nothing to wait for
while frame t is tracked. Results still come out one at a time, in frame order: the caller's thread
takes the frames in the order they were submitted.

Threads: each side gets its own share of the cores (``ThreadSplit``). torch's OpenMP thread count is
held per thread, so the detector's thread sets its own (its CPU runtime, ONNX Runtime, is built with the
same number: ``DetectorConfig.threads``) and the caller's thread runs the tracker on the tracker's share
for the run; ``torch.set_num_threads`` also sets the count a thread that first uses torch later starts
with (the sink thread), and the caller's thread restores its own count when the run ends.

Latency: the next frame is taken from the source only when it is already decoded (``Source.poll``): the
loop never waits for a frame it does not need yet. A taken frame waits for the frame before it, so a
frame's age (capture to result) grows by up to one frame time against the serial loop, while frames per
second rise to one per max(detect, track + fuse) instead of one per their sum.

Timing (``StageTimes``): ``detect`` is the detector's own run on the frame, measured on its thread, as in
the serial loop; ``total`` is the frame's own call through the stages, from taking it to handing out its
result; ``overlapped`` is the part of ``detect`` that ran beside the previous frame's stages and so is
not in ``total``: the stages after ``decode`` sum to ``total + overlapped``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from engine.errors import ConfigError
from engine.interfaces import Detector
from engine.types import Detections, Frame

DETECTOR_SHARE = 0.25  # of the cores: YOLOv8n-seg at 640 runs in about a quarter of a SAM 2 hiera-t step


@dataclass(frozen=True, slots=True)
class ThreadSplit:
    """How an overlapped pipeline shares the CPU: ``detector`` threads for the detector's thread (its
    runtime and its torch post-processing), ``tracker`` threads for the caller's thread (tracker, fusion,
    rendering). Each at least 1."""

    detector: int
    tracker: int

    def __post_init__(self) -> None:
        for name in ("detector", "tracker"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"overlapped stages: {name} threads must be a positive integer, got {value!r}")

    @classmethod
    def of(cls, cores: int | None = None, *, detector: int | None = None) -> ThreadSplit:
        """The split of ``cores`` (default: ``thread_budget()``, the threads the serial loop would use):
        ``detector`` threads (default: a quarter, at least one) and the rest, at least one, for the tracker."""
        cores = cores or thread_budget()
        wanted = detector if detector is not None else max(1, int(cores * DETECTOR_SHARE))
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
            raise ConfigError(f"overlapped stages: detector threads must be a positive integer, got {wanted!r}")
        return cls(detector=wanted, tracker=max(1, cores - wanted))

    def describe(self) -> str:
        return f"detector on {self.detector} thread(s) beside the tracker on {self.tracker}"


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads of the calling thread set to ``count`` inside, restored after. Threads
    already running keep their own count; ``set_num_threads`` also sets the count that threads which
    first use torch meanwhile start with."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def thread_budget() -> int:
    """The threads the serial loop computes on: torch's intra-op thread count (physical cores by default,
    or ``OMP_NUM_THREADS``), at most the logical CPUs this process may run on. Splitting this, not the
    logical CPUs, keeps an overlapped run from oversubscribing an SMT machine against the serial one."""
    return max(1, min(torch.get_num_threads(), available_cores()))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under ``taskset``), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Detected:
    """A frame's detection, run ahead: its instances (None when the frame was not due for the detector)
    and the milliseconds the detector ran on it."""

    detections: Detections | None
    run_ms: float = 0.0


class DetectAhead:
    """The detector on its own thread, one frame at a time in submission order.

    ``submit(frame, due=...)`` queues a frame (``due`` False: the detector skips it, ``detect_every``);
    ``take()`` gives back the oldest frame and the future of its ``Detected``.
    A detector error surfaces from ``result()`` of the frame it failed on. ``close()`` drops the frames
    not taken and waits for the one running (at most one detector call).

    Args:
        detector: any ``engine.interfaces.Detector`` on the CPU.
        threads: torch threads of the detector's thread.
    """

    def __init__(self, detector: Detector, *, threads: int) -> None:
        self.detector = detector
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamseg-detect",
                                        initializer=torch.set_num_threads, initargs=(threads,))
        self._pending: deque[tuple[Frame, Future[Detected] | None]] = deque()

    @property
    def pending(self) -> int:
        """Frames submitted and not yet taken."""
        return len(self._pending)

    def submit(self, frame: Frame, *, due: bool) -> None:
        future = self._pool.submit(self._run, frame.image) if due else None
        self._pending.append((frame, future))

    def take(self) -> tuple[Frame, Future[Detected]]:
        """The oldest submitted frame and the future of its detection (already done, with
        ``Detected(None)``, when the frame was not due). IndexError when nothing is pending."""
        frame, future = self._pending.popleft()
        if future is None:
            future = Future()
            future.set_result(Detected(None))
        return frame, future

    def _run(self, image: torch.Tensor) -> Detected:
        start = time.perf_counter()
        (detections,) = self.detector([image])
        return Detected(detections, (time.perf_counter() - start) * 1000.0)

    def close(self) -> None:
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> DetectAhead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
