"""The uncertainty score: each cue responds to what it is meant to see, and only to that."""

from __future__ import annotations

import math

import pytest
import torch

from engine.data import FrameEvidence, UncertaintyWeights, uncertainty
from engine.data.uncertainty import mask_entropy
from engine.errors import ConfigError


def _crisp(n: int = 2, size: int = 32) -> torch.Tensor:  # [n, size, size]: +20 inside a square, -20 outside
    logits = torch.full((n, size, size), -20.0)
    logits[:, 8:24, 8:24] = 20.0
    return logits


def _evidence(**kw) -> FrameEvidence:
    base = {"frame": 0, "mask_logits": _crisp(), "detection_scores": torch.tensor([0.95]), "matched_iou": torch.tensor([1.0])}
    return FrameEvidence(**{**base, **kw})


def test_a_confident_frame_scores_near_zero():
    score = uncertainty(_evidence())
    assert score.total < 0.02
    assert score.entropy < 0.01 and score.margin == 0.0 and score.disagreement == 0.0 and score.events == 0.0


def test_an_empty_frame_scores_zero():
    assert uncertainty(FrameEvidence.empty(3)).total == 0.0


def test_soft_logits_raise_the_entropy_cue_to_one_bit():
    soft = torch.zeros((1, 32, 32))  # p = 0.5 everywhere: one bit per pixel
    assert mask_entropy(soft).item() == pytest.approx(1.0, abs=1e-6)
    assert uncertainty(_evidence(mask_logits=soft)).entropy == pytest.approx(1.0, abs=1e-6)


def test_entropy_ignores_the_confident_background():
    """Same soft square, on a small and on a large frame of confident background: same entropy."""
    small, large = torch.full((1, 16, 16), -30.0), torch.full((1, 128, 128), -30.0)
    small[0, 4:12, 4:12] = 0.0
    large[0, 4:12, 4:12] = 0.0
    assert mask_entropy(small).item() == pytest.approx(mask_entropy(large).item(), abs=1e-6)
    assert mask_entropy(torch.full((1, 8, 8), -30.0)).item() == 0.0  # no region: absent object


def test_one_uncertain_object_among_confident_ones_sets_the_frame_entropy():
    logits = _crisp(n=5)
    logits[3] = 0.0
    assert uncertainty(_evidence(mask_logits=logits)).entropy == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("scores", "expected"), [
    ([0.5], 1.0),  # exactly at the threshold
    ([0.575], 0.5),  # half a band above
    ([0.425], 0.5),  # half a band below
    ([0.9, 0.2], 0.0),  # both farther than the band
    ([0.9, 0.55], 1.0 - 0.05 / 0.15),  # the closest one counts
    ([], 0.0),  # no detection (a frame the detector skipped)
])
def test_margin_cue_measures_distance_to_the_threshold(scores, expected):
    ev = _evidence(detection_scores=torch.tensor(scores, dtype=torch.float32), score_threshold=0.5)
    assert uncertainty(ev).margin == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("ious", "expected"), [
    ([1.0, 1.0], 0.0),  # detector and tracker agree
    ([1.0, 0.4], 0.6),  # the worst pair counts
    ([], 0.0),  # nothing matched
])
def test_disagreement_is_one_minus_the_worst_matched_iou(ious, expected):
    assert uncertainty(_evidence(matched_iou=torch.tensor(ious))).disagreement == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("spawns", "losses", "reprompts"), [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 2)])
def test_events_saturate_with_their_count(spawns, losses, reprompts):
    count = spawns + losses + reprompts
    score = uncertainty(_evidence(spawns=spawns, losses=losses, reprompts=reprompts))
    assert score.events == pytest.approx(1.0 - math.exp(-count / 2.0))


def test_the_total_is_the_normalised_weighted_sum():
    ev = _evidence(mask_logits=torch.zeros((1, 8, 8)), detection_scores=torch.tensor([0.5]),
                   matched_iou=torch.tensor([0.0]), spawns=100)
    assert uncertainty(ev).total == pytest.approx(1.0, abs=1e-6)  # every cue saturated
    only_margin = UncertaintyWeights(disagreement=0.0, entropy=0.0, margin=2.0, events=0.0)
    ev = _evidence(detection_scores=torch.tensor([0.575]))
    assert uncertainty(ev, only_margin).total == pytest.approx(0.5)


def test_more_disagreement_never_lowers_the_score():
    scores = [uncertainty(_evidence(matched_iou=torch.tensor([iou]))).total for iou in (1.0, 0.8, 0.5, 0.1)]
    assert scores == sorted(scores)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"disagreement": -0.1}, "weights"),  # negative weight
    ({"disagreement": 0, "entropy": 0, "margin": 0, "events": 0}, "weights"),  # all zero
    ({"margin_band": 0.0}, "margin_band"),  # no band
])
def test_bad_weights_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        UncertaintyWeights(**kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mask_logits": torch.zeros(4, 4)}, "mask_logits"),  # 2-D logits
    ({"detection_scores": torch.zeros(2, 1)}, "detection_scores"),  # 2-D scores
    ({"spawns": -1}, "spawns"),  # negative count
    ({"score_threshold": 1.5}, "score_threshold"),  # threshold outside [0, 1]
])
def test_malformed_evidence_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _evidence(**kwargs)


@pytest.mark.parametrize(("scores", "expected"), [
    ([20.0, 20.0], 0.0),  # both objects surely present: only the crisp masks' edges count
    ([20.0, 0.0], 1.0),  # the tracker cannot tell whether the second object is there: one bit
    ([-20.0, 20.0], 0.0),  # surely absent is sure too
], ids=["present", "unsure", "absent"])
def test_an_object_score_near_zero_is_as_uncertain_as_a_soft_mask(scores, expected):
    score = uncertainty(_evidence(object_scores=torch.tensor(scores)))
    assert score.entropy == pytest.approx(expected, abs=0.01)


def test_object_scores_must_match_the_objects():
    with pytest.raises(ValueError, match="object_scores must be \\[2\\]"):
        _evidence(object_scores=torch.zeros(3))
