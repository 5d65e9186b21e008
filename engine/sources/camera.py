"""V4L2 capture devices (USB and built-in cameras on Linux), read by PyAV's ``v4l2`` demuxer.

Live by default. The device's own format is used unless ``size``, ``fps`` or ``pixel_format`` ask for
another (``v4l2:///dev/video0?size=1280x720&fps=30&pixel_format=mjpeg``); a camera that cannot give
them fails at open with the driver's answer. An unplugged camera is a lost stream: the source tries to
reopen the device (``engine.sources.live``), then gives up with a ``SourceError``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from engine.errors import SourceError
from engine.sources._av import MAX_PLAUSIBLE_FPS, VideoDecoder, open_video
from engine.sources.base import SourceInfo
from engine.sources.live import LiveStreamSource
from engine.sources.timeline import Timeline

_MAX_SIDE = 16384  # pixels: beyond any capture device; a larger request is a typo


class CameraSource(LiveStreamSource):
    """A V4L2 device such as ``/dev/video0``."""

    def __init__(self, device: str | Path, *, live: bool = True, buffer_size: int = 2,
                 realtime: bool = False, reconnect_attempts: int | None = None,
                 reconnect_interval_s: float = 1.0, give_up_s: float | None = 600.0, io_timeout_s: float = 5.0,
                 size: tuple[int, int] | None = None, fps: float | None = None,
                 pixel_format: str | None = None, uri: str | None = None) -> None:
        super().__init__(uri or str(device), live=live, buffer_size=buffer_size, realtime=realtime,
                         reconnect_attempts=reconnect_attempts, reconnect_interval_s=reconnect_interval_s,
                         give_up_s=give_up_s, io_timeout_s=io_timeout_s)
        self.device = str(device)
        if size is not None and (len(size) != 2 or not all(isinstance(v, int) and 0 < v <= _MAX_SIDE
                                                           for v in size)):
            raise SourceError(f"{device}: camera size must be (width, height), whole pixels from 1 to "
                              f"{_MAX_SIDE}, got {size}")
        if fps is not None and not (math.isfinite(fps) and 0 < fps <= MAX_PLAUSIBLE_FPS):
            raise SourceError(f"{device}: camera fps must be > 0 and at most {MAX_PLAUSIBLE_FPS:g}, got {fps}")
        self.size = size
        self.fps = fps
        self.pixel_format = pixel_format

    def options(self) -> dict[str, str]:
        """The options handed to FFmpeg's v4l2 demuxer; empty keeps the device's current format."""
        opts: dict[str, str] = {}
        if self.size is not None:
            opts["video_size"] = f"{self.size[0]}x{self.size[1]}"
        if self.fps is not None:
            opts["framerate"] = f"{self.fps:g}"
        if self.pixel_format is not None:
            opts["input_format"] = self.pixel_format  # e.g. mjpeg, yuyv422
        return opts

    def _open(self) -> SourceInfo:
        device = Path(self.device)
        if not device.exists():
            raise SourceError(f"{self.uri}: no such camera device; list cameras with `ls /dev/video*` "
                              f"and check that it is plugged in")
        if not os.access(device, os.R_OK):
            raise SourceError(f"{self.uri}: permission denied; add your user to the 'video' group")
        return super()._open()

    def _connect(self, timeline: Timeline) -> VideoDecoder:
        return open_video(self.device, live=True, stats=self.stats, timeline=timeline, format="v4l2",
                          options=self.options(), timeout_s=self.io_timeout_s)

    def _why(self, exc: BaseException) -> str:
        if getattr(exc, "errno", None) == 25:  # ENOTTY: the driver does not speak V4L2
            return "not a V4L2 capture device"
        return super()._why(exc)

    def _fix(self) -> str:
        return "check the camera (plugged in, not used by another program, supports the options asked)"
