"""Fixtures for the tracker tests: a real clip at the model's size, one set of random weights, and a
runner for the official ``SAM2VideoPredictor`` on the same frames and weights."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SIZE = 256  # the smallest size at which random-weight masks still have shape (ENVIRONMENT.md: ~0.14 s/frame)
SEED = 0

warnings.filterwarnings("ignore", message="cannot import name '_C' from 'sam2'")


def read_frames(path: Path, count: int, size: int) -> np.ndarray:
    """The first ``count`` frames of ``path`` as [T, size, size, 3] uint8 RGB, resized by the decoder."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for picture in container.decode(video=0):
            frames.append(picture.to_ndarray(format="rgb24", width=size, height=size))
            if len(frames) == count:
                break
    return np.stack(frames)


@pytest.fixture(scope="session")
def clip_frames(bedroom_clip) -> np.ndarray:
    return read_frames(bedroom_clip, 30, SIZE)


@pytest.fixture(scope="session")
def state_dict() -> dict[str, torch.Tensor]:
    from engine.track.model import build_model

    return build_model(CONFIG, image_size=SIZE, seed=SEED).state_dict()


@dataclass
class ReferenceRun:
    """The official predictor's low-res logits and scores, per frame and object id."""

    logits: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # frame -> id -> [h, w]
    masks: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # frame -> id -> [H, W] bool


def official_predictor(state: dict[str, torch.Tensor], *, size: int = SIZE, reprompt_as_cond: bool = False,
                       device: str = "cpu"):
    from engine.track.official import official_predictor as build

    return build(state, config=CONFIG, image_size=size, device=device, reprompt_as_cond=reprompt_as_cond)


def official_state(predictor, frames: np.ndarray):
    """``init_state`` on in-memory frames (engine.track.official: the tracker's normalisation, no JPEG
    round trip or resampling)."""
    from engine.track.official import official_state as init

    return init(predictor, frames)


def collect(run: ReferenceRun, predictor, state, **propagate) -> None:
    """Propagate and record each object's low-res logits (sam2 keeps them per object) and masks."""
    for frame_idx, obj_ids, video_masks in predictor.propagate_in_video(state, **propagate):
        run.masks[frame_idx] = {i: video_masks[k, 0].cpu() > 0 for k, i in enumerate(obj_ids)}
        run.logits[frame_idx] = {}
        for k, obj_id in enumerate(obj_ids):
            out = state["output_dict_per_obj"][k]
            entry = out["cond_frame_outputs"].get(frame_idx) or out["non_cond_frame_outputs"].get(frame_idx)
            run.logits[frame_idx][obj_id] = entry["pred_masks"][0, 0].cpu()


def run_tracker(tracker, frames: np.ndarray, events: dict[int, list[tuple]]) -> ReferenceRun:
    """Drive ``tracker`` as the pipeline does: step each frame, then apply that frame's events
    (``("add", id, box)`` or ``("remove", id)``). A prompt's output replaces the step's for that object."""
    run = ReferenceRun()
    for index, frame in enumerate(frames):
        tracks = tracker.step(frame)
        run.logits[index] = {i: tracks.logits[k].cpu() for k, i in enumerate(tracks.obj_ids)}
        run.masks[index] = {i: tracks.masks[k].cpu() for k, i in enumerate(tracks.obj_ids)}
        for event in events.get(index, []):
            if event[0] == "add":
                out = tracker.add_object(event[1], box=event[2])
                run.logits[index][event[1]] = out.logits[0].cpu()
                run.masks[index][event[1]] = out.masks[0].cpu()
            else:
                tracker.remove_object(event[1])
    return run


def compare(ours: ReferenceRun, ref: ReferenceRun) -> tuple[float, float]:
    """(worst mask IoU, worst max |logit difference|) over every frame and object both runs have; the
    two runs must output the same objects on every frame."""
    worst_iou, worst_diff = 1.0, 0.0
    assert sorted(ours.logits) == sorted(ref.logits)
    for index, per_obj in ref.logits.items():
        assert sorted(ours.logits[index]) == sorted(per_obj), f"frame {index}: objects differ"
        for obj_id, logits in per_obj.items():
            worst_diff = max(worst_diff, float((ours.logits[index][obj_id] - logits).abs().max()))
            a, b = ours.masks[index][obj_id], ref.masks[index][obj_id]
            union = int((a | b).sum())
            worst_iou = min(worst_iou, int((a & b).sum()) / union if union else 1.0)
    return worst_iou, worst_diff
