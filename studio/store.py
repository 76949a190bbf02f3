"""studio.db: the one record of datasets, runs, metrics, reports, exports and memory checks.

Owns the schema (versioned, migrated forward in one step per version), WAL mode and every SQL
statement in the project. Callers get plain dicts back; JSON columns are decoded here. A file
that is not a SQLite database is never replaced: we refuse with the file's path and what to do.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import StoreError
from .records import RunStatus

SCHEMA_VERSION = 2
JSON_COLUMNS = {"sources", "params", "stats", "config", "artifacts", "data", "parity",
                "settings", "extra"}

# One entry per version: statements that move the schema from version-1 to version.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS datasets (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL,
            created_at REAL NOT NULL, path TEXT NOT NULL, sources TEXT, recipe TEXT,
            params TEXT, stats TEXT, records INTEGER, UNIQUE(name, version))""",
        """CREATE TABLE IF NOT EXISTS runs (
            id TEXT PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL,
            status TEXT NOT NULL, preset TEXT, dataset TEXT, model TEXT, path TEXT,
            pid INTEGER, step INTEGER DEFAULT 0, max_steps INTEGER, error TEXT,
            config TEXT, artifacts TEXT)""",
        """CREATE TABLE IF NOT EXISTS metrics (
            run_id TEXT NOT NULL, step INTEGER NOT NULL, loss REAL, eval_loss REAL, lr REAL,
            grad_norm REAL, tokens_per_s REAL, eta_s REAL, peak_mem_gb REAL,
            PRIMARY KEY (run_id, step))""",
        """CREATE TABLE IF NOT EXISTS reports (
            run_id TEXT PRIMARY KEY, created_at REAL NOT NULL, data TEXT)""",
        """CREATE TABLE IF NOT EXISTS exports (
            id INTEGER PRIMARY KEY, created_at REAL NOT NULL, run_id TEXT, model TEXT,
            format TEXT NOT NULL, quant TEXT, path TEXT NOT NULL, bytes INTEGER,
            seconds REAL, parity TEXT)""",
        """CREATE TABLE IF NOT EXISTS memory_checks (
            id INTEGER PRIMARY KEY, created_at REAL NOT NULL, model TEXT, device TEXT,
            settings TEXT, estimate_gb REAL, measured_gb REAL, extra TEXT)""",
    ],
    # before/after benchmark evaluations (evaluate.py): one row per run (or model) and request
    2: [
        """CREATE TABLE IF NOT EXISTS evaluations (
            id INTEGER PRIMARY KEY, created_at REAL NOT NULL, run_id TEXT, model TEXT,
            key TEXT NOT NULL, data TEXT, UNIQUE(run_id, model, key))""",
    ],
}

_CHECKED: set[str] = set()  # database files whose header this process has read
RUN_STATUSES = tuple(s.value for s in RunStatus)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for k in JSON_COLUMNS & out.keys():
        if isinstance(out[k], str):
            out[k] = json.loads(out[k])
    return out


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v)
            for k, v in values.items()}


