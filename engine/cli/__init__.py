"""The ``streamseg`` command.

    streamseg run SOURCE [--out video.mp4] [--jsonl results.jsonl] [--preview] [--config FILE.toml] ...
    streamseg demo      the bundled example clip, end to end
    streamseg serve CONFIG.toml   many streams from one file: control API, metrics, MQTT, Ray
    streamseg config    the effective run options as TOML (a config file for --config)
    streamseg info      versions, device, kernels
    streamseg fetch     download official weights, explicitly, with a checksum
    streamseg export    ONNX / TensorRT exports
    streamseg eval      score a JSONL against synthetic ground truth

A user's mistake (a bad path, URL, option or weights file) ends in one line on stderr and exit code 1,
without a traceback; Ctrl-C stops cleanly with every output finalised (exit 130).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from engine.errors import StreamsegError

log = logging.getLogger("streamseg")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if not getattr(args, "verbose", False) else logging.INFO,
                        format="streamseg: %(levelname)s: %(message)s")
    # Ultralytics writes settings under $HOME and looks up hosts when imported; keep it offline and local.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        return int(args.command(args) or 0)
    except StreamsegError as exc:
        print(f"streamseg: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("streamseg: interrupted; outputs were closed", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    from engine.cli import config, evaluate, export, fetch, finetune, info, run, segment, serve

    parser = argparse.ArgumentParser(prog="streamseg", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for module in (run, serve, config, info, fetch, export, evaluate, finetune):
        module.add_to(sub)
    segment.add_to(sub)
    return parser


def _version() -> str:
    from engine import __version__

    return f"streamseg {__version__}"
