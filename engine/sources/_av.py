"""PyAV plumbing shared by the file, HTTP, RTSP and camera sources: open an input with a bounded wait,
choose its video stream as FFmpeg does, decode it into RGB arrays as a player shows them, and turn
PyAV's exceptions into short reasons a user can act on.

What a player shows, not what the file stores:
- the stream: attached pictures (cover art, which tagging tools often list first) and one-frame
  thumbnail tracks are never chosen over moving video; among the rest, FFmpeg's own choice
  (``av_find_best_stream``: the default stream, then the one it probed best);
- the orientation: each frame's display matrix (phones record portrait video as rotated landscape) is
  applied (``engine.sources.orientation``);
- the pixel shape: a non-square sample aspect ratio is resampled to square pixels, as players do;
- the timing: every frame gets a strictly increasing pts (``engine.sources.timeline``);
- the content: a stream counts as opened once its first picture has decoded (``VideoDecoder.start``), so
  a stream that describes itself and sends nothing, or nothing decodable, fails at open.

Damaged packets: when the decoder rejects a packet it is skipped and counted (``SourceStats.corrupt``),
and decoding goes on from the next one, as every player does. Only a long unbroken run of rejected
packets ends the stream: that input is not a damaged video but something else. A packet the demuxer
read short because the input ends inside it is not decoded at all: a frame-threaded decoder that fails
on the last packet stops handing out the pictures it still holds, so one partial picture would cost
the last few whole ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import SourceError
from engine.sources.base import Picture, SourceInfo
from engine.sources.orientation import Orientation, display_width, usable_sar
from engine.sources.timeline import Timeline
from engine.types import SourceStats

if TYPE_CHECKING:
    import av.container
    import av.stream

# A damaged H.264 GOP rejects a handful of packets (12 for 64 KiB of noise in a 720p clip, measured in
# tests/sources/test_file.py); 100 in a row is several seconds of video with not one decodable packet.
MAX_CORRUPT_IN_A_ROW = 100
# The fastest real video: high-speed cameras record up to ~1,000 frames/s. A stream that claims more is
# reporting a clock (RTP's 90 kHz), not a frame rate.
MAX_PLAUSIBLE_FPS = 1000.0


class NoPicture(Exception):
    """The input ended, or ``start``'s deadline passed, before its first picture; the message says
    which, without the input's name."""


