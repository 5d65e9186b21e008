"""``streamseg run`` and ``streamseg demo``: build the pipeline from options, run it, report."""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

from engine.options import RunOptions, add_flags, from_args, given

DEMO_CLIP = "bedroom_demo.mp4"
DEMO_OPTIONS = ("max_frames", "device", "preview", "preview_port", "max_tracks", "tracker_size")
SYNTHETIC_DEMO_FRAMES = 150  # 5 s of the held-out scene: about a minute on a 2-core CPU


def add_to(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="segment and track a file, RTSP stream, camera or URL",
                         description="Segment and track SOURCE: a video file, rtsp://..., /dev/videoN, "
                                     "http(s)://... or synthetic:seed=N,frames=N,size=WxH. Options come "
                                     "from their defaults, then --config FILE.toml, then the flags given.")
    add_flags(run)
    add_config_flag(run)
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.set_defaults(command=cmd_run)

    demo = sub.add_parser("demo", help="run the whole engine on the bundled example clip or a synthetic scene",
                          description="Segment and track the bundled example clip (or, with --scene synthetic, a "
                                      "synthetic scene with exact truth); writes an overlay video and a JSONL "
                                      "into --out-dir and prints per-stage latency (and, on the synthetic "
                                      "scene, HOTA and J&F against its truth).")
    demo.add_argument("--scene", choices=("clip", "synthetic"), default="clip",
                      help="clip: the bundled bedroom clip; synthetic: a held-out scene of the closed loop, with "
                           "the loop's fine-tuned weights when built (python -m benchmarks.closed_loop)")
    demo.add_argument("--out-dir", type=Path, default=Path("streamseg-demo"),
                      help="where demo.mp4 and demo.jsonl go (default: ./streamseg-demo)")
    add_flags(demo, only=DEMO_OPTIONS, source=False,
              defaults={"max_frames": "all 90", "max_tracks": "8 on a GPU, 4 on a CPU",
                        "tracker_size": "1024 on a GPU, 256 on a CPU"})
    demo.add_argument("--quiet", action="store_true", help="no progress line")
    demo.set_defaults(command=cmd_demo)


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE.toml",
                        help="read options from this TOML file; flags given override it (the format: "
                             "'streamseg config', examples/run.toml)")


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(from_args(args, config=args.config), quiet=args.quiet)


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.runtime.device import resolve_device

    args.out_dir.mkdir(parents=True, exist_ok=True)
    flags = given(args)
    # The demo should finish in about a minute on a 2-core CPU: a small tracker input and few tracks
    # there (3.7 min at 512 px and 8 tracks, measured 2026-11-24); full size on a GPU.
    on_gpu = resolve_device(flags.get("device", "auto")).type == "cuda"
    clip = resources.files("engine") / "data" / DEMO_CLIP
    overrides = {"source": str(clip), "out": args.out_dir / "demo.mp4", "jsonl": args.out_dir / "demo.jsonl",
                 "tracker_size": 1024 if on_gpu else 256, "max_tracks": 8 if on_gpu else 4,
                 "random_fallback": True}
    if args.scene == "synthetic":
        return _synthetic_demo(args, overrides)
    return _execute(from_args(args, overrides=overrides), quiet=args.quiet)


def _synthetic_demo(args: argparse.Namespace, overrides: dict) -> int:
    """The first held-out scene of the closed loop, on the loop's fine-tuned checkpoints when the cache
    holds them (random weights otherwise, said loudly), scored against the scene's truth."""
    from engine.data.synthetic_loop import (DETECTOR_IMGSZ, HELD_OUT_SEEDS, LOOP_OPTIONS, MAX_TRACKS, TRACKER_SIZE,
                                            loop_weights, scene_spec)
    from engine.eval.results import evaluate_against_scene, read_results
    from engine.sources.synthetic import SyntheticScene

    spec = scene_spec(HELD_OUT_SEEDS[0], frames=SYNTHETIC_DEMO_FRAMES)
    weights = loop_weights()
    overrides.update(LOOP_OPTIONS, source=spec, imgsz=DETECTOR_IMGSZ, tracker_size=TRACKER_SIZE, max_tracks=MAX_TRACKS)
    if weights.present:
        overrides.update(weights=str(weights.detector), tracker_weights=str(weights.tracker))
        print(f"streamseg: closed-loop weights: {weights.detector}, {weights.tracker}", file=sys.stderr)
    else:
        # refining random masks shows nothing, and the CRF's library comes with the 'data' extra (the loop's)
        overrides.update(weights="random", tracker_weights="random", refine="none")
        print(f"streamseg: no closed-loop weights in {weights.detector.parent}; build them with "
              "`python -m benchmarks.closed_loop` (about 27 minutes of a 2-core CPU). Running on random weights.",
              file=sys.stderr)
    options = from_args(args, overrides=overrides)
    code = _execute(options, quiet=args.quiet)
    report = evaluate_against_scene(read_results(options.jsonl), SyntheticScene.from_spec(spec.removeprefix("synthetic:")))
    print(f"quality against the scene's truth ({spec}, TrackEval):")
    print(f"  HOTA {report.hota:.3f}  DetA {report.deta:.3f}  AssA {report.assa:.3f}  J {report.j_mean:.3f}  "
          f"F {report.f_mean:.3f}  J&F {report.j_and_f:.3f}  ID switches {report.id_switches}")
    return code


