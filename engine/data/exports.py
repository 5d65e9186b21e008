"""One kept frame's instances in three labelling formats: COCO, YOLO-seg and Label Studio.

- COCO instance segmentation (https://cocodataset.org/#format-data): masks as compressed RLE, exact to
  the pixel, ``iscrowd`` 0 (``pycocotools.coco.COCO.annToMask`` reads RLE for either value). Category ids
  are class ids + 1: COCO keeps 0 for "no category" by convention.
- YOLO-seg (Ultralytics' dataset format): one text line per instance, ``class x1 y1 x2 y2 ...`` with the
  outline's vertices normalised to [0, 1] by the image's width and height.
- Label Studio pre-annotations (``predictions`` of the Basic Label Studio JSON task format, PolygonLabels
  results): vertices as percentages (0-100) of the image size, with ``original_width``/``original_height``.

Outlines are OpenCV's external contours (``cv2.findContours``, ``CHAIN_APPROX_SIMPLE``) through the
centres of the boundary pixels, so a polygon drawn back covers the mask minus about half a pixel along
its edge, and holes are lost; the COCO RLE keeps the exact mask. An instance in several pieces (split by
an occluder) is one YOLO line: its pieces are joined the way Ultralytics' own COCO converter joins them
(``merge_multi_segment``); Label Studio gets one polygon region per piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_util

LABEL_STUDIO_FROM = "label"  # the PolygonLabels control's name in the labelling config
LABEL_STUDIO_TO = "image"  # the Image object's name (and its $image data key)
_MIN_VERTICES = 3


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One instance of a kept frame, in plain Python values, as every export reads it."""

    id: int  # track id
    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels (the engine's box)
    rle: dict  # COCO compressed RLE: {"size": [h, w], "counts": str}
    polygons: tuple[tuple[float, ...], ...]  # outlines, each x1, y1, x2, y2, ... in pixels

    def as_dict(self) -> dict:
        return {"id": self.id, "class_id": self.class_id, "label": self.label, "score": round(self.score, 5),
                "box": [round(v, 2) for v in self.box], "mask": self.rle,
                "polygons": [list(p) for p in self.polygons]}

    @staticmethod
    def from_dict(d: dict) -> InstanceRecord:
        return InstanceRecord(id=int(d["id"]), class_id=int(d["class_id"]), label=str(d["label"]),
                              score=float(d["score"]), box=tuple(d["box"]), rle=d["mask"],
                              polygons=tuple(tuple(p) for p in d["polygons"]))


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:  # [H, W] bool -> K x [P, 2] float64 (x, y) pixels
    """The outer outlines of a mask's pieces, largest first; pieces with fewer than 3 vertices are dropped."""
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    outlines = [c.reshape(-1, 2).astype(np.float64) for c in contours if len(c) >= _MIN_VERTICES]
    outlines.sort(key=lambda c: -cv2.contourArea(c.astype(np.float32)))
    return outlines


def instance_records(masks: np.ndarray,  # [N, H, W] bool
                     ids: Sequence[int], class_ids: Sequence[int], labels: Sequence[str], scores: Sequence[float],
                     boxes: Sequence[Sequence[float]], rles: Sequence[dict] | None = None) -> list[InstanceRecord]:
    """Records for a frame's instances; instances whose mask is empty are left out (nothing to label).

    ``rles`` may pass encodings already made (``engine.ops.rle_encode``); else pycocotools encodes.
    """
    if rles is None and len(masks):
        encoded = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        rles = [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
                for r in encoded]
    out = []
    for i, mask in enumerate(masks):
        polygons = tuple(tuple(float(v) for v in p.reshape(-1)) for p in mask_polygons(mask))
        if not polygons:
            continue
        out.append(InstanceRecord(id=int(ids[i]), class_id=int(class_ids[i]), label=str(labels[i]),
                                  score=float(scores[i]), box=tuple(float(v) for v in boxes[i]),
                                  rle=rles[i], polygons=polygons))
    return out


def coco_image(image_id: int, file_name: str, width: int, height: int, **extra) -> dict:
    return {"id": image_id, "file_name": file_name, "width": width, "height": height, **extra}


def coco_annotation(annotation_id: int, image_id: int, inst: InstanceRecord) -> dict:
    """A COCO annotation: the RLE mask, its area and box (from the mask), plus the engine's score and
    track id (extra keys, which COCO readers ignore)."""
    rle = {"size": inst.rle["size"], "counts": inst.rle["counts"].encode("ascii")}
    x, y, w, h = (float(v) for v in mask_util.toBbox(rle))
    return {"id": annotation_id, "image_id": image_id, "category_id": inst.class_id + 1,
            "segmentation": inst.rle, "area": float(mask_util.area(rle)), "bbox": [x, y, w, h],
            "iscrowd": 0, "score": round(inst.score, 5), "track_id": inst.id}


def coco_categories(names: Sequence[str]) -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(names)]


def yolo_label_lines(instances: Sequence[InstanceRecord], width: int, height: int) -> list[str]:
    """YOLO-seg lines, one per instance: ``class x1 y1 ...`` normalised to [0, 1], six decimals."""
    lines = []
    scale = np.array([width, height], dtype=np.float64)
    for inst in instances:
        pieces = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in inst.polygons]
        if len(pieces) > 1:
            from ultralytics.data.converter import merge_multi_segment

            outline = np.concatenate(merge_multi_segment([p.reshape(-1).tolist() for p in pieces]))
        else:
            outline = pieces[0]
        xy = np.clip(outline / scale, 0.0, 1.0).reshape(-1)
        lines.append(f"{inst.class_id} " + " ".join(f"{v:.6f}" for v in xy))
    return lines


def label_studio_task(image_url: str, instances: Sequence[InstanceRecord], width: int, height: int, *,
                      frame: int, model_version: str, score: float | None = None) -> dict:
    """One Label Studio task: the image and the engine's instances as a prediction (PolygonLabels).

    ``score`` (in [0, 1]) is the prediction's score; Label Studio sorts and filters tasks by it.
    """
    results = []
    for inst in instances:
        for k, piece in enumerate(inst.polygons):
            xy = np.asarray(piece, dtype=np.float64).reshape(-1, 2)
            points = [[round(float(np.clip(x / width * 100.0, 0, 100)), 4),
                       round(float(np.clip(y / height * 100.0, 0, 100)), 4)] for x, y in xy]
            results.append({
                "id": f"f{frame}-t{inst.id}-{k}", "type": "polygonlabels",
                "from_name": LABEL_STUDIO_FROM, "to_name": LABEL_STUDIO_TO,
                "original_width": int(width), "original_height": int(height), "image_rotation": 0,
                "value": {"points": points, "polygonlabels": [inst.label]},
                "score": round(inst.score, 5),
            })
    prediction = {"model_version": model_version, "result": results}
    if score is not None:
        prediction["score"] = round(float(score), 5)
    return {"data": {LABEL_STUDIO_TO: image_url, "frame": frame}, "predictions": [prediction]}


def label_studio_config(names: Sequence[str]) -> str:
    """The labelling config (XML) the tasks match: an Image and a PolygonLabels control with every class."""
    from xml.sax.saxutils import quoteattr

    labels = "\n".join(f"    <Label value={quoteattr(n)}/>" for n in names)
    return (f'<View>\n  <Image name="{LABEL_STUDIO_TO}" value="${LABEL_STUDIO_TO}" zoom="true"/>\n'
            f'  <PolygonLabels name="{LABEL_STUDIO_FROM}" toName="{LABEL_STUDIO_TO}">\n{labels}\n'
            "  </PolygonLabels>\n</View>\n")
