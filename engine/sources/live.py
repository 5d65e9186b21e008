"""Streams that should never end (RTSP cameras, V4L2 devices): a connection counts once a picture has
decoded, and a lost stream (an error, a read timeout, an end the server announced) is reconnected at a
fixed, short interval until it is back or the policy gives up, with one ``SourceError`` naming the
stream, the attempts, the time and the last reason.

The policy (``ReconnectPolicy``, one keyword argument each on ``open_source`` and the sources):
- ``reconnect_interval_s`` (1 s): the wait before each attempt. Fixed, not growing: every reconnection
  follows a stream that was up, so the server is known to exist and most likely restarting; a camera
  back after 30 s is then picked up within about a second of its return, where a doubling backoff
  would wait up to as long again (DeepStream's ``nvurisrcbin`` reconnects the same way).
- ``give_up_s`` (600 s): how long a stream may stay without frames before the source ends with an
  error; None: never. Ten minutes outlasts a camera reboot (30-120 s) or a firmware update, and still
  turns a camera that is gone into a clear error that a supervisor (systemd, Kubernetes) can act on,
  where waiting forever would leave a run that looks alive and does nothing.
- ``reconnect_attempts`` (None): an optional budget of attempts per outage; 0 turns reconnection off.
- ``io_timeout_s`` (5 s): the longest any one network wait may take (connecting, the stream's
  description, the next packet, the first picture after connecting). An attempt makes at most three
  such waits, so one attempt against a server that answers and never sends media ends within
  ``3 * io_timeout_s``, and the whole outage within ``give_up_after_s``.

The first connection is not retried: a wrong address or a server that is down fails at ``info``,
before any output exists. ``stats.reconnects`` counts successful reconnections and ``stats.gap_s`` the
seconds between the last picture before a loss and the first one after it. Frame indices keep counting
across a reconnection, and pts keep increasing, the gap included (``engine.sources.timeline``).
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from engine.errors import ConfigError, SourceError
from engine.sources._av import NoPicture, VideoDecoder, reason, source_info
from engine.sources.base import Picture, Source, SourceInfo
from engine.sources.timeline import Timeline

_WAITS_PER_ATTEMPT = 3  # connect + describe, stream probing, first picture: each bounded by io_timeout_s


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """When and how long a live source tries to get a lost stream back (see the module docstring)."""

    reconnect_interval_s: float = 1.0  # seconds before each attempt
    give_up_s: float | None = 600.0  # seconds without frames before giving up; None: never
    reconnect_attempts: int | None = None  # attempts per outage; None: until give_up_s; 0: no reconnection
    io_timeout_s: float = 5.0  # seconds, the longest single network wait

    def __post_init__(self) -> None:
        if not (math.isfinite(self.io_timeout_s) and self.io_timeout_s > 0):
            raise ConfigError(f"io_timeout_s must be a number of seconds > 0, got {self.io_timeout_s}")
        if not (math.isfinite(self.reconnect_interval_s) and self.reconnect_interval_s > 0):
            raise ConfigError(f"reconnect_interval_s must be a number of seconds > 0, got "
                              f"{self.reconnect_interval_s}")
        if self.give_up_s is not None and not (self.give_up_s > 0 and not math.isnan(self.give_up_s)):
            raise ConfigError(f"give_up_s must be a number of seconds > 0, or None to never give up, got "
                              f"{self.give_up_s}")
        attempts = self.reconnect_attempts
        if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int)
                                     or attempts < 0):
            raise ConfigError(f"reconnect_attempts must be an integer >= 0 (0: no reconnection), or None "
                              f"for no limit but give_up_s, got {attempts!r}")

    @property
    def attempt_s(self) -> float:
        """The longest one connection attempt can take."""
        return _WAITS_PER_ATTEMPT * self.io_timeout_s

    @property
    def give_up_after_s(self) -> float:
        """The longest a lost stream can go without frames before ``SourceError`` (infinite when
        neither ``give_up_s`` nor ``reconnect_attempts`` bounds it): the read that notices the loss,
        then attempts and waits until the budget or the time runs out (an attempt under way when the
        time runs out is finished)."""
        bounds = []
        if self.reconnect_attempts is not None:
            bounds.append(self.reconnect_attempts * (self.reconnect_interval_s + self.attempt_s))
        if self.give_up_s is not None:
            bounds.append(self.give_up_s + self.attempt_s)
        return self.io_timeout_s + min(bounds, default=math.inf)


class LiveStreamSource(Source):
    """Base of the sources that reconnect. Subclasses implement ``_connect`` and ``_fix``."""

    def __init__(self, uri: str, *, live: bool = True, buffer_size: int = 2, realtime: bool = False,
                 reconnect_attempts: int | None = None, reconnect_interval_s: float = 1.0,
                 give_up_s: float | None = 600.0, io_timeout_s: float = 5.0) -> None:
        super().__init__(uri, live=live, buffer_size=buffer_size, realtime=realtime)
        self.policy = ReconnectPolicy(reconnect_interval_s=reconnect_interval_s, give_up_s=give_up_s,
                                      reconnect_attempts=reconnect_attempts, io_timeout_s=io_timeout_s)
        self._decoder: VideoDecoder | None = None
        self._timeline = Timeline(self.stats)
        # A connection attempt under way when the source is closed ends within its three I/O waits.
        self._join_timeout_s = max(self._join_timeout_s, self.policy.attempt_s + 1.0)

    @property
    def io_timeout_s(self) -> float:
        return self.policy.io_timeout_s

    @property
    def reconnect_attempts(self) -> int | None:
        return self.policy.reconnect_attempts

    @property
    def give_up_after_s(self) -> float:
        """See ``ReconnectPolicy.give_up_after_s``; a consumer's stall timeout should exceed it."""
        return self.policy.give_up_after_s

    @abstractmethod
    def _connect(self, timeline: Timeline) -> VideoDecoder:
        """Open the stream once, every wait bounded by ``io_timeout_s``; PyAV's errors propagate."""

    @abstractmethod
    def _fix(self) -> str:
        """What the user should check when the stream cannot be reached, e.g. 'check the server'."""

    def _why(self, exc: BaseException) -> str:
        return reason(exc, timeout_s=self.io_timeout_s)

    def _attempt(self) -> VideoDecoder:
        """One connection, counted only once its first picture has decoded; a failure comes back as
        ``_ConnectFailed`` with its reason."""
        started = time.monotonic()
        try:
            decoder = self._connect(self._timeline)
        except SourceError:
            raise
        except Exception as exc:
            # Some demuxers (RTSP) report an interrupted wait as invalid data: name the real cause.
            waited = time.monotonic() - started >= 0.95 * self.io_timeout_s
            why = f"no answer within {self.io_timeout_s:g} s" if waited else self._why(exc)
            raise _ConnectFailed(why) from exc
        try:
            decoder.start(timeout_s=self.io_timeout_s)
        except BaseException as exc:
            decoder.close()
            if isinstance(exc, SourceError):
                raise
            if not isinstance(exc, Exception):
                raise
            raise _ConnectFailed(self._no_picture(exc)) from exc
        return decoder

    def _no_picture(self, exc: Exception) -> str:
        import av

        if isinstance(exc, NoPicture) and "ended" in str(exc):
            return "the server ended the stream before its first picture"
        if isinstance(exc, (NoPicture, av.error.ExitError, av.error.TimeoutError, TimeoutError,
                            av.error.InvalidDataError)):
            return (f"the server answers but sent no picture within {self.io_timeout_s:g} s of "
                    f"connecting (a stalled encoder, or a keyframe interval longer than the I/O timeout)")
        return f"connected, then {self._why(exc)} before the first picture"

    def _open(self) -> SourceInfo:
        try:
            self._decoder = self._attempt()
        except _ConnectFailed as exc:
            raise SourceError(f"{self.uri}: cannot connect: {exc}; {self._fix()}") from exc.__cause__
        return source_info(self._decoder, uri=self.uri, live=self.live, frame_count=None)

    def _pictures(self) -> Iterator[Picture]:
        last_seen: float | None = None  # monotonic time of the last picture handed out
        gap_open = False  # reconnected, no picture yet: the gap runs until the next one
        while True:
            decoder = self._decoder
            assert decoder is not None, "_open or _reconnect provides a decoder"
            lost = "the server ended the stream"
            try:
                for picture in decoder.pictures():
                    now = time.monotonic()
                    if gap_open and last_seen is not None:
                        self.stats.gap_s += now - last_seen
                    gap_open = False
                    last_seen = now
                    yield picture
            except SourceError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failed read is a lost stream, to reconnect
                lost = self._why(exc)
            finally:
                decoder.close()
                self._decoder = None
            if self.stopping:
                return
            lost_at = last_seen if last_seen is not None else time.monotonic()
            self._decoder = self._reconnect(lost, lost_at)
            if self._decoder is None:  # stopped while waiting
                return
            self.stats.reconnects += 1
            gap_open = True

    def _reconnect(self, lost: str, lost_at: float) -> VideoDecoder | None:
        """A new connection with its first picture decoded, None when stopped while trying; raises
        ``SourceError`` when the policy gives up."""
        policy = self.policy
        deadline = math.inf if policy.give_up_s is None else lost_at + policy.give_up_s
        why, tried = lost, 0
        while policy.reconnect_attempts is None or tried < policy.reconnect_attempts:
            wait = min(policy.reconnect_interval_s, deadline - time.monotonic())
            if wait < 0 or self._stop.wait(wait):
                if self.stopping:
                    return None
                break  # out of time
            tried += 1
            self._timeline.new_session()
            try:
                return self._attempt()
            except (_ConnectFailed, SourceError) as exc:
                why = str(exc).split(": ", 1)[-1] if isinstance(exc, SourceError) else str(exc)
            if self.stopping:
                return None
        elapsed = time.monotonic() - lost_at
        self.stats.gap_s += elapsed
        if policy.reconnect_attempts == 0:
            raise SourceError(f"{self.uri}: stream lost ({lost}); reconnection is off "
                              f"(reconnect_attempts=0); {self._fix()}")
        budget = policy.reconnect_attempts
        limit = (f"the budget of {budget} attempt{'s' if budget != 1 else ''}" if budget is not None
                 and tried >= budget else f"the {policy.give_up_s:g} s limit")
        raise SourceError(f"{self.uri}: stream lost ({lost}); {tried} reconnect attempt"
                          f"{'s' if tried != 1 else ''} over {elapsed:.1f} s failed ({limit} is reached), "
                          f"the last: {why}; {self._fix()}")

    def _release(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None


class _ConnectFailed(Exception):
    """A connection attempt failed; the message is the reason, without the URL."""
