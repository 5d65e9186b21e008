"""Overlay rendering for the video and preview sinks."""

from engine.render.overlay import color_for_id, draw

__all__ = ["color_for_id", "draw"]
