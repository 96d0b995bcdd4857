"""The container image, built from the repository's Dockerfile and run on a private dockerd.

1. tools/imagebuild.py makes the base image with debootstrap (cached in .tools/image/), the
   wheels and kubectl on the host, and runs the legacy builder with --network host.
2. The image runs as the chart runs it (non-root 10001, read-only root filesystem, no
   capabilities, /tmp a tmpfs, the state dir a volume): --help, --version, validate on the
   example policies, run --once against the real registry and git server, and the daemon
   reaching `healthy` through the image's own HEALTHCHECK (its timings unchanged).
3. docker inspect: OCI labels, user 10001, no secrets in the environment or history; the
   chart's image defaults name what was built.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

import devservers
import imagebuild

# Cold: debootstrap (~1.5 min, then cached) + build (~2 min) on two shared cores.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "image-bot"
STATE_DIR = "/var/lib/image-bot"
CONFIG_PATH = "/etc/image-bot/config/bot.yaml"
SECRET_NAME = re.compile(r"passw|secret|token|credential|api_?key|private_?key",
                         re.IGNORECASE)


def _chart() -> tuple[dict[str, Any], dict[str, Any]]:
    yaml = YAML(typ="safe", pure=True)
    return (yaml.load((CHART / "Chart.yaml").read_text()),
            yaml.load((CHART / "values.yaml").read_text()))


def _chart_image() -> str:
    """What the chart deploys by default: image.repository, tag defaulting to appVersion."""
    chart, values = _chart()
    tag = values["image"]["tag"] or chart["appVersion"]
    return f"{values['image']['repository']}:{tag}"


@dataclass(frozen=True)
class Engine:
    daemon: devservers.Dockerd

    def docker(self, *args: str, timeout: float = 300,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", "-H", self.daemon.host, *args], capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: exit {done.returncode}\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def run(self, image: str, *args: str, mounts: tuple[str, ...] = (),
            env: tuple[str, ...] = (), detach: bool = False,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker run`` as the chart's pod runs the image (see values.yaml securityContext)."""
        options = ["--network", "host", "--read-only", "--tmpfs", "/tmp",
                   "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        for mount in mounts:
            options += ["-v", mount]
        for pair in env:
            options += ["-e", pair]
        options += ["-d"] if detach else ["--rm"]
        return self.docker("run", *options, image, *args, check=check)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """A private dockerd; overlay2 where the filesystem allows it (vfs copies every layer)."""
    try:
        daemon = devservers.start_dockerd(storage_driver="overlay2")
    except RuntimeError:
        daemon = devservers.start_dockerd()
    yield Engine(daemon)
    daemon.stop()


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    imagebuild.import_base(engine.daemon.host, imagebuild.base_tarball())
    tag = _chart_image()
    imagebuild.build(engine.daemon.host, tag, imagebuild.prepare_inputs())
    return tag


@pytest.fixture
def state_volume(engine: Engine) -> Iterator[str]:
    name = f"image-bot-state-{uuid.uuid4().hex[:8]}"
    engine.docker("volume", "create", name)
    yield name
    engine.docker("volume", "rm", "-f", name, check=False)


DEPLOYMENT = "image: {host}/team/web:1.0.0   # the web tier\n"
POLICY = """\
apiVersion: image-bot/v1
kind: ImagePolicy
metadata: {{name: web}}
spec:
  image: {host}/team/web
  select: {{semver: {{range: "^1.0"}}}}
  paths: ["deploy/**"]
  publish:
    mode: commit
    branch: main
    message: "chore: update {{{{ image }}}} to {{{{ new_tag }}}}"
"""


@pytest.fixture
def bot_yaml(registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
             tmp_path: Path) -> tuple[Path, str]:
    """A config repo whose web image is behind the registry, and the bot config naming it.

    No ``state_dir``: the image's default (XDG_STATE_HOME) is the state volume.
    """
    for tag in ("1.0.0", "1.2.0", "2.0.0"):
        devservers.push_image(registry.url, "team/web", tag)
    url = config_repo({"deploy/web.yaml": DEPLOYMENT.format(host=registry.host),
                       "policies/web.yaml": POLICY.format(host=registry.host)})
    config = tmp_path / "bot.yaml"
    config.write_text(json.dumps({
        "repositories": [{"url": url, "branch": "main", "policies": "policies/"}],
        "registries": [{"host": registry.host, "insecure": True}],
        "git": {"author_name": "image-bot", "author_email": "image-bot@localhost"}}))
    config.chmod(0o644)  # readable by the image's user
    return config, url


def test_help_and_version(engine: Engine, image: str) -> None:
    helped = engine.run(image, "--help")
    assert "Usage: image-bot" in helped.stdout and " run " in helped.stdout
    version = engine.run(image, "--version").stdout.strip()
    chart, _ = _chart()
    assert version == f"image-bot, version {chart['appVersion']}"
    assert f'version = "{chart["appVersion"]}"' in (ROOT / "pyproject.toml").read_text()


def test_validate_the_mounted_example_policies(engine: Engine, image: str,
                                               bot_yaml: tuple[Path, str]) -> None:
    config, _ = bot_yaml
    shipped = len(list((ROOT / "policies").glob("*.yaml")))
    done = engine.run(image, "validate", "/policies",
                      mounts=(f"{ROOT / 'policies'}:/policies:ro", f"{config}:{CONFIG_PATH}:ro"))
    # the mounted config (IMAGE_BOT_CONFIG) is checked too: its repository's one policy
    assert f"{shipped + 1} valid policies, 0 problem(s)" in done.stdout, done.stdout


def test_run_once_commits_the_new_tag_as_the_non_root_user(
        engine: Engine, image: str, bot_yaml: tuple[Path, str], state_volume: str,
        tmp_path: Path, registry: devservers.Registry) -> None:
    config, url = bot_yaml
    done = engine.run(image, "run", "--once",
                      mounts=(f"{config}:{CONFIG_PATH}:ro", f"{state_volume}:{STATE_DIR}"))
    assert done.returncode == 0, done.stdout + done.stderr

    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", url, str(clone)], check=True, timeout=60)
    log = devservers.git("log", "--format=%an %s", cwd=clone).splitlines()
    assert log[0] == f"image-bot chore: update {registry.host}/team/web to 1.2.0"
    assert (clone / "deploy/web.yaml").read_text() == DEPLOYMENT.format(
        host=registry.host).replace("1.0.0", "1.2.0")
    # the state (clone, database) went to the volume, written by uid 10001
    owners = engine.docker("run", "--rm", "-v", f"{state_volume}:/state:ro", "--entrypoint",
                           "find", image, "/state", "-mindepth", "1", "-maxdepth", "2",
                           "-printf", "%U %p\n").stdout.splitlines()
    assert owners, "nothing in the state volume"
    assert {line.split()[0] for line in owners} == {"10001"}, owners


def test_the_daemon_becomes_healthy_by_the_images_own_healthcheck(
        engine: Engine, image: str, bot_yaml: tuple[Path, str], state_volume: str) -> None:
    config, _ = bot_yaml
    port = devservers.free_port()  # host network: the image's 8080 may be taken
    container = engine.run(image, mounts=(f"{config}:{CONFIG_PATH}:ro",
                                          f"{state_volume}:{STATE_DIR}"),
                           env=(f"IMAGE_BOT_LISTEN=127.0.0.1:{port}",), detach=True)
    name = container.stdout.strip()
    try:
        inspected = json.loads(engine.docker("inspect", name).stdout)[0]
        image_check = json.loads(engine.docker("image", "inspect", image).stdout)[0]
        assert inspected["Config"]["Healthcheck"] == image_check["Config"]["Healthcheck"]
        assert inspected["Config"]["Cmd"] == ["run"]
        # interval 30 s: the first probe runs 30 s after the start
        deadline = time.monotonic() + 150
        status = ""
        while time.monotonic() < deadline:
            state = json.loads(engine.docker("inspect", name).stdout)[0]["State"]
            status = state["Health"]["Status"]
            if status == "healthy" or not state["Running"]:
                break
            time.sleep(1)
        logs = engine.docker("logs", name, check=False)
        assert status == "healthy", (status, state, logs.stdout[-3000:], logs.stderr[-3000:])
    finally:
        engine.docker("rm", "-f", name, check=False)


def test_inspect_labels_user_and_no_secrets(engine: Engine, image: str) -> None:
    inspected = json.loads(engine.docker("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    chart, values = _chart()
    assert config["User"] == "10001:10001"
    pod = values["podSecurityContext"]
    assert config["User"] == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "image-bot"
    assert labels["org.opencontainers.image.version"] == chart["appVersion"]
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    for key in ("description", "revision", "created", "source"):
        assert f"org.opencontainers.image.{key}" in labels
    assert config["Volumes"] == {STATE_DIR: {}}
    assert config["ExposedPorts"] == {f"{values['service']['port']}/tcp": {}}

    env = dict(pair.split("=", 1) for pair in config["Env"])
    assert set(env) == {"PATH", "LANG", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
                        "XDG_STATE_HOME", "IMAGE_BOT_CONFIG", "IMAGE_BOT_LISTEN"}
    history = engine.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}",
                            image).stdout
    assert "WHEELHOUSE" not in history  # build-stage arguments stay in the build stages
    for name in env:
        assert not SECRET_NAME.search(name), name
    assert not SECRET_NAME.search(history), [line for line in history.splitlines()
                                             if SECRET_NAME.search(line)]
    # nothing the host knows that looks secret (values are not printed on failure)
    host_secrets = [value for name, value in os.environ.items()
                    if SECRET_NAME.search(name) and len(value) >= 6]
    leaked = [i for i, value in enumerate(host_secrets) if value in history + json.dumps(env)]
    assert leaked == [], f"{len(leaked)} host secret value(s) in the image's env or history"
