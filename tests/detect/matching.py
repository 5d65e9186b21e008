"""Helpers the parity tests share: frame conversions and one-to-one matching of two sets of detections."""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from scipy.optimize import linear_sum_assignment


def as_tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame))


def as_bgr(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame[..., ::-1])


def match_instances(boxes_a: torch.Tensor,  # [N, 4]
                    boxes_b: torch.Tensor,  # [M, 4]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair detections one to one by box IoU (Hungarian); returns (rows of a, rows of b, their IoUs)."""
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    iou = torchvision.ops.box_iou(boxes_a.float().cpu(), boxes_b.float().cpu()).numpy()
    rows, cols = linear_sum_assignment(-iou)
    return rows, cols, iou[rows, cols]


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # [N, H, W] bool each -> [N]
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return inter / union.clamp_min(1)
