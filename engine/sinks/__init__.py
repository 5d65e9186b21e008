"""Where results go: the overlay video, the JSONL results, the live browser preview, COCO panoptic files."""

from engine.sinks.base import Sink, SinkThread
from engine.sinks.jsonl import JsonlWriter, result_to_record
from engine.sinks.mp4 import Mp4Writer
from engine.sinks.panoptic import PanopticWriter
from engine.sinks.preview import PreviewServer

__all__ = ["JsonlWriter", "Mp4Writer", "PanopticWriter", "PreviewServer", "Sink", "SinkThread", "result_to_record"]
