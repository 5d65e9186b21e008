"""Frames already in memory as a source: for programs that decode themselves, and for benchmarks that
must feed two pipelines exactly the same pictures."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from engine.errors import ConfigError
from engine.sources.base import Picture, Source, SourceInfo


class ArraySource(Source):
    """Frames from a sequence of [H, W, 3] uint8 RGB arrays, in order; pts is index / fps. With
    ``realtime`` they arrive at ``fps``, as from a camera."""

    def __init__(self, images: Sequence[np.ndarray], *, fps: float = 30.0, live: bool = False,
                 buffer_size: int = 2, realtime: bool = False, uri: str = "memory://frames") -> None:
        if not len(images):
            raise ConfigError("ArraySource needs at least one frame")
        if not 0 < fps <= 1000:  # also refuses NaN
            raise ConfigError(f"ArraySource fps must be in (0, 1000], got {fps}")
        super().__init__(uri, live=live, buffer_size=buffer_size, realtime=realtime)
        self.images = images
        self.fps = fps

    def _open(self) -> SourceInfo:
        h, w = self.images[0].shape[:2]
        return SourceInfo(uri=self.uri, live=self.live, width=w, height=h, fps=self.fps,
                          frame_count=len(self.images), codec="raw", start_pts=0.0)

    def _pictures(self) -> Iterator[Picture]:
        for i, image in enumerate(self.images):
            yield Picture(image=np.ascontiguousarray(image), pts=i / self.fps, decode_ms=0.0)
            if self.stopping:
                return
