"""``python -m scaidevstack node serve``: the devstack ScaiInfer node (gRPC + relay HTTP)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scaidevstack.node.config import ENGINE_NAMES, ConfigError, load_config


def _engine_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ENGINE_NAMES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(ENGINE_NAMES)}"
        )
    return names


def register(subparsers: Any) -> None:
    """Add the ``node`` component and its ``serve`` command."""
    component = subparsers.add_parser("node", help="devstack ScaiInfer audio node + OpenAI relay")
    commands = component.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the node (gRPC AudioNode + relay HTTP)")
    serve.add_argument(
        "--config", default=None, help="node TOML (default devstack/node.toml when present)"
    )
    serve.add_argument("--node-id", default=None, help="node id reported by GetNodeInfo")
    serve.add_argument("--grpc", default=None, metavar="HOST:PORT", help="gRPC listen address")
    serve.add_argument("--http", default=None, metavar="HOST:PORT", help="relay HTTP address")
    serve.add_argument(
        "--engines",
        type=_engine_list,
        default=None,
        help=f"engines to load (default all: {','.join(ENGINE_NAMES)})",
    )
    serve.add_argument("--capacity", type=int, default=None, help="capacity of every engine")
    serve.add_argument(
        "--grace-period", type=float, default=None, metavar="S", help="drain grace period"
    )
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the config, apply the overrides and serve until SIGTERM."""
    try:
        config = load_config(args.config).with_overrides(
            node_id=args.node_id,
            grpc=args.grpc,
            http=args.http,
            engines=args.engines,
            capacity=args.capacity,
            grace_period_s=args.grace_period,
        )
    except ConfigError as exc:
        print(f"node: bad config: {exc}", file=sys.stderr)
        return 2
    from scaidevstack.node.server import serve

    return serve(config)
