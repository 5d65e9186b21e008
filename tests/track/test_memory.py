"""Memory selection and token assembly against sam2's own ``_prepare_memory_conditioned_features``,
token for token, and the eviction rules that bound what an object holds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.track.memory import MemoryFrame, MemoryPolicy, ObjectSlot, assemble_memory, select_memory
from engine.track.model import build_model

from .conftest import CONFIG

SMALL = 64  # feature grid 4x4: the selection logic does not depend on the grid size


class _Recorder(nn.Module):
    """Stands in for the memory attention and keeps what sam2 hands it."""

    def forward(self, curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=0):
        self.seen = (memory, memory_pos, num_obj_ptr_tokens)
        return curr[0]


@pytest.fixture(scope="module")
def model():
    return build_model(CONFIG, image_size=SMALL, seed=0)


def _policy(model, **overrides) -> MemoryPolicy:
    base = dict(model_num_maskmem=model.num_maskmem, recent_frames=model.num_maskmem - 1,
                ptr_window=model.max_obj_ptrs_in_encoder - 1, ptr_pos_scale=model.max_obj_ptrs_in_encoder - 1,
                max_cond_in_attn=model.max_cond_frames_in_attn, max_cond=None)
    base.update(overrides)
    return MemoryPolicy(**base)


# name, conditioning frames, tracked (non-conditioning) frames, current frame, model's max_cond_frames_in_attn
CASES = [
    ("steady stream", [0], range(1, 30), 30, -1),
    ("first tracked frame", [5], [], 6, -1),
    ("object added at frame 10", [10], [11, 12], 13, -1),
    ("re-prompted at 25 leaves a gap", [0, 25], [*range(1, 25), 26, 27], 28, -1),
    ("unselected prompt inside the pointer window", [10, 18, 20], [*range(11, 18), 19], 21, 2),
]


@pytest.mark.parametrize("cond, tracked, frame, max_in_attn", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_selection_matches_sam2_token_for_token(model, monkeypatch, cond, tracked, frame, max_in_attn):
    gen = torch.Generator().manual_seed(frame)
    h = w = SMALL // 16
    pos = torch.randn(1, model.mem_dim, h, w, generator=gen)
    outputs = {}
    for t in sorted([*cond, *tracked]):
        feats = torch.randn(1, model.mem_dim, h, w, generator=gen).to(torch.bfloat16)
        outputs[t] = {"maskmem_features": feats, "maskmem_pos_enc": [pos],
                      "obj_ptr": torch.randn(1, model.hidden_dim, generator=gen)}
    output_dict = {"cond_frame_outputs": {t: outputs[t] for t in cond},
                   "non_cond_frame_outputs": {t: outputs[t] for t in tracked}}
    monkeypatch.setattr(model, "max_cond_frames_in_attn", max_in_attn)
    recorder, attention = _Recorder(), model.memory_attention
    curr = torch.randn(h * w, 1, model.hidden_dim, generator=gen)
    model.memory_attention = recorder
    try:
        with torch.inference_mode():
            model._prepare_memory_conditioned_features(
                frame_idx=frame, is_init_cond_frame=False, current_vision_feats=[curr],
                current_vision_pos_embeds=[curr], feat_sizes=[(h, w)], output_dict=output_dict,
                num_frames=10_000)
    finally:
        model.memory_attention = attention
    want_memory, want_pos, want_ptr_tokens = recorder.seen

    # The tracker's slot holds the same frames, after forgetting what the frame cannot select.
    policy = _policy(model, max_cond_in_attn=max_in_attn)
    slot = ObjectSlot(obj_id=1, first_frame=min(cond))
    for t in cond:
        slot.cond[t] = MemoryFrame(frame=t, features=outputs[t]["maskmem_features"][0],
                                   obj_ptr=outputs[t]["obj_ptr"][0])
    for t in tracked:
        slot.recent_features[t] = outputs[t]["maskmem_features"][0]
        slot.recent_ptrs[t] = outputs[t]["obj_ptr"][0]
    slot.forget_before(feature_frame=frame - policy.recent_frames, ptr_frame=frame - policy.ptr_window)
    with torch.inference_mode():
        selection = select_memory(slot, frame, policy)
        memory, memory_pos, ptr_tokens = assemble_memory(
            model, [selection], pos.flatten(2).permute(2, 0, 1), policy)
    assert ptr_tokens == want_ptr_tokens
    assert torch.equal(memory, want_memory)  # same frames, same order, same bf16 -> fp32 widening
    # Positions go through the same ops; the pointer projection runs on a [1, P, C] instead of [P, C]
    # input, which may round differently in the last bit (1e-6 on values of order 1).
    torch.testing.assert_close(memory_pos, want_pos, rtol=0, atol=1e-6)


def _entry(t: int) -> MemoryFrame:
    return MemoryFrame(frame=t, features=torch.full((1,), float(t)), obj_ptr=torch.full((1,), float(t)))


# name, max conditioning frames, prompts in order, conditioning frames kept, frames demoted to recent memory
EVICTION = [
    ("under the cap", 4, [0, 10, 20], [0, 10, 20], []),
    ("first kept, oldest other evicted", 3, [0, 10, 20, 30], [0, 20, 30], []),
    ("evicted prompt still in the window stays as memory", 3, [0, 27, 28, 29], [0, 28, 29], [27]),
    ("cap 1 keeps only the first prompt", 1, [0, 5], [0], [5]),
    ("eviction off keeps everything", None, [0, 10, 20, 30, 40], [0, 10, 20, 30, 40], []),
]


@pytest.mark.parametrize("cap, prompts, kept, demoted", [e[1:] for e in EVICTION],
                         ids=[e[0] for e in EVICTION])
def test_conditioning_frames_are_capped(cap, prompts, kept, demoted):
    slot = ObjectSlot(obj_id=1, first_frame=prompts[0])
    for t in prompts:
        slot.add_cond(_entry(t), max_cond=cap, window=6)
    assert sorted(slot.cond) == kept
    assert sorted(slot.recent_features) == demoted == sorted(slot.recent_ptrs)


def test_recent_memory_keeps_only_the_selectable_window():
    slot = ObjectSlot(obj_id=1, first_frame=0)
    for t in range(1, 100):
        slot.recent_features[t] = torch.zeros(1)
        slot.recent_ptrs[t] = torch.zeros(1)
        slot.forget_before(feature_frame=t + 1 - 6, ptr_frame=t + 1 - 15)
    assert sorted(slot.recent_features) == list(range(94, 100))
    assert sorted(slot.recent_ptrs) == list(range(85, 100))
