"""Registry auth against the real docker-registry: token flow, Basic, credential sources."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ruamel import yaml

import devservers
from image_bot import cli, refs
from image_bot.config import models
from image_bot.errors import AuthError, ConfigError
from image_bot.registry import client as registry_client
from image_bot.registry import credentials

REGISTRY_USER, REGISTRY_PASSWORD = "tester", "s3cret-pw"  # see conftest's fixtures
PUSH_AUTH = devservers.BearerAuth(REGISTRY_USER, REGISTRY_PASSWORD)


def _settings(server: devservers.Registry, **extra: Any) -> models.RegistryConfig:
    return models.RegistryConfig(host=server.host, insecure=True, **extra)


def _name(prefix: str) -> str:
    return f"{prefix}/app-{uuid.uuid4().hex[:8]}"


def _scan(settings: models.RegistryConfig, *names: str, repeat: int = 1,
          **options: Any) -> tuple[list[list[str]], registry_client.RegistryClient]:
    """List the tags of ``names`` (concurrently, ``repeat`` rounds) with a fresh client."""

    async def go() -> tuple[list[list[str]], registry_client.RegistryClient]:
        async with registry_client.RegistryClient([settings], attempts=1, **options) as client:
            results: list[list[str]] = []
            for _ in range(repeat):
                images = [refs.parse(f"{settings.host}/{name}") for name in names]
                results = list(await asyncio.gather(*(client.list_tags(i) for i in images)))
            return results, client

    return asyncio.run(go())


def _token_requests(server: devservers.TokenServer, name: str,
                    since: int = 0) -> list[devservers.TokenRequest]:
    """Pull-only token requests for ``name`` (the pushes asked for pull,push)."""
    return [r for r in server.requests[since:] if r.scopes == (f"repository:{name}:pull",)]


# --- Bearer token flow ----------------------------------------------------------------------


def test_anonymous_token_flow_costs_one_token_and_one_tags_request(
    token_registry: devservers.Registry, token_server: devservers.TokenServer,
) -> None:
    name = _name("public")
    for tag in ["1.0.0", "1.1.0"]:
        devservers.push_image(token_registry.url, name, tag, auth=PUSH_AUTH)
    mark = len(token_server.requests)

    [tags], client = _scan(_settings(token_registry), name, repeat=3)

    assert sorted(tags) == ["1.0.0", "1.1.0"]
    # one probe of /v2/, one token for the scope (cached), then only tag requests
    assert client.counts == {"ping": 1, "token": 1, "tags": 3}
    assert [(r.method, r.user) for r in _token_requests(token_server, name, mark)] == [
        ("GET", None)]


def test_concurrent_requests_for_one_scope_share_one_token_request(
    token_registry: devservers.Registry, token_server: devservers.TokenServer,
) -> None:
    name = _name("public")
    devservers.push_image(token_registry.url, name, "1.0.0", auth=PUSH_AUTH)
    mark = len(token_server.requests)

    results, client = _scan(_settings(token_registry), *[name] * 8)

    assert results == [["1.0.0"]] * 8
    assert client.counts == {"ping": 1, "token": 1, "tags": 8}
    assert len(_token_requests(token_server, name, mark)) == 1


def test_private_repository_needs_credentials_and_names_registry_and_image(
    token_registry: devservers.Registry, token_server: devservers.TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = _name("team")
    devservers.push_image(token_registry.url, name, "2.0.0", auth=PUSH_AUTH)
    settings = _settings(token_registry, username_env="REG_USER", password_env="REG_PW")

    with pytest.raises(AuthError) as denied:
        _scan(settings, name)
    assert str(denied.value) == (
        f"registry {token_registry.host}, image {name}: access denied to anonymous access "
        f"(username_env REG_USER and password_env REG_PW are not set) (HTTP 401; the "
        f"repository may also not exist)")

    monkeypatch.setenv("REG_USER", REGISTRY_USER)
    monkeypatch.setenv("REG_PW", REGISTRY_PASSWORD)
    [tags], _ = _scan(settings, name)

    assert tags == ["2.0.0"]
    assert _token_requests(token_server, name)[-1] == devservers.TokenRequest(
        "GET", REGISTRY_USER, (f"repository:{name}:pull",))


def test_wrong_password_is_refused_by_the_token_server(
    token_registry: devservers.Registry, token_server: devservers.TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = _name("team")
    devservers.push_image(token_registry.url, name, "1.0.0", auth=PUSH_AUTH)
    monkeypatch.setenv("REG_USER", REGISTRY_USER)
    monkeypatch.setenv("REG_PW", "not-the-password")
    settings = _settings(token_registry, username_env="REG_USER", password_env="REG_PW")

    with pytest.raises(AuthError) as refused:
        _scan(settings, name)

    assert str(refused.value) == (f"registry {token_registry.host}: token server "
                                  f"{token_server.realm} refused the credentials (HTTP 401)")


def test_expired_token_is_fetched_again(
    token_registry: devservers.Registry, token_server: devservers.TokenServer,
) -> None:
    name = _name("public")
    devservers.push_image(token_registry.url, name, "1.0.0", auth=PUSH_AUTH)
    mark = len(token_server.requests)

    async def go() -> registry_client.RegistryClient:
        image = refs.parse(f"{token_registry.host}/{name}")
        async with registry_client.RegistryClient([_settings(token_registry)]) as client:
            token_server.expires_in = 2  # cached for one second (ten-second margin, ≥ 1 s)
            try:
                await client.list_tags(image)
                await client.list_tags(image)  # still valid: no token request
                await asyncio.sleep(1.1)
                await client.list_tags(image)  # expired: a new one
            finally:
                token_server.expires_in = 300
        return client

    client = asyncio.run(go())

    assert client.counts == {"ping": 1, "token": 2, "tags": 3}
    assert len(_token_requests(token_server, name, mark)) == 2


def test_identity_token_from_docker_config_uses_the_oauth2_refresh_flow(
    token_registry: devservers.Registry, token_server: devservers.TokenServer, tmp_path: Path,
) -> None:
    name = _name("team")
    devservers.push_image(token_registry.url, name, "3.1.0", auth=PUSH_AUTH)
    token_server.identity_tokens["refresh-abc123"] = REGISTRY_USER
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {token_registry.host: {
        "auth": base64.b64encode(b"<token>:").decode(), "identitytoken": "refresh-abc123"}}}))
    mark = len(token_server.requests)

    [tags], _ = _scan(_settings(token_registry, docker_config=config), name)

    assert tags == ["3.1.0"]
    assert _token_requests(token_server, name, mark) == [
        devservers.TokenRequest("POST", REGISTRY_USER, (f"repository:{name}:pull",))]


# --- Basic auth and the credential sources ----------------------------------------------------


def _push_basic(server: devservers.Registry) -> str:
    name = _name("team")
    devservers.push_image(server.url, name, "1.0.0", auth=(REGISTRY_USER, REGISTRY_PASSWORD))
    return name


def test_basic_auth_sends_credentials_from_the_first_request(
    auth_registry: devservers.Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = _push_basic(auth_registry)
    monkeypatch.setenv("REG_USER", REGISTRY_USER)
    monkeypatch.setenv("REG_PW", REGISTRY_PASSWORD)
    settings = _settings(auth_registry, username_env="REG_USER", password_env="REG_PW")

    [tags], client = _scan(settings, name, repeat=2)

    assert tags == ["1.0.0"]
    assert client.counts == {"ping": 1, "tags": 2}  # no 401 round trip per request


@pytest.mark.parametrize("content", [f"{REGISTRY_USER}:{REGISTRY_PASSWORD}\n",
                                     json.dumps({"username": REGISTRY_USER,
                                                 "password": REGISTRY_PASSWORD})])
def test_credentials_file(auth_registry: devservers.Registry, tmp_path: Path,
                          content: str) -> None:
    name = _push_basic(auth_registry)
    secret = tmp_path / "registry-credentials"
    secret.write_text(content)

    [tags], _ = _scan(_settings(auth_registry, credentials_file=secret), name)

    assert tags == ["1.0.0"]


def test_credentials_file_with_a_lone_secret_needs_a_username(
    auth_registry: devservers.Registry, tmp_path: Path,
) -> None:
    name = _push_basic(auth_registry)
    secret = tmp_path / "token"
    secret.write_text(REGISTRY_PASSWORD + "\n")

    with pytest.raises(ConfigError) as missing:
        _scan(_settings(auth_registry, credentials_file=secret), name)
    assert str(missing.value) == (
        f"registry {auth_registry.host}: credentials_file {secret} gave a secret without a "
        f"user name (set username, or print user:password)")

    [tags], _ = _scan(_settings(auth_registry, credentials_file=secret,
                                username=REGISTRY_USER), name)
    assert tags == ["1.0.0"]


def test_docker_config_auths(auth_registry: devservers.Registry, tmp_path: Path) -> None:
    name = _push_basic(auth_registry)
    encoded = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        f"http://{auth_registry.host}": {"auth": encoded}}}))

    [tags], _ = _scan(_settings(auth_registry, docker_config=tmp_path), name)

    assert tags == ["1.0.0"]


def _credential_helper(bin_dir: Path, name: str, answers: dict[str, dict[str, str]]) -> Path:
    """A real docker-credential-<name> program speaking the helper protocol (``get`` reads
    the server on stdin); it logs each call so tests can count them."""
    bin_dir.mkdir(exist_ok=True)
    log = bin_dir / f"{name}.log"
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(f"""#!/usr/bin/env python3
import json, sys
answers = {json.dumps(answers)}
server = sys.stdin.read().strip()
open({str(log)!r}, "a").write(sys.argv[1] + " " + server + "\\n")
if sys.argv[1] != "get" or server not in answers:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps(answers[server]))
""")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    return log


@pytest.mark.parametrize("section", ["credHelpers", "credsStore"])
def test_docker_config_credential_helpers(
    auth_registry: devservers.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    section: str,
) -> None:
    name = _push_basic(auth_registry)
    log = _credential_helper(tmp_path / "bin", "imagebot-test", {auth_registry.host: {
        "ServerURL": auth_registry.host, "Username": REGISTRY_USER,
        "Secret": REGISTRY_PASSWORD}})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    helper = ({"credHelpers": {auth_registry.host: "imagebot-test"}}
              if section == "credHelpers" else {"credsStore": "imagebot-test"})
    (tmp_path / "config.json").write_text(json.dumps(helper))

    [tags], _ = _scan(_settings(auth_registry, docker_config=tmp_path / "config.json"),
                      name, repeat=2)

    assert tags == ["1.0.0"]
    assert log.read_text() == f"get {auth_registry.host}\n"  # read once, then cached


def test_failing_credential_helper_is_reported_without_its_output(
    auth_registry: devservers.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = _push_basic(auth_registry)
    _credential_helper(tmp_path / "bin", "broken", {})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "broken"}))

    with pytest.raises(AuthError) as failed:
        _scan(_settings(auth_registry, docker_config=tmp_path), name)

    # a store without the entry answers "not found": anonymous, then the registry says 401
    assert f"registry {auth_registry.host}: credentials required for {name}" in str(
        failed.value)


def _command(tmp_path: Path, outputs: list[str]) -> tuple[list[str], Path]:
    """A credentials command printing ``outputs`` in turn (the last one forever)."""
    state, log = tmp_path / "calls", tmp_path / "command.log"
    script = tmp_path / "print-credentials"
    script.write_text(f"""#!/usr/bin/env python3
