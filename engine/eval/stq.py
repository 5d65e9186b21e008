"""Segmentation and Tracking Quality (STQ): Weber et al. 2021, "STEP: Segmenting and Tracking Every
Pixel" (NeurIPS Datasets and Benchmarks), Section 4, implemented from the paper's definitions.

    STQ = sqrt(AQ x SQ)

- AQ (association quality), over the thing pixels of the whole video. A ground-truth track g and a
  predicted track p are the sets of pixels (over all frames) carrying their id. For every pair that
  overlaps: TPA = |p ∩ g|, FPA = |p \\ g|, FNA = |g \\ p|, IoU_id = TPA / (TPA + FPA + FNA). Then

      AQ = 1/|G| Σ_g 1/|g| Σ_{p: |p ∩ g| > 0} TPA(p, g) · IoU_id(p, g)

  so every pixel of a track counts, and a track split over several predicted ids is penalised by how it
  splits (a 5-frame track predicted as ids 1,1,2,2,2: (2 * 2/5 + 3 * 3/5) / 5 = 0.52).
  Track ids are class-specific (a predicted track that changes class becomes two tracks). Thing pixels of
  the truth without an instance id (crowd regions) are left out of both sides.
- SQ (segmentation quality) = the semantic mIoU over the whole video, over the classes present in truth
  or prediction (``engine.eval.panoptic.semantic_iou``).

Pixels whose truth is void (class -1) are left out of AQ and SQ.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from engine.eval.panoptic import PanopticFrame, semantic_iou


@dataclass(frozen=True, slots=True)
class STQScores:
    stq: float  # sqrt(aq * sq)
    aq: float  # association quality
    sq: float  # segmentation quality (semantic mIoU over the video)
    gt_tracks: int  # ground-truth thing tracks scored


def segmentation_and_tracking_quality(truth: Sequence[PanopticFrame], predicted: Sequence[PanopticFrame], *,
                                      num_classes: int, things: Collection[int]) -> STQScores:
    """STQ of a predicted video against its ground truth, frame by frame (module docstring).

    Args:
        truth, predicted: the same number of frames, each frame pair of one size.
        num_classes: classes 0..C-1 of the label set.
        things: the thing class indices (the others are stuff).
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} ground-truth frames but {len(predicted)} predicted frames")
    thing_list = sorted(things)
    offset = int(max((int(f.instance.max(initial=0)) for f in (*truth, *predicted)), default=0)) + 1
    gt_area: Counter = Counter()
    pr_area: Counter = Counter()
    overlap: Counter = Counter()
    for gt, pr in zip(truth, predicted):
        valid = gt.semantic >= 0
        gt_thing = np.isin(gt.semantic, thing_list)
        crowd = gt_thing & (gt.instance == 0)
        gt_mask = gt_thing & ~crowd
        pr_mask = np.isin(pr.semantic, thing_list) & ~crowd & valid
        gt_ids = gt.semantic.astype(np.int64) * offset + gt.instance
        pr_ids = pr.semantic.astype(np.int64) * offset + pr.instance
        gt_area.update(_counts(gt_ids[gt_mask]))
        pr_area.update(_counts(pr_ids[pr_mask]))
        both = gt_mask & pr_mask
        overlap.update(_counts(gt_ids[both] * (num_classes * offset + offset) + pr_ids[both]))
    pair_base = num_classes * offset + offset
    per_track: dict[int, float] = {g: 0.0 for g in gt_area}
    for pair, tpa in overlap.items():
        g, p = divmod(pair, pair_base)
        iou = tpa / (gt_area[g] + pr_area[p] - tpa)
        per_track[g] += tpa * iou
    aq = (sum(v / gt_area[g] for g, v in per_track.items()) / len(per_track)) if per_track else 1.0
    iou = semantic_iou([f.semantic for f in truth], [f.semantic for f in predicted], num_classes)
    sq = float(np.nanmean(iou)) if np.isfinite(iou).any() else 1.0
    return STQScores(stq=math.sqrt(aq * sq), aq=float(aq), sq=sq, gt_tracks=len(per_track))


def _counts(values: np.ndarray) -> dict[int, int]:
    ids, counts = np.unique(values, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))
