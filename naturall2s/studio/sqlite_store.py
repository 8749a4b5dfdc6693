"""The base of the studio's SQLite stores (votes, jobs): one database file, WAL mode, a fresh connection per call.

A connection per call is safe from any of Gradio's threads; WAL mode (stored in the file) lets readers (a polling
page) read while one writer writes. Subclasses pass their schema and use only parameterised queries.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

BUSY_TIMEOUT_S = 10.0


class SQLiteStore:
    """The database at ``path``, created with ``schema`` (idempotent ``CREATE ... IF NOT EXISTS`` statements)."""

    def __init__(self, path: str | Path, schema: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        try:
            con.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the database file
            con.executescript(schema)
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        """A fresh connection (one per call: safe from any thread); rows as ``sqlite3.Row``."""
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        con.row_factory = sqlite3.Row
        return con
