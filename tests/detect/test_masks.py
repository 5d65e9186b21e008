"""Per-box masks against Ultralytics' full-frame ``process_mask_native``, on random prototypes and boxes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.detect.yolo import masks as mask_ops

# (frame h, w, prototype h, w): the prototype grid is the network input / 4, so these are 720p at 640x384
# (no intermediate upsample), a portrait crop at 416x640 and odd sizes in the 640 square (x2 and x4
# upsamples), a large still, and a frame smaller than the input.
GEOMETRIES = [(720, 1280, 96, 160), (517, 333, 160, 104), (479, 641, 160, 160), (333, 517, 160, 160),
              (1500, 2250, 112, 160), (100, 60, 160, 96)]


def _case(frame_h: int, frame_w: int, ph: int, pw: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    # Smooth prototypes, like a network's (random per-cell values would make every pixel a boundary).
    protos = F.interpolate(torch.randn(1, 32, ph // 8 + 1, pw // 8 + 1, generator=g), size=(ph, pw),
                           mode="bilinear", align_corners=False)[0]
    coefficients = torch.randn(n, 32, generator=g)
    centre = torch.rand(n, 2, generator=g) * torch.tensor([frame_w, frame_h])
    size = torch.rand(n, 2, generator=g) * torch.tensor([frame_w, frame_h]) * 0.6
    boxes = torch.cat((centre - size / 2, centre + size / 2), 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, frame_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, frame_h)
    boxes[0] = torch.tensor([0.0, 0.0, frame_w, frame_h])  # a box that is the whole frame
    boxes[1] = torch.tensor([3.5, 2.25, 3.75, 2.5])  # a box with no pixel inside (x1 <= c < x2 is empty)
    return protos, coefficients, boxes


def _reference(protos, coefficients, boxes, frame_h, frame_w):
    from ultralytics.utils.ops import process_mask_native

    masks = process_mask_native(protos, coefficients, boxes.clone(), (frame_h, frame_w)).bool()
    keep = masks.flatten(1).any(1)
    return masks[keep], keep


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[f"{g[0]}x{g[1]}-p{g[2]}x{g[3]}" for g in GEOMETRIES])
def test_masks_match_ultralytics(geometry):
    frame_h, frame_w, ph, pw = geometry
    protos, coefficients, boxes = _case(frame_h, frame_w, ph, pw, n=24, seed=frame_w)
    expected, expected_keep = _reference(protos, coefficients, boxes, frame_h, frame_w)
    geo = mask_ops.mask_geometry(frame_h, frame_w, ph, pw, device=torch.device("cpu"))
    masks, keep = mask_ops.box_masks(coefficients, protos, boxes, geo, frame_h=frame_h, frame_w=frame_w)
    assert torch.equal(keep, expected_keep)
    assert not keep[1]  # the pixel-less box is dropped, as Ultralytics drops empty masks
    # The same linear maps in another float order: only pixels whose logit is within ~1e-6 of zero can flip.
    assert (masks ^ expected).sum().item() <= 1e-5 * masks.numel()


@pytest.mark.parametrize("geometry", GEOMETRIES[:3], ids=[f"{g[0]}x{g[1]}" for g in GEOMETRIES[:3]])
def test_grouped_path_matches_per_instance_path(geometry):
    """The batched path CUDA takes gives the CPU path's masks (run here on the CPU)."""
    frame_h, frame_w, ph, pw = geometry
    protos, coefficients, boxes = _case(frame_h, frame_w, ph, pw, n=40, seed=1)
    geo = mask_ops.mask_geometry(frame_h, frame_w, ph, pw, device=torch.device("cpu"))
    logits = (coefficients @ protos.view(32, -1)).view(-1, ph, pw)
    spans = boxes.ceil().long()
    spans[:, 0::2].clamp_(0, frame_w)
    spans[:, 1::2].clamp_(0, frame_h)
    boxes_px = [(y0, x0, max(y1 - y0, 0), max(x1 - x0, 0)) for x0, y0, x1, y1 in spans.tolist()]
    each = torch.zeros(len(boxes), frame_h, frame_w, dtype=torch.bool)
    grouped = torch.zeros_like(each)
    assert torch.equal(mask_ops._paste_each(logits, boxes_px, geo, each),
                       mask_ops._paste_grouped(logits, boxes_px, geo, grouped))
    assert (each ^ grouped).sum().item() <= 1e-5 * each.numel()


def test_no_detections_gives_empty_masks_of_the_frame_size():
    geo = mask_ops.mask_geometry(480, 640, 96, 160, device=torch.device("cpu"))
    masks, keep = mask_ops.box_masks(torch.zeros(0, 32), torch.zeros(32, 96, 160), torch.zeros(0, 4), geo,
                                     frame_h=480, frame_w=640)
    assert masks.shape == (0, 480, 640) and masks.dtype == torch.bool and keep.shape == (0,)


def test_pixels_outside_the_box_stay_empty():
    protos = torch.ones(32, 96, 160)  # every logit positive: the mask is exactly the box
    geo = mask_ops.mask_geometry(720, 1280, 96, 160, device=torch.device("cpu"))
    boxes = torch.tensor([[10.2, 20.0, 50.0, 60.7]])
    masks, _ = mask_ops.box_masks(torch.ones(1, 32), protos, boxes, geo, frame_h=720, frame_w=1280)
    expected = torch.zeros(720, 1280, dtype=torch.bool)
    expected[20:61, 11:50] = True  # pixel c is in when x1 <= c < x2: columns 11..49, rows 20..60
    assert torch.equal(masks[0], expected)
