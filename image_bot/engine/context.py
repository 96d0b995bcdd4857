"""The one engine context every mode shares: daemon, ``--once``, webhooks and CLI commands.

An :class:`Engine` holds what a run needs (the bot config, the state DB, the registry
client, metrics, clocks). It is built once per process by the CLI and passed to
``engine.cycle``; two copies of this plumbing once drifted (the daemon opened private
config repositories without their credentials), so:

- :meth:`Engine.workspace` is the only way to open a clone of a config repository, and
  it always uses that repository's credentials;
- :meth:`Engine.record` is the only place that writes history, metrics and log lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from image_bot import logs
from image_bot.config import loading, models
from image_bot.engine import history, observing, overview
from image_bot.engine.report import CycleReport, RepositoryReport
from image_bot.errors import ImageBotError
from image_bot.notify import notifying
from image_bot.publish import committing, publishing
from image_bot.publish import workspace as workspaces
from image_bot.registry import client as registry
from image_bot.state import State

log = logs.logger("engine")
OnRequest = Callable[[str, str, int, float], None]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Clock:
    """Wall time for policy decisions (tag age, PR tables) and a monotonic one for durations;
    tests give fake ones."""

    now: Callable[[], datetime] = _now
    monotonic: Callable[[], float] = time.monotonic


@dataclass(frozen=True, slots=True)
class Engine:
    config: models.BotConfig
    state: State
    client: registry.RegistryClient
    metrics: observing.Metrics = field(default_factory=observing.Metrics)
    clock: Clock = Clock()
    notifier: notifying.Notifier = field(default_factory=lambda: notifying.Notifier(()))

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: models.BotConfig, *, metrics: observing.Metrics | None = None,
                   on_request: OnRequest | None = None,
                   clock: Clock | None = None) -> AsyncIterator[Engine]:
        """The engine of one process: opens the state DB and the registry client, and closes
        them when the block ends."""
        metrics = metrics or observing.Metrics()
        hooks = [metrics.on_registry_request, *([on_request] if on_request else [])]

        def counted(method: str, url: str, status: int, seconds: float) -> None:
            for hook in hooks:
                hook(method, url, status, seconds)

        notifier = notifying.Notifier(
            notifying.build(config.notifications),
            on_result=lambda target, outcome: metrics.notifications.labels(
                target, outcome).inc())
        try:
            with _collections.fewer(), history.open_state(config) as state:
                # per-policy and per-agent gauges, read from the state at each scrape
                metrics.watch(lambda: overview.read(state, config, now=time.time()))
                async with registry.RegistryClient(config.registries, state=state,
                                                   on_request=counted) as client:
                    yield cls(config, state, client, metrics, clock or Clock(), notifier)
        finally:
            metrics.watch(None)
            notifier.close()

    @property
    def identity(self) -> committing.Identity:
        return publishing.identity(self.config.git)

    def workspace(self, repo: models.RepositoryConfig) -> workspaces.Workspace:
        """The clone of ``repo`` at its remote tip, opened with the repository's credentials
        (blocking: call it in a thread from async code)."""
        return workspaces.Workspace.open(repo.url, repo.branch, self.config.state_dir,
                                         publishing.credentials(repo))

    def record(self, report: CycleReport, *, trigger: str, seconds: float) -> None:
        """Remember a real run: history in the state DB, metrics, and one log line per event.

        Dry runs (``plan``) are not recorded: they changed nothing.
        """
        self.metrics.observe_report(report, seconds)
        if report.dry_run:
            return
        streaks = history.record(self.state, report, trigger=trigger, seconds=seconds)
        _log_report(report, trigger=trigger, seconds=seconds)
        for repo in report.repositories:
            for event in _events(repo, streaks):
                self.notifier.publish(event)

    def record_operation(self, kind: str, data: dict[str, Any]) -> None:
        """Remember an operator's command (promote, rollback, a cleared decline): who, why,
        what it did; an event and a log line."""
        log.info("%s by %s: %s", kind, data.get("actor", "?"), data.get("reason", ""),
                 extra={k: v for k, v in data.items() if k in ("repository", "policy")})
        self.state.log_event(kind, data)

    def record_reload(self, repository: str, policies: loading.PolicySet, *, scheduled: int,
                      changed: list[str], removed: list[str]) -> None:
        """Remember a reload of a repository's policy files (the daemon): an event, a log
        line, and one config error per broken document (the others run meanwhile)."""
        log.info("policies loaded", extra={"repository": repository, "count": scheduled})
        for error in policies.errors:
            self.metrics.errors.labels(error.kind).inc()
            log.warning("policy skipped: %s", error, extra={"repository": repository})
        self.state.log_event("reload", {
            "repository": repository, "policies": scheduled, "changed": changed,
            "removed": removed, "errors": [str(e) for e in policies.errors]})

    def record_failure(self, repository: str, error: Exception) -> None:
        """A repository's scan or reload that failed as a whole (ours, or a bug)."""
        if isinstance(error, ImageBotError):
            self.metrics.errors.labels(error.kind).inc()
            log.error("repository failed: %s", error, extra={"repository": repository})
        else:
            self.metrics.errors.labels("internal").inc()
            log.error("internal error", exc_info=error, extra={"repository": repository})


