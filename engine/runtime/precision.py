"""The precision policy: which dtype each network part computes in, chosen per device and per CPU.

Three settings (``--precision``, ``RunOptions.precision``, ``TrackerConfig.precision``):
- ``exact``: every network in fp32, the models' own precision. The parity tests with Ultralytics and
  the official SAM 2 predictor run on it.
- ``fast``: the low-precision path of the device, whatever the hardware says (on a CPU without bf16
  matrix instructions bf16 is emulated and slower than fp32: ``reason`` says so).
- ``auto`` (the default): ``fast`` where the device has the instructions that make it fast, else
  ``exact``. That is the fastest setting that meets the accuracy bar measured for it (below).

What ``fast`` changes, and why those parts:
- On a GPU, the detector runs in fp16 (as Ultralytics does) and SAM 2's image encoder in bf16 (hiera's
  late activations exceed fp16's range). Both are feed-forward: an error stays in its frame.
- On a CPU with bf16 matrix instructions (AMX-BF16, AVX512-BF16: oneDNN's bf16 GEMM runs 7x its fp32
  GEMM on this project's 2-core Xeon, 1,050 against 147 GFLOP/s), SAM 2's image encoder and its memory
  attention run in bf16 (engine.track.bf16). Memory attention is where a CPU spends a tracking frame at
  many objects (its cost grows with objects x memory frames x tokens^2). It stays accurate because its
  residual stream and layer norms stay fp32 and only the matrix products (projections, attention) round
  to bf16; its input memory is bf16 already (sam2 keeps the memory bank in bf16 on every device). The
  memory encoder runs under bf16 autocast: its output is rounded to bf16 for the memory bank anyway, and
  in fp32 it took a fifth of a 512 px frame at 10 objects (346 ms of ~1.7 s; 176 ms in bf16).
- The mask decoder on propagated frames runs under bf16 autocast too (166 -> 129 ms of that frame):
  its logits are the masks users get, so it is held to the same bar, over 100 frames (benchmarks/
  RESULTS.md). A user's prompt goes through the decoder in fp32: it starts an object's memory.
- The detector on a CPU runs in fp32 in ONNX Runtime, or as an int8 model where one meets its own
  accuracy bar against fp32 and the CPU runs int8 convolutions faster than fp32 ones (``cpu_int8_fast``:
  int8 dot products, or x86 AVX2; engine.detect.yolo.quantize).

The bars the fast CPU path is held to: tests/track/test_precision.py (bf16 against fp32 over a real clip,
CI-sized) and ``python -m benchmarks.precision`` (100 frames, 10 objects, 512 px; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.errors import ConfigError

PRECISIONS = ("auto", "exact", "fast")
_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# CPU features whose presence makes bf16 matrix products fast in oneDNN (torch.cpu.get_capabilities()
# names; /proc/cpuinfo spells the x86 ones the same way).
BF16_MATRIX_FEATURES = ("amx_bf16", "avx512_bf16", "sve_bf16", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_features() -> tuple[str, ...]:
    """The bf16 matrix features this CPU has, as torch detects them at run time (``torch.cpu.
    get_capabilities``), else from /proc/cpuinfo; () where there are none or oneDNN is missing (torch's
    bf16 GEMM on the CPU goes through oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return ()
    return _cpu_features(BF16_MATRIX_FEATURES)


# CPU features with int8 dot products (VNNI, AMX-INT8; ARM's dot product and i8mm): ONNX Runtime's int8
# convolutions run on them at full 8-bit weights.
INT8_MATRIX_FEATURES = ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "dot")


@functools.lru_cache(maxsize=1)
def cpu_int8_features() -> tuple[str, ...]:
    """The int8 dot-product features this CPU has (``torch.cpu.get_capabilities``, else /proc/cpuinfo)."""
    return _cpu_features(INT8_MATRIX_FEATURES, cpuinfo_names={"dot": "asimddp"})


@functools.lru_cache(maxsize=1)
def cpu_has_avx2() -> bool:
    """Whether this is an x86 CPU with AVX2 (``torch.cpu.get_capabilities``, else /proc/cpuinfo)."""
    return bool(_cpu_features(("avx2",)))


