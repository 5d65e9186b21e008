"""streamseg: real-time video instance segmentation with stable track ids.

    from engine import Pipeline, open_source
    pipeline = Pipeline(open_source("clip.mp4"), detector=..., tracker=..., fuser=...)
    pipeline.prompts.track(box=(100, 80, 220, 300))       # a user's object, from any thread
    for result in pipeline:
        result.instances, result.times, result.age_ms

Importing this package has no side effects: no network, no compilation, no model loading. The stages
live in their packages (``engine.detect``, ``engine.track``, ``engine.fuse``, ``engine.sinks``); the
names below are the ones most programs need.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from engine.errors import StreamsegError
from engine.types import Detections, Frame, FrameResult, Instance, Instances, Stage, StageTimes, Tracks

__version__ = "0.1.0"

# Loaded on first use: they import PyAV, OpenCV and the stages, which a program reading only the types
# (or a JSONL) does not need.
_LAZY = {
    "Pipeline": "engine.pipeline",
    "open_source": "engine.sources",
    "RunOptions": "engine.options",
    "build_pipeline": "engine.app",
    "PromptQueue": "engine.prompts",
}

if TYPE_CHECKING:
    from engine.app import build_pipeline
    from engine.options import RunOptions
    from engine.pipeline import Pipeline
    from engine.prompts import PromptQueue
    from engine.sources import open_source


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "Detections", "Frame", "FrameResult", "Instance", "Instances", "Pipeline", "PromptQueue", "RunOptions", "Stage",
    "StageTimes",
    "StreamsegError", "Tracks", "__version__", "build_pipeline", "open_source",
]
