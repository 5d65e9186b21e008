"""The fusion policy, one rule at a time, on small hand-made frames."""

import pytest
import torch

from engine.errors import ConfigError
from engine.fuse import Fuser, FuserConfig
from engine.types import Adopt, Detections, Frame, Origin, Reprompt, RepromptReason, Retire, RetireReason, Spawn
from tests.doubles import FusionHarness, MaskTracker

H, W = 40, 60
NAMES = ("cat", "dog")


def _box_mask(x1, y1, x2, y2) -> torch.Tensor:
    m = torch.zeros((H, W), dtype=torch.bool)
    m[y1:y2, x1:x2] = True
    return m


def _dets(*items) -> Detections:
    """items: (box, class_id, score)"""
    if not items:
        return Detections.empty(H, W, names=NAMES)
    boxes = torch.tensor([list(map(float, b)) for b, _, _ in items])
    masks = torch.stack([_box_mask(*b) for b, _, _ in items])
    return Detections(boxes=boxes, scores=torch.tensor([s for _, _, s in items]),
                      class_ids=torch.tensor([c for _, c, _ in items]), masks=masks, names=NAMES)


def _policy(config: FuserConfig) -> tuple[Fuser, MaskTracker, FusionHarness]:
    """The policy under test, the tracker double, and the per-frame processor that joins them."""
    fuser = Fuser(config, names=NAMES)
    tracker = MaskTracker(H, W)
    return fuser, tracker, FusionHarness(fuser, tracker, names=NAMES)


def _step(harness: FusionHarness, dets, i=0):
    return harness.step(dets, i).instances


def test_a_confident_new_detection_spawns_a_track_from_its_box():
    fuser, trk, run = _policy(FuserConfig(spawn_after=1))
    out = _step(run, _dets(((5, 5, 20, 20), 1, 0.9)))
    assert trk.prompts == [(1, [5.0, 5.0, 20.0, 20.0])]
    assert out.ids.tolist() == [1] and out.labels == ("dog",) and out.masks[0].sum() == 225
    assert fuser.counters.spawned == 1


def test_a_detection_below_spawn_confidence_starts_nothing():
    fuser, trk, run = _policy(FuserConfig(spawn_conf=0.5, spawn_after=1))
    assert len(_step(run, _dets(((5, 5, 20, 20), 0, 0.4)))) == 0 and trk.prompts == []


def test_the_same_object_next_frame_keeps_its_id_and_is_not_reprompted():
    fuser, trk, run = _policy(FuserConfig(spawn_after=1))
    _step(run, _dets(((5, 5, 20, 20), 0, 0.9)))
    out = _step(run, _dets(((6, 5, 21, 20), 0, 0.8)), i=1)  # IoU 0.88 > reprompt_iou
    assert out.ids.tolist() == [1] and len(trk.prompts) == 1


def test_a_drifted_track_is_reprompted_from_its_detection():
    fuser, trk, run = _policy(FuserConfig(match_iou=0.3, reprompt_iou=0.6, spawn_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))
    trk.masks[1] = _box_mask(10, 5, 30, 25)  # the tracker slid 5 px: IoU with the detection 0.6 -> drift
    trk.masks[1] = _box_mask(11, 5, 31, 25)  # 6 px: IoU 0.54
    out = _step(run, _dets(((5, 5, 25, 25), 0, 0.9)), i=1)
    assert trk.prompts[-1] == (1, [5.0, 5.0, 25.0, 25.0]) and fuser.counters.reprompted == 1
    assert out.boxes[0].tolist() == [5.0, 5.0, 25.0, 25.0]  # this frame already shows the corrected mask


def test_a_duplicate_detection_on_a_tracked_object_does_not_spawn():
    fuser, trk, run = _policy(FuserConfig(spawn_max_overlap=0.5, spawn_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))
    # two detections of the one object: the better one matches, the other overlaps it by IoU 0.64
    out = _step(run, _dets(((5, 5, 25, 25), 0, 0.9), ((5, 5, 25, 21), 0, 0.85)), i=1)
    assert out.ids.tolist() == [1] and fuser.counters.spawned == 1


