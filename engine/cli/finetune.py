"""``streamseg finetune sam2|yolo``: fine-tune the tracker or the detector on a labelled collection.

    streamseg finetune sam2 --data DIR --out sam2_ft.pt --weights sam2.1_hiera_tiny.pt [--steps N | --epochs N]
    streamseg finetune yolo --data DIR --out yolo_ft.pt --weights yolov8n-seg.pt [--epochs N]

``--data`` is a folder written by ``streamseg run --collect`` (after labelling). The result loads with
``--tracker-weights`` (sam2) or ``--weights`` (yolo). Work goes to ``OUT.run/`` beside the checkpoint;
running the same command again resumes an interrupted fine-tune (``--restart`` starts over).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from engine.errors import ConfigError


def add_to(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("finetune", help="fine-tune SAM 2 or YOLOv8-seg on a labelled collection",
                            description=__doc__.split("\n\n")[0])
    tasks = parser.add_subparsers(title="models", required=True, metavar="MODEL")
    sam = tasks.add_parser("sam2", help="SAM 2's prompt encoder and mask decoder (image encoder frozen)",
                           description="Fine-tune SAM 2's prompt encoder and mask decoder with Dice + BCE on box "
                                       "and click prompts from the labels; the image encoder stays frozen and "
                                       "its features are cached per augmented view.")
    _common(sam)
    length = sam.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimizer steps (default 1000)")
    length.add_argument("--epochs", type=int, default=None,
                        help="passes over the training instances and their views (converted to steps)")
    sam.add_argument("--model", default="sam2.1_hiera_t", help="sam2 model the weights are for (default sam2.1_hiera_t)")
    sam.add_argument("--image-size", type=int, default=None,
                     help="model input side; train at the size the tracker runs (default 1024 on a GPU, 512 on a CPU)")
    sam.add_argument("--batch", type=int, default=8, help="instances per step (default 8)")
    sam.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    sam.add_argument("--views", type=int, default=4,
                     help="augmented views per training image, each embedded once (default 4)")
    sam.add_argument("--save-every", type=int, default=50, help="steps between resumable saves (default 50)")
    sam.add_argument("--box-prompts", type=float, default=0.5,
                     help="share of prompts that are boxes, the rest clicks (default 0.5; the engine's fusion "
                          "prompts with boxes only)")
    sam.add_argument("--train-memory", action="store_true",
                     help="also train the memory path (memory attention and encoder) on pseudo-videos of "
                          "slightly moved views: needed when starting from random "
                          "weights, for tracking and re-prompts to work")
    sam.add_argument("--memory-from", type=int, default=0,
                     help="with --train-memory: steps of the prompt path alone before the memory path joins "
                          "(default 0; from random weights ~200 lets the decoder learn to segment first)")
    sam.set_defaults(command=cmd_sam2)

    yolo = tasks.add_parser("yolo", help="YOLOv8-seg through Ultralytics' own trainer",
                            description="Fine-tune YOLOv8-seg on the collection's YOLO-seg layout with "
                                        "Ultralytics' trainer, offline and seeded.")
    _common(yolo)
    yolo.add_argument("--epochs", type=int, default=50, help="training epochs (default 50)")
    yolo.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    yolo.add_argument("--model", default="yolov8n-seg", help="architecture for --weights random (default yolov8n-seg)")
    yolo.add_argument("--imgsz", type=int, default=640, help="training image size (default 640)")
    yolo.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    yolo.add_argument("--workers", type=int, default=0, help="dataloader processes (default 0)")
    yolo.set_defaults(command=cmd_yolo)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="collection folder (written by `run --collect`)")
    p.add_argument("--out", type=Path, required=True, help="the checkpoint to write")
    p.add_argument("--weights", required=True, help="checkpoint to start from, or 'random'")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling, augmentation and random weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--restart", action="store_true", help="discard an earlier run's state and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_sam2(args: argparse.Namespace) -> int:
    from engine.data.finetune.sam2 import Sam2Options, finetune_sam2
    from engine.runtime.device import resolve_device

    device = resolve_device(args.device)
    size = args.image_size or (1024 if device.type == "cuda" else 512)
    steps = args.steps if args.steps is not None else 1000
    if args.epochs is not None:
        steps = _epochs_to_steps(args)
    options = Sam2Options(data=args.data, out=args.out, weights=args.weights, model=args.model, image_size=size,
                          steps=steps, batch=args.batch, lr=args.lr, views=args.views, seed=args.seed,
                          device=str(device), save_every=args.save_every, restart=args.restart,
                          box_prompts=args.box_prompts, train_memory=args.train_memory,
                          memory_from=args.memory_from, progress=not args.quiet)
    result = finetune_sam2(options, log=_log)
    before, after = result.before, result.after
    for key in sorted(after):
        _log(f"{key}: {before.get(key, math.nan):.4f} -> {after[key]:.4f}")
    _log(f"wrote {result.checkpoint} (load it with --tracker-weights); report in {result.run_dir}")
    return 0


def cmd_yolo(args: argparse.Namespace) -> int:
    from engine.data.finetune.yolo import YoloOptions, finetune_yolo
    from engine.runtime.device import resolve_device

    if args.steps is not None:
        raise ConfigError("yolo trains in epochs (Ultralytics' trainer); use --epochs instead of --steps")
    device = resolve_device(args.device)
    options = YoloOptions(data=args.data, out=args.out, weights=args.weights, model=args.model,
                          epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed,
                          device="cpu" if device.type == "cpu" else str(device.index or 0),
                          workers=args.workers, restart=args.restart, progress=not args.quiet)
    result = finetune_yolo(options, log=_log)
    mask_map = result.metrics.get("metrics/mAP50-95(M)")
    if mask_map is not None:
        _log(f"mask mAP50-95 on the val split: {mask_map:.4f}")
    _log(f"wrote {result.checkpoint} (load it with --weights); Ultralytics' run in {result.run_dir}")
    return 0


def _epochs_to_steps(args: argparse.Namespace) -> int:
    """Epochs of SAM 2 training: every training instance of every view once per epoch."""
    from engine.data.dataset import read_collection
    from engine.data.finetune.sam2 import split_samples

    if args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    train, _ = split_samples(read_collection(args.data), 0.2, args.seed)
    instances = sum(len(s.rles) for s in train) * args.views
    return max(1, math.ceil(args.epochs * instances / args.batch))


def _log(line: str) -> None:
    print(f"streamseg: {line}", file=sys.stderr)
