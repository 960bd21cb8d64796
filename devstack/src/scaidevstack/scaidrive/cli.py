"""``python -m scaidevstack scaidrive serve|share create|share list``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from scaidevstack.scaidrive.errors import DriveError
from scaidevstack.scaidrive.store import MEMBER_ROLES, DriveStore

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8092
DEFAULT_STATE_DIR = ".devstack"
MAX_FILE_BYTES_ENV = "SCAIDRIVE_MAX_FILE_BYTES"


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", default=None, help="ScaiDrive data (default <state-dir>/scaidrive)"
    )
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="default .devstack")


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else Path(args.state_dir) / "scaidrive"


def _member(value: str) -> tuple[str, str]:
    user, sep, role = value.rpartition(":")
    if not sep or not user or role not in MEMBER_ROLES:
        raise argparse.ArgumentTypeError(
            f"expected USER:ROLE with ROLE one of {', '.join(MEMBER_ROLES)}, got {value!r}"
        )
    return user, role


def register(subparsers: Any) -> None:
    """Add the ``scaidrive`` component and its commands to the top-level parser."""
    component = subparsers.add_parser("scaidrive", help="dev ScaiDrive: shares and files")
    commands = component.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the dev ScaiDrive HTTP server")
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--jwks-url", default=None, help="default $SCAIKEY_JWKS_URL")
    serve.add_argument("--issuer", default=None, help="default $SCAIKEY_ISSUER")
    serve.add_argument(
        "--max-file-bytes",
        type=int,
        default=None,
        help=f"per-upload limit (default ${MAX_FILE_BYTES_ENV}, else 100 MiB)",
    )
    _add_data_dir(serve)
    serve.set_defaults(func=cmd_serve)

    share = commands.add_parser("share", help="administer shares")
    share_commands = share.add_subparsers(dest="share_command", required=True, metavar="ACTION")

    create = share_commands.add_parser("create", help="create a share and print it as JSON")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", required=True)
    create.add_argument(
        "--member",
        type=_member,
        action="append",
        required=True,
        metavar="USER:ROLE",
        help=f"repeatable; ROLE is one of {', '.join(MEMBER_ROLES)}",
    )
    create.add_argument("--quota-bytes", type=int, default=None)
    create.add_argument("--type", dest="share_type", default="team")
    _add_data_dir(create)
    create.set_defaults(func=cmd_share_create)

    listing = share_commands.add_parser("list", help="print shares as NDJSON, oldest first")
    listing.add_argument("--tenant", default=None)
    _add_data_dir(listing)
    listing.set_defaults(func=cmd_share_list)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    from scaidevstack._serve import serve_app
    from scaidevstack.scaidrive.app import DEFAULT_MAX_FILE_BYTES, create_app
    from scaidevstack.scaidrive.auth import JwksVerifier

    max_bytes = args.max_file_bytes
    if max_bytes is None:
        max_bytes = int(os.environ.get(MAX_FILE_BYTES_ENV) or DEFAULT_MAX_FILE_BYTES)
    verifier = JwksVerifier.from_env(args.jwks_url, args.issuer)
    store = DriveStore(_data_dir(args))
    app = create_app(store, verifier, max_file_bytes=max_bytes)
    print(
        f"scaidrive data {store.root}, keys {verifier.jwks_url}, issuer {verifier.issuer}",
        file=sys.stderr,
    )
    serve_app(app, args.host, args.port, name="scaidrive")
    return 0


def cmd_share_create(args: argparse.Namespace) -> int:
    """Create a share; print it as one JSON object."""
    members: dict[str, str] = {}
    for user, role in args.member:
        members[user] = role
    try:
        share = DriveStore(_data_dir(args)).create_share(
            tenant_id=args.tenant,
            name=args.name,
            members=members,
            quota_bytes=args.quota_bytes,
            share_type=args.share_type,
        )
    except DriveError as exc:
        print(f"scaidrive share create: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(share))
    return 0


def cmd_share_list(args: argparse.Namespace) -> int:
    """Print every share as NDJSON."""
    for share in DriveStore(_data_dir(args)).list_shares(args.tenant):
        print(json.dumps(share))
    return 0
