"""The semantic stage: frames in, one ``SemanticMap`` per frame out, on the compute device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from engine.errors import BackendError
from engine.segment.config import SegmenterConfig
from engine.segment.labels import CITYSCAPES, LabelSet, load_labels
from engine.segment.preprocess import as_batch, input_size, normalised_input
from engine.types import Detections, SemanticMap

# Mask2Former's image processor resamples the mask logits to 384 x 384, the crop size its models are
# trained at, before weighing them by the class probabilities (``post_process_semantic_segmentation``);
# the semantic map follows the same order of operations so it gives the processor's labels.
MASK2FORMER_MASK_SIZE = (384, 384)


class SemanticSegmenter:
    """Runs the semantic network on a batch of frames; build it with ``load_segmenter``.

    Post-processing, per backend:

    - smp and torchvision: the logits [C, h, w] are resized to the frame (bilinear, ``align_corners=False``,
      as torchvision's DeepLabV3 resizes its own output) and the class is their argmax.
    - Mask2Former: the processor's ``post_process_semantic_segmentation`` computation (mask logits to 384 x
      384, softmax class probabilities without "no object", sigmoid masks, per-class sum over queries,
      bilinear to the frame, argmax), done here on the whole batch. With ``panoptic``, the thing segments
      of the processor's own ``post_process_panoptic_segmentation`` (stuff classes fused) become
      ``SemanticMap.things``.
    """

    def __init__(self, module: torch.nn.Module, labels: LabelSet, config: SegmenterConfig, *,
                 device: torch.device, random_weights: bool) -> None:
        self.module = module.to(device).eval()
        self.labels = labels
        self.config = config
        self.device = device
        self.random_weights = random_weights  # built from a config with random weights: labels mean nothing
        self._processor = None

    @property
    def names(self) -> tuple[str, ...]:
        return self.labels.names

    @property
    def every(self) -> int:
        """Run on every k-th frame (``SegmentCadence``); the frames between reuse the last map."""
        return self.config.every

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input size for a frame of this size (see ``engine.segment.preprocess``)."""
        return input_size(height, width, imgsz=self.config.imgsz, stride=self.config.stride)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor], *,
                 frame_indices: Sequence[int] | None = None) -> list[SemanticMap]:
        """Segment a batch of same-size frames.

        Args:
            images: one frame [H, W, 3], a batch [B, H, W, 3], or a list of frames of one size; uint8 RGB on
                any device (moved to the segmenter's).
            frame_indices: the frames' ``Frame.index`` values (default 0..B-1).
        Returns:
            One fresh ``SemanticMap`` per frame, labels [H, W] int64 at frame resolution on the segmenter's
            device.
        """
        batch = as_batch(images)
        b, h, w = (int(v) for v in batch.shape[:3])
        indices = list(range(b)) if frame_indices is None else [int(i) for i in frame_indices]
        if len(indices) != b:
            raise ValueError(f"{b} frames but {len(indices)} frame indices")
        x = normalised_input(batch, self.input_size(h, w), device=self.device,
                             legacy_resize=self.config.backend == "deeplabv3-mobilenet")
        if self.config.backend == "mask2former":
            return self._mask2former(x, (h, w), indices)
        out = self.module(x)
        logits = out["out"] if isinstance(out, dict) else out  # torchvision returns {"out": ...}
        labels = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).argmax(1)
        keep = self.config.keep_logits
        return [SemanticMap(labels=labels[i], frame_index=indices[i], fresh=True,
                            logits=logits[i].float() if keep else None) for i in range(b)]

    def _mask2former(self, x: torch.Tensor, size: tuple[int, int], indices: list[int]) -> list[SemanticMap]:
        outputs = self.module(pixel_values=x)
        masks = F.interpolate(outputs.masks_queries_logits, size=MASK2FORMER_MASK_SIZE, mode="bilinear",
                              align_corners=False).sigmoid()  # [B, Q, 384, 384]
        classes = outputs.class_queries_logits.softmax(-1)[..., :-1]  # [B, Q, C]
        scores = torch.einsum("bqc,bqhw->bchw", classes, masks)
        labels = F.interpolate(scores, size=size, mode="bilinear", align_corners=False).argmax(1)
        things = self._panoptic_things(outputs, size) if self.config.panoptic else [None] * len(indices)
        keep = self.config.keep_logits
        return [SemanticMap(labels=labels[i], frame_index=indices[i], fresh=True,
                            logits=scores[i] if keep else None, things=things[i]) for i in range(len(indices))]

    def _panoptic_things(self, outputs, size: tuple[int, int]) -> list[Detections]:
        """The thing segments of Mask2Former's own panoptic post-processing, as ``Detections``."""
        if self._processor is None:
            from transformers import Mask2FormerImageProcessor

            self._processor = Mask2FormerImageProcessor()  # post-processing only: its defaults are not used
        results = self._processor.post_process_panoptic_segmentation(
            outputs, threshold=self.config.panoptic_threshold, label_ids_to_fuse=set(self.labels.stuff_ids),
            target_sizes=[size] * outputs.class_queries_logits.shape[0])
        return [panoptic_things(r["segmentation"], r["segments_info"], self.labels, size=size,
                                device=self.device) for r in results]


def panoptic_things(segmentation: torch.Tensor, segments_info: list[dict], labels: LabelSet, *,
                    size: tuple[int, int], device: torch.device) -> Detections:
    """Thing segments of a transformers panoptic result (segment-id map [H, W] and ``segments_info``) as
    ``Detections``: one disjoint mask per segment, score = its class probability, best first."""
    things = [s for s in segments_info if labels.is_thing[int(s["label_id"])]]
    things.sort(key=lambda s: -float(s["score"]))
    if not things:
        return Detections.empty(*size, device=device, names=labels.names)
    seg = segmentation.to(device)
    masks = torch.stack([seg == int(s["id"]) for s in things])
    ys, xs = masks.any(2), masks.any(1)  # [N, H], [N, W]
    ar_h = torch.arange(size[0], device=device)
    ar_w = torch.arange(size[1], device=device)
    boxes = torch.stack([
        torch.where(xs, ar_w, size[1]).amin(1), torch.where(ys, ar_h, size[0]).amin(1),
        torch.where(xs, ar_w, -1).amax(1) + 1, torch.where(ys, ar_h, -1).amax(1) + 1,
    ], dim=1).float()
    return Detections(boxes=boxes, scores=torch.tensor([float(s["score"]) for s in things], device=device),
                      class_ids=torch.tensor([int(s["label_id"]) for s in things], device=device),
                      masks=masks, names=labels.names)


def load_segmenter(config: SegmenterConfig) -> SemanticSegmenter:
    """Build the semantic stage ``config`` describes.

    Raises:
        ConfigError: an unknown backend or encoder; a label file that cannot be read or whose class count
            differs from the model's.
        WeightsError: weights missing, unreadable, or of another architecture.
        BackendError: the device is not available.
    """
    from engine.segment.models import build_model

    labels = CITYSCAPES if config.labels is None else load_labels(config.labels)
    device = _resolve_device(config.device)
    built = build_model(config, labels)
    return SemanticSegmenter(built.module, labels, config, device=device, random_weights=built.random_weights)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise BackendError(f"segmenter device {name!r} asked for, but torch sees no such CUDA device; "
                           "use device 'cpu'")
    return device
