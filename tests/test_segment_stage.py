"""The semantic stage in the per-frame processor: it runs on every k-th frame of each stream and its map is
reused between; the frame's instances lie over its stuff (instances win, stuff never overlaps them); the
JSONL, the COCO panoptic sink and the overlay carry the result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.fuse import Fuser, FuserConfig
from engine.pipeline import Pipeline
from engine.processor import FrameProcessor, SharedStages, Stream, check_stream
from engine.sinks import JsonlWriter, PanopticWriter, result_to_record
from engine.types import Frame, Stage
from tests.doubles import ArraySource, BandSegmenter, MaskTracker, SquareDetector, moving_square_frames

H, W = 96, 128


def _run(frames: int = 4, *, every: int = 1, detector=None, tracker=None, fuser=None, sinks=()):
    segmenter = BandSegmenter(every=every)
    pipeline = Pipeline(ArraySource(moving_square_frames(frames)), tracker=tracker, fuser=fuser, sinks=sinks,
                        shared=SharedStages(detector=detector, segmenter=segmenter))
    return list(pipeline), segmenter


def test_the_segmenter_runs_on_every_kth_frame_and_its_map_is_reused_between():
    results, segmenter = _run(7, every=3, detector=SquareDetector())
    assert segmenter.calls == [[0], [3], [6]]
    assert [r.semantic.fresh for r in results] == [True, False, False, True, False, False, True]
    assert [r.semantic.frame_index for r in results] == [0, 0, 0, 3, 3, 3, 6]
    # the panoptic map is the frame's own, even where the semantic map was computed on an earlier frame
    assert [r.panoptic.frame_index for r in results] == list(range(7))
    assert all("segment" in r.times.as_dict() for r in results)


def test_without_a_segmenter_results_carry_no_semantic_layer_and_the_jsonl_no_stuff_key():
    (result,) = list(Pipeline(ArraySource(moving_square_frames(1)), detector=SquareDetector()))
    assert result.semantic is None and result.panoptic is None and result.stuff is None
    assert "stuff" not in result_to_record(result)


def test_instances_lie_over_the_stuff_and_every_pixel_has_one_answer():
    """Detector alone: the square's per-frame id is 0, so the panoptic map shifts ids by one."""
    results, _ = _run(3, detector=SquareDetector())
    for result in results:
        square = result.instances.masks[0]
        panoptic, stuff = result.panoptic, result.stuff
        assert panoptic.id_offset == 1 and result.instances.ids.tolist() == [0]
        assert (panoptic.instance[square] == 1).all() and (panoptic.semantic[square] == 2).all()
        assert stuff.labels == ("road", "sky") and stuff.class_ids.tolist() == [0, 1]
        assert not (stuff.masks & square).any() and (stuff.masks.sum(0) <= 1).all()
        assert (stuff.masks.any(0) | square).all()  # the band map's thing pixels are all the square's
        record = result_to_record(result)
        assert list(record)[:5] == ["frame", "pts", "capture_time", "instances", "stuff"]
        assert [(s["class_id"], s["label"]) for s in record["stuff"]] == [(0, "road"), (1, "sky")]
        assert sum(s["area"] for s in record["stuff"]) == H * W - int(square.sum())


def test_an_instance_whose_class_the_label_set_lacks_is_void_not_stuff():
    class CupDetector(SquareDetector):
        names = ("cup",)

    (result,) = _run(1, detector=CupDetector())[0]
    square = result.instances.masks[0]
    assert (result.panoptic.semantic[square] == -1).all() and (result.panoptic.instance[square] == 0).all()
    assert not (result.stuff.masks & square).any()


def test_thing_pixels_no_instance_covers_are_void():
    (result,) = _run(1)[0]  # no detector, no tracker: no instances
    square = torch.from_numpy(moving_square_frames(1)[0][:, :, 0] > 200)
    assert len(result.instances) == 0
    assert (result.panoptic.semantic[square] == -1).all() and not result.stuff.masks[:, square].any()


def test_tracked_instances_keep_their_track_ids_in_the_panoptic_output(tmp_path):
    jsonl, folder = tmp_path / "r.jsonl", tmp_path / "panoptic"
    writer = PanopticWriter(folder, BandSegmenter.labels.coco_categories(), flush_every=2)
    results, _ = _run(3, detector=SquareDetector(), tracker=MaskTracker(H, W),
                      fuser=Fuser(FuserConfig(spawn_after=1), names=SquareDetector.names),
                      sinks=[JsonlWriter(jsonl), writer])
    assert results[-1].instances.ids.tolist() == [1]
    doc = json.loads((folder / "panoptic.json").read_text())
    categories = {c["id"]: c for c in doc["categories"]}
    for ann, line in zip(doc["annotations"], jsonl.read_text().splitlines(), strict=True):
        record = json.loads(line)
        rgb = np.asarray(Image.open(folder / "panoptic" / ann["file_name"]), dtype=np.uint32)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in ann["segments_info"]}
        tracks = [s["track_id"] for s in ann["segments_info"] if categories[s["category_id"]]["isthing"]]
        assert tracks == [inst["id"] for inst in record["instances"]]


def test_due_frames_of_several_streams_share_one_segmenter_call():
    segmenter = BandSegmenter(every=2)
    processor = FrameProcessor(SharedStages(segmenter=segmenter), device=torch.device("cpu"))
    images = [torch.from_numpy(im) for im in moving_square_frames(3)]
    streams = [Stream(ArraySource(moving_square_frames(1))) for _ in range(2)]
    for stream in streams:
        check_stream(stream, None)
    for i in range(3):
        frames = [Frame(image=images[i], index=i, pts=None, capture_time=0.0, stream=k) for k in range(2)]
        results = processor.process(list(zip(streams, frames)))
        assert [r.semantic.frame_index for r in results] == [i - i % 2] * 2
    assert segmenter.calls == [[0, 0], [2, 2]]
    assert streams[0].cadence is not streams[1].cadence and streams[0].cadence.runs == 2


def test_the_segment_stage_runs_between_detect_and_track():
    order = []

    class Recording(SquareDetector):
        def __call__(self, images):
            order.append(Stage.DETECT)
            return super().__call__(images)

    class RecordingSegmenter(BandSegmenter):
        def __call__(self, images, *, frame_indices):
            order.append(Stage.SEGMENT)
            return super().__call__(images, frame_indices=frame_indices)

    class RecordingTracker(MaskTracker):
        def step(self, image=None):
            order.append(Stage.TRACK)
            return super().step(image)

    list(Pipeline(ArraySource(moving_square_frames(1)), tracker=RecordingTracker(H, W),
                  fuser=Fuser(names=("square",)),
                  shared=SharedStages(detector=Recording(), segmenter=RecordingSegmenter())))
    assert order == [Stage.DETECT, Stage.SEGMENT, Stage.TRACK]
    assert [s for s in Stage].index(Stage.SEGMENT) == [s for s in Stage].index(Stage.DETECT) + 1


@pytest.mark.parametrize("every", [0, -1])
def test_a_segmenter_cadence_below_one_is_refused(every):
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="every"):
        _run(1, every=every)
