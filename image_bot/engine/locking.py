"""One process per state dir: an exclusive ``flock`` refuses a second run (engine level).

Two runs sharing a state dir would reset each other's clone mid-cycle. The lock is an
advisory ``fcntl.flock`` on ``<state_dir>/lock``: the kernel drops it when the process
dies, so a crash never leaves a stale lock behind. The file records the holder's pid and
command for the error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from image_bot.errors import StateDirLocked


@contextlib.contextmanager
def hold(state_dir: Path, *, purpose: str) -> Iterator[None]:
    """Hold the state dir for the duration of the block, or raise :class:`StateDirLocked`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text(errors="replace").strip() or "another process"
            raise StateDirLocked(f"state dir {state_dir} is in use by {holder}; "
                                 f"one image-bot process per state dir (set a different "
                                 f"state_dir to run another)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({purpose}, {Path(sys.argv[0]).name})\n".encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
