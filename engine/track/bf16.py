"""SAM 2's image encoder and memory attention in bf16 on the CPU: the fast CPU path of the precision
policy (engine.runtime.precision), for CPUs with bf16 matrix instructions (AMX-BF16, AVX512-BF16).

Both run from bf16 copies of the model's weights, made once per model and shared by every tracker of
that model (streams sharing a model share them too): the image encoder's when the first tracker that
runs it in bf16 is built (a tracker on the ONNX Runtime encoder never copies it), the memory attention's
on the first propagated frame. Weights loaded into the model after that would not reach them, as with
the ONNX export (engine.track.encoder).

Image encoder (``Bf16ImageEncoder``): hiera and its FPN neck, plus the mask decoder's two high-res
projections (``SAM2Base.forward_image``), wholly in bf16: it is feed-forward, so an error stays in its
frame. Explicit casts of a bf16 copy beat ``torch.autocast``, which recasts every weight on every call:
hiera-t at 512 px, 1 thread, 2-core Xeon with AMX (2026-12-01, machine shared, load ~7): fp32 1,364 ms,
ONNX Runtime fp32 1,333 ms, autocast 710 ms, bf16 copy 598 ms; at 256 px 412 / 333 / 196 / 171 ms.
Features differ from fp32 by ~1.1% (relative L2), autocast's and the copy's alike.

Memory attention (``bf16_memory_attention``): sam2's ``MemoryAttention`` walked layer by layer with the
same submodules (``MemoryAttention.forward``, ``MemoryAttentionLayer.forward``, ``RoPEAttention.forward``
in eval mode), where every linear projection and the attention itself run in bf16 while the residual
stream and the layer norms stay fp32, as autocast would run them. Two things make it faster than
``torch.autocast`` around sam2's module (10 objects at 256 px, 1 thread, same machine and load: fp32
1,539 ms, autocast 653 ms, this walk 580 ms), at autocast's accuracy (0.27% relative L2 from fp32):
- weights are cast once, not per call;
- the rotary encoding rotates bf16 tensors directly instead of sam2's round trip through complex fp32
  (``view_as_complex``), which took half of the autocast call's time in copies and complex multiplies;
  the bf16 copies of the query and key projections emit each rotary pair split into halves
  (``pairs_to_halves``: the same reordering of queries and keys leaves attention unchanged), so the
  rotation is four elementwise ops on contiguous halves (``rotate_halves``), not a gather over pairs.
With ``dtype=torch.float32`` the walk computes sam2's own function (tests/track/test_bf16.py: within
float rounding of ``MemoryAttention.forward``), which is what proves it is the same network.
"""

from __future__ import annotations

import copy
import functools
import math
import weakref

import torch
import torch.nn.functional as F

_BF16 = torch.bfloat16
_copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> _Bf16Weights


class _Bf16Weights:
    """One model's bf16 copies: the image encoder with its high-res projections, and the memory
    attention's linear layers (by module), with rotary tables by (module, tokens, dtype). The image
    encoder's copy (hiera-t 56 MB in bf16, hiera-l ~430 MB) is made on first use: memory attention alone
    runs in bf16 when the encoder runs elsewhere."""

    def __init__(self, model) -> None:
        # the modules, not the model: the copies are the value of a weak-keyed cache keyed by the model
        decoder = model.sam_mask_decoder
        self._encoder = model.image_encoder
        self._high_res = (decoder.conv_s0, decoder.conv_s1) if model.use_high_res_features_in_sam else None
        self.linear = {m: (m.weight.detach().to(_BF16), None if m.bias is None else m.bias.detach().to(_BF16))
                       for m in model.memory_attention.modules() if isinstance(m, torch.nn.Linear)}
        from sam2.modeling.sam.transformer import RoPEAttention

        for attn in model.memory_attention.modules():
            if isinstance(attn, RoPEAttention):  # queries and keys with each pair split into the two halves
                order = pairs_to_halves(attn.internal_dim, attn.num_heads)
                for proj in (attn.q_proj, attn.k_proj):
                    weight, bias = self.linear[proj]
                    self.linear[proj] = (weight[order].contiguous(), None if bias is None else bias[order].contiguous())
        self.rotary: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @functools.cached_property
    def image_encoder(self) -> torch.nn.Module:
        return copy.deepcopy(self._encoder).to(_BF16).eval()

    @functools.cached_property
    def high_res(self) -> tuple[torch.nn.Module, torch.nn.Module] | None:
        """The mask decoder's two high-res projections (``conv_s0``, ``conv_s1``) in bf16, or None."""
        return None if self._high_res is None else tuple(copy.deepcopy(c).to(_BF16) for c in self._high_res)


def pairs_to_halves(dim: int, heads: int) -> torch.Tensor:
    """The order of a projection's ``dim`` outputs that puts, within each head, the first element of
    every rotary pair in the first half and the second in the second half. The same reordering of queries
    and keys leaves every dot product, hence the attention, unchanged, and turns the rotation of pairs
    into a rotation of halves: contiguous slices instead of a gather over pairs (1.5x faster here)."""
    head = dim // heads
    within = torch.cat([torch.arange(0, head, 2), torch.arange(1, head, 2)])
    return torch.cat([h * head + within for h in range(heads)])