def test_class_and_score_are_smoothed_over_matched_detections():
    fuser, trk, run = _policy(FuserConfig(smoothing=0.3, spawn_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))
    out = _step(run, _dets(((5, 5, 25, 25), 1, 0.5)), i=1)  # one frame of "dog" does not flip it
    assert out.labels == ("cat",)
    assert out.scores[0].item() == pytest.approx(0.7 * 0.9 + 0.3 * 0.5)
    for i in range(2, 8):  # a consistent "dog" does
        out = _step(run, _dets(((5, 5, 25, 25), 1, 0.9)), i=i)
    assert out.labels == ("dog",)


def test_a_lost_unmatched_track_is_retired_after_k_frames_and_only_then():
    fuser, trk, run = _policy(FuserConfig(retire_after=3, spawn_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))
    trk.hidden.add(1)
    for i in range(1, 3):
        assert len(_step(run, _dets(), i=i)) == 0  # hidden: not shown, still tracked
        assert trk.removed == []
    _step(run, _dets(), i=3)
    assert trk.removed == [1] and fuser.counters.retired == 1 and 1 not in fuser.tracks


def test_a_lost_track_is_reacquired_by_a_detection_where_it_was_last_seen():
    fuser, trk, run = _policy(FuserConfig(retire_after=10, spawn_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))
    trk.hidden.add(1)
    trk.masks[1] = torch.zeros((H, W), dtype=torch.bool)
    _step(run, _dets(), i=1)  # occluded for a frame
    out = _step(run, _dets(((7, 5, 27, 25), 0, 0.9)), i=2)  # back, 2 px further on
    assert out.ids.tolist() == [1] and fuser.counters.reacquired == 1 and fuser.counters.spawned == 1


def test_a_track_no_detection_confirms_is_retired_even_if_the_tracker_still_sees_it():
    fuser, trk, run = _policy(FuserConfig(retire_unmatched_after=4, spawn_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))
    for i in range(1, 5):
        _step(run, _dets(((40, 20, 55, 35), 0, 0.3)), i=i)  # a weak detection elsewhere only
    assert trk.removed == [1]


def test_overlapping_tracks_resolve_to_disjoint_masks_by_score():
    fuser, trk, run = _policy(FuserConfig(spawn_after=1))
    out = _step(run, _dets(((5, 5, 30, 30), 0, 0.95), ((20, 5, 45, 30), 1, 0.6)))
    assert out.ids.tolist() == [1, 2]
    assert not (out.masks[0] & out.masks[1]).any()
    assert out.masks[0][10, 25] and not out.masks[1][10, 25]  # the overlap goes to the surer track


def test_a_new_object_must_be_seen_twice_before_it_gets_an_id():
    fuser, trk, run = _policy(FuserConfig(spawn_after=2))
    assert len(_step(run, _dets(((5, 5, 20, 20), 0, 0.9)))) == 0 and trk.prompts == []
    out = _step(run, _dets(((6, 5, 21, 20), 0, 0.9)), i=1)  # seen again, about the same place
    assert out.ids.tolist() == [1]


def test_a_one_frame_flicker_never_spawns():
    fuser, trk, run = _policy(FuserConfig(spawn_after=2))
    _step(run, _dets(((5, 5, 20, 20), 0, 0.9)))
    _step(run, _dets(((40, 20, 55, 35), 0, 0.9)), i=1)  # something else, elsewhere
    _step(run, _dets(), i=2)
    assert trk.prompts == [] and fuser.counters.spawned == 0


def test_two_tracks_on_one_object_become_one_keeping_the_matched_track():
    fuser, trk, run = _policy(FuserConfig(spawn_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.95), ((35, 5, 55, 25), 1, 0.9)))  # ids by confidence
    trk.masks[2] = _box_mask(6, 5, 26, 25)  # track 2 wandered onto object 1
    out = _step(run, _dets(((5, 5, 25, 25), 0, 0.9)), i=1)
    assert out.ids.tolist() == [1] and trk.removed == [2] and fuser.counters.merged == 1


