"""Sync agent, Docker target: a real dockerd, the real registry and git server, the real CLI.

The sequence of the issue: deploy v1 → the bot updates the tag in Git → the agent deploys v2
→ a broken v3 (exits at once) is rolled back to v2 and reported Degraded → a hand-killed
container is restarted → a service removed from Git is removed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from click.testing import CliRunner, Result

import devservers
import testing
from image_bot import cli
from image_bot.sync import compose as compose_module
from image_bot.sync import docker_target

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

COMPOSE = """\
# the demo app, as a human wrote it
services:
  web:
    image: {host}/team/{image}:1.0.0   # updated by image-bot
    command: ["httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "/www"]
    network_mode: host
    restart: unless-stopped
    environment:
      GREETING: hello
    labels:
      com.example.team: platform
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:{port}/"]
      interval: 300ms
      timeout: 2s
      retries: 3
  worker:
    image: {host}/team/{image}-worker:1.0.0
    command: sleep 3600
    network_mode: none
    depends_on: [web]
"""

@pytest.fixture
def engine(dockerd: devservers.Dockerd) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=dockerd.host)
    yield client
    client.close()


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


class Agent:
    """``image-bot sync`` against one repository, with quick health settings for tests."""

    def __init__(self, url: str, dockerd: devservers.Dockerd, state: Path, name: str) -> None:
        self.url, self.dockerd, self.state, self.name = url, dockerd, state, name

    def once(self, *extra: str) -> tuple[int, dict[str, Any]]:
        result = _invoke("sync", "--repo", self.url, "--branch", "main", "--path", "deploy",
                         "--target", "docker", "--once", "--json", "--name", self.name,
                         "--docker-host", self.dockerd.host, "--state-dir", str(self.state),
                         "--healthy-after", "1s", "--health-timeout", "15s",
                         "--stop-timeout", "1", *extra)
        report = json.loads(result.stdout)["agents"][0]
        return result.exit_code, report

    def status(self) -> tuple[int, dict[str, Any]]:
        result = _invoke("sync", "status", "--state-dir", str(self.state), "--json")
        return result.exit_code, json.loads(result.stdout)


def _services(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["service"]: s for s in report["services"]}


def _page(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text.strip()


def _edit_repo(url: str, tmp_path: Path, edit: Callable[[Path], None], message: str) -> str:
    clone = tmp_path / "edit"
    if not clone.exists():
        subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    devservers.git("pull", "-q", "--ff-only", cwd=clone)
    edit(clone)
    devservers.git("commit", "-q", "-am", message, cwd=clone)
    devservers.git("push", "-q", "origin", "main", cwd=clone)
    return devservers.git("rev-parse", "HEAD", cwd=clone).strip()


def _head(url: str) -> str:
    return subprocess.run(["git", "ls-remote", url, "refs/heads/main"], check=True,
                          capture_output=True, text=True).stdout.split()[0]


def test_deploy_update_rollback_self_heal_and_prune(
    registry: devservers.Registry, dockerd: devservers.Dockerd, engine: docker.DockerClient,
    config_repo: Callable[[dict[str, str]], str], bot_config: Callable[..., Path],
    tmp_path: Path,
) -> None:
    port = devservers.free_port()
    devservers.push_busybox_image(registry.url, "team/seq", "1.0.0")
    devservers.push_busybox_image(registry.url, "team/seq-worker", "1.0.0")
    url = config_repo({
        "deploy/app/compose.yaml": COMPOSE.format(host=registry.host, image="seq", port=port),
        "policies/web.yaml": testing.policy("web", f"{registry.host}/team/seq",
                                            publish={"mode": "commit", "branch": "main"}),
    })
    bystander = engine.containers.run(f"{registry.host}/team/seq:1.0.0", ["sleep", "3600"],
                                      name="app-bystander", network_mode="none", detach=True)
    agent = Agent(url, dockerd, tmp_path / "sync-state", "seq")

    # 1. deploy v1
    code, report = agent.once()
    assert code == 0, report
    services = _services(report)
    assert {(s["sync"], s["health"], s["action"]) for s in services.values()} == {
        ("Synced", "Healthy", "created")}
    assert services["web"]["revision"] == _head(url)
    assert _page(port) == "team/seq:1.0.0"
    web = engine.containers.get("app-web")
    assert web.labels[docker_target.LABEL_PROJECT] == "app"
    assert web.labels[docker_target.LABEL_SERVICE] == "web"
    assert web.labels[docker_target.LABEL_REVISION] == _head(url)
    assert web.labels[docker_target.LABEL_HASH] == services["web"]["config_hash"]
    assert web.labels["com.example.team"] == "platform"
    assert "GREETING=hello" in web.attrs["Config"]["Env"]
    first_web_id = web.id

    # a second pass changes nothing
    code, report = agent.once()
    assert code == 0
    assert {s["action"] for s in report["services"]} == {"none"}
    assert engine.containers.get("app-web").id == first_web_id

    # 2. the bot updates the tag in Git, the agent deploys v2
    devservers.push_busybox_image(registry.url, "team/seq", "1.1.0")
    bot = _invoke("run", "--once", "--config",
                  str(bot_config(url, registries=[{"host": registry.host, "insecure": True}])))
    assert bot.exit_code == 0, bot.output
    v2_revision = _head(url)
    code, report = agent.once()
    assert code == 0, report
    services = _services(report)
    assert services["web"]["action"] == "updated"
    assert services["web"]["revision"] == v2_revision
    assert services["worker"]["action"] == "none"
    assert _page(port) == "team/seq:1.1.0"
    assert [c.name for c in engine.containers.list(all=True, filters={
        "label": f"{docker_target.LABEL_SERVICE}=web"})] == ["app-web"]

    # 3. a broken v3 (exits at once) is rolled back to v2 and reported Degraded
    devservers.push_busybox_image(registry.url, "team/seq", "1.2.0", entrypoint=["false"])
    bot = _invoke("run", "--once", "--config", str(tmp_path / "bot.yaml"))
    assert bot.exit_code == 0, bot.output
    code, report = agent.once()
    assert code == 1
    web_status = _services(report)["web"]
    assert (web_status["sync"], web_status["health"], web_status["action"]) == (
        "OutOfSync", "Degraded", "rolled-back")
    assert web_status["revision"] == v2_revision
    assert f"{registry.host}/team/seq:1.2.0 failed: container" in web_status["error"]
    assert f"rolled back to the previous container (revision {v2_revision[:12]})" in (
        web_status["error"])
    assert _page(port) == "team/seq:1.1.0"
    assert engine.containers.get("app-web").labels[docker_target.LABEL_REVISION] == v2_revision

    # the failed config is not retried every pass; the status survives in the status file
    code, report = agent.once()
    assert code == 1
    assert _services(report)["web"]["action"] == "none"
    assert _services(report)["web"]["health"] == "Degraded"
    code, status = agent.status()
    assert code == 1
    assert _services(status["agents"][0])["web"]["error"] == web_status["error"]
    assert status["agents"][0]["summary"] == {"sync": "OutOfSync", "health": "Degraded",
                                              "services": 2}

    # 4. a hand-killed container is restarted
    engine.containers.get("app-worker").kill()
    code, report = agent.once()
    worker = _services(report)["worker"]
    assert (worker["sync"], worker["health"], worker["action"]) == (
        "Synced", "Healthy", "restarted")
    assert worker["drift"].startswith("container is exited")
    assert engine.containers.get("app-worker").status == "running"

    # with --no-self-heal drift is only reported
    engine.containers.get("app-worker").kill()
    code, report = agent.once("--no-self-heal")
    assert code == 1
    assert _services(report)["worker"]["sync"] == "OutOfSync"
    assert engine.containers.get("app-worker").status == "exited"
    agent.once()
    assert engine.containers.get("app-worker").status == "running"

    # 5. a service removed from Git is removed (the bystander, not ours, is left alone)
    def drop_worker(clone: Path) -> None:
        compose = clone / "deploy/app/compose.yaml"
        text = compose.read_text()
        compose.write_text(text[: text.index("  worker:")])

    _edit_repo(url, tmp_path, drop_worker, "retire the worker")
    code, report = agent.once("--no-prune")
    assert _services(report)["worker"]["drift"] == "not in Git any more (kept: --no-prune)"
    assert engine.containers.get("app-worker").status == "running"
    code, report = agent.once()
    assert report["removed"] == ["app/worker"]
    assert "worker" not in _services(report)
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get("app-worker")
    bystander.reload()
    assert bystander.status == "running"
    bystander.remove(force=True)


def test_invalid_compose_file_and_unpullable_image_leave_running_containers_alone(
    registry: devservers.Registry, dockerd: devservers.Dockerd, engine: docker.DockerClient,
    config_repo: Callable[[dict[str, str]], str], tmp_path: Path,
) -> None:
    devservers.push_busybox_image(registry.url, "team/safe", "1.0.0")
    service = (f"services:\n  api:\n    image: {registry.host}/team/safe:1.0.0\n"
               f"    command: sleep 3600\n    network_mode: none\n")
    url = config_repo({"deploy/safe.yaml": service})
    agent = Agent(url, dockerd, tmp_path / "sync-state", "safe")
    assert agent.once()[0] == 0
    running = engine.containers.get("safe-api")

    _edit_repo(url, tmp_path, lambda clone: (clone / "deploy/safe.yaml").write_text(
        service + "    ports: [banana]\n"), "break the file")
    code, report = agent.once()

    assert code == 1
    assert report["errors"] == [
        "==> File deploy/safe.yaml ==> At service 'api' ==> At key: ports[0]: 'banana' is "
        "not HOST_IP:HOST_PORT:PORT[/PROTO]"]
    assert _services(report)["api"]["sync"] == "OutOfSync"
    assert engine.containers.get("safe-api").id == running.id  # neither pruned nor touched

    _edit_repo(url, tmp_path, lambda clone: (clone / "deploy/safe.yaml").write_text(
        service.replace("1.0.0", "${SAFE_TAG:?set SAFE_TAG}") + "    build: .\n"
        "    mem_limit: lots\n"), "three problems at once")
    code, report = agent.once()

    assert code == 1
    assert report["errors"] == [
        "==> File deploy/safe.yaml ==> At service 'api' ==> At key: image: required variable "
        "SAFE_TAG is unset or empty: set SAFE_TAG"]
    _edit_repo(url, tmp_path, lambda clone: (clone / "deploy/safe.yaml").write_text(
        service + "    colour: blue\n"), "not a Compose key")
    code, report = agent.once()

    assert code == 1
    assert report["errors"][0].splitlines() == [
        "==> File deploy/safe.yaml ==> At service 'api' ==> At key: colour: not a Compose key"]
    _edit_repo(url, tmp_path, lambda clone: (clone / "deploy/safe.yaml").write_text(
        service + "    build: .\n    mem_limit: lots\n"), "two problems")
    code, report = agent.once()

    assert code == 1
    assert report["errors"][0].splitlines() == [
        "==> File deploy/safe.yaml ==> At service 'api' ==> At key: build: the sync agent "
        "does not build images (build images in CI; give an `image:`)",
        "==> File deploy/safe.yaml ==> At service 'api' ==> At key: mem_limit: 'lots' is not "
        "a size like 512m or 1g"]
    assert engine.containers.get("safe-api").id == running.id

    _edit_repo(url, tmp_path, lambda clone: (clone / "deploy/safe.yaml").write_text(
        service.replace("safe:1.0.0", "safe:9.9.9")), "an image that does not exist")
    code, report = agent.once()

    assert code == 1
    api = _services(report)["api"]
    assert api["error"].startswith(f"docker: pulling {registry.host}/team/safe:9.9.9: ")
    assert "manifest unknown" in api["error"]
    assert engine.containers.get("safe-api").id == running.id
    assert engine.containers.get("safe-api").status == "running"
    running.remove(force=True)


def test_sync_reports_an_unreachable_engine_and_keeps_the_last_status(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    url = config_repo({"deploy/x.yaml": "services:\n  a:\n    image: busybox:1\n"})
    result = _invoke("sync", "--repo", url, "--path", "deploy", "--once", "--json",
                     "--docker-host", f"unix://{tmp_path}/nothing.sock",
                     "--state-dir", str(tmp_path / "s"), "--name", "down")

    assert result.exit_code == 1
    report = json.loads(result.stdout)["agents"][0]
    assert len(report["errors"]) == 1
    assert report["errors"][0].startswith("docker: ")
    assert "engine unreachable" in report["errors"][0]
    assert report["revision"] == _head(url)
    assert json.loads(_invoke("sync", "status", "--state-dir", str(tmp_path / "s"),
                              "--json").stdout)["agents"][0]["errors"] == report["errors"]


def test_pulls_use_the_registry_credentials_of_the_bot_config(
    auth_registry: devservers.Registry, dockerd: devservers.Dockerd,
    engine: docker.DockerClient, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    devservers.push_busybox_image(auth_registry.url, "team/private", "1.0.0",
                                  auth=("tester", "s3cret-pw"))
    url = config_repo({"deploy/priv.yaml": (
        f"services:\n  app:\n    image: {auth_registry.host}/team/private:1.0.0\n"
        f"    command: sleep 3600\n    network_mode: none\n")})
    config = bot_config(url, registries=[{
        "host": auth_registry.host, "insecure": True,
        "username_env": "REG_USER", "password_env": "REG_PASSWORD"}])
    agent = Agent(url, dockerd, tmp_path / "sync-state", "priv")

    code, report = agent.once("--config", str(config))
    assert code == 1
    error = _services(report)["app"]["error"]
    assert error.startswith(f"docker: pulling {auth_registry.host}/team/private:1.0.0: ")

    monkeypatch.setenv("REG_USER", "tester")
    monkeypatch.setenv("REG_PASSWORD", "s3cret-pw")
    code, report = agent.once("--config", str(config))

    assert code == 0, report
    assert _services(report)["app"]["action"] == "created"
    assert "s3cret-pw" not in json.dumps(report)
    engine.containers.get("priv-app").remove(force=True)


def test_a_container_changed_or_removed_by_hand_is_recreated_from_git(
    registry: devservers.Registry, dockerd: devservers.Dockerd, engine: docker.DockerClient,
    config_repo: Callable[[dict[str, str]], str], tmp_path: Path,
) -> None:
    devservers.push_busybox_image(registry.url, "team/drift", "1.0.0")
    url = config_repo({"deploy/drift.yaml": (
        f"services:\n  job:\n    image: {registry.host}/team/drift:1.0.0\n"
        f"    command: sleep 3600\n    network_mode: none\n    restart: unless-stopped\n")})
    agent = Agent(url, dockerd, tmp_path / "sync-state", "drift")
    assert agent.once()[0] == 0
    original = engine.containers.get("drift-job")

    original.update(restart_policy={"Name": "no"})
    code, report = agent.once("--no-self-heal")
    job = _services(report)["job"]
    assert (code, job["sync"], job["drift"]) == (
        1, "OutOfSync", "restart policy changed by hand to no")
    assert engine.containers.get("drift-job").id == original.id

    code, report = agent.once()
    job = _services(report)["job"]
    assert (code, job["sync"], job["action"]) == (0, "Synced", "updated")
    replacement = engine.containers.get("drift-job")
    assert replacement.id != original.id
    assert replacement.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

    replacement.remove(force=True)
    code, report = agent.once("--no-self-heal")
    job = _services(report)["job"]
    assert (code, job["health"], job["drift"]) == (1, "Missing", "container removed by hand")
    code, report = agent.once()
    assert (code, _services(report)["job"]["action"]) == (0, "created")
    assert engine.containers.get("drift-job").status == "running"
    engine.containers.get("drift-job").remove(force=True)


ORDERED = """\
x-host: &host
  network_mode: host
  restart: "no"
services:
  migrate:
    image: {host}/team/ord:1.0.0
    command: ["true"]
    network_mode: none
  db:
    <<: *host
    image: {host}/team/ord-db:${{DB_TAG:-1.0.0}}
    command: ["httpd", "-f", "-p", "127.0.0.1:{db_port}", "-h", "/www"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:{db_port}/"]
      interval: 300ms
  api:
    image: {host}/team/ord:{api_tag}
    command: sleep 3600
    network_mode: none
    depends_on:
      db: {{condition: service_healthy}}
      migrate: {{condition: service_completed_successfully}}
  web:
    image: {host}/team/ord:{api_tag}
    command: sleep 3600
    network_mode: none
    depends_on: [api]
  other:
    image: {host}/team/ord:{api_tag}
    command: sleep 3600
    network_mode: none
"""


def _started(engine: docker.DockerClient, name: str, key: str = "StartedAt") -> str:
    """Docker's UTC timestamp with the fraction padded to 9 digits, so strings compare."""
    stamp = str(engine.containers.get(name).attrs["State"][key])
    assert stamp.endswith("Z"), stamp
    base, _, fraction = stamp.removesuffix("Z").partition(".")
    return f"{base}.{fraction:0<9}"


def test_depends_on_conditions_order_the_deploy_and_a_failed_service_rolls_back_alone(
    registry: devservers.Registry, dockerd: devservers.Dockerd, engine: docker.DockerClient,
    config_repo: Callable[[dict[str, str]], str], tmp_path: Path,
) -> None:
    for tag in ("1.0.0", "1.1.0"):
        devservers.push_busybox_image(registry.url, "team/ord", tag)
    devservers.push_busybox_image(registry.url, "team/ord-db", "1.0.0")
    devservers.push_busybox_image(registry.url, "team/ord-db", "2.0.0", entrypoint=["false"])
    port = devservers.free_port()

    def text(api_tag: str) -> str:
        return ORDERED.format(host=registry.host, db_port=port, api_tag=api_tag)

    url = config_repo({"deploy/ord/compose.yaml": text("1.0.0")})
    agent = Agent(url, dockerd, tmp_path / "sync-state", "ord")

    # 1. deploy: api starts only once db is healthy and migrate has exited 0
    code, report = agent.once()
    assert code == 0, report
    assert {s["service"]: s["action"] for s in report["services"]} == {
        "migrate": "created", "db": "created", "api": "created", "web": "created",
        "other": "created"}
    assert _services(report)["migrate"]["health"] == "Healthy"
    api_started = _started(engine, "ord-api")
    assert api_started >= _started(engine, "ord-migrate", "FinishedAt")
    assert api_started >= _started(engine, "ord-db")
    assert _started(engine, "ord-web") >= api_started
    assert engine.containers.get("ord-migrate").status == "exited"  # a finished job is fine

    code, report = agent.once()
    assert code == 0, report
    assert {s["action"] for s in report["services"]} == {"none"}

    # 2. db's new image (from .env) dies: db rolls back alone, api (service_healthy) waits,
    # the others update
    def update(clone: Path) -> None:
        (clone / "deploy/ord/.env").write_text("DB_TAG=2.0.0\n")
        (clone / "deploy/ord/compose.yaml").write_text(text("1.1.0"))

    def add_env(clone: Path) -> None:
        update(clone)
        devservers.git("add", "deploy/ord/.env", cwd=clone)

    _edit_repo(url, tmp_path, add_env, "db 2.0.0 (broken), api 1.1.0")
    code, report = agent.once()
    services = _services(report)
    assert code == 1
    assert (services["db"]["action"], services["db"]["health"]) == ("rolled-back", "Degraded")
    assert services["api"]["action"] == "none"
    assert services["api"]["error"] == (
        "not updated: depends on 'db' (service_healthy), which is Degraded")
    assert services["api"]["image"] == f"{registry.host}/team/ord:1.0.0"
    assert (services["other"]["action"], services["other"]["health"]) == ("updated", "Healthy")
    assert services["migrate"]["action"] == "none"
    assert services["web"]["action"] == "updated"  # service_started: the old api still runs
    assert engine.containers.get("ord-db").labels[docker_target.LABEL_IMAGE].endswith(
        "ord-db:1.0.0")
    assert engine.containers.get("ord-db").status == "running"
    for container in engine.containers.list(all=True, filters={
            "label": f"{docker_target.LABEL_AGENT}=ord"}):
        container.remove(force=True)


def test_a_crash_mid_update_keeps_the_previous_container_until_the_successor_is_healthy(
    registry: devservers.Registry, dockerd: devservers.Dockerd, engine: docker.DockerClient,
    config_repo: Callable[[dict[str, str]], str], tmp_path: Path,
) -> None:
    """Issue 13 item 9: the state ``kill -9`` leaves between starting the new container and
    judging it (``X-previous`` stopped, ``X`` starting); the next pass rolls back."""
    devservers.push_busybox_image(registry.url, "team/crash", "1.0.0")
    devservers.push_busybox_image(registry.url, "team/crash", "2.0.0", entrypoint=["false"])
    text = (f"services:\n  app:\n    image: {registry.host}/team/crash:{{tag}}\n"
            f"    command: sleep 3600\n    network_mode: none\n")
    url = config_repo({"deploy/crash.yaml": text.format(tag="1.0.0")})
    agent = Agent(url, dockerd, tmp_path / "sync-state", "crash")
    assert agent.once()[0] == 0
    v1 = engine.containers.get("crash-app")
    v1_revision = v1.labels[docker_target.LABEL_REVISION]
    v2_revision = _edit_repo(url, tmp_path, lambda clone: (clone / "deploy/crash.yaml")
                             .write_text(text.format(tag="2.0.0")), "v2 (dies at once)")

    # the pass that crashed: it set v1 aside and started v2, then died before judging it
    target = docker_target.DockerTarget(docker_target.DockerSettings(agent="crash"),
                                        client=engine)
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", url, str(checkout)], check=True)
    (app,) = compose_module.load(checkout, "deploy").applications
    target._pull(app.services[0].image)
    target._set_aside(v1)
    target._create(app.services[0], v2_revision).start()

    code, report = agent.once()

    app_status = _services(report)["app"]
    assert code == 1
    assert (app_status["action"], app_status["health"]) == ("rolled-back", "Degraded")
    assert app_status["revision"] == v1_revision
    assert f"{registry.host}/team/crash:2.0.0 failed: container exited" in app_status["error"]
    running = engine.containers.get("crash-app")
    assert (running.id, running.status) == (v1.id, "running")
    assert [c.name for c in engine.containers.list(all=True, filters={
        "label": f"{docker_target.LABEL_AGENT}=crash"})] == ["crash-app"]

    # the failed config is not retried; the next commit is
    assert _services(agent.once()[1])["app"]["action"] == "none"
    _edit_repo(url, tmp_path, lambda clone: (clone / "deploy/crash.yaml").write_text(
        text.format(tag="1.0.0").replace("sleep 3600", "sleep 3601")), "v1 again")
    code, report = agent.once()
    assert (code, _services(report)["app"]["action"]) == (0, "updated")
    engine.containers.get("crash-app").remove(force=True)
