"""Panoptic quality against ground truth: semantic mIoU, PQ / SQ / RQ per frame (torchmetrics), and
STQ over a video (``engine.eval.stq``).

A frame's panoptic segmentation is a ``PanopticFrame``: a class per pixel and a track id per thing pixel.
Class indices are a label set's channels (``engine.segment.LabelSet``); ``-1`` is void (not scored).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, slots=True)
class PanopticFrame:
    """One frame's panoptic segmentation."""

    semantic: np.ndarray  # [H, W] int class index per pixel; -1 = void (ground truth: not scored)
    instance: np.ndarray  # [H, W] int track id (>= 1) on thing pixels with an instance; 0 elsewhere

    def __post_init__(self) -> None:
        if self.semantic.ndim != 2 or self.semantic.shape != self.instance.shape:
            raise ValueError(f"PanopticFrame: semantic {self.semantic.shape} and instance "
                             f"{self.instance.shape} must be the same [H, W]")
        if (self.instance < 0).any():
            raise ValueError("PanopticFrame.instance ids must be >= 0 (0: no instance)")


def semantic_iou(truth: Sequence[np.ndarray], predicted: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Per-class IoU [C] float64 accumulated over all frames (pixels where the truth is void, -1, are not
    scored; a void prediction on a labelled pixel is a miss). NaN for a class absent from both."""
    confusion = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    for gt, pr in zip(truth, predicted, strict=True):
        valid = gt >= 0
        p = np.where(pr[valid] < 0, num_classes, pr[valid])
        confusion += np.bincount(gt[valid] * (num_classes + 1) + p,
                                 minlength=num_classes * (num_classes + 1)).reshape(num_classes, num_classes + 1)
    inter = np.diag(confusion[:, :num_classes]).astype(np.float64)
    union = confusion.sum(1) + confusion[:, :num_classes].sum(0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def mean_iou(truth: Sequence[np.ndarray], predicted: Sequence[np.ndarray], num_classes: int) -> float:
    """Semantic mIoU: the mean of ``semantic_iou`` over the classes present in truth or prediction."""
    iou = semantic_iou(truth, predicted, num_classes)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


@dataclass(frozen=True, slots=True)
class PanopticScores:
    pq: float  # panoptic quality, averaged over the classes present (Kirillov et al. 2019)
    sq: float  # segmentation quality: mean IoU of matched segments
    rq: float  # recognition quality: F1 of segment matching at IoU > 0.5


def panoptic_quality(truth: PanopticFrame, predicted: PanopticFrame, *, things: Collection[int],
                     stuffs: Collection[int]) -> PanopticScores:
    """PQ, SQ and RQ of one frame (Kirillov et al. 2019), segments matched and counted by torchmetrics'
    ``PanopticQuality``. Thing segments are (class, track id); stuff is one segment per class.

    Void follows panopticapi's ``pq_compute``: truth pixels of class -1 are not scored (a predicted segment
    more than half on them is no false positive, and they leave the IoUs). A predicted -1 is no segment:
    truth segments it covers stay unmatched, false negatives. torchmetrics would instead ignore a truth
    segment that is mostly predicted void, so a missed thing (void after fusion) would cost nothing;
    predicted -1 is therefore handed to it as one extra stuff category, whose own counts are left out.
    The averages are over the classes with any true positive, false positive or false negative.
    """
    from torchmetrics.detection import PanopticQuality

    unlabelled = max([*things, *stuffs], default=0) + 1  # predicted void: no segment
    void = unlabelled + 1  # truth void: torchmetrics' void category (one above every category it knows)
    metric = PanopticQuality(things=set(things), stuffs={*stuffs, unlabelled})
    metric.update(_as_pairs(predicted, things, unlabelled), _as_pairs(truth, things, void))
    keep = torch.ones(len(metric.true_positives), dtype=torch.bool)
    keep[metric.cat_id_to_continuous_id[unlabelled]] = False
    iou = metric.iou_sum[keep]
    tp, fp, fn = (getattr(metric, name)[keep].double() for name in
                  ("true_positives", "false_positives", "false_negatives"))
    counted = (tp + fp + fn) > 0
    if not counted.any():
        return PanopticScores(pq=float("nan"), sq=float("nan"), rq=float("nan"))
    sq = torch.where(tp > 0, iou / tp.clamp_min(1), torch.zeros_like(iou))
    rq = tp / (tp + 0.5 * fp + 0.5 * fn).clamp_min(1e-12)
    pq = sq * rq
    return PanopticScores(pq=float(pq[counted].mean()), sq=float(sq[counted].mean()),
                          rq=float(rq[counted].mean()))


def _as_pairs(frame: PanopticFrame, things: Collection[int], void: int) -> torch.Tensor:
    """[1, H, W, 2] (category_id, instance_id) as torchmetrics takes it; stuff pixels get instance 0."""
    semantic = np.where(frame.semantic < 0, void, frame.semantic)
    is_thing = np.isin(semantic, list(things))
    instance = np.where(is_thing, frame.instance, 0)
    pairs = np.stack([semantic, instance], axis=-1).astype(np.int64)
    return torch.from_numpy(pairs)[None]
