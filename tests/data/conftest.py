"""A labelled collection made from a synthetic scene (its exact truth plays the annotator), starting
weights as files (the user's path), and one-thread torch for the small tensors these tests push."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data import Collector, CollectorConfig, SelectorConfig
from engine.sources.synthetic import SyntheticScene
from tests.data.helpers import random_evidence, truth_result

SCENE = {"seed": 7, "frames": 60, "width": 128, "height": 96, "objects": 3}


@pytest.fixture(autouse=True, scope="package")  # before the module fixtures that train
def _one_thread():
    """Small tensors: with two threads on a loaded 2-core machine, OpenMP hand-offs cost more than the work
    (measured: a 3x16x16 op took 26 ms with two threads, 0.01 ms with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def labelled_collection(tmp_path_factory) -> Path:
    """A collection of 8 frames (6 train, 2 val) whose instances are the scene's exact truth."""
    scene = SyntheticScene(**SCENE)
    folder = tmp_path_factory.mktemp("labelled") / "collection"
    config = CollectorConfig(selector=SelectorConfig(window=8, per_window=1, min_spacing=2), val_every=3)
    collector = Collector(folder, names=scene.class_names, config=config)
    rng = np.random.default_rng(0)
    for i in range(scene.frames):
        collector.write(truth_result(scene, i), random_evidence(i, rng))
    collector.close()
    assert collector.kept == 8
    return folder


@pytest.fixture(scope="session")
def sam2_weights(tmp_path_factory) -> Path:
    """A sam2.1_hiera_t checkpoint file in the official format, with seeded random weights."""
    from engine.track.model import build_model

    path = tmp_path_factory.mktemp("weights") / "sam2_start.pt"
    torch.save({"model": build_model("sam2.1_hiera_t", image_size=256, seed=0).state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def yolo_weights(tmp_path_factory) -> Path:
    """A YOLOv8n-seg checkpoint file as Ultralytics writes one ({"model": SegmentationModel}), seeded."""
    from engine.detect.yolo.loading import build_from_yaml

    path = tmp_path_factory.mktemp("weights") / "yolo_start.pt"
    torch.save({"model": build_from_yaml("yolov8n-seg.yaml", seed=0, spread=False).half(), "train_args": {}}, path)
    return path
