"""streamseg: real-time video instance segmentation with stable track ids.

    from engine import Pipeline, open_source
    for result in Pipeline(open_source("clip.mp4"), detector=..., tracker=..., fuser=...):
        result.instances, result.times, result.age_ms

Importing this package has no side effects: no network, no compilation, no model loading. The stages
live in their packages (``engine.detect``, ``engine.track``, ``engine.fuse``, ``engine.sinks``); the
names below are the ones most programs need.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from engine.errors import StreamsegError
from engine.types import Detections, Frame, FrameResult, Instance, Instances, StageTimes, Tracks

__version__ = "0.1.0"

# Loaded on first use: they import PyAV, OpenCV and the stages, which a program reading only the types
# (or a JSONL) does not need.
_LAZY = {
    "Pipeline": "engine.pipeline",
    "open_source": "engine.sources",
    "RunOptions": "engine.options",
    "build_pipeline": "engine.app",
}

if TYPE_CHECKING:
    from engine.app import build_pipeline
    from engine.options import RunOptions
    from engine.pipeline import Pipeline
    from engine.sources import open_source


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "Detections", "Frame", "FrameResult", "Instance", "Instances", "Pipeline", "RunOptions", "StageTimes",
    "StreamsegError", "Tracks", "__version__", "build_pipeline", "open_source",
]
