"""A file-based wake-up between the daemon and sync agents that share its state dir.

A Git forge push webhook reaches the daemon; the sync agent (``image-bot sync``) is another
process. The daemon rewrites ``<state_dir>/sync/wake``; the agent sleeps between passes
with :func:`sleeper`, which returns early when that file changes. No file, no wake-up:
the agent simply keeps its interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from image_bot.sync import status

_POLL = 0.5


def wake_file(state_dir: Path) -> Path:
    return status.folder(state_dir).parent / "wake"


def request_sync(state_dir: Path) -> None:
    """Ask the sync agents sharing ``state_dir`` for a pass now."""
    path = wake_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{time.time_ns()}\n")


def sleeper(state_dir: Path, *, poll: float = _POLL) -> Callable[[float], None]:
    """A ``sleep(seconds)`` that also ends when :func:`request_sync` was called meanwhile."""
    path = wake_file(state_dir)

    def stamp() -> str | None:
        try:
            return path.read_text()
        except OSError:
            return None

    def sleep(seconds: float) -> None:
        before = stamp()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(poll, left))
            if stamp() != before:
                return

    return sleep
