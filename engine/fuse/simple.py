"""The fusers for pipelines that run one network or none.

- ``DetectionsOnly``: the detector's instances, ids are per-frame indices (``--tracker none``).
- ``PromptedTracks``: the tracker alone, driven by box prompts given up front (API or ``--prompt``).
- ``NoInstances``: decode and write only (pipeline overhead benchmarks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from engine.errors import ConfigError
from engine.ops import mask_boxes
from engine.runtime.device import stage_section
from engine.types import Detections, Frame, Instances, Tracks


class DetectionsOnly:
    def __call__(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> Instances:
        if detections is None:
            return Instances.empty(frame.height, frame.width, device=frame.image.device)
        return Instances.from_detections(detections)


class NoInstances:
    def __call__(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> Instances:
        return Instances.empty(frame.height, frame.width, device=frame.image.device)


class PromptedTracks:
    """Adds the given objects to the tracker on their frames, then reports every tracked object.

    Args:
        tracker: the tracker the pipeline steps (it must offer ``add_object(obj_id, box=...)``).
        prompts: frame index -> {object id: box [x1, y1, x2, y2] in frame pixels}.
        label: the label tracked objects carry (the tracker knows no classes).
    """

    def __init__(self, tracker, prompts: Mapping[int, Mapping[int, Sequence[float]]], *,
                 label: str = "object") -> None:
        self.tracker = tracker
        self.prompts = {int(f): {int(k): list(map(float, v)) for k, v in boxes.items()}
                        for f, boxes in prompts.items()}
        self.label = label
        for boxes in self.prompts.values():
            for obj_id, box in boxes.items():
                check_prompt_box(obj_id, box)

    def __call__(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> Instances:
        for obj_id, box in self.prompts.get(frame.index, {}).items():
            with stage_section("track"):
                added = self.tracker.add_object(obj_id, box=box)
            tracks = _merge(tracks, added)
        if tracks is None or len(tracks) == 0:
            return Instances.empty(frame.height, frame.width, device=frame.image.device)
        return tracks_to_instances(tracks, label=self.label)


def check_prompt_box(obj_id: int, box) -> None:
    """A box prompt must be x1, y1, x2, y2 with x2 > x1 and y2 > y1."""
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise ConfigError(f"prompt box for object {obj_id} must be x1,y1,x2,y2 with x2>x1, y2>y1; got "
                          f"{list(box)}")


def tracks_to_instances(tracks: Tracks, *, label: str = "object", class_id: int = 0) -> Instances:
    """Tracks as instances: boxes from the masks, score = sigmoid(object score), one class."""
    masks = tracks.masks
    boxes = mask_boxes(masks)
    n = len(tracks)
    return Instances(
        ids=torch.tensor(tracks.obj_ids, dtype=torch.int64, device=masks.device),
        class_ids=torch.full((n,), class_id, dtype=torch.int64, device=masks.device),
        scores=torch.sigmoid(tracks.scores.float().reshape(n)),
        boxes=boxes, masks=masks, labels=(label,) * n,
    )


def _merge(tracks: Tracks | None, added: Tracks) -> Tracks:
    """``tracks`` with the objects of ``added`` replacing or appended to them."""
    if tracks is None or len(tracks) == 0:
        return added
    keep = [i for i, obj_id in enumerate(tracks.obj_ids) if obj_id not in set(added.obj_ids)]
    idx = torch.tensor(keep, dtype=torch.long, device=tracks.masks.device)
    return Tracks(
        obj_ids=[tracks.obj_ids[i] for i in keep] + list(added.obj_ids),
        masks=torch.cat([tracks.masks[idx], added.masks]),
        logits=torch.cat([tracks.logits[idx], added.logits]),
        scores=torch.cat([tracks.scores[idx], added.scores]),
    )
