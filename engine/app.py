"""From run options to a ready ``Pipeline``: weights resolution, stage construction, sinks.

The CLI's ``run`` and ``demo`` and the benchmarks build pipelines here, so every entry point resolves
weights the same way: a path, the official file fetched earlier into the cache, or ``random`` (built
from the model config, meaningless, announced by a banner). Nothing is ever downloaded here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import ConfigError
from engine.options import RunOptions
from engine.pipeline import Pipeline
from engine.processor import SharedStages
from engine.prompts import PromptQueue
from engine.runtime.device import resolve_device
from engine.types import UserPrompt
from engine.weights import KNOWN_WEIGHTS, resolve_weights

__all__ = ["BuiltPipeline", "RunOptions", "build_pipeline", "random_weights_banner", "resolve_detector_weights",
           "resolve_tracker_weights"]


@dataclass(slots=True)
class BuiltPipeline:
    pipeline: Pipeline
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (what, where) for the summary
    random_weights: list[str] = field(default_factory=list)  # which networks run on random weights
    notes: list[str] = field(default_factory=list)  # one-line messages for the user
    collector: object | None = None  # the uncertainty collector (engine.data.Collector) of --collect


def build_pipeline(opts: RunOptions) -> BuiltPipeline:
    """Open the source first, then the sinks (each checks its output; files appear with the first frame),
    then the networks: a bad input or output fails in seconds, before any model loads, and nothing is
    written for a run that never delivers a frame."""
    from engine.sources import open_source

    device = resolve_device(opts.device)
    source = open_source(opts.source, **opts.params("source"))
    info = source.info
    built = BuiltPipeline(pipeline=None)  # type: ignore[arg-type]
    sinks: list = []
    try:
        prompts = _prompts(opts, info)
        sinks = _sinks(opts, fps=info.fps, live=info.live, built=built)
        detector = _detector(opts, device, built)
        if built.collector is not None and detector is not None:
            built.collector.name_classes(detector.names)
        tracker = _tracker(opts, device, built)
        fuser = _fuser(opts, detector, tracker, built)
    except BaseException:
        for sink in sinks:
            sink.close()
        source.close()
        raise
    built.pipeline = Pipeline(source, shared=SharedStages(detector=detector), tracker=tracker, fuser=fuser,
                              sinks=sinks, prompts=prompts, device=device, detect_every=opts.detect_every,
                              max_frames=opts.max_frames)
    return built


def _prompts(opts: RunOptions, info) -> PromptQueue:
    """``--prompt`` boxes as user prompts on the first frame, checked against the source's frame size
    before any model loads."""
    queue = PromptQueue()
    for obj_id, box in opts.prompts:
        prompt = UserPrompt(obj_id=obj_id, box=box)
        prompt.check_in_frame(info.height, info.width)
        queue.put(prompt)
    return queue


def resolve_detector_weights(model: str, given: str | None, *, fallback: bool = False,
                             notes: list[str] | None = None) -> str:
    """``--weights`` resolved (``engine.weights.resolve_weights``), the official file being ``model``'s."""
    from engine.detect.registry import load_known_weights

    load_known_weights()
    return resolve_weights(given, model=model, what="detector", option="--weights",
                           official=KNOWN_WEIGHTS.get(model), fallback=fallback, notes=notes)


def resolve_tracker_weights(name: str, given: str | None, *, fallback: bool = False,
                            notes: list[str] | None = None) -> str:
    """``--tracker-weights`` resolved, the official file being the checkpoint of tracker ``name``."""
    from engine.track.registry import official_checkpoint

    return resolve_weights(given, model=name, what="tracker", option="--tracker-weights",
                           official=official_checkpoint(name), fallback=fallback, notes=notes)


def _detector(opts: RunOptions, device, built: BuiltPipeline):
    if opts.detector == "none":
        return None
    from engine.detect import DetectorConfig, load_detector

    weights = resolve_detector_weights(opts.detector, opts.weights, fallback=opts.random_fallback,
                                       notes=built.notes)
    cfg = DetectorConfig(model=opts.detector, weights=weights, backend=opts.backend, device=str(device),
                         conf=opts.conf, iou=opts.iou, imgsz=opts.imgsz, seed=opts.seed)
    detector = load_detector(cfg)
    if detector.random_weights:
        built.random_weights.append(f"detector {opts.detector}")
    return detector