def _execute(options: RunOptions, *, quiet: bool) -> int:
    from engine.app import build_pipeline, random_weights_banner  # the stages' libraries load only for a run

    built = build_pipeline(options)
    if built.random_weights:
        print(random_weights_banner(built.random_weights), file=sys.stderr)
    for line in built.notes:
        print(f"streamseg: {line}", file=sys.stderr)
    pipeline = built.pipeline
    progress = _Progress(enabled=not quiet)
    started = time.perf_counter()
    ending = "the end of the stream"
    results = iter(pipeline)
    try:
        try:
            for result in results:
                progress.update(result)
        finally:
            # Finalises the sinks (the MP4's index, the JSONL's last line) whatever ended the loop,
            # before the summary says where they are.
            results.close()
    except KeyboardInterrupt:
        ending = "Ctrl-C"
        raise
    except BaseException:
        ending = "the error below"
        raise
    finally:
        progress.done()
        print_summary(pipeline, built.outputs, wall_s=time.perf_counter() - started, ending=ending)
        if built.collector is not None:  # what was kept before an error stays kept: say so then too
            collector = built.collector
            print(f"collected: {collector.kept} frames kept in all, of {collector.scored} scored in this run "
                  f"(label them, then `streamseg finetune`; see engine/data/README.md)")
    return 0


def print_summary(pipeline, outputs: list[tuple[str, str]], *, wall_s: float, ending: str) -> None:
    """The run's summary on stdout, printed on every exit once the pipeline exists (end of stream,
    ``--max-frames``, an error, Ctrl-C): frames and rate, the source's drops, damaged packets, lost
    frames and reconnections, the latency table, what the source lost in words, the outputs, and what
    stopped the run when it was not the stream's end."""
    stats = pipeline.source.stats
    fps = pipeline.frames / wall_s if wall_s > 0 else 0.0
    print(f"{pipeline.frames} frames in {wall_s:.1f} s ({fps:.1f} frames/s); dropped {stats.dropped}, "
          f"damaged packets {stats.corrupt}, lost {stats.lost}, reconnects {stats.reconnects}; "
          f"device {pipeline.device}")
    print(pipeline.latency.format())
    losses = pipeline.source.loss_summary()
    if losses:
        print(f"source: {losses}")
    for what, where in outputs:
        written = "://" in where or Path(where).exists()
        print(f"{what}: {where}" + ("" if written else " (not written: no frame reached it)"))
    if ending != "the end of the stream":
        print(f"stopped by {ending} after {pipeline.frames} frames; the outputs above are closed and whole")
    sys.stdout.flush()


class _Progress:
    """One status line a second on stderr: frames, rate, drops, reconnects, frame age."""

    def __init__(self, *, enabled: bool, every_s: float = 1.0) -> None:
        self.enabled = enabled
        self.every_s = every_s
        self.tty = sys.stderr.isatty()
        self._t0 = self._last = time.perf_counter()
        self._frames = 0
        self._printed = False

    def update(self, result) -> None:
        self._frames += 1
        now = time.perf_counter()
        if not self.enabled or now - self._last < self.every_s:
            return
        self._last = now
        fps = self._frames / (now - self._t0)
        stats = result.stats
        line = (f"frame {result.frame.index:>6}  {fps:6.1f} fps  dropped {stats.dropped}  "
                f"reconnects {stats.reconnects}  age {result.age_ms:7.1f} ms")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)
        self._printed = True

    def done(self) -> None:
        if self.enabled and self.tty and self._printed:
            print(file=sys.stderr)
