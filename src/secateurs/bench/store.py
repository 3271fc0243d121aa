"""The result store: one SQLite row per cell, so a re-run skips what is done and retries
what failed or was killed.

A cell is ``pending`` until it starts, ``running`` while it runs, then ``done`` (with its
metrics) or ``failed`` (with the error). A ``running`` row found by a later run belongs to
a process that died; it is retried like a failed one, up to ``max_attempts``. Each change
is one SQLite transaction, so the store is never half written.

Each row keeps the digest of the cell's recipe (``grid.cell_digest``); registering a cell
whose recipe changed since it ran puts it back to ``pending``, so results never outlive
the grid that produced them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from .grid import Cell

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    grid TEXT NOT NULL,
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    method TEXT NOT NULL,
    keep REAL NOT NULL,
    seed INTEGER NOT NULL,
    digest TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    metrics TEXT,
    error TEXT,
    updated REAL
)
"""


def _reset(con: sqlite3.Connection, keys: list[str], now: float) -> None:
    con.executemany(
        "UPDATE cells SET status='pending', attempts=0, metrics=NULL, error=NULL, "
        "updated=? WHERE key=?",
        [(now, k) for k in keys],
    )


class Store:
    """The SQLite file at ``path`` (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute(SCHEMA)
            columns = {r["name"] for r in con.execute("PRAGMA table_info(cells)")}
            if "digest" not in columns:  # a store from before digests: every cell reruns
                con.execute("ALTER TABLE cells ADD COLUMN digest TEXT")

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.row_factory = sqlite3.Row
        return con

    def add(self, grid: str, cells: list[Cell], digests: list[str]) -> int:
        """Register cells with the digests of their recipes. A cell already present keeps
        its state if its digest is unchanged and goes back to pending (no attempts, no
        metrics) if not. Returns how many were reset that way."""
        now = time.time()
        with self._connect() as con:
            old = {r["key"]: r["digest"] for r in con.execute("SELECT key, digest FROM cells")}
            stale = [(d, c.key) for c, d in zip(cells, digests) if c.key in old and old[c.key] != d]
            _reset(con, [key for _, key in stale], now)
            con.executemany("UPDATE cells SET digest=? WHERE key=?", stale)
            con.executemany(
                "INSERT OR IGNORE INTO cells (key, grid, task, model, method, keep, seed, "
                "digest, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (c.key, grid, c.task, c.model, c.method, c.keep, c.seed, d, now)
                    for c, d in zip(cells, digests)
                ],
            )
        return len(stale)

    def reset(self, keys: list[str]) -> None:
        """Put these cells back to pending, without attempts or metrics."""
        with self._connect() as con:
            _reset(con, keys, time.time())

    def todo(self, cells: list[Cell], max_attempts: int) -> list[Cell]:
        """The cells not done that still have attempts left, in grid order."""
        with self._connect() as con:
            rows = {r["key"]: r for r in con.execute("SELECT key, status, attempts FROM cells")}
        return [
            c
            for c in cells
            if c.key in rows
            and rows[c.key]["status"] != "done"
            and rows[c.key]["attempts"] < max_attempts
        ]

    def start(self, key: str) -> None:
        with self._connect() as con:
            con.execute(
                "UPDATE cells SET status='running', attempts=attempts+1, updated=? WHERE key=?",
                (time.time(), key),
            )

    def finish(self, key: str, metrics: dict | None, error: str | None = None) -> None:
        status = "done" if error is None else "failed"
        with self._connect() as con:
            con.execute(
                "UPDATE cells SET status=?, metrics=?, error=?, updated=? WHERE key=?",
                (status, None if metrics is None else json.dumps(metrics), error, time.time(), key),
            )

    def rows(self, status: str | None = None) -> list[dict]:
        """Every cell as a dict (``metrics`` decoded), optionally only of one status."""
        query = "SELECT * FROM cells" + (" WHERE status=?" if status else "") + " ORDER BY rowid"
        with self._connect() as con:
            out = [dict(r) for r in con.execute(query, (status,) if status else ())]
        for r in out:
            r["metrics"] = json.loads(r["metrics"]) if r["metrics"] else None
        return out

    def import_cells(self, path: str | Path) -> int:
        """Add the cells of a file written by :meth:`export` (a published grid's
        ``cells.jsonl``, say) with their status, metrics and digests, so that a run on this
        store does only what the file lacks. Cells this store holds already keep their
        own state. Returns how many were added."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no cells file at {path}; write one with Store.export")
        with self._connect() as con:
            columns = [r["name"] for r in con.execute("PRAGMA table_info(cells)")]
            rows = []
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    missing = [c for c in columns if c not in row]
                except (json.JSONDecodeError, TypeError):
                    row, missing = None, ["a JSON object"]
                if missing:
                    raise ValueError(
                        f"{path}:{number}: not a cell as Store.export writes it "
                        f"(no {', '.join(missing)})"
                    )
                if row["metrics"] is not None:  # stored as JSON text, as finish() writes it
                    row["metrics"] = json.dumps(row["metrics"])
                rows.append(tuple(row[c] for c in columns))
            before = con.total_changes
            con.executemany(
                f"INSERT OR IGNORE INTO cells ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                rows,
            )
            return con.total_changes - before

    def export(self, path: str | Path) -> Path:
        """Every cell as JSON lines, for publishing next to a report."""
        from .._io import write_atomic

        return write_atomic(
            path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows())
        )