import os, pathlib
outputs = {json.dumps(outputs)}
state = pathlib.Path({str(state)!r})
calls = int(state.read_text()) if state.exists() else 0
state.write_text(str(calls + 1))
pathlib.Path({str(log)!r}).open("a").write(os.environ["IMAGE_BOT_REGISTRY"] + "\\n")
print(outputs[min(calls, len(outputs) - 1)])
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return [str(script)], log


def test_credentials_command_is_run_again_when_its_secret_is_refused(
    auth_registry: devservers.Registry, token_registry: devservers.Registry, tmp_path: Path,
) -> None:
    """A rotated secret (ECR after 12 h): the registry refuses the cached one, the command
    runs again and the request goes through, for Basic and for the token flow."""
    for server in (auth_registry, token_registry):
        auth: devservers.RegistryAuth = (
            PUSH_AUTH if server is token_registry else (REGISTRY_USER, REGISTRY_PASSWORD))
        name = _name("team")
        devservers.push_image(server.url, name, "1.0.0", auth=auth)
        work = tmp_path / server.host.replace(":", "-")
        work.mkdir()
        argv, log = _command(work, [f"{REGISTRY_USER}:expired-secret",
                                    json.dumps({"username": REGISTRY_USER,
                                                "password": REGISTRY_PASSWORD,
                                                "expires_in": 43200})])

        [tags], _ = _scan(_settings(server, credentials_command=argv), name)

        assert tags == ["1.0.0"]
        assert log.read_text() == f"{server.host}\n" * 2


