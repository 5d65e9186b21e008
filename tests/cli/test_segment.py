"""``streamseg segment`` as a user runs it: masks as JSON with COCO RLE, an overlay PNG, random weights or a
checkpoint file, and one clear line for every bad prompt, image, output or weights file, given before
the model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from engine.cli import main
from tests.test_cli import _user_error, streamseg

SIZE = "256"  # model input side for the tests (1024 is the default and SAM 2's trained size)


def _decode(record: dict) -> np.ndarray:
    rle = record["mask"]
    return mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A SAM 2.1 tiny state dict saved as Meta ships checkpoints ({"model": state_dict}), seed 1."""
    from engine.track.model import build_model

    path = tmp_path_factory.mktemp("weights") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": build_model("sam2.1_hiera_t", image_size=int(SIZE), seed=1).state_dict()}, path)
    return path


def test_points_and_a_box_give_one_mask_as_json_and_an_overlay(tmp_path, media_dir):
    out_json, out_png = tmp_path / "masks.json", tmp_path / "overlay.png"
    proc = streamseg("segment", str(media_dir / "truck.jpg"), "--point", "500,400", "--point", "900,600,0",
                     "--box", "50,100,1700,1100", "--weights", "random", "--image-size", SIZE,
                     "--json", str(out_json), "--out", str(out_png))
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM WEIGHTS" in proc.stderr and "MEAN NOTHING" in proc.stderr
    records = json.loads(out_json.read_text())
    assert len(records) == 1
    rec = records[0]
    assert rec["prompt"] == {"points": [[500.0, 400.0], [900.0, 600.0]], "labels": [1, 0],
                             "box": [50.0, 100.0, 1700.0, 1100.0]}
    assert 0.0 <= rec["score"] <= 1.0 and rec["mask"]["size"] == [1200, 1800]
    assert rec["area"] == int(_decode(rec).sum()) > 0
    with Image.open(out_png) as img:
        assert img.format == "PNG" and img.size == (1800, 1200)
    assert "1 masks" in proc.stdout


def test_a_checkpoint_file_gives_the_masks_of_its_weights(tmp_path, media_dir, checkpoint):
    """The user's path: weights from a file, not flagged random; --multimask gives three candidates, the
    same the library gives for the same file."""
    from engine.cli.segment import read_image
    from engine.track.image import ImagePrompt, ImageSegmenter

    out_json = tmp_path / "masks.json"
    proc = streamseg("segment", str(media_dir / "cars.jpg"), "--point", "600,700", "--multimask",
                     "--weights", str(checkpoint), "--image-size", SIZE, "--json", str(out_json))
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM WEIGHTS" not in proc.stderr
    records = json.loads(out_json.read_text())
    segmenter = ImageSegmenter.load("sam2.1_hiera_t", weights=checkpoint, image_size=int(SIZE))
    segmenter.set_image(read_image(media_dir / "cars.jpg"))
    expected = segmenter.predict([ImagePrompt(points=((600.0, 700.0),), labels=(1,))], multimask=True)[0]
    assert [r["score"] for r in records] == pytest.approx([m.score for m in expected], abs=1e-6)
    for record, mask in zip(records, expected):
        # Two processes may split the work over different thread counts, which sums in another order:
        # logits differ by float rounding (the scores agree to 1e-6), so a pixel whose logit is that close
        # to 0 can fall on the other side. Equal up to a handful of such pixels in 2.16 million.
        flipped = np.count_nonzero(_decode(record) != mask.decode())
        assert flipped <= 50, flipped


def test_everything_writes_every_mask_with_its_grid_point(tmp_path, media_dir):
    out_json = tmp_path / "all.json"
    code = main(["segment", str(media_dir / "truck.jpg"), "--everything", "--points-per-side", "2",
                 "--pred-iou-thresh", "0", "--stability-thresh", "0", "--box-nms-thresh", "1.0",
                 "--weights", "random", "--image-size", SIZE, "--json", str(out_json), "--device", "cpu"])
    assert code == 0
    records = json.loads(out_json.read_text())
    assert len(records) == 4 * 3  # 2x2 grid points, three masks each, no filter or NMS
    assert {tuple(r["prompt"]["points"][0]) for r in records} == {(450.0, 300.0), (1350.0, 300.0),
                                                                   (450.0, 900.0), (1350.0, 900.0)}
    assert all("stability_score" in r and r["prompt"]["labels"] == [1] for r in records)


@pytest.fixture()
def no_model(monkeypatch):
    """Fails the test if a model is built: user mistakes must be found before that."""
    import engine.track.model

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(engine.track.model, "build_model", refuse)


