import json

import av
import numpy as np
import pytest
import torch

from engine.errors import ConfigError, SinkError, SourceError
from engine.pipeline import Pipeline
from engine.sinks import JsonlWriter, Mp4Writer
from tests.doubles import ArraySource, MaskTracker, SquareDetector, moving_square_frames


def test_results_come_in_order_with_instances_and_stage_times():
    frames = moving_square_frames(12)
    results = list(Pipeline(ArraySource(frames), detector=SquareDetector()))
    assert [r.frame.index for r in results] == list(range(12))
    for i, r in enumerate(results):
        assert len(r.instances) == 1 and r.instances.ids.tolist() == [0]
        assert r.instances.boxes[0].tolist() == [4 + 3 * i, 20, 34 + 3 * i, 50]
        assert r.times.decode == pytest.approx(0.1)
        assert r.times.total >= r.times.detect > 0
        assert r.age_ms >= r.times.total * 0.99
        assert r.overlay is None  # no sink asked for it


def test_sinks_get_every_frame_and_outputs_are_valid(tmp_path):
    frames = moving_square_frames(20)
    sinks = [JsonlWriter(tmp_path / "r.jsonl"), Mp4Writer(tmp_path / "o.mp4", fps=30)]
    pipeline = Pipeline(ArraySource(frames), detector=SquareDetector(), sinks=sinks)
    assert pipeline.run() == 20
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [rec["frame"] for rec in lines] == list(range(20))
    with av.open(str(tmp_path / "o.mp4")) as c:
        decoded = list(c.decode(video=0))
    assert len(decoded) == 20
    # the overlay was rendered: the square's pixels are tinted, not the plain frame colour
    middle = decoded[10].to_ndarray(format="rgb24")[35, 4 + 30 + 15]
    assert not np.allclose(middle, (230, 200, 40), atol=10)


def test_max_frames_stops_early_and_closes_the_source():
    source = ArraySource(moving_square_frames(30))
    pipeline = Pipeline(source, max_frames=5)
    assert pipeline.run() == 5
    assert source.stopping


def test_a_source_failure_keeps_what_was_written(tmp_path):
    """The source breaks after 8 frames: its error reaches the caller, and the 8 results written
    before it are whole JSON lines and a finalised, decodable video."""
    sinks = [JsonlWriter(tmp_path / "r.jsonl"), Mp4Writer(tmp_path / "o.mp4", fps=30)]
    pipeline = Pipeline(ArraySource(moving_square_frames(20), fail_after=8), detector=SquareDetector(),
                        sinks=sinks)
    seen = []
    with pytest.raises(SourceError, match="broke at frame 8"):
        for result in pipeline:
            seen.append(result.frame.index)
    assert seen == list(range(8))
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(8))
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 8


class _FailingSink:
    wants_overlay = False

    def __init__(self):
        self.closed = False

    def write(self, result):
        if result.frame.index == 3:
            raise SinkError("disk full (test)")

    def close(self):
        self.closed = True


def test_a_sink_error_stops_the_run_and_other_sinks_still_close(tmp_path):
    failing = _FailingSink()
    jsonl = JsonlWriter(tmp_path / "r.jsonl")
    pipeline = Pipeline(ArraySource(moving_square_frames(40)), sinks=[jsonl, failing])
    with pytest.raises(SinkError, match="disk full"):
        pipeline.run()
    assert failing.closed and jsonl._file.closed
    for line in (tmp_path / "r.jsonl").read_text().splitlines():
        json.loads(line)  # whole lines only


@pytest.mark.parametrize("kwargs, message", [
    (dict(detect_every=0), "detect_every must be >= 1"),
    (dict(detect_every=3), "needs a tracker"),
    (dict(tracker=object()), "does not offer step"),
    (dict(detector=object()), "does not offer names"),
    (dict(tracker=MaskTracker(96, 128), fuser=object()), "does not offer associate"),
], ids=["detect_every_zero", "detect_every_without_tracker", "not_a_tracker", "not_a_detector",
        "not_a_fusion"])
def test_invalid_configurations_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Pipeline(ArraySource(moving_square_frames(2)), **kwargs)


def test_frames_reach_the_stages_as_tensors_on_the_pipeline_device():
    seen = []

    class Recorder(SquareDetector):
        def __call__(self, images):
            seen.append((images[0].device.type, images[0].dtype, tuple(images[0].shape)))
            return super().__call__(images)

    list(Pipeline(ArraySource(moving_square_frames(2)), detector=Recorder(), device="cpu"))
    assert seen == [("cpu", torch.uint8, (96, 128, 3))] * 2


def test_tracker_work_that_decisions_cause_counts_as_track_not_fuse():
    """The fuser spawns a track on frame 1 (frame 0 warms association up); the tracker's work on that
    prompt (500 ms here, far above what association costs even on a loaded machine) is timed as track, so fuse is association and resolution alone."""
    from engine.fuse import Fuser, FuserConfig

    tracker = MaskTracker(96, 128, prompt_delay_s=0.5)
    fuser = Fuser(FuserConfig(spawn_after=2), names=SquareDetector.names)
    results = list(Pipeline(ArraySource(moving_square_frames(2)), detector=SquareDetector(), tracker=tracker,
                            fuser=fuser))
    spawned = results[1]
    assert [type(d).__name__ for d in spawned.decisions] == ["Spawn"]
    assert spawned.times.track >= 490 and spawned.times.fuse < 250
