"""SAM 2's image encoder run from its ONNX export: in ONNX Runtime, or as a TensorRT engine.

The image encoder is feed-forward and the largest single cost of a tracking frame with few objects. On
the CPU, ONNX Runtime runs hiera-t faster than torch (117 against 141 ms at 256 px on 2 cores,
2026-11-24), so the CLI uses it there by default; on a GPU, ``tensorrt`` builds a bf16 engine from the
same export. The recurrent path (memory attention, mask decoder, memory encoder) stays in torch.

The export is cached under ``cache_dir()/tracker``, keyed by a digest of the model's weights, its image
size and the torch and sam2 versions, so only the first run with given weights pays the export (a few
seconds for hiera-t). It is taken from the model's weights when the tracker is built: load the weights
first (``load_tracker`` does); weights loaded into the model later would not reach it.

``StreamingTracker`` calls an encoder as ``encoder(images)`` with ``images`` [B, 3, S, S] float32,
normalised, and gets the exported outputs: hr0 [B, C/8, S/4, S/4], hr1 [B, C/4, S/8, S/8], feat
[B, C, S/16, S/16] and pos [B, C, S/16, S/16], float32 on the images' device.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from engine.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

ENCODER_BACKENDS = ("torch", "onnxruntime", "tensorrt")
OUTPUTS = ("hr0", "hr1", "feat", "pos")  # the names engine.track.export gives the part's outputs

# (onnx path, backend, device, ORT threads) -> encoder: streams sharing a model share it. The thread count
# is part of the key because an overlapped pipeline builds its encoder on the tracker's share of the cores.
_loaded: dict[tuple, object] = {}


class OnnxImageEncoder:
    """The exported image encoder in an ONNX Runtime CPU session (static batch 1: frames go one by one)."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # Idle ORT workers spin by default and steal the cores from the torch work that follows (the
        # memory path): with spinning a tracker step was 15% slower than with torch's own encoder.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # hiera's export trips a harmless shape-merge warning on load
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable or invalid models
            raise BackendError(f"{path}: ONNX Runtime cannot load this image encoder ({exc}); delete it and "
                               "run again to re-export") from None

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        host = images.detach().float().cpu().numpy()
        per_frame = [self._session.run(list(OUTPUTS), {"image": host[b:b + 1]}) for b in range(len(host))]
        return tuple(torch.from_numpy(np.concatenate(level)).to(images.device) for level in zip(*per_frame))


class EngineImageEncoder:
    """The exported image encoder as a TensorRT engine (static batch 1: frames go one by one)."""

    def __init__(self, path: str | Path, *, device: torch.device) -> None:
        from engine.runtime.tensorrt import TensorRTRunner

        self._runner = TensorRTRunner(Path(path), device=device)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        per_frame = [self._runner({"image": images[b:b + 1].float().contiguous()}) for b in range(len(images))]
        return tuple(torch.cat([out[name].float() for out in per_frame]) for name in OUTPUTS)


def exported_image_encoder(model, backend: str, *, device: torch.device | str,
                           cache_dir: str | Path | None = None):
    """An encoder for ``model`` (a sam2 model) on ``backend``: "onnxruntime" or "tensorrt"."""
    if backend not in ENCODER_BACKENDS[1:]:
        raise ConfigError(f"image encoder backend {backend!r}: choose from {', '.join(ENCODER_BACKENDS)}")
    device = torch.device(device)
    if backend == "tensorrt":
        from engine.runtime.tensorrt import import_tensorrt

        import_tensorrt()  # before the export: say what is missing first
        if device.type != "cuda":
            raise ConfigError("the TensorRT image encoder runs on a CUDA device; pass device='cuda' or "
                              "use the onnxruntime or torch encoder")
    onnx = _cached_export(model, Path(cache_dir) if cache_dir else _default_cache())
    key = (str(onnx), backend, str(device), torch.get_num_threads() if backend == "onnxruntime" else None)
    if key not in _loaded:
        if backend == "onnxruntime":
            _loaded[key] = OnnxImageEncoder(onnx)
        else:
            _loaded[key] = EngineImageEncoder(_engine_from(onnx, device), device=device)
    return _loaded[key]


def build_encoder_engine(model, *, device: torch.device | str = "cuda", cache_dir: str | Path | None = None) -> Path:
    """The bf16 TensorRT engine of ``model``'s image encoder, built once from its cached ONNX export and
    cached beside it: what ``encoder_backend="tensorrt"`` loads (``streamseg export tracker --format
    engine``). The recurrent parts run in torch: their memory length varies per object and frame, which
    static-shape engines do not take. Checks TensorRT and the device before exporting anything."""
    from engine.runtime.device import resolve_device
    from engine.runtime.tensorrt import import_tensorrt

    import_tensorrt()
    device = resolve_device(device)
    if device.type != "cuda":
        raise ConfigError("a TensorRT engine is built on a CUDA device; pass device='cuda'")
    return _engine_from(_cached_export(model, Path(cache_dir) if cache_dir else _default_cache()), device)


def _engine_from(onnx: Path, device: torch.device) -> Path:
    from engine.runtime.tensorrt import build_engine

    return build_engine(onnx, profile=None, fp16=False, bf16=True, cache_dir=onnx.parent,
                        metadata={"part": "image_encoder"}, device=device)


def model_digest(model) -> str:
    """SHA-256 over the model's weights, its image size and the versions that shape its export."""
    h = hashlib.sha256(f"{model.image_size}|torch {torch.__version__}|sam2 {version('sam2')}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _cached_export(model, cache: Path) -> Path:
    from engine.track.export import export_onnx

    target = cache / model_digest(model)[:24] / "image_encoder.onnx"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # A derived file, not the user's data: export to a temporary folder rather than stop the run.
        log.warning("cannot cache the image encoder export in %s (%s); exporting to a temporary folder",
                    target.parent, exc.strerror)
        target = Path(tempfile.mkdtemp(prefix="streamseg-encoder-")) / "image_encoder.onnx"
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()  # the export traces on the CPU, with CPU example inputs
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        [part] = export_onnx(model, tmp, parts=("image_encoder",))
        os.replace(part.path, target)  # whole or absent: a killed export leaves no half file behind
    return target


def _default_cache() -> Path:
    from engine.weights import cache_dir

    return cache_dir() / "tracker"


def clear_loaded() -> None:
    """Forget the encoders loaded so far (tests; a long-lived process that swaps models)."""
    _loaded.clear()


__all__ = ["ENCODER_BACKENDS", "EngineImageEncoder", "OnnxImageEncoder", "build_encoder_engine", "clear_loaded",
           "exported_image_encoder", "model_digest"]
