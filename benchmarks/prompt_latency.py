"""Prompt latency: from a client's ``POST /prompts`` to the first result that contains the new track.

    python -m benchmarks.prompt_latency [--clip PATH] [--sizes 256 512] [--tracked 0 2] [--trials 10]
                                        [--live] [--threads 1]

Pipelines per (tracker size, objects already tracked), as many passes over the clip as the trials need,
built as ``streamseg run CLIP --detector none
--preview --prompt ...`` builds it: a real clip read at its own frame rate, every frame in order
(``--live``: newest frame wins, as from a camera; the clip then lasts its own length whatever the engine's
speed, so a slow setting needs more passes), SAM 2 on random weights (the cost is real, the masks are not; the
image encoder on torch). A client thread posts a point prompt to the preview's API, as the page does;
the pipeline's loop notes when each result is handed out. Per trial: the milliseconds from the call to
the hand-out of the first result whose instances hold the new id, the results handed out until then
(1: the very next one; 2 when the call came while a frame was already past the point where prompts
are taken), that result's own frame time, and the API's answer time; then the object is removed (``DELETE``), so the
object count stays what ``--tracked`` says. Reported per setting: p50/p95 of each and the
frames-to-track histogram. The engine keeps up when the prompt is in the next result.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import environment, percentiles, write_json

CLIP = Path(__file__).resolve().parents[1] / "tests" / "media" / "bedroom.mp4"


@dataclass
class _Handed:
    """What the pipeline's loop saw, for the client thread to read."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # (time handed out, frame index, instance ids, the frame's total ms)
    results: list[tuple[float, int, frozenset[int], float]] = field(default_factory=list)

    def add(self, result) -> None:
        with self.lock:
            self.results.append((time.perf_counter(), result.index, frozenset(result.instances.ids.tolist()),
                                 result.times.total))

    def first_with(self, obj_id: int, after: float) -> tuple[float, int, float] | None:
        """(seconds after ``after``, results handed out since, that frame's ms) for the first result
        holding ``obj_id``."""
        with self.lock:
            count = 0
            for t, _, ids, total in self.results:
                if t <= after:
                    continue
                count += 1
                if obj_id in ids:
                    return t - after, count, total
        return None

    def latest(self) -> int:
        with self.lock:
            return self.results[-1][1] if self.results else -1


def _request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    answer = conn.getresponse()
    text = answer.read()
    conn.close()
    return answer.status, json.loads(text)


def _client(port: int, handed: _Handed, *, trials: int, width: int, height: int, out: list[dict],
            done: threading.Event, ended: threading.Event) -> None:
    """Post point prompts one after another, each removed once it has shown up, until ``out`` holds
    ``trials`` or the clip ``ended`` (a trial cut short by the end is dropped)."""
    try:
        while handed.latest() < 10 and not ended.is_set():  # let the stream settle
            time.sleep(0.05)
        while len(out) < trials and not ended.is_set():
            k = len(out)
            x, y = width * (0.2 + 0.6 * ((k * 7) % 10) / 10), height * (0.25 + 0.5 * ((k * 3) % 10) / 10)
            sent = time.perf_counter()
            try:
                status, answer = _request(port, "POST", "/prompts", {"points": [[x, y]], "labels": [1]})
            except OSError:
                return  # the clip ended and the preview closed

            answered = time.perf_counter() - sent
            if status != 202:
                return  # the stream ended while the prompt waited (503)
            while (seen := handed.first_with(answer["id"], sent)) is None:
                if ended.is_set():
                    return
                time.sleep(0.005)
            out.append({"id": answer["id"], "ms": seen[0] * 1000.0, "frames": seen[1], "frame_ms": seen[2],
                        "answer_ms": answered * 1000.0})
            try:
                _request(port, "DELETE", f"/tracks/{answer['id']}")
            except OSError:
                return
            time.sleep(0.3)
    finally:
        done.set()


def _one_pass(options, handed: _Handed, samples: list[dict], *, trials: int, width: int, height: int) -> None:
    """One pipeline over the clip, the client prompting it until the trials are done or the clip ends."""
    from engine.app import build_pipeline
    from engine.sinks import PreviewServer

    pipeline = build_pipeline(options).pipeline
    preview = next(s for s in pipeline.stream.sinks if isinstance(s, PreviewServer))
    done, ended = threading.Event(), threading.Event()
    client = threading.Thread(target=_client, args=(preview._server.server_address[1], handed),
                              kwargs={"trials": trials, "width": width, "height": height, "out": samples,
                                      "done": done, "ended": ended}, daemon=True)
    client.start()
    try:
        for result in pipeline:
            handed.add(result)
            if done.is_set():
                break
    finally:
        ended.set()
        client.join(timeout=15)


def measure(*, clip: Path, size: int, tracked: int, trials: int, live: bool, passes: int = 8) -> dict:
    """One setting: pipelines on ``clip`` with ``tracked`` objects prompted from the first frame, run
    again from the start of the clip until ``trials`` prompts were measured (at most ``passes``)."""
    import av

    from engine.options import RunOptions

    with av.open(str(clip)) as probe:
        width, height = probe.streams.video[0].width, probe.streams.video[0].height
    prompts = tuple(f"{k + 1}:point={width * (k + 1) / (tracked + 1):.0f},{height / 2:.0f}" for k in range(tracked))
    options = RunOptions(source=str(clip), realtime=True, live=live, detector="none", tracker_weights="random",
                         tracker_size=size, tracker_encoder="torch", device="cpu", preview=True, preview_port=0,
                         prompts=prompts)
    samples: list[dict] = []
    for _ in range(passes):
        _one_pass(options, _Handed(), samples, trials=trials, width=width, height=height)
        if len(samples) >= trials:
            break
    else:
        raise RuntimeError(f"size {size}, {tracked} tracked: {len(samples)} of {trials} trials in {passes} passes")
    frames = [s["frames"] for s in samples]
    return {"size": size, "tracked": tracked, "live": live, "trials": samples,
            "latency_ms": percentiles([s["ms"] for s in samples]),
            "answer_ms": percentiles([s["answer_ms"] for s in samples]),
            "frames": {"p50": statistics.median(frames), "max": max(frames),
                       "histogram": dict(sorted(Counter(frames).items()))},
            "frame_ms": percentiles([s["frame_ms"] for s in samples])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--tracked", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--live", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own); on a machine other jobs load, 1 (a "
                             "2-thread run there waits for descheduled threads, benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    rows, path = [], None
    for size in args.sizes:
        for tracked in args.tracked:
            rows.append(measure(clip=args.clip, size=size, tracked=tracked, trials=args.trials, live=args.live))
            print(f"size {size}, {tracked} tracked: p50 {rows[-1]['latency_ms']['p50']:.0f} ms", flush=True)
            # written after every setting, so a run cut short keeps what it measured
            path = write_json("prompt_latency", {"environment": environment(), "clip": str(args.clip), "rows": rows},
                              out=path)
    print("| tracker size | objects tracked | call -> result ms, p50 / p95 | frames, p50 / max | "
          "API answer ms, p50 | that frame's ms, p50 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['size']} | {r['tracked']} | {r['latency_ms']['p50']:.0f} / {r['latency_ms']['p95']:.0f} | "
              f"{r['frames']['p50']:g} / {r['frames']['max']} | {r['answer_ms']['p50']:.0f} | "
              f"{r['frame_ms']['p50']:.0f} |")
    print(f"raw: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
