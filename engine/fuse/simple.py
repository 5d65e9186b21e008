"""The fusion of pipelines that run one network or none (each an ``engine.interfaces.Fusion`` with no
association policy, so it decides nothing):

- ``DetectionsOnly``: the detector's instances, ids are per-frame indices (``--tracker none``);
- ``TracksOnly``: the tracker alone, following the objects users prompt (the prompt queue, ``--prompt``);
- ``NoInstances``: decode and write only (pipeline overhead benchmarks).

Each resolves overlaps like the fused path does, so no two instances share a pixel in any mode.
"""

from __future__ import annotations

import torch

from engine.fuse.resolve import resolve_detections, resolve_tracks
from engine.types import Decision, Detections, Frame, Instances, Tracks


class _Undecided:
    def associate(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> list[Decision]:
        return []

    def retire(self, frame: Frame, tracks: Tracks | None) -> list[Decision]:
        return []


class DetectionsOnly(_Undecided):
    def resolve(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> Instances:
        if detections is None:
            return Instances.empty(frame.height, frame.width, device=frame.image.device)
        return resolve_detections(detections)


class TracksOnly(_Undecided):
    """Every visible tracked object as an instance of one class. Its score is sigmoid(object score),
    which also decides who keeps a pixel two objects claim.

    Args:
        label: the label tracked objects carry (the tracker knows no classes).
    """

    def __init__(self, *, label: str = "object") -> None:
        self.label = label

    def resolve(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> Instances:
        if tracks is None or len(tracks) == 0:
            return Instances.empty(frame.height, frame.width, device=frame.image.device)
        scores = torch.sigmoid(tracks.scores.float().reshape(-1)).tolist()
        n = len(tracks)
        return resolve_tracks(tracks, size=(frame.height, frame.width), device=frame.image.device,
                              weights=scores, scores=scores, class_ids=[0] * n, labels=[self.label] * n)


class NoInstances(_Undecided):
    def resolve(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> Instances:
        return Instances.empty(frame.height, frame.width, device=frame.image.device)
