"""``streamseg run`` and ``streamseg demo``: build the pipeline from options, run it, report."""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

from engine.app import RunOptions, build_pipeline, random_weights_banner
from engine.errors import ConfigError

DEMO_CLIP = "bedroom_demo.mp4"


def add_to(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="segment and track a file, RTSP stream, camera or URL",
                         description="Segment and track SOURCE: a video file, rtsp://..., /dev/videoN, "
                                     "http(s)://... or synthetic:seed=N,frames=N,size=WxH")
    run.add_argument("source", help="file path, rtsp:// or http(s):// URL, /dev/videoN, or synthetic:...")
    _add_run_options(run)
    run.set_defaults(command=cmd_run)

    demo = sub.add_parser("demo", help="run the whole engine on the bundled example clip",
                          description="Segment and track the bundled example clip; writes an overlay "
                                      "video and a JSONL into --out-dir and prints per-stage latency.")
    demo.add_argument("--out-dir", type=Path, default=Path("streamseg-demo"),
                      help="where demo.mp4 and demo.jsonl go (default: ./streamseg-demo)")
    demo.add_argument("--max-frames", type=int, default=None, help="stop after N frames (default: all 90)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    demo.add_argument("--preview", action="store_true", help="also serve a live preview in the browser")
    demo.add_argument("--preview-port", type=int, default=8080)
    demo.add_argument("--max-tracks", type=int, default=None,
                      help="most objects tracked at once (default 8 on a GPU, 4 on a CPU)")
    demo.add_argument("--tracker-size", type=int, default=None,
                      help="tracker image size (default 1024 on a GPU, 256 on a CPU)")
    demo.add_argument("--quiet", action="store_true", help="no progress line")
    demo.set_defaults(command=cmd_demo)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("outputs")
    out.add_argument("--out", type=Path, help="write the overlay video here (.mp4, H.264)")
    out.add_argument("--jsonl", type=Path, help="write one JSON line of results per frame here")
    out.add_argument("--preview", action="store_true", help="serve a live MJPEG preview over HTTP")
    out.add_argument("--preview-host", default="127.0.0.1",
                     help="interface for the preview (default 127.0.0.1: this machine only)")
    out.add_argument("--preview-port", type=int, default=8080, help="preview port (default 8080; 0 = any)")
    out.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    out.add_argument("--quiet", action="store_true", help="no progress line")

    det = p.add_argument_group("detector (YOLOv8-seg; thresholds default to Ultralytics')")
    det.add_argument("--detector", default="yolov8n-seg",
                     help="model name (yolov8n-seg ... yolov8x-seg), a model .yaml, or none")
    det.add_argument("--weights", default=None,
                     help="detector weights: .pt, .onnx or .engine path, or 'random' (default: the "
                          "fetched official file for --detector, see 'streamseg fetch')")
    det.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    det.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25)")
    det.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    det.add_argument("--imgsz", type=int, default=640, help="network input size (default 640)")
    det.add_argument("--seed", type=int, default=0, help="seed for --weights random (default 0)")
    det.add_argument("--detect-every", type=int, default=1,
                     help="run the detector on every k-th frame; the tracker fills the rest")

    trk = p.add_argument_group("tracker (SAM 2)")
    trk.add_argument("--tracker", default="sam2.1_hiera_t",
                     help="sam2.1_hiera_t, _s, _b+, _l, a sam2 config path, or none (default sam2.1_hiera_t)")
    trk.add_argument("--tracker-weights", default=None,
                     help="sam2 checkpoint path or 'random' (default: the fetched official checkpoint)")
    trk.add_argument("--tracker-size", type=int, default=None,
                     help="tracker image size (default: 1024 on a GPU, 512 on a CPU)")
    trk.add_argument("--tracker-encoder", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"],
                     help="what runs SAM 2's image encoder (default: onnxruntime on a CPU, torch on a GPU)")
    trk.add_argument("--spawn-conf", type=float, default=None,
                     help="detection confidence that starts a track (default 0.5; --conf on random weights)")
    trk.add_argument("--max-tracks", type=int, default=32, help="most objects tracked at once (default 32)")
    trk.add_argument("--prompt", action="append", default=[], metavar="ID:X1,Y1,X2,Y2",
                     help="track this box from the first frame (repeatable); with --detector none the "
                          "tracker follows only these objects")

    src = p.add_argument_group("source")
    live = src.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_true", default=None,
                      help="newest-frame-wins buffering (default for rtsp:// and cameras)")
    live.add_argument("--no-live", dest="live", action="store_false",
                      help="deliver every frame in order (default for files and http(s))")
    src.add_argument("--realtime", action="store_true", help="read a file at its own frame rate, like a camera")
    src.add_argument("--buffer", type=int, default=2, help="frames held between decoder and pipeline")
    src.add_argument("--reconnect-attempts", type=int, default=5, help="for live streams (default 5)")
    src.add_argument("--io-timeout", type=float, default=5.0, help="network read timeout, seconds")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def _options(args: argparse.Namespace, *, source: str, demo: bool = False) -> RunOptions:
    return RunOptions(
        source=source, out=args.out, jsonl=args.jsonl, preview=args.preview, preview_host=args.preview_host,
        preview_port=args.preview_port, max_frames=args.max_frames, device=args.device,
        detector=args.detector, weights=args.weights, backend=args.backend, conf=args.conf, iou=args.iou,
        imgsz=args.imgsz, seed=args.seed, detect_every=args.detect_every, tracker=args.tracker,
        tracker_weights=args.tracker_weights, tracker_size=args.tracker_size, tracker_encoder=args.tracker_encoder,
        prompts=tuple(_parse_prompt(p) for p in args.prompt), spawn_conf=args.spawn_conf,
        max_tracks=args.max_tracks, live=args.live, realtime=args.realtime,
        buffer=args.buffer, reconnect_attempts=args.reconnect_attempts, io_timeout_s=args.io_timeout,
        random_fallback=demo,
    )


