"""The options of a run, in one place: ``RunOptions`` is the one source of the ``streamseg run`` flags,
of the TOML config file (``--config FILE.toml``, read with the standard library's ``tomllib``) and of
``streamseg config``, which prints the effective options as TOML that loads back.

Each field declares, in its metadata (``option(...)``), its TOML section and key, its flag, its help
text, its allowed values, and (for the source's options) the keyword of ``open_source`` it feeds: a new
option is one field here. Values come from the defaults, then the file, then the flags given.

    [source]                 # what to read and how         (open_source's options)
    [outputs]                # where results go
    [detector]               # the detector and its thresholds
    [segmenter]              # the semantic ("stuff") stage: model, weights, labels, cadence, input size
    [tracker]                # the tracker, the fusion's track cap and spawn threshold, prompts
    [collect]                # the uncertainty collector: the frames worth labelling, and their exports
    device, seed, refine, max_frames  # top-level keys

A bad file (unknown section or key, wrong type, value out of range) is one ConfigError line naming the
file, the key and the allowed values. A ``[[streams]]`` array of tables (one per stream, each with its
own ``[source]``/``[outputs]`` keys) is the form a multi-stream server's config takes; ``streamseg run``
reads one stream and refuses it with a message.
"""

from __future__ import annotations

import argparse
import json
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path

from engine.errors import ConfigError
from engine.prompt_syntax import (PROMPT_SYNTAX, InvalidValue, format_prompt, merge_prompts, parse_prompt,
                                  prompt_value)

if typing.TYPE_CHECKING:
    from engine.types import UserPrompt

SECTIONS = ("", "source", "outputs", "detector", "segmenter", "tracker", "collect")  # "" holds the top-level keys
_GROUP_TITLES = {"": "run", "source": "source", "outputs": "outputs",
                 "detector": "detector (YOLOv8-seg or Mask R-CNN; thresholds default to Ultralytics')",
                 "segmenter": "semantic segmenter (the stuff under the instances; panoptic output)",
                 "tracker": "tracker (SAM 2) and fusion",
                 "collect": "collection of the frames worth labelling (engine/data/README.md)"}
# engine.segment.config.BACKENDS, spelled here so that reading options imports no model library
# (tests/test_options.py checks that the two agree)
SEGMENTERS = ("none", "deeplabv3plus", "unet", "deeplabv3-mobilenet", "mask2former")
_UNSET = "not set"


def option(default, *, section: str, help: str, key: str | None = None, flag: str | None = None,
           choices: tuple | None = None, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, param: str | None = None, unset: str = "", metavar: str | None = None,
           infinite: str | None = None):
    """A ``RunOptions`` field. ``key`` defaults to the field name, ``flag`` to ``--field-name``;
    ``minimum``/``maximum`` bound a number inclusively, ``above`` exclusively; ``param`` is the keyword
    of the stage call the value feeds; ``unset`` says what None means (for ``streamseg config``);
    ``infinite`` says what ``inf`` means for a number that may be infinite (others must be finite)."""
    meta = {"section": section, "help": help, "key": key, "flag": flag, "choices": choices, "minimum": minimum,
            "maximum": maximum, "above": above, "param": param, "unset": unset, "metavar": metavar,
            "infinite": infinite}
    return field(default=default, metadata=meta)




