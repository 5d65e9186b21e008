"""PQ / SQ / RQ (torchmetrics underneath) and semantic mIoU on one-row frames small enough to count by
hand. Void follows panopticapi: truth void is not scored; predicted void is no segment, so the truth it
covers is missed."""

from __future__ import annotations

import numpy as np
import pytest

from engine.eval.panoptic import PanopticFrame, mean_iou, panoptic_quality

CAR, ROAD, SKY = 0, 1, 2  # one thing class, two stuff classes
THINGS, STUFFS = [CAR], [ROAD, SKY]


def _frame(semantic: list[int], instance: list[int]) -> PanopticFrame:
    return PanopticFrame(semantic=np.array([semantic]), instance=np.array([instance]))


# four road pixels, a two-pixel car (track 1), two sky pixels
TRUTH = _frame([ROAD] * 4 + [CAR] * 2 + [SKY] * 2, [0] * 4 + [1, 1] + [0, 0])
TRUTH_SKY_VOID = _frame([ROAD] * 4 + [CAR] * 2 + [SKY, -1], [0] * 4 + [1, 1] + [0, 0])


@pytest.mark.parametrize(("truth", "predicted", "pq", "sq", "rq"), [
    pytest.param(TRUTH, TRUTH, 1.0, 1.0, 1.0, id="perfect"),
    # the car left void: car TP 0, FN 1 (PQ, SQ, RQ 0); road and sky exact -> 2/3 each
    pytest.param(TRUTH, _frame([ROAD] * 4 + [-1, -1] + [SKY] * 2, [0] * 8), 2 / 3, 2 / 3, 2 / 3,
                 id="missed-car-left-void"),
    # the car called road: road's segment 6 px against 4 -> IoU 4/6, matched; car FN.
    # PQ (4/6 + 0 + 1) / 3 = 5/9; SQ the same; RQ (1 + 0 + 1) / 3
    pytest.param(TRUTH, _frame([ROAD] * 6 + [SKY] * 2, [0] * 8), 5 / 9, 5 / 9, 2 / 3, id="missed-car-as-road"),
    # a car track on one sky pixel: sky's 1 px against 2 is IoU 0.5, not above 0.5: sky FN + FP (0);
    # car: TP (track 1) + FP (track 7) -> RQ 1 / 1.5. PQ (1 + 2/3 + 0) / 3 = 5/9; SQ (1 + 1 + 0) / 3
    pytest.param(TRUTH, _frame([ROAD] * 4 + [CAR] * 2 + [SKY, CAR], [0] * 4 + [1, 1] + [0, 7]),
                 5 / 9, 2 / 3, (1 + 2 / 3) / 3, id="sky-at-iou-half-is-not-a-match"),
    # truth void is left out of the IoU: predicted sky on [sky, void] is IoU 1
    pytest.param(TRUTH_SKY_VOID, TRUTH, 1.0, 1.0, 1.0, id="truth-void-not-scored"),
    # a predicted car wholly on truth void is no false positive
    pytest.param(TRUTH_SKY_VOID, _frame([ROAD] * 4 + [CAR] * 2 + [SKY, CAR], [0] * 4 + [1, 1] + [0, 7]),
                 1.0, 1.0, 1.0, id="prediction-on-truth-void-ignored"),
])
def test_panoptic_quality_by_hand(truth, predicted, pq, sq, rq) -> None:
    scores = panoptic_quality(truth, predicted, things=THINGS, stuffs=STUFFS)
    assert (scores.pq, scores.sq, scores.rq) == pytest.approx((pq, sq, rq))


@pytest.mark.parametrize(("truth", "predicted", "expected"), [
    pytest.param([0, 0, 1, 1], [0, 0, 1, 1], 1.0, id="perfect"),
    # a void prediction is a miss: class 0 IoU 1/2, class 1 IoU 1
    pytest.param([0, 0, 1, 1], [0, -1, 1, 1], 0.75, id="void-prediction-is-a-miss"),
    # truth void is not scored: class 1 is predicted only there, so it is absent from the mean
    pytest.param([0, -1], [0, 1], 1.0, id="truth-void-not-scored"),
    # class 0: 1 pixel shared of 2 in the union; class 1: 2 of 3
    pytest.param([0, 0, 1, 1], [0, 1, 1, 1], (1 / 2 + 2 / 3) / 2, id="confusion"),
])
def test_mean_iou_by_hand(truth, predicted, expected) -> None:
    assert mean_iou([np.array([truth])], [np.array([predicted])], num_classes=2) == pytest.approx(expected)
