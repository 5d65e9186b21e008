"""COCO panoptic output: a PNG per frame in the COCO panoptic id encoding plus one JSON.

Format (Kirillov et al. 2019, the COCO panoptic annotation format as panopticapi reads it):

- ``DIR/panoptic/NNNNNN.png`` (frame index, 6 digits): RGB, each pixel's segment id is
  ``R + 256 * G + 256**2 * B``; 0 is void (unlabelled).
- ``DIR/panoptic.json``: ``{"info", "images", "annotations", "categories"}``. One image and one annotation
  per frame; the annotation's ``segments_info`` lists each segment id in its PNG once, with
  ``category_id`` (the label set's COCO ids), ``iscrowd`` 0, ``bbox`` [x, y, w, h], ``area`` (pixels),
  and, for thing segments, ``track_id``: the instance's ``id`` in the JSONL of the same run (an extra
  key COCO readers ignore). Stuff classes are one segment per class per frame. ``images[].file_name``
  names the frame's picture (NNNNNN.jpg), which this sink does not write (the overlay sink writes
  pictures).

The JSON is rewritten whole, atomically (a temporary file renamed into place), on ``close`` and every
``flush_every`` frames, so an interrupted run leaves a valid JSON that describes the PNGs up to the last
flush; PNGs are each written whole before their frame is listed. The directory is checked when the
writer is made and created with the first frame, so a run that delivers no frame writes nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from engine.errors import SinkError
from engine.ops import rle_encode
from engine.sinks.base import check_folder
from engine.types import FrameResult, PanopticMap, StuffSegments


def stuff_records(stuff: StuffSegments) -> list[dict]:
    """A frame's stuff segments as JSONL records, one per stuff class present, in class order:
    ``{"class_id": label-set class index, "label": name, "area": pixels, "mask": COCO compressed RLE}``.

    The segments hold the pixels no instance covers (``engine.fuse.stuff_segments``), so a stuff mask
    never overlaps an instance mask of the same frame. ``pycocotools.mask.decode({"size": m["size"],
    "counts": m["counts"].encode()})`` gives the mask back.
    """
    if not len(stuff):
        return []
    areas = stuff.areas.tolist()
    return [{"class_id": c, "label": label, "area": int(a), "mask": rle}
            for c, label, a, rle in zip(stuff.class_ids.tolist(), stuff.labels, areas, rle_encode(stuff.masks))]


class PanopticWriter:
    """Writes each result's ``PanopticMap`` (a sink: ``write(result)``), or maps given one by one
    (``write_map``), as COCO panoptic files under ``directory``.

    Args:
        directory: created with the first frame if missing.
        categories: the label set's COCO categories in channel order (``LabelSet.coco_categories()``).
        flush_every: frames between JSON rewrites.
    Raises:
        SinkError: ``directory`` cannot be created or written (from the constructor), or a file cannot be
            written (from ``write``/``close``), naming the path and ``--panoptic-dir``.
    """

    wants_overlay = False

    def __init__(self, directory: str | os.PathLike, categories: list[dict], *, flush_every: int = 100) -> None:
        self.directory = Path(directory)
        self.png_dir = self.directory / "panoptic"
        check_folder(self.png_dir, option="--panoptic-dir")
        self.categories = categories
        self._category_ids = np.array([c["id"] for c in categories], dtype=np.int64)
        self._is_thing = np.array([bool(c["isthing"]) for c in categories])
        self.flush_every = flush_every
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def write(self, result: FrameResult) -> None:
        if result.panoptic is None:
            raise SinkError(f"frame {result.frame.index} has no panoptic map for {self.directory}: the COCO "
                            "panoptic output needs a semantic segmenter (--segmenter)")
        self.write_map(result.panoptic)

    def write_map(self, panoptic: PanopticMap) -> None:
        """Write one frame's PNG and remember its segments."""
        from PIL import Image

        if not self.images:
            try:
                self.png_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SinkError(f"cannot create {self.png_dir}: {exc.strerror}; choose another "
                                "--panoptic-dir") from None

        semantic = panoptic.semantic.cpu().numpy()
        instance = panoptic.instance.cpu().numpy()
        h, w = semantic.shape
        ids = np.zeros((h, w), dtype=np.uint32)
        segments = []
        # one key per segment: (class, track id); stuff has track id 0
        keys = np.unique(np.stack([semantic, instance], -1)[semantic >= 0].reshape(-1, 2), axis=0)
        for seg_id, (cls, track) in enumerate(keys.tolist(), start=1):
            mask = (semantic == cls) & (instance == track)
            ids[mask] = seg_id
            ys, xs = np.nonzero(mask)
            x0, y0 = int(xs.min()), int(ys.min())
            info = {"id": seg_id, "category_id": int(self._category_ids[cls]), "iscrowd": 0,
                    "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1], "area": int(mask.sum())}
            if self._is_thing[cls] and track > 0:  # track 0: a thing region without an instance
                info["track_id"] = int(track) - panoptic.id_offset
            segments.append(info)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)
        name = f"{panoptic.frame_index:06d}"
        path = self.png_dir / f"{name}.png"
        try:
            Image.fromarray(rgb).save(path)
        except OSError as exc:
            raise SinkError(f"writing {path} failed: {exc.strerror or exc}") from None
        self.images.append({"id": panoptic.frame_index, "file_name": f"{name}.jpg", "width": w, "height": h})
        self.annotations.append({"image_id": panoptic.frame_index, "file_name": f"{name}.png",
                                 "segments_info": segments})
        if len(self.images) % self.flush_every == 0:
            self._write_json()

    def _write_json(self) -> None:
        doc = {"info": {"description": "streamseg panoptic output"}, "images": self.images,
               "annotations": self.annotations, "categories": self.categories}
        path = self.directory / "panoptic.json"
        part = path.with_name(path.name + ".part")
        try:
            part.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(part, path)
        except OSError as exc:
            raise SinkError(f"writing {path} failed: {exc.strerror}; choose another --panoptic-dir") from None

    def close(self) -> None:
        if self.images:
            self._write_json()
