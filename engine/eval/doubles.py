"""Stage doubles: they isolate the pipeline and the fusion policy from the networks, for their tests and
for tuning the policy (benchmarks/fusion_policy.py). Each speaks the same interface as the real stage
(``engine.interfaces.Detector`` / ``PromptableTracker``), so the pipeline drives them as it drives the
real ones.

- ``MaskTracker``: the one tracker double. Each object is a mask at frame resolution that stays put
  until a prompt or the test moves it; a box prompt fills its box.
- ``NoisyTruthDetector``: a synthetic scene's visible objects as detections, with misses, false
  positives and mask jitter, each at a given rate, from a seeded generator.
- ``DriftingTracker``: a ``MaskTracker`` that follows each prompted object's true mask in a synthetic
  scene, displaced by a drift that grows by ``drift_px`` every frame it has followed the object since
  the last prompt; an object out of sight resets it (a tracker that finds its object again from memory
  segments it afresh); object score positive while the object is visible. A prompt that hits no
  object makes a phantom that is never visible.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from engine.sources.synthetic import SyntheticScene
from engine.types import Detections, Tracks

_VISIBLE, _HIDDEN = 8.0, -8.0  # logits of a confident tracker


def _box_of(mask: np.ndarray) -> np.ndarray:  # [H, W] bool -> [4] x1, y1, x2, y2
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    out[yd, xd] = mask[ys, xs]
    return out


class MaskTracker:
    """A ``PromptableTracker`` whose objects are masks at frame resolution (logits +-8, full size).

    A box prompt sets the object's mask to the box, a mask prompt to the mask, a points prompt to a
    3-pixel square around each foreground point. Tests move objects by setting ``masks[obj_id]``;
    ``hidden`` objects report a negative object score. Every prompt is recorded in ``prompts`` as
    (obj_id, box list or None) and every removal in ``removed``; ``prompt_delay_s`` makes each prompt
    cost that long, as SAM 2's work on a prompt does.
    """

    random_weights = False

    def __init__(self, height: int, width: int, *, prompt_delay_s: float = 0.0) -> None:
        self.height, self.width = height, width
        self.prompt_delay_s = prompt_delay_s
        self.masks: dict[int, torch.Tensor] = {}  # obj id -> [H, W] bool, in slot order
        self.hidden: set[int] = set()
        self.prompts: list[tuple[int, list[float] | None]] = []
        self.removed: list[int] = []
        self.frame = -1

    @property
    def object_ids(self) -> list[int]:
        return list(self.masks)

    def step(self, image: torch.Tensor | None = None) -> Tracks:
        self.frame += 1
        return self._tracks(list(self.masks))

    def add_object(self, obj_id: int, *, box: Sequence[float] | None = None,
                   points: Sequence[Sequence[float]] | None = None, labels: Sequence[int] | None = None,
                   mask: torch.Tensor | None = None) -> Tracks:
        if self.prompt_delay_s:
            time.sleep(self.prompt_delay_s)
        self.prompts.append((obj_id, None if box is None else [float(v) for v in box]))
        self.masks[obj_id] = self._prompted_mask(obj_id, box=box, points=points, labels=labels, mask=mask)
        self.hidden.discard(obj_id)
        return self._tracks([obj_id])

    def remove_object(self, obj_id: int) -> bool:
        self.removed.append(obj_id)
        return self.masks.pop(obj_id, None) is not None

    def _prompted_mask(self, obj_id: int, *, box, points, labels, mask) -> torch.Tensor:
        if mask is not None:
            return torch.as_tensor(mask).bool()
        out = torch.zeros((self.height, self.width), dtype=torch.bool)
        if box is not None:
            x1, y1, x2, y2 = (int(v) for v in box)
            out[y1:y2, x1:x2] = True
        for (x, y), label in zip(points or (), labels or ()):
            if label == 1:
                out[max(0, int(y) - 1):int(y) + 2, max(0, int(x) - 1):int(x) + 2] = True
        return out

    def _score(self, obj_id: int, mask: torch.Tensor) -> float:
        return _HIDDEN if obj_id in self.hidden else _VISIBLE

    def _tracks(self, ids: list[int]) -> Tracks:
        masks = (torch.stack([self.masks[i] for i in ids]) if ids
                 else torch.zeros((0, self.height, self.width), dtype=torch.bool))
        logits = torch.where(masks, _VISIBLE, _HIDDEN).float()  # frame-resolution "low-res" logits
        return Tracks(obj_ids=list(ids), masks=masks, logits=logits,
                      scores=torch.tensor([self._score(i, self.masks[i]) for i in ids]))


class NoisyTruthDetector:
    """Call it on frames in order (it reads the scene's frame 0, 1, ...), or ``detect(i)`` directly."""

    random_weights = False
    device = torch.device("cpu")

    def __init__(self, scene: SyntheticScene, *, miss: float = 0.0, false_positive: float = 0.0,
                 jitter_px: int = 0, min_area: int = 30, seed: int = 0) -> None:
        self.scene, self.miss, self.false_positive, self.jitter_px = scene, miss, false_positive, jitter_px
        self.min_area = min_area
        self.names = scene.class_names
        self.rng = np.random.default_rng(seed)
        self.false_positives = 0
        self._next = 0

    def __call__(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        out = []
        for _ in images:
            out.append(self.detect(self._next))
            self._next += 1
        return out

    def detect(self, i: int) -> Detections:
        gt = self.scene.ground_truth(i)
        masks, classes, scores = [], [], []
        for mask, cls in zip(gt.masks, gt.class_ids.tolist()):
            if mask.sum() < self.min_area or self.rng.random() < self.miss:
                continue
            masks.append(self._jitter(mask))
            classes.append(cls)
            scores.append(self.rng.uniform(0.6, 0.95))
        if self.rng.random() < self.false_positive:
            masks.append(self._phantom())
            classes.append(int(self.rng.integers(len(self.names))))
            scores.append(self.rng.uniform(0.5, 0.7))
            self.false_positives += 1
        h, w = self.scene.height, self.scene.width
        if not masks:
            return Detections.empty(h, w, names=self.names)
        stacked = torch.from_numpy(np.stack(masks))
        keep = stacked.flatten(1).any(1)
        stacked = stacked[keep]
        return Detections(boxes=torch.from_numpy(np.stack([_box_of(m) for m in stacked.numpy()])),
                          scores=torch.tensor(scores, dtype=torch.float32)[keep],
                          class_ids=torch.tensor(classes, dtype=torch.int64)[keep], masks=stacked,
                          names=self.names)

    def _jitter(self, mask: np.ndarray) -> np.ndarray:
        if self.jitter_px == 0:
            return mask
        dx, dy = (int(v) for v in self.rng.integers(-self.jitter_px, self.jitter_px + 1, size=2))
        grow = int(self.rng.integers(-1, 2))
        m = _shift(mask, dx, dy).astype(np.uint8)
        kernel = np.ones((3, 3), np.uint8)
        if grow > 0:
            m = cv2.dilate(m, kernel)
        elif grow < 0 and m.sum() > 4 * self.min_area:
            m = cv2.erode(m, kernel)
        return m.astype(bool)

    def _phantom(self) -> np.ndarray:
        h, w = self.scene.height, self.scene.width
        mask = np.zeros((h, w), dtype=np.uint8)
        cx, cy = int(self.rng.integers(20, w - 20)), int(self.rng.integers(20, h - 20))
        cv2.circle(mask, (cx, cy), int(self.rng.integers(6, 14)), 1, -1)
        return mask.astype(bool)


class DriftingTracker(MaskTracker):
    def __init__(self, scene: SyntheticScene, *, drift_px: float = 0.0) -> None:
        super().__init__(scene.height, scene.width)
        self.scene, self.drift_px = scene, drift_px
        self.objects: dict[int, int | None] = {}  # obj id -> the true object it follows (None: phantom)
        self.followed: dict[int, int] = {}  # obj id -> visible frames since its last prompt

    def step(self, image: torch.Tensor | None = None) -> Tracks:
        self.frame += 1
        visible = set(self.scene.ground_truth(self.frame).ids.tolist())
        for obj_id, true_id in self.objects.items():
            self.followed[obj_id] = self.followed[obj_id] + 1 if true_id in visible else 0
        self._follow_truth(list(self.objects))
        return self._tracks(list(self.objects))

    def add_object(self, obj_id: int, *, box=None, points=None, labels=None, mask=None) -> Tracks:
        gt = self.scene.ground_truth(self.frame)
        if box is None and mask is not None:  # a mask prompt follows the object under its box
            box = _box_of(np.asarray(mask, dtype=bool))
        box = np.asarray(box, dtype=np.float32)
        best, best_iou = None, 0.3
        for true_id, truth in zip(gt.ids.tolist(), gt.masks):
            if truth.any() and (overlap := _box_iou(box, _box_of(truth))) >= best_iou:
                best, best_iou = true_id, overlap
        self.objects[obj_id] = best
        self.followed[obj_id] = 0
        self.prompts.append((obj_id, box.tolist()))
        self._follow_truth([obj_id])
        return self._tracks([obj_id])

    def remove_object(self, obj_id: int) -> bool:
        del self.objects[obj_id], self.followed[obj_id]
        return super().remove_object(obj_id)

    def _follow_truth(self, ids: list[int]) -> None:
        gt = self.scene.ground_truth(self.frame)
        truth = dict(zip(gt.ids.tolist(), gt.masks))
        empty = np.zeros((self.height, self.width), dtype=bool)
        for obj_id in ids:
            mask = truth.get(self.objects[obj_id], empty)
            drift = int(round(self.drift_px * self.followed[obj_id]))
            self.masks[obj_id] = torch.from_numpy(_shift(mask, drift, 0) if drift else mask)
            if mask.any():
                self.hidden.discard(obj_id)
            else:
                self.hidden.add(obj_id)
