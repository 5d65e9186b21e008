"""Does the uncertainty score pick better frames to label than chance? One budget, several cameras, seeds.

The engine on the closed loop's fine-tuned checkpoints (``benchmarks.closed_loop``) watches a pool of
cameras (synthetic scenes) once, with one collector per camera and arm: one keeps the camera's most
uncertain frames, one per seed keeps random ones, each ``spacing`` frames apart, up to ``train_frames /
spacing`` (the selector's spacing keeps fewer where high-ranked frames cluster, as the uncertain ones do:
the JSON records each arm's candidates per camera). One labelling budget is then spent across the
cameras (``merge_collections(budget=...)``): the uncertainty arm takes the ``budget`` most uncertain
frames of all, a random arm a seeded draw of the same number; an arm whose collectors kept fewer frames
than the budget stops the run, so every arm labels the same number. Each arm is labelled from the scenes'
truth and SAM 2 is fine-tuned on it from the same checkpoint (box prompts, frozen image encoder, the
seed's sampling; ``finetune_sam2`` holds a fifth of the frames out for its report, drawn with the seed,
so each run trains on 17 of the 21). Every result is scored the same way: the tracker
(``engine.track``) prompted with the exact box of every object on frames of held-out cameras of the same
kinds, mean mask IoU per camera, then the mean over cameras (each camera counts once, however many
objects it shows).

Pools (``--pool``):

- ``cameras`` (default): six cameras the checkpoints never saw, two each with 3, 6 and 12 objects (a
  quiet, an ordinary and a busy street); the loop trained on 6-object scenes only, so the busy cameras
  are where it is weakest (held-out box-prompted IoU 0.58-0.60 against 0.65-0.70 on the sixth round's
  checkpoints, benchmarks/RESULTS.md, 2026-12-02), as a fleet's new cameras are.
  Held out: the loop's held-out seeds at the same three object counts.
- ``loop``: the loop's own three training scenes (which the checkpoints were trained on, densely) and
  its two held-out scenes.

The uncertainty arm's frames are fixed (the engine is deterministic); its runs differ in the fine-tune's
seed, the random arm's in both; run k of each arm uses fine-tune seed k, so the arms are also compared in
pairs. The uncertainty arm's spread is the fine-tune's alone, a random arm's also its draw of frames.
Cameras are collected, and the arms fine-tuned, side by side in ``--workers`` processes of one
torch thread (``benchmarks.common.in_rounds``, ``in_parallel``).

    python -m benchmarks.selection [--pool cameras|loop] [--budget 21] [--seeds 0 1 2] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment, in_parallel, in_rounds, use_threads, write_json
from engine.data.synthetic_loop import (DETECTOR_IMGSZ, HELD_OUT_SEEDS, OBJECTS, SIZE, TRACKER_SIZE, TRAIN_SEEDS,
                                        loop_weights)


@dataclass(frozen=True, slots=True)
class Camera:
    """One synthetic scene of the pool: ``seed`` and how many objects move in it."""

    seed: int
    objects: int

    @property
    def name(self) -> str:
        return f"s{self.seed}o{self.objects}"

    def spec(self, frames: int) -> str:
        return f"synthetic:seed={self.seed},frames={frames},size={SIZE[0]}x{SIZE[1]},objects={self.objects}"

    def scene(self, frames: int):
        from engine.sources.synthetic import SyntheticScene

        return SyntheticScene(seed=self.seed, frames=frames, width=SIZE[0], height=SIZE[1], objects=self.objects)


POOLS: dict[str, tuple[tuple[Camera, ...], tuple[Camera, ...]]] = {  # {pool: (collected from, held out)}
    "cameras": (tuple(Camera(seed, n) for seed, n in ((301, 3), (302, 3), (303, 6), (304, 6), (305, 12), (306, 12))),
                tuple(Camera(seed, n) for n in (3, 6, 12) for seed in HELD_OUT_SEEDS)),
    "loop": (tuple(Camera(seed, OBJECTS) for seed in TRAIN_SEEDS), tuple(Camera(seed, OBJECTS) for seed in HELD_OUT_SEEDS)),
}


@dataclass(frozen=True, slots=True)
class SelectionSettings:
    pool: str = "cameras"
    budget: int = 21  # frames labelled per arm, over all cameras
    spacing: int = 10  # frames between two frames kept from one camera
    train_frames: int = 140  # per camera; one window each
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 300
    lr: float = 3e-4  # fine-tuning trained weights: lower than from random
    batch: int = 8
    views: int = 2
    max_tracks: int = 16  # the busiest cameras show 12 objects: every one of them gets a track
    eval_every: int = 10  # held-out frames scored: every 10th
    eval_frames: int = 100
    threads: int = 1
    workers: int = 2

    @property
    def cameras(self) -> tuple[Camera, ...]:
        return POOLS[self.pool][0]

    @property
    def held_out(self) -> tuple[Camera, ...]:
        return POOLS[self.pool][1]

    @property
    def per_camera(self) -> int:
        """The most frames a camera's collector keeps: one window, ``spacing`` apart (fewer where high-ranked
        frames cluster)."""
        return self.train_frames // self.spacing


def _arms(settings: SelectionSettings) -> dict[str, tuple[str, int]]:
    """{arm: (rank, seed)}: the uncertainty arm and one random arm per seed."""
    return {"uncertainty": ("uncertainty", 0), **{f"random-{s}": ("random", s) for s in settings.seeds}}


def collect(settings: SelectionSettings, work: Path) -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """Every camera through the engine once (side by side), feeding every arm's collector into a folder per
    arm and camera; then each arm's budget spent across its cameras' folders. Returns {arm: folder} and
    {arm: {camera: candidates its collector kept}}.

    Raises SystemExit when an arm's collectors kept fewer frames than the budget (the arms would differ)."""
    from engine.data.collector import merge_collections

    in_rounds(settings, {cam.name: (collect_camera, settings, cam, work / "parts") for cam in settings.cameras})
    folders = {arm: work / arm for arm in _arms(settings)}
    candidates = {arm: {cam.name: len(_records(work / "parts" / f"{arm}-{cam.name}")) for cam in settings.cameras}
                  for arm in _arms(settings)}
    for arm, (rank, seed) in _arms(settings).items():
        if sum(candidates[arm].values()) < settings.budget:
            raise SystemExit(f"the {arm} arm's collectors kept {sum(candidates[arm].values())} frames over the "
                             f"cameras, fewer than --budget {settings.budget}: give a budget of at most "
                             f"{min(sum(c.values()) for c in candidates.values())}")
        merge_collections([work / "parts" / f"{arm}-{cam.name}" for cam in settings.cameras], folders[arm],
                          budget=settings.budget, rank=rank, seed=seed)
    return folders, candidates


