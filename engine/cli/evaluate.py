"""``streamseg eval``: score a results JSONL against a synthetic scene's exact ground truth."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score results against synthetic ground truth (HOTA, IDs, J&F)",
                       description="Score a results JSONL against the ground truth of the synthetic scene "
                                   "it was produced from, with TrackEval: HOTA, MOTA, IDF1, ID switches, "
                                   "J&F, and the mean IoU of every object.")
    p.add_argument("results", type=Path, help="the JSONL written by 'streamseg run --jsonl'")
    p.add_argument("--truth", required=True, metavar="synthetic:SPEC",
                   help="the scene the run read, e.g. synthetic:seed=3,frames=300,size=640x480")
    p.add_argument("--json", type=Path, default=None, help="also write the report here as JSON")
    p.set_defaults(command=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError
    from engine.eval.results import evaluate_against_scene, read_results
    from engine.sources.synthetic import SyntheticScene

    if not args.truth.startswith("synthetic:"):
        raise ConfigError(f"--truth {args.truth!r}: ground truth comes from a synthetic scene, "
                          "give synthetic:seed=N,frames=N,size=WxH,objects=N as passed to 'streamseg run'")
    report = evaluate_against_scene(read_results(args.results), SyntheticScene.from_spec(args.truth[10:]))
    print(report.format())
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 0
