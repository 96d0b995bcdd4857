"""Sync agent, desired state: Compose files → services (no Docker needed)."""

from __future__ import annotations

import shutil
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
     "is not a duration: write for example 90s, 15m, 2h or 7d"),
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


# --- the Compose spec as people write it (issue 15) -------------------------------------


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("${TAG}", {"TAG": "1.2"}, "1.2"),
    ("$TAG-x", {"TAG": "1.2"}, "1.2-x"),
    ("${TAG:-1.0.0}", {}, "1.0.0"),
    ("${TAG:-1.0.0}", {"TAG": ""}, "1.0.0"),
    ("${TAG-1.0.0}", {"TAG": ""}, ""),
    ("${TAG-1.0.0}", {}, "1.0.0"),
    ("${TAG:-${FALLBACK:-9}}", {}, "9"),
    ("${TAG:?}", {"TAG": "set"}, "set"),
    ("${TAG:+on}", {"TAG": "x"}, "on"),
    ("${TAG+on}", {"TAG": ""}, "on"),
    ("${TAG:+on}", {"TAG": ""}, ""),
    ("$$HOME costs $$5", {"HOME": "no"}, "$HOME costs $5"),
    ("${UNSET}", {}, ""),
])
def test_interpolation_forms(text: str, env: dict[str, str], expected: str) -> None:
    assert compose.interpolate(text, env) == expected


def test_interpolation_from_dot_env_and_the_agent_environment(tmp_path: Path) -> None:
    state = compose.load(_write(tmp_path, {
        "deploy/shop/compose.yaml": (
            "services:\n  api:\n    image: reg.test/api:${TAG:-1.0.0}\n"
            "    environment: {URL: 'http://${HOST}:${PORT:-80}', RAW: $$NOT}\n"
            "    command: echo ${GREETING}\n"),
        "deploy/shop/.env": "# defaults\nHOST=db.internal\nGREETING='hi there'\nTAG=1.1.0\n",
    }), "deploy", environ={"TAG": "2.0.0", "PORT": "5432"})

    (api,) = state.applications[0].services
    assert api.image == "reg.test/api:2.0.0"  # the agent's environment wins over .env
    assert dict(api.environment) == {"URL": "http://db.internal:5432", "RAW": "$NOT"}
    assert api.command == ("echo", "hi", "there")


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def test_every_problem_of_a_file_is_reported_at_once_and_names_variables(
        tmp_path: Path) -> None:
    state = compose.load(_write(tmp_path, {"deploy/x.yaml": (
        "services:\n"
        "  web:\n    image: a:${TAG:?set TAG to the release}\n"
        "    labels: {a: '${BROKEN'}\n"
        "  db:\n    image: 'b:${DB_TAG?}'\n    environment: {P: $5}\n")}), "deploy", environ={})

    assert state.broken[0].error.splitlines() == [
        "==> File deploy/x.yaml ==> At service 'web' ==> At key: image: required variable "
        "TAG is unset or empty: set TAG to the release",
        "==> File deploy/x.yaml ==> At service 'web' ==> At key: labels.a: '${BROKEN' has no "
        "closing '}'",
        "==> File deploy/x.yaml ==> At service 'db' ==> At key: image: required variable "
        "DB_TAG is unset",
        "==> File deploy/x.yaml ==> At service 'db' ==> At key: environment.P: '$' must be "
        "followed by a variable name or '{' (write '$$' for a literal '$')",
    ]


def test_schema_and_support_problems_are_all_listed_with_service_and_key(
        tmp_path: Path) -> None:
    state = compose.load(_write(tmp_path, {"deploy/x.yaml": (
        "services:\n"
        "  api:\n    build: .\n    image: a:1\n    colour: blue\n    restart: 3\n"
        "    deploy: {replicas: 2, resources: {limits: {pids: 10}}}\n"
        "    healthcheck: {test: [CMD, 'true'], start_interval: 1s}\n"
        "  db:\n    image: b:1\n    ports: [{target: 1, published: 2, mode: ingress}]\n"
        "    platform: linux/arm64\n"
        "include: []\n")}), "deploy", environ={})

    assert state.broken[0].error.splitlines() == [
        "==> File deploy/x.yaml ==> At service 'api' ==> At key: colour: not a Compose key",
        "==> File deploy/x.yaml ==> At service 'api' ==> At key: restart: expected string",
        "==> File deploy/x.yaml ==> At key: include: not supported by the sync agent",
        "==> File deploy/x.yaml ==> At service 'api' ==> At key: build: the sync agent does "
        "not build images (build images in CI; give an `image:`)",
        "==> File deploy/x.yaml ==> At service 'api' ==> At key: deploy.replicas: not "
        "supported by the sync agent (only deploy.resources limits/reservations)",
        "==> File deploy/x.yaml ==> At service 'api' ==> At key: deploy.resources.limits.pids: "
        "not supported by the sync agent (cpus and memory only)",
        "==> File deploy/x.yaml ==> At service 'api' ==> At key: healthcheck.start_interval: "
        "not supported by the sync agent",
        "==> File deploy/x.yaml ==> At service 'db' ==> At key: platform: not supported by "
        "the sync agent",
    ]