def test_two_tracks_sent_to_one_object_each_take_the_detection_where_they_were():
    # Both masks on object 1 (same IoU with its detection): the detection goes to the track that was
    # there, and the other is paired with the detection at its own last box, not retired or respawned
    fuser, trk, run = _policy(FuserConfig(spawn_after=1))
    _step(run, _dets(((35, 5, 55, 25), 0, 0.9), ((5, 5, 25, 25), 0, 0.95)))  # track 1 left, track 2 right
    trk.masks[1] = _box_mask(35, 5, 55, 25)  # track 1's mask is now track 2's, pixel for pixel
    out = _step(run, _dets(((35, 5, 55, 25), 0, 0.9), ((6, 5, 26, 25), 0, 0.9)), i=1)
    assert out.ids.tolist() == [1, 2] and trk.removed == [] and fuser.counters.spawned == 2
    assert out.boxes[0].tolist() == [6.0, 5.0, 26.0, 25.0] and out.boxes[1].tolist() == [35.0, 5.0, 55.0, 25.0]
    assert fuser.counters.reacquired == 1


def test_a_weak_match_of_another_class_does_not_move_the_track():
    fuser, trk, run = _policy(FuserConfig(spawn_after=1, match_iou=0.3, reprompt_iou=0.7))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))  # a cat
    # a dog overlapping the cat's mask by IoU 0.5: not the cat drifting, so no re-prompt onto it
    out = _step(run, _dets(((15, 5, 35, 25), 1, 0.9)), i=1)
    assert trk.prompts[1:] == [(2, [15.0, 5.0, 35.0, 25.0])]  # the dog got its own track instead
    assert fuser.counters.reprompted == 0 and out.labels[0] == "cat"


def test_spawning_stops_at_max_tracks_keeping_the_most_confident():
    fuser, trk, run = _policy(FuserConfig(spawn_after=1, max_tracks=2))
    out = _step(run, _dets(((2, 2, 10, 10), 0, 0.6), ((20, 2, 30, 10), 0, 0.9), ((40, 2, 50, 10), 0, 0.8)))
    assert sorted(out.scores.tolist()) == pytest.approx([0.8, 0.9]) and len(fuser.tracks) == 2


def test_a_zero_area_detection_box_is_ignored_not_a_crash():
    """Box IoU of a degenerate box is 0/0; the lost-track stage must treat it as no overlap."""
    fuser, trk, run = _policy(FuserConfig(spawn_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))
    trk.hidden.add(1)
    trk.masks[1] = torch.zeros((H, W), dtype=torch.bool)
    flat = Detections(boxes=torch.tensor([[30.0, 10.0, 30.0, 10.0]]), scores=torch.tensor([0.9]),
                      class_ids=torch.tensor([0]), masks=torch.zeros((1, H, W), dtype=torch.bool), names=NAMES)
    _step(run, flat, i=1)  # must not raise
    assert 1 in fuser.tracks


def test_association_returns_decisions_and_never_holds_the_tracker():
    """Association is data in, decisions out: the same Spawn whatever tracker the pipeline runs."""
    fuser = Fuser(FuserConfig(spawn_after=1), names=NAMES)
    frame = Frame(image=torch.zeros((H, W, 3), dtype=torch.uint8), index=0, pts=None, capture_time=0.0)
    decided = fuser.associate(frame, _dets(((5, 5, 20, 20), 1, 0.9)), MaskTracker(H, W).step())
    assert decided == [Spawn(1, class_id=1, score=pytest.approx(0.9), box=(5.0, 5.0, 20.0, 20.0))]
    assert not any(isinstance(v, MaskTracker) for v in vars(fuser).values())


