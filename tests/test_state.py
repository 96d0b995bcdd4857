"""The SQLite state store: migrations, blobs, declined versions, decisions, events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from image_bot.state import State


def test_round_trips_and_survives_reopen(tmp_path: Path) -> None:
    with State.in_dir(tmp_path) as state:
        state.put_blob("sha256:abc", "manifest", b"{}")
        state.put_blob("sha256:abc", "manifest", b"ignored: immutable")
        state.decline("web", "ghcr.io/a/web", "1.2.0", "PR #3 closed")
        state.record_decision("web", {"tag": "1.1.0"})
        state.log_event("scan", {"policy": "web"})
        state.log_event("commit", {"sha": "123"})
    with State.in_dir(tmp_path) as state:
        assert state.get_blob("sha256:abc", "manifest") == b"{}"
        assert state.get_blob("sha256:abc", "config") is None
        assert state.declined("web", "ghcr.io/a/web") == {"1.2.0"}
        assert state.declined("api", "ghcr.io/a/web") == set()
        assert state.decisions()["web"][0] == {"tag": "1.1.0"}
        assert [kind for _, kind, _ in state.events()] == ["commit", "scan"]
    version = sqlite3.connect(tmp_path / "state.db").execute("PRAGMA user_version").fetchone()
    assert version == (1,)
