"""Sync stage, agent: one pass of a target over a checkout, as a ``SyncReport``.

The targets are plain modules behind the ``Target`` protocol, listed in ``TARGETS``; adding
one is a one-line diff. The agent never fetches Git itself (the engine hands it a checkout)
and never imports another stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from image_bot.errors import ImageBotError
from image_bot.sync import docker_target, kubernetes_target
from image_bot.sync.settings import AgentSettings
from image_bot.sync.status import ServiceStatus, SyncReport, TargetResult


class Target(Protocol):
    """Make the live system match the files under ``checkout/path``; report per service."""

    name: str

    def apply(self, checkout: Path, path: str, *, revision: str,
              previous: Mapping[tuple[str, str], ServiceStatus]) -> TargetResult: ...

    def close(self) -> None: ...


def _docker(settings: AgentSettings) -> Target:
    return docker_target.DockerTarget(docker_target.DockerSettings(
        agent=settings.agent, host=settings.docker_host, credentials=settings.credentials,
        prune=settings.prune, self_heal=settings.self_heal, min_running=settings.min_running,
        health_timeout=settings.health_timeout, stop_timeout=settings.stop_timeout))


def _kubernetes(settings: AgentSettings) -> Target:
    return kubernetes_target.KubernetesTarget(kubernetes_target.KubernetesSettings(
        applyset=settings.agent, kubectl=settings.kubectl, namespace=settings.namespace,
        prune=settings.prune, self_heal=settings.self_heal,
        rollout_timeout=settings.health_timeout, validate=settings.validate))


TARGETS: dict[str, Callable[[AgentSettings], Target]] = {
    "docker": _docker,
    "kubernetes": _kubernetes,
}


@dataclass(frozen=True, slots=True)
class Source:
    """Where the desired state came from, for the report."""

    repository: str  # credentials already removed
    branch: str
    path: str


def build(settings: AgentSettings) -> Target:
    return TARGETS[settings.target](settings)


def apply(target: Target, checkout: Path, *, source: Source, revision: str,
          settings: AgentSettings, previous: SyncReport | None,
          clock: Callable[[], float] = time.time) -> SyncReport:
    """One pass: the target's result with where it came from; a failed pass keeps the last
    known services (marked with the error) so a status never goes blank."""
    started = clock()
    report = SyncReport(agent=settings.agent, target=settings.target,
                        repository=source.repository, branch=source.branch, path=source.path,
                        revision=revision, started_at=started)
    try:
        result = target.apply(checkout, source.path, revision=revision,
                              previous=previous.previous if previous else {})
    except ImageBotError as exc:
        return failed(report, previous, str(exc), clock=clock)
    return replace(report, services=result.services, errors=result.errors,
                   removed=result.removed, finished_at=clock())


def failed(report: SyncReport, previous: SyncReport | None, error: str, *,
           clock: Callable[[], float] = time.time) -> SyncReport:
    """A pass that could not run (fetch, engine down): last known services, this error."""
    services = previous.services if previous else ()
    return replace(report, services=services, errors=(error,), finished_at=clock(),
                   revision=report.revision or (previous.revision if previous else None))