def test_credential_provider_refreshes_after_credentials_refresh_or_source_expiry(
    tmp_path: Path,
) -> None:
    argv, _ = _command(tmp_path, [json.dumps({"username": "u", "password": "p1",
                                                "expires_in": 7200}), "u:p2"])
    now = [1_000_000.0]
    settings = models.RegistryConfig(host="registry.example.com", credentials_command=argv,
                                     credentials_refresh="1h")
    provider = credentials.CredentialProvider(settings, clock=lambda: now[0])

    async def read() -> str | None:
        found = await provider.get()
        return found.password if found else None

    first = asyncio.run(read())
    now[0] += 3599  # within the hour: cached
    second = asyncio.run(read())
    now[0] += 2  # credentials_refresh passed
    third = asyncio.run(read())

    assert (first, second, third) == ("p1", "p1", "p2")
    assert provider.reads == 2


def test_credentials_command_failure_reports_status_not_output(tmp_path: Path) -> None:
    script = tmp_path / "fails"
    script.write_text("#!/bin/sh\necho 'token=hunter2-leaked' >&2\nexit 3\n")
    script.chmod(0o755)
    settings = models.RegistryConfig(host="registry.example.com",
                                     credentials_command=[str(script)])

    with pytest.raises(AuthError) as failed:
        credentials.from_command(settings)

    assert str(failed.value) == (f"registry registry.example.com: credentials_command "
                                 f"{script} exited with status 3")


