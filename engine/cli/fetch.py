"""``streamseg fetch``: download official weights explicitly, checked against a SHA-256."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.errors import ConfigError
from engine.weights import KNOWN_WEIGHTS, cache_dir, fetch


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download official weights (needs a network connection)",
                       description="Download official weights by name into the cache (or --dir), check "
                                   "their SHA-256, and print where they are. Nothing else in streamseg "
                                   "downloads anything.")
    p.add_argument("name", nargs="?", help="a known model name (see --list)")
    p.add_argument("--list", action="store_true", help="list the known names and exit")
    p.add_argument("--dir", type=Path, default=None, help="where to put the file (default: the cache)")
    p.add_argument("--url", default=None, help="download from this URL instead (a mirror)")
    p.add_argument("--sha256", default=None, help="expected SHA-256 (overrides the built-in one)")
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout, seconds")
    p.set_defaults(command=cmd_fetch)


def _load_registries() -> None:
    from engine.detect.registry import load_known_weights
    from engine.track import registry as _track  # noqa: F401

    load_known_weights()


def cmd_fetch(args: argparse.Namespace) -> int:
    _load_registries()
    if args.list or not args.name:
        for entry in sorted(KNOWN_WEIGHTS.values(), key=lambda e: (e.kind, e.name)):
            digest = entry.sha256[:12] + "…" if entry.sha256 else "no pinned sha256"
            print(f"{entry.name:<24} {entry.kind:<9} {digest:<18} {entry.url}")
        return 0
    entry = KNOWN_WEIGHTS.get(args.name)
    if entry is None:
        raise ConfigError(f"unknown model name {args.name!r}; 'streamseg fetch --list' shows the known ones")
    dest = (args.dir or cache_dir()) / entry.filename
    path = fetch(args.url or entry.url, dest, sha256=args.sha256 or entry.sha256, timeout=args.timeout)
    print(path)
    return 0
