"""Sync agent, desired state: Compose files → services (no Docker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_bot.errors import ConfigError
from image_bot.sync import compose

FULL = """\
name: ignored-the-path-names-the-project
x-common: &env {LOG: debug}
services:
  api:
    image: registry.example.test/team/api:1.2.3
    command: serve --port 8080 "two words"
    entrypoint: ["/bin/app"]
    environment:
      <<: *env
      DEBUG: false
      EMPTY:
    env_file: [api.env]
    ports: ["127.0.0.1:8080:80", "9090:90/udp", "3000"]
    volumes: ["./data:/data:ro", "cache:/cache", {type: bind, source: /srv, target: /srv}]
    networks: [backend]
    restart: on-failure:3
    labels: ["com.example.tier=api"]
    healthcheck: {test: "wget -q -O- localhost", interval: 1m30s, timeout: 500ms, retries: 2}
    depends_on: {db: {condition: service_started}}
    user: "1000:1000"
    working_dir: /srv
  db:
    image: postgres:16
    network_mode: none
volumes: {cache: {}}
networks: {backend: null}
"""


def _load(tmp_path: Path, files: dict[str, str], path: str = "deploy") -> compose.DesiredState:
    for name, text in files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return compose.load(tmp_path, path)


def test_every_supported_key_is_normalised(tmp_path: Path) -> None:
    state = _load(tmp_path, {"deploy/shop/compose.yaml": FULL.replace("name: ignored", "x-n: a"),
                             "deploy/shop/api.env": "# comment\nexport TOKEN='abc'\nLOG=info\n"})

    assert state.broken == ()
    (app,) = state.applications
    assert (app.name, app.file, [s.name for s in app.services]) == (
        "shop", "deploy/shop/compose.yaml", ["db", "api"])  # dependencies first
    api = app.services[1]
    assert api.command == ("serve", "--port", "8080", "two words")
    assert api.entrypoint == ("/bin/app",)
    assert api.environment == (("DEBUG", "false"), ("EMPTY", ""), ("LOG", "debug"),
                               ("TOKEN", "abc"))
    assert api.ports == (compose.Port("80/tcp", "127.0.0.1", "8080"),
                         compose.Port("90/udp", "", "9090"), compose.Port("3000/tcp", "", ""))
    assert api.mounts == (
        compose.Mount("bind", str((tmp_path / "deploy/shop/data").resolve()), "/data", True),
        compose.Mount("volume", "shop_cache", "/cache"),
        compose.Mount("bind", "/srv", "/srv"))
    assert api.networks == ("shop_backend",)
    assert api.restart == "on-failure:3"
    assert api.labels == (("com.example.tier", "api"),)
    assert api.healthcheck == compose.Healthcheck(
        ("CMD-SHELL", "wget -q -O- localhost"), interval_ns=90_000_000_000,
        timeout_ns=500_000_000, retries=2)
    assert (api.user, api.working_dir, api.depends_on) == ("1000:1000", "/srv", ("db",))
    assert api.container_name == "shop-api"
    assert (app.volumes, app.networks) == (("shop_cache",), ("shop_backend",))


def test_config_hash_changes_with_the_config_and_only_then(tmp_path: Path) -> None:
    one = _load(tmp_path / "a", {"deploy/x.yaml": "services: {s: {image: 'a:1'}}"})
    same = _load(tmp_path / "b", {"deploy/x.yaml": "services:\n  s:\n    image: a:1  # c\n"})
    other = _load(tmp_path / "c", {"deploy/x.yaml": "services: {s: {image: 'a:2'}}"})

    hashes = [s.applications[0].services[0].config_hash for s in (one, same, other)]

    assert hashes[0] == hashes[1] != hashes[2]
    assert len(hashes[0]) == 16


def test_project_names_come_from_the_path_and_other_yaml_is_ignored(tmp_path: Path) -> None:
    state = _load(tmp_path, {
        "deploy/compose.yaml": "services: {a: {image: 'a:1'}}",
        "deploy/Web_App.yml": "services: {b: {image: 'b:1'}}",
        "deploy/team/docker-compose.yaml": "services: {c: {image: 'c:1'}}",
        "deploy/k8s.yaml": "apiVersion: v1\nkind: ConfigMap\n",
        "deploy/notes.txt": "services: {d: {image: 'd:1'}}",
    })

    assert sorted(a.name for a in state.applications) == ["deploy", "team", "web_app"]


@pytest.mark.parametrize(("text", "message"), [
    ("services: {web: {build: .}}",
     "==> File deploy/x.yaml ==> At service 'web' ==> At key: build: the sync agent does not "
     "build images (build images in CI; give an `image:`)"),
    ("services: {web: {command: x}}",
     "==> File deploy/x.yaml ==> At service 'web' ==> At key: image: required (the sync "
     "agent does not build images)"),
    ("services: {web: {image: 'UPPER:1'}}",
     "==> File deploy/x.yaml ==> At service 'web' ==> At key: image: invalid repository "
     "name in 'UPPER:1'"),
    ("services: {web: {image: 'a:1', restart: sometimes}}",
     "==> File deploy/x.yaml ==> At service 'web' ==> At key: restart: 'sometimes' is not "
     "no, always, unless-stopped or on-failure[:N]"),
    ("services: {web: {image: 'a:1', volumes: ['data:/d']}}",
     "==> File deploy/x.yaml ==> At service 'web' ==> At key: volumes[0]: named volume "
     "'data' is not declared in the top-level volumes"),
    ("services: {web: {image: 'a:1', depends_on: [db]}}",
     "==> File deploy/x.yaml ==> At service 'web' ==> At key: depends_on: no service 'db'"),
    ("services: {a: {image: 'a:1', depends_on: [b]}, b: {image: 'b:1', depends_on: [a]}}",
     "==> File deploy/x.yaml ==> At key: depends_on: dependency cycle between a, b"),
    ("services: {web: {image: 'a:1', healthcheck: {test: x, interval: soon}}}",
     "==> File deploy/x.yaml ==> At service 'web' ==> At key: healthcheck.interval: 'soon' "
     "is not a duration like 30s or 1m30s"),
    ("services: {web: {image: 'a:1', env_file: missing.env}}",
     "==> File deploy/x.yaml ==> At service 'web' ==> At key: env_file: cannot read "
     "missing.env: No such file or directory"),
    ("services: {web: {image: 'a:1'}}\ninclude: []",
     "==> File deploy/x.yaml ==> At key: include: not supported by the sync agent"),
    ("services: [web\n", "==> File deploy/x.yaml: not valid YAML: while parsing a flow "
     "sequence"),
])
def test_a_bad_file_is_broken_with_a_breadcrumb_and_others_still_load(
        tmp_path: Path, text: str, message: str) -> None:
    state = _load(tmp_path, {"deploy/x.yaml": text,
                             "deploy/good.yaml": "services: {ok: {image: 'ok:1'}}"})

    assert [a.name for a in state.applications] == ["good"]
    assert state.broken == (compose.Broken("x", "deploy/x.yaml", message),)


def test_two_files_claiming_one_project_name_are_both_broken(tmp_path: Path) -> None:
    state = _load(tmp_path, {"deploy/web.yaml": "services: {a: {image: 'a:1'}}",
                             "deploy/web/compose.yaml": "services: {b: {image: 'b:1'}}"})

    assert state.applications == ()
    assert sorted(b.error for b in state.broken) == [
        "==> File deploy/web.yaml: project name 'web' is also used by deploy/web/compose.yaml",
        "==> File deploy/web/compose.yaml: project name 'web' is also used by deploy/web.yaml"]


def test_a_missing_or_escaping_sync_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^sync path 'nope' does not exist in the repository$"):
        compose.load(tmp_path, "nope")
    with pytest.raises(ConfigError, match=r"^sync path '\.\./\.\.' leaves the repository$"):
        compose.load(tmp_path, "../..")
