"""The padded tracker step (engine.track.padding): object buckets, memory layouts, and that padding with
masked keys computes what the grouped step computes.

Tolerances: the padded step differs from the grouped one only in float summation order inside the
attention (more keys, in other blocks; masked ones add exact zeros). Measured on the CPU: 3e-7 on the
low-res logits over 14 frames with staggered objects and a re-prompt. PADDED_TOL allows 30x that and
is still 5x below the parity tests' LOGIT_TOL against the official predictor.
"""

from __future__ import annotations

import logging

import pytest
import torch

from engine.errors import ConfigError
from engine.track import StreamingTracker, TrackerConfig
from engine.track.memory import MemorySelection
from engine.track.padding import (OBJECT_BUCKETS, PaddedLayout, masked_memory_attention, object_bucket,
                                  pad_memory, padded_layout)

from .conftest import CONFIG, SIZE

PADDED_TOL = 1e-5
HW, SPLIT, C_MEM, HIDDEN = (SIZE // 16) ** 2, 4, 64, 256  # hiera-t at 256: 16x16 memory grid
STEADY = {"min_frames": 7, "min_ptrs": 16}  # sam2.1: 1 + 6 recent frames, 1 + 15 recent pointers


@pytest.mark.parametrize(("objects", "bucket"), [
    pytest.param(1, 1, id="one"),
    pytest.param(2, 2, id="two"),
    pytest.param(3, 4, id="three-pads-to-four"),
    pytest.param(8, 8, id="exact-bucket"),
    pytest.param(9, 16, id="just-past-a-bucket"),
    pytest.param(30, 32, id="thirty"),
    pytest.param(32, 32, id="largest-bucket"),
    pytest.param(33, 64, id="past-the-buckets-multiples-of-32"),
    pytest.param(100, 128, id="hundred"),
])
def test_objects_pad_to_the_next_bucket(objects, bucket):
    assert object_bucket(objects) == bucket
    assert OBJECT_BUCKETS == (1, 2, 4, 8, 16, 32)


def test_no_objects_has_no_bucket():
    with pytest.raises(ValueError, match="at least one object"):
        object_bucket(0)


def _selection(frames: int, ptrs: int, *, seed: int = 0) -> MemorySelection:
    g = torch.Generator().manual_seed(seed)
    return MemorySelection(
        features=[torch.randn((C_MEM, SIZE // 16, SIZE // 16), generator=g).to(torch.bfloat16)
                  for _ in range(frames)],
        tpos=[6] + list(range(frames - 2, -1, -1))[:frames - 1],
        ptrs=[torch.randn((HIDDEN,), generator=g) for _ in range(ptrs)],
        ptr_pos=list(range(1, ptrs + 1)))


@pytest.mark.parametrize(("memories", "hw", "expected"), [
    # (frames, pointers) per object -> PaddedLayout(objects, frames, ptrs, extra_tokens)
    pytest.param([(1, 1)], HW, PaddedLayout(1, 7, 16, 0), id="a-young-object-pads-to-the-steady-length"),
    pytest.param([(7, 16)] * 3 + [(1, 1)], HW, PaddedLayout(4, 7, 16, 0),
                 id="a-new-object-keeps-the-layout-of-its-bucket"),
    pytest.param([(7, 16)] * 2, HW, PaddedLayout(2, 7, 16, 0), id="steady-objects-need-no-padding"),
    pytest.param([(8, 17), (7, 16)], HW, PaddedLayout(2, 8, 20, 0),
                 id="a-second-prompt-lengthens-it-pointers-round-to-4"),
    pytest.param([(7, 16)], 18 * 18, PaddedLayout(1, 7, 16, 4),
                 id="keys-align-to-16-with-masked-tokens"),  # 7 * 324 + 64 = 2332 = 16 * 145.75
])
def test_layout(memories, hw, expected):
    selections = [_selection(f, p, seed=i) for i, (f, p) in enumerate(memories)]
    layout = padded_layout(selections, hw=hw, split=SPLIT, **STEADY)
    assert layout == expected
    assert layout.tokens(hw, SPLIT) % 16 == 0


def test_an_object_without_memory_is_refused():
    with pytest.raises(ValueError, match="no memory frame"):
        padded_layout([_selection(0, 0)], hw=HW, split=SPLIT, **STEADY)


def test_pad_memory_keeps_each_objects_entries_in_order_and_masks_the_rest():
    selections = [_selection(7, 16, seed=1), _selection(2, 3, seed=2), _selection(4, 5, seed=3)]
    layout = padded_layout(selections, hw=HW, split=SPLIT, **STEADY)
    memory = pad_memory(selections, layout, zero_feature=torch.zeros((C_MEM, 16, 16), dtype=torch.bfloat16),
                        zero_ptr=torch.zeros(HIDDEN))
    tpos, frame_valid, ptr_pos, ptr_valid = memory.split_meta()
    assert memory.features.shape == (4, 7, C_MEM, 16, 16) and memory.ptrs.shape == (4, 16, HIDDEN)
    for row, sel in enumerate(selections):
        f, p = len(sel.features), len(sel.ptrs)
        assert torch.equal(memory.features[row, :f], torch.stack(sel.features))
        assert not memory.features[row, f:].any() and not memory.ptrs[row, p:].any()
        assert torch.equal(memory.ptrs[row, :p], torch.stack(sel.ptrs))
        assert tpos[row, :f].tolist() == sel.tpos and ptr_pos[row, :p].tolist() == sel.ptr_pos
        assert frame_valid[row].tolist() == [True] * f + [False] * (7 - f)
        assert ptr_valid[row].tolist() == [True] * p + [False] * (16 - p)
    # the padding row attends to its (zero) memory: a row with every key masked would be NaN
    assert frame_valid[3].all() and ptr_valid[3].all() and not memory.features[3].any()


@pytest.fixture(scope="module")
def model(state_dict):
    from engine.track.model import build_model

    m = build_model(CONFIG, image_size=SIZE)
    m.load_state_dict(state_dict)
    return m


@torch.inference_mode()
def test_masked_attention_ignores_padded_keys_and_equals_sam2s_module(model):
    """Unpadded and all-valid, it is sam2's MemoryAttention; with garbage in masked frames, pointers and
    alignment tokens, the real rows do not move."""
    g = torch.Generator().manual_seed(0)
    rows, frames, ptr_tokens = 2, 3, 8
    curr = torch.randn((rows, HW, HIDDEN), generator=g)
    curr_pos = torch.randn((rows, HW, HIDDEN), generator=g)
    memory = torch.randn((rows, frames * HW + ptr_tokens, C_MEM), generator=g)
    memory_pos = torch.randn((rows, frames * HW + ptr_tokens, C_MEM), generator=g)
    reference = model.memory_attention(curr=[curr.transpose(0, 1)], curr_pos=[curr_pos.transpose(0, 1)],
                                       memory=memory.transpose(0, 1), memory_pos=memory_pos.transpose(0, 1),
                                       num_obj_ptr_tokens=ptr_tokens).transpose(0, 1)
    all_valid = torch.ones((rows, 1, 1, memory.shape[1]), dtype=torch.bool)
    ours = masked_memory_attention(model.memory_attention, curr, curr_pos, memory, memory_pos,
                                   num_ptr_tokens=ptr_tokens, key_mask=all_valid)
    assert float((ours - reference).abs().max()) <= PADDED_TOL
    # two masked frames after the real ones, four masked pointer tokens and four alignment tokens
    spatial, pointers = memory[:, :frames * HW], memory[:, frames * HW:]
    spatial_pos, pointer_pos = memory_pos[:, :frames * HW], memory_pos[:, frames * HW:]

    def noise(n):
        return torch.randn((rows, n, C_MEM), generator=g) * 5

    padded = torch.cat([spatial, noise(2 * HW), pointers, noise(8)], dim=1)
    padded_pos = torch.cat([spatial_pos, noise(2 * HW), pointer_pos, noise(8)], dim=1)
    mask = torch.cat([torch.ones(frames * HW, dtype=torch.bool), torch.zeros(2 * HW, dtype=torch.bool),
                      torch.ones(ptr_tokens, dtype=torch.bool), torch.zeros(8, dtype=torch.bool)])
    ours = masked_memory_attention(model.memory_attention, curr, curr_pos, padded, padded_pos,
                                   num_ptr_tokens=ptr_tokens + 8, key_mask=mask.expand(rows, 1, 1, -1))
    assert float((ours - reference).abs().max()) <= PADDED_TOL


# objects prompted on different frames (their memories differ in length; 3 objects pad to 4 rows) and
# a re-prompt on frame 5, which gives object 1 a second conditioning frame
EVENTS = {0: [(1, [20, 60, 120, 250])], 2: [(2, [130, 40, 230, 200])], 4: [(3, [60, 120, 200, 250])],
          5: [(1, [30, 80, 140, 240])]}
FRAMES = 8


def _run(model, frames, step: str) -> tuple[StreamingTracker, dict[int, dict[int, torch.Tensor]]]:
    # fp32 on both sides: the padded step's memory attention is fp32 always, the grouped one's per policy
    tracker = StreamingTracker(model, options=TrackerConfig(image_size=SIZE, step=step, precision="exact"))
    logits = {}
    for index, frame in enumerate(frames):
        tracks = tracker.step(frame)
        logits[index] = {obj: tracks.logits[k] for k, obj in enumerate(tracks.obj_ids)}
        for obj_id, box in EVENTS.get(index, []):
            tracker.add_object(obj_id, box=box)
    return tracker, logits


@pytest.fixture(scope="module")
def grouped_run(model, clip_frames):
    return _run(model, clip_frames[:FRAMES], "grouped")[1]


def test_padded_step_tracks_like_the_grouped_step(model, clip_frames, grouped_run):
    tracker, padded = _run(model, clip_frames[:FRAMES], "padded")
    assert tracker._step is not None and not tracker._step.graphed
    worst = 0.0
    for index, per_obj in grouped_run.items():
        assert sorted(padded[index]) == sorted(per_obj)
        for obj_id, logits in per_obj.items():
            worst = max(worst, float((padded[index][obj_id] - logits).abs().max()))
    assert len(grouped_run[FRAMES - 1]) == 3
    assert worst <= PADDED_TOL


def test_graphs_asked_for_on_the_cpu_run_the_padded_step_and_say_so_once(model, clip_frames, grouped_run,
                                                                       caplog):
    with caplog.at_level(logging.WARNING, logger="engine.track.step_graphs"):
        tracker, graphed = _run(model, clip_frames[:5], "graphed")
    assert not tracker._step.graphed and tracker._step.captures == 0
    warnings = [r for r in caplog.records if "CUDA graphs need a CUDA device" in r.getMessage()]
    assert len(warnings) == 1
    for index in graphed:
        for obj_id, logits in graphed[index].items():
            assert float((logits - grouped_run[index][obj_id]).abs().max()) <= PADDED_TOL


def test_the_default_step_on_the_cpu_is_grouped(model):
    assert StreamingTracker(model, options=TrackerConfig(image_size=SIZE))._step is None


def test_an_unknown_step_mode_names_the_choices():
    with pytest.raises(ConfigError, match="step='fast'.*grouped, padded, graphed"):
        TrackerConfig(step="fast")
