"""Both modes against real git servers that require credentials: HTTPS Basic (the
``password_env`` of a repository) and SSH with a key (a private ``sshd``).

The daemon once opened clones without the repository's credentials, so it never loaded
the policies of a private config repository while ``run --once`` worked. Both modes now
open clones only through ``Engine.workspace``; these tests hold each mode to it: the
policies load, a new tag becomes a commit, and the password shows up in no output, log,
status page or state file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import devservers
import testing

pytestmark = pytest.mark.e2e

USER = "deploy-bot"
PASSWORD = "Zq8-private-repo-password-7Kx"  # distinctive: any leak is found by grep



@pytest.fixture(scope="module")
def private_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devservers.GitServer]:
    """A git server that answers 401 to anyone without ``USER:PASSWORD``."""
    server = devservers.start_git_server(tmp_path_factory.mktemp("private-git"),
                                         credentials=f"{USER}:{PASSWORD}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def private_ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devservers.SshServer]:
    if devservers.sshd_binary() is None:
        pytest.fail("sshd is missing: `make deps` installs openssh-server")
    server = devservers.start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@dataclass(frozen=True)
class Remote:
    """A private config repository and what the bot config needs to reach it."""

    url: str
    bare: Path
    settings: dict[str, Any]  # repositories[] keys holding the credentials
    secret: str  # must never appear in any output or file of the bot


@pytest.fixture(params=["https", "ssh"])
def remote_factory(request: pytest.FixtureRequest, registry: devservers.Registry) -> Any:
    def create(image: str, *, interval: str) -> Remote:
        reference = f"{registry.host}/team/{image}"
        files = {
            "deploy/web.yaml": testing.deployment("web", {"web": f"{reference}:1.0.0"}),
            "policies/web.yaml": testing.policy("web", reference, interval=interval),
        }
        name = f"private-{uuid.uuid4().hex[:10]}.git"
        if request.param == "https":
            server: devservers.GitServer = request.getfixturevalue("private_git")
            bare = devservers.create_repo(server.root, name, files)
            return Remote(server.url(name), bare, {"username": USER,
                                                   "password_env": "TEST_REPO_PASSWORD"},
                          PASSWORD)
        sshd: devservers.SshServer = request.getfixturevalue("private_ssh")
        bare = devservers.create_repo(sshd.client_key.parent, name, files)
        key_body = sshd.client_key.read_text().splitlines()[1]  # a line of the private key
        return Remote(sshd.url(bare), bare, {"ssh_key_file": str(sshd.client_key),
                                             "ssh_known_hosts_file": str(sshd.known_hosts)},
                      key_body)

    return create


def _config(tmp_path: Path, remote: Remote, registry: devservers.Registry, *,
            port: int | None = None) -> Path:
    daemon = {"daemon": {"listen": f"127.0.0.1:{port}", "reload_interval": 3600}} if port else {}
    config = testing.bot_config([{"url": remote.url, **remote.settings}],
                                state_dir=tmp_path / "state", registries=[registry.host],
                                git=testing.GIT_IDENTITY, **daemon)
    return testing.write_json(tmp_path / "bot.yaml", config)


def _env() -> dict[str, str]:
    return {**os.environ, "TEST_REPO_PASSWORD": PASSWORD}


def _assert_not_under(directory: Path, secret: str) -> None:
    """Every file the bot wrote (state DB, clone, askpass helper, logs) lacks the secret."""
    leaks = [str(p) for p in directory.rglob("*")
             if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]
    assert leaks == []


def test_a_private_repository_without_the_password_is_refused(
        private_git: devservers.GitServer, registry: devservers.Registry,
        tmp_path: Path) -> None:
    """The server really requires credentials: the tests below would prove nothing otherwise."""
    name = f"anon-{uuid.uuid4().hex[:10]}.git"
    devservers.create_repo(private_git.root, name, {"README": "private\n"})
    done = subprocess.run(["git", "ls-remote", private_git.url(name)], capture_output=True,
                          text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
                          check=False)
    assert done.returncode != 0
    assert "Authentication failed" in done.stderr or "could not read Username" in done.stderr


def test_the_sshd_refuses_a_client_without_the_key(
        private_ssh: devservers.SshServer, tmp_path: Path) -> None:
    bare = devservers.create_repo(private_ssh.client_key.parent, "nokey.git", {"a": "b\n"})
    command = (f"ssh -o BatchMode=yes -o IdentitiesOnly=yes -i /dev/null "
               f"-o UserKnownHostsFile={private_ssh.known_hosts}")
    done = subprocess.run(["git", "ls-remote", private_ssh.url(bare)], capture_output=True,
                          text=True, env={**os.environ, "GIT_SSH_COMMAND": command},
                          check=False)
    assert done.returncode != 0 and "Permission denied" in done.stderr


def test_run_once_commits_to_a_private_repository_without_leaking_the_secret(
        remote_factory: Any, registry: devservers.Registry, tmp_path: Path) -> None:
    image = f"once{time.monotonic_ns()}"
    devservers.push_image(registry.url, f"team/{image}", "1.0.0")
    devservers.push_image(registry.url, f"team/{image}", "1.1.0")
    remote = remote_factory(image, interval="1h")
    bare = remote.bare
    config = _config(tmp_path, remote, registry)

    done = subprocess.run([sys.executable, "-m", "image_bot", "run", "--once", "--json",
                           "--config", str(config)],
                          capture_output=True, text=True, env=_env(), check=False)

    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)["repositories"][0]["outcomes"]
    assert (outcome["policy"], outcome["status"]) == ("web", "updated")
    assert "1.1.0" in devservers.git("show", "main:deploy/web.yaml", cwd=bare)
    status = subprocess.run([sys.executable, "-m", "image_bot", "status", "--json",
                             "--config", str(config)],
                            capture_output=True, text=True, env=_env(), check=True)
    for text in (done.stdout, done.stderr, status.stdout, status.stderr):
        assert remote.secret not in text
    _assert_not_under(tmp_path, remote.secret)


def test_the_daemon_loads_policies_of_a_private_repository_and_commits(
        remote_factory: Any, registry: devservers.Registry, tmp_path: Path) -> None:
    image = f"daemon{time.monotonic_ns()}"
    devservers.push_image(registry.url, f"team/{image}", "1.0.0")
    remote = remote_factory(image, interval="1s")
    bare = remote.bare
    port = devservers.free_port()
    config = _config(tmp_path, remote, registry, port=port)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "image_bot", "run", "--config",
                                   str(config), "--log-format", "json"],
                                  stdout=log, stderr=subprocess.STDOUT, env=_env())
        try:
            status = _until_scheduled(port, daemon)
            assert status["scheduled"] == 1  # the policies of the private repository loaded
            devservers.push_image(registry.url, f"team/{image}", "1.1.0")
            _until(lambda: "1.1.0" in devservers.git("show", "main:deploy/web.yaml",
                                                     cwd=bare), daemon)
            page = httpx.get(f"http://127.0.0.1:{port}/").text
            api = httpx.get(f"http://127.0.0.1:{port}/api/status").text
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        finally:
            daemon.terminate()
            daemon.wait(30)
    logs = log_path.read_text()
    assert "policies loaded" in logs and "pushed commit" in logs
    assert "could not read Username" not in logs
    assert json.loads(api)["policies"][0]["current"] == "1.1.0"
    for text in (page, api, metrics, logs):
        assert remote.secret not in text
    _assert_not_under(tmp_path, remote.secret)


def _until_scheduled(port: int, daemon: subprocess.Popen[bytes]) -> dict[str, object]:
    found: dict[str, object] = {}

    def scheduled() -> bool:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/api/status")
        except httpx.TransportError:
            return False
        found.update(answer.json())
        return bool(found.get("ready"))

    _until(scheduled, daemon)
    return found


def _until(condition: Callable[[], bool], daemon: subprocess.Popen[bytes]) -> None:
    assert testing.wait_until(lambda: condition() or daemon.poll() is not None)
    assert daemon.poll() is None, "the daemon exited"
