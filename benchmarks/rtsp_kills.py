"""RTSP server kills for ``python -m benchmarks.reliability rtsp-kills`` (its docstring says what is
measured): a real RTSP server is SIGKILLed and restarted under ``streamseg run`` (``rtsp_kills_cli``)
or under an ``RtspSource`` in this process (``rtsp_kills``)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "tests" / "media"
_FIRST_RESULT_LIMIT_S = 300.0  # streamseg importing torch on a loaded 2-core machine, then connecting


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# --- RTSP server kills ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kill:
    at_s: float  # seconds into the run when the server was killed
    down_s: float  # seconds it stayed down (kill to the restarted server accepting connections)
    resumed: bool  # a frame arrived after the restart
    restart_to_frame_s: float | None  # restarted server accepting connections -> first new frame decoded


@dataclass(slots=True)
class KillReport:
    clip: str
    kills: list[Kill] = field(default_factory=list)
    frames: int = 0  # frames the consumer read
    stats: dict = field(default_factory=dict)  # the source's SourceStats at the end
    rss_samples_mib: list[float] = field(default_factory=list)  # MiB before each kill (the first after warm-up)
    #   and at the end, still streaming
    duration_s: float = 0.0
    error: str | None = None  # the source's error, if it gave up


def looped_ts(clip: Path, seconds: float, out: Path) -> Path:
    """``clip``'s packets repeated, timestamps running on, into one MPEG-TS of at least ``seconds``: a
    long stream for the RTSP server without re-encoding."""
    import av

    with av.open(str(clip)) as src:
        vin = src.streams.video[0]
        packets = [p for p in src.demux(vin) if p.dts is not None]
        span = (max(p.pts for p in packets) - min(p.pts for p in packets)) + packets[0].duration
        repeats = max(1, int(np.ceil(seconds / float(span * vin.time_base))))
        with av.open(str(out), "w") as dst:
            vout = dst.add_stream_from_template(vin)
            for r in range(repeats):
                for p in packets:
                    copy = av.Packet(bytes(p))
                    copy.pts, copy.dts, copy.duration = p.pts + r * span, p.dts + r * span, p.duration
                    copy.time_base, copy.stream = vin.time_base, vout
                    copy.is_keyframe = p.is_keyframe
                    dst.mux(copy)
    return out


def rtsp_kills(*, clip: Path = MEDIA / "bedroom.mp4", kills: int = 10, duration_s: float = 300.0, seed: int = 0,
               down_s: tuple[float, float] = (1.0, 6.0), reconnect_interval_s: float = 1.0,
               io_timeout_s: float = 5.0) -> KillReport:
    """Kill and restart the RTSP server ``kills`` times over ``duration_s`` seconds (see the module
    docstring). Bounded: the run ends by ``duration_s`` plus the last outage and a minute of margin."""
    from engine.sources import open_source
    from tests.rtsp_server import RtspServer

    rng = np.random.default_rng(seed)
    stretch = duration_s / (kills + 1)
    report = KillReport(clip=clip.name)
    with tempfile.TemporaryDirectory(prefix="streamseg-kills-") as tmp:
        stream = looped_ts(clip, 2 * stretch + 10, Path(tmp) / "looped.ts")
        server = RtspServer(stream).start()
        src = open_source(server.url, reconnect_interval_s=reconnect_interval_s, io_timeout_s=io_timeout_s,
                          give_up_s=120.0)
        reader = _Reader(src)
        started = time.monotonic()
        try:
            reader.start()
            restarts: list[tuple[float, float, float]] = []  # (kill at, down, restart wall time)
            for k in range(kills):
                _sleep_until(started + (k + 1) * stretch, reader)
                report.rss_samples_mib.append(round(rss_mib(), 1))
                kill_at = time.monotonic() - started
                server.stop()
                down = float(rng.uniform(*down_s))
                time.sleep(down)
                server.start()
                restarts.append((kill_at, time.monotonic() - started - kill_at, time.time()))
            _sleep_until(started + duration_s, reader)
            report.rss_samples_mib.append(round(rss_mib(), 1))
        finally:
            src.close()
            server.stop()
            reader.join()
        report.duration_s = time.monotonic() - started
    report.kills = [_kill_row(kill_at, down, restarted, reader.capture_times) for kill_at, down, restarted in restarts]
    report.frames, report.error = len(reader.capture_times), reader.error
    report.stats = src.stats.as_dict()
    return report


class _Reader(threading.Thread):
    """Reads the source as fast as it delivers, noting each frame's capture time."""

    def __init__(self, src) -> None:
        super().__init__(daemon=True)
        self.src = src
        self.capture_times: list[float] = []
        self.error: str | None = None

    def run(self) -> None:
        from engine.errors import SourceError

        try:
            while (frame := self.src.read(timeout=300.0)) is not None:
                self.capture_times.append(frame.capture_time)
        except SourceError as exc:
            self.error = str(exc)


