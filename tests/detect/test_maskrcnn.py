"""Mask R-CNN as a detector family: parity with torchvision's own model call, user weights by path,
and bad weights refused with one clear line.

Parity: the engine batches frames and converts torchvision's output; the reference calls the same
module on one frame at a time. Batched vs single runs differ only in float summation order (~1e-6), so
the bars (boxes IoU >= 0.99, scores within 1e-4, masks IoU >= 0.99) leave room for that and nothing else.
The random weights are spread (``engine.detect.maskrcnn.spread_random_weights``): without it nothing
passes torchvision's 0.05 score threshold and every mask pixel sits at probability 0.5, where any rounding
flips it.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from engine.detect.maskrcnn import MaskRCNNConfig, load_maskrcnn
from engine.errors import ConfigError, WeightsError

SMALL = {"imgsz": 96, "max_size": 160, "proposals": 100, "device": "cpu"}  # CI-sized


@pytest.fixture(scope="module")
def frames() -> list[torch.Tensor]:
    from engine.sources.synthetic import SyntheticScene

    scene = SyntheticScene(seed=4, frames=10, width=160, height=96, objects=4, stuff=True)
    return [torch.from_numpy(scene.render(i)) for i in (0, 9)]


@pytest.fixture(scope="module")
def detector():
    return load_maskrcnn(MaskRCNNConfig(**SMALL))


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # [N, H, W] x [N, H, W] -> [N]
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def test_detections_match_torchvision_model_output(detector, frames) -> None:
    ours = detector(frames)
    for frame, dets in zip(frames, ours):
        with torch.inference_mode():
            ref = detector.model([frame.permute(2, 0, 1).float() / 255.0])[0]
        assert len(dets) == len(ref["scores"]) >= 5, "spread random weights should detect several instances"
        assert dets.masks.shape[1:] == frame.shape[:2] and dets.masks.dtype == torch.bool
        assert torch.equal(dets.class_ids, ref["labels"])
        assert torch.allclose(dets.scores, ref["scores"], atol=1e-4)
        assert box_iou(dets.boxes, ref["boxes"]).diagonal().min() >= 0.99
        assert _mask_iou(dets.masks, ref["masks"][:, 0] > 0.5).min() >= 0.99
        assert (dets.scores[:-1] >= dets.scores[1:]).all()  # best first
        assert dets.names[int(dets.class_ids[0])] == detector.names[int(dets.class_ids[0])] != "__background__"
        assert dets.masks.flatten(1).any(1).float().mean() > 0.5  # masks are decided, not coin tosses
        x1, y1, x2, y2 = (v.long() for v in dets.extents.unbind(1))  # each mask lies inside its extent
        for k, mask in enumerate(dets.masks):
            inside = torch.zeros_like(mask)
            inside[y1[k]:y2[k], x1[k]:x2[k]] = True
            assert not (mask & ~inside).any() and (not mask.any() or mask[y1[k]].any())


def test_user_weights_file_reproduces_the_model(detector, frames, tmp_path) -> None:
    path = tmp_path / "maskrcnn.pth"
    torch.save({"model": detector.model.state_dict()}, path)
    user = load_maskrcnn(MaskRCNNConfig(weights=str(path), **SMALL))
    assert not user.random_weights and detector.random_weights and user.names == detector.names
    a, b = user(frames[:1])[0], detector(frames[:1])[0]
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks)


def _write(tmp_path, name: str, payload) -> str:
    path = tmp_path / name
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    return str(path)


@pytest.mark.parametrize(("make", "expected"), [
    pytest.param(lambda p: str(p / "nope.pth"), "do not exist", id="missing-file"),
    pytest.param(lambda p: _write(p, "bad.pth", b"PK\x03\x04garbage"), "not a readable weights file",
                 id="corrupt-file"),
    pytest.param(lambda p: _write(p, "seg.pth", {"segmentation_head.0.weight": torch.zeros(19, 16, 3, 3)}),
                 "not maskrcnn_resnet50_fpn_v2 weights", id="other-architecture"),
    pytest.param(lambda p: _write(p, "part.pth", {"roi_heads.box_predictor.cls_score.weight": torch.zeros(5, 1024)}),
                 "not maskrcnn_resnet50_fpn_v2 weights", id="incomplete-state-dict"),
])
def test_bad_weights_fail_with_one_clear_line(tmp_path, make, expected) -> None:
    with pytest.raises(WeightsError, match=expected) as info:
        load_maskrcnn(MaskRCNNConfig(weights=make(tmp_path), **SMALL))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change", [{"conf": 1.5}, {"iou": -0.1}, {"max_det": 0}, {"imgsz": True}])
def test_bad_settings_are_refused(change) -> None:
    with pytest.raises(ConfigError):
        MaskRCNNConfig(**change)
