"""Parity with Ultralytics' own ``predict`` on the same weights and frames, for the torch and ONNX Runtime
backends, batch 1 and batch 4.

Weights: yolov8n-seg.yaml, seed 0, ``spread_random_weights``: on these frames at conf=0.25, iou=0.7 they give
32-130 detections per frame (measured at batch 1: cars 97, truck 125, bedroom 45, bedroom crop 45, cups crop
32), with distinct scores, so the comparison is not vacuous; ``MIN_PER_FRAME`` asserts it.

Ultralytics letterboxes a batch to the minimum rectangle (padding to a multiple of 32) when all its images
have the same shape and the model takes any input size, and to the full 640x640 square otherwise
(``BasePredictor.pre_transform``); batch 1 is the same-shape case. The detector makes the same choice, so
batch 1, a batch of equal frames and a batch of mixed sizes each run at the input size Ultralytics uses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .matching import as_bgr, as_tensor, mask_iou, match_instances

CONF, IOU = 0.25, 0.7
MIN_PER_FRAME = 25  # the fixture's frames give 32+ detections each; fewer would weaken the comparison
# Ultralytics and the detector run the same fused float32 network on bit-identical inputs; what differs is
# the order of float operations (BLAS blocking, a different composition of the two mask interpolations), worth
# ~1e-6 in scores and a handful of boundary pixels in masks (measured: <= 8 pixels per frame). The tolerances
# leave room for other BLAS/oneDNN builds, and any real mistake (a one-pixel letterbox shift, a wrong
# rounding, a swapped axis) breaks them by orders of magnitude.
BOX_IOU_MIN = 0.99
SCORE_ATOL = 1e-3
MASK_IOU_MIN = 0.99

BATCH1 = ["cars_1280x720", "truck_641x479", "bedroom_960x540", "bedroom_crop_641x479", "cups_crop_333x517"]
BATCH4 = {
    "mixed_sizes": ["cars_1280x720", "truck_641x479", "bedroom_960x540", "cups_crop_333x517"],
    "same_size": ["truck_641x479", "bedroom_crop_641x479", "bedroom_crop_641x479", "truck_641x479"],
}


def assert_same_instances(ours, theirs, frame_name: str) -> None:
    """One frame's detections against one Ultralytics ``Results``."""
    ref_boxes = theirs.boxes.xyxy
    ref_scores = theirs.boxes.conf
    ref_classes = theirs.boxes.cls.long()
    ref_masks = (theirs.masks.data.bool() if theirs.masks is not None
                 else torch.zeros(0, *ours.masks.shape[1:], dtype=torch.bool))
    rows, cols, box_iou = match_instances(ours.boxes, ref_boxes)
    # Everything pairs up, unless a score sits so close to the threshold that float noise decides which side.
    for unmatched, scores in ((set(range(len(ours))) - set(rows), ours.scores),
                              (set(range(len(ref_boxes))) - set(cols), ref_scores)):
        near = [abs(float(scores[i]) - CONF) < SCORE_ATOL for i in unmatched]
        assert all(near), f"{frame_name}: {len(unmatched)} unmatched detections away from the threshold"
    assert len(rows) >= MIN_PER_FRAME, f"{frame_name}: only {len(rows)} detections; the fixture is too weak"
    assert box_iou.min() >= BOX_IOU_MIN, f"{frame_name}: box IoU {box_iou.min():.4f}"
    assert torch.equal(ours.class_ids[rows], ref_classes[cols]), f"{frame_name}: classes differ"
    score_diff = (ours.scores[rows] - ref_scores[cols]).abs().max().item()
    assert score_diff <= SCORE_ATOL, f"{frame_name}: scores differ by {score_diff:.2e}"
    assert ours.masks.shape[1:] == ref_masks.shape[1:] == theirs.orig_shape
    masks = mask_iou(ours.masks[rows], ref_masks[cols])
    assert masks.min().item() >= MASK_IOU_MIN, f"{frame_name}: mask IoU {masks.min().item():.4f}"
    # Best score first, as the Detections contract says.
    assert torch.all(ours.scores[:-1] >= ours.scores[1:])


