"""Frames with exact truth as the engine's results, and evidence to score them: what the collector and the
exports are tested on."""

from __future__ import annotations

import numpy as np
import torch

from engine.data import FrameEvidence
from engine.sources.synthetic import SyntheticScene
from engine.types import Frame, FrameResult, Instances, StageTimes


def truth_result(scene: SyntheticScene, i: int, *, stream: int = 0) -> FrameResult:
    """Frame ``i`` of ``scene`` with its ground truth as the final instances (track id = object id)."""
    gt = scene.ground_truth(i)
    keep = gt.masks.reshape(len(gt.ids), -1).any(1) if len(gt.ids) else np.zeros(0, bool)
    masks = torch.from_numpy(gt.masks[keep])
    ids, cls = torch.from_numpy(gt.ids[keep]), torch.from_numpy(gt.class_ids[keep])
    instances = Instances(ids=ids, class_ids=cls, scores=torch.full((len(ids),), 0.8),
                          boxes=torch.from_numpy(_boxes(gt.masks[keep])), masks=masks,
                          labels=tuple(scene.class_names[c] for c in cls.tolist()))
    frame = Frame(image=torch.from_numpy(scene.render(i)), index=i, pts=i / scene.fps, capture_time=0.0,
                  stream=stream)
    return FrameResult(frame=frame, instances=instances, times=StageTimes(), age_ms=0.0)


def random_evidence(i: int, rng: np.random.Generator, *, objects: int = 3, size: int = 16) -> FrameEvidence:
    """Evidence whose every cue varies from frame to frame."""
    logits = torch.from_numpy(rng.normal(0.0, rng.uniform(0.5, 12.0), size=(objects, size, size)).astype(np.float32))
    return FrameEvidence(frame=i, mask_logits=logits,
                         detection_scores=torch.from_numpy(rng.uniform(0.25, 1.0, size=objects).astype(np.float32)),
                         matched_iou=torch.from_numpy(rng.uniform(0.3, 1.0, size=objects).astype(np.float32)),
                         spawns=int(rng.integers(0, 2)), losses=int(rng.integers(0, 2)),
                         reprompts=int(rng.integers(0, 3)))


def _boxes(masks: np.ndarray) -> np.ndarray:  # [N, H, W] bool -> [N, 4] float32 x1, y1, x2, y2
    out = np.zeros((len(masks), 4), dtype=np.float32)
    for k, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        out[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out