def bf16_weights(model) -> _Bf16Weights:
    """The bf16 copies of ``model`` (made on first use, then shared)."""
    weights = _copies.get(model)
    if weights is None:
        weights = _copies[model] = _Bf16Weights(model)
    return weights


class Bf16ImageEncoder:
    """``SAM2Base.forward_image`` in bf16, called as the exported encoders are (engine.track.encoder):
    ``encoder(images)`` with images [B, 3, S, S] float32, normalised, gives (hr0 [B, C/8, S/4, S/4],
    hr1 [B, C/4, S/8, S/8], feat [B, C, S/16, S/16], pos [B, C, S/16, S/16]), float32."""

    def __init__(self, model) -> None:
        self._weights = bf16_weights(model)
        # copied now, when the tracker is built, not on its first frame
        self._encoder, self._high_res = self._weights.image_encoder, self._weights.high_res

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            out = self._encoder(images.to(_BF16))
            fpn, pos = list(out["backbone_fpn"]), out["vision_pos_enc"]
            if self._high_res is not None:
                fpn[0], fpn[1] = self._high_res[0](fpn[0]), self._high_res[1](fpn[1])
        return fpn[0].float(), fpn[1].float(), fpn[-1].float(), pos[-1].float()


# Objects per call: as many as keep (objects x memory tokens) within this budget. Batching many objects
# whose memories are long makes the key and value tensors outgrow the caches: at 512 px (7,204 memory
# tokens) one object per call took 2,428 ms for 10 objects against 3,343 ms for all 10 in one call; at 256
# px (1,828 tokens) two per call were fastest (453 ms, against 489 ms for all 10). 1 thread, 2-core
# Xeon with AMX, 2026-12-01, machine shared (load 4-5).
KEY_TOKENS_PER_CALL = 4096


