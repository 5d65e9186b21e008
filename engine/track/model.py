"""Build the sam2 network from its own config, with random weights or a checkpoint.

The network code is sam2's (``SAM2Base`` and its modules); this module only composes the config the way
``sam2.build_sam.build_sam2_video_predictor`` does for video and loads weights with clear errors. sam2 is
imported inside the functions: importing it initialises Hydra globally, which must not happen when
``engine`` is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engine.errors import ConfigError, WeightsError
from engine.runtime.device import resolve_device
from engine.track.config import resolve_model_config

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

# The overrides sam2's video predictor builder applies on top of the config file; the tracker must
# run the same model the official predictor runs. (fill_hole_area=8 is a predictor option, not a model
# one: it needs sam2's compiled _C extension, which CPU installs lack, and is not reproduced here.)
VIDEO_OVERRIDES = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
)


def build_model(config: str, *, image_size: int, device: torch.device | str = "cpu",
                checkpoint: str | Path | None = None, seed: int | None = None) -> SAM2Base:
    """A ``SAM2Base`` in eval mode built from a sam2 config name.

    Args:
        config: a sam2 config name (``configs/sam2.1/sam2.1_hiera_t.yaml``) or a short model name.
        image_size: the model's input side (hydra override ``++model.image_size``).
        device: cpu, cuda, cuda:N or auto (``engine.runtime.device.resolve_device``).
        checkpoint: a sam2 checkpoint file; None keeps the random initialisation.
        seed: seeds the random initialisation without touching the caller's global generator.
    """
    config_name = resolve_model_config(config)
    device = resolve_device(device)  # before anything is built: a missing CUDA device is a BackendError
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import sam2  # noqa: F401  (registers sam2's config module with Hydra, as sam2 itself does)

    overrides = [*VIDEO_OVERRIDES, f"++model.image_size={int(image_size)}"]
    try:
        cfg = compose(config_name=config_name, overrides=overrides)
    except Exception as exc:  # hydra raises its own types; any failure here is a config the user named
        raise ConfigError(f"cannot compose sam2 config {config_name!r}: {exc}") from None
    OmegaConf.resolve(cfg)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = instantiate(cfg.model, _recursive_=True)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.to(device).eval()


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> None:
    """Load a sam2 checkpoint (``{"model": state_dict}`` or a bare state dict) into ``model``.

    Raises WeightsError naming the file when it is missing, unreadable, truncated, or for another model.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; pass an existing sam2 checkpoint, or fetch one "
                           "with `streamseg fetch sam2.1_hiera_tiny`")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch.load reports truncation and garbage as RuntimeError, UnpicklingError, EOFError,
        # BadZipFile and more; whatever the type, the file is not a checkpoint torch can read.
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path}: not a readable torch checkpoint ({reason}); the file is corrupt or "
                           "truncated: download it again") from None
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no sam2 state dict (expected {{'model': state_dict}}); "
                           "pass a sam2 checkpoint")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise WeightsError(f"{path}: does not fit this model config: {', '.join(parts)}; pass the config "
                           "the checkpoint was trained with (e.g. sam2.1_hiera_s for sam2.1_hiera_small.pt)")
    model.load_state_dict(state, strict=True)
