"""The data engine: choose the frames worth labelling from a stream, export them for labelling tools and
trainers, and fine-tune the engine's networks on them (boundary refinement of final masks is a stage of
the engine: ``engine.refine``, ``--refine``).

- ``uncertainty``: a frame's uncertainty score from the engine's own evidence (``FrameEvidence``).
- ``selector``: the top-k-per-window frame selector with spacing and a budget, in bounded memory.
- ``collector``: the two above plus incremental COCO / YOLO-seg / Label Studio exports (``exports``).
- ``labels``: putting an annotator's labels into a collection; the synthetic scenes' truth as annotator.
- ``dataset``: reading a collection back for training, with clear errors for bad ones.
- ``finetune``: SAM 2 (mask decoder + prompt encoder, frozen image encoder) and YOLOv8-seg fine-tuning.

This folder also holds package data: the demo clip (see README.md).
"""

from engine.data.collector import Collector, CollectorConfig
from engine.data.selector import FrameSelector, SelectorConfig
from engine.data.uncertainty import FrameEvidence, UncertaintyScore, UncertaintyWeights, uncertainty

__all__ = ["Collector", "CollectorConfig", "FrameEvidence", "FrameSelector", "SelectorConfig", "UncertaintyScore",
           "UncertaintyWeights", "uncertainty"]
