"""The per-frame processor: user prompts through the decisions path, the user's tracks kept by the
detector-driven policy, and the one stage list every timing record follows."""

from __future__ import annotations

import threading

import pytest
import torch

from engine.errors import ConfigError, UnknownTrackError
from engine.fuse import Fuser, FuserConfig
from engine.metrics import LatencyTable
from engine.pipeline import Pipeline
from engine.runtime.device import StageClock
from engine.sinks import result_to_record
from engine.types import (TIMING_KEYS, Adopt, Detections, Frame, FrameResult, Instances, Origin, Retire,
                          RetireReason, Spawn, Stage, StageTimes, UserPrompt)
from tests.doubles import ArraySource, FusionHarness, MaskTracker, SquareDetector, moving_square_frames

H, W = 96, 128
USER_BOX = (60.0, 60.0, 90.0, 90.0)  # away from the square of moving_square_frames


def _pipeline(frames: int, config: FuserConfig, **kwargs) -> tuple[Pipeline, MaskTracker, Fuser]:
    tracker = MaskTracker(H, W)
    fuser = Fuser(config, names=SquareDetector.names)
    pipeline = Pipeline(ArraySource(moving_square_frames(frames)), detector=SquareDetector(), tracker=tracker,
                        fuser=fuser, **kwargs)
    return pipeline, tracker, fuser


def test_a_user_prompt_starts_a_track_with_the_next_free_id_and_its_future_says_which():
    pipeline, tracker, fuser = _pipeline(2, FuserConfig(spawn_after=1))
    future = pipeline.prompts.track(box=USER_BOX)
    first, _ = list(pipeline)
    assert future.result(timeout=0) == 1  # the stream's first object
    assert first.decisions == (UserPrompt(obj_id=1, box=USER_BOX), Adopt(1, Origin.USER),
                               Spawn(2, class_id=0, score=pytest.approx(0.9), box=(4.0, 20.0, 34.0, 50.0)))
    assert sorted(first.instances.ids.tolist()) == [1, 2]
    assert fuser.tracks[1].origin is Origin.USER and fuser.tracks[2].origin is Origin.DETECTOR


def test_the_detector_driven_policy_never_retires_a_users_track():
    """Object 1 is the user's, never confirmed by a detection and out of sight: a detector's track
    would be retired after 2 frames either way; the user's stays until the user removes it."""
    pipeline, tracker, fuser = _pipeline(8, FuserConfig(spawn_after=1, retire_after=2, retire_unmatched_after=2))
    pipeline.prompts.track(box=USER_BOX)
    results = []
    for result in pipeline:
        tracker.hidden.add(1)  # the user's object leaves the tracker's sight after frame 0
        results.append(result)
    assert 1 in tracker.masks and 1 in fuser.tracks
    assert not any(isinstance(d, Retire) for r in results for d in r.decisions)


def test_a_user_removal_goes_through_the_queue_and_association_forgets_the_track():
    pipeline, tracker, fuser = _pipeline(3, FuserConfig(spawn_after=1))
    added = pipeline.prompts.track(box=USER_BOX)
    results = []
    for result in pipeline:
        if result.index == 0:
            removed = pipeline.prompts.remove(added.result(timeout=0))
        results.append(result)
    assert removed.result(timeout=0) == 1 and tracker.removed == [1]
    assert Retire(1, RetireReason.USER) in results[1].decisions
    assert 1 not in fuser.tracks and 1 not in results[1].instances.ids.tolist()


@pytest.mark.parametrize("prompt, message", [
    (dict(box=(100.0, 10.0, 200.0, 40.0)), "outside the 128x96 frame"),  # past the right edge
    (dict(points=[(10.0, -5.0)], labels=[1]), "outside"),  # above the top edge
    (dict(obj_id=7, remove=True), "not tracked"),  # an id nobody tracks
], ids=["box_outside", "point_outside", "remove_unknown"])
def test_a_refused_prompt_fails_its_future_and_the_stream_goes_on(prompt, message):
    pipeline, _, _ = _pipeline(3, FuserConfig(spawn_after=1))
    if prompt.pop("remove", False):
        future = pipeline.prompts.remove(prompt["obj_id"])
    else:
        future = pipeline.prompts.track(**prompt)
    assert len(list(pipeline)) == 3
    with pytest.raises(ConfigError, match=message):
        future.result(timeout=0)


@pytest.mark.parametrize("prompt, message", [
    (dict(box=(5.0, 5.0, 2.0, 9.0)), "x2>x1"),  # corners swapped
    (dict(box=(5.0, float("nan"), 9.0, 9.0)), "finite"),
    (dict(points=[(5.0, 5.0)], labels=[2]), "1 \\(foreground\\) or 0"),
    (dict(points=[(5.0, 5.0)], labels=[]), "one label each"),
    ({}, "give a box"),
], ids=["box_swapped", "box_nan", "label_not_binary", "label_missing", "empty"])
def test_a_malformed_prompt_is_refused_when_queued(prompt, message):
    pipeline, _, _ = _pipeline(1, FuserConfig())
    with pytest.raises(ConfigError, match=message):
        pipeline.prompts.track(**prompt)
    assert len(pipeline.prompts) == 0


