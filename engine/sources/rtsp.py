"""RTSP streams (IP cameras, media servers), read by PyAV's RTSP client.

Live by default: a bounded buffer keeps the newest pictures and counts the ones it drops. Interleaved
TCP is the default transport: it passes NAT and firewalls and loses no packets, where UDP shows lost
packets as smeared pictures. Every socket wait is bounded by ``io_timeout_s``, so a server that hangs
counts as a lost stream, and reconnection follows ``engine.sources.live``.

A connection counts once its first picture has decoded: a server that completes the RTSP handshake
(OPTIONS, DESCRIBE, SETUP, PLAY) and then sends nothing fails the attempt after ``io_timeout_s``.
FFmpeg's frame-rate probe (``fpsprobesize``) is off: it reads about 20 frames, 0.7 s of a 30 fps camera
(measured against GStreamer's server on 127.0.0.1: open in 0.74 s with it, 0.07 s without), before
the first picture can be handed out, on every connection and reconnection. The rate then comes from the
stream's own timing information, and where it gives none the pts alone time the frames.
"""

from __future__ import annotations

from engine.errors import SourceError
from engine.sources._av import VideoDecoder, open_video
from engine.sources.live import LiveStreamSource
from engine.sources.timeline import Timeline

_TRANSPORTS = ("tcp", "udp")


class RtspSource(LiveStreamSource):
    """An ``rtsp://`` or ``rtsps://`` stream; reconnects on loss as its ``ReconnectPolicy`` says."""

    def __init__(self, url: str, *, live: bool = True, buffer_size: int = 2, realtime: bool = False,
                 reconnect_attempts: int | None = None, reconnect_interval_s: float = 1.0,
                 give_up_s: float | None = 600.0, io_timeout_s: float = 5.0, transport: str = "tcp") -> None:
        super().__init__(url, live=live, buffer_size=buffer_size, realtime=realtime,
                         reconnect_attempts=reconnect_attempts, reconnect_interval_s=reconnect_interval_s,
                         give_up_s=give_up_s, io_timeout_s=io_timeout_s)
        if transport not in _TRANSPORTS:
            raise SourceError(f"{url}: unknown RTSP transport '{transport}'; use one of {_TRANSPORTS}")
        self.transport = transport

    def options(self) -> dict[str, str]:
        """The options handed to FFmpeg's RTSP demuxer."""
        return {
            "rtsp_transport": self.transport,
            "timeout": str(round(self.io_timeout_s * 1e6)),  # socket I/O timeout, in microseconds
            "allowed_media_types": "video",  # no audio session to set up and keep alive
            "fpsprobesize": "0",  # see the module docstring
        }

    def _connect(self, timeline: Timeline) -> VideoDecoder:
        # PyAV's own timeout also bounds the parts the socket timeout does not (stream probing).
        return open_video(self.uri, live=True, stats=self.stats, timeline=timeline, options=self.options(),
                          timeout_s=self.io_timeout_s)

    def _why(self, exc: BaseException) -> str:
        import av

        if isinstance(exc, av.error.InvalidDataError):
            return "the answer is not an RTSP stream PyAV can play"
        return super()._why(exc)

    def _fix(self) -> str:
        return "check the address and that the server is up"
