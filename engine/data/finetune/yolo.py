"""Fine-tuning YOLOv8-seg on a collection's YOLO-seg layout with Ultralytics' own trainer.

streamseg does not write a training loop for YOLO: it checks the dataset and the starting weights, runs
``ultralytics.models.yolo.segment.SegmentationTrainer`` with settings that keep it offline and
reproducible, and copies the best checkpoint to ``--out``, which ``--weights`` loads.

Offline (nothing is downloaded):
- ``YOLO_OFFLINE=1``: Ultralytics skips its DNS checks and usage events;
- ``amp=False``: the AMP check downloads a model to compare fp32 and fp16 results (on CUDA only; the CPU
  never uses AMP). Training is fp32;
- ``plots=False``, and a local font in Ultralytics' settings folder: its dataset check looks for
  ``Arial.ttf`` there and downloads it when missing. matplotlib's bundled DejaVu Sans is copied under that
  name (it only labels plots);
- ``NO_ALBUMENTATIONS_UPDATE=1``: albumentations (which Ultralytics uses when installed) checks PyPI for
  a newer version on import.

Reproducible and resumable: ``seed`` and ``deterministic=True``; every epoch is saved (``last.pt`` and,
with ``save_period=1``, ``epochN.pt``, since ``last.pt`` is not written atomically). Running the same
command again resumes from the newest readable checkpoint through Ultralytics' own ``resume``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from engine.data.finetune.common import copy_atomic, prepare_output
from engine.errors import ConfigError, DatasetError, WeightsError

RANDOM = "random"
FINGERPRINT = "fingerprint.json"


@dataclass(frozen=True, slots=True)
class YoloOptions:
    data: Path  # a collection folder (data.yaml), or a data.yaml
    out: Path  # the .pt to write
    weights: str  # a YOLOv8-seg .pt to start from, or "random" (the model config's own initialisation)
    model: str = "yolov8n-seg"  # the architecture for random weights (an Ultralytics model config name)
    epochs: int = 50
    imgsz: int = 640
    batch: int = 16
    seed: int = 0
    device: str = "cpu"
    workers: int = 0  # dataloader processes (Ultralytics uses none on a CPU anyway)
    restart: bool = False
    progress: bool = True
    # Further settings of Ultralytics' trainer (its default.yaml keys: lr0, optimizer, mosaic, ...), for
    # recipes the fields above do not cover (training from random weights wants its own); checked by name
    train_args: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.imgsz < 32:
            raise ConfigError(f"--epochs and --batch must be >= 1 and --imgsz >= 32, got {self.epochs}, "
                              f"{self.batch}, {self.imgsz}")


@dataclass(frozen=True, slots=True)
class YoloResult:
    checkpoint: Path
    run_dir: Path
    epochs: int
    resumed_from: int  # the epoch training continued from (0: a fresh run)
    metrics: dict[str, float]  # Ultralytics' validation metrics of the final model


def offline_ultralytics() -> None:
    """Environment and files that keep Ultralytics from reaching the network (module docstring)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))  # Ultralytics would set 1
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = Path(USER_CONFIG_DIR) / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(font_manager.findfont("DejaVu Sans", fallback_to_default=True), target)


