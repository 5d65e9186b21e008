"""`streamseg finetune` on bad input: one line naming the input and the fix, exit code 1, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine.cli import main


def _empty_folder(tmp: Path, collection: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _no_images(tmp: Path, collection: Path) -> Path:
    folder = tmp / "none"
    folder.mkdir()
    (folder / "annotations.json").write_text(json.dumps({"images": [], "annotations": [], "categories": [
        {"id": 1, "name": "a"}]}))
    return folder


def _missing_image(tmp: Path, collection: Path) -> Path:
    folder = tmp / "copy"
    shutil.copytree(collection, folder)
    next((folder / "images" / "train").glob("*.png")).unlink()
    return folder


def _unknown_category(tmp: Path, collection: Path) -> Path:
    folder = tmp / "copy"
    shutil.copytree(collection, folder)
    coco = json.loads((folder / "annotations.json").read_text())
    coco["annotations"][0]["category_id"] = 99
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def _garbage_json(tmp: Path, collection: Path) -> Path:
    folder = tmp / "copy"
    shutil.copytree(collection, folder)
    (folder / "annotations.json").write_text("{not json")
    return folder


@pytest.mark.parametrize(("make_data", "message"), [
    (_empty_folder, "holds no annotations.json"),
    (_no_images, "empty dataset"),
    (_missing_image, "which is missing"),
    (_unknown_category, "category 99"),
    (_garbage_json, "not a readable COCO"),
])
def test_bad_datasets_for_sam2(tmp_path, labelled_collection, capsys, make_data, message):
    data = make_data(tmp_path, labelled_collection)
    code = main(["finetune", "sam2", "--data", str(data), "--out", str(tmp_path / "o.pt"), "--weights", "random",
                 "--image-size", "256", "--steps", "1", "--device", "cpu", "--quiet"])
    _assert_one_line(capsys, code, message)


def _yaml_without_val(tmp: Path, collection: Path) -> Path:
    folder = tmp / "copy"
    shutil.copytree(collection, folder)
    (folder / "data.yaml").write_text("train: images/train\nnames: {0: a}\n")
    return folder


def _no_labels(tmp: Path, collection: Path) -> Path:
    folder = tmp / "copy"
    shutil.copytree(collection, folder)
    for label in (folder / "labels").rglob("*.txt"):
        label.write_text("")
    return folder


@pytest.mark.parametrize(("make_data", "message"), [
    (_empty_folder, "holds no data.yaml"),
    (_yaml_without_val, "Ultralytics refused the dataset"),
    (_no_labels, "no training image has a label"),
])
def test_bad_datasets_for_yolo(tmp_path, labelled_collection, capsys, make_data, message):
    data = make_data(tmp_path, labelled_collection)
    code = main(["finetune", "yolo", "--data", str(data), "--out", str(tmp_path / "o.pt"), "--weights", "random",
                 "--epochs", "1", "--device", "cpu", "--quiet"])
    _assert_one_line(capsys, code, message)


def _foreign_state_dict(tmp: Path) -> Path:
    path = tmp / "other.pt"
    torch.save({"model": {"backbone.weight": torch.zeros(3)}}, path)
    return path


def _text_file(tmp: Path) -> Path:
    path = tmp / "notes.pt"
    path.write_text("not a checkpoint")
    return path


@pytest.mark.parametrize(("model", "make_weights", "message"), [
    ("sam2", _foreign_state_dict, "does not fit this model config"),  # another model's weights
    ("sam2", _text_file, "not a readable torch checkpoint"),  # garbage
    ("sam2", lambda tmp: tmp / "absent.pt", "no such file"),
    ("yolo", _foreign_state_dict, "not an Ultralytics checkpoint"),  # a plain state dict is no YOLO model
    ("yolo", _text_file, "not a readable Ultralytics checkpoint"),
    ("yolo", lambda tmp: tmp / "model.onnx", "cannot be trained"),  # an export, not a training checkpoint
])
def test_wrong_checkpoints_are_refused(tmp_path, labelled_collection, capsys, model, make_weights, message):
    weights = make_weights(tmp_path)
    extra = ["--image-size", "256", "--steps", "1"] if model == "sam2" else ["--epochs", "1", "--imgsz", "64"]
    code = main(["finetune", model, "--data", str(labelled_collection), "--out", str(tmp_path / "o.pt"),
                 "--weights", str(weights), "--device", "cpu", "--quiet", *extra])
    _assert_one_line(capsys, code, message)


@pytest.mark.parametrize("model", ["sam2", "yolo"])
@pytest.mark.parametrize(("make_out", "message"), [
    (lambda tmp: tmp / "file" / "o.pt", "does not exist"),  # the parent is a regular file
    (lambda tmp: tmp, "is a folder"),  # a folder instead of a file
    (lambda tmp: Path("/proc/o.pt"), "cannot write"),  # a folder nothing can be written to
])
def test_unwritable_outputs_are_refused(tmp_path, labelled_collection, capsys, model, make_out, message):
    (tmp_path / "file").write_text("")
    code = main(["finetune", model, "--data", str(labelled_collection), "--out", str(make_out(tmp_path)),
                 "--weights", "random", "--device", "cpu", "--quiet"])
    _assert_one_line(capsys, code, message)


def test_yolo_counts_in_epochs(tmp_path, labelled_collection, capsys):
    code = main(["finetune", "yolo", "--data", str(labelled_collection), "--out", str(tmp_path / "o.pt"),
                 "--weights", "random", "--steps", "5"])
    _assert_one_line(capsys, code, "use --epochs")


@pytest.mark.parametrize(("flags", "message"), [
    (["--train-memory", "--memory-from", "-5"], "memory_from >= 0"),
    (["--image-size", "100"], "multiple of 32"),
])
def test_bad_sam2_settings_are_refused_before_any_work(tmp_path, labelled_collection, capsys, flags, message):
    code = main(["finetune", "sam2", "--data", str(labelled_collection), "--out", str(tmp_path / "o.pt"),
                 "--weights", "random", "--device", "cpu", "--quiet", *flags])
    _assert_one_line(capsys, code, message)
    assert not (tmp_path / "o.pt.run").exists()


def _assert_one_line(capsys, code: int, message: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("streamseg: error:")]
    assert code == 1, err
    assert len(errors) == 1 and message in errors[0], err
    assert not any("Traceback" in line for line in err)


def test_sam2_epochs_count_every_training_instance_of_every_view(labelled_collection):
    import argparse
    import math

    from engine.cli.finetune import _epochs_to_steps
    from engine.data.dataset import read_collection

    train = [s for s in read_collection(labelled_collection).samples if s.split == "train" and s.rles]
    instances = sum(len(s.rles) for s in train)
    args = argparse.Namespace(data=labelled_collection, epochs=3, views=2, batch=4, seed=0)
    assert _epochs_to_steps(args) == math.ceil(3 * instances * 2 / 4)
