"""Run the fusion policy over a synthetic scene, through the pipeline, and score it against the scene's
ground truth."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_util

from engine.eval.metrics import FrameMasks, Report, evaluate
from engine.fuse import Fuser, FuserConfig, FusionCounters, TrackState


def frame_masks(ids, masks: np.ndarray,  # [K, H, W] bool
                size: tuple[int, int]) -> FrameMasks:
    """Ids and boolean masks as the evaluator's per-frame record (COCO RLE)."""
    ids = [int(i) for i in ids]
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))) if ids else []
    return FrameMasks(ids=tuple(ids), rles=tuple(rles), size=size)


def evaluate_fusion(scene, detector, tracker, config: FuserConfig | None = None
                    ) -> tuple[Report, FusionCounters, dict[int, TrackState]]:
    """Every frame of ``scene`` through a ``Pipeline`` with ``detector`` and ``tracker`` (doubles that read
    the scene, ``engine.eval.doubles``) and a ``Fuser``; the instances are scored against
    ``scene.ground_truth``. Returns the report, the fuser's counters and its live tracks."""
    from engine.pipeline import Pipeline
    from engine.sources.synthetic import SyntheticSource

    fuser = Fuser(config, names=scene.class_names)
    truth, predicted = [], []
    size = (scene.height, scene.width)
    for result in Pipeline(SyntheticSource(scene), detector=detector, tracker=tracker, fuser=fuser):
        i, instances = result.frame.index, result.instances
        gt = scene.ground_truth(i)
        truth.append(frame_masks(gt.ids, gt.masks, size))
        predicted.append(frame_masks(instances.ids.tolist(), instances.masks.cpu().numpy(), size))
    return evaluate(truth, predicted), fuser.counters, fuser.tracks
