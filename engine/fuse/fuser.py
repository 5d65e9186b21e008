"""Detector-driven association: stable ids, spawn, re-prompt, retire, over a tracker's objects.

Association never calls the tracker: it returns ``Decision`` values, and the pipeline's per-frame
processor applies them (``engine.interfaces.Fusion`` gives the order). Every frame, after the tracker
has propagated its objects:
1. ``associate``: objects association did not start (a user's) are adopted; the frame's detections are
   associated with the tracked objects by mask IoU plus ``last_seen_weight`` times the box IoU with where
   each track was on the last frame (optimal assignment, pairs below ``match_iou`` mask IoU stay
   apart); a matched track whose mask disagrees with its detection (IoU < ``reprompt_iou``) has drifted
   and is re-prompted from the detection's box, if the detection is of the track's class; detections
   and tracks left over are paired by box overlap with where each track is or was last seen, and by
   class: a drifted, jumped or occluded track keeps its id and is re-prompted; a confident detection
   still left, not covering a tracked object and seen on ``spawn_after`` consecutive detection frames,
   spawns a new track;
   Before any of that, a track shown before but not on the last frame whose propagated mask comes back
   ``return_overlap`` inside the mask of a track shown on the last frame (of its class, or with no
   detection of its own class where it is) has taken that track's object for its own (SAM 2's memory
   mistook a neighbour for its lost object): it claims no detection on this frame;
2. ``retire``, on the masks the prompts produced: such a jumped track is retired as lost, into the
   re-identification gallery; two tracks on one object (masks overlapping by ``duplicate_iou``) become
   one; a track with a low object score and no match for ``retire_after`` frames is retired, and so is
   one no detection has confirmed for ``retire_unmatched_after`` detection frames. A user's track is
   never retired by this policy. With re-identification on (``reid``), a track spawned by this policy
   that matches one retired as lost earlier goes on under the retired id (``Reidentify``), on its first
   frame with a usable embedding;
3. ``resolve``: the shown tracks (``hide_unconfirmed_after``) become the frame's non-overlapping
   instances (``resolve_tracks``), a matched track's mask fused with its detection's
   (``detector_mask_weight``).
Class labels and scores of a track are smoothed over its matched detections. The visible tracks'
embeddings and object pointers (``Tracks.embeddings``, ``.pointers``) feed the re-identification
gallery (``engine.fuse.reid``); a tracker that gives none leaves it idle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from engine.fuse.config import FuserConfig
from engine.fuse.reid import ReidConfig, Sighting, TrackReidentifier
from engine.fuse.resolve import resolve_tracks
from engine.ops import mask_boxes, mask_iou
from engine.types import (Adopt, AssociationEvidence, Decision, Detections, Frame, Instances, Origin, Reidentify, Reprompt,
                          RepromptReason, Retire, RetireReason, Spawn, Tracks)

# On by default: on benchmarks/reid.py's scenes (objects away 2-5 s, look-alikes entering meanwhile) the
# gallery recovered 0.955-1.0 of the returns with no false re-identification (benchmarks/RESULTS.md).
DEFAULT_REID = ReidConfig()


@dataclass(slots=True)
class TrackState:
    """What association knows of one tracked object beyond its masks (the tracker holds those)."""

    id: int
    born: int  # frame index it was spawned (or adopted) on
    class_scores: np.ndarray  # [C] float: smoothed evidence per class from matched detections
    score: float  # smoothed confidence of matched detections
    lost: int = 0  # consecutive frames with a low object score and no matched detection
    unmatched: int = 0  # consecutive detection frames without a matched detection
    last_box: tuple[float, float, float, float] | None = None  # where it was last visible
    matches: int = 0
    origin: Origin = Origin.DETECTOR
    seen: bool = False  # whether it has been among the frame's instances yet
    visible: bool = False  # whether it was among the last frame's instances
    visible_since: int = 0  # frame index its last run of frames among the instances began on

    @property
    def gone(self) -> bool:
        """Shown before, but not on the last frame (out of sight, hidden or unconfirmed)."""
        return self.seen and not self.visible


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
    merged: int = 0  # duplicates retired (as lost when not shown on the last frame); jumped tracks count in retired
    adopted: int = 0  # objects a user added
    reidentified: int = 0  # spawned tracks given a retired id back


@dataclass(slots=True)
class _Output:
    """One object's tracker output on the current frame."""

    logits: torch.Tensor  # [h, w] float32 low-res mask logits
    score: float  # object-score logit


