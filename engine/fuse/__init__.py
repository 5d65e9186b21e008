"""Fusion: detector instances and tracked objects become the frame's final instances."""

from engine.fuse.config import FuserConfig
from engine.fuse.fuser import Fuser, FusionCounters, TrackState
from engine.fuse.simple import DetectionsOnly, NoInstances, PromptedTracks, tracks_to_instances

__all__ = ["DetectionsOnly", "Fuser", "FuserConfig", "FusionCounters", "NoInstances", "PromptedTracks",
           "TrackState", "tracks_to_instances"]
