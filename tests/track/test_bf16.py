"""The bf16 CPU path (engine.track.bf16) against sam2's own modules: the same function in fp32, and in
bf16 no further from fp32 than ``torch.autocast`` around sam2's module gets."""

import pytest
import torch

from engine.track import StreamingTracker, TrackerConfig
from engine.track.bf16 import (Bf16ImageEncoder, bf16_memory_attention, bf16_weights, pairs_to_halves, rotate_halves,
                               rotate_pairs)
from tests.track.conftest import CONFIG, SEED

SMALL = 128  # 8x8 tokens per frame: the memory path's shapes at a few milliseconds a call


@pytest.fixture(scope="module")
def model():
    return StreamingTracker.from_config(CONFIG, seed=SEED, image_size=SMALL).model


@pytest.fixture(scope="module")
def attention_inputs(model, clip_frames):
    """What sam2's memory attention receives on frame 8 of a real clip, 3 objects (memory full: 7 frames
    and their pointers), from an fp32 tracker."""
    import torch.nn.functional as F

    frames = F.interpolate(torch.from_numpy(clip_frames[:9]).permute(0, 3, 1, 2).float(), size=(SMALL, SMALL),
                           mode="area").round().byte().permute(0, 2, 3, 1).contiguous()
    tracker = StreamingTracker(model, options=TrackerConfig(image_size=SMALL, precision="exact"))
    tracker.step(frames[0])
    for obj_id, box in enumerate(([10, 10, 70, 90], [50, 20, 120, 100], [0, 60, 64, 127])):
        tracker.add_object(obj_id, box=box)
    seen = {}
    handle = model.memory_attention.register_forward_hook(
        lambda module, args, kwargs, out: seen.update(kwargs=kwargs, out=out), with_kwargs=True)
    try:
        for frame in frames[1:]:
            tracker.step(frame)
    finally:
        handle.remove()
    kw = seen["kwargs"]
    assert kw["memory"].shape[0] > 7 * 64, "the memory should hold 7 frames of 8x8 tokens plus pointers"
    return kw["curr"][0], kw["curr_pos"][0], kw["memory"], kw["memory_pos"], kw["num_obj_ptr_tokens"], seen["out"]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_the_walk_in_fp32_is_sam2s_memory_attention(model, attention_inputs):
    curr, pos, memory, memory_pos, ptr_tokens, expected = attention_inputs
    with torch.inference_mode():
        out = bf16_memory_attention(model, curr, pos, memory, memory_pos, num_obj_ptr_tokens=ptr_tokens,
                                    dtype=torch.float32)
    # the same products in another order (contiguous rotation instead of complex multiply): float rounding
    assert (out - expected).abs().max() < 1e-4


