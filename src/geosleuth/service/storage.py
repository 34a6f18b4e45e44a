"""Where the service keeps what it made: predictions, jobs with their per-image items, chat sessions.

One small interface, :class:`Storage`, and one implementation of it over two databases: SQLite (the
default, a file in the cache dir, WAL mode) and PostgreSQL (``postgresql://...``, for several
instances on one database). The SQL is written once; the two differ only in their placeholders,
their blob type and how a connection is opened (:class:`_Dialect`).

A job's items are written, with their input bytes, before any work starts. An item goes
``pending`` -> ``running`` (claimed with a fresh token) -> ``done`` or ``failed``; a result is
accepted only from the claim that holds the item, so an item re-claimed after a restart gets
exactly one result even if the old worker finishes late.

A claim is a lease: it names its owner (the process) and lasts until ``lease_until``, which the
owner renews (:meth:`Storage.renew`) while it works. Several instances share one database, so
items go back to ``pending`` only when no live process holds them: their lease ran out (a dead or
cut-off instance's; :meth:`Storage.requeue_expired`, while running), or, at start-up
(:meth:`Storage.requeue_running`), also when the caller knows their owner has stopped (a restart in
place). Leases are measured by the database's clock, the one clock every instance shares, so the
hosts' clocks need not agree.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geosleuth.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

ItemStatus = Literal["pending", "running", "done", "failed"]
FINISHED: tuple[ItemStatus, ...] = ("done", "failed")
SCHEMA_VERSION = 2  # 2: job_items.owner and lease_until (_ADDED_COLUMNS, added to an older database)


def new_id(prefix: str) -> str:
    """A random id that names its kind: ``pred_...``, ``job_...``, ``chat_...``."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"


@dataclass(frozen=True)
class JobItem:
    """One image of a job as stored: its place, what it was called, where it stands, its result."""

    job_id: str
    index: int
    source: str
    status: ItemStatus
    result: str | None = None  # a Prediction's or LocateError's JSON, once finished
    prediction_id: str | None = None
    finished: int | None = None  # order of finishing within the job (1, 2, ...)


@dataclass(frozen=True)
class Job:
    id: str
    created_at: float
    items: list[JobItem] = field(default_factory=list)

    def count(self, *status: ItemStatus) -> int:
        return sum(item.status in status for item in self.items)

    @property
    def done(self) -> bool:
        return all(item.status in FINISHED for item in self.items)


@dataclass(frozen=True)
class Claim:
    """An item a worker holds: finish it with this token."""

    job_id: str
    index: int
    token: str


@dataclass(frozen=True)
class ChatRecord:
    id: str
    body: str  # Conversation.to_json(), as JSON text
    image: bytes | None  # the photo, so a reloaded session can call tools about it


@dataclass(frozen=True)
class _Dialect:
    name: str
    placeholder: str
    blob: str
    connect: Callable[[], Any]
    now: str  # the database's clock, in seconds since the epoch, as an SQL expression
    add_column: str  # ALTER TABLE for a column of _ADDED_COLUMNS ({table}, {column}, {type})
    row_lock: str = ""  # what locks a selected row until the transaction ends, where SQL has it


_TABLES = (
    "CREATE TABLE IF NOT EXISTS predictions (id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL,"
    " source TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS job_items (job_id TEXT NOT NULL, idx INTEGER NOT NULL, source TEXT NOT NULL,"
    " status TEXT NOT NULL, input {blob}, token TEXT, result TEXT, prediction_id TEXT, finished INTEGER,"
    " PRIMARY KEY (job_id, idx))",
    "CREATE INDEX IF NOT EXISTS job_items_status ON job_items (status)",
    "CREATE TABLE IF NOT EXISTS chats (id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL,"
    " updated_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, image {blob})",
)
# Columns added since the first release, on a new database and an old one alike (table, column, type).
_ADDED_COLUMNS = (
    ("job_items", "owner", "TEXT"),  # the process holding a running item (jobs.instance_id)
    ("job_items", "lease_until", "DOUBLE PRECISION"),  # database clock; NULL (claimed before leases): expired
)


