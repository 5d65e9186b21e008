"""Reading a YOLOv8-seg model from what the user passed, and refusing anything else with a clear message.

- ``.pt``: an Ultralytics checkpoint. Reading it needs ultralytics (the file pickles its classes); it is read
  with ``torch.load(weights_only=True)`` against Ultralytics' allow-list of model classes
  (``torch_safe_load(..., safe_only=True)``), the least trust a ``.pt`` can be read with: a file that names
  any other Python object is refused rather than executed.
- ``.yaml`` / ``"random"``: the architecture from Ultralytics' model config (``yolov8n-seg.yaml`` resolves
  from its own cfg directory), seeded random init, then ``spread_random_weights``.
- ``.onnx``: inputs, outputs and metadata read with ``onnx`` and checked against what a YOLOv8-seg export has.
- ``.engine``: see ``engine.runtime.tensorrt``.
"""

from __future__ import annotations

import ast
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.detect.yolo.backends import ModelInfo
from engine.errors import WeightsError

_TASK_NAMES = {"detect": "a detection-only model (no mask head)", "pose": "a pose model",
               "classify": "a classification model", "obb": "an oriented-box model",
               "semantic": "a semantic-segmentation model", "depth": "a depth model"}


def _quiet_ultralytics() -> None:
    """Before importing ultralytics: it looks hosts up on import unless told it is offline (reading a local
    model needs no network), and it sets OMP_NUM_THREADS=1 when unset, which would leave torch single-threaded
    for the whole process if its thread pool has not started yet; pin the count torch already chose."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


def check_file(path: str) -> Path:
    file = Path(path).expanduser()
    if not file.exists():
        raise WeightsError(f"weights file {path} does not exist; check the path, or use weights='random'")
    if not file.is_file():
        raise WeightsError(f"weights path {path} is not a file")
    return file


def build_from_yaml(config: str, *, seed: int, spread: bool) -> torch.nn.Module:
    """A model from an Ultralytics model yaml (a path, or a name from Ultralytics' cfg such as
    ``yolov8n-seg.yaml``) with seeded random weights; ``spread`` applies ``spread_random_weights``."""
    _quiet_ultralytics()
    from ultralytics.nn.tasks import SegmentationModel, guess_model_task, yaml_model_load

    from engine.detect.yolo.random_weights import spread_random_weights

    try:
        cfg = yaml_model_load(config)
    except (FileNotFoundError, OSError):
        raise WeightsError(f"model config {config} not found (neither a file nor one of Ultralytics' model "
                           "configs); pass e.g. yolov8n-seg.yaml") from None
    except Exception as exc:  # a yaml syntax error surfaces as one of several yaml exception types
        raise WeightsError(f"model config {config} cannot be read ({exc})") from None
    task = guess_model_task(cfg)
    if task != "segment":
        raise WeightsError(f"model config {config} describes {_TASK_NAMES.get(task, task + ' model')}; "
                           "streamseg needs a segmentation config such as yolov8n-seg.yaml")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SegmentationModel(cfg, verbose=False)
    _check_segment_head(model, config)
    if spread:
        spread_random_weights(model, seed=seed)
    return model.eval()


def load_checkpoint(path: str) -> torch.nn.Module:
    """An Ultralytics ``.pt`` checkpoint's model, in float32, eval mode, on the CPU."""
    file = check_file(path)
    _quiet_ultralytics()
    from ultralytics.nn.tasks import torch_safe_load

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's unpickler comments on odd bytes before refusing them
            checkpoint, _ = torch_safe_load(str(file), safe_only=True)
    except Exception as exc:  # damaged bytes surface as a dozen exception types, all meaning "unreadable"
        reason = (str(exc).splitlines() or [""])[0].replace("ERROR ❌️ ", "")[:200]
        raise WeightsError(f"{path}: not a readable Ultralytics checkpoint ({type(exc).__name__}: {reason}); "
                           "re-download or re-export it") from None
    model = (checkpoint.get("ema") or checkpoint.get("model")) if isinstance(checkpoint, dict) else None
    if not isinstance(model, torch.nn.Module):
        raise WeightsError(f"{path}: a PyTorch file but not an Ultralytics checkpoint (no model inside)")
    _check_segment_head(model, path)
    return model.float().eval()


def torch_module(config) -> torch.nn.Module:
    """The network ``config`` (a ``DetectorConfig`` with .pt, .yaml or "random" weights) describes, Conv and
    BatchNorm fused, in float32 eval mode on the CPU."""
    if config.random:
        module = build_from_yaml(f"{config.model}.yaml", seed=config.seed, spread=True)
    elif Path(config.weights).suffix.lower() in (".yaml", ".yml"):
        module = build_from_yaml(config.weights, seed=config.seed, spread=True)
    elif Path(config.weights).suffix.lower() == ".pt":
        module = load_checkpoint(config.weights)
    else:
        raise WeightsError(f"{config.weights}: the torch network is read from .pt, .yaml or 'random' weights")
    return module.fuse(verbose=False)


