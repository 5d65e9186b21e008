"""The precision policy: chosen per device and per CPU's features; on the tracker, a bf16 image encoder
(and, on a CPU, bf16 memory attention) against the fp32 tracker."""

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.runtime.precision import PrecisionPolicy
from engine.track import StreamingTracker, TrackerConfig
from tests.conftest import MEDIA
from tests.track.conftest import CONFIG, SEED, read_frames


@pytest.fixture
def cpu_features(monkeypatch):
    """Set the bf16 matrix features the policy sees, as a CPU without or with them would report."""
    import engine.runtime.precision as precision

    def set_to(*features: str) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_features", lambda: tuple(features))
    return set_to


@pytest.mark.parametrize("device, precision, features, encoder, memory, detector, says", [
    ("cuda", "auto", (), torch.bfloat16, torch.float32, torch.float16, "CUDA"),  # the GPU's fast path
    ("cuda", "exact", (), torch.float32, torch.float32, torch.float32, "exact"),
    ("cpu", "auto", ("amx_bf16", "avx512_bf16"), torch.bfloat16, torch.bfloat16, torch.float32, "amx_bf16"),
    ("cpu", "auto", (), torch.float32, torch.float32, torch.float32, "no bf16 matrix instructions"),
    ("cpu", "fast", (), torch.bfloat16, torch.bfloat16, torch.float32, "emulated"),  # asked for: done, and said
    ("cpu", "exact", ("amx_bf16",), torch.float32, torch.float32, torch.float32, "exact"),
], ids=["cuda-auto", "cuda-exact", "bf16-cpu-auto", "plain-cpu-auto", "plain-cpu-fast", "bf16-cpu-exact"])
def test_the_policy_follows_the_device_and_the_cpus_features(cpu_features, device, precision, features, encoder,
                                                             memory, detector, says):
    cpu_features(*features)
    policy = PrecisionPolicy.for_device(device, precision)
    assert (policy.image_encoder, policy.memory_attention, policy.detector) == (encoder, memory, detector)
    # the memory encoder and the propagated frames' mask decoder go with memory attention
    assert policy.memory_encoder == policy.mask_decoder == memory
    assert says in policy.reason and precision in policy.reason


def test_an_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="choose from auto, exact, fast"):
        PrecisionPolicy.for_device("cpu", "half")
    with pytest.raises(ConfigError, match="precision='half'"):
        TrackerConfig(precision="half")


@pytest.mark.parametrize("capabilities, expected", [
    ({"amx_bf16": True, "avx512_bf16": True, "avx2": True}, ("amx_bf16", "avx512_bf16")),  # Sapphire Rapids
    ({"amx_bf16": False, "avx512_bf16": True}, ("avx512_bf16",)),  # Zen 4 / Cooper Lake
    ({"avx512_f": True, "avx2": True}, ()),  # Skylake-SP: AVX-512 without bf16
    ({"bf16": True, "neon": True}, ("bf16",)),  # ARMv8.6 (Graviton 3)
], ids=["amx", "avx512-bf16", "avx512-only", "arm-bf16"])
def test_bf16_matrix_features_are_read_from_torchs_cpu_capabilities(monkeypatch, capabilities, expected):
    import engine.runtime.precision as precision

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities, raising=False)
    precision.cpu_bf16_features.cache_clear()
    try:
        assert precision.cpu_bf16_features() == expected
    finally:
        precision.cpu_bf16_features.cache_clear()


def test_without_torchs_capabilities_the_features_come_from_proc_cpuinfo(monkeypatch):
    import engine.runtime.precision as precision

    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"fma", "avx512f", "avx512_bf16"})
    precision.cpu_bf16_features.cache_clear()
    try:
        assert precision.cpu_bf16_features() == ("avx512_bf16",)
    finally:
        precision.cpu_bf16_features.cache_clear()


