"""Stores: SQLiteStore answers MongoDB queries like mongomock, is indexed, survives several
writer processes, round-trips through JSON; jobflow runs on every store factory.

mongomock (maggma ``MemoryStore``) is the oracle: the same documents go into both stores and
every query must return the same documents in the same order.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import sqlite3
from datetime import datetime

import pytest
from jobflow import Flow, run_locally
from maggma.stores import MemoryStore
from monty.json import MontyDecoder

from _jobs import add, square_all
from _workers import store_writer
from dpa4_flows.execution.sqlite_store import InvalidStoreNameError, SQLiteStore, UnsupportedQueryError
from dpa4_flows.execution.stores import (StoreConfigError, check_persistent, embedded_store, memory_store,
                              mongo_store, monty_store)

DOCS = [
    {"task_id": 1, "uuid": "a", "index": 1, "name": "relax", "e": -1.5, "tags": ["x", "y"],
     "meta": {"formula": "Si2", "n": 2, "ok": True}, "nothing": None},
    {"task_id": 2, "uuid": "a", "index": 2, "name": "relax", "e": -2.5, "tags": ["y"],
     "meta": {"formula": "Si2", "n": 2, "ok": False}},
    {"task_id": 3, "uuid": "b", "index": 1, "name": "static", "e": 0.5, "tags": [],
     "meta": {"formula": "NaCl", "n": 2, "ok": True}, "nothing": 3},
    {"task_id": 4, "uuid": "c", "index": 1, "name": "static", "e": 3, "tags": ["z"],
     "meta": {"formula": "Fe", "n": 1}, "label": "1"},
    {"task_id": 5, "uuid": "d", "index": 1, "name": "md", "e": -7.25, "tags": ["x"],
     "meta": {"formula": "NaCl", "n": 8, "ok": True, "sub": {"deep": 4}}},
]

CRITERIA = [
    {}, {"uuid": "a"}, {"uuid": "a", "index": 2}, {"index": 1}, {"meta.formula": "NaCl"},
    {"meta.sub.deep": 4}, {"tags": "x"}, {"tags": ["y"]}, {"meta.ok": True}, {"meta.ok": False},
    {"nothing": None}, {"label": 1}, {"label": "1"}, {"uuid": {"$in": ["a", "c", "zz"]}},
    {"uuid": {"$nin": ["a", "c"]}}, {"tags": {"$in": ["z", "y"]}}, {"meta.ok": {"$exists": False}},
    {"nothing": {"$exists": True}}, {"e": {"$gt": -2}}, {"e": {"$gte": 0.5, "$lt": 3}},
    {"e": {"$lte": -2.5}}, {"name": {"$ne": "relax"}}, {"meta.ok": {"$ne": True}},
    {"$or": [{"name": "md"}, {"e": {"$gt": 0}}]}, {"$and": [{"name": "static"}, {"e": 3}]},
    {"$nor": [{"name": "relax"}, {"uuid": "c"}]}, {"name": {"$regex": "^st"}},
    {"tags": {"$size": 1}}, {"e": {"$not": {"$gt": 0}}}, {"meta": {"formula": "Fe", "n": 1}},
    {"tags.0": "x"}, {"uuid": {"$eq": "b"}}, {"uuid": {"$in": []}},
]


@pytest.fixture()
def pair(tmp_path):
    lite = SQLiteStore(tmp_path / "db.sqlite", "coll", key="task_id", indexes=["name"])
    mock = MemoryStore(f"oracle_{os.getpid()}_{id(tmp_path)}", key="task_id")
    for s in (lite, mock):
        s.connect()
        s.update([dict(d) for d in DOCS])
    return lite, mock


def _strip(docs):
    return [{k: v for k, v in d.items() if k != "_id"} for d in docs]


@pytest.mark.parametrize("criteria", CRITERIA, ids=[json.dumps(c) for c in CRITERIA])
def test_queries_match_mongomock(pair, criteria):
    lite, mock = pair
    assert _strip(lite.query(criteria)) == _strip(mock.query(criteria))
    assert lite.count(criteria) == mock.count(criteria)


def test_sort_skip_limit_projection_distinct_groupby(pair):
    lite, mock = pair
    for kw in ({"sort": {"e": -1}}, {"sort": {"name": 1, "e": 1}, "skip": 1, "limit": 2},
               {"properties": ["uuid", "meta.formula"], "sort": {"index": -1}},
               {"properties": {"e": 1}, "limit": 3}):
        assert _strip(lite.query(**kw)) == _strip(mock.query(**kw)), kw
    assert lite.query_one({"uuid": "a"}, ["index"], sort={"index": -1}) == {"index": 2}
    assert sorted(lite.distinct("meta.formula")) == sorted(mock.distinct("meta.formula"))
    assert sorted(lite.distinct("tags")) == ["x", "y", "z"]
    groups = {k["name"]: len(v) for k, v in lite.groupby("name")}
    assert groups == {"relax": 2, "static": 2, "md": 1}


def test_upsert_by_key_and_remove(pair):
    lite, _ = pair
    lite.update({"task_id": 3, "uuid": "b", "index": 1, "e": 9.0})  # replaces task 3
    assert lite.count() == 5 and lite.query_one({"task_id": 3})["e"] == 9.0
    lite.update([{"uuid": "a", "index": 2, "e": 0.0}], key=["uuid", "index"])  # compound key
    assert lite.count({"uuid": "a"}) == 2 and lite.query_one({"uuid": "a", "index": 2})["e"] == 0.0
    lite.update({"uuid": "n", "index": 1, "e": 1.0}, key=["uuid", "index"])  # insert
    assert lite.count() == 6
    lite.remove_docs({"name": "static"})
    # Task 3 lost its name when replaced: only task 4 is still a "static" document.
    assert lite.count() == 5 and lite.count({"name": "static"}) == 0
    with pytest.raises(KeyError, match="task_id"):
        lite.update({"uuid": "no-key"})


def test_indexes_are_used_and_bad_input_refused(pair, tmp_path):
    lite, _ = pair
    conn = sqlite3.connect(lite.database_path)
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT doc FROM coll WHERE "
                        "json_extract(doc, '$.\"uuid\"') = 'a'").fetchall()
    assert "USING INDEX ix_coll_uuid" in plan[0][-1]
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ix_coll_uuid", "ix_coll_index", "ix_coll_name", "ix_coll_task_id"} <= names
    with pytest.raises(UnsupportedQueryError, match=r"\$where"):
        lite.count({"$where": "sleep(100)"})
    with pytest.raises(InvalidStoreNameError, match="drop table"):
        SQLiteStore(tmp_path / "x.sqlite", "drop table")


def test_datetimes_round_trip(tmp_path):
    s = SQLiteStore(tmp_path / "d.sqlite", "t", key="k")
    s.connect()
    t0, t1 = datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 6, 1)
    s.update([{"k": 1, "last_updated": t0}, {"k": 2, "last_updated": t1}])
    assert s.query_one({"k": 1})["last_updated"] == t0
    assert s.last_updated == t1
    assert s.count({"last_updated": {"$gt": datetime(2026, 3, 1)}}) == 1


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    path, n, n_workers = str(tmp_path / "c.sqlite"), 200, 4
    ctx = mp.get_context("spawn")  # not fork: torch is imported here
    ready = ctx.Barrier(n_workers)  # released once every writer has connected: then they race
    procs = [ctx.Process(target=store_writer, args=(path, w, n, ready)) for w in range(n_workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    s = SQLiteStore(path, "outputs", key="uuid")
    s.connect()
    assert s.count({"uuid": {"$regex": "^shared-"}}) == n // 2  # upserts, never duplicates
    assert s.count() == n // 2 + n_workers * n // 2


def test_embedded_store_runs_jobflow_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = embedded_store("rel/dir.sqlite")  # a relative path becomes absolute
    assert store.docs_store.database_path == str(tmp_path / "rel" / "dir.sqlite")
    a = add(1, 2)
    b = square_all([a.output, 4])
    run_locally(Flow([a, b]), store=store, log=False, ensure_success=True)
    out = store.get_output(b.uuid)
    assert out["total"] == 25 and out["trajectory"]["store"] == "data"  # blob in data store
    assert store.get_output(b.uuid, load=True)["trajectory"] == [9, 16]
    clone = MontyDecoder().process_decoded(json.loads(json.dumps(store.as_dict())))
    clone.connect()
    assert clone.get_output(a.uuid) == 3 and clone.additional_stores["data"].count() == 1
    check_persistent(store)


def test_other_factories(tmp_path, monkeypatch):
    for store in (memory_store(), monty_store(tmp_path / "monty")):
        j = add(2, 3)
        run_locally(j, store=store, log=False, ensure_success=True)
        assert store.get_output(j.uuid) == 5 and "data" in store.additional_stores
    with pytest.raises(StoreConfigError, match="not persistent"):
        check_persistent(memory_store())
    # Production: MongoDB from jobflow's own configuration file (no connection is made).
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "jobflow.yaml")
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", os.path.abspath(example))
    prod = mongo_store()
    assert type(prod.docs_store).__name__ == "MongoStore" and "data" in prod.additional_stores
    direct = mongo_store("mongodb://db.example:27017", "dpa4")
    assert direct.additional_stores["data"].collection_name == "outputs_data"
    with pytest.raises(StoreConfigError, match="both host and database"):
        mongo_store(host="db.example")
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(tmp_path / "absent.yaml"))
    with pytest.raises(StoreConfigError, match="no JOB_STORE configured"):
        mongo_store()


def test_every_lookup_jobflow_makes_is_indexed(tmp_path):
    """Run a dynamic flow and EXPLAIN every statement: no full scan of a table, ever.

    (Without care sqlite drives {"uuid": u, "index": 1} through the "index" index, where
    every document matches: O(N) per look-up, O(N^2) per flow.)
    """
    from _jobs import make_flow

    store = embedded_store(tmp_path / "jobs.sqlite")
    store.connect()
    # Adversarial: without statistics sqlite prefers the most recently created index.
    conn = store.docs_store._collection
    for table in ("outputs", "data"):
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                      "AND tbl_name = ? AND name LIKE '%index'", (table,)).fetchall():
            conn.execute(f'DROP INDEX "{name}"')
            conn.execute(sql)
    seen: list[str] = []
    for sub in (store.docs_store, *store.additional_stores.values()):
        sub._collection.set_trace_callback(seen.append)
    run_locally(make_flow(), store=store, log=False, ensure_success=True)
    selects = [s for s in seen if s.startswith("SELECT")]
    assert len(selects) > 50
    conn = sqlite3.connect(store.docs_store.database_path)
    for sql in set(selects):
        plan = " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING INDEX" in plan and "SCAN outputs" not in plan and "SCAN data" not in plan, (sql, plan)
        # ... and never through an index on "index"/"job_index", which nearly every doc shares.
        assert not re.search(r"INDEX ix_\w+?_(job_)?index\b", plan), (sql, plan)
