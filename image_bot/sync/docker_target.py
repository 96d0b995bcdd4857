"""Sync stage, Docker target: make the containers of one Docker host match the Compose files.

Talks to the engine through the docker SDK (``DOCKER_HOST`` or a socket). It only ever
touches containers carrying its ``io.image-bot.sync.agent`` label. Services run in parallel
(bounded) as soon as their ``depends_on`` conditions hold. A changed service is pulled, the
old container is stopped and set aside, the new one started and waited on; if it does not
become healthy, the old one is put back and the service reported Degraded (its dependents
are then reported, not changed).
Docker errors are translated here (``SyncError``, ``TargetUnavailable``); no credentials
appear in messages.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import docker.types
import requests.exceptions

from image_bot import refs
from image_bot.errors import ImageBotError, SyncError, TargetUnavailable
from image_bot.sync import compose, health
from image_bot.sync import settings as settings_module
from image_bot.sync.status import Health, ServiceStatus, TargetResult

LABEL = "io.image-bot.sync"
LABEL_AGENT = f"{LABEL}.agent"
LABEL_PROJECT = f"{LABEL}.project"
LABEL_SERVICE = f"{LABEL}.service"
LABEL_HASH = f"{LABEL}.config-hash"
LABEL_REVISION = f"{LABEL}.revision"
LABEL_IMAGE = f"{LABEL}.image"
LABEL_STOP = f"{LABEL}.stop-timeout"  # seconds, from stop_grace_period
_DEFAULT_SOCKET = "unix:///var/run/docker.sock"
PREVIOUS = "-previous"  # suffix of a container set aside while its successor starts
_MOUNT_TYPES: dict[str, Literal["bind", "volume"]] = {"bind": "bind", "volume": "volume"}
_STARTED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True, slots=True)
class DockerSettings:
    agent: str
    host: str | None = None  # DOCKER_HOST value; None: the environment's
    credentials: Callable[[str], dict[str, str] | None] = field(
        default=settings_module.no_credentials, repr=False)
    prune: bool = True
    self_heal: bool = True
    min_running: float = 5.0  # a service without a healthcheck is healthy after this long
    health_timeout: float = 60.0
    stop_timeout: int = 10
    parallel: int = 16  # services handled at once (docker-compose: COMPOSE_PARALLEL_LIMIT)


class DockerTarget:
    """One pass = :meth:`apply`; the engine client is created once per target."""

    name = "docker"

    def __init__(self, settings: DockerSettings, *,
                 client: docker.DockerClient | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._client = client
        self._clock, self._sleep = clock, sleep
        self._pull_guard = threading.Lock()
        self._pulls: dict[str, threading.Lock] = {}
        self._pulled: set[str] = set()

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            host = self.settings.host or os.environ.get("DOCKER_HOST") or _DEFAULT_SOCKET
            if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
                raise TargetUnavailable(f"docker: engine unreachable (no socket at "
                                        f"{host.removeprefix('unix://')})")
            with _translated("connecting to the Docker engine"):
                self._client = (docker.DockerClient(base_url=self.settings.host)
                                if self.settings.host else docker.from_env())
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def apply(self, checkout: Path, path: str, *, revision: str,
              previous: Mapping[tuple[str, str], ServiceStatus]) -> TargetResult:
        """Render, compare, apply, prune, check health: one pass over ``checkout/path``."""
        # 1. desired state; a broken file keeps its project exactly as it runs
        desired = compose.load(checkout, path)
        # 2. live state (only our containers), after repairing an interrupted replacement
        with _translated("listing containers"):
            pending = self._recover_set_aside()
            live = self._live()
        # 3. every service, in parallel as far as depends_on allows (images pulled once a pass)
        self._pulled.clear()
        services = self._apply_applications(desired.applications, live, revision=revision,
                                            previous=previous, pending=pending)
        for broken in desired.broken:
            services += self._keep_broken(broken, live, previous)
        # 4. prune what Git no longer has
        wanted = {(a.name, s.name) for a in desired.applications for s in a.services}
        keep = {b.name for b in desired.broken}
        orphans = {k: c for k, c in live.items() if k not in wanted and k[0] not in keep}
        removed, kept = self._prune(orphans)
        for key in orphans.keys() & pending.keys() if self.settings.prune else ():
            with _translated(f"removing {pending[key].name}"):  # its service left Git too
                pending[key].remove(force=True)
        errors = tuple(b.error for b in desired.broken)
        return TargetResult(tuple(services + kept), errors, removed)

    # --- live state ----------------------------------------------------------------------

    def _ours(self) -> list[Any]:
        return list(self.client.containers.list(
            all=True, filters={"label": f"{LABEL_AGENT}={self.settings.agent}"}))

    def _live(self) -> dict[tuple[str, str], Any]:
        return {(c.labels[LABEL_PROJECT], c.labels[LABEL_SERVICE]): c for c in self._ours()
                if LABEL_PROJECT in c.labels and not c.name.endswith(PREVIOUS)}

    def _recover_set_aside(self) -> dict[tuple[str, str], Any]:
        """A crash in the middle of a replacement leaves ``X-previous``. Without ``X`` it is
        put back at once; beside ``X`` (the successor, never proven healthy) it is kept and
        returned, so the pass waits for ``X`` and rolls back to it as an unbroken pass
        would have."""
        containers = self._ours()
        names = {c.name for c in containers}
        pending = {}
        for container in containers:
            if not container.name.endswith(PREVIOUS):
                continue
            primary = container.name.removesuffix(PREVIOUS)
            if primary in names:
                key = (container.labels.get(LABEL_PROJECT, ""),
                       container.labels.get(LABEL_SERVICE, ""))
                pending[key] = container
            else:
                container.rename(primary)
                container.start()
        return pending

    # --- one application -----------------------------------------------------------------

    def _apply_applications(self, apps: Sequence[compose.Application],
                            live: Mapping[tuple[str, str], Any], *, revision: str,
                            previous: Mapping[tuple[str, str], ServiceStatus],
                            pending: Mapping[tuple[str, str], Any]) -> list[ServiceStatus]:
        results: list[ServiceStatus] = []
        ready: list[compose.Service] = []
        for app in apps:
            try:
                with _translated(f"creating volumes and networks of {app.name}"):
                    self._ensure_volumes_and_networks(app)
            except ImageBotError as exc:
                results += [ServiceStatus(app.name, s.name, "OutOfSync", "Unknown",
                                          error=str(exc)) for s in app.services]
                continue
            ready += app.services

        def work(service: compose.Service, blocked: str | None,
                 started: Callable[[], None]) -> ServiceStatus:
            key = (service.project, service.name)
            try:
                if key in pending and live.get(key) is not None:
                    resumed = self._resume(service, live[key], pending[key])
                    if resumed is not None:
                        return resumed
                return self._apply_service(service, live.get(key), revision=revision,
                                           before=previous.get(key), blocked=blocked,
                                           started=started)
            except TargetUnavailable:
                raise
            except ImageBotError as exc:
                return ServiceStatus(service.project, service.name, "OutOfSync", "Unknown",
                                     image=service.image, error=str(exc))

        return results + run_in_order(ready, work, workers=self.settings.parallel)

    def _ensure_volumes_and_networks(self, app: compose.Application) -> None:
        labels = {LABEL_AGENT: self.settings.agent, LABEL_PROJECT: app.name}
        for volume in app.volumes:
            try:
                self.client.volumes.get(volume)
            except docker.errors.NotFound:
                self.client.volumes.create(volume, labels=labels)
        networks = set(app.networks) | {_default_network(s) for s in app.services
                                        if not s.network_mode and not s.networks}
        for network in sorted(networks):
            if not self.client.networks.list(names=[network]):
                self.client.networks.create(network, driver="bridge", labels=labels)

    def _apply_service(self, service: compose.Service, container: Any | None, *,
                       revision: str, before: ServiceStatus | None, blocked: str | None = None,
                       started: Callable[[], None] = lambda: None) -> ServiceStatus:
        desired = service.config_hash
        if container is None:
            deployed_before = before is not None and before.config_hash is not None
            if deployed_before and not self.settings.self_heal:
                return ServiceStatus(service.project, service.name, "OutOfSync", "Missing",
                                     image=service.image, drift="container removed by hand")
            drift = "container removed by hand" if deployed_before else None
            if blocked:
                return ServiceStatus(service.project, service.name, "OutOfSync", "Missing",
                                     image=service.image, drift=drift,
                                     error=f"not created: {blocked}")
            return self._replace(service, None, revision=revision, drift=drift,
                                 started=started)
        live_hash = container.labels.get(LABEL_HASH)
        if before is not None and before.failed_hash == desired and live_hash != desired:
            return self._hold_failed(service, container, before)
        if live_hash != desired:
            if blocked:
                return self._status(service, container, "OutOfSync",
                                    self._assess(container, service).health, "none",
                                    error=f"not updated: {blocked}")
            return self._replace(service, container, revision=revision, drift=None,
                                 started=started)
        drift = _drift(service, container)
        if drift is None:
            return self._status(service, container, "Synced",
                                self._assess(container, service).health, "none")
        if not self.settings.self_heal or blocked:
            return self._status(service, container, "OutOfSync",
                                self._assess(container, service).health, "none", drift=drift,
                                error=f"not repaired: {blocked}" if blocked else None)
        if drift.startswith("container is"):  # stopped or paused: start it again
            with _translated(f"starting {container.name}"):
                _unpause_or_start(container)
            started()
            verdict = self._wait(container, service)
            return self._status(service, container, "Synced", verdict.health, "restarted",
                                drift=drift, error=_unless_healthy(verdict))
        return self._replace(service, container, revision=revision, drift=drift,
                             started=started)

    def _resume(self, service: compose.Service, container: Any, aside: Any
                ) -> ServiceStatus | None:
        """Finish a replacement a crashed pass left: keep the successor once it is healthy
        (``None``: carry on as usual), else roll back to the container set aside."""
        if container.status == "created":
            with _translated(f"starting {container.name}"):
                container.start()
        verdict = self._wait(container, service)
        if verdict.health == "Healthy":
            with _translated(f"removing {aside.name}"):
                aside.remove(force=True)
            return None
        return self._roll_back(service, container, aside, verdict.reason,
                               failed_hash=container.labels.get(LABEL_HASH),
                               image=container.labels.get(LABEL_IMAGE))

    def _hold_failed(self, service: compose.Service, container: Any,
                     before: ServiceStatus) -> ServiceStatus:
        """The desired config failed before and was rolled back: keep the old one running."""
        action = "none"
        if self.settings.self_heal and container.status != "running":
            with _translated(f"starting {container.name}"):
                _unpause_or_start(container)
            self._wait(container, service)
            action = "restarted"
        live = self._status(service, container, "OutOfSync", "Degraded", action)
        return ServiceStatus(**{**_fields(live), "error": before.error,
                                "failed_hash": before.failed_hash})

    def _replace(self, service: compose.Service, old: Any | None, *, revision: str,
                 drift: str | None, started: Callable[[], None] = lambda: None
                 ) -> ServiceStatus:
        """Pull, set the old container aside, start the new one; roll back if unhealthy."""
        self._pull(service.image)  # a failed pull raises: the running container is untouched
        aside = self._set_aside(old) if old is not None else None
        new = None
        try:
            new = self._create(service, revision)
            with _translated(f"starting {new.name}"):
                new.start()
            started()
            verdict = self._wait(new, service)
        except ImageBotError as exc:
            verdict = health.Verdict("Degraded", str(exc))
        if verdict.health == "Healthy":
            if aside is not None:
                with _translated(f"removing {aside.name}"):
                    aside.remove(force=True)
            action = "created" if old is None else "updated"
            return self._status(service, new, "Synced", "Healthy", action, drift=drift)
        return self._roll_back(service, new, aside, verdict.reason)

    def _roll_back(self, service: compose.Service, new: Any | None, aside: Any | None,
                   reason: str, *, failed_hash: str | None = None,
                   image: str | None = None) -> ServiceStatus:
        """Remove ``new``, put ``aside`` back; ``failed_hash``/``image``: of ``new`` when it
        is not this pass's desired config (a crashed pass's)."""
        if new is not None:
            with _translated(f"removing {new.name}"):
                new.remove(force=True)
        failed_hash = failed_hash or service.config_hash
        error = f"{service.container_name}: {image or service.image} failed: {reason}"
        if aside is None:
            return ServiceStatus(service.project, service.name, "OutOfSync", "Degraded",
                                 image=service.image, action="failed", error=error,
                                 failed_hash=failed_hash)
        with _translated(f"restoring {aside.name}"):
            aside.rename(service.container_name)
            aside.start()
        self._wait(aside, service)
        revision = aside.labels.get(LABEL_REVISION, "?")
        live = self._status(service, aside, "OutOfSync", "Degraded", "rolled-back")
        return ServiceStatus(**{**_fields(live), "failed_hash": failed_hash,
                                "error": f"{error}; rolled back to the previous container "
                                         f"(revision {revision[:12]})"})

    def _set_aside(self, container: Any) -> Any:
        with _translated(f"stopping {container.name}"):
            container.stop(timeout=self._stop_timeout(container))
            container.rename(container.name + PREVIOUS)
            container.reload()
        return container

    def _stop_timeout(self, container: Any) -> int:
        """The container's own ``stop_grace_period`` (a label), else ``--stop-timeout``."""
        value = str(container.labels.get(LABEL_STOP, ""))
        return int(value) if value.isdigit() else self.settings.stop_timeout

    def _create(self, service: compose.Service, revision: str) -> Any:
        labels = {**dict(service.labels), LABEL_AGENT: self.settings.agent,
                  LABEL_PROJECT: service.project, LABEL_SERVICE: service.name,
                  LABEL_HASH: service.config_hash, LABEL_REVISION: revision,
                  LABEL_IMAGE: service.image}
        if service.stop_grace_period is not None:
            labels[LABEL_STOP] = str(service.stop_grace_period)
        try:
            container = self.client.containers.create(**_create_arguments(service, labels))
        except docker.errors.APIError as exc:
            raise _api_error(f"creating {service.container_name}", exc) from None
        except (docker.errors.InvalidArgument, ValueError) as exc:  # refused by the SDK
            raise SyncError(f"docker: creating {service.container_name}: {exc}") from None
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise TargetUnavailable(f"docker: creating {service.container_name}: "
                                    f"{type(exc).__name__}") from None
        for network in service.networks[1:]:
            with _translated(f"connecting {service.container_name} to {network}"):
                self.client.networks.get(network).connect(container)
        return container

    def _pull(self, image: str) -> None:
        """Once a pass per image, however many services (and threads) want it."""
        with self._pull_guard:
            lock = self._pulls.setdefault(image, threading.Lock())
        with lock:
            if image not in self._pulled:
                self._pull_now(image)
                self._pulled.add(image)

    def _pull_now(self, image: str) -> None:
        auth = self.settings.credentials(refs.parse(image).host)
        try:
            self.client.images.pull(image, auth_config=auth)
        except docker.errors.APIError as exc:
            raise _api_error(f"pulling {image}", exc) from None
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise TargetUnavailable(f"docker: pulling {image}: {type(exc).__name__}") from None

    # --- health and status -----------------------------------------------------------------

    def _assess(self, container: Any, service: compose.Service | None = None
                ) -> health.Verdict:
        return health.assess(observe(container), min_running=self.settings.min_running,
                             baseline_restarts=int(container.attrs.get("RestartCount", 0)),
                             completes=service is not None and service.completes)

    def _wait(self, container: Any, service: compose.Service) -> health.Verdict:
        with _translated(f"inspecting {container.name}"):
            return health.wait(lambda: observe(container), min_running=self.settings.min_running,
                               timeout=self.settings.health_timeout,
                               baseline_restarts=int(container.attrs.get("RestartCount", 0)),
                               completes=service.completes, clock=self._clock,
                               sleep=self._sleep)

    def _status(self, service: compose.Service, container: Any, sync: Any, state: Health,
                action: str, *, drift: str | None = None,
                error: str | None = None) -> ServiceStatus:
        labels = container.labels
        return ServiceStatus(service.project, service.name, sync, state,
                             revision=labels.get(LABEL_REVISION), image=labels.get(LABEL_IMAGE),
                             config_hash=labels.get(LABEL_HASH), action=action, drift=drift,
                             error=error)

    def _keep_broken(self, broken: compose.Broken, live: Mapping[tuple[str, str], Any],
                     previous: Mapping[tuple[str, str], ServiceStatus]) -> list[ServiceStatus]:
        """A file that does not load: report its running services, change nothing."""
        statuses = []
        for (project, name), container in sorted(live.items()):
            if project != broken.name:
                continue
            labels = container.labels
            statuses.append(ServiceStatus(
                project, name, "OutOfSync", self._assess(container).health,
                revision=labels.get(LABEL_REVISION), image=labels.get(LABEL_IMAGE),
                config_hash=labels.get(LABEL_HASH), error=broken.error,
                failed_hash=getattr(previous.get((project, name)), "failed_hash", None)))
        return statuses

    def _prune(self, orphans: Mapping[tuple[str, str], Any]
               ) -> tuple[tuple[str, ...], list[ServiceStatus]]:
        """Stop and remove orphans in parallel (one grace period, not one after another)."""
        if not self.settings.prune:
            return (), [ServiceStatus(
                project, name, "OutOfSync", self._assess(container).health,
                revision=container.labels.get(LABEL_REVISION),
                image=container.labels.get(LABEL_IMAGE),
                config_hash=container.labels.get(LABEL_HASH),
                drift="not in Git any more (kept: --no-prune)")
                for (project, name), container in sorted(orphans.items())]

        def stop_and_remove(container: Any) -> None:
            with _translated(f"removing {container.name}"):
                container.stop(timeout=self._stop_timeout(container))
                container.remove()

        if orphans:
            workers = max(1, min(self.settings.parallel, len(orphans)))
            with futures.ThreadPoolExecutor(workers, "image-bot-prune") as pool:
                list(pool.map(stop_and_remove, [orphans[k] for k in sorted(orphans)]))
        return tuple(f"{p}/{n}" for p, n in sorted(orphans)), []


