"""Run the fuser over a synthetic scene and score it against the scene's ground truth."""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_util

from engine.eval.metrics import FrameMasks, Report, evaluate
from engine.fuse import Fuser, FuserConfig, FusionCounters
from engine.types import Frame


def frame_masks(ids, masks: np.ndarray,  # [K, H, W] bool
                size: tuple[int, int]) -> FrameMasks:
    """Ids and boolean masks as the evaluator's per-frame record (COCO RLE)."""
    ids = [int(i) for i in ids]
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))) if ids else []
    return FrameMasks(ids=tuple(ids), rles=tuple(rles), size=size)


def evaluate_fusion(scene, detector, tracker, config: FuserConfig = FuserConfig()
                    ) -> tuple[Report, FusionCounters, dict]:
    """Every frame: the tracker steps, the detector detects, the fuser fuses; the instances are scored
    against ``scene.ground_truth``. Returns the report, the fuser's counters and its live tracks."""
    fuser = Fuser(tracker, config, names=scene.class_names)
    truth, predicted = [], []
    size = (scene.height, scene.width)
    for i in range(scene.frames):
        frame = Frame(image=torch.from_numpy(scene.render(i)), index=i, pts=None, capture_time=0.0)
        instances = fuser(frame, detector.detect(i), tracker.step(frame.image))
        gt = scene.ground_truth(i)
        truth.append(frame_masks(gt.ids, gt.masks, size))
        predicted.append(frame_masks(instances.ids.tolist(), instances.masks.cpu().numpy(), size))
    return evaluate(truth, predicted), fuser.counters, fuser.tracks
