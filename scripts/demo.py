"""make demo: the main job end to end on local servers, then cleaned up.

1. start a container registry and a git server on loopback
2. push web:1.0.0 and create a config repo with a Deployment and an ImagePolicy
3. push newer tags (1.1.0 in range, 2.0.0 outside it)
4. run `image-bot run --once` and show the commit it pushed
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="image-bot-demo-"))
    registry = git_server = None
    try:
        step("starting a container registry and a git server on loopback")
        registry = devservers.start_registry(work / "registry")
        (work / "git").mkdir()
        git_server = devservers.start_git_server(work / "git")
        print(f"registry {registry.url}, git http://127.0.0.1:{git_server.port}/")

        step("pushing demo/web:1.0.0 and creating the config repo")
        devservers.push_image(registry.url, "demo/web", "1.0.0")
        devservers.create_repo(work / "git", "config.git", {
            "apps/web/deployment.yaml": DEPLOYMENT.format(host=registry.host),
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

        step("CI pushes new tags: 1.1.0 (in range ^1.0) and 2.0.0 (a major: not taken)")
        for tag in ("1.1.0", "2.0.0"):
            devservers.push_image(registry.url, "demo/web", tag)

        bot = shutil.which("image-bot") or str(Path(sys.executable).parent / "image-bot")
        step(f"image-bot plan --config {config.name}")
        subprocess.run([bot, "plan", "--config", str(config)], check=True)
        step(f"image-bot run --once --config {config.name}")
        subprocess.run([bot, "run", "--once", "--config", str(config)], check=True)

        step("the commit image-bot pushed (git show)")
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
        subprocess.run(["git", "--no-pager", "show", "--stat", "--patch", "HEAD"], cwd=clone,
                       check=True)

        step("a second run finds nothing to do")
        subprocess.run([bot, "run", "--once", "--config", str(config)], check=True)
        return 0
    finally:
        if git_server:
            git_server.stop()
        if registry:
            registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
