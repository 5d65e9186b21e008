"""The streaming loop: Source → Detector → Tracker → Fuser → Sinks, one ``FrameResult`` per frame.

Three threads: the source decodes ahead (its own thread, bounded buffer), the caller's thread runs the
networks and fusion, and a sink thread encodes and writes. Every stage is timed on every frame and the
times travel with the result (DESIGN.md decision 9).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

from engine.errors import ConfigError
from engine.fuse.simple import DetectionsOnly, NoInstances
from engine.metrics import LatencyTable
from engine.render import draw
from engine.runtime.device import StageClock, resolve_device, timing
from engine.sinks.base import Sink, SinkThread
from engine.sources.base import Source
from engine.types import Detections, Frame, FrameResult, Instances, StageTimes, Tracks

STAGES = ("decode", "detect", "track", "fuse", "render", "total")


class DetectStage(Protocol):
    names: tuple[str, ...]

    def __call__(self, images: Sequence[torch.Tensor]) -> list[Detections]: ...


class TrackStage(Protocol):
    def step(self, image: torch.Tensor) -> Tracks: ...


class FuseStage(Protocol):
    def __call__(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> Instances: ...


class Pipeline:
    """Iterate it for ``FrameResult`` values; every result also goes to the sinks, in order.

    Args:
        source: where frames come from (``engine.sources.open_source``).
        detector: per-frame instances, or None.
        tracker: SAM 2 streaming tracker, or None.
        fuser: turns detections and tracks into the frame's instances. Defaults: the detector's
            instances when there is no tracker; none at all when there is no network.
        sinks: writers fed on a background thread (video, JSONL, preview).
        device: where frames and networks run; ``auto`` picks CUDA when present.
        detect_every: run the detector on every k-th frame (the tracker runs on every frame).
        render: render overlays even when no sink asks for them (``FrameResult.overlay``).
        max_frames: stop after this many frames.
        stall_timeout_s: a source that delivers nothing for this long ends the run with an error (for a
            live source, at least its reconnect budget, ``give_up_after_s``).
    """

    def __init__(self, source: Source, *, detector: DetectStage | None = None,
                 tracker: TrackStage | None = None, fuser: FuseStage | None = None,
                 sinks: Sequence[Sink] = (), device: str | torch.device = "cpu", detect_every: int = 1,
                 render: bool = False, max_frames: int | None = None,
                 stall_timeout_s: float = 30.0) -> None:
        if detect_every < 1:
            raise ConfigError(f"detect_every must be >= 1, got {detect_every}")
        if detect_every > 1 and tracker is None:
            raise ConfigError("detecting every k-th frame needs a tracker to carry the frames between")
        if fuser is None:
            if tracker is not None:
                raise ConfigError("a pipeline with a tracker needs a fuser that prompts it "
                                  "(engine.fuse.Fuser, or PromptedTracks for fixed box prompts)")
            fuser = DetectionsOnly() if detector is not None else NoInstances()
        self.source = source
        self.detector = detector
        self.tracker = tracker
        self.fuser = fuser
        self.sinks = list(sinks)
        self.device = resolve_device(device)
        self.detect_every = detect_every
        self.render = render or any(s.wants_overlay for s in self.sinks)
        self.max_frames = max_frames
        # A live source reconnecting is silent on purpose, for at most its own reconnect budget, and
        # then raises its own, better error: the stall timeout must not fire first.
        self.stall_timeout_s = max(stall_timeout_s, getattr(source, "give_up_after_s", 0.0) + 5.0)
        self.latency = LatencyTable(STAGES)
        self.frames = 0

    def __iter__(self) -> Iterator[FrameResult]:
        sink_thread = SinkThread(self.sinks) if self.sinks else None
        self.source.start()
        failed = False
        try:
            while self.max_frames is None or self.frames < self.max_frames:
                frame = self.source.read(timeout=self.stall_timeout_s)
                if frame is None:
                    break
                result = self._process(frame)
                self.frames += 1
                self.latency.add(result.times.as_dict(), result.age_ms)
                if sink_thread is not None:
                    sink_thread.put(result)
                yield result
        except GeneratorExit:
            raise  # the caller stopped early: a normal end, sinks close and report as usual
        except BaseException:
            failed = True
            raise
        finally:
            self.source.close()
            if sink_thread is not None:
                if failed:
                    _close_quietly(sink_thread)  # keep the error already on its way out
                else:
                    sink_thread.close()  # a sink's error surfaces here

    def run(self) -> int:
        """Drain the pipeline (results go only to the sinks); returns the number of frames."""
        for _ in self:
            pass
        return self.frames

    def _process(self, frame: Frame) -> FrameResult:
        clock = StageClock(self.device)
        frame = upload(frame, self.device)
        detections = None
        if self.detector is not None and self.frames % self.detect_every == 0:
            detections = self.detector([frame.image])[0]
        clock.mark("detect")
        tracks = self.tracker.step(frame.image) if self.tracker is not None else None
        clock.mark("track")
        with timing(clock):  # the fuser's prompts to the tracker are timed as "track"
            instances = self.fuser(frame, detections, tracks)
        clock.mark("fuse")
        overlay = draw(frame.image, instances) if self.render else None
        clock.mark("render")
        stages, total = clock.finish()
        times = StageTimes(decode=frame.decode_ms, detect=stages["detect"], track=stages["track"],
                           fuse=stages["fuse"], render=stages["render"], total=total)
        age_ms = (time.time() - frame.capture_time) * 1000.0
        return FrameResult(frame=frame, instances=instances, times=times, age_ms=age_ms, overlay=overlay,
                           stats=self.source.stats.snapshot())


_copy_streams: dict[torch.device, torch.cuda.Stream] = {}


def upload(frame: Frame, device: torch.device) -> Frame:
    """``frame`` with its image on ``device``. On CUDA the image is pinned and copied on a side stream,
    and the compute stream waits for that copy on the GPU, not the host: no host sync per frame."""
    if frame.image.device == device:
        return frame
    if device.type != "cuda":
        return dataclasses.replace(frame, image=frame.image.to(device))
    copy_stream = _copy_streams.setdefault(device, torch.cuda.Stream(device=device))
    pinned = frame.image.pin_memory()
    with torch.cuda.stream(copy_stream):
        image = pinned.to(device, non_blocking=True)
    compute = torch.cuda.current_stream(device)
    compute.wait_stream(copy_stream)
    image.record_stream(compute)  # the caching allocator must not reuse it before compute is done
    return dataclasses.replace(frame, image=image)


def _close_quietly(sink_thread: SinkThread) -> None:
    try:
        sink_thread.close()
    except Exception:  # noqa: BLE001 - the exception already propagating is the one to report
        pass