# --- helpers (pure, or one Docker call) -------------------------------------------------


def run_in_order(services: Sequence[compose.Service],
                 work: Callable[[compose.Service, str | None, Callable[[], None]],
                                ServiceStatus], *, workers: int) -> list[ServiceStatus]:
    """Run ``work`` for every service on a bounded pool, each as soon as its ``depends_on``
    conditions hold; results in the order given.

    ``services`` must list dependencies first (``compose`` does): a worker only ever waits for
    a service submitted before it, so the pool cannot deadlock. ``work`` gets the reason it
    must not change its service (a dependency failed), or ``None``, and a callback to call
    once its container has started (``service_started`` dependents go on from there).
    """
    started = {(s.project, s.name): threading.Event() for s in services}
    finished = {(s.project, s.name): threading.Event() for s in services}
    results: dict[tuple[str, str], ServiceStatus] = {}

    def run(service: compose.Service) -> ServiceStatus:
        key = (service.project, service.name)
        try:
            reasons = []
            for dependency, condition in service.conditions:
                other = (service.project, dependency)
                gate = started if condition == "service_started" else finished
                gate[other].wait()
                problem = _unmet(dependency, condition, results.get(other),
                                 finished[other].is_set())
                if problem:
                    reasons.append(problem)
            status = work(service, "; ".join(reasons) or None, started[key].set)
            results[key] = status
            return status
        finally:
            started[key].set()
            finished[key].set()

    if not services:
        return []
    with futures.ThreadPoolExecutor(max(1, min(workers, len(services))),
                                    "image-bot-sync") as pool:
        pending = [pool.submit(run, s) for s in services]
        return [p.result() for p in pending]


