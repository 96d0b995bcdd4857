"""The container image's Dockerfile, checked statically and replayed in a venv (fast).

tests/test_image.py builds and runs the image for real (slow); this file pins down the
details quickly and names the line that broke.

1. The Dockerfile is parsed: stages, non-root USER (the chart's runAsUser), ENTRYPOINT/CMD
   naming a real command, HEALTHCHECK on /healthz, the state VOLUME, OCI labels, and every
   COPY source exists in the repository and is not excluded by .dockerignore.
2. The HEALTHCHECK command itself runs against a real HTTP server.
3. The package is built and installed exactly as the build stage does it (the files its
   COPY lines name → `pip wheel` → a clean venv → `pip install --no-index`), and the
   installed `image-bot` runs `--help` and `validate policies/`.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ruamel.yaml import YAML

import devservers
import testing
from image_bot import cli
from image_bot.config import models

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    @property
    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec (JSON) form"
        return [str(v) for v in value]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def arg_defaults(self) -> dict[str, str]:
        """ARG NAME=DEFAULT of the stage: what a plain `docker build .` substitutes."""
        defaults: dict[str, str] = {}
        for instruction in self.all("ARG"):
            name, _, value = shlex.split(instruction.args)[0].partition("=")
            defaults[name] = value
        return defaults


def parse(text: str) -> list[Stage]:
    """Dockerfile → stages: comments dropped, `\\` continuations joined (heredocs unused)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        if (pending + raw).strip():
            lines.append((pending + raw).strip())
        pending = ""
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=alias))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


def copy_parts(instruction: Instruction,
               args: dict[str, str] | None = None) -> tuple[dict[str, str], list[str], str]:
    """COPY [--flag=value]... SRC... DEST → (flags, sources, dest), ${ARG}s substituted
    with ``args`` (a word that substitutes to nothing is dropped, as docker does)."""
    words = [re.sub(r"\$\{(\w+)\}", lambda m: (args or {})[m.group(1)], w)
             for w in shlex.split(instruction.args)]
    words = [w for w in words if w]
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    if paths and paths[0].startswith("["):
        paths = json.loads(" ".join(paths))
    return flags, paths[:-1], paths[-1]


def env_of(stage: Stage) -> dict[str, str]:
    """ENV KEY=VALUE... of a stage (the key=value form only, as this Dockerfile uses)."""
    return dict(w.split("=", 1) for i in stage.all("ENV") for w in shlex.split(i.args))


def dockerignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").removeprefix("**/")
        if any(fnmatch.fnmatch(p, bare) or fnmatch.fnmatch(Path(p).name, bare)
               for p in prefixes):
            ignored = not negate
    return ignored


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def chart_values() -> dict[str, object]:
    values = YAML(typ="safe", pure=True).load(
        (ROOT / "charts" / "image-bot" / "values.yaml").read_text())
    assert isinstance(values, dict)
    return values


def test_multi_stage_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    runtime = stages[-1]
    assert runtime.base.startswith("python:") and "-slim" in runtime.base
    assert all("-slim" in stage.base for stage in stages)


