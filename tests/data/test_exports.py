"""The collection's three export formats, each read by its own tool: pycocotools' COCO API,
Ultralytics' dataset checker and label verifier, and Label Studio's documented import schema."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from engine.data import Collector, CollectorConfig, SelectorConfig
from engine.data.exports import instance_records, label_studio_task, yolo_label_lines
from engine.sources.synthetic import SyntheticScene
from tests.data.helpers import random_evidence, truth_result
from tests.data.label_studio_schema import TASKS, config_problems

SCENE = {"seed": 3, "frames": 120, "width": 160, "height": 120, "objects": 5}


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    scene = SyntheticScene(**SCENE)
    folder = tmp_path_factory.mktemp("collection")
    config = CollectorConfig(selector=SelectorConfig(window=20, per_window=2, min_spacing=5, budget=100), val_every=3)
    collector = Collector(folder, names=scene.class_names, config=config)
    rng = np.random.default_rng(0)
    for i in range(scene.frames):
        collector.write(truth_result(scene, i), random_evidence(i, rng))
    collector.close()
    assert collector.kept >= 8
    return folder


def _journal(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "collection.jsonl").read_text().splitlines()]


def test_coco_json_loads_with_pycocotools_and_holds_the_exact_masks(collection):
    from pycocotools.coco import COCO

    scene = SyntheticScene(**SCENE)
    coco = COCO(str(collection / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(scene.class_names)
    assert len(coco.getImgIds()) == len(_journal(collection))
    checked = 0
    for image in coco.loadImgs(coco.getImgIds()):
        frame = image["frame"]
        gt = scene.ground_truth(frame)
        truth = dict(zip(gt.ids.tolist(), gt.masks))
        picture = cv2.imread(str(collection / image["file_name"]))[:, :, ::-1]
        assert np.array_equal(picture, scene.render(frame))  # PNG: the frame exactly
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert sorted(a["track_id"] for a in anns) == sorted(k for k, m in truth.items() if m.any())
        for ann in anns:
            mask = coco.annToMask(ann).astype(bool)
            assert np.array_equal(mask, truth[ann["track_id"]])
            assert ann["area"] == mask.sum()
            assert coco.loadCats(ann["category_id"])[0]["name"] == scene.class_names[gt.class_ids[
                list(gt.ids).index(ann["track_id"])]]
            checked += 1
    assert checked > 20


def test_yolo_layout_passes_ultralytics_dataset_checks(collection):
    from ultralytics.data.utils import check_det_dataset, verify_image_label

    data = check_det_dataset(str(collection / "data.yaml"), autodownload=False)
    assert data["nc"] == 4 and list(data["names"].values()) == list(SyntheticScene.class_names)
    assert Path(data["train"]) == (collection / "images/train").resolve()
    assert Path(data["val"]) == (collection / "images/val").resolve()
    scene = SyntheticScene(**SCENE)
    for record in _journal(collection):
        image = collection / record["file"]
        label = collection / record["file"].replace("images/", "labels/", 1).rsplit(".", 1)[0]
        _, boxes, shape, segments, _, missing, found, empty, corrupt, message = verify_image_label(
            (str(image), f"{label}.txt", "", False, data["nc"], 0, 0, False))
        assert (missing, found, empty, corrupt, message) == (0, 1, 0, 0, "")
        assert shape == (SCENE["height"], SCENE["width"])
        truth = scene.ground_truth(record["frame"])
        assert len(segments) == sum(1 for m in truth.masks if m.any())
        for inst, segment, box in zip(record["instances"], segments, boxes):
            drawn = np.zeros((SCENE["height"], SCENE["width"]), np.uint8)
            cv2.fillPoly(drawn, [np.round(segment * [SCENE["width"], SCENE["height"]]).astype(np.int32)], 1)
            mask = truth.masks[list(truth.ids).index(inst["id"])]
            iou = (drawn.astype(bool) & mask).sum() / (drawn.astype(bool) | mask).sum()
            # outlines run through boundary pixel centres: a small shape loses half a pixel all round
            assert iou > 0.75, (record["file"], inst["id"], iou)
            assert int(box[0]) == inst["class_id"]


def test_ultralytics_reads_the_dataset_for_training(collection):
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(collection / "data.yaml"), autodownload=False)
    dataset = YOLODataset(img_path=data["train"], data=data, task="segment", imgsz=160, augment=False)
    train = [r for r in _journal(collection) if r["split"] == "train"]
    assert len(dataset) == len(train)
    assert sum(len(lab["segments"]) for lab in dataset.labels) == sum(len(r["instances"]) for r in train)


def test_label_studio_tasks_follow_the_documented_import_schema(collection):
    tasks = json.loads((collection / "label_studio/tasks.json").read_text())
    jsonschema.validate(tasks, TASKS)
    assert config_problems((collection / "label_studio/config.xml").read_text(), tasks) == []
    assert len(tasks) == len(_journal(collection))
    for task, record in zip(tasks, _journal(collection)):
        assert task["data"]["image"] == f"/data/local-files/?d={collection.name}/{record['file']}"
        assert task["predictions"][0]["score"] == pytest.approx(record["uncertainty"]["total"], abs=1e-5)


def test_label_studio_polygons_are_percentages_of_the_image():
    mask = np.zeros((1, 50, 200), dtype=bool)
    mask[0, 10:40, 100:200] = True  # right half, rows 10..39
    (inst,) = instance_records(mask, [7], [1], ["box"], [0.9], [[100, 10, 200, 40]])
    task = label_studio_task("x.png", [inst], 200, 50, frame=3, model_version="m")
    points = np.array(task["predictions"][0]["result"][0]["value"]["points"])
    assert points[:, 0].min() == pytest.approx(50.0) and points[:, 0].max() == pytest.approx(99.5)
    assert points[:, 1].min() == pytest.approx(20.0) and points[:, 1].max() == pytest.approx(78.0)


def test_an_instance_in_two_pieces_is_one_yolo_line_and_two_label_studio_regions():
    mask = np.zeros((1, 60, 80), dtype=bool)
    mask[0, 5:20, 5:25] = True
    mask[0, 35:55, 50:75] = True  # the same object, cut in two by an occluder
    (inst,) = instance_records(mask, [1], [0], ["disc"], [0.5], [[5, 5, 75, 55]])
    assert len(inst.polygons) == 2
    (line,) = yolo_label_lines([inst], 80, 60)
    xy = np.array(line.split()[1:], dtype=float).reshape(-1, 2) * [80, 60]
    for piece in inst.polygons:  # every vertex of both pieces is on the joined outline
        for vertex in np.reshape(piece, (-1, 2)):
            assert np.abs(xy - vertex).sum(1).min() < 1e-3
    task = label_studio_task("x.png", [inst], 80, 60, frame=0, model_version="m")
    assert len(task["predictions"][0]["result"]) == 2


def test_instances_with_empty_masks_are_left_out():
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[1, 5:10, 5:10] = True
    records = instance_records(masks, [4, 5], [0, 1], ["a", "b"], [0.1, 0.2], [[0, 0, 1, 1], [5, 5, 10, 10]])
    assert [r.id for r in records] == [5]