def _records(collection: Path) -> list[dict]:
    """A collection's journal records (none where its collector kept no frame and wrote nothing)."""
    journal = collection / "collection.jsonl"
    return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()] if journal.is_file() else []


def collect_camera(settings: SelectionSettings, cam: Camera, parts: Path, threads: int) -> None:
    from engine.app import build_pipeline
    from engine.data import Collector, CollectorConfig, SelectorConfig
    from engine.options import RunOptions
    from engine.pipeline import Pipeline

    use_threads(threads)
    weights = loop_weights()
    keep = settings.per_camera
    selector = SelectorConfig(window=settings.train_frames, per_window=keep, min_spacing=settings.spacing,
                              budget=keep)
    opts = RunOptions(source=cam.spec(settings.train_frames), weights=str(weights.detector),
                      tracker_weights=str(weights.tracker), imgsz=DETECTOR_IMGSZ, tracker_size=TRACKER_SIZE,
                      tracker_encoder="torch", max_tracks=settings.max_tracks, device="cpu")
    p = build_pipeline(opts).pipeline
    collectors = [Collector(parts / f"{arm}-{cam.name}", names=p.detector.names,
                            config=CollectorConfig(selector=selector, rank=rank, seed=s + 1000 * cam.seed,
                                                   prefix=f"{cam.name}_", val_every=0))
                  for arm, (rank, s) in _arms(settings).items()]
    Pipeline(p.source, shared=p.processor.shared, tracker=p.tracker, fuser=p.fuser, sinks=collectors,
             device=p.device).run()


def label(settings: SelectionSettings, folders: dict[str, Path]) -> None:
    from engine.data.labels import relabel, scenes_truth
    from engine.sources.synthetic import SyntheticScene

    scenes = {f"{cam.name}_": cam.scene(settings.train_frames) for cam in settings.cameras}
    for folder in folders.values():
        relabel(folder, scenes_truth(scenes), names=SyntheticScene.class_names)


def chosen(settings: SelectionSettings, folder: Path) -> dict:
    """Where an arm's budget went: frames per camera, and the labelled objects in them (after ``label``)."""
    records = _records(folder)
    names = [Path(r["file"]).name for r in records]
    return {"frames": {cam.name: sum(n.startswith(f"{cam.name}_") for n in names) for cam in settings.cameras},
            "objects": sum(len(r["instances"]) for r in records)}


def prompted_iou(settings: SelectionSettings, checkpoint: Path) -> dict:
    """The tracker prompted with each held-out object's exact box (objects of 50 px or more): mean mask IoU
    per held-out camera (``cameras``), their mean (``mean``: each camera counts once) and the mean over
    all objects (``objects``)."""
    from engine.track import TrackerConfig, load_tracker

    tracker = load_tracker("sam2.1_hiera_t", weights=str(checkpoint), image_size=TRACKER_SIZE, device="cpu",
                           options=TrackerConfig(image_size=TRACKER_SIZE, encoder_backend="torch"))
    per_camera, next_id = {}, 1
    for cam in settings.held_out:
        scene, ious = cam.scene(settings.eval_frames), []
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
        per_camera[cam.name] = ious
    return {"mean": float(np.mean([np.mean(v) for v in per_camera.values()])),
            "objects": float(np.mean([x for v in per_camera.values() for x in v])),
            "cameras": {name: float(np.mean(v)) for name, v in per_camera.items()}}


