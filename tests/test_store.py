"""Store and home folder: round trip, migrations, and refusing to damage what is not ours."""
import sqlite3

import pytest

from studio.errors import HomeError, StoreError
from studio.paths import resolve_home
from studio.store import SCHEMA_VERSION, Store


def test_round_trip(tmp_path):
    s = Store(tmp_path / "studio.db")
    assert s.schema_version() == SCHEMA_VERSION
    assert s.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.add_dataset(name="faq", version=1, path="/x", sources=["a.jsonl"], recipe="auto",
                  params={"max_tokens": 256}, stats={"records": 3}, records=3)
    assert s.next_dataset_version("faq") == 2
    d = s.get_dataset("faq")
    assert d["sources"] == ["a.jsonl"] and d["stats"]["records"] == 3
    s.add_run(id="r1", preset="cpu-quickstart", dataset="faq", model="m", config={"a": 1})
    s.update_run("r1", status="running", step=3)
    s.add_metrics("r1", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    s.add_metrics("r1", [{"step": 2, "loss": 1.4}])  # a resumed run rewrites a step: no duplicate
    again = Store(tmp_path / "studio.db")  # reopening does not migrate twice or lose rows
    assert again.get_run("r1")["status"] == "running"
    assert [m["loss"] for m in again.get_metrics("r1")] == [2.0, 1.4]
    with pytest.raises(ValueError):
        again.update_run("r1", status="exploded")


def test_failed_transaction_rolls_back(tmp_path):
    s = Store(tmp_path / "studio.db")
    with pytest.raises(RuntimeError):
        with s.tx() as conn:
            conn.execute("INSERT INTO reports VALUES ('r', 1, '{}')")
            raise RuntimeError("boom")
    assert s.get_report("r") is None


def test_not_sqlite_is_refused_and_untouched(tmp_path):
    f = tmp_path / "studio.db"
    f.write_bytes(b"my precious notes, not a database" * 10)
    before = f.read_bytes()
    with pytest.raises(StoreError) as e:
        Store(f)
    assert str(f) in str(e.value) and "Move it aside" in str(e.value)
    assert f.read_bytes() == before


def test_newer_schema_is_refused(tmp_path):
    f = tmp_path / "studio.db"
    sqlite3.connect(f).execute(f"PRAGMA user_version={SCHEMA_VERSION + 5}")
    with pytest.raises(StoreError, match="newer"):
        Store(f)


def test_home_is_a_file(tmp_path):
    f = tmp_path / "home"
    f.write_text("x")
    with pytest.raises(HomeError, match="is a file"):
        resolve_home(f)


def test_home_unwritable(tmp_path):
    with pytest.raises(HomeError, match="cannot be written"):
        resolve_home("/proc/finetune-studio-home")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(HomeError):
        resolve_home(f / "sub")


def test_home_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "h"))
    h = resolve_home()
    assert h.root == (tmp_path / "h").resolve() and h.runs.is_dir() and h.models.is_dir()


def test_store_works_from_other_threads(tmp_path):
    """The UI calls the store from worker threads; each gets its own connection."""
    import threading

    s = Store(tmp_path / "studio.db")
    s.add_run(id="main-thread", preset="p", dataset="d", model="m")
    seen, errors = [], []

    def worker(i):
        try:
            s.add_run(id=f"t{i}", preset="p", dataset="d", model="m")
            seen.append(len(s.list_runs()))
        except Exception as e:  # pragma: no cover - the failure we guard against
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(s.list_runs()) == 5
