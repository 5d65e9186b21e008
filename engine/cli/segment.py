"""``streamseg segment``: SAM 2 on one still image, from point and box prompts or for everything.

    streamseg segment IMAGE --point X,Y[,LABEL] ... [--box X1,Y1,X2,Y2 ...] [--multimask]
                            [--json OUT.json] [--out OUT.png] [--weights PATH|random]
    streamseg segment IMAGE --everything [--points-per-side 32 ...] [--json OUT.json] [--out OUT.png]

All points and at most one box make one object's prompt; several boxes make one object each (and then
take no points). Every prompt is checked against the image before the model loads. The JSON is a list of
``{"mask": COCO RLE, "score": predicted IoU, "prompt": {...}, "area": px, "bbox": [x, y, w, h]}`` (plus
``stability_score`` with ``--everything``); outputs are written whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from engine.errors import ConfigError, SinkError, SourceError, WeightsError

_RANDOM_BANNER = (
    "streamseg: RANDOM WEIGHTS: SAM 2 is initialised at random; its masks and scores MEAN NOTHING.\n"
    "streamseg: for real masks, run `streamseg fetch sam2.1_hiera_tiny` on a machine that is online, or "
    "pass --weights PATH/sam2.1_hiera_tiny.pt")


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment one image with SAM 2 from points/boxes, or everything in it",
                       description="SAM 2 on a still image: masks for point and box prompts, or for "
                                   "everything (--everything). Coordinates are the image's pixels.")
    p.add_argument("image", type=Path, help="an image file (JPEG, PNG, ...)")
    what = p.add_argument_group("prompts")
    what.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                      help="a click; LABEL 1 = on the object (default), 0 = not on it (repeatable)")
    what.add_argument("--box", action="append", default=[], metavar="X1,Y1,X2,Y2",
                      help="a box around an object (repeatable: one object per box)")
    what.add_argument("--multimask", action="store_true",
                      help="three candidate masks per object instead of one (for ambiguous single clicks)")
    what.add_argument("--everything", action="store_true",
                      help="segment everything (SAM's automatic mask generator) instead of prompts")
    amg = p.add_argument_group("--everything (defaults are sam2's)")
    amg.add_argument("--points-per-side", type=int, default=32)
    amg.add_argument("--points-per-batch", type=int, default=64)
    amg.add_argument("--pred-iou-thresh", type=float, default=0.8)
    amg.add_argument("--stability-thresh", type=float, default=0.95)
    amg.add_argument("--box-nms-thresh", type=float, default=0.7)
    amg.add_argument("--crop-layers", type=int, default=0, help="also segment 2^i x 2^i crops, i = 1..N")
    out = p.add_argument_group("outputs")
    out.add_argument("--json", type=Path, help="write the masks here (a JSON list, masks as COCO RLE)")
    out.add_argument("--out", type=Path, help="write the image with the masks drawn on it here (.png)")
    model = p.add_argument_group("model (SAM 2)")
    model.add_argument("--tracker", default="sam2.1_hiera_t",
                       help="sam2.1_hiera_t, _s, _b+, _l or a sam2 config (default sam2.1_hiera_t)")
    model.add_argument("--weights", default=None,
                       help="sam2 checkpoint path or 'random' (default: the fetched official checkpoint)")
    model.add_argument("--image-size", type=int, default=1024, help="model input side (default 1024, as trained)")
    model.add_argument("--seed", type=int, default=0, help="for --weights random")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.set_defaults(command=cmd_segment)


def cmd_segment(args: argparse.Namespace) -> int:
    from engine.runtime.device import resolve_device
    from engine.track.image import EverythingConfig, ImageSegmenter

    # Everything a user can get wrong is checked before the model loads: prompts, image, outputs.
    prompts = _prompts(args)
    everything = EverythingConfig(
        points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_thresh,
        box_nms_thresh=args.box_nms_thresh, crop_n_layers=args.crop_layers) if args.everything else None
    image = read_image(args.image)
    height, width = image.shape[:2]
    for prompt in prompts:
        prompt.check_inside(width, height)
    for path in (args.json, args.out):
        _check_output(path)
    if args.out is not None:
        _overlay_format(args.out)
    weights = _weights(args.tracker, args.weights)
    device = resolve_device(args.device)
    if weights == "random":
        print(_RANDOM_BANNER, file=sys.stderr)

    segmenter = ImageSegmenter.load(args.tracker, weights=weights, image_size=args.image_size, device=device,
                                    seed=args.seed)
    if everything is not None:
        masks = segmenter.generate(image, everything)
    else:
        segmenter.set_image(image)
        masks = [m for per_prompt in segmenter.predict(prompts, multimask=args.multimask) for m in per_prompt]
    records = [m.to_json() for m in masks]
    if args.json is not None:
        _write(args.json, json.dumps(records).encode())
    if args.out is not None:
        _write(args.out, _overlay_bytes(image, masks, prompts, args.out))
    _summary(masks, args)
    return 0


# ---------------------------------------------------------------------- inputs

def _prompts(args: argparse.Namespace) -> list:
    from engine.track.image import ImagePrompt

    points = [_point(text) for text in args.point]
    boxes = [_numbers(text, "--box", "X1,Y1,X2,Y2", 4) for text in args.box]
    if args.everything:
        if points or boxes or args.multimask:
            raise ConfigError("--everything segments the whole image: drop --point, --box and --multimask")
        return []
    if not points and not boxes:
        raise ConfigError("nothing to segment: give --point X,Y, --box X1,Y1,X2,Y2, or --everything")
    if len(boxes) > 1 and points:
        raise ConfigError(f"{len(boxes)} boxes and {len(points)} points: points refine one object, so give "
                          "them with at most one --box (several boxes segment one object each)")
    if len(boxes) > 1:
        return [ImagePrompt(box=tuple(b)) for b in boxes]
    return [ImagePrompt(points=tuple((x, y) for x, y, _ in points), labels=tuple(lab for _, _, lab in points),
                        box=tuple(boxes[0]) if boxes else None)]


def _point(text: str) -> tuple[float, float, int]:
    values = _numbers(text, "--point", "X,Y or X,Y,LABEL", (2, 3))
    label = values[2] if len(values) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise ConfigError(f"--point {text!r}: LABEL must be 1 (on the object) or 0 (not on it)")
    return values[0], values[1], int(label)


def _numbers(text: str, option: str, form: str, count: int | tuple[int, ...]) -> list[float]:
    counts = (count,) if isinstance(count, int) else count
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise ConfigError(f"{option} {text!r}: expected {form} (numbers separated by commas)")
    if not all(np.isfinite(values)):
        raise ConfigError(f"{option} {text!r}: coordinates must be finite numbers")
    return values


def read_image(path: Path) -> np.ndarray:  # [H, W, 3] uint8 RGB, in display orientation
    """An image file as RGB pixels, turned as its EXIF orientation says; SourceError for anything that
    is not a readable image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise SourceError(f"{path}: no such image file")
    if not path.is_file():
        raise SourceError(f"{path}: not a file; give an image file (JPEG, PNG, ...)")
    # Once ultralytics is imported, PIL.Image.open is its wrapper, which answers a file Pillow cannot
    # identify by installing and importing pi-heif; Pillow's own opener keeps that a clear error here.
    open_image = getattr(sys.modules.get("ultralytics.utils.patches"), "_image_open", Image.open)
    try:
        with open_image(path) as img:
            img.load()
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    except UnidentifiedImageError:
        raise SourceError(f"{path}: not an image format Pillow can read; give a JPEG, PNG, WebP, BMP or TIFF") from None
    except Image.DecompressionBombError as exc:
        raise SourceError(f"{path}: {exc}; downscale the image first") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for truncated or damaged files
        raise SourceError(f"{path}: cannot decode the image ({exc}); the file is truncated or corrupt") from None
    return np.array(rgb)  # a writable copy: torch refuses to wrap a read-only array


