"""The SQLite state store: a cache that can be deleted at any time (Git is the truth).

Holds what is expensive or impossible to recompute between runs: immutable registry data
addressed by digest, declined versions, the last decision per policy and an event log.
Stages that do I/O may use it; ``policy`` and ``update`` never do.

It stays small however long a daemon runs: events and the deploy loop's tracked updates are
pruned by age and count (webhook push times and silent agents' last reports by age), cached
blobs are bounded in bytes with the least recently used dropped first, and the file is vacuumed
when pruning freed a good part of it. Pruning runs at most once per ``prune_interval``
(remembered in the file, so short-lived processes share it) or after many writes.

Schema changes are append-only migrations in ``_MIGRATIONS``: add a new entry, never edit
an old one (the index is stored in ``PRAGMA user_version``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    """
    ALTER TABLE blobs ADD COLUMN used REAL NOT NULL DEFAULT 0;   -- last read or write (LRU)
    CREATE INDEX blobs_by_use ON blobs (used);
    CREATE INDEX events_by_time ON events (at);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
    """,
)

DAY = 86400.0
_TOUCH_EVERY = 3600.0  # a cache hit rewrites ``used`` at most this often (reads stay reads)
_PRUNE_AFTER_WRITES = 1000
_VACUUM_MIN_BYTES = 1 << 20  # and at least a quarter of the file free
_KEYS_PER_QUERY = 500  # within SQLite's limit on parameters (999 before 3.32)


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history and cache ``state.db`` keeps (``retention`` in the bot config)."""

    max_event_age: float = 30 * DAY  # seconds
    max_events: int = 10_000
    max_blob_bytes: int = 64 << 20
    prune_interval: float = 3600.0  # seconds


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
    CREATE TABLE IF NOT EXISTS registered (     -- the target tip each branch's commits were
        repository TEXT NOT NULL, branch TEXT NOT NULL,  -- registered up to
        tip TEXT NOT NULL, PRIMARY KEY (repository, branch)
    );
    -- what the deploy loop asks of the updates: a branch's latest ones, a policy's own (the
    -- expressions are those of the queries, or SQLite scans every row)
    CREATE INDEX IF NOT EXISTS updates_latest ON updates (
        json_extract(data, '$.repository'), json_extract(data, '$.branch'))
        WHERE IFNULL(json_extract(data, '$.latest'), 1);
    CREATE INDEX IF NOT EXISTS updates_by_policy ON updates (json_extract(data, '$.policy'));
