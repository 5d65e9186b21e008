"""``load_tracker``: the one call the CLI and the pipeline make to get a tracker by name."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from engine.errors import WeightsError
from engine.track.config import TrackerConfig, resolve_model_config
from engine.track.tracker import StreamingTracker

RANDOM_WEIGHTS = "random"  # what a user passes for random weights built from the config (tests, benchmarks)


def load_tracker(name_or_config: str, *, weights: str | Path | None = None, image_size: int = 1024,
                 device: torch.device | str = "cpu", seed: int = 0,
                 options: TrackerConfig | None = None) -> StreamingTracker:
    """A tracker for ``--tracker NAME``.

    Args:
        name_or_config: ``sam2.1_hiera_t`` (or ``_s``, ``_b+``, ``_l``, or the long names ``_tiny`` ...)
            or a sam2 config name such as ``configs/sam2.1/sam2.1_hiera_t.yaml``.
        weights: a checkpoint path; a known weights name (``sam2.1_hiera_tiny``) already fetched into the
            cache; or None / ``"random"`` for random weights from ``seed``.
    """
    config = resolve_model_config(name_or_config)
    opts = replace(options or TrackerConfig(), image_size=image_size)
    if weights is None or str(weights) == RANDOM_WEIGHTS:
        return StreamingTracker.from_config(config, seed=seed, device=device, options=opts)
    path = _weights_path(weights)
    return StreamingTracker.from_checkpoint(path, config=config, device=device, options=opts)


def _weights_path(weights: str | Path) -> Path:
    path = Path(weights)
    if path.exists():
        return path
    from engine.track.registry import TRACKER_WEIGHTS
    from engine.weights import cache_dir

    known = {w.name: w for w in TRACKER_WEIGHTS}
    if str(weights) in known:
        cached = cache_dir() / known[str(weights)].filename
        if not cached.exists():
            raise WeightsError(f"{weights}: not downloaded yet; run `streamseg fetch {weights}` first "
                               f"(it goes to {cached})")
        return cached
    raise WeightsError(f"{weights}: no such file and not a known tracker weights name "
                       f"({', '.join(known)}); pass a checkpoint path or 'random'")
