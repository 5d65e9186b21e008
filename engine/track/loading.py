"""``load_tracker``: the one call the CLI and the pipeline make to get a tracker by name."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from engine.track.config import TrackerConfig, resolve_model_config
from engine.track.tracker import StreamingTracker
from engine.weights import RANDOM, resolve_weights


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
    from engine.track import registry  # noqa: F401  (registers the official names)

    config = resolve_model_config(name_or_config)
    opts = replace(options or TrackerConfig(), image_size=image_size)
    if weights is None or str(weights) == RANDOM:
        return StreamingTracker.from_config(config, seed=seed, device=device, options=opts)
    path = resolve_weights(weights, model=name_or_config, what="tracker", option="weights")
    return StreamingTracker.from_checkpoint(Path(path), config=config, device=device, options=opts)
