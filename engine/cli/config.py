"""``streamseg config``: the effective run options (defaults, then --config FILE, then flags) printed as a
TOML config file that ``--config`` reads back to the same options."""

from __future__ import annotations

import argparse

from engine.cli.run import add_config_flag
from engine.options import add_flags, from_args, to_toml


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the effective run options as a TOML config file",
                       description="Print the options 'streamseg run' would use with these arguments, as "
                                   "TOML: save it, edit it, and pass it back with --config.")
    add_flags(p)
    add_config_flag(p)
    p.set_defaults(command=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    print(to_toml(from_args(args, config=args.config, need_source=False)), end="")
    return 0
