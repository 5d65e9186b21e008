"""benchmarks/reliability.py's own parts: the mutations are seeded and do what they say, a case is
classified from what the file source gives, and the output checks of ``rtsp-kills`` catch a cut line,
a gap in the frame indices and pts that go backwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.reliability import mutate, read_case
from benchmarks.rtsp_kills import CliKillReport, _check_jsonl


@pytest.mark.parametrize("kind", ["bitflip", "truncate", "zero", "swap"])
def test_a_mutation_is_the_same_for_the_same_seed_and_changes_the_bytes(kind: str) -> None:
    data = bytes(range(256)) * 1024
    first = mutate(data, kind, np.random.default_rng([0, 7]))
    assert first == mutate(data, kind, np.random.default_rng([0, 7])) != data
    assert len(first) < len(data) if kind == "truncate" else len(first) == len(data)


def test_an_intact_clip_is_a_clean_case_with_every_declared_frame(bedroom_clip: Path) -> None:
    row = read_case(str(bedroom_clip))
    assert row["outcome"] == "clean" and row["frames"] == row["declared"] == 200
    assert row["pts_ok"] and not row["silent_loss"] and row["summary"] is None


def test_a_missing_file_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    row = read_case(str(tmp_path / "missing.mp4"))
    assert row["outcome"] == "error" and "missing.mp4" in row["message"]


def _line(frame: int, pts: float) -> str:
    return json.dumps({"frame": frame, "pts": pts, "capture_time": 1.0 + frame}) + "\n"


@pytest.mark.parametrize("text, whole, gaps, increasing", [
    (_line(0, 0.0) + _line(1, 0.1) + _line(2, 0.2), True, 0, True),  # intact
    (_line(0, 0.0) + _line(1, 0.1) + _line(2, 0.2)[:10], False, 0, True),  # the last line cut short
    (_line(0, 0.0) + _line(3, 0.3), True, 2, True),  # frames 1 and 2 dropped by the live buffer
    (_line(0, 0.5) + _line(1, 0.4), True, 0, False),  # pts going backwards
], ids=["intact", "cut-line", "index-gap", "pts-backwards"])
def test_the_jsonl_check_finds_cut_lines_gaps_and_backward_pts(tmp_path: Path, text, whole, gaps, increasing):
    path = tmp_path / "r.jsonl"
    path.write_text(text)
    report = CliKillReport(clip="x", command=[])
    _check_jsonl(path, report)
    assert (report.jsonl_whole, report.index_gaps, report.pts_increasing) == (whole, gaps, increasing)
