"""Policies read ahead: while a cycle fetches its config repository, the policy files of the
clone as the last cycle left it are parsed; after the fetch each file is read again and only
a file whose text changed is parsed again (real registry and git server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli, refs
from image_bot.config import loading, models
from image_bot.engine.context import Engine
from image_bot.publish import workspace as workspaces
from image_bot.registry import client as registry_client

pytestmark = pytest.mark.e2e


def _plan(config: Path) -> dict[str, dict[str, str]]:
    result = CliRunner().invoke(cli.main, ["plan", "--json", "--config", str(config)],
                                catch_exceptions=False)
    report = json.loads(result.output)["repositories"][0]
    return {o["policy"]: o for o in report["outcomes"]}


def _narrowed(registry: devservers.Registry, prefix: str) -> str:
    """Policy b of ``prefix``, narrowed to patches."""
    return testing.policy("b", f"{registry.host}/{prefix}/b",
                          select={"semver": {"range": "~1.0.0"}})


def test_a_fetched_change_is_parsed_and_the_rest_taken_from_the_read_ahead(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    files = testing.one_image_each(registry, "ahead", {name: {} for name in "abc"},
                                   tags=["1.0.0", "1.0.1", "1.1.0"])
    url = config_repo(files)
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    first = _plan(config)  # clones: nothing to read ahead
    assert {name: o["latest"] for name, o in first.items()} == dict.fromkeys("abc", "1.1.0")

    # a human narrows b to patches and adds a broken policy, after the bot's clone
    narrowed = _narrowed(registry, "ahead")
    broken = "apiVersion: image-bot/v1\nkind: ImagePolicy\nmetadata: {name: d}\nspec: {image: [}\n"
    clone = testing.push_as_a_human(url, tmp_path, {"policies/b.yaml": narrowed,
                                             "policies/d.yaml": broken})
    parsed = testing.recorded(monkeypatch, loading, "_policies_in")

    second = _plan(config)

    # what was fetched decides: b's new range, d's error; a and c as before
    assert {name: o["latest"] for name, o in second.items() if name != "?"} == {
        "a": "1.1.0", "b": "1.0.1", "c": "1.1.0"}
    assert second["?"]["status"] == "failed"
    assert second["?"]["message"].startswith("==> File policies/d.yaml: invalid YAML"), second
    assert len(parsed) == 5  # a, b, c read ahead (before the fetch); b and d after it
    assert sorted(parsed[:3]) == sorted(files[f"policies/{n}.yaml"] for n in "abc")
    assert sorted(parsed[3:]) == sorted([narrowed, (clone / "policies/d.yaml").read_text()])

    third = _plan(config)  # nothing new fetched: every file parsed ahead, none after

    assert third == second
    assert len(parsed) == 5 + 4


def test_the_tags_of_the_policies_read_ahead_are_listed_during_the_fetch_each_once(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    files = testing.one_image_each(registry, "early", {name: {} for name in "abc"},
                                   tags=["1.0.0", "1.0.1", "1.1.0"])
    url = config_repo(files)
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    _plan(config)  # clones: nothing to read ahead
    # a human points c at another image, after the bot's clone
    other = f"{registry.host}/early/d"
    testing.push_tags(registry, "early/d", ["1.0.0", "1.2.0"])
    testing.push_as_a_human(url, tmp_path, {
        "policies/c.yaml": testing.policy("c", other),
        "deploy/c.yaml": testing.deployment("c", {"app": f"{other}:1.0.0"})})
    listed: list[str] = []
    ahead = {"early/a", "early/b", "early/c"}  # the images of the clone's policies
    all_three = threading.Event()
    list_tags = registry_client.RegistryClient._list_tags

    async def listing(client: registry_client.RegistryClient, image: refs.ImageRef
                      ) -> list[str]:
        try:
            return await list_tags(client, image)
        finally:
            listed.append(image.repository)
            if ahead <= set(listed):
                all_three.set()

    fetched_after_the_lists: list[bool] = []
    workspace = Engine.workspace

    def fetching(engine: Engine, repo: models.RepositoryConfig) -> workspaces.Workspace:
        opened = workspace(engine, repo)
        fetched_after_the_lists.append(all_three.wait(timeout=30))  # else: never started
        return opened

    monkeypatch.setattr(registry_client.RegistryClient, "_list_tags", listing)
    monkeypatch.setattr(Engine, "workspace", fetching)

    second = _plan(config)

    assert fetched_after_the_lists == [True]  # the clone's a, b, c: listed while fetching
    assert {name: o["latest"] for name, o in second.items()} == {
        "a": "1.1.0", "b": "1.1.0", "c": "1.2.0"}  # d's tags
    assert sorted(listed) == ["early/a", "early/b", "early/c", "early/d"]  # c for nothing

    listed.clear()
    ahead = {"early/a", "early/b", "early/d"}
    all_three.clear()
    assert _plan(config) == second
    assert fetched_after_the_lists == [True, True]
    assert sorted(listed) == ["early/a", "early/b", "early/d"]  # each image once


def test_policy_documents_are_kept_between_runs_and_parsed_again_only_when_changed(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    files = testing.one_image_each(registry, "kept", {name: {} for name in "abc"},
                                   tags=["1.0.0", "1.0.1", "1.1.0"])
    url = config_repo(files)
    config = bot_config(url, registries=[{"host": registry.host, "insecure": True}])
    recorded = testing.recorded(monkeypatch, loading, "_parse_documents")

    def parsed() -> list[str]:  # policy files (the bot's config is read the same way)
        return [text for text in recorded if "ImagePolicy" in text]

    first = _plan(config)
    assert sorted(parsed()) == sorted(files[f"policies/{n}.yaml"] for n in "abc")
    [kept] = (tmp_path / "state" / "repos").glob("*.policies.json")

    recorded.clear()
    assert _plan(config) == first  # a new run (a new process would do the same)
    assert parsed() == []  # each file's documents came from the state dir

    narrowed = _narrowed(registry, "kept")
    testing.push_as_a_human(url, tmp_path, {"policies/b.yaml": narrowed})
    assert {n: o["latest"] for n, o in _plan(config).items()} == {
        "a": "1.1.0", "b": "1.0.1", "c": "1.1.0"}
    assert parsed() == [narrowed]  # after the fetch; the old b is no longer kept
    assert len(json.loads(kept.read_text())["documents"]) == 3

    recorded.clear()
    kept.write_text('{"format": "1", "documents": {')  # cut short: ignored, rewritten
    assert {n: o["latest"] for n, o in _plan(config).items()}["b"] == "1.0.1"
    assert len(parsed()) == 3
    assert len(json.loads(kept.read_text())["documents"]) == 3


def test_only_documents_json_keeps_exactly_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "kept.json"
    documents = loading.Documents(path)
    text = "a: [1, 1.5, true, null, x]\nb: {c: d}\n"
    plain = documents.of(text, "plain.yaml")
    dated = documents.of("when: 2024-01-01\n", "dated.yaml")
    keyed = documents.of("1: one\n", "keyed.yaml")
    documents.save()
    parsed = testing.recorded(monkeypatch, loading, "_parse_documents")

    again = loading.Documents(path).of(text, "plain.yaml")

    assert parsed == []  # read from the file
    assert again == plain == [{"a": [1, 1.5, True, None, "x"], "b": {"c": "d"}}]
    assert [type(v) for v in again[0]["a"]] == [int, float, bool, type(None), str]
    assert len(json.loads(path.read_text())["documents"]) == 1  # the date and int key: not
    assert dated[0]["when"].year == 2024 and keyed == [{1: "one"}]
    with pytest.raises(loading.ConfigError, match="invalid YAML"):
        loading.Documents(path).of("a: [\n", "broken.yaml")
    assert parsed == ["a: [\n"]
