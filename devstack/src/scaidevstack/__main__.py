"""``python -m scaidevstack <component> <command>``.

Each component module exposes ``register(subparsers)``, which adds its sub-parser and sets
``func`` on the parsed namespace. A future ``node`` component plugs in the same way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scaidevstack.node import cli as node_cli
from scaidevstack.scaidrive import cli as scaidrive_cli
from scaidevstack.scaikey import cli as scaikey_cli
from scaidevstack.stack import cli as stack_cli

COMPONENTS = (scaikey_cli, scaidrive_cli, stack_cli, node_cli)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every component registered."""
    parser = argparse.ArgumentParser(
        prog="python -m scaidevstack", description="Local stand-ins for the Scai platform."
    )
    components = parser.add_subparsers(dest="component", required=True, metavar="COMPONENT")
    for component in COMPONENTS:
        component.register(components)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
