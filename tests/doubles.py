"""Test doubles for the pipeline's stages: in-memory sources, scripted detectors, the tracker double
(``MaskTracker``, shared with the engine's own evaluation doubles) and a harness that drives a fusion
policy through the real per-frame processor."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from engine.errors import SourceError
from engine.eval.doubles import MaskTracker
from engine.interfaces import Fusion
from engine.processor import FrameProcessor, SharedStages, Stream
from engine.sources.base import Picture
from engine.sources.memory import ArraySource as MemorySource
from engine.segment.labels import LabelSet
from engine.types import Detections, Frame, FrameResult, SemanticMap

__all__ = ["ArraySource", "BandSegmenter", "FusionHarness", "MaskTracker", "ScriptedDetector", "SquareDetector",
           "moving_square_frames"]


class ArraySource(MemorySource):
    """``engine.sources.ArraySource`` that can fail after ``fail_after`` frames, as a broken stream does."""

    def __init__(self, images: Sequence[np.ndarray], *, fps: float = 30.0, live: bool = False,
                 fail_after: int | None = None) -> None:
        super().__init__(images, fps=fps, live=live, uri="arrays://test")
        self.fail_after = fail_after

    def _pictures(self) -> Iterator[Picture]:
        for i, picture in enumerate(super()._pictures()):
            if self.fail_after is not None and i == self.fail_after:
                raise SourceError(f"{self.uri}: stream broke at frame {i} (test)")
            yield Picture(image=picture.image, pts=picture.pts, decode_ms=0.1)


def moving_square_frames(n: int, *, height: int = 96, width: int = 128) -> list[np.ndarray]:
    """A bright square sliding right over a dark gradient, one frame per step."""
    base = np.tile(np.linspace(0, 60, width, dtype=np.uint8), (height, 1))
    frames = []
    for i in range(n):
        img = np.stack([base, base, base], axis=2).copy()
        x = 4 + 3 * i
        img[20:50, x:x + 30] = (230, 200, 40)
        frames.append(img)
    return frames


class SquareDetector:
    """Finds the bright square of ``moving_square_frames`` by thresholding: a deterministic detector."""

    names = ("square",)
    random_weights = False
    device = torch.device("cpu")

    def __call__(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        out = []
        for image in images:
            mask = image[:, :, 0] > 200
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs) == 0:
                out.append(Detections.empty(image.shape[0], image.shape[1], names=self.names))
                continue
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            out.append(Detections(boxes=box, scores=torch.tensor([0.9]), class_ids=torch.tensor([0]),
                                  masks=mask[None], names=self.names))
        return out


class BandSegmenter:
    """A semantic stage double for ``moving_square_frames``: sky over the top half, road under it, and
    the bright square's pixels as the thing class "square". Records the frame indices of every call."""

    labels = LabelSet(names=("road", "sky", "square"), is_thing=(False, False, True), category_ids=(7, 23, 24),
                      colors=((128, 64, 128), (70, 130, 180), (220, 20, 60)), source="test")
    random_weights = False

    def __init__(self, every: int = 1) -> None:
        self.every = every
        self.calls: list[list[int]] = []  # the frame indices of each call

    def __call__(self, images: Sequence[torch.Tensor], *, frame_indices: Sequence[int]) -> list[SemanticMap]:
        self.calls.append(list(frame_indices))
        maps = []
        for image, index in zip(images, frame_indices, strict=True):
            labels = torch.zeros(image.shape[:2], dtype=torch.int64)
            labels[: image.shape[0] // 2] = 1
            labels[image[:, :, 0] > 200] = 2
            maps.append(SemanticMap(labels=labels, frame_index=index, fresh=True))
        return maps


class ScriptedDetector:
    """Hands out the detections it is given (``next``), whatever the frame."""

    random_weights = False
    device = torch.device("cpu")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.next: Detections | None = None

    def __call__(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        return [self.next for _ in images]


class FusionHarness:
    """A fusion policy and a tracker double driven frame by frame through the real per-frame
    processor (``engine.processor``), with the detections each frame is given."""

    def __init__(self, fusion: Fusion, tracker: MaskTracker, *, names: tuple[str, ...]) -> None:
        self.tracker = tracker
        blank = np.zeros((tracker.height, tracker.width, 3), dtype=np.uint8)
        self.stream = Stream(MemorySource([blank]), tracker=tracker, fusion=fusion)
        self.detector = ScriptedDetector(names)
        self.processor = FrameProcessor(SharedStages(detector=self.detector), device=torch.device("cpu"))

    def step(self, detections: Detections, index: int = 0, *, pts: float | None = None) -> FrameResult:
        self.detector.next = detections
        frame = Frame(image=torch.zeros((self.tracker.height, self.tracker.width, 3), dtype=torch.uint8),
                      index=index, pts=pts, capture_time=0.0)
        (result,) = self.processor.process([(self.stream, frame)])
        return result
