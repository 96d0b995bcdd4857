"""``image-bot test``: offline tag lists and the real registry; output, --json, exit codes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import devservers
from image_bot import cli

NGINX_TAGS = "1.27.0\n1.27.0-alpine\n1.27.0-alpine3.20\n1.27.0-slim\n"


def _test(*args: str, tags: str | None = None) -> Result:
    if tags is not None:
        args = (*args, "--tags-from", "-")
    return CliRunner().invoke(cli.main, ["test", *args], input=tags, catch_exceptions=False)


def test_prints_the_chosen_tag_on_stdout_and_the_reason_on_stderr() -> None:
    result = _test("app", "--prerelease", tags="1.0.0-rc9\n1.0.0-rc10\n0.9.0\n")
    assert result.exit_code == 0
    assert result.stdout == "1.0.0-rc10\n"
    assert result.stderr == "1.0.0-rc10 is the highest version in '*'\n"


def test_json_shape() -> None:
    result = _test("app", "--prerelease", "--json", tags="1.0.0-rc9\n1.0.0-rc10\n")
    assert json.loads(result.stdout) == {
        "selected": "1.0.0-rc10", "candidates": ["1.0.0-rc10", "1.0.0-rc9"],
        "reason": "1.0.0-rc10 is the highest version in '*'"}


def test_explain_matches_the_documented_example(tmp_path: Path) -> None:
    (tmp_path / "tags.txt").write_text(NGINX_TAGS)
    result = CliRunner().invoke(cli.main, ["test", "nginx:1.25.3-alpine3.19", "--tags-from",
                                           str(tmp_path / "tags.txt"), "--explain"])
    assert result.exit_code == 0
    assert result.stdout == "1.27.0-alpine3.20\n"
    assert result.stderr.splitlines() == [
        "reason: 1.27.0-alpine3.20 is the highest version in '*' (current 1.25.3-alpine3.19)",
        "winner: 1.27.0-alpine3.20",
        "runner-up: 1.27.0-alpine",
        "ranked (2, best first):",
        "  1. 1.27.0-alpine3.20",
        "  2. 1.27.0-alpine",
        "excluded (2):",
        "  1.27.0       variant: no variant, not the current family 'alpine'",
        "  1.27.0-slim  variant: variant 'slim', not the current family 'alpine'",
    ]
    docs = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text()
    assert "\n".join(result.stderr.splitlines()) in docs


def test_explain_json_lists_exclusions_and_the_update() -> None:
    result = _test("nginx", "--current", "1.25.3", "--json", "--explain", tags=NGINX_TAGS)
    data = json.loads(result.stdout)
    assert data["selected"] == data["update"] == "1.27.0"
    assert data["runner_up"] is None
    assert data["excluded"][0] == {"tag": "1.27.0-alpine", "rule": "variant",
                                   "detail": "has variant 'alpine'; the current tag has none"}


def test_nothing_qualifies_still_exits_0() -> None:
    result = _test("app", "--semver", "^9", "--json", tags="1.0.0\nlatest\n")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "selected": None, "candidates": [],
        "reason": "no tag qualifies (excluded: 1 not-a-version, 1 range)"}


@pytest.mark.parametrize(("args", "expected"), [
    (["--numerical", "--pattern", r"^build-(\d+)$", "--extract", "$1"], "build-10"),
    (["--numerical", "--order", "desc"], "10"),
    (["--alphabetical"], "build-9"),
    (["--alphabetical", "--order", "desc", "--exclude", "1*"], "2.0.0"),
    (["--alphabetical", "--exclude", "regex:^(b|2)"], "10"),
    (["--semver", "^1", "--current", "1.0.0", "--max-bump", "patch"], "1.0.1"),
    (["--semver", "*", "--current", "1.5", "--precision", "any"], "10"),
    (["--semver", "*", "--current", "1.5"], None),
    (["--current", "3.0.0", "--allow-downgrade"], "2.0.0"),
])
def test_strategy_flags(args: list[str], expected: str | None) -> None:
    tags = "build-9\nbuild-10\n10\n1.0.0\n1.0.1\n1.1.0\n2.0.0\n"
    result = _test("app", *args, tags=tags)
    shown = f"{expected}\n" if expected else ""
    assert (result.exit_code, result.stdout) == (0, shown), result.stderr


def test_created_times_from_the_list() -> None:
    now = datetime.now(UTC)
    lines = [f"old\t{(now - timedelta(days=3)).isoformat()}",
             f"new\t{(now - timedelta(hours=1)).isoformat()}", "unknown"]
    tags = "\n".join(lines) + "\n"
    assert _test("app", "--newest-build", tags=tags).stdout == "new\n"
    aged = _test("app", "--newest-build", "--min-age", "1d", "--explain", tags=tags)
    assert aged.stdout == "old\n"
    assert "  new      min-age: only 1h old (min-age 1d)" in aged.stderr.splitlines()


def test_digest_from_the_list() -> None:
    digest = "sha256:" + "c" * 64
    result = _test("redis", "--digest", "7-alpine", tags=f"7-alpine\t-\t{digest}\n7.2\n")
    assert result.stdout == f"7-alpine@{digest}\n"


def test_comments_and_blank_lines_are_skipped() -> None:
    assert _test("app", tags="# a comment\n\n1.0.0\n  \n").stdout == "1.0.0\n"


@pytest.mark.parametrize(("args", "tags", "message"), [
    (["--semver", ">>1"], "1.0.0\n",
     "error: select.semver.range: invalid semver range '>>1': '>1' is not a version "
     "(at character 2)\n"),
    (["--pattern", "("], "1.0.0\n", "error: filter.pattern: invalid regular expression '(': "
                                    "missing ), unterminated subpattern at position 0\n"),
    (["--min-age", "soon"], "1.0.0\n", "error: min-age: 'soon' is not a duration: write for "
                                       "example 90s, 15m, 2h or 7d\n"),
    (["--numerical", "--variant", "alpine"], "1\n",
     "error: variant: variant applies to the semver strategy only, not numerical\n"),
    ([], "1.0.0\nbad tag\n", "error: - line 2: expected TAG[<TAB>CREATED[<TAB>DIGEST]], got "
                             "'bad tag'\n"),
    ([], "1.0.0\tyesterday\n", "error: - line 1: 'yesterday' is not an RFC 3339 time\n"),
    ([], "1.0.0\t2026-01-01T00:00:00\n",
     "error: - line 1: '2026-01-01T00:00:00' has no time zone (add Z or +00:00)\n"),
    ([], "1.0.0\t-\tmd5:x\n", "error: - line 1: 'md5:x' is not a digest (sha256:…)\n"),
])
def test_policy_and_input_errors_exit_2(args: list[str], tags: str, message: str) -> None:
    result = _test("app", *args, tags=tags)
    assert (result.exit_code, result.stderr) == (2, message)
    assert result.stdout == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--numerical", "--newest-build"], "choose one strategy, not --numerical and "
                                        "--newest-build"),
    (["--order", "desc"], "--order goes with --numerical or --alphabetical"),
    (["--max-bump", "huge"], "Invalid value for '--max-bump'"),
])
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = _test("app", *args, tags="1\n")
    assert result.exit_code == 2
    assert message in result.stderr


def test_invalid_image_exits_2() -> None:
    result = _test("Not An Image", tags="1\n")
    assert (result.exit_code, result.stderr) == (2, "error: not an image reference: "
                                                    "'Not An Image'\n")


# --- against the real registry -------------------------------------------------------


@pytest.fixture
def registry_config(registry: devservers.Registry, tmp_path: Path) -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text(json.dumps({"repositories": [{"url": "file:///unused"}],
                                "registries": [{"host": registry.host, "insecure": True}]}))
    return path


@pytest.mark.e2e
def test_ranks_the_registry_tags(registry: devservers.Registry, registry_config: Path) -> None:
    name = f"team/rank-{uuid.uuid4().hex[:8]}"
    for tag in ["1.0.0", "1.1.0", "1.2.0-rc.1", "2.0.0", "latest"]:
        devservers.push_image(registry.url, name, tag)
    result = _test(f"{registry.host}/{name}:1.0.0", "--semver", "^1", "--config",
                   str(registry_config), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "selected": "1.1.0", "candidates": ["1.1.0", "1.0.0"],
        "reason": "1.1.0 is the highest version in '^1' (current 1.0.0)"}


@pytest.mark.e2e
def test_newest_build_and_platforms_from_the_registry(registry: devservers.Registry,
                                                      registry_config: Path) -> None:
    name = f"team/nightly-{uuid.uuid4().hex[:8]}"
    devservers.push_image(registry.url, name, "nightly-a", created="2026-03-01T00:00:00Z")
    devservers.push_image(registry.url, name, "nightly-b", created="2026-03-03T00:00:00Z")
    devservers.push_index(registry.url, name, "nightly-c", ["linux/amd64", "linux/arm64"],
                          created="2026-03-02T00:00:00Z")
    image = f"{registry.host}/{name}"
    newest = _test(image, "--newest-build", "--config", str(registry_config))
    assert newest.stdout == "nightly-b\n", newest.stderr
    both = _test(image, "--newest-build", "--platform", "linux/arm64", "--config",
                 str(registry_config), "--json", "--explain")
    data = json.loads(both.stdout)
    assert data["selected"] == "nightly-c"
    assert {e["tag"]: e["detail"] for e in data["excluded"]} == {
        "nightly-a": "lacks platform(s) linux/arm64",
        "nightly-b": "lacks platform(s) linux/arm64"}


@pytest.mark.e2e
def test_digest_from_the_registry(registry: devservers.Registry,
                                  registry_config: Path) -> None:
    name = f"team/digest-{uuid.uuid4().hex[:8]}"
    digest = devservers.push_image(registry.url, name, "stable")
    devservers.push_image(registry.url, name, "1.0")
    result = _test(f"{registry.host}/{name}", "--digest", "stable", "--config",
                   str(registry_config))
    assert result.stdout == f"stable@{digest}\n", result.stderr


@pytest.mark.e2e
def test_missing_image_exits_1(registry: devservers.Registry, registry_config: Path) -> None:
    result = _test(f"{registry.host}/team/nothing-{uuid.uuid4().hex[:8]}", "--config",
                   str(registry_config))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: registry {registry.host}")


@pytest.mark.e2e
def test_verbose_prints_each_registry_request_without_secrets(
        auth_registry: devservers.Registry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"team/verbose-{uuid.uuid4().hex[:8]}"
    for tag in ["1.0.0", "1.1.0"]:
        devservers.push_image(auth_registry.url, name, tag, auth=("tester", "s3cret-pw"))
    config = tmp_path / "bot.yaml"
    config.write_text(json.dumps({
        "repositories": [{"url": "file:///unused"}],
        "registries": [{"host": auth_registry.host, "insecure": True,
                        "username_env": "REG_USER", "password_env": "REG_PASSWORD"}]}))
    monkeypatch.setenv("REG_USER", "tester")
    monkeypatch.setenv("REG_PASSWORD", "s3cret-pw")

    result = _test(f"{auth_registry.host}/{name}:1.0.0", "--semver", "^1", "--config",
                   str(config), "--verbose")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "1.1.0\n"
    lines = [line for line in result.stderr.splitlines() if line.startswith("GET ")]
    tags_url = f"{auth_registry.url}/v2/{name}/tags/list"
    assert any(line.startswith(f"GET {tags_url}") and " → 200 (" in line for line in lines), (
        result.stderr)
    assert all(line.endswith(" ms)") for line in lines)
    assert "s3cret-pw" not in result.stderr
    assert "Basic " not in result.stderr


@pytest.mark.e2e
def test_insecure_reaches_a_plain_http_registry_without_a_config(
        registry: devservers.Registry) -> None:
    name = f"team/plain-{uuid.uuid4().hex[:8]}"
    for tag in ["1.0.0", "1.1.0"]:
        devservers.push_image(registry.url, name, tag)
    result = _test(f"{registry.host}/{name}:1.0.0", "--insecure")
    assert (result.exit_code, result.stdout) == (0, "1.1.0\n"), result.stderr
