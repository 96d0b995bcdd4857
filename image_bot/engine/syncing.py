"""Engine, sync loop: fetch the config repo (publish's workspace) and hand it to the sync stage.

Composes two stages that must not know each other: ``publish.workspace`` for the Git fetch
and ``sync.agent`` for the apply. The agent's checkout lives in its own folder of the state
dir, so a bot and an agent sharing a state dir never reset each other's clone.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from image_bot.config import models
from image_bot.errors import ImageBotError
from image_bot.publish import workspace as workspaces
from image_bot.registry import credentials as sources
from image_bot.sync import agent, status
from image_bot.sync.settings import AgentSettings


@dataclass(frozen=True, slots=True)
class SyncJob:
    url: str
    branch: str
    path: str
    state_dir: Path
    settings: AgentSettings

    @property
    def source(self) -> agent.Source:
        return agent.Source(workspaces.redact(self.url), self.branch, self.path)

    @property
    def status_file(self) -> Path:
        return status.folder(self.state_dir) / f"{self.settings.agent}.json"


def agent_name(url: str, branch: str, path: str, target: str) -> str:
    """A stable default name: the repository's name and a hash of what it syncs where."""
    clean = workspaces.redact(url)
    base = re.sub(r"[^a-z0-9-]+", "-", clean.rstrip("/").rsplit("/", 1)[-1].lower()
                  .removesuffix(".git")).strip("-")[:30] or "repo"
    digest = hashlib.sha256(f"{clean}\n{branch}\n{path}\n{target}".encode()).hexdigest()[:8]
    return f"{base}-{digest}"


def credentials(config: models.BotConfig | None) -> Callable[[str], dict[str, str] | None]:
    """A lookup: registry host → docker ``auth_config``, read from the bot config's
    credential source at each pull (so short-lived tokens are fresh)."""
    def lookup(host: str) -> dict[str, str] | None:
        if config is None:
            return None
        settings = config.registry_for(host)
        source = sources.source_for(settings)
        found = source(settings).credentials if source else None
        if found is None:
            return None
        if found.identity_token:
            return {"username": found.username, "identitytoken": found.identity_token}
        return {"username": found.username, "password": found.password}

    return lookup


def run_pass(job: SyncJob, target: agent.Target) -> status.SyncReport:
    """Fetch, apply, write the status file; never raises for a failed pass."""
    previous = status.read(job.status_file)
    blank = status.SyncReport(agent=job.settings.agent, target=job.settings.target,
                              repository=job.source.repository, branch=job.branch,
                              path=job.path, started_at=time.time())
    try:
        # 1. the config repository at the tip of the branch
        ws = workspaces.Workspace.open(job.url, job.branch, job.state_dir / "sync")
        try:
            revision = ws.head
        finally:
            ws.repo.close()  # GitPython keeps cat-file processes until closed
        # 2-5. render, compare, apply, prune, check health
        report = agent.apply(target, ws.root, source=job.source, revision=revision,
                             settings=job.settings, previous=previous)
    except ImageBotError as exc:
        report = agent.failed(blank, previous, str(exc))
    status.write(job.status_file, report)
    return report


def run_forever(job: SyncJob, target: agent.Target, *, interval: float,
                on_report: Callable[[status.SyncReport], None],
                sleep: Callable[[float], None] = time.sleep) -> None:
    """Pass after pass, ``interval`` seconds apart, until interrupted."""
    while True:
        on_report(run_pass(job, target))
        sleep(interval)


class StatusCollector:
    """Prometheus metrics of every sync agent whose status file is in ``state_dir``, read at
    each scrape (so a daemon sharing the state dir, or the agent itself, exports them)."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = status.folder(state_dir)

    def collect(self) -> Iterator[Metric]:
        reports = status.read_all(self.directory)
        service = GaugeMetricFamily(
            "image_bot_sync_service", "One per service (docker) or object (kubernetes), with "
            "its sync and health state as labels; the value is 1.",
            labels=["agent", "application", "service", "sync", "health"])
        ok = GaugeMetricFamily("image_bot_sync_ok", "1 when the agent's last pass found every "
                               "service Synced and Healthy, else 0.", labels=["agent"])
        finished = GaugeMetricFamily("image_bot_sync_last_pass_timestamp_seconds",
                                     "When the agent's last pass ended (Unix time).",
                                     labels=["agent"])
        errors = GaugeMetricFamily("image_bot_sync_errors", "Whole-pass or whole-file errors "
                                   "of the agent's last pass.", labels=["agent"])
        for report in reports:
            for s in report.services:
                service.add_metric([report.agent, s.application, s.service, s.sync, s.health], 1)
            ok.add_metric([report.agent], 1 if report.ok else 0)
            finished.add_metric([report.agent], report.finished_at)
            errors.add_metric([report.agent], len(report.errors))
        yield from (service, ok, finished, errors)


def serve_metrics(state_dir: Path, *, host: str, port: int) -> Callable[[], None]:
    """Serve ``/metrics`` with the sync status on ``host:port`` (a thread); returns stop."""
    registry = CollectorRegistry()
    registry.register(StatusCollector(state_dir))
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
