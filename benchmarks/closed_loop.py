"""The data engine's loop, closed on synthetic scenes, from random weights, in one command.

1. collect: the whole engine (YOLOv8-seg + SAM 2 + fuser, random weights) runs on the training scenes
   (``engine.data.synthetic_loop.TRAIN_SEEDS``) with the uncertainty collector as its sink
   (``--collect``: the top frame of every ``window`` frames, ``spacing`` apart, ``budget`` in all);
2. label: the scenes' exact truth replaces the engine's pre-annotations (``engine.data.labels``);
3. fine-tune: YOLOv8-seg through Ultralytics' trainer and, beside it, SAM 2's prompt encoder and mask decoder
   and, since the weights start random, its memory path on pseudo-videos of slightly moved views
   (``engine.data.finetune.sam2_memory``; image encoder frozen;
   box prompts: the engine prompts the tracker with boxes), both from the random weights the engine
   collected with;
4. score: the whole engine with the fine-tuned checkpoints on the held-out scenes (never collected from),
   making its masks as ``engine.data.synthetic_loop.LOOP_OPTIONS`` says (the detection's mask for a matched
   track; a track no detection confirms is not shown; a dense CRF on the final masks), against their truth
   with TrackEval: HOTA, and J (DAVIS region similarity: the mean mask IoU of each object over the frames it
   is visible in) and J&F; before fine-tuning as well (the random engine).

    python -m benchmarks.closed_loop      # both cores of a 2-core CPU, one process each; installs the checkpoints
    python -m benchmarks.closed_loop --rank random --seed 1 --no-install   # the A/B baseline

Each phase runs its independent jobs side by side in ``--workers`` processes of one torch thread (scenes
are collected into folders of their own and merged; the two fine-tunes need only the labelled collection):
one thread a process wastes no time handing work between threads. No core is left idle while work remains:
the scenes beyond a whole round of workers are collected after it, sharing the cores as torch threads,
and when YOLOv8-seg's fine-tune ends, SAM 2's takes the freed core as a second thread (between two steps:
the same steps, only faster). Phases report wall time and the CPU time of every process.

The random engine's own score (``--baseline``, ~3 min) is not part of the loop: it is the starting point,
measured in earlier rounds (benchmarks/RESULTS.md: HOTA 0.001, J 0.217).

The checkpoints go to ``<cache>/closed_loop/`` (``engine.data.synthetic_loop.loop_weights``), where
``streamseg demo --scene synthetic`` finds them; the work (collection, runs) to ``<cache>/closed_loop/work-*``.
The JSON (settings, every phase's wall and CPU seconds, every score, the machine) goes to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from benchmarks.common import environment, in_parallel, in_rounds, use_threads, write_json
from engine.data.synthetic_loop import (DETECTOR_IMGSZ, HELD_OUT_SEEDS, LOOP_OPTIONS, MAX_TRACKS, OBJECTS, SIZE,
                                        TRACKER_SIZE, TRAIN_SEEDS, loop_weights, scene_spec)


@dataclass(frozen=True, slots=True)
class LoopSettings:
    train_seeds: tuple[int, ...] = TRAIN_SEEDS
    held_out_seeds: tuple[int, ...] = HELD_OUT_SEEDS
    train_frames: int = 140  # per training scene: 4.7 s at 30 fps, most of every object's swing
    held_out_frames: int = 100  # per held-out scene
    budget: int = 84  # frames kept in all (28 a scene: one per 5-frame window)
    window: int = 5
    per_window: int = 1
    spacing: int = 3
    rank: str = "uncertainty"  # or "random": the selection baseline
    seed: int = 0  # random weights, the random ranking, sampling and augmentation
    # As many epochs as end beside SAM 2's fine-tune on the other core (~13 s each there): the detector's
    # recall still rises at 30
    yolo_epochs: int = 60
    yolo_batch: int = 16
    # From random weights: AdamW at a fixed rate (Ultralytics' "auto" picks a rate for fine-tuning trained
    # weights), one warm-up epoch, mosaic off for the last 5 epochs, validation only at the end (it costs
    # an epoch's time on this CPU for no training)
    yolo_args: dict = field(default_factory=lambda: {"optimizer": "AdamW", "lr0": 0.003, "warmup_epochs": 1,
                                                     "close_mosaic": 5, "val": False})
    # 200 steps of the prompt path alone (~0.5 s each on one core), then 380 with the memory path's
    # pseudo-videos (~2.3 s): what the 30-minute budget leaves after collecting. The prompt path first is
    # what makes the decoder leave its loss plateau on every seed tried (Sam2Options.memory_from)
    sam2_steps: int = 580
    sam2_memory_from: int = 200
    # From random weights the prompt path leaves its loss plateau at 5e-4 on both seeds tried on one collection
    # (held-out IoU 0.60, 0.57 at 300 steps), at 1e-3 on one of two, at 3e-3 on neither (benchmarks/RESULTS.md)
    sam2_lr: float = 5e-4
    sam2_batch: int = 8
    sam2_views: int = 2
    threads: int = 1  # torch threads per worker: one thread wastes no time on hand-offs
    # Worker processes: the scenes are collected and scored side by side, and YOLOv8-seg and SAM 2 fine-tune
    # side by side (neither needs the other), one process a core; the phases themselves run in order
    workers: int = 2


def _cpu_seconds() -> float:
    """This process's CPU time and its reaped children's (the workers of finished phases)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _phase(timings: dict, name: str):
    class _Timer:
        def __enter__(self):
            self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
            print(f"== {name}", flush=True)

        def __exit__(self, *exc):
            timings[name] = {"wall_s": round(time.perf_counter() - self.wall, 1),
                             "cpu_s": round(_cpu_seconds() - self.cpu, 1)}
            print(f"== {name}: {timings[name]['wall_s']} s wall, {timings[name]['cpu_s']} s CPU", flush=True)
    return _Timer()