def _unmet(dependency: str, condition: str, result: ServiceStatus | None,
           finished: bool) -> str | None:
    """Why a dependency does not (yet) satisfy ``condition``, or ``None``."""
    if result is None:
        return None if not finished else f"depends on {dependency!r}, which failed"
    if condition == "service_started":
        bad = result.health in ("Missing", "Unknown") or result.action == "failed"
    else:  # service_healthy, service_completed_successfully: its verdict is in
        bad = result.health != "Healthy"
    if not bad:
        return None
    return f"depends on {dependency!r} ({condition}), which is {result.health}"


def observe(container: Any) -> health.Observation:
    container.reload()
    state = container.attrs.get("State") or {}
    status = str(state.get("Status", "unknown"))
    return health.Observation(
        status=status, health=(state.get("Health") or {}).get("Status"),
        restart_count=int(container.attrs.get("RestartCount", 0)),
        exit_code=int(state.get("ExitCode", 0)),
        running_for=seconds_since(state.get("StartedAt", "")) if status == "running" else 0.0,
        error=str(state.get("Error", "")))


def seconds_since(timestamp: str, *, now: float | None = None) -> float:
    """Seconds since Docker's RFC 3339 timestamp (nanoseconds allowed); 0 if unparseable."""
    match = _STARTED.match(timestamp or "")
    if not match:
        return 0.0
    base, fraction, zone = match.groups()
    parsed = datetime.fromisoformat(f"{base}.{(fraction or '0')[:6]:0<6}"
                                    f"{'+00:00' if zone == 'Z' else zone}")
    return max(0.0, (time.time() if now is None else now) - parsed.timestamp())