def _sleep_until(deadline: float, reader: _Reader) -> None:
    while (left := deadline - time.monotonic()) > 0:
        if not reader.is_alive():
            raise RuntimeError(f"the source stopped early: {reader.error or 'the stream ended'}")
        time.sleep(min(left, 0.5))


def _kill_row(kill_at: float, down: float, restarted: float, capture_times: list[float]) -> Kill:
    after = [t for t in capture_times if t > restarted]
    first = min(after) if after else None
    return Kill(at_s=round(kill_at, 2), down_s=round(down, 2), resumed=first is not None,
                restart_to_frame_s=None if first is None else round(first - restarted, 3))


# --- RTSP server kills through the whole CLI -------------------------------------------------------


@dataclass(slots=True)
class CliKillReport:
    clip: str
    command: list[str]  # the streamseg command line (URL and output paths are temporary)
    kills: list[Kill] = field(default_factory=list)
    exit_code: int | None = None  # 130 after the SIGINT at the end; anything else: it ended before
    jsonl_lines: int = 0
    jsonl_whole: bool = False  # every line a JSON object, the file ending in a newline
    index_gaps: int = 0  # frame indices missing between JSONL lines: frames the live buffer dropped
    pts_increasing: bool = False  # JSONL pts strictly increasing over the run, reconnections included
    mp4_frames: int = 0  # frames decoded from the overlay MP4
    rss_samples_mib: list[float] = field(default_factory=list)  # the CLI's RSS before each kill and at the end
    rss_trace: list[list[float]] = field(default_factory=list)  # [s since the first result, RSS MiB, threads]
    #   every 10 s
    summary: str = ""  # what the CLI printed on stdout (its end-of-run summary)
    stderr_tail: str = ""
    duration_s: float = 0.0


def pid_rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (Linux /proc); nan when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def rtsp_kills_cli(*, clip: Path = MEDIA / "bedroom.mp4", kills: int = 10, duration_s: float = 300.0,
                   seed: int = 0, down_s: tuple[float, float] = (1.0, 6.0),
                   run_args: Sequence[str] = ()) -> CliKillReport:
    """``streamseg run URL --detector none --tracker none --jsonl --out`` (no networks: the outputs and
    the source are what is measured) as a subprocess while the server is killed and restarted as in
    ``rtsp_kills``; Ctrl-C (SIGINT) ends it after ``duration_s``. The restart-to-first-frame times come
    from the JSONL's capture times; then the outputs are checked: JSONL lines whole, MP4 frames = JSONL
    lines. ``run_args`` are added to the command (e.g. the reconnect policy's flags)."""
    from tests.rtsp_server import RtspServer

    rng = np.random.default_rng(seed)
    stretch = duration_s / (kills + 1)
    with tempfile.TemporaryDirectory(prefix="streamseg-kills-") as tmp:
        stream = looped_ts(clip, 2 * stretch + 10, Path(tmp) / "looped.ts")
        jsonl, mp4 = Path(tmp) / "run.jsonl", Path(tmp) / "run.mp4"
        server = RtspServer(stream).start()
        command = [sys.executable, "-m", "engine", "run", server.url, "--detector", "none", "--tracker", "none",
                   "--jsonl", str(jsonl), "--out", str(mp4), "--quiet", *run_args]
        report = CliKillReport(clip=clip.name, command=[*command[2:4], "URL", *command[5:]])
        stderr_path = Path(tmp) / "stderr.txt"
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        restarts: list[tuple[float, float, float]] = []
        started = time.monotonic()
        try:
            _wait_for_lines(jsonl, proc, timeout_s=_FIRST_RESULT_LIMIT_S)
            started = time.monotonic()  # the stretches count from the first result
            for k in range(kills):
                if not _sleep_while_running(started + (k + 1) * stretch, proc, report.rss_trace, started):
                    break
                report.rss_samples_mib.append(round(pid_rss_mib(proc.pid), 1))
                kill_at = time.monotonic() - started
                server.stop()
                time.sleep(float(rng.uniform(*down_s)))
                server.start()
                restarts.append((kill_at, time.monotonic() - started - kill_at, time.time()))
            if _sleep_while_running(started + duration_s, proc, report.rss_trace, started):
                report.rss_samples_mib.append(round(pid_rss_mib(proc.pid), 1))
                proc.send_signal(signal.SIGINT)
            report.summary = proc.communicate(timeout=120)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
                report.summary = proc.communicate()[0]
            server.stop()
        report.exit_code = proc.returncode
        report.duration_s = round(time.monotonic() - started, 1)
        report.stderr_tail = stderr_path.read_text()[-2000:]
        records = _check_jsonl(jsonl, report)
        report.mp4_frames = _mp4_frames(mp4)
    capture_times = [r["capture_time"] for r in records]
    report.kills = [_kill_row(at, down, restarted, capture_times) for at, down, restarted in restarts]
    return report


