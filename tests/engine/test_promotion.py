"""Stages, pure part: which tags ran healthy upstream long enough, from tracked updates."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import testing
from image_bot.config import loading, models
from image_bot.engine import context, cycle, promotion

HOUR = 3600.0


def _update(tag: str, committed: float, state: str = "deployed", *,
            agents: dict[str, tuple[str, float]] | None = None, policy: str = "staging",
            **extra: Any) -> dict[str, Any]:
    agents = {"stg-1": ("deployed", committed + 60)} if agents is None else agents
    return {"policy": policy, "image": "r/web", "tag": tag, "committed_at": committed,
            "state": state, "agents": {n: {"state": s, "at": at} for n, (s, at) in
                                       agents.items()}, **extra}


def test_a_tag_is_eligible_once_every_agent_ran_it_healthy_long_enough() -> None:
    updates = [_update("1.1.0", 0.0, agents={"a": ("deployed", 100.0), "b": ("deployed",
                                                                             400.0)})]
    runs = promotion.runs(updates, "staging")
    assert runs["1.1.0"].healthy_since == 400.0  # the last agent to get there
    early = promotion.promotion("staging", HOUR, runs, now=400.0 + HOUR - 1)
    assert early.eligible == frozenset()
    assert early.soaking == (("1.1.0", HOUR - 1, 1.0),)
    assert early.note() == "1.1.0 healthy in staging for 59 m; eligible in 1 s"
    assert early.next_change() == 1.0
    late = promotion.promotion("staging", HOUR, runs, now=400.0 + HOUR)
    assert late.eligible == {"1.1.0"} and late.soaking == ()
    assert late.note() == "eligible from staging: 1.1.0"
    assert late.explain("1.1.0") == "1.1.0 ran healthy in staging for 1 h (at least 1 h " \
        "required)"
    assert early.explain("1.1.0") is None


def test_an_agent_still_on_its_way_or_another_policy_does_not_count() -> None:
    updates = [_update("1.1.0", 0.0, "committed", agents={}),
               _update("1.2.0", 0.0, agents={"a": ("deployed", 10.0), "b": ("committed", 0)}),
               _update("9.0.0", 0.0, policy="dev")]
    allowed = promotion.promotion("staging", 0.0, promotion.runs(updates, "staging"),
                                  now=10 * HOUR)
    assert allowed.eligible == frozenset()
    assert allowed.note() == "nothing has run healthy in staging yet"


def test_a_replaced_tag_counts_only_the_time_it_ran() -> None:
    updates = [_update("1.1.0", 0.0), _update("1.2.0", 1000.0)]  # 1.1.0 healthy 60 → 1000
    runs = promotion.runs(updates, "staging")
    assert runs["1.1.0"].until == 1000.0
    assert promotion.promotion("staging", 900.0, runs, now=10 * HOUR).eligible == {"1.1.0",
                                                                                "1.2.0"}
    short = promotion.promotion("staging", 950.0, runs, now=1500.0)
    assert short.eligible == frozenset()
    assert short.soaking == (("1.2.0", 440.0, 510.0),)  # 1.1.0 will never get there


def test_degraded_rolled_back_or_declined_upstream_is_never_promoted() -> None:
    updates = [
        _update("1.1.0", 0.0),
        _update("1.2.0", 100.0, "rolled-back", degraded_by="stg-1",
                rollback={"reason": "agent stg-1 reported web degraded: exit 1"}),
        _update("1.2.0", 50.0),  # an earlier healthy run of the same tag does not undo it
        _update("1.3.0", 200.0, "degraded", degraded_by="stg-2", reason="web is Degraded"),
        _update("1.4.0", 300.0)]
    runs = promotion.runs(updates, "staging", declined=["1.4.0"])
    allowed = promotion.promotion("staging", 0.0, runs, now=HOUR)
    assert allowed.eligible == {"1.1.0"}
    assert dict(allowed.blocked) == {
        "1.2.0": "rolled back in staging (stg-1: agent stg-1 reported web degraded: exit 1)",
        "1.3.0": "degraded in staging (stg-2: web is Degraded)",
        "1.4.0": "declined in staging"}


def test_narrowed_keeps_registry_order_and_candidates() -> None:
    class Candidate:
        def __init__(self, tag: str) -> None:
            self.tag = tag
    c = Candidate("1.1.0")
    assert promotion.narrowed(["1.0.0", c, "1.2.0"], frozenset({"1.1.0", "1.2.0"})) == [
        c, "1.2.0"]


def test_an_upstream_nobody_knows_is_named_as_such() -> None:
    unknown = promotion.promotion("stgaing", 0.0, promotion.runs([], "stgaing"), now=HOUR,
                                  known=False)
    assert unknown.eligible == frozenset()
    assert unknown.note() == ("no policy 'stgaing' is known: not in this repository, and "
                              "nothing it wrote is tracked (check select.promote.from)")


def test_the_engine_reads_an_upstreams_updates_however_many_came_after(
        tmp_path: Path) -> None:
    """A stage promotes from its upstream's tracked updates: all of them, not those among
    the most recent (other repositories' hundreds of updates came after)."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies/p.yaml").write_text(testing.policy(
        "prod", "h.io/r/web", select={"semver": {"range": "^1"},
                                         "promote": {"from": "staging", "healthy-for": "1h"}}))
    [loaded] = loading.load_policies(tmp_path / "policies").policies
    config = models.BotConfig.model_validate(testing.bot_config(
        ["file:///x"], state_dir=tmp_path / "state"))

    async def eligible() -> list[str]:
        async with context.Engine.open(config) as engine:
            now = engine.clock.now().timestamp()
            engine.state.put_updates([("r#c1#staging#r/web", _update("1.1.0", now - 3 * HOUR))])
            engine.state.put_updates((f"other#c{i}#p{i}#img", _update("9", now, policy=f"p{i}"))
                                     for i in range(600))
            planned = cycle._Planned(loaded, cycle.build_policy(loaded, "main"),
                                     tags=["1.0.0", "1.1.0", "1.2.0"], error=None)
            [promoted] = cycle._with_promotions(engine, [planned], frozenset({"prod"}))
            return list(promoted.tags or [])

    assert asyncio.run(eligible()) == ["1.1.0"]