class VideoDecoder:
    """The chosen video stream of an opened input, decoded in order into ``Picture`` values.

    Counters: ``packets`` demuxed with data, ``discarded`` of them that the container marks as not
    shown (edit lists); ``stats`` (the source's) gets ``corrupt``, ``concealed`` and the timeline's
    counts as they happen.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.stream.Stream, *,
                 stats: SourceStats, timeline: Timeline | None = None) -> None:
        self.container = container
        self.stream = stream
        self.stats = stats
        self.timeline = timeline if timeline is not None else Timeline(stats)
        if self.timeline.fps is None:  # a live source's timeline learns the rate from its first session
            self.timeline.fps = self.fps
        self.packets = 0
        self.discarded = 0
        self.sar = usable_sar(_sar(stream))
        self.notes: list[str] = []  # what differs from the stored stream, once each, for SourceInfo
        self._frames = self._decode()
        self._held: Picture | None = None
        self.first: Picture | None = None  # the stream's first picture, once start() has decoded it
        self._deadline: float | None = None  # start(): the first picture must come before this
        self._oriented: Orientation | None = None  # the first frame's orientation, for info/notes
        self._rotation: int | None = None  # frame.rotation of the frame whose matrix was last read
        self._orientation: Orientation | None = None  # what that matrix said (None: no right angle)
        self._odd_orientation = False
        # One reformatter (one swscale context, reused frame after frame) for the whole stream: a
        # frame's own to_ndarray(format=...) builds a context, with its threads, on every frame.
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()

    @property
    def codec(self) -> str:
        return str(self.stream.codec_context.name)

    @property
    def fps(self) -> float | None:
        """The stream's frame rate; None where it does not say or says something no video has."""
        rate = self.stream.average_rate or self.stream.guessed_rate
        if not rate or not 0 < float(rate) <= MAX_PLAUSIBLE_FPS:
            return None
        return float(rate)

    @property
    def declared_frames(self) -> int | None:
        return int(self.stream.frames) or None  # containers that do not say report 0

    @property
    def orientation(self) -> Orientation:
        return self._oriented or Orientation()

    def start(self, *, timeout_s: float | None = None) -> Picture:
        """Decode up to the first picture and hold it for ``pictures()``. Raises ``NoPicture`` when the
        input ends first or (with ``timeout_s``) no picture decodes within that many seconds; PyAV's
        read errors propagate."""
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        picture = next(self._frames, None)
        self._deadline = None
        if picture is None:
            raise NoPicture("it ended before its first picture")
        self._held = self.first = picture
        return picture

    def pictures(self) -> Iterator[Picture]:
        """The held first picture (see ``start``), then the rest of the input. PyAV's demux errors (a
        lost connection, a read timeout) propagate after the pictures the decoder still held; a run of
        ``MAX_CORRUPT_IN_A_ROW`` rejected packets raises ``SourceError``."""
        if self._held is not None:
            held, self._held = self._held, None
            yield held
        yield from self._frames

    def close(self) -> None:
        self._frames.close()
        self.container.close()

    def _decode(self) -> Iterator[Picture]:
        import av

        started = time.perf_counter()
        in_a_row = 0
        try:
            for packet in _short_end_dropped(self.container.demux(self.stream), self.stats):
                # The clock starts once the packet is here: the wait for data (a live stream's next
                # packet, a frame interval) is not decoding time.
                started = time.perf_counter()
                if packet.size:
                    self.packets += 1
                    self.discarded += packet.is_discard
                try:
                    frames = packet.decode()
                except av.error.EOFError:  # the decoder was already drained
                    return
                except av.error.FFmpegError:  # damaged data; ENOMEM and the like come back next packet
                    self.stats.corrupt += 1
                    in_a_row += 1
                    if in_a_row >= MAX_CORRUPT_IN_A_ROW:
                        raise SourceError(
                            f"{self.container.name}: {in_a_row} packets in a row failed to decode; the "
                            f"input is not a playable video, check it with another player") from None
                    self._check_deadline()
                    continue
                in_a_row = 0
                for frame in frames:
                    yield self._picture(frame, started)
                    started = time.perf_counter()
                self._check_deadline()
        except (SourceError, NoPicture):
            raise
        except Exception:
            # The read failed (a lost connection, a timeout, a damaged container): the pictures the
            # decoder holds back for reordering and threading are whole; hand them out first.
            started = time.perf_counter()
            for frame in self._drain():
                yield self._picture(frame, started)
                started = time.perf_counter()
            raise

    def _drain(self) -> list:
        try:
            return self.stream.codec_context.decode(None)
        except Exception:  # noqa: BLE001 - a decoder that cannot flush has nothing left to give
            return []

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise NoPicture("no picture decoded in time")

    def _picture(self, frame, started: float) -> Picture:  # frame: av.VideoFrame
        orientation = self._orientation_of(frame)
        if orientation is None:
            if not self._odd_orientation:
                self._odd_orientation = True
                self.notes.append("its display matrix is not a right-angle rotation; frames are "
                                  "delivered as stored")
            orientation = Orientation()
        if self._oriented is None:
            self._oriented = orientation
        width = display_width(frame.width, self.sar)
        size = {"width": width, "height": frame.height} if width != frame.width else {}
        # swscale converts to RGB (and scales to square pixels in the same pass); the array may keep
        # the frame's row padding, which a later contiguous copy removes.
        rgb = self._reformatter.reformat(frame, format="rgb24", **size)
        image = orientation.apply(rgb.to_ndarray())
        image = np.ascontiguousarray(image)
        if frame.is_corrupt:
            self.stats.concealed += 1
        pts = self.timeline.stamp(frame.time, time.monotonic())
        return Picture(image=image, pts=pts, decode_ms=(time.perf_counter() - started) * 1000.0)


    def _orientation_of(self, frame) -> Orientation | None:  # frame: av.VideoFrame
        """``Orientation.of_frame``, read again only when the frame's rotation angle changes.

        Reading ``frame.side_data`` ties the frame and PyAV's side-data container into a reference
        cycle, so the frame and its pixels are freed only by the cyclic garbage collector: read on
        every frame (each with its own swscale context and threads, as ``to_ndarray`` made them), a
        960x540 stream held up to ~400 threads and hundreds of MiB between collections
        (``benchmarks/reliability.py rtsp-kills``). ``frame.rotation`` reads the same matrix without
        the cycle, so one frame per connection waits for the collector. A change between two
        orientations of one angle (a mirror appearing mid-stream) goes unseen; streams keep one
        display matrix from start to end in practice.
        """
        rotation = frame.rotation
        if rotation != self._rotation:
            self._rotation = rotation
            self._orientation = Orientation.of_frame(frame)
        return self._orientation


