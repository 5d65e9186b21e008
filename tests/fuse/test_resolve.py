"""Resolution in every mode: no two instances share a pixel, and the detector-only path pays nothing
when detections do not touch."""

from __future__ import annotations

import torch

from engine.fuse import DetectionsOnly, TracksOnly, resolve_detections, resolve_tracks
from engine.types import Detections, Frame, Tracks

H, W = 40, 60


def _box_mask(x1, y1, x2, y2) -> torch.Tensor:
    m = torch.zeros((H, W), dtype=torch.bool)
    m[y1:y2, x1:x2] = True
    return m


def _dets(*items) -> Detections:
    """items: (box, score), in the order given (not necessarily best first)."""
    return Detections(boxes=torch.tensor([list(map(float, b)) for b, _ in items]),
                      scores=torch.tensor([s for _, s in items]),
                      class_ids=torch.zeros(len(items), dtype=torch.int64),
                      masks=torch.stack([_box_mask(*b) for b, _ in items]), names=("thing",))


def _frame() -> Frame:
    return Frame(image=torch.zeros((H, W, 3), dtype=torch.uint8), index=0, pts=None, capture_time=0.0)


def test_overlapping_detections_give_the_shared_pixels_to_the_more_confident():
    dets = _dets(((20, 5, 45, 30), 0.6), ((5, 5, 30, 30), 0.95), ((50, 30, 60, 40), 0.5))
    out = DetectionsOnly().resolve(_frame(), dets, None)
    assert out.ids.tolist() == [0, 1, 2] and out.boxes.tolist() == dets.boxes.tolist()  # the detector's
    assert int(out.masks.sum(0).max()) == 1  # no pixel twice
    assert out.masks[1][10, 25] and not out.masks[0][10, 25]  # the overlap went to the 0.95 detection
    assert int(out.masks[0].sum()) == 15 * 25  # what is left of the 0.6 one: x 30..45
    assert torch.equal(out.masks[2], dets.masks[2])  # untouched


def test_detections_that_do_not_touch_are_handed_on_without_a_copy():
    dets = _dets(((5, 5, 20, 20), 0.9), ((30, 5, 50, 25), 0.8))
    assert resolve_detections(dets).masks is dets.masks


def test_a_detection_a_surer_one_covers_stays_listed_with_an_empty_mask():
    dets = _dets(((5, 5, 30, 30), 0.95), ((10, 10, 20, 20), 0.4))
    out = resolve_detections(dets)
    assert len(out) == 2 and not out.masks[1].any() and out.boxes[1].tolist() == [10.0, 10.0, 20.0, 20.0]


def test_masks_that_reach_past_their_boxes_are_resolved_within_their_extents():
    """Mask R-CNN's masks can reach past their boxes: boxes that do not touch, masks that do."""
    masks = torch.stack([_box_mask(5, 5, 24, 20), _box_mask(18, 5, 40, 20)])
    boxes = torch.tensor([[6.0, 6, 20, 19], [22.0, 6, 39, 19]])
    extents = torch.tensor([[5.0, 5, 24, 20], [18.0, 5, 40, 20]])
    dets = Detections(boxes=boxes, scores=torch.tensor([0.6, 0.9]), class_ids=torch.zeros(2, dtype=torch.int64),
                      masks=masks, names=("thing",), extents=extents)
    out = resolve_detections(dets)
    assert int(out.masks.sum(0).max()) == 1 and out.masks[1][10, 19] and not out.masks[0][10, 19]
    assert out.boxes.tolist() == boxes.tolist()  # the detector's boxes are reported unchanged


def test_tracker_only_objects_are_resolved_by_object_score_and_hidden_ones_are_left_out():
    masks = torch.stack([_box_mask(5, 5, 30, 30), _box_mask(20, 5, 45, 30), _box_mask(50, 30, 60, 40)])
    tracks = Tracks(obj_ids=[4, 9, 12], masks=masks, logits=torch.where(masks, 8.0, -8.0),
                    scores=torch.tensor([2.0, 5.0, -3.0]))  # object 12 is out of sight
    out = TracksOnly(label="thing").resolve(_frame(), None, tracks)
    assert out.ids.tolist() == [4, 9] and out.labels == ("thing", "thing")
    assert not (out.masks[0] & out.masks[1]).any()
    assert out.masks[1][10, 25]  # the surer object (score 5) keeps the shared pixels
    assert out.scores.tolist() == torch.sigmoid(torch.tensor([2.0, 5.0])).tolist()


def _resolve(tracks: Tracks, evidence, weight: float, shown=None):
    n = len(tracks.obj_ids)
    return resolve_tracks(tracks, size=(H, W), device=torch.device("cpu"), weights=[1.0] * n, scores=[1.0] * n,
                          class_ids=[0] * n, labels=["thing"] * n, shown=shown, detector_masks=evidence,
                          detector_weight=weight)


def test_late_fusion_mixes_an_unsure_tracker_mask_with_its_detection_and_weight_zero_is_the_tracker():
    # The tracker is unsure (logit 0.5: probability 0.62) over columns 5-30 and sure (+8) nowhere; the
    # detection covers columns 10-40. At w = 0.3 a pixel is foreground where 0.7 p + 0.3 m > 0.5: inside
    # the detection (0.74 over the tracker's mask, 0.30 off it: no) and nowhere outside it (0.44).
    logits = torch.where(_box_mask(5, 5, 30, 30), 0.5, -8.0)[None]
    tracks = Tracks(obj_ids=[3], masks=(logits > 0), logits=logits, scores=torch.tensor([1.0]))
    detection = _box_mask(10, 5, 40, 30)
    assert _resolve(tracks, [detection], 0.3).boxes.tolist() == [[10.0, 5.0, 30.0, 30.0]]
    assert _resolve(tracks, [detection], 0.0).boxes.tolist() == [[5.0, 5.0, 30.0, 30.0]]
    assert _resolve(tracks, [None], 0.3).boxes.tolist() == [[5.0, 5.0, 30.0, 30.0]]  # no detection: the tracker's
    assert _resolve(tracks, [detection], 1.0).boxes.tolist() == [[10.0, 5.0, 40.0, 30.0]]  # the detection's


def test_fused_masks_stay_disjoint_and_hidden_objects_are_left_out():
    masks = torch.stack([_box_mask(5, 5, 30, 30), _box_mask(25, 5, 50, 30), _box_mask(50, 30, 60, 40)])
    tracks = Tracks(obj_ids=[1, 2, 3], masks=masks, logits=torch.where(masks, 8.0, -8.0),
                    scores=torch.tensor([1.0, 1.0, 1.0]))
    # Object 1's detection reaches into object 2 (and past the tracker's masks); object 2 has none
    out = _resolve(tracks, [_box_mask(5, 5, 40, 30), None, None], 1.0, shown=[True, True, False])
    assert out.ids.tolist() == [1, 2] and int(out.masks.sum(0).max()) == 1
    assert out.masks[0][10, 35] and not out.masks[1][10, 35]  # equal weights: the lower index wins
    assert out.masks[1][10, 45]
