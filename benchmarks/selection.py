"""Does the uncertainty score pick better frames to label than chance? Same budget, three seeds.

The second round of the closed loop: the engine on the closed loop's fine-tuned checkpoints
(``benchmarks.closed_loop``) runs once over each training scene with several collectors as its sinks: one
ranking frames by uncertainty and one per seed ranking them at random, each with the same window, spacing
and budget. The window is the whole scene and it keeps ``per_window`` frames of it, so the ranking decides
which moments of the scene get labelled (with a window per kept frame, as a live collector's short windows
give, every arm keeps one frame of each stretch of a second and the ranking only moves it within that
stretch, where frames look alike). Each collection is labelled from the scenes' truth and SAM 2 is
fine-tuned on it from the same checkpoint (box prompts, frozen image encoder, the seed's sampling); every
result is scored the same way: the tracker (``engine.track``) prompted with the exact box of every object
on held-out frames, mean mask IoU at frame resolution. The uncertainty arm's frames are fixed (the engine is
deterministic); its three runs differ in the fine-tune's seed, the random arm's in both. Scenes are
collected, and the arms fine-tuned, side by side in ``--workers`` processes of one torch thread
(``benchmarks.common.in_rounds``, ``in_parallel``).

    python -m benchmarks.selection [--per-scene 7] [--seeds 0 1 2] [--steps 300] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment, in_parallel, in_rounds, use_threads, write_json
from engine.data.synthetic_loop import (DETECTOR_IMGSZ, HELD_OUT_SEEDS, MAX_TRACKS, OBJECTS, SIZE, TRACKER_SIZE,
                                        TRAIN_SEEDS, loop_weights, scene_spec)


@dataclass(frozen=True, slots=True)
class SelectionSettings:
    per_scene: int = 7  # frames kept per training scene, per arm (21 in all)
    spacing: int = 10  # frames between two kept frames
    train_frames: int = 140  # per training scene, as the closed loop collects them; one window each
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 300
    lr: float = 3e-4  # fine-tuning trained weights: lower than from random
    batch: int = 8
    views: int = 2
    eval_every: int = 10  # held-out frames scored: every 10th
    eval_frames: int = 100
    threads: int = 1
    workers: int = 2

    @property
    def budget(self) -> int:
        return self.per_scene * len(TRAIN_SEEDS)


def _arms(settings: SelectionSettings) -> dict[str, tuple[str, int]]:
    """{arm: (rank, seed)}: the uncertainty arm and one random arm per seed."""
    return {"uncertainty": ("uncertainty", 0), **{f"random-{s}": ("random", s) for s in settings.seeds}}


def collect(settings: SelectionSettings, work: Path) -> dict[str, Path]:
    """Every training scene through the engine once (scenes side by side), feeding every arm's collector
    into a folder per arm and scene; then each arm's folders merged."""
    from engine.data.collector import merge_collections

    in_rounds(settings, {seed: (collect_scene, settings, seed, work / "parts") for seed in TRAIN_SEEDS})
    folders = {arm: work / arm for arm in _arms(settings)}
    for arm, folder in folders.items():
        merge_collections([work / "parts" / f"{arm}-s{seed}" for seed in TRAIN_SEEDS], folder)
    return folders


def collect_scene(settings: SelectionSettings, seed: int, parts: Path, threads: int) -> None:
    from engine.app import build_pipeline
    from engine.data import Collector, CollectorConfig, SelectorConfig
    from engine.options import RunOptions
    from engine.pipeline import Pipeline

    use_threads(threads)
    weights = loop_weights()
    selector = SelectorConfig(window=settings.train_frames, per_window=settings.per_scene,
                              min_spacing=settings.spacing, budget=settings.per_scene)
    opts = RunOptions(source=scene_spec(seed, settings.train_frames), weights=str(weights.detector),
                      tracker_weights=str(weights.tracker), imgsz=DETECTOR_IMGSZ, tracker_size=TRACKER_SIZE,
                      tracker_encoder="torch", max_tracks=MAX_TRACKS, device="cpu")
    p = build_pipeline(opts).pipeline
    collectors = [Collector(parts / f"{arm}-s{seed}", names=p.detector.names,
                            config=CollectorConfig(selector=selector, rank=rank, seed=s + 1000 * seed,
                                                   prefix=f"s{seed}_", val_every=0))
                  for arm, (rank, s) in _arms(settings).items()]
    Pipeline(p.source, shared=p.processor.shared, tracker=p.tracker, fuser=p.fuser, sinks=collectors,
             device=p.device).run()


def label(settings: SelectionSettings, folders: dict[str, Path]) -> None:
    from engine.data.labels import relabel, scenes_truth
    from engine.sources.synthetic import SyntheticScene

    scenes = {f"s{seed}_": SyntheticScene(seed=seed, frames=settings.train_frames, width=SIZE[0], height=SIZE[1],
                                          objects=OBJECTS) for seed in TRAIN_SEEDS}
    for folder in folders.values():
        relabel(folder, scenes_truth(scenes), names=SyntheticScene.class_names)


