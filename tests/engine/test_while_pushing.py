"""Registering the bot's commit (the deploy loop follows it from then on) is read while git
pushes it: once the push is through only the storing is left. What was read for a push
that was rejected is never stored, and a read that failed is done again after the push
(real registry and git server)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli
from image_bot.engine import tracking
from image_bot.errors import PublishError
from image_bot.publish import committing
from image_bot.publish import workspace as workspaces
from image_bot.state import State

pytestmark = pytest.mark.e2e


class _Watch:
    """Whether git is pushing, and each reading of a registration: (tip, while pushing)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pushing = False
        self.reads: list[tuple[str, bool]] = []
        run_meanwhile = workspaces.Workspace.run_meanwhile
        read = tracking.Registration._read

        def watching(ws: workspaces.Workspace, *args: str, **options: Any) -> None:
            self.pushing = args[0] == "push"
            try:
                run_meanwhile(ws, *args, **options)
            finally:
                self.pushing = False

        def reading(registration: tracking.Registration, tip: str, *args: Any) -> Any:
            self.reads.append((tip, self.pushing))
            return read(registration, tip, *args)

        monkeypatch.setattr(workspaces.Workspace, "run_meanwhile", watching)
        monkeypatch.setattr(tracking.Registration, "_read", reading)


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Watch]:
    yield _Watch(monkeypatch)


def _run(registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
         bot_config: Callable[..., Path], tmp_path: Path) -> tuple[str, list[str]]:
    """``run --once`` over policies a and b, each with a newer tag: the repository's URL
    and its commits afterwards, newest first."""
    url = config_repo(testing.one_image_each(registry, "pushing", {"a": {}, "b": {}}))
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    ran = CliRunner().invoke(cli.main, ["run", "--once", "--config", str(config)],
                             catch_exceptions=False)
    assert ran.exit_code == 0, ran.output
    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    return url, devservers.git("log", "--format=%H", cwd=clone).splitlines()


def _registered(tmp_path: Path, url: str) -> set[tuple[str, str, str]]:
    """(policy, commit, state) of each update the deploy loop follows on main."""
    with State.in_dir(tmp_path / "state") as state:
        updates = state.latest_updates(workspaces.redact(url), "main")
    return {(u["policy"], u["commit"], u["state"]) for u in updates.values()}


def test_the_registration_is_read_while_git_pushes_and_only_stored_after(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], tmp_path: Path, watch: _Watch,
) -> None:
    url, [head, initial] = _run(registry, config_repo, bot_config, tmp_path)

    # the deploy loop's registration before the scan (nothing of the bot's yet), then the
    # bot's commit: read while it was pushed, not again after
    assert watch.reads == [(initial, False), (head, True)]
    assert _registered(tmp_path, url) == {("a", head, "committed"), ("b", head, "committed")}


def test_a_reading_that_failed_while_pushing_is_done_again_after_the_push(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    watch: _Watch,
) -> None:
    bot_writes = tracking._bot_writes

    def failing_while_pushing(*args: Any, **options: Any) -> Any:
        if watch.pushing:  # as a git hiccup would
            raise PublishError("git log failed")
        return bot_writes(*args, **options)

    monkeypatch.setattr(tracking, "_bot_writes", failing_while_pushing)

    url, [head, initial] = _run(registry, config_repo, bot_config, tmp_path)  # pushed

    assert watch.reads == [(initial, False), (head, True), (head, False)]
    assert _registered(tmp_path, url) == {("a", head, "committed"), ("b", head, "committed")}


def test_what_was_read_for_a_rejected_push_is_never_stored(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    watch: _Watch,
) -> None:
    push = committing.push
    humans: list[str] = []

    def racing(ws: workspaces.Workspace, **options: Any) -> None:
        if not humans:  # someone else pushes between the bot's fetch and its push
            human = testing.push_as_a_human(ws.url, tmp_path, {"README.md": "a change\n"})
            humans.append(devservers.git("rev-parse", "HEAD", cwd=human).strip())
        push(ws, **options)

    monkeypatch.setattr(committing, "push", racing)

    url, [head, human, initial] = _run(registry, config_repo, bot_config, tmp_path)

    assert humans == [human]
    [(first, _), (rejected, _), (pushed, _)] = watch.reads
    assert [pushing for _, pushing in watch.reads] == [False, True, True]
    assert (first, pushed) == (initial, head) and rejected not in {initial, human, head}
    assert _registered(tmp_path, url) == {("a", head, "committed"), ("b", head, "committed")}
