"""The ``budgets`` CLI sub-commands both services expose (platform §9.2).

::

    python -m <service> budgets set --tenant T [--user U] --period day|month
                                    --unit audio_ms|chars|cost --amount N
    python -m <service> budgets list [--tenant T]
    python -m <service> budgets delete BUDGET_ID

Output is JSON on stdout. Exit status: 0 on success, 2 on bad input (one line on stderr),
1 for an unknown id or a database failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import psycopg
from psycopg_pool import PoolTimeout

from scaicommon.budgets import BudgetStore
from scaicommon.errors import ScaiError
from scaicommon.logging import scrub
from scaicommon.store import open_pool


def add_budgets_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``budgets set|list|delete`` on an ``argparse`` sub-parsers object.

    The parsed namespace has ``budgets_command`` set to ``set``, ``list`` or ``delete``.
    Values are checked by :func:`run_budgets`, so a bad value is a one-line error.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "budgets", help="manage usage quotas and cost budgets"
    )
    commands = parser.add_subparsers(dest="budgets_command", metavar="COMMAND", required=True)

    put = commands.add_parser("set", help="create or replace a quota or budget row")
    put.add_argument("--tenant", required=True, help="tenant id")
    put.add_argument("--user", default=None, help="user id (omit for the whole tenant)")
    put.add_argument("--period", required=True, metavar="day|month")
    put.add_argument("--unit", required=True, metavar="audio_ms|chars|cost")
    put.add_argument(
        "--amount",
        required=True,
        metavar="N",
        help="integer for audio_ms/chars, decimal string for cost",
    )

    show = commands.add_parser("list", help="list rows as JSON")
    show.add_argument("--tenant", default=None, help="only this tenant's rows")

    drop = commands.add_parser("delete", help="delete a row by id")
    drop.add_argument("budget_id", metavar="BUDGET_ID")
    return parser


def _emit(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, ensure_ascii=False) + "\n")


def _first_line(exc: BaseException) -> str:
    lines = scrub(str(exc)).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _one_line(error: ScaiError) -> str:
    if error.details:
        first = error.details[0]
        return f"{first['field']}: {first['message']}"
    return error.message


async def run_budgets(
    args: argparse.Namespace,
    *,
    dsn: str,
    schema: str,
    updated_by: str,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run a parsed ``budgets`` command against the service database; returns the exit code."""
    stdout = out or sys.stdout
    stderr = err or sys.stderr
    command = args.budgets_command
    try:
        pool = await open_pool(dsn, schema, min_size=1, max_size=1)
    except (psycopg.Error, OSError, ValueError) as exc:
        stderr.write(f"budgets: database unavailable: {_first_line(exc)}\n")
        return 1
    try:
        store = BudgetStore(pool)
        if command == "set":
            budget = await store.set(
                args.tenant, args.user, args.period, args.unit, args.amount, updated_by
            )
            _emit(budget.to_dict(), stdout)
        elif command == "list":
            if args.tenant is not None and not args.tenant.strip():
                stderr.write("budgets: tenant_id: must not be empty\n")
                return 2
            rows = await store.list(args.tenant)
            _emit({"items": [row.to_dict() for row in rows]}, stdout)
        elif command == "delete":
            if not await store.delete(args.budget_id):
                stderr.write(f"budgets: no budget {args.budget_id}\n")
                return 1
            _emit({"id": args.budget_id, "deleted": True}, stdout)
        else:
            stderr.write(f"budgets: unknown command {command!r}\n")
            return 2
    except ScaiError as exc:
        stderr.write(f"budgets: {_one_line(exc)}\n")
        return 2 if exc.code == "VALIDATION_ERROR" else 1
    except (psycopg.Error, PoolTimeout, OSError) as exc:
        stderr.write(f"budgets: database error: {_first_line(exc)}\n")
        return 1
    finally:
        await pool.close()
    return 0