class Fuser:
    """The fusion policy of one stream (``engine.interfaces.Fusion``): tracked instances with stable ids
    from a detector's and a tracker's outputs.

    Args:
        config: the policy's thresholds (``FuserConfig``).
        names: the detector's class names (class id -> label).
        reid: the re-identification gallery's settings (``engine.fuse.reid.ReidConfig``); None: off.
    """

    def __init__(self, config: FuserConfig | None = None, *, names: tuple[str, ...],
                 reid: ReidConfig | None = DEFAULT_REID) -> None:
        self.config = config if config is not None else FuserConfig()
        self.reid = TrackReidentifier(reid) if reid is not None else None
        self.names = tuple(names)
        self.tracks: dict[int, TrackState] = {}
        self.counters = FusionCounters()
        self._next_id = 1
        self._candidates: list[_Candidate] = []
        self._frame_index = 0
        self._paired: dict[int, int] = {}  # track id -> index of its matched detection, current frame
        self._detected = False  # whether the current frame had a detector pass
        self._matched_iou: list[float] = []  # mask IoU of the current frame's detection-track pairs
        self._went_lost = 0  # tracks that went out of sight on the current frame
        self._jumped: set[int] = set()  # tracks whose memory took another track's object, current frame

    def associate(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> list[Decision]:
        """Adopt, re-prompt and spawn decisions for this frame, from the step's outputs."""
        self._frame_index = frame.index
        decisions: list[Decision] = self._follow(tracks)
        iou = None  # [N, M] mask IoU of tracks and detections, for the jump check and matching
        if detections is not None and len(detections):
            iou = (mask_iou(tracks.masks, detections.masks).cpu().numpy() if tracks is not None and tracks.obj_ids
                   else np.zeros((0, len(detections)), dtype=np.float32))
        self._jumped = self._find_jumps(tracks, detections, iou)
        self._paired = {}
        self._detected = detections is not None
        self._matched_iou, self._went_lost = [], 0
        if iou is not None:
            decisions += self._match(tracks, detections, iou)
        return decisions

    def association_evidence(self) -> AssociationEvidence:
        """What association measured on the current frame (``engine.interfaces.ReportsAssociation``): the
        mask IoU of every detection-track pair it made (re-acquired pairs included, at the mask IoU that
        was too low to match them), the spawn threshold, and the tracks that went out of sight."""
        return AssociationEvidence(matched_iou=tuple(self._matched_iou), score_threshold=self.config.spawn_conf,
                                   went_lost=self._went_lost)

    def retire(self, frame: Frame, tracks: Tracks | None) -> list[Decision]:
        """Retire decisions, read from the tracks after this frame's prompts were applied."""
        current: dict[int, _Output] = {}
        if tracks is not None:
            scores = tracks.scores.reshape(-1).tolist()
            for i, obj_id in enumerate(tracks.obj_ids):
                current[obj_id] = _Output(logits=tracks.logits[i], score=scores[i])
        decisions: list[Decision] = self._reidentify(frame, tracks, current)
        for obj_id in sorted(self._jumped & current.keys()):
            decisions.append(self._retire(current, obj_id, RetireReason.LOST))
            self.counters.retired += 1
        return decisions + self._drop_duplicates(current) + self._update_lifecycle(current)

    def resolve(self, frame: Frame, detections: Detections | None, tracks: Tracks | None) -> Instances:
        """The frame's instances: the visible tracks, overlaps resolved by their smoothed confidence."""
        if tracks is None:
            return Instances.empty(frame.height, frame.width, device=frame.image.device)
        states = [self.tracks[i] for i in tracks.obj_ids]
        classes = [int(np.argmax(s.class_scores)) for s in states]
        hide = self.config.hide_unconfirmed_after
        shown = [hide is None or s.origin is Origin.USER or s.unmatched < hide for s in states]
        weight = self.config.detector_mask_weight
        evidence = None
        if weight > 0 and detections is not None and self._paired:
            evidence = [detections.masks[self._paired[i]] if i in self._paired else None for i in tracks.obj_ids]
        instances = resolve_tracks(
            tracks, size=(frame.height, frame.width), device=frame.image.device,
            weights=[max(s.score, 1e-3) for s in states], scores=[s.score for s in states], class_ids=classes,
            labels=[self.names[c] if c < len(self.names) else str(c) for c in classes], shown=shown,
            detector_masks=evidence, detector_weight=weight)
        ids, boxes = instances.ids.tolist(), instances.boxes.tolist()
        self._note_visibility(ids)
        for obj_id, box in zip(ids, boxes):
            self.tracks[obj_id].last_box = tuple(box)
        if self.reid is not None:
            self.reid.observe(self._sightings(frame, tracks, ids, boxes), time=_seconds(frame))
        return instances

    def _note_visibility(self, shown: list[int]) -> None:
        """Each track's run of frames among the instances (``visible``, ``visible_since``)."""
        shown_now = set(shown)
        for obj_id, state in self.tracks.items():
            if obj_id in shown_now and not state.visible:
                state.visible_since = self._frame_index
            state.visible = obj_id in shown_now
            state.seen |= state.visible

    # -- association ----------------------------------------------------------------------------

    def _follow(self, tracks: Tracks | None) -> list[Decision]:
        """Forget objects gone from the tracker (a user removed them); adopt those association did not
        start (a user added them), classless, as the user's."""
        ids = list(tracks.obj_ids) if tracks is not None else []
        present = set(ids)
        for obj_id in [i for i in self.tracks if i not in present]:
            del self.tracks[obj_id]
            if self.reid is not None:
                self.reid.retired(obj_id, lost=False)
        adopted: list[Decision] = []
        for obj_id in ids:
            if obj_id not in self.tracks:
                self.tracks[obj_id] = TrackState(id=obj_id, born=self._frame_index,
                                                 class_scores=np.zeros(max(1, len(self.names))), score=0.0,
                                                 origin=Origin.USER)
                self._next_id = max(self._next_id, obj_id + 1)
                self.counters.adopted += 1
                adopted.append(Adopt(obj_id, Origin.USER))
        return adopted

    def _match(self, tracks: Tracks | None, dets: Detections, iou: np.ndarray) -> list[Decision]:
        """Two stages, then spawning. Stage 1 pairs detections and tracks by mask IoU. Stage 2 pairs
        what is left by box IoU between the detection and where the track is (its mask's box) or was
        last seen (its last box): a track that drifted or jumped off its object, or lost it behind an
        occluder, keeps its id and is re-prompted. Confident detections left over spawn tracks. ``iou``:
        [N, M] mask IoU of the tracks and detections (rows of jumped tracks are zeroed here)."""
        ids = list(tracks.obj_ids) if tracks is not None else []
        classes, boxes = dets.class_ids.tolist(), dets.boxes.float().cpu()
        near = self._near_last_box(ids, boxes)  # [N, M]: stage 1's tie-break, stage 2's "was last seen"
        # A track about to be retired as jumped claims no detection: the track it jumped onto does.
        jumped = [t for t, obj_id in enumerate(ids) if obj_id in self._jumped]
        iou[jumped], near[jumped] = 0.0, 0.0
        pairs = [p for p in self._pair_by_masks(ids, iou, classes, near) if p[0] not in self._jumped]
        pairs += self._pair_by_boxes(tracks, pairs, classes, boxes, near)
        scores = dets.scores.tolist()
        decisions: list[Decision] = []
        row = {obj_id: t for t, obj_id in enumerate(ids)}
        self._matched_iou = [float(iou[row[obj_id], d]) if obj_id in row else 0.0 for obj_id, d, _ in pairs]
        for obj_id, d, kind in pairs:
            self._observe(obj_id, classes[d], scores[d])
            if kind != "match":
                reason = RepromptReason.DRIFT if kind == "drift" else RepromptReason.REACQUIRE
                decisions.append(Reprompt(obj_id, _box(boxes[d]), reason))
                if kind == "drift":
                    self.counters.reprompted += 1
                else:
                    self.counters.reacquired += 1
            self._paired[obj_id] = d
        paired = {d for _, d, _ in pairs}
        fresh = [d for d in np.argsort(scores)[::-1].tolist()  # most confident first
                 if d not in paired and scores[d] >= self.config.spawn_conf
                 and not (iou.shape[0] and iou[:, d].max() >= self.config.spawn_max_overlap)]
        room = self.config.max_tracks - len(self.tracks)
        for d in self._confirmed(fresh, boxes)[:max(0, room)]:
            spawn = self._spawn(classes[d], scores[d], boxes[d])
            self._paired[spawn.obj_id] = d
            decisions.append(spawn)
        return decisions

    def _pair_by_masks(self, ids: list[int], iou: np.ndarray,  # [N, M]
                       classes: list[int], near: np.ndarray) -> list[tuple[int, int, str]]:
        """Stage 1: (track id, detection, "match" | "drift") by optimal assignment on mask IoU plus
        ``last_seen_weight`` times ``near`` [N, M] (box IoU with where each track was last seen): a
        track whose memory sent its mask onto a neighbour keeps the detection where it was, and the
        other track there goes on to stage 2 and finds its own object."""
        cfg = self.config
        if not ids:
            return []
        # A pair that agrees (IoU >= reprompt_iou) needs no class agreement: classes flicker. A weaker
        # pair would re-prompt the track onto the detection, moving its identity: only a detection of
        # the track's own class may do that.
        track_class = np.array([self._class_of(i) if i in self.tracks and self.tracks[i].matches
                                else -1 for i in ids])
        other = (track_class[:, None] != np.array(classes)[None, :]) & (track_class[:, None] >= 0)
        iou = np.where(other & (iou < cfg.reprompt_iou), 0.0, iou)
        chosen = _assign(iou + cfg.last_seen_weight * near, 0.0)
        return [(ids[t], d, "drift" if iou[t, d] < cfg.reprompt_iou else "match")
                for t, d in chosen if iou[t, d] >= cfg.match_iou]

    def _near_last_box(self, ids: list[int], boxes: torch.Tensor) -> np.ndarray:
        """[N, M] box IoU of each track's last seen box with each detection's box (0 where none)."""
        near = np.zeros((len(ids), len(boxes)), dtype=np.float32)
        known = [k for k, i in enumerate(ids) if i in self.tracks and self.tracks[i].last_box is not None]
        if known and len(boxes):
            last = torch.tensor([self.tracks[ids[k]].last_box for k in known], dtype=torch.float32)
            near[known] = np.nan_to_num(box_iou(last, boxes).numpy(), nan=0.0)
        return near

    def _pair_by_boxes(self, tracks: Tracks | None, pairs: list[tuple[int, int, str]], classes: list[int],
                       boxes: torch.Tensor, near: np.ndarray) -> list[tuple[int, int, str]]:
        """Stage 2: tracks and detections stage 1 left, paired by box IoU with where each track is (its
        mask's box; an empty mask overlaps nothing) or was last seen (``near``), the better of the two,
        within one class: (track id, detection, "reacquire"). Where it was counts even while its mask
        shows something: a mask that jumped to another object (the memory mistook one object for
        another) shows where the track is not."""
        paired_tracks = {obj_id for obj_id, _, _ in pairs}
        paired_dets = {d for _, d, _ in pairs}
        ids = list(tracks.obj_ids) if tracks is not None else []
        left = [t for t, obj_id in enumerate(ids) if obj_id not in paired_tracks and obj_id not in self._jumped]
        left_dets = [d for d in range(len(classes)) if d not in paired_dets]
        if not left or not left_dets:
            return []
        known = [ids[t] for t in left]
        now = box_iou(mask_boxes(tracks.masks[left]).cpu(), boxes[left_dets]).numpy()
        overlap = np.fmax(near[np.ix_(left, left_dets)], now)  # fmax: a NaN (zero-area box) loses
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

    def _observe(self, obj_id: int, class_id: int, score: float) -> None:
        state = self.tracks[obj_id]
        a = self.config.smoothing
        state.class_scores *= 1.0 - a
        state.class_scores[class_id] += a * score
        state.score = (1.0 - a) * state.score + a * score
        state.matches += 1
        state.unmatched = 0
        state.lost = 0

    def _spawn(self, class_id: int, score: float, box: torch.Tensor) -> Spawn:
        obj_id = self._next_id
        self._next_id += 1
        class_scores = np.zeros(max(len(self.names), class_id + 1), dtype=np.float64)
        class_scores[class_id] = score
        self.tracks[obj_id] = TrackState(id=obj_id, born=self._frame_index, class_scores=class_scores,
                                         score=score, matches=1)
        self.counters.spawned += 1
        if self.reid is not None:
            self.reid.spawned(obj_id)
        return Spawn(obj_id, class_id=class_id, score=score, box=_box(box))

    # -- lifecycle ------------------------------------------------------------------------------

    def _find_jumps(self, tracks: Tracks | None, detections: Detections | None,
                    iou: np.ndarray | None) -> set[int]:
        """Tracks shown before but not on the last frame (gone, hidden or unconfirmed) whose mask now
        lies ``return_overlap`` inside the mask of a track shown on the last frame, of their class or
        with no detection of their own class confirming them there: the memory took that track's object
        for its own, which is elsewhere (out of the frame, hidden). They are retired as lost, into the
        re-identification gallery, for when their own object comes back; until then they claim no
        detection. A user's track is never one of them. ``iou``: [N, M] mask IoU of the tracks
        and ``detections``, None without detections."""
        if tracks is None or len(tracks.obj_ids) < 2:
            return set()
        states = [self.tracks.get(i) for i in tracks.obj_ids]
        gone = np.array([s is not None and s.gone and s.origin is Origin.DETECTOR for s in states])
        shown = np.array([s is not None and s.visible for s in states])
        if not gone.any() or not shown.any():
            return set()
        scores = tracks.scores.reshape(-1)
        inside = _containment((tracks.logits > 0) & (scores > 0)[:, None, None])  # [N, N]
        # A look-alike (same class) is a jump; inside a track of another class it is one unless a
        # detection of its own class confirms it there (a bag a person carries, inside the person's mask).
        cls = np.array([self._class_of(s.id) if s is not None else -1 for s in states])
        same = cls[gone][:, None] == cls[shown][None, :]
        confirmed = np.zeros(len(states), dtype=bool)
        if iou is not None:
            own = cls[:, None] == detections.class_ids.cpu().numpy()[None, :]
            confirmed = ((iou >= self.config.match_iou) & own).any(1)
        jumped = ((inside[np.ix_(gone, shown)] >= self.config.return_overlap)
                  & (same | ~confirmed[gone][:, None])).any(axis=1)
        return {obj_id for obj_id, j in zip(np.array(tracks.obj_ids)[gone].tolist(), jumped.tolist()) if j}

    def _drop_duplicates(self, current: dict[int, _Output]) -> list[Decision]:
        """Retire all but one of any tracks whose current masks overlap by ``duplicate_iou``: keep a
        user's track, else the one shown on the last frame and for longer, else the one matched this
        frame, else the one with more matched detections, else the older. A loser shown before but not
        on the last frame is retired as lost (``_find_jumps`` says why). Two of a user's tracks are both
        kept: the user asked for each."""
        ids = [i for i, c in current.items() if c.score > 0]
        if len(ids) < 2:
            return []
        masks = torch.stack([current[i].logits > 0 for i in ids])  # [N, h, w] low-res
        iou = mask_iou(masks, masks).cpu().numpy()
        np.fill_diagonal(iou, 0.0)
        states = {i: self.tracks[i] for i in ids}
        # Among tracks not shown on the last frame, an old run of shown frames says nothing: 0 for all.
        rank = {i: (s.origin is Origin.USER, s.visible, -s.visible_since if s.visible else 0, i in self._paired,
                    s.matches, -i) for i, s in states.items()}
        decisions: list[Decision] = []
        for a, b in zip(*np.nonzero(np.triu(iou >= self.config.duplicate_iou))):
            first, second = ids[a], ids[b]
            if first in current and second in current:
                loser = states[min(first, second, key=rank.__getitem__)]
                if loser.origin is Origin.USER:
                    continue
                reason = RetireReason.LOST if loser.gone else RetireReason.DUPLICATE
                decisions.append(self._retire(current, loser.id, reason))
                self._paired.pop(loser.id, None)
                self.counters.merged += 1
        return decisions

    def _retire(self, current: dict[int, _Output], obj_id: int, reason: RetireReason) -> Retire:
        self.tracks.pop(obj_id, None)
        current.pop(obj_id, None)
        if self.reid is not None:
            self.reid.retired(obj_id, lost=reason is RetireReason.LOST)
        return Retire(obj_id, reason)

    # -- re-identification ------------------------------------------------------------------------

    def _reidentify(self, frame: Frame, tracks: Tracks | None, current: dict[int, _Output]) -> list[Decision]:
        """Tracks spawned by this policy, on their first frame with a usable embedding, looked up in the
        gallery of lost tracks; a match goes on under the retired id from this frame."""
        if self.reid is None or tracks is None or tracks.embeddings is None:
            return []
        rows = [i for i, obj_id in enumerate(tracks.obj_ids) if current[obj_id].score > 0 and obj_id not in self._jumped
                and obj_id in self.tracks and self.tracks[obj_id].origin is Origin.DETECTOR]
        boxes = mask_boxes(tracks.masks[rows]).tolist() if rows else []
        visible = [(tracks.obj_ids[i], box) for i, box in zip(rows, boxes) if box[2] > box[0]]
        sightings = self._sightings(frame, tracks, [i for i, _ in visible], [b for _, b in visible])
        decisions: list[Decision] = []
        for spawned, old, similarity in self.reid.lookup(sightings, time=_seconds(frame)):
            if old in self.tracks:  # the id is taken again (a user's prompt under it): keep the new one
                continue
            state = self.tracks.pop(spawned)
            state.id = old
            self.tracks[old] = state
            current[old] = current.pop(spawned)
            if spawned in self._paired:
                self._paired[old] = self._paired.pop(spawned)
            self.reid.renamed(spawned, old)
            self.counters.reidentified += 1
            decisions.append(Reidentify(old, spawned_id=spawned, similarity=similarity,
                                        mask=tracks.masks[tracks.obj_ids.index(spawned)]))
        return decisions

    def _sightings(self, frame: Frame, tracks: Tracks | None, ids: list[int],
                   boxes: list[list[float]]) -> list[Sighting]:
        """The visible tracks ``ids`` (boxes in frame pixels) with their embeddings and pointers."""
        if tracks is None or tracks.embeddings is None or not ids:
            return []
        row = {obj_id: i for i, obj_id in enumerate(tracks.obj_ids)}
        take = [row[i] for i in ids]
        embeddings = tracks.embeddings[take].float().cpu().numpy()
        pointers = tracks.pointers[take].float().cpu().numpy() if tracks.pointers is not None else None
        scores = tracks.scores.reshape(-1)[take].tolist()
        h, w = frame.height, frame.width
        out = []
        for k, (obj_id, box) in enumerate(zip(ids, boxes)):
            # An object cut by the frame's edge shows only part of itself: not a good view of it.
            inside = box[0] > 1 and box[1] > 1 and box[2] < w - 1 and box[3] < h - 1
            out.append(Sighting(obj_id=obj_id, class_id=self._class_of(obj_id), box=tuple(box),
                                embedding=embeddings[k], pointer=None if pointers is None else pointers[k],
                                whole=inside and scores[k] > 0))
        return out

    def _update_lifecycle(self, current: dict[int, _Output]) -> list[Decision]:
        decisions: list[Decision] = []
        for obj_id in list(current):
            state = self.tracks[obj_id]
            if obj_id in self._paired:
                continue
            if self._detected:
                state.unmatched += 1
            state.lost = state.lost + 1 if current[obj_id].score <= 0 else 0
            self._went_lost += state.lost == 1
            if state.origin is Origin.USER:
                continue  # a user's track stays until the user removes it
            limit = self.config.retire_unmatched_after
            if state.lost >= self.config.retire_after:
                decisions.append(self._retire(current, obj_id, RetireReason.LOST))
            elif limit is not None and state.unmatched >= limit:
                decisions.append(self._retire(current, obj_id, RetireReason.UNCONFIRMED))
            else:
                continue
            self.counters.retired += 1
        return decisions


def _seconds(frame: Frame) -> float:
    """The frame's stream time: its presentation time, else its capture time."""
    return frame.pts if frame.pts is not None else frame.capture_time


def _box(box: torch.Tensor) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box.tolist())
    return x1, y1, x2, y2


def _containment(masks: torch.Tensor) -> np.ndarray:
    """[N, N] float: the share of mask i's pixels inside mask j (0 for an empty mask i; 0 on the
    diagonal). ``masks``: [N, h, w] bool."""
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    share = (inter / flat.sum(1, keepdim=True).clamp_min(1.0)).cpu().numpy()
    np.fill_diagonal(share, 0.0)
    return share


def _assign(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (track, detection) maximising total IoU, each at least ``threshold``."""
    if iou.size == 0:
        return []
    iou = np.nan_to_num(iou, nan=0.0)  # a zero-area box (clipped at the frame edge) overlaps nothing
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(r, c) for r, c in zip(rows.tolist(), cols.tolist()) if iou[r, c] >= threshold]