def test_runs_as_the_charts_non_root_user(stages: list[Stage],
                                          chart_values: dict[str, object]) -> None:
    user = stages[-1].last("USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    pod = chart_values["podSecurityContext"]
    assert isinstance(pod, dict)
    assert (int(uid), int(gid or uid)) == (pod["runAsUser"], pod["runAsGroup"])


def test_entrypoint_is_image_bot_and_the_default_command_exists(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert runtime.last("ENTRYPOINT").exec_form == ["image-bot"]
    command = runtime.last("CMD").exec_form
    assert command == ["run"]
    assert command[0] in cli.main.commands


def test_healthcheck_probes_healthz_on_the_exposed_port(stages: list[Stage],
                                                        chart_values: dict[str, object]) -> None:
    runtime = stages[-1]
    health = runtime.last("HEALTHCHECK").args
    assert "--interval=" in health
    exec_form = json.loads(health[health.index("CMD") + 3:])
    assert "/healthz" in exec_form[-1]
    listen = env_of(runtime)["IMAGE_BOT_LISTEN"]
    port = int(listen.rsplit(":", 1)[1])
    assert runtime.last("EXPOSE").args.split() == [str(port)]
    service = chart_values["service"]
    assert isinstance(service, dict) and service["port"] == port


def test_state_dir_is_the_volume(stages: list[Stage], monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = stages[-1]
    monkeypatch.setenv("XDG_STATE_HOME", env_of(runtime)["XDG_STATE_HOME"])
    state_dir = str(models._default_state_dir())
    assert state_dir == "/var/lib/image-bot"
    assert runtime.last("VOLUME").exec_form == [state_dir]
    created = " ".join(i.args for i in runtime.all("RUN"))
    assert f"-o 10001 -g 10001 -m 0750 {state_dir}" in created  # writable by the user


def test_git_and_ssh_are_installed(stages: list[Stage]) -> None:
    runs = " ".join(i.args for i in stages[-1].all("RUN"))
    install = runs[runs.index("apt-get install"):].split("&&")[0].split()
    assert {"git", "openssh-client", "ca-certificates", "--no-install-recommends"} <= set(install)
    assert "rm -rf /var/lib/apt/lists/*" in runs


def test_oci_labels(stages: list[Stage]) -> None:
    labels: dict[str, str] = {}
    for instruction in stages[-1].all("LABEL"):
        labels.update(w.split("=", 1) for w in shlex.split(instruction.args))
    required = {"title", "description", "version", "revision", "created", "licenses", "source"}
    assert {f"org.opencontainers.image.{k}" for k in required} <= labels.keys()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'license = "{labels["org.opencontainers.image.licenses"]}"' in pyproject


def test_every_copy_source_exists_and_is_in_the_build_context(stages: list[Stage]) -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    names = set()
    copied = 0
    for stage in stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            assert instruction.keyword == "COPY", "use COPY, not ADD"
            flags, sources, _ = copy_parts(instruction, stage.arg_defaults())
            if "from" in flags:
                assert flags["from"] in names, f"COPY --from={flags['from']}: no such stage"
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not dockerignored(source, patterns), f"COPY {source}: .dockerignored"
                copied += 1
        if stage.name:
            names.add(stage.name)
    assert copied >= 3


def test_dockerignore_keeps_secrets_and_caches_out() -> None:
    patterns = (ROOT / ".dockerignore").read_text().split()
    for path in (".git/config", ".venv/bin/python", ".tools/helm/helm", ".image-bot/state.db",
                 ".tools/image/python-3.11-slim-bookworm-0123456789ab.tar"):
        assert dockerignored(path, patterns), path
    # what tools/imagebuild.py hands to WHEELHOUSE and KUBECTL_FILE must reach the builder
    for path in (".image-inputs/wheels/image_bot-0.1.0-py3-none-any.whl",
                 ".image-inputs/kubectl"):
        assert not dockerignored(path, patterns), path


def test_a_plain_build_needs_no_build_arguments(stages: list[Stage]) -> None:
    """Without build args the wheels are built inside and kubectl is downloaded (checked)."""
    build, kubectl = stages[0].arg_defaults(), stages[1].arg_defaults()
    assert build["WHEELHOUSE"] == "" and kubectl["KUBECTL_FILE"] == ""
    assert re.fullmatch(r"[0-9a-f]{64}", kubectl["KUBECTL_FILE_SHA256"])
    fetch = " ".join(i.args for i in stages[1].all("RUN"))
    assert '--sha256 "${KUBECTL_FILE_SHA256}"' in fetch


# --- the HEALTHCHECK command, run for real ------------------------------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def health_server() -> Iterator[tuple[http.server.HTTPServer, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_healthcheck_command_passes_and_fails(
        stages: list[Stage], health_server: tuple[http.server.HTTPServer, type[_Health]]) -> None:
    health = stages[-1].last("HEALTHCHECK").args
    command = json.loads(health[health.index("CMD") + 3:])
    assert command[0] == "python"
    server, handler = health_server
    env = {**os.environ, "IMAGE_BOT_LISTEN": f"0.0.0.0:{server.server_address[1]}"}

    def check() -> int:
        return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True,
                              timeout=30, check=False).returncode

    assert check() == 0
    handler.status = 503
    assert check() != 0


# --- install exactly as the image's build stage does --------------------------------------


@pytest.fixture(scope="module")
def installed(stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage, replayed: its COPY sources → `pip wheel` → clean venv → install."""
    build = stages[0]
    work = tmp_path_factory.mktemp("image-build")
    context = work / "context"  # the build stage's WORKDIR, holding what it copies
    for instruction in build.all("COPY"):
        _, sources, dest = copy_parts(instruction, build.arg_defaults())
        if dest.startswith("/"):
            continue  # outside the WORKDIR: the wheelhouse, empty by default (built below)
        for source in sources:
            into_dir = dest.endswith("/") or dest in {".", "./"} or len(sources) > 1
            target = context / dest / Path(source).name if into_dir else context / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, target)
    wheels, venv = work / "wheels", work / "venv"
    built = _run(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels),
                 str(context))
    assert built.returncode == 0, built.stderr
    assert _run(sys.executable, "-m", "venv", str(venv)).returncode == 0
    done = _run(str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links",
                str(wheels), "image-bot")
    assert done.returncode == 0, done.stderr
    return venv


def test_clean_venv_install_like_the_image(installed: Path, tmp_path: Path) -> None:
    def image_bot(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(str(installed / "bin" / "image-bot"), *args, cwd=tmp_path)

    where = _run(str(installed / "bin" / "python"), "-c",
                 "import image_bot; print(image_bot.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(installed)), "imported the source tree, not the wheel"
    helped = image_bot("--help")
    assert helped.returncode == 0, helped.stderr
    assert "Usage: image-bot" in helped.stdout and " run " in helped.stdout
    validated = image_bot("validate", str(ROOT / "policies"))
    shipped = len(list((ROOT / "policies").glob("*.yaml")))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert f"{shipped} valid polic" in validated.stdout


@pytest.mark.e2e
def test_the_daemon_from_the_wheel_passes_the_image_healthcheck(
        installed: Path, stages: list[Stage], registry: devservers.Registry,
        config_repo: Callable[[dict[str, str]], str], tmp_path: Path) -> None:
    """`image-bot run` as the image starts it (ENV, CMD), probed by its HEALTHCHECK command."""
    devservers.push_image(registry.url, "team/web", "1.0.0")
    url = config_repo({"policies/web.yaml": testing.policy("web", f"{registry.host}/team/web"),
                       "deploy/web.yaml": f"image: {registry.host}/team/web:1.0.0\n"})
    config = testing.write_json(tmp_path / "bot.yaml", testing.bot_config(
        [url], registries=[registry.host], state_dir=tmp_path / "state"))
    runtime = stages[-1]
    port = devservers.free_port()
    env = {**_clean_env(), "IMAGE_BOT_CONFIG": str(config),
           "IMAGE_BOT_LISTEN": f"127.0.0.1:{port}",
           "PATH": f"{installed / 'bin'}:{os.environ['PATH']}"}
    command = runtime.last("CMD").exec_form  # ["run"] after ENTRYPOINT ["image-bot"]
    daemon = subprocess.Popen([str(installed / "bin" / "image-bot"), *command], env=env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        health = runtime.last("HEALTHCHECK").args
        probe = json.loads(health[health.index("CMD") + 3:])
        assert testing.wait_until(lambda: subprocess.run(
            probe, env=env, capture_output=True, check=False).returncode == 0,
            interval=0.2), "never healthy"
        assert testing.wait_until(lambda: _get(port, "/readyz") == 200,
                                  interval=0.2), "never ready"
        assert _get(port, "/") == 200  # the status page renders from the installed wheel
    finally:
        daemon.send_signal(signal.SIGTERM)
        logs = daemon.communicate(timeout=60)[0]
    assert daemon.returncode == 0, logs


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A child process outside this venv and source tree (as in the image)."""
    return subprocess.run(list(args), cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=600, check=False)