def _drift(service: compose.Service, container: Any) -> str | None:
    """Why the live container no longer matches its own label's config, or ``None``."""
    config = container.attrs.get("Config") or {}
    host = container.attrs.get("HostConfig") or {}
    status = container.status
    exit_code = (container.attrs.get("State") or {}).get("ExitCode")
    if service.completes and status == "exited" and exit_code == 0:
        pass  # a job that ran to completion is where it should be
    elif status != "running":
        return f"container is {status} (exit code {container.attrs['State'].get('ExitCode')})"
    if config.get("Image") != service.image:
        return f"image changed by hand to {config.get('Image')}"
    env = set(config.get("Env") or [])
    for key, value in service.environment:
        if f"{key}={value}" not in env:
            return f"environment variable {key} changed by hand"
    if service.command is not None and tuple(config.get("Cmd") or ()) != service.command:
        return "command changed by hand"
    policy = host.get("RestartPolicy") or {}
    if _restart_name(policy) != service.restart:
        return f"restart policy changed by hand to {_restart_name(policy)}"
    if service.network_mode and host.get("NetworkMode") != service.network_mode:
        return f"network mode changed by hand to {host.get('NetworkMode')}"
    return None


def _restart_name(policy: Mapping[str, Any]) -> str:
    name = str(policy.get("Name") or "no")
    retries = int(policy.get("MaximumRetryCount") or 0)
    return f"{name}:{retries}" if name == "on-failure" and retries else name


