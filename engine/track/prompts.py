"""Point prompts padded to a few fixed sizes, with the padding made invisible to SAM 2's mask decoder.

A compiled or CUDA-graphed prompt path specialises on its input shapes, and the number of prompt tokens
(clicks, plus two box corners) is one of them: without padding, every new click count recompiles. Here
the prompt's points are padded up to the next size in ``POINT_BUCKETS`` with SAM's "not a point" label
(-1), so a session of any number of clicks sees at most ``len(POINT_BUCKETS)`` shapes.

Padding alone is not enough. sam2 documents -1 as padding, and its prompt encoder does ignore a padded
point's coordinates, but the token itself (``not_a_point_embed``) still takes part in the mask decoder's
attention: as a key in the tokens' self-attention and in the image-to-token cross-attention. Extra
padding tokens therefore change the masks (measured on random weights at image size 256: low-res
logits move by up to 0.22 of a +-0.46 range, predicted IoU by 0.03; tests/track/test_prompts.py).
``PaddedPromptDecoder`` runs sam2's own ``MaskDecoder`` code on the same parameter tensors, with those
two attentions masked so padding tokens are never attended to. A padded prompt then gives the unpadded
prompt's outputs up to float summation order.

Which tokens are padding is read off the tokens themselves, so the decoder's call signature (and the
sam2 code calling it) stays unchanged: a prompt token equal to ``not_a_point_embed`` came from a -1
label. sam2 appends one such token to every prompt that has no separate box input, and SAM was trained
with it, so the last token always stays visible; every other -1 token is masked. (A caller's own -1
points are padding by SAM's definition, so this also holds for them.)
"""

from __future__ import annotations

import copy
from itertools import chain
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

POINT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # prompt points (box corners count as two) are padded up to these
NOT_A_POINT = -1  # sam2's label for a padding point


def bucket_size(count: int) -> int:
    """The smallest bucket holding ``count`` prompt points; ConfigError past the largest."""
    for size in POINT_BUCKETS:
        if count <= size:
            return size
    raise ConfigError(f"{count} prompt points: at most {POINT_BUCKETS[-1]} points (a box counts as 2) "
                      "fit one prompt; split the prompt or drop some clicks")


def pad_points(coords: torch.Tensor,  # [B, N, 2] float32
               labels: torch.Tensor,  # [B, N] int32
               ) -> tuple[torch.Tensor, torch.Tensor]:  # [B, K, 2], [B, K] with K = bucket_size(N)
    """Points padded with (0, 0) "not a point" entries up to their bucket; unchanged when N is one."""
    count = coords.shape[1]
    extra = bucket_size(count) - count
    if extra == 0:
        return coords, labels
    batch = coords.shape[0]
    coords = torch.cat([coords, coords.new_zeros((batch, extra, 2))], dim=1)
    labels = torch.cat([labels, labels.new_full((batch, extra), NOT_A_POINT)], dim=1)
    return coords, labels


def pad_point_inputs(point_inputs: dict | None) -> dict | None:
    """sam2's ``point_inputs`` dict with its points padded (see ``pad_points``)."""
    if point_inputs is None:
        return None
    coords, labels = pad_points(point_inputs["point_coords"], point_inputs["point_labels"])
    return {"point_coords": coords, "point_labels": labels}


class _KeyMask:
    """The prompt tokens the masked attentions may attend to during one decoder call."""

    visible: torch.Tensor | None = None  # [B, T] bool over the decoder's tokens (output tokens first)


class _KeyMaskedAttention(nn.Module):
    """sam2's ``Attention`` (the very module, its weights) with keys restricted to ``keys.visible``."""

    def __init__(self, attention: nn.Module, keys: _KeyMask) -> None:
        super().__init__()
        self.attention = attention
        self.keys = keys

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a = self.attention
        q = a._separate_heads(a.q_proj(q), a.num_heads)  # [B, heads, Nq, C/heads]
        k = a._separate_heads(a.k_proj(k), a.num_heads)
        v = a._separate_heads(a.v_proj(v), a.num_heads)
        visible = self.keys.visible
        mask = None if visible is None else visible[:, None, None, :]  # [B, 1, 1, Nk]: every head, query
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return a.out_proj(a._recombine_heads(out))


class PaddedPromptDecoder(nn.Module):
    """sam2's ``MaskDecoder`` on the same parameters, blind to padding tokens (see the module docstring).

    Called exactly as the decoder it wraps; the model's own decoder is not modified. The structural copy
    shares every parameter and buffer, so loading new weights into the model updates this one too.
    """

    def __init__(self, decoder: nn.Module, not_a_point: nn.Embedding) -> None:
        super().__init__()
        shared = {id(t): t for t in chain(decoder.parameters(), decoder.buffers())}
        self.decoder = copy.deepcopy(decoder, shared)
        self.keys = _KeyMask()
        for block in self.decoder.transformer.layers:
            # The two attentions whose keys are the prompt tokens; the token-to-image ones attend to
            # image positions only and a padding query's own output is never read.
            block.self_attn = _KeyMaskedAttention(block.self_attn, self.keys)
            block.cross_attn_image_to_token = _KeyMaskedAttention(block.cross_attn_image_to_token, self.keys)
        self.not_a_point = not_a_point
        self.num_output_tokens = decoder.num_mask_tokens + 1 + int(decoder.pred_obj_scores)

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output, repeat_image, high_res_features=None):
        sparse = sparse_prompt_embeddings  # [B, P, C]
        padding = (sparse == self.not_a_point.weight.to(sparse.dtype)).all(dim=-1)  # [B, P]
        padding[:, -1] = False  # sam2's own trailing "not a point", which unpadded prompts carry too
        outputs = padding.new_ones((sparse.shape[0], self.num_output_tokens))
        self.keys.visible = torch.cat([outputs, ~padding], dim=1)
        try:
            return self.decoder(image_embeddings=image_embeddings, image_pe=image_pe,
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense_prompt_embeddings,
                                multimask_output=multimask_output, repeat_image=repeat_image,
                                high_res_features=high_res_features)
        finally:
            self.keys.visible = None


class _WithDecoder:
    """The model as ``SAM2Base._forward_sam_heads`` reads it, with another mask decoder in its place."""

    def __init__(self, model: SAM2Base, decoder: PaddedPromptDecoder) -> None:
        self._model = model
        self.sam_mask_decoder = decoder

    def __getattr__(self, name: str):
        return getattr(self._model, name)


class PromptHeads:
    """SAM 2's prompt encoder and mask decoder for padded prompts: ``forward_sam_heads`` is sam2's
    ``_forward_sam_heads`` (same arguments, same outputs) with the points padded to their bucket and the
    decoder made blind to the padding."""

    def __init__(self, model: SAM2Base) -> None:
        self.model = model
        self.decoder = PaddedPromptDecoder(model.sam_mask_decoder, model.sam_prompt_encoder.not_a_point_embed)
        self._view = _WithDecoder(model, self.decoder)

    def forward_sam_heads(self, *, backbone_features, point_inputs=None, mask_inputs=None,
                          high_res_features=None, multimask_output=False):
        return type(self.model)._forward_sam_heads(
            self._view, backbone_features=backbone_features, point_inputs=pad_point_inputs(point_inputs),
            mask_inputs=mask_inputs, high_res_features=high_res_features, multimask_output=multimask_output)
