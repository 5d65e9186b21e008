"""From run options to a ready ``Pipeline``: weights resolution, stage construction, sinks.

The CLI's ``run`` and ``demo`` and the benchmarks build pipelines here, so every entry point resolves
weights the same way: a path, the official file fetched earlier into the cache, or ``random`` (built
from the model config, meaningless, announced by a banner). Nothing is ever downloaded here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from engine.errors import ConfigError, WeightsError
from engine.options import RunOptions, describe
from engine.prompt_syntax import PROMPT_SYNTAX, format_prompt
from engine.overlap import ThreadSplit, torch_threads
from engine.pipeline import Pipeline
from engine.processor import SharedStages, Stream
from engine.prompts import PromptQueue
from engine.runtime.device import resolve_device
from engine.weights import KNOWN_WEIGHTS, resolve_weights

__all__ = ["MODEL_OPTIONS", "BuiltPipeline", "BuiltStream", "RunOptions", "SharedModels", "build_pipeline",
           "build_stream", "load_models", "model_key", "preview_token", "random_weights_banner",
           "resolve_detector_weights", "resolve_segmenter_weights", "resolve_tracker_weights"]

TOKEN_VARIABLE = "STREAMSEG_PREVIEW_TOKEN"
MIN_TOKEN_CHARS = 16  # 16 random URL-safe characters: 96 bits, beyond guessing over HTTP


@dataclass(slots=True)
class BuiltPipeline:
    pipeline: Pipeline
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (what, where) for the summary
    random_weights: list[str] = field(default_factory=list)  # which networks run on random weights
    notes: list[str] = field(default_factory=list)  # one-line messages for the user
    collector: object | None = None  # the uncertainty collector (engine.data.Collector) of --collect


# The options that build the networks: streams whose values agree can share one loaded copy of them
# (one detector and segmenter batch and one tracker model per multi-stream loop); the others are each
# stream's own.
MODEL_OPTIONS = ("device", "seed", "detector", "weights", "backend", "conf", "iou", "imgsz", "segmenter",
                 "segmenter_weights", "segment_encoder", "segment_labels", "segment_every", "segment_imgsz",
                 "tracker", "tracker_weights", "tracker_size", "tracker_encoder", "refine", "random_fallback")


def model_key(opts: RunOptions) -> tuple:
    """What streams must agree on to share their networks (``MODEL_OPTIONS``)."""
    return tuple(getattr(opts, name) for name in MODEL_OPTIONS)


@dataclass(slots=True)
class SharedModels:
    """The networks of a group of streams, loaded once: the shared stages (one batch per tick) and a
    tracker model every stream builds its own tracker on (``tracker_for_stream``)."""

    device: torch.device
    detector: object | None
    tracker: object | None  # a tracker on the shared model, never stepped itself
    segmenter: object | None = None
    labels: object | None = None  # the segmenter's label set (the panoptic writer's categories)
    refiner: object | None = None  # boundary refinement of every stream's final masks (--refine)
    random_weights: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def shared(self) -> SharedStages:
        return SharedStages(detector=self.detector, segmenter=self.segmenter, refiner=self.refiner)

    def tracker_for_stream(self):
        """A tracker with empty memory on the shared model (and its exported image encoder), or None."""
        t = self.tracker
        if t is None:
            return None
        return type(t)(t.model, options=t.options, random_weights=t.random_weights)


def load_models(opts: RunOptions) -> SharedModels:
    """The networks ``opts`` names (``MODEL_OPTIONS``), loaded once for any number of streams."""
    if opts.overlap:
        raise ConfigError(f"{describe('overlap')} overlaps the stages of one stream (streamseg run); a "
                          "multi-stream loop batches its streams instead: drop it")
    device = resolve_device(opts.device)
    built = BuiltPipeline(pipeline=None)  # type: ignore[arg-type]  # collects the notes and banners
    labels = _label_set(opts)
    segmenter_weights = resolve_segmenter_weights(opts, notes=built.notes)
    detector = _detector(opts, device, built)
    segmenter = _segmenter(opts, segmenter_weights, device, built)
    tracker = _tracker(opts, device, built)
    return SharedModels(device=device, detector=detector, tracker=tracker, segmenter=segmenter, labels=labels,
                        refiner=_refiner(opts), random_weights=built.random_weights, notes=built.notes)


@dataclass(slots=True)
class BuiltStream:
    stream: Stream
    models: SharedModels
    outputs: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_stream(opts: RunOptions, models: SharedModels | Callable[[], SharedModels], *,
                 extra_sinks: Sequence = ()) -> BuiltStream:
    """One stream of a multi-stream loop on ``models`` (or what calling it returns, once the source and
    the outputs are known to work): its source (opened first, so a bad input fails before any model
    loads), its outputs (checked, created with the first result) plus ``extra_sinks``, its own tracker
    and fusion. ``extra_sinks`` are closed if anything fails."""
    from engine.sources import open_source

    source = open_source(opts.source, **opts.params("source"))
    built = BuiltPipeline(pipeline=None)  # type: ignore[arg-type]
    sinks: list = []
    try:
        info = source.info
        prompts = _prompts(opts, info)
        labels = _label_set(opts)
        sinks = _sinks(opts, fps=info.fps, live=info.live, built=built, labels=labels,
                       prompts=prompts if opts.tracker != "none" else None)
        if callable(models):
            models = models()
        tracker = models.tracker_for_stream()
        if opts.detect_every > 1 and tracker is None:
            raise ConfigError(f"{describe('detect_every')} needs a tracker to carry the frames between")
        fuser = _fuser(opts, models.detector, tracker, built)
    except BaseException:
        for sink in [*sinks, *extra_sinks]:
            sink.close()
        source.close()
        raise
    stream = Stream(source, tracker=tracker, fusion=fuser, sinks=[*sinks, *extra_sinks], prompts=prompts,
                    detect_every=opts.detect_every, max_frames=opts.max_frames)
    return BuiltStream(stream=stream, models=models, outputs=built.outputs, notes=built.notes)


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
        labels = _label_set(opts)
        segmenter_weights = resolve_segmenter_weights(opts, notes=built.notes)
        sinks = _sinks(opts, fps=info.fps, live=info.live, built=built, labels=labels,
                       prompts=prompts if opts.tracker != "none" else None)
        split = _thread_split(opts, device, built)
        detector = _detector(opts, device, built, threads=split.detector if split else None)
        segmenter = _segmenter(opts, segmenter_weights, device, built)
        if built.collector is not None and detector is not None:
            built.collector.name_classes(detector.names)
        with torch_threads(split.tracker) if split else nullcontext():  # the encoder's runtime takes its share
            tracker = _tracker(opts, device, built)
        fuser = _fuser(opts, detector, tracker, built)
        refiner = _refiner(opts)
    except BaseException:
        for sink in sinks:
            sink.close()
        source.close()
        raise
    built.pipeline = Pipeline(source, shared=SharedStages(detector=detector, segmenter=segmenter, refiner=refiner),
                              tracker=tracker, fuser=fuser, sinks=sinks, prompts=prompts, device=device,
                              detect_every=opts.detect_every, max_frames=opts.max_frames, overlap=split)
    return built


def _refiner(opts: RunOptions):
    """The refine stage (``--refine``), or None; a missing library fails here, before the first frame."""
    from engine.refine import load_refiner

    return load_refiner(opts.refine)


def _thread_split(opts: RunOptions, device, built: BuiltPipeline) -> ThreadSplit | None:
    """How ``--overlap`` shares the cores; ConfigError off the CPU, before any model loads."""
    if not opts.overlap:
        return None
    if device.type != "cpu":
        raise ConfigError(f"{describe('overlap')} is for the CPU; on {device} the networks already run "
                          "beside the host: drop it")
    split = ThreadSplit.of()
    built.notes.append(f"overlapped stages: {split.describe()}")
    return split


def _prompts(opts: RunOptions, info) -> PromptQueue:
    """``--prompt`` boxes and points as user prompts on the first frame, checked against the source's
    frame size before any model loads."""
    queue = PromptQueue()
    for prompt in opts.prompts:
        try:
            prompt.check_in_frame(info.height, info.width)
        except ConfigError as exc:
            raise ConfigError(f"--prompt {format_prompt(prompt)}: {exc}") from None
        queue.put(prompt)
    return queue


def preview_token(opts: RunOptions) -> str | None:
    """The preview API's bearer token: from ``--preview-token-file``, else ``$STREAMSEG_PREVIEW_TOKEN``,
    else None. ConfigError for an unreadable file or a token shorter than ``MIN_TOKEN_CHARS``."""
    path = opts.preview_token_file
    if path is not None:
        try:
            token, where = path.read_text(encoding="utf-8").strip(), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--preview-token-file {path}: cannot read it ({exc}); give a text file holding "
                              "the token") from None
    else:
        token, where = os.environ.get(TOKEN_VARIABLE), f"${TOKEN_VARIABLE}"
        if token is None:
            return None
        token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"the preview token in {where} has {len(token)} characters; use at least "
                          f"{MIN_TOKEN_CHARS} random ones (python -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


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


def _detector(opts: RunOptions, device, built: BuiltPipeline, *, threads: int | None = None):
    if opts.detector == "none":
        return None
    from engine.detect import DetectorConfig, load_detector

    weights = resolve_detector_weights(opts.detector, opts.weights, fallback=opts.random_fallback,
                                       notes=built.notes)
    cfg = DetectorConfig(model=opts.detector, weights=weights, backend=opts.backend, device=str(device),
                         conf=opts.conf, iou=opts.iou, imgsz=opts.imgsz, seed=opts.seed,
                         half=False if opts.precision == "exact" else None,
                         calibration=str(opts.calibration) if opts.calibration is not None else None,
                         threads=threads)
    with torch_threads(threads) if threads else nullcontext():
        detector = load_detector(cfg)
    if detector.random_weights:
        built.random_weights.append(f"detector {opts.detector}")
    return detector


def _label_set(opts: RunOptions):
    """The segmenter's label set, read before anything loads so a bad label file fails first; None
    without a segmenter."""
    if opts.segmenter == "none":
        return None
    from engine.segment import CITYSCAPES, load_labels

    return CITYSCAPES if opts.segment_labels is None else load_labels(opts.segment_labels)


def resolve_segmenter_weights(opts: RunOptions, *, notes: list[str] | None = None) -> str | None:
    """``--segmenter-weights``, or ``random`` when it is not given and the run's detector weights are
    random (``--weights random``, or the demo's fallback); None without a segmenter. No segmenter has
    official weights to fetch, so otherwise the user must name a file."""
    if opts.segmenter == "none":
        return None
    if opts.segmenter_weights is not None:
        return opts.segmenter_weights
    if opts.weights == "random" or opts.random_fallback:
        if notes is not None:
            notes.append("the segmenter runs on random weights too (--weights random); give "
                         "--segmenter-weights PATH for trained ones")
        return "random"
    raise WeightsError(f"no weights for segmenter {opts.segmenter!r}: pass --segmenter-weights PATH (a state-dict "
                       "file or a save_pretrained folder), or --segmenter-weights random to run on meaningless "
                       "random weights")


def _segmenter(opts: RunOptions, weights: str | None, device, built: BuiltPipeline):
    if opts.segmenter == "none":
        return None
    from engine.segment import SegmenterConfig, load_segmenter

    labels = None if opts.segment_labels is None else str(opts.segment_labels)
    segmenter = load_segmenter(SegmenterConfig(
        backend=opts.segmenter, weights=weights, encoder=opts.segment_encoder, labels=labels,
        imgsz=opts.segment_imgsz, every=opts.segment_every, device=str(device), seed=opts.seed))
    if segmenter.random_weights:
        built.random_weights.append(f"segmenter {opts.segmenter}")
    return segmenter


def _tracker(opts: RunOptions, device, built: BuiltPipeline):
    if opts.tracker == "none":
        return None
    import torch

    from engine.runtime.precision import PrecisionPolicy
    from engine.track import load_tracker
    from engine.track.config import TrackerConfig

    weights = resolve_tracker_weights(opts.tracker, opts.tracker_weights, fallback=opts.random_fallback,
                                      notes=built.notes)
    size = opts.tracker_size or (1024 if device.type == "cuda" else 512)
    encoder = opts.tracker_encoder
    if encoder == "auto":
        # On a CPU, hiera in torch from a bf16 copy where the policy runs it in bf16 (2x ONNX Runtime's fp32
        # there, engine.track.bf16), else ONNX Runtime (1.2x torch in fp32, engine.track.encoder).
        policy = PrecisionPolicy.for_device(device, opts.precision)
        encoder = "torch" if device.type == "cuda" or policy.image_encoder == torch.bfloat16 else "onnxruntime"
    tracker = load_tracker(opts.tracker, weights=weights, image_size=size, device=str(device), seed=opts.seed,
                           options=TrackerConfig(encoder_backend=encoder, precision=opts.precision))
    if tracker.random_weights:
        built.random_weights.append(f"tracker {opts.tracker}")
    return tracker


def _fuser(opts: RunOptions, detector, tracker, built: BuiltPipeline):
    from engine.fuse import Fuser, FuserConfig, ReidConfig, TracksOnly

    if tracker is None:
        return None  # the pipeline's default: detections only, or nothing
    if detector is None:
        if not opts.prompts and not opts.preview:
            raise ConfigError("with --detector none the tracker follows only what users prompt: give --prompt "
                              f"{PROMPT_SYNTAX}, or --preview to click on objects")
        return TracksOnly()

    spawn_conf = opts.spawn_conf
    if spawn_conf is None:
        spawn_conf = FuserConfig().spawn_conf
        if detector.random_weights:
            # Random weights score every detection near the threshold; their scores mean nothing, so
            # a track starts from any detection the detector keeps.
            spawn_conf = opts.conf
            built.notes.append(f"random detector weights: tracks start from any detection (--spawn-conf {opts.conf})")
    config = FuserConfig(spawn_conf=spawn_conf, max_tracks=opts.max_tracks,
                         detector_mask_weight=opts.detector_mask_weight,
                         hide_unconfirmed_after=opts.hide_unconfirmed_after)
    return Fuser(config, names=detector.names, reid=ReidConfig() if opts.reid else None)


def _sinks(opts: RunOptions, *, fps: float | None, live: bool, built: BuiltPipeline, labels=None,
           prompts: PromptQueue | None = None) -> list:
    from engine.sinks import JsonlWriter, Mp4Writer, PanopticWriter, PreviewServer

    sinks = []
    try:
        if opts.jsonl is not None:
            sinks.append(JsonlWriter(opts.jsonl))
            built.outputs.append(("results", str(opts.jsonl)))
        if opts.out is not None:
            sinks.append(Mp4Writer(opts.out, fps=fps, live=live))
            built.outputs.append(("video", str(opts.out)))
        if opts.preview:
            token = preview_token(opts)
            preview = PreviewServer(host=opts.preview_host, port=opts.preview_port, prompts=prompts, token=token)
            sinks.append(preview)
            built.outputs.append(("preview", preview.url))
            clicks = "; click on it to track objects" if prompts is not None else ""
            needs = " (open it with #token=TOKEN after the address, or type the token when asked)" if token else ""
            built.notes.append(f"live preview at {preview.url}{clicks}{needs}")
        if opts.panoptic_dir is not None:
            sinks.append(PanopticWriter(opts.panoptic_dir, labels.coco_categories()))
            built.outputs.append(("panoptic", str(opts.panoptic_dir)))
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
    if any(n.startswith("segmenter") for n in networks):
        lines.append("    --segmenter-weights PATH (a segmenter's trained state dict or folder)")
    width = max(len(line) for line in lines) + 4
    bar = "#" * width
    body = [f"# {line:<{width - 4}} #" for line in lines]
    return "\n".join([bar, *body, bar])
