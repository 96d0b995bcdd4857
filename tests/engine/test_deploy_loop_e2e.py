"""The deploy loop end to end: real registry, git server and dockerd; the daemon and the sync
agent as two processes with their own state dirs, the agent reporting over HTTP.

push 1.1.0 → bot commits → agent deploys → bot shows it deployed, with timings → push a
broken 1.2.0 → bot commits → agent rolls back locally → bot writes 1.1.0 back into Git
and declines 1.2.0 → agent Synced again → push 1.3.0 → deployed. A local receiver gets the
signed notifications; bad reports are refused and change nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

import devservers
import testing
from image_bot.engine import reporting
from image_bot.state import State
from image_bot.sync import docker_target, status

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

AGENT_SECRET = "agent-shared-secret-7"
HOOK_SECRET = "hook-key-456"
WEBHOOK_SECRET = "registry-hook-secret-9"
COMPOSE = """\
services:
  web:
    image: {host}/team/loop:1.0.0   # deployed by image-bot
    command: ["sleep", "3600"]
    network_mode: none
"""


@pytest.fixture(scope="module")
def bot_port() -> int:
    return devservers.free_port()


@pytest.fixture(scope="module")
def notifying_registry(tmp_path_factory: pytest.TempPathFactory,
                       bot_port: int) -> Iterator[devservers.Registry]:
    endpoint = {"name": "image-bot", "url": f"http://127.0.0.1:{bot_port}/webhook/registry",
                "headers": {"Authorization": [f"Bearer {WEBHOOK_SECRET}"]},
                "timeout": "2s", "threshold": 3, "backoff": "1s"}
    server = devservers.start_registry(tmp_path_factory.mktemp("loop-registry"),
                                       extra={"notifications": {"endpoints": [endpoint]}})
    yield server
    server.stop()


@pytest.fixture
def hooks() -> Iterator[devservers.HookReceiver]:
    receiver = devservers.HookReceiver(HOOK_SECRET)
    yield receiver
    receiver.stop()


def _bot(*args: str) -> list[str]:
    return [sys.executable, "-m", "image_bot", *args]


class Bot:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.base}/api/status", timeout=10).json())

    def wait(self, what: str, check: Callable[[dict[str, Any]], Any],
             timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check(self.status())
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {json.dumps(self.status())}")

    def update(self, tag: str, state: str) -> Callable[[dict[str, Any]], Any]:
        return lambda s: next((u for u in s["deployments"]
                               if u["tag"] == tag and u["state"] == state), None)

    def agent(self, name: str) -> Callable[[dict[str, Any]], Any]:
        return lambda s: next((a for a in s["sync"] if a["agent"] == name), None)


def _remove_containers(dockerd: devservers.Dockerd, *, agent: str) -> None:
    client = docker.DockerClient(base_url=dockerd.host)
    try:
        for container in client.containers.list(all=True, filters={
                "label": f"{docker_target.LABEL_AGENT}={agent}"}):
            container.remove(force=True)
    finally:
        client.close()


def _subjects(bare: Path) -> list[str]:
    return devservers.git("log", "--format=%H %s", "main", cwd=bare).splitlines()


def test_the_deploy_loop_with_a_separate_agent_reporting_over_http(
    notifying_registry: devservers.Registry, bot_port: int, dockerd: devservers.Dockerd,
    git_server: devservers.GitServer, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path, hooks: devservers.HookReceiver,
) -> None:
    registry, host = notifying_registry, notifying_registry.host
    image = f"{host}/team/loop"
    devservers.push_busybox_image(registry.url, "team/loop", "1.0.0")
    url = config_repo({"deploy/compose.yaml": COMPOSE.format(host=host),
                       "policies/web.yaml": testing.policy("web", f"{host}/team/loop",
                                                            interval="1h")})
    bare = git_server.root / url.rsplit("/", 1)[1]
    config = tmp_path / "bot.yaml"
    config.write_text(json.dumps({
        "repositories": [{"url": url}], "state_dir": str(tmp_path / "bot-state"),
        "registries": [{"host": host, "insecure": True}],
        "receivers": [{"name": "registry", "kind": "distribution",
                       "secret_env": "TEST_WEBHOOK_SECRET"}],
        "daemon": {"listen": f"127.0.0.1:{bot_port}", "debounce": 0.1},
        "agents": {"secret_env": "TEST_AGENT_SECRET", "stale_after": 3},
        "notifications": [{"name": "ops", "kind": "webhook", "url": hooks.url,
                           "secret_env": "TEST_HOOK_SECRET",
                           "events": ["updated", "deployed", "degraded", "rolled-back"]}],
    }))
    env = {**os.environ, "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "TEST_AGENT_SECRET": AGENT_SECRET, "TEST_HOOK_SECRET": HOOK_SECRET}
    bot_log = (tmp_path / "bot.log").open("wb")
    agent_log = (tmp_path / "agent.log").open("wb")
    daemon = subprocess.Popen(_bot("run", "--config", str(config), "--log-format", "json"),
                              env=env, stderr=bot_log, stdout=subprocess.DEVNULL)
    agent = subprocess.Popen(_bot(
        "sync", "--repo", url, "--path", "deploy", "--name", "edge", "--interval", "1s",
        "--docker-host", dockerd.host, "--state-dir", str(tmp_path / "agent-state"),
        "--healthy-after", "1s", "--health-timeout", "20s", "--stop-timeout", "1",
        "--report-to", f"http://127.0.0.1:{bot_port}", "--report-secret-env",
        "TEST_AGENT_SECRET"), env=env, stderr=agent_log, stdout=subprocess.DEVNULL)
    bot = Bot(bot_port)
    try:
        for _ in range(300):
            assert daemon.poll() is None and agent.poll() is None
            try:
                if httpx.get(f"{bot.base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        bot.wait("the agent's first report",
                 lambda s: (bot.agent("edge")(s) or {}).get("summary", {}).get("health")
                 == "Healthy")

        # 1. push 1.1.0 → the bot commits → the agent deploys → deployed, with timings
        devservers.push_busybox_image(registry.url, "team/loop", "1.1.0")
        deployed = bot.wait("1.1.0 deployed", bot.update("1.1.0", "deployed"))
        assert deployed["old_tag"] == "1.0.0" and deployed["push_to_commit"] is not None
        assert deployed["agents"]["edge"]["commit_to_deployed"] is not None
        print(f"1.1.0: push → commit {deployed['push_to_commit']:.2f}s, commit → deployed "
              f"{deployed['agents']['edge']['commit_to_deployed']:.2f}s")
        metrics = httpx.get(f"{bot.base}/metrics").text
        assert 'image_bot_deploy_seconds_count{phase="commit_to_deployed"} 1.0' in metrics
        assert 'image_bot_deploy_seconds_count{phase="push_to_commit"} 1.0' in metrics

        # 2. a broken 1.2.0: committed, rolled back by the agent, then written back in Git
        devservers.push_busybox_image(registry.url, "team/loop", "1.2.0", entrypoint=["false"])
        bot.wait("1.2.0 committed", lambda s: any(u["tag"] == "1.2.0"
                                                  for u in s["deployments"]))
        rolled = bot.wait("1.2.0 rolled back in Git", bot.update("1.2.0", "rolled-back"))
        assert rolled["agents"]["edge"]["state"] == "degraded"
        assert "1.2.0 failed" in rolled["agents"]["edge"]["reason"]
        revert = rolled["rollback"]["commit"]
        subjects = _subjects(bare)
        assert subjects[0] == f"{revert} revert: roll {image} back to 1.1.0"
        # written back right after the broken commit: no cycle in between, no loop after
        assert subjects[1].split()[0] == rolled["commit"]
        shown = devservers.git("show", "main:deploy/compose.yaml", cwd=bare)
        assert f"image: {image}:1.1.0   # deployed by image-bot" in shown
        message = devservers.git("log", "-1", "--format=%B", revert, cwd=bare)
        assert "agent edge reported web degraded" in message
        assert f"Image-Bot-Rollback: web {image} 1.2.0 1.1.0 {rolled['commit']}" in message

        # 3. the agent is Synced again on the revert, and nothing loops
        bot.wait("the agent Synced on the revert", lambda s: (
            (a := bot.agent("edge")(s)) and a["revision"] == revert
            and a["summary"] == {"sync": "Synced", "health": "Healthy", "services": 1}))
        assert _subjects(bare)[0].startswith(revert)

        # 4. a good 1.3.0 goes through
        devservers.push_busybox_image(registry.url, "team/loop", "1.3.0")
        done = bot.wait("1.3.0 deployed", bot.update("1.3.0", "deployed"))
        assert done["old_tag"] == "1.1.0"
        bot.wait("1.3.0 running", lambda s: any(
            sv["image"] == f"{image}:1.3.0" for sv in (bot.agent("edge")(s) or {}).get(
                "services", [])))

        # 5. bad reports are refused and change nothing
        before = [a for a in bot.status()["sync"] if a["agent"] == "edge"]
        good = reporting.body(status.SyncReport("intruder", "docker", url, "main", "deploy"),
                              interval=1)
        endpoint = f"{bot.base}/api/agents/intruder/report"
        assert httpx.post(endpoint, content=good, headers={
            reporting.SIGNATURE_HEADER: reporting.signature("wrong", good)}).status_code == 401
        big = good + b" " * (1_048_576 + 1)
        assert httpx.post(endpoint, content=big, headers={
            reporting.SIGNATURE_HEADER: reporting.signature(AGENT_SECRET, big)}
        ).status_code == 413
        bad = b'{"interval": 1, "report": {"agent": "intruder"}}'
        assert httpx.post(endpoint, content=bad, headers={
            reporting.SIGNATURE_HEADER: reporting.signature(AGENT_SECRET, bad)}
        ).status_code == 400
        after = bot.status()
        assert all(a["agent"] != "intruder" for a in after["sync"])
        assert [a["revision"] for a in after["sync"] if a["agent"] == "edge"] == [
            a["revision"] for a in before]
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        bot_log.close()
        agent_log.close()
        _remove_containers(dockerd, agent="edge")  # the engine is shared by the session
    logs = (tmp_path / "bot.log").read_text() + (tmp_path / "agent.log").read_text()
    assert code == 0, logs
    for secret in (AGENT_SECRET, WEBHOOK_SECRET, HOOK_SECRET):
        assert secret not in logs

    # 6. the notifications: signed, with image, tags, repository, commit, agent, reason
    assert hooks.bad_signatures == 0
    seen = [(e["event"], e["new_tag"]) for e in hooks.events]
    for expected in [("updated", "1.1.0"), ("deployed", "1.1.0"), ("updated", "1.2.0"),
                     ("degraded", "1.2.0"), ("rolled-back", "1.1.0"), ("updated", "1.3.0"),
                     ("deployed", "1.3.0")]:
        assert expected in seen, seen
    degraded = next(e for e in hooks.events if e["event"] == "degraded")
    assert (degraded["image"], degraded["old_tag"], degraded["agent"], degraded["service"],
            degraded["repository"]) == (image, "1.1.0", "edge", "web", url)
    assert "1.2.0 failed" in degraded["reason"] and degraded["commit"] == rolled["commit"]
    back = next(e for e in hooks.events if e["event"] == "rolled-back")
    assert (back["old_tag"], back["new_tag"], back["commit"]) == ("1.2.0", "1.1.0", revert)
    # 7. 1.2.0 stays declined in the bot's state
    with State.in_dir(tmp_path / "bot-state") as state:
        assert "1.2.0" in state.declined("web", image)
