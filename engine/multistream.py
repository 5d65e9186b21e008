"""Several streams through one engine: per tick, the newest frame of every stream goes through ONE
detector call (a batch) and ONE image-encoder pass (``StreamingTracker.step_streams``), then through
that stream's own tracker memory, fusion and sinks (``engine.processor``, as for one stream).

A per-stream latency budget keeps every stream live: a frame already older than the budget when a tick
gathers it is dropped (and counted) in favour of a newer one, so a slow tick costs frames, not delay.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence

import torch

from engine.errors import ConfigError
from engine.interfaces import Detector
from engine.processor import FrameProcessor, Running, SharedStages, Stream, check_stream
from engine.runtime.device import resolve_device
from engine.sinks.base import wants_evidence
from engine.types import Frame, FrameResult

__all__ = ["MultiStreamPipeline", "Stream"]


class MultiStreamPipeline:
    """Iterate it for ``FrameResult`` values of every stream (``result.frame.stream`` says which).

    Args:
        streams: the streams, each with its source and its own tracker / fusion / prompts / sinks.
        detector: shared by all streams; called once per tick on every stream's frame.
        budget_ms: a frame older than this when gathered is dropped; None keeps every frame.
        detect_every: run the detector on every k-th tick.
        max_frames: stop each stream after this many results.
        shared: the shared stages at once (``engine.processor.SharedStages``), instead of ``detector``.
        evidence: fill ``FrameResult.evidence`` even when no sink asks for it (``wants_evidence``).
    """

    def __init__(self, streams: Sequence[Stream], *, detector: Detector | None = None,
                 device: str | torch.device = "cpu", budget_ms: float | None = None, detect_every: int = 1,
                 max_frames: int | None = None, render: bool = False, poll_interval_s: float = 0.002,
                 shared: SharedStages | None = None, evidence: bool = False) -> None:
        if not streams:
            raise ConfigError("a multi-stream pipeline needs at least one stream")
        shared = SharedStages.of(shared, detector)
        for k, stream in enumerate(streams):
            check_stream(stream, shared.detector, label=f"stream {k}")
        self.streams = list(streams)
        self.device = resolve_device(device)
        self.processor = FrameProcessor(
            shared, device=self.device, detect_every=detect_every,
            render=render or any(s.wants_overlay for st in streams for s in st.sinks),
            evidence=evidence or any(wants_evidence(s) for st in streams for s in st.sinks))
        self.budget_ms = budget_ms
        self.max_frames = max_frames
        self.poll_interval_s = poll_interval_s

    @property
    def ticks(self) -> int:
        return self.processor.calls

    def __iter__(self) -> Iterator[FrameResult]:
        with Running(self.streams) as running:
            while (batch := self._gather()) is not None:
                if not batch:
                    time.sleep(self.poll_interval_s)
                    continue
                for (stream, _), result in zip(batch, self.processor.process(batch), strict=True):
                    running.hand_out(stream, result)
                    yield result

    def run(self) -> int:
        """Drain every stream; returns the number of results."""
        return sum(1 for _ in self)

    def _gather(self) -> list[tuple[Stream, Frame]] | None:
        """The newest fresh frame of each stream that has one; None once every stream is done."""
        batch, open_streams = [], 0
        now = time.time()
        for k, stream in enumerate(self.streams):
            if stream.source.ended or (self.max_frames is not None and stream.frames >= self.max_frames):
                continue
            open_streams += 1
            frame = stream.source.poll()
            while frame is not None and self.budget_ms is not None and \
                    (now - frame.capture_time) * 1000.0 > self.budget_ms:
                stream.late += 1
                frame = stream.source.poll()
            if frame is not None:
                batch.append((stream, dataclasses.replace(frame, stream=k)))
        return batch if open_streams else None
