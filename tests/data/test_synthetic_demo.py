"""``streamseg demo --scene synthetic``: the closed loop's held-out scene, on the loop's checkpoints when
the cache holds them (the user's path: files, not random weights), scored against the scene's truth."""

from __future__ import annotations

import os
import shutil

import pytest

from engine.data.synthetic_loop import loop_weights
from tests.test_cli import streamseg


def _quality_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.strip().startswith("HOTA ")]
    assert len(lines) == 1, stdout
    assert "stage" in stdout and "total" in stdout  # beside the latency table
    return lines[0]


@pytest.mark.slow  # ~20 s: both networks load and run 3 frames
def test_the_synthetic_demo_uses_the_closed_loops_checkpoints_from_the_cache(tmp_path, user_checkpoints):
    weights = loop_weights(tmp_path / "cache")
    weights.detector.parent.mkdir(parents=True)
    shutil.copyfile(user_checkpoints.detector, weights.detector)
    shutil.copyfile(user_checkpoints.tracker, weights.tracker)
    env = {**os.environ, "STREAMSEG_CACHE": str(tmp_path / "cache")}
    proc = streamseg("demo", "--scene", "synthetic", "--out-dir", str(tmp_path / "out"), "--max-frames", "3",
                     "--quiet", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"closed-loop weights: {weights.detector}" in proc.stderr and "RANDOM WEIGHTS" not in proc.stderr
    line = _quality_line(proc.stdout)
    assert "J&F" in line and "ID switches" in line
    assert (tmp_path / "out" / "demo.jsonl").read_text().count("\n") == 3


@pytest.mark.slow  # ~20 s
def test_without_checkpoints_the_synthetic_demo_says_how_to_build_them_and_runs_on_random_weights(tmp_path):
    env = {**os.environ, "STREAMSEG_CACHE": str(tmp_path / "empty")}
    proc = streamseg("demo", "--scene", "synthetic", "--out-dir", str(tmp_path / "out"), "--max-frames", "2",
                     "--quiet", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "python -m benchmarks.closed_loop" in proc.stderr and "RANDOM WEIGHTS" in proc.stderr
    _quality_line(proc.stdout)
