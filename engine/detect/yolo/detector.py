"""The YOLOv8-seg detector: frames in, ``Detections`` out, on the compute device (an
``engine.interfaces.Detector``)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from engine.detect.config import DetectorConfig
from engine.detect.yolo.backends import Backend, ModelInfo, OnnxRuntimeBackend, TensorRTBackend, TorchBackend
from engine.detect.yolo.letterbox import batch_geometry, letterbox_batch
from engine.detect.yolo.postprocess import decode
from engine.errors import BackendError, ConfigError, WeightsError
from engine.runtime.device import resolve_device
from engine.runtime.precision import PrecisionPolicy, cpu_int8_fast
from engine.types import Detections

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pt", ".yaml", ".yml", ".onnx", ".engine")
MAX_STRIDE = 32  # YOLOv8's coarsest feature map: every input side must be a multiple of it


def weights_kind(config: DetectorConfig) -> str:
    """What the weights are: "random", "yaml", "pt", "onnx" or "engine"."""
    if config.random:
        return "random"
    suffix = Path(config.weights).suffix.lower()
    return "yaml" if suffix in (".yaml", ".yml") else suffix[1:]


def check(config: DetectorConfig) -> None:
    """ConfigError for weights of a type YOLO does not read, or an input size off its stride."""
    if not config.random and Path(config.weights).suffix.lower() not in WEIGHT_SUFFIXES:
        raise ConfigError(f"detector weights {config.weights!r}: unknown file type; pass 'random' or a .pt, "
                          ".yaml, .onnx or .engine file")
    if config.imgsz < MAX_STRIDE or config.imgsz % MAX_STRIDE:
        raise ConfigError(f"detector imgsz={config.imgsz!r} must be a positive multiple of {MAX_STRIDE} "
                          "(e.g. 320, 640)")


class YoloSegDetector:
    """Runs one network batch per call and returns each frame's instances, best score first.

    Build it with ``load_detector``. Pre-processing (letterbox, normalise) and post-processing (confidence
    filter, class-aware NMS, masks at frame resolution) run on the detector's device whatever the backend.
    """

    def __init__(self, backend: Backend, info: ModelInfo, config: DetectorConfig, *, random_weights: bool,
                 workdir: tempfile.TemporaryDirectory | None = None) -> None:
        self.backend = backend
        self.info = info
        self.config = config
        self.random_weights = random_weights  # built from a config with random weights: instances mean nothing
        self._workdir = workdir  # keeps an exported ONNX alive as long as the session that reads it

    @property
    def names(self) -> tuple[str, ...]:
        """Class id -> label."""
        return self.info.names

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def with_thresholds(self, *, conf: float | None = None, iou: float | None = None,
                        max_det: int | None = None) -> YoloSegDetector:
        """The same network with other post-processing thresholds (no reload; shares the backend)."""
        changes = {k: v for k, v in (("conf", conf), ("iou", iou), ("max_det", max_det)) if v is not None}
        return YoloSegDetector(self.backend, self.info, replace(self.config, **changes),
                               random_weights=self.random_weights, workdir=self._workdir)

    def __call__(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        """Detect instances in a batch of frames.

        Args:
            images: frames, each [H, W, 3] uint8 RGB on the CPU or the detector's device; sizes may differ.
        Returns:
            One ``Detections`` per frame, in order, on the detector's device: boxes [N, 4] float32 x1, y1, x2,
            y2 in frame pixels, scores [N], class_ids [N] int64, masks [N, H, W] bool at frame resolution.
        """
        for i, image in enumerate(images):
            if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[2] != 3 \
                    or image.dtype != torch.uint8:
                got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
                raise ValueError(f"detector input {i} must be a [H, W, 3] uint8 RGB tensor, got {got}")
        step = self.backend.max_batch or len(images) or 1
        results: list[Detections] = []
        for start in range(0, len(images), step):
            results += self._run_batch(list(images[start:start + step]))
        return results

    def _run_batch(self, images: list[torch.Tensor]) -> list[Detections]:
        cfg, backend = self.config, self.backend
        shapes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
        boxes = batch_geometry(shapes, imgsz=cfg.imgsz, stride=self.info.stride,
                               dynamic_hw=backend.dynamic_hw)
        batch = letterbox_batch(images, boxes, device=backend.device, dtype=backend.dtype)
        if backend.fixed_batch and batch.shape[0] < backend.fixed_batch:  # pad a short batch with blanks
            fill = batch.new_zeros((backend.fixed_batch - batch.shape[0], *batch.shape[1:]))
            batch = torch.cat((batch, fill))
        preds, protos = backend(batch)
        return [decode(preds[i], protos[i], box, nc=self.info.nc, conf=cfg.conf, iou=cfg.iou,
                       max_det=cfg.max_det, names=self.info.names) for i, box in enumerate(boxes)]


def load(config: DetectorConfig) -> YoloSegDetector:
    """Build the detector ``config`` describes.

    The backend follows the weights unless ``config.backend`` says otherwise: ``.onnx`` runs on ONNX
    Runtime, ``.engine`` on TensorRT, ``.pt``/``.yaml``/``"random"`` on torch (fp16) on a GPU and on ONNX
    Runtime on the CPU, where it is faster (exported to a temporary ONNX file at load). ONNX Runtime and
    TensorRT take ``.pt``/``.yaml``/``"random"`` that way; TensorRT also takes ``.onnx`` (an engine is built
    once and cached). ``onnxruntime-int8`` runs the int8 model of the ONNX (made once and cached,
    engine.detect.yolo.quantize); ``auto`` runs it on a CPU where int8 is faster (``engine.runtime.
    precision.cpu_int8_fast``), for weights that are not random, where it meets its accuracy bar against
    the fp32 model (measured once, then cached).

    Raises:
        WeightsError: the weights are missing, unreadable, or not a YOLOv8-seg model.
        BackendError: the runtime or device is not available here.
        ConfigError: the backend cannot run these weights, or the file's fixed input size is not imgsz.
    """
    check(config)
    device = resolve_device(config.device)
    kind = weights_kind(config)
    backend = config.backend
    if backend == "auto":
        backend = {"onnx": "onnxruntime", "engine": "tensorrt"}.get(
            kind, "torch" if device.type == "cuda" else "onnxruntime")
    if backend == "torch" and kind in ("onnx", "engine"):
        raise ConfigError(f"backend 'torch' runs .pt, .yaml or 'random' weights; for {config.weights} use "
                          f"backend='{'onnxruntime' if kind == 'onnx' else 'tensorrt'}'")
    if backend in ("onnxruntime", "onnxruntime-int8") and kind == "engine":
        raise ConfigError(f"{config.weights} is a TensorRT engine; use backend='tensorrt'")
    if backend == "onnxruntime-int8" and device.type != "cpu":
        raise ConfigError("the int8 detector (backend onnxruntime-int8) runs on the CPU; use device='cpu', "
                          "or backend='tensorrt' on CUDA")
    if backend == "tensorrt" and device.type != "cuda":
        raise BackendError("TensorRT needs a CUDA device; use device='cuda', or backend='onnxruntime'")
    half = config.half if config.half is not None else PrecisionPolicy.for_device(device).detector == torch.float16
    if half and device.type != "cuda":
        raise ConfigError("half=True needs a CUDA device")

    if backend == "torch":
        from engine.detect.yolo.loading import model_info, torch_module

        module = torch_module(config)
        return YoloSegDetector(TorchBackend(module, device=device, half=half), model_info(module), config,
                               random_weights=kind in ("random", "yaml"))

    workdir, onnx_path = None, config.weights
    if kind in ("random", "yaml", "pt"):
        from engine.detect.yolo.export import export_onnx

        workdir = tempfile.TemporaryDirectory(prefix="streamseg-onnx-")
        onnx_path = str(export_onnx(config, Path(workdir.name) / "detector.onnx", imgsz=config.imgsz,
                                    dynamic_batch=True, dynamic_hw=backend != "tensorrt"))
    if backend == "tensorrt":
        return _tensorrt_detector(onnx_path, kind, config, device, half, workdir)
    fp32 = _onnxruntime_detector(onnx_path, config, device, workdir)
    if backend == "onnxruntime-int8":
        return _int8_detector(fp32, onnx_path, config, workdir, checked=False)
    if config.backend == "auto" and device.type == "cpu" and not fp32.random_weights and cpu_int8_fast():
        return _int8_detector(fp32, onnx_path, config, workdir, checked=True)
    return fp32


def _int8_detector(fp32: YoloSegDetector, onnx_path: str, config: DetectorConfig, workdir,
                   *, checked: bool) -> YoloSegDetector:
    """The int8 model of ``onnx_path`` (engine.detect.yolo.quantize). ``checked``: only where it meets its
    accuracy bar against ``fp32`` on the validation frames (measured once per setting, then cached), else
    ``fp32``; the log says which and why."""
    from engine.detect.yolo import quantize

    path = quantize.quantized_model(onnx_path, imgsz=config.imgsz, stride=fp32.info.stride,
                                    calibration=config.calibration)
    int8 = _onnxruntime_detector(str(path), config, fp32.device, workdir)
    int8.backend.name = "onnxruntime-int8"
    if not checked:
        return int8
    key = f"conf{config.conf:g}-iou{config.iou:g}-imgsz{config.imgsz}"
    result = quantize.read_agreement(path.parent, key)
    if result is None:
        frames = quantize.calibration_frames(config.calibration, validation=True)
        result = quantize.agreement(fp32(frames), int8(frames))
        quantize.write_agreement(path.parent, key, result)
    if result.meets():
        log.info("detector: int8 (%s; the bar is %s)", result.describe(), quantize.INT8_BAR)
        return int8
    if result.detections == 0:
        log.warning("detector: fp32; the int8 model cannot be checked: these weights detect nothing on the "
                    "calibration clip's %d validation frames (pass --calibration with a clip of your scenes)",
                    result.frames)
    else:
        log.warning("detector: fp32, the int8 model misses its accuracy bar (%s; the bar: recall, box and mask "
                    "IoU >= 0.95)", result.describe())
    return fp32


def _onnxruntime_detector(path: str, config: DetectorConfig, device: torch.device, workdir) -> YoloSegDetector:
    from engine.detect.yolo.loading import read_onnx_signature

    signature = read_onnx_signature(path)
    fixed_hw = signature.fixed_hw
    if fixed_hw is not None and fixed_hw != (config.imgsz, config.imgsz):
        raise ConfigError(f"{path} takes {fixed_hw[0]}x{fixed_hw[1]} inputs only; pass imgsz={fixed_hw[0]} "
                          "or export it with dynamic shapes")
    if signature.input_dtype == torch.float16 and device.type != "cuda":
        raise ConfigError(f"{path} is an fp16 export, which needs a CUDA device; export fp32 for the CPU")
    backend = OnnxRuntimeBackend(Path(path), input_name=signature.input_name,
                                 output_names=(signature.preds_name, signature.protos_name),
                                 input_dtype=signature.input_dtype, dynamic_hw=fixed_hw is None,
                                 fixed_batch=signature.fixed_batch, device=device, nm=signature.info.nm,
                                 threads=config.threads)
    return YoloSegDetector(backend, signature.info, config, random_weights=signature.random_weights,
                           workdir=workdir)


def _tensorrt_detector(path: str, kind: str, config: DetectorConfig, device: torch.device, half: bool,
                       workdir) -> YoloSegDetector:
    from engine.detect.yolo.export import build_engine
    from engine.detect.yolo.loading import check_file
    from engine.runtime.tensorrt import TensorRTRunner

    if kind != "engine":
        path = str(build_engine(path, batch=1, imgsz=config.imgsz, half=half, device=str(device)))
    runner = TensorRTRunner(check_file(path), device=device)
    meta = runner.metadata
    if meta.get("task", "segment") != "segment":
        raise WeightsError(f"{path} is a TensorRT engine of a {meta['task']} model, not of a -seg model")
    if len(runner.inputs) != 1 or len(runner.outputs) != 2:
        raise WeightsError(f"{path}: engine has inputs {runner.inputs} and outputs {runner.outputs}, not a "
                           "YOLOv8-seg engine's one input and two outputs")
    shape = runner.input_shape(runner.inputs[0])
    if shape[2:] != (config.imgsz, config.imgsz):
        raise ConfigError(f"{path} takes {shape[2]}x{shape[3]} inputs; pass imgsz={shape[2]}")
    outputs = meta.get("outputs") or sorted(runner.outputs,
                                            key=lambda n: len(runner.engine.get_tensor_shape(n)))
    nm = int(meta.get("nm") or runner.engine.get_tensor_shape(outputs[1])[1])
    channels = int(runner.engine.get_tensor_shape(outputs[0])[1])
    names = meta.get("names") or {}
    names = {int(k): v for k, v in names.items()} if isinstance(names, dict) else dict(enumerate(names))
    nc = channels - 4 - nm
    info = ModelInfo(names=tuple(str(names.get(i, i)) for i in range(nc)), nm=nm,
                     stride=int(meta.get("stride", 32)))
    backend = TensorRTBackend(runner, input_name=runner.inputs[0], output_names=(outputs[0], outputs[1]))
    # Exports of random weights say so in their metadata, and the engines built from them carry it on.
    return YoloSegDetector(backend, info, config, random_weights=bool(meta.get("random_weights", False)),
                           workdir=workdir)
