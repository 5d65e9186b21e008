"""Boundary refinement: the same result as the libraries' own calls, edges pulled onto the picture's
edges (boundary F against exact truth), masks still disjoint."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engine.refine import CrfConfig, GuidedConfig, label_map, refine_instances, refine_masks
from engine.errors import BackendError, ConfigError
from engine.sources.synthetic import SyntheticScene


def _blocky(masks: np.ndarray, factor: int) -> np.ndarray:
    """Masks as a low-resolution mask head gives them: area-downsampled by ``factor``, bilinear back up."""
    h, w = masks.shape[1:]
    out = []
    for m in masks.astype(np.float32):
        small = cv2.resize(m, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
        out.append(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5)
    blocky = np.stack(out)
    return label_map(blocky)[None] == np.arange(1, len(masks) + 1)[:, None, None]  # disjoint again


@pytest.fixture(scope="module")
def frame():
    scene = SyntheticScene(seed=11, frames=1, width=160, height=120, objects=4)
    gt = scene.ground_truth(0)
    keep = gt.masks.reshape(len(gt.ids), -1).any(1)
    return scene.render(0), gt.masks[keep], gt.ids[keep]


def test_crf_matches_pydensecrf_own_call(frame):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    image, truth, _ = frame
    masks = _blocky(truth, 8)
    cfg = CrfConfig()
    labels = label_map(masks)
    n = len(masks) + 1
    crf = dcrf.DenseCRF2D(image.shape[1], image.shape[0], n)  # the pydensecrf README's sequence
    crf.setUnaryEnergy(unary_from_labels(labels, n, gt_prob=cfg.gt_prob, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=cfg.sxy_gaussian, compat=cfg.compat_gaussian)
    crf.addPairwiseBilateral(sxy=cfg.sxy_bilateral, srgb=cfg.srgb_bilateral, rgbim=image, compat=cfg.compat_bilateral)
    expected = np.argmax(np.array(crf.inference(cfg.iterations)).reshape(n, *labels.shape), axis=0)
    got = refine_masks(image, masks, "crf")
    assert np.array_equal(label_map(got), expected)  # exact: same library, same inputs, deterministic


def test_guided_matches_opencv_own_call(frame):
    image, truth, _ = frame
    masks = _blocky(truth, 8)
    cfg = GuidedConfig()
    labels = label_map(masks)
    # one cv2.ximgproc.guidedFilter call per label, as its documentation describes; refine_masks builds the
    # filter once and reuses it, which OpenCV computes identically up to float32 rounding
    scores = np.stack([cv2.ximgproc.guidedFilter(image, (labels == k).astype(np.float32), cfg.radius, cfg.eps)
                       for k in range(len(masks) + 1)])
    expected = scores.argmax(0)
    got = label_map(refine_masks(image, masks, "guided"))
    ties = np.sort(scores, axis=0)[-1] - np.sort(scores, axis=0)[-2] < 1e-5  # rounding may flip exact ties
    assert np.array_equal(got[~ties], expected[~ties]) and ties.mean() < 1e-3


@pytest.mark.parametrize("method", ["crf", "guided"])
def test_refinement_pulls_blocky_edges_onto_the_objects(frame, method):
    from engine.eval import evaluate
    from engine.eval.fusion import frame_masks

    image, truth, ids = frame
    blocky = _blocky(truth, 8)
    refined = refine_masks(image, blocky, method)
    size = truth.shape[1:]
    before = evaluate([frame_masks(ids, truth, size)], [frame_masks(ids, blocky, size)])
    after = evaluate([frame_masks(ids, truth, size)], [frame_masks(ids, refined, size)])
    # TrackEval's F allows a small boundary tolerance, so blocky masks already score ~0.9 on it
    assert after.f_mean > before.f_mean + 0.03, (before.f_mean, after.f_mean)
    assert after.j_mean > before.j_mean + 0.05, (before.j_mean, after.j_mean)
    assert refined.sum(0).max() <= 1  # still disjoint


def test_none_keeps_the_masks_and_empty_frames_pass_through(frame):
    image, truth, _ = frame
    assert np.array_equal(refine_masks(image, truth, "none"), truth)
    empty = np.zeros((0, *truth.shape[1:]), dtype=bool)
    for method in ("crf", "guided"):
        assert refine_masks(image, empty, method).shape == empty.shape


def test_refine_instances_keeps_ids_and_moves_boxes(frame):
    from engine.types import Instances

    image, truth, ids = frame
    blocky = torch.from_numpy(_blocky(truth, 8))
    instances = Instances(ids=torch.from_numpy(ids), class_ids=torch.zeros(len(ids), dtype=torch.int64),
                          scores=torch.ones(len(ids)), boxes=torch.zeros(len(ids), 4), masks=blocky,
                          labels=("a",) * len(ids))
    out = refine_instances(torch.from_numpy(image), instances, "guided")
    assert torch.equal(out.ids, instances.ids) and out.labels == instances.labels
    ys, xs = torch.nonzero(out.masks[0], as_tuple=True)
    assert out.boxes[0].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_bad_requests_are_refused(frame, monkeypatch):
    image, truth, _ = frame
    with pytest.raises(ConfigError, match="choose one of none, crf, guided"):
        refine_masks(image, truth, "bilateral")
    monkeypatch.delattr(cv2, "ximgproc")
    with pytest.raises(BackendError, match="opencv-contrib-python-headless"):
        refine_masks(image, truth, "guided")
