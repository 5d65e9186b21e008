"""Several streams' trackers stepped together share one image-encoder batch and give what each would
give alone."""

import pytest
import torch

from engine.track import StreamingTracker, TrackerConfig
from tests.track.conftest import CONFIG, SEED, SIZE


def test_streams_stepped_together_equal_streams_stepped_alone(clip_frames):
    # fp32: bf16 GEMMs block a batch of 2 frames otherwise than a single one, moving logits by ~1e-3,
    # which would hide the ~1e-2 of a mix-up of streams that this test is for
    exact = TrackerConfig(image_size=SIZE, precision="exact")
    first = StreamingTracker.from_config(CONFIG, seed=SEED, options=exact)
    together = [first, StreamingTracker(first.model, options=exact), StreamingTracker(first.model, options=exact)]
    alone = [StreamingTracker(first.model, options=exact) for _ in range(3)]
    # three streams: the clip, the clip mirrored, and the clip with no objects (nothing to encode)
    streams = [clip_frames[:6], clip_frames[:6, :, ::-1].copy(), clip_frames[:6]]
    for group in (together, alone):
        for k, tracker in enumerate(group):
            tracker.step(streams[k][0])
            if k < 2:
                tracker.add_object(1, box=[40, 60, 150, 220])
                tracker.add_object(2, box=[120, 30, 230, 140])
    for t in range(1, 6):
        batched = StreamingTracker.step_streams(together, [s[t] for s in streams])
        single = [tracker.step(s[t]) for tracker, s in zip(alone, streams)]
        for b, s in zip(batched, single):
            assert b.obj_ids == s.obj_ids
            # A batched convolution may sum in another order than a single one: float32 rounding,
            # ~1e-6 on logits of ~0.2, carried through memory; 1e-4 leaves room and catches any mix-up
            # of streams (different frames give logit differences of ~1e-2).
            torch.testing.assert_close(b.logits, s.logits, rtol=0, atol=1e-4)
            assert torch.equal(b.masks, s.masks) or (b.masks != s.masks).float().mean() < 1e-3


def test_trackers_with_different_models_are_refused(clip_frames):
    a = StreamingTracker.from_config(CONFIG, seed=SEED, image_size=SIZE)
    b = StreamingTracker.from_config(CONFIG, seed=SEED + 1, image_size=SIZE)
    with pytest.raises(ValueError, match="share one model"):
        StreamingTracker.step_streams([a, b], [clip_frames[0], clip_frames[0]])
