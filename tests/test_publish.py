"""Publish: pull requests on (fake) GitHub and GitLab, pushes to the real git HTTP server.

Every push goes to the real smart-HTTP server; the forges are the strict, stateful fakes of
``fakeforge.py``. Scenarios: open → supersede → merge; close unmerged → no reopen → newer
opens a new MR; a human commit on the bot branch; forge down then up; bad token.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import devservers
import fakeforge
import testing
from image_bot import cli
from image_bot.state import State

pytestmark = pytest.mark.e2e
TOKEN = "ghp_fake_token_do_not_log_1234"

PUBLISH = {"mode": "pull-request", "labels": ["image-update", "bot"], "reviewers": ["alice"],
           "assignees": ["bob"], "auto-merge": True,
           "message": "chore: update {{ image }} to {{ new_tag }}"}


class Setup:
    """A config repo on the real git server, a fake forge for it, and a bot config."""

    def __init__(self, *, registry: devservers.Registry, git_server: devservers.GitServer,
                 tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.registry, self.git_server, self.tmp_path = registry, git_server, tmp_path
        self.image = f"app-{uuid.uuid4().hex[:8]}"
        self.name = f"config-{uuid.uuid4().hex[:10]}.git"
        self.kind = kind
        monkeypatch.setenv("FORGE_TOKEN", TOKEN)

    def create(self, tags: tuple[str, ...] = ("1.0.0", "1.1.0"), **fake: Any) -> None:
        for tag in tags:
            self.push_tag(tag)
        image = f"{self.registry.host}/team/{self.image}"
        self.bare = devservers.create_repo(self.git_server.root, self.name, {
            "deploy/app.yaml": testing.deployment("app", {"app": f"{image}:1.0.0"},
                                                  comment="   # keep this comment"),
            "policies/app.yaml": testing.policy("app", image, publish=PUBLISH)})
        fake_class: Any = fakeforge.FakeGitLab
        if self.kind == "github":
            fake_class = fakeforge.AppAwareGitHub if fake else fakeforge.FakeGitHub
        self.forge = fake_class(bare=self.bare, project="acme/config", token=TOKEN,
                                **fake).start()

    def push_tag(self, tag: str) -> None:
        devservers.push_image(self.registry.url, f"team/{self.image}", tag)

    def config(self, **forge: Any) -> Path:
        api = f"{self.forge.url}/api/v3" if self.kind == "github" else self.forge.url
        settings = {"kind": self.kind, "project": "acme/config", "api_url": api,
                    "token_env": "FORGE_TOKEN", "backoff": 0, "min_write_interval": 0,
                    "retries": 3, **forge}
        return testing.write_json(self.tmp_path / "bot.yaml", testing.bot_config(
            [{"url": self.git_server.url(self.name), "branch": "main", "forge": settings}],
            registries=[self.registry.host], git=testing.GIT_IDENTITY,
            state_dir=self.tmp_path / "state"))

    def run(self, **forge: Any) -> Result:
        return CliRunner().invoke(cli.main, ["run", "--once", "--json", "--config",
                                             str(self.config(**forge))],
                                  catch_exceptions=False)

    def sha(self, branch: str) -> str | None:
        return fakeforge.branch_sha(self.bare, branch)

    def show(self, ref: str, path: str = "deploy/app.yaml") -> str:
        return devservers.git("show", f"{ref}:{path}", cwd=self.bare)


@pytest.fixture(params=["github", "gitlab"])
def setup(request: pytest.FixtureRequest, registry: devservers.Registry,
          git_server: devservers.GitServer, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    made = Setup(registry=registry, git_server=git_server, tmp_path=tmp_path,
                 kind=request.param, monkeypatch=monkeypatch)
    yield made
    if hasattr(made, "forge"):
        made.forge.stop()
        assert made.forge.errors == [], "the bot sent requests a real forge would refuse"


def _prs(setup: Setup) -> list[dict[str, Any]]:
    """Open PRs/MRs in one shape: number, title, body, labels, head."""
    if isinstance(setup.forge, fakeforge.FakeGitHub):
        return [{"number": p["number"], "title": p["title"], "body": p["body"],
                 "labels": p["labels"], "head": p["head"]["ref"]}
                for p in setup.forge.open_pulls()]
    assert isinstance(setup.forge, fakeforge.FakeGitLab)
    return [{"number": m["iid"], "title": m["title"], "body": m["description"],
             "labels": m["labels"], "head": m["source_branch"]}
            for m in setup.forge.open_mrs()]


def _report(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.output)
    return data


def test_open_then_supersede_then_merge(setup: Setup) -> None:
    setup.create()
    main_before = setup.sha("main")

    first = setup.run()

    assert first.exit_code == 0, first.output
    [pr] = _prs(setup)
    assert pr["head"] == "image-bot/app"
    assert pr["title"] == f"chore: update {setup.registry.host}/team/{setup.image} to 1.1.0"
    assert pr["labels"] == ["image-update", "bot"]
    assert f"| `{setup.registry.host}/team/{setup.image}` | `1.0.0` → `1.1.0` | `sha256:" \
        in pr["body"]
    assert setup.sha("main") == main_before  # the target is untouched until a human merges
    assert ":1.1.0   # keep this comment" in setup.show("image-bot/app")
    parents = devservers.git("rev-list", "--parents", "-n", "1", "image-bot/app",
                             cwd=setup.bare).split()
    assert parents[1:] == [main_before]  # one bot commit on the target tip
    if isinstance(setup.forge, fakeforge.FakeGitHub):
        pull = setup.forge.pulls[1]
        assert (pull["reviewers"], pull["assignees"]) == (["alice"], ["bob"])
        assert setup.forge.auto_merge == {1}
    else:
        mr = setup.forge.mrs[1]
        assert (mr["reviewer_ids"], mr["assignee_ids"], mr["mwps"]) == ([11], [12], True)

    # nothing changed: nothing is pushed, nothing is written on the forge
    tip = setup.sha("image-bot/app")
    before = len(setup.forge.requests)
    again = setup.run()
    assert again.exit_code == 0, again.output
    assert setup.sha("image-bot/app") == tip
    # a steady cycle costs two reads per bot branch (closed PRs, the open PR) and no write
    assert [method for method, _ in setup.forge.requests[before:]] == ["GET", "GET"]

    # a newer version supersedes the proposal in place: same PR, new title and body
    setup.push_tag("1.2.0")
    third = setup.run()
    assert third.exit_code == 0, third.output
    [updated] = _prs(setup)
    assert updated["number"] == pr["number"]
    assert updated["title"].endswith(" to 1.2.0")
    assert "`1.0.0` → `1.2.0`" in updated["body"]
    assert ":1.2.0   # keep this comment" in setup.show("image-bot/app")

    # a human merges: the target has it, the bot proposes nothing more
    setup.forge.merge(pr["number"])
    writes = len(setup.forge.writes())
    fourth = setup.run()
    assert fourth.exit_code == 0, fourth.output
    assert _prs(setup) == []
    assert len(setup.forge.writes()) == writes
    assert ":1.2.0   # keep this comment" in setup.show("main")


def _status(setup: Setup) -> dict[str, Any]:
    shown = CliRunner().invoke(cli.main, ["status", "--json", "--config",
                                          str(setup.tmp_path / "bot.yaml")])
    assert shown.exit_code == 0, shown.output
    [row] = json.loads(shown.output)["policies"]
    return dict(row)


def test_closed_unmerged_declines_and_a_newer_version_opens_a_new_pr(setup: Setup) -> None:
    setup.create()
    assert setup.run().exit_code == 0
    [pr] = _prs(setup)
    opened = _status(setup)
    assert (opened["status"], opened["declined"]) == ("proposed", [])
    assert opened["pull_request"] is not None and str(pr["number"]) in opened["pull_request"]
    setup.forge.close(pr["number"])
    writes = len(setup.forge.writes())

    again = setup.run()

    assert again.exit_code == 0, again.output
    assert _prs(setup) == []  # not reopened, not proposed again
    assert len(setup.forge.writes()) == writes
    with State.in_dir(setup.tmp_path / "state") as state:
        image = f"{setup.registry.host}/team/{setup.image}"
        assert state.declined("app", image) == {"1.1.0"}
    # the status says why 1.1.0 is not proposed, and that no PR is open any more
    closed = _status(setup)
    assert closed["pull_request"] is None
    assert [(d["tag"], d["reason"]) for d in closed["declined"]] == [
        ("1.1.0", f"PR #{pr['number']} closed without merging")]

    setup.push_tag("1.2.0")
    newer = setup.run()

    assert newer.exit_code == 0, newer.output
    [new_pr] = _prs(setup)
    assert new_pr["number"] != pr["number"]
    assert "`1.0.0` → `1.2.0`" in new_pr["body"]


def test_human_commit_on_the_bot_branch_stops_the_bot(setup: Setup) -> None:
    setup.create()
    assert setup.run().exit_code == 0
    [pr] = _prs(setup)
    work = setup.tmp_path / "human"
    subprocess.run(["git", "clone", "-q", "-b", "image-bot/app", str(setup.bare), str(work)],
                   check=True)
    (work / "NOTES.md").write_text("tested on staging\n")
    devservers.git("add", "NOTES.md", cwd=work)
    devservers.git("commit", "-q", "-m", "human fix", cwd=work)
    devservers.git("push", "-q", "origin", "image-bot/app", cwd=work)
    human_tip = setup.sha("image-bot/app")
    setup.push_tag("1.2.0")

    first = setup.run()
    second = setup.run()

    assert first.exit_code == 0, first.output
    assert setup.sha("image-bot/app") == human_tip  # never rewritten
    outcome = _report(second)["repositories"][0]["outcomes"][0]
    assert outcome["status"] == "blocked"
    assert "someone else" in outcome["message"]
    notes = (setup.forge.comments[pr["number"]] if isinstance(setup.forge, fakeforge.FakeGitHub)
             else setup.forge.notes[pr["number"]])
    assert len(notes) == 1  # said once, not every cycle
    assert "stopped updating `image-bot/app`" in notes[0]["body"]


def test_forge_down_then_up(setup: Setup) -> None:
    setup.create()
    setup.forge.down = True

    down = setup.run()

    assert down.exit_code == 1
    error = _report(down)["repositories"][0]["error"]
    assert "HTTP 503" in error
    assert TOKEN not in down.output
    assert setup.sha("image-bot/app") is None  # nothing half-done in Git

    setup.forge.down = False
    setup.forge.outage = 2  # a blip inside the run is retried with backoff
    up = setup.run()

    assert up.exit_code == 0, up.output
    assert len(_prs(setup)) == 1


def test_a_wrong_token_is_a_clear_permanent_error(setup: Setup,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    setup.create()
    monkeypatch.setenv("FORGE_TOKEN", "wrong-token-value")

    result = setup.run()

    assert result.exit_code == 1
    error = _report(result)["repositories"][0]["error"]
    assert "HTTP 401: the token is missing, expired or wrong" in error
    assert "wrong-token-value" not in result.output
    setup.forge.errors.clear()  # the refusals were the point of this test
    unauthorized = [r for r in setup.forge.requests if r[0] == "GET"]
    assert len(unauthorized) == 1  # permanent: not retried




def test_github_app_installation_token(setup: Setup, tmp_path: Path) -> None:
    if setup.kind != "github":
        pytest.skip("GitHub Apps exist on GitHub only")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "app.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    setup.create(app_id=4242, installation_id=77, app_public_key=public.decode())

    result = setup.run(token_env=None, app_id=4242, app_installation_id=77,
                       app_private_key_file=str(pem))

    assert result.exit_code == 0, result.output
    assert len(_prs(setup)) == 1
    assert ("POST", "/api/v3/app/installations/77/access_tokens") in setup.forge.requests


def test_a_pr_no_longer_needed_is_closed_and_declines_nothing(setup: Setup) -> None:
    setup.create()
    assert setup.run().exit_code == 0
    [pr] = _prs(setup)
    work = setup.tmp_path / "by-hand"
    subprocess.run(["git", "clone", "-q", str(setup.bare), str(work)], check=True)
    target = work / "deploy/app.yaml"
    target.write_text(target.read_text().replace(":1.0.0", ":1.1.0"))
    devservers.git("commit", "-q", "-am", "update by hand", cwd=work)
    devservers.git("push", "-q", "origin", "main", cwd=work)

    result = setup.run()

    assert result.exit_code == 0, result.output
    assert _prs(setup) == []
    assert setup.sha("image-bot/app") is None  # the bot cleans up its own branch
    [done] = _report(result)["repositories"][0]["pull_requests"]
    assert (done["action"], done["number"]) == ("closed", pr["number"])
    with State.in_dir(setup.tmp_path / "state") as state:
        assert state.declined("app", f"{setup.registry.host}/team/{setup.image}") == set()
