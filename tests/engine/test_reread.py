"""The last check of an edit, each new text read again, runs while the written files are
committed and passes before anything is pushed; a file that fails it is never pushed and
its policy fails, the rest of the batch is published (real registry and git server)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli
from image_bot.publish import committing
from image_bot.update import rewriting

pytestmark = pytest.mark.e2e


def _remote(url: str, tmp_path: Path) -> tuple[Path, list[str]]:
    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    return clone, devservers.git("log", "--format=%s", cwd=clone).splitlines()


def test_nothing_is_pushed_before_the_reread_passed(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    url = config_repo(testing.one_image_each(registry, "reread", {"a": {}, "b": {}}))
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    events: list[str] = []
    for owner, name in ((committing, "commit"), (committing, "push"),
                        (rewriting, "reread")):
        function = getattr(owner, name)

        def recording(*args: Any, _name: str = name, _function: Any = function,
                      **kwargs: Any) -> Any:
            try:
                return _function(*args, **kwargs)
            finally:
                events.append(_name)

        monkeypatch.setattr(owner, name, recording)

    ran = CliRunner().invoke(cli.main, ["run", "--once", "--config", str(config)],
                             catch_exceptions=False)

    assert ran.exit_code == 0, ran.output
    assert [events.count(name) for name in ("commit", "reread", "push")] == [1, 2, 1]
    assert events[-1] == "push"  # each file's re-read ended first
    _, log = _remote(url, tmp_path)
    assert len(log) == 2


def test_a_file_failing_the_reread_is_never_pushed_and_the_rest_is(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    files = testing.one_image_each(registry, "unread", {"a": {}, "b": {}})
    url = config_repo(files)
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    compare = rewriting._compare
    compared: list[str] = []

    def failing_for_b(old_text: str, new_text: str, *args: Any) -> None:
        compared.append(new_text)
        if "unread/b:1.1.0" in new_text:  # as a writer's bug would
            raise rewriting.UnsafeEdit("re-reading the edited file gave different values "
                                       "than intended; not edited")
        compare(old_text, new_text, *args)

    monkeypatch.setattr(rewriting, "_compare", failing_for_b)

    ran = CliRunner().invoke(cli.main, ["run", "--once", "--json", "--config", str(config)],
                             catch_exceptions=False)

    assert ran.exit_code == 1, ran.output
    outcomes = {o["policy"]: o for o in json.loads(ran.output)["repositories"][0]["outcomes"]}
    assert outcomes["a"]["status"] == "updated"
    assert outcomes["b"]["status"] == "failed"
    assert outcomes["b"]["message"] == ("deploy/b.yaml: re-reading the edited file gave "
                                        "different values than intended; not edited")
    # a and b read again while committing; a again when the batch was edited without b
    assert sum("unread/a:1.1.0" in text for text in compared) == 2
    assert sum("unread/b:1.1.0" in text for text in compared) == 1
    clone, log = _remote(url, tmp_path)
    assert len(log) == 2  # one commit: a's
    assert "unread/a:1.1.0" in (clone / "deploy/a.yaml").read_text()
    assert (clone / "deploy/b.yaml").read_text() == files["deploy/b.yaml"]
    [bot] = [p for p in (tmp_path / "state" / "repos").iterdir() if p.is_dir()]  # its clone
    assert devservers.git("status", "--porcelain", cwd=bot) == ""
    assert devservers.git("rev-parse", "HEAD", cwd=bot) == devservers.git(
        "rev-parse", "HEAD", cwd=clone)
