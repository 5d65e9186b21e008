"""The propagation check runs on a user's checkpoint file and reports what it says it does."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow  # ~15 s: SAM 2 built from a checkpoint file, 3 frames of 2 scenes
def test_the_propagation_check_scores_every_prompted_object_on_every_frame(user_checkpoints, tmp_path, capsys):
    from benchmarks.propagation import main

    out = tmp_path / "propagation.json"
    assert main([str(user_checkpoints.tracker), "--frames", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    scenes = report["checkpoints"][str(user_checkpoints.tracker)]
    assert set(scenes) == {"201", "202"}
    for scene in scenes.values():
        objects = len(scene["prompt_iou"])
        assert objects >= 2 and len(scene["iou"]) == 2 and len(scene["max_pair"]) == 2
        assert all(len(frame) == objects and all(0.0 <= v <= 1.0 for v in frame) for frame in scene["iou"])
        assert all(0.0 <= v <= 1.0 for v in scene["max_pair"])
    assert "followed IoU" in capsys.readouterr().out