def test_the_decisions_of_a_frame_are_typed_and_in_the_order_they_were_applied():
    fuser, trk, run = _policy(FuserConfig(spawn_after=1, match_iou=0.3, reprompt_iou=0.6, retire_after=1))
    run.step(_dets(((5, 5, 25, 25), 0, 0.95), ((35, 5, 55, 25), 1, 0.9)), 0)  # ids by confidence
    trk.masks[1] = _box_mask(11, 5, 31, 25)  # drifted
    trk.hidden.add(2)
    result = run.step(_dets(((5, 5, 25, 25), 0, 0.9)), 1)
    assert result.decisions == (Reprompt(1, (5.0, 5.0, 25.0, 25.0), RepromptReason.DRIFT),
                                Retire(2, RetireReason.LOST))
    assert trk.removed == [2] and Adopt not in {type(d) for d in result.decisions}
    assert Origin.DETECTOR is fuser.tracks[1].origin


def test_a_memory_that_jumps_onto_a_neighbour_does_not_take_its_detection():
    # Track 1's mask jumps onto object 2 and overlaps its detection more (IoU 0.82) than track 2's own,
    # slightly drifted mask does (0.67). Where each track was on the last frame decides: track 2 keeps
    # its object and track 1 is re-acquired where it was. As a tie-break only, the ids swap.
    def run_with(weight: float):
        fuser, trk, run = _policy(FuserConfig(spawn_after=1, last_seen_weight=weight))
        _step(run, _dets(((5, 5, 25, 25), 0, 0.95), ((35, 5, 55, 25), 0, 0.9)))  # ids by confidence
        trk.masks[1], trk.masks[2] = _box_mask(33, 5, 53, 25), _box_mask(39, 5, 59, 25)
        return _step(run, _dets(((6, 5, 26, 25), 0, 0.9), ((35, 5, 55, 25), 0, 0.9)), i=1), fuser

    out, fuser = run_with(FuserConfig().last_seen_weight)
    assert dict(zip(out.ids.tolist(), out.boxes[:, 0].tolist())) == {1: 6.0, 2: 35.0}
    assert fuser.counters.spawned == 2 and fuser.counters.reacquired == 1
    out, fuser = run_with(1e-3)
    assert dict(zip(out.ids.tolist(), out.boxes[:, 0].tolist()))[1] > 30  # track 1 took object 2's place


def test_a_gone_track_whose_memory_comes_back_on_a_tracked_object_is_retired_as_lost():
    # Object 1 leaves (its track hidden), then track 1's memory finds part of object 2 instead: its mask
    # lies inside track 2's, too small a part for the duplicate rule (IoU 0.68 < duplicate_iou). Track 2
    # keeps its detection and id; track 1 is retired as lost (into the re-identification gallery, for
    # when object 1 comes back) and claims nothing on the way out.
    fuser, trk, run = _policy(FuserConfig(spawn_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.95), ((35, 5, 55, 25), 0, 0.9)))
    trk.hidden.add(1)
    assert _step(run, _dets(((35, 5, 55, 25), 0, 0.9)), i=1).ids.tolist() == [2]
    trk.hidden.discard(1)
    trk.masks[1], trk.masks[2] = _box_mask(40, 5, 55, 25), _box_mask(33, 5, 55, 25)
    result = run.step(_dets(((35, 5, 55, 25), 0, 0.9)), 2)
    assert Retire(1, RetireReason.LOST) in result.decisions and trk.removed == [1]
    assert result.instances.ids.tolist() == [2] and fuser.counters.reacquired == 0
    assert not any(isinstance(d, Reprompt) for d in result.decisions)


