"""Streams that should never end (RTSP cameras, V4L2 devices): when the stream is lost (an error, a
read timeout, or an end the server announced) the source reconnects with exponential backoff, a bounded
number of times, then gives up with one ``SourceError`` naming the stream, the attempts and the last
reason.

The first connection is not retried: a wrong address or a server that is down fails at ``info``, before
any output exists. ``stats.reconnects`` counts successful reconnections and ``stats.gap_s`` the seconds
between the last picture before a loss and the first one after it. Frame indices keep counting across a
reconnection, and presentation times are shifted so they keep increasing (the gap included): a new
session restarts the server's clock at zero.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterator

from engine.errors import ConfigError, SourceError
from engine.sources._av import VideoDecoder, reason
from engine.sources.base import Picture, Source, SourceInfo


class LiveStreamSource(Source):
    """Base of the sources that reconnect. Subclasses implement ``_connect`` and ``_fix``."""

    def __init__(self, uri: str, *, live: bool = True, buffer_size: int = 2, realtime: bool = False,
                 reconnect_attempts: int = 5, io_timeout_s: float = 5.0, backoff_s: float = 0.5,
                 max_backoff_s: float = 8.0) -> None:
        super().__init__(uri, live=live, buffer_size=buffer_size, realtime=realtime)
        if reconnect_attempts < 0 or io_timeout_s <= 0 or backoff_s < 0:
            raise ConfigError(
                f"{uri}: reconnect_attempts must be >= 0, io_timeout_s > 0 and backoff_s >= 0, got "
                f"{reconnect_attempts}, {io_timeout_s}, {backoff_s}"
            )
        self.reconnect_attempts = reconnect_attempts
        self.io_timeout_s = io_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._decoder: VideoDecoder | None = None
        # PyAV's interrupt and the socket timeout each bound one blocked call by io_timeout_s.
        self._join_timeout_s = max(self._join_timeout_s, 2.0 * io_timeout_s + 1.0)

    @property
    def give_up_after_s(self) -> float:
        """The longest a lost stream can go without frames before ``SourceError``: every backoff wait
        plus every attempt's I/O timeout. A consumer's stall timeout should exceed it."""
        waits, delay = 0.0, self.backoff_s
        for _ in range(self.reconnect_attempts):
            waits += delay
            delay = min(2.0 * delay, self.max_backoff_s)
        return waits + (self.reconnect_attempts + 1) * self.io_timeout_s

    @abstractmethod
    def _connect(self) -> VideoDecoder:
        """Open the stream once, every wait bounded by ``io_timeout_s``; PyAV's errors propagate."""

    @abstractmethod
    def _fix(self) -> str:
        """What the user should check when the stream cannot be reached, e.g. 'check the server'."""

    def _why(self, exc: BaseException) -> str:
        return reason(exc, timeout_s=self.io_timeout_s)

    def _attempt(self) -> VideoDecoder:
        """One connection; PyAV's errors come back as ``_ConnectFailed`` with their reason."""
        started = time.monotonic()
        try:
            return self._connect()
        except SourceError:
            raise
        except Exception as exc:
            # Some demuxers (RTSP) report an interrupted wait as invalid data: name the real cause.
            waited = time.monotonic() - started >= 0.95 * self.io_timeout_s
            why = f"no answer within {self.io_timeout_s:g} s" if waited else self._why(exc)
            raise _ConnectFailed(why) from exc

    def _open(self) -> SourceInfo:
        try:
            self._decoder = self._attempt()
        except _ConnectFailed as exc:
            raise SourceError(f"{self.uri}: cannot connect: {exc}; {self._fix()}") from exc.__cause__
        d = self._decoder
        return SourceInfo(uri=self.uri, live=self.live, width=d.width, height=d.height, fps=d.fps,
                          frame_count=None, codec=d.codec)

    def _pictures(self) -> Iterator[Picture]:
        last_seen: float | None = None  # monotonic time of the last picture handed out
        gap_open = False  # reconnected, no picture yet: the gap runs until the next one
        shift_pending = False  # reconnected, no timestamped picture yet: pts_shift not yet known
        pts_shift = 0.0  # added to the session's own pts so times keep increasing over reconnections
        last_pts: float | None = None
        last_pts_at = 0.0  # monotonic time of the picture that carried last_pts
        while True:
            decoder = self._decoder
            assert decoder is not None, "_open or _reconnect provides a decoder"
            corrupt_before = self.stats.corrupt
            lost = "the server ended the stream"
            try:
                for picture in decoder.pictures():
                    now = time.monotonic()
                    if gap_open and last_seen is not None:
                        self.stats.gap_s += now - last_seen
                    gap_open = False
                    pts = picture.pts
                    if pts is not None:
                        if shift_pending and last_pts is not None:
                            pts_shift = last_pts + (now - last_pts_at) - pts
                        shift_pending = False
                        pts += pts_shift
                        last_pts, last_pts_at = pts, now
                    self.stats.corrupt = corrupt_before + decoder.corrupt
                    last_seen = now
                    yield Picture(image=picture.image, pts=pts, decode_ms=picture.decode_ms)
            except SourceError:
                raise
            except Exception as exc:
                lost = self._why(exc)
            finally:
                self.stats.corrupt = corrupt_before + decoder.corrupt
                decoder.close()
                self._decoder = None
            if self.stopping:
                return
            lost_at = last_seen if last_seen is not None else time.monotonic()
            self._decoder = self._reconnect(lost, lost_at)
            if self._decoder is None:  # stopped while waiting
                return
            self.stats.reconnects += 1
            gap_open = shift_pending = True

    def _reconnect(self, lost: str, lost_at: float) -> VideoDecoder | None:
        delay = self.backoff_s
        why = lost
        for _ in range(self.reconnect_attempts):
            if self._stop.wait(delay):
                return None
            try:
                return self._attempt()
            except (_ConnectFailed, SourceError) as exc:
                why = str(exc).split(": ", 1)[-1] if isinstance(exc, SourceError) else str(exc)
            delay = min(2.0 * delay, self.max_backoff_s)
        elapsed = time.monotonic() - lost_at
        self.stats.gap_s += elapsed
        n = self.reconnect_attempts
        if n == 0:
            raise SourceError(f"{self.uri}: stream lost ({lost}); reconnection is off "
                              f"(reconnect_attempts=0); {self._fix()}")
        attempts = f"{n} reconnect attempt{'s' if n != 1 else ''} over {elapsed:.1f} s failed: {why}"
        raise SourceError(f"{self.uri}: stream lost ({lost}); {attempts}; {self._fix()}")

    def _release(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None


class _ConnectFailed(Exception):
    """A connection attempt failed; the message is the reason, without the URL."""
