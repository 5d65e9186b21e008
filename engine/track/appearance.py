"""Appearance embeddings of tracked objects, for re-identification after the tracker has let them go.

An object's embedding is the masked average of SAM 2's image-encoder features under its mask:
- the features are the top level of the image encoder's FPN neck (``vision_feats[-1]``, stride 16,
  ``hidden_dim`` = 256 channels), *before* memory attention: they describe what the pixels look like,
  not what the tracker remembers, so a new object is not made to look like the one it replaced;
- the mask is the object's mask (low-res logits > 0, stride 4) averaged down to the feature grid, so
  each feature cell weighs by the fraction of it the object covers (a soft sigmoid weight would let the
  whole background leak in at sigmoid(-8) = 3e-4 per pixel, as much as a 1x1-cell object in total);
- the average is L2-normalised: similarity is the dot product.
This is masked average pooling as in few-shot segmentation (Zhang et al., "SG-One", 2020) on SAM's own
features, which are trained to separate objects at the mask decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pool_appearance(features: torch.Tensor,  # [C, h, w] one frame's top-level image features
                    mask_logits: torch.Tensor,  # [N, H, W] low-res mask logits, H, W multiples of h, w
                    *, min_cells: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each object's unit appearance embedding and whether it is usable.

    Returns:
        embeddings: [N, C] float32, unit length (zeros where not usable).
        usable: [N] bool, False where the mask covers less than ``min_cells`` feature cells in total
            (an object too small or too faint to describe).
    """
    if features.dim() != 3 or mask_logits.dim() != 3:
        raise ValueError(f"pool_appearance expects [C, h, w] features and [N, H, W] logits, got "
                         f"{tuple(features.shape)} and {tuple(mask_logits.shape)}")
    n = mask_logits.shape[0]
    if n == 0:
        return features.new_zeros((0, features.shape[0])), torch.zeros((0,), dtype=torch.bool,
                                                                         device=features.device)
    weights = F.adaptive_avg_pool2d((mask_logits > 0).float()[:, None], features.shape[-2:])[:, 0]
    mass = weights.flatten(1).sum(1)  # [N] covered cells
    pooled = torch.einsum("nhw,chw->nc", weights, features.float()) / mass.clamp_min(1e-6)[:, None]
    usable = mass >= min_cells
    embeddings = F.normalize(pooled, dim=1) * usable[:, None]
    return embeddings, usable
