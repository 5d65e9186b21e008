"""What each network stage offers the pipeline: the contracts a detector family, a tracker and a fusion
policy implement. They sit beside ``engine.types`` at the bottom of the layers, so a stage can name
them without importing the pipeline or another stage.

Only the pipeline's per-frame processor (``engine.pipeline``) calls a tracker's prompting methods:
association returns ``Decision`` values, and the processor applies them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from engine.types import AssociationEvidence, Decision, Detections, Frame, Instances, Tracks


@runtime_checkable
class Detector(Protocol):
    """A detector family's model, ready to run (``engine.detect.load_detector`` builds one).

    Input: frames as [H, W, 3] uint8 RGB tensors of any size, on the CPU or on ``device`` (the
    pipeline uploads them there); a call may take several frames (one batch per multi-stream tick).
    """

    names: tuple[str, ...]  # class id -> label
    random_weights: bool  # built from a config with random weights: its instances mean nothing
    device: torch.device  # where it computes, and where its Detections are

    def __call__(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        """One ``Detections`` per image, in order, best score first."""
        ...


@runtime_checkable
class PromptableTracker(Protocol):
    """A streaming tracker: one ``step`` per frame; objects are added, refined and removed between
    steps, and a prompt applies to the frame of the latest ``step``."""

    random_weights: bool  # built from a config with random weights: its masks mean nothing

    def step(self, image: torch.Tensor) -> Tracks:
        """Propagate every object to ``image`` ([H, W, 3] uint8 RGB); their outputs in slot order."""
        ...

    def add_object(self, obj_id: int, *, box: Sequence[float] | None = None,
                   points: Sequence[Sequence[float]] | None = None, labels: Sequence[int] | None = None,
                   mask: torch.Tensor | None = None) -> Tracks:
        """Prompt ``obj_id`` on the current frame (a new id starts an object, a known one is refined);
        returns that object's updated output for this frame."""
        ...

    def remove_object(self, obj_id: int) -> bool:
        """Forget ``obj_id`` and its memory; False if it was not tracked."""
        ...


@runtime_checkable
class Fusion(Protocol):
    """Association and resolution for one stream. Per frame the processor calls, in order:

    1. ``associate`` on the detector's and the tracker's outputs: decisions (adopt, spawn, re-prompt);
    2. ``retire`` on the tracks after those decisions were applied (a prompt's answer replaces the
       propagated output): decisions (retire), made from the masks the prompts produced;
    3. ``resolve`` on the final tracks: the frame's non-overlapping instances.
    """

    def associate(self, frame: Frame, detections: Detections | None,
                  tracks: Tracks | None) -> list[Decision]: ...

    def retire(self, frame: Frame, tracks: Tracks | None) -> list[Decision]: ...

    def resolve(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> Instances: ...


@runtime_checkable
class ReportsAssociation(Protocol):
    """A ``Fusion`` that can say what its association measured on the frame it last decided (for the
    data engine's uncertainty score, ``FrameEvidence``). Optional: a fusion without it reports nothing
    matched and the default threshold."""

    def association_evidence(self) -> AssociationEvidence: ...


@runtime_checkable
class Refiner(Protocol):
    """Boundary refinement of a frame's final instances (``engine.refine.BoundaryRefiner``): the same
    instances, in order, with their masks' edges moved onto the picture's, still not overlapping."""

    method: str  # what it runs ("crf", "guided")

    def __call__(self, image: torch.Tensor, instances: Instances) -> Instances:
        """``image``: the frame, [H, W, 3] uint8 RGB; ``instances``: its resolved instances."""
        ...
