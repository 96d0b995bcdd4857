"""Stages end to end: dev → staging → production, one sync agent per stage on the real dockerd.

dev follows the registry (commit mode), staging promotes what ran healthy in dev for 10 m
(commit mode), production promotes what ran healthy in staging for 30 m (pull-request mode
on the GitHub fake: the approval gate). The bot runs in process with a fake clock (the soak
is minutes); the agents run as `image-bot sync --once` processes and their status files are
handed to the bot as posted reports. A good 1.1.0 reaches production only after staging's
soak; a broken 1.2.0 is rolled back in dev and never reaches staging or production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

import devservers
import fakeforge
import testing
from image_bot.config import models
from image_bot.engine import context, cycle, overview
from image_bot.engine.report import RepositoryReport
from image_bot.sync import docker_target, status

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

TOKEN = "ghp_fake_token_for_stages_7"
MINUTE = 60.0
COMPOSE = """\
services:
  web:
    image: {image}:1.0.0   # the {stage} stage
    command: ["sleep", "3600"]
    network_mode: none
"""
STAGES = ("dev", "staging", "prod")


class Stages:
    """The bot (in process, fake clock) and the three agents around one config repository."""

    def __init__(self, config: models.BotConfig, *, url: str, bare: Path, dockerd_host: str,
                 work: Path) -> None:
        self.config, self.url, self.bare = config, url, bare
        self.dockerd_host, self.work = dockerd_host, work
        self.skew = 0.0  # the bot's clock runs ahead of the agents' by this much

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self.skew, UTC)

    def bot(self, *agents: str) -> RepositoryReport:
        """One bot cycle, after the named agents' last reports reached it."""
        async def go() -> RepositoryReport:
            clock = context.Clock(now=self.now)
            async with context.Engine.open(self.config, clock=clock) as engine:
                for name in agents:  # posted by an agent whose clock agrees with the bot's
                    [report] = status.read_all(status.folder(self.work / name))
                    report = dataclasses.replace(report,
                                                 started_at=report.started_at + self.skew,
                                                 finished_at=report.finished_at + self.skew)
                    engine.state.put_agent_report(name, report.to_dict(), interval=60,
                                                  at=time.time() + self.skew)
                done = await cycle.run_once(engine)
                engine.record(done, trigger="test", seconds=0.0)
                return done.repositories[0]
        return asyncio.run(go())

    def pipeline(self) -> dict[str, tuple[str, str | None, list[tuple[str, str | None]]]]:
        """The status page's view of the image, stage by stage in chain order: (state,
        promotion sentence, [(agent, tag it runs)])."""
        async def go() -> dict[str, Any]:
            async with context.Engine.open(self.config) as engine:
                return overview.read(engine.state, self.config,
                                     now=self.now().timestamp())
        [pipeline] = asyncio.run(go())["pipelines"]
        return {s["policy"]: (s["state"], s["promotion"],
                              [(a["agent"], a["tag"]) for a in s["agents"]])
                for s in pipeline["stages"]}

    def sync(self, stage: str) -> status.SyncReport:
        """One pass of the stage's agent (its own process and state dir)."""
        subprocess.run([
            sys.executable, "-m", "image_bot", "sync", "--repo", self.url, "--path",
            f"deploy/{stage}", "--name", stage, "--once", "--docker-host", self.dockerd_host,
            "--state-dir", str(self.work / stage), "--healthy-after", "1s",
            "--health-timeout", "20s", "--stop-timeout", "1"],
            capture_output=True, timeout=120, check=False)
        [report] = status.read_all(status.folder(self.work / stage))
        return report

    def in_git(self, stage: str, ref: str = "main") -> str:
        shown = devservers.git("show", f"{ref}:deploy/{stage}/compose.yaml", cwd=self.bare)
        return shown.split("image: ", 1)[1].split()[0].rsplit(":", 1)[1]

    def tags(self) -> list[str]:
        """The tag each stage's file holds on main, in stage order."""
        return [self.in_git(stage) for stage in STAGES]

    def subjects(self) -> list[str]:
        return devservers.git("log", "--format=%s", "main", cwd=self.bare).splitlines()


@pytest.fixture
def forge_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_TOKEN", TOKEN)


@pytest.fixture
def clean_dockerd(dockerd: devservers.Dockerd) -> Iterator[devservers.Dockerd]:
    yield dockerd
    client = docker.DockerClient(base_url=dockerd.host)
    try:
        for stage in STAGES:  # the engine is shared by the session
            for container in client.containers.list(all=True, filters={
                    "label": f"{docker_target.LABEL_AGENT}={stage}"}):
                container.remove(force=True)
    finally:
        client.close()


def _outcome(report: RepositoryReport, policy: str) -> str:
    found = next(o for o in report.outcomes if o.policy == policy)
    return f"{found.status}: {found.note}"


def _running(report: status.SyncReport) -> tuple[str | None, str, str]:
    [web] = [s for s in report.services if s.service == "web"]
    return (web.image or "").rsplit(":", 1)[1], web.sync, web.health


