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


class _Stop(Exception):
    pass


@pytest.mark.parametrize("present, refine", [(True, "crf"), (False, "none")], ids=["checkpoints", "random"])
def test_the_synthetic_demo_makes_its_masks_as_the_loop_scores_them(tmp_path, monkeypatch, present, refine):
    """On the loop's checkpoints the demo runs with the loop's LOOP_OPTIONS (the CRF included); on random
    weights without the refinement (nothing to refine, and its library is the 'data' extra's)."""
    import engine.cli.run as run
    from engine.cli import main
    from engine.data.synthetic_loop import LOOP_OPTIONS

    monkeypatch.setenv("STREAMSEG_CACHE", str(tmp_path))
    if present:
        weights = loop_weights(tmp_path)
        weights.detector.parent.mkdir(parents=True)
        weights.detector.write_bytes(b"checkpoint")  # never loaded: the run stops before building
        weights.tracker.write_bytes(b"checkpoint")
    seen = []

    def stop(options, *, quiet):
        seen.append(options)
        raise _Stop

    monkeypatch.setattr(run, "_execute", stop)
    with pytest.raises(_Stop):
        main(["demo", "--scene", "synthetic", "--out-dir", str(tmp_path / "out")])
    (options,) = seen
    assert options.refine == refine
    assert options.detector_mask_weight == LOOP_OPTIONS["detector_mask_weight"]
    assert options.hide_unconfirmed_after == LOOP_OPTIONS["hide_unconfirmed_after"]
    assert (options.weights == str(loop_weights(tmp_path).detector)) is present
