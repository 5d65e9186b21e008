"""benchmarks/gpu_check.sh, the one command a short GPU slot runs, and its Python half
(benchmarks/gpu_check.py): what travels, what comes back, the summary, and the dry run on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks.gpu_check import (BENCHMARKS, MIB, NEEDED_WHEELS, OUTPUTS, carry_report, junit_counts,
                                  key_numbers, sanitizer_summary, verify_outputs, wheel_problems)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["wheels", "env", "build", "gpu-tests", "memcheck", "kernels", "tracker", "pipeline", "detector",
         "tracker-vos", "racecheck"]


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def _repo(tmp_path: Path, *, wheels=NEEDED_WHEELS) -> Path:
    """A git repository with 1 MiB tracked, 0.5 MiB untracked, 3 MiB ignored and a .whl/ of 2 MiB."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("/.whl/\nbuild/\n")
    _write(root / "engine" / "a.py", MIB)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    _write(root / "notes.txt", MIB // 2)
    _write(root / "build" / "big.so", 3 * MIB)
    for i, name in enumerate(wheels):
        _write(root / ".whl" / f"{name}-1.{i}-py3-none-any.whl", 2 * MIB // len(wheels))
    return root


@pytest.mark.parametrize(("limit_mib", "fits"), [
    pytest.param(4, True, id="tree-untracked-and-wheels-fit"),
    pytest.param(3, False, id="over-the-limit"),
])
def test_carry_counts_the_tree_untracked_files_and_the_carry_but_not_ignored_files(tmp_path, limit_mib, fits):
    ok, text = carry_report(_repo(tmp_path), [".whl"], limit=limit_mib * MIB)
    assert ok is fits
    assert "3.50 MiB" in text  # 1 tracked + 0.5 untracked + 2 wheels; the 3 MiB of build/ stays home
    assert ("DOES NOT FIT" in text) is not fits
    assert 'run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)' in text


@pytest.mark.parametrize(("wheels", "problem"), [
    pytest.param(NEEDED_WHEELS[1:], "no wheel for av", id="a-needed-wheel-is-missing"),
    pytest.param(NEEDED_WHEELS + ("av",), "two versions of av", id="two-versions-stop-pip"),
])
def test_wheel_folder_problems_fail_the_carry_check(tmp_path, wheels, problem):
    root = _repo(tmp_path, wheels=wheels)
    assert any(problem in p for p in wheel_problems(root / ".whl"))
    ok, text = carry_report(root, [".whl"])
    assert not ok and problem in text


def test_a_missing_wheel_folder_says_how_to_make_it(tmp_path):
    assert "gpu-wheels.sh" in wheel_problems(tmp_path / ".whl")[0]


def _outputs(out: Path, *, steps=None, bench=None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (out / name).write_text("log\n")
    steps = steps if steps is not None else [{"name": "kernels", "status": "ok", "note": ""}]
    (out / "summary.json").write_text(json.dumps({"steps": steps}))
    (out / "benchmarks.json").write_text(json.dumps(bench if bench is not None else {"kernels": {}}))
    return out


@pytest.mark.parametrize(("change", "problem"), [
    pytest.param(lambda out: None, None, id="the-six-outputs-come-back"),
    pytest.param(lambda out: [(out / f"extra{i}.log").write_text("x") for i in range(3)], "9 files",
                 id="over-eight-files"),
    pytest.param(lambda out: (out / "bench.log").unlink(), "bench.log was not written",
                 id="an-output-missing"),
    pytest.param(lambda out: _write(out / "a" / "b" / "c" / "d.log", 1), "more than two folders down",
                 id="too-deep"),
    pytest.param(lambda out: (out / "tests log").write_text("x"), "characters outside", id="odd-name"),
    pytest.param(lambda out: _write(out / "bench.log", 17 * MIB), "over 16 MiB", id="a-file-too-big"),
    pytest.param(lambda out: (out / "benchmarks.json").write_text("{}"), "kernels finished but left no JSON",
                 id="a-benchmark-without-its-result"),
])
def test_verify_holds_the_outputs_to_what_the_device_tool_returns(tmp_path, change, problem):
    out = _outputs(tmp_path / "out")
    change(out)
    problems = verify_outputs(out, dry_run=False)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_in_a_dry_run_a_step_that_did_not_finish_is_a_problem(tmp_path):
    steps = [{"name": "tracker", "status": "timeout", "note": "stopped at its 480 s limit"}]
    out = _outputs(tmp_path / "out", steps=steps, bench={})
    assert verify_outputs(out, dry_run=False) == []
    assert any("tracker timeout" in p for p in verify_outputs(out, dry_run=True))


def test_junit_counts_and_failure_lines(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text("""<testsuites><testsuite>
      <testcase classname="tests.ops.test_rle" name="test_a"/>
      <testcase classname="tests.ops.test_rle" name="test_b"><failure message="assert 3 == 4&#10;more"/></testcase>
      <testcase classname="tests.track.test_x" name="test_c"><skipped message="needs a CUDA device"/></testcase>
      <testcase classname="tests.track.test_x" name="test_d"><error message="fixture broke"/></testcase>
    </testsuite></testsuites>""")
    counts = junit_counts(xml)
    assert (counts["passed"], counts["failed"], counts["skipped"]) == (1, 2, 1)
    assert counts["failures"][0] == "tests.ops.test_rle::test_b: assert 3 == 4"
    assert counts["skip_reasons"] == {"needs a CUDA device": 1}
    assert junit_counts(tmp_path / "missing.xml") == {}


def test_sanitizer_verdicts_per_tool(tmp_path):
    log = tmp_path / "sanitizer.log"
    log.write_text("=== memcheck 10:00:00 (limit 150 s)\n=== memcheck\n40 passed, 2 skipped in 61.20s\n"
                   "========= ERROR SUMMARY: 0 errors\n"
                   "=== racecheck 10:03:00 (limit 90 s)\n=== racecheck\n1 failed, 8 passed in 20.01s\n"
                   "========= ERROR SUMMARY: 2 errors\n")
    assert sanitizer_summary(log) == {"memcheck": "0 errors; tests: 40 passed, 2 skipped",
                                      "racecheck": "2 errors; tests: 1 failed, 8 passed"}


def test_key_numbers_give_each_ratio_measured_in_the_run():
    bench = {
        "kernels": {"timings": [{"op": "mask_iou", "masks": 10, "path": "kernel", "p50_ms": 0.1},
                                {"op": "mask_iou", "masks": 10, "path": "reference", "p50_ms": 5.0}]},
        "tracker-vos": {"speed": [{"baseline": "vos_optimized", "objects": 10,
                                   "ours": {"p50": 10.0, "p99": 12.0, "fps": 95.0},
                                   "base": {"p50": 35.0}, "speedup_p50": 3.5, "mask_iou_min": 0.985}],
                        "skipped": {}, "warmup_s": {"vos_optimized": 140.0}},
        "pipeline": {"hd": [{"mode": "prompted", "size": [1920, 1080], "tracked_mean": 10.0, "fps": 130.0,
                             "stages": {"total": {"p99": 14.0}}, "peak_gpu_mib": 3000.0,
                             "memory": {"growth_mib_per_1000_frames": 0.0}, "streams_1080p30_estimate": 4}]},
        "detector": {"points": [{"max_det": 100, "engine_p50_ms": 5.0,
                                 "baselines": {"ultralytics": {"p50_ms": 20.0, "speedup_p50": 4.0}}}]},
    }
    text = "\n".join(key_numbers(bench))
    assert "10: 0.100/5.000 (50x)" in text
    assert "10 obj: ours p50 10.0 p99 12.0 ms (95 fps) vs 35.0 ms: 3.50x, IoU min 0.985" in text
    assert "first run's prompts + warm-up 140 s" in text
    assert "130 fps, total p99 14.0 ms" in text and "~4 streams" in text
    assert "100: 5.0/20.0 (4.0x)" in text


def _script(*args: str, out: Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUT=str(out))
    return subprocess.run(["bash", str(SCRIPT), *args], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_an_unknown_argument_is_refused_with_the_usage(tmp_path):
    done = _script("--fast", out=tmp_path / "out", timeout=30)
    assert done.returncode == 2 and "unknown argument --fast" in done.stderr and "--dry-run" in done.stderr


def test_steps_with_no_time_left_are_recorded_as_not_run_and_the_summary_still_comes(tmp_path):
    out = tmp_path / "out"
    done = _script("--dry-run", "--steps", "wheels,kernels", "--budget", "20", out=out, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    statuses = [(s["name"], s["status"]) for s in summary["steps"]]
    assert statuses == [("wheels", "not-run"), ("kernels", "not-run")]
    assert "no time left in the 20 s budget" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    assert "==== streamseg gpu_check: DRY RUN" in done.stdout


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_writes_what_the_gpu_run_writes(tmp_path):
    """Every step's plumbing at tiny sizes on the CPU: the same commands, logs, JSON and summary as on the
    GPU machine; steps that cannot apply here (no .whl/ in a clean checkout) say so."""
    out = tmp_path / "out"
    done = _script("--dry-run", out=out, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == STEPS
    assert all(s["status"] in ("ok", "skipped") for s in summary["steps"])
    assert summary["dry_run"] is True and summary["environment"]["torch"]
    assert summary["tests"]["failed"] == 0 and summary["tests"]["skipped"] > 0
    bench = json.loads((out / "benchmarks.json").read_text())
    assert set(bench) == set(BENCHMARKS)
    assert [r["objects"] for r in bench["tracker"]["speed"]] == [1, 2]
    assert "vos_optimized" in bench["tracker-vos"]["skipped"]
    assert {e["mode"] for e in bench["pipeline"]["hd"]} == {"prompted", "fused"}
    assert bench["detector"]["points"] and bench["kernels"]["timings"]
    assert 'run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)' in done.stdout
    assert "==== streamseg gpu_check: DRY RUN" in done.stdout
