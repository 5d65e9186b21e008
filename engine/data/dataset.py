"""Reading a labelled collection back for training, and refusing a bad one with one clear line.

A collection is what ``Collector`` writes (``--collect DIR``), after labelling: ``annotations.json`` (COCO
instance segmentation) for the SAM 2 fine-tune, and ``data.yaml`` with ``images/`` and ``labels/`` for
the YOLO fine-tune. Any COCO dataset whose ``file_name``s are relative to the folder holding
``annotations.json`` reads the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.errors import DatasetError

COCO_FILE = "annotations.json"


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled image."""

    image: Path
    split: str  # "train" or "val"
    width: int
    height: int
    rles: tuple[dict, ...]  # COCO RLE per instance ({"size": [h, w], "counts": bytes}), for pycocotools
    class_ids: tuple[int, ...]  # 0-based class per instance

    def masks(self) -> np.ndarray:  # [N, H, W] bool
        from pycocotools import mask as mask_util

        if not self.rles:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return mask_util.decode(list(self.rles)).transpose(2, 0, 1).astype(bool)

    def read_image(self) -> np.ndarray:  # [H, W, 3] uint8 RGB
        picture = cv2.imread(str(self.image), cv2.IMREAD_COLOR)
        if picture is None:
            raise DatasetError(f"{self.image}: cannot be read as an image; replace or remove it from the dataset")
        if picture.shape[:2] != (self.height, self.width):
            raise DatasetError(f"{self.image}: is {picture.shape[1]}x{picture.shape[0]} but the annotations say "
                               f"{self.width}x{self.height}; the dataset is inconsistent")
        return np.ascontiguousarray(picture[:, :, ::-1])


@dataclass(frozen=True, slots=True)
class Collection:
    root: Path
    names: tuple[str, ...]  # class id -> name
    samples: tuple[Sample, ...]

    def split(self, name: str) -> tuple[Sample, ...]:
        return tuple(s for s in self.samples if s.split == name)


def read_collection(root: str | Path) -> Collection:
    """The labelled images of a collection folder, checked for consistency.

    Raises DatasetError naming the folder or file when: the folder or its annotations.json is missing;
    the JSON is unreadable or not COCO; it holds no image or no instance; an annotation names an unknown
    image or category, or its mask size differs from its image's; an image file is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; pass the folder written by `streamseg run --collect`")
    path = root / COCO_FILE
    if not path.is_file():
        raise DatasetError(f"{root}: holds no {COCO_FILE}; pass a folder written by `streamseg run --collect` "
                           "(or a COCO dataset with annotations.json beside its images)")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        images, annotations, categories = coco["images"], coco["annotations"], coco["categories"]
        names, base = _category_names(categories)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a readable COCO instance-segmentation file ({type(exc).__name__}: "
                           f"{str(exc)[:120]}); write it again with the collector") from None
    if not images or not annotations:
        raise DatasetError(f"{path}: empty dataset ({len(images)} images, {len(annotations)} annotations); "
                           "collect and label frames first")
    by_image: dict[int, list[dict]] = {}
    image_ids = {im.get("id") for im in images}
    for ann in annotations:
        if ann.get("image_id") not in image_ids:
            raise DatasetError(f"{path}: annotation {ann.get('id')} names image {ann.get('image_id')}, which is "
                               "not in the file; the dataset is inconsistent")
        by_image.setdefault(ann["image_id"], []).append(ann)
    samples = [_sample(root, path, im, by_image.get(im["id"], []), len(names), base) for im in images]
    return Collection(root=root, names=tuple(names), samples=tuple(samples))


def _category_names(categories: list[dict]) -> tuple[list[str], int]:
    """Class id -> name, and the first category id: COCO category ids 1..K (the collector's) or 0..K-1
    map to class ids 0..K-1."""
    ids = sorted(int(c["id"]) for c in categories)
    base = 1 if ids and ids[0] == 1 else 0
    names = {int(c["id"]) - base: str(c["name"]) for c in categories}
    if not names or sorted(names) != list(range(len(names))):
        raise ValueError(f"category ids {ids} are not consecutive from 0 or 1")
    return [names[i] for i in range(len(names))], base


def _sample(root: Path, path: Path, image: dict, anns: list[dict], classes: int, base: int) -> Sample:
    file = root / str(image["file_name"])
    if not file.is_file():
        raise DatasetError(f"{path}: names image {image['file_name']}, which is missing from {root}; the dataset "
                           "is inconsistent")
    height, width = int(image["height"]), int(image["width"])
    split = image.get("split") or ("val" if "/val/" in f"/{image['file_name']}" else "train")
    rles, class_ids = [], []
    for ann in anns:
        rle = _rle(ann, height, width, path)
        cls = int(ann["category_id"]) - base
        if not 0 <= cls < classes:
            raise DatasetError(f"{path}: annotation {ann.get('id')} has category {ann['category_id']}, which is "
                               "not among the categories; the dataset is inconsistent")
        rles.append(rle)
        class_ids.append(cls)
    return Sample(image=file, split=str(split), width=width, height=height, rles=tuple(rles),
                  class_ids=tuple(class_ids))


def _rle(ann: dict, height: int, width: int, path: Path) -> dict:
    from pycocotools import mask as mask_util

    seg = ann.get("segmentation")
    try:
        if isinstance(seg, list):  # polygons
            rle = mask_util.merge(mask_util.frPyObjects(seg, height, width))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_util.frPyObjects(seg, *seg["size"])
        else:
            rle = {"size": list(seg["size"]), "counts": seg["counts"].encode("ascii")
                   if isinstance(seg["counts"], str) else seg["counts"]}
    except (TypeError, KeyError, IndexError, ValueError):
        raise DatasetError(f"{path}: annotation {ann.get('id')} has no readable segmentation (polygons or RLE); "
                           "the dataset is inconsistent") from None
    if list(rle["size"]) != [height, width]:
        raise DatasetError(f"{path}: annotation {ann.get('id')}'s mask is {rle['size'][1]}x{rle['size'][0]} but its "
                           f"image is {width}x{height}; the dataset is inconsistent")
    return rle
