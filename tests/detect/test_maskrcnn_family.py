"""Mask R-CNN as a registered detector family: ``--detector maskrcnn`` from the command line, on random
weights and on a user's state-dict file (saved as torchvision releases its own), and what the family
refuses before anything loads."""

from __future__ import annotations

import json

import pytest
import torch

from engine.detect import DetectorConfig, check_detector, family_for, load_detector
from engine.errors import ConfigError
from tests.checkpoints import write_maskrcnn_checkpoint
from tests.test_cli import _user_error, streamseg

SPEC = "synthetic:seed=3,frames=2,size=160x120,objects=3,stuff=1"
SMALL = ("--imgsz", "96", "--tracker", "none")  # Mask R-CNN's shorter side: seconds a frame on 2 cores


@pytest.fixture(scope="module")
def maskrcnn_file(tmp_path_factory):
    return write_maskrcnn_checkpoint(tmp_path_factory.mktemp("user-maskrcnn") / "maskrcnn_resnet50_fpn_v2_coco.pth")


@pytest.mark.parametrize("model", ["maskrcnn", "maskrcnn_resnet50_fpn_v2"])
def test_both_names_pick_the_maskrcnn_family(model):
    assert family_for(model).name == "maskrcnn" and family_for("yolov8n-seg").name == "yolo"


@pytest.mark.parametrize(("config", "expected"), [
    pytest.param(DetectorConfig(model="maskrcnn", backend="onnxruntime"), "torch only", id="onnx-backend"),
    pytest.param(DetectorConfig(model="maskrcnn", backend="tensorrt"), "torch only", id="tensorrt-backend"),
    pytest.param(DetectorConfig(model="maskrcnn", weights="det.onnx"), "state-dict file", id="onnx-file"),
    pytest.param(DetectorConfig(model="maskrcnn", weights="yolov8n-seg.yaml"), "state-dict file", id="yaml-file"),
    pytest.param(DetectorConfig(model="maskrcnn", half=True, device="cuda"), "fp32", id="half"),
])
def test_what_the_family_cannot_run_is_refused_before_loading(config, expected):
    with pytest.raises(ConfigError, match=expected):
        check_detector(config)


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _no_overlaps(record: dict) -> None:
    from pycocotools import mask as mask_util

    rles = [{"size": i["mask"]["size"], "counts": i["mask"]["counts"].encode()} for i in record["instances"]]
    if rles:
        assert mask_util.decode(rles).sum(axis=2).max() <= 1


@pytest.mark.slow
def test_streamseg_run_with_maskrcnn_on_random_weights_runs_to_the_end(tmp_path):
    jsonl = tmp_path / "r.jsonl"
    proc = streamseg("run", SPEC, "--detector", "maskrcnn", "--weights", "random", *SMALL, "--jsonl", str(jsonl),
                     "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "detector maskrcnn" in proc.stderr and "MEAN NOTHING" in proc.stderr
    records = _records(jsonl)
    assert [r["frame"] for r in records] == [0, 1]
    assert sum(len(r["instances"]) for r in records) > 0  # spread random weights detect things
    for record in records:
        assert all(i["mask"]["size"] == [120, 160] and i["label"] != "__background__" for i in record["instances"])
        _no_overlaps(record)


@pytest.mark.slow
def test_a_users_maskrcnn_file_runs_as_the_library_runs_it(tmp_path, maskrcnn_file):
    from engine.sources.synthetic import SyntheticScene

    jsonl = tmp_path / "r.jsonl"
    proc = streamseg("run", SPEC, "--detector", "maskrcnn", "--weights", str(maskrcnn_file), *SMALL,
                     "--max-frames", "1", "--jsonl", str(jsonl), "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM WEIGHTS" not in proc.stderr
    (record,) = _records(jsonl)
    detector = load_detector(DetectorConfig(model="maskrcnn", weights=str(maskrcnn_file), imgsz=96, device="cpu"))
    assert not detector.random_weights
    frame = torch.from_numpy(SyntheticScene.from_spec(SPEC.removeprefix("synthetic:")).render(0))
    (dets,) = detector([frame])
    assert len(record["instances"]) == len(dets) > 0
    # the same instances, in the same order: scores and boxes as the library gives them (the JSONL rounds
    # scores to 4 decimals and boxes to 2)
    assert [i["score"] for i in record["instances"]] == pytest.approx(dets.scores.tolist(), abs=1e-4)
    boxes = torch.tensor([i["box"] for i in record["instances"]])
    assert torch.allclose(boxes, dets.boxes, atol=1e-2)
    assert [i["label"] for i in record["instances"]] == [dets.names[c] for c in dets.class_ids.tolist()]


def test_weights_of_another_architecture_are_one_line(tmp_path):
    path = tmp_path / "not_maskrcnn.pth"
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, path)
    _user_error(streamseg("run", SPEC, "--detector", "maskrcnn", "--weights", str(path), *SMALL),
                "not_maskrcnn.pth", "not maskrcnn_resnet50_fpn_v2 weights")
    _user_error(streamseg("run", SPEC, "--detector", "maskrcnn", *SMALL), "--weights PATH")