EXTENDED = """\
x-logging: &logging
  driver: json-file
  options: {max-size: 10m, max-file: "3"}
x-base: &base
  restart: unless-stopped
  logging: *logging
services:
  api:
    <<: *base
    image: reg.test/api:1
    container_name: shop-api-main
    deploy: {resources: {limits: {cpus: "0.5", memory: 256M}, reservations: {memory: 64m}}}
    extra_hosts: ["db.local:127.0.0.1", "other=10.0.0.1"]
    dns: 9.9.9.9
    ulimits: {nproc: 512, nofile: {soft: 1024, hard: 2048}}
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    security_opt: ["no-new-privileges:true"]
    read_only: true
    tmpfs: ["/run:size=1m", /tmp]
    init: true
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    hostname: api
    shm_size: 64m
    sysctls: {net.core.somaxconn: 1024}
    pid: host
    ipc: private
    configs: [app_conf, {source: app_conf, target: /etc/app.conf}]
    secrets: [token]
    depends_on:
      migrate: {condition: service_completed_successfully}
      cache: {condition: service_healthy}
  cache:
    <<: *base
    image: reg.test/cache:1
    mem_limit: 1g
    cpus: 1.5
  migrate:
    image: reg.test/api:1
    command: migrate
  debug:
    image: reg.test/debug:1
    profiles: [debug]
configs:
  app_conf: {file: ./app.conf}
secrets:
  token: {file: ./token.txt}
"""


def test_extended_keys_are_normalised(tmp_path: Path) -> None:
    root = _write(tmp_path, {"deploy/shop/compose.yaml": EXTENDED,
                             "deploy/shop/app.conf": "x=1\n", "deploy/shop/token.txt": "s3"})
    state = compose.load(root, "deploy", environ={})

    assert state.broken == ()
    app = state.applications[0]
    assert [s.name for s in app.services] == ["cache", "migrate", "api"]  # debug: profile
    cache, migrate, api = app.services
    assert (cache.mem_limit, cache.nano_cpus, cache.restart) == (1 << 30, 1_500_000_000,
                                                                 "unless-stopped")
    assert (migrate.completes, cache.completes, api.completes) == (True, False, False)
    assert api.conditions == (("cache", "service_healthy"),
                              ("migrate", "service_completed_successfully"))
    assert api.container_name == "shop-api-main"
    assert (api.mem_limit, api.mem_reservation, api.nano_cpus) == (256 << 20, 64 << 20,
                                                                   500_000_000)
    assert (api.log_driver, api.log_options) == ("json-file", (("max-file", "3"),
                                                               ("max-size", "10m")))
    assert api.extra_hosts == (("db.local", "127.0.0.1"), ("other", "10.0.0.1"))
    assert api.dns == ("9.9.9.9",)
    assert api.ulimits == (compose.Ulimit("nofile", 1024, 2048),
                           compose.Ulimit("nproc", 512, 512))
    assert (api.cap_add, api.cap_drop, api.security_opt) == (
        ("NET_ADMIN",), ("ALL",), ("no-new-privileges:true",))
    assert (api.read_only, api.init, api.tmpfs) == (True, True, ("/run:size=1m", "/tmp"))
    assert (api.stop_signal, api.stop_grace_period, api.hostname) == ("SIGINT", 90, "api")
    assert (api.shm_size, api.sysctls, api.pid, api.ipc) == (
        64 << 20, (("net.core.somaxconn", "1024"),), "host", "private")
    base = tmp_path.resolve() / "deploy/shop"
    assert [(m.source, m.target, m.read_only) for m in api.mounts] == [
        (str(base / "app.conf"), "/app_conf", True),
        (str(base / "app.conf"), "/etc/app.conf", True),
        (str(base / "token.txt"), "/run/secrets/token", True)]

    with_debug = compose.load(root, "deploy", environ={"COMPOSE_PROFILES": "debug"})
    assert "debug" in [s.name for s in with_debug.applications[0].services]


