"""The fuser on synthetic scenes with exact ground truth (objects crossing, occluding, leaving and
coming back), driven by doubles that read the truth with controlled faults; scored by TrackEval."""

from __future__ import annotations

import pytest

from engine.eval.doubles import DriftingTracker, NoisyTruthDetector
from engine.eval.fusion import evaluate_fusion
from engine.fuse import FuserConfig
from engine.sources.synthetic import SyntheticScene

FRAMES = 150  # 5 s at 30 fps: every object that leaves the frame comes back at least once


def _scene(seed: int) -> SyntheticScene:
    return SyntheticScene(seed=seed, frames=FRAMES, width=320, height=240, objects=6)


@pytest.mark.parametrize("seed", [0, 1])
def test_clean_scene_keeps_every_id(seed):
    scene = _scene(seed)
    report, counters, _ = evaluate_fusion(scene, NoisyTruthDetector(scene), DriftingTracker(scene))
    assert report.id_switches == 0
    assert report.predicted_ids == report.gt_objects  # one id per object, none spawned twice
    assert report.j_and_f >= 0.9, report.format()
    assert counters.reprompted == 0  # nothing drifted, nothing to correct


def test_drift_is_corrected_by_reprompting():
    scene = _scene(2)
    report, counters, _ = evaluate_fusion(scene, NoisyTruthDetector(scene), DriftingTracker(scene, drift_px=1.0))
    assert counters.reprompted > 10
    assert report.id_switches == 0 and report.j_and_f >= 0.9, report.format()
    # The same drift without re-prompting (reprompt_iou 0: never) ruins the masks: the re-prompts
    # above are what keeps them right.
    uncorrected, _, _ = evaluate_fusion(scene, NoisyTruthDetector(scene), DriftingTracker(scene, drift_px=1.0),
                                        FuserConfig(reprompt_iou=0.0))
    assert uncorrected.j_and_f < report.j_and_f - 0.2, uncorrected.format()


def test_misses_false_positives_and_jitter_keep_ids_and_start_no_phantoms():
    scene = _scene(3)
    detector = NoisyTruthDetector(scene, miss=0.2, false_positive=0.1, jitter_px=2, seed=5)
    report, counters, _ = evaluate_fusion(scene, detector, DriftingTracker(scene, drift_px=0.5))
    assert detector.false_positives >= 5  # the faults really happened
    assert report.id_switches == 0 and report.j_and_f >= 0.9, report.format()
    # a false positive is never at the same place on two detection frames, so none is confirmed
    assert report.predicted_ids == report.gt_objects and counters.spawned == report.gt_objects


def test_phantom_tracks_are_retired():
    """Without spawn confirmation every false positive starts a track; the tracker never sees its
    object, so each is retired ``retire_after`` frames later while the real objects keep their ids."""
    scene = _scene(3)
    detector = NoisyTruthDetector(scene, false_positive=0.1, seed=5)
    tracker = DriftingTracker(scene)
    config = FuserConfig(spawn_after=1)
    report, counters, tracks = evaluate_fusion(scene, detector, tracker, config)
    assert counters.spawned - report.gt_objects >= 5  # phantoms were started
    assert counters.retired >= 1
    old_phantoms = [i for i, t in tracks.items()
                    if tracker.objects[i] is None and t.born < FRAMES - config.retire_after]
    assert old_phantoms == []  # every phantom older than the retirement horizon is gone
    assert report.id_switches == 0 and report.j_and_f >= 0.9, report.format()


def test_an_object_away_longer_than_the_retirement_comes_back_with_a_new_id():
    scene = _scene(0)
    report, counters, _ = evaluate_fusion(scene, NoisyTruthDetector(scene), DriftingTracker(scene),
                                          FuserConfig(retire_after=10))
    # seed 0: objects 0, 2 and 4 leave for 43, 44 and 27 frames, each once, all longer than 10
    assert counters.retired >= 3
    assert report.predicted_ids >= report.gt_objects + 3