def test_only_one_credentials_source_per_registry() -> None:
    with pytest.raises(ValueError, match="choose one credentials source, not username_env "
                                         "and credentials_file"):
        models.RegistryConfig(host="r.example", username_env="U", credentials_file="f")


# --- never a secret in logs, messages or --json ------------------------------------------------


def test_no_secret_in_logs_callbacks_or_errors(
    token_registry: devservers.Registry, token_server: devservers.TokenServer,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    name = _name("team")
    devservers.push_image(token_registry.url, name, "1.0.0", auth=PUSH_AUTH)
    seen: list[tuple[str, str, int, float]] = []
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("REG_USER", REGISTRY_USER)
    settings = _settings(token_registry, username_env="REG_USER", password_env="REG_PW")
    monkeypatch.setenv("REG_PW", "wrong-password-xyz")
    with pytest.raises(AuthError) as refused:
        _scan(settings, name, on_request=lambda *a: seen.append(a))
    monkeypatch.setenv("REG_PW", REGISTRY_PASSWORD)
    issued_before = len(token_server.issued)
    [tags], _ = _scan(settings, name, on_request=lambda *a: seen.append(a))

    assert tags == ["1.0.0"]
    tokens = token_server.issued[issued_before:]
    assert tokens, "the token flow ran"
    shown = "\n".join([caplog.text, str(refused.value), *(str(call) for call in seen)])
    for secret in [REGISTRY_PASSWORD, "wrong-password-xyz", *tokens,
                   base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()]:
        assert secret not in shown
    assert ("GET", f"{token_registry.url}/v2/{name}/tags/list", 200) in [s[:3] for s in seen]
    token_calls = [url for method, url, status, _ in seen if "/token" in url and status == 200]
    assert token_calls and all("account=***" in url for url in token_calls)


def test_cli_json_output_never_shows_the_password(
    token_registry: devservers.Registry, config_repo: Any, bot_config: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = _name("team")
    devservers.push_image(token_registry.url, name, "1.0.0", auth=PUSH_AUTH)
    url = config_repo({
        "deploy/app.yaml": f"image: {token_registry.host}/{name}:0.9.0\n",
        "policies/p.yaml": json.dumps({
            "apiVersion": "image-bot/v1", "kind": "ImagePolicy", "metadata": {"name": "p"},
            "spec": {"image": f"{token_registry.host}/{name}",
                     "select": {"semver": {"range": "^1"}}}}),
    })
    config = bot_config(url, registries=[{"host": token_registry.host, "insecure": True,
                                          "username_env": "REG_USER",
                                          "password_env": "REG_PW"}])
    monkeypatch.setenv("REG_USER", REGISTRY_USER)
    monkeypatch.setenv("REG_PW", "wrong-" + REGISTRY_PASSWORD)

    result = CliRunner().invoke(cli.main, ["plan", "--config", str(config), "--json"])

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert "refused the credentials (HTTP 401)" in json.dumps(report)
    assert REGISTRY_PASSWORD not in result.output


def test_every_example_in_docs_registries_validates() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "registries.md").read_text()
    blocks = [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", page, re.S)
              if lang == "yaml"]
    reader = yaml.YAML(typ="safe", pure=True)  # as the bot reads its config
    checked = [models.RegistryConfig.model_validate(entry)
               for body in blocks for entry in reader.load(body)["registries"]]
    assert len(checked) >= 9
    hosts = {entry.host for entry in checked}
    assert {"docker.io", "ghcr.io", "europe-docker.pkg.dev", "myregistry.azurecr.io"} <= hosts
