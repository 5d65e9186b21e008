"""``streamseg run`` prints its summary (frames, drops, damaged packets, reconnects, the latency table,
the outputs) on every exit: the stream's end, an error mid-run, Ctrl-C; and what it wrote until then
stays whole. The real command runs as a subprocess; Ctrl-C is a SIGINT sent once the first result is
on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("decode", "detect", "track", "fuse", "refine", "render", "total", "age")


# ``python -m engine``, with Ctrl-C as a user's shell gives it. A child inherits an ignored or blocked
# SIGINT from the process that starts it, and Python then never raises KeyboardInterrupt; what ran
# before in the test worker must not decide whether this command sees the user's Ctrl-C.
_AS_FROM_A_SHELL = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); sys.argv[0] = 'engine'; "
                    "runpy.run_module('engine', run_name='__main__', alter_sys=True)")


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # conftest points STREAMSEG_CACHE at an empty folder
    return subprocess.Popen([sys.executable, "-c", _AS_FROM_A_SHELL, "run", *args, "--detector", "none",
                             "--tracker", "none", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _wait_for_first_line(path: Path, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, f"ended before its first result: {proc.communicate()}"
        assert time.monotonic() < deadline, "no result within the time limit"
        time.sleep(0.05)


def _summary(stdout: str) -> tuple[int, dict[str, int], str]:
    """(frames, counters, the text after the first line) of the summary on ``stdout``."""
    first = next(line for line in stdout.splitlines() if " frames in " in line)
    counters = {key: int(value) for key, value in
                (part.rsplit(" ", 1) for part in first.split("; ")[1].split(", "))}
    return int(first.split()[0]), counters, stdout.split(first, 1)[1]


def _outputs_whole(jsonl: Path, mp4: Path, frames: int) -> None:
    """Every JSONL line is a whole record, one per frame the summary counts, and the MP4 plays with
    as many frames."""
    text = jsonl.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == frames > 0
    with av.open(str(mp4)) as container:
        assert sum(1 for _ in container.decode(video=0)) == frames


def test_the_summary_counts_damaged_packets_and_lost_frames_at_a_clean_end(tmp_path: Path) -> None:
    data = bytearray((ROOT / "tests" / "media" / "01_dog.mp4").read_bytes())
    at = len(data) // 10  # 01_dog's index comes first: this noise lands in the samples of frames ~20-40
    data[at:at + 65536] = np.random.default_rng(0).integers(0, 256, 65536, np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(data)
    jsonl, mp4 = tmp_path / "r.jsonl", tmp_path / "o.mp4"
    out, err = _start(str(damaged), "--jsonl", str(jsonl), "--out", str(mp4), "--max-frames", "60").communicate(
        timeout=300)
    frames, counters, rest = _summary(out)
    assert frames == 60 and counters["damaged packets"] > 0 and counters["lost"] > 0, out
    assert "source: " in rest and "damaged packets skipped" in rest and "frames lost" in rest, out
    assert "stopped by" not in rest and err.count("streamseg: error") == 0, (out, err)
    _outputs_whole(jsonl, mp4, frames)


def test_ctrl_c_prints_the_summary_exits_130_and_leaves_whole_outputs(tmp_path: Path, bedroom_clip: Path) -> None:
    jsonl, mp4 = tmp_path / "r.jsonl", tmp_path / "o.mp4"
    # --realtime paces the 6.7 s clip like a camera, so the run is still going when Ctrl-C comes.
    proc = _start(str(bedroom_clip), "--realtime", "--jsonl", str(jsonl), "--out", str(mp4))
    try:
        _wait_for_first_line(jsonl, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "interrupted" in err, err
    frames, counters, rest = _summary(out)
    assert 0 < frames < 200 and set(counters) >= {"dropped", "damaged packets", "lost", "reconnects"}, out
    for stage in STAGES:
        assert f"\n{stage} " in rest, out
    assert f"results: {jsonl}" in rest and f"video: {mp4}" in rest, out
    assert f"stopped by Ctrl-C after {frames} frames" in rest, out
    _outputs_whole(jsonl, mp4, frames)


def test_a_stream_lost_for_good_prints_the_summary_then_the_error(tmp_path: Path, bedroom_clip: Path) -> None:
    from tests.rtsp_server import RtspServer

    jsonl, mp4 = tmp_path / "r.jsonl", tmp_path / "o.mp4"
    with RtspServer(bedroom_clip) as server:
        # Retried four times a second for 1.5 s, then given up: the user's policy bounds the outage.
        proc = _start(server.url, "--jsonl", str(jsonl), "--out", str(mp4), "--reconnect-interval", "0.25",
                      "--give-up-after", "1.5")
        try:
            _wait_for_first_line(jsonl, proc)
            server.stop()  # as a crash or a power cut: the connection closes under the client
            lost_at = time.monotonic()
            out, err = proc.communicate(timeout=120)
            ended_after = time.monotonic() - lost_at
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("streamseg: error:")]
    assert len(errors) == 1 and server.url in errors[0] and "stream lost" in errors[0], err
    assert "the 1.5 s limit is reached" in errors[0] and "connection refused" in errors[0], errors[0]
    # The give-up time, the summary and closing the outputs; a loaded machine adds seconds, not minutes.
    assert ended_after < 30, ended_after
    assert "Traceback" not in err, err
    frames, counters, rest = _summary(out)
    assert frames > 0 and counters["reconnects"] == 0, out
    for stage in STAGES:
        assert f"\n{stage} " in rest, out
    assert f"stopped by the error below after {frames} frames" in rest, out
    _outputs_whole(jsonl, mp4, frames)


def test_an_input_that_fails_at_open_prints_its_error_and_no_summary(tmp_path: Path) -> None:
    # Nothing ran: the pipeline never existed, so there is nothing to sum up.
    out, err = _start(str(tmp_path / "missing.mp4")).communicate(timeout=120)
    assert "missing.mp4" in err and " frames in " not in out, (out, err)
