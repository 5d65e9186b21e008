"""The overlay video: H.264 in MP4 through PyAV.

The file is a fragmented MP4 (a fragment per keyframe, one keyframe a second) flushed packet by packet,
so a process that dies mid-stream still leaves a playable file holding everything up to the last
fragment; a normal close finalises it completely. Players, browsers and PyAV read it like any MP4, but
the container does not declare a frame count up front: count frames by decoding.

Frames carry the source's timestamps (``Frame.pts``, shifted so the first frame is at 0): a
variable-rate stream, or a live one whose buffer dropped frames, plays at its real pace.

Failures never cost what was written: the file is created by the first frame (a run that stops before
one leaves an earlier file at that path untouched), and once a write fails nothing more is muxed (FFmpeg
crashes when a muxer that failed a write is written to again, the final flush included). The file is
then cut back to its last whole fragment, so it stays playable.
"""

from __future__ import annotations

import logging
import os
import stat
from fractions import Fraction
from typing import NoReturn

import av
import cv2
import numpy as np

from engine.errors import SinkError
from engine.sinks.base import check_writable
from engine.types import Frame, FrameResult

log = logging.getLogger(__name__)

_CONTAINER_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
# MPEG's 90 kHz clock: whole ticks per frame at 24, 25, 30, 30000/1001, 50 and 60 fps, and RTSP's own
# clock for video, so source timestamps are kept to 11 microseconds.
TIME_BASE = Fraction(1, 90_000)