def test_prompts_from_another_thread_are_all_applied():
    pipeline, tracker, _ = _pipeline(30, FuserConfig(spawn_after=1))
    futures = []

    def click():
        for k in range(10):
            futures.append(pipeline.prompts.track(box=(60.0 + k, 60.0, 80.0 + k, 90.0)))

    thread = threading.Thread(target=click)
    thread.start()
    list(pipeline)
    thread.join()
    ids = [f.result(timeout=5) for f in futures]
    assert len(set(ids)) == 10  # every click its own object: no id given twice
    assert set(ids) <= set(tracker.masks) | set(tracker.removed)


def test_a_users_track_wins_a_duplicate_against_a_detectors():
    """A detector's track and a user's track on one object: the detector's is the one retired."""
    fuser, tracker = Fuser(FuserConfig(spawn_after=1), names=("square",)), MaskTracker(H, W)
    harness = FusionHarness(fuser, tracker, names=("square",))
    box = torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    mask = torch.zeros((1, H, W), dtype=torch.bool)
    mask[0, 10:40, 10:40] = True
    dets = Detections(boxes=box, scores=torch.tensor([0.9]), class_ids=torch.tensor([0]), masks=mask,
                      names=("square",))
    harness.step(dets, 0)  # the detector's track 1
    harness.stream.prompts.track(box=(10, 10, 40, 40))  # the user prompts the same object: track 2
    result = harness.step(Detections.empty(H, W, names=("square",)), 1)
    assert Retire(1, RetireReason.DUPLICATE) in result.decisions
    assert result.instances.ids.tolist() == [2] and fuser.tracks[2].origin is Origin.USER


def test_stage_times_the_latency_table_and_the_jsonl_keys_all_follow_the_stage_list():
    assert TIMING_KEYS == (*[s.value for s in Stage], "total", "overlapped")
    times = StageTimes(decode=1.0, track=2.0, total=4.0)
    assert list(times.as_dict()) == list(TIMING_KEYS) and times.track == 2.0 and times.fuse == 0.0
    assert times[Stage.TRACK] == times["track"] == 2.0
    table = LatencyTable()
    table.add(times, age_ms=5.0)
    assert [row[0] for row in table.rows()] == [*TIMING_KEYS, "age"]
    frame = Frame(image=torch.zeros((4, 4, 3), dtype=torch.uint8), index=0, pts=None, capture_time=0.0)
    record = result_to_record(FrameResult(frame=frame, instances=Instances.empty(4, 4), times=times, age_ms=5.0))
    assert list(record["times_ms"]) == list(TIMING_KEYS)


@pytest.mark.parametrize("use", [
    lambda: StageTimes(classify=1.0),
    lambda: StageTimes().classify,
    lambda: StageClock(torch.device("cpu")).mark("classify"),
    lambda: LatencyTable().add({"classify": 1.0}, age_ms=0.0),
], ids=["stage_times", "stage_times_attribute", "clock", "latency_table"])
def test_a_stage_name_that_does_not_exist_is_an_error(use):
    with pytest.raises((ValueError, AttributeError), match="classify"):
        use()


def test_a_frame_runs_the_stages_in_stage_list_order():
    order = []

    class Recording(SquareDetector):
        def __call__(self, images):
            order.append(Stage.DETECT)
            return super().__call__(images)

    class RecordingTracker(MaskTracker):
        def step(self, image=None):
            order.append(Stage.TRACK)
            return super().step(image)

    class RecordingFuser(Fuser):
        def resolve(self, frame, detections, tracks):
            order.append(Stage.FUSE)
            return super().resolve(frame, detections, tracks)

    list(Pipeline(ArraySource(moving_square_frames(1)), detector=Recording(), tracker=RecordingTracker(H, W),
                  fuser=RecordingFuser(names=("square",))))
    assert order == [s for s in Stage if s in (Stage.DETECT, Stage.TRACK, Stage.FUSE)]


def test_a_refinement_of_an_untracked_id_is_refused_where_a_plain_prompt_starts_it():
    pipeline, tracker, _ = _pipeline(2, FuserConfig(spawn_after=1))
    refined = pipeline.prompts.refine(7, points=[(70.0, 70.0)], labels=[1])
    started = pipeline.prompts.track(obj_id=8, points=[(70.0, 70.0)], labels=[1])
    list(pipeline)
    with pytest.raises(UnknownTrackError, match="cannot refine object 7: it is not tracked"):
        refined.result(timeout=0)
    assert started.result(timeout=0) == 8 and 7 not in tracker.masks and 8 in tracker.masks


def test_a_prompt_withdrawn_before_the_next_frame_is_never_applied():
    pipeline, tracker, _ = _pipeline(2, FuserConfig(spawn_after=1))
    withdrawn = pipeline.prompts.track(box=USER_BOX)
    kept = pipeline.prompts.track(points=[(70.0, 70.0)], labels=[1])
    assert withdrawn.cancel()
    first, _ = list(pipeline)
    assert kept.result(timeout=0) == 1  # the withdrawn prompt took no id
    assert [d for d in first.decisions if isinstance(d, UserPrompt)] == [
        UserPrompt(obj_id=1, points=((70.0, 70.0),), labels=(1,))]
    assert [p for p in tracker.prompts if p[1] == list(USER_BOX)] == []
