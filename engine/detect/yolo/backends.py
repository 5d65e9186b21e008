"""The network behind one interface: letterboxed batch in, raw YOLOv8-seg outputs out.

Every backend takes ``[B, 3, H, W]`` in [0, 1] on its device and returns ``(preds [B, 4 + nc + nm, A],
protos [B, nm, H/4, W/4])`` on the same device; pre- and post-processing are shared (``engine.detect``).
"""

from __future__ import annotations

import platform
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import BackendError

STRIDES = (8, 16, 32)  # YOLOv8's detection levels; anchors = sum over levels of (H / s) * (W / s)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What post-processing needs to know about the model, whatever runs it."""

    names: tuple[str, ...]  # class id -> label
    nm: int  # mask coefficients per detection (prototype channels)
    stride: int  # largest stride: input sides must be multiples of it

    @property
    def nc(self) -> int:
        return len(self.names)


class Backend(ABC):
    name: str  # "torch", "onnxruntime", "onnxruntime-int8", "tensorrt"
    device: torch.device
    dtype: torch.dtype  # input precision
    dynamic_hw: bool  # takes any input height and width (multiples of the stride)
    fixed_batch: int | None  # the only batch size it takes, or None
    max_batch: int | None  # the largest batch it takes, or None for any

    @abstractmethod
    def __call__(self, images: torch.Tensor  # [B, 3, H, W] self.dtype on self.device, values in [0, 1]
                 ) -> tuple[torch.Tensor, torch.Tensor]:  # -> ([B, 4 + nc + nm, A], [B, nm, H/4, W/4])
        """Run the network on one letterboxed batch."""


class TorchBackend(Backend):
    """The Ultralytics ``nn.Module`` itself, Conv+BatchNorm fused, in eval mode; fp16 on CUDA by default. On
    an x86 CPU with oneDNN the weights are channels-last, as Ultralytics' own predictor sets them (about 15%
    faster for yolov8n-seg here)."""

    name = "torch"
    dynamic_hw = True
    fixed_batch = None
    max_batch = None

    def __init__(self, module: torch.nn.Module, *, device: torch.device, half: bool,
                 cuda_graphs: bool = True) -> None:
        from engine.runtime.cuda_graphs import GraphedCall

        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        self.module = module.to(device).to(self.dtype).eval().requires_grad_(False)
        x86 = platform.machine() in ("x86_64", "AMD64")
        if device.type == "cpu" and x86 and torch.backends.mkldnn.is_available():
            self.module.to(memory_format=torch.channels_last)
        # On CUDA the forward replays as one graph per input shape: kernel launches dominate at batch 1.
        self._forward = GraphedCall(self._eager) if device.type == "cuda" and cuda_graphs else self._eager

    def _eager(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        preds, protos = self.module(images)[0]  # eval mode: ((preds, protos), raw head outputs)
        return preds, protos

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            preds, protos = self._forward(images)
        return preds, protos


class OnnxRuntimeBackend(Backend):
    """An exported ONNX model in ONNX Runtime: the CPU provider on the CPU; on CUDA the TensorRT and CUDA
    providers where this onnxruntime build has them. Device tensors are bound in place on CUDA (no copies
    through the host); on the CPU they are shared with numpy."""

    name = "onnxruntime"

    def __init__(self, path: Path, *, input_name: str, output_names: tuple[str, str],
                 input_dtype: torch.dtype, dynamic_hw: bool, fixed_batch: int | None, device: torch.device,
                 nm: int, threads: int | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device.type == "cuda":
            wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
            providers = [p for p in wanted if p in available]
            if not providers:
                raise BackendError(
                    f"onnxruntime {ort.__version__} here has no CUDA provider (it has "
                    f"{', '.join(available)}); install onnxruntime-gpu, or run the detector with device='cpu'"
                )
            provider_options = [{"device_id": device.index or 0}] * len(providers)
        else:
            providers, provider_options = ["CPUExecutionProvider"], [{}]
        options = ort.SessionOptions()
        if device.type == "cpu":
            # Idle ORT workers spin by default and then compete with torch's threads running the
            # post-processing: 1.3x slower per frame on the 2-core CPU (benchmarks/detector.py).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per physical core
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers,
                                                provider_options=provider_options)
        except Exception as exc:  # onnxruntime raises its own exception types for every refusal
            raise BackendError(f"{path}: onnxruntime refused the model ({exc}); re-export it") from None
        self.path = Path(path)  # the model file the session runs
        self.device, self.dtype, self.dynamic_hw = device, input_dtype, dynamic_hw
        self.fixed_batch = self.max_batch = fixed_batch
        self.input_name, self.output_names, self.nm = input_name, output_names, nm
        self.providers = tuple(self.session.get_providers())

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type != "cuda":
            feeds = {self.input_name: images.contiguous().numpy()}
            preds, protos = self.session.run(list(self.output_names), feeds)
            return torch.from_numpy(preds), torch.from_numpy(protos)
        return self._run_bound(images.contiguous())

    def _run_bound(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = images.shape
        channels = self.session.get_outputs()[0].shape[1]
        if not isinstance(channels, int):
            raise BackendError("the ONNX model's detection output has no fixed channel count; re-export it")
        anchors = sum((h // s) * (w // s) for s in STRIDES)
        preds = torch.empty((b, channels, anchors), dtype=self.dtype, device=self.device)
        protos = torch.empty((b, self.nm, h // 4, w // 4), dtype=self.dtype, device=self.device)
        binding = self.session.io_binding()
        element = np.float16 if self.dtype == torch.float16 else np.float32
        index = self.device.index or 0
        binding.bind_input(self.input_name, "cuda", index, element, tuple(images.shape), images.data_ptr())
        for name, out in zip(self.output_names, (preds, protos)):
            binding.bind_output(name, "cuda", index, element, tuple(out.shape), out.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # the input must be written before ORT reads it
        self.session.run_with_iobinding(binding)
        return preds, protos


class TensorRTBackend(Backend):
    """A TensorRT engine (see ``engine.runtime.tensorrt``), I/O bound by tensor name on the current stream."""

    name = "tensorrt"
    dynamic_hw = False

    def __init__(self, runner, *, input_name: str, output_names: tuple[str, str]) -> None:
        self.runner = runner
        self.device, self.dtype = runner.device, runner.input_dtype(input_name)
        self.input_name, self.output_names = input_name, output_names
        self.fixed_batch = None
        self.max_batch = runner.max_batch(input_name)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.runner({self.input_name: images.contiguous()})
        return outputs[self.output_names[0]], outputs[self.output_names[1]]
