"""The panoptic scene layer end to end, as a user runs it: ``streamseg run synthetic:...,stuff=1
--segmenter deeplabv3plus --weights random --tracker-weights random --panoptic-dir out/ --jsonl r.jsonl``
runs to the end; the PNGs and the JSON follow the COCO panoptic format's rules (as panopticapi's
``pq_compute`` reads them); the JSONL's stuff masks decode with pycocotools and never overlap an instance
mask; ``streamseg eval`` scores the run. Sizes are cut down so each run takes seconds a frame on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from tests.test_cli import streamseg

SPEC = "synthetic:seed=1,frames=12,size=320x240,stuff=1"
SMALL = ("--tracker-size", "256", "--imgsz", "320", "--segment-imgsz", "128", "--max-tracks", "3", "--quiet")


def _decode(mask: dict) -> np.ndarray:  # [H, W] bool
    return mask_util.decode({"size": mask["size"], "counts": mask["counts"].encode()}).astype(bool)


def _check_coco_panoptic(folder: Path, records: list[dict]) -> list[dict]:
    """The COCO panoptic rules, per frame; returns the annotations, in frame order."""
    doc = json.loads((folder / "panoptic.json").read_text())
    assert set(doc) == {"info", "images", "annotations", "categories"}
    categories = {c["id"]: c for c in doc["categories"]}
    assert len(categories) == len(doc["categories"])  # category ids unique
    assert [im["id"] for im in doc["images"]] == [a["image_id"] for a in doc["annotations"]] \
        == [r["frame"] for r in records]
    assert sorted(p.name for p in (folder / "panoptic").iterdir()) == [a["file_name"] for a in doc["annotations"]]
    for image, ann, record in zip(doc["images"], doc["annotations"], records, strict=True):
        rgb = np.asarray(Image.open(folder / "panoptic" / ann["file_name"]), dtype=np.uint32)
        assert rgb.shape == (image["height"], image["width"], 3) == (240, 320, 3)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        listed = [s["id"] for s in ann["segments_info"]]
        assert len(set(listed)) == len(listed) and 0 not in listed  # ids unique per image; 0 is void
        assert set(np.unique(ids).tolist()) - {0} == set(listed)  # segments_info matches the PNG
        for s in ann["segments_info"]:
            mask = ids == s["id"]
            ys, xs = np.nonzero(mask)
            assert s["area"] == mask.sum() and s["iscrowd"] == 0
            assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ("track_id" in s) == bool(categories[s["category_id"]]["isthing"])  # a known category
        # the stuff segments are the JSONL's stuff, pixel for pixel
        stuff = {categories[s["category_id"]]["name"]: ids == s["id"] for s in ann["segments_info"]
                 if not categories[s["category_id"]]["isthing"]}
        assert sorted(stuff) == sorted(s["label"] for s in record["stuff"])
        for s in record["stuff"]:
            assert (stuff[s["label"]] == _decode(s["mask"])).all()
    return doc["annotations"]


def _check_stuff_against_instances(records: list[dict]) -> None:
    for record in records:
        stuff = [_decode(s["mask"]) for s in record["stuff"]]
        instances = [_decode(i["mask"]) for i in record["instances"]]
        assert all(s["area"] == m.sum() for s, m in zip(record["stuff"], stuff))
        layers = np.stack(stuff + instances) if stuff + instances else np.zeros((0, 240, 320), dtype=bool)
        assert layers.sum(axis=0).max() <= 1  # no stuff overlaps another stuff class or an instance


@pytest.mark.slow
def test_the_issues_command_runs_to_the_end_with_valid_panoptic_outputs(tmp_path):
    out, jsonl = tmp_path / "out", tmp_path / "r.jsonl"
    proc = streamseg("run", SPEC, "--segmenter", "deeplabv3plus", "--weights", "random", "--tracker-weights",
                     "random", "--panoptic-dir", f"{out}/", "--jsonl", str(jsonl), *SMALL, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "segmenter deeplabv3plus" in proc.stderr and "\nsegment " in proc.stdout
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(12))
    assert sum(len(r["instances"]) for r in records) > 0 and all(r["stuff"] for r in records)
    _check_coco_panoptic(out, records)
    _check_stuff_against_instances(records)
    report = tmp_path / "report.json"
    scored = streamseg("eval", str(jsonl), "--truth", SPEC, "--json", str(report))
    assert scored.returncode == 0, scored.stderr
    panoptic = json.loads(report.read_text())["panoptic"]
    assert panoptic["frames"] == 12 and all(0.0 <= panoptic[k] <= 1.0 for k in ("miou", "pq", "stq"))
    assert "\nPQ " in scored.stdout and "\nSTQ " in scored.stdout


@pytest.mark.slow
def test_tracked_things_keep_their_ids_in_the_panoptic_files(tmp_path):
    """With a label file whose things are the detector's classes, every tracked instance is a thing
    segment of the PNG whose track_id is its JSONL id, over the same pixels."""
    labels = tmp_path / "labels.txt"
    stuff = ["road", "sidewalk", "building", "vegetation", "sky"]
    # the random detector's class names are its class indices
    labels.write_text("".join(f"stuff {n}\n" for n in stuff) + "".join(f"thing {c}\n" for c in range(80)))
    out, jsonl = tmp_path / "out", tmp_path / "r.jsonl"
    proc = streamseg("run", SPEC, "--segmenter", "deeplabv3-mobilenet", "--segment-labels", str(labels),
                     "--weights", "random", "--tracker-weights", "random", "--panoptic-dir", str(out),
                     "--jsonl", str(jsonl), "--max-frames", "6", *SMALL, timeout=600)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    annotations = _check_coco_panoptic(out, records)
    _check_stuff_against_instances(records)
    tracked = 0
    for ann, record in zip(annotations, records, strict=True):
        rgb = np.asarray(Image.open(out / "panoptic" / ann["file_name"]), dtype=np.uint32)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        things = {s["track_id"]: ids == s["id"] for s in ann["segments_info"] if "track_id" in s}
        for inst in record["instances"]:
            mask = _decode(inst["mask"])
            if mask.any():
                assert (things[inst["id"]] == mask).all()
                tracked += 1
        assert len(things) == sum(_decode(i["mask"]).any() for i in record["instances"])
    assert tracked > 0