@dataclass(frozen=True, slots=True)
class RunOptions:
    """Everything ``streamseg run`` takes (``streamseg run --help`` lists each with its flag)."""

    source: str = option("", section="source", key="uri", flag="SOURCE", metavar="SOURCE",
                         help="file path, rtsp:// or http(s):// URL, /dev/videoN, or synthetic:seed=N,frames=N,"
                              "size=WxH")
    live: bool | None = option(None, section="source", flag="--live", param="live",
                               unset="live for rtsp:// and cameras, every frame for files and http(s)",
                               help="newest-frame-wins buffering (--no-live: deliver every frame in order)")
    realtime: bool = option(False, section="source", param="realtime",
                            help="read a file at its own frame rate, like a camera")
    buffer: int = option(2, section="source", minimum=1, param="buffer_size",
                         help="frames held between decoder and pipeline")
    reconnect_attempts: int | None = option(None, section="source", minimum=0, param="reconnect_attempts",
                                            unset="no count limit: --give-up-after bounds an outage",
                                            help="reconnections tried per outage of a live stream (0: none)")
    reconnect_interval_s: float = option(1.0, section="source", key="reconnect_interval",
                                         flag="--reconnect-interval", above=0.0, maximum=60.0,
                                         param="reconnect_interval_s",
                                         help="seconds between reconnection attempts of a live stream (fixed)")
    give_up_s: float = option(600.0, section="source", key="give_up_after", flag="--give-up-after", above=0.0,
                              param="give_up_s", infinite="never",
                              help="seconds a lost live stream may stay without frames before the run ends (inf: never)")
    io_timeout_s: float = option(5.0, section="source", key="io_timeout", flag="--io-timeout", above=0.0,
                                 param="io_timeout_s", help="network read timeout, seconds")

    out: Path | None = option(None, section="outputs", unset="no overlay video",
                              help="write the overlay video here (.mp4, H.264)")
    jsonl: Path | None = option(None, section="outputs", unset="no results file",
                                help="write one JSON line of results per frame here")
    preview: bool = option(False, section="outputs", help="serve a live MJPEG preview over HTTP")
    preview_host: str = option("127.0.0.1", section="outputs",
                               help="interface for the preview (127.0.0.1: this machine only)")
    preview_port: int = option(8080, section="outputs", minimum=0, maximum=65535, help="preview port (0: any)")
    panoptic_dir: Path | None = option(None, section="outputs", unset="no panoptic output",
                                       help="write COCO panoptic output here: a PNG per frame under panoptic/ "
                                            "and panoptic.json (needs --segmenter)")
    preview_token_file: Path | None = option(None, section="outputs",
                                             unset="$STREAMSEG_PREVIEW_TOKEN, else none (preview on loopback only)",
                                             help="file holding the bearer token the preview's prompt API asks "
                                                  "for (needed when --preview-host is not loopback)")

    detector: str = option("yolov8n-seg", section="detector", key="model", flag="--detector",
                           help="model name (yolov8n-seg ... yolov8x-seg), a model .yaml, maskrcnn "
                                "(torchvision's maskrcnn_resnet50_fpn_v2), or none")
    weights: str | None = option(None, section="detector", unset="the fetched official file (streamseg fetch)",
                                 help="detector weights: .pt, .onnx or .engine path (Mask R-CNN: a state-dict "
                                      "file), or 'random'")
    backend: str = option("auto", section="detector",
                          choices=("auto", "torch", "onnxruntime", "onnxruntime-int8", "tensorrt"),
                          help="what runs the detector's network (onnxruntime-int8: the int8 model, CPU; auto "
                               "picks it on a CPU for trained weights where it meets its accuracy bar)")
    conf: float = option(0.25, section="detector", minimum=0.0, maximum=1.0, help="confidence threshold")
    iou: float = option(0.7, section="detector", minimum=0.0, maximum=1.0, help="NMS IoU threshold")
    imgsz: int = option(640, section="detector", minimum=1, help="network input size")
    calibration: Path | None = option(None, section="detector", unset="the clip bundled for the demo",
                                      help="a video whose frames calibrate and validate the int8 detector")
    detect_every: int = option(1, section="detector", minimum=1,
                               help="run the detector on every k-th frame; the tracker fills the rest")

    segmenter: str = option("none", section="segmenter", key="model", flag="--segmenter", choices=SEGMENTERS,
                            help="semantic segmenter for the stuff under the instances (DeepLab v3+ and U-Net "
                                 "from segmentation_models_pytorch, torchvision's DeepLabV3-MobileNetV3, "
                                 "Mask2Former)")
    segmenter_weights: str | None = option(None, section="segmenter", key="weights", flag="--segmenter-weights",
                                           unset="random with --weights random, otherwise required",
                                           help="segmenter weights: a state-dict file, a save_pretrained "
                                                "folder (smp, transformers), or 'random'")
    segment_encoder: str = option("resnet34", section="segmenter", key="encoder", flag="--segment-encoder",
                                  help="encoder of deeplabv3plus and unet (a segmentation_models_pytorch "
                                       "encoder name)")
    segment_labels: Path | None = option(None, section="segmenter", key="labels", flag="--segment-labels",
                                         unset="Cityscapes' 19 classes",
                                         help="label file: the model's classes in channel order, each stuff or "
                                              "thing (JSON or text; see engine/segment/labels.py)")
    segment_every: int = option(1, section="segmenter", key="every", flag="--segment-every", minimum=1,
                                help="run the segmenter on every k-th frame; the frames between reuse its map")
    segment_imgsz: int = option(512, section="segmenter", key="imgsz", flag="--segment-imgsz", minimum=32,
                                maximum=4096, help="segmenter input: the shorter side, in pixels")

    tracker: str = option("sam2.1_hiera_t", section="tracker", key="model", flag="--tracker",
                          help="sam2.1_hiera_t, _s, _b+, _l, a sam2 config path, or none")
    tracker_weights: str | None = option(None, section="tracker", key="weights",
                                         unset="the fetched official checkpoint (streamseg fetch)",
                                         help="sam2 checkpoint path or 'random'")
    tracker_size: int | None = option(None, section="tracker", key="size", minimum=32,
                                      unset="1024 on a GPU, 512 on a CPU", help="tracker image size")
    tracker_encoder: str = option("auto", section="tracker", key="encoder",
                                  choices=("auto", "torch", "onnxruntime", "tensorrt"),
                                  help="what runs SAM 2's image encoder (auto: onnxruntime on a CPU, torch on "
                                       "a GPU)")
    spawn_conf: float | None = option(None, section="tracker", minimum=0.0, maximum=1.0,
                                      unset="0.5, or --conf on random detector weights",
                                      help="detection confidence that starts a track")
    max_tracks: int = option(32, section="tracker", minimum=1, help="most objects tracked at once")
    detector_mask_weight: float = option(0.0, section="tracker", minimum=0.0, maximum=1.0,
                                         help="a tracked object's final mask on a frame its detection matched: "
                                              "(1 - w) * tracker probability + w * detection mask > 0.5 (0: "
                                              "the tracker's mask, above 0.5: the detection's)")
    hide_unconfirmed_after: int | None = option(None, section="tracker", minimum=1,
                                                unset="shown while the tracker sees it",
                                                help="leave a tracked object out of the output after this many "
                                                     "detection frames in a row without its detection (it stays "
                                                     "tracked)")
    reid: bool = option(True, section="tracker",
                        help="give an object that comes back after its track was retired as lost its old id "
                             "(a bounded gallery of SAM 2 appearance embeddings and object pointers; --no-reid: "
                             "a new id)")
    prompts: tuple[UserPrompt, ...] = option(
        (), section="tracker", flag="--prompt", metavar="ID:X1,Y1,X2,Y2|ID:point=X,Y[,L]",
        help="track object ID from the first frame, from a box or a point (label L: 1 foreground, the default, "
             "or 0 background); repeat it for more points or objects, in frame pixels")

    # Defaults are engine.data.SelectorConfig's and CollectorConfig's (tests/test_options.py checks it);
    # not imported here, so that reading options does not load the data engine's libraries.
    collect: Path | None = option(None, section="collect", key="folder", flag="--collect", metavar="DIR",
                                  unset="no collection",
                                  help="keep the frames the engine is least sure of in this folder, as images with "
                                       "COCO, YOLO-seg and Label Studio pre-annotations")
    collect_budget: int = option(500, section="collect", key="budget", minimum=1,
                                 help="frames kept in all; then no more")
    collect_window: int = option(300, section="collect", key="window", minimum=1,
                                 help="frames per selection window (the top frames of each window are kept)")
    collect_per_window: int = option(3, section="collect", key="per_window", minimum=1,
                                     help="frames kept per window at most")
    collect_spacing: int = option(30, section="collect", key="spacing", minimum=0,
                                  help="frames between any two kept frames at least")
    collect_val_every: int = option(5, section="collect", key="val_every", minimum=0,
                                    help="every N-th kept frame goes to the validation split (0: none)")
    collect_rank: str = option("uncertainty", section="collect", key="rank", choices=("uncertainty", "random"),
                               help="what picks each window's frames: the uncertainty score, or a seeded random "
                                    "draw (the baseline that measures what the score buys)")
    collect_prefix: str = option("", section="collect", key="prefix", metavar="PREFIX",
                                 help="file-name prefix of the kept frames, so that several runs can collect "
                                      "into one folder")

    device: str = option("auto", section="", help="auto, cpu, cuda or cuda:N")
    precision: str = option("auto", section="", choices=("auto", "exact", "fast"),
                            help="exact: every network in fp32; fast: bf16 image encoder and (on a CPU) memory "
                                 "attention, memory encoder and mask decoder on propagated frames; auto: fast "
                                 "where the device has bf16 matrix instructions "
                                 "(`streamseg info` says which runs here)")
    overlap: bool = option(False, section="",
                           help="on a CPU, detect the next frame on its own threads (a quarter of the cores, at "
                                "least one) while this one is tracked; it pays where the tracker gains little "
                                "from more threads (slower on 2 cores: benchmarks/RESULTS.md); a frame more latency")
    refine: str = option("none", section="", choices=("none", "crf", "guided"),
                         help="refine the final masks' boundaries on the frame: crf (a dense CRF, pydensecrf2; "
                              "~0.14 s a 320x240 frame on one CPU core) or guided (OpenCV's guided filter, ~0.02 s); "
                              "needs the 'data' extra")
    seed: int = option(0, section="", help="seed for random weights")
    max_frames: int | None = option(None, section="", minimum=1, unset="every frame",
                                    help="stop after N frames")
    # The demo's choice, not a user option: no trained weights at hand -> random weights and a banner.
    random_fallback: bool = field(default=False, metadata={"internal": True})

    def __post_init__(self) -> None:
        for f in user_fields():
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, _checked(f, value, where=f"{describe(f)} {_shown(value)}"))
        if self.prompts and self.tracker == "none":
            raise ConfigError(f"{describe('prompts')} needs a tracker; drop --tracker none")
        if self.collect_per_window * max(self.collect_spacing, 1) > self.collect_window:
            raise ConfigError(f"{describe('collect_per_window')} {self.collect_per_window} frames, each "
                              f"{describe('collect_spacing')} {self.collect_spacing} apart, do not fit in "
                              f"{describe('collect_window')} {self.collect_window}: raise the window or lower "
                              "the others")
        if self.overlap and "none" in (self.detector, self.tracker):
            raise ConfigError(f"{describe('overlap')} overlaps the detector with the tracker: it needs both")
        if self.segmenter == "none":
            for name in ("panoptic_dir", "segmenter_weights", "segment_labels"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{describe(name)} needs a semantic segmenter; add --segmenter "
                                      f"{' or '.join(SEGMENTERS[1:])}")

    def params(self, section: str) -> dict[str, object]:
        """``{keyword: value}`` of the section's options that feed a stage call (``param``)."""
        return {f.metadata["param"]: getattr(self, f.name) for f in user_fields()
                if f.metadata["section"] == section and f.metadata["param"]}