def test_a_gone_track_inside_a_tracked_object_of_another_class_stays_where_its_detection_confirms_it():
    # A small object of another class inside a big one's mask (a bag a person carries), back after one
    # frame out of the instances. A detection of its class where its mask is: it is there, it stays and
    # takes the detection. No such detection: its memory found the person, and it is retired as lost.
    def back(bag_detected: bool):
        fuser, trk, run = _policy(FuserConfig(spawn_after=1))
        # the bag (id 1, the more confident: it keeps its pixels where the masks overlap) inside the person (2)
        assert _step(run, _dets(((5, 5, 55, 35), 0, 0.9), ((20, 10, 30, 20), 1, 0.95))).ids.tolist() == [1, 2]
        trk.hidden.add(1)
        assert _step(run, _dets(((5, 5, 55, 35), 0, 0.9)), i=1).ids.tolist() == [2]
        trk.hidden.discard(1)
        dets = [((5, 5, 55, 35), 0, 0.9)] + ([((20, 10, 30, 20), 1, 0.95)] if bag_detected else [])
        return run.step(_dets(*dets), 2), trk

    result, trk = back(bag_detected=True)
    assert trk.removed == [] and not any(isinstance(d, Retire) for d in result.decisions)
    assert result.instances.ids.tolist() == [1, 2]
    result, trk = back(bag_detected=False)
    assert Retire(1, RetireReason.LOST) in result.decisions and result.instances.ids.tolist() == [2]


def test_a_track_back_in_sight_on_its_own_object_keeps_its_id():
    # The same return where no other track is: the memory found its object again, nothing is retired.
    fuser, trk, run = _policy(FuserConfig(spawn_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.95), ((35, 5, 55, 25), 0, 0.9)))
    trk.hidden.add(1)
    _step(run, _dets(((35, 5, 55, 25), 0, 0.9)), i=1)
    trk.hidden.discard(1)
    out = _step(run, _dets(((5, 5, 25, 25), 0, 0.9), ((35, 5, 55, 25), 0, 0.9)), i=2)
    assert out.ids.tolist() == [1, 2] and trk.removed == []


def test_a_track_no_detection_confirms_is_hidden_but_kept_until_one_does():
    fuser, trk, run = _policy(FuserConfig(spawn_after=1, hide_unconfirmed_after=1))
    _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))
    assert _step(run, _dets(), i=1).ids.tolist() == []  # the tracker still sees it; no detection does
    assert 1 in fuser.tracks and trk.removed == [] and trk.masks[1].any()
    assert _step(run, _dets(((6, 5, 26, 25), 0, 0.9)), i=2).ids.tolist() == [1]  # confirmed again: same id
    fuser, trk, run = _policy(FuserConfig(spawn_after=1))  # the default shows it throughout
    _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))
    assert _step(run, _dets(), i=1).ids.tolist() == [1]


def test_a_users_track_is_shown_though_no_detection_confirms_it():
    fuser, trk, run = _policy(FuserConfig(spawn_after=1, hide_unconfirmed_after=1))
    trk.add_object(7, box=(30, 10, 50, 30))  # a user's click, adopted on the next step
    assert _step(run, _dets(), i=0).ids.tolist() == [7]
    assert _step(run, _dets(), i=1).ids.tolist() == [7]


def test_a_matched_track_shows_its_detections_mask_when_the_detector_decides():
    def second_frame(weight: float):
        fuser, trk, run = _policy(FuserConfig(spawn_after=1, detector_mask_weight=weight))
        _step(run, _dets(((5, 5, 25, 25), 0, 0.9)))
        trk.masks[1] = _box_mask(6, 5, 26, 25)  # the tracker's mask, IoU 0.9 with the next detection
        return _step(run, _dets(((5, 5, 25, 25), 0, 0.9)), i=1)

    assert second_frame(0.0).boxes.tolist() == [[6.0, 5.0, 26.0, 25.0]]
    assert second_frame(1.0).boxes.tolist() == [[5.0, 5.0, 25.0, 25.0]]


@pytest.mark.parametrize("field, value", [("last_seen_weight", -1.0), ("last_seen_weight", float("inf")),
                                          ("last_seen_weight", float("nan")), ("detector_mask_weight", 1.5),
                                          ("hide_unconfirmed_after", 0)])
def test_bad_fusion_settings_are_refused_by_name(field, value):
    with pytest.raises(ConfigError, match=f"fusion {field} must be"):
        FuserConfig(**{field: value})
