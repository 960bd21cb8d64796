"""``python -m scaidevstack scaikey serve|mint|rotate``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from scaidevstack.scaikey.keys import DEFAULT_ALG, SUPPORTED_ALGS, KeyStore
from scaidevstack.scaikey.tokens import DEFAULT_HOST, DEFAULT_PORT, default_issuer_base

DEFAULT_STATE_DIR = ".devstack"


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", default=DEFAULT_STATE_DIR, help="devstack state (default .devstack)"
    )


def _add_issuer_base(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--issuer-base",
        default=None,
        help="issuer base URL (default $SCAIKEY_ISSUER_BASE, else http://127.0.0.1:<port>)",
    )


def register(subparsers: Any) -> None:
    """Add the ``scaikey`` component and its commands to the top-level parser."""
    component = subparsers.add_parser("scaikey", help="dev ScaiKey: JWT issuer, JWKS, exchange")
    commands = component.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the dev ScaiKey HTTP server")
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument(
        "--clients", default=None, help="clients TOML (default devstack/scaikey.toml)"
    )
    _add_state_dir(serve)
    _add_issuer_base(serve)
    serve.set_defaults(func=cmd_serve)

    mint = commands.add_parser("mint", help="mint a user JWT from the key store (no server)")
    mint.add_argument("--tenant", required=True)
    mint.add_argument("--user", required=True)
    mint.add_argument("--partner", default=None)
    mint.add_argument("--role", nargs="+", action="extend", default=[], metavar="ROLE")
    mint.add_argument("--permission", nargs="+", action="extend", default=[], metavar="PERM")
    mint.add_argument("--scope", default=None, help='space-separated, e.g. "files:read"')
    mint.add_argument("--audience", default=None)
    mint.add_argument("--email", default=None)
    mint.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    mint.add_argument("--alg", choices=SUPPORTED_ALGS, default=DEFAULT_ALG)
    mint.add_argument("--expired", action="store_true", help="a token that expired an hour ago")
    _add_state_dir(mint)
    _add_issuer_base(mint)
    mint.set_defaults(func=cmd_mint)

    rotate = commands.add_parser("rotate", help="add a new signing key and make it current")
    rotate.add_argument("--alg", choices=SUPPORTED_ALGS, default=DEFAULT_ALG)
    _add_state_dir(rotate)
    rotate.set_defaults(func=cmd_rotate)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    from scaidevstack._serve import serve_app
    from scaidevstack.scaikey.app import create_app
    from scaidevstack.scaikey.clients import ClientRegistry

    issuer_base = args.issuer_base or default_issuer_base(args.host, args.port)
    try:
        clients = ClientRegistry.load(args.clients)
    except (OSError, ValueError) as exc:
        print(f"scaikey: cannot load clients: {exc}", file=sys.stderr)
        return 2
    app = create_app(KeyStore(args.state_dir), clients, issuer_base)
    print(f"scaikey issuer {issuer_base}", file=sys.stderr)
    serve_app(app, args.host, args.port, name="scaikey")
    return 0


def cmd_mint(args: argparse.Namespace) -> int:
    """Print a freshly minted JWT on stdout."""
    if args.ttl <= 0:
        print("scaikey mint: --ttl must be positive", file=sys.stderr)
        return 2
    token = KeyStore(args.state_dir).mint(
        tenant=args.tenant,
        user=args.user,
        partner=args.partner,
        roles=args.role,
        permissions=args.permission,
        scope=args.scope,
        audience=args.audience,
        email=args.email,
        ttl=args.ttl,
        alg=args.alg,
        expired=args.expired,
        issuer_base=args.issuer_base or default_issuer_base(),
    )
    print(token)
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    """Add a signing key; print ``{"kid", "alg"}`` of the new key."""
    key = KeyStore(args.state_dir).rotate(args.alg)
    print(json.dumps({"kid": key.kid, "alg": key.alg}))
    return 0