# -- the fields ---------------------------------------------------------------------------------------

def user_fields() -> tuple[Field, ...]:
    return tuple(f for f in fields(RunOptions) if not f.metadata.get("internal"))


def _field(name: str) -> Field:
    return next(f for f in fields(RunOptions) if f.name == name)


def key_of(f: Field) -> str:
    return f.metadata["key"] or f.name


def flag_of(f: Field) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def describe(f: Field | str) -> str:
    """How a user names an option: its flag and its place in the config file."""
    f = _field(f) if isinstance(f, str) else f
    section = f.metadata["section"]
    return f"{flag_of(f)} ([{section}] {key_of(f)})" if section else f"{flag_of(f)} ({key_of(f)})"


_HINTS: dict[str, object] = {}


def _kind(f: Field):
    """(base type, whether None is allowed) of a field, from its annotation."""
    if not _HINTS:
        # UserPrompt is imported for type checkers only (engine.types loads torch, which the CLI's
        # parser should not wait for); the field's base type is all that is read here.
        _HINTS.update(typing.get_type_hints(RunOptions, localns={"UserPrompt": object}))
    hint = _HINTS[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    return (tuple if typing.get_origin(hint) is tuple else hint), optional


# -- checking one value ---------------------------------------------------------------------------------

def _checked(f: Field, value, *, where: str):
    """``value`` as the field's type; ConfigError "WHERE: REASON; allowed: ALLOWED" otherwise."""
    try:
        return _convert(f, value)
    except InvalidValue as bad:
        raise ConfigError(f"{where}: {bad.reason}; allowed: {bad.allowed}") from None


def _allowed(f: Field, base) -> str:
    m = f.metadata
    if m["choices"]:
        return ", ".join(map(str, m["choices"]))
    if base is tuple:
        return f"a list of '{PROMPT_SYNTAX}' strings"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}[base]
    bounds = []
    if m["minimum"] is not None:
        bounds.append(f">= {m['minimum']:g}")
    if m["above"] is not None:
        bounds.append(f"> {m['above']:g}")
    if m["maximum"] is not None:
        bounds.append(f"<= {m['maximum']:g}")
    text = words + (" " + " and ".join(bounds) if bounds else "")
    return text + (f", or inf ({m['infinite']})" if m["infinite"] else "")


