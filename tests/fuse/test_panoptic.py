"""Panoptic fusion on ground-truth doubles: perfect stuff and perfect things give PQ = STQ = 1; injected
faults (stuff noise, a missed thing, an id swap) lower them exactly as the definitions say, with the
expected values computed from pixel counts in each test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.eval.panoptic import PanopticFrame, panoptic_quality
from engine.eval.stq import segmentation_and_tracking_quality
from engine.fuse.panoptic import fuse_panoptic
from engine.sources.synthetic import SyntheticScene
from engine.types import Instances, SemanticMap

FRAMES = 6
N_STUFF, N_THING = 5, 4
IS_THING = (False,) * N_STUFF + (True,) * N_THING  # the scene's stuff, then its four shape classes
CLASS_MAP = tuple(range(N_STUFF, N_STUFF + N_THING))  # scene class id -> label-set class
THINGS, STUFFS = list(CLASS_MAP), list(range(N_STUFF))


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    # five objects: two discs (tracks 1 and 5) share a class; all five stay in view for the six frames
    return SyntheticScene(seed=11, frames=FRAMES, width=120, height=80, objects=5, stuff=True)


def _truth(scene, i) -> PanopticFrame:
    gt = scene.ground_truth(i)
    cls = np.array([o.class_id for o in scene.objects])
    semantic = np.where(gt.id_map >= 0, N_STUFF + cls[np.maximum(gt.id_map, 0)], gt.stuff_map)
    return PanopticFrame(semantic=semantic, instance=np.where(gt.id_map >= 0, gt.id_map + 1, 0))


def _instances(scene, i, *, drop=(), swap=None) -> Instances:
    gt = scene.ground_truth(i)
    keep = [k for k, obj in enumerate(gt.ids.tolist()) if obj not in drop]
    ids = gt.ids[keep] + 1
    if swap is not None:
        a, b = swap
        ids = np.where(ids == a, -1, ids)
        ids = np.where(ids == b, a, ids)
        ids = np.where(ids == -1, b, ids)
    n = len(keep)
    return Instances(ids=torch.from_numpy(ids), class_ids=torch.from_numpy(gt.class_ids[keep]),
                     scores=torch.ones(n), boxes=torch.zeros(n, 4), masks=torch.from_numpy(gt.masks[keep]),
                     labels=("x",) * n)


def _fused(scene, i, semantic=None, **faults) -> PanopticFrame:
    truth = _truth(scene, i)
    labels = torch.from_numpy(truth.semantic if semantic is None else semantic).long()
    smap = SemanticMap(labels=labels, frame_index=i, fresh=True)
    out = fuse_panoptic(_instances(scene, i, **faults), smap, is_thing=IS_THING, class_map=CLASS_MAP)
    return PanopticFrame(semantic=out.semantic.numpy(), instance=out.instance.numpy())


def _stq(truth, predicted):
    return segmentation_and_tracking_quality(truth, predicted, num_classes=len(IS_THING), things=THINGS)


def test_ground_truth_doubles_score_one(scene) -> None:
    truth = [_truth(scene, i) for i in range(FRAMES)]
    fused = [_fused(scene, i) for i in range(FRAMES)]
    for t, f in zip(truth, fused):
        np.testing.assert_array_equal(f.semantic, t.semantic)
        np.testing.assert_array_equal(f.instance, t.instance)
        assert panoptic_quality(t, f, things=THINGS, stuffs=STUFFS).pq == pytest.approx(1.0)
    result = _stq(truth, fused)
    assert (result.stq, result.aq, result.sq) == pytest.approx((1.0, 1.0, 1.0))


def test_stuff_noise_lowers_the_two_stuff_classes_by_their_iou(scene) -> None:
    truth = _truth(scene, 0)
    noisy = truth.semantic.copy()
    road, sidewalk = 0, 1
    flip = (noisy == road) & (np.arange(120)[None, :] < 10)  # a stretch of road called sidewalk (IoUs stay > 0.5)
    noisy[flip] = sidewalk
    k, r, s = int(flip.sum()), int((truth.semantic == road).sum()), int((truth.semantic == sidewalk).sum())
    present = len(np.unique(truth.semantic))
    expected = (present - 2 + (r - k) / r + s / (s + k)) / present  # matched segments: PQ = their IoU
    scores = panoptic_quality(truth, _fused(scene, 0, semantic=noisy), things=THINGS, stuffs=STUFFS)
    assert scores.pq == pytest.approx(expected) and scores.rq == pytest.approx(1.0)
    result = _stq([truth], [_fused(scene, 0, semantic=noisy)])
    assert result.aq == 1.0 and result.sq == pytest.approx(expected)  # one frame: SQ is that frame's mIoU


def test_a_missed_thing_is_a_false_negative_and_loses_its_track(scene) -> None:
    missed = 2  # object id 2 (track id 3)
    truth = [_truth(scene, i) for i in range(FRAMES)]
    fused = [_fused(scene, i, drop=(missed,)) for i in range(FRAMES)]
    cls = N_STUFF + scene.objects[missed].class_id
    for t, f in zip(truth, fused):
        assert (f.semantic[t.instance == missed + 1] == -1).all()  # uncovered thing pixels are void
        same_class = len(np.unique(t.instance[(t.semantic == cls) & (t.instance > 0)]))
        present = len(np.unique(t.semantic))
        tp = same_class - 1  # the class's other instances still match
        expected = (present - 1 + (tp / (tp + 0.5) if tp else 0.0)) / present
        assert panoptic_quality(t, f, things=THINGS, stuffs=STUFFS).pq == pytest.approx(expected)
    tracks = len({int(v) for t in truth for v in np.unique(t.instance) if v})
    area = sum(int((t.semantic == cls).sum()) for t in truth)
    lost = sum(int((t.instance == missed + 1).sum()) for t in truth)
    iou = np.ones(len(IS_THING))
    iou[cls] = (area - lost) / area  # void predictions are misses, not another class
    present = sorted({int(v) for t in truth for v in np.unique(t.semantic)})
    result = _stq(truth, fused)
    assert result.aq == pytest.approx((tracks - 1) / tracks)
    assert result.sq == pytest.approx(iou[present].mean())


def _swapped(scene, a: int, b: int, at: int) -> tuple[list[PanopticFrame], list[PanopticFrame]]:
    """Truth, and the fused doubles with tracks ``a`` and ``b`` exchanging ids from frame ``at`` on."""
    truth = [_truth(scene, i) for i in range(FRAMES)]
    fused = [_fused(scene, i, swap=(a, b) if i >= at else None) for i in range(FRAMES)]
    for t, f in zip(truth, fused):  # every segment is still exact: PQ cannot see the swap
        assert panoptic_quality(t, f, things=THINGS, stuffs=STUFFS).pq == pytest.approx(1.0)
    return truth, fused


def _area(truth, track: int, frames) -> int:
    return sum(int((truth[i].instance == track).sum()) for i in frames)


def test_an_id_swap_between_tracks_of_one_class_splits_both(scene) -> None:
    a, b, at = 1, 5, 3  # two discs (class 0) exchange ids from frame 3 on
    assert scene.objects[a - 1].class_id == scene.objects[b - 1].class_id
    truth, fused = _swapped(scene, a, b, at)
    before, after = range(at), range(at, FRAMES)
    pa = _area(truth, a, before) + _area(truth, b, after)  # predicted id a: a's pixels, then b's
    pb = _area(truth, b, before) + _area(truth, a, after)
    total = 0.0  # Σ over the two swapped tracks of 1/|g| Σ_p TPA · TPA / (|g| + |p| - TPA)
    for g, (first, second) in {a: (pa, pb), b: (pb, pa)}.items():
        size = _area(truth, g, range(FRAMES))
        tp1, tp2 = _area(truth, g, before), _area(truth, g, after)
        total += (tp1 * tp1 / (size + first - tp1) + tp2 * tp2 / (size + second - tp2)) / size
    tracks = len({int(v) for t in truth for v in np.unique(t.instance) if v})
    result = _stq(truth, fused)
    assert result.aq == pytest.approx((total + (tracks - 2)) / tracks) and result.sq == 1.0
    assert result.aq < 1.0


def test_an_id_swap_between_classes_makes_class_specific_tracks(scene) -> None:
    """STQ's track ids are class-specific: after the swap, id a on b's (other-class) pixels is another
    predicted track than id a on a's, so each predicted track holds pixels of one truth track only and a
    track g split into TPA1 + TPA2 = |g| pixels scores (TPA1² + TPA2²) / |g|²."""
    a, b, at = 1, 2, 3  # a disc and a box
    assert scene.objects[a - 1].class_id != scene.objects[b - 1].class_id
    truth, fused = _swapped(scene, a, b, at)
    total = 0.0
    for g in (a, b):
        size = _area(truth, g, range(FRAMES))
        total += (_area(truth, g, range(at)) ** 2 + _area(truth, g, range(at, FRAMES)) ** 2) / size ** 2
    tracks = len({int(v) for t in truth for v in np.unique(t.instance) if v})
    result = _stq(truth, fused)
    assert result.aq == pytest.approx((total + (tracks - 2)) / tracks) and result.sq == 1.0


def test_uncovered_thing_pixels_can_be_kept_as_a_region_without_id(scene) -> None:
    truth = _truth(scene, 0)
    smap = SemanticMap(labels=torch.from_numpy(truth.semantic).long(), frame_index=0, fresh=True)
    empty = Instances.empty(80, 120)
    kept = fuse_panoptic(empty, smap, is_thing=IS_THING, keep_uncovered_things=True)
    voided = fuse_panoptic(empty, smap, is_thing=IS_THING)
    things = truth.instance > 0
    assert torch.equal(kept.semantic, smap.labels) and int(kept.instance.max()) == 0
    assert (voided.semantic.numpy()[things] == -1).all()
    assert (voided.semantic.numpy()[~things] == truth.semantic[~things]).all()


def test_an_instance_of_a_class_the_label_set_lacks_leaves_void_not_stuff(scene) -> None:
    truth = _truth(scene, 0)
    smap = SemanticMap(labels=torch.from_numpy(truth.semantic).long(), frame_index=0, fresh=True)
    instances = _instances(scene, 0)
    unmapped = int(instances.class_ids[0])
    class_map = tuple(-1 if c == unmapped else m for c, m in enumerate(CLASS_MAP))
    out = fuse_panoptic(instances, smap, is_thing=IS_THING, class_map=class_map)
    gone = instances.masks[instances.class_ids == unmapped].any(0)
    assert (out.semantic[gone] == -1).all() and (out.instance[gone] == 0).all()
    kept = instances.masks[instances.class_ids != unmapped].any(0)
    assert torch.equal(out.instance[kept], torch.from_numpy(truth.instance)[kept])


def test_detector_classes_map_to_label_set_things_by_name() -> None:
    from engine.fuse.panoptic import class_map_by_name
    from engine.segment import CITYSCAPES

    detector = ("person", "dog", "car", " Motorcycle", "sky", "train")
    # sky is stuff in Cityscapes: an instance is never painted as stuff
    assert class_map_by_name(detector, CITYSCAPES.names, CITYSCAPES.is_thing) == (11, -1, 13, 17, -1, 16)