@pytest.mark.usefixtures("forge_token")
def test_a_good_version_reaches_production_after_the_soak_and_a_bad_one_stops_in_dev(
    registry: devservers.Registry, git_server: devservers.GitServer,
    clean_dockerd: devservers.Dockerd, tmp_path: Path,
) -> None:
    image = f"{registry.host}/team/stages"
    devservers.push_busybox_image(registry.url, "team/stages", "1.0.0")
    policies = "---\n".join([
        testing.policy("dev", image, select={"semver": {"range": "^1"}},
                       paths=["deploy/dev/**"]),
        testing.policy("staging", image, select={"promote": {"from": "dev",
                                                             "healthy-for": "10m"}},
                       paths=["deploy/staging/**"]),
        testing.policy("prod", image, select={"promote": {"from": "staging",
                                                          "healthy-for": "30m"}},
                       paths=["deploy/prod/**"], publish={"mode": "pull-request"})])
    bare = devservers.create_repo(git_server.root, "stages.git", {
        **{f"deploy/{s}/compose.yaml": COMPOSE.format(image=image, stage=s) for s in STAGES},
        "policies/stages.yaml": policies})
    forge = fakeforge.FakeGitHub(bare=bare, project="acme/stages", token=TOKEN).start()
    url = git_server.url("stages.git")
    config = models.BotConfig.model_validate({
        "repositories": [{"url": url, "forge": forge.forge_config()}],
        "registries": [{"host": registry.host, "insecure": True}],
        "state_dir": str(tmp_path / "bot-state"), "agents": {"secret_env": "FORGE_TOKEN"}})
    run = Stages(config, url=url, bare=bare, dockerd_host=clean_dockerd.host, work=tmp_path)
    try:
        for stage in STAGES:  # every stage runs 1.0.0
            assert _running(run.sync(stage)) == ("1.0.0", "Synced", "Healthy")

        # 1. 1.1.0 is pushed: dev takes it from the registry, the later stages wait for it
        devservers.push_busybox_image(registry.url, "team/stages", "1.1.0")
        done = run.bot(*STAGES)
        assert run.tags() == ["1.1.0", "1.0.0", "1.0.0"]
        assert _outcome(done, "staging") == "current: nothing has run healthy in dev yet"
        # 2. dev runs it healthy: staging soaks it
        assert _running(run.sync("dev")) == ("1.1.0", "Synced", "Healthy")
        done = run.bot(*STAGES)
        assert [t.state for t in done.transitions] == ["deployed"]
        assert _outcome(done, "staging").startswith(
            "current: 1.1.0 healthy in dev for 0 s; eligible in 9 m")  # 10 m less a few s
        assert run.tags() == ["1.1.0", "1.0.0", "1.0.0"]
        # 3. after the soak staging promotes it (a commit), and production soaks it there
        run.skew += 11 * MINUTE
        done = run.bot(*STAGES)
        assert _outcome(done, "staging") == "updated: 1.0.0 → 1.1.0 in 1 place(s)"
        assert run.tags() == ["1.1.0", "1.1.0", "1.0.0"]
        assert _running(run.sync("staging")) == ("1.1.0", "Synced", "Healthy")
        done = run.bot(*STAGES)
        assert _outcome(done, "prod").startswith(
            "current: 1.1.0 healthy in staging for 0 s; eligible in 29 m")
        assert forge.open_pulls() == []
        view = run.pipeline()  # one page: every stage, its agents, the promotion under way
        assert list(view) == ["dev", "staging", "prod"]
        assert view["dev"] == ("current", None, [("dev", "1.1.0")])
        assert view["staging"][0] == "current" and view["staging"][2] == [("staging", "1.1.0")]
        state, sentence, agents = view["prod"]
        assert (state, agents) == ("promoting", [("prod", "1.0.0")])
        assert sentence is not None and sentence.startswith(
            "1.1.0 healthy in staging for 0 s; eligible for prod in 29 m"), sentence
        # 4. after staging's soak production gets a pull request (its approval gate)
        run.skew += 31 * MINUTE
        done = run.bot(*STAGES)
        [proposal] = forge.open_pulls()
        assert proposal["title"] == "chore(deps): update stages from 1.0.0 to 1.1.0 (minor)"
        assert "Promotion: 1.1.0 ran healthy in staging for 31 m (at least 30 m required)." \
            in proposal["body"]
        assert run.tags() == ["1.1.0", "1.1.0", "1.0.0"]
        assert run.in_git("prod", proposal["head"]["ref"]) == "1.1.0"
        forge.merge(proposal["number"])
        assert _running(run.sync("prod")) == ("1.1.0", "Synced", "Healthy")
        done = run.bot(*STAGES)
        assert [(t.policy, t.state) for t in done.transitions] == [("prod", "deployed")]

        # 5. a broken 1.2.0: dev takes it, its agent rolls it back, the bot writes 1.1.0 back
        devservers.push_busybox_image(registry.url, "team/stages", "1.2.0",
                                      entrypoint=["false"])
        done = run.bot(*STAGES)
        assert run.tags() == ["1.2.0", "1.1.0", "1.1.0"]
        assert _running(run.sync("dev"))[2] != "Healthy"
        done = run.bot(*STAGES)
        assert [(t.policy, t.state) for t in done.transitions] == [
            ("dev", "degraded"), ("dev", "rolled-back")]
        assert run.tags() == ["1.1.0", "1.1.0", "1.1.0"]
        assert run.subjects()[0] == f"revert: roll {image} back to 1.1.0"
        # 6. dev's agent applies the revert; however long we wait, 1.2.0 never leaves dev
        assert _running(run.sync("dev")) == ("1.1.0", "Synced", "Healthy")
        run.skew += 5 * 60 * MINUTE
        done = run.bot(*STAGES)
        note = _outcome(done, "staging")
        assert note.startswith("current: eligible from dev: 1.1.0; 1.2.0 is never promoted: "
                               "rolled back in dev (dev: "), note
        assert run.tags() == ["1.1.0", "1.1.0", "1.1.0"]
        assert forge.open_pulls() == []
        view = run.pipeline()
        assert [v[0] for v in view.values()] == ["current", "current", "current"]
        assert "1.2.0 is never promoted: rolled back in dev" in (view["staging"][1] or "")
        assert [s for s in run.subjects() if "1.2.0" in s] == [
            "chore(deps): update stages from 1.1.0 to 1.2.0 (minor)"]
    finally:
        forge.stop()
