"""Panoptic quality of a results JSONL against a synthetic scene with stuff (``stuff=1``): semantic mIoU,
PQ / SQ / RQ per frame (torchmetrics, ``engine.eval.panoptic``) and STQ over the video
(``engine.eval.stq``).

Classes are matched by name, because the run's label set (Cityscapes' by default, or the user's label
file) and the scene's classes are different lists. The scene gives the truth: its stuff (road, sidewalk,
building, vegetation, sky) and its things (disc, box, triangle, blob), each object with its id. The JSONL
gives the prediction: each ``"stuff"`` entry paints its mask with its label, and each instance paints its
mask with its label and id (every instance listed, as a user reads the file). A predicted name the scene
does not have is a class of its own, which the truth never holds: its pixels count against the scores.
Pixels in no mask are void in the prediction (unlabelled: a miss wherever the truth has a class).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_util

from engine.errors import SourceError
from engine.eval.results import read_result_lines
from engine.eval.panoptic import PanopticFrame, mean_iou, panoptic_quality
from engine.eval.stq import segmentation_and_tracking_quality
from engine.sources.synthetic import CLASS_NAMES, STUFF_NAMES, SyntheticScene


@dataclass(frozen=True, slots=True)
class PanopticReport:
    frames: int
    miou: float  # semantic mIoU over the video, over the classes present in truth or prediction
    pq: float  # panoptic quality, the mean of the per-frame values
    sq: float  # segmentation quality (PQ's), mean over frames
    rq: float  # recognition quality, mean over frames
    stq: float  # segmentation and tracking quality over the video
    aq: float  # STQ's association quality
    stq_sq: float  # STQ's segmentation quality (the video's mIoU)
    pq_per_frame: tuple[float, ...]  # in frame order
    classes: tuple[str, ...]  # the classes scored: the scene's stuff and things, then predicted-only names

    def format(self) -> str:
        rows = [("mIoU", self.miou), ("PQ", self.pq), ("SQ", self.sq), ("RQ", self.rq), ("STQ", self.stq),
                ("AQ", self.aq), ("SQ (STQ)", self.stq_sq)]
        return "\n".join(f"{name:<14}{value:.4f}" for name, value in rows)


class _Classes:
    """Class names to indices: the scene's classes first, names only the prediction has appended."""

    def __init__(self) -> None:
        self.names: list[str] = [*STUFF_NAMES, *CLASS_NAMES]
        self.is_thing: list[bool] = [False] * len(STUFF_NAMES) + [True] * len(CLASS_NAMES)
        self._index = {name: i for i, name in enumerate(self.names)}

    def index(self, name: str, *, thing: bool) -> int:
        found = self._index.get(name)
        if found is None:
            found = self._index[name] = len(self.names)
            self.names.append(name)
            self.is_thing.append(thing)
        return found


def read_panoptic_records(path: str | os.PathLike) -> dict[int, dict] | None:
    """Frame index -> the JSONL record, for a results file whose lines carry ``"stuff"`` (a run with a
    segmenter); None when no line does. SourceError for a line without instances or with stuff in a form
    the contract does not allow."""
    records = read_result_lines(path, _checked_stuff)
    with_stuff = sum("stuff" in record for record in records.values())
    if with_stuff and with_stuff != len(records):
        raise SourceError(f"{path}: {with_stuff} of {len(records)} lines carry stuff; give one run's whole file")
    return records if with_stuff else None


def _checked_stuff(record: dict) -> dict:
    if "stuff" in record and not all(isinstance(s["label"], str) and "counts" in s["mask"]
                                     for s in record["stuff"]):
        raise ValueError("a stuff entry without a label or a mask")
    return record


def _decode(mask: dict, size: tuple[int, int], where: str) -> np.ndarray:  # [H, W] bool
    if tuple(mask["size"]) != size:
        raise SourceError(f"{where}: a mask of size {mask['size']}, but the scene's frames are {list(size)}; "
                          "was it run on this scene?")
    return mask_util.decode({"size": mask["size"], "counts": mask["counts"].encode()}).astype(bool)


def predicted_frame(record: dict, classes: _Classes, size: tuple[int, int]) -> PanopticFrame:
    """A JSONL record as a panoptic frame: stuff painted by label, instances by label and id (+1, so that a
    detector-only run's id 0 stays an instance)."""
    semantic = np.full(size, -1, dtype=np.int64)
    instance = np.zeros(size, dtype=np.int64)
    where = f"frame {record['frame']}"
    for entry in record.get("stuff", ()):
        semantic[_decode(entry["mask"], size, where)] = classes.index(entry["label"], thing=False)
    for inst in record["instances"]:
        mask = _decode(inst["mask"], size, where)
        semantic[mask] = classes.index(inst["label"], thing=True)
        instance[mask] = int(inst["id"]) + 1
    return PanopticFrame(semantic=semantic, instance=instance)


def truth_frame(scene: SyntheticScene, i: int) -> PanopticFrame:
    """Scene frame ``i`` as a panoptic frame in ``_Classes``' order: stuff, then things with ids + 1."""
    gt = scene.ground_truth(i)
    object_class = np.array([o.class_id for o in scene.objects] or [0], dtype=np.int64)
    thing = gt.id_map >= 0
    semantic = np.where(thing, len(STUFF_NAMES) + object_class[np.maximum(gt.id_map, 0)], gt.stuff_map)
    return PanopticFrame(semantic=semantic.astype(np.int64), instance=np.where(thing, gt.id_map + 1, 0))


def evaluate_panoptic(records: dict[int, dict], scene: SyntheticScene) -> PanopticReport:
    """Score a run's panoptic records (``read_panoptic_records``) against the scene's truth, over the
    frames the records cover."""
    if not scene.stuff:
        raise SourceError("the results carry stuff but the truth scene has none; pass the scene as it was run, "
                          "with stuff=1")
    missing = [i for i in records if not 0 <= i < scene.frames]
    if missing:
        raise SourceError(f"results hold frame {missing[0]}, but the scene has frames 0..{scene.frames - 1}; "
                          "was it run on this scene?")
    classes = _Classes()
    size = (scene.height, scene.width)
    order = sorted(records)
    truth = [truth_frame(scene, i) for i in order]
    predicted = [predicted_frame(records[i], classes, size) for i in order]
    things = [i for i, t in enumerate(classes.is_thing) if t]
    stuffs = [i for i, t in enumerate(classes.is_thing) if not t]
    per_frame = [panoptic_quality(t, p, things=things, stuffs=stuffs) for t, p in zip(truth, predicted)]
    stq = segmentation_and_tracking_quality(truth, predicted, num_classes=len(classes.names), things=things)
    return PanopticReport(
        frames=len(order), miou=mean_iou([f.semantic for f in truth], [f.semantic for f in predicted],
                                         len(classes.names)),
        pq=_mean([s.pq for s in per_frame]), sq=_mean([s.sq for s in per_frame]), rq=_mean([s.rq for s in per_frame]),
        stq=stq.stq, aq=stq.aq, stq_sq=stq.sq, pq_per_frame=tuple(s.pq for s in per_frame),
        classes=tuple(classes.names))


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")