def _events(repo: RepositoryReport, failures: dict[str, int]) -> list[notifying.Event]:
    """What a run did, as notification events (``failures``: failed runs in a row before
    this one, per ``repository#policy``, from the state DB: it survives restarts and
    ``run --once``)."""
    events = []
    commit = repo.commits[-1] if len(repo.commits) == 1 else None
    prs = {p.branch: p for p in repo.pull_requests}
    for o in repo.outcomes:
        if o.status == "suspended":  # nothing happened to it: neither failed nor recovered
            continue
        image, change = o.image or "", (o.changes[0] if o.changes else None)
        base = notifying.Event("updated", repo.repository, o.policy, image,
                               old_tag=change.old_tag if change else o.current,
                               new_tag=change.new_tag if change else o.latest, commit=commit)
        key = f"{repo.repository}#{o.policy}"
        streak = failures.get(key, 0)
        if o.status == "failed":
            events.append(dataclasses.replace(base, kind="failed", commit=None,
                                              failures=streak + 1, reason=o.message))
            continue
        if streak:
            events.append(dataclasses.replace(base, kind="recovered", commit=None,
                                              failures=streak))
        if o.status == "updated" and repo.commits:
            events.append(base)
        elif o.status == "proposed":
            opened = [p for p in prs.values() if p.action == "opened" and o.policy in p.policies]
            if opened:
                events.append(dataclasses.replace(base, kind="pr-opened", commit=None,
                                                  link=opened[0].url))
    for t in repo.transitions:
        timings = {name: value for name, value in (("push_to_commit", t.push_to_commit),
                                                    ("commit_to_deployed",
                                                     t.commit_to_deployed))
                   if value is not None}
        events.append(notifying.Event(
            t.state, t.repository, t.policy, t.image,
            old_tag=t.old_tag if t.state != "rolled-back" else t.tag,
            new_tag=t.tag if t.state != "rolled-back" else t.old_tag,
            commit=t.rollback_commit if t.state == "rolled-back" else t.commit,
            link=t.rollback_url, agent=t.agent, service=t.service, reason=t.reason,
            timings=timings))
    return events


def _log_report(report: CycleReport, *, trigger: str, seconds: float) -> None:
    for repo in report.repositories:
        log.info("scan finished", extra={"repository": repo.repository, "trigger": trigger,
                                         "count": len(repo.outcomes),
                                         "seconds": round(seconds, 3)})
        for outcome in repo.outcomes:
            fields = {**observing.outcome_fields(outcome, repo.repository), "trigger": trigger}
            if outcome.status == "failed":
                log.warning("policy failed: %s", outcome.message, extra=fields)
            elif outcome.status == "updated":
                log.info("image updated: %s", outcome.message, extra=fields)
            else:
                log.debug("policy scanned: %s", outcome.message, extra=fields)
        for sha in repo.commits:
            log.info("pushed commit", extra={"repository": repo.repository, "commit": sha[:12],
                                             "seconds": round(seconds, 3)})
        if repo.error:
            log.error("repository failed: %s", repo.error,
                      extra={"repository": repo.repository, "trigger": trigger})


#: young objects between two collections while an engine is open (CPython's default: 700)
YOUNG_COLLECTION_THRESHOLD = 10_000


class _Collections:
    """Collect the young generation every 10,000 allocations instead of 700 while any
    engine is open. A cycle allocates hundreds of thousands of short-lived objects (YAML
    nodes, models, tag readings): a 200-policy ``plan`` ran ~60 collections (~36 ms of
    ~460, bench/cycle.py), ~4 at 10,000 (~13 ms); the memory held meanwhile is that of
    10,000 objects. (mypy raises the threshold for the same reason.) The process's
    thresholds come back when the last open engine closes, whatever order engines of one
    process (tests, several event loops) close in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._before = gc.get_threshold()

    @contextlib.contextmanager
    def fewer(self) -> Iterator[None]:
        with self._lock:
            if self._open == 0:
                self._before = gc.get_threshold()
                gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *self._before[1:])
            self._open += 1
        try:
            yield
        finally:
            with self._lock:
                self._open -= 1
                if self._open == 0:
                    gc.set_threshold(*self._before)


_collections = _Collections()
