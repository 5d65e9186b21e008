"""The threaded source: a decoder runs on its own thread and hands frames to the pipeline through a
bounded buffer whose policy depends on whether the source is live.

A concrete source implements two methods:
- ``_open()`` opens the input in the caller's thread and returns its ``SourceInfo``; a bad path, URL or
  codec fails here, before any output is created.
- ``_pictures()`` runs on the decode thread and yields ``Picture`` values until the stream ends; it owns
  reconnection for network sources and raises ``SourceError`` when it gives up.

With ``realtime=True`` the decode thread hands pictures out no faster than their presentation times, so
a file behaves like a camera in latency benchmarks (pair it with ``live=True`` for camera-like drops).
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import SourceError
from engine.sources.buffer import BlockingFrameBuffer, LatestFrameBuffer
from engine.types import Frame, SourceStats

# The longest a realtime source waits for one frame's time: a slideshow at 0.1 frames/s still paces,
# a jump of an hour in a damaged file's timestamps does not stall the stream for an hour.
MAX_PACE_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a source delivers, read off its first decoded picture where a header could disagree."""

    uri: str  # what the user passed, for messages
    live: bool  # newest-frame-wins buffering when True, every frame when False
    width: int  # pixels of the first frame as delivered (display orientation, square pixels)
    height: int
    fps: float | None  # the stream's average rate; None where it does not say or says > 1,000
    frame_count: int | None  # frames the container declares; None for live streams or when unknown
    codec: str
    start_pts: float | None = None  # seconds: the first frame's pts, so outputs can start at 0
    rotation: int = 0  # degrees counterclockwise applied to stored pictures for display (0/90/180/270)
    mirrored: bool = False  # stored pictures are mirrored left-right (before the rotation)
    notes: tuple[str, ...] = ()  # how the delivered stream differs from the stored one, one line each


@dataclass(frozen=True, slots=True)
class Picture:
    """What a decoder yields; the base class turns it into a ``Frame``."""

    image: np.ndarray  # [H, W, 3] uint8 RGB, C-contiguous
    pts: float | None
    decode_ms: float


