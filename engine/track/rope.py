"""sam2's axial rotary position encoding in real arithmetic, for export.

``sam2.modeling.position_encoding`` builds the rotation as complex numbers (``torch.polar``,
``view_as_complex``, complex multiply); ONNX has no complex type, so exporting the memory attention fails
there (sam2 issue #186). Rotating a pair (a, b) by angle t is a*cos t - b*sin t, a*sin t + b*cos t: the
same numbers in real tensors. ``real_rotary`` swaps this in for the duration of an export; the network
modules themselves are untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch


def axial_rotary_tables(dim: int, end_x: int, end_y: int, theta: float = 10000.0
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of sam2's axial rotary angles, [end_x * end_y, dim // 2] each.

    Equal to the real and imaginary parts of ``compute_axial_cis(dim, end_x, end_y, theta)``: the first
    dim/4 angles rotate by the x position, the next dim/4 by the y position, with frequencies
    theta^(-4k/dim).
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return torch.cos(angles), torch.sin(angles)


def apply_rotary_real(xq: torch.Tensor,  # [B, heads, Lq, D]
                      xk: torch.Tensor,  # [B, heads, Lk, D]
                      cos: torch.Tensor,  # [Lq, D/2]
                      sin: torch.Tensor,  # [Lq, D/2]
                      repeat_freqs_k: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``sam2...apply_rotary_enc`` without complex numbers: rotates consecutive pairs of the last dim.

    With ``repeat_freqs_k`` the keys hold Lk / Lq stacked copies of the query grid (one per memory frame)
    and each copy gets the query positions' rotation.
    """
    q_out = _rotate(xq.float(), cos, sin).type_as(xq)
    if xk.shape[-2] == 0:
        return q_out, xk
    if repeat_freqs_k:
        r = xk.shape[-2] // xq.shape[-2]
        cos, sin = cos.repeat(r, 1), sin.repeat(r, 1)
    return q_out, _rotate(xk.float(), cos, sin).type_as(xk)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def _stacked_tables(dim: int, end_x: int, end_y: int, theta: float) -> torch.Tensor:  # [L, dim/2, 2]
    cos, sin = axial_rotary_tables(dim, int(end_x), int(end_y), theta)
    return torch.stack([cos, sin], dim=-1)


def _apply_rotary_stacked(xq, xk, freqs_cis, repeat_freqs_k=False):
    return apply_rotary_real(xq, xk, freqs_cis[..., 0], freqs_cis[..., 1], repeat_freqs_k=repeat_freqs_k)


@contextmanager
def real_rotary(module: torch.nn.Module, feat_size: tuple[int, int]) -> Iterator[None]:
    """Within the block, every sam2 ``RoPEAttention`` in ``module`` rotates with real cos/sin tables
    (built for a ``feat_size`` = (h, w) grid) instead of complex ``freqs_cis``; restored on exit."""
    import sam2.modeling.sam.transformer as transformer

    saved = []
    for m in module.modules():
        if isinstance(m, transformer.RoPEAttention):
            theta = m.compute_cis.keywords["theta"]
            dim = m.compute_cis.keywords["dim"]
            saved.append((m, m.freqs_cis, m.compute_cis))
            m.compute_cis = partial(_stacked_tables, dim=dim, theta=theta)
            m.freqs_cis = m.compute_cis(end_x=feat_size[1], end_y=feat_size[0])
    original = transformer.apply_rotary_enc
    transformer.apply_rotary_enc = _apply_rotary_stacked
    try:
        yield
    finally:
        transformer.apply_rotary_enc = original
        for m, freqs_cis, compute_cis in saved:
            m.freqs_cis, m.compute_cis = freqs_cis, compute_cis
