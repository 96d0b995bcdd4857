"""Sync agent vs docker-compose 1.29.2: real Compose files, the containers both tools create.

For each vendored Compose file (``tests/data/compose/``, see SOURCES.md there) docker-compose
and the agent deploy it, one after the other, on the same private dockerd; the containers are
compared through ``docker inspect`` in image, command, entrypoint, environment, the labels
both set, restart policy, network mode, mounts, resource limits and the host settings the
file names (capabilities, container name, ...).

What is rewritten, the same for both tools (this machine has neither Docker Hub nor a
bridge network): every ``image`` becomes one local busybox image pushed to the test registry
(its entrypoint ignores the file's command, so each service keeps running); services get
``network_mode: host`` and lose ``networks`` and ``ports`` (top-level ``networks`` go too);
healthcheck tests become ``true`` every 500ms; absolute bind sources move under the test's
temp dir and ``~`` becomes the project folder; ``sysctls`` are dropped (``net.*`` ones are
refused in the host's network namespace). Bind sources the file's repository ships but that
are not vendored (a 1.9 MB log) are created empty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from ruamel.yaml import YAML

import devservers
from image_bot.sync import docker_target

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

DATA = Path(__file__).resolve().parents[1] / "data" / "compose"
FILES = sorted(p.relative_to(DATA).as_posix() for p in DATA.rglob("compose.yaml"))
ENV = {  # the variables the files interpolate (their READMEs ask users to set them)
    "POSTGRES_USER": "pg", "POSTGRES_PW": "pg-pw", "POSTGRES_DB": "app",
    "PGADMIN_MAIL": "admin@example.test", "PGADMIN_PW": "admin-pw", "TIMEZONE": "UTC",
    "PIHOLE_PW": "pihole-pw", "PIHOLE_ROUTER_IP": "192.0.2.1",
    "PIHOLE_NETWORK_DOMAIN": "lan", "PIHOLE_REVERSE_DNS": "192.0.2.0/24",
    "PIHOLE_HOST_IP": "192.0.2.10", "VPN_SERVER_URL": "vpn.example.test",
}
OWN_LABELS = ("com.docker.compose.", "io.image-bot.")
HOST_KEYS = ("CapAdd", "CapDrop", "ExtraHosts", "Dns", "Tmpfs", "ReadonlyRootfs", "Init",
             "Privileged", "SecurityOpt", "Ulimits", "Memory", "MemoryReservation",
             "NanoCpus", "CpuQuota", "CpuShares", "ShmSize", "PidMode", "IpcMode")


@pytest.fixture(scope="module")
def image(registry: devservers.Registry) -> str:
    devservers.push_busybox_image(registry.url, "compat/app", "1.0.0",
                                  entrypoint=["sh", "-c", "exec sleep 3600", "ignored"])
    return f"{registry.host}/compat/app:1.0.0"


@pytest.fixture
def engine(dockerd: devservers.Dockerd) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=dockerd.host)
    yield client
    client.close()


def _rewrite(source: Path, checkout: Path, image: str, host_dir: Path) -> Path:
    """The file's folder copied into ``checkout`` with the rewrites of the module docstring."""
    project_dir = checkout / source.parent.name
    shutil.copytree(source.parent, project_dir)
    yaml = YAML(typ="safe", pure=True)
    document: dict[str, Any] = yaml.load(source.read_text())
    document.pop("networks", None)
    for service in document["services"].values():
        service["image"] = image
        service["network_mode"] = "host"
        for key in ("networks", "ports", "sysctls"):
            service.pop(key, None)
        if "healthcheck" in service:
            service["healthcheck"]["test"] = ["CMD", "true"]
            service["healthcheck"]["interval"] = "500ms"
        volumes = []
        for volume in service.get("volumes") or []:
            bind, _, rest = volume.partition(":")
            if bind.startswith("/"):
                (host_dir / bind.lstrip("/")).mkdir(parents=True, exist_ok=True)
                bind = str(host_dir / bind.lstrip("/"))
            elif bind.startswith("~/"):
                bind = "./" + bind.removeprefix("~/")
            if bind.startswith("./") and not (project_dir / bind).exists():
                target = project_dir / bind
                target.parent.mkdir(parents=True, exist_ok=True)
                if "." in target.name:
                    target.touch()  # a file the repository ships (not vendored)
                else:
                    target.mkdir()
            volumes.append(f"{bind}:{rest}")
        if volumes:
            service["volumes"] = volumes
    with (project_dir / "compose.yaml").open("w") as handle:
        yaml.dump(document, handle)
    return project_dir


