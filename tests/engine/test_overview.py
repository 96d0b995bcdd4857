"""The status document's edges (``engine.overview``): forge links, and merging daemons'
documents (agents by their newest pass, events and deployments newest first, each once)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from image_bot.config import models
from image_bot.engine import overview
from image_bot.state import State


def test_links_follow_each_repositorys_forge() -> None:
    config = models.BotConfig.model_validate({"repositories": [
        {"url": "https://github.com/acme/config.git",
         "forge": {"kind": "github", "project": "acme/config"}},
        {"url": "https://ghe.example/acme/edge.git",
         "forge": {"kind": "github", "project": "acme/edge",
                   "api_url": "https://ghe.example/api/v3"}},
        {"url": "https://gitlab.example/group/infra.git",
         "forge": {"kind": "gitlab", "project": "group/infra",
                   "api_url": "https://gitlab.example"}},
        {"url": "https://git.example/plain.git"}]})
    found = {url: (link.commit("abc"), link.file("p.yaml", "main"))
             for url, link in overview.links(config).items()}
    assert found == {
        "https://github.com/acme/config.git": (
            "https://github.com/acme/config/commit/abc",
            "https://github.com/acme/config/blob/main/p.yaml"),
        "https://ghe.example/acme/edge.git": (
            "https://ghe.example/acme/edge/commit/abc",
            "https://ghe.example/acme/edge/blob/main/p.yaml"),
        "https://gitlab.example/group/infra.git": (
            "https://gitlab.example/group/infra/-/commit/abc",
            "https://gitlab.example/group/infra/-/blob/main/p.yaml")}


def _part(agent: str, finished_at: float, event_at: float) -> dict[str, Any]:
    return {"pipelines": [], "policies": [],
            "sync": [{"agent": agent, "finished_at": finished_at}],
            "deployments": [{"commit": f"c{event_at}", "committed_at": event_at}],
            "events": [{"at": event_at, "kind": "scan"}]}


def test_merged_documents_keep_each_agents_newest_pass_and_sort_newest_first() -> None:
    merged = overview.merge([_part("edge", 10.0, 1.0), _part("edge", 20.0, 3.0),
                             _part("core", 5.0, 2.0)])
    assert overview.merge([_part("edge", 10.0, 1.0), _part("edge", 10.0, 1.0)])["events"] == [
        {"at": 1.0, "kind": "scan"}]  # a daemon that is its own peer: each row once
    assert [(a["agent"], a["finished_at"]) for a in merged["sync"]] == [("core", 5.0),
                                                                        ("edge", 20.0)]
    assert [e["at"] for e in merged["events"]] == [3.0, 2.0, 1.0]
    assert [d["committed_at"] for d in merged["deployments"]] == [3.0, 2.0, 1.0]
    assert merged["summary"]["total"] == 0


def test_the_status_page_reads_latest_and_upstream_updates_however_old(
        tmp_path: Path) -> None:
    """Behind 600 newer updates (other repositories) a stage still shows its latest update,
    and the upstream's healthy one still makes its tag eligible on the page, as it does
    for the engine."""
    now = time.time()
    with State.in_dir(tmp_path) as state:
        state.record_decisions([(name, {
            "repository": "https://git/config.git", "policy": name, "image": "h.io/web",
            "status": "current", "current": "1.0.0", "upstream": upstream, "branch": "main",
            "healthy_for": 3600.0 if upstream else None})
            for name, upstream in (("staging", None), ("prod", "staging"))])
        state.put_updates([("r#c1#staging#h.io/web", {
            "repository": "https://git/config.git", "branch": "main", "commit": "c1",
            "policy": "staging", "image": "h.io/web", "tag": "1.1.0", "state": "deployed",
            "latest": True, "committed_at": now - 3 * 3600,
            "agents": {"stg": {"state": "deployed", "at": now - 2 * 3600}}}),
            ("r#c0#prod#h.io/web", {
                "repository": "https://git/config.git", "branch": "main", "commit": "c0",
                "policy": "prod", "image": "h.io/web", "tag": "1.0.0", "state": "deployed",
                "latest": True, "committed_at": now - 9 * 3600, "agents": {}})])
        state.put_updates((f"other#c{i}#p{i}#img", {
            "repository": "other", "branch": "main", "commit": f"c{i}", "policy": f"p{i}",
            "image": "img", "tag": "1", "state": "committed", "latest": True,
            "committed_at": now - 60, "agents": {}}) for i in range(600))
        document = overview.read(state, models.BotConfig.model_validate(
            {"repositories": [{"url": "https://git/config.git"}],
             "state_dir": str(tmp_path)}), now=now)
    stages = {s["policy"]: s for p in document["pipelines"] for s in p["stages"]}
    assert "eligible from staging: 1.1.0" in stages["prod"]["promotion"], stages["prod"]
    assert (stages["prod"]["update"] or {}).get("commit") == "c0"  # not an upstream