def _predict(reference, frames: list[np.ndarray]):
    return reference.predict([as_bgr(f) for f in frames], conf=CONF, iou=IOU, imgsz=640, retina_masks=True,
                             verbose=False)


@pytest.fixture(scope="module")
def detectors(torch_detector, ort_detector):
    return {"torch": torch_detector, "onnxruntime": ort_detector}


# Both backends are checked against one reference call per case: Ultralytics' predict is the slow part.
@pytest.mark.parametrize("frame_name", BATCH1)
def test_batch_of_one_matches_ultralytics(frame_name, detectors, reference, parity_frames):
    frame = parity_frames[frame_name]
    (theirs,) = _predict(reference, [frame])
    for backend, detector in detectors.items():
        (ours,) = detector([as_tensor(frame)])
        assert_same_instances(ours, theirs, f"{backend}/{frame_name}")


@pytest.mark.parametrize("batch_name", list(BATCH4))
def test_batch_of_four_matches_ultralytics(batch_name, detectors, reference, parity_frames):
    names = BATCH4[batch_name]
    frames = [parity_frames[n] for n in names]
    theirs = _predict(reference, frames)
    for backend, detector in detectors.items():
        ours = detector([as_tensor(f) for f in frames])
        assert len(ours) == len(theirs) == 4
        for name, mine, ref in zip(names, ours, theirs):
            assert_same_instances(mine, ref, f"{backend}/{batch_name}/{name}")


def test_mixed_batch_uses_the_square_and_equal_batch_the_rectangle(torch_detector, parity_frames):
    """A frame alone and in a batch of equal frames runs at 640x384; in a batch with other sizes at 640x640,
    so its detections differ between the two, exactly as they do in Ultralytics."""
    cars, truck = parity_frames["cars_1280x720"], parity_frames["truck_641x479"]
    alone = torch_detector([as_tensor(cars)])[0]
    twice = torch_detector([as_tensor(cars), as_tensor(cars)])
    mixed = torch_detector([as_tensor(cars), as_tensor(truck)])[0]
    # Same input size: the same instances (a batch may change float summation order, hence allclose).
    for other in twice:
        assert len(other) == len(alone) and torch.allclose(other.boxes, alone.boxes, atol=1e-3)
    # A 640x640 input sees more padding and gives other instances.
    assert len(mixed) != len(alone) or not torch.allclose(mixed.boxes, alone.boxes, atol=1.0)


def test_results_live_on_the_device_with_contract_types(torch_detector, parity_frames):
    (dets,) = torch_detector([as_tensor(parity_frames["cups_crop_333x517"])])
    assert dets.boxes.dtype == torch.float32 and dets.scores.dtype == torch.float32
    assert dets.class_ids.dtype == torch.int64 and dets.masks.dtype == torch.bool
    assert dets.masks.shape[1:] == (517, 333)
    assert dets.names == torch_detector.names and len(dets.names) == 80
    assert {t.device.type for t in (dets.boxes, dets.scores, dets.class_ids, dets.masks)} == {"cpu"}


@pytest.mark.gpu
def test_cuda_fp16_matches_cpu_fp32(parity_frames):
    """On a GPU the torch backend runs fp16: same instances as fp32 on the CPU, within fp16's precision."""
    from engine.detect import DetectorConfig, load_detector

    cpu = load_detector(DetectorConfig(weights="random", device="cpu"))
    gpu = load_detector(DetectorConfig(weights="random", device="cuda"))
    frame = as_tensor(parity_frames["bedroom_960x540"])
    (a,), (b,) = cpu([frame]), gpu([frame.cuda()])
    assert b.masks.device.type == "cuda"
    rows, cols, box_iou = match_instances(a.boxes, b.boxes.cpu())
    # fp16 carries ~3 significant digits through 60 layers: scores move by up to ~1e-2 and a few boxes swap
    # near the threshold, so most (not all) instances pair up, and the pairs agree closely.
    assert len(rows) >= 0.8 * max(len(a), len(b))
    assert np.median(box_iou) >= 0.98
    assert (a.scores[rows] - b.scores.cpu()[cols]).abs().median() <= 1e-2
