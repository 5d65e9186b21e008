"""The semantic stage from the command line: a user's trained weights file runs as the library runs it, and
every bad segmenter option ends in one line naming the option (or file) and the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from tests.checkpoints import write_segmenter_checkpoint
from tests.test_cli import _user_error, streamseg, streamseg_in_process

SPEC = "synthetic:seed=5,frames=2,size=160x120,objects=3,stuff=1"
NO_NETWORKS = ("--detector", "none", "--tracker", "none")


@pytest.fixture(scope="module")
def deeplab_file(tmp_path_factory):
    """A user's DeepLab v3+ (resnet18 encoder, 19 Cityscapes classes), saved as smp's examples save one."""
    return write_segmenter_checkpoint(tmp_path_factory.mktemp("user-segmenter") / "deeplabv3plus_cityscapes.pth")


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory):
    import segmentation_models_pytorch as smp

    path = tmp_path_factory.mktemp("unet") / "unet.pth"
    torch.save(smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=19).state_dict(), path)
    return path


def _decode(mask: dict) -> np.ndarray:
    return mask_util.decode({"size": mask["size"], "counts": mask["counts"].encode()}).astype(bool)


def test_a_users_weights_file_runs_without_the_banner_and_gives_the_librarys_labels(tmp_path, deeplab_file):
    from engine.segment import CITYSCAPES, SegmenterConfig, load_segmenter
    from engine.sources.synthetic import SyntheticScene

    jsonl = tmp_path / "r.jsonl"
    proc = streamseg("run", SPEC, *NO_NETWORKS, "--segmenter", "deeplabv3plus", "--segment-encoder", "resnet18",
                     "--segmenter-weights", str(deeplab_file), "--segment-imgsz", "64", "--jsonl", str(jsonl),
                     "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM WEIGHTS" not in proc.stderr
    segmenter = load_segmenter(SegmenterConfig(weights=str(deeplab_file), encoder="resnet18", imgsz=64, device="cpu"))
    assert not segmenter.random_weights
    scene = SyntheticScene.from_spec(SPEC.removeprefix("synthetic:"))
    for i, line in enumerate(jsonl.read_text().splitlines()):
        record = json.loads(line)
        labels = segmenter(torch.from_numpy(scene.render(i)), frame_indices=[i])[0].labels.numpy()
        stuff = [c for c in np.unique(labels).tolist() if not CITYSCAPES.is_thing[c]]
        assert [s["class_id"] for s in record["stuff"]] == stuff and len(stuff) >= 2  # the labels vary
        for s in record["stuff"]:
            # no instances here: a stuff mask is every pixel of its class
            assert (_decode(s["mask"]) == (labels == s["class_id"])).all()
            assert s["label"] == CITYSCAPES.names[s["class_id"]]


def _label_file(tmp_path, text: str) -> str:
    path = tmp_path / "labels.txt"
    path.write_text(text)
    return str(path)


BAD = [
    # (flags, what the one error line names)
    pytest.param(["--segmenter", "segformer"], ["--segmenter", "deeplabv3plus, unet, deeplabv3-mobilenet"],
                 id="unknown-backend"),
    pytest.param(["--segmenter", "unet", "--segment-every", "0"], ["--segment-every", ">= 1"], id="every-zero"),
    pytest.param(["--segmenter", "unet", "--segment-imgsz", "8"], ["--segment-imgsz", ">= 32"], id="imgsz-small"),
    pytest.param(["--panoptic-dir", "{tmp}/out"], ["--panoptic-dir", "--segmenter"], id="panoptic-no-segmenter"),
    pytest.param(["--segmenter", "unet"], ["--segmenter-weights PATH", "random"], id="no-weights"),
    pytest.param(["--segmenter", "unet", "--segmenter-weights", "{tmp}/missing.pth"], ["missing.pth", "do not exist"],
                 id="missing-weights"),
    pytest.param(["--segmenter", "deeplabv3plus", "--segment-encoder", "resnet18", "--segmenter-weights", "{unet}"],
                 ["unet.pth", "not deeplabv3plus"], id="wrong-architecture"),
    pytest.param(["--segmenter", "deeplabv3plus", "--segment-encoder", "resnet18", "--segmenter-weights",
                  "{deeplab}", "--segment-labels", "{labels3}"], ["3 classes", "19", "--segment-labels"],
                 id="labels-of-another-count"),
    pytest.param(["--segmenter", "unet", "--segmenter-weights", "random", "--segment-labels", "{badlabels}"],
                 ["labels.txt", "line 1"], id="bad-label-file"),
]


@pytest.mark.parametrize(("flags", "needles"), BAD)
def test_bad_segmenter_options_are_one_line_and_write_nothing(tmp_path, deeplab_file, unet_file, flags, needles):
    values = {"tmp": tmp_path, "unet": unet_file, "deeplab": deeplab_file,
              "labels3": _label_file(tmp_path, "stuff road\nstuff sky\nthing car\n") if "{labels3}" in flags else "",
              "badlabels": _label_file(tmp_path, "road\n") if "{badlabels}" in flags else ""}
    args = [f.format(**values) for f in flags]
    out = tmp_path / "panoptic-out"
    extra = [] if "--panoptic-dir" in args or "--segmenter" not in args else ["--panoptic-dir", str(out)]
    _user_error(streamseg_in_process("run", SPEC, *NO_NETWORKS, *args, *extra, "--quiet"), *needles)
    assert not out.exists() and not (tmp_path / "out").exists()