def _weights(tracker: str, given: str | None) -> str:
    """The checkpoint to load: the one given, else the official one fetched for ``tracker``."""
    from engine.track.config import resolve_model_config
    from engine.track.registry import TRACKER_WEIGHTS
    from engine.weights import cache_dir

    config = resolve_model_config(tracker)
    known = {w.name: w for w in TRACKER_WEIGHTS}
    if given is not None:
        if given in known:  # a known name: the fetched file
            path = cache_dir() / known[given].filename
            if not path.is_file():
                raise WeightsError(f"{given}: not downloaded yet; run `streamseg fetch {given}` first")
            return str(path)
        if given != "random" and not Path(given).is_file():
            raise WeightsError(f"{given}: no such weights file; pass an existing sam2 checkpoint, 'random', "
                               f"or a fetched name ({', '.join(known)})")
        return given
    match = next((w for w in TRACKER_WEIGHTS if w.config == config), None)
    if match is not None and (cache_dir() / match.filename).is_file():
        return str(cache_dir() / match.filename)
    fetch = f"run `streamseg fetch {match.name}` on a machine that is online, " if match else ""
    raise WeightsError(f"no trained SAM 2 weights for {tracker}: {fetch}or pass --weights PATH, or "
                       "--weights random for meaningless random weights")


