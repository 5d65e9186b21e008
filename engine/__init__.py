"""streamseg: real-time video instance segmentation with stable track ids.

Importing this package has no side effects: no network, no compilation, no model loading.
"""

from engine.errors import StreamsegError
from engine.types import Detections, Frame, FrameResult, Instance, Instances, StageTimes, Tracks

__version__ = "0.1.0"

__all__ = [
    "Detections",
    "Frame",
    "FrameResult",
    "Instance",
    "Instances",
    "StageTimes",
    "StreamsegError",
    "Tracks",
    "__version__",
]