def _check_segment_head(model: torch.nn.Module, source: str) -> None:
    from ultralytics.nn.modules.head import Segment, Segment26
    from ultralytics.nn.tasks import guess_model_task

    head = model.model[-1] if hasattr(model, "model") else None
    task = guess_model_task(model)
    if task != "segment" or not isinstance(head, Segment):
        raise WeightsError(f"{source} is {_TASK_NAMES.get(task, 'not a YOLO model')}; streamseg needs a "
                           "YOLOv8-seg model (e.g. yolov8n-seg.pt)")
    if isinstance(head, Segment26) or getattr(head, "end2end", False):
        raise WeightsError(f"{source} has an end-to-end (NMS-free) head, which streamseg does not run; use a "
                           "YOLOv8/YOLO11 -seg model")


def model_info(model: torch.nn.Module) -> ModelInfo:
    head = model.model[-1]
    return ModelInfo(names=_names_tuple(model.names, head.nc), nm=int(head.nm),
                     stride=int(model.stride.max()))


def _names_tuple(names, nc: int) -> tuple[str, ...]:
    if isinstance(names, dict):
        return tuple(str(names.get(i, i)) for i in range(nc))
    if isinstance(names, (list, tuple)) and len(names) == nc:
        return tuple(str(n) for n in names)
    return tuple(str(i) for i in range(nc))


@dataclass(frozen=True, slots=True)
class OnnxSignature:
    """The parts of an exported YOLOv8-seg ONNX file the runtimes bind to."""

    input_name: str
    input_dims: tuple[int | str, ...]  # [B, 3, H, W]; a str names a dynamic axis
    input_dtype: torch.dtype
    preds_name: str  # [B, 4 + nc + nm, A]
    protos_name: str  # [B, nm, H/4, W/4]
    info: ModelInfo
    random_weights: bool = False  # exported from random weights (streamseg's exports record it)

    @property
    def fixed_batch(self) -> int | None:
        return self.input_dims[0] if isinstance(self.input_dims[0], int) else None

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        h, w = self.input_dims[2:]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def read_onnx_signature(path: str) -> OnnxSignature:
    """Inputs, outputs and metadata of an ONNX file, checked to be a YOLOv8-seg export."""
    file = check_file(path)
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends for a damaged file
        raise WeightsError(f"{path}: not a readable ONNX file ({type(exc).__name__}); re-export it") from None
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    metadata = {p.key: p.value for p in model.metadata_props}
    if metadata.get("task", "segment") != "segment":
        raise WeightsError(f"{path} is an ONNX export of a {metadata['task']} model; streamseg needs a "
                           "YOLOv8-seg export")
    dims = [_dims(v) for v in graph.output]
    if len(inputs) != 1 or len(_dims(inputs[0])) != 4 or len(graph.output) != 2 or \
            sorted(len(d) for d in dims) != [3, 4]:
        shapes = ", ".join(f"{v.name}{list(d)}" for v, d in zip(graph.output, dims))
        raise WeightsError(f"{path}: outputs {shapes} are not a YOLOv8-seg export's (detections [B, 4+nc+nm, "
                           "A] and prototypes [B, nm, H/4, W/4]); export a -seg model")
    preds, protos = sorted(graph.output, key=lambda v: len(_dims(v)))
    channels, nm = _dims(preds)[1], _dims(protos)[1]
    names = _literal(metadata.get("names"))
    if not isinstance(channels, int) and isinstance(nm, int) and isinstance(names, (dict, list)):
        channels = 4 + len(names) + nm  # some exporters leave this axis symbolic
    if not isinstance(channels, int) or not isinstance(nm, int) or channels <= 4 + nm:
        raise WeightsError(f"{path}: output channels {channels} and prototype channels {nm} do not fit a "
                           "YOLOv8-seg head (4 box + classes + mask coefficients)")
    nc = channels - 4 - nm
    names = _names_tuple(names, nc)
    stride = int(_literal(metadata.get("stride")) or 32)
    elem_type = inputs[0].type.tensor_type.elem_type
    input_dtype = torch.from_numpy(np.zeros(0, tensor_dtype_to_np_dtype(elem_type))).dtype
    return OnnxSignature(input_name=inputs[0].name, input_dims=_dims(inputs[0]), input_dtype=input_dtype,
                         preds_name=preds.name, protos_name=protos.name,
                         info=ModelInfo(names=names, nm=nm, stride=stride),
                         random_weights=metadata.get("random_weights") == "true")


def _dims(value) -> tuple[int | str, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in value.type.tensor_type.shape.dim)


def _literal(text: str | None):
    if text is None:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
