"""Resolution: the frame's candidate instances become its final instances, no two of which share a pixel.
This is what makes the JSONL contract (``engine.sinks.jsonl``: no overlapping masks) hold in every mode.

- Tracked objects (``resolve_tracks``): their low-resolution logits go through ``fuse_logits``, which
  upsamples them as the tracker does and gives each pixel to the object with the largest
  ``weight * sigmoid(logit)`` among those whose logit is > 0 there. Pixels come from SAM 2, which
  segments finer than YOLO's 160x160 prototypes. Where the policy fuses a track's mask with its matched
  detection's (``detector_weight`` > 0), that track's probability becomes
  ``(1 - w) * sigmoid(logit) + w * detection`` at frame resolution and ``fuse_masks`` decides on the
  probabilities (> 0.5 is foreground, the largest ``weight * probability`` wins).
- Detections alone (``resolve_detections``, ``--tracker none``): a pixel two detections claim goes to the
  more confident one. Only where two boxes intersect is any pixel compared, so a frame whose detections do
  not touch costs a box test and no copy: the detector-only path stays as fast as the detector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from engine.ops import fuse_logits, fuse_masks, mask_boxes
from engine.ops.fuse_logits import split_id_map
from engine.types import Detections, Instances, Tracks


def resolve_tracks(tracks: Tracks, *, size: tuple[int, int], device: torch.device,
                   weights: Sequence[float], scores: Sequence[float], class_ids: Sequence[int],
                   labels: Sequence[str], shown: Sequence[bool] | None = None,
                   detector_masks: Sequence[torch.Tensor | None] | None = None,
                   detector_weight: float = 0.0) -> Instances:
    """The visible tracked objects (object score > 0) as non-overlapping instances.

    Args:
        tracks: the frame's final tracker outputs (logits [N, h, w], object-score logits [N]).
        size: (H, W) of the frame.
        device: where the instances go (the frame's device).
        weights: [N] > 0, each object's weight in the per-pixel rule (its fused confidence).
        scores, class_ids, labels: [N] each, what each object's instance reports.
        shown: [N], False for an object to leave out even while visible; None: all.
        detector_masks: [N], each object's matched detection mask ([H, W] bool) or None.
        detector_weight: w in [0, 1], the detection masks' weight in the late fusion of the module
            docstring; 0 (or no masks): the tracker's masks alone. Above 0 the visible objects' logits are
            upsampled to [V, H, W] float32 at once.
    Returns:
        Instances of the visible objects whose resolved mask is not empty, in ``tracks`` order; boxes are
        those of the resolved masks (pixel edges).
    """
    height, width = size
    visible = [k for k, s in enumerate(tracks.scores.reshape(-1).tolist()) if s > 0 and (shown is None or shown[k])]
    if not visible:
        return Instances.empty(height, width, device=device)
    logits = torch.stack([tracks.logits[k].to(device).float() for k in visible])  # [V, h, w]
    weight = torch.tensor([weights[k] for k in visible], dtype=torch.float32, device=device)
    evidence = [detector_masks[k] for k in visible] if detector_masks is not None and detector_weight > 0 else []
    if any(m is not None for m in evidence):
        probabilities = _late_fusion(logits, evidence, detector_weight, size=(height, width))
        id_map = fuse_masks(probabilities, weight, probabilities=True)
        masks = id_map[None] == torch.arange(len(visible), device=id_map.device, dtype=id_map.dtype)[:, None, None]
        boxes = mask_boxes(masks)
    else:
        id_map = fuse_logits(logits, weight, size=(height, width))  # [H, W] index into visible
        masks, boxes = split_id_map(id_map, logits)
    keep = (boxes[:, 2] > boxes[:, 0]).nonzero().flatten().tolist()  # an empty mask has a zero box
    if not keep:
        return Instances.empty(height, width, device=device)
    kept = [visible[k] for k in keep]
    return Instances(
        ids=torch.tensor([tracks.obj_ids[k] for k in kept], dtype=torch.int64, device=device),
        class_ids=torch.tensor([class_ids[k] for k in kept], dtype=torch.int64, device=device),
        scores=torch.tensor([scores[k] for k in kept], dtype=torch.float32, device=device),
        boxes=boxes[keep].to(device), masks=masks[keep].to(device),
        labels=tuple(labels[k] for k in kept),
    )


def _late_fusion(logits: torch.Tensor,  # [V, h, w] float32
                 evidence: list[torch.Tensor | None],  # [V] of [H, W] bool or None
                 weight: float, *, size: tuple[int, int]) -> torch.Tensor:  # [V, H, W] float32 in [0, 1]
    """Each object's foreground probability at frame resolution: the tracker's (its logits upsampled as
    the tracker does), mixed with its detection's mask where it has one."""
    probabilities = torch.sigmoid(F.interpolate(logits[:, None], size=size, mode="bilinear",
                                                align_corners=False)[:, 0])
    for k, mask in enumerate(evidence):
        if mask is not None:
            probabilities[k] = (1.0 - weight) * probabilities[k] + weight * mask.to(probabilities)
    return probabilities


def resolve_detections(detections: Detections) -> Instances:
    """The detections as instances with per-frame ids 0..N-1, in their order; where masks overlap, the
    higher score keeps the pixel (the earlier detection on a tie). Boxes stay the detector's; a
    detection whose whole mask a surer one covers stays listed with an empty mask.

    Relies on the ``Detections`` contract that each mask lies inside its box, or inside its
    ``extents`` where the detector gives them.
    """
    instances = Instances.from_detections(detections)
    n = len(detections)
    if n < 2:
        return instances
    boxes = detections.boxes.float().cpu()
    if detections.extents is not None:  # masks that reach past their boxes: the box and the mask's extent
        extents = detections.extents.float().cpu()
        boxes = torch.cat([torch.minimum(boxes[:, :2], extents[:, :2]), torch.maximum(boxes[:, 2:], extents[:, 2:])], 1)
    height, width = detections.masks.shape[1:]
    # Pixel spans [x0, x1) x [y0, y1) that hold each mask: the box rounded outwards, clipped.
    spans = torch.stack([boxes[:, 0].floor(), boxes[:, 1].floor(), boxes[:, 2].ceil(), boxes[:, 3].ceil()], 1)
    spans = torch.maximum(spans, torch.zeros(4)).minimum(torch.tensor([width, height, width, height]))
    x0 = torch.maximum(spans[:, None, 0], spans[None, :, 0])
    y0 = torch.maximum(spans[:, None, 1], spans[None, :, 1])
    x1 = torch.minimum(spans[:, None, 2], spans[None, :, 2])
    y1 = torch.minimum(spans[:, None, 3], spans[None, :, 3])
    order = torch.argsort(-detections.scores.float().cpu(), stable=True)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    # (loser, winner) pairs whose spans intersect, the winner ranked first
    pairs = ((x1 > x0) & (y1 > y0) & (rank[None, :] < rank[:, None])).nonzero().tolist()
    if not pairs:
        return instances
    masks = detections.masks.clone()
    original = detections.masks
    for i, j in pairs:
        rows = slice(int(y0[i, j]), int(y1[i, j]))
        cols = slice(int(x0[i, j]), int(x1[i, j]))
        masks[i, rows, cols] &= ~original[j, rows, cols]
    return Instances(ids=instances.ids, class_ids=instances.class_ids, scores=instances.scores,
                     boxes=instances.boxes, masks=masks, labels=instances.labels)

