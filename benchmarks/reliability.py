"""Reliability figures for the video sources, on 127.0.0.1 only, each bounded in time.

``rtsp-kills``: a real RTSP server (GStreamer's, ``tests/rtsp_server.py``) streams a clip; every
``duration / (kills + 1)`` seconds it is SIGKILLed, stays down for a seeded 1-6 s, and is started again
on the same port. Per kill: whether the stream resumed, and the time from the server accepting
connections again to the first new frame decoded. ``--through cli`` (the default) reads the stream
with ``streamseg run URL --detector none --tracker none --jsonl --out`` in a subprocess, as a user would,
ends it with Ctrl-C (SIGINT) after ``duration`` and checks what it left: exit code, JSONL lines whole,
frame indices missing between lines (frames the live buffer dropped), pts increasing, MP4 frames =
JSONL lines, its summary; and its RSS and thread count every 10 s and before each kill (the first kill
comes after one stretch of warm-up). ``--through source`` reads an ``RtspSource`` in this process
(frames, the source's counters, this process's RSS).

``fuzz``: mutated copies of the real clips (seeded bit flips, truncations, zeroed ranges, swapped
chunks), each read to its end through ``FileSource`` in a worker process under a time limit. A case
ends clean, with a clear error (``SourceError``), with a traceback (any other exception, or the source's
catch-all for an unexpected decoder failure), in a hang (no answer within the limit) or in a crash (the
worker died); a clean end that lost frames without saying so, or delivered pts that do not increase,
is counted too. A case that times out is retried once, in a fresh worker with four times the time,
before it counts as a hang: on a loaded machine slow is not hung. Workers report ready before their
first case, so their start (importing torch) is never timed as a case. The worker survives case after case (importing torch per case would cost more than the
decoding); one that hangs or dies is replaced and the case recorded.

    python -m benchmarks.reliability rtsp-kills [--kills 10] [--duration 300] [--seed 0] [--out PATH]
                                                [--through cli|source] [--run-args "FLAGS"]
    python -m benchmarks.reliability fuzz [--cases 1000] [--start 0] [--seed 0] [--time-limit 30]
                                          [--out PATH] [--rows PATH] [--only CASE ...]
    python -m benchmarks.reliability fuzz-summary ROWS.jsonl [ROWS.jsonl ...] [--out PATH]

Both write JSON (machine, versions, date, every case) under benchmarks/out/ and print a summary.
A fuzz run can be split: ``--start A --cases B`` runs case numbers A..B-1 (each case is built from the
seed and its number alone, so the parts together are the whole run), each part appending its rows to a
JSON-lines file (``--rows``); ``fuzz-summary`` counts the outcomes over such files, the last row of a
case number winning where a case was run twice.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.common import environment, write_json
from benchmarks.rtsp_kills import print_kills, rtsp_kills, rtsp_kills_cli

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "tests" / "media"
MUTATIONS = ("bitflip", "truncate", "zero", "swap")
OUTCOMES = ("clean", "error", "traceback", "hang", "crash")


# --- mutated bitstreams --------------------------------------------------------------------------


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One seeded mutation of a file's bytes: ``bitflip`` (1-64 bits anywhere), ``truncate`` (cut at
    1-99 %), ``zero`` (16 B - 64 KiB zeroed), ``swap`` (two 1-64 KiB chunks exchanged)."""
    out = bytearray(data)
    n = len(out)
    if kind == "bitflip":
        for at in rng.integers(0, n, int(rng.integers(1, 65))):
            out[at] ^= 1 << int(rng.integers(0, 8))
    elif kind == "truncate":
        del out[int(n * rng.uniform(0.01, 0.99)):]
    elif kind == "zero":
        size = int(rng.integers(16, 65537))
        at = int(rng.integers(0, n - size))
        out[at:at + size] = bytes(size)
    elif kind == "swap":
        size = int(rng.integers(1024, 65537))
        a, b = sorted(int(x) for x in rng.choice(n // size, 2, replace=False) * size)
        out[a:a + size], out[b:b + size] = out[b:b + size], out[a:a + size]
    else:
        raise ValueError(f"unknown mutation {kind!r}; use one of {MUTATIONS}")
    return bytes(out)


def read_case(path: str) -> dict:
    """What reading ``path`` through the file source gives (runs in the worker process)."""
    import traceback

    from engine.errors import SourceError, StreamsegError
    from engine.sources import open_source

    row: dict = {"frames": 0, "pts_ok": True, "message": None}
    started = time.monotonic()
    src = None
    try:
        src = open_source(path)
        row["declared"] = src.info.frame_count
        last = None
        with src:
            for frame in src:
                row["frames"] += 1
                if frame.pts is None or (last is not None and frame.pts <= last):
                    row["pts_ok"] = False
                last = frame.pts
        row["outcome"] = "clean"
    except SourceError as exc:
        # The decode thread's catch-all turns an unexpected exception into "decoding failed": a bug.
        row["outcome"] = "traceback" if ": decoding failed: " in str(exc) else "error"
        row["message"] = str(exc)
    except StreamsegError as exc:
        row["outcome"], row["message"] = "error", str(exc)
    except Exception:  # noqa: BLE001 - recorded, not raised: this is what the benchmark counts
        row["outcome"], row["message"] = "traceback", traceback.format_exc(limit=8)
    if src is not None:
        row.update(lost=src.stats.lost, corrupt=src.stats.corrupt, summary=src.loss_summary())
        src.close()
    declared = row.get("declared")
    row["silent_loss"] = (row["outcome"] == "clean" and declared is not None and row["frames"] < declared
                          and not row.get("summary"))
    row["seconds"] = round(time.monotonic() - started, 3)
    return row


def _worker() -> None:
    """Say ``ready`` once the engine is imported, then read case paths from stdin, one per line, and
    answer each with one JSON line on stdout."""
    import engine.sources  # noqa: F401 - imported before the first case's clock starts

    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(read_case(line.strip()), default=str), flush=True)


_STARTUP_LIMIT_S = 300.0  # a worker importing torch on a loaded 2-core machine; not part of any case


class _Worker:
    def __init__(self, log: Path) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.reliability", "_worker"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        if self._line(_STARTUP_LIMIT_S) != "ready\n":
            self.close()
            raise RuntimeError(f"the fuzz worker did not start; see {log}")

    def _line(self, timeout_s: float) -> str:
        """The worker's next stdout line, '' when none comes within ``timeout_s`` or it exited."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout=timeout_s)
        return self.proc.stdout.readline() if ready else ""

    def ask(self, path: Path, time_limit_s: float) -> dict:
        """The case's row; a hang or crash is recorded and the worker is then finished."""
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        line = self._line(time_limit_s)
        if line:
            return json.loads(line)
        if self.proc.poll() is None:  # still running: it did not answer in time
            self.close()
            return {"outcome": "hang", "message": f"no answer within {time_limit_s:g} s"}
        code = self.proc.wait(timeout=30)
        self.close()
        return {"outcome": "crash", "message": f"worker exited with {code}"}

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


def fuzz(*, cases: int = 1000, start: int = 0, seed: int = 0, time_limit_s: float = 30.0,
         clips: Sequence[Path] | None = None, rows_path: Path | None = None,
         only: Sequence[int] | None = None) -> dict:
    """Run ``cases`` mutated files through the file source (see the module docstring); returns the
    counts per outcome and mutation, and every case. Each row is also appended to ``rows_path`` (JSON
    lines) as it comes, so an interrupted run keeps what it measured. A case that does not answer within
    ``time_limit_s`` is run once more in a fresh worker with four times the time before it counts as a
    hang: on a loaded machine a slow case is not a hung one. Runs case numbers ``start``..``cases``-1,
    or just the numbers in ``only`` (each is built from the seed and its number, as in a full run)."""
    if not 0 <= start <= cases:
        raise ValueError(f"start must be in 0..cases ({cases}), got {start}")
    clips = list(clips or sorted(MEDIA.glob("*.mp4")))
    originals = {c: c.read_bytes() for c in clips}
    rows = []
    started = time.monotonic()
    sink = rows_path.open("a") if rows_path is not None else None
    with tempfile.TemporaryDirectory(prefix="streamseg-fuzz-") as tmp:
        worker = None
        for n, i in enumerate(range(start, cases) if only is None else only, 1):
            clip, kind = clips[i % len(clips)], MUTATIONS[(i // len(clips)) % len(MUTATIONS)]
            path = Path(tmp) / f"case{i:04d}{clip.suffix}"
            path.write_bytes(mutate(originals[clip], kind, np.random.default_rng([seed, i])))
            row, worker = _ask(worker, path, time_limit_s, Path(tmp) / "worker.log")
            rows.append({"case": i, "clip": clip.name, "mutation": kind, **row})
            if sink is not None:
                sink.write(json.dumps(rows[-1], default=str) + "\n")
                sink.flush()
            path.unlink()
            if n % 100 == 0:
                print(f"{n} cases (up to case {i}), {time.monotonic() - started:.0f} s: "
                      f"{dict(Counter(r['outcome'] for r in rows))}", flush=True)
        if worker is not None and worker.alive:
            worker.close()
    if sink is not None:
        sink.close()
    return {"cases": len(rows), "first_case": start if only is None else None, "seed": seed, "time_limit_s": time_limit_s, "seconds": time.monotonic() - started,
            **summarize(rows), "rows": rows}


def _ask(worker: _Worker | None, path: Path, time_limit_s: float, log: Path) -> tuple[dict, _Worker]:
    """One case's row, retried once in a fresh, already started worker with four times the time when
    it timed out."""
    for limit in (time_limit_s, 4 * time_limit_s):
        if worker is None or not worker.alive:
            worker = _Worker(log)
        row = worker.ask(path, limit)
        if row["outcome"] != "hang":
            return row, worker
    return row, worker


def summarize(rows: list[dict]) -> dict:
    """Counts per outcome and per mutation, silent losses and non-increasing pts over ``rows``."""
    return {"outcomes": {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES},
            "by_mutation": {k: dict(Counter(r["outcome"] for r in rows if r["mutation"] == k)) for k in MUTATIONS},
            "silent_loss": sum(bool(r.get("silent_loss")) for r in rows),
            "pts_not_increasing": sum(not r.get("pts_ok", True) for r in rows)}


def read_rows(paths: Sequence[Path]) -> list[dict]:
    """The rows of ``fuzz --rows`` files, one per case number (a case run again replaces its row),
    in case order."""
    by_case: dict[int, dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                by_case[row["case"]] = row
    return [by_case[i] for i in sorted(by_case)]


# --- command line --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    kills = sub.add_parser("rtsp-kills", help="kill and restart an RTSP server mid-stream")
    kills.add_argument("--kills", type=int, default=10)
    kills.add_argument("--duration", type=float, default=300.0, help="seconds of streaming")
    kills.add_argument("--seed", type=int, default=0)
    kills.add_argument("--clip", type=Path, default=MEDIA / "bedroom.mp4")
    kills.add_argument("--out", type=Path, default=None)
    kills.add_argument("--through", choices=("cli", "source"), default="cli",
                       help="cli: streamseg run with JSONL and MP4 outputs, ended by Ctrl-C (default); "
                            "source: the RTSP source alone, in this process")
    kills.add_argument("--run-args", default="", help="more streamseg run flags, one string (--through cli)")
    fz = sub.add_parser("fuzz", help="mutated bitstreams through the file source")
    fz.add_argument("--cases", type=int, default=1000)
    fz.add_argument("--start", type=int, default=0, help="first case number (a part of a split run)")
    fz.add_argument("--seed", type=int, default=0)
    fz.add_argument("--time-limit", type=float, default=30.0, help="seconds per case before it is a hang")
    fz.add_argument("--out", type=Path, default=None)
    fz.add_argument("--rows", type=Path, default=None, help="also append each case to this JSON-lines file")
    fz.add_argument("--only", type=int, nargs="+", default=None, help="run just these case numbers")
    fs = sub.add_parser("fuzz-summary", help="outcomes over the rows files of one or more fuzz runs")
    fs.add_argument("rows", type=Path, nargs="+")
    fs.add_argument("--out", type=Path, default=None)
    sub.add_parser("_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "_worker":
        _worker()
    elif args.command == "rtsp-kills":
        if args.through == "cli":
            report = rtsp_kills_cli(clip=args.clip, kills=args.kills, duration_s=args.duration, seed=args.seed,
                                    run_args=shlex.split(args.run_args))
        else:
            report = rtsp_kills(clip=args.clip, kills=args.kills, duration_s=args.duration, seed=args.seed)
        out = write_json("reliability-rtsp-kills", {**environment(), **asdict(report)}, out=args.out)
        print_kills(report)
        print(f"written to {out}")
    else:
        if args.command == "fuzz-summary":
            rows = read_rows(args.rows)
            result = {"cases": len(rows), "rows_files": [str(p) for p in args.rows],
                      "seconds": sum(r.get("seconds", 0.0) for r in rows), **summarize(rows), "rows": rows}
        else:
            result = fuzz(cases=args.cases, start=args.start, seed=args.seed, time_limit_s=args.time_limit,
                          rows_path=args.rows, only=args.only)
        out = write_json("reliability-fuzz", {**environment(), **result}, out=args.out)
        print(f"{result['cases']} cases: outcomes {result['outcomes']}; silent losses {result['silent_loss']}; "
              f"pts not increasing {result['pts_not_increasing']}; {result['seconds']:.0f} s\n"
              f"by mutation {result['by_mutation']}")
        print(f"written to {out}")


if __name__ == "__main__":
    main()
