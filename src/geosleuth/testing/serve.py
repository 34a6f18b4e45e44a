"""``geosleuth serve`` as a real process on a free loopback port, for tests and benches that must
kill it, stop it, restart it or measure it from outside (issue 15: reliability, measured)::

    with ServeProcess(["--offline", "--database", str(db)]) as server:
        httpx.get(server.url + "/healthz")
        server.kill()          # SIGKILL, as a crash or an OOM kill
        server.start()         # again, on the same database

Its output goes to a file (:attr:`ServeProcess.log`), never to a pipe nobody reads, so a chatty
server cannot block on a full pipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from geosleuth.testing.http import free_port


class ServeProcess:
    """``python -m geosleuth.cli serve ARGS --port P`` (``--host 127.0.0.1``), started by :meth:`start`,
    which returns once ``/healthz`` answers."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        startup_timeout_s: float = 60.0,
        log: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.log = log or Path(tempfile.mkstemp(prefix="geosleuth-serve-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server is not started; call start() first")
        return self.proc.pid

    def start(self) -> Self:
        """Start the process and wait until ``/healthz`` answers (RuntimeError with its log if it
        exits or does not answer within ``startup_timeout_s``)."""
        import httpx

        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"the server is already running (pid {self.proc.pid})")
        command = [sys.executable, "-m", "geosleuth.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), *self.args]
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(command, env=self.env, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"geosleuth serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"geosleuth serve did not answer within {self.startup_timeout_s:g} s:\n{self.output()}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an out-of-memory kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._close_log()

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a service manager's stop) and wait: the exit code. A server still running after
        ``timeout_s`` is killed and TimeoutError raised."""
        if self.proc is None:
            raise RuntimeError("the server is not started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired as exc:
                self.kill()
                raise TimeoutError(f"geosleuth serve did not stop within {timeout_s:g} s of SIGTERM") from exc
        self._close_log()
        return int(self.proc.returncode)

    def rss_bytes(self, *, peak: bool = False) -> int:
        """The server's resident memory now, or its peak so far (Linux: ``/proc/PID/status``)."""
        key = "VmHWM:" if peak else "VmRSS:"
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {key} for pid {self.pid}")

    def output(self) -> str:
        """What the server wrote so far (stdout and stderr together)."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def _close_log(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


__all__ = ["ServeProcess", "free_port"]