def test_the_bf16_walk_is_as_close_to_fp32_as_autocast(model, attention_inputs):
    curr, pos, memory, memory_pos, ptr_tokens, expected = attention_inputs
    with torch.inference_mode():
        ours = bf16_memory_attention(model, curr, pos, memory, memory_pos, num_obj_ptr_tokens=ptr_tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model.memory_attention(curr=[curr], curr_pos=[pos], memory=memory, memory_pos=memory_pos,
                                              num_obj_ptr_tokens=ptr_tokens).float()
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    # bf16 keeps 8 mantissa bits (0.4% per rounding); both keep the residual stream and norms in fp32, so
    # both land near 0.3% relative (measured); 1.5x autocast's error leaves room for summation order only.
    assert _relative(ours, expected) < max(1.5 * _relative(autocast, expected), 1e-3)
    assert _relative(ours, expected) < 1e-2


@pytest.mark.parametrize("grids, heads", [(1, 1), (3, 1), (2, 2)], ids=["queries", "stacked-keys", "two-heads"])
def test_rotate_pairs_is_sam2s_rotary_encoding(grids, heads):
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    side, dim = 4, 16
    freqs = compute_axial_cis(dim=dim, end_x=side, end_y=side)
    cos = freqs.real.repeat_interleave(2, dim=-1)
    sin = torch.stack([-freqs.imag, freqs.imag], dim=-1).flatten(-2)
    q = torch.randn(2, heads, side * side, dim)
    k = torch.randn(2, heads, grids * side * side, dim)
    want_q, want_k = apply_rotary_enc(q, k, freqs_cis=freqs, repeat_freqs_k=grids > 1)
    assert torch.allclose(rotate_pairs(q, cos, sin), want_q, atol=1e-6)
    assert torch.allclose(rotate_pairs(k, cos, sin), want_k, atol=1e-6)


@pytest.mark.parametrize("grids, heads", [(1, 1), (3, 1), (2, 2)], ids=["queries", "stacked-keys", "two-heads"])
def test_rotate_halves_is_sam2s_rotary_encoding_on_reordered_features_and_keeps_attention(grids, heads):
    """Queries and keys whose features are reordered by ``pairs_to_halves`` and rotated by halves are
    sam2's rotated queries and keys reordered the same way, so their attention is sam2's."""
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    side, dim = 4, 16
    freqs = compute_axial_cis(dim=dim, end_x=side, end_y=side)
    q = torch.randn(2, heads, side * side, dim)
    k = torch.randn(2, heads, grids * side * side, dim)
    v = torch.randn(2, heads, grids * side * side, dim)
    want_q, want_k = apply_rotary_enc(q, k, freqs_cis=freqs, repeat_freqs_k=grids > 1)
    # one head's reordering, as each head's slice of the last dim sees it
    order = pairs_to_halves(dim * heads, heads)[:dim]
    assert sorted(order.tolist()) == list(range(dim)) and order[:dim // 2].tolist() == list(range(0, dim, 2))
    got_q = rotate_halves(q[..., order], freqs.real, freqs.imag)
    got_k = rotate_halves(k[..., order], freqs.real, freqs.imag)
    assert torch.allclose(got_q, want_q[..., order], atol=1e-6)
    assert torch.allclose(got_k, want_k[..., order], atol=1e-6)
    attention = torch.nn.functional.scaled_dot_product_attention
    assert torch.allclose(attention(got_q, got_k, v), attention(want_q, want_k, v), atol=1e-5)


def test_the_bf16_image_encoder_gives_sam2s_features_in_fp32(model):
    images = torch.randn(2, 3, SMALL, SMALL)
    with torch.inference_mode():
        out = model.forward_image(images)
        expected = (*out["backbone_fpn"][:2], out["backbone_fpn"][-1], out["vision_pos_enc"][-1])
        got = Bf16ImageEncoder(model)(images)
    for name, a, b in zip(("hr0", "hr1", "feat", "pos"), got, expected):
        assert a.dtype == torch.float32 and a.shape == b.shape, name
        # hiera's 12 blocks in bf16 move features by ~1.1% (relative L2, measured at 256 and 512 px);
        # the sine position encoding does not depend on the image and comes out exact up to rounding
        assert _relative(a, b) < 3e-2, name


def test_trackers_of_one_model_share_its_bf16_copies(model):
    fast = TrackerConfig(image_size=SMALL, precision="fast")
    first, second = StreamingTracker(model, options=fast), StreamingTracker(model, options=fast)
    assert first.image_encoder._weights is second.image_encoder._weights is bf16_weights(model)
    assert first.memory_dtype == torch.bfloat16
    exact = StreamingTracker(model, options=TrackerConfig(image_size=SMALL, precision="exact"))
    assert exact.image_encoder is None and exact.memory_dtype == torch.float32


def test_the_image_encoders_copy_is_made_only_for_a_bf16_encoder():
    """Memory attention alone (the encoder on ONNX Runtime) copies no image encoder; a bf16 encoder
    copies it once, when its tracker is built."""
    from engine.track.bf16 import _Bf16Weights

    model = StreamingTracker.from_config(CONFIG, seed=SEED + 1, image_size=SMALL).model
    weights = bf16_weights(model)
    assert isinstance(weights, _Bf16Weights) and weights.linear
    assert "image_encoder" not in vars(weights) and "high_res" not in vars(weights)
    encoder = Bf16ImageEncoder(model)
    assert vars(weights)["image_encoder"] is encoder._encoder
    assert next(weights.image_encoder.parameters()).dtype == torch.bfloat16
    assert next(model.image_encoder.parameters()).dtype == torch.float32  # the model's own stays fp32


def test_objects_in_chunks_give_what_one_call_gives(model, attention_inputs, monkeypatch):
    import engine.track.bf16 as bf16

    curr, pos, memory, memory_pos, ptr_tokens, _ = attention_inputs
    with torch.inference_mode():
        whole = bf16_memory_attention(model, curr, pos, memory, memory_pos, num_obj_ptr_tokens=ptr_tokens,
                                      dtype=torch.float32)
        monkeypatch.setattr(bf16, "KEY_TOKENS_PER_CALL", memory.shape[0] * 2)  # 3 objects: chunks of 2 and 1
        chunked = bf16_memory_attention(model, curr, pos, memory, memory_pos, num_obj_ptr_tokens=ptr_tokens,
                                        dtype=torch.float32)
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)  # per-object ops: float rounding only
