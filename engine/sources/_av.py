"""PyAV plumbing shared by the file, HTTP, RTSP and camera sources: open an input with a bounded wait,
pick its video stream, decode it picture by picture into RGB arrays, and turn PyAV's exceptions into
short reasons a user can act on.

Damaged packets: when the decoder rejects a packet (``InvalidDataError``) it is skipped and counted,
and decoding goes on from the next one, as every player does; the picture it carried is lost, so frame
indices simply continue. Only a long unbroken run of rejected packets ends the stream: that input is
not a damaged video but something else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import SourceError
from engine.sources.base import Picture

if TYPE_CHECKING:
    import av.container
    import av.stream

# A damaged H.264 GOP rejects a handful of packets (12 for 64 KiB of noise in a 720p clip, measured in
# tests/sources/test_file.py); 100 in a row is several seconds of video with not one decodable packet.
MAX_CORRUPT_IN_A_ROW = 100


class VideoDecoder:
    """The first video stream of an opened input, decoded in order into ``Picture`` values.

    Counters (read them after ``pictures()`` ends): ``packets`` demuxed with data, ``corrupt`` packets
    the decoder rejected.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.stream.Stream) -> None:
        self.container = container
        self.stream = stream
        self.packets = 0
        self.corrupt = 0

    @property
    def width(self) -> int:
        return int(self.stream.codec_context.width)

    @property
    def height(self) -> int:
        return int(self.stream.codec_context.height)

    @property
    def codec(self) -> str:
        return str(self.stream.codec_context.name)

    @property
    def fps(self) -> float | None:
        rate = self.stream.average_rate or self.stream.guessed_rate
        return float(rate) if rate else None

    @property
    def declared_frames(self) -> int | None:
        return int(self.stream.frames) or None  # containers that do not say report 0

    def pictures(self) -> Iterator[Picture]:
        """Decode to the end of the input. PyAV's demux errors (a lost connection, a read timeout)
        propagate; a run of ``MAX_CORRUPT_IN_A_ROW`` rejected packets raises ``SourceError``."""
        import av

        in_a_row = 0
        started = time.perf_counter()
        for packet in self.container.demux(self.stream):
            if packet.size:
                self.packets += 1
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                self.corrupt += 1
                in_a_row += 1
                if in_a_row >= MAX_CORRUPT_IN_A_ROW:
                    raise SourceError(
                        f"{self.container.name}: {in_a_row} packets in a row failed to decode; the input "
                        f"is not a playable video, check it with another player"
                    ) from None
                continue
            in_a_row = 0
            for frame in frames:
                # to_ndarray reformats through swscale; its array may keep the frame's row padding.
                image = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
                decode_ms = (time.perf_counter() - started) * 1000.0
                yield Picture(image=image, pts=frame.time, decode_ms=decode_ms)
                started = time.perf_counter()

    def close(self) -> None:
        self.container.close()


def open_video(url: str, *, live: bool, format: str | None = None, options: dict[str, str] | None = None,
               timeout_s: float | None = None) -> VideoDecoder:
    """Open ``url`` and its first video stream. Raises ``SourceError`` when the input has no video
    stream or one this PyAV build cannot decode; PyAV's own errors (missing file, refused connection,
    timeout) propagate for the caller to phrase with ``reason()``."""
    import av

    container = av.open(url, format=format, options=options or {}, timeout=timeout_s)
    try:
        if container.format.name == "tty":  # FFmpeg's last-resort guess for any text file
            raise SourceError(f"{url}: is a text file, not a video; pass a video file or stream")
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            raise SourceError(f"{url}: has no video stream (streams: {kinds}); pass a video")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # FFmpeg has no decoder for it
            raise SourceError(
                f"{url}: its video codec cannot be decoded by this PyAV build (FFmpeg "
                f"{av.ffmpeg_version_info}); re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
            )
        # Frame threading decodes several pictures at once and holds each back by that many frames:
        # fastest for files, but latency for a live stream, which gets slice threading instead.
        stream.thread_type = "SLICE" if live else "AUTO"
        return VideoDecoder(container, stream)
    except BaseException:
        container.close()
        raise


def reason(exc: BaseException, *, timeout_s: float | None = None) -> str:
    """A short phrase saying why PyAV failed, without the URL (the caller puts it first)."""
    import av

    if isinstance(exc, SourceError):
        return str(exc).split(": ", 1)[-1]
    if isinstance(exc, (av.error.ExitError, av.error.TimeoutError, TimeoutError)):
        # PyAV's timeout interrupts a blocked read with ExitError ("Immediate exit requested").
        return f"no answer within {timeout_s:g} s" if timeout_s else "timed out"
    if isinstance(exc, av.error.FFmpegError) and (exc.strerror or "").startswith("Server returned "):
        return f"the server answered {exc.strerror.removeprefix('Server returned ')}"  # HTTP 4xx/5xx
    if isinstance(exc, av.error.InvalidDataError):
        return "invalid data (not a video format PyAV can read)"
    if isinstance(exc, av.error.DecoderNotFoundError):
        return "no decoder for its codec in this PyAV build"
    if isinstance(exc, av.error.FFmpegError):
        return (exc.strerror or str(exc)).lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