def test_an_override_file_is_merged_into_its_base(tmp_path: Path) -> None:
    state = compose.load(_write(tmp_path, {
        "deploy/web/compose.yaml": (
            "services:\n  web:\n    image: a:1\n    command: [serve]\n"
            "    environment: [A=1, B=2]\n    labels: {team: x}\n    dns: [1.1.1.1]\n"
            "    volumes: ['./a:/data', './b:/logs']\n"),
        "deploy/web/compose.override.yaml": (
            "services:\n  web:\n    image: a:2\n    command: [serve, --debug]\n"
            "    environment: {B: '3', C: '4'}\n    dns: [8.8.8.8]\n"
            "    volumes: ['./c:/data']\n  extra:\n    image: e:1\n"),
    }), "deploy", environ={})

    (app,) = state.applications
    assert app.file == "deploy/web/compose.yaml"
    web = {s.name: s for s in app.services}["web"]
    assert (web.image, web.command) == ("a:2", ("serve", "--debug"))
    assert web.environment == (("A", "1"), ("B", "3"), ("C", "4"))
    assert web.dns == ("1.1.1.1", "8.8.8.8")
    root = tmp_path.resolve() / "deploy/web"
    assert {m.target: m.source for m in web.mounts} == {"/data": str(root / "c"),
                                                         "/logs": str(root / "b")}
    assert sorted(s.name for s in app.services) == ["extra", "web"]


def _hash(root: Path, files: dict[str, str], environ: dict[str, str] | None = None) -> str:
    shutil.rmtree(root / "deploy", ignore_errors=True)  # one checkout path, as the agent's
    state = compose.load(_write(root, files), "deploy", environ=environ or {})
    assert state.broken == (), state.broken
    return state.applications[0].services[0].config_hash


def test_config_hash_follows_the_effective_config_not_the_text(tmp_path: Path) -> None:
    base = {"deploy/a/compose.yaml": (
        "services:\n  s:\n    image: a:${TAG:-1}\n    environment: [X=1]\n"
        "    env_file: app.env\n    configs: [c]\nconfigs: {c: {file: c.conf}}\n"),
        "deploy/a/app.env": "Y=1\n", "deploy/a/c.conf": "one\n"}
    cosmetic = {**base, "deploy/a/compose.yaml": (
        "x-img: &img a:1  # an anchor and a comment\nconfigs:\n  c:\n    file: ./c.conf\n"
        "services:\n  s:\n    configs:\n      - source: c\n    env_file: [./app.env]\n"
        "    environment: {X: 1}\n    image: *img\n")}
    first = _hash(tmp_path, base)

    assert _hash(tmp_path, cosmetic) == first
    assert _hash(tmp_path, base, {"TAG": "1"}) == first  # same effective value
    assert _hash(tmp_path, base, {"TAG": "2"}) != first
    assert _hash(tmp_path, {**base, "deploy/a/.env": "TAG=2\n"}) != first
    assert _hash(tmp_path, {**base, "deploy/a/app.env": "Y=2\n"}) != first
    assert _hash(tmp_path, {**base, "deploy/a/c.conf": "two\n"}) != first


def test_hashes_of_files_using_only_the_old_keys_did_not_change(tmp_path: Path) -> None:
    """Adding optional fields to Service must not recreate every running container: these
    are the hashes the agent before issue 15 put on its containers."""
    state = compose.load(_write(tmp_path, {
        "deploy/x.yaml": "services: {s: {image: 'a:1'}}",
        "deploy/y/compose.yaml": (
            "services:\n  s:\n    image: a:1\n    command: [x]\n"
            "    healthcheck: {test: [CMD, 'true'], interval: 1s}\n    volumes: ['/srv/d:/d']\n"
            "    ports: ['80']\n    depends_on: [t]\n  t: {image: 'b:1'}\n")}), "deploy",
        environ={})

    assert {(a.name, s.name): s.config_hash for a in state.applications
            for s in a.services} == {("x", "s"): "c3b26c7f245c4990",
                                     ("y", "t"): "1b006e1e24a9d78c",
                                     ("y", "s"): "5039be725fc8248a"}


@pytest.mark.parametrize(("files", "message"), [
    ({"deploy/x.yaml": "services: {s: {image: 'a:1', volumes: ['../../etc:/e']}}"},
     "==> File deploy/x.yaml ==> At service 's' ==> At key: volumes[0]: '../../etc' resolves "
     "outside the repository (relative bind sources must stay inside the checkout; give an "
     "absolute host path)"),
    ({"deploy/x.yaml": "services: {s: {image: 'a:1', env_file: ../../secret.env}}"},
     "==> File deploy/x.yaml ==> At service 's' ==> At key: env_file: ../../secret.env is "
     "outside the repository"),
    ({"deploy/x.yaml": "services: {s: {image: 'a:1', secrets: [t]}}\n"
                       "secrets: {t: {file: /etc/hostname}}"},
     "==> File deploy/x.yaml ==> At key: secrets.t.file: '/etc/hostname' is outside the "
     "repository"),
])
def test_files_outside_the_checkout_are_refused(tmp_path: Path, files: dict[str, str],
                                                message: str) -> None:
    state = compose.load(_write(tmp_path / "repo", files), "deploy", environ={})
    assert [b.error for b in state.broken] == [message]
