"""Each backend's label map equals its library's own reference pipeline on the same weights and frames.

The references: segmentation_models_pytorch's ``preprocess_input`` (ImageNet statistics, as its encoders'
``imagenet`` settings give them) on the resized frame, then the model; torchvision's own preset
(``DeepLabV3_MobileNet_V3_Large_Weights.DEFAULT.transforms(resize_size=...)``: resize, scale, normalise)
then ``model(x)["out"]``; transformers' ``Mask2FormerImageProcessor`` (resize shortest edge, size_divisor
32, normalise) then its ``post_process_semantic_segmentation`` / ``post_process_panoptic_segmentation``.

Tolerance: >= 99.9 % identical labels at frame resolution (the issue's bar). The engine resizes on the
compute device with the same uint8 antialiased resize, so inputs agree exactly; the only differences left
are float summation order in batched vs single-image runs (~1e-6), which can flip a pixel whose top two
classes are that close. Random weights would make that common: the weights here are spread
(``engine.segment.random_weights``: logits with std 4 and zero mean per class), so ties sit only on
region boundaries, and each test also checks the map is not flat (several classes, none over 90 %).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.segment import CITYSCAPES, SegmenterConfig, load_segmenter
from tests.segment.conftest import FRAME_SIZE, IMGSZ

PARITY = 0.999


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape == FRAME_SIZE
    return float((a.cpu() == b.cpu()).float().mean())


def _not_flat(labels: torch.Tensor, least_classes: int = 2, most_share: float = 0.9) -> None:
    counts = torch.bincount(labels.flatten().clamp_min(0))
    assert int((counts > 0).sum()) >= least_classes and counts.max() < most_share * labels.numel(), counts.tolist()


@pytest.fixture(scope="module", params=["deeplabv3plus", "unet"])
def smp_segmenter(request):
    return load_segmenter(SegmenterConfig(backend=request.param, encoder="resnet18", imgsz=IMGSZ, device="cpu"))


def test_smp_backends_match_smp_preprocessing_and_model(smp_segmenter, frames) -> None:
    from segmentation_models_pytorch.encoders._preprocessing import preprocess_input
    from torchvision.transforms.v2 import functional as tvF

    from engine.segment.preprocess import IMAGENET_MEAN, IMAGENET_STD

    ours = smp_segmenter(frames, frame_indices=[0, 7])
    size = smp_segmenter.input_size(*FRAME_SIZE)
    assert size == (64, 128)  # 64 x int(64 * 160 / 96) = 64 x 106, rounded up to 32
    for frame, result in zip(frames, ours):
        resized = tvF.resize(frame.permute(2, 0, 1), list(size), antialias=True).permute(1, 2, 0).numpy()
        x = preprocess_input(resized.astype(np.float64), mean=IMAGENET_MEAN, std=IMAGENET_STD, input_range=[0, 1])
        x = torch.from_numpy(x).permute(2, 0, 1)[None].float()
        with torch.inference_mode():
            logits = smp_segmenter.module(x)
        expected = F.interpolate(logits, size=FRAME_SIZE, mode="bilinear", align_corners=False).argmax(1)[0]
        assert _agreement(result.labels, expected) >= PARITY
        _not_flat(result.labels, least_classes=3)
    assert [r.frame_index for r in ours] == [0, 7] and all(r.fresh for r in ours)


@pytest.fixture(scope="module")
def mobilenet_segmenter():
    return load_segmenter(SegmenterConfig(backend="deeplabv3-mobilenet", imgsz=IMGSZ, device="cpu"))


def test_torchvision_deeplabv3_matches_its_own_preset(mobilenet_segmenter, frames) -> None:
    from torchvision.models.segmentation import DeepLabV3_MobileNet_V3_Large_Weights

    seg = mobilenet_segmenter
    preset = DeepLabV3_MobileNet_V3_Large_Weights.DEFAULT.transforms(resize_size=IMGSZ)  # no download
    ours = seg(torch.stack(frames))
    assert seg.input_size(*FRAME_SIZE) == (64, 106)  # torchvision's own rule, no rounding
    for frame, result in zip(frames, ours):
        with torch.inference_mode():
            out = seg.module(preset(frame.permute(2, 0, 1))[None])["out"]
        expected = F.interpolate(out, size=FRAME_SIZE, mode="bilinear", align_corners=False).argmax(1)[0]
        assert _agreement(result.labels, expected) >= PARITY
        _not_flat(result.labels, least_classes=3)


def test_mask2former_matches_its_image_processor(frames, tiny_mask2former_config) -> None:
    from transformers import Mask2FormerImageProcessor

    seg = load_segmenter(SegmenterConfig(backend="mask2former", model_config=tiny_mask2former_config,
                                         imgsz=IMGSZ, device="cpu", panoptic=True, keep_logits=True))
    processor = Mask2FormerImageProcessor(size={"shortest_edge": IMGSZ, "longest_edge": 4096}, size_divisor=32)
    ours = seg(frames, frame_indices=[0, 7])
    things_seen = 0
    for frame, result in zip(frames, ours):
        inputs = processor(images=[frame.numpy()], return_tensors="pt")
        assert tuple(inputs["pixel_values"].shape[2:]) == seg.input_size(*FRAME_SIZE)
        with torch.inference_mode():
            out = seg.module(pixel_values=inputs["pixel_values"])
        semantic = processor.post_process_semantic_segmentation(out, target_sizes=[FRAME_SIZE])[0]
        assert _agreement(result.labels, semantic) >= PARITY
        _not_flat(result.labels, least_classes=3)
        assert result.logits is not None and result.logits.shape == (19, 384, 384)
        panoptic = processor.post_process_panoptic_segmentation(
            out, threshold=0.5, label_ids_to_fuse=set(CITYSCAPES.stuff_ids), target_sizes=[FRAME_SIZE])[0]
        # The reference's thing segments, painted into one map, against the engine's Detections.
        expected = torch.zeros(FRAME_SIZE, dtype=torch.int64)
        thing_segments = [s for s in panoptic["segments_info"] if CITYSCAPES.is_thing[s["label_id"]]]
        for k, s in enumerate(sorted(thing_segments, key=lambda s: -s["score"]), start=1):
            expected[panoptic["segmentation"] == s["id"]] = k
            assert int(result.things.class_ids[k - 1]) == s["label_id"]
            assert float(result.things.scores[k - 1]) == pytest.approx(s["score"], abs=1e-4)
        got = torch.zeros(FRAME_SIZE, dtype=torch.int64)
        for k, mask in enumerate(result.things.masks, start=1):
            got[mask] = k
        assert len(result.things) == len(thing_segments)
        assert _agreement(got, expected) >= PARITY
        things_seen += len(thing_segments)
    assert things_seen > 0, "the spread random weights should give thing segments"


def test_user_weights_file_gives_the_same_labels_as_the_model_it_was_saved_from(
        smp_segmenter, frames, tmp_path) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": smp_segmenter.module.state_dict()}, path)  # a training checkpoint's layout
    cfg = smp_segmenter.config
    user = load_segmenter(SegmenterConfig(backend=cfg.backend, encoder=cfg.encoder, weights=str(path),
                                          imgsz=IMGSZ, device="cpu"))
    assert not user.random_weights and smp_segmenter.random_weights
    for a, b in zip(user(frames), smp_segmenter(frames)):
        assert torch.equal(a.labels, b.labels)


def test_torchvision_checkpoint_with_its_training_head_loads(mobilenet_segmenter, frames, tmp_path) -> None:
    """torchvision's own DeepLabV3 checkpoints carry the auxiliary training classifier; it is dropped."""
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    trained = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=19, aux_loss=True)
    result = trained.load_state_dict(mobilenet_segmenter.module.state_dict(), strict=False)
    assert result.missing_keys and all(k.startswith("aux_classifier.") for k in result.missing_keys)
    path = tmp_path / "deeplabv3_mobilenet.pth"
    torch.save(trained.state_dict(), path)
    user = load_segmenter(SegmenterConfig(backend="deeplabv3-mobilenet", weights=str(path), imgsz=IMGSZ,
                                          device="cpu"))
    assert not user.random_weights
    for a, b in zip(user(frames), mobilenet_segmenter(frames)):
        assert torch.equal(a.labels, b.labels)


def test_saved_directories_load_for_smp_and_mask2former(frames, tmp_path, tiny_mask2former_config) -> None:
    for backend, extra in (("unet", {"encoder": "resnet18"}),
                           ("mask2former", {"model_config": tiny_mask2former_config})):
        seg = load_segmenter(SegmenterConfig(backend=backend, imgsz=IMGSZ, device="cpu", **extra))
        folder = tmp_path / backend
        seg.module.save_pretrained(folder)
        extra.pop("model_config", None)
        user = load_segmenter(SegmenterConfig(backend=backend, weights=str(folder), imgsz=IMGSZ, device="cpu",
                                              **extra))
        assert not user.random_weights
        assert torch.equal(user(frames[0])[0].labels, seg(frames[0])[0].labels)
