"""The service's storage, the same tests on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from geosleuth.errors import ConfigError
from geosleuth.service.storage import Storage, open_storage


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
    taken = storage.claim("job_1", 1)
    assert taken is not None
    _claim, source, data = taken
    assert (source, data) == ("b.jpg", b"bb\xff")
    assert storage.claim("job_1", 1) is None  # one worker per item
    assert storage.pending_items(10) == [("job_1", 0)]


def test_each_item_keeps_exactly_one_result(storage: Storage):
    storage.create_job("job_1", [("a.jpg", b"a")])
    first = storage.claim("job_1", 0)
    assert first is not None
    assert storage.requeue_running() == 1  # the process that held it stopped
    second = storage.claim("job_1", 0)
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
        taken = storage.claim("job_1", index)
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
            if storage.claim("job_1", index) is not None:
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
