"""Per-object memory: what each tracked object remembers, which of it a frame attends to, and the batched
memory tokens the memory attention reads.

Selection follows ``SAM2Base._prepare_memory_conditioned_features`` exactly (tests compare the two
token for token): the conditioning frames first (temporal index N-1), then the frames 1..N-1 before the
current one, oldest first (temporal index t_rel-1); object pointers from the conditioning frames and from
the P-1 frames before the current one, each with its signed frame distance. Everything is keyed by
frame index, so an object added at frame 10 sees only its own frames, as in the official predictor,
which runs every object on its own history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(slots=True)
class MemoryFrame:
    """One frame's memory of one object."""

    frame: int  # stream frame index the memory was encoded on
    features: torch.Tensor  # [C_mem, h, w] bfloat16 memory-encoder output (sam2 keeps bf16 too)
    obj_ptr: torch.Tensor  # [C] float32 object pointer from the mask decoder's output token


@dataclass(slots=True)
class FrameOutput:
    """An object's output on the current frame: returned to the caller, refined by a re-prompt."""

    frame: int
    logits: torch.Tensor  # [1, 1, h, w] float32 low-res mask logits (h = image_size / 4)
    score: torch.Tensor  # [1, 1] float32 object-score logit
    obj_ptr: torch.Tensor  # [1, C] float32


@dataclass(slots=True)
class ObjectSlot:
    """Everything the tracker holds for one object; bounded by (C, N, P), not by the stream's length."""

    obj_id: int
    first_frame: int  # frame of the object's first prompt (a prompt there is an initial one, memory-free)
    cond: dict[int, MemoryFrame] = field(default_factory=dict)  # prompted frames, at most C, by frame
    # frame -> [C_mem, h, w] bf16 memory of the last N-1 tracked frames (plus the current one, which a
    # prompt on the current frame does not see but the next frame does)
    recent_features: dict[int, torch.Tensor] = field(default_factory=dict)
    # frame -> [C] object pointer of the last P-1 tracked frames
    recent_ptrs: dict[int, torch.Tensor] = field(default_factory=dict)
    output: FrameOutput | None = None  # the latest frame's output
    # Set while ``output`` came from a prompt whose memory is not encoded yet (the next step encodes all
    # such outputs in one batch, as the official predictor does before it propagates): True -> it becomes
    # a conditioning frame, False -> it replaces the tracked memory of its frame.
    pending_cond: bool | None = None

    def add_cond(self, entry: MemoryFrame, *, max_cond: int | None, window: int) -> None:
        """Make ``entry`` a conditioning frame, evicting the oldest one but the first beyond ``max_cond``.

        A conditioning frame evicted while it is still among the last ``window`` frames stays as a recent
        frame, as sam2 treats conditioning frames it does not select.
        """
        self.recent_features.pop(entry.frame, None)
        self.recent_ptrs.pop(entry.frame, None)
        if max_cond is not None and self.cond and entry.frame not in self.cond and len(self.cond) >= max_cond:
            if max_cond == 1:  # only the first prompt is kept: the new one is ordinary memory
                self.recent_features[entry.frame] = entry.features
                self.recent_ptrs[entry.frame] = entry.obj_ptr
                return
            oldest_other = sorted(self.cond)[1]
            evicted = self.cond.pop(oldest_other)
            if evicted.frame >= entry.frame - window:
                self.recent_features[evicted.frame] = evicted.features
                self.recent_ptrs[evicted.frame] = evicted.obj_ptr
        self.cond[entry.frame] = entry

    def forget_before(self, *, feature_frame: int, ptr_frame: int) -> None:
        """Drop recent memory older than the frames the next step can select."""
        for frame in [t for t in self.recent_features if t < feature_frame]:
            del self.recent_features[frame]
        for frame in [t for t in self.recent_ptrs if t < ptr_frame]:
            del self.recent_ptrs[frame]

    def tensors(self) -> list[torch.Tensor]:
        held = [t for m in self.cond.values() for t in (m.features, m.obj_ptr)]
        held += [*self.recent_features.values(), *self.recent_ptrs.values()]
        if self.output is not None:
            held += [self.output.logits, self.output.score, self.output.obj_ptr]
        return held


@dataclass(frozen=True, slots=True)
class MemorySelection:
    """The memory one object attends to on one frame."""

    features: list[torch.Tensor]  # [C_mem, h, w] bf16 each: conditioning frames, then recent oldest first
    tpos: list[int]  # per feature frame: index into the model's maskmem_tpos_enc
    ptrs: list[torch.Tensor]  # [C] each: conditioning pointers, then recent nearest first
    ptr_pos: list[int]  # per pointer: current frame minus the pointer's frame

    @property
    def layout(self) -> tuple[int, int]:
        """Objects with equal layouts have equally long memories and share one attention call."""
        return len(self.features), len(self.ptrs)


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    """The model's memory constants and the tracker's caps, resolved once."""

    model_num_maskmem: int  # the model's N: conditioning frames take temporal index N-1
    recent_frames: int  # N-1 under the tracker's N
    ptr_window: int  # P-1 under the tracker's P (0 when the model uses no object pointers)
    ptr_pos_scale: int  # the model's P-1: pointer distances are divided by it before the sine encoding
    max_cond_in_attn: int  # the model's max_cond_frames_in_attn (-1: all)
    max_cond: int | None  # the tracker's C, None when eviction is off


