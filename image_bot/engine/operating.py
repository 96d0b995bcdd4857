"""Operator commands, acting through Git: promote, rollback, named runs, declined versions.

Each one runs the one engine path (``engine.cycle.run_repository``) for the repository that
holds the policy, selecting that policy alone, with an :class:`~image_bot.engine.overrides.
Override` in place of its choice where a person chose the tag. Nothing here talks to a
running system: the change is a commit or a pull request, and the agents apply it.
Who asked and why is written by ``Engine.record_operation`` (the event log) and, where a
commit is made, in its trailers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from image_bot.config import models
from image_bot.engine import cycle, selecting, tracking
from image_bot.engine.context import Engine
from image_bot.engine.overrides import Override
from image_bot.engine.report import CycleReport, PolicyOutcome, RepositoryReport
from image_bot.errors import ImageBotError, UsageError
from image_bot.publish import workspace as workspaces

PUBLISHED = ("updated", "proposed")  # the operator's tag went to Git (or a PR)


@dataclass(frozen=True, slots=True)
class _Opened:
    """A repository fetched once for an operator command: its policies, or why not."""

    repo: models.RepositoryConfig
    checkout: cycle.Checkout | None = None
    error: ImageBotError | None = None

    @property
    def names(self) -> set[str]:
        return {p.policy.name for p in self.checkout.policies.policies} if self.checkout \
            else set()


@dataclass(frozen=True, slots=True)
class Operation:
    """What an operator command did: the cycle report, and its outcome for the policy."""

    override: Override
    report: CycleReport
    declined: tuple[str, ...] = ()  # tags the rollback declined

    @property
    def outcome(self) -> PolicyOutcome | None:
        return next((o for r in self.report.repositories for o in r.outcomes
                     if o.policy == self.override.policy), None)

    def to_dict(self) -> dict[str, Any]:
        o = self.override
        outcome = self.outcome
        return {**self.report.to_dict(), "operation": {
            "action": o.action, "policy": o.policy, "tag": o.tag, "actor": o.actor,
            "reason": o.reason, "status": outcome.status if outcome else None,
            "declined": list(self.declined)}}


# --- run --once --policy NAME ---------------------------------------------------------------


async def run_named(engine: Engine, selection: selecting.Selection, *,
                    dry_run: bool = False) -> CycleReport:
    """Run only the policies ``selection`` names, now; a name no repository defines is a
    :class:`UsageError` listing the known ones (raised before anything is published)."""
    names = set(selection.policies or ())
    before = engine.client.requests
    opened = await _open_all(engine)
    _require(names, opened)
    reports = [await _run(engine, o, selection=selection, dry_run=dry_run)
               for o in opened if o.error or o.names & names]
    return CycleReport(tuple(reports), dry_run=dry_run,
                       registry_requests=engine.client.requests - before)


# --- promote and rollback -------------------------------------------------------------------


async def promote(engine: Engine, override: Override, *, dry_run: bool = False) -> Operation:
    """Write the operator's tag for one policy (commit or PR, as the policy publishes)."""
    [opened] = await _holding(engine, override.policy)
    return await _operate(engine, opened, override, dry_run=dry_run)


async def rollback(engine: Engine, policy: str, *, to: str | None, actor: str, reason: str,
                   dry_run: bool = False) -> Operation:
    """Write ``to`` (default: the tag before the policy's last tracked update) and decline
    the tag it replaces."""
    [opened] = await _holding(engine, policy)
    if to is None:
        to = await _previous_tag(engine, opened, policy)
    override = Override.of("rollback", policy, to, actor=actor, reason=reason)
    return await _operate(engine, opened, override, dry_run=dry_run)


async def _operate(engine: Engine, opened: _Opened, override: Override, *,
                   dry_run: bool) -> Operation:
    started, before = time.monotonic(), engine.client.requests
    selection = selecting.Selection(policies=frozenset([override.policy]))
    report = await _run(engine, opened, selection=selection, dry_run=dry_run,
                        overrides={override.policy: override})
    cycle_report = CycleReport((report,), dry_run=dry_run,
                               registry_requests=engine.client.requests - before)
    operation = Operation(override, cycle_report)
    outcome = operation.outcome
    if not dry_run:
        if outcome is not None and outcome.status in PUBLISHED:
            operation = _settled(engine, operation, outcome)
        engine.record(cycle_report, trigger=override.action,
                      seconds=time.monotonic() - started)
        engine.record_operation(override.action, {
            "repository": report.repository, "policy": override.policy, "tag": override.tag,
            "actor": override.actor, "reason": override.reason,
            "status": outcome.status if outcome else "failed",
            "commits": list(report.commits),
            "pull_requests": [p.url or p.branch for p in report.pull_requests],
            "declined": list(operation.declined)})
    if outcome is not None and isinstance(outcome.error, UsageError):
        raise outcome.error  # an unknown tag: nothing was published
    return operation


