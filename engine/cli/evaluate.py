"""``streamseg eval``: score a results JSONL against a synthetic scene's exact ground truth."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score results against synthetic ground truth (HOTA, IDs, J&F; PQ, STQ, mIoU)",
                       description="Score a results JSONL against the ground truth of the synthetic scene "
                                   "it was produced from, with TrackEval: HOTA, MOTA, IDF1, ID switches, "
                                   "J&F, and the mean IoU of every object. When the run had a segmenter "
                                   "(its lines carry \"stuff\") and the scene has stuff (stuff=1), also the "
                                   "semantic mIoU, PQ / SQ / RQ (torchmetrics, mean over frames) and STQ; "
                                   "classes are matched by name.")
    p.add_argument("results", type=Path, help="the JSONL written by 'streamseg run --jsonl'")
    p.add_argument("--truth", required=True, metavar="synthetic:SPEC",
                   help="the scene the run read, e.g. synthetic:seed=3,frames=300,size=640x480")
    p.add_argument("--json", type=Path, default=None, help="also write the report here as JSON")
    p.set_defaults(command=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError
    from engine.eval.results import evaluate_against_scene, read_results
    from engine.eval.scene_panoptic import evaluate_panoptic, read_panoptic_records
    from engine.sources.synthetic import SyntheticScene

    if not args.truth.startswith("synthetic:"):
        raise ConfigError(f"--truth {args.truth!r}: ground truth comes from a synthetic scene, "
                          "give synthetic:seed=N,frames=N,size=WxH,objects=N as passed to 'streamseg run'")
    scene = SyntheticScene.from_spec(args.truth[10:])
    report = evaluate_against_scene(read_results(args.results), scene)
    document = asdict(report)
    print(report.format())
    records = read_panoptic_records(args.results)
    if records is not None:
        panoptic = evaluate_panoptic(records, scene)
        print(panoptic.format())
        document["panoptic"] = asdict(panoptic)
    elif scene.stuff:
        print("no stuff in the results (run with --segmenter for PQ, STQ and mIoU)")
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2))
    return 0
