"""Commit mode against the real git HTTP server: push races, rollbacks, credentials, signing."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import devservers
import testing
from image_bot import cli
from image_bot.errors import ImageBotError, PublishError, PushRejected
from image_bot.publish import committing
from image_bot.publish import workspace as workspaces

pytestmark = pytest.mark.e2e

class Repo:
    def __init__(self, registry: devservers.Registry, git_server: devservers.GitServer,
                 tmp_path: Path, *, commit: str = "per-cycle") -> None:
        self.registry, self.git_server, self.tmp_path = registry, git_server, tmp_path
        self.image = f"c-{uuid.uuid4().hex[:8]}"
        for name in (self.image, f"{self.image}-side"):
            testing.push_tags(registry, f"team/{name}", ("1.0.0", "1.1.0"))
        self.name = f"config-{uuid.uuid4().hex[:10]}.git"
        team = f"{registry.host}/team"
        publish = {"mode": "commit", "commit": commit}
        self.bare = devservers.create_repo(git_server.root, self.name, {
            "deploy/app.yaml": testing.deployment("app", {
                "app": f"{team}/{self.image}:1.0.0", "side": f"{team}/{self.image}-side:1.0.0"}),
            "policies/app.yaml": testing.policy("app", f"{team}/{self.image}", publish=publish),
            "policies/side.yaml": testing.policy("side", f"{team}/{self.image}-side",
                                                 publish=publish)})

    def config(self, url: str | None = None, **repo: Any) -> Path:
        return testing.write_json(self.tmp_path / "bot.yaml", testing.bot_config(
            [{"url": url or self.git_server.url(self.name), "branch": "main",
              "push_backoff": 0, **repo}],
            registries=[self.registry.host], git=testing.GIT_IDENTITY,
            state_dir=self.tmp_path / "state"))

    def run(self, url: str | None = None, **repo: Any) -> Result:
        return CliRunner().invoke(cli.main, ["run", "--once", "--json", "--config",
                                             str(self.config(url, **repo))],
                                  catch_exceptions=False)

    def log(self) -> list[str]:
        return devservers.git("log", "--format=%an|%s", "main", cwd=self.bare).splitlines()

    def file(self) -> str:
        return devservers.git("show", "main:deploy/app.yaml", cwd=self.bare)

    def human_commit(self, edit: Callable[[str], str], message: str) -> None:
        work = self.tmp_path / f"human-{uuid.uuid4().hex[:6]}"
        subprocess.run(["git", "clone", "-q", str(self.bare), str(work)], check=True)
        target = work / "deploy/app.yaml"
        target.write_text(edit(target.read_text()))
        devservers.git("commit", "-q", "-am", message, cwd=work)
        devservers.git("push", "-q", "origin", "main", cwd=work)


@pytest.fixture
def repo(registry: devservers.Registry, git_server: devservers.GitServer,
         tmp_path: Path) -> Repo:
    return Repo(registry, git_server, tmp_path)


def test_push_race_redoes_the_edit_on_the_new_tip(repo: Repo,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real_push = committing.push
    raced: list[int] = []

    def racing_push(ws: Any, **options: Any) -> None:
        if not raced:  # someone else pushes between our fetch and our push
            raced.append(1)
            repo.human_commit(lambda text: "# owned by team A\n" + text, "human: add owner")
        real_push(ws, **options)

    monkeypatch.setattr(committing, "push", racing_push)

    result = repo.run()

    assert result.exit_code == 0, result.output
    assert repo.log() == ["image-bot|chore(deps): update 2 images", "dev|human: add owner",
                          "dev|initial config"]
    text = repo.file()
    assert text.startswith("# owned by team A\n")  # the human's work is kept
    assert f"team/{repo.image}:1.1.0\n" in text and f"{repo.image}-side:1.1.0\n" in text


def test_a_branch_that_keeps_moving_gives_up_with_a_clear_error(
        repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    real_push = committing.push
    races = []

    def always_racing(ws: Any, **options: Any) -> None:
        races.append(1)
        repo.human_commit(lambda text: text + f"# race {len(races)}\n", f"race {len(races)}")
        real_push(ws, **options)

    monkeypatch.setattr(committing, "push", always_racing)

    result = repo.run(push_attempts=3)

    assert result.exit_code == 1
    error = json.loads(result.output)["repositories"][0]["error"]
    assert "rejected: the branch moved; gave up after 3 attempts" in error
    assert len(races) == 3
    assert [line.split("|")[0] for line in repo.log()] == ["dev"] * 4  # nothing of ours


def test_one_commit_per_policy_when_configured(registry: devservers.Registry,
                                               git_server: devservers.GitServer,
                                               tmp_path: Path) -> None:
    repo = Repo(registry, git_server, tmp_path, commit="per-policy")
    # two policies editing one file cannot be split into two commits: they stay together
    assert repo.run().exit_code == 0
    assert len(repo.log()) == 2

    (tmp_path / "split").mkdir()
    split = Repo(registry, git_server, tmp_path / "split", commit="per-policy")
    work = tmp_path / "split-work"
    subprocess.run(["git", "clone", "-q", str(split.bare), str(work)], check=True)
    text = (work / "deploy/app.yaml").read_text()
    main, side = text.split("        - name: side\n")
    (work / "deploy/app.yaml").write_text(main)
    (work / "deploy/side.yaml").write_text("containers:\n  - name: side\n" + "\n".join(
        line[6:] for line in side.splitlines()) + "\n")
    devservers.git("add", "-A", cwd=work)
    devservers.git("commit", "-q", "-m", "split files", cwd=work)
    devservers.git("push", "-q", "origin", "main", cwd=work)

    assert split.run().exit_code == 0
    subjects = [line.split("|")[1] for line in split.log()[:2]]
    assert sorted(subjects) == sorted(
        [f"chore(deps): update {split.image} from 1.0.0 to 1.1.0 (minor)",
         f"chore(deps): update {split.image}-side from 1.0.0 to 1.1.0 (minor)"])


def test_a_human_rollback_declines_the_version_until_a_newer_one(repo: Repo) -> None:
    assert repo.run().exit_code == 0
    assert f"team/{repo.image}:1.1.0" in repo.file()
    repo.human_commit(lambda text: text.replace(f"team/{repo.image}:1.1.0",
                                                f"team/{repo.image}:1.0.0"), "rollback app")

    again = repo.run()

    assert again.exit_code == 0, again.output
    assert repo.log()[0] == "dev|rollback app"  # the bot does not undo the rollback
    assert f"team/{repo.image}:1.0.0" in repo.file()

    devservers.push_image(repo.registry.url, f"team/{repo.image}", "1.2.0")
    newer = repo.run()

    assert newer.exit_code == 0, newer.output
    assert f"team/{repo.image}:1.2.0" in repo.file()


def test_https_credentials_never_reach_git_config_or_output(
        registry: devservers.Registry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "root").mkdir()
    server = devservers.start_git_server(tmp_path / "root", credentials="bot:pa55-w0rd-xyz")
    try:
        repo = Repo(registry, server, tmp_path)
        monkeypatch.setenv("GIT_PW", "pa55-w0rd-xyz")

        ok = repo.run(username="bot", password_env="GIT_PW")
        monkeypatch.setenv("GIT_PW", "wrong-pass-abc")
        refused = repo.run(username="bot", password_env="GIT_PW")
    finally:
        server.stop()

    assert ok.exit_code == 0, ok.output
    assert repo.log()[0].startswith("image-bot|")
    state = tmp_path / "state"
    for path in state.rglob("*"):
        if path.is_file() and path.suffix != ".db" and "objects" not in path.parts:
            assert b"pa55-w0rd-xyz" not in path.read_bytes(), path
    [config] = list(state.glob("repos/*/.git/config"))
    assert "bot@" not in config.read_text()
    assert refused.exit_code == 1
    assert "authentication refused" in json.loads(refused.output)["repositories"][0]["error"]
    assert "wrong-pass-abc" not in refused.output


def test_ssh_signed_commits(repo: Repo, tmp_path: Path) -> None:
    key = tmp_path / "signing_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bot",
                    "-f", str(key)], check=True)
    config = json.loads(repo.config().read_text())
    config["git"] |= {"sign": "ssh", "signing_key": str(key)}
    path = tmp_path / "signed.yaml"
    path.write_text(json.dumps(config))

    result = CliRunner().invoke(cli.main, ["run", "--once", "--config", str(path)],
                                catch_exceptions=False)

    assert result.exit_code == 0, result.output
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"bot@example.com {(tmp_path / 'signing_key.pub').read_text()}")
    verified = subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", "main"],
        cwd=repo.bare, capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    assert 'Good "git" signature for bot@example.com' in verified.stderr


def test_a_hook_rejection_fails_at_once_with_the_remotes_message(repo: Repo) -> None:
    calls = repo.tmp_path / "hook-calls"
    hook = repo.bare / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho call >> {calls}\n"
                    "echo 'policy: deploys are frozen until Monday' >&2\nexit 1\n")
    hook.chmod(0o755)

    result = repo.run(push_attempts=5)

    assert result.exit_code == 1
    error = json.loads(result.output)["repositories"][0]["error"]
    assert error == (f"git {repo.git_server.url(repo.name)}: push to 'main' refused by the "
                     f"remote: pre-receive hook declined; the remote said: policy: deploys "
                     f"are frozen until Monday")
    assert calls.read_text().splitlines() == ["call"]  # not retried as if the branch moved
    assert [line.split("|")[0] for line in repo.log()] == ["dev"]


def test_at_signs_colons_and_escapes_in_url_credentials_never_leak(
        registry: devservers.Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """user ``b@t-user``, password ``s3cr@t:pw@x``, written with literal ``@`` and ``%40``."""
    (tmp_path / "root").mkdir()
    server = devservers.start_git_server(tmp_path / "root",
                                         credentials="b@t-user:s3cr@t:pw@x")
    caplog.set_level("DEBUG")
    try:
        repo = Repo(registry, server, tmp_path)
        ok = repo.run(server.url(repo.name, credentials="b@t-user:s3cr@t:pw%40x"))
        refused = repo.run(server.url(repo.name, credentials="b@t-user:s3cr@t:wr0ng%40x"))
    finally:
        server.stop()

    assert ok.exit_code == 0, ok.output
    assert repo.log()[0].startswith("image-bot|")
    assert refused.exit_code == 1
    assert "authentication refused" in json.loads(refused.output)["repositories"][0]["error"]
    clean = server.url(repo.name)
    for result in (ok, refused):
        assert json.loads(result.output)["repositories"][0]["repository"] == clean
    seen = [ok.output, refused.output, caplog.text]
    state = tmp_path / "state"
    seen += [path.read_bytes().decode("utf-8", "replace") for path in state.rglob("*")
             if path.is_file() and "objects" not in path.parts]
    for text in seen:
        for fragment in ("s3cr", "t:pw", "pw%40x", "pw@x", "wr0ng", "t-user:"):
            assert fragment not in text


def test_only_the_bots_own_branches_are_force_pushed_and_only_under_a_lease(
        repo: Repo) -> None:
    ws = workspaces.Workspace.open(repo.git_server.url(repo.name), "main",
                                   repo.tmp_path / "state")
    tip = ws.head
    with pytest.raises(PublishError, match="refusing to force-push 'main': not a branch of "
                                           "image-bot"):
        committing.push_leased(ws, "main", tip, tip)
    committing.push_leased(ws, "image-bot/app", tip, None)  # created: nothing was expected
    with pytest.raises(PushRejected, match="rejected: the branch moved"):
        committing.push_leased(ws, "image-bot/app", None, "0" * 40)  # a tip it never saw
    assert devservers.git("rev-parse", "image-bot/app", cwd=repo.bare).strip() == tip


def test_files_at_reads_many_files_of_a_revision_and_only_regular_ones(
        git_server: devservers.GitServer, tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {f"deploy/app-{i}.yaml": f"n: {i}\n" for i in range(1200)}
    files["big.yaml"] = "x" * 5000
    name = f"many-{uuid.uuid4().hex[:8]}.git"
    bare = devservers.create_repo(git_server.root, name, files)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    (work / "link.yaml").symlink_to("deploy/app-1.yaml")
    devservers.git("add", "link.yaml", cwd=work)
    devservers.git("-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "link",
                   cwd=work)
    devservers.git("push", "-q", "origin", "HEAD:main", cwd=work)
    ws = workspaces.Workspace.open(git_server.url(name), "main", tmp_path / "state")
    wanted = [*files, "link.yaml", "missing.yaml"]
    found = ws.files_at(ws.head, wanted, max_bytes=4096)  # 1,200 names: several commands
    assert len(found) == 1200 and found["deploy/app-1199.yaml"] == b"n: 1199\n"
    assert "big.yaml" not in found and "link.yaml" not in found  # too large; a link
    assert ws.files_at(f"{ws.head}^^", wanted, max_bytes=4096) == {}  # before the first commit
    # one cat-file for all the blobs; an answer that is not the blob asked for is an error
    # naming the object, never another file's bytes
    with pytest.raises(PublishError, match=r"unexpected answer from git cat-file for 0{40}"):
        ws._blobs(["0" * 40])


def test_a_commit_is_named_by_the_sha_git_gives_its_head(
        git_server: devservers.GitServer, tmp_path: Path) -> None:
    """``commit`` returns the new commit (``Workspace.head``, read from the clone's files:
    a loose ref, a packed one, a detached HEAD), None when nothing changed."""
    name = f"head-{uuid.uuid4().hex[:8]}.git"
    devservers.create_repo(git_server.root, name, {"deploy/app.yaml": "image: a:1\n"})
    ws = workspaces.Workspace.open(git_server.url(name), "main", tmp_path / "state")
    identity = committing.Identity(workspaces.Author("image-bot", "bot@example.com"))
    assert ws.head == devservers.git("rev-parse", "HEAD", cwd=ws.root).strip()
    assert committing.commit(ws, ["deploy/app.yaml"], "nothing", identity) is None

    (ws.root / "deploy/app.yaml").write_text("image: a:2\n")
    made = committing.commit(ws, ["deploy/app.yaml"], "a:2", identity)

    assert made == devservers.git("rev-parse", "HEAD", cwd=ws.root).strip()
    assert devservers.git("log", "-1", "--format=%s", cwd=ws.root).strip() == "a:2"
    assert devservers.git("status", "--porcelain", cwd=ws.root) == ""  # staged and committed
    # only the files named: another changed file stays out of the commit, a new file is
    # not committed silently (nor dropped as "nothing changed")
    (ws.root / "other.yaml").write_text("x: 1\n")
    (ws.root / "deploy/app.yaml").write_text("image: a:3\n")
    with pytest.raises(ImageBotError, match="committing"):
        committing.commit(ws, ["other.yaml"], "new", identity)
    (ws.root / ".git/info/exclude").write_text("other.yaml\n")  # an ignored file neither
    with pytest.raises(ImageBotError, match="committing"):
        committing.commit(ws, ["other.yaml"], "new", identity)
    assert ws.head == made
    devservers.git("add", "-f", "other.yaml", cwd=ws.root)  # a leftover in the index
    third = committing.commit(ws, ["deploy/app.yaml"], "a:3", identity)
    assert third and devservers.git("show", "--name-only", "--format=", third,
                                    cwd=ws.root).split() == ["deploy/app.yaml"]
    assert committing.commit(ws, [], "nothing", identity) is None
    devservers.git("reset", "-q", "--hard", made, cwd=ws.root)
    devservers.git("pack-refs", "--all", cwd=ws.root)  # refs/heads/main now packed
    assert ws.head == made
    devservers.git("checkout", "-q", "--detach", "HEAD^", cwd=ws.root)
    assert ws.head == devservers.git("rev-parse", "main^", cwd=ws.root).strip() != made


def test_what_runs_meanwhile_a_commit_runs_while_git_works_and_its_error_wins(
        git_server: devservers.GitServer, tmp_path: Path) -> None:
    name = f"meanwhile-{uuid.uuid4().hex[:8]}.git"
    devservers.create_repo(git_server.root, name, {"deploy/app.yaml": "image: a:1\n"})
    ws = workspaces.Workspace.open(git_server.url(name), "main", tmp_path / "state")
    identity = committing.Identity(workspaces.Author("image-bot", "bot@example.com"))
    seen: list[str] = []

    def meanwhile() -> None:
        seen.append(ws.head)  # called while git commits (it may not have moved HEAD yet)

    (ws.root / "deploy/app.yaml").write_text("image: a:2\n")
    made = committing.commit(ws, ["deploy/app.yaml"], "a:2", identity, meanwhile=meanwhile)
    assert made == devservers.git("rev-parse", "HEAD", cwd=ws.root).strip()
    assert len(seen) == 1
    assert committing.commit(ws, [], "nothing", identity, meanwhile=meanwhile) is None
    assert len(seen) == 2  # asked for even without a commit: it may be waited for

    class Refused(Exception):
        pass

    def refusing() -> None:
        raise Refused

    (ws.root / "deploy/app.yaml").write_text("image: a:3\n")
    with pytest.raises(Refused):  # raised once git is done: the commit is there
        committing.commit(ws, ["deploy/app.yaml"], "a:3", identity, meanwhile=refusing)
    assert devservers.git("log", "-1", "--format=%s", cwd=ws.root).strip() == "a:3"
    (ws.root / "other.yaml").write_text("x: 1\n")  # untracked: git fails
    with pytest.raises(ImageBotError, match="committing"):
        committing.commit(ws, ["other.yaml"], "new", identity, meanwhile=meanwhile)
    assert len(seen) == 3
    with pytest.raises(Refused):  # git failed too; what ran meanwhile says why
        committing.commit(ws, ["other.yaml"], "new", identity, meanwhile=refusing)


def test_a_workspace_knows_whether_head_is_still_where_its_reset_left_it(
        git_server: devservers.GitServer, tmp_path: Path) -> None:
    """Two branches of one URL share a clone: opening the second moves HEAD away from the
    first's reset (the engine then resets before editing), as does a commit."""
    name = f"shared-{uuid.uuid4().hex[:8]}.git"
    bare = devservers.create_repo(git_server.root, name, {"deploy/app.yaml": "image: a:1\n"})
    devservers.git("branch", "staging", "main", cwd=bare)
    main = workspaces.Workspace.open(git_server.url(name), "main", tmp_path / "state")
    assert main.on_reset_tip()

    staging = workspaces.Workspace.open(git_server.url(name), "staging", tmp_path / "state")

    assert staging.root == main.root and staging.on_reset_tip()
    assert not main.on_reset_tip()  # HEAD is staging now
    main.reset()
    assert main.on_reset_tip() and not staging.on_reset_tip()
    (main.root / "deploy/app.yaml").write_text("image: a:2\n")
    identity = committing.Identity(workspaces.Author("image-bot", "bot@example.com"))
    assert committing.commit(main, ["deploy/app.yaml"], "a:2", identity)
    assert not main.on_reset_tip()  # a commit moved it