def source_info(decoder: VideoDecoder, *, uri: str, live: bool, frame_count: int | None) -> SourceInfo:
    """What ``decoder`` delivers, read off its first picture (``start`` has run)."""
    first = decoder.first
    assert first is not None, "start() decodes the first picture before the info is built"
    height, width = first.image.shape[:2]
    o = decoder.orientation
    turned = () if o.identity else (f"turned for display: {o.describe()}",)
    return SourceInfo(uri=uri, live=live, width=width, height=height, fps=decoder.fps,
                      frame_count=frame_count, codec=decoder.codec, start_pts=first.pts,
                      rotation=o.rotation, mirrored=o.mirrored, notes=tuple(decoder.notes) + turned)


def _short_end_dropped(packets, stats: SourceStats):
    """``packets`` less a last packet that the demuxer read short (the input ends inside it), counted
    as corrupt. A packet the demuxer flags as corrupt waits for the next one to show whether it was the
    last with data (PyAV's empty flush packet follows); every other packet passes at once, so a live
    stream gains no latency."""
    held = None
    try:
        for packet in packets:
            if held is not None:
                if packet.size:
                    yield held
                else:
                    stats.corrupt += 1
                held = None
            if packet.size and packet.is_corrupt:
                held = packet
                continue
            yield packet
    except Exception:
        if held is not None:
            stats.corrupt += 1  # the read after it failed: it was cut short too
        raise
    if held is not None:
        yield held


def _sar(stream) -> Fraction | None:
    for owner in (stream, stream.codec_context):
        sar = owner.sample_aspect_ratio
        if sar:
            return Fraction(sar)
    return None


def choose_stream(container: av.container.InputContainer, url: str):
    """The video stream a player plays (see the module docstring). Raises ``SourceError`` when there
    is none, only cover art, or none this PyAV build can decode."""
    import av

    videos = list(container.streams.video)
    if not videos:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise SourceError(f"{url}: has no video stream (streams: {kinds}); pass a video")
    moving = [s for s in videos if not s.disposition & av.stream.Disposition.attached_pic]
    if not moving:
        raise SourceError(f"{url}: has no video, only cover art (an attached picture); pass a video")
    decodable = [s for s in moving if s.codec_context is not None]
    if not decodable:
        raise SourceError(
            f"{url}: its video codec cannot be decoded by this PyAV build (FFmpeg "
            f"{av.ffmpeg_version_info}); re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
        )
    best = container.streams.best("video")
    thumbnails = [s for s in decodable if s.frames == 1]
    videos_proper = [s for s in decodable if s.frames != 1] or thumbnails
    if best in videos_proper:
        return best
    # FFmpeg's choice was cover art or a one-frame track: take the largest moving video instead.
    return max(videos_proper, key=lambda s: (s.codec_context.width * s.codec_context.height, -s.index))


