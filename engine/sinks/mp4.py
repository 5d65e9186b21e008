"""The overlay video: H.264 in MP4 through PyAV.

The file is a fragmented MP4 (a fragment per keyframe, one keyframe a second) flushed packet by packet,
so a process that dies mid-stream still leaves a playable file holding everything up to the last
fragment; a normal close finalises it completely. Players, browsers and PyAV read it like any MP4, but
the container does not declare a frame count up front: count frames by decoding.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction

import av
import cv2
import numpy as np

from engine.errors import SinkError
from engine.sinks.base import check_writable
from engine.types import FrameResult

log = logging.getLogger(__name__)

_CONTAINER_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


class Mp4Writer:
    """Writes each result's overlay (or its plain frame when none was rendered) as one video frame.

    Args:
        path: the .mp4 to create (truncated if it exists).
        fps: the output rate; the source's rate for files. Live sources are timed by capture clock
            instead (``live=True``) so dropped frames do not speed the video up.
        crf, preset: libx264 quality and speed (veryfast keeps the encoder off the critical path on a
            2-core CPU: about 3.5 ms a 640x480 frame).
    """

    wants_overlay = True

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None, live: bool = False,
                 crf: int = 23, preset: str = "veryfast") -> None:
        self.path = check_writable(path, option="--out")
        self.rate = Fraction(fps or 30.0).limit_denominator(1001)
        self.live = live
        self.frames = 0
        self._codec_options = {"crf": str(crf), "preset": preset, "g": str(max(1, round(float(self.rate))))}
        try:
            # FFmpeg opens the file only when the first packet is muxed; create it now so an unwritable
            # path fails before the run starts.
            open(self.path, "wb").close()
            self._container = av.open(str(self.path), "w", format="mp4", options=_CONTAINER_OPTIONS)
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}; choose another --out path") from None
        except av.error.FFmpegError as exc:
            raise SinkError(f"cannot write {self.path}: {exc}; choose another --out path") from None
        self._stream: av.VideoStream | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the first frame, as given
        self._t0: float | None = None
        self._last_pts = -1
        self._warned_resize = False

    def write(self, result: FrameResult) -> None:
        image = (result.overlay if result.overlay is not None else result.frame.image).cpu().numpy()
        if self._stream is None:
            self._open_stream(width=image.shape[1], height=image.shape[0])
        frame = av.VideoFrame.from_ndarray(self._fit(image), format="rgb24")
        frame.pts = self._pts(result)
        frame.time_base = self._stream.codec_context.time_base
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            raise SinkError(f"writing {self.path} failed after {self.frames} frames: {exc}") from None
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    container.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            raise SinkError(f"finishing {self.path} failed: {exc}") from None
        finally:
            container.close()

    def _open_stream(self, *, width: int, height: int) -> None:
        self._size = (width, height)
        stream = self._container.add_stream("libx264", rate=self.rate, options=self._codec_options)
        # 4:2:0 chroma needs even sizes: an odd frame gets one replicated row/column.
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000) if self.live else 1 / self.rate
        self._stream = stream

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

    def _pts(self, result: FrameResult) -> int:
        if not self.live:
            return self.frames
        if self._t0 is None:
            self._t0 = result.frame.capture_time
        pts = max(int(round((result.frame.capture_time - self._t0) * 1000)), self._last_pts + 1)
        self._last_pts = pts
        return pts
