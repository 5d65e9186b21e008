"""Mask R-CNN (torchvision's ``maskrcnn_resnet50_fpn_v2``) as a detector family: frames in, the same
``Detections`` as YOLOv8-seg out (boxes, scores, class ids, masks at frame resolution, names).

torchvision runs the whole model: its ``GeneralizedRCNNTransform`` resizes (shorter side ``imgsz``, longer
side at most ``max_size``) and normalises each frame, the RPN and the box and mask heads run, and its
post-processing (score threshold ``conf``, per-class NMS at ``iou``, at most ``max_det``) scales boxes
back to the frame and pastes each 28 x 28 mask into it; a mask is its pixels with probability > 0.5.
Defaults are torchvision's own, so the same weights give the same instances as calling the model.

Class ids are torchvision's label indices: with 91 classes they index COCO's category list as
torchvision ships it (``__background__`` at 0, never output, and "N/A" for the ids COCO skips).

Weights: ``"random"`` (seeded, spread so scores vary: see ``spread_random_weights``; the instances mean
nothing) or a state-dict file (``torch.load(weights_only=True)``, optionally under ``"state_dict"`` or
``"model"``) for this architecture; the class count is read from it. Nothing is downloaded:
``weights=None, weights_backbone=None``.

As a detector family (``engine.detect.registry``, ``--detector maskrcnn``): ``check`` and ``load`` take a
``DetectorConfig``; its ``conf``, ``iou``, ``imgsz`` (the shorter side) and ``max_det`` become the
thresholds above, so the command line's defaults (Ultralytics': 0.25, 0.7, 640) apply unless given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.detect.config import DetectorConfig
from engine.errors import BackendError, ConfigError, WeightsError
from engine.types import Detections

MODEL_NAMES = ("maskrcnn", "maskrcnn_resnet50_fpn_v2")  # what --detector takes for this family
_NOT_STATE_DICTS = (".onnx", ".engine", ".yaml", ".yml")

COCO_CLASSES = 91  # torchvision's COCO label space, background included
SCORE_GAIN = 4.0  # random weights: std of each class logit over the calibration proposals
MASK_GAIN = 4.0  # random weights: std of the mask logits


@dataclass(frozen=True, slots=True)
class MaskRCNNConfig:
    """What ``load_maskrcnn`` builds; thresholds default to torchvision's."""

    weights: str = "random"  # "random" or a state-dict file
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    conf: float = 0.05  # box_score_thresh: keep (box, class) pairs scoring above this
    iou: float = 0.5  # box_nms_thresh: per-class NMS
    max_det: int = 100  # detections_per_img
    imgsz: int = 800  # min_size: the shorter side frames are resized to
    max_size: int = 1333  # the longer side's limit after resizing
    proposals: int = 1000  # rpn_post_nms_top_n_test: region proposals the box head scores per frame
    seed: int = 0  # random initialisation seed for weights="random"

    def __post_init__(self) -> None:
        for name in ("conf", "iou"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"maskrcnn {name}={value!r} must be a number between 0 and 1")
        for name in ("max_det", "imgsz", "max_size", "proposals"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"maskrcnn {name}={value!r} must be a positive integer")
        if not isinstance(self.weights, str) or not self.weights:
            raise ConfigError("maskrcnn weights must be 'random' or a path to a state-dict file")