class Source(ABC):
    """A video source: open, then iterate frames; close (or leave the ``with`` block) to stop."""

    def __init__(self, uri: str, *, live: bool, buffer_size: int = 2, realtime: bool = False) -> None:
        self.uri = uri
        self.live = live
        self.realtime = realtime
        self.stats = SourceStats()
        self._info: SourceInfo | None = None
        self._buffer = (LatestFrameBuffer if live else BlockingFrameBuffer)(buffer_size)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ended = False
        self._clock: tuple[float, float] | None = None  # (monotonic, pts) of the first paced picture
        self._join_timeout_s = 10.0  # longest a decoder may stay blocked in one read after close()
        # Pictures before this index are decoded and discarded, unpaced: a replayable source (file,
        # synthetic) resuming after the frames a server already holds. Their indices stay taken.
        self.skip_frames = 0

    @abstractmethod
    def _open(self) -> SourceInfo:
        """Open the input in the caller's thread; raise ``SourceError`` naming the input and the fix."""

    @abstractmethod
    def _pictures(self) -> Iterator[Picture]:
        """Decode until the stream ends (runs on the decode thread); stop early when ``stopping``."""

    def _release(self) -> None:
        """Free the decoder's resources; called on the decode thread when it ends."""

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def info(self) -> SourceInfo:
        if self._info is None:
            self._info = self._open()
        return self._info

    def start(self) -> Source:
        """Open (if not yet) and start decoding on a background thread."""
        if self._thread is None:
            _ = self.info
            self._thread = threading.Thread(target=self._run, name=f"decode:{self.uri}", daemon=True)
            self._thread.start()
        return self

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, None at the end of the stream. Raises the decoder's ``SourceError`` after the
        frames decoded before it, or ``SourceError`` when nothing arrives within ``timeout`` seconds
        (None or infinity: wait as long as the source itself does)."""
        self.start()
        if timeout is not None and not math.isfinite(timeout):
            timeout = None  # a source that never gives up: its reads must not overflow a lock's wait
        try:
            frame = self._buffer.get(timeout)
        except TimeoutError:
            raise SourceError(
                f"{self.uri}: no frame for {timeout:.0f} s; check that the source is still sending"
            ) from None
        if frame is None:
            self._ended = True
        else:
            self.stats.delivered += 1
            self.stats.dropped = self._buffer.dropped
        return frame

    def poll(self) -> Frame | None:
        """The next frame if one is ready, without waiting; None otherwise (see ``ended``). Raises the
        decoder's ``SourceError`` after the frames decoded before it."""
        self.start()
        try:
            frame = self._buffer.get(0.0)
        except TimeoutError:
            return None
        if frame is None:
            self._ended = True
            return None
        self.stats.delivered += 1
        self.stats.dropped = self._buffer.dropped
        return frame

    def loss_summary(self) -> str | None:
        """One line saying what this stream lost or changed on the way (damaged packets, lost,
        concealed and dropped frames, repaired timestamps, reconnections), or None when it delivered
        every frame as the stream had it. Meant for a run's summary, at any time."""
        return describe_losses(self.uri, self.stats, self._info.frame_count if self._info else None)

    @property
    def ended(self) -> bool:
        """True once ``poll`` or ``read`` has met the end of the stream."""
        return self._ended

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        self._stop.set()
        self._buffer.close()
        if self._thread is None:
            if self._info is not None:  # opened for its info but never started: nothing else frees it
                self._release()
        elif self._thread is not threading.current_thread():
            # The decoder sees the stop flag at its next picture; network reads are bounded by the
            # source's own I/O timeout, so this join is bounded too.
            self._thread.join(timeout=self._join_timeout_s)

    def __enter__(self) -> Source:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            for picture in self._pictures():
                if self._stop.is_set():
                    break
                if self.stats.decoded < self.skip_frames:
                    self.stats.decoded += 1
                    continue
                if self.realtime and self._pace(picture.pts):
                    break
                frame = Frame(
                    image=torch.from_numpy(picture.image),
                    index=self.stats.decoded,
                    pts=picture.pts,
                    capture_time=time.time(),
                    decode_ms=picture.decode_ms,
                )
                self.stats.decoded += 1
                if not self._buffer.put(frame):
                    break
        except SourceError as exc:
            error = exc
        except Exception as exc:  # an unexpected decoder failure still ends the stream cleanly
            error = SourceError(f"{self.uri}: decoding failed: {exc}")
            error.__cause__ = exc
        finally:
            try:
                self._release()
            finally:
                self._buffer.finish(error)

    def _pace(self, pts: float | None) -> bool:
        """Wait until the picture's presentation time, counted from the first one; True when stopped
        while waiting. Pictures without a timestamp go out at once; a jump ahead longer than
        ``MAX_PACE_WAIT_S`` (a damaged or spliced file) restarts the count instead of stalling."""
        if pts is None:
            return False
        now = time.monotonic()
        if self._clock is None:
            self._clock = (now, pts)
            return False
        start, pts0 = self._clock
        wait = start + (pts - pts0) - now
        if wait > MAX_PACE_WAIT_S:
            self._clock = (now, pts)
            return False
        return self._stop.wait(max(0.0, wait))


def describe_losses(uri: str, stats: SourceStats, declared: int | None = None) -> str | None:
    """``Source.loss_summary`` for any counters (a ``FrameResult.stats`` snapshot included)."""
    parts = []
    if stats.corrupt:
        parts.append(_count(stats.corrupt, "damaged packet") + " skipped")
    if stats.lost:
        parts.append(f"{stats.lost} of {declared} frames lost" if declared
                     else _count(stats.lost, "frame") + " lost")
    if stats.concealed:
        parts.append(_count(stats.concealed, "frame") + " shown with concealed damage")
    if stats.pts_guessed > 1 + stats.reconnects:  # a live session's first picture often has none
        parts.append(_count(stats.pts_guessed, "frame") + " without a timestamp, timed by the frame rate")
    if stats.pts_fixed:
        parts.append(_count(stats.pts_fixed, "timestamp") + " out of order, moved forward")
    if stats.dropped:
        parts.append(_count(stats.dropped, "frame") + " dropped to stay current (newest-frame-wins)")
    if stats.late:
        parts.append(_count(stats.late, "frame") + " dropped as too late")
    if stats.reconnects or stats.gap_s:
        parts.append(f"{_count(stats.reconnects, 'reconnection')}, {stats.gap_s:.1f} s without frames")
    if not parts:
        return None
    return f"{uri}: " + "; ".join(parts)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"
