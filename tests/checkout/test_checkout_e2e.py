"""Hostile files in a config repository, through `run --once` against the real registry and
git server: links out of the checkout, dangling links, links to /proc, files over the cap."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import devservers
from image_bot import cli

pytestmark = pytest.mark.e2e

DEPLOYMENT = "image: {host}/team/{image}:1.0.0\n"
POLICY = """\
apiVersion: image-bot/v1
kind: ImagePolicy
metadata:
  name: {image}
spec:
  image: {host}/team/{image}
  select:
    semver:
      range: "^1"
  paths: ["deploy/**"]
  publish:
    mode: commit
    branch: main
"""
OUTSIDE = "a symbolic link to a file outside the checkout; not read"


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def _with_links(url: str, links: dict[str, str], tmp_path: Path) -> None:
    """Commit symbolic links (name → target) to the repository behind ``url``."""
    work = tmp_path / f"seed-{len(list(tmp_path.iterdir()))}"
    subprocess.run(["git", "clone", "-q", url, str(work)], check=True)
    for name, target in links.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).symlink_to(target)
    devservers.git("add", "-A", cwd=work)
    devservers.git("commit", "-q", "-m", "links", cwd=work)
    devservers.git("push", "-q", "origin", "main", cwd=work)


def _remote(url: str, tmp_path: Path, name: str) -> Path:
    clone = tmp_path / name
    subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    return clone


def _config(tmp_path: Path, urls: list[str], registry: devservers.Registry,
            **extra: object) -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text(json.dumps({
        "repositories": [{"url": url, "branch": "main", "policies": "policies/"}
                         for url in urls],
        "registries": [{"host": registry.host, "insecure": True}],
        "git": {"author_name": "image-bot", "author_email": "image-bot@localhost"},
        "state_dir": str(tmp_path / "state"), **extra}))
    return path


def test_a_link_out_of_the_checkout_is_never_read_edited_or_pushed(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    host = registry.host
    for tag in ("1.0.0", "1.1.0"):
        devservers.push_image(registry.url, "team/linked", tag)
    secret = tmp_path / "host-secret.yaml"  # e.g. a secret mounted into the bot's pod
    secret.write_text(f"image: {host}/team/linked:1.0.0\npassword: hunter2-host-secret\n")
    url = config_repo({"deploy/app.yaml": DEPLOYMENT.format(host=host, image="linked"),
                       "policies/linked.yaml": POLICY.format(host=host, image="linked")})
    _with_links(url, {"deploy/secret.yaml": str(secret),
                      "policies/env.yaml": "/proc/self/environ"}, tmp_path)

    result = _invoke("run", "--once", "--json", "--config", str(_config(tmp_path, [url],
                                                                        registry)))

    [repo] = json.loads(result.output)["repositories"]
    assert [(o["status"], o["message"]) for o in repo["outcomes"]] == [
        ("failed", f"==> File policies/env.yaml: {OUTSIDE}"),  # never read, reported
        ("updated", "1.0.0 \u2192 1.1.0 in 1 place(s)")]
    assert repo["skipped"] == [{"file": "deploy/secret.yaml", "reason": OUTSIDE}]
    assert secret.read_text().startswith(f"image: {host}/team/linked:1.0.0\n")
    clone = _remote(url, tmp_path, "check")
    assert (clone / "deploy/app.yaml").read_text() == f"image: {host}/team/linked:1.1.0\n"
    assert (clone / "deploy/secret.yaml").is_symlink()
    history = devservers.git("log", "-p", "--all", cwd=clone)
    assert "hunter2-host-secret" not in history
    assert "hunter2-host-secret" not in result.output


def test_a_dangling_link_does_not_stop_other_repositories(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    host = registry.host
    for image in ("dangling", "neighbour"):
        for tag in ("1.0.0", "1.1.0"):
            devservers.push_image(registry.url, f"team/{image}", tag)
    first = config_repo({"deploy/app.yaml": DEPLOYMENT.format(host=host, image="dangling"),
                         "policies/p.yaml": POLICY.format(host=host, image="dangling")})
    _with_links(first, {"deploy/gone.yaml": "../nowhere/gone.yaml"}, tmp_path)
    second = config_repo({"deploy/app.yaml": DEPLOYMENT.format(host=host, image="neighbour"),
                          "policies/p.yaml": POLICY.format(host=host, image="neighbour")})

    result = _invoke("run", "--once", "--config", str(_config(tmp_path, [first, second],
                                                                registry)))

    assert result.exit_code == 0, result.output
    assert ("deploy/gone.yaml: a symbolic link that leads nowhere (dangling or a loop); "
            "not read") in result.output
    for url, image in ((first, "dangling"), (second, "neighbour")):
        clone = _remote(url, tmp_path, f"check-{image}")
        assert (clone / "deploy/app.yaml").read_text() == f"image: {host}/team/{image}:1.1.0\n"
    assert (_remote(first, tmp_path, "again") / "deploy/gone.yaml").is_symlink()


def test_a_file_over_the_configured_cap_fails_its_policy_with_the_message(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    host = registry.host
    for tag in ("1.0.0", "1.1.0"):
        devservers.push_image(registry.url, "team/capped", tag)
    big = DEPLOYMENT.format(host=host, image="capped") + ("# padding\n" * 500)  # ~5 kB
    url = config_repo({"deploy/app.yaml": DEPLOYMENT.format(host=host, image="capped"),
                       "deploy/big.yaml": big,
                       "policies/p.yaml": POLICY.format(host=host, image="capped")})
    config = _config(tmp_path, [url], registry, limits={"max_file_bytes": 4096})

    result = _invoke("run", "--once", "--config", str(config))

    assert result.exit_code == 1, result.output
    assert ("capped: deploy/big.yaml: larger than 4096 bytes (limits.max_file_bytes); skipped"
            in result.output)
    clone = _remote(url, tmp_path, "check")  # never half of a policy's files
    assert (clone / "deploy/app.yaml").read_text() == DEPLOYMENT.format(host=host,
                                                                         image="capped")
    assert len(devservers.git("log", "--format=%H", cwd=clone).splitlines()) == 1