def bf16_memory_attention(model, curr: torch.Tensor,  # [L, B, C] float32 (sam2's sequence-first layout)
                          curr_pos: torch.Tensor,  # [L, B, C]
                          memory: torch.Tensor,  # [M, B, C_mem]
                          memory_pos: torch.Tensor,  # [M, B, C_mem]
                          *, num_obj_ptr_tokens: int, dtype: torch.dtype = _BF16) -> torch.Tensor:
    """``model.memory_attention(curr=[curr], curr_pos=[curr_pos], memory=..., memory_pos=...,
    num_obj_ptr_tokens=...)`` with its products in ``dtype`` (bf16; float32 computes sam2's function with
    the fp32 weights), objects in chunks of ``KEY_TOKENS_PER_CALL`` memory tokens; returns [L, B, C]
    float32."""
    step = max(1, KEY_TOKENS_PER_CALL // max(1, memory.shape[0]))
    if curr.shape[1] <= step:
        return _memory_attention(model, curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens, dtype)
    return torch.cat([_memory_attention(model, curr[:, i:i + step], curr_pos[:, i:i + step], memory[:, i:i + step],
                                        memory_pos[:, i:i + step], num_obj_ptr_tokens, dtype)
                      for i in range(0, curr.shape[1], step)], dim=1)


def _memory_attention(model, curr: torch.Tensor, curr_pos: torch.Tensor, memory: torch.Tensor,
                      memory_pos: torch.Tensor, num_obj_ptr_tokens: int, dtype: torch.dtype) -> torch.Tensor:
    """One call of the walk: ``bf16_memory_attention``'s arguments, all objects at once."""
    attention = model.memory_attention
    if not attention.batch_first:
        raise ValueError("bf16_memory_attention needs a batch-first MemoryAttention (every sam2 config)")
    weights = bf16_weights(model) if dtype == _BF16 else None
    out = curr + 0.1 * curr_pos if attention.pos_enc_at_input else curr
    out, pos = out.transpose(0, 1), curr_pos.transpose(0, 1)  # batch-first views
    first = attention.layers[0]
    keys = memory + memory_pos if first.pos_enc_at_cross_attn_keys else memory
    values = memory.transpose(0, 1).to(dtype)
    keys = keys.transpose(0, 1).to(dtype)
    for layer in attention.layers:
        normed = layer.norm1(out)
        qk = (normed + pos if layer.pos_enc_at_attn else normed).to(dtype)
        out = out + _attend(layer.self_attn, qk, qk, normed.to(dtype), weights, 0).float()
        normed = layer.norm2(out)
        query = (normed + pos if layer.pos_enc_at_cross_attn_queries else normed).to(dtype)
        out = out + _attend(layer.cross_attn_image, query, keys, values, weights, num_obj_ptr_tokens).float()
        hidden = layer.activation(_linear(layer.linear1, layer.norm3(out).to(dtype), weights))
        out = out + _linear(layer.linear2, hidden, weights).float()
    return attention.norm(out).transpose(0, 1)


def _linear(module: torch.nn.Linear, x: torch.Tensor, weights: _Bf16Weights | None) -> torch.Tensor:
    if weights is None:
        return module(x)
    weight, bias = weights.linear[module]
    return F.linear(x, weight, bias)


def _attend(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, weights: _Bf16Weights | None,
            num_k_exclude_rope: int) -> torch.Tensor:
    """``RoPEAttention.forward`` (or ``Attention.forward``) of sam2, its products in q's dtype."""
    from sam2.modeling.sam.transformer import RoPEAttention

    q = attn._separate_heads(_linear(attn.q_proj, q, weights), attn.num_heads)  # [B, heads, L, D]
    k = attn._separate_heads(_linear(attn.k_proj, k, weights), attn.num_heads)
    v = attn._separate_heads(_linear(attn.v_proj, v, weights), attn.num_heads)
    if isinstance(attn, RoPEAttention):
        # the bf16 copies' q and k projections put each pair in halves (pairs_to_halves)
        rotate = rotate_halves if weights is not None else rotate_pairs
        cos, sin = _rotary_tables(attn, q.shape[-2], q.dtype, weights)
        q = rotate(q, cos, sin)
        num_rope = k.shape[-2] - num_k_exclude_rope
        if num_rope != q.shape[-2] and not attn.rope_k_repeat:
            raise ValueError(f"{num_rope} keys against {q.shape[-2]} queries need rope_k_repeat")
        if num_k_exclude_rope:  # k is the projection's own output: rotating its head in place is safe
            k[:, :, :num_rope] = rotate(k[:, :, :num_rope], cos, sin)
        else:
            k = rotate(k, cos, sin)
    out = F.scaled_dot_product_attention(q, k, v)
    return _linear(attn.out_proj, attn._recombine_heads(out), weights)


def _rotary_tables(attn, tokens: int, dtype: torch.dtype, weights: _Bf16Weights | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """sam2's axial rotation for a square grid of ``tokens`` (as ``RoPEAttention.forward`` assumes): with
    the bf16 copies, [tokens, D/2] cos and sin of each pair's angle (``rotate_halves``); without, two
    [tokens, D] tables, cos repeated per pair and (-sin, sin) per pair (``rotate_pairs``)."""
    key = (attn, tokens, dtype)
    cached = weights.rotary.get(key) if weights is not None else None
    if cached is not None:
        return cached
    side = math.sqrt(tokens)
    freqs = attn.compute_cis(end_x=side, end_y=side)  # [tokens, D/2] complex
    if weights is None:
        cos = freqs.real.repeat_interleave(2, dim=-1)
        sin = torch.stack([-freqs.imag, freqs.imag], dim=-1).flatten(-2)
        return cos.to(dtype), sin.to(dtype)
    tables = weights.rotary[key] = (freqs.real.to(dtype), freqs.imag.to(dtype))
    return tables


def rotate_pairs(x: torch.Tensor,  # [B, heads, R * L, D]: R stacked grids of L tokens (R = 1: one grid)
                 cos: torch.Tensor,  # [L, D]: cos of each pair's angle, twice
                 sin: torch.Tensor,  # [L, D]: (-sin, sin) of each pair's angle
                 ) -> torch.Tensor:
    """sam2's ``apply_rotary_enc``: each consecutive pair (a, b) of the last dim rotated by its angle,
    (a cos - b sin, a sin + b cos), every stacked grid with the same angles (``repeat_freqs_k``)."""
    b, h, n, d = x.shape
    grids = x.reshape(b, h, n // cos.shape[0], cos.shape[0], d)
    swapped = grids.reshape(b, h, -1, cos.shape[0], d // 2, 2).flip(-1).reshape(grids.shape)  # (b, a) pairs
    return torch.addcmul(grids * cos, swapped, sin).reshape(b, h, n, d)


def rotate_halves(x: torch.Tensor,  # [B, heads, R * L, D]: each pair's first elements, then its second
                  cos: torch.Tensor,  # [L, D/2]: cos of each pair's angle
                  sin: torch.Tensor,  # [L, D/2]: sin of each pair's angle
                  ) -> torch.Tensor:
    """``rotate_pairs`` for a last dim laid out in halves (``pairs_to_halves``): (a, b) -> (a cos - b sin,
    a sin + b cos) with a the first half and b the second, every stacked grid with the same angles."""
    b, h, n, d = x.shape
    grids = x.reshape(b, h, n // cos.shape[0], cos.shape[0], d)
    first, second = grids[..., :d // 2], grids[..., d // 2:]
    out = torch.empty_like(grids)
    low, high = out[..., :d // 2], out[..., d // 2:]
    torch.mul(first, cos, out=low)
    low.addcmul_(second, sin, value=-1)
    torch.mul(second, cos, out=high)
    high.addcmul_(first, sin)
    return out.reshape(b, h, n, d)


__all__ = ["KEY_TOKENS_PER_CALL", "Bf16ImageEncoder", "bf16_memory_attention", "bf16_weights", "pairs_to_halves",
           "rotate_halves", "rotate_pairs"]