"""


def encode_updates(updates: Iterable[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    """Tracked updates as :meth:`State.put_updates` stores them: (key, its data's JSON)."""
    return [(key, json.dumps(data, sort_keys=True)) for key, data in updates]


class State:
    """A thread-safe handle on ``state.db`` inside the state dir."""

    def __init__(self, path: Path, *, retention: Retention | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.retention = retention or Retention()
        self._clock = clock
        self._writes = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a cache: WAL stays consistent anyway
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self._deploy_loop_tables()
        self._maybe_prune()

    @classmethod
    def in_dir(cls, state_dir: Path, *, retention: Retention | None = None) -> State:
        return cls(state_dir / "state.db", retention=retention)

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
        now = self._clock()
        with self._lock:
            row = self._db.execute("SELECT data, used FROM blobs WHERE digest = ? AND kind = ?",
                                   (digest, kind)).fetchone()
            if row and row[1] < now - _TOUCH_EVERY:
                self._db.execute("UPDATE blobs SET used = ? WHERE digest = ? AND kind = ?",
                                 (now, digest, kind))
        return bytes(row[0]) if row else None

    def put_blob(self, digest: str, kind: str, data: bytes) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO blobs (digest, kind, data, used) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT DO UPDATE SET used = excluded.used",
                       (digest, kind, data, self._clock()))
        self._wrote()

    # --- declined versions ------------------------------------------------------------

    def decline(self, policy: str, image: str, tag: str, reason: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO declined VALUES (?, ?, ?, ?, ?)",
                       (policy, image, tag, reason, time.time()))

    def clear_decline(self, policy: str, image: str, tag: str) -> None:
        """Forget that ``tag`` was declined (a human cleared it on the dashboard)."""
        with self.transaction() as db:
            db.execute("DELETE FROM declined WHERE policy = ? AND image = ? AND tag = ?",
                       (policy, image, tag))

    def declined(self, policy: str, image: str) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT tag FROM declined WHERE policy = ? AND image = ?",
                                    (policy, image)).fetchall()
        return {row[0] for row in rows}

    def declines(self) -> list[tuple[str, str, str, str, float]]:
        """Every declined version: (policy, image, tag, reason, when), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT policy, image, tag, reason, at FROM declined "
                                    "ORDER BY at").fetchall()
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    # --- decisions and events ---------------------------------------------------------

    def record_decisions(self, decisions: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Each policy's latest decision, in one transaction (a cycle's 200 took 200)."""
        now = time.time()
        rows = [(policy, json.dumps(data, sort_keys=True), now) for policy, data in decisions]
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?)", rows)

    def decisions(self) -> dict[str, tuple[dict[str, Any], float]]:
        with self._lock:
            rows = self._db.execute("SELECT policy, data, at FROM decisions").fetchall()
        return {policy: (json.loads(data), at) for policy, data, at in rows}

    def log_event(self, kind: str, data: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO events (at, kind, data) VALUES (?, ?, ?)",
                       (self._clock(), kind, json.dumps(data, sort_keys=True)))
        self._wrote()

    def events(self, limit: int = 100) -> list[tuple[float, str, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute("SELECT at, kind, data FROM events ORDER BY id DESC "
                                    "LIMIT ?", (limit,)).fetchall()
        return [(at, kind, json.loads(data)) for at, kind, data in rows]

    # --- retention ----------------------------------------------------------------------

    def prune(self) -> dict[str, int]:
        """Apply the retention now: rows deleted per table, and whether the file was vacuumed."""
        now, keep = self._clock(), self.retention
        with self.transaction() as db:
            old = db.execute("DELETE FROM events WHERE at < ?", (now - keep.max_event_age,))
            extra = db.execute("DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY "
                               "id DESC LIMIT 1 OFFSET ?)", (keep.max_events,))
            # keep the most recently used blobs whose sizes add up to the cap, drop the rest
            blobs = db.execute(
                "DELETE FROM blobs WHERE rowid IN (SELECT rowid FROM (SELECT rowid, "
                "SUM(length(data)) OVER (ORDER BY used DESC, rowid DESC) AS kept FROM blobs) "
                "WHERE kept > ?)", (keep.max_blob_bytes,))
            # the deploy loop: tracked updates by age and count like events; pushes and the
            # last reports of agents that have been silent that long
            cutoff = now - keep.max_event_age
            updates = db.execute("DELETE FROM updates WHERE at < ?", (cutoff,)).rowcount
            updates += db.execute("DELETE FROM updates WHERE rowid <= (SELECT rowid FROM "
                                  "updates ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                                  (keep.max_events,)).rowcount
            pushes = db.execute("DELETE FROM pushes WHERE at < ?", (cutoff,)).rowcount
            agents = db.execute("DELETE FROM agent_reports WHERE at < ?", (cutoff,)).rowcount
            db.execute("INSERT OR REPLACE INTO meta VALUES ('pruned_at', ?)", (now,))
            counts = {"events": old.rowcount + extra.rowcount, "blobs": blobs.rowcount,
                      "updates": updates, "pushes": pushes, "agent_reports": agents}
        self._writes = 0
        return {**counts, "vacuumed": int(self._vacuum_if_worthwhile())}

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes >= _PRUNE_AFTER_WRITES:
            self.prune()
        else:
            self._maybe_prune()

    def _maybe_prune(self) -> None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'pruned_at'").fetchone()
        if row is None or self._clock() - row[0] >= self.retention.prune_interval:
            self.prune()

    def _vacuum_if_worthwhile(self) -> bool:
        with self._lock:
            size = self._db.execute("PRAGMA page_size").fetchone()[0]
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            if free * size < _VACUUM_MIN_BYTES or free * 4 < pages:
                return False
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True

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
        self.put_updates([(key, data)])

    def put_updates(self, updates: Iterable[tuple[str, dict[str, Any] | str]], *,
                    registered: tuple[str, str, str] | None = None) -> None:
        """:meth:`put_update` for each, in order, in one transaction (a commit of 200
        updates took 200); data given as text was encoded ahead (:func:`encode_updates`).
        ``registered``: (repository, branch, tip) the bot's commits on that branch are now
        registered up to (:meth:`registered`), in the same one."""
        now = self._clock()
        rows = [(key, data if isinstance(data, str) else json.dumps(data, sort_keys=True), now)
                for key, data in updates]
        with self.transaction() as db:
            db.executemany("INSERT INTO updates (key, data, at) VALUES (?, ?, ?) ON "
                           "CONFLICT(key) DO UPDATE SET data = excluded.data, at = excluded.at",
                           rows)
            if registered:
                db.execute("INSERT OR REPLACE INTO registered VALUES (?, ?, ?)", registered)

    def updates_at(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The tracked updates of these keys (however old), key → data; unknown keys are
        left out."""
        rows = self._updates_where("key", dict.fromkeys(keys))
        return {key: json.loads(data) for _, key, data in rows}

    def latest_updates(self, repository: str, branch: str) -> dict[str, dict[str, Any]]:
        """The tracked updates of ``repository`` and ``branch`` that are still the latest of
        their policy and image, however old, key → data (found through an index on the
        same JSON expressions: no other row is read or decoded)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, data FROM updates WHERE "
                "IFNULL(json_extract(data, '$.latest'), 1) AND "
                "json_extract(data, '$.repository') = ? AND json_extract(data, '$.branch') = ? "
                "ORDER BY rowid", (repository, branch)).fetchall()
        return {key: json.loads(data) for key, data in rows}

    def updates_of(self, policies: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Every tracked update of these policies (however many others came after), key →
        data, oldest first."""
        rows = self._updates_where("json_extract(data, '$.policy')", set(policies))
        return {key: json.loads(data) for _, key, data in rows}

    def _updates_where(self, column: str, values: Iterable[str]) -> list[tuple[int, str, str]]:
        """(rowid, key, data) of the updates whose ``column`` (an expression of this module,
        never input) is one of ``values``, oldest first; asked ``_KEYS_PER_QUERY`` values at
        a time."""
        wanted, found = list(values), []
        with self._lock:
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                part = wanted[start:start + _KEYS_PER_QUERY]
                found += self._db.execute(
                    f"SELECT rowid, key, data FROM updates WHERE {column} IN "
                    f"({','.join('?' * len(part))})", part).fetchall()
        return sorted(found)

    def registered(self, repository: str, branch: str) -> str | None:
        """The target tip up to which the bot's commits on ``branch`` were registered."""
        with self._lock:
            row = self._db.execute("SELECT tip FROM registered WHERE repository = ? AND "
                                   "branch = ?", (repository, branch)).fetchone()
        return str(row[0]) if row else None

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
