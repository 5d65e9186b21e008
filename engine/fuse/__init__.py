"""Fusion: association of detections with tracked objects into decisions, and resolution of the frame's
candidates into non-overlapping instances."""

from engine.fuse.config import FuserConfig
from engine.fuse.fuser import Fuser, FusionCounters, TrackState
from engine.fuse.reid import ReidConfig
from engine.fuse.resolve import resolve_detections, resolve_tracks
from engine.fuse.simple import DetectionsOnly, NoInstances, TracksOnly

__all__ = ["DetectionsOnly", "Fuser", "FuserConfig", "FusionCounters", "NoInstances", "ReidConfig", "TrackState",
           "TracksOnly", "resolve_detections", "resolve_tracks"]
