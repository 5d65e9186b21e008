"""Putting an annotator's labels into a collection, and the annotator for synthetic scenes.

A collection holds the engine's own instances as pre-annotations. Labelling replaces them with the
truth: ``relabel`` rewrites every kept frame's instances (the journal, the YOLO label files, and the
COCO / Label Studio / data.yaml views rebuilt from the journal), each file replaced atomically.

``scene_truth`` is the annotator for synthetic scenes: a kept frame's labels are the scene's exact
ground truth of that frame (visible masks, object ids as track ids, classes, score 1). It is what the
closed loop uses in place of a person.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from engine.data.collector import JOURNAL, Collector, CollectorConfig, _AtomicFile, _read_journal
from engine.data.exports import InstanceRecord, instance_records, yolo_label_lines
from engine.errors import DatasetError

Annotator = Callable[[dict], Sequence[InstanceRecord]]  # a journal record -> the frame's true instances


def relabel(folder: str | os.PathLike, annotator: Annotator, *, names: Sequence[str]) -> int:
    """Replace each kept frame's instances with ``annotator(record)``; returns the frames relabelled.

    ``names`` are the class names (class id -> label) of the labels. Raises DatasetError when ``folder``
    is not a collection.
    """
    folder = Path(folder)
    journal = folder / JOURNAL
    if not journal.is_file():
        raise DatasetError(f"{folder}: holds no {JOURNAL}; pass a folder written by `streamseg run --collect`")
    count = 0
    with _AtomicFile(journal, binary=False) as out:
        for record in _read_journal(journal):
            instances = list(annotator(record))
            label = folder / record["file"].replace("images/", "labels/", 1).rsplit(".", 1)[0]
            lines = yolo_label_lines(instances, record["width"], record["height"])
            with _AtomicFile(Path(f"{label}.txt"), binary=False) as f:
                f.write("\n".join(lines) + "\n" if lines else "")
            record = {**record, "instances": [i.as_dict() for i in instances], "labelled": True}
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            count += 1
    Collector(folder, names=names, config=CollectorConfig()).close()  # rebuilds the JSON and YAML views
    return count


def scene_truth(scene) -> Annotator:
    """The annotator of a ``SyntheticScene``: a record's labels are the truth of its frame."""
    def annotate(record: dict) -> list[InstanceRecord]:
        gt = scene.ground_truth(int(record["frame"]))
        keep = gt.masks.reshape(len(gt.ids), -1).any(1) if len(gt.ids) else np.zeros(0, dtype=bool)
        masks, ids, classes = gt.masks[keep], gt.ids[keep], gt.class_ids[keep]
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
        return instance_records(masks, ids.tolist(), classes.tolist(), [scene.class_names[c] for c in classes],
                                [1.0] * len(ids), boxes)

    return annotate


def scenes_truth(scenes: Mapping[str, object]) -> Annotator:
    """The annotator of a collection gathered from several synthetic scenes, one run each with its own
    file-name prefix (``--collect-prefix``): ``{prefix: SyntheticScene}``; a record's labels are the truth
    of its frame in the scene its file name's prefix names (the longest prefix that matches)."""
    annotators = {prefix: scene_truth(scene) for prefix, scene in scenes.items()}
    by_length = sorted(annotators, key=len, reverse=True)

    def annotate(record: dict) -> list[InstanceRecord]:
        stem = Path(record["file"]).stem
        prefix = next((p for p in by_length if stem.startswith(p)), None)
        if prefix is None:
            raise DatasetError(f"{record['file']}: no scene has its file-name prefix (scenes: {sorted(annotators)}); "
                               "give each run's --collect-prefix with its scene")
        return annotators[prefix](record)

    return annotate
