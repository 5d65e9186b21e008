"""``streamseg export``: the detector as ONNX or a TensorRT engine, SAM 2's parts as ONNX, and SAM 2's
image encoder as the TensorRT engine ``--tracker-encoder tensorrt`` runs.

Nothing is written to the working directory unless asked: the ONNX an engine is built from goes to a
temporary folder, engines to the cache (``streamseg fetch``'s), and an export with no ``--out`` next to the
weights it came from (random weights: the cache's ``exports`` folder). TensorRT and the CUDA device are
checked before anything is exported.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from engine.options import add_flags, default, given

_DETECTOR_FLAGS = ("detector", "weights", "imgsz", "seed")
_TRACKER_FLAGS = ("tracker", "tracker_weights", "tracker_size", "seed")


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the detector (ONNX, TensorRT) or the tracker (ONNX, TensorRT)",
                       description="Export a network for ONNX Runtime or TensorRT.")
    which = p.add_subparsers(title="what", required=True, metavar="WHAT")

    det = which.add_parser("detector", help="the detector as .onnx or a TensorRT .engine")
    det.add_argument("--format", choices=["onnx", "engine"], default="onnx")
    add_flags(det, only=_DETECTOR_FLAGS, source=False)
    det.add_argument("--batch", type=int, default=1, help="largest batch the engine's profile covers")
    det.add_argument("--out", type=Path, default=None,
                     help="output file (default: beside the weights; the cache for random weights)")
    det.set_defaults(command=cmd_export_detector)

    trk = which.add_parser("tracker", help="SAM 2's parts as ONNX (static shapes), or its image encoder as a "
                                           "TensorRT engine")
    trk.add_argument("--format", choices=["onnx", "engine"], default="onnx")
    add_flags(trk, only=_TRACKER_FLAGS, source=False, defaults={"tracker_size": "1024"})
    trk.add_argument("--out-dir", type=Path, default=None,
                     help="where the files go (default: the cache's exports folder)")
    trk.set_defaults(command=cmd_export_tracker)


def _values(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    return {**{name: default(name) for name in names}, **given(args)}


def _exports_dir() -> Path:
    from engine.weights import cache_dir

    return cache_dir() / "exports"


def cmd_export_detector(args: argparse.Namespace) -> int:
    from engine.app import resolve_detector_weights
    from engine.detect import DetectorConfig, check_detector

    v = _values(args, _DETECTOR_FLAGS)
    weights = resolve_detector_weights(v["detector"], v["weights"])
    config = DetectorConfig(model=v["detector"], weights=weights, backend="torch", device="cpu",
                            imgsz=v["imgsz"], seed=v["seed"])
    check_detector(config)
    if args.format == "engine":
        from engine.runtime.device import resolve_device
        from engine.runtime.tensorrt import import_tensorrt

        import_tensorrt()  # the cheap checks first: TensorRT, then a CUDA device, then the model
        resolve_device("cuda")
    from engine.detect.yolo import build_engine, export_onnx

    stem = Path(weights).stem if weights != "random" else f"{Path(v['detector']).stem}-random{v['seed']}"
    if args.format == "onnx":
        target = args.out or (Path(weights).parent if weights != "random" else _exports_dir()) / f"{stem}.onnx"
        print(export_onnx(config, target, batch=args.batch, imgsz=v["imgsz"]))
        return 0
    with tempfile.TemporaryDirectory(prefix="streamseg-export-") as tmp:
        onnx = export_onnx(config, Path(tmp) / f"{stem}.onnx", batch=args.batch, imgsz=v["imgsz"])
        engine = build_engine(onnx, batch=args.batch, imgsz=v["imgsz"])  # cached by the ONNX's digest
    if args.out:
        shutil.copyfile(engine, args.out)
        engine = args.out
    print(engine)
    return 0


def cmd_export_tracker(args: argparse.Namespace) -> int:
    from engine.app import resolve_tracker_weights
    from engine.track import load_tracker

    v = _values(args, _TRACKER_FLAGS)
    size = v["tracker_size"] or 1024
    weights = resolve_tracker_weights(v["tracker"], v["tracker_weights"])
    if args.format == "engine":
        from engine.runtime.device import resolve_device
        from engine.runtime.tensorrt import import_tensorrt
        from engine.track.encoder import build_encoder_engine

        import_tensorrt()  # the cheap checks first: TensorRT, then a CUDA device, then the model
        resolve_device("cuda")
        tracker = load_tracker(v["tracker"], weights=weights, image_size=size, seed=v["seed"], device="cuda")
        engine = build_encoder_engine(tracker.model, device="cuda")
        if args.out_dir:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            engine = Path(shutil.copy(engine, args.out_dir / "image_encoder.engine"))
        print(f"image_encoder: {engine}")
        return 0
    from engine.track.export import export_onnx

    tracker = load_tracker(v["tracker"], weights=weights, image_size=size, seed=v["seed"])
    out_dir = args.out_dir or _exports_dir() / f"{Path(v['tracker']).stem}-{size}-onnx"
    for part in export_onnx(tracker.model, out_dir):
        print(part.path)
    return 0
