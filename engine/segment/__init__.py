"""The semantic ("stuff") stage: frames in, a ``SemanticMap`` per frame out.

    seg = load_segmenter(SegmenterConfig(backend="deeplabv3plus", weights="random" | "path", imgsz=512))
    cadence = SegmentCadence(every=5)                   # one per stream
    smap = cadence.step(frame.index, frame.height, frame.width,
                        lambda: seg(frame.image, frame_indices=[frame.index])[0])

Backends: DeepLab v3+ and U-Net (segmentation_models_pytorch), torchvision's DeepLabV3 MobileNetV3-Large,
Mask2Former (transformers). Importing this package imports none of those libraries and loads no model.
"""

from engine.segment.cadence import SegmentCadence
from engine.segment.config import BACKENDS, SegmenterConfig
from engine.segment.labels import CITYSCAPES, LabelSet, load_labels
from engine.segment.segmenter import SemanticSegmenter, load_segmenter

__all__ = ["BACKENDS", "CITYSCAPES", "LabelSet", "SegmentCadence", "SegmenterConfig", "SemanticSegmenter",
           "load_labels", "load_segmenter"]