def _options(settings: LoopSettings, seed: int, frames: int, *, detector: str, tracker: str, **extra):
    from engine.options import RunOptions

    return RunOptions(source=scene_spec(seed, frames), weights=detector, tracker_weights=tracker, seed=settings.seed,
                      imgsz=DETECTOR_IMGSZ, tracker_size=TRACKER_SIZE, tracker_encoder="torch",
                      max_tracks=MAX_TRACKS, device="cpu", **extra)


def collect(settings: LoopSettings, folder: Path) -> dict:
    """The random engine over the training scenes, each scene's collector keeping its share of the budget
    into its own folder (the scenes run side by side), merged into ``folder``."""
    from engine.data.collector import merge_collections

    seeds = settings.train_seeds
    shares = [settings.budget // len(seeds) + (k < settings.budget % len(seeds)) for k in range(len(seeds))]
    parts = {seed: folder.parent / "parts" / f"s{seed}" for seed in seeds}
    kept = in_rounds(settings, {seed: (collect_scene, settings, seed, parts[seed], share)
                                 for seed, share in zip(seeds, shares)})
    merge_collections(list(parts.values()), folder)
    return kept


def collect_scene(settings: LoopSettings, seed: int, folder: Path, budget: int, threads: int) -> int:
    from engine.app import build_pipeline

    use_threads(threads)
    opts = _options(settings, seed, settings.train_frames, detector="random", tracker="random",
                    collect=folder, collect_budget=budget, collect_window=settings.window,
                    collect_per_window=settings.per_window, collect_spacing=settings.spacing,
                    collect_rank=settings.rank, collect_prefix=f"s{seed}_")
    built = build_pipeline(opts)
    built.pipeline.run()
    return built.collector.kept


def label(settings: LoopSettings, folder: Path) -> int:
    from engine.data.labels import relabel, scenes_truth
    from engine.sources.synthetic import SyntheticScene

    scenes = {f"s{seed}_": SyntheticScene(seed=seed, frames=settings.train_frames, width=SIZE[0], height=SIZE[1],
                                          objects=OBJECTS) for seed in settings.train_seeds}
    return relabel(folder, scenes_truth(scenes), names=SyntheticScene.class_names)


def finetune_detector(settings: LoopSettings, folder: Path, out: Path) -> dict:
    from engine.data.finetune.yolo import YoloOptions, finetune_yolo

    started = time.perf_counter()
    result = finetune_yolo(YoloOptions(data=folder, out=out, weights="random", epochs=settings.yolo_epochs,
                                       imgsz=DETECTOR_IMGSZ, batch=settings.yolo_batch, seed=settings.seed,
                                       restart=True, progress=False, train_args=settings.yolo_args))
    metrics = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("metrics/")}
    return metrics | {"wall_s": round(time.perf_counter() - started, 1)}


