"""Overlap resolution: per-instance mask evidence at frame resolution -> one instance-id map, so that every
pixel belongs to at most one instance.

The rule, for pixel p and instances i = 0 .. N-1 with mask values x[i, p] and fused scores s[i]:

- the candidates are the instances with x[i, p] > 0 (logits) or x[i, p] > 0.5 (``probabilities=True``);
  a NaN value is never a candidate;
- with no candidate, id[p] = -1;
- otherwise id[p] is the lowest index among the candidates with the largest evidence
  e[i, p] = s[i] * sigmoid(x[i, p]) (logits) or s[i] * x[i, p] (probabilities), each product one float32
  multiply, sigmoid(x) = 1 / (1 + exp(-x)) in float32.

Whether a pixel is covered at all is an exact comparison, so the kernel (kernels/fuse_masks.cu) and the
reference agree on the -1 pixels everywhere. With probabilities they agree bit for bit. With logits,
exp() may differ by an ulp between torch's CPU code and CUDA's expf, so which instance wins can differ
only where the two best evidences are within float rounding of each other.
"""

from __future__ import annotations

import torch

from engine.ops import _library


def fuse_masks(masks: torch.Tensor,  # [N, H, W] float logits (or probabilities)
               scores: torch.Tensor,  # [N] float
               *,
               probabilities: bool = False) -> torch.Tensor:  # [H, W] int32
    """Resolve overlapping instance masks into an id map by score-weighted foreground evidence.

    Args:
        masks: [N, H, W] float, per-instance mask logits at frame resolution, or probabilities in [0, 1]
            with ``probabilities=True``. Computed in float32.
        scores: [N] float, finite, each instance's fused score; same device as ``masks``. Checked for
            finiteness on the CPU only (on CUDA the check would synchronise the stream).
        probabilities: read ``masks`` as probabilities (foreground above 0.5) instead of logits.
    Returns:
        [H, W] int32 on the device of ``masks``: the winning instance's index, -1 where none is
        foreground (see the module docstring for the exact rule).
    """
    if masks.dim() != 3 or not masks.is_floating_point():
        raise ValueError(f"fuse_masks expects masks as [N, H, W] float logits, got {tuple(masks.shape)} "
                         f"{masks.dtype}")
    n, height, width = masks.shape
    if scores.shape != (n,) or not scores.is_floating_point():
        raise ValueError(f"fuse_masks expects scores as [{n}] float (one per mask), got "
                         f"{tuple(scores.shape)} {scores.dtype}")
    if scores.device != masks.device:
        raise ValueError(f"fuse_masks got masks on {masks.device} and scores on {scores.device}; "
                         f"move them to one device")
    if not scores.is_cuda and not bool(torch.isfinite(scores).all()):
        bad = scores[~torch.isfinite(scores)].tolist()
        raise ValueError(f"fuse_masks needs finite scores, got {bad}")
    if n == 0 or height * width == 0:
        return torch.full((height, width), -1, dtype=torch.int32, device=masks.device)
    masks = masks.to(torch.float32)
    scores = scores.to(torch.float32)
    library = _library.kernels_for(masks)
    if library is None:
        return fuse_masks_reference(masks, scores, probabilities=probabilities)
    masks = masks.contiguous()
    scores = scores.contiguous()
    id_map = torch.empty((height, width), dtype=torch.int32, device=masks.device)
    _library.launch(library, "streamseg_fuse_masks", masks, masks.data_ptr(), scores.data_ptr(), n,
                    height * width, int(probabilities), id_map.data_ptr())
    return id_map


def fuse_masks_reference(masks: torch.Tensor,  # [N, H, W] float32
                         scores: torch.Tensor,  # [N] float32
                         *,
                         probabilities: bool = False) -> torch.Tensor:  # [H, W] int32
    """The rule of the module docstring in torch, one instance at a time as the kernel walks them, so
    memory stays O(H * W) whatever N is."""
    n, height, width = masks.shape
    best = torch.full((height, width), -1, dtype=torch.int32, device=masks.device)
    best_evidence = torch.zeros((height, width), dtype=torch.float32, device=masks.device)
    foreground = 0.5 if probabilities else 0.0
    for i in range(n):
        x = masks[i]
        evidence = scores[i] * (x if probabilities else torch.sigmoid(x))
        # Strictly greater: an equal later instance never displaces an earlier one.
        take = (x > foreground) & ((best < 0) | (evidence > best_evidence))
        best = torch.where(take, torch.tensor(i, dtype=torch.int32, device=best.device), best)
        best_evidence = torch.where(take, evidence, best_evidence)
    return best
