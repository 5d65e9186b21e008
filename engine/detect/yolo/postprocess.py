"""From network outputs to one frame's ``Detections``: confidence filter, class-aware NMS, boxes and masks in
frame pixels. Everything stays on the device the outputs are on; the host only learns counts and box corners
(a few hundred integers), which sizing the results needs anyway.

Each step follows Ultralytics' ``predict`` for YOLOv8-seg (``nms.non_max_suppression``, ``ops.scale_boxes``,
``ops.process_mask_native``, ``SegmentationPredictor.construct_result``) so the same weights give the same
instances.
"""

from __future__ import annotations

import torch

from engine.detect.yolo.letterbox import Letterbox
from engine.detect.yolo.masks import box_masks, mask_geometry
from engine.types import Detections

# Class-aware NMS runs as one torchvision NMS over boxes shifted by class id x MAX_WH, which is what
# torchvision.ops.batched_nms does internally (its "coordinate trick"), but with Ultralytics' constant: the
# shift rounds the float32 coordinates of high class ids (class 79 sits at x ~ 6e5, where float32 steps by
# 1/16 px), and using the same shift makes the same rounding and so the same keep/suppress decisions.
MAX_WH = 7680
MAX_NMS = 30000  # most candidates NMS sees, best first (Ultralytics' max_nms)
# Greedy NMS decides each box from higher-scored boxes only, so its first max_det survivors among the best
# K candidates are its first max_det survivors among all of them whenever at least max_det survive. NMS over
# the best NMS_HEAD_FACTOR x max_det first, and over everything only when too few survive, gives the same
# result at a fraction of the cost when a low conf lets thousands of anchors through.
NMS_HEAD_FACTOR = 4


def select(preds: torch.Tensor,  # [4 + nc + nm, A] boxes (cx, cy, w, h), class scores, mask coefficients
           *, nc: int, conf: float, iou: float, max_det: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                       torch.Tensor, torch.Tensor]:
    """Confidence filter and class-aware NMS for one image.

    Returns:
        boxes [K, 4] float32 x1, y1, x2, y2 in network-input pixels; scores [K] float32; class_ids [K] int64;
        coefficients [K, nm] float32 — best score first, K <= max_det.
    """
    import torchvision

    preds = preds.float()
    scores, class_ids = preds[4:4 + nc].max(0)  # best class per anchor
    candidates = (scores > conf).nonzero().squeeze(1)
    if candidates.numel() > MAX_NMS:
        candidates = candidates[scores[candidates].topk(MAX_NMS).indices]
    rows = preds[:, candidates].T  # [n, 4 + nc + nm]
    scores, class_ids = scores[candidates], class_ids[candidates]
    half_wh = rows[:, 2:4] / 2
    boxes = torch.cat((rows[:, :2] - half_wh, rows[:, :2] + half_wh), 1)
    shifted = boxes + class_ids[:, None].float() * MAX_WH
    keep = None
    if scores.numel() > NMS_HEAD_FACTOR * max_det:
        head = scores.topk(NMS_HEAD_FACTOR * max_det).indices
        keep = head[torchvision.ops.nms(shifted[head], scores[head], iou)]
        if keep.numel() < max_det:
            keep = None  # too few survived among the best: decide over all candidates
    if keep is None:
        keep = torchvision.ops.nms(shifted, scores, iou)
    keep = keep[:max_det]
    return boxes[keep], scores[keep], class_ids[keep], rows[keep, 4 + nc:]


def to_frame(boxes: torch.Tensor,  # [K, 4] float32 in network-input pixels
             box: Letterbox) -> torch.Tensor:  # -> [K, 4] float32 in frame pixels, clipped to the frame
    """Undo the letterbox (Ultralytics' ``scale_boxes``: gains and padding recomputed from the shapes, each
    side's scale from its rounded size), then clip to the frame."""
    gain = min(box.input_h / box.frame_h, box.input_w / box.frame_w)
    new_h, new_w = max(round(box.frame_h * gain), 1), max(round(box.frame_w * gain), 1)
    gain_y, gain_x = new_h / box.frame_h, new_w / box.frame_w
    pad_x = round((box.input_w - new_w) / 2 - 0.1)
    pad_y = round((box.input_h - new_h) / 2 - 0.1)
    out = boxes.clone()
    out[:, 0::2] -= pad_x
    out[:, 1::2] -= pad_y
    out[:, 0::2] /= gain_x
    out[:, 1::2] /= gain_y
    out[:, 0::2] = out[:, 0::2].clamp(0, box.frame_w)
    out[:, 1::2] = out[:, 1::2].clamp(0, box.frame_h)
    return out


def decode(preds: torch.Tensor,  # [4 + nc + nm, A] one image's detection output
           protos: torch.Tensor,  # [nm, ph, pw] its prototypes
           box: Letterbox, *, nc: int, conf: float, iou: float, max_det: int,
           names: tuple[str, ...]) -> Detections:
    """One frame's detections with masks at frame resolution; instances whose mask is empty are dropped,
    as Ultralytics does."""
    boxes, scores, class_ids, coefficients = select(preds, nc=nc, conf=conf, iou=iou, max_det=max_det)
    boxes = to_frame(boxes, box)
    geometry = mask_geometry(box.frame_h, box.frame_w, protos.shape[1], protos.shape[2], device=protos.device)
    masks, nonempty = box_masks(coefficients, protos, boxes, geometry, frame_h=box.frame_h,
                                frame_w=box.frame_w)
    if not bool(nonempty.all()):
        boxes, scores, class_ids = boxes[nonempty], scores[nonempty], class_ids[nonempty]
    return Detections(boxes=boxes, scores=scores, class_ids=class_ids, masks=masks, names=names)
