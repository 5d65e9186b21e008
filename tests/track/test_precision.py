"""The precision policy on the tracker: a half-precision image encoder, an fp32 memory path."""

import numpy as np
import pytest
import torch

from engine.runtime.precision import PrecisionPolicy
from engine.track import StreamingTracker, TrackerConfig
from tests.conftest import MEDIA
from tests.track.conftest import CONFIG, SEED, read_frames


def test_policy_halves_the_feed_forward_networks_on_a_gpu_only():
    assert PrecisionPolicy.for_device("cuda") == PrecisionPolicy(detector=torch.float16, image_encoder=torch.bfloat16)
    assert PrecisionPolicy.for_device("cpu") == PrecisionPolicy.full()
    assert PrecisionPolicy.full() == PrecisionPolicy(detector=torch.float32, image_encoder=torch.float32)


def test_a_bf16_encoder_hands_fp32_features_to_the_memory_path(clip_frames):
    tracker = StreamingTracker.from_config(CONFIG, seed=SEED, image_size=256,
                                           options=TrackerConfig(image_size=256, encoder_dtype="bfloat16"))
    seen = []
    tracker.model.image_encoder.trunk.register_forward_hook(  # hiera's blocks: where the compute is
        lambda module, args, out: seen.append(out[-1].dtype))
    reference = StreamingTracker(tracker.model, options=TrackerConfig(image_size=256, encoder_dtype="float32"))
    for trk in (tracker, reference):
        trk.step(clip_frames[0])
        trk.add_object(1, box=[40, 60, 150, 220])
    for frame in clip_frames[1:6]:
        half, full = tracker.step(frame), reference.step(frame)
        assert tracker._frame.features.vision_feats.dtype == torch.float32
        # bf16 keeps 8 bits of mantissa: features move by ~0.4% and random-weight logits (~0.2) by
        # ~1e-3; 2e-2 bounds that with room while catching a path that is not fed the encoder at all.
        assert (half.logits - full.logits).abs().max() < 2e-2
    assert seen[0] == torch.bfloat16 and seen[-1] == torch.float32


@pytest.mark.gpu
def test_300_frames_with_the_gpu_policy_match_fp32_masks_every_frame(bedroom_clip):
    """The policy's masks against an all-fp32 run over 300 frames, IoU >= 0.98 on every frame
    (fp16 error compounding through the memory loop would show up as a decay here)."""
    frames = read_frames(bedroom_clip, 200, 1024)
    frames = np.concatenate([frames, frames[::-1][:100]])  # 300 frames: the clip, then back again
    policy = StreamingTracker.from_config(CONFIG, seed=SEED, image_size=1024, device="cuda")
    full = StreamingTracker(policy.model, options=TrackerConfig(image_size=1024, encoder_dtype="float32"))
    assert policy.encoder_dtype == torch.bfloat16
    for trk in (policy, full):
        trk.step(frames[0])
        for obj_id, box in ((1, [200, 250, 600, 900]), (2, [500, 100, 900, 500]), (3, [50, 50, 300, 300])):
            trk.add_object(obj_id, box=box)
    for t, frame in enumerate(frames[1:], 1):
        a, b = policy.step(frame), full.step(frame)
        inter = (a.masks & b.masks).flatten(1).sum(1).float()
        union = (a.masks | b.masks).flatten(1).sum(1).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        assert bool((iou >= 0.98).all()), f"frame {t}: IoU {iou.tolist()}"
    assert MEDIA.exists()
