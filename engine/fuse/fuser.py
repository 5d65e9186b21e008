"""Detector–tracker fusion: stable ids, spawn, re-prompt, retire, non-overlapping final masks.

Every frame, after the tracker has propagated its objects:
1. associate the frame's detections with the tracked objects by mask IoU (optimal assignment, pairs
   below ``match_iou`` stay apart);
2. a matched track whose mask disagrees with its detection (IoU < ``reprompt_iou``) has drifted and is
   re-prompted from the detection's box, if the detection is of the track's class;
3. detections and tracks left over are paired by box overlap with where each track is, or was last
   seen when lost, and by class: a drifted or occluded track keeps its id and is re-prompted; a confident detection
   still left, not covering a tracked object and seen on ``spawn_after`` consecutive detection frames,
   spawns a new track;
4. two tracks on one object (masks overlapping by ``duplicate_iou``) become one; a track with a low
   object score and no match for ``retire_after`` frames is retired, and so is one no detection has
   confirmed for ``retire_unmatched_after`` detection frames;
5. the tracks' logits are resolved into one instance-id map (``fuse_logits``), so every pixel belongs
   to at most one instance. Pixels come from SAM 2, which segments finer than YOLO's 160x160
   prototypes; detections decide identity, drift and class.
Class labels and scores of a track are smoothed over its matched detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from engine.fuse.config import FuserConfig
from engine.ops import fuse_logits, mask_boxes, mask_iou
from engine.ops.fuse_logits import split_id_map
from engine.runtime.device import stage_section
from engine.types import Detections, Frame, Instances, Tracks


@dataclass(slots=True)
class TrackState:
    """What the fuser knows of one tracked object beyond its masks (the tracker holds those)."""

    id: int
    born: int  # frame index it was spawned (or adopted) on
    class_scores: np.ndarray  # [C] float: smoothed evidence per class from matched detections
    score: float  # smoothed confidence of matched detections
    lost: int = 0  # consecutive frames with a low object score and no matched detection
    unmatched: int = 0  # consecutive detection frames without a matched detection
    last_box: tuple[float, float, float, float] | None = None  # where it was last visible
    matches: int = 0


@dataclass(slots=True)
class _Candidate:
    """A confident detection no track explains, waiting for confirmation before it spawns one."""

    box: torch.Tensor  # [4] float32
    hits: int  # consecutive detection frames it was seen on


@dataclass(slots=True)
class FusionCounters:
    spawned: int = 0
    reprompted: int = 0
    reacquired: int = 0
    retired: int = 0
    merged: int = 0  # duplicates retired


@dataclass(slots=True)
class _Current:
    """One object's tracker output on the current frame, replaced when it is (re-)prompted."""

    logits: torch.Tensor  # [h, w] float32 low-res mask logits
    score: float  # object-score logit


@dataclass(slots=True)
class _Frame:
    height: int
    width: int
    objects: dict[int, _Current] = field(default_factory=dict)


