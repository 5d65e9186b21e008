"""How unsure the engine was on one frame: a score in [0, 1] from what it already computed.

The score ranks frames for labelling (active learning by uncertainty): the frames where the engine is
least sure are the ones a label teaches the most. It is a weighted sum of four cues, each in [0, 1]:

- ``entropy``: the tracker's mask logits near the decision boundary. Per object, the mean binary entropy
  (bits) of ``sigmoid(logit)`` over the object's region (pixels whose logit exceeds ``region_logit``: the
  mask and the soft band around it, so the far background, which is confidently empty, does not dilute
  it). A crisp mask has entropy only along its one-pixel edge; a mask that is unsure where the object
  ends has a wide band of logits near 0. Where the tracker's object scores are known, an object's entropy
  is the larger of that and the binary entropy of ``sigmoid(object score)``: SAM 2 unsure whether the
  object is there at all (a score near 0) is as uncertain as a soft mask, and its mask logits say
  nothing then (SAM 2 blanks the mask of an object it scores absent). Uncertainty sampling (Lewis &
  Gale, SIGIR 1994).
- ``margin``: detection scores near the threshold that decides what the engine does with a detection
  (spawn a track or not): ``1 - |score - threshold| / margin_band``, clipped at 0. A detection just
  above or below the threshold would flip with a slightly different picture. Margin sampling (Scheffer
  et al., IDA 2001).
- ``disagreement``: ``1 - IoU`` of the masks of each detection-track pair that association matched. Two
  different models (YOLOv8-seg and SAM 2) segmenting one object differently means at least one is
  wrong. Query by committee (Seung et al., COLT 1992).
- ``events``: tracks spawned, lost and re-prompted on this frame, ``1 - exp(-count / events_scale)``.
  Each is a decision the engine took because its picture of the scene changed (an object entered, hid,
  or a track drifted): the rare moments the training data lacks. It saturates, because a burst of
  re-prompts on one frame is still one moment.

Per-object cues take the maximum over objects: a frame with one hard object among easy ones is worth
labelling, and a mean would let the easy ones hide it. A frame with no objects and no detections scores
0; objects the engine misses entirely leave no evidence, so this score cannot find them (random frames
in the labelling budget can).

The evidence (``engine.types.FrameEvidence``) is filled by the per-frame processor from values the engine
already holds; it travels on ``FrameResult.evidence`` when a sink asks for it (``wants_evidence``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from engine.errors import ConfigError
from engine.types import FrameEvidence

__all__ = ["FrameEvidence", "UncertaintyScore", "UncertaintyWeights", "mask_entropy", "presence_entropy",
           "uncertainty"]


@dataclass(frozen=True, slots=True)
class UncertaintyWeights:
    """Weights of the four cues (normalised to sum 1, so the score stays in [0, 1]) and their shapes.

    The weights are priors, not tuned: disagreement and mask entropy speak about the masks the engine
    outputs, so they weigh most; the margin speaks about one threshold; events are rare and already
    visible in the other cues on most frames where they happen.
    """

    # Two independent models disagreeing is the most direct sign that a label will correct one of them.
    disagreement: float = 0.35
    # The output masks' own uncertainty; a little below disagreement because SAM's logits are sharp even
    # where it is wrong (a confident mask on the wrong object has low entropy).
    entropy: float = 0.30
    # Detections near the spawn threshold decide whether an object is tracked at all.
    margin: float = 0.15
    # Spawns, losses and re-prompts: scene changes that rarely appear in training data.
    events: float = 0.20
    # Logit above which a pixel is in an object's region for the entropy cue: sigmoid(-4) = 1.8%, so the
    # region is the mask plus its soft band, and the confident background is left out.
    region_logit: float = -4.0
    # A detection this far from the threshold (in score) contributes nothing to the margin cue; 0.15 is
    # the spread of a random YOLO's top scores around 0.5 on one object from frame to frame.
    margin_band: float = 0.15
    # Events at which the cue reaches 1 - 1/e: two events (a spawn and a re-prompt) make a notable frame.
    events_scale: float = 2.0

    def __post_init__(self) -> None:
        cues = (self.disagreement, self.entropy, self.margin, self.events)
        if any(w < 0 or not math.isfinite(w) for w in cues) or sum(cues) <= 0:
            raise ConfigError(f"uncertainty weights must be finite, >= 0 and not all 0, got {cues}")
        if self.margin_band <= 0 or self.events_scale <= 0:
            raise ConfigError(f"uncertainty margin_band and events_scale must be > 0, got {self.margin_band} "
                              f"and {self.events_scale}")


@dataclass(frozen=True, slots=True)
class UncertaintyScore:
    """A frame's score and the cues it was made of (each in [0, 1])."""

    total: float
    entropy: float
    margin: float
    disagreement: float
    events: float

    def as_dict(self) -> dict[str, float]:
        return {f.name: round(getattr(self, f.name), 6) for f in fields(self)}


