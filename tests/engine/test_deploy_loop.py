"""The deploy loop in process: real registry and git server, agent reports as the bot gets them.

Bot commits followed to agents (committed → deployed / degraded), the rollback in Git (only
the lines the bot wrote, declined, never looping, skipped where a human changed the line),
and the notifications it sends. The agent itself (Docker) runs in test_deploy_loop_e2e.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import devservers
import fakeforge
import testing
from image_bot.config import models
from image_bot.engine import context, cycle, deployments, promotion, tracking
from image_bot.engine.report import CycleReport
from image_bot.publish import publishing
from image_bot.publish import workspace as workspaces
from image_bot.sync import status
from image_bot.update import scanning

pytestmark = pytest.mark.e2e

HOOK_SECRET = "hook-key-123"
DEPLOYMENT = """\
services:
  web:
    image: {host}/team/{image}:1.0.0   # deployed by image-bot
  db:
    image: {host}/team/db:5.0.0
"""
POLICY = """\
apiVersion: image-bot/v1
kind: ImagePolicy
metadata: {{name: {image}}}
spec:
  image: {host}/team/{image}
  select: {{semver: {{range: "^1.0"}}}}
  paths: ["deploy/**"]
{extra}"""


@pytest.fixture
def hooks() -> Iterator[devservers.HookReceiver]:
    receiver = devservers.HookReceiver(HOOK_SECRET)
    yield receiver
    receiver.stop()


def _config(url: str, registry: devservers.Registry, state_dir: Path,
            hook_url: str | None = None) -> models.BotConfig:
    notifications = [{"name": "hook", "kind": "webhook", "url": hook_url,
                      "secret_env": "TEST_HOOK_SECRET", "retries": 2, "backoff": 0}] \
        if hook_url else []
    return models.BotConfig.model_validate({
        "repositories": [{"url": url}], "state_dir": str(state_dir),
        "registries": [{"host": registry.host, "insecure": True}],
        "agents": {"secret_env": "TEST_AGENT_SECRET"}, "notifications": notifications,
    })


def _one_policy(registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
                tmp_path: Path, image: str, *, deploy: str = "deploy/compose.yaml",
                hook_url: str | None = None) -> tuple[str, models.BotConfig]:
    """``team/<image>`` at 1.0.0 and 1.1.0, a config repository deploying 1.0.0 with one
    policy for it: its URL and a bot config for it."""
    host = registry.host
    for tag in ("1.0.0", "1.1.0"):
        devservers.push_image(registry.url, f"team/{image}", tag)
    url = config_repo({deploy: DEPLOYMENT.format(host=host, image=image),
                       f"policies/{image}.yaml": POLICY.format(host=host, image=image,
                                                               extra="")})
    return url, _config(url, registry, tmp_path / "state", hook_url)


def _run(config: models.BotConfig, *, report: status.SyncReport | None = None,
         local: bool = False) -> CycleReport:
    """One bot run; ``report`` as an agent posted it, or (``local``) as an agent sharing the
    state dir wrote it."""
    async def go() -> CycleReport:
        async with context.Engine.open(config) as engine:
            if report is not None and local:
                status.write(status.folder(config.state_dir) / f"{report.agent}.json",
                             report)
            elif report is not None:
                engine.state.put_agent_report(report.agent, report.to_dict(), interval=60,
                                              at=time.time())
            done = await cycle.run_once(engine)
            engine.record(done, trigger="test", seconds=0.0)
            return done
    return asyncio.run(go())


def _forget_registration(config: models.BotConfig, url: str, *, updates: bool) -> None:
    """Make the next run register from Git again: a registered tip this clone never had
    (the last HISTORY commits are read), and (``updates``) no tracked updates."""
    async def forget() -> None:
        async with context.Engine.open(config) as engine:
            if updates:
                with engine.state.transaction() as db:
                    db.execute("DELETE FROM updates")
            engine.state.put_updates([], registered=(url, "main", "0" * 40))
    asyncio.run(forget())


def _declined(config: models.BotConfig, policy: str, image: str) -> set[str]:
    async def read() -> set[str]:
        async with context.Engine.open(config) as engine:
            return engine.state.declined(policy, image)
    return asyncio.run(read())


def _clone(url: str, where: Path) -> Path:
    if where.exists():
        devservers.git("fetch", "-q", "origin", cwd=where)
        devservers.git("reset", "-q", "--hard", "origin/main", cwd=where)
    else:
        subprocess.run(["git", "clone", "-q", url, str(where)], check=True)
    return where


def _head(url: str, tmp_path: Path) -> str:
    return devservers.git("rev-parse", "HEAD", cwd=_clone(url, tmp_path / "check")).strip()


def _agent(url: str, revision: str, *, image: str, sync: str = "Synced",
           health: str = "Healthy", action: str = "none", error: str | None = None,
           path: str = "deploy") -> status.SyncReport:
    services = (
        status.ServiceStatus("deploy", "web", sync, health,  # type: ignore[arg-type]
                             revision=revision, image=image, action=action, error=error),
        status.ServiceStatus("deploy", "db", "Synced", "Healthy", revision=revision,
                             image=image.rsplit("/", 2)[0] + "/team/db:5.0.0"),
    )
    return status.SyncReport(agent="edge-1", target="docker", repository=url, branch="main",
                             path=path, revision=revision, started_at=time.time() - 1,
                             finished_at=time.time(), services=services)


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_AGENT_SECRET", "agent-secret")
    monkeypatch.setenv("TEST_HOOK_SECRET", HOOK_SECRET)


@pytest.mark.usefixtures("secrets_env")
def test_commit_deployed_degraded_rolled_back_in_git_then_a_newer_version(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path, hooks: devservers.HookReceiver,
) -> None:
    host = registry.host
    url, config = _one_policy(registry, config_repo, tmp_path, "loop", hook_url=hooks.url)
    image = f"{host}/team/loop"
    # 1. 1.1.0 committed; an agent at that revision running it: deployed, with timings
    first = _run(config)
    [c110] = first.repositories[0].commits
    done = _run(config, report=_agent(url, c110, image=f"{image}:1.1.0"))
    [deployed] = done.repositories[0].transitions
    assert (deployed.state, deployed.tag, deployed.old_tag, deployed.agent) == (
        "deployed", "1.1.0", "1.0.0", "edge-1")
    assert deployed.commit_to_deployed is not None and deployed.push_to_commit is not None
    # 2. a broken 1.2.0: committed, and the agent rolled it back locally
    devservers.push_image(registry.url, "team/loop", "1.2.0")
    [c120] = _run(config).repositories[0].commits
    reason = f"deploy-web-1: {image}:1.2.0 failed: container exited with code 1"
    rolled = _run(config, report=_agent(
        url, c120, image=f"{image}:1.1.0", sync="OutOfSync", health="Degraded",
        action="rolled-back", error=reason)).repositories[0]
    states = [t.state for t in rolled.transitions]
    assert states == ["degraded", "rolled-back"]
    [revert] = rolled.commits
    # 3. Git holds 1.1.0 again: one splice on the line the bot wrote, a message saying why
    clone = _clone(url, tmp_path / "check")
    assert f"image: {image}:1.1.0   # deployed by image-bot" in (
        clone / "deploy/compose.yaml").read_text()
    assert devservers.git("diff", "--stat", f"{revert}^", revert, cwd=clone).count("|") == 1
    message = devservers.git("log", "-1", "--format=%B", revert, cwd=clone)
    assert "edge-1" in message and "web" in message and "exited with code 1" in message
    assert f"Image-Bot-Rollback: loop {image} 1.2.0 1.1.0 {c120}" in message
    assert "Image-Bot-Update:" not in message
    # 4. 1.2.0 is declined: further runs change nothing (never loops)
    again = _run(config, report=_agent(url, revert, image=f"{image}:1.1.0"))
    assert again.repositories[0].commits == ()
    assert [o.status for o in again.repositories[0].outcomes] == ["current"]
    assert _declined(config, "loop", image) == {"1.2.0"}
    # 5. a newer good version goes through and is deployed
    devservers.push_image(registry.url, "team/loop", "1.3.0")
    [c130] = _run(config).repositories[0].commits
    final = _run(config, report=_agent(url, c130, image=f"{image}:1.3.0"))
    assert [(t.state, t.tag) for t in final.repositories[0].transitions] == [
        ("deployed", "1.3.0")]
    # 6. the status: each update's state, newest first
    async def shown() -> list[dict[str, Any]]:
        async with context.Engine.open(config) as engine:
            return deployments.recent(engine.state)
    rows = asyncio.run(shown())
    assert [(r["tag"], r["state"]) for r in rows] == [
        ("1.3.0", "deployed"), ("1.2.0", "rolled-back"), ("1.1.0", "deployed")]
    assert rows[0]["agents"]["edge-1"]["commit_to_deployed"] is not None
    async def events() -> list[tuple[str, str]]:
        async with context.Engine.open(config) as engine:
            return [(kind, data.get("tag", "")) for _, kind, data in engine.state.events(200)
                    if kind in ("deployed", "degraded", "rolled-back")]
    assert asyncio.run(events())[::-1] == [("deployed", "1.1.0"), ("degraded", "1.2.0"),
                                           ("rolled-back", "1.2.0"), ("deployed", "1.3.0")]
    # 7. notifications: signed, in order, with the fields a person needs
    assert hooks.bad_signatures == 0
    assert hooks.kinds() == ["updated", "deployed", "updated", "degraded", "rolled-back",
                             "updated", "deployed"]
    rollback = hooks.events[4]
    assert (rollback["image"], rollback["old_tag"], rollback["new_tag"],
            rollback["agent"], rollback["commit"]) == (image, "1.2.0", "1.1.0", "edge-1",
                                                       revert)
    assert "exited with code 1" in rollback["reason"]
    assert hooks.events[0]["commit"] == c110 and hooks.events[0]["repository"] == url
    assert "agent-secret" not in json.dumps(hooks.events)


@pytest.mark.usefixtures("secrets_env")
def test_no_rollback_where_a_human_changed_the_line_or_the_policy_says_never(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    git_server: devservers.GitServer, tmp_path: Path,
) -> None:
    host = registry.host
    for tag in ("1.0.0", "1.1.0"):
        devservers.push_image(registry.url, "team/human", tag)
        devservers.push_image(registry.url, "team/never", tag)
    url = config_repo({
        "deploy/compose.yaml": DEPLOYMENT.format(host=host, image="human"),
        "deploy/never.yaml": "services:\n  web:\n    image: " + f"{host}/team/never:1.0.0\n",
        "policies/human.yaml": POLICY.format(host=host, image="human", extra=""),
        "policies/never.yaml": POLICY.format(host=host, image="never",
                                             extra="  rollback: {on: never}\n"),
    })
    config = _config(url, registry, tmp_path / "state")
    [commit] = _run(config).repositories[0].commits
    # a human pins the line by hand (same tag, a different comment) after the bot's commit
    clone = _clone(url, tmp_path / "human")
    compose = clone / "deploy/compose.yaml"
    compose.write_text(compose.read_text().replace("# deployed by image-bot", "# pinned"))
    devservers.git("commit", "-qam", "pin web by hand", cwd=clone)
    devservers.git("push", "-q", "origin", "HEAD:main", cwd=clone)
    head = devservers.git("rev-parse", "HEAD", cwd=clone).strip()
    broken = _agent(url, head, image=f"{host}/team/human:1.0.0", sync="OutOfSync",
                    health="Degraded", action="rolled-back", error="exited at once")
    broken = status.SyncReport(**{**{f: getattr(broken, f) for f in broken.__slots__},
                                  "services": (*broken.services, status.ServiceStatus(
                                      "deploy", "never", "OutOfSync", "Degraded",
                                      image=f"{host}/team/never:1.0.0",
                                      action="rolled-back", error="exited at once"))})
    done = _run(config, report=broken).repositories[0]
    assert sorted((t.policy, t.state) for t in done.transitions) == [
        ("human", "degraded"), ("human", "rolled-back"), ("never", "degraded")]
    assert done.commits == ()  # nothing written: the human's line, and rollback: never
    assert _head(url, tmp_path) == head
    skipped = next(t for t in done.transitions if t.state == "rolled-back")
    assert "no longer written where" in skipped.reason and commit[:12] in skipped.reason
    # the versions are declined all the same, and a second pass does nothing new
    assert _declined(config, "human", f"{host}/team/human") == {"1.1.0"}
    again = _run(config, report=broken).repositories[0]
    assert (again.commits, again.transitions) == ((), ())


@pytest.mark.usefixtures("secrets_env")
def test_a_suspended_policy_is_judged_but_never_rolled_back(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    host = registry.host
    url, config = _one_policy(registry, config_repo, tmp_path, "frozen")
    _run(config)
    # an operator freezes the policy (a commit to its file), then the agent reports 1.1.0
    # degraded at that revision
    clone = _clone(url, tmp_path / "freeze")
    with (clone / "policies/frozen.yaml").open("a") as policy:
        policy.write("  suspend: true\n")
    devservers.git("commit", "-qam", "freeze frozen", cwd=clone)
    devservers.git("push", "-q", "origin", "HEAD:main", cwd=clone)
    head = devservers.git("rev-parse", "HEAD", cwd=clone).strip()
    image = f"{host}/team/frozen"

    done = _run(config, report=_agent(url, head, image=f"{image}:1.1.0", sync="OutOfSync",
                                      health="Degraded", error="exited at once"))

    repo = done.repositories[0]
    assert [(t.policy, t.state) for t in repo.transitions] == [("frozen", "degraded")]
    assert [(o.policy, o.status) for o in repo.outcomes] == [("frozen", "suspended")]
    assert repo.commits == () and _head(url, tmp_path) == head
    assert f"{image}:1.1.0" in (_clone(url, tmp_path / "check") / "deploy/compose.yaml"
                                ).read_text()
    assert _declined(config, "frozen", image) == set()


PR_POLICY = """\
apiVersion: image-bot/v1
kind: ImagePolicy
metadata: {{name: app}}
spec:
  image: {host}/team/{image}
  select: {{semver: {{range: "^1.0"}}}}
  paths: ["deploy/**"]
  publish: {{mode: pull-request}}
