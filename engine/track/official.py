"""The official ``sam2`` video predictor on frames already in memory: the reference the tracker's parity
tests and benchmarks compare against, built the one way both use.

``SAM2VideoPredictor.init_state`` reads a JPEG folder or an mp4 through decord. Here its frame loader is
replaced, for the length of the call, by one returning the frames normalised exactly as the tracker
normalises them (``IMAGE_MEAN`` / ``IMAGE_STD``), so no JPEG round trip or resampling choice differs:
give both sides frames already at the model's size. sam2 is imported inside the functions.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import torch

from engine.track.config import IMAGE_MEAN, IMAGE_STD, resolve_model_config


def official_predictor(state_dict: dict[str, torch.Tensor], *, config: str = "sam2.1_hiera_t", image_size: int,
                       device: str | torch.device = "cpu", reprompt_as_cond: bool = False,
                       vos_optimized: bool = False):
    """A ``SAM2VideoPredictor`` (sam2's own builder and overrides) holding ``state_dict``.

    ``reprompt_as_cond`` sets sam2's ``add_all_frames_to_correct_as_cond``, as ``TrackerConfig`` does;
    ``vos_optimized`` builds sam2's ``SAM2VideoPredictorVOS`` (its forwards under ``torch.compile``).
    """
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [f"++model.image_size={image_size}"]
    if reprompt_as_cond:
        overrides.append("++model.add_all_frames_to_correct_as_cond=true")
    predictor = build_sam2_video_predictor(resolve_model_config(config), None, device=str(device),
                                           hydra_overrides_extra=overrides, vos_optimized=vos_optimized)
    predictor.load_state_dict(state_dict)
    return predictor


def official_state(predictor, frames: np.ndarray):  # frames: [T, S, S, 3] uint8 RGB at the model's size
    """``predictor.init_state`` on in-memory frames, normalised as the tracker normalises them."""
    import sam2.sam2_video_predictor as svp

    images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    images = (images - torch.tensor(IMAGE_MEAN)[:, None, None]) / torch.tensor(IMAGE_STD)[:, None, None]
    images = images.to(predictor.device)
    height, width = frames.shape[1:3]
    with mock.patch.object(svp, "load_video_frames", lambda **_: (images, height, width)):
        return predictor.init_state("in-memory")