def _run(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.startswith("streamseg: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# name, arguments after the image, words of the one-line error
BAD_PROMPTS = [
    ("no prompt at all", [], "nothing to segment"),
    ("point of one number", ["--point", "5"], "expected X,Y"),
    ("point not numbers", ["--point", "a,b"], "expected X,Y"),
    ("point with a trailing comma", ["--point", "5,6,"], "expected X,Y"),
    ("point is NaN", ["--point", "nan,3"], "finite"),
    ("point is infinite", ["--point", "3,inf"], "finite"),
    ("point label 2", ["--point", "3,3,2"], "LABEL must be 1"),
    ("point right of the image", ["--point", "1800,5"], "outside the 1800x1200 image"),
    ("point below the image", ["--point", "5,1300"], "outside the 1800x1200 image"),
    ("negative point", ["--point=-1,5"], "outside"),
    ("box of three numbers", ["--box", "1,2,3"], "X1,Y1,X2,Y2"),
    ("box upside down", ["--box", "50,50,10,10"], "upside down"),
    ("empty box", ["--box", "10,10,10,40"], "empty"),
    ("box past the image", ["--box", "0,0,1900,100"], "reaches outside"),
    ("points with two boxes", ["--box", "1,1,50,50", "--box", "60,60,90,90", "--point", "5,5"], "at most one --box"),
    ("too many points", [a for i in range(70) for a in ("--point", f"{i},{i}")], "at most 64 points"),
    ("everything with a point", ["--everything", "--point", "5,5"], "drop --point"),
    ("everything with 0 points a side", ["--everything", "--points-per-side", "0"], "points_per_side"),
]


@pytest.mark.parametrize("args, words", [b[1:] for b in BAD_PROMPTS], ids=[b[0] for b in BAD_PROMPTS])
def test_bad_prompts_are_one_line_errors_before_the_model_loads(args, words, media_dir, no_model, capsys):
    line = _run(["segment", str(media_dir / "truck.jpg"), *args, "--weights", "random"], capsys)
    assert words in line, line


@pytest.fixture()
def truncated_jpeg(tmp_path, media_dir):
    path = tmp_path / "cut.jpg"
    data = (media_dir / "cars.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


# name, image (tmp/ and media/ expand), extra arguments, words
BAD_FILES = [
    ("missing image", "{tmp}/nope.jpg", [], "no such image file"),
    ("a folder as image", "{tmp}", [], "not a file"),
    ("not an image", "{media}/README.md", [], "not an image format"),
    ("truncated JPEG", "{cut}", [], "truncated or corrupt"),
    ("JSON into a missing folder", "{media}/truck.jpg", ["--json", "{tmp}/no/dir/m.json"], "does not exist"),
    ("JSON onto a folder", "{media}/truck.jpg", ["--json", "{tmp}"], "is a directory"),
    ("overlay of unknown type", "{media}/truck.jpg", ["--out", "{tmp}/o.xyz"], "unknown image type"),
    ("weights file missing", "{media}/truck.jpg", ["--weights", "{tmp}/none.pt"], "no such weights file"),
    ("unknown model", "{media}/truck.jpg", ["--tracker", "sam9"], "unknown tracker model"),
]


@pytest.mark.parametrize("image, extra, words", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_one_line_errors_before_the_model_loads(image, extra, words, tmp_path, media_dir,
                                                              truncated_jpeg, no_model, capsys):
    def expand(s: str) -> str:
        return s.format(tmp=tmp_path, media=media_dir, cut=truncated_jpeg)

    args = ["segment", expand(image), "--point", "5,5", *[expand(a) for a in extra]]
    if "--weights" not in extra:
        args += ["--weights", "random"]
    line = _run(args, capsys)
    assert words in line, line


def test_corrupt_weights_and_no_fetched_weights_name_the_fix(tmp_path, media_dir, capsys):
    corrupt = tmp_path / "sam2.1_hiera_tiny.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    image = str(media_dir / "truck.jpg")
    line = _run(["segment", image, "--point", "5,5", "--weights", str(corrupt), "--image-size", SIZE], capsys)
    assert str(corrupt) in line and "corrupt" in line
    line = _run(["segment", image, "--point", "5,5"], capsys)  # the test cache holds no fetched weights
    assert "streamseg fetch sam2.1_hiera_tiny" in line and "--weights" in line


def test_an_unwritable_output_is_one_line_and_keeps_what_was_there(tmp_path, media_dir):
    kept = tmp_path / "masks.json"
    kept.write_text("[]")
    proc = streamseg("segment", str(media_dir / "truck.jpg"), "--point", "5,5", "--weights", "random",
                     "--image-size", SIZE, "--json", str(kept), "--out", "/dev/full")
    line = _user_error(proc, "/dev/full", "cannot write")
    assert line
    assert json.loads(kept.read_text())  # the JSON was written whole before the overlay failed
