"""Sync stage, settings: what the command line tells the agent and its targets (pure data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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
    # registry host → (username, password); used for pulls, never printed
    credentials: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    docker_host: str | None = None
    kubectl: str = "kubectl"
    namespace: str | None = None
