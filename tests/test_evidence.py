"""FrameEvidence on FrameResult: filled only when asked, from the stages' own outputs and the frame's
decisions, and what association measured (the data engine's uncertainty score reads it)."""

from __future__ import annotations

import pytest
import torch

from engine.fuse import Fuser, FuserConfig, TracksOnly
from engine.pipeline import Pipeline
from engine.processor import FrameProcessor, SharedStages, Stream
from engine.types import Detections, Frame, FrameEvidence, Reprompt, Retire, Spawn
from tests.doubles import ArraySource, MaskTracker, ScriptedDetector, SquareDetector, moving_square_frames

H, W = 96, 128
NAMES = ("square",)


def _square(x: int, y: int = 10, side: int = 30, score: float = 0.9) -> Detections:
    mask = torch.zeros((1, H, W), dtype=torch.bool)
    mask[0, y:y + side, x:x + side] = True
    return Detections(boxes=torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32),
                      scores=torch.tensor([score]), class_ids=torch.tensor([0]), masks=mask, names=NAMES)


class _Harness:
    """The real processor with evidence on, a scripted detector, the tracker double and a Fuser."""

    def __init__(self, config: FuserConfig, *, evidence: bool = True, fusion=None) -> None:
        self.tracker = MaskTracker(H, W)
        self.fuser = fusion if fusion is not None else Fuser(config, names=NAMES)
        self.detector = ScriptedDetector(NAMES)
        self.stream = Stream(ArraySource(moving_square_frames(1)), tracker=self.tracker, fusion=self.fuser)
        self.processor = FrameProcessor(SharedStages(detector=self.detector), device=torch.device("cpu"),
                                        evidence=evidence)
        self.index = 0

    def step(self, detections: Detections | None):
        self.detector.next = detections
        frame = Frame(image=torch.zeros((H, W, 3), dtype=torch.uint8), index=self.index, pts=None, capture_time=0.0)
        self.index += 1
        (result,) = self.processor.process([(self.stream, frame)])
        return result


def test_no_evidence_unless_asked():
    harness = _Harness(FuserConfig(spawn_after=1), evidence=False)
    assert harness.step(_square(10)).evidence is None
    results = list(Pipeline(ArraySource(moving_square_frames(3)), detector=SquareDetector(),
                            tracker=MaskTracker(H, W), fuser=Fuser(names=NAMES)))
    assert all(r.evidence is None for r in results)


def test_evidence_holds_the_stages_outputs_and_counts_the_spawns():
    harness = _Harness(FuserConfig(spawn_after=1, spawn_conf=0.6))
    result = harness.step(_square(10, score=0.7))
    ev = result.evidence
    assert isinstance(ev, FrameEvidence) and ev.frame == result.index == 0
    assert ev.spawns == 1 == sum(isinstance(d, Spawn) for d in result.decisions)
    assert ev.reprompts == 0 and ev.losses == 0
    assert ev.detection_scores.tolist() == pytest.approx([0.7]) and ev.score_threshold == 0.6
    assert ev.mask_logits.shape == (1, H, W) and ev.object_scores.shape == (1,)
    assert bool((ev.mask_logits[0] > 0).eq(result.instances.masks[0]).all())  # the final track's own logits
    assert ev.matched_iou.numel() == 0  # a spawn is not a match


def test_a_matched_pair_reports_its_mask_iou():
    harness = _Harness(FuserConfig(spawn_after=1, reprompt_iou=0.5))
    harness.step(_square(10))
    ev = harness.step(_square(16)).evidence  # the track's mask stays at x=10; the detection moved 6 px
    expected = (30 - 6) * 30 / ((30 + 6) * 30)  # two 30x30 squares 6 px apart
    assert ev.matched_iou.tolist() == pytest.approx([expected])
    assert ev.reprompts == 0 and ev.spawns == 0


def test_a_drift_reprompt_is_counted_and_its_low_iou_reported():
    harness = _Harness(FuserConfig(spawn_after=1, reprompt_iou=0.9))
    harness.step(_square(10))
    result = harness.step(_square(16))
    assert sum(isinstance(d, Reprompt) for d in result.decisions) == 1 == result.evidence.reprompts
    assert result.evidence.matched_iou.tolist() == pytest.approx([24 / 36])


def test_a_track_going_out_of_sight_counts_once_then_its_retirement_counts():
    harness = _Harness(FuserConfig(spawn_after=1, retire_after=3, retire_unmatched_after=None))
    harness.step(_square(10))
    harness.tracker.hidden.add(1)
    empty = Detections.empty(H, W, names=NAMES)
    losses = [harness.step(empty).evidence.losses for _ in range(3)]
    assert losses == [1, 0, 1]  # went out of sight on the first frame; retired on the third
    assert harness.fuser.counters.retired == 1


def test_frames_without_a_detector_pass_have_no_detection_scores():
    harness = _Harness(FuserConfig(spawn_after=1))
    harness.step(_square(10))
    ev = harness.step(None).evidence  # the detector skipped this frame (detect_every)
    assert ev.detection_scores.numel() == 0 and ev.mask_logits.shape[0] == 1


def test_a_fusion_that_reports_no_association_gives_the_defaults():
    harness = _Harness(FuserConfig(), fusion=TracksOnly())
    harness.stream.prompts.track(box=(10, 10, 40, 40))
    ev = harness.step(None).evidence
    assert ev.matched_iou.numel() == 0 and ev.score_threshold == 0.5
    assert ev.reprompts == 1  # the user's prompt is a correction the engine was given


def test_a_sink_that_wants_evidence_turns_it_on():
    class EvidenceSink:
        wants_overlay = False
        wants_evidence = True

        def __init__(self) -> None:
            self.seen: list[FrameEvidence | None] = []

        def write(self, result) -> None:
            self.seen.append(result.evidence)

        def close(self) -> None:
            pass

    sink = EvidenceSink()
    results = list(Pipeline(ArraySource(moving_square_frames(4)), detector=SquareDetector(),
                            tracker=MaskTracker(H, W), fuser=Fuser(FuserConfig(spawn_after=1), names=NAMES),
                            sinks=[sink]))
    assert len(sink.seen) == 4 and all(isinstance(e, FrameEvidence) for e in sink.seen)
    assert [e.frame for e in sink.seen] == [r.index for r in results]
    assert sink.seen[0].spawns == 1 and not any(isinstance(d, Retire) for r in results for d in r.decisions)