def test_a_bf16_encoder_hands_fp32_features_to_the_memory_path(clip_frames):
    from engine.track.bf16 import bf16_weights

    tracker = StreamingTracker.from_config(CONFIG, seed=SEED, image_size=256, options=TrackerConfig(
        image_size=256, precision="exact", encoder_dtype="bfloat16"))
    seen = []
    bf16_weights(tracker.model).image_encoder.trunk.register_forward_hook(  # hiera's blocks: the compute
        lambda module, args, out: seen.append(out[-1].dtype))
    reference = StreamingTracker(tracker.model, options=TrackerConfig(image_size=256, precision="exact"))
    for trk in (tracker, reference):
        trk.step(clip_frames[0])
        trk.add_object(1, box=[40, 60, 150, 220])
    for frame in clip_frames[1:6]:
        half, full = tracker.step(frame), reference.step(frame)
        assert tracker._frame.features.vision_feats.dtype == torch.float32
        # bf16 keeps 8 bits of mantissa: features move by ~1% and random-weight logits (~0.2) by
        # ~1e-3; 2e-2 bounds that with room while catching a path that is not fed the encoder at all.
        assert (half.logits - full.logits).abs().max() < 2e-2
    assert seen and set(seen) == {torch.bfloat16}


def test_the_fast_cpu_path_keeps_fp32_masks_over_a_real_clip(clip_frames):
    """The accuracy bar of the fast CPU path at CI size: bf16 image encoder and memory attention against
    the fp32 tracker, 10 objects over the clip's first 10 frames at 128 px (the memory is full from frame
    7 on). The full-size figure (100 frames, 512 px) is benchmarks.precision's, in RESULTS.md."""
    import torch.nn.functional as F

    size = 128
    frames = F.interpolate(torch.from_numpy(clip_frames[:10]).permute(0, 3, 1, 2).float(), size=(size, size),
                           mode="area").round().byte().permute(0, 2, 3, 1).contiguous()
    exact = StreamingTracker.from_config(CONFIG, seed=SEED, options=TrackerConfig(image_size=size,
                                                                                  precision="exact"))
    fast = StreamingTracker(exact.model, options=TrackerConfig(image_size=size, precision="fast"))
    boxes = [[x, y, x + 64, y + 64] for y in (0, 21, 42, 64) for x in (0, 21, 42, 64)][:10]
    for trk in (exact, fast):
        trk.step(frames[0])
        for obj_id, box in enumerate(boxes):
            trk.add_object(obj_id, box=box)
    ious, drift = [], 0.0
    for frame in frames[1:]:
        a, b = exact.step(frame), fast.step(frame)
        assert a.masks.any(), "the fp32 masks must not be empty, or IoU would say nothing"
        inter = (a.masks & b.masks).flatten(1).sum(1).float()
        union = (a.masks | b.masks).flatten(1).sum(1).float()
        ious.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)))
        drift = max(drift, float((a.logits - b.logits).abs().max()))
    per_object = torch.stack(ious).mean(0)
    assert float(per_object.mean()) >= 0.98 and float(per_object.min()) >= 0.95, per_object.tolist()
    # Random weights give logits of about +-0.2, so masks barely move whatever the error: the logits must
    # stay close too. Measured drift here is ~3e-3 (1.5% of the logits' range); 1e-2 leaves room.
    assert drift < 1e-2, drift


@pytest.mark.gpu
def test_300_frames_with_the_gpu_policy_match_fp32_masks_every_frame(bedroom_clip):
    """The policy's masks against an all-fp32 run over 300 frames, IoU >= 0.98 on every frame
    (fp16 error compounding through the memory loop would show up as a decay here)."""
    frames = read_frames(bedroom_clip, 200, 1024)
    frames = np.concatenate([frames, frames[::-1][:100]])  # 300 frames: the clip, then back again
    policy = StreamingTracker.from_config(CONFIG, seed=SEED, image_size=1024, device="cuda")
    full = StreamingTracker(policy.model, options=TrackerConfig(image_size=1024, precision="exact"))
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
