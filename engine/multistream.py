"""Several streams through one engine: per tick, the newest frame of every stream goes through ONE
detector call (a batch) and ONE image-encoder pass (``StreamingTracker.step_streams``), then through
that stream's own tracker memory, fusion and sinks (``engine.processor``, as for one stream).

A per-stream latency budget keeps every stream live: a frame already older than the budget when a tick
gathers it is dropped (and counted) in favour of a newer one, so a slow tick costs frames, not delay.

Streams can join and leave while the loop runs (``add``, ``remove``, from any thread; applied between
two ticks), which is what a server (``streamseg serve``) needs. Given ``on_end``, a stream whose source
or sink fails ends alone, with its error, and the others go on.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from engine.errors import ConfigError, StreamsegError
from engine.interfaces import Detector
from engine.processor import FrameProcessor, Running, SharedStages, Stream, check_stream
from engine.runtime.device import resolve_device
from engine.sinks.base import wants_evidence
from engine.types import Frame, FrameResult

__all__ = ["MultiStreamPipeline", "Stream"]

# (the stream, None when it ended or was removed, else the one-line error that ended it)
OnEnd = Callable[[Stream, StreamsegError | None], None]


class MultiStreamPipeline:
    """Iterate it for ``FrameResult`` values of every stream (``result.frame.stream`` is the stream's
    number: its position in ``streams``, or what ``add`` returned; ``stream_of`` maps it back).

    Args:
        streams: the streams, each with its source and its own tracker / fusion / prompts / sinks.
        detector: shared by all streams; called once per tick on every stream's frame.
        budget_ms: a frame older than this when gathered is dropped; None keeps every frame.
        detect_every: run the detector on every k-th frame of each stream (``Stream.detect_every``
            overrides it per stream).
        max_frames: stop each stream after this many results (``Stream.max_frames`` overrides it).
        shared: the shared stages at once (``engine.processor.SharedStages``), instead of ``detector``.
        on_end: called on the loop's thread when a stream ends, is removed, or fails (with its
            ``StreamsegError``); the others go on. None: a stream's failure ends the whole loop.
        keep_open: keep iterating (idle) when no stream is left, until ``close``; for a server whose
            streams are added later.
        evidence: fill ``FrameResult.evidence`` even when no sink asks for it (``wants_evidence``).
    """

    def __init__(self, streams: Sequence[Stream], *, detector: Detector | None = None,
                 device: str | torch.device = "cpu", budget_ms: float | None = None, detect_every: int = 1,
                 max_frames: int | None = None, render: bool = False, poll_interval_s: float = 0.002,
                 shared: SharedStages | None = None, on_end: OnEnd | None = None, keep_open: bool = False,
                 evidence: bool = False) -> None:
        if not streams and not keep_open:
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
        self.on_end = on_end
        self.keep_open = keep_open
        self._numbers: dict[int, int] = {id(s): k for k, s in enumerate(streams)}  # id(stream) -> number
        self._by_number: dict[int, Stream] = dict(enumerate(streams))
        self._joining: list[Stream] = list(streams)
        self._leaving: list[Stream] = []
        self._lock = threading.Lock()
        self._closing = self._finished = False

    @property
    def ticks(self) -> int:
        return self.processor.calls

    @property
    def finished(self) -> bool:
        """True once the loop has ended: ``add`` is refused from then on."""
        return self._finished

    def add(self, stream: Stream) -> int:
        """Let ``stream`` join at the next tick (from any thread); returns its number.

        Raises:
            ConfigError: its parts do not fit the shared stages, or the loop has finished (start another).
        """
        check_stream(stream, self.processor.detector, label="the added stream")
        with self._lock:
            if self._finished or self._closing:
                raise ConfigError("this multi-stream pipeline has finished; add the stream to a new one")
            number = len(self._numbers)
            self._numbers[id(stream)] = number
            self._by_number[number] = stream
            self._joining.append(stream)
        if any(s.wants_overlay for s in stream.sinks):
            self.processor.render = True
        return number

    def remove(self, stream: Stream) -> None:
        """Stop ``stream`` at the next tick (from any thread); its outputs are flushed and closed."""
        with self._lock:
            self._leaving.append(stream)

    def close(self) -> None:
        """Stop every stream at the next tick and end the iteration (a server's drain)."""
        with self._lock:
            self._closing = True

    def stream_of(self, result: FrameResult) -> Stream:
        return self._by_number[result.frame.stream]

    def __iter__(self) -> Iterator[FrameResult]:
        with Running([]) as running:
            while True:
                self._apply_changes(running)
                batch = self._gather(running)
                if batch is None:
                    break
                if not batch:
                    time.sleep(self.poll_interval_s)
                    continue
                for (stream, _), result in zip(batch, self.processor.process(batch), strict=True):
                    try:
                        running.hand_out(stream, result)
                    except StreamsegError as exc:  # a sink failed: its stream ends (or the loop does)
                        self._end(running, stream, exc)
                        continue
                    yield result

    def run(self) -> int:
        """Drain every stream; returns the number of results."""
        return sum(1 for _ in self)

    def _apply_changes(self, running: Running) -> None:
        with self._lock:
            joining, self._joining = self._joining, []
            leaving, self._leaving = self._leaving, []
            if self._closing:
                leaving += running.streams
        for stream in joining:
            try:
                running.join(stream)
            except StreamsegError as exc:
                self._report(stream, exc)
        for stream in leaving:
            if stream in running.streams:
                self._end(running, stream, None)

    def _end(self, running: Running, stream: Stream, error: StreamsegError | None) -> None:
        """Finish one stream; its sinks' error, if any, is the one it ended with."""
        sink_error = running.finish(stream)
        if sink_error is not None and not isinstance(sink_error, StreamsegError):
            raise sink_error  # not a user's mistake: a bug in a sink
        self._report(stream, error or sink_error)

    def _report(self, stream: Stream, error: StreamsegError | None) -> None:
        if self.on_end is not None:
            self.on_end(stream, error)
        elif error is not None:
            raise error

    def _gather(self, running: Running) -> list[tuple[Stream, Frame]] | None:
        """The newest fresh frame of each stream that has one; streams at their end leave the loop; None
        once every stream is done (and no more can come)."""
        batch = []
        now = time.time()
        for stream in list(running.streams):
            limit = stream.max_frames if stream.max_frames is not None else self.max_frames
            try:
                frame = None if limit is not None and stream.frames >= limit else stream.source.poll()
                while frame is not None and self.budget_ms is not None and \
                        (now - frame.capture_time) * 1000.0 > self.budget_ms:
                    stream.late += 1
                    frame = stream.source.poll()
            except StreamsegError as exc:  # the source gave up (a lost camera past its reconnects)
                self._end(running, stream, exc)
                continue
            if frame is not None:
                batch.append((stream, dataclasses.replace(frame, stream=self._numbers[id(stream)])))
            elif stream.source.ended or (limit is not None and stream.frames >= limit):
                self._end(running, stream, None)
        if batch or running.streams:
            return batch
        with self._lock:
            if self._joining or (self.keep_open and not self._closing):
                return []
            self._finished = True
        return None