"""


@pytest.mark.usefixtures("secrets_env")
def test_pull_request_mode_proposes_the_rollback_of_a_merged_update(
    registry: devservers.Registry, git_server: devservers.GitServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FORGE_TOKEN", "ghp_fake_token_for_rollback_1")
    image = f"{registry.host}/team/prloop"
    for tag in ("1.0.0", "1.1.0"):
        devservers.push_image(registry.url, "team/prloop", tag)
    bare = devservers.create_repo(git_server.root, "prloop.git", {
        "deploy/compose.yaml": DEPLOYMENT.format(host=registry.host, image="prloop"),
        "policies/app.yaml": PR_POLICY.format(host=registry.host, image="prloop")})
    forge = fakeforge.FakeGitHub(bare=bare, project="acme/config",
                                 token="ghp_fake_token_for_rollback_1").start()
    try:
        url = git_server.url("prloop.git")
        config = models.BotConfig.model_validate({
            "repositories": [{"url": url, "forge": forge.forge_config()}],
            "registries": [{"host": registry.host, "insecure": True}],
            "state_dir": str(tmp_path / "state"),
            "agents": {"secret_env": "TEST_AGENT_SECRET"}})
        # 1. the update is proposed, and a human merges it
        _run(config)
        [proposal] = forge.open_pulls()
        forge.merge(proposal["number"])
        merged = devservers.git("rev-parse", "main", cwd=bare).strip()
        # 2. an agent at the merge reports the new version degraded
        report = _agent(url, merged, image=f"{image}:1.0.0", sync="OutOfSync",
                        health="Degraded", action="rolled-back", error="exited at once")
        done = _run(config, report=report).repositories[0]
        assert [t.state for t in done.transitions] == ["degraded", "rolled-back"]
        # 3. the rollback is a pull request; the target branch is left to a human
        assert devservers.git("rev-parse", "main", cwd=bare).strip() == merged
        [rollback] = forge.open_pulls()
        assert rollback["head"]["ref"] == "image-bot/rollback-app"
        assert rollback["title"] == f"revert: roll {image} back to 1.0.0"
        assert "exited at once" in rollback["body"]
        assert (done.transitions[1].rollback_url or "").endswith(f"/pull/{rollback['number']}")
        shown = devservers.git("show", "image-bot/rollback-app:deploy/compose.yaml", cwd=bare)
        assert f"image: {image}:1.0.0   # deployed by image-bot" in shown
        assert _declined(config, "app", image) == {"1.1.0"}
        # 4. nothing more on the next run: no second rollback PR, no new proposal of 1.1.0
        again = _run(config, report=report).repositories[0]
        assert again.transitions == () and len(forge.open_pulls()) == 1
    finally:
        forge.stop()
        assert forge.errors == [], "the bot sent requests a real forge would refuse"


@pytest.mark.usefixtures("secrets_env")
def test_a_kubernetes_agent_report_degraded_rollout_feeds_the_same_loop(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    host = registry.host
    url, config = _one_policy(registry, config_repo, tmp_path, "kube", deploy="deploy/web.yaml")
    [commit] = _run(config).repositories[0].commits
    # what the kubernetes target reports: one object per workload, its images joined
    deployment = status.ServiceStatus(
        "deploy", "Deployment/default/web", "Synced", "Degraded", revision=commit,
        image=f"{host}/team/kube:1.1.0, {host}/team/sidecar:2.0.0", action="applied",
        error="rollout failed: deployment \"web\" exceeded its progress deadline")
    report = status.SyncReport(agent="cluster", target="kubernetes", repository=url,
                               branch="main", path="deploy", revision=commit,
                               finished_at=time.time(), services=(deployment,))
    done = _run(config, report=report).repositories[0]
    assert [(t.state, t.service) for t in done.transitions] == [
        ("degraded", "Deployment/default/web"), ("rolled-back", "Deployment/default/web")]
    assert len(done.commits) == 1
    clone = _clone(url, tmp_path / "kube")
    assert f"{host}/team/kube:1.0.0" in (clone / "deploy/web.yaml").read_text()


@pytest.mark.usefixtures("secrets_env")
def test_a_helm_tag_field_is_rolled_back_on_its_own_line_for_a_local_agent(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    host = registry.host
    for tag in ("1.0.0", "1.1.0"):
        devservers.push_image(registry.url, "team/helm", tag)
    values = f"image:\n  repository: {host}/team/helm\n  tag: 1.0.0   # pinned by CI\n"
    url = config_repo({"deploy/values.yaml": values,
                       "policies/helm.yaml": POLICY.format(host=host, image="helm", extra="")})
    config = _config(url, registry, tmp_path / "state")
    [commit] = _run(config).repositories[0].commits
    clone = _clone(url, tmp_path / "helm")
    assert "tag: 1.1.0   # pinned by CI" in (clone / "deploy/values.yaml").read_text()
    broken = status.ServiceStatus("deploy", "Deployment/default/helm", "Synced", "Degraded",
                                  image=f"{host}/team/helm:1.1.0", error="rollout failed")
    done = _run(config, local=True, report=status.SyncReport(  # an agent sharing the state dir
        agent="cluster", target="kubernetes", repository=url, branch="main", path="deploy",
        revision=commit, finished_at=time.time(), services=(broken,))).repositories[0]
    assert [t.state for t in done.transitions] == ["degraded", "rolled-back"]
    assert (_clone(url, tmp_path / "helm") / "deploy/values.yaml").read_text() == values


@pytest.mark.usefixtures("secrets_env")
def test_an_agent_on_its_way_is_pending_and_a_stage_is_healthy_once_every_live_agent_is(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    host = registry.host
    url, config = _one_policy(registry, config_repo, tmp_path, "twohosts")
    image = f"{host}/team/twohosts"
    before = _head(url, tmp_path)
    [c110] = _run(config).repositories[0].commits

    def posted(*reports: tuple[status.SyncReport, float]) -> dict[str, Any]:
        """Post reports (each received ``age`` seconds ago), run once; the tracked update."""
        async def go() -> dict[str, Any]:
            async with context.Engine.open(config) as engine:
                for report, age in reports:
                    engine.state.put_agent_report(report.agent, report.to_dict(), interval=60,
                                                  at=time.time() - age)
                await cycle.run_once(engine)
                [update] = [u for u in engine.state.updates().values() if u["tag"] == "1.1.0"]
                return update
        return asyncio.run(go())

    def agent(name: str, revision: str, tag: str) -> status.SyncReport:
        return dataclasses.replace(_agent(url, revision, image=f"{image}:{tag}"), agent=name)

    # edge-1 runs 1.1.0; edge-2 still runs 1.0.0 at the revision before; "gone" went silent
    # an hour ago (3 intervals of 60 s make an agent stale) and is not waited for
    update = posted((agent("edge-1", c110, "1.1.0"), 0), (agent("edge-2", before, "1.0.0"), 0),
                    (agent("gone", before, "1.0.0"), 3600))
    assert {n: a["state"] for n, a in update["agents"].items()} == {
        "edge-1": "deployed", "edge-2": "pending"}
    assert update["state"] == "deployed"  # the deploy loop's view: deployed somewhere
    assert promotion.runs([update], "twohosts")["1.1.0"].healthy_since is None
    # edge-2 gets there: the stage ran 1.1.0 healthy from edge-2's report on
    update = posted((agent("edge-2", c110, "1.1.0"), 0))
    assert {n: a["state"] for n, a in update["agents"].items()} == {
        "edge-1": "deployed", "edge-2": "deployed"}
    assert promotion.runs([update], "twohosts")["1.1.0"].healthy_since == \
        update["agents"]["edge-2"]["at"]


@pytest.mark.usefixtures("secrets_env")
def test_one_commit_for_two_policies_gives_each_update_only_its_own_files(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    host = registry.host
    for tag in ("1.0.0", "1.1.0"):
        devservers.push_image(registry.url, "team/shared", tag)
    compose = DEPLOYMENT.format(host=host, image="shared")
    url = config_repo({
        "deploy/dev/compose.yaml": compose, "deploy/staging/compose.yaml": compose,
        "policies/p.yaml": "---\n".join(
            testing.policy(name, f"{host}/team/shared", paths=[f"deploy/{name}/**"])
            for name in ("dev", "staging"))})
    config = _config(url, registry, tmp_path / "state")
    [commit] = _run(config).repositories[0].commits  # per-cycle: both policies, one commit

    async def tracked() -> dict[str, Any]:
        async with context.Engine.open(config) as engine:
            return {u["policy"]: (u["files"], u["old_tag"], u["commit"])
                    for u in engine.state.updates().values()}
    assert asyncio.run(tracked()) == {
        "dev": (["deploy/dev/compose.yaml"], "1.0.0", commit),
        "staging": (["deploy/staging/compose.yaml"], "1.0.0", commit)}
    # so an agent of the dev folder judges dev's update only
    report = dataclasses.replace(_agent(url, commit, image=f"{host}/team/shared:1.1.0",
                                        path="deploy/dev"), agent="dev-agent")
    done = _run(config, report=report).repositories[0]
    assert [(t.policy, t.state, t.agent) for t in done.transitions] == [
        ("dev", "deployed", "dev-agent")]


@pytest.mark.usefixtures("secrets_env")
def test_an_update_behind_many_newer_ones_is_judged_and_not_registered_again(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    """Behind 500 newer tracked updates (other repositories, per-cycle commits of hundreds
    of policies) the latest update of a policy is still judged when its agent reports, and
    a bot commit read from Git again is looked up by key: it keeps its state, or it would
    be judged, and announced, once more on every run."""
    host = registry.host
    url, config = _one_policy(registry, config_repo, tmp_path, "busy")
    [commit] = _run(config).repositories[0].commits

    async def newer_elsewhere() -> None:
        async with context.Engine.open(config) as engine:
            engine.state.put_updates(
                (f"other#c{i}#p{i}#img", {"repository": "other", "commit": f"c{i}",
                                          "policy": f"p{i}", "image": "img", "tag": "1",
                                          "state": "committed", "latest": True})
                for i in range(500))
    asyncio.run(newer_elsewhere())
    report = _agent(url, commit, image=f"{host}/team/busy:1.1.0")
    assert [t.state for t in _run(config, report=report).repositories[0].transitions] == [
        "deployed"]

    _forget_registration(config, url, updates=False)
    again = _run(config, report=report).repositories[0]
    assert again.transitions == ()  # deployed already: nothing to judge or announce

    async def stored() -> list[tuple[str, list[str]]]:
        async with context.Engine.open(config) as engine:
            return [(u["state"], sorted(u["agents"])) for u in engine.state.updates(
                limit=10_000).values() if u["repository"] != "other"]
    assert asyncio.run(stored()) == [("deployed", ["edge-1"])]


@pytest.mark.usefixtures("secrets_env")
def test_each_run_reads_only_the_bot_commits_after_the_last_registered_tip(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Registration remembers the target tip it read up to: a run with nothing new reads no
    log, the next commit is read alone (``since..tip``) and takes over from the update
    before it however old that is; a tip Git no longer knows means the last ``HISTORY``."""
    url, config = _one_policy(registry, config_repo, tmp_path, "tip")
    logs: list[str] = []
    run = workspaces.Workspace.run

    def recording(self: workspaces.Workspace, *args: str, **kwargs: Any) -> str:
        if args[:2] == ("log", f"--max-count={tracking.HISTORY}"):
            logs.append(args[-1])  # the revisions read
        return run(self, *args, **kwargs)

    monkeypatch.setattr(workspaces.Workspace, "run", recording)

    async def stored() -> tuple[list[tuple[str, str, bool]], str | None]:
        async with context.Engine.open(config) as engine:
            return ([(u["commit"], u["state"], u["latest"])
                     for u in engine.state.updates().values()],
                    engine.state.registered(url, "main"))

    [c1] = _run(config).repositories[0].commits
    first = logs[0]  # the tip before: the last HISTORY commits, then the new one alone
    assert logs == [first, f"{first}..{c1}"]
    assert asyncio.run(stored()) == ([(c1, "committed", True)], c1)
    logs.clear()
    assert _run(config).repositories[0].commits == ()
    assert logs == []  # nothing new since: no log read

    devservers.push_image(registry.url, "team/tip", "1.2.0")
    [c2] = _run(config).repositories[0].commits
    assert logs == [f"{c1}..{c2}"]
    assert asyncio.run(stored()) == ([(c1, "superseded", False), (c2, "committed", True)], c2)

    _forget_registration(config, url, updates=True)
    logs.clear()
    assert _run(config).repositories[0].commits == ()
    assert logs == [f"{'0' * 40}..{c2}", c2]  # refused, then the last HISTORY commits
    assert sorted(asyncio.run(stored())[0]) == sorted([(c1, "superseded", False),
                                                      (c2, "committed", True)])