def finetune_tracker(settings: LoopSettings, folder: Path, out: Path, cores_free: Path) -> dict:
    """SAM 2's fine-tune; from the step after ``cores_free`` appears (the detector's fine-tune ended) it
    runs on every worker's threads."""
    import functools

    from engine.data.finetune.sam2 import Sam2Options, finetune_sam2

    started = time.perf_counter()
    result = finetune_sam2(Sam2Options(data=folder, out=out, weights="random", image_size=TRACKER_SIZE,
                                       steps=settings.sam2_steps, batch=settings.sam2_batch, lr=settings.sam2_lr,
                                       views=settings.sam2_views, box_prompts=1.0, seed=settings.seed, train_memory=True,
                                       memory_from=settings.sam2_memory_from, save_every=100, restart=True, progress=False),
                           between_steps=functools.partial(_take_freed_cores, cores_free,
                                                           settings.workers * settings.threads))
    return {"before": result.before, "after": result.after,
            "loss_first10": sum(result.losses[:10]) / 10, "loss_last10": sum(result.losses[-10:]) / 10,
            "wall_s": round(time.perf_counter() - started, 1)}


def _take_freed_cores(flag: Path, threads: int, step: int) -> None:
    if torch.get_num_threads() < threads and flag.exists():
        torch.set_num_threads(threads)
        print(f"SAM 2 fine-tune: {threads} threads from step {step} on (the detector's fine-tune ended)", flush=True)


def score(settings: LoopSettings, *, detector: str, tracker: str) -> dict:
    """The whole engine on the held-out scenes (side by side): per scene and mean HOTA, DetA, AssA, J, J&F,
    ID switches."""
    scenes = in_parallel(settings, {seed: (score_scene, settings, seed, detector, tracker)
                                     for seed in settings.held_out_seeds})
    keys = ("hota", "deta", "assa", "j", "f", "j_and_f")
    mean = {k: sum(s[k] for s in scenes.values()) / len(scenes) for k in keys}
    return {"mean": mean, "scenes": scenes}


def score_scene(settings: LoopSettings, seed: int, detector: str, tracker: str) -> dict:
    from engine.app import build_pipeline
    from engine.eval.fusion import frame_masks
    from engine.eval.results import evaluate_against_scene
    from engine.sources.synthetic import SyntheticScene

    built = build_pipeline(_options(settings, seed, settings.held_out_frames, detector=detector, tracker=tracker,
                                    **LOOP_OPTIONS))
    predicted, size = {}, (SIZE[1], SIZE[0])
    for result in built.pipeline:
        inst = result.instances
        predicted[result.index] = frame_masks(inst.ids.tolist(), inst.masks.cpu().numpy(), size)
    scene = SyntheticScene(seed=seed, frames=settings.held_out_frames, width=SIZE[0], height=SIZE[1], objects=OBJECTS)
    report = evaluate_against_scene(predicted, scene)
    return {"hota": report.hota, "deta": report.deta, "assa": report.assa, "j": report.j_mean, "f": report.f_mean,
            "j_and_f": report.j_and_f, "id_switches": report.id_switches, "predicted_ids": report.predicted_ids,
            "gt_objects": report.gt_objects, "frame_ms": round(built.pipeline.latency.histograms["total"].mean, 1)}


