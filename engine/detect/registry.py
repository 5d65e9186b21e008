"""Detector families: a family name maps to the module that loads it, and to the model names it takes.

A family module (``engine.detect.yolo``) offers:

- ``check(config: DetectorConfig) -> None``: ConfigError for anything in ``config`` the family cannot
  run (file types, input sizes), without loading anything;
- ``load(config: DetectorConfig) -> engine.interfaces.Detector``: the ready detector;
- on import, it registers its official weights with ``engine.weights`` (``streamseg fetch``).

Modules are imported when a family is used, so importing ``engine.detect`` loads no model library.
Another family is one module and one ``register_family`` line below, as Mask R-CNN (``engine.detect.maskrcnn``) is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

from engine.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DetectorFamily:
    name: str  # what DetectorConfig.family names
    module: str  # the module with check() and load()
    models: str  # regular expression over the model names (--detector) the family takes
    summary: str  # one line for help texts

    def takes(self, model: str) -> bool:
        return re.fullmatch(self.models, model) is not None

    def load_module(self) -> ModuleType:
        return import_module(self.module)


FAMILIES: dict[str, DetectorFamily] = {}


def register_family(family: DetectorFamily) -> DetectorFamily:
    if family.name in FAMILIES and FAMILIES[family.name] != family:
        raise ValueError(f"detector family {family.name!r} registered twice with different entries")
    FAMILIES[family.name] = family
    return family


register_family(DetectorFamily(
    name="yolo", module="engine.detect.yolo",
    models=r"yolo[0-9a-z.]*-seg|.+\.ya?ml",  # Ultralytics' -seg names (yolov8n-seg, yolo11s-seg), or a model yaml
    summary="YOLOv8 / YOLO11 instance segmentation (Ultralytics weights; torch, ONNX Runtime, TensorRT)"))
register_family(DetectorFamily(
    name="maskrcnn", module="engine.detect.maskrcnn",
    models=r"maskrcnn|maskrcnn_resnet50_fpn_v2",  # engine.detect.maskrcnn.MODEL_NAMES
    summary="Mask R-CNN (torchvision's maskrcnn_resnet50_fpn_v2; a state-dict file; torch)"))


def family_for(model: str, family: str | None = None) -> DetectorFamily:
    """The family named ``family``, else the one whose model names take ``model``; ConfigError naming
    the known families otherwise."""
    if family is not None:
        if family not in FAMILIES:
            raise ConfigError(f"unknown detector family {family!r}; known: {', '.join(FAMILIES)}")
        return FAMILIES[family]
    for candidate in FAMILIES.values():
        if candidate.takes(model):
            return candidate
    known = "; ".join(f"{f.name}: {f.models}" for f in FAMILIES.values())
    raise ConfigError(f"no detector family takes model {model!r} (families and their model names: {known})")


def load_known_weights() -> None:
    """Import every family, so each has registered its official weights (``streamseg fetch --list``)."""
    for family in FAMILIES.values():
        family.load_module()
