"""``python -m scaidevstack stack up [--detach]`` and ``stack down``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scaicommon.testing import ManagedProcess
from scaidevstack.stack import deps
from scaidevstack.stack.components import PORTS, Endpoints, components, inherited_env, service_env
from scaidevstack.stack.demo import (
    create_api_key,
    ensure_share,
    instructions,
    mint_jwt,
    write_credentials,
)


def register(subparsers: Any) -> None:
    """Add the ``stack`` component to ``python -m scaidevstack``."""
    parser = subparsers.add_parser("stack", help="the whole local stack behind `make run`")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start everything and print demo commands")
    up.add_argument("--state-dir", default=".devstack")
    up.add_argument("--detach", action="store_true", help="return once every service is ready")
    up.set_defaults(func=run_up)
    down = commands.add_parser("down", help="stop a detached stack")
    down.add_argument("--state-dir", default=".devstack")
    down.set_defaults(func=run_down)


def _pids_file(state_dir: Path) -> Path:
    return state_dir / "stack.pids.json"


def run_up(args: argparse.Namespace) -> int:
    """Start the stack; in the foreground, wait for Ctrl-C and stop every child."""
    state_dir = Path(args.state_dir).resolve()
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    started: list[ManagedProcess] = []
    try:
        admin = os.environ.get("SCAI_DATABASE_URL") or deps.DEFAULT_PG_ADMIN
        if not deps.postgres_answers(admin):
            print("starting PostgreSQL under .devstack/postgres", file=sys.stderr)
            admin = deps.start_postgres(state_dir)
        redis_url = os.environ.get("SCAI_REDIS_URL") or deps.DEFAULT_REDIS
        if not deps.redis_answers(redis_url):
            print("starting Redis on 6379", file=sys.stderr)
            started.append(deps.start_redis(state_dir))
        ep = Endpoints(
            database_url=deps.ensure_database(admin),
            redis_url=redis_url,
            s3_url=f"http://127.0.0.1:{PORTS['s3']}",
            scaikey_url=f"http://127.0.0.1:{PORTS['scaikey']}",
            scaidrive_url=f"http://127.0.0.1:{PORTS['scaidrive']}",
        )
        base_env = inherited_env()
        for module in ("scaiecho", "scaispeak"):
            env = {**base_env, **service_env(module, ep, state_dir)}
            subprocess.run([sys.executable, "-m", module, "migrate"], env=env, check=True)
        for item in components(ep, state_dir):
            print(f"starting {item.name}", file=sys.stderr)
            proc = ManagedProcess(
                item.argv,
                env={**base_env, **item.env},
                ready_url=item.ready_url,
                ready_status=200,
                python=False,
                name=item.name,
                log_path=state_dir / "logs" / f"{item.name}.log",
                timeout=180,
            )
            started.append(proc.start())
        echo_env = {**base_env, **service_env("scaiecho", ep, state_dir)}
        speak_env = {**base_env, **service_env("scaispeak", ep, state_dir)}
        credentials = state_dir / "credentials.env"
        write_credentials(
            credentials,
            create_api_key("scaiecho", echo_env),
            create_api_key("scaispeak", speak_env),
            mint_jwt(state_dir, base_env),
            ep.database_url,
        )
        ensure_share(state_dir, base_env)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    print(instructions(credentials))
    if args.detach:
        pids = {p.name: p.pid for p in started}
        _pids_file(state_dir).write_text(json.dumps(pids), encoding="utf-8")
        return 0
    stop = False

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop and all(p.running for p in started):
        time.sleep(0.5)
    for proc in reversed(started):
        proc.stop()
    return 0


def run_down(args: argparse.Namespace) -> int:
    """Stop every process recorded by ``stack up --detach``."""
    path = _pids_file(Path(args.state_dir).resolve())
    if not path.exists():
        print("no detached stack recorded", file=sys.stderr)
        return 0
    for name, pid in reversed(list(json.loads(path.read_text(encoding="utf-8")).items())):
        try:
            os.killpg(int(pid), signal.SIGTERM)
            print(f"stopped {name}", file=sys.stderr)
        except ProcessLookupError:
            pass
    path.unlink()
    return 0
