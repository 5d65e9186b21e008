"""STQ on hand-computed cases: one ground-truth track over five frames (one pixel per frame here) and
predictions that switch ids, drift onto stuff or leave crowd regions; AQ = 1/|g| Σ_p TPA · IoU_id, each
expected value worked out in the comment beside it from the paper's definitions.

The single-track cases are those of the reference implementation by the paper's authors (deeplab2's
``segmentation_and_tracking_quality_test.py``), whose values agree with the hand computations here. The
paper's own worked figure is not reproduced: its numbers were not available to check against, so no case
here claims them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.eval.panoptic import PanopticFrame
from engine.eval.stq import segmentation_and_tracking_quality

CAR, SKY = 0, 1  # class 0 is a thing, class 1 stuff


def _video(classes: list[int], ids: list[int]) -> list[PanopticFrame]:
    return [PanopticFrame(semantic=np.array([[c]]), instance=np.array([[i]])) for c, i in zip(classes, ids)]


def _stq(truth, predicted):
    return segmentation_and_tracking_quality(truth, predicted, num_classes=2, things=[CAR])


GT = _video([CAR] * 5, [1] * 5)


@pytest.mark.parametrize(("classes", "ids", "aq", "sq"), [
    pytest.param([CAR] * 5, [1, 1, 1, 1, 1], 1.0, 1.0, id="perfect"),
    # ids 1,1 | 2,2,2: (2 * 2/5 + 3 * 3/5) / 5 = 0.52
    pytest.param([CAR] * 5, [1, 1, 2, 2, 2], 0.52, 1.0, id="one-switch-late"),
    # 1 | 2,2,2,2: (1 * 1/5 + 4 * 4/5) / 5 = 0.68
    pytest.param([CAR] * 5, [1, 2, 2, 2, 2], 0.68, 1.0, id="one-switch-early"),
    # five ids: 5 * (1 * 1/5) / 5 = 0.2
    pytest.param([CAR] * 5, [1, 2, 3, 4, 5], 0.2, 1.0, id="new-id-every-frame"),
    # 1,2,1,2,2 splits 2 | 3 like the late switch: a switch back does not help
    pytest.param([CAR] * 5, [1, 2, 1, 2, 2], 0.52, 1.0, id="switch-back"),
    # frame 0 called sky: TPA 4, IoU 4/5 -> AQ 4 * 0.8 / 5 = 0.64; SQ: car 4/5, sky 0/1 -> 0.4
    pytest.param([SKY, CAR, CAR, CAR, CAR], [0, 1, 1, 1, 1], 0.64, 0.4, id="missed-frame-as-stuff"),
])
def test_single_track_examples(classes, ids, aq, sq) -> None:
    result = _stq(GT, _video(classes, ids))
    assert result.aq == pytest.approx(aq) and result.sq == pytest.approx(sq)
    assert result.stq == pytest.approx(math.sqrt(aq * sq))


def test_crowd_pixels_are_left_out_of_association() -> None:
    truth = _video([CAR] * 6, [0, 1, 1, 1, 1, 1])  # frame 0: a car region without an instance id
    # ids 2,2 | sky | 1,1,1: id 2 keeps 1 scored pixel -> (1 * 1/5 + 3 * 3/5) / 5 = 0.4; SQ car 5/6, sky 0
    result = _stq(truth, _video([CAR, CAR, SKY, CAR, CAR, CAR], [2, 2, 0, 1, 1, 1]))
    assert (result.aq, result.sq) == pytest.approx((0.4, 5 / 12))


def test_a_prediction_spilling_onto_stuff_is_a_false_positive() -> None:
    truth = _video([SKY, CAR, CAR, CAR, CAR], [0, 1, 1, 1, 1])
    result = _stq(truth, _video([CAR] * 5, [1] * 5))  # TPA 4, FPA 1: IoU 0.8 -> AQ 4 * 0.8 / 4 = 0.8
    assert (result.aq, result.sq, result.gt_tracks) == pytest.approx((0.8, 0.4, 1))


@pytest.mark.parametrize(("classes", "ids", "aq", "sq"), [
    # p2 spans frames 0-2 (frame 0 is sky): TPA 2, IoU 2/(4+3-2) = 2/5; p1 TPA 2, IoU 2/4.
    # AQ (2 * 2/5 + 2 * 1/2) / 4 = 0.45; SQ: car 4/5, sky 0 -> 0.4
    pytest.param([CAR] * 5, [2, 2, 2, 1, 1], 0.45, 0.4, id="spill-and-switch"),
    # p2 on frames 0-1: TPA 1, IoU 1/(4+2-1) = 1/5; frame 2 called sky; p1 TPA 2, IoU 2/4.
    # AQ (1 * 1/5 + 2 * 1/2) / 4 = 0.3; SQ: car 3/5, sky 0/2 -> 0.3
    pytest.param([CAR, CAR, SKY, CAR, CAR], [2, 2, 0, 1, 1], 0.3, 0.3, id="spill-switch-and-miss"),
])
def test_a_track_starting_after_a_sky_frame(classes, ids, aq, sq) -> None:
    truth = _video([SKY, CAR, CAR, CAR, CAR], [0, 1, 1, 1, 1])
    result = _stq(truth, _video(classes, ids))
    assert (result.aq, result.sq) == pytest.approx((aq, sq))


def test_two_tracks_with_areas() -> None:
    # Frames of 1x4 pixels: track 1 covers 2 pixels a frame, track 2 one pixel, one stuff pixel.
    truth = [PanopticFrame(semantic=np.array([[0, 0, 0, 1]]), instance=np.array([[1, 1, 2, 0]]))] * 2
    predicted = [PanopticFrame(semantic=np.array([[0, 0, 0, 1]]), instance=np.array([[1, 1, 2, 0]])),
                 PanopticFrame(semantic=np.array([[0, 0, 0, 1]]), instance=np.array([[1, 2, 2, 0]]))]
    # track 1 (4 px): p1 TPA 3, |p1| 3 -> IoU 3/4; p2 TPA 1, |p2| 3 -> IoU 1/6. (3*3/4 + 1*1/6) / 4
    # track 2 (2 px): p2 TPA 2 -> IoU 2/3. (2 * 2/3) / 2
    expected_aq = ((3 * 0.75 + 1 / 6) / 4 + (2 * 2 / 3) / 2) / 2
    result = _stq(truth, predicted)
    assert result.aq == pytest.approx(expected_aq) and result.sq == 1.0
