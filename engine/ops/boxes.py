"""Boxes around masks, in the pixel-edge coordinates the detector's boxes use."""

from __future__ import annotations

import torch
from torchvision.ops import masks_to_boxes


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:  # [N, H, W] bool -> [N, 4] float32
    """x1, y1, x2, y2 of each mask, edges of its outermost pixels: a one-pixel mask at (x, y) gives
    (x, y, x + 1, y + 1). An empty mask gives zeros."""
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32, device=masks.device)
    present = masks.flatten(1).any(dim=1)
    if bool(present.any()):
        found = masks_to_boxes(masks[present]).float()
        found[:, 2:] += 1.0
        boxes[present] = found
    return boxes
