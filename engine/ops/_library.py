"""The CUDA kernel library (kernels/, built into ``libstreamseg_kernels.so``), loaded with ctypes on first
use and never at import.

Where it is looked for: ``$STREAMSEG_KERNELS_LIB`` when set (then nowhere else), otherwise
``<p>/_kernels/libstreamseg_kernels.so`` for each ``p`` in ``engine.__path__``, which covers a regular
install, a scikit-build-core editable install and a source tree the library was installed into.

Which path an op takes (``kernels_for``): the kernel when its tensors are on a CUDA device, the library
loaded, and the library's probe on that device passed; the pure-torch reference otherwise.
``STREAMSEG_OPS=reference`` forces the reference everywhere (``auto``, the default, picks as above).
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import BackendError, ConfigError

LIBRARY_NAME = "libstreamseg_kernels.so"
ENV_LIBRARY = "STREAMSEG_KERNELS_LIB"
ENV_OPS = "STREAMSEG_OPS"
OPS_MODES = ("auto", "reference")

# The C ABI this module was written for; kernels/library.cu's kAbiVersion must match.
ABI_VERSION = 1

_i32, _i64, _f32, _ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p

# name -> (restype, argtypes). Pointers are device pointers (tensor.data_ptr()) except where noted; the
# last two arguments of every kernel entry point are the device index and the cudaStream_t.
_SIGNATURES: dict[str, tuple[type, list[type]]] = {
    "streamseg_abi_version": (_i32, []),
    "streamseg_error_name": (ctypes.c_char_p, [_i32]),
    "streamseg_error_string": (ctypes.c_char_p, [_i32]),
    "streamseg_probe": (_i32, [_i32]),
    # masks, n, pixels, packed, areas
    "streamseg_pack_masks": (_i32, [_ptr, _i64, _i64, _ptr, _ptr, _i32, _ptr]),
    # packed_a, areas_a, n, packed_b, areas_b, m, words, iou
    "streamseg_mask_iou_packed": (_i32, [_ptr, _ptr, _i64, _ptr, _ptr, _i64, _i64, _ptr, _i32, _ptr]),
    # masks, scores, n, pixels, probabilities, id_map
    "streamseg_fuse_masks": (_i32, [_ptr, _ptr, _i64, _i64, _i32, _ptr, _i32, _ptr]),
    # logits, n, in_h, in_w, out_h, out_w, threshold, out
    "streamseg_resize_threshold": (_i32, [_ptr, _i64, _i64, _i64, _i64, _i64, _f32, _ptr, _i32, _ptr]),
    # image, id_map, pixels, colors, num_colors, alpha256, out
    "streamseg_overlay": (_i32, [_ptr, _ptr, _i64, _ptr, _i64, _i32, _ptr, _i32, _ptr]),
    # height, width -> segments per mask (host only)
    "streamseg_rle_segment_count": (_i64, [_i64, _i64]),
    # masks, n, h, w, segment_offsets, totals
    "streamseg_rle_count": (_i32, [_ptr, _i64, _i64, _i64, _ptr, _ptr, _i32, _ptr]),
    # masks, n, h, w, segment_offsets, mask_offsets, positions
    "streamseg_rle_transitions": (_i32, [_ptr, _i64, _i64, _i64, _ptr, _ptr, _ptr, _i32, _ptr]),
}
SYMBOLS = tuple(_SIGNATURES)


@dataclass(frozen=True)
class Loaded:
    """The outcome of looking for the library: the handle, or why there is none."""

    library: ctypes.CDLL | None
    path: Path | None  # where it was found (or looked for, when $STREAMSEG_KERNELS_LIB names it)
    reason: str  # why `library` is None; empty when loaded


_lock = threading.Lock()
_loaded: Loaded | None = None
_probes: dict[int, int] = {}  # CUDA device index -> streamseg_probe's result


def candidates() -> list[Path]:
    """Where the library is looked for, in order."""
    explicit = os.environ.get(ENV_LIBRARY)
    if explicit:
        return [Path(explicit)]
    import engine

    return [Path(p) / "_kernels" / LIBRARY_NAME for p in engine.__path__]


def mode() -> str:
    """``auto`` or ``reference``, from $STREAMSEG_OPS."""
    value = os.environ.get(ENV_OPS, "auto").strip().lower() or "auto"
    if value not in OPS_MODES:
        raise ConfigError(f"{ENV_OPS}={value!r} is not one of {', '.join(OPS_MODES)}; unset it or pick one")
    return value


def load() -> Loaded:
    """Find and load the library once per process (thread-safe); later calls return the same outcome."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def reset() -> None:
    """Forget the loaded library and the probes, so the next use looks again (tests change the env)."""
    global _loaded
    with _lock:
        _loaded = None
        _probes.clear()


def _load() -> Loaded:
    paths = candidates()
    found = next((p for p in paths if p.is_file()), None)
    if found is None:
        if os.environ.get(ENV_LIBRARY):
            return Loaded(None, paths[0], f"library not found at ${ENV_LIBRARY}={paths[0]}")
        return Loaded(None, None, "library not built")
    try:
        library = ctypes.CDLL(str(found))
    except OSError as exc:
        return Loaded(None, found, f"library failed to load: {exc}")
    missing = [name for name in SYMBOLS if not hasattr(library, name)]
    if missing:
        return Loaded(None, found, f"library lacks {', '.join(missing)}; rebuild it")
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes
    version = library.streamseg_abi_version()
    if version != ABI_VERSION:
        return Loaded(None, found, f"library has ABI {version}, engine expects {ABI_VERSION}; rebuild it")
    return Loaded(library, found, "")


def _probe(library: ctypes.CDLL, device: int) -> int:
    with _lock:
        if device not in _probes:
            _probes[device] = int(library.streamseg_probe(device))
        return _probes[device]


def kernels_for(tensor: torch.Tensor) -> ctypes.CDLL | None:
    """The library when ``tensor``'s op should run as a kernel, else None (run the reference)."""
    if not tensor.is_cuda or mode() == "reference":
        return None
    library = load().library
    if library is None:
        return None
    return library if _probe(library, _device_index(tensor)) == 0 else None


def backend() -> str:
    """One line for ``streamseg info``: what the mask ops run on in this process, and why."""
    if mode() == "reference":
        return f"torch reference: forced by {ENV_OPS}=reference"
    loaded = load()
    if loaded.library is None:
        return f"torch reference: {loaded.reason}"
    if not torch.cuda.is_available():
        return f"torch reference: no CUDA device (kernels built: {loaded.path})"
    device = torch.cuda.current_device()
    code = _probe(loaded.library, device)
    if code != 0:
        return f"torch reference: kernels unusable on cuda:{device}: {error_name(loaded.library, code)}"
    return f"cuda kernels ({loaded.path})"


def error_name(library: ctypes.CDLL, code: int) -> str:
    name = library.streamseg_error_name(code) or b"unknown error"
    text = library.streamseg_error_string(code) or b""
    return f"{name.decode()} ({code}): {text.decode()}"


def launch(library: ctypes.CDLL, name: str, tensor: torch.Tensor, *args: object) -> None:
    """Call kernel entry point ``name`` with ``args`` plus the device and current stream of ``tensor``."""
    device = _device_index(tensor)
    stream = torch.cuda.current_stream(device).cuda_stream
    code = getattr(library, name)(*args, device, stream)
    if code != 0:
        raise BackendError(f"CUDA kernel {name} failed on cuda:{device}: {error_name(library, code)}")


def _device_index(tensor: torch.Tensor) -> int:
    index = tensor.device.index
    return torch.cuda.current_device() if index is None else index
