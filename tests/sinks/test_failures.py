"""Every output's failure paths, through the CLI as a user meets them: one clear line (never a crash),
nothing written before lost, and no file an earlier run left emptied by a run that could not start."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import av
import pytest

from tests.sinks.outputs import (
    ROOT,
    inner,
    jsonl_records,
    one_error_line,
    playable_frames,
    run_on_tmpfs,
    streamseg,
    streamseg_argv,
)

SCENE = "synthetic:seed=1,frames=20,size=160x120"
NO_NETWORKS = ("--detector", "none", "--tracker", "none", "--quiet")


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """A good r.jsonl and o.mp4, as an earlier run leaves them."""
    out = tmp_path_factory.mktemp("earlier")
    proc = streamseg("run", SCENE, *NO_NETWORKS, "--jsonl", str(out / "r.jsonl"), "--out", str(out / "o.mp4"))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def busy_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _copy_earlier(earlier: Path, into: Path) -> dict[str, bytes]:
    for name in ("r.jsonl", "o.mp4"):
        shutil.copy(earlier / name, into / name)
    return {name: (into / name).read_bytes() for name in ("r.jsonl", "o.mp4")}


@pytest.mark.parametrize("outputs, needles, kept", [
    pytest.param(["--jsonl", "{tmp}/r.jsonl", "--out", "{tmp}/nonexistent/x.mp4"],
                 ["x.mp4", "does not exist"], ["r.jsonl"], id="out-in-a-missing-directory"),
    pytest.param(["--jsonl", "{tmp}/nonexistent/r.jsonl", "--out", "{tmp}/o.mp4"],
                 ["r.jsonl", "does not exist"], ["o.mp4"], id="jsonl-in-a-missing-directory"),
    pytest.param(["--jsonl", "{tmp}/r.jsonl", "--out", "{tmp}"], ["is a directory"], ["r.jsonl"],
                 id="out-is-a-directory"),
    pytest.param(["--jsonl", "{tmp}/r.jsonl", "--out", "/proc/streamseg-test.mp4"], ["streamseg-test.mp4"],
                 ["r.jsonl"], id="out-on-a-filesystem-refusing-new-files"),
    pytest.param(["--jsonl", "{tmp}/r.jsonl", "--out", "{tmp}/o.mp4", "--preview",
                  "--preview-port", "{port}"], ["{port}", "--preview-port"], ["r.jsonl", "o.mp4"],
                 id="preview-port-busy"),
])
def test_an_output_that_cannot_work_fails_before_any_file_is_touched(tmp_path, earlier_run, busy_port,
                                                                     outputs, needles, kept):
    before = _copy_earlier(earlier_run, tmp_path)
    args = [a.format(tmp=tmp_path, port=busy_port) for a in outputs]
    one_error_line(streamseg("run", SCENE, *NO_NETWORKS, *args), *(n.format(port=busy_port) for n in needles))
    for name in kept:
        assert (tmp_path / name).read_bytes() == before[name], f"{name} from the earlier run was changed"
    assert not (tmp_path / "nonexistent").exists()


def test_video_to_a_full_device_is_one_error_line_not_a_crash(tmp_path):
    """/dev/full refuses every write: FFmpeg must not be written to again after its failed write (a
    segfault, exit 139, with nothing printed). The results file keeps whole lines."""
    jsonl = tmp_path / "r.jsonl"
    proc = streamseg("run", SCENE, *NO_NETWORKS, "--jsonl", str(jsonl), "--out", "/dev/full")
    one_error_line(proc, "/dev/full", "No space left on device")
    assert 1 <= len(jsonl_records(jsonl)) <= 20


def test_results_to_a_full_device_fail_before_the_video_is_started(tmp_path, earlier_run):
    """The JSONL is written first: its failure on the first frame ends the run before the video
    writer got a frame, so an earlier video at --out is untouched."""
    before = _copy_earlier(earlier_run, tmp_path)
    proc = streamseg("run", SCENE, *NO_NETWORKS, "--jsonl", "/dev/full", "--out", str(tmp_path / "o.mp4"))
    one_error_line(proc, "/dev/full", "No space left on device")
    assert (tmp_path / "o.mp4").read_bytes() == before["o.mp4"]


def test_a_disk_that_fills_mid_run_keeps_whole_lines_and_a_playable_video(tmp_path, bedroom_clip):
    """A 512 KiB filesystem fills after about 60 frames of bedroom.mp4 (960x540): the run ends with
    one line naming the file, the JSONL holds whole lines, and the video plays without a decoding
    error up to its last whole fragment (one second, 30 frames)."""
    disk, saved = tmp_path / "disk", tmp_path / "saved"
    saved.mkdir()
    argv = streamseg_argv("run", str(bedroom_clip), *NO_NETWORKS, "--jsonl", str(disk / "r.jsonl"),
                          "--out", str(disk / "o.mp4"))
    proc = inner(run_on_tmpfs(disk, "size=512k", argv, after=f"cp {disk}/r.jsonl {disk}/o.mp4 {saved}/"))
    error = one_error_line(proc, "No space left on device")
    assert str(disk) in error
    lines = jsonl_records(saved / "r.jsonl")
    count, times = playable_frames(saved / "o.mp4")
    with av.open(str(saved / "o.mp4")) as container:  # no damaged tail: it was cut away
        assert sum(1 for _ in container.decode(video=0)) == count
    assert 30 <= count <= len(lines) < 200
    assert times == sorted(times) and times[0] == 0.0


@pytest.mark.parametrize("failing, kept", [
    pytest.param("--out", "r.jsonl", id="video-on-a-read-only-filesystem"),
    pytest.param("--jsonl", "o.mp4", id="results-on-a-read-only-filesystem"),
])
def test_an_output_on_a_read_only_filesystem_fails_before_the_run(tmp_path, earlier_run, failing, kept):
    """Checked by opening, not by permission bits (which root ignores): EROFS names the cause."""
    before = _copy_earlier(earlier_run, tmp_path)
    readonly = tmp_path / "readonly"
    outputs = {"--jsonl": str(tmp_path / "r.jsonl"), "--out": str(tmp_path / "o.mp4")}
    outputs[failing] = str(readonly / ("x.mp4" if failing == "--out" else "x.jsonl"))
    proc = inner(run_on_tmpfs(readonly, "ro", streamseg_argv(
        "run", SCENE, *NO_NETWORKS, *[a for pair in outputs.items() for a in pair])))
    one_error_line(proc, "read-only file system", failing)
    assert (tmp_path / kept).read_bytes() == before[kept]


@pytest.mark.timeout(120)
def test_a_killed_run_leaves_whole_lines_and_a_playable_video(tmp_path):
    """SIGKILL mid-stream (no cleanup runs): every JSONL line parses, and the fragmented video plays
    its whole fragments, frames in order from 0."""
    jsonl, video = tmp_path / "r.jsonl", tmp_path / "o.mp4"
    proc = subprocess.Popen(streamseg_argv("run", "synthetic:seed=2,frames=100000,size=320x240", *NO_NETWORKS,
                                           "--jsonl", str(jsonl), "--out", str(video)),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 100:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    lines = jsonl_records(jsonl)
    count, times = playable_frames(video)
    assert len(lines) >= 100 and [r["frame"] for r in lines] == list(range(len(lines)))
    assert 30 <= count <= len(lines)
    assert times == sorted(times) and times[0] == 0.0


def test_a_source_that_fails_before_its_first_frame_leaves_no_output_files(tmp_path):
    """No empty files for a stream that never delivered a frame, and an earlier file at the path
    stays as it was."""
    from engine.errors import SourceError
    from engine.pipeline import Pipeline
    from engine.sinks import JsonlWriter, Mp4Writer
    from tests.doubles import ArraySource, moving_square_frames

    earlier = tmp_path / "r.jsonl"
    earlier.write_text('{"frame": 0}\n')
    sinks = [JsonlWriter(earlier), Mp4Writer(tmp_path / "o.mp4", fps=30)]
    with pytest.raises(SourceError, match="broke at frame 0"):
        Pipeline(ArraySource(moving_square_frames(3), fail_after=0), sinks=sinks).run()
    assert earlier.read_text() == '{"frame": 0}\n'
    assert not (tmp_path / "o.mp4").exists()
