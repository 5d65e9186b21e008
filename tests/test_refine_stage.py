"""The refine stage (``--refine``): the pipeline refines every frame's final instances, after fusion and
before the panoptic resolution, the overlay and the sinks; it is timed as its own stage; a missing library
or a bad method fails before the first frame."""

from __future__ import annotations

import dataclasses
import json

import cv2
import pytest
import torch

from engine.errors import BackendError, ConfigError
from engine.fuse import Fuser, FuserConfig
from engine.pipeline import Pipeline
from engine.processor import SharedStages
from engine.refine import BoundaryRefiner, load_refiner, refine_instances
from engine.types import Instances, Stage
from tests.doubles import ArraySource, BandSegmenter, MaskTracker, SquareDetector, moving_square_frames

H, W = 96, 128
SHOW_DETECTION = FuserConfig(detector_mask_weight=1.0)  # a matched track shows its detection's (grown) mask


class GrowingDetector(SquareDetector):
    """The square's detection with a mask 3 px too wide on the right: an edge a refiner can move back
    onto the square (the dark gradient beside it is the guide's contrast)."""

    def __call__(self, images):
        out = []
        for dets in super().__call__(images):
            masks = dets.masks.clone()
            for m in masks:
                xs = torch.nonzero(m.any(0)).flatten()
                if len(xs):
                    m[:, int(xs.max()) + 1: int(xs.max()) + 4] = m[:, int(xs.max()): int(xs.max()) + 1]
            out.append(dataclasses.replace(dets, masks=masks))
        return out


class Recording:
    """A refiner double: records the instances it was given and empties every mask's first row."""

    method = "recording"

    def __init__(self, order: list | None = None) -> None:
        self.seen: list[Instances] = []
        self.order = order

    def __call__(self, image, instances):
        self.seen.append(instances)
        if self.order is not None:
            self.order.append(Stage.REFINE)
        masks = instances.masks.clone()
        for m in masks:
            rows = torch.nonzero(m.any(1)).flatten()
            if len(rows):
                m[rows[0]] = False
        return dataclasses.replace(instances, masks=masks)


def _results(frames: int, *, refiner=None, segmenter=None, tracker: bool = True, render: bool = False):
    shared = SharedStages(detector=GrowingDetector(), segmenter=segmenter, refiner=refiner)
    pipeline = Pipeline(ArraySource(moving_square_frames(frames)), shared=shared,
                        tracker=MaskTracker(H, W) if tracker else None,
                        fuser=Fuser(SHOW_DETECTION, names=SquareDetector.names) if tracker else None, render=render)
    return list(pipeline)


@pytest.mark.parametrize("method", ["guided", "crf"])
def test_the_stage_gives_what_refine_instances_gives_on_the_fused_instances(method):
    plain = _results(5)
    refined = _results(5, refiner=BoundaryRefiner(method))
    assert sum(len(r.instances) > 0 for r in plain) >= 3  # a new track shows from its second detection on
    for before, after in zip(plain, refined, strict=True):
        expected = refine_instances(before.frame.image, before.instances, method)
        assert torch.equal(after.instances.masks, expected.masks) and torch.equal(after.instances.ids, expected.ids)
        assert after.times.refine > 0.0 or len(before.instances) == 0
        if len(before.instances) == 0:
            continue
        square = before.frame.image[:, :, 0] > 200
        grown = before.instances.masks[0] & ~square
        assert grown.sum() > 50  # the double's masks spill off the square ...
        assert (after.instances.masks[0] & ~square).sum() < grown.sum() / 2  # ... and the edge moves back


def test_refinement_runs_after_fusion_and_before_the_panoptic_map_and_the_overlay():
    order: list[Stage] = []

    class RecordingFuser(Fuser):
        def resolve(self, frame, detections, tracks):
            order.append(Stage.FUSE)
            return super().resolve(frame, detections, tracks)

    refiner = Recording(order)
    shared = SharedStages(detector=GrowingDetector(), segmenter=BandSegmenter(), refiner=refiner)
    results = list(Pipeline(ArraySource(moving_square_frames(3)), shared=shared, tracker=MaskTracker(H, W),
                            fuser=RecordingFuser(names=SquareDetector.names), render=True))
    assert order == [Stage.FUSE, Stage.REFINE] * 3
    for result, given in zip(results, refiner.seen, strict=True):
        if len(given):
            assert given.masks.sum() > result.instances.masks.sum()  # the results carry the refined masks
        # the panoptic map is made from the refined instances: the emptied row is stuff or void there
        on_instance = result.panoptic.instance > 0
        assert torch.equal(on_instance, result.instances.masks.any(0))


def test_without_a_refiner_the_instances_are_the_fused_ones():
    recorded = Recording()
    with_double = _results(2, refiner=recorded)
    plain = _results(2)
    for given, result in zip(recorded.seen, plain, strict=True):
        assert torch.equal(given.masks, result.instances.masks)
    assert all(r.instances.masks.sum() < p.instances.masks.sum()
               for r, p in zip(with_double, plain, strict=True) if len(p.instances))


def test_a_detector_alone_is_refined_too():
    results = _results(2, refiner=Recording(), tracker=False)
    plain = _results(2, tracker=False)
    assert all(r.instances.masks.sum() < p.instances.masks.sum() for r, p in zip(results, plain, strict=True))


@pytest.mark.parametrize("method, error, message", [
    ("bilateral", ConfigError, "choose one of none, crf, guided"),
    ("guided", BackendError, "opencv-contrib-python-headless"),
])
def test_a_bad_method_or_a_missing_library_fails_when_the_stage_is_built(monkeypatch, method, error, message):
    monkeypatch.delattr(cv2, "ximgproc")
    with pytest.raises(error, match=message):
        load_refiner(method)
    assert load_refiner("none") is None


def test_streamseg_run_refines_and_the_jsonl_times_the_stage(tmp_path):
    from engine.cli import main

    jsonl = tmp_path / "r.jsonl"
    code = main(["run", "synthetic:seed=3,frames=3,size=160x120,objects=2", "--weights", "random",
                 "--tracker", "none", "--refine", "guided", "--imgsz", "160", "--conf", "0.01",
                 "--jsonl", str(jsonl), "--device", "cpu"])
    assert code == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 3 and all("refine" in r["times_ms"] for r in records)


def test_a_run_asking_for_a_missing_library_writes_nothing(tmp_path, monkeypatch, capsys):
    from engine.cli import main

    monkeypatch.delattr(cv2, "ximgproc")
    jsonl = tmp_path / "r.jsonl"
    code = main(["run", "synthetic:seed=3,frames=3,size=160x120,objects=2", "--weights", "random",
                 "--tracker", "none", "--refine", "guided", "--jsonl", str(jsonl), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and not jsonl.exists()
    assert len(err) == 1 and "opencv-contrib-python-headless" in err[0] and "Traceback" not in err[0]
