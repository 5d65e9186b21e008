"""The COCO panoptic writer's files follow the format's rules (checked the way panopticapi's
``pq_compute`` reads them): every id in a PNG is listed once in its ``segments_info`` and every listed
id is in the PNG, areas and boxes match the pixels, categories exist and kinds agree, 0 is void. And the
JSONL's stuff records decode with pycocotools and never overlap the instances."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import SinkError
from engine.segment import CITYSCAPES
from engine.sinks.panoptic import PanopticWriter, stuff_records
from engine.types import PanopticMap


def _map(index: int) -> PanopticMap:
    semantic = torch.full((40, 60), 0, dtype=torch.int64)  # road
    semantic[:10] = 10  # sky
    semantic[30:, :5] = -1  # void
    instance = torch.zeros((40, 60), dtype=torch.int64)
    semantic[15:25, 10:20], instance[15:25, 10:20] = 13, 7  # car, track 7
    semantic[15:25, 30:40], instance[15:25, 30:40] = 13, 9  # car, track 9
    return PanopticMap(semantic=semantic, instance=instance, frame_index=index)


def test_files_follow_the_coco_panoptic_rules(tmp_path) -> None:
    writer = PanopticWriter(tmp_path, CITYSCAPES.coco_categories(), flush_every=1)
    maps = [_map(0), _map(5)]
    for m in maps:
        writer.write_map(m)
    writer.close()
    doc = json.loads((tmp_path / "panoptic.json").read_text())
    assert set(doc) == {"info", "images", "annotations", "categories"}
    categories = {c["id"]: c for c in doc["categories"]}
    assert [i["id"] for i in doc["images"]] == [0, 5]
    for ann, m in zip(doc["annotations"], maps):
        rgb = np.asarray(Image.open(tmp_path / "panoptic" / ann["file_name"]), dtype=np.uint32)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        listed = {s["id"]: s for s in ann["segments_info"]}
        assert len(listed) == len(ann["segments_info"]) == 4  # road, sky, two cars
        assert set(np.unique(ids).tolist()) - {0} == set(listed)
        assert ((ids == 0) == (m.semantic.numpy() == -1)).all()  # void is id 0, and only void
        for seg_id, s in listed.items():
            mask = ids == seg_id
            ys, xs = np.nonzero(mask)
            assert s["area"] == mask.sum() and s["iscrowd"] == 0
            assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            category = categories[s["category_id"]]
            assert ("track_id" in s) == bool(category["isthing"])
        tracks = sorted(s["track_id"] for s in listed.values() if "track_id" in s)
        assert tracks == [7, 9]


def test_json_is_valid_after_each_flush(tmp_path) -> None:
    writer = PanopticWriter(tmp_path, CITYSCAPES.coco_categories(), flush_every=2)
    for i in range(3):
        writer.write_map(_map(i))
    doc = json.loads((tmp_path / "panoptic.json").read_text())  # flushed after frame 1: whole and valid
    assert len(doc["annotations"]) == 2
    writer.close()
    assert len(json.loads((tmp_path / "panoptic.json").read_text())["annotations"]) == 3


def _blocked_directory(tmp_path):
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "out"  # its parent is a regular file


def _blocked_json(tmp_path):
    (tmp_path / "panoptic.json.part").mkdir()  # the JSON's temporary file cannot be written
    return tmp_path


@pytest.mark.parametrize(("make", "expected"), [
    pytest.param(_blocked_directory, "cannot create .*; choose another --panoptic-dir", id="parent-is-a-file"),
    pytest.param(_blocked_json, "writing .*panoptic.json failed", id="json-unwritable"),
])
def test_unwritable_output_is_one_clear_line(tmp_path, make, expected) -> None:
    directory = make(tmp_path)
    with pytest.raises(SinkError, match=expected) as info:
        writer = PanopticWriter(directory, CITYSCAPES.coco_categories(), flush_every=10)
        writer.write_map(_map(0))
        writer.close()
    assert "\n" not in str(info.value)
    if (directory / "panoptic").is_dir():  # the frame written before the fault is still there, whole
        assert np.asarray(Image.open(directory / "panoptic" / "000000.png")).shape == (40, 60, 3)


def test_stuff_records_decode_with_pycocotools_and_never_overlap_instances() -> None:
    from pycocotools import mask as mask_util

    from engine.fuse import stuff_segments

    panoptic = _map(3)
    records = stuff_records(stuff_segments(panoptic, names=CITYSCAPES.names, is_thing=CITYSCAPES.is_thing))
    assert [(r["class_id"], r["label"]) for r in records] == [(0, "road"), (10, "sky")]
    instances = (panoptic.instance > 0).numpy()
    for r in records:
        mask = mask_util.decode({"size": r["mask"]["size"], "counts": r["mask"]["counts"].encode()}).astype(bool)
        assert (mask == (panoptic.semantic.numpy() == r["class_id"])).all() and r["area"] == mask.sum()
        assert not (mask & instances).any()
    assert json.loads(json.dumps(records)) == records  # plain JSON values
