"""Fixtures: real servers on free loopback ports (docker-registry, git smart HTTP, dockerd)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import devservers
import testing

ROOT = Path(__file__).resolve().parent.parent


# The real-world YAML corpus, vendored with its sources and licences (see its SOURCES.md).
CORPUS = ROOT / "tests" / "data" / "corpus"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devservers.Registry]:
    server = devservers.start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devservers.Registry]:
    """A registry that requires Basic auth as ``tester`` / ``s3cret-pw``."""
    directory = tmp_path_factory.mktemp("auth-registry")
    htpasswd = devservers.write_htpasswd(directory / "htpasswd", "tester", "s3cret-pw")
    server = devservers.start_registry(directory, htpasswd=htpasswd)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devservers.GitServer]:
    server = devservers.start_git_server(tmp_path_factory.mktemp("git-root"))
    yield server
    server.stop()


@pytest.fixture
def config_repo(git_server: devservers.GitServer) -> Callable[[dict[str, str | bytes]], str]:
    """Create a bare repo served over HTTP with the given files; returns its clone URL."""

    def create(files: dict[str, str | bytes]) -> str:
        name = f"config-{uuid.uuid4().hex[:12]}.git"
        devservers.create_repo(git_server.root, name, files)
        return git_server.url(name)

    return create


@pytest.fixture
def bot_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a bot config file for one repository and return its path."""

    def write(url: str, *, registries: list[dict[str, Any]] | None = None,
              policies: str = "policies/") -> Path:
        return testing.write_json(tmp_path / "bot.yaml", testing.bot_config(
            [{"url": url, "branch": "main", "policies": policies}],
            registries=registries or [], state_dir=tmp_path / "state",
            git={"author_name": "image-bot", "author_email": "image-bot@localhost"}))

    return write


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devservers.TokenServer]:
    """A Docker-style token server: ``tester`` / ``s3cret-pw`` may pull and push anything;
    anonymous clients may pull ``public/*``."""
    server = devservers.start_token_server(tmp_path_factory.mktemp("token-server"),
                                           {"tester": "s3cret-pw"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory,
                   token_server: devservers.TokenServer) -> Iterator[devservers.Registry]:
    """The real registry with ``auth.token`` pointing at :func:`token_server`."""
    server = devservers.start_registry(tmp_path_factory.mktemp("token-registry"),
                                       token=token_server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dockerd() -> Iterator[devservers.Dockerd]:
    """A private Docker engine (no bridge, no iptables, vfs) for the sync agent's tests."""
    daemon = devservers.start_dockerd()
    yield daemon
    daemon.stop()


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[devservers.KubeEmulator]:
    """The kmock Kubernetes emulator, with kubectl (KUBECONFIG, IMAGE_BOT_KUBECTL) on it."""
    kubectl = devservers.kubectl_binary()
    assert kubectl, "kubectl is missing: `make deps` installs it into .tools/kubectl/"
    emulator = devservers.start_kube_emulator(tmp_path / "kube")
    monkeypatch.setenv("KUBECONFIG", str(emulator.kubeconfig))
    monkeypatch.setenv("IMAGE_BOT_KUBECTL", kubectl)
    yield emulator
    emulator.stop()
