"""The embedded store under attack and at the edges (issue 16, items 1 and 6).

Each test failed on the store at 7146895: SQL injection through keys, MongoDB semantics (unicode,
NaN, dates, NUL, arrays, $elemMatch), bounds (huge $in, deep nesting, big ints, catastrophic
regex), read-only and broken files, a job and its blobs written together, old files.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import time
from datetime import datetime

import pytest

from dpa4_flows.execution.mongo_match import QueryTooDeepError
from dpa4_flows.execution.mongo_regex import RegexTimeoutError, UnsafeRegexError
from dpa4_flows.execution.sqlite_store import (ReadOnlyStoreError, SQLiteStore, StoreFileError,
                                               UnsupportedQueryError)
from dpa4_flows.execution.stores import embedded_store


@pytest.fixture()
def store(tmp_path):
    s = SQLiteStore(tmp_path / "s.sqlite", "t", key="k", indexes=["owner"])
    s.connect()
    return s


def _keys(store, criteria, **kw):
    return [d["k"] for d in store.query(criteria, **kw)]


class _Recorder:
    """A connection that records the SQL text of every statement (parameters are not text)."""

    def __init__(self, conn, seen):
        self._conn, self._seen = conn, seen

    def execute(self, sql, *args):
        self._seen.append(sql)
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


# -- 1. injection ----------------------------------------------------------------------------
def test_keys_and_sort_keys_never_reach_sql(store):
    store.update([{"k": 1, "owner": "alice", "secret": "s1", "na'me": "a"},
                  {"k": 2, "owner": "bob", "secret": "s2"}])
    seen: list[str] = []
    store._conn = _Recorder(store._conn, seen)
    assert _keys(store, {"na'me": "a"}) == [1]  # was: sqlite syntax error
    assert _keys(store, {"zz') AND 0 OR (1=1) AND ('": {"$exists": True}}) == []  # was: every document
    crafted = "owner') = 'bob' OR json_extract(doc, '$.secret') = 's1' OR ('"
    assert _keys(store, {"owner": "bob", crafted: {"$exists": False}}) == [2]
    assert _keys(store, {crafted: "s1"}) == []  # was: alice's document through bob's filter
    assert _keys(store, {}, sort={"k') DESC, (SELECT 1": 1}) == [1, 2]
    with pytest.raises(UnsupportedQueryError):
        store.ensure_index("x') ; DROP TABLE t; --")
    user_text = ["na'me", "zz'", "secret", "DROP", "s1", "bob", "alice", "SELECT 1"]
    assert seen and not [s for s in seen for u in user_text if u in s], seen  # SQL text, not parameters


# -- 2. MongoDB semantics --------------------------------------------------------------------
def test_values_round_trip_and_match_like_mongodb(store):
    docs = [{"k": 1, "ключ": "значение", "x": math.nan, "inf": math.inf, "d": {"$date": 5},
             "lit": {"$literal": 1}, "u": "x\0y", "when": datetime(2026, 1, 2)},
            {"k": 2, "x": 1.5, "u": "x", "d": {"$date": "2020-01-01"}}]
    store.update(docs)
    got = {d["k"]: d for d in store.query({})}
    assert got[1]["ключ"] == "значение" and math.isnan(got[1]["x"]) and got[1]["inf"] == math.inf
    assert got[1]["d"] == {"$date": 5} and got[2]["d"] == {"$date": "2020-01-01"}  # not converted
    assert got[1]["lit"] == {"$literal": 1} and got[1]["when"] == datetime(2026, 1, 2)
    assert _keys(store, {"ключ": "значение"}) == [1]  # non-ASCII keys match
    assert _keys(store, {"x": math.nan}) == [1]  # NaN equals NaN, as in MongoDB queries
    assert _keys(store, {"x": {"$gt": 1}}) == [2]
    assert _keys(store, {"u": "x"}) == [2] and _keys(store, {"u": "x\0y"}) == [1]  # NUL kept


def test_arrays_match_like_mongodb(store):
    store.update([{"k": 1, "output": {"results": [{"converged": False}, {"converged": True, "e": 2}]},
                   "tags": ["a", "b"]},
                  {"k": 2, "output": {"results": [{"converged": False, "e": 3}]}, "tags": []}])
    assert _keys(store, {"output.results.converged": True}) == [1]
    assert _keys(store, {"tags": "a"}) == [1] and _keys(store, {"tags": {"$ne": "a"}}) == [2]
    assert _keys(store, {"tags": {"$in": ["b", "z"]}}) == [1] and _keys(store, {"tags": {"$nin": ["b"]}}) == [2]
    assert _keys(store, {"tags.1": {"$exists": True}}) == [1]
    assert _keys(store, {"output.results": {"$elemMatch": {"converged": False, "e": 3}}}) == [2]
    assert _keys(store, {"output.results": {"$elemMatch": {"converged": True, "e": 3}}}) == []
    assert _keys(store, {"output.results.e": {"$elemMatch": {"$gt": 1}}}) == []  # not an array there


def test_sort_orders_types_like_mongodb(store):
    store.update([{"k": 1, "v": "b"}, {"k": 2, "v": 3}, {"k": 3}, {"k": 4, "v": True}, {"k": 5, "v": None},
                  {"k": 6, "v": 1.5}, {"k": 7, "v": [0, "z"]}, {"k": 8, "v": datetime(2020, 1, 1)}])
    # null and missing < numbers < strings < booleans < dates; arrays by their min (asc) / max (desc)
    assert _keys(store, {}, sort={"v": 1}) == [3, 5, 7, 6, 2, 1, 4, 8]
    assert _keys(store, {}, sort={"v": -1}) == [8, 4, 7, 1, 2, 6, 3, 5]


def test_bounds_give_clear_errors(store):
    store.update([{"k": i, "owner": f"o{i}"} for i in range(50)])
    values = [f"o{i}" for i in range(100_000)]
    for query in ({"owner": {"$in": values}}, {"k": {"$in": list(range(100_000))}}):  # indexed / not
        t0 = time.process_time()  # CPU time: a busy shared machine stretched wall time past 1 s
        assert len(_keys(store, query)) == 50
        assert time.process_time() - t0 < 2.0  # 0.5-0.7 s measured; the old store failed or took minutes
    deep: dict = {"a": 1}
    for _ in range(200):
        deep = {"$and": [deep]}
    with pytest.raises(QueryTooDeepError, match="deeper than 100"):
        store.count(deep)
    with pytest.raises(ValueError, match="64 bits"):
        store.update({"k": 99, "big": 2**70})
    with pytest.raises(UnsupportedQueryError, match="64 bits"):
        store.count({"k": 2**64})


def test_regex_cannot_hang_a_query(store):
    store.update([{"k": 1, "s": "a" * 29 + "!"}, {"k": 2, "s": "abc"}, {"k": 3, "s": "a" * 60 + "!"}])
    t0 = time.perf_counter()
    with pytest.raises(UnsafeRegexError, match="nested quantifier"):
        store.count({"s": {"$regex": "(a+)+$"}})  # took 19 s at 7146895
    with pytest.raises(RegexTimeoutError, match="budget"):
        store.count({"s": {"$regex": "(a|aa)+$"}})  # overlapping alternatives: bounded in time
    assert time.perf_counter() - t0 < 3
    assert _keys(store, {"s": {"$regex": "^AB", "$options": "i"}}) == [2]


# -- 4, 5. files -----------------------------------------------------------------------------
def test_read_only_store_reads_and_refuses_writes(tmp_path):
    folder = tmp_path / "ro"
    store = embedded_store(folder / "jobs.sqlite")
    store.connect()
    store.docs_store.update({"uuid": "u", "index": 1, "output": 5}, key=["uuid", "index"])
    store.close()
    db = folder / "jobs.sqlite"
    os.chmod(db, stat.S_IRUSR | stat.S_IRGRP)
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    try:
        ro = embedded_store(db)
        ro.connect()
        assert ro.get_output("u") == 5
        with pytest.raises(ReadOnlyStoreError, match=str(db)):
            ro.docs_store.update({"uuid": "v", "index": 1}, key=["uuid", "index"])
        ro.close()
    finally:
        os.chmod(folder, stat.S_IRWXU)
        os.chmod(db, stat.S_IRUSR | stat.S_IWUSR)


@pytest.mark.parametrize("damage", ["not_sqlite", "truncated", "directory", "garbage_pages"])
def test_broken_store_file_gives_one_clear_error(tmp_path, damage):
    db = tmp_path / "jobs.sqlite"
    good = SQLiteStore(db, "outputs")
    good.connect()
    good.update([{"uuid": f"u{i}", "blob": "x" * 2000} for i in range(200)], key="uuid")
    good.close()
    data = db.read_bytes()
    if damage == "not_sqlite":
        db.write_text("this is a text file, not a database\n" * 10)
    elif damage == "truncated":
        db.write_bytes(data[:len(data) // 3])
    elif damage == "garbage_pages":
        db.write_bytes(data[:4096] + os.urandom(len(data) - 4096))
    else:
        db.unlink()
        db.mkdir()
    with pytest.raises(StoreFileError, match=f"{db}.*(restore it|move it away)"):
        s = SQLiteStore(db, "outputs")
        s.connect()
        s.count({"uuid": "u1"}) + len(list(s.query({})))


# -- 6. a job and its blobs in one transaction -----------------------------------------------
def test_job_document_and_blobs_commit_together(tmp_path, monkeypatch):
    from jobflow import Job

    store = embedded_store(tmp_path / "jobs.sqlite")
    store.connect()
    data = store.additional_stores["data"]
    real_update = data.update

    def dies_after_blob(docs, key=None):
        real_update(docs, key=key)
        raise KeyboardInterrupt("killed between the writes")

    monkeypatch.setattr(data, "update", dies_after_blob)
    job = Job(dict, uuid="j1")
    doc = {"uuid": "j1", "index": 1, "output": {"traj": [1, 2, 3]}, "metadata": {}, "hosts": [],
           "name": "j", "completed_at": "now"}
    with pytest.raises(KeyboardInterrupt):
        store.update(doc, key=["uuid", "index"], save={"data": ["traj"]})
    assert job.uuid == "j1" and store.docs_store.count() == 0 and data.count() == 0  # neither half stays
    monkeypatch.setattr(data, "update", real_update)
    store.update(doc, key=["uuid", "index"], save={"data": ["traj"]})
    assert store.docs_store.count() == 1 and data.count() == 1
    assert store.get_output("j1", load=True)["traj"] == [1, 2, 3]


# -- 7. files written by the store at 7146895 ------------------------------------------------
def test_old_store_files_open_and_answer(tmp_path):
    """The layout 7146895 wrote: ASCII-escaped JSON, ``$date`` objects, ``$."key"`` indexes."""
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute('CREATE TABLE "outputs" (_id INTEGER PRIMARY KEY, doc TEXT NOT NULL)')
    for key in ("uuid", "index", "blob_uuid", "job_uuid", "job_index", "name", "completed_at"):
        conn.execute(f'CREATE INDEX "ix_outputs_{key}" ON "outputs" (json_extract(doc, \'$."{key}"\'))')
    docs = [{"uuid": "a", "index": 1, "name": "relax", "formula": "Fe₂O₃",
             "last_updated": {"$date": "2026-01-02T03:04:05"}},
            {"uuid": "a", "index": 2, "name": "relax", "formula": "NiO"}]
    conn.executemany('INSERT INTO "outputs" (doc) VALUES (?)', [(json.dumps(d),) for d in docs])
    conn.commit()
    conn.close()
    s = SQLiteStore(db, "outputs", indexes=["name", "completed_at"])
    s.connect()
    assert s.query_one({"uuid": "a"}, ["index"], sort={"index": -1}) == {"index": 2}
    assert s.query_one({"formula": "Fe₂O₃"})["last_updated"] == datetime(2026, 1, 2, 3, 4, 5)
    s.update({"uuid": "a", "index": 2, "formula": "NiO₂"}, key=["uuid", "index"])
    assert s.count() == 2 and s.count({"formula": "NiO₂"}) == 1


def test_names_that_reach_sql_text_are_whole_identifiers(tmp_path):
    """Table names and index keys are the only text in SQL; a trailing newline must not slip past their grammar
    (Python's ``$`` matches before a final newline)."""
    from dpa4_flows.execution.sqlite_query import InvalidIndexKeyError, check_index_key

    with pytest.raises(ValueError, match="plain identifier"):
        SQLiteStore(tmp_path / "s.sqlite", "outputs\n")
    with pytest.raises(InvalidIndexKeyError):
        check_index_key("metadata.id\n")
    assert check_index_key("metadata.id") == "metadata.id"
