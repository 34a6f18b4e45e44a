"""A real, throw-away PostgreSQL server in a temporary folder (for the storage tests).

``with TempPostgres() as pg: pg.url`` gives ``postgresql://...@127.0.0.1:<port>/postgres``. The
server's programs (``initdb``, ``pg_ctl``) are found on PATH or under ``/usr/lib/postgresql/*/bin``
(Debian's ``postgresql`` package); :func:`unavailable_reason` says why none can start here. As root,
the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

_DEBIAN = Path("/usr/lib/postgresql")


def find_bin(name: str) -> str | None:
    """The path of PostgreSQL's program ``name`` (newest Debian version first), or None."""
    if found := shutil.which(name):
        return found
    if _DEBIAN.is_dir():
        for version in sorted(_DEBIAN.iterdir(), key=lambda p: p.name, reverse=True):
            candidate = version / "bin" / name
            if candidate.is_file():
                return str(candidate)
    return None


def _run_as() -> str | None:
    """The user to run the server as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


def unavailable_reason() -> str | None:
    """Why no temporary server can start here (None: it can)."""
    for name in ("initdb", "pg_ctl"):
        if find_bin(name) is None:
            return f"PostgreSQL's {name} is not installed (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg package is not installed (pip install 'geosleuth[serve]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as another user"
    return None


class TempPostgres:
    """Starts on enter (initdb, then pg_ctl start on a free loopback port), stops and removes
    everything on exit."""

    def __init__(self, *, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self.port = 0
        self.folder: Path | None = None
        self.user = _run_as() or getpass.getuser()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        who = _run_as()
        return ["runuser", "-u", who, "--", *args] if who else list(args)

    def __enter__(self) -> TempPostgres:
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        who = _run_as()
        # Another user must reach the folder: under /tmp, not a temp dir inside root's home.
        base = "/tmp" if who and Path("/tmp").is_dir() else None
        self.folder = Path(tempfile.mkdtemp(prefix="geosleuth-pg-", dir=base))
        data = self.folder / "data"
        if who:
            shutil.chown(self.folder, user=who)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        assert initdb and pg_ctl
        subprocess.run(
            self._cmd(initdb, "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync"),
            check=True,
            capture_output=True,
            timeout=self.timeout_s,
        )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c full_page_writes=off"
        subprocess.run(
            self._cmd(pg_ctl, "-D", str(data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"),
            check=True,
            capture_output=True,
            timeout=self.timeout_s,
        )
        self._wait()
        return self

    def _wait(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self.folder is None:
            return
        pg_ctl = find_bin("pg_ctl")
        if pg_ctl is not None:
            subprocess.run(
                self._cmd(pg_ctl, "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"),
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["TempPostgres", "find_bin", "unavailable_reason"]
