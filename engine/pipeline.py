"""The streaming loop of one stream: Source → Detector → Tracker → Fusion → Sinks, one ``FrameResult`` per
frame.

Three threads: the source decodes ahead (its own thread, bounded buffer), the caller's thread runs the
networks and fusion (``engine.processor``), and a sink thread encodes and writes. With overlapped stages
(``overlap=``, CPU only) a fourth runs the detector one frame ahead of the tracker (``engine.overlap``).
Every stage is timed on every frame and the times travel with the result (DESIGN.md decision 9).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from engine.errors import ConfigError, SourceError
from engine.interfaces import Detector, Fusion, PromptableTracker
from engine.metrics import LatencyTable
from engine.overlap import DetectAhead, ThreadSplit, torch_threads
from engine.processor import FrameProcessor, Running, SharedStages, Stream, check_stream
from engine.prompts import PromptQueue
from engine.runtime.device import resolve_device
from engine.sinks.base import Sink, wants_evidence
from engine.sources.base import Source
from engine.types import FrameResult


class Pipeline:
    """Iterate it for ``FrameResult`` values; every result also goes to the sinks, in order.

    Args:
        source: where frames come from (``engine.sources.open_source``).
        detector: per-frame instances (``engine.interfaces.Detector``), or None.
        tracker: a streaming tracker (``engine.interfaces.PromptableTracker``), or None.
        fuser: association and resolution (``engine.interfaces.Fusion``). Default: ``engine.fuse.Fuser``
            with both networks, the user's prompts with a tracker alone, the detector's instances with a
            detector alone, none at all without a network.
        sinks: writers fed on a background thread (video, JSONL, preview).
        prompts: the queue user prompts arrive on (``pipeline.prompts``); a new one by default.
        device: where frames and networks run; ``auto`` picks CUDA when present.
        detect_every: run the detector on every k-th frame (the tracker runs on every frame).
        render: render overlays even when no sink asks for them (``FrameResult.overlay``).
        evidence: fill ``FrameResult.evidence`` even when no sink asks for it (``wants_evidence``).
        max_frames: stop after this many frames.
        stall_timeout_s: a source that delivers nothing for this long ends the run with an error (for a
            live source, at least its reconnect budget, ``give_up_after_s``).
        shared: the shared stages at once (``engine.processor.SharedStages``), instead of ``detector``.
        overlap: run the detector of the next frame on its own thread while this one is tracked, with the
            cores split as this says (``engine.overlap.ThreadSplit``; the caller's thread gets the tracker's
            share while iterating). CPU only; ConfigError on CUDA or without a detector. The detector's
            own runtime should be built with the same share (``DetectorConfig.threads``).
    """

    def __init__(self, source: Source, *, detector: Detector | None = None,
                 tracker: PromptableTracker | None = None, fuser: Fusion | None = None,
                 sinks: Sequence[Sink] = (), prompts: PromptQueue | None = None,
                 device: str | torch.device = "cpu", detect_every: int = 1, render: bool = False,
                 max_frames: int | None = None, stall_timeout_s: float = 30.0,
                 shared: SharedStages | None = None, evidence: bool = False,
                 overlap: ThreadSplit | None = None) -> None:
        shared = SharedStages.of(shared, detector)
        if detect_every > 1 and tracker is None:
            raise ConfigError("detecting every k-th frame needs a tracker to carry the frames between")
        self.stream = Stream(source, tracker=tracker, fusion=fuser, sinks=list(sinks),
                             prompts=prompts if prompts is not None else PromptQueue())
        check_stream(self.stream, shared.detector)
        self.device = resolve_device(device)
        self.processor = FrameProcessor(shared, device=self.device, detect_every=detect_every,
                                        render=render or any(s.wants_overlay for s in self.stream.sinks),
                                        evidence=evidence or any(wants_evidence(s) for s in self.stream.sinks))
        self.max_frames = max_frames
        if overlap is not None and (self.device.type != "cpu" or shared.detector is None):
            raise ConfigError("overlapped stages run the detector beside the tracker on a CPU: they need a "
                              f"detector and device 'cpu' (got {'no detector' if shared.detector is None else self.device})")
        self.overlap = overlap
        # A live source reconnecting is silent on purpose, for at most its own reconnect budget, and
        # then raises its own, better error: the stall timeout must not fire first.
        self.stall_timeout_s = max(stall_timeout_s, getattr(source, "give_up_after_s", 0.0) + 5.0)

    @property
    def source(self) -> Source:
        return self.stream.source

    @property
    def detector(self) -> Detector | None:
        return self.processor.detector

    @property
    def tracker(self) -> PromptableTracker | None:
        return self.stream.tracker

    @property
    def fuser(self) -> Fusion:
        return self.stream.fusion

    @property
    def prompts(self) -> PromptQueue:
        """User prompts for this stream, applied between frames (``engine.prompts``)."""
        return self.stream.prompts

    @property
    def latency(self) -> LatencyTable:
        return self.stream.latency

    @property
    def frames(self) -> int:
        return self.stream.frames

    def __iter__(self) -> Iterator[FrameResult]:
        if self.overlap is not None:
            yield from self._overlapped(self.overlap)
            return
        stream = self.stream
        with Running([stream]) as running:
            while self.max_frames is None or stream.frames < self.max_frames:
                frame = stream.source.read(timeout=self.stall_timeout_s)
                if frame is None:
                    break
                (result,) = self.processor.process([(stream, frame)])
                running.hand_out(stream, result)
                yield result

    def _overlapped(self, split: ThreadSplit) -> Iterator[FrameResult]:
        """The loop with the detector one frame ahead (``engine.overlap``): the next frame is taken only
        when already decoded, and goes to the detector's thread before this frame's stages run. A source
        error met while taking it ahead is raised after the frame before it is handed out."""
        stream, processor = self.stream, self.processor
        failure: SourceError | None = None
        with torch_threads(split.tracker), Running([stream]) as running, \
                DetectAhead(processor.detector, threads=split.detector) as ahead:
            while self.max_frames is None or stream.frames < self.max_frames:
                if not ahead.pending:
                    if failure is not None:
                        raise failure
                    frame = stream.source.read(timeout=self.stall_timeout_s)
                    if frame is None:
                        break
                    ahead.submit(frame, due=processor.detect_due(stream))
                if failure is None and ahead.pending < 2 and not self._enough(ahead.pending):
                    try:
                        upcoming = stream.source.poll()
                    except SourceError as error:
                        failure, upcoming = error, None
                    if upcoming is not None:
                        ahead.submit(upcoming, due=processor.detect_due(stream, ahead.pending))
                frame, detected = ahead.take()
                (result,) = processor.process([(stream, frame)], ahead=[detected])
                running.hand_out(stream, result)
                yield result

    def _enough(self, pending: int) -> bool:
        """Whether the frames pending already reach ``max_frames``."""
        return self.max_frames is not None and self.stream.frames + pending >= self.max_frames

    def run(self) -> int:
        """Drain the pipeline (results go only to the sinks); returns the number of frames."""
        for _ in self:
            pass
        return self.frames
