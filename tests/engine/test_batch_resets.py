"""The checkout is reset to the target's tip before each batch but the first: the first
batch finds it as the cycle opened it (fetched and reset), a later one may find an earlier
batch's edits or branch (real registry and git server)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli
from image_bot.publish import workspace as workspaces

pytestmark = pytest.mark.e2e


def _show(url: str, revision: str, tmp_path: Path) -> tuple[str, str, list[str]]:
    """``deploy/a.yaml`` and ``deploy/b.yaml`` at ``revision`` of the remote, and the files
    its last commit changed."""
    clone = tmp_path / "check"
    if not clone.exists():
        subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    devservers.git("fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*", cwd=clone)
    files = [devservers.git("show", f"{revision}:deploy/{name}.yaml", cwd=clone)
             for name in ("a", "b")]
    changed = devservers.git("show", "--name-only", "--format=", revision, cwd=clone).split()
    return files[0], files[1], changed


def test_only_the_batches_after_the_first_reset_the_checkout(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    url = config_repo(testing.one_image_each(registry, "batches", {
        "a": {"publish": {"mode": "commit"}},
        "b": {"publish": {"mode": "commit", "push-branch": "image-updates"}}}))
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    resets = testing.recorded(monkeypatch, workspaces.Workspace, "reset")

    planned = CliRunner().invoke(cli.main, ["plan", "--config", str(config)])
    assert planned.exit_code == 0, planned.output
    assert len(resets) == 1  # the open's: a dry run writes nothing

    ran = CliRunner().invoke(cli.main, ["run", "--once", "--config", str(config)])

    assert ran.exit_code == 0, ran.output
    assert len(resets) == 1 + 2  # the open's, and before the second of two batches
    a, b, changed = _show(url, "origin/main", tmp_path)
    assert "batches/a:1.1.0" in a and "batches/b:1.0.0" in b and changed == ["deploy/a.yaml"]
    a, b, changed = _show(url, "origin/image-updates", tmp_path)
    assert "batches/b:1.1.0" in b and changed == ["deploy/b.yaml"]
