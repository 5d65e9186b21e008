"""Random YOLOv8-seg weights that behave like a detector: many instances with real score spread.

A model built from its yaml has PyTorch's default initialisation: activations shrink by orders of magnitude
through the ~60 layers (yolov8n-seg: the class head's input has std ~1e-7 on a real frame), and every class
bias is log(5 / nc / (640 / stride)^2) ~ -11.5, so all anchors score ~1e-4 for every class. Nothing passes
conf=0.25, and the scores that exist are nearly tied, which makes NMS order arbitrary. Neither a parity test
nor a demo can use that.

``spread_random_weights`` fixes it deterministically, without touching the architecture:

1. The first convolution's kernels are made zero-mean, so the network ignores a frame's overall brightness
   and colour cast (with them, a bright frame shifted every later layer and blew the scores up).
2. One forward pass over a seeded synthetic calibration batch of six "dead leaves" pictures (see
   ``calibration_batch``). During the pass every BatchNorm's running mean and variance are set from its input:
   the per-channel mean, and one variance per layer (the within-image spatial variance averaged over
   channels and images), so each layer hands on centred features with std ``LAYER_STD`` (LSUV-style
   normalisation). A small std keeps SiLU in its near-linear range; at std 1 the network amplified the
   difference between calibration and real frames layer after layer (up to 100x at the head).
3. The last 1x1 convolution of each head branch is normalised the same way. The class branch gets fresh
   N(0, 1) weights, scaled so its logits vary with std ``CLASS_GAIN`` within a calibration image (real
   frames excite the features less: about 0.3-1.5 logits of spatial spread). The class biases are a seeded
   permutation of a ladder ``TOP_LOGIT, TOP_LOGIT - 1, ...``: one class is likely, the next less so, which
   keeps the number of detections in the same range across very different frames.

Measured on the test media with seed 0 at conf=0.25, iou=0.7: 45-170 detections per frame (300, the cap, on
03_blocks), top scores 0.4-0.99, no tied scores. Deep random networks stay chaotic: other seeds were checked
for 0-3 (same range); a seed can still give saturated scores on some frames, so tests use seed 0.

The instances mean nothing: there is no training. They exercise every code path (letterbox, NMS, masks,
batching) with realistic counts and distinct scores, which is what parity tests, benchmarks and the demo need.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CALIBRATION_IMAGES = 6
CALIBRATION_SIZE = 320
LEAVES = 300  # shapes per calibration image
LEAF_RADII = (2.0, 100.0)  # pixels; log-uniform between these, the scale-invariant law of natural images
SENSOR_NOISE = 0.02  # std of the pixel noise added on top
LAYER_STD = 0.3  # feature std each BatchNorm hands on: small keeps SiLU near-linear
CLASS_GAIN = 4.0  # class logit std within a calibration image
BOX_GAIN = 4.0  # same for the box-distribution logits, so box sizes vary
TOP_LOGIT = -3.0  # bias of the most likely class; the ladder steps down one logit per class


def calibration_batch(generator: torch.Generator) -> torch.Tensor:  # -> [6, 3, 320, 320] float32 in [0, 1]
    """The seeded synthetic images ``spread_random_weights`` normalises the network on: "dead leaves"
    pictures (opaque discs and rectangles of random colour and log-uniform size, small ones on top), whose
    sharp edges and 1/f spectrum excite the early filters the way real frames do; smooth noise does not."""
    n, size = CALIBRATION_IMAGES, CALIBRATION_SIZE
    low, high = LEAF_RADII
    images = torch.rand(n, 3, 1, 1, generator=generator).repeat(1, 1, size, size)  # background colours
    canvas = images.numpy()  # drawn with numpy: ~1800 small shapes, where per-op overhead is what costs
    for image in canvas:
        radii = (low * (high / low) ** torch.rand(LEAVES, generator=generator)).sort(descending=True).values
        centres = (torch.rand(LEAVES, 2, generator=generator) * size).numpy()
        colours = torch.rand(LEAVES, 3, 1, 1, generator=generator).numpy()
        discs = (torch.rand(LEAVES, generator=generator) < 0.5).tolist()
        for r, (cy, cx), colour, disc in zip(radii.numpy(), centres, colours, discs):  # small ones land last
            y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, size)
            x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, size)
            dy = np.arange(y0, y1, dtype=np.float32).reshape(-1, 1) - cy
            dx = np.arange(x0, x1, dtype=np.float32).reshape(1, -1) - cx
            inside = dy**2 + dx**2 < r * r if disc else (np.abs(dy) < r) & (np.abs(dx) < np.float32(0.6) * r)
            region = image[:, y0:y1, x0:x1]
            np.copyto(region, colour, where=inside)
    images += SENSOR_NOISE * torch.randn(images.shape, generator=generator)
    return images.clamp_(0, 1)


@torch.no_grad()
def spread_random_weights(model: nn.Module, *, seed: int) -> nn.Module:
    """Make a randomly initialised Ultralytics segmentation model produce many detections with spread scores
    (the module docstring says how and why).

    Args:
        model: an unfused Ultralytics ``SegmentationModel`` on the CPU (BatchNorm layers still present).
        seed: seeds the calibration images, the new class weights and the class-bias permutation. The same
            seed gives the same weights: bit-identical on one machine at one torch thread count, otherwise
            within float rounding of the calibration pass (~1e-5).
    Returns:
        ``model``, modified in place and left in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    calibration = calibration_batch(generator)
    head = model.model[-1]
    finals = {id(branch[-1]): kind for kind in ("cv2", "cv3", "cv4") for branch in getattr(head, kind)}
    class_rank = torch.randperm(head.nc, generator=generator).float()
    model.eval()
    first = model.model[0].conv
    first.weight.sub_(first.weight.mean(dim=(2, 3), keepdim=True))

    def normalise_batchnorm(bn: nn.BatchNorm2d, inputs: tuple[torch.Tensor], _output: torch.Tensor):
        x = inputs[0]
        spatial_var = x.var(dim=(2, 3)).mean()
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.fill_(max(spatial_var.item() / LAYER_STD**2 - bn.eps, 1e-12))
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    def normalise_final(conv: nn.Conv2d, inputs: tuple[torch.Tensor], _output: torch.Tensor):
        kind = finals[id(conv)]
        if kind == "cv3":
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        raw = F.conv2d(inputs[0], conv.weight)
        mean, spatial_std = raw.mean(dim=(0, 2, 3)), raw.var(dim=(2, 3)).mean(0).sqrt()
        gain = {"cv2": BOX_GAIN, "cv3": CLASS_GAIN, "cv4": 1.0}[kind]
        conv.weight.mul_((gain / spatial_std).view(-1, 1, 1, 1))
        bias = -mean * gain / spatial_std
        if kind == "cv3":
            bias += TOP_LOGIT - class_rank
        conv.bias.copy_(bias)
        return F.conv2d(inputs[0], conv.weight, conv.bias)

    hooks = [m.register_forward_hook(normalise_batchnorm) for m in model.modules()
             if isinstance(m, nn.BatchNorm2d)]
    hooks += [m.register_forward_hook(normalise_final) for m in model.modules() if id(m) in finals]
    try:
        model(calibration)
    finally:
        for hook in hooks:
            hook.remove()
    return model
