"""Several streams through one engine: per tick, the newest frame of every stream goes through ONE
detector call (a batch) and ONE image-encoder pass (``StreamingTracker.step_streams``), then through
that stream's own tracker memory, fuser and sinks.

A per-stream latency budget keeps every stream live: a frame already older than the budget when a tick
gathers it is dropped (and counted) in favour of a newer one, so a slow tick costs frames, not delay.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from engine.errors import ConfigError
from engine.fuse.simple import DetectionsOnly, NoInstances
from engine.metrics import LatencyTable
from engine.pipeline import STAGES, DetectStage, FuseStage, upload
from engine.render import draw
from engine.runtime.device import StageClock, resolve_device, timing
from engine.sinks.base import Sink, SinkThread
from engine.sources.base import Source
from engine.types import Frame, FrameResult, StageTimes


@dataclass(eq=False)
class Stream:
    """One stream: its source, and its own tracker memory, fuser and sinks."""

    source: Source
    tracker: object | None = None  # a StreamingTracker; streams' trackers should share one model
    fuser: FuseStage | None = None
    sinks: Sequence[Sink] = ()
    latency: LatencyTable = field(default_factory=lambda: LatencyTable(STAGES))
    frames: int = 0  # results handed out
    late: int = 0  # frames dropped for being older than the budget


class MultiStreamPipeline:
    """Iterate it for ``FrameResult`` values of every stream (``result.frame.stream`` says which).

    Args:
        streams: the streams, each with its source and its own tracker / fuser / sinks.
        detector: shared by all streams; called once per tick on every stream's frame.
        budget_ms: a frame older than this when gathered is dropped; None keeps every frame.
        detect_every: run the detector on every k-th tick.
        max_frames: stop each stream after this many results.
    """

    def __init__(self, streams: Sequence[Stream], *, detector: DetectStage | None = None,
                 device: str | torch.device = "cpu", budget_ms: float | None = None, detect_every: int = 1,
                 max_frames: int | None = None, render: bool = False, poll_interval_s: float = 0.002) -> None:
        if not streams:
            raise ConfigError("a multi-stream pipeline needs at least one stream")
        if detect_every < 1:
            raise ConfigError(f"detect_every must be >= 1, got {detect_every}")
        for k, stream in enumerate(streams):
            if stream.fuser is None:
                if stream.tracker is not None:
                    raise ConfigError(f"stream {k} has a tracker but no fuser to prompt it")
                stream.fuser = DetectionsOnly() if detector is not None else NoInstances()
        self.streams = list(streams)
        self.detector = detector
        self.device = resolve_device(device)
        self.budget_ms = budget_ms
        self.detect_every = detect_every
        self.max_frames = max_frames
        self.render = render or any(s.wants_overlay for st in streams for s in st.sinks)
        self.poll_interval_s = poll_interval_s
        self.ticks = 0

    def __iter__(self) -> Iterator[FrameResult]:
        threads = {id(s): SinkThread(list(s.sinks)) for s in self.streams if s.sinks}
        for stream in self.streams:
            stream.source.start()
        failed = False
        try:
            while (batch := self._gather()) is not None:
                if not batch:
                    time.sleep(self.poll_interval_s)
                    continue
                for stream, result in self._tick(batch):
                    stream.frames += 1
                    stream.latency.add(result.times.as_dict(), result.age_ms)
                    if id(stream) in threads:
                        threads[id(stream)].put(result)
                    yield result
        except GeneratorExit:
            raise
        except BaseException:
            failed = True
            raise
        finally:
            for stream in self.streams:
                stream.source.close()
            for thread in threads.values():
                if failed:
                    try:
                        thread.close()
                    except Exception:  # noqa: BLE001 - the error already propagating is the one to report
                        pass
                else:
                    thread.close()

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

    def _tick(self, batch: list[tuple[Stream, Frame]]) -> list[tuple[Stream, FrameResult]]:
        clock = StageClock(self.device)
        frames = [upload(frame, self.device) for _, frame in batch]
        images = [f.image for f in frames]
        detections: list = [None] * len(batch)
        if self.detector is not None and self.ticks % self.detect_every == 0:
            detections = self.detector(images)
        clock.mark("detect")
        tracks = self._step_trackers([s.tracker for s, _ in batch], images)
        clock.mark("track")
        with timing(clock):  # the fusers' prompts to the trackers are timed as "track"
            instances = [stream.fuser(frame, det, trk)
                         for (stream, _), frame, det, trk in zip(batch, frames, detections, tracks)]
        clock.mark("fuse")
        overlays = [draw(f.image, inst) if self.render else None for f, inst in zip(frames, instances)]
        clock.mark("render")
        stages, total = clock.finish()
        self.ticks += 1
        out = []
        for (stream, _), frame, inst, overlay in zip(batch, frames, instances, overlays):
            # A tick's stage times are shared by the frames it carried: each frame waited for them all.
            times = StageTimes(decode=frame.decode_ms, detect=stages["detect"], track=stages["track"],
                               fuse=stages["fuse"], render=stages["render"], total=total)
            stats = dataclasses.replace(stream.source.stats, late=stream.late)
            out.append((stream, FrameResult(frame=frame, instances=inst, times=times, overlay=overlay,
                                            age_ms=(time.time() - frame.capture_time) * 1000.0, stats=stats)))
        return out

    @staticmethod
    def _step_trackers(trackers: list, images: list[torch.Tensor]) -> list:
        """Every stream's tracker on its frame; streams whose trackers share a model share one encoder
        batch."""
        tracks: list = [None] * len(trackers)
        groups: dict[int, list[int]] = {}
        for i, tracker in enumerate(trackers):
            if tracker is not None:
                groups.setdefault(id(tracker.model), []).append(i)
        for members in groups.values():
            if len(members) == 1:
                tracks[members[0]] = trackers[members[0]].step(images[members[0]])
                continue
            stepped = type(trackers[members[0]]).step_streams([trackers[i] for i in members],
                                                             [images[i] for i in members])
            for i, result in zip(members, stepped):
                tracks[i] = result
        return tracks
