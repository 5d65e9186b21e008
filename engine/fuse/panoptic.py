"""Panoptic fusion: the frame's tracked instances laid over the semantic stuff, one answer per pixel."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from engine.types import Instances, PanopticMap, SemanticMap, StuffSegments


def fuse_panoptic(instances: Instances, semantic: SemanticMap, *, is_thing: Sequence[bool],
                  class_map: Sequence[int] | None = None, keep_uncovered_things: bool = False,
                  frame_index: int | None = None) -> PanopticMap:
    """Every pixel gets (thing class, track id), a stuff class, or void.

    - An instance's pixels take its class (``class_map[instance.class_id]``: detector class -> label-set
      class; identity when None) and its track id. Instances are expected not to overlap (the fuser's
      guarantee); where they do, the earlier instance (best first) keeps the pixel. An instance whose
      class maps to -1 (a detector class the label set lacks, e.g. COCO's "dog" under Cityscapes) still
      takes its pixels from the stuff under it, but they are void: the label set has no class to give.
    - Other pixels take the semantic map's class when it is stuff.
    - Semantic "thing" pixels no instance covers are void (class -1): the semantic model saw a thing the
      detector and tracker did not, and a thing without an id cannot be scored or followed. With
      ``keep_uncovered_things`` they keep the thing class with track id 0 (a region without an id).

    Args:
        instances: the frame's final instances (ids >= 1; masks [N, H, W] bool at frame resolution).
        semantic: the semantic map at the same resolution (fresh or reused).
        is_thing: [C] per label-set class, True for things.
        class_map: detector class id -> label-set class index (a thing) or -1, for every class the
            instances use (``class_map_by_name`` builds one).
        frame_index: the frame the map is for (default: the semantic map's, which differs on a frame that
            reuses an earlier map).
    Returns:
        A ``PanopticMap`` on the semantic map's device.
    Raises:
        ValueError: masks of another size, a track id below 1, or a class mapped to a stuff class.
    """
    labels = semantic.labels
    h, w = labels.shape
    if len(instances) and tuple(instances.masks.shape[1:]) != (h, w):
        raise ValueError(f"instance masks {tuple(instances.masks.shape[1:])} and semantic map {(h, w)} differ")
    if len(instances) and int(instances.ids.min()) < 1:
        raise ValueError("panoptic fusion needs track ids >= 1 (0 means 'no instance')")
    thing = torch.tensor(list(is_thing), dtype=torch.bool, device=labels.device)
    valid = labels >= 0
    thing_pixel = valid & thing[labels.clamp_min(0)]
    out_class = labels.clone()
    if not keep_uncovered_things:
        out_class[thing_pixel] = -1
    out_id = torch.zeros((h, w), dtype=torch.int64, device=labels.device)
    cls = instances.class_ids.tolist()
    mapped = cls if class_map is None else [int(class_map[c]) for c in cls]
    for k in reversed(range(len(instances))):  # earlier (better) instances are painted last and win
        mask = instances.masks[k].to(labels.device)
        if mapped[k] == -1:  # no label-set class: the instance's pixels are void, not the stuff under it
            out_class[mask] = -1
            out_id[mask] = 0
            continue
        if not 0 <= mapped[k] < len(is_thing) or not is_thing[mapped[k]]:
            raise ValueError(f"instance class {cls[k]} maps to label-set class {mapped[k]}, which is not a thing")
        out_class[mask] = mapped[k]
        out_id[mask] = int(instances.ids[k])
    return PanopticMap(semantic=out_class, instance=out_id,
                       frame_index=semantic.frame_index if frame_index is None else frame_index)


def class_map_by_name(detector_names: Sequence[str], label_names: Sequence[str],
                      is_thing: Sequence[bool]) -> tuple[int, ...]:
    """Detector class id -> label-set thing class with the same name (case and surrounding spaces
    ignored), or -1 where the label set has no such thing; for ``fuse_panoptic``'s ``class_map``.

    With COCO's names (YOLOv8-seg, Mask R-CNN) and Cityscapes' classes: person, bicycle, car, motorcycle,
    bus, train and truck map; the other COCO classes map to -1. A name that is stuff in the label set
    maps to -1 as well: an instance is never painted as stuff.
    """
    things = {name.strip().lower(): i for i, (name, thing) in enumerate(zip(label_names, is_thing, strict=True))
              if thing}
    return tuple(things.get(name.strip().lower(), -1) for name in detector_names)


def stuff_segments(panoptic: PanopticMap, *, names: Sequence[str], is_thing: Sequence[bool]) -> StuffSegments:
    """A panoptic map's stuff: one segment per stuff class present, in class order, made of the pixels of
    that class that no instance covers (``PanopticMap.instance == 0``). So no stuff mask overlaps an
    instance mask of the same frame."""
    semantic, instance = panoptic.semantic, panoptic.instance
    stuff = torch.tensor([not t for t in is_thing], dtype=torch.bool, device=semantic.device)
    free = (semantic >= 0) & (instance == 0)
    present = torch.unique(semantic[free])
    classes = present[stuff[present]]
    masks = free[None] & (semantic[None] == classes.view(-1, 1, 1))  # [K, H, W] bool
    return StuffSegments(class_ids=classes.to(torch.int64), labels=tuple(names[c] for c in classes.tolist()),
                         masks=masks)


class PanopticFusion:
    """The pipeline's panoptic resolution: a frame's final instances laid over its semantic map.

    An instance takes the label-set thing class whose name is its label (``class_map_by_name``'s rule:
    case and surrounding spaces ignored), so detectors, trackers and user prompts with any class list
    fit any label set; an instance whose label is not a thing of the set is void. Instance ids are
    shifted by ``PanopticMap.id_offset`` = 1 so that the per-frame id 0 of a detector-only run stays an
    instance. See ``fuse_panoptic`` for the per-pixel rule.

    Args:
        names: [C] the label set's class names, in channel order.
        is_thing: [C] True for its thing classes.
        keep_uncovered_things: keep semantic thing pixels no instance covers as thing-class regions
            without an id (default: void).
    """

    ID_OFFSET = 1

    def __init__(self, *, names: Sequence[str], is_thing: Sequence[bool], keep_uncovered_things: bool = False) -> None:
        if len(names) != len(is_thing):
            raise ValueError(f"{len(names)} class names but {len(is_thing)} thing flags")
        self.names = tuple(names)
        self.is_thing = tuple(bool(t) for t in is_thing)
        self.keep_uncovered_things = keep_uncovered_things
        self._class_by_label: dict[str, int] = {}

    def __call__(self, frame_index: int, instances: Instances,
                 semantic: SemanticMap) -> tuple[PanopticMap, StuffSegments]:
        """The frame's panoptic map and stuff segments (both on the semantic map's device)."""
        classes = [self._class_of(label) for label in instances.labels]
        shifted = dataclasses.replace(
            instances, ids=instances.ids + self.ID_OFFSET,
            class_ids=torch.tensor(classes, dtype=torch.int64, device=instances.ids.device))
        panoptic = fuse_panoptic(shifted, semantic, is_thing=self.is_thing, frame_index=frame_index,
                                 keep_uncovered_things=self.keep_uncovered_things)
        panoptic = dataclasses.replace(panoptic, id_offset=self.ID_OFFSET)
        return panoptic, stuff_segments(panoptic, names=self.names, is_thing=self.is_thing)

    def _class_of(self, label: str) -> int:
        found = self._class_by_label.get(label)
        if found is None:
            found = self._class_by_label[label] = class_map_by_name((label,), self.names, self.is_thing)[0]
        return found