class MaskRCNNDetector:
    """Calls torchvision's Mask R-CNN on a batch of frames; build it with ``load_maskrcnn``."""

    def __init__(self, model: nn.Module, config: MaskRCNNConfig, *, names: tuple[str, ...],
                 device: torch.device, random_weights: bool) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.names = names  # class id -> label
        self.device = device
        self.random_weights = random_weights

    @torch.inference_mode()
    def __call__(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        """Detect instances in a batch of frames.

        Args:
            images: frames, each [H, W, 3] uint8 RGB on any device; sizes may differ.
        Returns:
            One ``Detections`` per frame, best score first, on the detector's device: boxes [N, 4] float32
            x1, y1, x2, y2 in frame pixels, scores [N], class_ids [N] int64, masks [N, H, W] bool.
        """
        inputs = []
        for i, image in enumerate(images):
            if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[2] != 3 \
                    or image.dtype != torch.uint8:
                got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
                raise ValueError(f"detector input {i} must be a [H, W, 3] uint8 RGB tensor, got {got}")
            inputs.append(image.to(self.device).permute(2, 0, 1).float().div_(255.0))
        if not inputs:
            return []
        outputs = self.model(inputs)
        detections = []
        for out in outputs:
            masks = out["masks"][:, 0] > 0.5
            detections.append(Detections(boxes=out["boxes"].float(), scores=out["scores"].float(),
                                         class_ids=out["labels"].long(), masks=masks, names=self.names,
                                         extents=_extents(masks)))
        return detections


def _extents(masks: torch.Tensor) -> torch.Tensor:  # [N, H, W] bool -> [N, 4] float32
    """The pixel-edge box of each mask (zeros for an empty one). torchvision pastes each 28 x 28 mask
    into its box enlarged by 2/28 (``paste_masks_in_image``), so a mask can reach past its box."""
    n, h, w = masks.shape
    rows, cols = masks.any(2), masks.any(1)  # [N, H], [N, W]
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    extents = torch.stack([torch.where(cols, xs, w).amin(1), torch.where(rows, ys, h).amin(1),
                           torch.where(cols, xs, -1).amax(1) + 1, torch.where(rows, ys, -1).amax(1) + 1],
                          1).float() if n else torch.zeros((0, 4), device=masks.device)
    empty = ~cols.any(1) if n else torch.zeros(0, dtype=torch.bool, device=masks.device)
    return extents.masked_fill(empty[:, None], 0.0)


def check(config: DetectorConfig) -> None:
    """ConfigError for what Mask R-CNN cannot run: another backend than torch, fp16, a file that is not a
    state dict (ONNX, TensorRT, a YOLO yaml). Loads nothing."""
    if config.backend not in ("auto", "torch"):
        raise ConfigError(f"detector backend {config.backend!r}: Mask R-CNN runs on torch only; use --backend "
                          "auto or torch")
    if config.half:
        raise ConfigError("Mask R-CNN runs in fp32; leave the detector's half precision unset")
    if not config.random and Path(config.weights).suffix.lower() in _NOT_STATE_DICTS:
        raise ConfigError(f"detector weights {config.weights!r}: Mask R-CNN takes a state-dict file (.pth, .pt) "
                          "for maskrcnn_resnet50_fpn_v2, or 'random'")


def load(config: DetectorConfig) -> MaskRCNNDetector:
    """The registry's entry: the Mask R-CNN a ``DetectorConfig`` describes (see ``check``)."""
    check(config)
    return load_maskrcnn(MaskRCNNConfig(weights=config.weights, device=config.device, conf=config.conf,
                                        iou=config.iou, max_det=config.max_det, imgsz=config.imgsz,
                                        seed=config.seed))


def load_maskrcnn(config: MaskRCNNConfig) -> MaskRCNNDetector:
    """Build the Mask R-CNN detector ``config`` describes.

    Raises:
        WeightsError: the weights file is missing, unreadable, or not for ``maskrcnn_resnet50_fpn_v2``.
        BackendError: the device is not available.
    """
    device = _device(config.device)
    if config.weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = _build(config, COCO_CLASSES)
        spread_random_weights(model, seed=config.seed)
        random_weights = True
    else:
        state = _read_state_dict(config.weights)
        head = state.get("roi_heads.box_predictor.cls_score.weight")
        if head is None:
            raise WeightsError(f"{config.weights}: not maskrcnn_resnet50_fpn_v2 weights (no "
                               "roi_heads.box_predictor.cls_score); pass weights trained for it")
        model = _build(config, int(head.shape[0]))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), "")[:200]
            raise WeightsError(f"{config.weights}: not maskrcnn_resnet50_fpn_v2 weights ({first}); pass "
                               "weights trained for this architecture") from None
        random_weights = False
    classes = model.roi_heads.box_predictor.cls_score.out_features
    return MaskRCNNDetector(model, config, names=_names(classes), device=device, random_weights=random_weights)


def _build(config: MaskRCNNConfig, num_classes: int) -> nn.Module:
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    return maskrcnn_resnet50_fpn_v2(
        weights=None, weights_backbone=None, num_classes=num_classes, box_score_thresh=config.conf,
        box_nms_thresh=config.iou, box_detections_per_img=config.max_det, min_size=config.imgsz,
        max_size=config.max_size, rpn_post_nms_top_n_test=config.proposals).eval()


def _names(classes: int) -> tuple[str, ...]:
    if classes == COCO_CLASSES:
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_V2_Weights

        return tuple(MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1.meta["categories"])  # metadata, no download
    return ("__background__", *(f"class{i}" for i in range(1, classes)))


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsError(f"maskrcnn weights {path} do not exist or are not a file; check the path, or use "
                           "weights 'random'")
    try:
        state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - damaged bytes surface as many exception types, all "unreadable"
        raise WeightsError(f"{path}: not a readable weights file ({type(exc).__name__}); pass a state dict "
                           "saved with torch.save") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return state


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {name!r} asked for, but torch sees no CUDA device; use device='cpu'")
    return device


@torch.no_grad()
def spread_random_weights(model: nn.Module, *, seed: int) -> nn.Module:
    """Give a freshly initialised Mask R-CNN spread scores and decided masks. In place; eval mode.

    With default initialisation every class logit is ~0 (``cls_score`` is initialised with std 0.01), so
    each of the 91 classes scores ~1/91 < ``conf`` = 0.05 and nothing is detected; mask logits are ~0, so
    every mask is a coin toss at probability 0.5. One pass over a seeded calibration picture (colour
    blocks) measures the two final layers, which are rescaled so that each class logit has mean 0 and std
    ``SCORE_GAIN`` over the proposals (background's mean is lowered by the same amount, so objects are
    found) and the mask logits have std ``MASK_GAIN``. The instances mean nothing.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.rand(1, 3, 6, 8, generator=generator)
    image = F.interpolate(blocks, size=(240, 320), mode="nearest")[0]
    image = (image + 0.03 * torch.randn(image.shape, generator=generator)).clamp(0, 1)
    cls_score = model.roi_heads.box_predictor.cls_score
    mask_logits = model.roi_heads.mask_predictor.mask_fcn_logits
    logits = _layer_output(model, cls_score, image)  # [proposals, classes]
    mean, std = logits.mean(0), logits.std(0).clamp_min(1e-12)
    cls_score.weight.mul_((SCORE_GAIN / std)[:, None])
    cls_score.bias.copy_((cls_score.bias - mean) * SCORE_GAIN / std)
    cls_score.bias[0] -= SCORE_GAIN
    masks = _layer_output(model, mask_logits, image)  # the mask head runs on the detections just made
    if masks is not None:
        scale = MASK_GAIN / masks.std().clamp_min(1e-12)
        mask_logits.weight.mul_(scale)
        mask_logits.bias.mul_(scale)
    return model


def _layer_output(model: nn.Module, layer: nn.Module, image: torch.Tensor) -> torch.Tensor | None:
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        model([image])
    finally:
        hook.remove()
    return seen[0] if seen else None
