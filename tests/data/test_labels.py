"""Labelling a collection from a synthetic scene's truth: every format follows the new labels."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from engine.data import Collector, CollectorConfig, SelectorConfig
from engine.data.labels import relabel, scene_truth, scenes_truth
from engine.errors import DatasetError
from engine.sources.synthetic import SyntheticScene
from engine.types import Instances
from tests.data.helpers import random_evidence, truth_result


def test_truth_replaces_the_engines_instances_in_every_format(tmp_path):
    from pycocotools.coco import COCO

    scene = SyntheticScene(seed=9, frames=40, width=96, height=72, objects=3)
    collector = Collector(tmp_path / "c", names=scene.class_names,
                          config=CollectorConfig(selector=SelectorConfig(window=10, per_window=1, min_spacing=2)))
    rng = np.random.default_rng(0)
    for i in range(scene.frames):  # an engine that found nothing: the pre-annotations are empty
        result = truth_result(scene, i)
        result = replace(result, instances=Instances.empty(72, 96))
        collector.write(result, random_evidence(i, rng))
    collector.close()
    coco = json.loads((tmp_path / "c" / "annotations.json").read_text())
    assert coco["annotations"] == [] and len(coco["images"]) == 4

    assert relabel(tmp_path / "c", scene_truth(scene), names=scene.class_names) == 4
    coco = COCO(str(tmp_path / "c" / "annotations.json"))
    for image in coco.loadImgs(coco.getImgIds()):
        gt = scene.ground_truth(image["frame"])
        truth = {int(k): m for k, m in zip(gt.ids, gt.masks) if m.any()}
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert {a["track_id"] for a in anns} == set(truth)
        for ann in anns:
            assert np.array_equal(coco.annToMask(ann).astype(bool), truth[ann["track_id"]])
        label = tmp_path / "c" / image["file_name"].replace("images/", "labels/").replace(".png", ".txt")
        assert len(label.read_text().splitlines()) == len(truth)
    tasks = json.loads((tmp_path / "c" / "label_studio" / "tasks.json").read_text())
    assert all(task["predictions"][0]["result"] for task in tasks)
    records = [json.loads(line) for line in (tmp_path / "c" / "collection.jsonl").read_text().splitlines()]
    assert all(r["labelled"] for r in records)


def test_relabel_needs_a_collection(tmp_path):
    with pytest.raises(DatasetError, match="holds no collection.jsonl"):
        relabel(tmp_path, lambda record: [], names=("a",))


def test_frames_of_several_scenes_are_labelled_from_the_scene_their_prefix_names(tmp_path):
    scenes = {f"s{seed}_": SyntheticScene(seed=seed, frames=20, width=96, height=72, objects=3) for seed in (1, 2)}
    config = CollectorConfig(selector=SelectorConfig(window=10, per_window=1, min_spacing=2))
    rng = np.random.default_rng(0)
    for prefix, scene in scenes.items():
        collector = Collector(tmp_path / "c", names=scene.class_names, config=replace(config, prefix=prefix))
        for i in range(scene.frames):
            collector.write(replace(truth_result(scene, i), instances=Instances.empty(72, 96)), random_evidence(i, rng))
        collector.close()
    assert relabel(tmp_path / "c", scenes_truth(scenes), names=SyntheticScene.class_names) == 4
    for line in (tmp_path / "c" / "collection.jsonl").read_text().splitlines():
        record = json.loads(line)
        scene = scenes[record["file"].split("/")[-1][:3]]
        gt = scene.ground_truth(record["frame"])
        assert sorted(i["id"] for i in record["instances"]) == sorted(int(k) for k, m in zip(gt.ids, gt.masks) if m.any())
    with pytest.raises(DatasetError, match="no scene has its file-name prefix"):
        relabel(tmp_path / "c", scenes_truth({"other_": scenes["s1_"]}), names=SyntheticScene.class_names)