def _parse_prompt(text: str) -> tuple[int, tuple[float, float, float, float]]:
    try:
        obj, box = text.split(":", 1)
        x1, y1, x2, y2 = (float(v) for v in box.split(","))
        return int(obj), (x1, y1, x2, y2)
    except ValueError:
        raise ConfigError(f"--prompt {text!r}: expected ID:X1,Y1,X2,Y2, e.g. 1:10,20,200,240") from None


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(_options(args, source=args.source), quiet=args.quiet)


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.runtime.device import resolve_device

    args.out_dir.mkdir(parents=True, exist_ok=True)
    # The demo should finish in about a minute on a 2-core CPU: a small tracker input and few tracks
    # there (3.7 min at 512 px and 8 tracks, measured 2026-11-24); full size on a GPU.
    on_gpu = resolve_device(args.device).type == "cuda"
    tracker_size = args.tracker_size or (1024 if on_gpu else 256)
    max_tracks = args.max_tracks or (8 if on_gpu else 4)
    clip = resources.files("engine") / "data" / DEMO_CLIP
    ns = argparse.Namespace(
        out=args.out_dir / "demo.mp4", jsonl=args.out_dir / "demo.jsonl", preview=args.preview,
        preview_host="127.0.0.1", preview_port=args.preview_port, max_frames=args.max_frames,
        device=args.device, detector="yolov8n-seg", weights=None, backend="auto", conf=0.25, iou=0.7,
        imgsz=640, seed=0, detect_every=1, tracker="sam2.1_hiera_t", tracker_weights=None,
        tracker_size=tracker_size, tracker_encoder="auto", prompt=[], spawn_conf=None, max_tracks=max_tracks,
        live=None, realtime=False, buffer=2, reconnect_attempts=5, io_timeout=5.0)
    return _execute(_options(ns, source=str(clip), demo=True), quiet=args.quiet)


def _execute(options: RunOptions, *, quiet: bool) -> int:
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
