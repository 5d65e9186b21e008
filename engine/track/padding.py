"""The tracker's per-frame step over a fixed number of object slots: the shapes a CUDA graph can replay.

A captured graph replays fixed shapes, but the tracker's batch changes whenever an object comes or goes,
and each object's memory has its own length (an object added at frame 10 has fewer memory frames and
pointers than one added at frame 0; a re-prompted one has more conditioning frames). Both are padded:

- objects, to the next of ``OBJECT_BUCKETS`` (1, 2, 4, 8, 16, 32, then multiples of 32), so that a new
  object usually lands in a bucket that already has a graph. Padding rows hold zero memory and their
  outputs are dropped. Every op of the step works on one row at a time (attention, convolutions, layer
  norms, the mask decoder's heads), so padding rows cannot change the real ones.
- memory frames, to the longest memory among the objects but at least the steady-state length (one
  conditioning frame plus the N-1 recent frames). Objects younger than N frames therefore never change
  the shape; a second conditioning frame (a re-prompt) does, once per length.
- object pointers, likewise (at least one conditioning pointer plus the P-1 recent ones), rounded up to a
  multiple of ``_PTR_ROUND``; then a few always-masked tokens make the key count a multiple of
  ``_TOKEN_ALIGN``.
Padded keys are masked out of the memory attention's cross-attention (``attn_mask`` of
``scaled_dot_product_attention``: a masked key gets exp(-inf) = 0 weight), so the padded step computes
the function of the grouped step in engine/track/tracker.py; only the order of float sums differs
(tests/track/test_padding.py bounds it).

Padding costs FLOPs that the grouped step does not spend: keys of young objects padded to the steady
length, and rows up to the bucket. In a steady stream (every object past its first N frames, one prompt
each) memory padding is zero and only the rows up to the bucket are extra.

sam2's memory attention has no key mask, so ``masked_memory_attention`` walks its layers with the same
submodules and weights (``MemoryAttention.forward``, ``MemoryAttentionLayer.forward``,
``RoPEAttention.forward``) and hands the mask to the one call that needs it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from engine.track.memory import MemorySelection

OBJECT_BUCKETS = (1, 2, 4, 8, 16, 32)
_BUCKET_STEP = 32  # past the largest bucket, rows come in multiples of this
_PTR_ROUND = 4  # pointer tokens are cheap (4 tokens each against h*w per frame): round to share graphs
# The memory-efficient attention kernel wants a mask whose rows are 16-element aligned; an unaligned
# one is first copied into a padded buffer.
_TOKEN_ALIGN = 16


def object_bucket(objects: int) -> int:
    """The number of rows the padded step runs for ``objects`` live objects (>= 1)."""
    if objects < 1:
        raise ValueError(f"object_bucket needs at least one object, got {objects}")
    for bucket in OBJECT_BUCKETS:
        if objects <= bucket:
            return bucket
    return -(-objects // _BUCKET_STEP) * _BUCKET_STEP


@dataclass(frozen=True, slots=True)
class PaddedLayout:
    """The shapes of one padded step; a CUDA graph is captured per layout."""

    objects: int  # rows: the object bucket
    frames: int  # memory frames per row
    ptrs: int  # object pointers per row
    extra_tokens: int  # always-masked tokens after the pointers, for alignment

    def pointer_tokens(self, split: int) -> int:
        """Tokens after the spatial memory (pointers cut into ``split`` tokens each, then the extra)."""
        return self.ptrs * split + self.extra_tokens

    def tokens(self, hw: int, split: int) -> int:
        """Memory tokens per row: ``frames`` grids of ``hw`` tokens, then the pointer tokens."""
        return self.frames * hw + self.pointer_tokens(split)


def padded_layout(selections: Sequence[MemorySelection], *, hw: int, split: int, min_frames: int,
                  min_ptrs: int) -> PaddedLayout:
    """The layout for the objects whose memories are ``selections`` (in slot order).

    Args:
        hw: tokens per memory frame (h * w of the top feature level).
        split: tokens per object pointer (hidden dim / memory dim).
        min_frames, min_ptrs: the steady-state memory length (see the module docstring).
    Raises ValueError for an empty batch or an object with no memory frame (none can exist: an object's
    first prompt is its first conditioning frame).
    """
    if not selections:
        raise ValueError("padded_layout needs at least one object")
    if any(not s.features for s in selections):
        raise ValueError("an object has no memory frame to attend to; it must be prompted first")
    frames = max(min_frames, *(len(s.features) for s in selections))
    ptrs = max(min_ptrs, *(len(s.ptrs) for s in selections))
    ptrs = -(-ptrs // _PTR_ROUND) * _PTR_ROUND
    extra = -(frames * hw + ptrs * split) % _TOKEN_ALIGN
    return PaddedLayout(objects=object_bucket(len(selections)), frames=frames, ptrs=ptrs, extra_tokens=extra)


@dataclass(frozen=True, slots=True)
class PaddedMemory:
    """Every object's memory, padded to one layout (rows past the live objects are padding)."""

    features: torch.Tensor  # [B, F, C_mem, h, w] bfloat16; zeros where padded
    ptrs: torch.Tensor  # [B, P, C] float32; zeros where padded
    # [B, 2F + 2P] int64, four blocks: temporal index into maskmem_tpos_enc (F) | frame is real (F, 0/1) |
    # pointer's frame distance (P) | pointer is real (P, 0/1). One tensor: one host-to-device copy.
    meta: torch.Tensor

    @property
    def frames(self) -> int:
        return self.features.shape[1]

    def split_meta(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tpos [B, F] int64, frame_valid [B, F] bool, ptr_pos [B, P] int64, ptr_valid [B, P] bool)."""
        f, p = self.frames, self.ptrs.shape[1]
        tpos, frame_valid, ptr_pos, ptr_valid = self.meta.split([f, f, p, p], dim=1)
        return tpos, frame_valid.bool(), ptr_pos, ptr_valid.bool()


def pad_memory(selections: Sequence[MemorySelection], layout: PaddedLayout, *, zero_feature: torch.Tensor,
               zero_ptr: torch.Tensor, out: PaddedMemory | None = None) -> PaddedMemory:
    """Stack the objects' memories into ``layout``'s shapes: two stacking copies and one small upload.

    Args:
        zero_feature: [C_mem, h, w] bfloat16 zeros, zero_ptr: [C] float32 zeros (what padding holds).
        out: buffers to fill in place (a captured graph's static inputs); new tensors when None.
    Rows past the objects are padding with every key valid: a row whose keys are all masked gives NaN,
    which nothing reads, but NaN in a buffer would hide a real fault.
    """
    rows, frames, ptrs = layout.objects, layout.frames, layout.ptrs
    live = len(selections)
    meta = np.zeros((rows, 2 * frames + 2 * ptrs), dtype=np.int64)
    meta[live:, frames:2 * frames] = 1
    meta[live:, 2 * frames + ptrs:] = 1
    feature_list: list[torch.Tensor] = []
    ptr_list: list[torch.Tensor] = []
    for row, sel in enumerate(selections):
        f, p = len(sel.features), len(sel.ptrs)
        feature_list += [*sel.features, *[zero_feature] * (frames - f)]
        ptr_list += [*sel.ptrs, *[zero_ptr] * (ptrs - p)]
        meta[row, :f] = sel.tpos
        meta[row, frames:frames + f] = 1
        meta[row, 2 * frames:2 * frames + p] = sel.ptr_pos
        meta[row, 2 * frames + ptrs:2 * frames + ptrs + p] = 1
    feature_list += [zero_feature] * (frames * (rows - live))
    ptr_list += [zero_ptr] * (ptrs * (rows - live))
    device = zero_feature.device
    host = torch.from_numpy(meta)
    if device.type == "cuda":
        host = host.pin_memory()  # the copy is asynchronous only from pinned memory
    if out is None:
        features = torch.stack(feature_list).view(rows, frames, *zero_feature.shape)
        ptr_tensor = (torch.stack(ptr_list) if ptr_list else zero_ptr.new_zeros((0, zero_ptr.shape[0])))
        return PaddedMemory(features=features, ptrs=ptr_tensor.view(rows, ptrs, zero_ptr.shape[0]),
                            meta=host.to(device, non_blocking=True))
    torch.stack(feature_list, out=out.features.view(rows * frames, *zero_feature.shape))
    if ptr_list:
        torch.stack(ptr_list, out=out.ptrs.view(rows * ptrs, zero_ptr.shape[0]))
    out.meta.copy_(host, non_blocking=True)
    return out


class FrameFeatures(Protocol):
    """The current frame's image features, shared by every object (engine.track.tracker computes them)."""

    vision_feats: torch.Tensor  # [HW, 1, C] top level, flattened as sam2 passes it
    vision_pos: torch.Tensor  # [HW, 1, C]
    size: tuple[int, int]  # (h, w) of the top level
    high_res: tuple[torch.Tensor, ...]  # ([1, C/8, 4h, 4w], [1, C/4, 2h, 2w]) or ()


@dataclass(frozen=True, slots=True)
class StepOutputs:
    """What one step gives each row (object) on the current frame."""

    low_res: torch.Tensor  # [B, 1, 4h, 4w] float32 mask logits
    obj_ptr: torch.Tensor  # [B, C] float32 object pointers
    scores: torch.Tensor  # [B, 1] float32 object-score logits
    memory: torch.Tensor  # [B, C_mem, h, w] bfloat16 memory-encoder output for the next frames

    def rows(self, count: int) -> StepOutputs:
        """The first ``count`` rows, copied out of whatever buffer holds them (one copy per field)."""
        return StepOutputs(low_res=self.low_res[:count].clone(), obj_ptr=self.obj_ptr[:count].clone(),
                           scores=self.scores[:count].clone(), memory=self.memory[:count].clone())


@dataclass(frozen=True, slots=True)
class StepConstants:
    """What the padded step reads of the model and the tracker's memory policy, resolved once."""

    hw: int  # memory tokens per frame
    split: int  # tokens per object pointer
    min_frames: int  # steady-state memory frames: one conditioning frame + N-1 recent
    min_ptrs: int  # steady-state pointers: one conditioning pointer + P-1 recent (0 without pointers)
    ptr_pos_scale: int  # the model's P-1: pointer distances are divided by it before the sine encoding
    multimask: bool  # the mask decoder's multimask mode on tracked frames

    def layout(self, selections: Sequence[MemorySelection]) -> PaddedLayout:
        return padded_layout(selections, hw=self.hw, split=self.split, min_frames=self.min_frames,
                             min_ptrs=self.min_ptrs)


def padded_step(model, feats: FrameFeatures, memory: PaddedMemory, layout: PaddedLayout,
                maskmem_pos: torch.Tensor,  # [HW, 1, C_mem]
                constants: StepConstants) -> StepOutputs:
    """Memory attention, mask decoder and memory encoder for every row at once, with fixed shapes.

    A pure function of its tensors: no host synchronisation and no shape that depends on values, so a
    CUDA graph can capture it. Returns outputs for all ``layout.objects`` rows (padding included).
    """
    rows = layout.objects
    h, w = feats.size
    tokens, token_pos, key_mask, ptr_tokens = memory_tokens(model, memory, layout, maskmem_pos, constants)
    curr = feats.vision_feats.transpose(0, 1).expand(rows, -1, -1)  # [B, HW, C]
    curr_pos = feats.vision_pos.transpose(0, 1).expand(rows, -1, -1)
    pix = masked_memory_attention(model.memory_attention, curr, curr_pos, tokens, token_pos,
                                  num_ptr_tokens=ptr_tokens, key_mask=key_mask)  # [B, HW, C]
    pix_feat = pix.transpose(1, 2).reshape(rows, -1, h, w)
    high_res = [x.expand(rows, -1, -1, -1) for x in feats.high_res] or None
    outs = model._forward_sam_heads(backbone_features=pix_feat, point_inputs=None, mask_inputs=None,
                                    high_res_features=high_res, multimask_output=constants.multimask)
    low_res, high_res_masks, obj_ptr, scores = outs[3], outs[4], outs[5], outs[6]
    mem, _ = model._encode_new_memory(
        current_vision_feats=[feats.vision_feats.expand(-1, rows, -1)], feat_sizes=[feats.size],
        pred_masks_high_res=high_res_masks, object_score_logits=scores, is_mask_from_pts=False)
    return StepOutputs(low_res=low_res, obj_ptr=obj_ptr, scores=scores, memory=mem.to(torch.bfloat16))


def memory_tokens(model, memory: PaddedMemory, layout: PaddedLayout, maskmem_pos: torch.Tensor,
                  constants: StepConstants) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Batch-first memory tokens, their position encoding and key mask, as engine.track.memory's
    ``assemble_memory`` builds them for one layout group, with padding.

    Returns ``tokens`` [B, M, C_mem] float32, ``token_pos`` [B, M, C_mem], ``key_mask`` [B, 1, 1, M]
    bool (True: attend) and the number of tokens after the spatial memory (left out of the rotary
    encoding).
    """
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    rows, frames, hw, split = layout.objects, layout.frames, constants.hw, constants.split
    c_mem = maskmem_pos.shape[-1]
    tpos, frame_valid, ptr_pos, ptr_valid = memory.split_meta()
    spatial = memory.features.float().flatten(3).transpose(2, 3).reshape(rows, frames * hw, c_mem)
    frame_pos = model.maskmem_tpos_enc[tpos].reshape(rows, frames, 1, c_mem)
    spatial_pos = (maskmem_pos[:, 0][None, None] + frame_pos).reshape(rows, frames * hw, c_mem)
    parts, pos_parts = [spatial], [spatial_pos]
    masks = [frame_valid.repeat_interleave(hw, dim=1)]
    if layout.ptrs:
        ptrs = memory.ptrs
        if model.add_tpos_enc_to_obj_ptrs:
            dim = model.hidden_dim if model.proj_tpos_enc_in_obj_ptrs else model.mem_dim
            pos = model.obj_ptr_tpos_proj(get_1d_sine_pe(ptr_pos / constants.ptr_pos_scale, dim=dim))
        else:
            pos = ptrs.new_zeros(rows, layout.ptrs, c_mem)
        parts.append(ptrs.reshape(rows, layout.ptrs * split, c_mem))
        pos_parts.append(pos.repeat_interleave(split, dim=1) if split > 1 else pos)
        masks.append(ptr_valid.repeat_interleave(split, dim=1))
    if layout.extra_tokens:
        parts.append(spatial.new_zeros(rows, layout.extra_tokens, c_mem))
        pos_parts.append(spatial.new_zeros(rows, layout.extra_tokens, c_mem))
        masks.append(frame_valid.new_zeros(rows, layout.extra_tokens))
    key_mask = torch.cat(masks, dim=1)[:, None, None, :]
    return torch.cat(parts, dim=1), torch.cat(pos_parts, dim=1), key_mask, layout.pointer_tokens(split)


def masked_memory_attention(attention, curr: torch.Tensor,  # [B, L, C] batch-first
                            curr_pos: torch.Tensor,  # [B, L, C]
                            memory: torch.Tensor,  # [B, M, C_mem]
                            memory_pos: torch.Tensor,  # [B, M, C_mem]
                            *, num_ptr_tokens: int, key_mask: torch.Tensor) -> torch.Tensor:  # [B,1,1,M]
    """sam2's ``MemoryAttention`` (``attention``, its weights) with a key mask on the cross-attention.

    Batch-first in and out: [B, L, C] conditioned features. Layer by layer it does what
    ``MemoryAttention.forward`` and ``MemoryAttentionLayer.forward`` do in eval mode.
    """
    if not attention.batch_first:
        raise ValueError("masked_memory_attention needs a batch-first MemoryAttention (every sam2 config)")
    out = curr + 0.1 * curr_pos if attention.pos_enc_at_input else curr
    for layer in attention.layers:
        out = layer._forward_sa(out, curr_pos)
        normed = layer.norm2(out)
        query = normed + curr_pos if layer.pos_enc_at_cross_attn_queries else normed
        keys = memory + memory_pos if layer.pos_enc_at_cross_attn_keys else memory
        attended = _masked_cross_attention(layer.cross_attn_image, query, keys, memory,
                                           num_k_exclude_rope=num_ptr_tokens, key_mask=key_mask)
        out = out + layer.dropout2(attended)
        normed = layer.norm3(out)
        out = out + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(normed)))))
    return attention.norm(out)


def _masked_cross_attention(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                            num_k_exclude_rope: int, key_mask: torch.Tensor) -> torch.Tensor:
    """``RoPEAttention.forward`` (or ``Attention.forward``) of sam2 with ``attn_mask=key_mask``."""
    from sam2.modeling.sam import transformer

    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    if isinstance(attn, transformer.RoPEAttention):
        # the same bookkeeping as sam2's forward: rotary tables for a square grid of q's length
        side = math.sqrt(q.shape[-2])
        attn.freqs_cis = attn.freqs_cis.to(q.device)
        if attn.freqs_cis.shape[0] != q.shape[-2]:
            attn.freqs_cis = attn.compute_cis(end_x=side, end_y=side).to(q.device)
        num_k_rope = k.size(-2) - num_k_exclude_rope
        # through the module attribute, so that engine.track.rope.real_rotary applies here too
        q, k[:, :, :num_k_rope] = transformer.apply_rotary_enc(
            q, k[:, :, :num_k_rope], freqs_cis=attn.freqs_cis, repeat_freqs_k=attn.rope_k_repeat)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    return attn.out_proj(attn._recombine_heads(out))
