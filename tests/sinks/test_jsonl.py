import dataclasses
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from engine.errors import SinkError
from engine.sinks import JsonlWriter, result_to_record
from engine.types import Frame, FrameResult, Instances, StageTimes


def _result(index: int, masks: torch.Tensor) -> FrameResult:
    n, h, w = masks.shape
    frame = Frame(image=torch.zeros((h, w, 3), dtype=torch.uint8), index=index, pts=index / 30,
                  capture_time=1764000000.0 + index / 30)
    inst = Instances(ids=torch.arange(n) + 3, class_ids=torch.full((n,), 2), scores=torch.full((n,), 0.91),
                     boxes=torch.tensor([[1.0, 2.0, 30.0, 40.0]] * n).reshape(n, 4), masks=masks, labels=("car",) * n)
    times = StageTimes(decode=1.0, detect=2.0, track=3.0, fuse=0.5, render=0.25, total=7.0)
    return FrameResult(frame=frame, instances=inst, times=times, age_ms=12.5)


def test_record_has_the_documented_shape_and_masks_decode_with_pycocotools():
    masks = torch.rand(2, 37, 53) > 0.6  # odd sizes: COCO RLE is column-major, a transposition bug shows
    record = result_to_record(_result(12, masks))
    assert list(record) == ["frame", "pts", "capture_time", "instances", "times_ms", "age_ms",
                            "decisions", "session", "quality"]
    assert record["frame"] == 12 and record["pts"] == pytest.approx(0.4)
    assert list(record["times_ms"]) == ["decode", "detect", "segment", "track", "fuse", "refine", "render", "total", "overlapped"]
    first = record["instances"][0]
    assert list(first) == ["id", "class_id", "label", "score", "box", "mask"]
    assert (first["id"], first["class_id"], first["label"], first["score"]) == (3, 2, "car", 0.91)
    for inst, mask in zip(record["instances"], masks):
        rle = {"size": inst["mask"]["size"], "counts": inst["mask"]["counts"].encode()}
        assert inst["mask"]["size"] == [37, 53]
        np.testing.assert_array_equal(mask_util.decode(rle), mask.numpy())


def test_a_frame_without_instances_is_still_a_line(tmp_path):
    path = tmp_path / "r.jsonl"
    writer = JsonlWriter(path)
    writer.write(_result(0, torch.zeros((0, 8, 8), dtype=torch.bool)))
    writer.close()
    assert json.loads(path.read_text())["instances"] == []


def test_the_file_is_created_by_the_first_line_not_by_the_writer(tmp_path):
    """Making a writer only checks the path: an earlier file there survives a run that ends before its
    first frame (another output failed, the source never delivered)."""
    path = tmp_path / "r.jsonl"
    path.write_text('{"frame": 0}\n')
    JsonlWriter(path).close()
    assert path.read_text() == '{"frame": 0}\n'
    new = tmp_path / "new.jsonl"
    writer = JsonlWriter(new)
    assert not new.exists()
    writer.write(_result(0, torch.zeros((0, 8, 8), dtype=torch.bool)))
    writer.close()
    assert len(new.read_text().splitlines()) == 1


def test_a_full_device_fails_with_the_path_and_refuses_later_lines():
    writer = JsonlWriter("/dev/full")
    for _ in range(2):  # the second write repeats the first failure instead of writing after it
        with pytest.raises(SinkError, match="/dev/full.*No space left on device"):
            writer.write(_result(0, torch.zeros((0, 8, 8), dtype=torch.bool)))
    writer.close()


def test_a_failed_write_leaves_only_whole_lines(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    writer = JsonlWriter(path)
    writer.write(_result(0, torch.ones((1, 8, 8), dtype=torch.bool)))
    real_write = writer._file.write

    def write_half_then_fail(data):
        real_write(bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "_file", _FileWith(writer._file, write_half_then_fail))
    with pytest.raises(SinkError, match="No space left on device"):
        writer.write(_result(1, torch.ones((1, 8, 8), dtype=torch.bool)))
    writer.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["frame"] == 0


class _FileWith:
    """A file object whose write is replaced; everything else goes to the real file."""

    def __init__(self, real, write):
        self._real, self.write = real, write

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.mark.parametrize("path, message", [
    ("{tmp}/missing-dir/r.jsonl", "does not exist"),  # parent directory missing
    ("{tmp}", "is a directory"),  # a directory given as the file
    ("/proc/streamseg-test.jsonl", "streamseg-test.jsonl"),  # a filesystem that refuses new files
])
def test_unwritable_paths_fail_before_the_run_naming_the_path(tmp_path, path, message):
    with pytest.raises(SinkError, match=message):
        JsonlWriter(path.format(tmp=tmp_path))


def test_every_kind_of_decision_is_one_record_naming_its_track():
    from engine.types import (Adopt, Origin, Reidentify, Reprompt, RepromptReason, Retire, RetireReason, Spawn,
                              UserPrompt)

    decisions = (Spawn(4, class_id=2, score=0.81234, box=(1.0, 2.0, 3.0, 4.0)),
                 UserPrompt(obj_id=5, points=((10.0, 20.0),), labels=(0,)), Adopt(5, Origin.USER),
                 Reprompt(4, (1.0, 2.0, 3.0, 4.0), RepromptReason.DRIFT),
                 Reidentify(2, spawned_id=7, similarity=0.83, mask=torch.zeros((37, 53), dtype=torch.bool)),
                 Retire(4, RetireReason.LOST))
    result = _result(0, torch.zeros((0, 37, 53), dtype=torch.bool))
    record = result_to_record(dataclasses.replace(result, decisions=decisions))
    assert record["decisions"] == [
        {"decision": "spawn", "id": 4, "origin": "detector", "class_id": 2, "score": 0.8123},
        {"decision": "prompt", "id": 5, "origin": "user", "points": [[10.0, 20.0]], "labels": [0], "box": None},
        {"decision": "adopt", "id": 5, "origin": "user"},
        {"decision": "reprompt", "id": 4, "reason": "drift"},
        {"decision": "reidentify", "id": 2, "spawned": 7, "similarity": 0.83},
        {"decision": "retire", "id": 4, "reason": "lost"}]
    json.dumps(record)  # all of it is JSON
