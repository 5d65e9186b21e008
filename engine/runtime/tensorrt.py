"""TensorRT engines: build one from an ONNX file, cache it, load it, run it with I/O bound by tensor name.

Written to TensorRT 10's Python API (``trt.Builder``, ``create_network``, ``OnnxParser``,
``create_optimization_profile``, ``build_serialized_network``, ``Runtime.deserialize_cuda_engine``,
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``). ``tensorrt`` is imported only inside the
functions that need it; the pure parts (cache key, profile shapes, the engine file's layout) work without it.

An engine is only valid for the TensorRT version and GPU that built it, so the cache key holds both, beside
the ONNX file's digest and the build settings. The engine file starts with its metadata (class names,
stride, input size), laid out as Ultralytics lays out its ``.engine`` exports (a 4-byte little-endian length,
then JSON, then the serialized engine), so either side's engines carry their labels.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import BackendError, WeightsError

WORKSPACE_BYTES = 4 << 30  # builder scratch memory limit


@dataclass(frozen=True, slots=True)
class Profile:
    """An optimisation profile for one input: the shapes the engine accepts and the one it is tuned for."""

    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profile_for(input_name: str, dims: tuple[int | str, ...], *, batch: int, imgsz: int) -> Profile:
    """The profile for an image input ``[B, 3, H, W]`` whose dims come from the ONNX file (ints, or names for
    dynamic axes): batch 1..``batch`` tuned for ``batch``; height and width fixed at ``imgsz`` where the
    ONNX leaves them open (one size lets TensorRT pick the fastest kernels); fixed dims as they are."""
    if len(dims) != 4:
        raise WeightsError(f"TensorRT build: input {input_name!r} has {len(dims)} dims, expected "
                           "[B, 3, H, W]")
    b, c, h, w = dims
    if not isinstance(c, int):
        raise WeightsError(f"TensorRT build: input {input_name!r} has no fixed channel count; re-export it")
    if isinstance(b, int) and b != batch:
        raise WeightsError(f"TensorRT build: the ONNX takes batch {b} only; build with batch={b} or "
                           "re-export it with a dynamic batch")
    for side in (h, w):
        if isinstance(side, int) and side != imgsz:
            raise WeightsError(f"TensorRT build: the ONNX takes {h}x{w} inputs; build with imgsz={side}")
    lo, hi = (batch, batch) if isinstance(b, int) else (1, batch)
    return Profile(input_name=input_name, min=(lo, c, imgsz, imgsz), opt=(batch, c, imgsz, imgsz),
                   max=(hi, c, imgsz, imgsz))


def cache_key(onnx_sha256: str, *, trt_version: str, gpu_name: str, fp16: bool, profile: Profile | None,
              bf16: bool = False) -> str:
    """Hex key naming a cached engine: everything the built engine depends on. ``profile`` None is a
    static-shape network (every input's shape fixed in the ONNX)."""
    profile_spec = None if profile is None else [profile.input_name, profile.min, profile.opt, profile.max]
    spec = json.dumps({"onnx": onnx_sha256, "tensorrt": trt_version, "gpu": gpu_name, "fp16": fp16,
                       "bf16": bf16, "profile": profile_spec}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


def write_engine_file(path: Path, metadata: dict, serialized: bytes) -> None:
    """Write ``[len][metadata JSON][engine]`` atomically (a partial file never looks like an engine)."""
    meta = json.dumps(metadata).encode()
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as f:
        f.write(len(meta).to_bytes(4, byteorder="little"))
        f.write(meta)
        f.write(serialized)
    os.replace(part, path)


def read_engine_file(path: Path) -> tuple[dict, bytes]:
    """Split an engine file into its metadata and the serialized engine; raw engines have no metadata."""
    data = Path(path).read_bytes()
    if len(data) >= 4:
        n = int.from_bytes(data[:4], byteorder="little")
        if 0 < n < min(len(data) - 4, 1 << 20):
            try:
                metadata = json.loads(data[4:4 + n].decode())
            except (UnicodeDecodeError, json.JSONDecodeError):
                metadata = None
            if isinstance(metadata, dict):
                return metadata, data[4 + n:]
    return {}, data


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError(
            "TensorRT is not installed: install NVIDIA's tensorrt>=10 wheel (pip install tensorrt, from "
            "NVIDIA's index) on a CUDA machine, or use backend='onnxruntime' or 'torch'"
        ) from None
    return trt


def build_engine(onnx_path: Path, *, profile: Profile | None, fp16: bool, cache_dir: Path, metadata: dict,
                 device: torch.device, bf16: bool = False) -> Path:
    """Build (or find in ``cache_dir``) the engine for ``onnx_path``. Returns the engine file's path.

    ``profile`` None builds a static-shape network as exported. Building takes minutes for large
    models; the cache key (``cache_key``) makes later calls instant.
    """
    trt = import_tensorrt()
    onnx_bytes = Path(onnx_path).read_bytes()
    gpu_name = torch.cuda.get_device_name(device)
    key = cache_key(hashlib.sha256(onnx_bytes).hexdigest(), trt_version=trt.__version__, gpu_name=gpu_name,
                    fp16=fp16, bf16=bf16, profile=profile)
    path = Path(cache_dir) / f"{Path(onnx_path).stem}-{key}.engine"
    if path.exists():
        return path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise WeightsError(f"{onnx_path}: TensorRT cannot parse this ONNX ({errors}); re-export it")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if bf16:
        config.set_flag(trt.BuilderFlag.BF16)
    if profile is not None:
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(profile.input_name, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(trt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{onnx_path}: TensorRT {trt.__version__} could not build an engine on {gpu_name} "
                           "(see its log above)")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_engine_file(path, {**metadata, "tensorrt": trt.__version__, "gpu": gpu_name, "fp16": fp16, "bf16": bf16},
                      bytes(serialized))
    return path


class TensorRTRunner:
    """A deserialized engine and one execution context; call it with ``{input name: tensor}``."""

    def __init__(self, path: Path, *, device: torch.device) -> None:
        trt = import_tensorrt()
        if device.type != "cuda":
            raise BackendError("TensorRT engines run on a CUDA device; pass device='cuda'")
        self.metadata, serialized = read_engine_file(path)
        self.device = device
        with torch.cuda.device(device):
            self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(serialized)
            if self.engine is None:
                raise WeightsError(f"{path}: not a TensorRT engine for TensorRT {trt.__version__} on this "
                                   "GPU; rebuild it (streamseg export detector --format engine)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def input_dtype(self, name: str) -> torch.dtype:
        return self._dtypes[name]

    def max_batch(self, name: str) -> int:
        """The largest batch profile 0 accepts for input ``name``."""
        return int(self.engine.get_tensor_profile_shape(name, 0)[2][0])

    def input_shape(self, name: str) -> tuple[int, ...]:
        """The (max) shape profile 0 accepts for input ``name``."""
        return tuple(int(d) for d in self.engine.get_tensor_profile_shape(name, 0)[2])

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stream = torch.cuda.current_stream(self.device)
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError("TensorRT refused to run the engine (see its log above)")
        return outputs


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int8: torch.int8, trt.bool: torch.bool}
    if dtype not in table:
        raise BackendError(f"TensorRT tensor type {dtype} is not supported here")
    return table[dtype]
