"""The service's storage, the same tests on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from geosleuth.errors import ConfigError
from geosleuth.schemas import LocateError
from geosleuth.service.jobs import JobRunner, instance_id, owner_gone
from geosleuth.service.storage import Claim, Storage, open_storage

LEASE_S = 0.5  # short, so that a lease runs out within the test
A = "host-a/pid:[1]/100"  # instances on two other hosts: this process cannot see whether they run
B = "host-b/pid:[1]/200"


def claim(
    storage: Storage, index: int, owner: str = A, lease_s: float = 60.0
) -> tuple[Claim, str, bytes] | None:
    return storage.claim("job_1", index, owner=owner, lease_s=lease_s)


def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def statuses(storage: Storage) -> list[str]:
    job = storage.get_job("job_1")
    assert job is not None
    return [item.status for item in job.items]


@pytest.fixture
def storage(database: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    st = open_storage(database, tmp_path)
    yield st
    st.close()


def test_kind_follows_the_database(storage: Storage, database: str):
    assert storage.kind == ("postgresql" if database.startswith("postgresql://") else "sqlite")
    storage.ping()


def test_predictions_round_trip_and_delete(storage: Storage):
    storage.put_prediction("pred_a", "a.jpg", '{"source": "a.jpg"}')
    assert storage.get_prediction("pred_a") == '{"source": "a.jpg"}'
    assert storage.count_predictions() == 1
    assert storage.delete_prediction("pred_a") is True
    assert storage.get_prediction("pred_a") is None
    assert storage.delete_prediction("pred_a") is False


def test_job_items_are_stored_pending_with_their_bytes(storage: Storage):
    storage.create_job("job_1", [("a.jpg", b"\x00aa"), ("b.jpg", b"bb\xff")])
    job = storage.get_job("job_1")
    assert job is not None
    assert [(i.index, i.source, i.status) for i in job.items] == [
        (0, "a.jpg", "pending"),
        (1, "b.jpg", "pending"),
    ]
    assert not job.done and job.count("pending") == 2
    assert storage.pending_items(10) == [("job_1", 0), ("job_1", 1)]
    taken = claim(storage, 1)
    assert taken is not None
    _claim, source, data = taken
    assert (source, data) == ("b.jpg", b"bb\xff")
    assert claim(storage, 1) is None  # one worker per item
    assert storage.pending_items(10) == [("job_1", 0)]


def test_each_item_keeps_exactly_one_result(storage: Storage):
    storage.create_job("job_1", [("a.jpg", b"a")])
    first = claim(storage, 0, owner=A)
    assert first is not None
    assert storage.requeue_running(gone=lambda owner: owner == A) == 1  # the process that held it stopped
    second = claim(storage, 0, owner=B)
    assert second is not None
    assert storage.finish(second[0], "done", '{"n": 2}', prediction=("pred_2", "a.jpg", '{"n": 2}')) is True
    # the first worker finishes late: its result is discarded
    assert storage.finish(first[0], "done", '{"n": 1}', prediction=("pred_1", "a.jpg", '{"n": 1}')) is False
    job = storage.get_job("job_1")
    assert job is not None and job.done
    [item] = job.items
    assert (item.status, item.result, item.prediction_id, item.finished) == ("done", '{"n": 2}', "pred_2", 1)
    assert storage.get_prediction("pred_2") == '{"n": 2}'
    assert storage.get_prediction("pred_1") is None


def test_finished_items_come_in_finishing_order(storage: Storage):
    storage.create_job("job_1", [(f"{i}.jpg", b"x") for i in range(3)])
    for index in (2, 0, 1):
        taken = claim(storage, index)
        assert taken is not None
        storage.finish(taken[0], "failed" if index == 0 else "done", f'{{"i": {index}}}')
    assert [(i.index, i.finished) for i in storage.finished_items("job_1")] == [(2, 1), (0, 2), (1, 3)]
    assert [i.index for i in storage.finished_items("job_1", after=2)] == [1]
    assert storage.delete_job("job_1") is True
    assert storage.get_job("job_1") is None and storage.finished_items("job_1") == []


def test_chats_keep_their_body_and_photo(storage: Storage):
    storage.put_chat("chat_1", '{"turns": []}', b"\xff\xd8jpeg")
    storage.update_chat("chat_1", '{"turns": [1]}')
    record = storage.get_chat("chat_1")
    assert record is not None
    assert (record.body, record.image) == ('{"turns": [1]}', b"\xff\xd8jpeg")
    storage.put_chat("chat_2", "{}", None)
    record = storage.get_chat("chat_2")
    assert record is not None and record.image is None
    assert storage.delete_chat("chat_1") and storage.get_chat("chat_1") is None


def test_claims_race_from_threads(storage: Storage):
    storage.create_job("job_1", [(f"{i}.jpg", b"x") for i in range(20)])
    won: list[int] = []

    def worker() -> None:
        for _job, index in storage.pending_items(20):
            if claim(storage, index) is not None:
                won.append(index)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == list(range(20))  # every item claimed exactly once


def test_data_survives_reopening(database: str, tmp_path: Path):
    first = open_storage(database, tmp_path)
    first.create_job("job_1", [("a.jpg", b"a")])
    first.put_prediction("pred_1", "a.jpg", "{}")
    first.close()
    second = open_storage(database, tmp_path)
    try:
        job = second.get_job("job_1")
        assert job is not None and job.items[0].status == "pending"
        assert second.get_prediction("pred_1") == "{}"
    finally:
        second.close()


def test_sqlite_is_in_wal_mode_in_the_cache_dir_by_default(tmp_path: Path):
    st = open_storage(None, tmp_path)
    st.close()
    path = tmp_path / "service.sqlite3"
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unknown_database_url_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="neither a postgresql"):
        open_storage("mysql://db/x", tmp_path)


def test_unreachable_postgresql_names_the_url_without_password(tmp_path: Path):
    from conftest import free_port

    with pytest.raises(
        ConfigError, match=r"cannot connect to the database postgresql://\*\*\*@127\.0\.0\.1"
    ) as err:
        open_storage(f"postgresql://u:secret@127.0.0.1:{free_port()}/x", tmp_path)
    assert "secret" not in str(err.value)


# --- leases: several instances on one database -------------------------------------------------------


def test_only_expired_leases_are_requeued_and_renewing_keeps_one(storage: Storage):
    storage.create_job("job_1", [(f"{i}.jpg", b"x") for i in range(3)])
    kept, lapsing, other = (claim(storage, i, lease_s=lease) for i, lease in enumerate((0.2, 0.2, 60.0)))
    assert kept and lapsing and other
    assert storage.renew([kept[0].token, "not-a-token"], 60.0) == 1  # one statement, by token
    assert storage.renew([], 60.0) == 0
    time.sleep(0.3)
    assert storage.requeue_expired() == 1
    assert storage.requeue_running() == 0  # at start-up too, only what no live lease holds
    assert statuses(storage) == ["running", "pending", "running"]
    assert storage.renew([lapsing[0].token], 60.0) == 0  # requeued: no longer held


def test_a_late_finish_after_the_lease_was_taken_over_is_refused(database: str, tmp_path: Path):
    a, b = open_storage(database, tmp_path), open_storage(database, tmp_path)
    try:
        a.create_job("job_1", [("0.jpg", b"x"), ("1.jpg", b"y")])
        first = claim(a, 0, owner=A, lease_s=0.3)
        slow = claim(a, 1, owner=A, lease_s=0.3)
        assert first and slow
        time.sleep(0.4)
        assert b.requeue_expired() == 2  # both leases ran out
        second = claim(b, 0, owner=B)
        assert second is not None
        assert a.renew([first[0].token], 60.0) == 0  # A cannot win it back
        assert a.finish(first[0], "done", '{"by": "A"}', prediction=("pred_a", "0.jpg", "{}")) is False
        assert b.finish(second[0], "done", '{"by": "B"}', prediction=("pred_b", "0.jpg", "{}")) is True
        # item 1 is pending again, not taken by anyone yet: A's result still does not count
        assert a.finish(slow[0], "done", '{"by": "A"}') is False
        job = b.get_job("job_1")
        assert job is not None
        assert [(i.status, i.result, i.prediction_id) for i in job.items] == [
            ("done", '{"by": "B"}', "pred_b"),
            ("pending", None, None),
        ]
        assert a.get_prediction("pred_a") is None
    finally:
        a.close()
        b.close()


def test_an_expired_lease_nobody_took_over_still_finishes(storage: Storage):
    storage.create_job("job_1", [("0.jpg", b"x")])
    taken = claim(storage, 0, lease_s=0.05)
    assert taken is not None
    time.sleep(0.1)
    assert storage.finish(taken[0], "done", "{}") is True  # still the one result


def test_start_up_requeues_at_once_what_a_stopped_process_on_this_host_held(storage: Storage):
    here = instance_id().rsplit("/", 1)[0]  # this host and pid namespace
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "30"])
    try:
        storage.create_job("job_1", [(f"{i}.jpg", b"x") for i in range(3)])
        for index, owner in enumerate((f"{here}/{dead.pid}", f"{here}/{live.pid}", A)):
            assert claim(storage, index, owner=owner, lease_s=60.0) is not None
        assert storage.requeue_running(gone=owner_gone) == 1
        assert statuses(storage) == ["pending", "running", "running"]
    finally:
        live.kill()
        live.wait()


def test_owner_gone_knows_only_processes_of_this_host():
    here = instance_id().rsplit("/", 1)[0]
    assert instance_id().startswith(socket.gethostname() + "/")
    zombie = subprocess.Popen(["true"])  # exits, not reaped yet: its pid exists but runs nothing
    until(lambda: owner_gone(f"{here}/{zombie.pid}"))  # never, were a zombie taken for alive
    assert zombie.poll() is not None  # now reaped, and still gone
    zombie.wait()
    assert owner_gone(f"{here}/{zombie.pid}")
    assert owner_gone(instance_id())  # this process asking at start-up: an earlier runner of it stopped
    assert not owner_gone(f"{here}/{os.getppid()}")  # alive
    assert not owner_gone(f"other-host/{here.rsplit('/', 1)[1]}/{zombie.pid}")  # cannot tell: wait
    assert not owner_gone("no-slashes") and not owner_gone(f"{here}/not-a-pid")


class Instance:
    """What one ``geosleuth serve`` does with jobs: its own connection and job runner, as ``owner``
    (another host's name). Its locate waits for ``gate`` and records which instance ran it."""

    def __init__(self, database: str, tmp_path: Path, owner: str, *, workers: int, lease_s: float) -> None:
        self.owner = owner
        self.storage = open_storage(database, tmp_path)
        self.gate = threading.Event()
        self.located: list[str] = []
        self.runner = self.new_runner(workers, lease_s)

    def new_runner(self, workers: int, lease_s: float) -> JobRunner:
        return JobRunner(
            self.storage, self.locate, workers=workers, lease_s=lease_s, poll_s=0.05, owner=self.owner
        )

    def locate(self, data: bytes, name: str) -> LocateError:
        self.located.append(name)
        self.gate.wait(30)
        return LocateError(source=name, error=self.owner, error_type="Located")


@pytest.fixture
def instance(database: str, tmp_path: Path) -> Iterator[Callable[..., Instance]]:
    made: list[Instance] = []

    def make(owner: str, *, workers: int = 1, lease_s: float = LEASE_S) -> Instance:
        made.append(Instance(database, tmp_path, owner, workers=workers, lease_s=lease_s))
        return made[-1]

    yield make
    for one in made:
        one.gate.set()
        one.runner.stop()
    for one in made:
        one.storage.close()


def located_by(storage: Storage) -> dict[int, str]:
    """Each finished item's index and the instance whose result it kept."""
    job = storage.get_job("job_1")
    assert job is not None
    return {i.index: json.loads(i.result)["error"] for i in job.items if i.result is not None}


def test_a_restarted_instance_leaves_the_items_a_live_one_is_running(instance: Callable[..., Instance]):
    a = instance(A, lease_s=60.0)  # live all along (renewal: the test below)
    b = instance(B, workers=2)
    b.gate.set()
    a.storage.create_job("job_1", [(f"{i}.jpg", b"x") for i in range(3)])
    a.runner.start()
    until(lambda: a.located == ["0.jpg"])
    assert b.runner.start() == 0
    until(lambda: sorted(located_by(b.storage)) == [1, 2])
    b.runner.stop()
    b.runner = b.new_runner(2, LEASE_S)  # B restarts while A is still on item 0
    assert b.runner.start() == 0
    time.sleep(2 * LEASE_S)
    assert statuses(b.storage) == ["running", "failed", "failed"]  # a LocateError is a "failed" item
    a.gate.set()
    until(lambda: len(located_by(b.storage)) == 3)
    assert located_by(b.storage) == {0: A, 1: B, 2: B}
    assert a.located == ["0.jpg"] and sorted(b.located) == ["1.jpg", "2.jpg"]  # nothing ran twice


def test_a_runner_keeps_its_items_past_their_lease_by_renewing_them(instance: Callable[..., Instance]):
    # Its own lease thread puts back expired items, so without renewals the item would go pending
    # and this runner's result would be refused.
    a = instance(A)
    a.storage.create_job("job_1", [("0.jpg", b"x")])
    a.runner.start()
    until(lambda: a.located == ["0.jpg"])
    time.sleep(3 * LEASE_S)
    assert statuses(a.storage) == ["running"]
    a.gate.set()
    until(lambda: len(located_by(a.storage)) == 1)
    assert located_by(a.storage) == {0: A} and a.located == ["0.jpg"]


def test_a_dead_instances_items_go_to_a_live_one_once_its_lease_runs_out(instance: Callable[..., Instance]):
    a = instance(A, workers=2)
    b = instance(B)
    b.gate.set()
    a.storage.create_job("job_1", [("0.jpg", b"x"), ("1.jpg", b"y")])
    a.runner.start()
    until(lambda: sorted(a.located) == ["0.jpg", "1.jpg"])
    b.runner.start()
    a.runner.abandon()  # A dies: no more renewals, and its results never come
    until(lambda: len(located_by(b.storage)) == 2)  # B's poll finds the leases run out
    a.gate.set()  # A's workers return (a dead process records nothing)
    time.sleep(0.2)
    assert located_by(b.storage) == {0: B, 1: B}
    job = b.storage.get_job("job_1")
    assert job is not None and sorted(i.finished or 0 for i in job.items) == [1, 2]  # one result each
    assert sorted(b.located) == ["0.jpg", "1.jpg"]


# A job_items table as the first release made it, before leases.
_OLD_SCHEMA = (
    "CREATE TABLE jobs (id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE job_items (job_id TEXT NOT NULL, idx INTEGER NOT NULL, source TEXT NOT NULL,"
    " status TEXT NOT NULL, input {blob}, token TEXT, result TEXT, prediction_id TEXT, finished INTEGER,"
    " PRIMARY KEY (job_id, idx))",
)


def test_an_old_database_gains_the_lease_columns(database: str, tmp_path: Path):
    postgres = database.startswith("postgresql://")
    if postgres:
        import psycopg

        conn: Any = psycopg.connect(database)
    else:
        conn = sqlite3.connect(database)
    mark = "%s" if postgres else "?"
    for statement in _OLD_SCHEMA:
        conn.execute(statement.format(blob="BYTEA" if postgres else "BLOB"))
    conn.execute(f"INSERT INTO jobs (id, created_at) VALUES ({mark}, {mark})", ("job_1", time.time()))
    for index, status, token in ((0, "running", "old"), (1, "pending", None)):
        conn.execute(
            f"INSERT INTO job_items (job_id, idx, source, status, input, token)"
            f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark}, {mark})",
            ("job_1", index, f"{index}.jpg", status, b"x", token),
        )
    conn.commit()
    conn.close()

    for _ in range(2):  # migrated once, then found as it is
        storage = open_storage(database, tmp_path)
        storage.close()
    storage = open_storage(database, tmp_path)
    try:
        assert statuses(storage) == ["running", "pending"]
        assert storage.requeue_expired() == 0  # claimed before leases: maybe by a live old instance
        assert storage.requeue_running() == 1  # at start-up it is resumed, as the old version did
        taken = claim(storage, 0, lease_s=60.0)
        assert taken is not None and taken[1:] == ("0.jpg", b"x")
        assert storage.renew([taken[0].token], 60.0) == 1
        assert storage.requeue_running() == 0 and storage.requeue_expired() == 0
        assert storage.finish(taken[0], "done", "{}") is True
        assert statuses(storage) == ["done", "pending"]
    finally:
        storage.close()