def test_the_bots_last_writes_are_read_from_its_newest_commits_first(
        git_server: devservers.GitServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked for some (policy, image) pairs, the log is read from the newest bot commits
    and goes further back only for a pair not found there."""
    name = f"writes-{uuid.uuid4().hex[:8]}.git"
    bare = devservers.create_repo(git_server.root, name, {"deploy/app.yaml": "n: 0\n"})
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    def commit(*trailers: str, author: str = "image-bot <bot@example.com>") -> None:
        message = "update\n\n" + "".join(f"{committing.TRAILER}: {t}\n" for t in trailers)
        devservers.git("commit", "-q", "--allow-empty", f"--author={author}", "-m", message,
                       cwd=work)

    commit("old reg/old 1.0.0")  # the oldest write, 20 bot commits back
    commit("app reg/app 0.9.0")
    for i in range(20):
        commit(f"app reg/app 1.0.{i}")
    commit("app reg/app 9.9.9", author="a human <h@example.com>")
    devservers.git("push", "-q", "origin", "HEAD:main", cwd=work)
    ws = workspaces.Workspace.open(git_server.url(name), "main", tmp_path / "state")
    logs = testing.recorded(monkeypatch, ws, "run")  # the first argument: the git command
    parsed: list[str] = []
    written = committing.written

    def parsing(message: str) -> list[tuple[str, str, str]]:
        parsed.append(message)
        return written(message)

    monkeypatch.setattr(committing, "written", parsing)

    newest = committing.bot_writes(ws, "bot@example.com", wanted={("app", "reg/app")})

    assert [(w.policy, w.tag) for w in newest] == [("app", "1.0.19")]  # not a human's
    assert logs == ["log"]  # found among the newest: nothing older read
    assert len(parsed) == 1  # nor parsed: the newest commit had every wanted pair
    both = committing.bot_writes(ws, "bot@example.com",
                                 wanted={("app", "reg/app"), ("old", "reg/old")})
    assert sorted((w.policy, w.tag) for w in both) == [("app", "1.0.19"), ("old", "1.0.0")]
    assert logs == ["log", "log", "log"]  # read further back for the old one
    every = committing.bot_writes(ws, "bot@example.com")
    assert sorted((w.policy, w.tag) for w in every) == [("app", "1.0.19"), ("old", "1.0.0")]
