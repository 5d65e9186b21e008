"""The tracker step replayed from CUDA graphs (engine.track.step_graphs) against the grouped eager step.

GPU only. Tolerance: both sides run the same fp32 kernels but for the memory attention, where the graphed
side attends with a key mask (another attention kernel, other summation blocks) over padded keys, and
the same bf16 image encoder, replayed on one side. GRAPH_TOL is the CUDA parity tolerance of
tests/track/test_parity.py (20x the CPU one, for TF32 convolutions); not yet measured on a GPU.
"""

from __future__ import annotations

import pytest

from engine.track import StreamingTracker, TrackerConfig

from .conftest import CONFIG, SIZE

GRAPH_TOL = 1e-3
BOXES = {1: [20, 60, 120, 250], 2: [130, 40, 230, 200], 3: [60, 120, 200, 250], 4: [100, 100, 180, 180]}


def _run(model, frames, step: str, events):
    tracker = StreamingTracker(model, options=TrackerConfig(image_size=SIZE, step=step))
    logits, captures = {}, {}
    for index, frame in enumerate(frames):
        tracks = tracker.step(frame)
        logits[index] = {obj: tracks.logits[k].cpu() for k, obj in enumerate(tracks.obj_ids)}
        for event in events.get(index, []):
            if event[0] == "add":
                tracker.add_object(event[1], box=BOXES[event[1]])
            else:
                tracker.remove_object(event[1])
        captures[index] = tracker._step.captures if tracker._step is not None else 0
    return tracker, logits, captures


@pytest.mark.gpu
def test_graph_replays_track_like_the_grouped_step_and_a_new_object_in_a_bucket_reuses_its_graph(
        state_dict, clip_frames):
    from engine.track.model import build_model

    model = build_model(CONFIG, image_size=SIZE, device="cuda")
    model.load_state_dict(state_dict)
    # 2 objects (bucket 2); a 3rd on frame 6 (bucket 4: one capture); a 4th on frame 9 (bucket 4 again:
    # no capture); object 1 removed after frame 14 (3 objects, still bucket 4)
    events = {0: [("add", 1), ("add", 2)], 6: [("add", 3)], 9: [("add", 4)], 14: [("remove", 1)]}
    frames = clip_frames[:20]
    graphed, ours, captures = _run(model, frames, "graphed", events)
    _, reference, _ = _run(model, frames, "grouped", events)
    assert graphed._step.graphed, "capture failed: the step fell back to eager (see the log)"
    assert graphed._step.replays >= len(frames) - 2
    # captures[i] is read after frame i's step and events: an object added on frame i is stepped on i+1
    assert captures[1] == 1 and captures[7] == 2, "bucket 2, then bucket 4"
    assert captures[10] == captures[9] == 2, "a new object in bucket 4 captured again"
    assert captures[15] == captures[14] == 2, "a removed object changed the layout"
    worst = 0.0
    for index, per_obj in reference.items():
        assert sorted(ours[index]) == sorted(per_obj)
        for obj_id, logits in per_obj.items():
            worst = max(worst, float((ours[index][obj_id] - logits).abs().max()))
    assert worst <= GRAPH_TOL


@pytest.mark.gpu
def test_graphed_is_the_default_on_cuda_and_the_image_encoder_is_graphed_too(state_dict, clip_frames):
    tracker = StreamingTracker.from_config(CONFIG, image_size=SIZE, device="cuda")
    tracker.model.load_state_dict(state_dict)
    tracker.step(clip_frames[0])
    tracker.add_object(1, box=BOXES[1])
    tracks = tracker.step(clip_frames[1])
    assert tracker._step.graphed and tracker._step.captures == 1
    assert tracker.image_encoder._call.enabled and len(tracker.image_encoder._call._graphs) == 1
    assert tracks.masks.is_cuda and tracks.masks.shape == (1, *clip_frames.shape[1:3])
