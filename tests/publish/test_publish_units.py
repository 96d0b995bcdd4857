"""Publish building blocks without servers: PR bodies, credentials, retries, commit groups."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

import testing
from image_bot.config import loading, models, schedules, secrets
from image_bot.errors import ConfigError, ForgeError, ForgeUnavailable
from image_bot.policy import versions
from image_bot.publish import forges, messages, proposing, publishing
from image_bot.publish import workspace as workspaces
from image_bot.update.result import Change, UpdateResult

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_pr_body_is_a_table_and_round_trips_the_proposal() -> None:
    rows = [messages.Row("web", "ghcr.io/acme/web", "1.0.0", "1.2.0",
                         digest="sha256:" + "ab" * 32, created=NOW - timedelta(hours=5),
                         source="https://github.com/acme/web", files=("apps/web.yaml",)),
            messages.Row("api", "ghcr.io/acme/api", None, "2.0.1",
                         source="javascript:alert(1)")]

    body = messages.pr_body(rows, now=NOW)

    table = [line for line in body.splitlines() if line.startswith("| `")]
    assert table == [
        "| `ghcr.io/acme/web` | `1.0.0` → `1.2.0` | `sha256:abababababab…` | – | 5h | – | "
        "[source](https://github.com/acme/web) | `apps/web.yaml` |",
        "| `ghcr.io/acme/api` | `?` → `2.0.1` | – | – | – | – | – | – |",
    ]
    assert messages.proposed(body) == [("api", "ghcr.io/acme/api", "2.0.1"),
                                       ("web", "ghcr.io/acme/web", "1.2.0")]
    assert messages.proposed("a human wrote this") == []


def test_declined_ignores_prs_the_bot_closed_itself() -> None:
    body = messages.pr_body([messages.Row("web", "ghcr.io/acme/web", "1", "2")], now=NOW)

    class Closed:
        kind = "fake"

        def closed_unmerged(self, head: str, base: str) -> list[forges.PullRequest]:
            return [forges.PullRequest(3, "u", "t", body, (), "closed", head),
                    forges.PullRequest(4, "u", "t", body + messages.WITHDRAWN, (), "closed",
                                       head)]

    found = proposing.declined(Closed(), "image-bot/web", "main")  # type: ignore[arg-type]

    assert found == [proposing.Declined("web", "ghcr.io/acme/web", "2",
                                        "PR #3 closed without merging")]


def test_branch_names_are_deterministic_and_safe() -> None:
    assert proposing.branch_name("frontend") == "image-bot/frontend"
    assert proposing.branch_name("a b/c") == "image-bot/a-b-c"


def test_credentials_leave_the_url_and_enter_the_environment(tmp_path: Path) -> None:
    url, creds = workspaces.split_credentials("https://bot:s%40cret@git.example.com/a.git",
                                              workspaces.Credentials())
    assert url == "https://git.example.com/a.git"
    assert (creds.username, creds.password) == ("bot", "s@cret")
    assert "s@cret" not in repr(creds)

    env = workspaces.git_environment(creds, tmp_path / "askpass.sh")
    assert env["GIT_ASKPASS"] == str(tmp_path / "askpass.sh")
    assert env["IMAGE_BOT_GIT_PASSWORD"] == "s@cret"
    assert (env["GIT_CONFIG_KEY_0"], env["GIT_CONFIG_VALUE_0"]) == ("credential.helper", "")


def test_ssh_key_and_known_hosts_go_to_git_ssh_command(tmp_path: Path) -> None:
    creds = workspaces.Credentials(ssh_key_file=tmp_path / "my key",
                                   ssh_known_hosts_file=tmp_path / "known_hosts")
    env = workspaces.git_environment(creds, tmp_path / "askpass.sh")
    assert env["GIT_SSH_COMMAND"] == (
        f"ssh -o BatchMode=yes -i '{tmp_path}/my key' -o IdentitiesOnly=yes "
        f"-o UserKnownHostsFile={tmp_path}/known_hosts -o StrictHostKeyChecking=yes")
    assert "GIT_ASKPASS" not in env


def test_retries_back_off_on_temporary_errors_and_stop_on_permanent_ones() -> None:
    sleeps: list[float] = []
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("503")
        return "ok"

    def classify(exc: Exception) -> Exception | None:
        return ForgeUnavailable(str(exc)) if str(exc) == "503" else ForgeError(str(exc))

    assert forges.with_retries(flaky, attempts=4, backoff=0.5, what="x", classify=classify,
                               sleep=sleeps.append) == "ok"
    assert sleeps == [0.5, 1.0]

    def refused() -> str:
        calls.append(1)
        raise RuntimeError("401")

    calls.clear()
    with pytest.raises(ForgeError):
        forges.with_retries(refused, attempts=4, backoff=0.5, what="x", classify=classify,
                            sleep=sleeps.append)
    assert len(calls) == 1


def test_missing_token_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    expected = "forge.token_env: environment variable NO_SUCH_TOKEN is not set or empty"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        secrets.read("NO_SUCH_TOKEN", None, key="forge.token")


@pytest.mark.parametrize(("userinfo", "user", "password"), [
    ("bot:s3cr@t-pw", "bot", "s3cr@t-pw"),
    ("bot:a@b@c-pw", "bot", "a@b@c-pw"),
    ("bot:pa:ss@w-pw", "bot", "pa:ss@w-pw"),
    ("bot:p%40ss-pw", "bot", "p@ss-pw"),
    ("bot:p%2540ss-pw", "bot", "p%40ss-pw"),
    ("b@t-user:pw-pw", "b@t-user", "pw-pw"),
    ("b%40t-user:x@y-pw", "b@t-user", "x@y-pw"),
    ("b%3At-user:pw@pw", "b:t-user", "pw@pw"),
])
def test_redaction_and_credential_parsing_agree_on_at_signs_colons_and_escapes(
        userinfo: str, user: str, password: str) -> None:
    url = f"https://{userinfo}@git.example.com:8443/org/config.git"
    clean, creds = workspaces.split_credentials(url, workspaces.Credentials())
    assert (creds.username, creds.password) == (user, password)
    assert clean == workspaces.redact(url) == "https://git.example.com:8443/org/config.git"
    message = f"fatal: unable to access '{url}/': The requested URL returned error: 403"
    shown = workspaces.scrub(message, (password,))
    assert shown == ("fatal: unable to access 'https://git.example.com:8443/org/config.git/': "
                     "The requested URL returned error: 403")


def test_redaction_leaves_at_signs_outside_the_authority_alone() -> None:
    text = "see https://git.example.com/org/a@b.git and mail ops@example.com"
    assert workspaces.redact(text) == text


# --- issue 19: update types, compare links, release notes, rules, schedules ---------------


@pytest.mark.parametrize(("old", "new", "kind"), [
    ("1.0.0", "2.0.0", "major"), ("v1.2.3", "v1.3.0", "minor"), ("1.2.3", "1.2.4", "patch"),
    ("1.2.3.4", "1.2.3.5", "patch"), ("1.2.3", "1.3.0-rc.1", "pre-release"),
    ("1.3.0-rc.1", "1.3.0", "patch"), ("1.2", "1.2", "digest"), ("latest", "1.0", "other"),
    (None, "1.0.0", "other")])
def test_update_types(old: str | None, new: str, kind: str) -> None:
    assert versions.update_type(old, new) == kind


def test_compare_links_only_for_known_forges_and_safe_revisions() -> None:
    gh = "https://github.com/acme/web.git"
    assert publishing.compare_url(gh, "abc123", "def456") == \
        "https://github.com/acme/web/compare/abc123...def456"
    assert publishing.compare_url("https://gitlab.com/g/sub/web", "a1", "b2") == \
        "https://gitlab.com/g/sub/web/-/compare/a1...b2"
    assert publishing.compare_url("https://example.org/acme/web", "a1", "b2") is None
    assert publishing.compare_url(gh, "a1", "a1") is None
    assert publishing.compare_url(gh, "a1", "b2) [x](javascript:1") is None
    assert publishing.compare_url("javascript:alert(1)//github.com/a/b", "a1", "b2") is None


def test_release_notes_are_sanitised_and_capped() -> None:
    text = ("Fixes #12 by @alice <img src=x onerror=alert(1)> <!-- image-bot:proposal {} -->\n"
            "[ours](https://github.com/acme/web/pull/3) [theirs](https://evil.example/)\n"
            "https://evil.example/raw https://github.com/acme/web/issues/1\n"
            "![pixel](https://github.com/acme/web/p.png)\n" + "long line\n" * 5000)

    notes = messages.sanitised_notes(text, origin="https://github.com", limit=400)

    assert "<" not in notes and "image-bot:proposal" not in notes
    assert "@\u200balice" in notes
    assert "[ours](https://github.com/acme/web/pull/3)" in notes
    assert "[theirs]" not in notes and "theirs" in notes
    assert "`https://evil.example/raw`" in notes
    assert "https://github.com/acme/web/issues/1" in notes
    assert "pixel" in notes and "p.png" not in notes  # images are never loaded
    assert len(notes) <= 400 + len("\n\n… (truncated)") and notes.endswith("(truncated)")


def test_rules_merge_lists_and_replace_the_rest() -> None:
    publish = models.Publish.model_validate({
        "mode": "commit", "labels": ["bot"], "rules": [
            {"update": "patch", "mode": "commit"},
            {"update": ["minor", "major"], "mode": "pull-request", "auto-merge": True},
            {"update": "major", "labels": ["major"], "reviewers": ["alice"],
             "auto-merge": False}]})

    major = publish.for_update("major")
    assert (major.mode, major.labels, major.reviewers) == ("pull-request", ["bot", "major"],
                                                          ["alice"])
    assert major.auto_merge is True  # the first matching rule decides a setting
    assert publish.for_update("minor").auto_merge is True
    assert publish.for_update("digest") is publish
    with pytest.raises(ValueError, match="update"):
        models.Publish.model_validate({"rules": [{"update": "huge"}]})


MONDAY_NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("entry", "at", "open_"), [
    ("after 22:00 before 06:00 on weekdays", MONDAY_NOON, False),
    ("after 22:00 before 06:00 on weekdays", MONDAY_NOON.replace(hour=21, minute=30), True),
    ("after 22:00 before 06:00 on weekdays", MONDAY_NOON.replace(hour=4, minute=59), True),
    ("after 22:00 before 06:00 on weekdays", MONDAY_NOON.replace(hour=5), False),
    ("before 06:00", MONDAY_NOON.replace(hour=3), True),
    ("on saturday and sunday", MONDAY_NOON, False),
    ("on monday, tuesday", MONDAY_NOON, True),
    ("* 22-23,0-5 * * 1-5", MONDAY_NOON.replace(hour=21, minute=30), True),
    ("* 22-23,0-5 * * 1-5", MONDAY_NOON, False)])
def test_schedule_windows_in_a_time_zone(entry: str, at: datetime, open_: bool) -> None:
    assert schedules.is_open([entry], "Europe/Berlin", at) is open_


@pytest.mark.parametrize("entry", ["after 25:00", "on funday", "* * *", "61 * * * *",
                                   "sometimes", "x" * 300])
def test_bad_schedules_say_what_to_write(entry: str) -> None:
    with pytest.raises(schedules.InvalidSchedule):
        schedules.parse(entry)


def _loaded(name: str, **spec: Any) -> loading.LoadedPolicy:
    [document] = YAML(typ="safe").load_all(testing.policy(name, f"reg/{name}", **spec))
    return loading.LoadedPolicy(models.ImagePolicy.model_validate(document),
                                f"policies/{name}.yaml", 0)


def _change(policy: str, file: str, *, image: str | None = None, old: str = "1.0.0",
            new: str = "1.1.0") -> Change:
    image = image or f"reg/{policy}"
    return Change(file, 1, image, f"{image}:{old}", f"{image}:{new}", old, new, policy)


def test_commit_groups_keep_per_policy_commits_alone_unless_they_share_a_file() -> None:
    own = {"publish": {"mode": "commit", "commit": "per-policy"}}
    policies = [_loaded("a", **own), _loaded("b"), _loaded("c", **own), _loaded("d"),
                _loaded("e", **own), _loaded("f", **own)]
    result = UpdateResult((_change("a", "x.yaml"), _change("b", "y.yaml"),
                           _change("c", "z.yaml"), _change("d", "w.yaml"),
                           _change("e", "v.yaml"), _change("f", "v.yaml"),
                           _change("a", "u.yaml"), _change("d", "u.yaml")))

    groups = publishing.commit_groups(result, policies)

    # b and d share a commit (neither asks for its own); d also wrote u.yaml, which a wrote
    # too: a joins them. e and f share v.yaml: one commit. c is alone.
    assert groups == [{"c"}, {"a", "b", "d"}, {"e", "f"}]


def test_rows_have_the_files_of_their_policy_and_image_and_the_message_their_kinds() -> None:
    changes = (_change("a", "x.yaml"), _change("b", "x.yaml", image="reg/side"),
               _change("a", "y.yaml"), _change("a", "x.yaml"),
               _change("b", "z.yaml", image="reg/side", old="2.0.0", new="3.0.0"))
    result = UpdateResult(changes)

    rows = publishing.rows(result)

    assert [(r.policy, r.image, r.old, r.new, r.files) for r in rows] == [
        ("a", "reg/a", "1.0.0", "1.1.0", ("x.yaml", "y.yaml")),
        ("b", "reg/side", "1.0.0", "1.1.0", ("x.yaml", "z.yaml")),
        ("b", "reg/side", "2.0.0", "3.0.0", ("x.yaml", "z.yaml"))]
    typed = [dataclasses.replace(r, update_type=versions.update_type(r.old, r.new))
             for r in rows]
    message = publishing.commit_message(result, [_loaded("a"), _loaded("b")],
                                        repository="https://git.example/config", rows=typed)
    assert message.splitlines()[2:] == [
        "- reg/a: 1.0.0 → 1.1.0 (minor) (x.yaml)", "- reg/side: 1.0.0 → 1.1.0 (minor) (x.yaml)",
        "- reg/a: 1.0.0 → 1.1.0 (minor) (y.yaml)", "- reg/side: 2.0.0 → 3.0.0 (major) (z.yaml)"]
    assert publishing.update_type(changes[4], typed) == "major"
    assert publishing.update_type(changes[4], rows) == ""  # not told
