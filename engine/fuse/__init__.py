"""Fusion: association of detections with tracked objects into decisions, resolution of the frame's
candidates into non-overlapping instances, and their panoptic resolution over the semantic stuff."""

from engine.fuse.config import FuserConfig
from engine.fuse.fuser import Fuser, FusionCounters, TrackState
from engine.fuse.panoptic import PanopticFusion, fuse_panoptic, stuff_segments
from engine.fuse.reid import ReidConfig
from engine.fuse.resolve import resolve_detections, resolve_tracks
from engine.fuse.simple import DetectionsOnly, NoInstances, TracksOnly

__all__ = ["DetectionsOnly", "Fuser", "FuserConfig", "FusionCounters", "NoInstances", "PanopticFusion", "ReidConfig",
           "TrackState", "TracksOnly", "fuse_panoptic", "resolve_detections", "resolve_tracks", "stuff_segments"]