def finetune_arm(settings: SelectionSettings, folder: Path, seed: int, out: Path) -> dict:
    """SAM 2 fine-tuned on one arm's collection from the loop's checkpoint; its held-out prompted IoU."""
    from engine.data.finetune.sam2 import Sam2Options, finetune_sam2

    finetune_sam2(Sam2Options(data=folder, out=out, weights=str(loop_weights().tracker), image_size=TRACKER_SIZE,
                              steps=settings.steps, batch=settings.batch, lr=settings.lr, views=settings.views,
                              box_prompts=1.0, seed=seed, restart=True, progress=False, save_every=settings.steps))
    return prompted_iou(settings, out)


def summarise(settings: SelectionSettings, runs: dict[str, dict]) -> dict:
    """Per arm: mean and stdev of the runs' camera-mean IoU; and run k of one arm against run k of the
    other (same fine-tune seed): the mean and stdev of those differences and how many favour uncertainty."""
    out: dict = {}
    for kind in ("uncertainty", "random"):
        values = [runs[f"{kind}/seed{s}"]["mean"] for s in settings.seeds]
        out[kind] = {"mean": statistics.mean(values), "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "runs": values}
    diffs = [a - b for a, b in zip(out["uncertainty"]["runs"], out["random"]["runs"], strict=True)]
    out["paired"] = {"mean": statistics.mean(diffs), "stdev": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                     "uncertainty_ahead": sum(d > 0 for d in diffs), "pairs": len(diffs)}
    return out


def run(settings: SelectionSettings, work: Path) -> dict:
    torch.set_num_threads(settings.threads)
    start = loop_weights().tracker
    t0 = time.perf_counter()
    if work.exists():  # a collector resumes into an existing folder: the frames must be this run's
        shutil.rmtree(work)
    folders, candidates = collect(settings, work)
    collected = time.perf_counter() - t0
    label(settings, folders)
    record: dict = {"settings": asdict(settings), "start": str(start), "before": prompted_iou(settings, start),
                    "candidates": candidates, "chosen": {arm: chosen(settings, f) for arm, f in folders.items()}}
    jobs = {}
    for arm, (rank, seed) in _arms(settings).items():
        for ft_seed in settings.seeds if rank == "uncertainty" else (seed,):
            jobs[f"{rank}/seed{ft_seed}"] = (finetune_arm, settings, folders[arm], ft_seed, work / f"{arm}-ft{ft_seed}.pt")
    record["runs"] = in_parallel(settings, jobs)
    record |= summarise(settings, record["runs"])
    record["total"] = {"wall_s": round(time.perf_counter() - t0, 1), "collect_s": round(collected, 1)}
    return record


def main(argv: list[str] | None = None) -> int:
    from engine.weights import cache_dir

    defaults = SelectionSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", choices=sorted(POOLS), default=defaults.pool,
                        help="cameras: six new scenes of 3, 6 and 12 objects; loop: the loop's training scenes")
    parser.add_argument("--budget", type=int, default=defaults.budget, help="frames labelled per arm, all cameras")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="processes side by side (one per core)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not loop_weights().present:
        raise SystemExit("no closed-loop checkpoints in the cache: run python -m benchmarks.closed_loop first")
    most = defaults.per_camera * len(POOLS[args.pool][0])
    if args.workers < 1 or args.steps < 1 or not 1 <= args.budget <= most or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--workers {args.workers}, --steps {args.steps}, --budget {args.budget}, --seeds "
                     f"{' '.join(map(str, args.seeds))}: give 1 or more workers and steps, a budget from 1 to {most} "
                     f"frames (the pool's {len(POOLS[args.pool][0])} cameras keep at most {defaults.per_camera} each), "
                     "and distinct seeds")
    settings = SelectionSettings(pool=args.pool, budget=args.budget, seeds=tuple(args.seeds), steps=args.steps,
                                 workers=args.workers)
    record = run(settings, cache_dir() / "closed_loop" / "selection")
    record["environment"] = environment()
    path = write_json("selection", record, out=args.out)
    print(f"\nprompted mask IoU on held-out cameras (mean over cameras): start {record['before']['mean']:.3f}")
    for kind in ("uncertainty", "random"):
        r = record[kind]
        print(f"{kind:<12} {r['mean']:.3f} +- {r['stdev']:.3f}  ({', '.join(f'{v:.3f}' for v in r['runs'])})")
    d = record["paired"]
    print(f"paired (same fine-tune seed): uncertainty - random {d['mean']:+.3f} +- {d['stdev']:.3f}, "
          f"ahead in {d['uncertainty_ahead']} of {d['pairs']}")
    spent = record["chosen"]["uncertainty"]
    print(f"uncertainty's budget per camera: {spent['frames']}, {spent['objects']} objects labelled (random: "
          f"{', '.join(str(v['objects']) for k, v in record['chosen'].items() if k != 'uncertainty')})")
    print(f"{record['total']['wall_s']} s wall; JSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