def mask_entropy(logits: torch.Tensor,  # [N, h, w] float
                 *, region_logit: float = -4.0) -> torch.Tensor:  # -> [N] float32, bits in [0, 1]
    """Mean binary entropy of each object's mask probabilities over its region (logit > region_logit);
    0 for an object with no pixel in its region (absent)."""
    x = logits.float()
    # Binary entropy in nats, computed from logits without log(0): BCE(x, sigmoid(x)) = H(sigmoid(x)).
    ent = F.binary_cross_entropy_with_logits(x, torch.sigmoid(x), reduction="none") / math.log(2.0)
    region = (x > region_logit).float()
    area = region.flatten(1).sum(1)
    return torch.where(area > 0, (ent * region).flatten(1).sum(1) / area.clamp_min(1.0), torch.zeros_like(area))


def presence_entropy(scores: torch.Tensor) -> torch.Tensor:  # [N] object-score logits -> [N] bits in [0, 1]
    """Binary entropy of each object's presence probability ``sigmoid(score)``."""
    x = scores.float()
    return F.binary_cross_entropy_with_logits(x, torch.sigmoid(x), reduction="none") / math.log(2.0)


def uncertainty(evidence: FrameEvidence, weights: UncertaintyWeights = UncertaintyWeights()) -> UncertaintyScore:
    """The frame's uncertainty score (see the module docstring for each cue and its reason)."""
    w = weights
    parts = []
    if evidence.mask_logits.shape[0]:
        per_object = mask_entropy(evidence.mask_logits, region_logit=w.region_logit)
        if evidence.object_scores is not None:
            per_object = torch.maximum(per_object, presence_entropy(evidence.object_scores).to(per_object.device))
        parts.append(per_object.max())
    else:
        parts.append(evidence.mask_logits.new_zeros(()))
    scores = evidence.detection_scores.float()
    if scores.numel():
        closeness = 1.0 - (scores - evidence.score_threshold).abs() / w.margin_band
        parts.append(closeness.clamp_min(0.0).max())
    else:
        parts.append(scores.new_zeros(()))
    iou = evidence.matched_iou.float()
    parts.append((1.0 - iou.clamp(0.0, 1.0)).max() if iou.numel() else iou.new_zeros(()))
    device = evidence.mask_logits.device
    entropy, margin, disagreement = torch.stack([p.float().to(device) for p in parts]).tolist()  # one sync
    count = evidence.spawns + evidence.losses + evidence.reprompts
    events = 1.0 - math.exp(-count / w.events_scale)
    cues = {"entropy": entropy, "margin": margin, "disagreement": disagreement, "events": events}
    total = sum(getattr(w, name) * value for name, value in cues.items())
    total /= w.disagreement + w.entropy + w.margin + w.events
    return UncertaintyScore(total=float(min(max(total, 0.0), 1.0)), **cues)
