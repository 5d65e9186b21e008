"""Building each backend's network from its library, with random or user weights, never downloading.

- smp (``deeplabv3plus``, ``unet``): ``segmentation_models_pytorch.DeepLabV3Plus`` / ``Unet`` with
  ``encoder_weights=None``. User weights: a state-dict file for the configured encoder, or a directory
  written by the model's ``save_pretrained`` (its ``config.json`` names the class and encoder).
- ``deeplabv3-mobilenet``: ``torchvision.models.segmentation.deeplabv3_mobilenet_v3_large`` with
  ``weights=None, weights_backbone=None, aux_loss=False``. User weights: a state-dict file (torchvision's
  own checkpoints carry an ``aux_classifier``, used only in training; it is dropped).
- ``mask2former``: ``transformers.Mask2FormerForUniversalSegmentation`` from ``Mask2FormerConfig``
  (Swin-Tiny backbone) with ``num_labels`` from the label set. User weights: a directory written by
  ``save_pretrained`` (read with ``local_files_only=True``), or a state-dict file for the default config.

A state-dict file is read with ``torch.load(weights_only=True)`` (or safetensors), may wrap the weights
in ``{"state_dict": ...}`` or ``{"model": ...}``, and must match the architecture exactly (strict load).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.errors import ConfigError, WeightsError
from engine.segment.config import SegmenterConfig
from engine.segment.labels import LabelSet

# The key of each backend's last classifier weight in a state dict; its first dim is the class count
# (Mask2Former's has one more: the "no object" class).
_HEAD_KEY = {"deeplabv3plus": "segmentation_head.0.weight", "unet": "segmentation_head.0.weight",
             "deeplabv3-mobilenet": "classifier.4.weight", "mask2former": "class_predictor.weight"}
_SMP_CLASS = {"deeplabv3plus": "DeepLabV3Plus", "unet": "Unet"}


@dataclass(frozen=True, slots=True)
class BuiltModel:
    module: nn.Module  # eval mode, CPU, float32
    num_classes: int  # output classes (without Mask2Former's "no object")
    random_weights: bool


def build_model(config: SegmenterConfig, labels: LabelSet) -> BuiltModel:
    """The network ``config`` names, with its weights, checked against ``labels``.

    Raises:
        WeightsError: the weights are missing, unreadable, or for another architecture.
        ConfigError: the label set's class count differs from the weights'.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only; a hub look-up would be a download
    if config.weights == "random":
        from engine.segment.random_weights import spread_random_weights

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            module = _new_module(config, len(labels))
        spread_random_weights(module, config.backend, seed=config.seed)
        return BuiltModel(module.eval(), len(labels), random_weights=True)
    path = Path(config.weights).expanduser()
    if not path.exists():
        raise WeightsError(f"segmenter weights {config.weights} do not exist; check the path, or use "
                           "weights 'random'")
    module = _from_directory(config, path) if path.is_dir() else _from_state_dict(config, path)
    num_classes = _count_classes(config.backend, module.state_dict())
    if num_classes != len(labels):
        raise ConfigError(
            f"label set {labels.source} has {len(labels)} classes but the weights {config.weights} output "
            f"{num_classes}; pass a label file with {num_classes} classes (--segment-labels)")
    return BuiltModel(module.float().eval(), num_classes, random_weights=False)