def _create_arguments(service: compose.Service, labels: Mapping[str, str]) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "image": service.image, "name": service.container_name, "detach": True,
        "labels": dict(labels), "environment": [f"{k}={v}" for k, v in service.environment],
        "restart_policy": _restart_policy(service.restart),
        "network_mode": service.network_mode or (service.networks[0] if service.networks
                                                 else _default_network(service)),
        "mounts": [docker.types.Mount(m.target, m.source, type=_MOUNT_TYPES[m.type],
                                      read_only=m.read_only) for m in service.mounts],
    }
    if service.command is not None:
        arguments["command"] = list(service.command)
    if service.entrypoint is not None:
        arguments["entrypoint"] = list(service.entrypoint)
    if service.ports and service.network_mode not in ("host", "none"):
        arguments["ports"] = {p.container: (p.host_ip, int(p.host_port)) if p.host_ip and
                              p.host_port else int(p.host_port) if p.host_port else None
                              for p in service.ports}
    if service.healthcheck is not None:
        check = service.healthcheck
        arguments["healthcheck"] = {"test": list(check.test), "interval": check.interval_ns,
                                    "timeout": check.timeout_ns, "retries": check.retries,
                                    "start_period": check.start_period_ns}
    for key in ("user", "working_dir", "mem_limit", "mem_reservation", "nano_cpus",
                "shm_size", "stop_signal", "hostname", "domainname", "init"):
        if getattr(service, key) is not None:
            arguments[key] = getattr(service, key)
    for key in ("dns", "dns_search", "cap_add", "cap_drop", "security_opt"):
        if getattr(service, key):
            arguments[key] = list(getattr(service, key))
    for key in ("read_only", "privileged", "tty", "stdin_open"):
        if getattr(service, key):
            arguments[key] = True
    if service.pid is not None:
        arguments["pid_mode"] = service.pid
    if service.ipc is not None:
        arguments["ipc_mode"] = service.ipc
    if service.log_driver is not None:
        arguments["log_config"] = docker.types.LogConfig(type=service.log_driver,
                                                         config=dict(service.log_options))
    if service.extra_hosts:
        arguments["extra_hosts"] = dict(service.extra_hosts)
    if service.ulimits:
        arguments["ulimits"] = [docker.types.Ulimit(name=u.name, soft=u.soft, hard=u.hard)
                                for u in service.ulimits]
    if service.tmpfs:
        arguments["tmpfs"] = {path: options for path, _, options in
                              (t.partition(":") for t in service.tmpfs)}
    if service.sysctls:
        arguments["sysctls"] = dict(service.sysctls)
    if service.expose and "ports" not in arguments and service.network_mode not in (
            "host", "none"):  # the SDK cannot expose without binding, refused on host
        arguments["ports"] = {port: None for port in service.expose}
    return arguments


def _restart_policy(restart: str) -> dict[str, Any]:
    name, _, retries = restart.partition(":")
    policy: dict[str, Any] = {"Name": "" if name == "no" else name}
    if retries:
        policy["MaximumRetryCount"] = int(retries)
    return policy


def _default_network(service: compose.Service) -> str:
    return f"{service.project}_default"


def _unpause_or_start(container: Any) -> None:
    if container.status == "paused":
        container.unpause()
    else:
        container.start()


def _unless_healthy(verdict: health.Verdict) -> str | None:
    return None if verdict.health == "Healthy" else verdict.reason


def _fields(status: ServiceStatus) -> dict[str, Any]:
    return {name: getattr(status, name) for name in status.__dataclass_fields__}


def _api_error(doing: str, exc: docker.errors.APIError) -> SyncError:
    explanation = str(exc.explanation or exc).strip().replace("\n", " ")
    return SyncError(f"docker: {doing}: {explanation}")


@contextmanager
def _translated(doing: str) -> Iterator[None]:
    """Docker SDK and transport errors as ours, naming what we were doing."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise _api_error(doing, exc) from None
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise TargetUnavailable(f"docker: {doing}: engine unreachable "
                                f"({type(exc).__name__})") from None
