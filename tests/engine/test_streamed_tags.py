"""Fetch → decide → drop: a policy's tags are listed when it is decided and dropped then, so
a fleet's tag lists never exist at once (real registry and git server)."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli, refs
from image_bot.config import loading, models
from image_bot.config import yamlio as yaml
from image_bot.engine import cycle
from image_bot.policy import strategies
from image_bot.registry.client import RegistryClient

pytestmark = pytest.mark.e2e

IMAGES = 8


def test_each_list_is_decided_as_it_arrives_and_dropped(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = {}
    for i in range(IMAGES):
        testing.push_tags(registry, f"stream/app-{i}", ["1.0.0", "1.1.0"])
        image = f"{registry.host}/stream/app-{i}"
        files[f"policies/p{i}.yaml"] = testing.policy(f"p{i}", image)
        files[f"deploy/app-{i}.yaml"] = testing.deployment(f"app-{i}", {"app": f"{image}:1.0.0"})
    # one policy of an image nobody pushed, two of one image (listed once, before deciding)
    files["policies/gone.yaml"] = testing.policy("gone", f"{registry.host}/stream/gone")
    files["deploy/gone.yaml"] = testing.deployment(
        "gone", {"app": f"{registry.host}/stream/gone:1.0.0"})
    twice = f"{registry.host}/stream/app-0"
    files["policies/again.yaml"] = testing.policy("again", twice, paths=["other/**"])
    files["other/app.yaml"] = testing.deployment("again", {"app": f"{twice}:1.0.0"})
    config = bot_config(config_repo(files),
                        registries=[{"host": registry.host, "insecure": True}])
    monkeypatch.setattr(cycle, "_TAG_LISTS_AT_ONCE", 3)
    alive: weakref.WeakSet[Any] = weakref.WeakSet()
    listed: list[str] = []  # the streamed images whose list arrived
    held = []  # at each decision: lists alive as Listed, lists arrived and not yet decided

    class Tracked(strategies.Listed):
        __slots__ = ("__weakref__",)

        def __init__(self, tags: list[str]) -> None:
            super().__init__(tags)
            alive.add(self)
            held.append((len(alive), len(listed) - len(held)))

    async def list_tags(self: RegistryClient, image: refs.ImageRef) -> list[str]:
        tags = await original(self, image)
        if image.repository != "stream/app-0":  # the image of two policies: listed first
            listed.append(image.repository)
        return tags

    original = RegistryClient.list_tags
    monkeypatch.setattr(RegistryClient, "list_tags", list_tags)
    monkeypatch.setattr(strategies, "Listed", Tracked)

    result = CliRunner().invoke(cli.main, ["plan", "--json", "--config", str(config)],
                                catch_exceptions=False)

    report = json.loads(result.output)
    outcomes = {o["policy"]: o for o in report["repositories"][0]["outcomes"]}
    assert {name: o["status"] for name, o in outcomes.items()} == {
        **{f"p{i}": "planned" for i in range(IMAGES)}, "again": "planned", "gone": "failed"}
    assert all(outcomes[f"p{i}"]["latest"] == "1.1.0" for i in range(IMAGES))
    assert "stream/gone" in outcomes["gone"]["message"]
    # streamed: p1…p7 (and gone, which failed); each list decided as it arrived (none
    # waited for another) and dropped then
    assert held == [(1, 1)] * (IMAGES - 1) and len(listed) == IMAGES - 1
    # one tags/list per image (app-0's once for both of its policies), and the probe
    assert report["registry_requests"] == 1 + IMAGES + 1


def test_policies_that_use_their_tags_before_deciding_wait_for_them() -> None:
    def planned(name: str, image: str, **spec: Any) -> cycle._Planned:
        [document] = yaml.YAML(typ="safe").load_all(testing.policy(name, image, **spec))
        loaded = loading.LoadedPolicy(models.ImagePolicy.model_validate(document),
                                      f"policies/{name}.yaml", 0)
        return cycle._Planned(loaded, cycle.build_policy(loaded, "main"), None, None)

    batch = [planned("alone", "reg/alone"), planned("a", "reg/shared"),
             planned("b", "reg/shared"),
             planned("rules", "reg/rules", publish={"mode": "commit", "rules": [
                 {"update": "major", "mode": "pull-request"}]}),
             planned("aged", "reg/aged", min_age="1h"),
             planned("stage", "reg/stage", select={
                 "semver": {"range": "*"}, "promote": {"from": "alone"}})]

    assert cycle._streamed(batch) == {"alone"}