class Storage:
    """Predictions, jobs and chat sessions in one database. Thread-safe: one connection, one lock
    (the service's writes are small; a pool can replace the lock without changing the interface)."""

    def __init__(self, dialect: _Dialect) -> None:
        self.dialect = dialect
        self._lock = threading.RLock()
        self._conn = dialect.connect()
        with self._tx() as cur:
            for statement in _TABLES:
                cur.execute(statement.format(blob=dialect.blob))
            for table, column, kind in _ADDED_COLUMNS:
                if column not in self._columns(cur, table):
                    log.info("adding the column %s.%s to the database", table, column)
                    cur.execute(dialect.add_column.format(table=table, column=column, type=kind))

    @property
    def kind(self) -> str:
        return self.dialect.name

    # -- plumbing --

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A cursor inside one transaction: committed when the block ends, rolled back on error."""
        with self._lock:
            cur = self._conn.cursor()
            try:
                yield cur
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
            finally:
                cur.close()

    def _sql(self, text: str) -> str:
        return text.replace("?", self.dialect.placeholder)

    def _run(self, cur: Any, text: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(text.replace("{now}", self.dialect.now)), tuple(params))
        return cur

    @staticmethod
    def _columns(cur: Any, table: str) -> set[str]:
        cur.execute(f"SELECT * FROM {table} WHERE 1 = 0")
        return {str(column[0]).lower() for column in cur.description}

    def ping(self) -> None:
        """Raise if the database cannot answer (``/readyz``)."""
        with self._tx() as cur:
            self._run(cur, "SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- predictions --

    def put_prediction(self, pid: str, source: str, body: str) -> None:
        with self._tx() as cur:
            self._put_prediction(cur, pid, source, body)

    def _put_prediction(self, cur: Any, pid: str, source: str, body: str) -> None:
        self._run(
            cur,
            "INSERT INTO predictions (id, created_at, source, body) VALUES (?, ?, ?, ?)",
            (pid, time.time(), source, body),
        )

    def get_prediction(self, pid: str) -> str | None:
        with self._tx() as cur:
            row = self._run(cur, "SELECT body FROM predictions WHERE id = ?", (pid,)).fetchone()
        return None if row is None else str(row[0])

    def delete_prediction(self, pid: str) -> bool:
        with self._tx() as cur:
            return bool(self._run(cur, "DELETE FROM predictions WHERE id = ?", (pid,)).rowcount)

    def count_predictions(self) -> int:
        with self._tx() as cur:
            return int(self._run(cur, "SELECT COUNT(*) FROM predictions").fetchone()[0])

    # -- jobs --

    def create_job(self, job_id: str, items: Sequence[tuple[str, bytes]]) -> None:
        """The job and every item (name, photo bytes), ``pending``, in one transaction."""
        with self._tx() as cur:
            self._run(cur, "INSERT INTO jobs (id, created_at) VALUES (?, ?)", (job_id, time.time()))
            for index, (source, data) in enumerate(items):
                self._run(
                    cur,
                    "INSERT INTO job_items (job_id, idx, source, status, input) VALUES (?, ?, ?, 'pending', ?)",
                    (job_id, index, source, data),
                )

    def get_job(self, job_id: str) -> Job | None:
        with self._tx() as cur:
            head = self._run(cur, "SELECT created_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if head is None:
                return None
            rows = self._run(
                cur,
                "SELECT idx, source, status, result, prediction_id, finished FROM job_items"
                " WHERE job_id = ? ORDER BY idx",
                (job_id,),
            ).fetchall()
        items = [JobItem(job_id, int(r[0]), str(r[1]), r[2], r[3], r[4], r[5]) for r in rows]
        return Job(job_id, float(head[0]), items)

    def finished_items(self, job_id: str, after: int = 0) -> list[JobItem]:
        """The job's finished items in the order they finished, from the one after ``after``."""
        with self._tx() as cur:
            rows = self._run(
                cur,
                "SELECT idx, source, status, result, prediction_id, finished FROM job_items"
                " WHERE job_id = ? AND finished > ? ORDER BY finished",
                (job_id, after),
            ).fetchall()
        return [JobItem(job_id, int(r[0]), str(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    def delete_job(self, job_id: str) -> bool:
        with self._tx() as cur:
            self._run(cur, "DELETE FROM job_items WHERE job_id = ?", (job_id,))
            return bool(self._run(cur, "DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount)

    def pending_items(self, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` items waiting for a worker, oldest job first."""
        with self._tx() as cur:
            rows = self._run(
                cur,
                "SELECT job_items.job_id, job_items.idx FROM job_items JOIN jobs ON jobs.id = job_items.job_id"
                " WHERE job_items.status = 'pending' ORDER BY jobs.created_at, job_items.idx LIMIT ?",
                (limit,),
            ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def claim(
        self, job_id: str, index: int, *, owner: str, lease_s: float
    ) -> tuple[Claim, str, bytes] | None:
        """Take a pending item for ``owner`` (a process), leased for ``lease_s`` seconds: its claim,
        name and bytes; None if another worker took it first."""
        token = secrets.token_hex(8)
        with self._tx() as cur:
            taken = self._run(
                cur,
                "UPDATE job_items SET status = 'running', token = ?, owner = ?, lease_until = {now} + ?"
                " WHERE job_id = ? AND idx = ? AND status = 'pending'",
                (token, owner, lease_s, job_id, index),
            ).rowcount
            if not taken:
                return None
            row = self._run(
                cur, "SELECT source, input FROM job_items WHERE job_id = ? AND idx = ?", (job_id, index)
            ).fetchone()
        return Claim(job_id, index, token), str(row[0]), bytes(row[1])

    def finish(
        self,
        claim: Claim,
        status: ItemStatus,
        result: str,
        *,
        prediction: tuple[str, str, str] | None = None,
    ) -> bool:
        """Record an item's one result (and its prediction: id, source, body) if ``claim`` still
        holds it; the input bytes are dropped. False when the item was re-claimed meanwhile (the
        result is then discarded, so each item keeps exactly one)."""
        assert status in FINISHED
        with self._tx() as cur:
            # Lock the job's row so that two instances finishing items of one job number them apart.
            self._run(cur, "SELECT id FROM jobs WHERE id = ?" + self.dialect.row_lock, (claim.job_id,))
            order = self._run(
                cur, "SELECT COALESCE(MAX(finished), 0) + 1 FROM job_items WHERE job_id = ?", (claim.job_id,)
            ).fetchone()[0]
            updated = self._run(
                cur,
                "UPDATE job_items SET status = ?, result = ?, prediction_id = ?, finished = ?, input = NULL,"
                " token = NULL, owner = NULL, lease_until = NULL"
                " WHERE job_id = ? AND idx = ? AND status = 'running' AND token = ?",
                (
                    status,
                    result,
                    prediction[0] if prediction else None,
                    int(order),
                    claim.job_id,
                    claim.index,
                    claim.token,
                ),
            ).rowcount
            if updated and prediction is not None:
                self._put_prediction(cur, *prediction)
        return bool(updated)

    def renew(self, tokens: Collection[str], lease_s: float) -> int:
        """Extend the leases of the running items these claim tokens hold to ``lease_s`` seconds
        from now, in one statement: how many are still held (an item whose lease ran out and was
        taken over is not)."""
        if not tokens:
            return 0
        marks = ", ".join("?" * len(tokens))
        with self._tx() as cur:
            return int(
                self._run(
                    cur,
                    f"UPDATE job_items SET lease_until = {{now}} + ? WHERE status = 'running' AND token IN ({marks})",
                    (lease_s, *tokens),
                ).rowcount
            )

    def requeue_running(self, gone: Callable[[str], bool] = lambda owner: False) -> int:
        """At start-up: put the ``running`` items no live process holds back to ``pending``, those
        whose lease ran out, those claimed before leases (as the versions that claimed them did at
        their start), and those whose owner ``gone`` says has stopped. How many."""
        with self._tx() as cur:
            rows = self._run(
                cur, "SELECT DISTINCT owner FROM job_items WHERE status = 'running' AND owner IS NOT NULL"
            ).fetchall()
        stopped = [str(row[0]) for row in rows if gone(str(row[0]))]
        held_by_stopped = f" OR owner IN ({', '.join('?' * len(stopped))})" if stopped else ""
        return self._requeue("lease_until IS NULL OR lease_until < {now}" + held_by_stopped, stopped)

    def requeue_expired(self) -> int:
        """While running: put the ``running`` items whose lease ran out back to ``pending`` (a dead
        instance's): how many. An item claimed before leases is left to a start-up, since a live
        instance of that version may hold it."""
        return self._requeue("lease_until < {now}")

    def _requeue(self, which: str, params: Sequence[Any] = ()) -> int:
        with self._tx() as cur:
            return int(
                self._run(
                    cur,
                    "UPDATE job_items SET status = 'pending', token = NULL, owner = NULL, lease_until = NULL"
                    f" WHERE status = 'running' AND ({which})",
                    params,
                ).rowcount
            )

    # -- chat sessions --

    def put_chat(self, cid: str, body: str, image: bytes | None) -> None:
        now = time.time()
        with self._tx() as cur:
            self._run(
                cur,
                "INSERT INTO chats (id, created_at, updated_at, body, image) VALUES (?, ?, ?, ?, ?)",
                (cid, now, now, body, image),
            )

    def update_chat(self, cid: str, body: str) -> None:
        with self._tx() as cur:
            self._run(cur, "UPDATE chats SET body = ?, updated_at = ? WHERE id = ?", (body, time.time(), cid))

    def get_chat(self, cid: str) -> ChatRecord | None:
        with self._tx() as cur:
            row = self._run(cur, "SELECT body, image FROM chats WHERE id = ?", (cid,)).fetchone()
        if row is None:
            return None
        return ChatRecord(cid, str(row[0]), None if row[1] is None else bytes(row[1]))

    def delete_chat(self, cid: str) -> bool:
        with self._tx() as cur:
            return bool(self._run(cur, "DELETE FROM chats WHERE id = ?", (cid,)).rowcount)


def _sqlite(path: Path) -> _Dialect:
    def connect() -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return _Dialect(
        "sqlite",
        "?",
        "BLOB",
        connect,
        now="((julianday('now') - 2440587.5) * 86400.0)",
        # No IF NOT EXISTS in SQLite; the column is looked for first (one host, one file).
        add_column="ALTER TABLE {table} ADD COLUMN {column} {type}",
    )


def _postgres(url: str) -> _Dialect:
    def connect() -> Any:
        try:
            import psycopg
        except ImportError as exc:
            raise MissingDependencyError("psycopg", "serve", "A PostgreSQL database") from exc
        try:
            return psycopg.connect(url)
        except psycopg.OperationalError as exc:
            from geosleuth.config import redact_url

            raise ConfigError(f"cannot connect to the database {redact_url(url)}: {exc}") from exc

    return _Dialect(
        "postgresql",
        "%s",
        "BYTEA",
        connect,
        now="CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)",
        # IF NOT EXISTS: instances starting at once on an old database both try to add it.
        add_column="ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {type}",
        row_lock=" FOR UPDATE",
    )


def open_storage(database: str | None, cache_dir: Path) -> Storage:
    """The storage ``database`` names: a ``postgresql://`` URL, a SQLite file path, or (None) the
    file ``service.sqlite3`` in ``cache_dir``."""
    if database is None:
        return Storage(_sqlite(cache_dir / "service.sqlite3"))
    if database.startswith(("postgresql://", "postgres://")):
        return Storage(_postgres(database))
    if "://" in database:
        raise ConfigError(
            f"serve.database {database!r} is neither a postgresql://... URL nor a SQLite file path"
        )
    return Storage(_sqlite(Path(database).expanduser()))


__all__ = ["ChatRecord", "Claim", "Job", "JobItem", "Storage", "new_id", "open_storage"]