def _tracker(opts: RunOptions, device, built: BuiltPipeline):
    if opts.tracker == "none":
        return None
    from engine.track import load_tracker
    from engine.track.config import TrackerConfig

    weights = resolve_tracker_weights(opts.tracker, opts.tracker_weights, fallback=opts.random_fallback,
                                      notes=built.notes)
    size = opts.tracker_size or (1024 if device.type == "cuda" else 512)
    encoder = opts.tracker_encoder
    if encoder == "auto":  # ONNX Runtime runs hiera 1.2x faster than torch on a CPU (engine.track.encoder)
        encoder = "torch" if device.type == "cuda" else "onnxruntime"
    tracker = load_tracker(opts.tracker, weights=weights, image_size=size, device=str(device),
                           seed=opts.seed, options=TrackerConfig(encoder_backend=encoder))
    if tracker.random_weights:
        built.random_weights.append(f"tracker {opts.tracker}")
    return tracker


def _fuser(opts: RunOptions, detector, tracker, built: BuiltPipeline):
    from engine.fuse import Fuser, FuserConfig, TracksOnly

    if tracker is None:
        return None  # the pipeline's default: detections only, or nothing
    if detector is None:
        if not opts.prompts:
            raise ConfigError("with --detector none the tracker needs --prompt ID:X1,Y1,X2,Y2 boxes to follow")
        return TracksOnly()

    spawn_conf = opts.spawn_conf
    if spawn_conf is None:
        spawn_conf = FuserConfig().spawn_conf
        if detector.random_weights:
            # Random weights score every detection near the threshold; their scores mean nothing, so
            # a track starts from any detection the detector keeps.
            spawn_conf = opts.conf
            built.notes.append(f"random detector weights: tracks start from any detection (--spawn-conf {opts.conf})")
    return Fuser(FuserConfig(spawn_conf=spawn_conf, max_tracks=opts.max_tracks), names=detector.names)


def _sinks(opts: RunOptions, *, fps: float | None, live: bool, built: BuiltPipeline) -> list:
    from engine.sinks import JsonlWriter, Mp4Writer, PreviewServer

    sinks = []
    try:
        if opts.jsonl is not None:
            sinks.append(JsonlWriter(opts.jsonl))
            built.outputs.append(("results", str(opts.jsonl)))
        if opts.out is not None:
            sinks.append(Mp4Writer(opts.out, fps=fps, live=live))
            built.outputs.append(("video", str(opts.out)))
        if opts.preview:
            preview = PreviewServer(host=opts.preview_host, port=opts.preview_port)
            sinks.append(preview)
            built.outputs.append(("preview", preview.url))
            built.notes.append(f"live preview at {preview.url}")
        if opts.collect is not None:
            built.collector = _collector(opts)
            sinks.append(built.collector)
            built.outputs.append(("collection", str(opts.collect)))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _collector(opts: RunOptions):
    """The uncertainty collector of ``--collect`` (checks its folder now; writes from the first frame)."""
    from engine.data import Collector, CollectorConfig, SelectorConfig

    selector = SelectorConfig(window=opts.collect_window, per_window=opts.collect_per_window,
                              min_spacing=opts.collect_spacing, budget=opts.collect_budget)
    config = CollectorConfig(selector=selector, val_every=opts.collect_val_every, rank=opts.collect_rank,
                             seed=opts.seed, prefix=opts.collect_prefix)
    return Collector(opts.collect, config=config)


def random_weights_banner(networks: list[str]) -> str:
    """The loud warning printed before a run on random weights."""
    lines = [
        "RANDOM WEIGHTS: " + ", ".join(networks) + " initialised at random.",
        "The masks, classes, scores and ids this run produces MEAN NOTHING;",
        "it only exercises the engine (decode, networks, tracking, fusion, outputs)",
        "at its real computational cost.",
        "For real results, on a machine that is online:",
        "    streamseg fetch yolov8n-seg && streamseg fetch sam2.1_hiera_tiny",
        "then run again (fetched weights are found automatically), or pass",
        "    --weights PATH/yolov8n-seg.pt --tracker-weights PATH/sam2.1_hiera_tiny.pt",
    ]
    width = max(len(line) for line in lines) + 4
    bar = "#" * width
    body = [f"# {line:<{width - 4}} #" for line in lines]
    return "\n".join([bar, *body, bar])
