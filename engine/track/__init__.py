"""SAM 2 streaming tracker: per-object memory slots, bounded memory, all objects in one batched step.

Importing this package loads no model and does not import sam2 (which initialises Hydra globally);
both happen when a tracker is built.
"""

from engine.track.config import MODEL_CONFIGS, TrackerConfig
from engine.track.loading import load_tracker
from engine.track.tracker import StreamingTracker

__all__ = ["MODEL_CONFIGS", "StreamingTracker", "TrackerConfig", "load_tracker"]
