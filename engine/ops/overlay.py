"""Alpha-blend coloured instance masks onto a frame.

Blending is done in 8-bit fixed point, ``(pixel * (256 - a) + colour * a + 128) >> 8`` with
``a = round(alpha * 256)``, so the kernel (kernels/overlay.cu) and this reference agree bit for bit.
Pixels whose id is -1, or not a row of ``colors`` (id >= K), keep the frame's colour: checking the ids
on a GPU would cost a synchronisation per frame.
"""

from __future__ import annotations

import torch

from engine.ops import _library


def masks_to_id_map(masks: torch.Tensor) -> torch.Tensor:  # masks: [N, H, W] bool -> [H, W] int32
    """The index of the mask covering each pixel, -1 where none does; where masks overlap the last wins,
    as when they are painted in order."""
    n, h, w = masks.shape
    if n == 0:
        return torch.full((h, w), -1, dtype=torch.int32, device=masks.device)
    order = torch.arange(1, n + 1, dtype=torch.int32, device=masks.device).view(n, 1, 1)
    return (masks.to(torch.int32) * order).amax(dim=0) - 1


def overlay(image: torch.Tensor,  # [H, W, 3] uint8
            id_map: torch.Tensor,  # [H, W] int32, -1 for background
            colors: torch.Tensor,  # [K, 3] uint8, one row per id_map value
            alpha: float = 0.5) -> torch.Tensor:  # [H, W, 3] uint8
    """Blend ``colors[id_map]`` over ``image`` where ``0 <= id_map < K``; a new tensor, same device."""
    if image.dim() != 3 or image.shape[2] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"overlay expects a [H, W, 3] uint8 image, got {tuple(image.shape)} {image.dtype}")
    if id_map.shape != image.shape[:2]:
        raise ValueError(f"id_map {tuple(id_map.shape)} does not match image {tuple(image.shape[:2])}")
    if id_map.dtype not in (torch.int32, torch.int64) or id_map.device != image.device:
        raise ValueError(f"overlay expects id_map as int32 (or int64) on {image.device}, got "
                         f"{id_map.dtype} on {id_map.device}")
    if colors.dim() != 2 or colors.shape[1] != 3 or colors.dtype != torch.uint8:
        raise ValueError(f"overlay expects colors as [K, 3] uint8, got {tuple(colors.shape)} {colors.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    library = _library.kernels_for(image)
    if library is None or image.numel() == 0:
        return overlay_reference(image, id_map, colors, alpha)
    image = image.contiguous()
    id_map = id_map.to(torch.int32).contiguous()
    colors = colors.to(image.device).contiguous()
    out = torch.empty_like(image)
    pixels = image.shape[0] * image.shape[1]
    _library.launch(library, "streamseg_overlay", image, image.data_ptr(), id_map.data_ptr(), pixels,
                    colors.data_ptr(), colors.shape[0], int(round(alpha * 256)), out.data_ptr())
    return out


def overlay_reference(image: torch.Tensor,  # [H, W, 3] uint8
                      id_map: torch.Tensor,  # [H, W] int32 or int64
                      colors: torch.Tensor,  # [K, 3] uint8, any device
                      alpha: float) -> torch.Tensor:  # [H, W, 3] uint8
    """The fixed-point blend in torch, on the image's device."""
    a = int(round(alpha * 256))
    out = image.clone()
    covered = (id_map >= 0) & (id_map < colors.shape[0])
    if not bool(covered.any()):
        return out
    pixels = image[covered].to(torch.int32)
    paint = colors.to(image.device, torch.int32)[id_map[covered].long()]
    out[covered] = ((pixels * (256 - a) + paint * a + 128) >> 8).to(torch.uint8)
    return out