def _shape(container: Any) -> dict[str, Any]:
    config, host = container.attrs["Config"], container.attrs["HostConfig"]
    policy = host.get("RestartPolicy") or {}
    return {
        "image": config["Image"], "command": config.get("Cmd"),
        "entrypoint": config.get("Entrypoint"), "environment": sorted(config.get("Env") or []),
        "labels": {k: v for k, v in (config.get("Labels") or {}).items()
                   if not k.startswith(OWN_LABELS)},
        "restart": (policy.get("Name") or "no", policy.get("MaximumRetryCount") or 0),
        "network_mode": host.get("NetworkMode"),
        "mounts": sorted((m["Type"], m.get("Name") or m["Source"], m["Destination"], m["RW"])
                         for m in container.attrs.get("Mounts") or []),
        **{key: host.get(key) or None for key in HOST_KEYS},
    }


def _compose(project: str, file: Path, dockerd: devservers.Dockerd, env: dict[str, str],
             *args: str) -> None:
    env = {**os.environ, **env, "DOCKER_HOST": dockerd.host}
    result = subprocess.run(["docker-compose", "-p", project, "-f", str(file), *args],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="apt-get install "
                    "docker-compose (the Makefile's system-deps does)")
@pytest.mark.parametrize("relative", FILES)
def test_the_agent_creates_the_containers_docker_compose_creates(
    relative: str, image: str, dockerd: devservers.Dockerd, engine: docker.DockerClient,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkout = tmp_path / "checkout"
    project_dir = _rewrite(DATA / relative, checkout, image, tmp_path / "host")
    project = project_dir.name.lower()
    file = project_dir / "compose.yaml"
    media = tmp_path / "host" / "media"  # an absolute path given through a variable
    media.mkdir(parents=True)
    env = {**ENV, "PLEX_MEDIA_PATH": str(media)}

    # 1. docker-compose
    _compose(project, file, dockerd, env, "up", "-d")
    theirs = {c.labels["com.docker.compose.service"]: (c.name, _shape(c))
              for c in engine.containers.list(
                  all=True, filters={"label": f"com.docker.compose.project={project}"})}
    _compose(project, file, dockerd, env, "down", "-t", "0")

    # 2. the agent, on the same file and engine
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    target = docker_target.DockerTarget(docker_target.DockerSettings(
        agent="compat", host=dockerd.host, min_running=0.5, health_timeout=30, stop_timeout=0))
    try:
        result = target.apply(checkout, project_dir.name, revision="compat", previous={})
        assert result.errors == ()
        assert {(s.service, s.sync, s.health, s.error) for s in result.services} == {
            (name, "Synced", "Healthy", None) for name in theirs}
        ours = {c.labels[docker_target.LABEL_SERVICE]: (c.name, _shape(c))
                for c in engine.containers.list(
                    all=True, filters={"label": f"{docker_target.LABEL_PROJECT}={project}"})}
    finally:
        for container in engine.containers.list(
                all=True, filters={"label": f"{docker_target.LABEL_AGENT}=compat"}):
            container.remove(force=True)
        target.close()

    # 3. the same containers (names only where the file gives container_name)
    assert sorted(ours) == sorted(theirs)
    for service, (name, shape) in theirs.items():
        assert ours[service][1] == shape, service
        if not name.startswith(f"{project}_"):
            assert ours[service][0] == name
