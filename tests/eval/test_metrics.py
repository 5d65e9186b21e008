"""The evaluator on hand-made sequences whose right answers are known."""

import numpy as np
import pytest
from pycocotools import mask as mask_util

from engine.eval.metrics import FrameMasks, evaluate


def _frame(objects: dict[int, tuple[int, int]], size=(60, 80)) -> FrameMasks:
    """Objects as 12x12 squares at (y, x)."""
    ids, rles = [], []
    for obj_id, (y, x) in objects.items():
        m = np.zeros(size, dtype=np.uint8, order="F")
        m[y:y + 12, x:x + 12] = 1
        ids.append(obj_id)
        rles.append(mask_util.encode(m))
    return FrameMasks(ids=tuple(ids), rles=tuple(rles), size=size)


def _two_objects_crossing(frames: int = 20) -> list[dict[int, tuple[int, int]]]:
    return [{1: (10, 2 + 3 * t), 2: (40, 66 - 3 * t)} for t in range(frames)]


def test_a_perfect_prediction_scores_one_everywhere():
    truth = [_frame(objs) for objs in _two_objects_crossing()]
    renamed = [_frame({k + 100: v for k, v in objs.items()}) for objs in _two_objects_crossing()]
    report = evaluate(truth, renamed)  # ids need not be the same numbers, only consistent
    assert report.hota == pytest.approx(1.0) and report.id_switches == 0
    assert report.j_and_f == pytest.approx(1.0) and report.idf1 == pytest.approx(1.0)
    assert report.object_iou == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}


def test_swapped_ids_halfway_are_counted_as_switches():
    truth = [_frame(objs) for objs in _two_objects_crossing()]
    swapped = [_frame({(3 - k if t >= 10 else k): v for k, v in objs.items()})
               for t, objs in enumerate(_two_objects_crossing())]
    report = evaluate(truth, swapped)
    assert report.id_switches == 2  # both objects change id once
    # Every mask is still exact, but J&F (DAVIS) follows one predicted id per object over the whole
    # sequence, so each object is right for half of it.
    assert report.j_and_f == pytest.approx(0.5)
    assert report.deta == pytest.approx(1.0) and report.assa < 0.6


def test_missing_everything_scores_zero():
    truth = [_frame(objs) for objs in _two_objects_crossing()]
    nothing = [_frame({}) for _ in truth]
    report = evaluate(truth, nothing)
    assert report.hota == 0.0 and report.j_mean == 0.0
    assert report.object_iou == {1: 0.0, 2: 0.0}


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="3 ground-truth frames but 2"):
        evaluate([_frame({})] * 3, [_frame({})] * 2)


def test_j_and_f_holds_with_hundreds_of_predicted_ids():
    """pycocotools 2.0.11's area() fails on 256 masks at once; TrackEval's J&F asks for every predicted
    id's area per frame. A tracker that starts a new id on every frame reaches that in 300 frames."""
    frames = 300
    truth = [_frame({1: (10, 20)}) for _ in range(frames)]
    fresh_ids = [_frame({1000 + t: (10, 20)}) for t in range(frames)]  # exact masks, a new id each frame
    report = evaluate(truth, fresh_ids)
    assert report.predicted_ids == frames
    assert report.j_mean == pytest.approx(1.0 / frames)  # DAVIS follows one predicted id per object
    assert report.deta == pytest.approx(1.0)