def select_memory(slot: ObjectSlot, frame: int, policy: MemoryPolicy) -> MemorySelection:
    """The memory ``slot`` attends to on ``frame`` (same frames, order and positions as sam2)."""
    from sam2.modeling.sam2_utils import select_closest_cond_frames

    selected, unselected = select_closest_cond_frames(frame, slot.cond, policy.max_cond_in_attn)
    features = [m.features for m in selected.values()]
    tpos = [policy.model_num_maskmem - 1] * len(features)
    for t_rel in range(policy.recent_frames, 0, -1):
        prev = frame - t_rel
        feats = slot.recent_features.get(prev)
        if feats is None and prev in unselected:
            feats = unselected[prev].features
        if feats is not None:
            features.append(feats)
            tpos.append(t_rel - 1)
    ptrs: list[torch.Tensor] = []
    ptr_pos: list[int] = []
    if policy.ptr_window > 0:
        for t, m in selected.items():
            if t <= frame:  # sam2.1 configs attend only to pointers from the past
                ptrs.append(m.obj_ptr)
                ptr_pos.append(frame - t)
        for t_diff in range(1, policy.ptr_window + 1):
            t = frame - t_diff
            if t < 0:
                break
            ptr = slot.recent_ptrs.get(t)
            if ptr is None and t in unselected:
                ptr = unselected[t].obj_ptr
            if ptr is not None:
                ptrs.append(ptr)
                ptr_pos.append(t_diff)
    return MemorySelection(features=features, tpos=tpos, ptrs=ptrs, ptr_pos=ptr_pos)


def assemble_memory(model, selections: list[MemorySelection], maskmem_pos: torch.Tensor,  # [HW, 1, C_mem]
                    policy: MemoryPolicy) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Memory tokens for a group of objects with one layout, batched along dim 1.

    Returns ``memory`` [M, B, C_mem] float32 (bf16 features widened, as sam2's torch.cat does),
    ``memory_pos`` [M, B, C_mem] and the number of object-pointer tokens at the end of ``memory``.
    """
    num_frames, num_ptrs = selections[0].layout
    device = maskmem_pos.device
    b = len(selections)
    hw, c_mem = maskmem_pos.shape[0], maskmem_pos.shape[-1]
    # Built batch-first and handed over as [M, B, C] views: sam2's memory attention transposes to batch-first
    # again, and then every projection reads contiguous rows instead of copying a strided batch.
    feats = torch.stack([torch.stack(s.features) for s in selections])  # [B, F, C_mem, h, w] bf16
    spatial = feats.float().flatten(3).transpose(2, 3).reshape(b, num_frames * hw, c_mem)
    tpos_index = torch.tensor([s.tpos for s in selections], device=device)  # [B, F]
    tpos = model.maskmem_tpos_enc[tpos_index].reshape(b, num_frames, 1, c_mem)  # [B, F, 1, C_mem]
    spatial_pos = (maskmem_pos[:, 0][None, None] + tpos).reshape(b, num_frames * hw, c_mem)
    if num_ptrs == 0:
        return spatial.transpose(0, 1), spatial_pos.transpose(0, 1), 0
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    hidden = model.hidden_dim
    ptrs = torch.stack([torch.stack(s.ptrs) for s in selections])  # [B, P, C]
    if model.add_tpos_enc_to_obj_ptrs:
        pos = torch.tensor([s.ptr_pos for s in selections], device=device)  # [B, P] int64, as sam2 builds it
        tpos_dim = hidden if model.proj_tpos_enc_in_obj_ptrs else model.mem_dim
        ptr_pos = model.obj_ptr_tpos_proj(get_1d_sine_pe(pos / policy.ptr_pos_scale, dim=tpos_dim))
    else:
        ptr_pos = ptrs.new_zeros(b, num_ptrs, c_mem)
    split = hidden // c_mem  # a pointer is cut into C / C_mem tokens, as sam2 does
    if split > 1:
        ptrs = ptrs.reshape(b, num_ptrs * split, c_mem)
        ptr_pos = ptr_pos.repeat_interleave(split, dim=1)
    memory = torch.cat([spatial, ptrs], dim=1).transpose(0, 1)
    memory_pos = torch.cat([spatial_pos, ptr_pos], dim=1).transpose(0, 1)
    return memory, memory_pos, ptrs.shape[1]
