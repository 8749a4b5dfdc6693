"""Background jobs of the studio (adding a speaker), kept in SQLite so a reload or a restart shows where they stand.

:class:`JobStore` is the database: one row per job with its state (``queued`` → ``running`` → ``done`` |
``failed``; ``interrupted`` when the server stopped while it ran), progress (0-1), the last progress message, a
log of messages, its inputs (JSON) and its result (the written checkpoint and a JSON report). Every call opens its
own connection (WAL mode), so Gradio's threads and a polling page can read while the worker writes.

:class:`JobRunner` runs the queued jobs one at a time in a single background thread with a given function
``work(inputs: dict, progress: Callable[[float, str], None]) -> (result_path, report)``; request threads (synthesis)
keep being served meanwhile. At start-up it marks jobs left ``running`` by a previous process as ``interrupted``
and resumes the ``queued`` ones.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from naturall2s.errors import NaturalL2SError
from naturall2s.studio.sqlite_store import SQLiteStore

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "interrupted")
ACTIVE = ("queued", "running")
PROGRESS_WRITE_INTERVAL_S = 0.5  # progress rows are written at most this often (the final one always)
LOG_LINES = 200  # messages kept per job

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'interrupted')),
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    log TEXT NOT NULL DEFAULT '[]',
    inputs TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    report TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""

Work = Callable[[dict, Callable[[float, str], None]], tuple[str | None, dict]]


@dataclass(frozen=True)
class Job:
    id: int
    kind: str  # what the job does ("adapt")
    name: str  # what it makes (the new system's name)
    state: str
    progress: float  # 0..1
    message: str  # the last progress message (or the error)
    log: list[str]  # progress messages, oldest first
    inputs: dict
    result: str | None  # the written file (a checkpoint)
    report: dict  # what the work returned besides the file (e.g. held-out scores before/after)
    created: float
    updated: float

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


class JobStore(SQLiteStore):
    """The jobs database at ``path`` (created with its schema when missing)."""

    def __init__(self, path: str | Path):
        super().__init__(path, _SCHEMA)

    def _execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        con = self._connect()
        try:
            with con:
                return con.execute(sql, params)
        finally:
            con.close()

    def _query(self, sql: str, params: tuple = ()) -> list[Job]:
        con = self._connect()
        try:
            rows = con.execute(sql, params).fetchall()
        finally:
            con.close()
        return [_job(r) for r in rows]

    def create(self, *, kind: str, name: str, inputs: dict) -> Job:
        """A new ``queued`` job."""
        now = time.time()
        cur = self._execute("INSERT INTO jobs (kind, name, state, inputs, created, updated) VALUES (?, ?, 'queued', ?, ?, ?)",
                            (kind, name, json.dumps(inputs), now, now))
        return self.get(int(cur.lastrowid))

    def get(self, job_id: int) -> Job | None:
        found = self._query("SELECT * FROM jobs WHERE id = ?", (int(job_id),))
        return found[0] if found else None

    def jobs(self) -> list[Job]:
        """Every job, newest first."""
        return self._query("SELECT * FROM jobs ORDER BY id DESC")

    def latest(self) -> Job | None:
        found = self._query("SELECT * FROM jobs ORDER BY id DESC LIMIT 1")
        return found[0] if found else None

    def next_queued(self) -> Job | None:
        found = self._query("SELECT * FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1")
        return found[0] if found else None

    def active(self) -> Job | None:
        """The queued or running job, if any."""
        found = self._query("SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY id LIMIT 1")
        return found[0] if found else None

    def set_state(self, job_id: int, state: str, *, message: str | None = None, progress: float | None = None,
                  result: str | None = None, report: dict | None = None) -> None:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        sets, params = ["state = ?", "updated = ?"], [state, time.time()]
        for column, value in (("message", message), ("progress", progress), ("result", result)):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        if report is not None:
            sets.append("report = ?")
            params.append(json.dumps(report))
        self._execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*params, int(job_id)))
        if message:
            self._append_log(job_id, message)

    def set_progress(self, job_id: int, progress: float, message: str) -> None:
        self._execute("UPDATE jobs SET progress = ?, message = ?, updated = ? WHERE id = ?",
                      (float(min(max(progress, 0.0), 1.0)), message, time.time(), int(job_id)))
        self._append_log(job_id, message)

    def _append_log(self, job_id: int, message: str) -> None:
        con = self._connect()
        try:
            with con:
                row = con.execute("SELECT log FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
                lines = json.loads(row["log"]) if row else []
                if not lines or lines[-1] != message:
                    lines = (lines + [message])[-LOG_LINES:]
                    con.execute("UPDATE jobs SET log = ? WHERE id = ?", (json.dumps(lines), int(job_id)))
        finally:
            con.close()

    def mark_interrupted(self) -> int:
        """Jobs left ``running`` by a process that stopped → ``interrupted``; returns how many."""
        running = self._query("SELECT * FROM jobs WHERE state = 'running'")
        for job in running:
            self.set_state(job.id, "interrupted",
                           message="the server stopped while this job ran; start it again to retry")
        return len(running)


def _job(row: sqlite3.Row) -> Job:
    d = dict(row)
    return Job(id=d["id"], kind=d["kind"], name=d["name"], state=d["state"], progress=float(d["progress"]),
               message=d["message"], log=json.loads(d["log"]), inputs=json.loads(d["inputs"]), result=d["result"],
               report=json.loads(d["report"]), created=d["created"], updated=d["updated"])


class JobRunner:
    """Runs the store's queued jobs of one ``kind`` one at a time with ``work`` in a daemon thread.

    ``on_done(job)`` is called (in the worker thread) after a job succeeded, e.g. to serve the new model.
    :meth:`submit` refuses a second job while one is queued or running.
    """

    def __init__(self, store: JobStore, work: Work, *, kind: str = "adapt",
                 on_done: Callable[[Job], None] | None = None, start: bool = True):
        self.store = store
        self.work = work
        self.kind = kind
        self.on_done = on_done
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        store.mark_interrupted()
        if start:
            self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"studio-{self.kind}-jobs", daemon=True)
            self._thread.start()
            self._wake.set()  # queued jobs from before a restart

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, *, name: str, inputs: dict) -> Job:
        """Queue a job; NaturalL2SError while another one is queued or running."""
        current = self.store.active()
        if current is not None:
            raise NaturalL2SError(f"one job at a time: “{current.name}” is {current.state} "
                                  f"({current.progress:.0%}); wait until it has finished")
        job = self.store.create(kind=self.kind, name=name, inputs=inputs)
        self._wake.set()
        return job

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job is queued or running (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.store.active() is None:
                return True
            time.sleep(0.05)
        return False

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stop.is_set() and (job := self.store.next_queued()) is not None:
                self.run_one(job)

    def run_one(self, job: Job) -> Job:
        """Run one queued job to its end state and return it as stored."""
        store = self.store
        store.set_state(job.id, "running", progress=0.0, message="started")
        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_WRITE_INTERVAL_S or fraction >= 1.0:
                last[0] = now
                store.set_progress(job.id, fraction, message)

        try:
            result, report = self.work(dict(job.inputs), progress)
        except NaturalL2SError as e:
            store.set_state(job.id, "failed", message=str(e))
        except Exception as e:  # the worker thread must survive any job
            log.exception("job %s failed", job.id)
            store.set_state(job.id, "failed", message=f"internal error ({type(e).__name__}): {e}")
        else:
            store.set_state(job.id, "done", progress=1.0, message="done", result=str(result) if result else None,
                            report=report or {})
            if self.on_done is not None:
                try:
                    self.on_done(store.get(job.id))
                except Exception as e:
                    log.exception("after job %s", job.id)
                    store.set_state(job.id, "failed", message=f"the job finished but its result could not be "
                                                                f"served ({type(e).__name__}: {e})")
        return store.get(job.id)
