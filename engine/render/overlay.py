"""Overlay drawing: the stuff layer (a colour per stuff class, translucent, with a legend of its class
names), then a colour per track id, masks blended, boxes and labels on top."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from engine.ops import masks_to_id_map, overlay
from engine.types import Instances, StuffSegments

_GOLDEN = 0.618033988749895


def color_for_id(track_id: int) -> tuple[int, int, int]:
    """A bright RGB colour that stays the same for an id across frames and runs; neighbouring ids
    get far-apart hues (golden-ratio steps around the colour wheel)."""
    hue = (track_id * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


STUFF_ALPHA = 0.35  # lighter than the instances' 0.5: the scene stays readable under its labels


def draw(image: torch.Tensor,  # [H, W, 3] uint8 RGB, any device
         instances: Instances, *, alpha: float = 0.5, boxes: bool = True,
         labels: bool = True, stuff: StuffSegments | None = None,
         stuff_colors: Sequence[tuple[int, int, int]] = ()) -> torch.Tensor:  # [H, W, 3] uint8 RGB on the CPU
    """The frame with its stuff blended in under the instances (each stuff class in its colour,
    ``stuff_colors[class_id]`` or a fixed colour per class where none is given, at ``STUFF_ALPHA``) and a
    legend of the stuff classes shown in the top-left corner; then each instance's mask blended in its
    id's colour, and its box and ``label id score`` drawn on top. Masks are blended on the image's device
    (the CUDA kernel on a GPU); boxes and text are drawn on the CPU copy."""
    legend: list[tuple[str, tuple[int, int, int]]] = []
    if stuff is not None and len(stuff):
        class_ids = stuff.class_ids.tolist()
        palette = [tuple(stuff_colors[c]) if c < len(stuff_colors) else color_for_id(c + 1000) for c in class_ids]
        stuff_map = masks_to_id_map(stuff.masks.to(image.device))
        image = overlay(image, stuff_map, torch.tensor(palette, dtype=torch.uint8, device=image.device), STUFF_ALPHA)
        legend = list(zip(stuff.labels, palette))
    if len(instances) == 0 and not legend:
        return image.cpu()
    out_image = image
    colors = torch.tensor([color_for_id(i) for i in instances.ids.tolist()], dtype=torch.uint8).reshape(-1, 3)
    if len(instances):
        id_map = masks_to_id_map(instances.masks.to(image.device), instances.boxes.to(image.device))
        out_image = overlay(image, id_map, colors.to(image.device), alpha)
    out = np.ascontiguousarray(out_image.cpu().numpy())
    if len(instances) and (boxes or labels):
        _draw_boxes(out, instances, colors.numpy(), boxes=boxes, labels=labels)
    if legend:
        _draw_legend(out, legend)
    return torch.from_numpy(out)


def _draw_legend(out: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
    """A swatch and a name per stuff class, one row each, on a dark box in the top-left corner."""
    scale = max(0.35, min(out.shape[:2]) / 1000)
    thickness = max(1, round(scale * 2))
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    row = th + base + 4
    width = max(cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for name, _ in entries)
    cv2.rectangle(out, (0, 0), (row + width + 8, row * len(entries) + 4), (0, 0, 0), -1)
    for k, (name, color) in enumerate(entries):
        top = 2 + k * row
        cv2.rectangle(out, (3, top + 2), (row - 1, top + row - 2), tuple(int(c) for c in color), -1)
        cv2.putText(out, name, (row + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)


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
