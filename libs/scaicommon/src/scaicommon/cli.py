"""The command line every service shares.

``serve | worker | migrate | apikeys | budgets | config``
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable

import msgspec
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from scaicommon.apikeys import add_apikeys_parser, run_apikeys
from scaicommon.budgets_cli import add_budgets_parser, run_budgets
from scaicommon.health import Check
from scaicommon.logging import configure_logging
from scaicommon.runtime import Runtime, ServiceSpec
from scaicommon.settings import CommonSettings, SettingsError
from scaicommon.store import library_migrations, migrate
from scaicommon.web import create_service_app
from scaicommon.workerapp import WorkerDefinition, run_worker


@dataclass(frozen=True)
class ServiceDefinition:
    """Everything the shared CLI needs to know about one service."""

    spec: ServiceSpec
    settings_cls: type[CommonSettings]
    routes: Callable[[Runtime], Sequence[BaseRoute]]
    worker: Callable[[Runtime], WorkerDefinition]
    migrations: Traversable
    checks: Callable[[Runtime], Mapping[str, Check]] = lambda _runtime: {}

    def new_runtime(self, settings: CommonSettings) -> Runtime:
        """A runtime for ``settings`` with the service's extra readiness checks."""
        runtime = Runtime(self.spec, settings)
        runtime.extra_checks.update(self.checks(runtime))
        return runtime

    def create_app(self, settings: CommonSettings, *, runtime: Runtime | None = None) -> Starlette:
        """The service's ASGI app for ``settings``."""
        runtime = runtime or self.new_runtime(settings)
        return create_service_app(runtime, self.routes(runtime))

    def migration_sources(self) -> list[tuple[str, Traversable]]:
        """Library migrations first, then the service's own."""
        return [("scaicommon", library_migrations()), (self.spec.module, self.migrations)]


def _parser(module: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the HTTP/WebSocket API under Hypercorn")
    serve_p.add_argument("--host")
    serve_p.add_argument("--port", type=int)
    worker_p = sub.add_parser("worker", help="run the arq worker (health on WORKER_HTTP_PORT)")
    worker_p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("config", help="print the effective settings (secrets masked)")
    add_apikeys_parser(sub)
    add_budgets_parser(sub)
    return parser


async def _serve(definition: ServiceDefinition, settings: CommonSettings) -> None:
    app = definition.create_app(settings)
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 10.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def _health_app(
    definition: ServiceDefinition,
) -> Callable[[Runtime, Sequence[BaseRoute]], Starlette]:
    def build(runtime: Runtime, routes: Sequence[BaseRoute]) -> Starlette:
        return create_service_app(runtime, routes, manage_runtime=False)

    return build


def main(definition: ServiceDefinition, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status."""
    module = definition.spec.module
    args = _parser(module).parse_args(argv)
    try:
        settings = definition.settings_cls.from_env()
        if args.command in ("serve", "worker"):
            settings.require("database_url", "redis_url")
        elif args.command in ("migrate", "apikeys", "budgets"):
            settings.require("database_url")
    except SettingsError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    configure_logging(
        module,
        definition.spec.version,
        fmt=settings.effective_log_format,
        level=settings.log_level,
        stream=sys.stderr if args.command in ("migrate", "apikeys", "budgets", "config") else None,
    )
    command: str = args.command
    if command == "config":
        print(json.dumps(settings.public_dict(), indent=2, default=str))
        return 0
    if command == "serve":
        flags = {"host": args.host, "port": args.port}
        settings = msgspec.structs.replace(settings, **{k: v for k, v in flags.items() if v})
        asyncio.run(_serve(definition, settings))
        return 0
    if command == "worker":
        runtime = definition.new_runtime(settings)
        asyncio.run(
            run_worker(
                runtime, definition.worker(runtime), _health_app(definition), burst=args.burst
            )
        )
        return 0
    if command == "migrate":
        applied = asyncio.run(
            migrate(settings.database_url, settings.schema, definition.migration_sources())
        )
        print(json.dumps({"applied": applied}))
        return 0
    created_by = f"cli:{getpass.getuser()}"
    if command == "apikeys":
        return asyncio.run(
            run_apikeys(
                args,
                dsn=settings.database_url,
                schema=settings.schema,
                module=definition.spec.permissions,
                scaigrid_mode=bool(settings.scaigrid_base_url),
                created_by=created_by,
            )
        )
    return asyncio.run(
        run_budgets(args, dsn=settings.database_url, schema=settings.schema, updated_by=created_by)
    )