def _convert(f: Field, value):
    base, optional = _kind(f)
    allowed = _allowed(f, base)
    if value is None:
        if optional:
            return None
        raise InvalidValue("must be set", allowed)
    if base is tuple:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise InvalidValue("must be a list", allowed)
        return merge_prompts(parse_prompt(v) if isinstance(v, str) else prompt_value(v) for v in value)
    if base is bool:
        if not isinstance(value, bool):
            raise InvalidValue(f"{_shown(value)} is not true or false", allowed)
        return value
    if base in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (base is int and not isinstance(value, int)):
            raise InvalidValue(f"{_shown(value)} is not {'an integer' if base is int else 'a number'}", allowed)
        if math.isnan(value) or (math.isinf(value) and not (f.metadata["infinite"] and value > 0)):
            raise InvalidValue("must be finite", allowed)
        m = f.metadata
        if (m["minimum"] is not None and value < m["minimum"]) or (m["maximum"] is not None and value > m["maximum"]) \
                or (m["above"] is not None and value <= m["above"]):
            raise InvalidValue("out of range", allowed)
        return base(value)
    if not isinstance(value, (str, Path)):
        raise InvalidValue(f"{_shown(value)} is not a string", allowed)
    if f.metadata["choices"] and value not in f.metadata["choices"]:
        raise InvalidValue(f"{value!r} is not one of them", allowed)
    return Path(value) if base is Path else str(value)


