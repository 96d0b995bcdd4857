"""While an engine is open the young generation is collected less often (a cycle allocates
hundreds of thousands of short-lived objects); the process's thresholds come back when the
last open engine closes."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from image_bot.config import models
from image_bot.engine import context


def test_the_young_threshold_is_raised_while_the_engine_is_open(tmp_path: Path) -> None:
    config = models.BotConfig.model_validate({
        "repositories": [{"url": "https://git.example/config.git"}],
        "state_dir": str(tmp_path / "state")})
    before = gc.get_threshold()
    seen = []

    async def go() -> None:
        async with context.Engine.open(config):
            seen.append(gc.get_threshold())
        seen.append(gc.get_threshold())

    try:
        asyncio.run(go())
    finally:
        gc.set_threshold(*before)  # whatever happened, not left changed for other tests
    assert seen == [(context.YOUNG_COLLECTION_THRESHOLD, *before[1:]), before]
    assert before[0] < context.YOUNG_COLLECTION_THRESHOLD


def test_engines_closing_in_any_order_leave_the_thresholds_as_they_were() -> None:
    before = gc.get_threshold()
    collections = context._Collections()
    first, second = collections.fewer(), collections.fewer()
    try:
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)  # the first opened closes first
        assert gc.get_threshold()[0] == context.YOUNG_COLLECTION_THRESHOLD  # one still open
        second.__exit__(None, None, None)
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