def run(settings: LoopSettings, *, work: Path, install: Path | None, baseline: bool) -> dict:
    torch.set_num_threads(settings.threads)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    folder, yolo_out, sam_out = work / "collection", work / "yolo.pt", work / "sam2.pt"
    timings: dict = {}
    record: dict = {"settings": asdict(settings), "timings": timings, "load_start": os.getloadavg()}
    started, cpu0 = time.perf_counter(), _cpu_seconds()
    if baseline:
        with _phase(timings, "score random weights"):
            record["before"] = score(settings, detector="random", tracker="random")
    with _phase(timings, "collect"):
        record["kept"] = collect(settings, folder)
    with _phase(timings, "label"):
        record["labelled"] = label(settings, folder)
    with _phase(timings, "fine-tune YOLOv8-seg and SAM 2"):
        cores_free = work / "detector-done"
        tuned = in_parallel(settings, {"yolo": (finetune_detector, settings, folder, yolo_out),
                                        "sam2": (finetune_tracker, settings, folder, sam_out, cores_free)},
                             done={"yolo": lambda _: cores_free.touch()})
        record.update(tuned)
    with _phase(timings, "score fine-tuned"):
        record["after"] = score(settings, detector=str(yolo_out), tracker=str(sam_out))
    record["total"] = {"wall_s": round(time.perf_counter() - started, 1),
                       "cpu_s": round(_cpu_seconds() - cpu0, 1)}
    record["load_end"] = os.getloadavg()
    if install is not None:
        target = loop_weights(install)
        target.detector.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(yolo_out, target.detector)
        shutil.copyfile(sam_out, target.tracker)
        record["installed"] = [str(target.detector), str(target.tracker)]
    return record


def _print(record: dict) -> None:
    print(f"\n{'phase':<32}{'wall s':>9}{'CPU s':>9}")
    for name, t in record["timings"].items():
        print(f"{name:<32}{t['wall_s']:>9.1f}{t['cpu_s']:>9.1f}")
    print(f"{'total':<32}{record['total']['wall_s']:>9.1f}{record['total']['cpu_s']:>9.1f}")
    print(f"\nframes kept {record['kept']}, labelled {record['labelled']}; SAM 2 box IoU {record['sam2']['before']} "
          f"-> {record['sam2']['after']}; YOLO {record['yolo']}")
    print(f"\n{'held-out':<12}{'HOTA':>8}{'DetA':>8}{'AssA':>8}{'J':>8}{'J&F':>8}")
    for when in ("before", "after"):
        if when in record:
            m = record[when]["mean"]
            print(f"{when:<12}{m['hota']:>8.3f}{m['deta']:>8.3f}{m['assa']:>8.3f}{m['j']:>8.3f}{m['j_and_f']:>8.3f}")


def main(argv: list[str] | None = None) -> int:
    from engine.weights import cache_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", choices=("uncertainty", "random"), default="uncertainty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=LoopSettings().budget, help="frames kept in all")
    parser.add_argument("--yolo-epochs", type=int, default=LoopSettings().yolo_epochs)
    parser.add_argument("--sam2-steps", type=int, default=LoopSettings().sam2_steps,
                        help=f"SAM 2 steps in all; the first {LoopSettings().sam2_memory_from} train the prompt path alone")
    parser.add_argument("--train-frames", type=int, default=LoopSettings().train_frames)
    parser.add_argument("--held-out-frames", type=int, default=LoopSettings().held_out_frames)
    parser.add_argument("--workers", type=int, default=LoopSettings().workers,
                        help="processes side by side (one per core; 1: every job in turn)")
    parser.add_argument("--baseline", action="store_true",
                        help="also score the random engine on the held-out scenes first (~3 min; not part of the loop)")
    parser.add_argument("--no-install", action="store_true", help="leave the checkpoints in the work folder")
    parser.add_argument("--out", type=Path, default=None, help="the JSON (default: benchmarks/out/closed_loop-*.json)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: give 1 or more processes")
    if args.sam2_steps <= LoopSettings().sam2_memory_from:
        parser.error(f"--sam2-steps {args.sam2_steps}: give more than {LoopSettings().sam2_memory_from}, the steps "
                     "of the prompt path alone before the memory path trains")
    settings = LoopSettings(rank=args.rank, seed=args.seed, budget=args.budget, yolo_epochs=args.yolo_epochs,
                            sam2_steps=args.sam2_steps, held_out_frames=args.held_out_frames,
                            train_frames=args.train_frames, workers=args.workers)
    work = cache_dir() / "closed_loop" / f"work-{args.rank}-{args.seed}"
    record = run(settings, work=work, install=None if args.no_install else cache_dir(), baseline=args.baseline)
    record["environment"] = environment()
    path = write_json(f"closed_loop-{args.rank}-{args.seed}", record, out=args.out)
    _print(record)
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