def _settled(engine: Engine, operation: Operation, outcome: PolicyOutcome) -> Operation:
    """After publishing: a rollback declines the tags it replaced; a promote takes back an
    earlier "no" to the tag it wrote."""
    o = operation.override
    image = outcome.image or ""
    if o.action == "promote":
        engine.state.clear_decline(o.policy, image, o.tag)
        return operation
    replaced = tuple(dict.fromkeys(c.old_tag for c in outcome.changes
                                   if c.old_tag and c.old_tag != o.tag))
    for tag in replaced:  # also read back from the commit's trailers by engine.tracking
        engine.state.decline(o.policy, image, tag, o.decline_reason)
    return Operation(o, operation.report, declined=replaced)


async def _previous_tag(engine: Engine, opened: _Opened, policy: str) -> str:
    """The tag before the policy's last update the deploy loop tracks (its commits read
    back from Git first), skipping tags already declined or written now."""
    assert opened.checkout is not None
    repository = workspaces.redact(opened.repo.url)
    await tracking.register(engine, opened.repo, opened.checkout.workspace,
                            opened.checkout.policies)
    updates = [u for u in engine.state.updates_of([policy]).values()
               if u.get("repository") == repository]
    if updates:
        newest = updates[-1]
        declined = engine.state.declined(policy, newest["image"])
        for update in reversed(updates):
            old = update.get("old_tag")
            if old and old != newest["tag"] and old not in declined:
                return str(old)
    raise UsageError(f"rollback {policy}: no earlier tag is known from the bot's commits "
                     f"in {repository}; name one with --to TAG")


# --- declined versions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeclinedVersion:
    """A version a policy will not propose again (a PR closed unmerged, a rollback)."""

    policy: str
    image: str
    tag: str
    reason: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "image": self.image, "tag": self.tag,
                "reason": self.reason, "at": self.at}


def declines(engine: Engine, policy: str | None = None) -> list[DeclinedVersion]:
    """Every declined version (of ``policy``), oldest first."""
    return [DeclinedVersion(*row) for row in engine.state.declines()
            if policy is None or row[0] == policy]


def clear_declines(engine: Engine, policy: str, tag: str | None, *, actor: str,
                   reason: str) -> list[DeclinedVersion]:
    """Forget the policy's declined ``tag`` (None: all of them): it may be proposed again.
    A ``tag`` that is not declined is a :class:`UsageError` listing those that are."""
    found = declines(engine, policy)
    chosen = [d for d in found if tag is None or d.tag == tag]
    if tag is not None and not chosen:
        listed = ", ".join(d.tag for d in found) or "none"
        raise UsageError(f"{tag} is not declined for policy {policy!r} (declined: {listed})")
    for d in chosen:
        engine.state.clear_decline(d.policy, d.image, d.tag)
    if chosen:
        engine.record_operation("decline-cleared", {
            "policy": policy, "tags": [d.tag for d in chosen], "actor": actor,
            "reason": reason})
    return chosen


# --- finding the repository of a policy -------------------------------------------------------


async def _open_all(engine: Engine) -> list[_Opened]:
    opened = []
    for repo in engine.config.repositories:
        try:
            opened.append(_Opened(repo, await cycle.open_repository(engine, repo)))
        except ImageBotError as exc:
            opened.append(_Opened(repo, error=exc))
    return opened


async def _holding(engine: Engine, policy: str) -> list[_Opened]:
    """The one repository defining ``policy`` (a :class:`UsageError` when none or several)."""
    opened = await _open_all(engine)
    _require({policy}, opened)
    holding = [o for o in opened if policy in o.names]
    if len(holding) > 1:
        where = ", ".join(workspaces.redact(o.repo.url) for o in holding)
        raise UsageError(f"policy {policy!r} is defined in several repositories: {where}")
    return holding


def _require(names: set[str], opened: list[_Opened]) -> None:
    """Every name is a policy of some repository; a repository that could not be read
    explains a missing one (its error), otherwise the known names are listed."""
    known = set().union(*(o.names for o in opened))
    unknown = names - known
    if not unknown:
        return
    failed = [o.error for o in opened if o.error is not None]
    if failed:
        raise failed[0]
    raise UsageError(f"no policy named {', '.join(sorted(unknown))}; known policies: "
                     f"{', '.join(sorted(known)) or 'none'}")


async def _run(engine: Engine, opened: _Opened, *, selection: selecting.Selection,
               dry_run: bool, overrides: dict[str, Override] | None = None) -> RepositoryReport:
    if opened.error is not None:
        return RepositoryReport(workspaces.redact(opened.repo.url), opened.repo.branch,
                                errors=(opened.error,))
    return await cycle.run_repository(engine, opened.repo, selection=selection,
                                      dry_run=dry_run, checkout=opened.checkout,
                                      overrides=overrides)
