"""Overlapped stages (engine.overlap): the detector of the next frame on its own thread while this one is
tracked. The results must be the serial loop's, in order; the times must add up; failures on either
thread must surface at the frame they belong to."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import torch

from engine.detect import DetectorConfig
from engine.errors import ConfigError, SourceError
from engine.options import RunOptions
from engine.overlap import ThreadSplit
from engine.pipeline import Pipeline
from engine.types import Detections
from tests.doubles import ArraySource, MaskTracker, SquareDetector, moving_square_frames


class SlowSquareDetector(SquareDetector):
    """``SquareDetector`` that sleeps ``delay_s`` a call and records the frames and threads it ran on."""

    def __init__(self, delay_s: float = 0.0, *, fail_on: int | None = None) -> None:
        self.delay_s, self.fail_on = delay_s, fail_on
        self.calls: list[tuple[int, str, int]] = []  # (square's x, thread name, torch threads)

    def __call__(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        time.sleep(self.delay_s)
        out = super().__call__(images)
        for dets in out:
            self.calls.append((int(dets.boxes[0, 0]) if len(dets) else -1, threading.current_thread().name,
                               torch.get_num_threads()))
        if self.fail_on is not None and len(self.calls) > self.fail_on:
            raise RuntimeError("the detector failed (test)")
        return out


H, W = 96, 128  # moving_square_frames' size


class SlowTracker(MaskTracker):
    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(H, W)
        self.delay_s = delay_s

    def step(self, image):
        time.sleep(self.delay_s)
        return super().step(image)


def _run(frames, *, overlap: ThreadSplit | None, detector=None, tracker=None, **kwargs):
    detector = detector if detector is not None else SlowSquareDetector()
    tracker = tracker if tracker is not None else MaskTracker(H, W)
    pipe = Pipeline(ArraySource(frames), detector=detector, tracker=tracker, overlap=overlap, **kwargs)
    return list(pipe), detector, tracker


def _summary(results):
    return [(r.frame.index, r.instances.ids.tolist(), [b.round().tolist() for b in r.instances.boxes],
             [type(d).__name__ for d in r.decisions]) for r in results]


@pytest.mark.parametrize("detect_every", [1, 2, 3])
def test_results_are_the_serial_loops_in_order(detect_every):
    frames = moving_square_frames(9)
    serial, serial_det, _ = _run(frames, overlap=None, detect_every=detect_every)
    overlapped, det, _ = _run(frames, overlap=ThreadSplit(detector=1, tracker=1), detect_every=detect_every)
    assert [r.frame.index for r in overlapped] == list(range(9))
    assert _summary(overlapped) == _summary(serial)
    # the detector saw the same frames (every k-th), on its own thread with its own torch threads
    assert [c[0] for c in det.calls] == [c[0] for c in serial_det.calls]
    assert len(det.calls) == len(range(0, 9, detect_every))
    assert all(name.startswith("streamseg-detect") and threads == 1 for _, name, threads in det.calls)


def test_detection_runs_beside_tracking_and_the_times_add_up():
    """A 60 ms detector beside an 80 ms tracker: from the second frame on, the detector ran while the
    previous frame was tracked (overlapped > 0), and each frame's stages sum to its total plus the
    overlapped part (the detect stage is the detector's own run, not the wait for it)."""
    results, _, _ = _run(moving_square_frames(6), overlap=ThreadSplit(detector=1, tracker=1),
                         detector=SlowSquareDetector(0.06), tracker=SlowTracker(0.08))
    assert all(r.times.detect >= 60.0 for r in results)
    assert sum(r.times.overlapped > 0 for r in results[1:]) >= 3  # the next frame was decoded in time
    for r in results:
        own = sum(r.times[s] for s in ("detect", "segment", "track", "fuse", "refine", "render"))
        # the clock's marks end before the call does, and a frame whose detection was still queued
        # when its call began waited longer than the detector ran: the stages never exceed this sum
        assert own <= r.times.total + r.times.overlapped + 1.0
        assert r.times.overlapped <= r.times.detect
    # nothing ran before the first frame, and no detection overlaps more than the previous frame's call
    # (5 ms: the hand-off between the threads, against a 60 ms detector)
    assert results[0].times.overlapped < 5.0
    for before, r in zip(results, results[1:]):
        assert r.times.overlapped <= before.times.total + 5.0


def test_max_frames_is_kept_and_no_frame_is_detected_beyond_it():
    det = SlowSquareDetector()
    results, det, _ = _run(moving_square_frames(9), overlap=ThreadSplit(1, 1), detector=det, max_frames=4)
    assert [r.frame.index for r in results] == [0, 1, 2, 3] and len(det.calls) == 4


def test_the_callers_torch_threads_are_the_trackers_share_while_iterating_and_restored_after():
    before = torch.get_num_threads()
    seen = []

    class Recording(MaskTracker):
        def step(self, image):
            seen.append(torch.get_num_threads())
            return super().step(image)

    _run(moving_square_frames(3), overlap=ThreadSplit(detector=1, tracker=3), tracker=Recording(H, W))
    assert seen == [3, 3, 3] and torch.get_num_threads() == before


def test_a_detector_error_surfaces_at_its_frame_after_the_frames_before_it():
    pipe = Pipeline(ArraySource(moving_square_frames(8)), detector=SlowSquareDetector(fail_on=2),
                    tracker=MaskTracker(H, W), overlap=ThreadSplit(1, 1))
    got = []
    with pytest.raises(RuntimeError, match="the detector failed"):
        for result in pipe:
            got.append(result.frame.index)
    assert got == [0, 1]


def test_a_source_error_met_while_reading_ahead_comes_after_the_frames_decoded_before_it():
    frames = moving_square_frames(8)
    pipe = Pipeline(ArraySource(frames, fail_after=5), detector=SlowSquareDetector(), tracker=SlowTracker(0.02),
                    overlap=ThreadSplit(1, 1))
    got = []
    with pytest.raises(SourceError, match="stream broke at frame 5"):
        for result in pipe:
            got.append(result.frame.index)
    assert got == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("cores, detector, expected", [
    (1, None, (1, 1)),  # one core: both sides still get a thread (the OS shares it)
    (2, None, (1, 1)),
    (4, None, (1, 3)),
    (8, None, (2, 6)),
    (16, None, (4, 12)),
    (4, 2, (2, 2)),
])
def test_thread_split(cores, detector, expected):
    split = ThreadSplit.of(cores, detector=detector)
    assert (split.detector, split.tracker) == expected


@pytest.mark.parametrize("build, message", [
    pytest.param(lambda: ThreadSplit(0, 1), "detector threads must be a positive integer", id="no-detector-threads"),
    pytest.param(lambda: ThreadSplit(1, True), "tracker threads must be a positive integer", id="bool-threads"),
    pytest.param(lambda: ThreadSplit.of(4, detector=-1), "detector threads must be", id="negative-split"),
    pytest.param(lambda: Pipeline(ArraySource(moving_square_frames(2)), tracker=MaskTracker(H, W),
                                  overlap=ThreadSplit(1, 1)), "need a detector", id="no-detector"),
    pytest.param(lambda: RunOptions(source="x.mp4", overlap=True, tracker="none"), "needs both", id="no-tracker"),
    pytest.param(lambda: DetectorConfig(threads=0), "threads=0 must be a positive integer", id="detector-config"),
])
def test_bad_overlap_settings_are_one_clear_error(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_a_multi_stream_loop_refuses_overlap_before_loading_models():
    from engine.app import load_models

    with pytest.raises(ConfigError, match="one stream"):
        load_models(RunOptions(source="x.mp4", overlap=True))


def test_overlap_off_the_cpu_is_refused_by_the_pipeline_and_before_models_load(monkeypatch):
    """On CUDA the networks already run beside the host: the pipeline refuses, and the CLI's builder
    refuses before loading any model (no GPU is needed to check either)."""
    from engine import app, pipeline

    cuda = torch.device("cuda")
    monkeypatch.setattr(pipeline, "resolve_device", lambda name: cuda)
    with pytest.raises(ConfigError, match="device 'cpu'"):
        Pipeline(ArraySource(moving_square_frames(2)), detector=SquareDetector(), tracker=MaskTracker(H, W),
                 device="cuda", overlap=ThreadSplit(1, 1))
    with pytest.raises(ConfigError, match="--overlap .* is for the CPU"):
        app._thread_split(RunOptions(source="x.mp4", overlap=True), cuda, app.BuiltPipeline(pipeline=None))


def test_checkpoint_files_overlapped_give_the_serial_runs_results(user_checkpoints):
    """The user's path: YOLOv8n-seg and SAM 2 checkpoint files (not flagged random) through the CLI's
    builder with --overlap: the detector's ONNX Runtime session gets the detector's share of the cores,
    and the instances, ids and decisions are the serial run's, frame for frame."""
    from engine.app import build_pipeline

    detector_pt, tracker_pt = user_checkpoints.detector, user_checkpoints.tracker
    runs = {}
    for overlap in (False, True):
        opts = RunOptions(source="synthetic:seed=1,frames=4,size=96x64", device="cpu", imgsz=64,
                          weights=str(detector_pt), backend="onnxruntime", tracker_size=64,
                          tracker_weights=str(tracker_pt), tracker_encoder="torch", overlap=overlap)
        built = build_pipeline(opts)
        pipeline = built.pipeline
        assert not pipeline.detector.random_weights and not pipeline.tracker.random_weights
        if overlap:
            split = ThreadSplit.of()
            assert pipeline.overlap == split and any("overlapped stages" in note for note in built.notes)
            options = pipeline.detector.backend.session.get_session_options()
            assert options.intra_op_num_threads == split.detector
        runs[overlap] = [(r.frame.index, r.instances.ids.tolist(), r.instances.masks.sum((1, 2)).tolist(),
                          [type(d).__name__ for d in r.decisions]) for r in pipeline]
    assert runs[True] == runs[False] and len(runs[True]) == 4
