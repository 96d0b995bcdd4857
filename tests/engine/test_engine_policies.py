"""The engine feeds each policy the metadata it `needs` (real registry and git server):
the digest strategy pins tag@sha256, newest-build reads creation times, others fetch none."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli

pytestmark = pytest.mark.e2e

DEPLOY = "containers:\n  - name: app\n    image: {image}:{tag}  # keep\n"


def _run(url: str, bot_config: Callable[..., Path], registry: devservers.Registry,
         tmp_path: Path) -> str:
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    result = CliRunner().invoke(cli.main, ["run", "--once", "--config", str(config)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    clone = tmp_path / f"check-{uuid.uuid4().hex[:6]}"
    subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    return (clone / "deploy" / "app.yaml").read_text()


def test_digest_strategy_pins_the_followed_tag(
        registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
        bot_config: Callable[..., Path], tmp_path: Path) -> None:
    name = f"team/pinned-{uuid.uuid4().hex[:8]}"
    image = f"{registry.host}/{name}"
    digest = devservers.push_image(registry.url, name, "stable")
    url = config_repo({
        "deploy/app.yaml": DEPLOY.format(image=image, tag="1.0"),
        "policies/app.yaml": testing.policy("pinned", image,
                                            select={"digest": {"tag": "stable"}}),
    })
    assert _run(url, bot_config, registry, tmp_path) == DEPLOY.format(
        image=image, tag=f"stable@{digest}")
    # the tag moves: the pin follows it
    moved = devservers.push_image(registry.url, name, "stable",
                                  created="2026-02-01T00:00:00Z")
    assert moved != digest
    assert _run(url, bot_config, registry, tmp_path) == DEPLOY.format(
        image=image, tag=f"stable@{moved}")


def test_newest_build_uses_creation_times(
        registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
        bot_config: Callable[..., Path], tmp_path: Path) -> None:
    name = f"team/nightly-{uuid.uuid4().hex[:8]}"
    image = f"{registry.host}/{name}"
    for tag, day in [("nightly-x", "03"), ("nightly-y", "05"), ("nightly-z", "04")]:
        devservers.push_image(registry.url, name, tag, created=f"2026-01-{day}T00:00:00Z")
    url = config_repo({
        "deploy/app.yaml": DEPLOY.format(image=image, tag="nightly-x"),
        "policies/app.yaml": testing.policy("nightly", image,
                                            select={"newest-build": {}}),
    })
    assert _run(url, bot_config, registry, tmp_path) == DEPLOY.format(image=image,
                                                                        tag="nightly-y")