def cpu_int8_fast() -> bool:
    """Whether ONNX Runtime's int8 convolutions beat its fp32 ones here: with int8 dot products, or on x86
    with AVX2, whose ``VPMADDUBSW`` path with 7-bit weights ran YOLOv8n-seg at 1280x720 in 107 against
    141 ms (1 instance) and 104 against 164 ms (10) on one core of an AVX2-only AMD EPYC (2026-12-01,
    benchmarks/RESULTS.md)."""
    return bool(cpu_int8_features()) or cpu_has_avx2()


def _cpu_features(wanted: tuple[str, ...], *, cpuinfo_names: dict[str, str] | None = None) -> tuple[str, ...]:
    """The features of ``wanted`` (``torch.cpu.get_capabilities`` names) this CPU has, in ``wanted``'s
    order, as torch detects them at run time, else from /proc/cpuinfo's flags (``cpuinfo_names``: a
    feature's other spelling there)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        caps = capabilities()
        return tuple(name for name in wanted if caps.get(name) is True)
    flags, spelled = _cpuinfo_flags(), cpuinfo_names or {}
    return tuple(name for name in wanted if spelled.get(name, name) in flags)


def _cpuinfo_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@dataclass(frozen=True, slots=True)
class PrecisionPolicy:
    """The dtype of each network part the policy chooses; ``reason`` says why, in one line."""

    detector: torch.dtype
    image_encoder: torch.dtype
    memory_attention: torch.dtype = torch.float32  # SAM 2's memory attention (the CPU's fast path only)
    memory_encoder: torch.dtype = torch.float32  # SAM 2's memory encoder (the CPU's fast path only)
    # SAM 2's mask decoder on propagated frames (the CPU's fast path only; prompts always in fp32)
    mask_decoder: torch.dtype = torch.float32
    reason: str = field(default="", compare=False)

    @classmethod
    def for_device(cls, device: torch.device | str, precision: str = "auto") -> PrecisionPolicy:
        """The policy ``precision`` (auto, exact, fast) gives on ``device``; ConfigError for another name."""
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
        if precision == "exact":
            return cls.full(reason="exact: every network in fp32")
        if torch.device(device).type == "cuda":
            return cls(detector=torch.float16, image_encoder=torch.bfloat16,
                       reason=f"{precision}: CUDA: fp16 detector, bf16 image encoder, fp32 recurrent path")
        features = cpu_bf16_features()
        fast_path = ("bf16 image encoder, memory attention, memory encoder and mask decoder (fp32 for user "
                     "prompts)")
        bf16 = torch.bfloat16
        if features:
            return cls(detector=torch.float32, image_encoder=bf16, memory_attention=bf16, memory_encoder=bf16,
                       mask_decoder=bf16,
                       reason=f"{precision}: this CPU has bf16 matrix instructions ({', '.join(features)}): "
                              f"{fast_path}")
        if precision == "fast":
            return cls(detector=torch.float32, image_encoder=bf16, memory_attention=bf16, memory_encoder=bf16,
                       mask_decoder=bf16,
                       reason=f"fast: {fast_path}; this {platform.machine()} CPU has no bf16 matrix "
                              "instructions (AMX-BF16, AVX512-BF16), so bf16 is emulated: slower than exact")
        return cls.full(reason=f"auto: this {platform.machine()} CPU has no bf16 matrix instructions "
                               "(AMX-BF16, AVX512-BF16): fp32, bf16 would be emulated and slower")

    @classmethod
    def full(cls, reason: str = "exact: every network in fp32") -> PrecisionPolicy:
        return cls(detector=torch.float32, image_encoder=torch.float32, reason=reason)

    def describe(self) -> str:
        """``reason`` with the dtypes: what ``streamseg info`` prints."""
        names = {v: k for k, v in _NAMES.items()}
        return (f"detector {names[self.detector]}, image encoder {names[self.image_encoder]}, memory attention "
                f"{names[self.memory_attention]}, memory encoder {names[self.memory_encoder]}, mask decoder "
                f"{names[self.mask_decoder]} ({self.reason})")


def dtype_named(name: str | None, *, default: torch.dtype) -> torch.dtype:
    """``"float32"``, ``"bfloat16"``, ``"float16"``, or None / ``"auto"`` for ``default``."""
    if name is None or name == "auto":
        return default
    if name not in _NAMES:
        raise ConfigError(f"unknown precision {name!r}; use auto, {', '.join(_NAMES)}")
    return _NAMES[name]