def check_yolo_dataset(data: str | os.PathLike) -> tuple[Path, dict]:
    """The collection's data.yaml, checked by streamseg (every label line) and by Ultralytics'
    ``check_det_dataset``; DatasetError naming the file and line on the first problem."""
    path = Path(data)
    yaml_path = path / "data.yaml" if path.is_dir() else path
    if not yaml_path.is_file():
        raise DatasetError(f"{data}: holds no data.yaml; pass a folder written by `streamseg run --collect` or "
                           "a YOLO-seg data.yaml")
    offline_ultralytics()
    from ultralytics.data.utils import check_det_dataset

    try:
        info = check_det_dataset(str(yaml_path), autodownload=False)
    except (FileNotFoundError, SyntaxError, TypeError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatasetError(f"{yaml_path}: Ultralytics refused the dataset ({first})") from None
    images = _images(Path(info["train"]))
    if not images:
        raise DatasetError(f"{yaml_path}: empty dataset: no image in {info['train']}; collect frames first")
    labelled = 0
    for image in images:
        labelled += _check_label(_label_of(image), info["nc"])
    if not labelled:
        raise DatasetError(f"{yaml_path}: empty dataset: no training image has a label; label the frames first")
    return yaml_path.resolve(), info


def finetune_yolo(options: YoloOptions, *, log=print) -> YoloResult:
    """Train with Ultralytics' trainer (resuming an unfinished run) and write ``options.out``."""
    yaml_path, _ = check_yolo_dataset(options.data)
    extra = _train_args(options.train_args)
    out, run_dir = prepare_output(options.out, restart=options.restart)
    model = _starting_model(options)
    save_dir = run_dir / "ultralytics"
    fingerprint = {k: str(v) for k, v in asdict(options).items()
                   if k not in ("out", "device", "workers", "restart", "progress")}
    if options.restart and save_dir.exists():
        shutil.rmtree(save_dir)
    resume = _resumable(save_dir, run_dir, fingerprint)
    if resume is not None and resume[1] < 0:  # this run already finished: its result stands
        best = save_dir / "weights" / "best.pt"
        copy_atomic(best if best.exists() else resume[0], out)
        log(f"yolo: {run_dir} already finished {options.epochs} epochs; wrote {out} (pass --restart to train again)")
        report = json.loads((run_dir / "report.json").read_text()) if (run_dir / "report.json").exists() else {}
        return YoloResult(checkpoint=out, run_dir=run_dir, epochs=options.epochs, resumed_from=options.epochs,
                          metrics=report.get("metrics", {}))
    from ultralytics.models.yolo.segment import SegmentationTrainer

    common = {"save_dir": str(save_dir), "device": options.device, "workers": options.workers, "plots": False}
    if resume is not None:
        path, epoch = resume
        log(f"yolo: resuming from epoch {epoch + 1} of {options.epochs} ({path})")
        overrides = {"resume": str(path), **common}
    else:
        (run_dir / FINGERPRINT).write_text(json.dumps(fingerprint, indent=2) + "\n")
        overrides = {"model": model, "data": str(yaml_path), "epochs": options.epochs, "imgsz": options.imgsz,
                     "batch": options.batch, "seed": options.seed, "deterministic": True, "amp": False,
                     "save_period": 1, "exist_ok": True, "pretrained": False, "val": True, "cache": False,
                     "verbose": options.progress, **extra, **common}
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        trainer = SegmentationTrainer(overrides=overrides)
        trainer.train()
    finally:
        torch.use_deterministic_algorithms(deterministic)  # Ultralytics turns it on for the whole process
    best = trainer.best if Path(trainer.best).exists() else trainer.last
    copy_atomic(Path(best), out)
    from engine.detect.yolo.loading import load_checkpoint

    load_checkpoint(str(out))  # the engine reads what was written
    metrics = {k: float(v) for k, v in (trainer.metrics or {}).items() if isinstance(v, (int, float))}
    (run_dir / "report.json").write_text(json.dumps({"task": "yolo", "checkpoint": str(out), "epochs": options.epochs,
                                                     "resumed_from": resume[1] + 1 if resume else 0,
                                                     "metrics": metrics, "settings": fingerprint}, indent=2) + "\n")
    return YoloResult(checkpoint=out, run_dir=run_dir, epochs=options.epochs,
                      resumed_from=resume[1] + 1 if resume else 0, metrics=metrics)


def _train_args(args: Mapping[str, object]) -> dict[str, object]:
    """``train_args`` checked against the trainer's own settings (ConfigError naming an unknown one);
    the settings streamseg owns (paths, device, resuming) cannot be replaced this way."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    owned = {"model", "data", "save_dir", "device", "resume", "project", "name", "exist_ok", "workers", "plots"}
    for key in args:
        if key not in DEFAULT_CFG_DICT or key in owned:
            raise ConfigError(f"yolo train_args: {key!r} is not a setting of Ultralytics' trainer that streamseg "
                              "passes on (see ultralytics/cfg/default.yaml)")
    return dict(args)


def _starting_model(options: YoloOptions) -> str:
    """What Ultralytics builds from: the model config (random) or the checked .pt."""
    from engine.detect.yolo.loading import build_from_yaml, load_checkpoint

    if str(options.weights) == RANDOM:
        config = options.model if options.model.endswith((".yaml", ".yml")) else f"{options.model}.yaml"
        build_from_yaml(config, seed=options.seed, spread=False)  # a segmentation config, or WeightsError
        return config
    if not str(options.weights).endswith(".pt"):
        raise WeightsError(f"--weights {options.weights}: fine-tuning starts from an Ultralytics .pt (or 'random'); "
                           "ONNX and TensorRT files cannot be trained")
    load_checkpoint(str(options.weights))  # a YOLOv8-seg checkpoint, or WeightsError naming what it is
    return str(Path(options.weights).resolve())


def _resumable(save_dir: Path, run_dir: Path, fingerprint: dict) -> tuple[Path, int] | None:
    """The newest readable checkpoint of an earlier run with the same settings and its epoch (0-based; -1 when
    that run finished), or None when there is none."""
    weights = save_dir / "weights"
    if not weights.is_dir():
        return None
    recorded = run_dir / FINGERPRINT
    old = json.loads(recorded.read_text()) if recorded.exists() else {}
    if old != fingerprint:
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in fingerprint.items() if old.get(k) != v)
        raise ConfigError(f"{run_dir} holds a YOLO fine-tune with other settings ({diff}); pass --restart to "
                          "discard it, or choose another --out")
    from ultralytics.nn.tasks import torch_safe_load

    candidates = sorted(weights.glob("epoch*.pt"), key=lambda p: int(p.stem[5:] or -1), reverse=True)
    for path in [weights / "last.pt", *candidates]:
        if not path.exists():
            continue
        try:
            ckpt, _ = torch_safe_load(str(path))
        except Exception:  # noqa: BLE001, S112  (a checkpoint cut short by a kill: try the one before)
            continue
        epoch = int(ckpt.get("epoch", -1))  # Ultralytics sets -1 when it strips a finished run's checkpoint
        if epoch < 0 or epoch + 1 >= int(ckpt.get("train_args", {}).get("epochs", 0)):
            return path, -1
        return path, epoch
    return None


def _images(folder: Path) -> list[Path]:
    from ultralytics.data.utils import IMG_FORMATS

    return sorted(p for p in folder.rglob("*") if p.suffix[1:].lower() in IMG_FORMATS) if folder.is_dir() else []


def _label_of(image: Path) -> Path:
    parts = list(image.parts)
    index = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:index], "labels", *parts[index + 1:]).with_suffix(".txt")


def _check_label(label: Path, classes: int) -> int:
    """1 if ``label`` holds instances, 0 if it is missing or empty; DatasetError on a malformed line."""
    if not label.exists():
        return 0
    lines = [ln for ln in label.read_text(encoding="utf-8").splitlines() if ln.strip()]
    for number, line in enumerate(lines, 1):
        values = line.split()
        try:
            cls, coords = int(values[0]), [float(v) for v in values[1:]]
        except (ValueError, IndexError):
            raise DatasetError(f"{label}:{number}: not a YOLO-seg line ('class x1 y1 x2 y2 ...')") from None
        if not 0 <= cls < classes:
            raise DatasetError(f"{label}:{number}: class {cls} is not among the dataset's {classes} classes "
                               "(data.yaml names); the dataset is inconsistent")
        if len(coords) < 6 or len(coords) % 2:
            raise DatasetError(f"{label}:{number}: a polygon needs at least 3 x, y pairs, got {len(coords)} numbers")
        if min(coords) < 0.0 or max(coords) > 1.0:
            raise DatasetError(f"{label}:{number}: coordinates must be normalised to [0, 1]")
    return 1 if lines else 0
