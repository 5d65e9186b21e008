"""Running the semantic model on every k-th frame and reusing its map in between."""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import ConfigError
from engine.types import SemanticMap


class SegmentCadence:
    """Decides, frame by frame, whether the semantic model runs or the last map is reused.

    The model runs on a frame when there is no map yet, when ``every`` or more frame indices have passed
    since the frame the last map was computed on, or when the frame's size differs from the map's (a
    stream that changed resolution). Counting frame indices rather than calls keeps the cadence in time on
    live streams whose buffer drops frames: with ``every=5`` a map is never more than 4 indices old.

    One cadence per stream. The pipeline either calls ``step`` with a function that runs the model, or,
    to batch the due frames of several streams into one model call, asks ``due`` per stream, runs the
    model on those frames, ``store``s each result and ``reuse``s for the others.
    """

    def __init__(self, every: int = 1) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"segment every={every!r} must be a positive integer (1: every frame)")
        self.every = every
        self.last: SemanticMap | None = None  # the last fresh map
        self.runs = 0  # frames the model ran on
        self.reuses = 0  # frames that got the last map again

    def due(self, frame_index: int, height: int, width: int) -> bool:
        last = self.last
        return (last is None or (last.height, last.width) != (height, width)
                or frame_index - last.frame_index >= self.every or frame_index < last.frame_index)

    def store(self, result: SemanticMap) -> SemanticMap:
        """Keep ``result`` (a fresh map) as the one to reuse; returns it."""
        if not result.fresh:
            raise ValueError("SegmentCadence.store takes a freshly computed map")
        self.last = result
        self.runs += 1
        return result

    def reuse(self) -> SemanticMap:
        """The last map, marked not fresh."""
        if self.last is None:
            raise RuntimeError("SegmentCadence.reuse before any map was stored")
        self.reuses += 1
        return self.last.reused()

    def step(self, frame_index: int, height: int, width: int,
             run: Callable[[], SemanticMap]) -> SemanticMap:
        """The map for frame ``frame_index``: ``run()`` when due, else the last map reused."""
        if self.due(frame_index, height, width):
            return self.store(run())
        return self.reuse()
