"""Runs the engine for `run`, `plan`, `webhook` and the operator commands, under the lock.

Holds the state dir lock and drives the engine; prints nothing but progress and decides no
exit code (a locked state dir or a bad config raises, and image_bot.cli.errors maps it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from rich.console import Console
from rich.status import Status

from image_bot.config import models
from image_bot.engine import (
    context,
    cycle,
    locking,
    observing,
    operating,
    scheduling,
    selecting,
)
from image_bot.engine.report import CycleReport

T = TypeVar("T")


def run_cycle(config: models.BotConfig, *, dry_run: bool, selection: selecting.Selection,
              show_progress: bool, purpose: str) -> CycleReport:
    """One cycle under the state dir lock, with a progress line on a terminal."""
    console = Console(stderr=True)
    with locking.hold(config.state_dir, purpose=purpose), \
            console.status("starting", spinner="dots") if show_progress and \
            console.is_terminal else contextlib.nullcontext() as progress:
        return asyncio.run(_cycle_async(config, dry_run=dry_run, selection=selection,
                                        progress=progress, purpose=purpose))


async def _cycle_async(config: models.BotConfig, *, dry_run: bool,
                       selection: selecting.Selection, progress: Status | None,
                       purpose: str) -> CycleReport:
    started, requests = time.monotonic(), [0]

    def counted(method: str, url: str, status: int, seconds: float) -> None:
        requests[0] += 1
        if progress is not None:
            progress.update(f"scanning {len(config.repositories)} repositories: "
                            f"{requests[0]} registry requests, "
                            f"{time.monotonic() - started:.0f}s")

    if progress is not None:
        progress.update(f"fetching {len(config.repositories)} repositories")
    async with context.Engine.open(config, on_request=counted) as engine:
        if selection.policies is not None:  # `--policy NAME`: unknown names are refused
            report = await operating.run_named(engine, selection, dry_run=dry_run)
        else:
            report = await cycle.run_once(engine, dry_run=dry_run, selection=selection)
        engine.record(report, trigger=purpose, seconds=time.monotonic() - started)
        return report


def run_engine(config: models.BotConfig, work: Callable[[context.Engine], Awaitable[T]], *,
               lock: str | None) -> T:
    """An operator command's work with the process's engine; under the state dir lock when
    it uses the clone (``lock``: what for), not when it only reads or writes the state DB
    (SQLite is safe beside a running daemon)."""
    async def go() -> T:
        async with context.Engine.open(config) as engine:
            return await work(engine)
    with locking.hold(config.state_dir, purpose=lock) if lock else contextlib.nullcontext():
        return asyncio.run(go())


def run_daemon(config: models.BotConfig, *, polling: bool, interval: float | None,
               listen: str | None, shard: selecting.Shard | None,
               log_format: observing.LogFormat) -> None:
    """The daemon (or webhook-only) until SIGTERM, under the state dir lock."""
    observing.setup_logging(log_format)
    with locking.hold(config.state_dir, purpose="daemon"):
        asyncio.run(_daemon_async(config, polling=polling, interval=interval,
                                  listen=listen or config.daemon.listen, shard=shard))


async def _daemon_async(config: models.BotConfig, *, polling: bool, interval: float | None,
                        listen: str, shard: selecting.Shard | None) -> None:
    from image_bot.server import app  # the web stack: the daemon's alone

    async with context.Engine.open(config) as engine:
        scheduler = scheduling.Scheduler(engine, shard=shard, polling=polling,
                                         interval=interval)
        await app.serve(config, scheduler=scheduler, state=engine.state,
                        metrics=engine.metrics, listen=listen)
