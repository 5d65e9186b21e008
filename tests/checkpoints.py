"""Weights files that look exactly like the ones users pass: saved the way Ultralytics and sam2 save their
released checkpoints, with nothing in them (name, key, flag) that says they are random.

Tests on ``--weights random`` walk only the random-weights path; these files walk the user's. Their
weights are seeded random values, so what they detect and track means nothing, but the code that reads
them, and every branch the engine takes for trained weights, is the one users reach.

- ``write_yolo_checkpoint``: Ultralytics' trainer writes ``last.pt`` as a dict (``epoch``, ``ema``: the
  fp16 model, ``optimizer``, ``train_args``, ``train_metrics``, ...), and its final step,
  ``ultralytics.utils.torch_utils.strip_optimizer``, turns it into the released file (``model`` = the fp16
  EMA model, ``train_args`` filtered, optimizer dropped, version and licence added). Both steps are taken
  here, the second by Ultralytics' own function. The network is ``yolov8n-seg.yaml`` with COCO's class
  names, its random weights spread by ``engine.detect.yolo.random_weights.spread_random_weights`` so that it detects things
  (with a plain random init it detects nothing, and the trained-weights branches would see no detection),
  then a little more confident: every class logit is raised by ``CONFIDENCE_SHIFT``. Spreading alone
  leaves the best scores on the test clips just under 0.5, the fuser's default spawn threshold, and no
  track would start on the CLI's defaults; with the shift, 2-9 of 100-200 detections a frame pass it
  (measured on bedroom, 01_dog and 02_cups).
- ``write_sam2_checkpoint``: Meta's SAM 2.1 files are ``torch.save({"model": state_dict})`` of the model
  sam2's own ``build_sam2`` builds from the config (1024 px); so is this one.
- ``write_segmenter_checkpoint``: a DeepLab v3+ trained with segmentation_models_pytorch, saved the way
  its examples save the best model, ``torch.save(model.state_dict(), path)``, with Cityscapes' 19 output
  classes. Its weights are spread (``engine.segment.random_weights``) so its labels vary over a frame.
- ``write_maskrcnn_checkpoint``: torchvision's released Mask R-CNN files are plain state dicts of the
  91-class COCO model (``maskrcnn_resnet50_fpn_v2_coco-*.pth``); so is this one, spread by
  ``engine.detect.maskrcnn.spread_random_weights`` so it detects things.
"""

from __future__ import annotations

import datetime as dt
import os
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import torch

SAM2_TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
CONFIDENCE_SHIFT = 0.2  # logits added to every class score (see the module docstring)


def write_yolo_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """A YOLOv8n-seg ``.pt`` as Ultralytics releases one (see the module docstring); returns ``path``."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO, __version__
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.utils import ROOT as ULTRALYTICS_ROOT
    from ultralytics.utils import YAML
    from ultralytics.utils.torch_utils import strip_optimizer

    from engine.detect.yolo.random_weights import spread_random_weights

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = YOLO("yolov8n-seg.yaml").model
    spread_random_weights(model, seed=seed)
    with torch.no_grad():
        for branch in model.model[-1].cv3:  # the class branch of each detection scale
            branch[-1].bias += CONFIDENCE_SHIFT
    names = YAML.load(ULTRALYTICS_ROOT / "cfg" / "datasets" / "coco.yaml")["names"]
    model.names = dict(names)
    train_args = {**DEFAULT_CFG_DICT, "task": "segment", "mode": "train", "model": "yolov8n-seg.yaml",
                  "data": "coco.yaml", "epochs": 1, "imgsz": 640}
    model.args = dict(train_args)  # the trainer attaches its arguments to the model
    ema = deepcopy(model).half()
    for p in ema.parameters():
        p.requires_grad = False
    trainer_checkpoint = {  # the keys BaseTrainer.save_model writes, in its order
        "epoch": 0, "best_fitness": 0.0, "model": None, "ema": ema, "updates": 1, "optimizer": None,
        "train_args": train_args, "train_metrics": {"fitness": 0.0}, "train_results": {},
        "date": dt.datetime.now().astimezone().isoformat(), "version": __version__,
        "license": "AGPL-3.0 (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com",
    }
    last = path.with_name(f".{path.stem}-last.pt")
    torch.save(trainer_checkpoint, last)
    try:
        if not strip_optimizer(last, s=str(path)):
            raise RuntimeError(f"ultralytics' strip_optimizer refused {last}")
    finally:
        last.unlink(missing_ok=True)
    return path


def write_sam2_checkpoint(path: Path, *, seed: int = 0, config: str = SAM2_TINY_CONFIG) -> Path:
    """A SAM 2.1 checkpoint as Meta publishes one (``{"model": state_dict}``); returns ``path``."""
    from sam2.build_sam import build_sam2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2(config, ckpt_path=None, device="cpu", mode="eval")
    torch.save({"model": model.state_dict()}, path)
    return path


def write_segmenter_checkpoint(path: Path, *, encoder: str = "resnet18", seed: int = 0) -> Path:
    """A DeepLab v3+ state dict (19 Cityscapes classes) as smp's examples save one; returns ``path``."""
    import segmentation_models_pytorch as smp

    from engine.segment.random_weights import spread_random_weights

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, classes=19)
    spread_random_weights(model, "deeplabv3plus", seed=seed)
    torch.save(model.state_dict(), path)
    return path


def write_maskrcnn_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """A ``maskrcnn_resnet50_fpn_v2`` COCO state dict as torchvision releases one; returns ``path``."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    from engine.detect.maskrcnn import spread_random_weights

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91).eval()
    spread_random_weights(model, seed=seed)
    torch.save(model.state_dict(), path)
    return path


@dataclass(frozen=True, slots=True)
class UserCheckpoints:
    """The two files a user fetches, under their official names."""

    detector: Path  # yolov8n-seg.pt
    tracker: Path  # sam2.1_hiera_tiny.pt


def write_user_checkpoints(directory: Path, *, seed: int = 0) -> UserCheckpoints:
    return UserCheckpoints(detector=write_yolo_checkpoint(directory / "yolov8n-seg.pt", seed=seed),
                           tracker=write_sam2_checkpoint(directory / "sam2.1_hiera_tiny.pt", seed=seed))
