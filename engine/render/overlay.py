"""Overlay drawing: a colour per track id, masks blended, boxes and labels on top."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
import torch

from engine.ops import masks_to_id_map, overlay
from engine.types import Instances

_GOLDEN = 0.618033988749895


def color_for_id(track_id: int) -> tuple[int, int, int]:
    """A bright RGB colour that stays the same for an id across frames and runs; neighbouring ids
    get far-apart hues (golden-ratio steps around the colour wheel)."""
    hue = (track_id * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw(image: torch.Tensor,  # [H, W, 3] uint8 RGB, any device
         instances: Instances, *, alpha: float = 0.5, boxes: bool = True,
         labels: bool = True) -> torch.Tensor:  # [H, W, 3] uint8 RGB on the CPU
    """The frame with each instance's mask blended in its id's colour, and its box and
    ``label id score`` drawn on top. Masks are blended on the image's device (the CUDA kernel on a
    GPU); boxes and text are drawn on the CPU copy."""
    if len(instances) == 0:
        return image.cpu()
    colors = torch.tensor([color_for_id(i) for i in instances.ids.tolist()], dtype=torch.uint8)
    blended = overlay(image, masks_to_id_map(instances.masks.to(image.device)), colors.to(image.device),
                      alpha)
    out = np.ascontiguousarray(blended.cpu().numpy())
    if boxes or labels:
        _draw_boxes(out, instances, colors.numpy(), boxes=boxes, labels=labels)
    return torch.from_numpy(out)


def _draw_boxes(out: np.ndarray, instances: Instances, colors: np.ndarray, *, boxes: bool,
                labels: bool) -> None:
    scale = max(0.4, min(out.shape[:2]) / 900)
    thickness = max(1, round(scale * 2))
    for inst, color in zip(instances, colors.tolist()):
        x1, y1, x2, y2 = (int(round(v)) for v in inst.box)
        if boxes:
            cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        if labels:
            text = f"{inst.label} {inst.id} {inst.score:.2f}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            top = max(0, y1 - th - base - 2)
            cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
            cv2.putText(out, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                        thickness, cv2.LINE_AA)
