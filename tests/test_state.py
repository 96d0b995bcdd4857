"""The SQLite state store: migrations, blobs, declined versions, decisions, events."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from image_bot.config import models
from image_bot.engine import history
from image_bot.state import Retention, State


def test_round_trips_and_survives_reopen(tmp_path: Path) -> None:
    with State.in_dir(tmp_path) as state:
        state.put_blob("sha256:abc", "manifest", b"{}")
        state.put_blob("sha256:abc", "manifest", b"ignored: immutable")
        state.decline("web", "ghcr.io/a/web", "1.2.0", "PR #3 closed")
        state.record_decisions([("web", {"tag": "1.1.0"})])
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
    assert version == (2,)


def test_a_cycles_decisions_are_written_in_one_transaction(tmp_path: Path) -> None:
    with State.in_dir(tmp_path) as state:
        state.record_decisions([("web", {"tag": "1.0.0"})])
        statements: list[str] = []
        state._db.set_trace_callback(statements.append)
        state.record_decisions([("web", {"tag": "1.1.0"}), ("api", {"tag": "2.0.0"})])
        state._db.set_trace_callback(None)
        assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == [
            "BEGIN IMMEDIATE", "COMMIT"]
        assert {k: v[0] for k, v in state.decisions().items()} == {
            "web": {"tag": "1.1.0"}, "api": {"tag": "2.0.0"}}


def test_a_commits_updates_are_written_in_one_transaction_in_order(tmp_path: Path) -> None:
    with State.in_dir(tmp_path) as state:
        state.put_update("repo#c1#web#img", {"state": "committed"})
        statements: list[str] = []
        state._db.set_trace_callback(statements.append)
        state.put_updates([("repo#c2#web#img", {"state": "committed"}),
                           ("repo#c1#web#img", {"state": "superseded"}),
                           ("repo#c2#api#img", {"state": "committed"})])
        state._db.set_trace_callback(None)
        assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == [
            "BEGIN IMMEDIATE", "COMMIT"]
        # replaced in its place (oldest first), new ones after it in the order given
        assert state.updates() == {"repo#c1#web#img": {"state": "superseded"},
                                   "repo#c2#web#img": {"state": "committed"},
                                   "repo#c2#api#img": {"state": "committed"}}
        assert list(state.updates()) == ["repo#c1#web#img", "repo#c2#web#img",
                                         "repo#c2#api#img"]


def test_updates_are_found_by_key_however_many_came_after(tmp_path: Path) -> None:
    with State.in_dir(tmp_path) as state:
        state.put_updates((f"repo#c{i}#web#img", {"n": i}) for i in range(1200))
        assert "repo#c0#web#img" not in state.updates()  # the most recent 500 only
        wanted = [f"repo#c{i}#web#img" for i in (0, 1, 1199)] + ["repo#nope#web#img"]
        # more keys than one query takes (its parameters are bounded), each asked once
        asked = [f"repo#c{i}#web#img" for i in range(1100)] + wanted
        found = state.updates_at(asked)
        assert len(found) == 1100 + 1
        assert {k: found[k] for k in wanted if k in found} == {
            "repo#c0#web#img": {"n": 0}, "repo#c1#web#img": {"n": 1},
            "repo#c1199#web#img": {"n": 1199}}
        assert state.updates_at([]) == {}


def test_the_latest_updates_of_a_branch_and_the_tip_it_was_registered_up_to(
        tmp_path: Path) -> None:
    with State.in_dir(tmp_path) as state:
        def update(repository: str, branch: str, **more: Any) -> dict[str, Any]:
            return {"repository": repository, "branch": branch, "policy": "p", **more}
        state.put_updates([("a#1", update("repo", "main", latest=False)),
                           ("a#2", update("repo", "main", latest=True)),
                           ("a#3", update("repo", "main")),  # before `latest` was written
                           ("b#1", update("repo", "staging", latest=True)),
                           ("c#1", update("other", "main", latest=True))])
        state.put_updates((f"x#{i}", update("x", "main", latest=True)) for i in range(600))
        assert list(state.latest_updates("repo", "main")) == ["a#2", "a#3"]
        assert list(state.latest_updates("repo", "staging")) == ["b#1"]
        assert state.registered("repo", "main") is None
        state.put_updates([("a#4", update("repo", "main", latest=True))],
                          registered=("repo", "main", "c0ffee"))
        assert state.registered("repo", "main") == "c0ffee"
        assert state.registered("repo", "staging") is None
        assert "a#4" in state.latest_updates("repo", "main")


def test_every_update_of_some_policies_oldest_first(tmp_path: Path) -> None:
    with State.in_dir(tmp_path) as state:
        state.put_updates([("r#1#web#i", {"policy": "web", "n": 1}),
                           ("r#1#api#i", {"policy": "api", "n": 1})])
        state.put_updates((f"r#{i}#p{i}#i", {"policy": f"p{i}"}) for i in range(1200))
        state.put_updates([("r#2#web#i", {"policy": "web", "n": 2})])
        assert state.updates_of(["web"]) == {"r#1#web#i": {"policy": "web", "n": 1},
                                             "r#2#web#i": {"policy": "web", "n": 2}}
        many = state.updates_of(["web", *(f"p{i}" for i in range(1100))])  # several queries
        assert len(many) == 2 + 1100
        keys = list(many)
        assert (keys[0], keys[-1]) == ("r#1#web#i", "r#2#web#i")
        assert state.updates_of([]) == {}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


DAY = 86400.0


def _state(path: Path, clock: Clock, **retention: Any) -> State:
    return State(path / "state.db", retention=Retention(**retention), clock=clock)


def test_events_are_pruned_by_age_and_by_count(tmp_path: Path) -> None:
    clock = Clock()
    with _state(tmp_path, clock, max_event_age=30 * DAY, max_events=100) as state:
        for day in range(40):
            state.log_event("scan", {"day": day})
            clock.now += DAY
        assert [data["day"] for _, _, data in state.events(1000)] == list(range(39, 8, -1))
        for number in range(250):
            state.log_event("burst", {"n": number})
        clock.now += 3600
        state.log_event("last", {})
        kinds = [kind for _, kind, _ in state.events(1000)]
        assert len(kinds) == 100 and kinds[0] == "last" and set(kinds[1:]) == {"burst"}


def test_cached_blobs_are_bounded_and_the_least_recently_used_go_first(tmp_path: Path) -> None:
    clock = Clock()
    with _state(tmp_path, clock, max_blob_bytes=10 << 20) as state:
        for number in range(30):
            state.put_blob(f"sha256:{number}", "manifest", bytes([number]) * (1 << 20))
            clock.now += 2 * 3600
            assert state.get_blob("sha256:0", "manifest") is not None  # in use every time
        state.prune()
        kept = [n for n in range(30) if state.get_blob(f"sha256:{n}", "manifest") is not None]
    assert kept == [0, *range(21, 30)]  # 10 MiB: the one in use and the 9 newest


def test_a_daemon_running_for_months_keeps_a_small_state_file(tmp_path: Path) -> None:
    """Three months of a busy daemon: 150 events and 20 new 64 KiB blobs a day."""
    clock = Clock()
    with _state(tmp_path, clock, max_event_age=7 * DAY, max_events=1000,
                max_blob_bytes=4 << 20) as state:
        for day in range(90):
            for number in range(150):
                state.log_event("scan", {"day": day, "n": number, "pad": "x" * 200})
                clock.now += 576
            for number in range(20):
                state.put_blob(f"sha256:{day}-{number}", "config", b"c" * (64 << 10))
        state.prune()
        events = state.events(5000)
    assert len(events) == 1000
    total = sum(p.stat().st_size for p in tmp_path.iterdir() if p.name.startswith("state.db"))
    assert total < 12 << 20, total  # 4 MiB of blobs, 1000 events, sqlite's own overhead


def test_vacuum_runs_when_pruning_freed_a_good_part_of_the_file(tmp_path: Path) -> None:
    clock = Clock()
    with _state(tmp_path, clock, max_blob_bytes=1 << 20) as state:
        with state.transaction() as db:  # a state.db from before retention: 8 MiB of blobs
            db.executemany("INSERT INTO blobs (digest, kind, data, used) VALUES (?, ?, ?, ?)",
                           [(f"sha256:{n}", "config", b"c" * (1 << 20), clock.now)
                            for n in range(8)])
        before = (tmp_path / "state.db").stat().st_size + (tmp_path / "state.db-wal").stat(
            ).st_size
        assert state.prune() == {"events": 0, "blobs": 7, "updates": 0, "pushes": 0,
                                 "agent_reports": 0, "vacuumed": 1}
        assert state.prune()["vacuumed"] == 0  # nothing left to gain
    after = sum(p.stat().st_size for p in tmp_path.iterdir() if p.name.startswith("state.db"))
    assert before > 8 << 20 and after < 3 << 20


def test_pruning_is_remembered_across_processes(tmp_path: Path) -> None:
    clock = Clock()
    with _state(tmp_path, clock, max_event_age=DAY, max_events=100) as state:
        state.log_event("old", {})
    clock.now += 2 * DAY  # a cron job that runs every 2 days: pruned when it opens
    with _state(tmp_path, clock, max_event_age=DAY, max_events=100) as state:
        assert state.events() == []


def test_retention_comes_from_the_bot_config(tmp_path: Path) -> None:
    config = models.BotConfig.model_validate({
        "repositories": [{"url": "https://git.example/c.git"}], "state_dir": str(tmp_path),
        "retention": {"max_event_age": "7d", "max_events": 500, "max_blob_bytes": 1 << 22}})
    with history.open_state(config) as state:
        assert state.retention == Retention(max_event_age=7 * DAY, max_events=500,
                                            max_blob_bytes=1 << 22)
    default = models.BotConfig.model_validate({"repositories": [{"url": "x"}]}).retention
    assert (default.max_event_age_seconds, default.max_events, default.max_blob_bytes) == (
        30 * DAY, 10_000, 64 << 20)


def test_the_deploy_loop_tables_are_pruned_like_events(tmp_path: Path) -> None:
    clock = Clock()
    with _state(tmp_path, clock, max_event_age=30 * DAY, max_events=20) as state:
        for day in range(40):
            state.put_update(f"repo#c{day}#web#img", {"day": day})
            state.note_push("img", f"1.{day}.0", clock.now)
            state.put_agent_report(f"agent-{day}", {"day": day}, interval=60, at=clock.now)
            clock.now += DAY
        done = state.prune()
        assert (done["updates"], done["pushes"], done["agent_reports"]) == (20, 10, 10)
        assert [u["day"] for u in state.updates().values()] == list(range(20, 40))
        assert state.pushed_at("img", "1.9.0") is None
        assert state.pushed_at("img", "1.10.0") is not None
        assert [a for a, *_ in state.agent_reports()][:1] == ["agent-10"]


def test_the_deploy_loops_questions_are_answered_from_indexes(tmp_path: Path) -> None:
    """The latest updates of a branch and a policy's updates are searched, not scanned for
    (a state holds up to ``max_events`` updates, each a JSON text)."""
    with State.in_dir(tmp_path) as state:
        ran: list[str] = []
        state._db.set_trace_callback(ran.append)  # the statements, their values in place
        state.latest_updates("r", "main")
        state.updates_of(["a"])
        state._db.set_trace_callback(None)
        selects = [s for s in ran if s.startswith("SELECT")]
        assert len(selects) == 2
        for statement in selects:
            [(*_, plan)] = state._db.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
            assert plan.startswith("SEARCH updates USING INDEX"), (statement, plan)
