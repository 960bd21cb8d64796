"""Run real processes (services, devstack servers) for tests and wait until they answer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, *, timeout: float = 30.0, expect: int | None = None) -> httpx.Response:
    """Poll ``url`` until it answers (with ``expect`` when given); raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2.0)
            if expect is None or response.status_code == expect:
                return response
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s (last error: {last})")


class ManagedProcess:
    """A child process whose output goes to a log file; stopped on exit or :meth:`stop`.

    ``ManagedProcess(["-m", "scaiecho", "serve"], env={...}, ready_url=...)`` runs the
    current interpreter; pass ``python=False`` to run another executable.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        ready_url: str | None = None,
        ready_status: int | None = None,
        timeout: float = 60.0,
        python: bool = True,
        cwd: str | Path | None = None,
        name: str = "process",
        log_path: Path | None = None,
    ) -> None:
        self.args = [sys.executable, *args] if python else list(args)
        self.env = {**os.environ, **(env or {})}
        self.ready_url = ready_url
        self.ready_status = ready_status
        self.timeout = timeout
        self.cwd = cwd
        self.name = name
        self.log_path = log_path or Path(tempfile.mkstemp(prefix=f"scai-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        """Start the process and wait until ``ready_url`` answers."""
        log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
            start_new_session=True,
        )
        log_file.close()
        if self.ready_url:
            try:
                self._wait_ready()
            except Exception:
                self.stop()
                raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                response = httpx.get(str(self.ready_url), timeout=2.0)
                if self.ready_status is None or response.status_code == self.ready_status:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {self.timeout}s:\n{self.output()}")

    def output(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def pid(self) -> int | None:
        """The child's pid (also its process-group id), once started."""
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the process group and wait; kill it when it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        return self.proc.returncode

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