class Store:
    """Thin query layer over sqlite-utils. One connection per thread (the UI serves each request
    on a worker thread; sqlite connections must stay on the thread that made them)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._check_file()
        try:
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(self._not_a_db(e)) from None
        _CHECKED.add(str(self.path.resolve()))  # open now: never read it again outside sqlite

    @property
    def db(self):
        import sqlite_utils

        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            db = self._local.db = sqlite_utils.Database(conn)
        return db

    def _not_a_db(self, why: object) -> str:
        return (f"{self.path} is not a usable studio database ({why}). It may hold your history, so "
                "it was left untouched. Move it aside (e.g. rename it to studio.db.bak) to start a "
                "fresh one, or point --home / STUDIO_HOME at another folder.")

    def _check_file(self) -> None:
        if self.path.exists():
            if self.path.is_dir():
                raise StoreError(f"{self.path} is a folder, expected the studio database file. "
                                 "Move it aside or choose another --home.")
            # Read the header once per process: sqlite's locks are POSIX locks, which a process
            # loses on *every* fd of the file when it closes any one of them — a second look
            # while connections are open would let another process delete the WAL index under
            # them (SQLITE_IOERR_SHORT_READ).
            key = str(self.path.resolve())
            if key in _CHECKED:
                return
            with open(self.path, "rb") as f:
                head = f.read(16)
            if head and head != b"SQLite format 3\x00":
                raise StoreError(self._not_a_db("its header is not SQLite's"))
            _CHECKED.add(key)

    def _migrate(self) -> None:
        conn = self.db.conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer Finetune Studio (schema "
                             f"{version} > {SCHEMA_VERSION}). Upgrade the studio, or use another --home.")
        for v in range(version + 1, SCHEMA_VERSION + 1):
            with self.tx():
                for stmt in MIGRATIONS[v]:
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={v}")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def schema_version(self) -> int:
        return self.db.conn.execute("PRAGMA user_version").fetchone()[0]

    # ---- datasets -------------------------------------------------------------------------
    def next_dataset_version(self, name: str) -> int:
        row = self.db.conn.execute("SELECT MAX(version) FROM datasets WHERE name=?", [name]).fetchone()
        return (row[0] or 0) + 1

    def add_dataset(self, **values: Any) -> dict[str, Any]:
        values.setdefault("created_at", time.time())
        with self.tx():
            self.db["datasets"].insert(_encode(values))
        return self.get_dataset(values["name"], values["version"])

    def get_dataset(self, name: str, version: int | None = None) -> dict[str, Any] | None:
        sql = "SELECT * FROM datasets WHERE name=? " + (
            "AND version=?" if version else "ORDER BY version DESC LIMIT 1")
        rows = list(self.db.query(sql, [name, version] if version else [name]))
        return _decode(rows[0]) if rows else None

    def list_datasets(self) -> list[dict[str, Any]]:
        return [_decode(r) for r in self.db.query(
            "SELECT * FROM datasets ORDER BY name, version DESC")]

    def delete_dataset(self, name: str) -> int:
        with self.tx() as conn:
            return conn.execute("DELETE FROM datasets WHERE name=?", [name]).rowcount

    # ---- runs -----------------------------------------------------------------------------
    def add_run(self, **values: Any) -> dict[str, Any]:
        now = time.time()
        values.setdefault("created_at", now)
        values.setdefault("updated_at", now)
        values.setdefault("status", RunStatus.QUEUED.value)
        with self.tx():
            self.db["runs"].insert(_encode(values))
        return self.get_run(values["id"])

    def update_run(self, run_id: str, **values: Any) -> None:
        if "status" in values and str(values["status"]) not in RUN_STATUSES:
            raise ValueError(f"bad status {values['status']}")
        values["updated_at"] = time.time()
        with self.tx():
            self.db["runs"].update(run_id, _encode(values))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM runs WHERE id=?", [run_id]))
        return _decode(rows[0]) if rows else None

    def list_runs(self) -> list[dict[str, Any]]:
        return [_decode(r) for r in self.db.query(
            "SELECT * FROM runs ORDER BY created_at DESC, id DESC")]

    def delete_run(self, run_id: str) -> None:
        with self.tx() as conn:
            for table in ("metrics", "reports", "evaluations"):
                conn.execute(f"DELETE FROM {table} WHERE run_id=?", [run_id])
            conn.execute("DELETE FROM runs WHERE id=?", [run_id])

    def add_metrics(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        cols = ("step", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s", "eta_s", "peak_mem_gb")
        with self.tx():
            self.db["metrics"].upsert_all(
                [{"run_id": run_id, **{c: r.get(c) for c in cols}} for r in rows],
                pk=("run_id", "step"))

    def trim_metrics(self, run_id: str, step: int) -> None:
        """Forget metrics after `step` (a resumed run continues from there)."""
        with self.tx() as db:
            db.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (run_id, step))

    def get_metrics(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM metrics WHERE run_id=? ORDER BY step", [run_id]))

    # ---- reports, exports, memory checks --------------------------------------------------
    def put_report(self, run_id: str, data: dict[str, Any]) -> None:
        with self.tx():
            self.db["reports"].upsert(_encode({"run_id": run_id, "created_at": time.time(),
                                               "data": data}), pk="run_id")

    def get_report(self, run_id: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM reports WHERE run_id=?", [run_id]))
        return _decode(rows[0])["data"] if rows else None

    def put_evaluation(self, run_id: str | None, model: str, key: str, data: dict[str, Any]) -> None:
        with self.tx() as conn:
            conn.execute("DELETE FROM evaluations WHERE run_id IS ? AND model=? AND key=?",
                         [run_id, model, key])
            self.db["evaluations"].insert(_encode({"created_at": time.time(), "run_id": run_id,
                                                   "model": model, "key": key, "data": data}))

    def get_evaluation(self, run_id: str | None, model: str, key: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM evaluations WHERE run_id IS ? AND model=? AND key=?",
                                  [run_id, model, key]))
        return _decode(rows[0])["data"] if rows else None

    def list_evaluations(self, run_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM evaluations" + (" WHERE run_id=?" if run_id else "") + " ORDER BY created_at DESC"
        return [_decode(r) for r in self.db.query(sql, [run_id] if run_id else [])]

    def add_export(self, **values: Any) -> dict[str, Any]:
        values.setdefault("created_at", time.time())
        with self.tx():
            pk = self.db["exports"].insert(_encode(values)).last_pk
        return self.get_export(pk)

    def get_export(self, export_id: int) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM exports WHERE id=?", [export_id]))
        return _decode(rows[0]) if rows else None

    def list_exports(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id:
            rows = self.db.query("SELECT * FROM exports WHERE run_id=? ORDER BY id DESC", [run_id])
        else:
            rows = self.db.query("SELECT * FROM exports ORDER BY id DESC")
        return [_decode(r) for r in rows]

    def delete_evaluation(self, eval_id: int) -> bool:
        with self.tx() as conn:
            return conn.execute("DELETE FROM evaluations WHERE id=?", [eval_id]).rowcount > 0

    def delete_export(self, export_id: int) -> None:
        with self.tx() as conn:
            conn.execute("DELETE FROM exports WHERE id=?", [export_id])

    def add_memory_check(self, **values: Any) -> None:
        values.setdefault("created_at", time.time())
        with self.tx():
            self.db["memory_checks"].insert(_encode(values))

    def list_memory_checks(self, model: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM memory_checks", []
        if model:
            sql, args = sql + " WHERE model=?", [model]
        return [_decode(r) for r in self.db.query(sql + " ORDER BY id DESC", args)]