def _wait_for_lines(path: Path, proc: subprocess.Popen, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.stat().st_size > 0):
        if proc.poll() is not None:
            raise RuntimeError(f"streamseg ended before its first result (exit {proc.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no result within {timeout_s:g} s")
        time.sleep(0.2)


def _sleep_while_running(deadline: float, proc: subprocess.Popen, trace: list | None = None,
                         started: float = 0.0, every_s: float = 10.0) -> bool:
    """Sleep until ``deadline``; False as soon as ``proc`` has ended (its outputs are still checked).
    Every ``every_s`` seconds (since ``started``) appends ``[seconds, RSS MiB, threads]`` to ``trace``."""
    while (left := deadline - time.monotonic()) > 0:
        if proc.poll() is not None:
            return False
        now = time.monotonic() - started
        if trace is not None and (not trace or now - trace[-1][0] >= every_s):
            trace.append([round(now, 1), round(pid_rss_mib(proc.pid), 1), pid_threads(proc.pid)])
        time.sleep(min(left, 0.5))
    return proc.poll() is None


def pid_threads(pid: int) -> int:
    """Threads of process ``pid`` (0 when it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def _check_jsonl(path: Path, report: CliKillReport) -> list[dict]:
    """The JSONL's records; fills in the report's line count, wholeness, index gaps and pts order."""
    if not path.exists():
        return []
    text = path.read_text()
    records = []
    whole = text.endswith("\n")
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            whole = False
            continue
        whole = whole and isinstance(record, dict)
        records.append(record)
    report.jsonl_lines, report.jsonl_whole = len(records), whole and bool(records)
    frames = [r["frame"] for r in records]
    report.index_gaps = sum(b - a - 1 for a, b in itertools.pairwise(frames))
    pts = [r["pts"] for r in records]
    report.pts_increasing = all(p is not None for p in pts) and all(b > a for a, b in itertools.pairwise(pts))
    return records


def _mp4_frames(path: Path) -> int:
    """Frames decoded from ``path`` (0 when it is missing or unreadable)."""
    import av

    try:
        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(video=0))
    except (OSError, av.error.FFmpegError):
        return 0


def print_kills(report: KillReport | CliKillReport) -> None:
    times = [k.restart_to_frame_s for k in report.kills if k.restart_to_frame_s is not None]
    print(f"{'kill':>4}{'at s':>8}{'down s':>8}{'resumed':>9}{'restart->frame s':>18}")
    for i, k in enumerate(report.kills, 1):
        print(f"{i:>4}{k.at_s:>8.1f}{k.down_s:>8.2f}{k.resumed!s:>9}{k.restart_to_frame_s!s:>18}")
    if times:
        print(f"resumed {sum(k.resumed for k in report.kills)}/{len(report.kills)}; restart->first frame "
              f"p50 {statistics.median(times):.2f} s, max {max(times):.2f} s, <= 2 s in "
              f"{sum(t <= 2.0 for t in times)}/{len(report.kills)}")
    if isinstance(report, KillReport):
        print(f"frames {report.frames}; stats {report.stats}; RSS before each kill and at the end (MiB): "
              f"{report.rss_samples_mib}; error: {report.error}")
        return
    print(f"exit {report.exit_code}; JSONL {report.jsonl_lines} lines, whole {report.jsonl_whole}, index gaps "
          f"{report.index_gaps}, pts increasing {report.pts_increasing}; MP4 {report.mp4_frames} frames; "
          f"RSS before each kill and at the end (MiB): {report.rss_samples_mib}")
    print(f"streamseg's summary:\n{report.summary.rstrip()}")
    if report.exit_code != 130:
        print(f"streamseg ended before the Ctrl-C; its stderr ends:\n{report.stderr_tail.rstrip()}")
