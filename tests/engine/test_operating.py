"""Operator commands end to end: the real registry and git server, driven through the CLI.

promote (trailers, an unknown tag, a dry run), rollback (the tracked previous tag, the
declined one never proposed again, --to), declines list/clear, run --once --policy, and
spec.suspend (no registry request for the suspended image).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import devservers
import fakeforge
import testing
from image_bot import cli
from image_bot.config import loading
from image_bot.engine import context, cycle
from image_bot.state import State

pytestmark = pytest.mark.e2e

PUBLISH = {"mode": "commit", "message": "chore: update {{ image }} to {{ new_tag }}"}
FUTURE = "2099-01-01T00:00:00Z"  # an image this new is too young for any min-age


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


class Repo:
    """A config repository with one Deployment per image and a policy each, its bot config,
    and a clone to read what the bot pushed."""

    def __init__(self, registry: devservers.Registry, config_repo: Callable[..., str],
                 bot_config: Callable[..., Path], tmp_path: Path,
                 policies: dict[str, dict[str, Any]]) -> None:
        self.registry, self.tmp_path = registry, tmp_path
        suffix = uuid.uuid4().hex[:8]
        self.images = {name: f"{registry.host}/ops/{name}-{suffix}" for name in policies}
        files = {}
        for name, spec in policies.items():
            image = self.images[name]
            files[f"deploy/{name}.yaml"] = testing.deployment(name, {name: f"{image}:1.0.0"})
            files[f"policies/{name}.yaml"] = testing.policy(name, image, publish=PUBLISH,
                                                            **spec)
        self.url = config_repo(files)
        self.config = str(bot_config(self.url, registries=[
            {"host": registry.host, "insecure": True}]))

    def push(self, name: str, *tags: str, created: str = "2026-01-01T00:00:00Z") -> None:
        repository = self.images[name].split("/", 1)[1]
        for tag in tags:
            devservers.push_image(self.registry.url, repository, tag, created=created)

    def cli(self, *args: str) -> Result:
        return _invoke(*args, "--config", self.config)

    def clone(self) -> Path:
        clone = self.tmp_path / "check"
        if clone.exists():
            devservers.git("fetch", "-q", "origin", cwd=clone)
            devservers.git("reset", "-q", "--hard", "origin/main", cwd=clone)
        else:
            subprocess.run(["git", "clone", "-q", self.url, str(clone)], check=True)
        return clone

    def tag(self, name: str) -> str:
        text = (self.clone() / f"deploy/{name}.yaml").read_text()
        return text.split(f"{self.images[name]}:", 1)[1].split()[0]

    def commits(self) -> list[str]:
        return devservers.git("log", "--format=%H", cwd=self.clone()).split()

    def message(self, commit: str = "HEAD") -> str:
        return devservers.git("log", "-1", "--format=%B", commit, cwd=self.clone())

    def elsewhere(self) -> str:
        """The same bot config with a state dir of its own (another bot, a daemon)."""
        config = json.loads(Path(self.config).read_text())
        path = self.tmp_path / "elsewhere.yaml"
        testing.write_json(path, {**config, "state_dir": str(self.tmp_path / "elsewhere")})
        return str(path)

    def state(self) -> State:
        return State.in_dir(self.tmp_path / "state")


@pytest.fixture
def make(registry: devservers.Registry, config_repo: Callable[..., str],
         bot_config: Callable[..., Path], tmp_path: Path) -> Callable[..., Repo]:
    def build(**policies: dict[str, Any]) -> Repo:
        return Repo(registry, config_repo, bot_config, tmp_path, policies)
    return build


def _json(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# --- promote --------------------------------------------------------------------------------


def test_promote_writes_the_tag_past_min_age_with_who_and_why_in_git_and_the_log(
        make: Callable[..., Repo]) -> None:
    repo = make(web={"min_age": "1h"})
    repo.push("web", "1.0.0")
    repo.push("web", "1.1.0", created=FUTURE)
    assert repo.cli("run", "--once").exit_code == 0
    assert repo.tag("web") == "1.0.0"  # the policy's own choice: 1.1.0 is too young

    done = repo.cli("promote", "web", "1.1.0", "--reason", "hotfix for INC-231",
                    "--actor", "alice", "--json")

    assert done.exit_code == 0, done.output
    assert repo.tag("web") == "1.1.0"
    message = repo.message()
    image = repo.images["web"]
    assert message.startswith(f"chore: update {image} to 1.1.0\n")
    assert message.rstrip().endswith(
        f"Image-Bot-Update: web {image} 1.1.0\n"
        "Image-Bot-Operator: promote web 1.1.0\n"
        "Image-Bot-Actor: alice\n"
        "Image-Bot-Reason: hotfix for INC-231")
    assert " ".join(message.split("\n\n")[1].split()) == (
        "Promoted to 1.1.0 by alice: hotfix for INC-231. The policy's own checks (range, "
        "filters, min-age, promotion soak) were skipped.")
    trailers = devservers.git("log", "-1", "--format=%(trailers:key=Image-Bot-Actor,"
                              "valueonly)", cwd=repo.clone())
    assert trailers.strip() == "alice"  # git reads them as trailers: one last paragraph
    report = _json(done)
    assert report["operation"] == {
        "action": "promote", "policy": "web", "tag": "1.1.0", "actor": "alice",
        "reason": "hotfix for INC-231", "status": "updated", "declined": []}
    assert report["repositories"][0]["commits"] == [repo.commits()[0]]
    assert report["registry_requests"] > 0
    with repo.state() as state:
        [(_, _, event)] = [e for e in state.events(50) if e[1] == "promote"]
    assert (event["actor"], event["reason"], event["tag"], event["commits"]) == (
        "alice", "hotfix for INC-231", "1.1.0", [repo.commits()[0]])


def test_promote_refuses_a_tag_the_registry_does_not_have(make: Callable[..., Repo]) -> None:
    repo = make(web={})
    repo.push("web", "1.0.0", "1.1.0")
    before = repo.commits()

    done = repo.cli("promote", "web", "1.9.9", "--reason", "typo")

    assert done.exit_code == 2
    assert done.stderr.endswith(f"error: promote web: the registry has no tag '1.9.9' for "
                                f"{repo.images['web']}\n")
    assert repo.commits() == before


def test_promote_an_unknown_policy_lists_the_known_ones(make: Callable[..., Repo]) -> None:
    repo = make(web={}, api={})

    done = repo.cli("promote", "wbe", "1.0.0", "--reason", "typo")

    assert done.exit_code == 2
    assert done.stderr == "error: no policy named wbe; known policies: api, web\n"


def test_promote_dry_run_shows_the_diff_and_pushes_nothing(make: Callable[..., Repo]) -> None:
    repo = make(web={"select": {"semver": {"range": "~1.0"}}})
    repo.push("web", "1.0.0", "1.1.0")
    before = repo.commits()

    done = repo.cli("promote", "web", "1.1.0", "--reason", "see first", "--dry-run")

    assert done.exit_code == 0, done.output
    image = repo.images["web"]
    assert f"-          image: {image}:1.0.0\n+          image: {image}:1.1.0\n" in done.stdout
    assert repo.commits() == before
    with repo.state() as state:
        assert [e for e in state.events(50) if e[1] == "promote"] == []


# --- rollback and declines ------------------------------------------------------------------


def test_rollback_writes_the_tracked_previous_tag_and_declines_the_replaced_one(
        make: Callable[..., Repo]) -> None:
    repo = make(web={})
    repo.push("web", "1.0.0", "1.1.0")
    assert repo.cli("run", "--once").exit_code == 0
    assert repo.tag("web") == "1.1.0"

    done = repo.cli("rollback", "web", "--reason", "500s after 1.1.0", "--actor", "bob")

    assert done.exit_code == 0, done.output
    assert repo.tag("web") == "1.0.0"
    assert "declined 1.1.0: web will not propose it again" in done.stdout
    message = repo.message()
    assert "Image-Bot-Operator: rollback web 1.0.0\nImage-Bot-Actor: bob\n" \
           "Image-Bot-Reason: 500s after 1.1.0" in message
    listed = _json(repo.cli("declines", "list", "web", "--json"))["declines"]
    assert [(d["tag"], d["reason"]) for d in listed] == [
        ("1.1.0", "rolled back to 1.0.0 by bob: 500s after 1.1.0")]
    # the next run keeps 1.0.0: the declined 1.1.0 is not proposed again
    again = repo.cli("run", "--once", "--json")
    assert again.exit_code == 0
    assert _json(again)["repositories"][0]["commits"] == []
    assert repo.tag("web") == "1.0.0"
    # ... nor by a bot with another state dir (a daemon elsewhere): the "no" is in Git
    elsewhere = repo.elsewhere()
    assert _json(_invoke("run", "--once", "--json", "--config", elsewhere))[
        "repositories"][0]["commits"] == []
    assert _json(_invoke("declines", "list", "--json", "--config", elsewhere))[
        "declines"][0]["reason"] == "rolled back to 1.0.0 by bob: 500s after 1.1.0"
    # a newer version still goes through
    repo.push("web", "1.2.0")
    assert repo.cli("run", "--once").exit_code == 0
    assert repo.tag("web") == "1.2.0"


def test_rollback_to_a_named_tag_and_without_history_asks_for_one(
        make: Callable[..., Repo]) -> None:
    repo = make(web={})
    repo.push("web", "1.0.0", "1.1.0", "1.2.0")
    before = repo.commits()

    unknown = repo.cli("rollback", "web", "--reason", "bad")  # no bot commit to go back from

    assert unknown.exit_code == 2
    assert "no earlier tag is known from the bot's commits" in unknown.stderr
    assert "--to TAG" in unknown.stderr
    assert repo.commits() == before
    assert repo.cli("run", "--once").exit_code == 0
    assert repo.tag("web") == "1.2.0"

    done = repo.cli("rollback", "web", "--to", "1.0.0", "--reason", "known good", "--json")

    assert done.exit_code == 0, done.output
    assert repo.tag("web") == "1.0.0"
    assert _json(done)["operation"]["declined"] == ["1.2.0"]
    assert "Image-Bot-Operator: rollback web 1.0.0" in repo.message()
    # the next run takes the best tag that is not declined
    assert repo.cli("run", "--once").exit_code == 0
    assert repo.tag("web") == "1.1.0"
    # promoting the declined tag by hand takes the "no" back
    assert repo.cli("promote", "web", "1.2.0", "--reason", "fixed").exit_code == 0
    assert repo.tag("web") == "1.2.0"
    assert _json(repo.cli("declines", "list", "--json")) == {"declines": []}


def test_declines_clear_lets_the_policy_propose_the_tag_again(
        make: Callable[..., Repo]) -> None:
    repo = make(web={})
    repo.push("web", "1.0.0", "1.1.0")
    assert repo.cli("run", "--once").exit_code == 0
    assert repo.cli("rollback", "web", "--reason", "broken").exit_code == 0
    assert repo.tag("web") == "1.0.0"

    missing = repo.cli("declines", "clear", "web", "1.0.0")
    assert missing.exit_code == 2
    assert missing.stderr == ("error: 1.0.0 is not declined for policy 'web' "
                              "(declined: 1.1.0)\n")

    cleared = repo.cli("declines", "clear", "web", "1.1.0", "--reason", "fixed upstream",
                       "--actor", "carol", "--json")

    assert cleared.exit_code == 0, cleared.output
    assert [d["tag"] for d in _json(cleared)["cleared"]] == ["1.1.0"]
    assert _json(repo.cli("declines", "list", "--json")) == {"declines": []}
    with repo.state() as state:
        [(_, _, event)] = [e for e in state.events(50) if e[1] == "decline-cleared"]
    assert event == {"policy": "web", "tags": ["1.1.0"], "actor": "carol",
                     "reason": "fixed upstream"}
    assert repo.cli("run", "--once").exit_code == 0
    assert repo.tag("web") == "1.1.0"
    assert repo.cli("declines", "clear", "web").stdout == "web has no declined versions\n"


# --- run --once --policy and spec.suspend ---------------------------------------------------


def test_run_once_and_plan_policy_run_only_that_one_and_refuse_unknown_names(
        make: Callable[..., Repo]) -> None:
    repo = make(web={}, api={})
    repo.push("web", "1.0.0", "1.1.0")
    repo.push("api", "1.0.0", "1.1.0")

    unknown = repo.cli("run", "--once", "--policy", "web", "--policy", "nope")
    assert unknown.exit_code == 2
    assert unknown.stderr == "error: no policy named nope; known policies: api, web\n"
    assert repo.tag("web") == "1.0.0"  # refused before anything ran

    planned = _json(repo.cli("plan", "--policy", "web", "--json"))["repositories"][0]
    assert [(o["policy"], o["status"]) for o in planned["outcomes"]] == [("web", "planned")]
    assert repo.cli("plan", "--policy", "nope").exit_code == 2

    done = repo.cli("run", "--once", "--policy", "api", "--json")

    assert done.exit_code == 0, done.output
    assert [o["policy"] for o in _json(done)["repositories"][0]["outcomes"]] == ["api"]
    assert (repo.tag("api"), repo.tag("web")) == ("1.1.0", "1.0.0")
    with repo.state() as state:  # the event log says what was asked for
        [scan] = [data for _, kind, data in state.events(50) if kind == "scan"]
    assert scan["trigger"] == "run --once --policy api"
    assert repo.cli("run", "--policy", "api").exit_code == 2  # the daemon runs them all


def test_a_suspended_policy_makes_no_registry_request_and_is_reported(
        make: Callable[..., Repo]) -> None:
    repo = make(web={"suspend": True}, api={})
    repo.push("web", "1.0.0", "1.1.0")
    repo.push("api", "1.0.0", "1.1.0")
    urls: list[str] = []

    async def run() -> Any:
        config = loading.load_bot_config(Path(repo.config))
        async with context.Engine.open(
                config, on_request=lambda method, url, status, seconds: urls.append(url)) \
                as engine:
            done = await cycle.run_once(engine)
            engine.record(done, trigger="test", seconds=0.0)
            return done

    report = asyncio.run(run())

    outcomes = {o.policy: o for o in report.repositories[0].outcomes}
    assert (outcomes["web"].status, outcomes["web"].note) == ("suspended",
                                                              "spec.suspend: true")
    assert outcomes["api"].status == "updated"
    web = repo.images["web"].split("/", 1)[1]
    assert urls and not [u for u in urls if web in u]
    assert (repo.tag("web"), repo.tag("api")) == ("1.0.0", "1.1.0")
    status = _json(repo.cli("status", "--json"))["policies"]
    assert {row["policy"]: row["status"] for row in status} == {"api": "updated",
                                                                "web": "suspended"}
    # the operator still writes a suspended policy (freeze, then promote)
    assert repo.cli("promote", "web", "1.1.0", "--reason", "by hand").exit_code == 0
    assert repo.tag("web") == "1.1.0"


# --- pull-request mode ----------------------------------------------------------------------


def test_a_promote_in_pull_request_mode_opens_its_own_pr_that_runs_leave_alone(
        registry: devservers.Registry, git_server: devservers.GitServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_TOKEN", "ghp_fake_token_for_promote")
    forge = fakeforge.FakeGitHub(bare=tmp_path / "unset", project="acme/config",
                                 token="ghp_fake_token_for_promote").start()
    try:
        image = f"{registry.host}/ops/pr-{uuid.uuid4().hex[:8]}"
        devservers.push_image(registry.url, image.split("/", 1)[1], "1.0.0")
        devservers.push_image(registry.url, image.split("/", 1)[1], "1.1.0", created=FUTURE)
        name = f"config-{uuid.uuid4().hex[:10]}.git"
        forge.bare = devservers.create_repo(git_server.root, name, {
            "deploy/app.yaml": testing.deployment("app", {"app": f"{image}:1.0.0"}),
            "policies/app.yaml": testing.policy("app", image, min_age="1h",
                                                publish={"mode": "pull-request"})})
        config = str(testing.write_json(tmp_path / "bot.yaml", testing.bot_config(
            [{"url": git_server.url(name), "branch": "main",
              "forge": forge.forge_config(retries=3)}],
            registries=[registry.host], git=testing.GIT_IDENTITY,
            state_dir=tmp_path / "state")))
        main = fakeforge.branch_sha(forge.bare, "main")

        done = _invoke("promote", "app", "1.1.0", "--reason", "canary for INC-7",
                       "--actor", "alice", "--config", config)

        assert done.exit_code == 0, done.output
        [pr] = forge.open_pulls()
        assert pr["head"]["ref"] == "image-bot/promote-app"
        assert "> Promoted to 1.1.0 by alice: canary for INC-7." in pr["body"]
        message = devservers.git("log", "-1", "--format=%B", "image-bot/promote-app",
                                 cwd=forge.bare)
        assert "Image-Bot-Operator: promote app 1.1.0\nImage-Bot-Actor: alice\n" \
               "Image-Bot-Reason: canary for INC-7" in message
        assert fakeforge.branch_sha(forge.bare, "main") == main  # merging deploys it
        # the policy's own runs (1.1.0 is too young for it) leave the operator's PR open
        assert _invoke("run", "--once", "--config", config).exit_code == 0
        assert [p["number"] for p in forge.open_pulls()] == [pr["number"]]
    finally:
        forge.stop()
    assert forge.errors == [], "the bot sent requests a real forge would refuse"