def _new_module(config: SegmenterConfig, num_classes: int) -> nn.Module:
    if config.backend in _SMP_CLASS:
        import segmentation_models_pytorch as smp

        cls = getattr(smp, _SMP_CLASS[config.backend])
        try:
            return cls(encoder_name=config.encoder, encoder_weights=None, classes=num_classes)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"segmenter encoder {config.encoder!r} is not one segmentation_models_pytorch "
                              f"can build ({str(exc)[:120]}); try resnet34 or resnet18") from None
    if config.backend == "deeplabv3-mobilenet":
        from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

        return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes,
                                            aux_loss=False)
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    if config.model_config is None:
        return Mask2FormerForUniversalSegmentation(Mask2FormerConfig(num_labels=num_classes))
    try:
        m2f_config = Mask2FormerConfig.from_json_file(config.model_config)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Mask2Former config {config.model_config}: cannot read it ({type(exc).__name__}); "
                          "pass a config.json written by Mask2FormerConfig.save_pretrained") from None
    m2f_config.num_labels = num_classes
    m2f_config.id2label = {i: str(i) for i in range(num_classes)}
    m2f_config.label2id = {str(i): i for i in range(num_classes)}
    return Mask2FormerForUniversalSegmentation(m2f_config)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - damaged files surface as a dozen exception types, all "unreadable"
        reason = (str(exc).splitlines() or [""])[0][:160]
        raise WeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {reason}); pass a "
                           "state dict saved with torch.save or safetensors") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return state


def _count_classes(backend: str, state: dict[str, torch.Tensor]) -> int:
    head = state.get(_HEAD_KEY[backend])
    if head is None:
        raise WeightsError(f"no {backend} classifier ({_HEAD_KEY[backend]}) in these weights")
    return int(head.shape[0]) - (1 if backend == "mask2former" else 0)


def _from_state_dict(config: SegmenterConfig, path: Path) -> nn.Module:
    state = _read_state_dict(path)
    if config.backend == "deeplabv3-mobilenet":
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    head = state.get(_HEAD_KEY[config.backend])
    if head is None:
        raise WeightsError(_wrong_architecture(config, path, f"it has no {_HEAD_KEY[config.backend]}"))
    module = _new_module(config, _count_classes(config.backend, state))
    # Strict: smp's load_state_dict, when not strict, drops tensors of the wrong shape with a warning and
    # loads the rest, which would leave part of the model random.
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing or unexpected keys, shape mismatches
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise WeightsError(_wrong_architecture(config, path, (lines[0] if lines else str(exc))[:200])) from None
    return module


def _wrong_architecture(config: SegmenterConfig, path: Path, detail: str) -> str:
    what = config.backend + (f" ({config.encoder} encoder)" if config.backend in _SMP_CLASS else "")
    return (f"{path}: not {what} weights: {detail}; pass weights trained for this segmenter, or choose "
            "the segmenter (and encoder) they were trained with")


def _from_directory(config: SegmenterConfig, path: Path) -> nn.Module:
    try:
        saved = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise WeightsError(f"{path}: a directory without a readable config.json; pass a directory written by "
                           "save_pretrained, or a state-dict file") from None
    if config.backend in _SMP_CLASS:
        expected = _SMP_CLASS[config.backend]
        if saved.get("_model_class") != expected:
            raise WeightsError(_wrong_architecture(config, path, f"its config.json names "
                                                   f"{saved.get('_model_class') or saved.get('model_type')}"))
        if saved.get("encoder_name") != config.encoder:
            raise WeightsError(f"{path}: saved with encoder {saved.get('encoder_name')!r}, not "
                               f"{config.encoder!r}; pass --segment-encoder {saved.get('encoder_name')}")
        import segmentation_models_pytorch as smp

        loader = getattr(smp, expected).from_pretrained
    elif config.backend == "mask2former":
        if saved.get("model_type") != "mask2former":
            raise WeightsError(_wrong_architecture(config, path, f"its config.json is a "
                                                   f"{saved.get('model_type') or saved.get('_model_class')}"))
        from transformers import Mask2FormerForUniversalSegmentation

        def loader(p):
            return Mask2FormerForUniversalSegmentation.from_pretrained(p, local_files_only=True)
    else:
        raise WeightsError(f"{path}: torchvision's DeepLabV3 takes a state-dict file, not a directory")
    try:
        return loader(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise WeightsError(f"{path}: cannot load the saved model ({type(exc).__name__}: {reason})") from None