def prompted_iou(settings: SelectionSettings, checkpoint: Path) -> float:
    """Mean mask IoU of the tracker prompted with each held-out object's exact box (objects of 50 px or more)."""
    from engine.sources.synthetic import SyntheticScene
    from engine.track import TrackerConfig, load_tracker

    tracker = load_tracker("sam2.1_hiera_t", weights=str(checkpoint), image_size=TRACKER_SIZE, device="cpu",
                           options=TrackerConfig(image_size=TRACKER_SIZE, encoder_backend="torch"))
    ious, next_id = [], 1
    for seed in HELD_OUT_SEEDS:
        scene = SyntheticScene(seed=seed, frames=settings.eval_frames, width=SIZE[0], height=SIZE[1], objects=OBJECTS)
        for i in range(0, settings.eval_frames, settings.eval_every):
            tracker.step(scene.render(i))
            for mask in scene.ground_truth(i).masks:
                if mask.sum() < 50:
                    continue
                ys, xs = np.nonzero(mask)
                got = tracker.add_object(next_id, box=[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).masks[0]
                got = got.cpu().numpy()
                ious.append(float((got & mask).sum() / (got | mask).sum()))
                tracker.remove_object(next_id)
                next_id += 1
    return float(np.mean(ious))


def finetune_arm(settings: SelectionSettings, folder: Path, seed: int, out: Path) -> float:
    """SAM 2 fine-tuned on one arm's collection from the loop's checkpoint; its held-out prompted IoU."""
    from engine.data.finetune.sam2 import Sam2Options, finetune_sam2

    finetune_sam2(Sam2Options(data=folder, out=out, weights=str(loop_weights().tracker), image_size=TRACKER_SIZE,
                              steps=settings.steps, batch=settings.batch, lr=settings.lr, views=settings.views,
                              box_prompts=1.0, seed=seed, restart=True, progress=False, save_every=settings.steps))
    return prompted_iou(settings, out)


def run(settings: SelectionSettings, work: Path) -> dict:
    torch.set_num_threads(settings.threads)
    start = loop_weights().tracker
    t0 = time.perf_counter()
    if work.exists():  # a collector resumes into an existing folder: the frames must be this run's
        shutil.rmtree(work)
    folders = collect(settings, work)
    label(settings, folders)
    record: dict = {"settings": asdict(settings) | {"budget": settings.budget}, "start": str(start),
                    "before": prompted_iou(settings, start), "runs": {}}
    jobs = {}
    for arm, (rank, seed) in _arms(settings).items():
        for ft_seed in settings.seeds if rank == "uncertainty" else (seed,):
            jobs[f"{rank}/seed{ft_seed}"] = (finetune_arm, settings, folders[arm], ft_seed, work / f"{arm}-ft{ft_seed}.pt")
    record["runs"] = in_parallel(settings, jobs)
    for kind in ("uncertainty", "random"):
        values = [v for k, v in record["runs"].items() if k.startswith(kind)]
        record[kind] = {"mean": statistics.mean(values), "stdev": statistics.stdev(values), "runs": values}
    record["total"] = {"wall_s": round(time.perf_counter() - t0, 1)}
    return record


def main(argv: list[str] | None = None) -> int:
    from engine.weights import cache_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-scene", type=int, default=SelectionSettings().per_scene,
                        help="frames kept per training scene and arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SelectionSettings().seeds))
    parser.add_argument("--steps", type=int, default=SelectionSettings().steps)
    parser.add_argument("--workers", type=int, default=SelectionSettings().workers,
                        help="processes side by side (one per core)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not loop_weights().present:
        raise SystemExit("no closed-loop checkpoints in the cache: run python -m benchmarks.closed_loop first")
    if args.workers < 1 or args.per_scene < 1 or args.per_scene * SelectionSettings().spacing > SelectionSettings().train_frames:
        parser.error(f"--workers {args.workers}, --per-scene {args.per_scene}: give 1 or more, and at most "
                     f"{SelectionSettings().train_frames // SelectionSettings().spacing} frames a scene")
    settings = SelectionSettings(per_scene=args.per_scene, seeds=tuple(args.seeds), steps=args.steps,
                                 workers=args.workers)
    work = cache_dir() / "closed_loop" / "selection"
    record = run(settings, work)
    record["environment"] = environment()
    path = write_json("selection", record, out=args.out)
    print(f"\nprompted mask IoU on held-out frames: start {record['before']:.3f}")
    for kind in ("uncertainty", "random"):
        r = record[kind]
        print(f"{kind:<12} {r['mean']:.3f} +- {r['stdev']:.3f}  ({', '.join(f'{v:.3f}' for v in r['runs'])})")
    print(f"{record['total']['wall_s']} s wall; JSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