class Mp4Writer:
    """Writes each result's overlay (or its plain frame when none was rendered) as one video frame.

    Args:
        path: the .mp4 to write; checked here, created (or truncated) by the first ``write``.
        fps: the stream's nominal rate: the encoder's rate control and keyframe interval, and the
            frame spacing when frames carry no ``pts``.
        live: frames without ``pts`` are timed by their capture clock (True) or spaced at ``fps``
            (False). Frames with ``pts`` are always timed by it.
        crf, preset: libx264 quality and speed (veryfast keeps the encoder off the critical path on a
            2-core CPU: about 3.5 ms a 640x480 frame).

    Raises:
        SinkError: from the constructor when ``path`` cannot be written; from ``write`` and ``close``
            when writing fails (a full disk), naming the file and the frames it holds.
    """

    wants_overlay = True

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None, live: bool = False,
                 crf: int = 23, preset: str = "veryfast") -> None:
        self.path = check_writable(path, option="--out")
        self.rate = Fraction(fps or 30.0).limit_denominator(1001)
        self.live = live
        self.frames = 0
        # No B-frames: a fragmented MP4 has no edit list to hide their reorder delay, so with them every
        # frame would play that delay (two frames) late, and the first one would not be at 0.
        self._codec_options = {"crf": str(crf), "preset": preset, "g": str(max(1, round(float(self.rate)))),
                               "bf": "0"}
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the first frame, as given
        self._failed: str | None = None  # the first failure; nothing is muxed after it
        self._whole_bytes = 0  # file size after the last successful mux: only whole fragments
        self._warned_resize = False
        self._clock = _FrameClock(rate=self.rate, live=live)

    def write(self, result: FrameResult) -> None:
        if self._failed is not None:
            raise SinkError(self._failed)
        image = (result.overlay if result.overlay is not None else result.frame.image).cpu().numpy()
        if self._stream is None:
            self._open(width=image.shape[1], height=image.shape[0])
        frame = av.VideoFrame.from_ndarray(self._fit(image), format="rgb24")
        frame.pts = self._clock.ticks(result.frame, self.frames)
        frame.time_base = TIME_BASE
        try:
            packets = self._stream.encode(frame)
        except av.error.FFmpegError as exc:
            self._fail(f"encoding frame {self.frames} for {self.path} failed ({_reason(exc)})")
        self._mux(packets)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finalise the file; after a failed write, only close it and cut it
        back to its last whole fragment (no flush: see the module docstring)."""
        if self._container is None:
            return
        container, self._container = self._container, None
        error: SinkError | None = None
        try:
            if self._failed is None:
                self._mux(self._stream.encode(), container=container)
        except SinkError as exc:
            error = exc
        except av.error.FFmpegError as exc:
            error = self._failure(f"finishing {self.path} failed ({_reason(exc)})")
        try:
            container.close()  # writes the trailer: a failure here loses only the last fragment
        except (av.error.FFmpegError, OSError) as exc:
            if self._failed is None:
                error = self._failure(f"finishing {self.path} failed ({_reason(exc)})")
        if self._failed is not None:
            self._cut_to_whole_fragments()
        if error is not None:
            raise error

    def _open(self, *, width: int, height: int) -> None:
        try:
            container = av.open(str(self.path), "w", format="mp4", options=_CONTAINER_OPTIONS)
        except (av.error.FFmpegError, OSError) as exc:
            self._fail(f"cannot write {self.path}: {_reason(exc)}; choose another --out path")
        self._size = (width, height)
        stream = container.add_stream("libx264", rate=self.rate, options=self._codec_options)
        # 4:2:0 chroma needs even sizes: an odd frame gets one replicated row/column.
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = TIME_BASE
        self._container, self._stream = container, stream

    def _mux(self, packets: list[av.Packet], *,
             container: av.container.OutputContainer | None = None) -> None:
        container = container or self._container
        for packet in packets:
            try:
                container.mux(packet)
            except (av.error.FFmpegError, OSError) as exc:
                self._fail(f"writing {self.path} failed after {self.frames} frames ({_reason(exc)}); what "
                           "was written before stays playable; free space or choose another --out path")
            self._whole_bytes = self._file_size()

    def _fail(self, message: str) -> NoReturn:
        raise self._failure(message)

    def _failure(self, message: str) -> SinkError:
        self._failed = self._failed or message
        return SinkError(message)

    def _file_size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError:
            return self._whole_bytes

    def _cut_to_whole_fragments(self) -> None:
        # With flush_packets the muxer writes a fragment (moof + mdat) within one mux call, so the size
        # after the last successful call ends on a fragment boundary; anything past it is a torn
        # fragment or a trailer written after the failure. A file that never got a whole write holds
        # nothing playable and is removed rather than left empty.
        try:
            info = os.stat(self.path)
            if not stat.S_ISREG(info.st_mode):
                return
            if self._whole_bytes == 0:
                os.unlink(self.path)
            elif info.st_size > self._whole_bytes:
                os.truncate(self.path, self._whole_bytes)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s: could not cut the video back to its last whole fragment (%s)", self.path, exc)

    def _fit(self, image: np.ndarray) -> np.ndarray:  # [H, W, 3] uint8 -> [H', W', 3] uint8
        width, height = self._size
        if (image.shape[1], image.shape[0]) != (width, height):
            # A resolution change mid-stream: one video keeps one size, so later frames are scaled.
            if not self._warned_resize:
                log.warning("%s: input size changed from %dx%d to %dx%d; scaling frames to the first size",
                            self.path, width, height, image.shape[1], image.shape[0])
                self._warned_resize = True
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if width % 2 or height % 2:
            image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        return np.ascontiguousarray(image)


class _FrameClock:
    """Presentation times in ``TIME_BASE`` ticks, the first frame at 0, strictly increasing.

    The first frame decides the clock: its ``pts`` when it has one, else the capture clock (live) or
    the frame count at ``rate``. A frame without ``pts`` on the pts clock comes one frame after the
    previous one. A timestamp that goes backwards (a damaged file, a stream that restarted its clock)
    is a discontinuity: the stream is shifted so that frame comes one frame after the previous one, and
    later frames keep their spacing; jumps forward are kept, they are real time.
    """

    def __init__(self, *, rate: Fraction, live: bool) -> None:
        self.live = live
        self.rate = rate
        self.frame_ticks = max(1, round(1 / (rate * TIME_BASE)))
        self.kind: str | None = None  # "pts", "capture" or "count"
        self._t0: float | None = None  # seconds of the first frame on the chosen clock
        self._shift = 0  # ticks added after backward jumps
        self._last = -1

    def ticks(self, frame: Frame, count: int) -> int:
        if self.kind is None:
            self.kind = "pts" if frame.pts is not None else "capture" if self.live else "count"
        clocks = {"pts": frame.pts, "capture": frame.capture_time, "count": float(count / self.rate)}
        seconds = clocks[self.kind]
        if seconds is None:
            ticks = self._last + self.frame_ticks
        else:
            if self._t0 is None:
                self._t0 = seconds
            ticks = round((seconds - self._t0) / TIME_BASE) + self._shift
            if ticks <= self._last:
                self._shift += self._last + self.frame_ticks - ticks
                ticks = self._last + self.frame_ticks
        self._last = ticks
        return ticks


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)
