"""``streamseg export``: the networks as ONNX (and the detector as a TensorRT engine)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the detector (ONNX, TensorRT) or the tracker's parts (ONNX)",
                       description="Export a network for ONNX Runtime or TensorRT.")
    which = p.add_subparsers(title="what", required=True, metavar="WHAT")

    det = which.add_parser("detector", help="YOLOv8-seg as .onnx or a TensorRT .engine")
    det.add_argument("--format", choices=["onnx", "engine"], default="onnx")
    det.add_argument("--detector", default="yolov8n-seg", help="model name or .yaml (default yolov8n-seg)")
    det.add_argument("--weights", default=None, help=".pt path or 'random' (default: the fetched official file)")
    det.add_argument("--imgsz", type=int, default=640)
    det.add_argument("--batch", type=int, default=1, help="largest batch the engine's profile covers")
    det.add_argument("--seed", type=int, default=0, help="for --weights random")
    det.add_argument("--out", type=Path, default=None, help="output file (default: beside the weights)")
    det.set_defaults(command=cmd_export_detector)

    trk = which.add_parser("tracker", help="SAM 2's parts as ONNX (static shapes) or TensorRT engines")
    trk.add_argument("--format", choices=["onnx", "engine"], default="onnx")
    trk.add_argument("--tracker", default="sam2.1_hiera_t")
    trk.add_argument("--tracker-weights", default=None, help="checkpoint path or 'random'")
    trk.add_argument("--tracker-size", type=int, default=1024)
    trk.add_argument("--seed", type=int, default=0, help="for --tracker-weights random")
    trk.add_argument("--out-dir", type=Path, default=Path("tracker-onnx"))
    trk.set_defaults(command=cmd_export_tracker)


def cmd_export_detector(args: argparse.Namespace) -> int:
    from engine.app import resolve_detector_weights
    from engine.detect import DetectorConfig
    from engine.detect.yolo import build_engine, export_onnx

    weights = resolve_detector_weights(args.detector, args.weights)
    config = DetectorConfig(model=args.detector, weights=weights, backend="torch", device="cpu",
                            imgsz=args.imgsz, seed=args.seed)
    stem = Path(weights).stem if weights != "random" else f"{Path(args.detector).stem}-random{args.seed}"
    onnx_path = args.out if args.format == "onnx" and args.out else Path(f"{stem}.onnx")
    export_onnx(config, onnx_path, batch=args.batch, imgsz=args.imgsz)
    if args.format == "onnx":
        print(onnx_path)
        return 0
    engine = build_engine(onnx_path, batch=args.batch, imgsz=args.imgsz)
    if args.out:
        args.out.write_bytes(engine.read_bytes())
        engine = args.out
    print(engine)
    return 0


def cmd_export_tracker(args: argparse.Namespace) -> int:
    from engine.app import resolve_tracker_weights
    from engine.track import load_tracker
    from engine.track.export import export_onnx

    weights = resolve_tracker_weights(args.tracker, args.tracker_weights)
    if args.format == "engine":
        from engine.runtime.device import resolve_device
        from engine.runtime.tensorrt import import_tensorrt
        from engine.track.tensorrt import build_tracker_engines

        import_tensorrt()  # the cheap checks first: TensorRT, then a CUDA device, then the model
        resolve_device("cuda")
        tracker = load_tracker(args.tracker, weights=weights, image_size=args.tracker_size, seed=args.seed,
                               device="cuda")
        for name, path in build_tracker_engines(tracker.model, cache_dir=args.out_dir).items():
            print(f"{name}: {path}")
        return 0
    tracker = load_tracker(args.tracker, weights=weights, image_size=args.tracker_size, seed=args.seed)
    for part in export_onnx(tracker.model, args.out_dir):
        print(part.path)
    return 0