def open_video(url: str, *, live: bool, stats: SourceStats, timeline: Timeline | None = None,
               format: str | None = None, options: dict[str, str] | None = None,
               timeout_s: float | None = None) -> VideoDecoder:
    """Open ``url`` and choose its video stream; nothing is decoded yet (``VideoDecoder.start``).
    Raises ``SourceError`` when the input has no video a player would play; PyAV's own errors (missing
    file, refused connection, timeout) propagate for the caller to phrase with ``reason()``."""
    import av

    container = av.open(url, format=format, options=options or {}, timeout=timeout_s)
    try:
        if container.format.name == "tty":  # FFmpeg's last-resort guess for any text file
            raise SourceError(f"{url}: is a text file, not a video; pass a video file or stream")
        stream = choose_stream(container, url)
        # Frame threading decodes several pictures at once and holds each back by that many frames:
        # fastest for files, but latency for a live stream, which gets slice threading instead.
        stream.thread_type = "SLICE" if live else "AUTO"
        decoder = VideoDecoder(container, stream, stats=stats, timeline=timeline)
        skipped = _why_not_first(container, stream)
        if skipped:
            decoder.notes.append(f"plays video stream {stream.index} ({skipped}), as players do")
        stored_sar = _sar(stream)
        if decoder.sar is not None and decoder.sar != 1:
            decoder.notes.append(f"pixels are {decoder.sar.numerator}:{decoder.sar.denominator} "
                                 f"(sample aspect ratio); frames are resampled to square pixels")
        elif decoder.sar is None and stored_sar:
            decoder.notes.append(f"its sample aspect ratio {stored_sar.numerator}:{stored_sar.denominator} "
                                 f"is no real pixel shape; ignored, pixels are taken as square")
        rate = stream.average_rate or stream.guessed_rate
        if rate and decoder.fps is None:
            decoder.notes.append(f"its header claims {float(rate):g} frames/s; the frame rate is "
                                 f"treated as unknown and pts alone give the timing")
        return decoder
    except BaseException:
        container.close()
        raise


def _why_not_first(container, chosen) -> str:
    """Why ``chosen`` is not simply the first video stream, or '' when it is."""
    import av

    first = container.streams.video[0]
    if first is chosen:
        return ""
    if first.disposition & av.stream.Disposition.attached_pic:
        return f"stream {first.index} is cover art"
    return f"stream {first.index} is a one-frame thumbnail" if first.frames == 1 else "the best stream"


def reason(exc: BaseException, *, timeout_s: float | None = None) -> str:
    """A short phrase saying why PyAV failed, without the URL (the caller puts it first)."""
    import av

    if isinstance(exc, (SourceError, NoPicture)):
        return str(exc).split(": ", 1)[-1] if isinstance(exc, SourceError) else str(exc)
    if isinstance(exc, (av.error.ExitError, av.error.TimeoutError, TimeoutError)):
        # PyAV's timeout interrupts a blocked read with ExitError ("Immediate exit requested").
        return f"no answer within {timeout_s:g} s" if timeout_s else "timed out"
    if isinstance(exc, av.error.FFmpegError) and (exc.strerror or "").startswith("Server returned "):
        return f"the server answered {exc.strerror.removeprefix('Server returned ')}"  # HTTP 4xx/5xx
    if isinstance(exc, av.error.InvalidDataError):
        return "invalid data (not a video format PyAV can read)"
    if isinstance(exc, av.error.MemoryError):  # FFmpeg allocating what a corrupt length field claims
        return "out of memory while reading it (a damaged size field in the data, or the machine is full)"
    if isinstance(exc, av.error.DecoderNotFoundError):
        return "no decoder for its codec in this PyAV build"
    if isinstance(exc, av.error.FFmpegError):
        return (exc.strerror or str(exc)).lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
