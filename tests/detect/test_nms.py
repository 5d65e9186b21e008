"""Confidence filter and class-aware NMS against Ultralytics' ``non_max_suppression``; box scaling against
``scale_boxes``."""

from __future__ import annotations

import pytest
import torch

from engine.detect.yolo.letterbox import letterbox
from engine.detect.yolo.postprocess import select, to_frame

NC, NM = 80, 32


def _predictions(anchors: int, *, seed: int, classes: int = NC, crowded: bool = False) -> torch.Tensor:
    """[4 + nc + nm, A] like a network's: centre/size boxes on a 640 input, sigmoid scores, coefficients."""
    g = torch.Generator().manual_seed(seed)
    if crowded:  # big boxes piled on one spot: most suppress each other
        centres = 300 + torch.rand(anchors, 2, generator=g) * 40
        sizes = 150 + torch.rand(anchors, 2, generator=g) * 50
    else:
        centres = torch.rand(anchors, 2, generator=g) * 640
        sizes = 20 + torch.rand(anchors, 2, generator=g) * 200
    scores = torch.zeros(anchors, NC)
    # Distinct values (tied scores would make the order of equal boxes arbitrary), few high, many low.
    ranks = torch.randperm(anchors * classes, generator=g).view(anchors, classes).double()
    scores[:, :classes] = ((ranks + 1) / ranks.numel()).pow(3).float()
    coefficients = torch.randn(anchors, NM, generator=g)
    return torch.cat((centres, sizes, scores, coefficients), 1).T.contiguous()


@pytest.mark.parametrize("anchors, conf, iou, max_det, crowded, classes", [
    # name: typical frame, default thresholds
    (5040, 0.25, 0.7, 300, False, NC),
    # low conf lets thousands through; max_det far below them: the best-candidates-first shortcut is exact
    (8400, 0.01, 0.7, 10, False, NC),
    # heavy overlap in one class: the shortcut finds too few survivors and falls back to all candidates
    (8400, 0.01, 0.5, 50, True, 1),
    # max_det of one
    (5040, 0.05, 0.7, 1, True, 3),
    # nothing above the threshold
    (5040, 0.999999, 0.7, 300, False, NC),
], ids=["default", "low_conf_small_max_det", "crowded_fallback", "max_det_1", "none"])
def test_select_matches_ultralytics_nms(anchors, conf, iou, max_det, crowded, classes):
    from ultralytics.utils.nms import non_max_suppression

    preds = _predictions(anchors, seed=anchors + max_det, classes=classes, crowded=crowded)
    (expected,) = non_max_suppression(preds[None].clone(), conf, iou, max_det=max_det, nc=NC)
    boxes, scores, class_ids, coefficients = select(preds, nc=NC, conf=conf, iou=iou, max_det=max_det)
    assert len(boxes) == len(expected) <= max_det
    assert torch.equal(boxes, expected[:, :4])
    assert torch.equal(scores, expected[:, 4])
    assert torch.equal(class_ids, expected[:, 5].long())
    assert torch.equal(coefficients, expected[:, 6:])


@pytest.mark.parametrize("frame", [(720, 1280), (479, 641), (517, 333), (1500, 2250)],
                         ids=["720p", "odd", "portrait", "large"])
@pytest.mark.parametrize("auto", [True, False], ids=["min_rect", "square"])
def test_boxes_back_to_frame_match_ultralytics(frame, auto):
    from ultralytics.utils.ops import scale_boxes

    box = letterbox(*frame, imgsz=640, stride=32, auto=auto)
    g = torch.Generator().manual_seed(frame[1])
    corners = torch.rand(50, 2, generator=g) * torch.tensor([box.input_w, box.input_h])
    boxes = torch.cat((corners - 40, corners + 60), 1)
    expected = scale_boxes((box.input_h, box.input_w), boxes.clone(), frame)
    assert torch.equal(to_frame(boxes, box), expected)
