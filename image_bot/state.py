"""The SQLite state store: a cache that can be deleted at any time (Git is the truth).

Holds what is expensive or impossible to recompute between runs: immutable registry data
addressed by digest (cached forever), declined versions, the last decision per policy and
an event log. Stages that do I/O may use it; ``policy`` and ``update`` never do.

Schema changes are append-only migrations in ``_MIGRATIONS``: add a new entry, never edit
an old one (the index is stored in ``PRAGMA user_version``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE blobs (          -- immutable content addressed by digest: cache forever
        digest TEXT NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (digest, kind)
    );
    CREATE TABLE declined (       -- versions a human refused (closed PR, rollback)
        policy TEXT NOT NULL, image TEXT NOT NULL, tag TEXT NOT NULL,
        reason TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (policy, image, tag)
    );
    CREATE TABLE decisions (      -- the last decision per policy, for status
        policy TEXT PRIMARY KEY, data TEXT NOT NULL, at REAL NOT NULL
    );
    CREATE TABLE events (         -- append-only event log
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
        data TEXT NOT NULL
    );
    """,
)


_DEPLOY_LOOP_TABLES = """
    CREATE TABLE IF NOT EXISTS agent_reports (  -- the last report each sync agent posted
        agent TEXT PRIMARY KEY, data TEXT NOT NULL, interval REAL NOT NULL, at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS pushes (         -- when a registry webhook announced a tag
        image TEXT NOT NULL, tag TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (image, tag)
    );
    CREATE TABLE IF NOT EXISTS updates (        -- bot commits followed to the agents
        key TEXT PRIMARY KEY, data TEXT NOT NULL, at REAL NOT NULL
    );
"""


class State:
    """A thread-safe handle on ``state.db`` inside the state dir."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self._deploy_loop_tables()

    @classmethod
    def in_dir(cls, state_dir: Path) -> State:
        return cls(state_dir / "state.db")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- immutable blobs --------------------------------------------------------------

    def get_blob(self, digest: str, kind: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM blobs WHERE digest = ? AND kind = ?",
                                   (digest, kind)).fetchone()
        return bytes(row[0]) if row else None

    def put_blob(self, digest: str, kind: str, data: bytes) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO blobs (digest, kind, data) VALUES (?, ?, ?)",
                       (digest, kind, data))

    # --- declined versions ------------------------------------------------------------

    def decline(self, policy: str, image: str, tag: str, reason: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO declined VALUES (?, ?, ?, ?, ?)",
                       (policy, image, tag, reason, time.time()))

    def declined(self, policy: str, image: str) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT tag FROM declined WHERE policy = ? AND image = ?",
                                    (policy, image)).fetchall()
        return {row[0] for row in rows}

    # --- decisions and events ---------------------------------------------------------

    def record_decision(self, policy: str, data: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?)",
                       (policy, json.dumps(data, sort_keys=True), time.time()))

    def decisions(self) -> dict[str, tuple[dict[str, Any], float]]:
        with self._lock:
            rows = self._db.execute("SELECT policy, data, at FROM decisions").fetchall()
        return {policy: (json.loads(data), at) for policy, data, at in rows}

    def log_event(self, kind: str, data: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO events (at, kind, data) VALUES (?, ?, ?)",
                       (time.time(), kind, json.dumps(data, sort_keys=True)))

    def events(self, limit: int = 100) -> list[tuple[float, str, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute("SELECT at, kind, data FROM events ORDER BY id DESC "
                                    "LIMIT ?", (limit,)).fetchall()
        return [(at, kind, json.loads(data)) for at, kind, data in rows]

    # --- the deploy loop: agent reports, image pushes, updates and their deployments -----
    # (created if missing, outside the numbered migrations: the tables are a cache too)

    def _deploy_loop_tables(self) -> None:
        with self._lock:
            self._db.executescript(_DEPLOY_LOOP_TABLES)

    def put_agent_report(self, agent: str, data: dict[str, Any], *, interval: float,
                         at: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO agent_reports VALUES (?, ?, ?, ?)",
                       (agent, json.dumps(data, sort_keys=True), interval, at))

    def agent_reports(self) -> list[tuple[str, dict[str, Any], float, float]]:
        """(agent, report, interval, received at) of every agent that reported, by name."""
        with self._lock:
            rows = self._db.execute("SELECT agent, data, interval, at FROM agent_reports "
                                    "ORDER BY agent").fetchall()
        return [(agent, json.loads(data), interval, at) for agent, data, interval, at in rows]

    def note_push(self, image: str, tag: str, at: float) -> None:
        """The first time a registry said ``image:tag`` was pushed (webhooks)."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO pushes VALUES (?, ?, ?)", (image, tag, at))

    def pushed_at(self, image: str, tag: str) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT at FROM pushes WHERE image = ? AND tag = ?",
                                   (image, tag)).fetchone()
        return float(row[0]) if row else None

    def put_update(self, key: str, data: dict[str, Any]) -> None:
        """Insert or replace one tracked update (``key``: repository, commit, policy, image)."""
        with self.transaction() as db:
            db.execute("INSERT INTO updates (key, data, at) VALUES (?, ?, ?) ON CONFLICT(key) "
                       "DO UPDATE SET data = excluded.data, at = excluded.at",
                       (key, json.dumps(data, sort_keys=True), time.time()))

    def updates(self, limit: int = 500) -> dict[str, dict[str, Any]]:
        """The most recent tracked updates, key → data, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT key, data FROM (SELECT key, data, rowid FROM "
                                    "updates ORDER BY rowid DESC LIMIT ?) ORDER BY rowid",
                                    (limit,)).fetchall()
        return {key: json.loads(data) for key, data in rows}

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for index, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {index}; COMMIT;")