class Fuser:
    """Joins a detector and a ``StreamingTracker`` into tracked instances with stable ids.

    Args:
        tracker: the tracker the pipeline steps; the fuser adds, re-prompts and removes its objects.
        config: the policy's thresholds (``FuserConfig``).
        names: the detector's class names (class id -> label).
    """

    def __init__(self, tracker, config: FuserConfig = FuserConfig(), *, names: tuple[str, ...]) -> None:
        self.tracker = tracker
        self.config = config
        self.names = tuple(names)
        self.tracks: dict[int, TrackState] = {}
        self.counters = FusionCounters()
        self._next_id = 1
        self._candidates: list[_Candidate] = []
        self._frame_index = 0

    def __call__(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> Instances:
        current = _Frame(frame.height, frame.width)
        if tracks is not None:
            scores = tracks.scores.reshape(-1).tolist()
            for i, obj_id in enumerate(tracks.obj_ids):
                current.objects[obj_id] = _Current(logits=tracks.logits[i], score=scores[i])
        self._frame_index = frame.index
        matched: set[int] = set()
        if detections is not None:
            matched = self._associate(current, tracks, detections)
        self._drop_duplicates(current, matched)
        self._update_lifecycle(current, matched, detected=detections is not None)
        return self._resolve(frame, current)

    # -- association ----------------------------------------------------------------------------

    def _associate(self, current: _Frame, tracks: Tracks | None, dets: Detections) -> set[int]:
        """Two stages, then spawning. Stage 1 pairs detections and tracks by mask IoU. Stage 2 pairs
        what is left by box IoU between the detection and where the track is (its mask's box) or was
        last seen (a lost track's last box): a track that drifted off its object, or lost it behind an
        occluder, keeps its id and is re-prompted. Confident detections left over spawn tracks."""
        if len(dets) == 0:
            return set()
        ids = list(tracks.obj_ids) if tracks is not None else []
        iou = (mask_iou(tracks.masks, dets.masks).cpu().numpy() if ids
               else np.zeros((0, len(dets)), dtype=np.float32))  # [N, M]
        classes, boxes = dets.class_ids.tolist(), dets.boxes.float().cpu()
        pairs = self._pair_by_masks(ids, iou, classes)
        pairs += self._pair_by_boxes(tracks, pairs, classes, boxes)
        scores = dets.scores.tolist()
        matched: set[int] = set()
        for obj_id, d, kind in pairs:
            self._observe(obj_id, classes[d], scores[d])
            if kind != "match":
                self._prompt(current, obj_id, boxes[d])
                if kind == "drift":
                    self.counters.reprompted += 1
                else:
                    self.counters.reacquired += 1
            matched.add(obj_id)
        paired = {d for _, d, _ in pairs}
        fresh = [d for d in np.argsort(scores)[::-1].tolist()  # most confident first
                 if d not in paired and scores[d] >= self.config.spawn_conf
                 and not (iou.shape[0] and iou[:, d].max() >= self.config.spawn_max_overlap)]
        room = self.config.max_tracks - len(self.tracks)
        for d in self._confirmed(fresh, boxes)[:max(0, room)]:
            matched.add(self._spawn(current, classes[d], scores[d], boxes[d]))
        return matched

    def _pair_by_masks(self, ids: list[int], iou: np.ndarray,  # [N, M]
                       classes: list[int]) -> list[tuple[int, int, str]]:
        """Stage 1: (track id, detection, "match" | "drift") by optimal assignment on mask IoU."""
        cfg = self.config
        if ids:
            # A pair that agrees (IoU >= reprompt_iou) needs no class agreement: classes flicker. A
            # weaker pair would re-prompt the track onto the detection, moving its identity: only a
            # detection of the track's own class may do that.
            track_class = np.array([self._class_of(i) if i in self.tracks and self.tracks[i].matches
                                    else -1 for i in ids])
            other = (track_class[:, None] != np.array(classes)[None, :]) & (track_class[:, None] >= 0)
            iou = np.where(other & (iou < cfg.reprompt_iou), 0.0, iou)
        return [(ids[t], d, "drift" if iou[t, d] < cfg.reprompt_iou else "match")
                for t, d in _assign(iou, cfg.match_iou)]

    def _pair_by_boxes(self, tracks: Tracks | None, pairs: list[tuple[int, int, str]], classes: list[int],
                       boxes: torch.Tensor) -> list[tuple[int, int, str]]:
        """Stage 2: tracks and detections stage 1 left, paired by box IoU with where each track is or
        was last seen, within one class: (track id, detection, "reacquire")."""
        paired_tracks = {obj_id for obj_id, _, _ in pairs}
        paired_dets = {d for _, d, _ in pairs}
        left_tracks = [i for i in self.tracks if i not in paired_tracks]
        left_dets = [d for d in range(len(classes)) if d not in paired_dets]
        where = {i: box for i in left_tracks if (box := self._whereabouts(i, tracks)) is not None}
        if not where or not left_dets:
            return []
        known = list(where)
        overlap = box_iou(torch.tensor([where[i] for i in known]), boxes[left_dets]).numpy()
        # Re-acquiring is a guess from geometry alone: only a detection of the track's own class may
        # claim it (two objects leaving by one edge are told apart by class).
        track_class = np.array([self._class_of(i) for i in known])
        overlap[track_class[:, None] != np.array([classes[d] for d in left_dets])[None, :]] = 0.0
        return [(known[k], left_dets[j], "reacquire") for k, j in _assign(overlap, self.config.reacquire_box_iou)]

    def _confirmed(self, fresh: list[int], boxes: torch.Tensor) -> list[int]:
        """The detections in ``fresh`` seen on ``spawn_after`` consecutive detection frames; the others
        wait as candidates until the next detection frame (and are forgotten if not seen there)."""
        previous, self._candidates = self._candidates, []
        if not fresh:
            return []
        hits = [1] * len(fresh)
        if previous:
            overlap = box_iou(boxes[fresh], torch.stack([c.box for c in previous])).numpy()
            for f, c in _assign(overlap, self.config.reacquire_box_iou):
                hits[f] = previous[c].hits + 1
        ready = []
        for f, d in enumerate(fresh):
            if hits[f] >= self.config.spawn_after:
                ready.append(d)
            else:
                self._candidates.append(_Candidate(box=boxes[d], hits=hits[f]))
        return ready

    def _class_of(self, obj_id: int) -> int:
        return int(np.argmax(self.tracks[obj_id].class_scores))

    def _whereabouts(self, obj_id: int, tracks: Tracks | None) -> list[float] | None:
        """Box of the track's current mask, else where it was last seen, else None."""
        if tracks is not None and obj_id in tracks.obj_ids:
            mask = tracks.masks[tracks.obj_ids.index(obj_id)]
            if bool(mask.any()):
                return mask_boxes(mask[None])[0].tolist()
        box = self.tracks[obj_id].last_box
        return list(box) if box is not None else None

    def _observe(self, obj_id: int, class_id: int, score: float) -> None:
        state = self.tracks[obj_id]
        a = self.config.smoothing
        state.class_scores *= 1.0 - a
        state.class_scores[class_id] += a * score
        state.score = (1.0 - a) * state.score + a * score
        state.matches += 1
        state.unmatched = 0
        state.lost = 0

    def _spawn(self, current: _Frame, class_id: int, score: float, box: torch.Tensor) -> int:
        obj_id = self._next_id
        self._next_id += 1
        class_scores = np.zeros(max(len(self.names), class_id + 1), dtype=np.float64)
        class_scores[class_id] = score
        self.tracks[obj_id] = TrackState(id=obj_id, born=self._frame_index, class_scores=class_scores,
                                         score=score, matches=1)
        self._prompt(current, obj_id, box)
        self.counters.spawned += 1
        return obj_id

    def _prompt(self, current: _Frame, obj_id: int, box: torch.Tensor) -> None:
        """(Re-)prompt the tracker with a box on the current frame; its answer replaces the object's
        propagated output for this frame."""
        with stage_section("track"):  # SAM 2's work on the prompt is tracking time, not fusion time
            added = self.tracker.add_object(obj_id, box=[float(v) for v in box.tolist()])
        i = added.obj_ids.index(obj_id)
        current.objects[obj_id] = _Current(logits=added.logits[i], score=float(added.scores.reshape(-1)[i]))

    # -- lifecycle ------------------------------------------------------------------------------

    def _drop_duplicates(self, current: _Frame, matched: set[int]) -> None:
        """Retire all but one of any tracks whose current masks overlap by ``duplicate_iou``: keep the
        one matched this frame, else the one with more matched detections, else the older."""
        ids = [i for i, c in current.objects.items() if c.score > 0]
        if len(ids) < 2:
            return
        masks = torch.stack([current.objects[i].logits > 0 for i in ids])  # [N, h, w] low-res
        iou = mask_iou(masks, masks).cpu().numpy()
        np.fill_diagonal(iou, 0.0)
        rank = {i: (i in matched, self.tracks[i].matches if i in self.tracks else 0, -i) for i in ids}
        for a, b in zip(*np.nonzero(np.triu(iou >= self.config.duplicate_iou))):
            first, second = ids[a], ids[b]
            if first in current.objects and second in current.objects:
                loser = min(first, second, key=rank.__getitem__)
                self._retire(current, loser)
                matched.discard(loser)
                self.counters.merged += 1

    def _retire(self, current: _Frame, obj_id: int) -> None:
        with stage_section("track"):
            self.tracker.remove_object(obj_id)
        self.tracks.pop(obj_id, None)
        current.objects.pop(obj_id, None)

    def _update_lifecycle(self, current: _Frame, matched: set[int], *, detected: bool) -> None:
        for obj_id in list(current.objects):
            state = self.tracks.get(obj_id)
            if state is None:  # an object added to the tracker by someone else: adopt it, classless
                state = self.tracks[obj_id] = TrackState(
                    id=obj_id, born=self._frame_index, class_scores=np.zeros(max(1, len(self.names))),
                    score=0.0)
                self._next_id = max(self._next_id, obj_id + 1)
            if obj_id in matched:
                continue
            if detected:
                state.unmatched += 1
            state.lost = state.lost + 1 if current.objects[obj_id].score <= 0 else 0
            limit = self.config.retire_unmatched_after
            if state.lost >= self.config.retire_after or (limit is not None and state.unmatched >= limit):
                self._retire(current, obj_id)
                self.counters.retired += 1

    # -- final masks ----------------------------------------------------------------------------

    def _resolve(self, frame: Frame, current: _Frame) -> Instances:
        device = frame.image.device
        ids = [i for i, c in current.objects.items() if c.score > 0]
        if not ids:
            return Instances.empty(frame.height, frame.width, device=device)
        logits = torch.stack([current.objects[i].logits.to(device).float() for i in ids])  # [N, h, w]
        scores = torch.tensor([max(self.tracks[i].score, 1e-3) for i in ids], device=device)
        id_map = fuse_logits(logits, scores, size=(frame.height, frame.width))  # [H, W] index into ids
        masks, boxes = split_id_map(id_map, logits)
        keep_idx = (boxes[:, 2] > boxes[:, 0]).nonzero().flatten().tolist()  # empty masks have zero boxes
        if not keep_idx:
            return Instances.empty(frame.height, frame.width, device=device)
        masks, boxes = masks[keep_idx], boxes[keep_idx]
        kept = [ids[k] for k in keep_idx]
        for obj_id, box in zip(kept, boxes.tolist()):
            self.tracks[obj_id].last_box = tuple(box)
        classes = [self._class_of(i) for i in kept]
        return Instances(
            ids=torch.tensor(kept, dtype=torch.int64, device=device),
            class_ids=torch.tensor(classes, dtype=torch.int64, device=device),
            scores=torch.tensor([self.tracks[i].score for i in kept], dtype=torch.float32, device=device),
            boxes=boxes, masks=masks,
            labels=tuple(self.names[c] if c < len(self.names) else str(c) for c in classes),
        )


def _assign(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (track, detection) maximising total IoU, each at least ``threshold``."""
    if iou.size == 0:
        return []
    iou = np.nan_to_num(iou, nan=0.0)  # a zero-area box (clipped at the frame edge) overlaps nothing
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(r, c) for r, c in zip(rows.tolist(), cols.tolist()) if iou[r, c] >= threshold]
