"""The fusion policy's knobs, with the reason for each default."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ConfigError


@dataclass(frozen=True, slots=True)
class FuserConfig:
    # Association: a detection and a track are the same object when their masks overlap this much
    # (optimal assignment, pairs below the threshold stay unmatched).
    match_iou: float = 0.3
    # The assignment's cost adds this weight times the box IoU of the detection with where the track was
    # on the last frame to the mask IoU with where the tracker says it is now: two cues of where the
    # object is, one from the tracker's memory and one from motion being small between frames. A memory
    # that mistakes a neighbour for its object moves the mask, not the last box. On the closed loop's
    # held-out scenes (benchmarks/RESULTS.md, "The closed loop, fourth round") HOTA was 0.43 at 0.001 (a
    # tie-break only), 0.49 at 0.5, 0.55 at 1.0 and 0.54 at 2.0; on two of its training scenes 0.54,
    # 0.61 and 0.62 at 0.001, 1.0 and 2.0.
    last_seen_weight: float = 1.0
    # A matched track whose mask agrees with its detection less than this has drifted: it is
    # re-prompted from the detection's box, on this frame. Tuned by benchmarks/fusion_policy.py
    # (2026-11-24, 6 objects, drift 0.5-1.5 px/frame, jitter 2 px): 0.6 lets masks decay to J&F
    # 0.87-0.89; 0.7 holds 0.925-0.94 at 0.7-1.3 re-prompts a frame; 0.8 gains 0.03 for 60% more.
    reprompt_iou: float = 0.7
    # An unmatched detection spawns a track only at this confidence (above the detector's own
    # threshold), so one flickering low-score detection does not start an identity.
    spawn_conf: float = 0.5
    # ... and only where its mask overlaps no tracked object this much (a duplicate of one).
    spawn_max_overlap: float = 0.5
    # At most this many live tracks: the tracker's cost grows with every object, so this bounds the
    # frame time. Spawns beyond it wait (most confident first) until a track retires.
    max_tracks: int = 32
    # ... and only once it has been seen on this many consecutive detection frames (boxes overlapping
    # by reacquire_box_iou). A sliver of an object entering the frame, or one flicker, starts no id;
    # a new object's first frame is the price.
    spawn_after: int = 2
    # A track is retired after this many consecutive frames with a low object score and no matched
    # detection. At 30 fps an id survives 2 s out of sight: SAM 2 keeps a lost object's memory and
    # finds it again when it comes back, and keeping it costs one slot in the batched step. (Objects
    # that swing out of the synthetic scenes stay away 0.7-1.5 s: tests/fuse/test_on_ground_truth.py.)
    retire_after: int = 60
    # A track the detector has not confirmed for this many detection frames is retired even while the
    # tracker still reports it: SAM 2 can lock onto background after its object left. None: never.
    retire_unmatched_after: int | None = 90
    # A lost track (low object score) is re-acquired by a detection whose box overlaps the track's
    # last visible box at least this much (mask IoU cannot match: the track's mask is empty).
    reacquire_box_iou: float = 0.3
    # Two tracks whose masks overlap this much follow one object (a lost track re-acquired onto the
    # wrong object, which the tracker then also finds again): one is retired, keeping a user's track,
    # else the one shown on the last frame and for longer, else the one matched on this frame, else the
    # one with more matched detections, else the older. A loser not shown on the last frame is retired
    # as lost (into the re-identification gallery), the others as duplicates.
    duplicate_iou: float = 0.8
    # A track shown before but not on the last frame whose mask comes back this much inside the mask of
    # a track shown on the last frame (of its class, or with no detection of its own class there: an
    # object inside another, a bag a person carries, stays) has found that track's object, not its own
    # (SAM 2's memory takes a neighbour for the lost object): it is retired as lost, into the
    # re-identification gallery. A share of the returning mask, not an IoU: such a mask often covers only
    # part of the object it jumped onto.
    # On the closed loop's training scenes (fifth round's checkpoints) HOTA went from 0.748 / 0.776
    # without the rule to 0.865 / 0.818 with it (benchmarks/RESULTS.md, "The closed loop, sixth round").
    return_overlap: float = 0.5
    # Class and score smoothing over matched detections: weight of the newest observation.
    smoothing: float = 0.3
    # The final mask of a track matched to a detection on this frame: foreground where
    # (1 - w) * sigmoid(tracker logit) + w * detection mask > 0.5 (late fusion of the two masks'
    # probabilities). 0: the tracker's mask; above 0.5: the detection's. The default keeps SAM 2's mask,
    # finer than YOLO's prototypes for trained weights; a tracker worse than its detector (the closed
    # loop's 10-minute fine-tune: box-prompted IoU 0.66, where the best detection mask per object
    # averages 0.74) wants the detection's (engine.data.synthetic_loop.LOOP_OPTIONS: 1.0).
    detector_mask_weight: float = 0.0
    # A track the detector has not confirmed on this many detection frames in a row stays tracked (its
    # memory goes on; it may be re-acquired) but is left out of the frame's instances. None: always
    # shown while the tracker sees it; 1: shown only on detection frames that confirm it. A user's track
    # is always shown.
    hide_unconfirmed_after: int | None = None

    def __post_init__(self) -> None:
        for name in ("match_iou", "reprompt_iou", "spawn_conf", "spawn_max_overlap", "reacquire_box_iou",
                     "duplicate_iou", "return_overlap", "smoothing", "detector_mask_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"fusion {name} must be in [0, 1], got {value}")
        if not 0.0 <= self.last_seen_weight < float("inf"):
            raise ConfigError(f"fusion last_seen_weight must be finite and >= 0, got {self.last_seen_weight}")
        if self.hide_unconfirmed_after is not None and self.hide_unconfirmed_after < 1:
            raise ConfigError(f"fusion hide_unconfirmed_after must be >= 1 or None, got {self.hide_unconfirmed_after}")
        if self.max_tracks < 1:
            raise ConfigError(f"fusion max_tracks must be >= 1, got {self.max_tracks}")
        if self.spawn_after < 1:
            raise ConfigError(f"fusion spawn_after must be >= 1 detection frame, got {self.spawn_after}")
        if self.retire_after < 1:
            raise ConfigError(f"fusion retire_after must be >= 1 frame, got {self.retire_after}")
        if self.retire_unmatched_after is not None and self.retire_unmatched_after < 1:
            raise ConfigError(f"fusion retire_unmatched_after must be >= 1 or None, got {self.retire_unmatched_after}")
