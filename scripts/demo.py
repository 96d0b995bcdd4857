"""make demo: the whole loop end to end on local servers, then everything cleaned up.

1. start a container registry, a git server and a private Docker engine on loopback
2. push web:1.0.0 (a tiny busybox image) and create a config repo with a Deployment,
   a Compose file and an ImagePolicy
3. the sync agent deploys the Compose app: web 1.0.0 answers on a loopback port
4. push newer tags (1.1.0 in range, 2.0.0 outside it)
5. run `image-bot run --once` and show the commit it pushed
6. the sync agent deploys the commit: web 1.1.0 answers; `image-bot sync status`
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import devservers

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # served at https://web.example.test
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: web
          image: {host}/demo/web:1.0.0   # updated by image-bot
          ports: [{{containerPort: 8080}}]
"""

COMPOSE = """\
# the same app on a Docker host, applied by `image-bot sync`
services:
  web:
    image: {host}/demo/web:1.0.0   # updated by image-bot
    command: ["httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "/www"]
    network_mode: host
    restart: unless-stopped
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:{port}/"]
      interval: 500ms
"""

POLICY = """\
apiVersion: image-bot/v1
kind: ImagePolicy
metadata:
  name: web
spec:
  image: {host}/demo/web
  select:
    semver: {{range: "^1.0"}}    # minor and patch releases of 1.x, never 2.0
  paths: ["apps/**"]
  publish:
    mode: commit
    branch: main
    message: "chore(web): update {{{{ image }}}} to {{{{ new_tag }}}}"
"""


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # run the clean-up in main's finally


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="image-bot-demo-"))
    registry = git_server = dockerd = None
    try:
        step("starting a container registry, a git server and a Docker engine on loopback")
        registry = devservers.start_registry(work / "registry")
        (work / "git").mkdir()
        git_server = devservers.start_git_server(work / "git")
        dockerd = devservers.start_dockerd()
        print(f"registry {registry.url}, git http://127.0.0.1:{git_server.port}/, "
              f"docker {dockerd.host}")

        step("pushing demo/web:1.0.0 and creating the config repo")
        port = devservers.free_port()
        devservers.push_busybox_image(registry.url, "demo/web", "1.0.0")
        devservers.create_repo(work / "git", "config.git", {
            "apps/web/deployment.yaml": DEPLOYMENT.format(host=registry.host),
            "apps/web/compose.yaml": COMPOSE.format(host=registry.host, port=port),
            "policies/web.yaml": POLICY.format(host=registry.host),
        })
        url = git_server.url("config.git")
        config = work / "bot.yaml"
        config.write_text(json.dumps({
            "repositories": [{"url": url, "branch": "main", "policies": "policies/"}],
            "registries": [{"host": registry.host, "insecure": True}],
            "git": {"author_name": "image-bot", "author_email": "image-bot@localhost"},
            "state_dir": str(work / "state"),
        }, indent=2))

        bot = shutil.which("image-bot") or str(Path(sys.executable).parent / "image-bot")
        sync = [bot, "sync", "--repo", url, "--branch", "main", "--path", "apps/web",
                "--target", "docker", "--docker-host", dockerd.host, "--config", str(config),
                "--healthy-after", "1s", "--stop-timeout", "1"]
        step("image-bot sync --once: the agent deploys the Compose app")
        subprocess.run([*sync, "--once"], check=True)
        print(f"GET http://127.0.0.1:{port}/ -> {_page(port)}")

        step("CI pushes new tags: 1.1.0 (in range ^1.0) and 2.0.0 (a major: not taken)")
        for tag in ("1.1.0", "2.0.0"):
            devservers.push_busybox_image(registry.url, "demo/web", tag)

        step(f"image-bot plan --config {config.name}")
        subprocess.run([bot, "plan", "--config", str(config)], check=True)
        step(f"image-bot run --once --config {config.name}")
        subprocess.run([bot, "run", "--once", "--config", str(config)], check=True)

        step("the commit image-bot pushed (git show)")
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
        subprocess.run(["git", "--no-pager", "show", "--stat", "--patch", "HEAD"], cwd=clone,
                       check=True)

        step("image-bot sync --once: the agent deploys the commit (pull, recreate, health)")
        subprocess.run([*sync, "--once"], check=True)
        print(f"GET http://127.0.0.1:{port}/ -> {_page(port)}")

        step("image-bot sync status (from the status file) and the running container")
        subprocess.run([*sync[:2], "status", "--config", str(config)], check=True)
        subprocess.run(["docker", "-H", dockerd.host, "ps", "--format",
                        "table {{.Names}}\t{{.Image}}\t{{.Status}}"], check=False)

        step("a second run finds nothing to do")
        subprocess.run([bot, "run", "--once", "--config", str(config)], check=True)
        return 0
    finally:
        if dockerd:
            dockerd.stop()  # removes every container it ran, then its data
        if git_server:
            git_server.stop()
        if registry:
            registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def _page(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text.strip()


if __name__ == "__main__":
    sys.exit(main())
