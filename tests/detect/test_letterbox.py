"""Letterbox geometry and pixels against Ultralytics' LetterBox and OpenCV's resize."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engine.detect.yolo.letterbox import batch_geometry, letterbox, letterbox_batch, resize_linear

# (frame height, frame width): landscape, portrait, odd, tiny, already 640, larger than the input.
SHAPES = [(720, 1280), (540, 960), (479, 641), (517, 333), (1500, 2250), (640, 640), (31, 17), (1, 700)]


@pytest.mark.parametrize("auto", [False, True], ids=["square", "min_rect"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_pixels_match_ultralytics_letterbox(shape, auto):
    """Same size, same padding, same pixels as Ultralytics' LetterBox on a BGR copy of the frame."""
    from ultralytics.data.augment import LetterBox

    h, w = shape
    rgb = np.random.default_rng(h * 7919 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = LetterBox(640, auto=auto, stride=32)(image=np.ascontiguousarray(rgb[..., ::-1]))[..., ::-1]
    box = letterbox(h, w, imgsz=640, stride=32, auto=auto)
    batch = letterbox_batch([torch.from_numpy(rgb)], [box], device=torch.device("cpu"), dtype=torch.float32)
    assert batch.shape == (1, 3, *expected.shape[:2])
    ours = (batch[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(ours, expected)  # exact: any rounding slip changes a random network's output


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_input_values_are_ultralytics_preprocess(shape):
    """The float input equals Ultralytics' ``float().div_(255)`` of its letterboxed image, bit for bit."""
    from ultralytics.data.augment import LetterBox

    h, w = shape
    rgb = np.random.default_rng(w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = LetterBox(640, auto=True, stride=32)(image=np.ascontiguousarray(rgb[..., ::-1]))[..., ::-1]
    expected = torch.from_numpy(expected.copy()).permute(2, 0, 1).float().div_(255)
    box = letterbox(h, w, imgsz=640, stride=32, auto=True)
    batch = letterbox_batch([torch.from_numpy(rgb)], [box], device=torch.device("cpu"), dtype=torch.float32)
    assert torch.equal(batch[0], expected)


# (source h, w) -> (target h, w): down by 2 (OpenCV's area shortcut), down and up by odd factors, 1-pixel
# edges, shrinking one side while growing the other.
RESIZES = [((720, 1280), (360, 640)), ((1200, 1800), (427, 640)), ((479, 641), (478, 640)),
           ((517, 333), (640, 412)), ((100, 50), (640, 320)), ((5, 7), (3, 11)), ((1, 9), (4, 4)),
           ((333, 1), (17, 5)), ((257, 511), (640, 640)), ((1080, 1920), (360, 640))]


@pytest.mark.parametrize("src, dst", RESIZES, ids=[f"{s[0]}x{s[1]}-{d[0]}x{d[1]}" for s, d in RESIZES])
def test_device_resize_is_opencv_bit_for_bit(src, dst):
    """``resize_linear`` (the GPU path, run here on the CPU) reproduces cv2.resize INTER_LINEAR exactly."""
    image = np.random.default_rng(src[0] + dst[1]).integers(0, 256, (*src, 3), dtype=np.uint8)
    expected = cv2.resize(image, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(resize_linear(torch.from_numpy(image), *dst).numpy(), expected)


def test_device_resize_on_random_sizes_is_opencv_bit_for_bit():
    rng = np.random.default_rng(3)
    for _ in range(36):
        (h, w), (th, tw) = rng.integers(2, 900, 2), rng.integers(2, 700, 2)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = cv2.resize(image, (int(tw), int(th)), interpolation=cv2.INTER_LINEAR)
        ours = resize_linear(torch.from_numpy(image), int(th), int(tw)).numpy()
        assert np.array_equal(ours, expected), (h, w, th, tw)


@pytest.mark.parametrize("shapes, dynamic, expected", [
    # name: one frame on a dynamic-shape runtime -> minimum rectangle
    ([(720, 1280)], True, [(384, 640)]),
    # equal frames -> minimum rectangle
    ([(720, 1280), (720, 1280)], True, [(384, 640), (384, 640)]),
    # mixed sizes -> the square for all
    ([(720, 1280), (479, 641)], True, [(640, 640), (640, 640)]),
    # fixed-shape runtime (static ONNX, TensorRT) -> always the square
    ([(720, 1280)], False, [(640, 640)]),
], ids=["single", "equal", "mixed", "fixed_runtime"])
def test_batch_input_size_follows_ultralytics_rule(shapes, dynamic, expected):
    boxes = batch_geometry(shapes, imgsz=640, stride=32, dynamic_hw=dynamic)
    assert [(b.input_h, b.input_w) for b in boxes] == expected