@pytest.mark.usefixtures("secrets_env")
def test_a_commit_this_run_pushed_is_registered_from_what_the_edit_read(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The files a pushed commit changed, and what they held before, are the edit's own:
    registering it reads neither from Git, and gives what reading them from Git gives."""
    host = registry.host
    for image in ("own", "side"):
        for tag in ("1.0.0", "1.1.0"):
            devservers.push_image(registry.url, f"team/{image}", tag)
    url = config_repo({
        "deploy/compose.yaml": DEPLOYMENT.format(host=host, image="own"),
        "deploy/side.yaml": f"image: {host}/team/side:1.0.0@sha256:{'a' * 64}\n",
        "policies/own.yaml": POLICY.format(host=host, image="own", extra=""),
        "policies/side.yaml": POLICY.format(host=host, image="side", extra="")})
    config = _config(url, registry, tmp_path / "state")
    reads: list[str] = []
    run = workspaces.Workspace.run

    def recording(self: workspaces.Workspace, *args: str, **kwargs: Any) -> str:
        reads.append(args[0])
        return run(self, *args, **kwargs)

    monkeypatch.setattr(workspaces.Workspace, "run", recording)

    async def tracked() -> dict[str, tuple[Any, ...]]:
        async with context.Engine.open(config) as engine:
            return {u["policy"]: (u["commit"], u["files"], u["old_tag"], u["old_digest"])
                    for u in engine.state.updates().values()}

    [commit] = _run(config).repositories[0].commits
    assert "show" not in reads and "ls-tree" not in reads
    mine = asyncio.run(tracked())
    assert mine == {"own": (commit, ["deploy/compose.yaml"], "1.0.0", None),
                    "side": (commit, ["deploy/side.yaml"], "1.0.0", f"sha256:{'a' * 64}")}

    _forget_registration(config, url, updates=True)  # registered again, from Git this time
    reads.clear()
    _run(config)
    assert "show" in reads and "ls-tree" in reads
    assert asyncio.run(tracked()) == mine


def test_a_pushed_commit_has_its_parents_files_from_the_edit_unless_an_earlier_one_changed_them(
        tmp_path: Path) -> None:
    index = scanning.Index.of(tmp_path, {"a.yaml": b"a: 1\n", "b.yaml": b"b: 1\n"})
    for name in ("a.yaml", "b.yaml"):
        index.read(tmp_path / name)
    done = publishing.Published(commits=("c1", "c2", "c3"),
                                files=(("a.yaml",), ("a.yaml", "b.yaml"), ("c.yaml",)))
    # c2's a.yaml is c1's, not the edit's reading; c.yaml was never read
    assert cycle._parents(done, index) == {"c1": tracking.Before(("a.yaml",), index)}
