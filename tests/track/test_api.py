"""The tracker's contract as the pipeline uses it: step every frame, prompt and retire objects between
steps, masks at the frame's resolution, clear errors for bad prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.track import StreamingTracker, TrackerConfig

from .conftest import CONFIG

SMALL = 128  # feature grid 8x8; frames keep their own 180x320 size to check resizing both ways
FRAME_H, FRAME_W = 180, 320


@pytest.fixture(scope="module")
def frames(bedroom_clip):
    import av

    out = []
    with av.open(str(bedroom_clip)) as container:
        for picture in container.decode(video=0):
            out.append(picture.to_ndarray(format="rgb24", width=FRAME_W, height=FRAME_H))
            if len(out) == 6:
                break
    return out


@pytest.fixture(scope="module")
def model():
    from engine.track.model import build_model

    return build_model(CONFIG, image_size=SMALL, seed=0)


@pytest.fixture()
def tracker(model):
    return StreamingTracker(model)  # the network is stateless; each test gets fresh tracker state


def test_frames_without_objects_give_empty_tracks(tracker, frames):
    tracks = tracker.step(frames[0])
    assert tracks.obj_ids == [] and tracks.masks.shape == (0, FRAME_H, FRAME_W)
    assert tracks.logits.shape == (0, SMALL // 4, SMALL // 4) and tracks.scores.shape == (0,)


def test_objects_come_and_go_between_frames(tracker, frames):
    tracker.step(frames[0])
    first = tracker.add_object(7, box=[10, 20, 150, 170])
    assert first.obj_ids == [7] and first.masks.shape == (1, FRAME_H, FRAME_W)
    assert first.masks.dtype == torch.bool
    tracks = tracker.step(frames[1])
    assert tracks.obj_ids == [7]
    tracker.add_object(3, points=[[200, 90], [40, 40]], labels=[1, 0])
    tracks = tracker.step(frames[2])
    assert tracks.obj_ids == [7, 3] == tracker.object_ids  # slot order: order of arrival
    assert tracks.logits.shape == (2, SMALL // 4, SMALL // 4) and tracks.logits.dtype == torch.float32
    assert tracks.scores.shape == (2,)
    assert tracker.remove_object(7) is True and tracker.remove_object(7) is False
    assert tracker.step(frames[3]).obj_ids == [3]


def test_reprompt_keeps_one_slot_and_conditioning_is_capped(model, frames):
    tracker = StreamingTracker(model, options=TrackerConfig(image_size=SMALL, max_cond_frames=2))
    tracker.step(frames[0])
    tracker.add_object(1, box=[10, 20, 150, 170])
    for frame in frames[1:5]:
        tracker.step(frame)
        tracker.add_object(1, box=[12, 22, 150, 170])  # a detector re-prompting every frame
    tracker.step(frames[5])
    slot = tracker._slots[1]
    assert tracker.object_ids == [1]
    assert sorted(slot.cond) == [0, 4]  # the first prompt and the latest one


def test_mask_prompt_is_taken_as_the_output(tracker, frames):
    tracker.step(frames[0])
    mask = np.zeros((FRAME_H, FRAME_W), dtype=bool)
    mask[40:140, 60:200] = True
    out = tracker.add_object(5, mask=mask)
    got = out.masks[0].numpy()
    iou = (got & mask).sum() / (got | mask).sum()
    assert iou > 0.9  # the mask goes down to the model's 32x32 logits and back up to 180x320
    assert tracker.step(frames[1]).obj_ids == [5]


def test_torch_frames_are_accepted_and_reset_starts_over(tracker, frames):
    tracker.step(torch.from_numpy(frames[0]))
    tracker.add_object(1, box=[10, 20, 150, 170])
    tracker.step(torch.from_numpy(frames[1]))
    assert tracker.frame_index == 1
    tracker.reset()
    assert tracker.object_ids == [] and tracker.frame_index == -1
    assert tracker.step(frames[2]).obj_ids == []


def test_prompt_before_any_frame_is_an_error(tracker):
    with pytest.raises(ConfigError, match="before any step"):
        tracker.add_object(1, box=[0, 0, 10, 10])


# name, prompt arguments, words of the message
BAD_PROMPTS = [
    ("nothing", {}, "give a box"),
    ("box of 3 numbers", {"box": [1, 2, 3]}, "x1, y1, x2, y2"),
    ("box upside down", {"box": [50, 50, 10, 10]}, "x1 <= x2"),
    ("points without labels", {"points": [[5, 5]]}, "one label each"),
    ("labels count differs", {"points": [[5, 5], [6, 6]], "labels": [1]}, "one label each"),
    ("label 2", {"points": [[5, 5]], "labels": [2]}, "0 or 1"),
    ("mask with a box", {"mask": np.ones((FRAME_H, FRAME_W), bool), "box": [0, 0, 5, 5]}, "not both"),
    ("mask of another size", {"mask": np.ones((10, 10), bool)}, f"[{FRAME_H}, {FRAME_W}]"),
]


@pytest.mark.parametrize("prompt, words", [b[1:] for b in BAD_PROMPTS], ids=[b[0] for b in BAD_PROMPTS])
def test_bad_prompts_raise_config_error(tracker, frames, prompt, words):
    tracker.step(frames[0])
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        tracker.add_object(1, **prompt)
    assert tracker.object_ids == []


@pytest.mark.parametrize("options, words", [
    (dict(image_size=100), "multiple of 32"),
    (dict(image_size=256, max_cond_frames=0), "max_cond_frames=0"),
    (dict(image_size=256, num_maskmem=0), "num_maskmem=0"),
], ids=["image size", "no conditioning frames", "no memory"])
def test_bad_options_raise_config_error(options, words):
    with pytest.raises(ConfigError, match=words):
        TrackerConfig(**options)


def test_caps_beyond_the_model_are_refused(model):
    with pytest.raises(ConfigError, match="at most 7"):
        StreamingTracker(model, options=TrackerConfig(image_size=SMALL, num_maskmem=9))


def test_tracks_carry_each_objects_appearance_embedding_and_object_pointer(tracker, frames):
    """What the re-identification gallery reads: a unit [N, 256] appearance embedding (the image
    features pooled under the object's mask, engine.track.appearance) and SAM 2's [N, 256] object
    pointer, row for row with the objects, from a prompt and from a step alike."""
    from engine.track.appearance import pool_appearance

    tracker.step(frames[0])
    prompted = tracker.add_object(1, box=[10, 20, 150, 170])
    tracker.add_object(2, points=[[250, 60]], labels=[1])
    stepped = tracker.step(frames[1])
    for tracks in (prompted, stepped):
        n = len(tracks)
        assert tracks.embeddings.shape == (n, 256) and tracks.pointers.shape == (n, 256)
        assert bool(torch.isfinite(tracks.pointers).all()) and bool((tracks.pointers.abs().sum(1) > 0).all())
        norms = tracks.embeddings.norm(dim=1)
        assert all(v == pytest.approx(1.0, abs=1e-5) or v == 0.0 for v in norms.tolist())
    feats = tracker._frame.features  # the same pooling, by hand, for the stepped frame
    top = feats.vision_feats[:, 0].T.reshape(256, *feats.size)
    expected, _ = pool_appearance(top, stepped.logits)
    torch.testing.assert_close(stepped.embeddings, expected)
    kept = stepped.updated([tracker.add_object(1, box=[10, 20, 150, 170])])  # a prompt's row replaces the step's
    assert kept.embeddings.shape == (2, 256) and kept.pointers.shape == (2, 256)
