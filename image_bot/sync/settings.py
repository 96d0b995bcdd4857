"""Sync stage, settings: what the command line tells the agent and its targets (pure data)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


def no_credentials(host: str) -> dict[str, str] | None:
    """The default lookup: pull anonymously (or with the engine's own config)."""
    del host
    return None


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """One agent: a name (labels, status file), a target and how careful to be."""

    agent: str
    target: str = "docker"
    prune: bool = True
    self_heal: bool = True
    min_running: float = 5.0  # seconds a service without a healthcheck must stay up
    health_timeout: float = 60.0
    stop_timeout: int = 10
    # registry host → docker auth_config, looked up at each pull; never printed
    credentials: Callable[[str], dict[str, str] | None] = field(default=no_credentials,
                                                                  repr=False)
    docker_host: str | None = None
    kubectl: str = "kubectl"
    namespace: str | None = None
    validate: bool = True  # kubectl schema validation (off for API servers without OpenAPI)
