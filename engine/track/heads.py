"""SAM 2's heads on a propagated frame (no prompt): ``SAM2Base._forward_sam_heads`` with no points and no
mask, returning only what propagation keeps.

sam2's function upsamples every candidate mask to the image size (three per object with multimask
tracking, sam2.1's setting) and then keeps the one with the best predicted IoU. Bilinear upsampling works
on each mask alone, so upsampling only the kept mask gives the same numbers for a third of the work: at
512 px and 10 objects, 10 masks of 512x512 instead of 30 (and their copies), ~30 ms of a CPU frame.
Everything else is sam2's sequence on sam2's modules (tests/track/test_heads.py checks the outputs
against ``_forward_sam_heads``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def propagation_heads(model, backbone_features: torch.Tensor,  # [B, C, h, w] memory-conditioned features
                      high_res_features: list[torch.Tensor] | None,  # sam2's two high-res levels, batched
                      *, multimask: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(low-res mask logits [B, 1, 4h, 4w], high-res mask logits [B, 1, S, S], object pointers [B, C],
    object score logits [B, 1]), float32, as ``model._forward_sam_heads(backbone_features,
    high_res_features=..., multimask_output=multimask)`` gives them at indices 3, 4, 5 and 6."""
    from sam2.modeling.sam2_base import NO_OBJ_SCORE

    batch, device = backbone_features.shape[0], backbone_features.device
    coords = torch.zeros(batch, 1, 2, device=device)
    labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
    sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    low_res, ious, tokens, scores = model.sam_mask_decoder(
        image_embeddings=backbone_features, image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
        repeat_image=False, high_res_features=high_res_features)
    if model.pred_obj_scores:
        appearing = scores > 0
        low_res = torch.where(appearing[:, None, None], low_res, NO_OBJ_SCORE)
    low_res = low_res.float()
    token = tokens[:, 0]
    if multimask:
        best = torch.argmax(ious, dim=-1)
        rows = torch.arange(batch, device=device)
        low_res = low_res[rows, best].unsqueeze(1)
        if tokens.size(1) > 1:
            token = tokens[rows, best]
    high_res = F.interpolate(low_res, size=(model.image_size, model.image_size), mode="bilinear",
                             align_corners=False)
    obj_ptr = model.obj_ptr_proj(token)
    if model.pred_obj_scores:
        weight = scores.sigmoid() if model.soft_no_obj_ptr else appearing.float()
        if model.fixed_no_obj_ptr:
            obj_ptr = weight * obj_ptr
        obj_ptr = obj_ptr + (1 - weight) * model.no_obj_ptr
    return low_res, high_res, obj_ptr.float(), scores.float()
