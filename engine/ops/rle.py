"""COCO run-length encoding of instance masks (the JSONL mask format).

The reference is pycocotools itself, so what the JSONL holds is what ``pycocotools.mask.decode`` reads.
"""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_util


def rle_encode(masks: torch.Tensor) -> list[dict]:  # masks: [N, H, W] bool
    """Encode each mask as COCO compressed RLE: ``{"size": [H, W], "counts": str}``.

    Args:
        masks: [N, H, W] bool, any device.
    Returns:
        N dicts, in order; an empty list for N == 0.
    """
    if masks.dim() != 3:
        raise ValueError(f"rle_encode expects [N, H, W] masks, got {tuple(masks.shape)}")
    return rle_encode_reference(masks)


def rle_encode_reference(masks: torch.Tensor) -> list[dict]:  # masks: [N, H, W] bool
    if masks.shape[0] == 0:
        return []
    # pycocotools wants [H, W, N] uint8 in column-major order: COCO runs go down columns.
    array = np.asfortranarray(masks.to("cpu", torch.uint8).permute(1, 2, 0).numpy())
    encoded = mask_util.encode(array)
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
            for r in encoded]
