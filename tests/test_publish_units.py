"""Publish building blocks without servers: PR bodies, credentials, retries, commit groups."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from image_bot.config import secrets
from image_bot.errors import ConfigError, ForgeError, ForgeUnavailable
from image_bot.publish import forges, messages, proposing
from image_bot.publish import workspace as workspaces

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
        "| `ghcr.io/acme/web` | `1.0.0` → `1.2.0` | `sha256:abababababab…` | 5h | "
        "[source](https://github.com/acme/web) | `apps/web.yaml` |",
        "| `ghcr.io/acme/api` | `?` → `2.0.1` | – | – | – | – |",
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
