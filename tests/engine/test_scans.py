"""One scan of each policy's files a pass (real registry and git server): the rules that
decide before batching, the check of the bot's last write for a human's rollback, the edit
and the registration of what it pushed read the same index of the checkout and share what
it found."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli
from image_bot.update import scanning

pytestmark = pytest.mark.e2e


def test_each_policy_is_scanned_once_a_pass_after_the_bot_wrote_it(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    rules = {"mode": "commit", "rules": [{"update": ["minor", "patch"], "mode": "commit"}]}
    url = config_repo(testing.one_image_each(registry, "scans", {
        "plain": {"publish": {"mode": "commit"}}, "ruled": {"publish": rules}}))
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    first = CliRunner().invoke(cli.main, ["run", "--once", "--config", str(config)])
    assert first.exit_code == 0, first.output
    for name in ("plain", "ruled"):  # both are the bot's last writes now, and move again
        testing.push_tags(registry, f"scans/{name}", ["1.2.0"])
    scanned: Counter[str] = Counter()
    scan_files = scanning.scan_files

    def counting(*args: Any, **kwargs: Any) -> scanning.Scan:
        scanned[kwargs.get("policy")] += 1
        return scan_files(*args, **kwargs)

    monkeypatch.setattr(scanning, "scan_files", counting)

    again = CliRunner().invoke(cli.main, ["run", "--once", "--config", str(config)])

    assert again.exit_code == 0, again.output
    assert scanned == {"plain": 1, "ruled": 1}
    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    for name in ("plain", "ruled"):
        assert f"scans/{name}:1.2.0" in (clone / f"deploy/{name}.yaml").read_text()
