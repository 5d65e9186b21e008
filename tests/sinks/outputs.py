"""Helpers for the output tests: the CLI as a user runs it, reading outputs back, and private mounts
(a full or read-only filesystem) made with ``unshare`` so no test needs the host's root."""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parents[2]


def streamseg_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def streamseg(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(streamseg_argv(*args), check=False, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A user-facing failure: exit 1 (not a crash: 139 is a segfault), one 'streamseg: error:' line
    naming ``needles``, no traceback."""
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("streamseg: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def jsonl_records(path: Path) -> list[dict]:
    """Every line of a results file, each parsed (a cut-off line fails the test)."""
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the last line is cut off"
    return [json.loads(line) for line in text.splitlines()]


def playable_frames(path: Path) -> tuple[int, list[float]]:
    """Frames a player gets from ``path`` and their times; decoding stops at the first damaged packet
    (a fragment torn by a kill), so what comes before must be whole."""
    times: list[float] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                times.append(float(frame.time))
    except av.error.FFmpegError:
        pass
    return len(times), times


@functools.cache
def private_mounts_work() -> bool:
    """Whether this machine lets an unprivileged user namespace mount a tmpfs (``unshare -rm``)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           check=False, capture_output=True, timeout=20)
    return probe.returncode == 0


def run_on_tmpfs(mountpoint: Path, options: str, command: list[str], *, after: str = "",
                 timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``command`` with a private tmpfs (mount ``options``, e.g. ``size=512k`` or ``ro``) over
    ``mountpoint``, then the shell line ``after`` (the tmpfs and its files vanish with the namespace:
    copy out what the test reads). The command's exit status is printed last as ``rc=N``."""
    if not private_mounts_work():
        pytest.skip("unshare -rm cannot mount a private tmpfs here (user namespaces disabled)")
    mountpoint.mkdir(parents=True, exist_ok=True)
    script = (f"mount -t tmpfs -o {shlex.quote(options)} tmpfs {shlex.quote(str(mountpoint))} || exit 99; "
              f"{shlex.join(command)}; rc=$?; {after or 'true'}; echo rc=$rc")
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], check=False, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def inner(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """The command run by ``run_on_tmpfs`` as if it had been run alone (its exit status, its output)."""
    assert proc.returncode == 0, f"the namespace itself failed ({proc.returncode}): {proc.stderr}"
    *out, last = proc.stdout.rstrip("\n").split("\n")
    return subprocess.CompletedProcess(proc.args, int(last.removeprefix("rc=")), "\n".join(out), proc.stderr)
