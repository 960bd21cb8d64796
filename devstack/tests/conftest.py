"""Fixtures that run the real dev ScaiKey and dev ScaiDrive servers as subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scaidevstack.scaikey import KeyStore

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENTS_TOML = REPO_ROOT / "devstack" / "scaikey.toml"
_DEVSTACK_ENV = ("SCAIKEY_ISSUER_BASE", "SCAIKEY_JWKS_URL", "SCAIKEY_ISSUER")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without devstack settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _DEVSTACK_ENV}
    env.update(extra or {})
    return env


class Cli:
    """Runs ``python -m scaidevstack ...`` from the repository root."""

    def run(
        self, *args: str, env: Mapping[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion and capture its output."""
        result = subprocess.run(
            [sys.executable, "-m", "scaidevstack", *args],
            cwd=REPO_ROOT,
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"scaidevstack {args} exited {result.returncode}: {result.stderr}")
        return result

    def popen(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        """Start a command with stdout piped; the caller waits for it."""
        return subprocess.Popen(
            [sys.executable, "-m", "scaidevstack", *args],
            cwd=REPO_ROOT,
            env=clean_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@dataclass
class ServerProcess:
    """A running ``python -m scaidevstack <component> serve`` process."""

    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_server(
    component: str,
    args: list[str],
    *,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> ServerProcess:
    """Start ``python -m scaidevstack <component> serve --port P ARGS`` and wait for /healthz."""
    port = free_port()
    log_path = log_dir / f"{component}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scaidevstack", component, "serve", "--port", str(port), *args],
            cwd=REPO_ROOT,
            env=clean_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(component, proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{component} exited {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=0.5).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{component} did not become ready in {timeout_s}s:\n{server.log()}")


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The devstack ``--state-dir`` shared by the servers and the in-process KeyStore."""
    return tmp_path_factory.mktemp("devstack")


@pytest.fixture(scope="session")
def scaikey(state_dir: Path) -> Iterator[ServerProcess]:
    """A running dev ScaiKey; its issuer base is its own base URL."""
    keys = KeyStore(state_dir)
    keys.ensure()
    server = start_server(
        "scaikey",
        ["--state-dir", str(state_dir), "--clients", str(CLIENTS_TOML)],
        log_dir=state_dir,
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keystore(state_dir: Path, scaikey: ServerProcess) -> KeyStore:
    """The same key store the running ScaiKey serves."""
    return KeyStore(state_dir)


@pytest.fixture(scope="session")
def issuer_base(scaikey: ServerProcess) -> str:
    """The platform issuer of the running ScaiKey."""
    return scaikey.base_url


@pytest.fixture(scope="session")
def drive_dir(state_dir: Path) -> Path:
    """ScaiDrive's ``--data-dir``."""
    return state_dir / "scaidrive"


@pytest.fixture(scope="session")
def scaidrive(state_dir: Path, drive_dir: Path, scaikey: ServerProcess) -> Iterator[ServerProcess]:
    """A running dev ScaiDrive trusting the running ScaiKey (1 MB upload limit)."""
    server = start_server(
        "scaidrive",
        ["--data-dir", str(drive_dir), "--max-file-bytes", str(1_000_000)],
        log_dir=state_dir,
        env={
            "SCAIKEY_JWKS_URL": f"{scaikey.base_url}/api/v1/platform/.well-known/jwks.json",
            "SCAIKEY_ISSUER": scaikey.base_url,
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cli() -> Cli:
    """Runs devstack CLI commands as subprocesses."""
    return Cli()


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client."""
    with httpx.Client(timeout=10.0) as client:
        yield client
