"""Export a detector to ONNX, and build a TensorRT engine from the ONNX: what ``streamseg export detector``
calls. The ONNX layout is Ultralytics' own (input ``images``, outputs ``output0`` detections and ``output1``
prototypes, the same metadata keys), so its exports and these load in either tool."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from engine.detect.config import DetectorConfig
from engine.detect.yolo.backends import TorchBackend
from engine.errors import ConfigError
from engine.weights import cache_dir as weights_cache_dir

OPSET = 17


def export_onnx(source, path: str | Path, *, batch: int = 1, imgsz: int = 640, dynamic_batch: bool = True,
                dynamic_hw: bool = True) -> Path:
    """Write the detector's network as ONNX.

    Args:
        source: a ``DetectorConfig`` whose weights are ``"random"``, a ``.yaml`` or a ``.pt``, or a
            ``YoloSegDetector`` running the torch backend.
        path: the ``.onnx`` file to write (parent folders are created).
        batch, imgsz: the example input, ``[batch, 3, imgsz, imgsz]``; with ``dynamic_batch`` /
            ``dynamic_hw`` that axis is left open, otherwise the file takes exactly that size.
    Returns:
        ``path``. The file's input is ``images`` [B, 3, H, W] float32 in [0, 1] RGB; its outputs are
        ``output0`` [B, 4 + nc + nm, A] and ``output1`` [B, nm, H/4, W/4]. Its metadata says whether the
        weights were random (``random_weights``), so a detector loaded from it knows.
    """
    import onnx

    from engine.detect.yolo.loading import model_info

    module, random_weights = _torch_module(source)
    if imgsz % 32 or imgsz < 32:
        raise ConfigError(f"export imgsz={imgsz} must be a positive multiple of 32")
    if batch < 1:
        raise ConfigError(f"export batch={batch} must be at least 1")
    head = module.model[-1]
    head.export, head.format, head.dynamic = True, "onnx", dynamic_hw
    axes: dict[str, dict[int, str]] = {"images": {}, "output0": {}, "output1": {}}
    if dynamic_batch:
        for name in axes:
            axes[name][0] = "batch"
    if dynamic_hw:
        axes["images"].update({2: "height", 3: "width"})
        axes["output0"][2] = "anchors"
        axes["output1"].update({2: "mask_height", 3: "mask_width"})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(batch, 3, imgsz, imgsz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        torch.onnx.export(module, example, str(path), opset_version=OPSET, input_names=["images"],
                          output_names=["output0", "output1"], dynamic_axes=axes or None, dynamo=False)
    info = model_info(module)
    model = onnx.load(str(path))
    metadata = {"description": "YOLOv8-seg exported by streamseg", "task": "segment",
                "stride": str(info.stride), "batch": str(batch), "imgsz": str([imgsz, imgsz]),
                "names": str(dict(enumerate(info.names))), "random_weights": str(random_weights).lower()}
    # The TorchScript exporter leaves the detection channels symbolic when H and W are dynamic; they are not.
    channels = model.graph.output[0].type.tensor_type.shape.dim[1]
    channels.ClearField("dim_param")
    channels.dim_value = 4 + info.nc + info.nm
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def build_engine(onnx_path: str | Path, *, batch: int = 1, imgsz: int = 640, half: bool = True,
                 device: str = "cuda", cache_dir: str | Path | None = None) -> Path:
    """Build a TensorRT engine from a YOLOv8-seg ONNX file (fp16 unless ``half=False``), with an
    optimisation profile for batches 1..``batch`` at ``imgsz`` x ``imgsz``; cached on disk (default
    ``<weights cache>/engines``) by the ONNX file's digest, TensorRT version, GPU name and these settings.
    Returns the engine file's path. Needs TensorRT and a CUDA device."""
    from engine.detect.yolo.loading import read_onnx_signature
    from engine.runtime import tensorrt

    signature = read_onnx_signature(str(onnx_path))
    profile = tensorrt.profile_for(signature.input_name, signature.input_dims, batch=batch, imgsz=imgsz)
    metadata = {"task": "segment", "names": dict(enumerate(signature.info.names)),
                "random_weights": signature.random_weights,
                "stride": signature.info.stride, "imgsz": [imgsz, imgsz], "batch": batch,
                "nm": signature.info.nm,
                "inputs": [signature.input_name], "outputs": [signature.preds_name, signature.protos_name]}
    folder = Path(cache_dir) if cache_dir is not None else weights_cache_dir() / "engines"
    return tensorrt.build_engine(Path(onnx_path), profile=profile, fp16=half, cache_dir=folder,
                                 metadata=metadata, device=torch.device(device))


def _torch_module(source) -> tuple[torch.nn.Module, bool]:
    """(the float32 CPU network of ``source``, whether its weights are random)."""
    from engine.detect.yolo.loading import torch_module

    if not isinstance(source, DetectorConfig):
        backend = getattr(source, "backend", None)  # a YoloSegDetector (its module imports this one)
        if backend is None:
            raise ConfigError(f"export takes a DetectorConfig or a YoloSegDetector, not {type(source).__name__}")
        if not isinstance(backend, TorchBackend):
            raise ConfigError(f"export needs a detector on the torch backend, not {backend.name}")
        return copy.deepcopy(backend.module).float().cpu(), bool(source.random_weights)
    suffix = Path(source.weights).suffix.lower()
    if not source.random and suffix not in (".pt", ".yaml", ".yml"):
        raise ConfigError(f"export reads .pt, .yaml or 'random' weights, not {source.weights}")
    return torch_module(source), source.random or suffix in (".yaml", ".yml")
