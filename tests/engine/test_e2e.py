"""End to end against the real registry and git server: run, plan, and bad input."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import devservers
import testing
from image_bot import cli
from image_bot.update.result import Edited

pytestmark = pytest.mark.e2e

DEPLOYMENT = """\
# the app, as a human wrote it
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app   # keep this comment
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: "{host}/team/{image}:1.0.0"   # quoted, with a comment
      containers:
        - name: app
          image: {host}/team/{image}:1.0.0
          args: ['--port', "8080"]
        - name: sidecar
          image: {host}/team/other:0.1.0
"""

PUBLISH = {"mode": "commit", "branch": "main",
           "message": "chore: update {{ image }} to {{ new_tag }}"}


def _policy(*, name: str, host: str, image: str, semver: str,
            paths: tuple[str, ...] | None = testing.DEPLOY_PATHS) -> str:
    return testing.policy(name, f"{host}/team/{image}", select={"semver": {"range": semver}},
                          paths=paths, publish=PUBLISH)


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def _remote_log(url: str, tmp_path: Path) -> tuple[Path, list[str]]:
    clone = tmp_path / "check"
    if clone.exists():
        devservers.git("fetch", "-q", "origin", cwd=clone)
        devservers.git("reset", "-q", "--hard", "origin/main", cwd=clone)
    else:
        subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    return clone, devservers.git("log", "--format=%H %s", cwd=clone).splitlines()


def test_run_once_commits_exactly_the_tag_change_and_is_idempotent(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], tmp_path: Path,
) -> None:
    testing.push_tags(registry, "team/app", ["1.0.0", "1.1.0", "2.0.0"])
    url = config_repo({
        "deploy/app.yaml": DEPLOYMENT.format(host=registry.host, image="app"),
        "policies/app.yaml": _policy(name="app", host=registry.host, image="app", semver="^1.0"),
    })
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])

    result = _invoke("run", "--once", "--config", str(config))

    assert result.exit_code == 0, result.output
    clone, log = _remote_log(url, tmp_path)
    assert len(log) == 2
    assert log[0].split(" ", 1)[1] == f"chore: update {registry.host}/team/app to 1.1.0"
    diff = devservers.git("show", "--format=", "--unified=0", "HEAD", cwd=clone)
    changed = [line for line in diff.splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed == [
        f'-          image: "{registry.host}/team/app:1.0.0"   # quoted, with a comment',
        f'+          image: "{registry.host}/team/app:1.1.0"   # quoted, with a comment',
        f'-          image: {registry.host}/team/app:1.0.0',
        f'+          image: {registry.host}/team/app:1.1.0',
    ]
    expected = DEPLOYMENT.format(host=registry.host, image="app").replace(
        "team/app:1.0.0", "team/app:1.1.0")
    assert (clone / "deploy/app.yaml").read_bytes() == expected.encode()

    again = _invoke("run", "--once", "--config", str(config), "--json")

    assert again.exit_code == 0, again.output
    report = json.loads(again.output)
    assert report["ok"] is True
    assert report["repositories"][0]["commits"] == []
    assert report["repositories"][0]["outcomes"][0]["status"] == "current"
    assert len(_remote_log(url, tmp_path)[1]) == 2


def test_crlf_and_bom_survive_byte_for_byte(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str | bytes]], str],
    bot_config: Callable[..., Path], tmp_path: Path,
) -> None:
    testing.push_tags(registry, "team/crlf", ["1.0.0", "1.0.1"])
    original = ("\ufeff" + DEPLOYMENT.format(host=registry.host, image="crlf")).replace(
        "\n", "\r\n").encode()
    url = config_repo({
        "deploy/app.yaml": original,
        "policies/p.yaml": _policy(name="crlf", host=registry.host,
                                   image="crlf", semver=">=1.0.0 <2"),
    })
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])

    result = _invoke("run", "--once", "--config", str(config))

    assert result.exit_code == 0, result.output
    clone, _ = _remote_log(url, tmp_path)
    assert (clone / "deploy/app.yaml").read_bytes() == original.replace(
        b"team/crlf:1.0.0", b"team/crlf:1.0.1")


def test_plan_prints_the_diff_and_commits_nothing(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], tmp_path: Path,
) -> None:
    testing.push_tags(registry, "team/planned", ["1.0.0", "1.2.0"])
    url = config_repo({
        "deploy/app.yaml": DEPLOYMENT.format(host=registry.host, image="planned"),
        "policies/p.yaml": _policy(name="planned", host=registry.host,
                                   image="planned", semver="~1"),
    })
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])

    result = _invoke("plan", "--config", str(config))

    assert result.exit_code == 0, result.output
    assert f"+          image: {registry.host}/team/planned:1.2.0" in result.output
    assert f"-          image: {registry.host}/team/planned:1.0.0" in result.output
    assert len(_remote_log(url, tmp_path)[1]) == 1


def test_a_run_shows_its_diff_in_json_and_works_it_out_only_then(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    testing.push_tags(registry, "team/shown", ["1.0.0", "1.2.0"])
    url = config_repo({
        "deploy/app.yaml": DEPLOYMENT.format(host=registry.host, image="shown"),
        "policies/p.yaml": _policy(name="shown", host=registry.host, image="shown",
                                   semver="~1"),
    })
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    worked: list[str] = []
    diff = Edited.diff

    def counting(self: Edited) -> str:
        worked.append(self.file)
        return diff(self)

    monkeypatch.setattr(Edited, "diff", counting)

    quiet = _invoke("run", "--once", "--config", str(config))

    assert quiet.exit_code == 0, quiet.output
    assert worked == []  # committed and pushed; no one asked for the diff
    testing.push_tags(registry, "team/shown", ["1.3.0"])
    shown = _invoke("run", "--once", "--json", "--config", str(config))
    assert shown.exit_code == 0, shown.output
    [repo] = json.loads(shown.output)["repositories"]
    assert f"-          image: {registry.host}/team/shown:1.2.0" in repo["diff"]
    assert f"+          image: {registry.host}/team/shown:1.3.0" in repo["diff"]
    assert worked == ["deploy/app.yaml"]


def test_basic_auth_registry(
    auth_registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for tag in ["1.0.0", "1.3.0"]:
        devservers.push_image(auth_registry.url, "team/private", tag,
                              auth=("tester", "s3cret-pw"))
    url = config_repo({
        "deploy/app.yaml": DEPLOYMENT.format(host=auth_registry.host, image="private"),
        "policies/p.yaml": _policy(name="private", host=auth_registry.host,
                                   image="private", semver="^1"),
    })
    registries = [{"host": auth_registry.host, "insecure": True,
                   "username_env": "REG_USER", "password_env": "REG_PASSWORD"}]
    config = bot_config(url, registries=registries)

    denied = _invoke("run", "--once", "--config", str(config))
    assert denied.exit_code == 1
    assert f"registry {auth_registry.host}: credentials required for team/private" in (
        denied.output)
    assert "s3cret-pw" not in denied.output

    monkeypatch.setenv("REG_USER", "tester")
    monkeypatch.setenv("REG_PASSWORD", "s3cret-pw")
    result = _invoke("run", "--once", "--config", str(config))

    assert result.exit_code == 0, result.output
    clone, log = _remote_log(url, tmp_path)
    assert len(log) == 2
    assert "team/private:1.3.0" in (clone / "deploy/app.yaml").read_text()


def test_one_broken_policy_does_not_stop_the_others(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], tmp_path: Path,
) -> None:
    testing.push_tags(registry, "team/good", ["1.0.0", "1.0.5"])
    url = config_repo({
        "deploy/good.yaml": DEPLOYMENT.format(host=registry.host, image="good"),
        "deploy/bad.yaml": DEPLOYMENT.format(host=registry.host, image="bad"),
        "policies/good.yaml": _policy(name="good", host=registry.host, image="good", semver="^1"),
        "policies/bad.yaml": _policy(name="bad", host=registry.host, image="bad", semver=">>1"),
    })
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])

    result = _invoke("run", "--once", "--config", str(config))

    assert result.exit_code == 1
    assert ("error: bad: ==> File policies/bad.yaml ==> At ImagePolicy(name='bad') "
            "==> At key: spec.select.semver.range: invalid semver range '>>1': "
            "'>1' is not a version") in result.output
    clone, log = _remote_log(url, tmp_path)
    assert len(log) == 2
    assert "team/good:1.0.5" in (clone / "deploy/good.yaml").read_text()
    assert "team/bad:1.0.0" in (clone / "deploy/bad.yaml").read_text()


def test_a_policy_that_does_not_validate_is_named_in_the_report(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path],
) -> None:
    bad = _policy(name="bad", host=registry.host, image="bad", semver="^1").replace(
        '"semver"', '"semvr"')
    url = config_repo({"deploy/bad.yaml": DEPLOYMENT.format(host=registry.host, image="bad"),
                       "policies/bad.yaml": bad})
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])

    result = _invoke("run", "--once", "--config", str(config), "--json")

    assert result.exit_code == 1
    [outcome] = json.loads(result.stdout)["repositories"][0]["outcomes"]
    assert (outcome["policy"], outcome["file"], outcome["status"]) == (
        "bad", "policies/bad.yaml", "failed")
    assert "did you mean `semver`?" in outcome["message"]
    assert "/tmp" not in outcome["message"]
    text = _invoke("run", "--once", "--config", str(config))
    assert text.output.count("did you mean `semver`?") == 1, text.output  # printed once
    assert re.search(r"^bad +failed +\(error below\)$", text.output, re.M)  # not again


@pytest.mark.parametrize(("case", "expected"), [
    ("unreachable", "registry 127.0.0.1:{dead} unreachable while reading team/app"),
    ("missing", "registry {host}, image team/does-not-exist: not found (HTTP 404 NAME_UNKNOWN)"),
    ("unparsable", "deploy/broken.yaml: does not parse as YAML"),
])
def test_bad_input_fails_clearly_and_changes_nothing(
    case: str, expected: str, registry: devservers.Registry,
    config_repo: Callable[[dict[str, str]], str], bot_config: Callable[..., Path],
    tmp_path: Path,
) -> None:
    testing.push_tags(registry, "team/app", ["1.0.0", "1.1.0"])
    dead = devservers.free_port()
    host = {"unreachable": f"127.0.0.1:{dead}"}.get(case, registry.host)
    image = {"missing": "does-not-exist"}.get(case, "app")
    files = {
        "deploy/app.yaml": DEPLOYMENT.format(host=host, image=image),
        "policies/p.yaml": _policy(name="p", host=host, image=image, semver="^1"),
    }
    if case == "unparsable":
        files["deploy/broken.yaml"] = f"image: {host}/team/app:1.0.0\n  bad: [indent\n"
    url = config_repo(files)
    registries = [{"host": host, "insecure": True}]
    config = bot_config(url, registries=registries)

    result = _invoke("run", "--once", "--config", str(config))

    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert expected.format(dead=dead, host=registry.host) in errors[0]
    assert len(_remote_log(url, tmp_path)[1]) == 1


def test_default_paths_never_rewrite_the_policy_files_themselves(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], tmp_path: Path,
) -> None:
    testing.push_tags(registry, "team/everywhere", ["1.0.0", "1.4.0"])
    policy = _policy(name="everywhere", host=registry.host, image="everywhere", semver="^1",
                     paths=None)
    url = config_repo({
        "deploy/app.yaml": DEPLOYMENT.format(host=registry.host, image="everywhere"),
        "policies/p.yaml": policy,
    })
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])

    result = _invoke("run", "--once", "--config", str(config))

    assert result.exit_code == 0, result.output
    clone, log = _remote_log(url, tmp_path)
    assert len(log) == 2
    assert (clone / "policies/p.yaml").read_text() == policy
    assert "team/everywhere:1.4.0" in (clone / "deploy/app.yaml").read_text()
    again = _invoke("run", "--once", "--config", str(config))
    assert again.exit_code == 0, again.output


def test_a_policy_that_matches_nothing_is_unmatched_and_fails_only_with_strict(
        registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
        bot_config: Callable[..., Path]) -> None:
    image = f"{registry.host}/team/typo"
    testing.push_tags(registry, "team/typo", ["1.0.0", "1.1.0"])
    url = config_repo({
        "deploy/app.yaml": testing.deployment("app", {"app": f"{image}:1.0.0"}),
        # a typo in paths: the policy would show green "current" for ever
        "policies/typo.yaml": testing.policy("typo", image, paths=["deploy/apps/**"]),
    })
    config = str(bot_config(url, registries=[{"host": registry.host, "insecure": True}]))

    lenient = _invoke("plan", "--json", "--config", config)
    strict = _invoke("plan", "--strict", "--config", config)

    assert lenient.exit_code == 0, lenient.output
    [outcome] = json.loads(lenient.output)["repositories"][0]["outcomes"]
    assert (outcome["status"], outcome["message"]) == (
        "unmatched", f"no references to {image} in deploy/apps/**")
    assert strict.exit_code == 1
    assert f"error: typo: no references to {image} in deploy/apps/**" in strict.stderr


@pytest.mark.parametrize(("flag", "message"), [
    ("0.5", "must be at least 1s"),
    ("5 minutes", "'5 minutes' is not a duration: write for example 90s, 15m, 2h or 7d"),
])
def test_run_interval_takes_the_one_duration_grammar(tmp_path: Path, flag: str,
                                                     message: str) -> None:
    config = testing.write_json(tmp_path / "bot.yaml", testing.bot_config(
        ["file:///nowhere"], state_dir=tmp_path / "state"))
    result = _invoke("run", "--interval", flag, "--config", str(config))
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("1.5", 1.5), ("30s", 30.0), ("5m", 300.0), ("1m30s", 90.0), ("1h", 3600.0),
    ("500ms", 0.5), ("1d", 86400.0),
])
def test_duration_flags(text: str, seconds: float) -> None:
    from image_bot.cli import options

    assert options.seconds(None, None, text) == seconds  # type: ignore[arg-type]


def test_validate_config_fetches_each_repository_and_cross_checks_its_policies(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    host = registry.host
    url = config_repo({
        "deploy/app.yaml": ('image: ghcr.io/t/app:1.0.0 # {"$imagepolicy": "flux-system:good"}\n'
                            'other: ghcr.io/t/x:1.0.0 # {"$imagepolicy": "flux-system:ghost"}\n'),
        "policies/good.yaml": _policy(name="good", host=host, image="good", semver="^1"),
        "policies/pr.yaml": testing.policy("pr", f"{host}/team/pr",
                                           publish={"mode": "pull-request"}),
        "policies/rel.yaml": testing.policy("rel", f"{host}/team/rel",
                                            publish={"mode": "commit", "branch": "release"}),
        "policies/stage.yaml": testing.policy("stage", f"{host}/team/good", select={
            "promote": {"from": "upstream-stage"}, "semver": {"range": "^1"}}),
    })
    # the upstream stage lives in another repository of the config; a typo matches none
    other = config_repo({"policies/up.yaml": testing.policy("upstream-stage",
                                                            f"{host}/team/good"),
                         "policies/typo.yaml": testing.policy("typo", f"{host}/team/good",
                                                              select={"promote": {
                                                                  "from": "upstream-stgae"},
                                                                  "semver": {"range": "^1"}})})
    config = testing.write_json(tmp_path / "bot.yaml", testing.bot_config(
        [{"url": u, "branch": "main", "policies": "policies/"} for u in (url, other)],
        registries=[], state_dir=tmp_path / "state"))

    result = _invoke("validate", "--config", str(config))

    assert result.exit_code == 1, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("repository ")]
    assert problems == [
        f"repository {url}: ==> File policies/pr.yaml ==> At ImagePolicy(name='pr') ==> At "
        f"key: spec.publish.mode: pull-request, but this repository has no forge (set "
        f"repositories[].forge in the bot config)",
        f"repository {url}: ==> File policies/rel.yaml ==> At ImagePolicy(name='rel') ==> At "
        f"key: spec.publish.branch: 'release' differs from the repository branch 'main'; "
        f"commit mode pushes to the branch the policies are read from",
        f"repository {url}: deploy/app.yaml:2: marker 'flux-system:ghost' names no policy of "
        f"this repository",
        f"repository {other}: ==> File policies/typo.yaml ==> At ImagePolicy(name='typo') ==> "
        f"At key: spec.select.promote.from: no policy named 'upstream-stgae' in any repository "
        f"of the bot config",
    ]
    assert "3 valid policies, 4 problem(s)" in result.output
    assert not (tmp_path / "state").exists()  # the daemon's state dir is never touched


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def test_commit_mode_can_push_to_another_branch_rebuilt_from_the_base_each_cycle(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], tmp_path: Path,
) -> None:
    testing.push_tags(registry, "team/pushed", ["1.0.0", "1.1.0"])
    deployment = DEPLOYMENT.format(host=registry.host, image="pushed")
    url = config_repo({
        "deploy/app.yaml": deployment,
        "policies/p.yaml": testing.policy(
            "p", f"{registry.host}/team/pushed",
            publish={**PUBLISH, "push-branch": "image-updates"}),
    })
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    main_before = _git("ls-remote", url, "refs/heads/main").split()[0]

    first = _invoke("run", "--once", "--config", str(config))
    pushed = _git("ls-remote", url, "refs/heads/image-updates").split()[0]
    again = _invoke("run", "--once", "--config", str(config))  # same content: no new push
    assert _git("ls-remote", url, "refs/heads/image-updates").split()[0] == pushed
    testing.push_tags(registry, "team/pushed", ["1.2.0"])
    newer = _invoke("run", "--once", "--config", str(config))

    assert (first.exit_code, again.exit_code, newer.exit_code) == (0, 0, 0), newer.output
    assert "and pushed to image-updates" in first.output and "pushed to main" not in first.output
    # the second cycle rebuilt the same change: nothing pushed, and it says so
    assert "committed" not in again.output and "already on image-updates" in again.output
    assert _git("ls-remote", url, "refs/heads/main").split()[0] == main_before
    clone = tmp_path / "updates"
    _git("clone", "-q", "-b", "image-updates", url, str(clone))
    assert "team/pushed:1.2.0" in (clone / "deploy/app.yaml").read_text()
    # rebuilt from main each cycle: one bot commit on top of main, not a growing stack
    assert _git("-C", str(clone), "rev-list", "--count", f"{main_before}..HEAD") == "1\n"
    assert _git("-C", str(clone), "rev-parse", "HEAD^") == f"{main_before}\n"
    assert pushed != _git("-C", str(clone), "rev-parse", "HEAD").strip()
    assert _git("-C", str(clone), "log", "-1", "--format=%s") == (
        f"chore: update {registry.host}/team/pushed to 1.2.0\n")

    # a human commit on the branch: the bot leaves it alone and says so
    (clone / "notes.txt").write_text("mine\n")
    _git("-C", str(clone), "add", "notes.txt")
    _git("-C", str(clone), "-c", "user.name=Human", "-c", "user.email=human@example.com",
         "commit", "-q", "-m", "human")
    _git("-C", str(clone), "push", "-q", "origin", "image-updates")
    human_tip = _git("-C", str(clone), "rev-parse", "HEAD").strip()
    testing.push_tags(registry, "team/pushed", ["1.3.0"])

    blocked = _invoke("run", "--once", "--config", str(config))

    assert blocked.exit_code == 1
    assert "left 'image-updates' alone: it has commits image-bot did not make" in blocked.output
    assert _git("ls-remote", url, "refs/heads/image-updates").split()[0] == human_tip
    assert _git("ls-remote", url, "refs/heads/main").split()[0] == main_before
