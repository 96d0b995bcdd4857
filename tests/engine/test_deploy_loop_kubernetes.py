"""The deploy loop with the Kubernetes target: the real kubectl against the kmock emulator,
the real registry and git server. A rollout that exceeds its progress deadline is Degraded,
and the bot writes the previous tag back into Git, which the agent then applies.

The emulator runs no controllers: the test plays the Deployment controller by writing
``status`` (as test_sync_kubernetes.py does).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli
from image_bot.config import models
from image_bot.engine import context, cycle, reporting
from image_bot.engine.report import RepositoryReport

pytestmark = [pytest.mark.emulator, pytest.mark.e2e]

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          image: {host}/team/kloop:1.0.0   # updated by image-bot
"""
ROLLED_OUT = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
              "conditions": [{"type": "Progressing", "status": "True",
                              "reason": "NewReplicaSetAvailable"}]}
STUCK = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 0, "availableReplicas": 0,
         "conditions": [{"type": "Progressing", "status": "False",
                         "reason": "ProgressDeadlineExceeded",
                         "message": 'ReplicaSet "web-7d9" has timed out progressing.'}]}


def _sync(url: str, state: Path) -> dict[str, Any]:
    result = CliRunner().invoke(cli.main, [
        "sync", "--repo", url, "--path", "k8s", "--target", "kubernetes", "--once", "--json",
        "--name", "cluster", "--namespace", "default", "--no-validate",
        "--health-timeout", "2s", "--state-dir", str(state)], catch_exceptions=False)
    report: dict[str, Any] = json.loads(result.stdout)["agents"][0]
    return report


def _bot(config: models.BotConfig, agent: dict[str, Any] | None = None) -> RepositoryReport:
    async def go() -> RepositoryReport:
        async with context.Engine.open(config) as engine:
            if agent is not None:  # what the daemon stores for POST /api/agents/cluster
                posted = reporting.parse("cluster", json.dumps(
                    {"interval": 60, "report": agent}).encode())
                engine.state.put_agent_report("cluster", posted.report.to_dict(),
                                              interval=posted.interval, at=0.0)
            done = await cycle.run_once(engine)
            engine.record(done, trigger="test", seconds=0.0)
            return done.repositories[0]
    return asyncio.run(go())


def _image(kube: devservers.KubeEmulator) -> str:
    deployment = kube.objects()[("deployments", "default", "web")]
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def test_a_rollout_past_its_progress_deadline_is_rolled_back_in_git(
    kube: devservers.KubeEmulator, registry: devservers.Registry,
    config_repo: Callable[[dict[str, str]], str], tmp_path: Path,
) -> None:
    host = registry.host
    for tag in ("1.0.0", "1.1.0"):
        devservers.push_image(registry.url, "team/kloop", tag)
    url = config_repo({"k8s/deployment.yaml": DEPLOYMENT.format(host=host),
                       "policies/kloop.yaml": testing.policy("kloop", f"{host}/team/kloop",
                                                                paths=["k8s/**"])})
    config = models.BotConfig.model_validate({
        "repositories": [{"url": url}], "state_dir": str(tmp_path / "bot"),
        "registries": [{"host": host, "insecure": True}]})
    agent_state = tmp_path / "agent"
    # 1. 1.0.0 rolled out; the bot commits 1.1.0; the agent applies it, the rollout is stuck
    _sync(url, agent_state)
    kube.patch("deployments", "default", "web", {"status": ROLLED_OUT})
    [commit] = _bot(config).commits
    _sync(url, agent_state)
    assert _image(kube) == f"{host}/team/kloop:1.1.0"
    kube.patch("deployments", "default", "web", {"status": STUCK})
    report = _sync(url, agent_state)
    [web] = report["services"]
    assert (web["health"], report["revision"]) == ("Degraded", commit), web["error"]
    assert "exceeded its progress deadline" in web["error"]
    # 2. the bot writes 1.0.0 back into Git
    done = _bot(config, report)
    assert [(t.state, t.agent) for t in done.transitions] == [
        ("degraded", "cluster"), ("rolled-back", "cluster")]
    [revert] = done.commits
    # 3. the agent applies the revert; the rollout completes: Synced and Healthy again
    report = _sync(url, agent_state)
    assert report["revision"] == revert
    assert _image(kube) == f"{host}/team/kloop:1.0.0"
    kube.patch("deployments", "default", "web", {"status": ROLLED_OUT})
    report = _sync(url, agent_state)
    [web] = report["services"]
    assert (web["sync"], web["health"]) == ("Synced", "Healthy"), web
    assert subprocess.run(["git", "ls-remote", url, "main"], capture_output=True, text=True,
                          check=True).stdout.split()[0] == revert