# ---------------------------------------------------------------------- outputs

def _check_output(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        raise SinkError(f"{path}: is a directory; give a file name")
    if not path.parent.is_dir():
        raise SinkError(f"{path}: folder {path.parent} does not exist; create it first")


def _overlay_format(path: Path) -> str:
    from PIL import Image

    if not path.suffix:  # /dev/stdout, or a name without one: PNG, the overlay's format
        return "PNG"
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ConfigError(f"--out {path}: unknown image type {path.suffix!r}; use .png (or .jpg)")
    return fmt


def _write(path: Path, data: bytes) -> None:
    """``data`` into ``path`` whole or not at all: a regular file is written beside it and renamed over
    it, so a failed write leaves whatever was there; a device (/dev/stdout) is written directly."""
    try:
        if path.exists() and not path.is_file():
            with open(path, "wb") as f:
                f.write(data)
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise SinkError(f"{path}: cannot write ({exc.strerror or exc}); check the path and free space") from None


def _overlay_bytes(image: np.ndarray, masks: list, prompts: list, path: Path) -> bytes:
    """The image with each mask blended in its own colour (larger masks first, so smaller ones stay
    visible), a box and score label per prompted mask, and the prompts' points and boxes."""
    import io

    import cv2
    import torch
    from PIL import Image

    from engine.ops import overlay
    from engine.render import color_for_id

    height, width = image.shape[:2]
    id_map = torch.full((height, width), -1, dtype=torch.int32)
    decoded = [torch.from_numpy(m.decode()) for m in masks]
    for i in sorted(range(len(masks)), key=lambda k: -int(decoded[k].sum())):
        id_map[decoded[i]] = i
    colors = torch.tensor([color_for_id(i + 1) for i in range(len(masks))] or [(0, 0, 0)], dtype=torch.uint8)
    out = np.ascontiguousarray(overlay(torch.from_numpy(image), id_map, colors, 0.5).numpy())
    thickness = max(1, round(min(height, width) / 400))
    for prompt in prompts:
        if prompt.box is not None:
            x1, y1, x2, y2 = (round(v) for v in prompt.box)
            cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), thickness)
        for (x, y), label in zip(prompt.points, prompt.labels):
            colour = (0, 255, 0) if label == 1 else (255, 0, 0)
            cv2.drawMarker(out, (round(x), round(y)), colour, cv2.MARKER_STAR, 6 * thickness + 10,
                           thickness)
    buffer = io.BytesIO()
    Image.fromarray(out).save(buffer, format=_overlay_format(path))
    return buffer.getvalue()


def _summary(masks: list, args: argparse.Namespace) -> None:
    print(f"{len(masks)} masks")
    for i, m in enumerate(masks[:20]):
        rec = m.to_json()
        print(f"  {i:>3}  score {m.score:.3f}  area {rec['area']:>9}  bbox {[round(v) for v in rec['bbox']]}")
    if len(masks) > 20:
        print(f"  ... {len(masks) - 20} more")
    for what, path in (("json", args.json), ("overlay", args.out)):
        if path is not None:
            print(f"{what}: {path}")
