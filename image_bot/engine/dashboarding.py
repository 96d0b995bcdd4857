"""The engine's side of the dashboard issue: what a scan read from it and what it writes back.

Called by ``engine.cycle`` only. A scan of some policies (the daemon's due policies, a
webhook) writes their lines from its report and every other policy's from its last recorded
decision in the state DB, so the issue always covers the whole repository; boxes ticked for
policies this scan did not cover stay ticked. Rendering and forge calls are
``publish.dashboard``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from image_bot.config import loading
from image_bot.engine.context import Engine
from image_bot.engine.report import PolicyOutcome, RepositoryReport
from image_bot.publish import dashboard, forges, proposing

WINDOW = "waiting for window: "


def read(engine: Engine, forge: forges.Forge,
         policies: Sequence[loading.LoadedPolicy]) -> dashboard.Board:
    """The dashboard's ticked boxes; cleared declines of ``policies`` are forgotten here
    (and their closed PR marked, so it is not read as a "no" again)."""
    board = dashboard.read(forge)
    images = {p.policy.name: p.policy.spec.image_ref.name for p in policies}
    for policy, image, tag, reason, _ in engine.state.declines():
        if (policy, tag) not in board.cleared or images.get(policy) != image:
            continue
        number = closed_pr(reason)
        if number is not None:
            proposing.clear_decline(forge, number)
            engine.state.clear_decline(policy, image, tag)
    return board


def closed_pr(reason: str) -> int | None:
    """The PR number of a decline recorded by ``proposing.declined``, else None (a rollback
    in Git is undone in Git)."""
    head, _, rest = reason.partition(" closed without merging")
    number = head.removeprefix("PR #")
    return int(number) if head.startswith("PR #") and number.isdigit() and not rest else None


def write(engine: Engine, forge: forges.Forge, board: dashboard.Board,
          report: RepositoryReport, policies: Sequence[loading.LoadedPolicy],
          covered: set[str]) -> str:
    """Bring the issue up to date: this scan's ``covered`` policies from ``report``, the
    others from the state DB. Returns what was done."""
    entries = _entries(engine, report, policies, covered, board)
    body = dashboard.render(report.repository, report.branch, entries)
    return dashboard.write(forge, board, body)


def _entries(engine: Engine, report: RepositoryReport, policies: Sequence[loading.LoadedPolicy],
             covered: set[str], board: dashboard.Board) -> list[dashboard.Entry]:
    prs = {policy: pr.url or f"#{pr.number}" for pr in report.pull_requests
           for policy in pr.policies if pr.is_open}
    rows: list[Mapping[str, Any]] = [_row(o, prs.get(o.policy)) for o in report.outcomes]
    names = {p.policy.name for p in policies}
    decisions = engine.state.decisions()
    for name in sorted(names - covered):
        data = decisions.get(f"{report.repository}#{name}", ({}, 0.0))[0]
        if data:
            rows.append(data)
    entries = []
    for row in rows:
        policy, status = str(row.get("policy", "?")), row.get("status")
        move = f"`{row.get('current') or '?'}` → `{row.get('latest') or '?'}`"
        link = _link(row.get("pull_request"))
        message = str(row.get("message") or "")
        if status == "waiting":
            window = message.rsplit(WINDOW, 1)[-1]
            ticked = policy in board.approved and policy not in covered
            entries.append(dashboard.Entry("waiting", policy, f"{move}, window: {window}",
                                           ticked=ticked))
        elif status == "proposed" and link:
            entries.append(dashboard.Entry("open", policy, f"{link} {move}"))
        elif status == "blocked":
            entries.append(dashboard.Entry("held", policy, f"{link} {move}: it has commits "
                                           f"by someone else".strip()))
        elif status == "failed":
            text = " ".join(message.split()).replace("`", "'")[:300]
            entries.append(dashboard.Entry("failing", policy, f"`{text}`"))
    images = {(p.policy.name, p.policy.spec.image_ref.name) for p in policies}
    for policy, image, tag, reason, _ in engine.state.declines():
        if (policy, image) in images:
            clearable = tag if closed_pr(reason) is not None else None
            entries.append(dashboard.Entry("declined", policy, f"`{tag}`: {reason}",
                                           clearable, ticked=(policy, tag) in board.cleared))
    return entries


def _row(outcome: PolicyOutcome, pull_request: str | None) -> dict[str, Any]:
    return {"policy": outcome.policy, "status": outcome.status, "current": outcome.current,
            "latest": outcome.latest, "message": outcome.message, "pull_request": pull_request}


def _link(pull_request: object) -> str:
    text = str(pull_request or "")
    if not text:
        return ""
    number = text.rsplit("/", 1)[-1].lstrip("#")
    return f"[#{number}]({text})" if text.startswith(("http://", "https://")) else text
