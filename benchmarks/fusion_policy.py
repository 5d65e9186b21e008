"""Tunes the fusion policy on synthetic scenes: J&F, ID switches and re-prompts per frame against the
re-prompt threshold, with the networks replaced by ground-truth doubles that drift and jitter.

    python -m benchmarks.fusion_policy [--seeds 0 1 2] [--frames 150] [--thresholds 0.5 0.6 0.7 0.8]

A re-prompt costs a mask-decoder pass and a new conditioning frame for that object; a late one lets
the mask decay. This is the benchmark that chose FuserConfig.reprompt_iou.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from benchmarks.common import environment, write_json
from engine.eval.doubles import DriftingTracker, NoisyTruthDetector
from engine.eval.fusion import evaluate_fusion
from engine.fuse import FuserConfig
from engine.sources.synthetic import SyntheticScene


@dataclasses.dataclass(frozen=True)
class Faults:
    drift_px: float  # tracker drift per followed frame
    jitter_px: int  # detector mask shift, plus a 1 px grow/shrink
    miss: float  # detector miss rate


def sweep(*, thresholds: list[float], seeds: list[int], frames: int, faults: list[Faults],
          size: tuple[int, int] = (320, 240)) -> list[dict]:
    rows = []
    for fault in faults:
        for threshold in thresholds:
            jf, switches, reprompts = [], 0, 0
            started = time.perf_counter()
            for seed in seeds:
                scene = SyntheticScene(seed=seed, frames=frames, width=size[0], height=size[1], objects=6)
                detector = NoisyTruthDetector(scene, miss=fault.miss, jitter_px=fault.jitter_px, seed=seed)
                tracker = DriftingTracker(scene, drift_px=fault.drift_px)
                report, counters, _ = evaluate_fusion(scene, detector, tracker,
                                                      FuserConfig(reprompt_iou=threshold))
                jf.append(report.j_and_f)
                switches += report.id_switches
                reprompts += counters.reprompted
            rows.append({**dataclasses.asdict(fault), "reprompt_iou": threshold,
                         "j_and_f": statistics.mean(jf), "id_switches": switches,
                         "reprompts_per_frame": reprompts / (frames * len(seeds)),
                         "seconds": time.perf_counter() - started})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.75, 0.8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--frames", type=int, default=150)
    args = p.parse_args()
    faults = [Faults(0.0, 0, 0.0), Faults(0.5, 2, 0.2), Faults(1.0, 2, 0.1), Faults(1.5, 0, 0.0)]
    rows = sweep(thresholds=args.thresholds, seeds=args.seeds, frames=args.frames, faults=faults)
    print(f"{'drift':>6}{'jitter':>7}{'miss':>6}{'reprompt_iou':>14}{'J&F':>8}{'IDSW':>6}{'reprompts/frame':>17}")
    for r in rows:
        print(f"{r['drift_px']:>6}{r['jitter_px']:>7}{r['miss']:>6}{r['reprompt_iou']:>14}{r['j_and_f']:>8.3f}"
              f"{r['id_switches']:>6}{r['reprompts_per_frame']:>17.3f}")
    print(write_json("fusion_policy", {"environment": environment(), "args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