def _shown(value) -> str:
    return json.dumps(value) if isinstance(value, (str, bool, int, float)) else str(value)


# -- the config file --------------------------------------------------------------------------------------

def load_toml(path: str | Path, *, flag: str = "--config", example: str = "examples/run.toml") -> dict:
    """The TOML document at ``path``; ConfigError naming the file (missing, unreadable, not TOML)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser, released as tomli
        import tomli as tomllib

    path = Path(path)
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; check the path given to {flag}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); see {example} for the format") from None


def read_config(path: str | Path) -> dict[str, object]:
    """The options a TOML file sets, as ``{field name: value}``, each checked; ConfigError naming the file,
    the key and the allowed values for anything wrong."""
    path = Path(path)
    document = load_toml(path)
    if "streams" in document:
        raise ConfigError(f"{path}: [[streams]] lists the streams of a multi-stream server ('streamseg serve'); "
                          "'streamseg run' reads one stream: give its [source] table instead")
    return _read_sections(document, where=str(path), flat=False)


def read_options(table: Mapping[str, object], *, where: str) -> dict[str, object]:
    """Options from a table that names them as their fields (the flags without dashes: ``weights``,
    ``tracker``, ``detect_every``) or in the sections of a ``--config`` file (``[detector] model``), as
    ``{field name: value}``, each checked. ``where`` starts every error line (a file, a stream).

    Raises:
        ConfigError: an unknown key or section, a wrong type, a value out of range: one line naming
            ``where``, the key and the allowed values.
    """
    return _read_sections(table, where=where, flat=True)


def _read_sections(document: Mapping[str, object], *, where: str, flat: bool) -> dict[str, object]:
    by_place = {(f.metadata["section"], key_of(f)): f for f in user_fields()}
    by_name = {f.name: f for f in user_fields()} if flat else {}
    values: dict[str, object] = {}
    tables: dict[str, dict] = {"": {}}
    for name, value in document.items():
        if not isinstance(value, dict):
            tables[""][name] = value
        elif name in SECTIONS and name:
            tables[name] = value
        else:
            allowed = ", ".join(f"[{s}]" for s in SECTIONS if s)
            keys = by_name or [key_of(f) for f in user_fields() if not f.metadata["section"]]
            raise ConfigError(f"{where}: unknown section [{name}]; allowed: {allowed} and the keys {', '.join(keys)}")
    for section, table in tables.items():
        for key, value in table.items():
            f = (by_name.get(key) if not section else None) or by_place.get((section, key))
            place = f"[{section}] {key}" if section else key
            if f is None:
                known = ", ".join(by_name) if flat and not section else ", ".join(k for s, k in by_place if s == section)
                raise ConfigError(f"{where}: unknown key {place}; allowed here: {known}")
            if f.name in values:
                raise ConfigError(f"{where}: {place} sets {describe(f)} a second time; keep one")
            values[f.name] = _checked(f, value, where=f"{where}: {place} = {_shown(value)}")
    return values


def to_toml(options: RunOptions) -> str:
    """The options as a TOML config that ``read_config`` reads back to the same options. Options that
    are not set are comments saying what that means."""
    lines = ["# streamseg run options: defaults, then --config FILE, then flags", ""]
    for section in SECTIONS:
        if section:
            lines += ["", f"[{section}]"]
        for f in user_fields():
            if f.metadata["section"] != section:
                continue
            value = getattr(options, f.name)
            if value is None or (f.name == "source" and not value):
                lines.append(f"# {key_of(f)}: {_UNSET}; {f.metadata['unset'] or 'pass ' + flag_of(f)}")
            else:
                lines.append(f"{key_of(f)} = {_toml_value(value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):  # prompts
        return "[" + ", ".join(json.dumps(format_prompt(p)) for p in value) + "]"
    return json.dumps(str(value))  # JSON's string escapes are a subset of TOML's basic strings


# -- the command line --------------------------------------------------------------------------------------

def add_flags(parser: argparse.ArgumentParser, *, only: Iterable[str] | None = None, source: bool = True,
              defaults: Mapping[str, str] | None = None) -> None:
    """The options' flags on ``parser``, grouped by section. Flags not given stay off the namespace
    (``argparse.SUPPRESS``), so ``from_args`` can tell them from defaults. ``only`` names a subset;
    ``source`` adds the SOURCE positional (optional: a config file may give it); ``defaults`` replaces
    the default the help states, for a command that sets its own."""
    wanted = set(only) if only is not None else None
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in user_fields():
        if (wanted is not None and f.name not in wanted) or (f.name == "source" and not source):
            continue
        section = f.metadata["section"]
        group = groups.get(section) or groups.setdefault(section, parser.add_argument_group(_GROUP_TITLES[section]))
        _add_flag(group, f, (defaults or {}).get(f.name))


def _default_text(f: Field, base) -> str:
    """What the help says the default is: nothing for switches and lists."""
    if f.default is None:
        return f.metadata["unset"]
    if base in (bool, tuple) or f.default is MISSING:
        return ""
    return str(f.default)


def _add_flag(group, f: Field, shown: str | None = None) -> None:
    m = f.metadata
    base, _ = _kind(f)
    shown = shown or _default_text(f, base)
    text = m["help"] + (f" (default: {shown})" if shown else "")
    if f.name == "source":
        group.add_argument("source", nargs="?", default=argparse.SUPPRESS, help=text, metavar="SOURCE")
        return
    common = {"dest": f.name, "default": argparse.SUPPRESS}
    flag = flag_of(f)
    if base is bool and (f.name == "live" or f.default is True):
        group.add_argument(flag, action="store_true", help=text, **common)
        group.add_argument("--no-" + flag[2:], action="store_false", help="the opposite of " + flag, **common)
    elif base is bool:
        group.add_argument(flag, action="store_true", help=text, **common)
    elif base is tuple:
        group.add_argument(flag, action="append", help=text, metavar=m["metavar"], **common)
    else:
        convert = {int: _number_or_text(int), float: _number_or_text(float), str: str, Path: Path}[base]
        # Choices are listed in the metavar and checked by RunOptions, as are numbers, so a bad value is
        # the same one ConfigError line (option, value, allowed values) from a flag as from a config file.
        choices = "{" + ",".join(m["choices"]) + "}" if m["choices"] else None
        metavar = m["metavar"] or choices or ("PATH" if base is Path else key_of(f).upper())
        group.add_argument(flag, type=convert, help=text, metavar=metavar, **common)


def _number_or_text(kind: type):
    """An argparse ``type`` that gives ``kind(text)``, or the text itself when it is not one: RunOptions
    then rejects it in one line (argparse's own error would print the whole usage first)."""
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            return text
    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def given(args: argparse.Namespace) -> dict[str, object]:
    """The options the command line gave (``add_flags`` leaves the others off the namespace)."""
    names = {f.name for f in user_fields()}
    return {k: v for k, v in vars(args).items() if k in names}


def from_args(args: argparse.Namespace, *, config: Path | None = None,
              overrides: Mapping[str, object] | None = None, need_source: bool = True) -> RunOptions:
    """Defaults, then ``config`` (a TOML file), then ``overrides``, then the flags given."""
    values: dict[str, object] = {}
    if config is not None:
        values.update(read_config(config))
    values.update(overrides or {})
    values.update(given(args))
    if need_source and not values.get("source"):
        where = f" or set [source] uri in {config}" if config is not None else " (or --config FILE.toml)"
        raise ConfigError(f"no source: pass SOURCE{where}")
    return RunOptions(**values)


def default(name: str):
    """The default value of option ``name``."""
    return _field(name).default

