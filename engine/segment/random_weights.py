"""Random semantic-model weights whose labels vary over a frame, so parity tests mean something.

A network built with PyTorch's default initialisation gives class scores that are nearly tied and nearly
constant over the picture: DeepLab v3+ (resnet34) logits have a std of ~0.25 across a frame, Mask2Former's
class probabilities sit near 1/(C+1) for every query, so one class wins almost everywhere and a label
map's "parity" would compare two flat maps. ``spread_random_weights`` fixes that deterministically,
without touching the architecture: one forward pass over seeded calibration pictures (piecewise-constant
colour blocks with a little noise: edges and flat regions, as in real frames) measures the output layers,
which are then rescaled so that

- smp / torchvision: every BatchNorm's statistics are first set from what it sees (features keep their
  spread through the depth instead of fading or exploding as with default statistics), then each class logit has zero mean and std ``LOGIT_GAIN`` over the calibration pixels;
  class boundaries then follow the picture's content and the top two classes are far apart almost
  everywhere (ties only on the boundary lines between regions);
- Mask2Former: each class logit has zero mean and std ``LOGIT_GAIN`` over the queries (some queries become
  confident, so panoptic segments pass the 0.5 score threshold), and the mask logits have std
  ``LOGIT_GAIN`` (masks are decided, not all near sigmoid 0.5) after the pixel embeddings are centred
  (else each query's mask is one offset over the whole picture), and a prior of ``-MASK_PRIOR`` stds
  makes each mask cover a few percent of the picture, so queries own distinct regions. Its decoder feeds each layer's masks to
  the next layer's attention, so the mask scale is measured and set twice.

The labels mean nothing: there is no training.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from engine.segment.preprocess import IMAGENET_MEAN, IMAGENET_STD

LOGIT_GAIN = 4.0  # std of each class logit over the calibration data
MASK_PRIOR = 2.0  # Mask2Former: a mask holds the pixels whose logit is this many stds above the mean
CALIBRATION_IMAGES = 2
CALIBRATION_SIZE = (192, 256)  # (h, w); multiples of 32 for every backend
BLOCKS = (6, 8)  # colour blocks per calibration picture (rows, columns)


def calibration_batch(generator: torch.Generator) -> torch.Tensor:  # -> [2, 3, 192, 256] normalised
    h, w = CALIBRATION_SIZE
    blocks = torch.rand(CALIBRATION_IMAGES, 3, *BLOCKS, generator=generator)
    images = F.interpolate(blocks, size=(h, w), mode="nearest")
    images = (images + 0.03 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _normalise_layer(layer: nn.Conv2d | nn.Linear, run: Callable[[], None], *, channel_dim: int,
                     gain: float = LOGIT_GAIN) -> None:
    """Rescale ``layer`` so each output channel has mean 0 and std ``gain`` on its last output while
    ``run()`` runs. The std is the within-image one (over pixels, or queries, of each image, averaged over
    images): an offset shared by a whole picture decides nothing within it. Only the last call counts:
    Mask2Former's class predictor also runs on every earlier decoder layer (for its auxiliary losses),
    whose features have other means and spreads, while the model's output is the last layer's."""
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        run()
    finally:
        hook.remove()
    last = seen[-1]
    out = last.movedim(channel_dim, -1).reshape(last.shape[0], -1, last.shape[channel_dim])  # [images, positions, channels]
    mean, std = out.mean((0, 1)), out.var(1).mean(0).sqrt().clamp_min(1e-12)
    scale = gain / std
    layer.weight.mul_(scale.view(-1, *([1] * (layer.weight.dim() - 1))))
    if layer.bias is not None:
        layer.bias.copy_((layer.bias - mean) * scale)


def _calibrate_batchnorm(model: nn.Module, run: Callable[[], None]) -> None:
    """Set every BatchNorm's running statistics from the input it sees while ``run()`` runs, layer by layer
    (each sees the already normalised output of the ones before): per-channel mean, and one variance per
    layer (the within-image spatial variance averaged over channels; across images for a pooled one-pixel
    input), so features keep unit spread
    through the depth of the network instead of growing or fading as they do with default statistics."""

    def calibrate(bn: nn.BatchNorm2d, inputs: tuple[torch.Tensor], _output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        # A pooled branch (ASPP's image pooling) has one pixel: its spread is across images instead.
        var = x.var(dim=(2, 3)) if x.shape[2] * x.shape[3] > 1 else x.var(dim=0)
        bn.running_var.fill_(max(var.mean().item() - bn.eps, 1e-12))
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    hooks = [m.register_forward_hook(calibrate) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def spread_random_weights(model: nn.Module, backend: str, *, seed: int) -> nn.Module:
    """Spread a freshly initialised semantic model's outputs (module docstring). In place; eval mode.

    Args:
        model: the backend's module on the CPU (smp model, torchvision DeepLabV3, or transformers'
            ``Mask2FormerForUniversalSegmentation``).
        backend: its ``SegmenterConfig.backend`` name.
        seed: seeds the calibration pictures; the same seed gives the same weights.
    """
    model.eval()
    x = calibration_batch(torch.Generator().manual_seed(seed))
    if backend == "mask2former":
        _spread_mask2former(model, x)
        return model
    run = partial(model, x)
    _calibrate_batchnorm(model, run)
    final = model.classifier[-1] if backend == "deeplabv3-mobilenet" else model.segmentation_head[0]
    _normalise_layer(final, run, channel_dim=1)
    return model


def _spread_mask2former(model: nn.Module, x: torch.Tensor) -> None:
    run = partial(model, pixel_values=x)
    # Pixel embeddings centred per channel (else each query's mask logit is one offset over the picture and
    # a single class wins everywhere); channel 0 is then made a constant 1, so the mask embedder's bias on
    # it becomes every mask's prior logit.
    projection = next(m for n, m in model.named_modules() if n.endswith("mask_projection"))
    _normalise_layer(projection, run, channel_dim=1, gain=1.0)
    projection.weight[0].zero_()
    projection.bias[0] = 1.0
    embedder = next(m for m in model.modules() if type(m).__name__ == "Mask2FormerMLPPredictionHead")
    last = [m for m in embedder.modules() if isinstance(m, nn.Linear)][-1]
    for _ in range(2):  # the decoder attends through its own masks: rescaling changes what it measures
        # Mask embeddings centred over the queries: else every mask is mostly one shared picture-wide
        # pattern (measured: ~0.8 std across queries at a pixel against ~4 across pixels), no query owns
        # a region, and the class with the most total probability wins the whole semantic map.
        _normalise_layer(last, run, channel_dim=-1, gain=1.0)
        last.weight[0].zero_()
        last.bias[0] = 0.0
        std = model(pixel_values=x).masks_queries_logits.std().clamp_min(1e-12)
        last.weight.mul_(LOGIT_GAIN / std)
        last.bias.mul_(LOGIT_GAIN / std)
    # Masks cover a query's pixels that stand MASK_PRIOR stds out: a few percent of the picture each,
    # so queries own distinct regions and pass the panoptic overlap test as trained models' do.
    last.bias[0] = -MASK_PRIOR * LOGIT_GAIN
    _normalise_layer(model.class_predictor, run, channel_dim=-1)
