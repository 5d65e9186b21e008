"""The ``streamseg`` command as a user runs it: exit codes, one-line errors, outputs, summary."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parents[1]
_SCRATCH = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".import_linter_cache", "build", "out"}


def _tree(root: Path) -> dict[str, float]:
    """Every file under ``root`` with its modification time, caches and build folders left out (and not
    walked: the virtual environment alone holds tens of thousands of files)."""
    files = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in _SCRATCH]
        for name in names:
            path = Path(folder, name)
            if path.is_file():
                files[str(path.relative_to(root))] = path.stat().st_mtime
    return files


@pytest.fixture(autouse=True)
def _working_directory_unchanged():
    """The commands run in the repository root: none may leave, change or remove a file there
    (intermediates belong in a temporary or cache folder)."""
    before = _tree(ROOT)
    yield
    after = _tree(ROOT)
    added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert not (added or removed or changed), f"added {added}, removed {removed}, changed {changed}"


def streamseg(*args: str, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    # conftest points STREAMSEG_CACHE at an empty folder
    env = {**(env if env is not None else os.environ), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def streamseg_in_process(*args: str) -> subprocess.CompletedProcess:
    """``streamseg ARGS`` through ``engine.cli.main`` in this process, from the repository root: its exit
    code and what it prints, without a new interpreter importing torch and the stack again (5-10 s a call
    on a loaded 2-core machine). For the tables of user mistakes, which end before any model runs; the
    same mistakes end a real process the same way (``streamseg``, here and in tests/test_cli_exits.py),
    and an exception main does not turn into its one line fails the test here as it would print a
    traceback there."""
    from engine.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors exit 2 with the usage on stderr
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["streamseg", *args], code, out.getvalue(), err.getvalue())


def test_a_user_mistake_ends_a_real_process_as_it_ends_main_in_process(tmp_path):
    args = ("run", str(tmp_path / "missing.mp4"))
    real, here = streamseg(*args), streamseg_in_process(*args)
    assert (real.returncode, _user_error(real)) == (here.returncode, _user_error(here))


def _user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A user's mistake: exit 1, one line on stderr starting 'streamseg: error:', no traceback."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("streamseg: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _frames(path: Path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return len(frames), (frames[0].width, frames[0].height)


def test_info_names_versions_device_and_mask_ops():
    proc = streamseg("info")
    assert proc.returncode == 0, proc.stderr
    keys = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    for key in ("streamseg", "torch", "av", "sam2", "ultralytics", "device", "mask", "precision"):
        assert key in keys, proc.stdout


def test_info_says_which_precision_path_runs_and_why():
    from engine.runtime.precision import PrecisionPolicy, cpu_bf16_features

    auto = streamseg("info")
    [line] = [line for line in auto.stdout.splitlines() if line.startswith("precision")]
    assert PrecisionPolicy.for_device("cpu").reason in line  # this machine's CPU, whichever it is
    features = ", ".join(cpu_bf16_features()) or "none"
    assert any(line.startswith("cpu bf16 matrix") and features in line for line in auto.stdout.splitlines())
    from engine.overlap import ThreadSplit

    assert any(line.startswith("cpu threads") and ThreadSplit.of().describe() in line for line in auto.stdout.splitlines())
    exact = streamseg("info", "--precision", "exact")
    assert "memory attention float32, memory encoder float32, mask decoder float32 (exact" in exact.stdout


def test_run_writes_video_and_jsonl_and_prints_the_latency_table(tmp_path, bedroom_clip):
    out, jsonl = tmp_path / "o.mp4", tmp_path / "r.jsonl"
    proc = streamseg("run", str(bedroom_clip), "--detector", "none", "--tracker", "none", "--out", str(out),
                     "--jsonl", str(jsonl), "--max-frames", "12", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "12 frames in" in proc.stdout
    table = proc.stdout.split("12 frames in", 1)[1]
    for stage in ("decode", "detect", "segment", "track", "fuse", "refine", "render", "total", "age"):
        assert f"\n{stage} " in table, proc.stdout
    assert _frames(out) == (12, (960, 540))
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [rec["frame"] for rec in lines] == list(range(12))


def test_the_demo_runs_offline_on_the_bundled_clip_under_the_random_weights_banner(tmp_path):
    """README command 1 after the install, cut to 4 frames: no weights in the (empty) cache."""
    proc = streamseg("demo", "--out-dir", str(tmp_path), "--max-frames", "4", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM WEIGHTS" in proc.stderr and "MEAN NOTHING" in proc.stderr and "streamseg fetch" in proc.stderr
    assert "4 frames in" in proc.stdout and "\ntrack " in proc.stdout, proc.stdout
    assert _frames(tmp_path / "demo.mp4")[0] == 4
    records = [json.loads(line) for line in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2, 3]


@pytest.mark.parametrize("args, needles", [
    (["run", "{tmp}/missing.mp4"], ["missing.mp4"]),
    (["run", "ftp://127.0.0.1/x.mp4"], ["ftp://127.0.0.1/x.mp4"]),
    (["run", "{clip}", "--detector", "none", "--tracker", "none", "--out", "{tmp}/no/dir/o.mp4"], ["o.mp4"]),
    (["run", "{clip}", "--detector", "none", "--tracker", "none", "--jsonl", "{tmp}"], ["directory"]),
    (["run", "{clip}", "--max-frames", "0"], ["--max-frames"]),
    (["run", "{clip}", "--detector", "none", "--prompt", "1:5,5,2,2"], ["prompt"]),
    (["run", "{clip}", "--detector", "none", "--prompt", "1:point=5000,5"], ["--prompt 1:point=5000,5,1", "outside"]),
    (["run", "{clip}", "--detector", "none", "--tracker", "none", "--preview", "--preview-host", "0.0.0.0"],
     ["0.0.0.0", "give a token"]),
    (["run", "{clip}", "--detector", "none", "--tracker", "none", "--preview", "--preview-token-file",
      "{tmp}/token.txt"], ["token.txt", "cannot read"]),
    (["run", "{clip}", "--device", "cuda:0", "--detector", "none", "--tracker", "none"], ["cuda"]),
    (["fetch", "no-such-model"], ["no-such-model"]),
    (["eval", "{tmp}/missing.jsonl", "--truth", "synthetic:seed=1"], ["missing.jsonl"]),
])
def test_user_mistakes_end_in_one_clear_line(tmp_path, bedroom_clip, args, needles):
    if "cuda" in needles and shutil.which("nvidia-smi"):
        pytest.skip("a CUDA device may be present here")
    args = [a.format(tmp=tmp_path, clip=bedroom_clip) for a in args]
    _user_error(streamseg_in_process(*args), *needles)
    assert not (tmp_path / "no").exists()


def test_a_truncated_file_keeps_the_results_written_before_the_cut(tmp_path, bedroom_clip):
    """The input ends early: exit 1 with the reason, and the video and JSONL written until then are
    complete (finalised mp4, whole lines)."""
    whole = tmp_path / "faststart.mp4"
    _remux_faststart(bedroom_clip, whole)  # index at the front: the half before the cut decodes
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    out, jsonl = tmp_path / "o.mp4", tmp_path / "r.jsonl"
    proc = streamseg("run", str(cut), "--detector", "none", "--tracker", "none", "--out", str(out),
                     "--jsonl", str(jsonl), "--quiet")
    _user_error(proc, "cut.mp4", "truncated")
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) > 10
    assert _frames(out)[0] == len(lines)


def _remux_faststart(src: Path, dst: Path) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)


def test_eval_scores_a_run_against_its_synthetic_truth(tmp_path):
    """A run over a synthetic scene with no networks finds nothing: everything is missed, the scores
    say so, and the report is well formed."""
    jsonl = tmp_path / "r.jsonl"
    spec = "synthetic:seed=4,frames=20,size=160x120,objects=3"
    run = streamseg("run", spec, "--detector", "none", "--tracker", "none", "--jsonl", str(jsonl), "--quiet")
    assert run.returncode == 0, run.stderr
    proc = streamseg("eval", str(jsonl), "--truth", spec, "--json", str(tmp_path / "report.json"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frames"] == 20 and report["gt_objects"] == 3 and report["hota"] == 0.0


def test_export_detector_onnx_loads_back_on_onnx_runtime(tmp_path):
    out = tmp_path / "det.onnx"
    proc = streamseg("export", "detector", "--weights", "random", "--imgsz", "320", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    from engine.detect import DetectorConfig, load_detector

    detector = load_detector(DetectorConfig(weights=str(out), backend="onnxruntime", imgsz=320, device="cpu"))
    assert len(detector.names) == 80


def test_export_engine_without_tensorrt_says_what_to_install(tmp_path):
    pytest.importorskip("engine.runtime.tensorrt")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    proc = streamseg("export", "detector", "--format", "engine", "--weights", "random", "--imgsz", "320",
                     "--out", str(tmp_path / "det.engine"))
    _user_error(proc, "TensorRT")


def _masks(record: dict):
    from pycocotools import mask as mask_util

    rles = [{"size": i["mask"]["size"], "counts": i["mask"]["counts"].encode()} for i in record["instances"]]
    return mask_util.decode(rles).transpose(2, 0, 1).astype(bool) if rles else None


@pytest.mark.parametrize("mode", [
    # the detector alone: random weights find dozens of overlapping instances per frame
    ["--tracker", "none", "--weights", "random", "--imgsz", "320"],
    # the tracker alone, from two overlapping box prompts
    ["--detector", "none", "--prompt", "1:300,150,700,500", "--prompt", "2:450,200,900,540",
     "--tracker-weights", "random", "--tracker-size", "256"],
    # both, fused
    pytest.param(["--weights", "random", "--imgsz", "320", "--tracker-weights", "random", "--tracker-size",
                  "256", "--max-tracks", "3"], marks=pytest.mark.slow),
], ids=["detector_only", "tracker_only", "fused"])
def test_no_two_instances_share_a_pixel_in_any_mode(tmp_path, bedroom_clip, mode):
    """The JSONL contract (engine.sinks.jsonl) in every mode the CLI offers."""
    jsonl = tmp_path / "r.jsonl"
    proc = streamseg("run", str(bedroom_clip), *mode, "--max-frames", "3", "--jsonl", str(jsonl), "--quiet",
                     timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 3
    listed = 0
    for record in records:
        masks = _masks(record)
        if masks is not None:
            listed += len(masks)
            assert masks.sum(axis=0).max() <= 1, f"frame {record['frame']}: overlapping masks"
    assert listed >= 2  # there was something to keep apart
