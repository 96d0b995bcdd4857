"""Engine, the status document: the state dir read into the one document behind the status
page, ``/api/status`` and ``image-bot status``, and peer daemons' documents merged into it.

Reads only the state DB and the agents' status files (never Git or a registry); the view
itself is :mod:`engine.pipelines` (pure). A peer (``daemon.peers``: sharded daemons) is
asked for its own part (``/api/status?local=1``, so peers never ask each other in turn)
with a short timeout; one that does not answer is listed as failing, never waited for. A
daemon may list itself (one config for all shards): merging is idempotent.
The document's shape is ``schema/status.schema.json``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from image_bot.config import models
from image_bot.engine import deployments, history, pipelines
from image_bot.publish import forges
from image_bot.publish import workspace as workspaces
from image_bot.state import State

VERSION = 1
EVENTS = 30
# each forge kind's API when ``forge.api_url`` is not set, and the path its web address
# lacks (as publish.github and publish.gitlab address them)
_FORGE_API = {"github": ("https://api.github.com", "/api/v3"), "gitlab": ("https://gitlab.com", "")}


def links(config: models.BotConfig) -> dict[str, pipelines.Links]:
    """Commit and source links of the repositories that name their forge."""
    found = {}
    for repo in config.repositories:
        if repo.forge is None:
            continue
        default, suffix = _FORGE_API[repo.forge.kind]
        web = forges.web_address(repo.forge.api_url, default, suffix=suffix)
        found[workspaces.redact(repo.url)] = pipelines.Links(
            f"{web}/{repo.forge.project}", repo.forge.kind)
    return found


def read(state: State, config: models.BotConfig, *, now: float) -> dict[str, Any]:
    """This process's document: pipelines and their summary, and the raw rows they come from
    (policies, agents as ``sync``, ``deployments``, ``events``)."""
    stale_after = config.agents.stale_after if config.agents else 3
    rows = history.statuses(state)
    agents = history.agents(state, config.state_dir, now=now, stale_after=stale_after)
    # the most recent updates, each policy's latest (its stage card), and every update of
    # an upstream stage (a promotion reads them as the engine does), however many other
    # updates came after
    updates = {**state.updates(), **state.updates_of(r.upstream for r in rows if r.upstream)}
    for repository, branch in {(r.repository, r.branch) for r in rows}:
        updates.update(state.latest_updates(repository, branch))
    found = pipelines.stages(rows, updates=updates.values(), agents=agents, now=now,
                             links=links(config))
    return {"version": VERSION, "generated_at": now, **pipelines.document(found),
            "peers": [], "policies": [r.to_dict() for r in rows],
            "sync": [a.to_dict() for a in agents], "deployments": deployments.recent(state),
            "events": history.recent_events(state, EVENTS)}


async def with_peers(document: Mapping[str, Any], peers: Sequence[str], *,
                     timeout: float) -> dict[str, Any]:
    """``document`` with each peer's part merged in, and ``peers`` saying who answered."""
    if not peers:
        return dict(document)
    answers = await asyncio.gather(*(_fetch(url, timeout) for url in peers))
    parts = [document, *(doc for _, doc in answers if doc is not None)]
    return {**document, **merge(parts),
            "peers": [_peer(url, doc, error) for url, (error, doc) in zip(peers, answers,
                                                                            strict=True)]}


def merge(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several daemons' documents as one: pipelines re-chained and recounted, agents by
    name (the newest pass), deployments and events newest first."""
    agents: dict[str, Mapping[str, Any]] = {}
    for part in parts:
        for agent in part.get("sync", []):
            seen = agents.get(agent["agent"])
            if seen is None or agent.get("finished_at", 0) > seen.get("finished_at", 0):
                agents[agent["agent"]] = agent
    policies = {(p["repository"], p["policy"]): p for part in reversed(parts)
                for p in part.get("policies", [])}
    # a daemon may be its own peer (one config for all shards): the same row counts once
    updates = {(u.get("repository"), u.get("commit"), u.get("policy"), u.get("image")): u
               for part in parts for u in part.get("deployments", [])}
    events = {json.dumps(e, sort_keys=True): e for part in parts for e in part.get("events", [])}
    return {**pipelines.merge(parts),
            "policies": sorted(policies.values(), key=lambda p: (p["repository"], p["policy"])),
            "sync": sorted(agents.values(), key=lambda a: a["agent"]),
            "deployments": sorted(updates.values(),
                                  key=lambda u: -(u.get("committed_at") or 0))[
                :deployments.SHOWN],
            "events": sorted(events.values(), key=lambda e: -e["at"])[:EVENTS]}


async def _fetch(url: str, timeout: float) -> tuple[str | None, dict[str, Any] | None]:
    """(why it failed, None) or (None, the peer's own document)."""
    address = url.rstrip("/") + "/api/status"
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            answer = await asyncio.wait_for(http.get(address, params={"local": "1"}),
                                            timeout)
    except (httpx.TimeoutException, TimeoutError):
        return f"no answer within {timeout:g} s", None
    except httpx.HTTPError as exc:
        return f"no answer ({type(exc).__name__})", None
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}", None
    try:
        data = answer.json()
    except ValueError:
        return "not a status document (not JSON)", None
    if not isinstance(data, dict) or not isinstance(data.get("pipelines"), list):
        return "not a status document (no pipelines)", None
    return None, data


def _peer(url: str, doc: Mapping[str, Any] | None, error: str | None) -> dict[str, Any]:
    return {"url": workspaces.redact(url), "ok": error is None, "error": error,
            "generated_at": doc.get("generated_at") if doc else None}
