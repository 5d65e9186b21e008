"""Bad input to the semantic stage ends in one clear line naming the input and the fix."""

from __future__ import annotations

import json

import pytest
import torch

from engine.errors import ConfigError, WeightsError
from engine.segment import CITYSCAPES, SegmenterConfig, load_labels, load_segmenter
from tests.segment.conftest import IMGSZ


def _write(tmp_path, name, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        torch.save(content, path)
    return str(path)


def test_label_files_in_both_formats(tmp_path) -> None:
    text = _write(tmp_path, "l.txt", "# street\nstuff road\nstuff traffic light\nthing car\n")
    js = _write(tmp_path, "l.json", json.dumps([{"name": "road", "isthing": 0},
                                                  {"name": "car", "isthing": 1, "id": 26, "color": [0, 0, 142]}]))
    a, b = load_labels(text), load_labels(js)
    assert a.names == ("road", "traffic light", "car") and a.thing_ids == (2,) and a.category_ids == (1, 2, 3)
    assert b.stuff_ids == (0,) and b.category_ids == (1, 26) and b.colors[1] == (0, 0, 142)
    assert len(CITYSCAPES) == 19 and CITYSCAPES.thing_ids == tuple(range(11, 19))


@pytest.mark.parametrize(("content", "expected"), [
    pytest.param("road\n", "line 1", id="text-without-kind"),
    pytest.param("[{\"name\": \"road\"}]", "entry 0", id="json-without-isthing"),
    pytest.param("[{\"name\": \"road\", \"isthing\": 0", "not valid JSON", id="json-cut-off"),
    pytest.param("", "lists no classes", id="empty"),
])
def test_bad_label_files(tmp_path, content, expected) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_labels(_write(tmp_path, "labels.json" if content.startswith("[") else "labels.txt", content))


def test_unknown_backend_is_one_line() -> None:
    with pytest.raises(ConfigError, match="unknown segmenter 'segformer'; choose one of deeplabv3plus"):
        SegmenterConfig(backend="segformer")


@pytest.fixture(scope="module")
def unet_weights(tmp_path_factory) -> str:
    seg = load_segmenter(SegmenterConfig(backend="unet", encoder="resnet18", imgsz=IMGSZ, device="cpu"))
    path = tmp_path_factory.mktemp("w") / "unet.pth"
    torch.save(seg.module.state_dict(), path)
    return str(path)


def test_label_file_with_another_class_count_is_refused(tmp_path, unet_weights) -> None:
    labels = _write(tmp_path, "five.txt", "stuff a\nstuff b\nstuff c\nthing d\nthing e\n")
    with pytest.raises(ConfigError, match=r"five.txt has 5 classes but the weights .* output 19"):
        load_segmenter(SegmenterConfig(backend="unet", encoder="resnet18", weights=unet_weights,
                                       labels=labels, device="cpu"))


@pytest.mark.parametrize(("backend", "encoder", "expected"), [
    pytest.param("deeplabv3plus", "resnet18", "not deeplabv3plus .* weights", id="unet-weights-as-deeplab"),
    pytest.param("unet", "resnet34", "not unet \\(resnet34 encoder\\) weights", id="wrong-encoder"),
    pytest.param("deeplabv3-mobilenet", "resnet34", "not deeplabv3-mobilenet weights", id="smp-as-torchvision"),
])
def test_weights_of_another_architecture(unet_weights, backend, encoder, expected) -> None:
    with pytest.raises(WeightsError, match=expected) as info:
        load_segmenter(SegmenterConfig(backend=backend, encoder=encoder, weights=unet_weights, device="cpu"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("make", "expected"), [
    pytest.param(lambda p: str(p / "missing.pth"), "do not exist", id="missing"),
    pytest.param(lambda p: _write(p, "bad.pth", b"\x00garbage"), "not a readable weights file", id="corrupt"),
    pytest.param(lambda p: _write(p, "list.pth", [1, 2]), "holds no state dict", id="not-a-state-dict"),
    pytest.param(lambda p: str(p), "without a readable config.json", id="empty-directory"),
])
def test_bad_weights_paths(tmp_path, make, expected) -> None:
    with pytest.raises(WeightsError, match=expected):
        load_segmenter(SegmenterConfig(backend="deeplabv3plus", weights=make(tmp_path), device="cpu"))
