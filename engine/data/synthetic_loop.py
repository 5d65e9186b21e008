"""What the closed loop on synthetic scenes (``python -m benchmarks.closed_loop``) and ``streamseg demo
--scene synthetic`` agree on: the scenes, the sizes the networks run at, how the engine makes its masks
on the fine-tuned checkpoints (fusion and boundary refinement), and where those live in the cache.

The loop trains on scenes ``TRAIN_SEEDS`` and scores on ``HELD_OUT_SEEDS``, which it never collects
from; the demo plays the first held-out scene. The networks run at the sizes they were trained at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.weights import cache_dir

TRAIN_SEEDS = (101, 102, 103)  # the scenes the engine collects from (their truth labels the kept frames)
HELD_OUT_SEEDS = (201, 202)  # never collected from: the loop's score, and the demo's scene
SIZE = (320, 240)  # frame width, height
OBJECTS = 6
DETECTOR_IMGSZ = 256  # YOLOv8-seg's input side, in training and in the engine
TRACKER_SIZE = 256  # SAM 2's input side, in training and in the engine (ENVIRONMENT.md: ~0.14 s/frame)
MAX_TRACKS = 8  # random weights spawn a track on any detection: this bounds the random engine's cost
# How the engine with the loop's checkpoints makes its masks (the loop's score and the demo; collection runs
# on random weights and the defaults): a tracker fine-tuned for ten minutes on 84 frames segments worse than
# its detector (held-out box-prompted IoU 0.66-0.73; the best detection mask per visible object averages
# 0.74), so a matched track shows its detection's mask and a track no detection confirms is not shown; and
# the detector's 64x64 mask prototypes leave blocky edges that a dense CRF moves onto the scenes' flat
# colour edges (--refine crf, ~0.14 s a frame here). On the held-out scenes: HOTA 0.30 -> 0.43 for the
# fusion (third round's checkpoints), J 0.645 -> 0.715 for the CRF (fourth round's; benchmarks/RESULTS.md).
LOOP_OPTIONS = {"detector_mask_weight": 1.0, "hide_unconfirmed_after": 1, "refine": "crf"}


def scene_spec(seed: int, frames: int) -> str:
    """The ``synthetic:`` source of one loop scene."""
    return f"synthetic:seed={seed},frames={frames},size={SIZE[0]}x{SIZE[1]},objects={OBJECTS}"


@dataclass(frozen=True, slots=True)
class LoopWeights:
    detector: Path  # YOLOv8-seg fine-tuned from random weights on the loop's collection (--weights)
    tracker: Path  # SAM 2 (hiera-t) fine-tuned likewise (--tracker-weights)

    @property
    def present(self) -> bool:
        return self.detector.is_file() and self.tracker.is_file()


def loop_weights(root: Path | None = None) -> LoopWeights:
    """Where the closed loop installs its checkpoints: ``<cache>/closed_loop/`` (``engine.weights.cache_dir``)."""
    folder = (root if root is not None else cache_dir()) / "closed_loop"
    return LoopWeights(detector=folder / "yolov8n-seg-synthetic.pt", tracker=folder / "sam2.1_hiera_t-synthetic.pt")
