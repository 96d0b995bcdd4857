"""Engine, deploy loop as shown: each tracked update with its agents and timings (read only).

``engine.tracking`` writes the updates into the state DB; this renders them for
``/api/status``, the status page and ``image-bot status``. Nothing here touches Git.
"""

from __future__ import annotations

from typing import Any

from image_bot.state import State

SHOWN = 20


def recent(state: State, limit: int = SHOWN) -> list[dict[str, Any]]:
    """The newest tracked updates first, with ``push_to_commit`` and, per agent,
    ``commit_to_deployed`` in seconds (None when unknown)."""
    rows: list[dict[str, Any]] = []
    for data in reversed(list(state.updates(limit * 5).values())):
        if data.get("state") == "superseded" and len(rows) >= limit // 2:
            continue
        pushed, committed = data.get("pushed_at"), data.get("committed_at")
        agents = {}
        for name, seen in sorted(data.get("agents", {}).items()):
            at = seen.get("at")
            agents[name] = {**seen, "commit_to_deployed": round(at - committed, 3)
                            if seen.get("state") == "deployed" and at and committed else None}
        rows.append({
            "repository": data["repository"], "policy": data["policy"],
            "image": data["image"], "old_tag": data.get("old_tag"), "tag": data["tag"],
            "commit": data["commit"], "files": data.get("files", []),
            "state": data["state"], "reason": data.get("reason", ""),
            "pushed_at": pushed, "committed_at": committed,
            "push_to_commit": round(committed - pushed, 3) if pushed and committed else None,
            "agents": agents, "rollback": data.get("rollback"),
        })
        if len(rows) >= limit:
            break
    return rows
