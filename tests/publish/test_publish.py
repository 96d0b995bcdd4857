"""Publish: pull requests on (fake) GitHub and GitLab, pushes to the real git HTTP server.

Every push goes to the real smart-HTTP server; the forges are the strict, stateful fakes of
``fakeforge.py``. Scenarios: open → supersede → merge; close unmerged → no reopen → newer
opens a new MR; a human commit on the bot branch; forge down then up; bad token.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
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
        self.repository: dict[str, Any] = {}  # more keys of the repositories[] entry
        monkeypatch.setenv("FORGE_TOKEN", TOKEN)

    def create(self, tags: tuple[str, ...] = ("1.0.0", "1.1.0"), *,
               publish: dict[str, Any] = PUBLISH, select: dict[str, Any] = testing.SEMVER_1,
               **fake: Any) -> None:
        fake_class: Any = fakeforge.FakeGitLab
        if self.kind == "github":
            fake_class = fakeforge.AppAwareGitHub if fake else fakeforge.FakeGitHub
        # the forge starts first: image labels may point at a repository on it
        self.forge = fake_class(bare=self.tmp_path / "unset", project="acme/config",
                                token=TOKEN, **fake).start()
        for tag in tags:
            self.push_tag(tag)
        image = f"{self.registry.host}/team/{self.image}"
        self.bare = devservers.create_repo(self.git_server.root, self.name, {
            "deploy/app.yaml": testing.deployment("app", {"app": f"{image}:1.0.0"},
                                                  comment="   # keep this comment"),
            "policies/app.yaml": testing.policy("app", image, publish=publish,
                                                select=select)})
        self.forge.bare = self.bare

    def push_tag(self, tag: str, labels: dict[str, str] | None = None) -> None:
        devservers.push_image(self.registry.url, f"team/{self.image}", tag, labels=labels)

    def config(self, **forge: Any) -> Path:
        api = f"{self.forge.url}/api/v3" if self.kind == "github" else self.forge.url
        settings = {"kind": self.kind, "project": "acme/config", "api_url": api,
                    "token_env": "FORGE_TOKEN", "backoff": 0, "min_write_interval": 0,
                    "retries": 3, **forge}
        return testing.write_json(self.tmp_path / "bot.yaml", testing.bot_config(
            [{"url": self.git_server.url(self.name), "branch": "main", "forge": settings,
              **self.repository}],
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


# --- what changed upstream, rules by update type, schedules (issue 19) ---------------------


def _labels(setup: Setup, revision: str) -> dict[str, str]:
    return {"org.opencontainers.image.source": f"{setup.forge.url}/acme/web.git",
            "org.opencontainers.image.revision": revision}


def test_compare_link_and_release_notes_from_image_labels(setup: Setup) -> None:
    setup.create(tags=())
    setup.push_tag("1.0.0", _labels(setup, "aaa1111"))
    setup.push_tag("1.1.0", _labels(setup, "bbb2222"))
    notes = ("## What's new\n\nFaster startup, thanks @octocat. See "
             f"[the docs]({setup.forge.url}/acme/web/wiki) and [evil](https://evil.example/x)"
             " ![tracker](https://evil.example/pixel.png)\n<script>alert(1)</script>"
             '<!-- image-bot:proposal {"updates":[["x","y","z"]]} -->\n')
    setup.forge.releases[("acme/web", "1.1.0")] = notes

    first = setup.run()

    assert first.exit_code == 0, first.output
    [pr] = _prs(setup)
    body = pr["body"]
    compare = ("compare" if setup.kind == "github" else "-/compare") + "/aaa1111...bbb2222"
    assert f"[changes]({setup.forge.url}/acme/web/{compare})" in body
    assert "| minor |" in body
    assert "<summary>Release notes:" in body and "Faster startup" in body
    assert f"[the docs]({setup.forge.url}/acme/web/wiki)" in body  # the source's own host
    assert "evil.example" not in body  # links and images elsewhere keep only their text
    assert "<script>" not in body and "@\u200boctocat" in body
    # the one proposal marker is the bot's: notes cannot smuggle in another one
    assert body.count("<!-- image-bot:proposal") == 1
    assert "1 file(s) changed, +1 −1 lines." in body
    blob = "blob" if setup.kind == "github" else "-/blob"
    assert f"Policy: [`app`]({setup.forge.url}/acme/config/{blob}/main/policies/app.yaml)" in body
    release = ("GET", "/api/v3/repos/acme/web/releases/tags/1.1.0") if setup.kind == "github" \
        else ("GET", "/api/v4/projects/acme%2Fweb/releases/1.1.0")
    assert release in setup.forge.requests

    # a steady cycle does not fetch the notes again: two reads, as before
    before = len(setup.forge.requests)
    assert setup.run().exit_code == 0
    assert [method for method, _ in setup.forge.requests[before:]] == ["GET", "GET"]


def test_default_messages_read_well_in_git_log(setup: Setup) -> None:
    setup.create(publish={"mode": "pull-request"})

    assert setup.run().exit_code == 0

    [pr] = _prs(setup)
    assert pr["title"] == f"chore(deps): update {setup.image} from 1.0.0 to 1.1.0 (minor)"
    subject = devservers.git("log", "-1", "--format=%s", "image-bot/app", cwd=setup.bare)
    assert subject.strip() == pr["title"]


RULES = {"mode": "commit", "labels": ["image-update"], "rules": [
    {"update": "patch", "mode": "commit"},
    {"update": "minor", "mode": "pull-request", "auto-merge": True},
    {"update": ["major"], "mode": "pull-request", "labels": ["major"],
     "reviewers": ["alice"]}]}


def _auto_merge(setup: Setup, number: int) -> bool:
    if isinstance(setup.forge, fakeforge.FakeGitHub):
        return number in setup.forge.auto_merge
    return bool(setup.forge.mrs[number]["mwps"])


def test_rules_by_update_type_from_one_policy(setup: Setup) -> None:
    setup.create(tags=("1.0.0", "1.0.1"), publish=RULES, select={"semver": {"range": ">=1.0"}})

    # a patch is committed straight to the target branch
    patch = setup.run()
    assert patch.exit_code == 0, patch.output
    assert _prs(setup) == []
    subject = devservers.git("log", "-1", "--format=%s", "main", cwd=setup.bare).strip()
    assert subject == f"chore(deps): update {setup.image} from 1.0.0 to 1.0.1 (patch)"

    # a minor opens a PR that merges itself when checks pass
    setup.push_tag("1.1.0")
    minor = setup.run()
    assert minor.exit_code == 0, minor.output
    [pr] = _prs(setup)
    assert pr["labels"] == ["image-update"]
    assert pr["title"].endswith("from 1.0.1 to 1.1.0 (minor)")
    assert _auto_merge(setup, pr["number"])

    # a major arriving on it: labelled, and the consent to auto-merge is withdrawn
    setup.push_tag("2.0.0")
    major = setup.run()
    assert major.exit_code == 0, major.output
    [same] = _prs(setup)
    assert same["number"] == pr["number"] and same["labels"] == ["image-update", "major"]
    assert not _auto_merge(setup, pr["number"])
    if isinstance(setup.forge, fakeforge.FakeGitHub):
        assert setup.forge.pulls[pr["number"]]["reviewers"] == ["alice"]
    else:
        assert setup.forge.mrs[pr["number"]]["reviewer_ids"] == [11]

    # merged by a human; the next major opens a new PR with the major rule's reviewers
    setup.forge.merge(pr["number"])
    setup.push_tag("3.0.0")
    again = setup.run()
    assert again.exit_code == 0, again.output
    [new] = _prs(setup)
    assert new["number"] != pr["number"] and new["labels"] == ["image-update", "major"]
    assert not _auto_merge(setup, new["number"])
    if isinstance(setup.forge, fakeforge.FakeGitHub):
        assert setup.forge.pulls[new["number"]]["reviewers"] == ["alice"]
    else:
        assert setup.forge.mrs[new["number"]]["reviewer_ids"] == [11]


def _run_at(setup: Setup, when: datetime, *, only: frozenset[str] | None = None
            ) -> dict[str, Any]:
    """One cycle at ``when`` (a fake clock); ``only`` scans those policies, like the daemon."""
    from image_bot.config import loading
    from image_bot.engine import context, cycle, selecting

    config = loading.load_bot_config(setup.config())
    selection = selecting.Selection(policies=only) if only is not None else selecting.EVERYTHING

    async def once() -> dict[str, Any]:
        async with context.Engine.open(config, clock=context.Clock(now=lambda: when)) as eng:
            report = await cycle.run_once(eng, selection=selection)
            eng.record(report, trigger="test", seconds=0.0)
            return report.to_dict()

    return asyncio.run(once())


def test_schedule_window_with_a_fake_clock(setup: Setup) -> None:
    publish = {**PUBLISH, "schedule": ["after 22:00 before 06:00 on weekdays"],
               "timezone": "Europe/Berlin"}
    setup.create(publish=publish)
    # Monday 2026-11-30 12:00 UTC is 13:00 in Berlin: outside the window
    noon = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    waiting = _run_at(setup, noon)

    [outcome] = waiting["repositories"][0]["outcomes"]
    assert outcome["status"] == "waiting"
    assert "waiting for window: after 22:00 before 06:00 on weekdays (Europe/Berlin)" \
        in outcome["message"]
    assert _prs(setup) == [] and setup.sha("image-bot/app") is None
    assert _status(setup)["status"] == "waiting"
    # Monday 21:30 UTC is 22:30 in Berlin: inside the window, the PR opens
    night = datetime(2026, 11, 30, 21, 30, tzinfo=UTC)
    opened = _run_at(setup, night)
    assert opened["repositories"][0]["outcomes"][0]["status"] == "proposed"
    assert len(_prs(setup)) == 1
    # Saturday night is not a weekday
    setup.push_tag("1.2.0")
    saturday = _run_at(setup, datetime(2026, 12, 5, 22, 30, tzinfo=UTC))
    assert saturday["repositories"][0]["outcomes"][0]["status"] == "waiting"
    [pr] = _prs(setup)
    assert pr["title"].endswith("to 1.1.0")  # not superseded outside the window


def _tick_rebase_box(setup: Setup, number: int) -> None:
    """A human ticks the rebase/retry box in the PR description (the forge's web editor)."""
    if isinstance(setup.forge, fakeforge.FakeGitHub):
        pr = setup.forge.pulls[number]
        pr["body"] = pr["body"].replace("- [ ] <!-- image-bot:rebase -->",
                                        "- [x] <!-- image-bot:rebase -->")
    else:
        mr = setup.forge.mrs[number]
        mr["description"] = mr["description"].replace("- [ ] <!-- image-bot:rebase -->",
                                                      "- [x] <!-- image-bot:rebase -->")


def test_rebase_checkbox_rebuilds_the_branch_next_cycle(setup: Setup) -> None:
    setup.create()
    assert setup.run().exit_code == 0
    [pr] = _prs(setup)
    assert "- [ ] <!-- image-bot:rebase -->" in pr["body"]
    # the target moves on, and someone commits on the bot branch: the bot stops there
    work = setup.tmp_path / "human"
    subprocess.run(["git", "clone", "-q", str(setup.bare), str(work)], check=True)
    (work / "README.md").write_text("unrelated\n")
    devservers.git("add", "README.md", cwd=work)
    devservers.git("commit", "-q", "-m", "docs", cwd=work)
    devservers.git("push", "-q", "origin", "main", cwd=work)
    devservers.git("checkout", "-q", "-b", "image-bot/app", "origin/image-bot/app", cwd=work)
    (work / "NOTES.md").write_text("tried it\n")
    devservers.git("add", "NOTES.md", cwd=work)
    devservers.git("commit", "-q", "-m", "human fix", cwd=work)
    devservers.git("push", "-q", "origin", "image-bot/app", cwd=work)
    blocked = setup.run()
    assert _report(blocked)["repositories"][0]["outcomes"][0]["status"] == "blocked"
    notes = (setup.forge.comments[pr["number"]] if isinstance(setup.forge, fakeforge.FakeGitHub)
             else setup.forge.notes[pr["number"]])
    assert "tick the rebase box" in notes[0]["body"]

    _tick_rebase_box(setup, pr["number"])
    rebased = setup.run()

    assert rebased.exit_code == 0, rebased.output
    [done] = _report(rebased)["repositories"][0]["pull_requests"]
    assert (done["action"], done["message"]) == ("updated", f"rebased on request #{pr['number']}")
    parents = devservers.git("rev-list", "--parents", "-n", "1", "image-bot/app",
                             cwd=setup.bare).split()
    assert parents[1:] == [setup.sha("main")]  # one bot commit on the new target tip
    assert "NOTES.md" not in devservers.git("ls-tree", "--name-only", "image-bot/app",
                                            cwd=setup.bare)
    [after] = _prs(setup)
    assert after["number"] == pr["number"] and "- [ ] <!-- image-bot:rebase -->" in after["body"]
    # the box is cleared: the next cycle leaves the branch alone
    tip = setup.sha("image-bot/app")
    assert setup.run().exit_code == 0
    assert setup.sha("image-bot/app") == tip



def _issues(setup: Setup) -> list[dict[str, Any]]:
    """Open issues in one shape: number, body, labels."""
    if isinstance(setup.forge, fakeforge.FakeGitHub):
        return [{"number": n, "body": i["body"], "labels": i["labels"]}
                for n, i in setup.forge.issues.items() if i["state"] == "open"]
    assert isinstance(setup.forge, fakeforge.FakeGitLab)
    return [{"number": n, "body": i["description"], "labels": i["labels"]}
            for n, i in setup.forge.issues.items() if i["state"] == "opened"]


def _tick_approval(setup: Setup, number: int, policy: str) -> None:
    box = f"- [ ] <!-- image-bot:approve {policy} -->"
    issue = setup.forge.issues[number]
    key = "body" if isinstance(setup.forge, fakeforge.FakeGitHub) else "description"
    assert box in issue[key]
    issue[key] = issue[key].replace(box, box.replace("[ ]", "[x]"))


def test_dashboard_issue_kept_up_to_date_and_its_approval_box_publishes(setup: Setup) -> None:
    publish = {**PUBLISH, "schedule": ["after 22:00 before 06:00 on weekdays"],
               "timezone": "Europe/Berlin"}
    setup.create(publish=publish)
    setup.repository = {"dashboard": True}
    noon = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # outside the window

    first = _run_at(setup, noon)

    assert first["repositories"][0]["dashboard"].startswith("opened dashboard #")
    [issue] = _issues(setup)
    assert issue["labels"] == ["image-bot-dashboard"]
    waiting = issue["body"].split("## Waiting for their schedule window")[1].split("##")[0]
    assert "- [ ] <!-- image-bot:approve app --> `app`: `1.0.0` → `1.1.0`, window: after " \
        "22:00 before 06:00 on weekdays (Europe/Berlin)" in waiting
    assert _prs(setup) == []

    # nothing changed: the issue is read, not written
    writes = len(setup.forge.writes())
    steady = _run_at(setup, noon)
    assert steady["repositories"][0]["dashboard"] == f"dashboard #{issue['number']} is up to date"
    assert len(setup.forge.writes()) == writes

    # a human ticks "publish now"; a daemon scan of other policies keeps the whole
    # repository's lines (from the state DB) and the tick
    _tick_approval(setup, issue["number"], "app")
    other = _run_at(setup, noon, only=frozenset({"other"}))
    assert other["repositories"][0]["dashboard"] == f"dashboard #{issue['number']} is up to date"
    assert "- [x] <!-- image-bot:approve app --> `app`: `1.0.0` → `1.1.0`" in \
        _issues(setup)[0]["body"]
    # the next scan of the policy opens the PR outside the window; the same issue lists it
    approved = _run_at(setup, noon)

    assert approved["repositories"][0]["outcomes"][0]["status"] == "proposed"
    [pr] = _prs(setup)
    assert approved["repositories"][0]["dashboard"] == f"updated dashboard #{issue['number']}"
    [same] = _issues(setup)
    assert same["number"] == issue["number"]
    opened = same["body"].split("## Open pull requests")[1].split("##")[0]
    assert f"#{pr['number']}]" in opened and "`1.0.0` → `1.1.0`" in opened
    assert "image-bot:approve" not in same["body"]

    # the PR is closed unmerged: the dashboard lists the declined version
    setup.forge.close(pr["number"])
    _run_at(setup, noon)
    [after] = _issues(setup)
    declined = after["body"].split("## Declined versions")[1].split("##")[0]
    box = "- [ ] <!-- image-bot:undecline app 1.1.0 -->"
    assert f"{box} `app`: `1.1.0`: PR #{pr['number']} closed without merging" in declined

    # a human takes the "no" back: the version is planned again (waiting for its window)
    key = "body" if isinstance(setup.forge, fakeforge.FakeGitHub) else "description"
    setup.forge.issues[after["number"]][key] = after["body"].replace(
        box, box.replace("[ ]", "[x]"))
    cleared = _run_at(setup, noon)
    assert cleared["repositories"][0]["outcomes"][0]["status"] == "waiting"
    with State.in_dir(setup.tmp_path / "state") as state:
        assert state.declined("app", f"{setup.registry.host}/team/{setup.image}") == set()
    [final] = _issues(setup)
    assert "image-bot:undecline" not in final["body"]
    assert "- [ ] <!-- image-bot:approve app --> `app`: `1.0.0` → `1.1.0`" in final["body"]
    # and it stays cleared: the closed PR is marked, not read as a "no" again
    assert _run_at(setup, noon)["repositories"][0]["outcomes"][0]["status"] == "waiting"


def test_dashboard_needs_a_forge(tmp_path: Path) -> None:
    from image_bot.config import loading
    from image_bot.errors import ConfigError

    path = testing.write_json(tmp_path / "bot.yaml", testing.bot_config(
        [{"url": "https://example.org/config.git", "dashboard": True}], state_dir=tmp_path))
    with pytest.raises(ConfigError, match="dashboard: true needs forge"):
        loading.load_bot_config(path)
