"""Webhook replay protection: a bounded, expiring set of signed requests already accepted.

Pure bookkeeping for ``server.app`` (no I/O; the clock is injected). A request is refused
when its signed time is outside the window, or when its key (see ``receivers.replay_key``)
was accepted within the window. Entries expire after the window; at most ``capacity`` are
kept, the oldest dropped first, so memory stays bounded whatever the request rate.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable


class ReplayGuard:
    """One per receiver: ``window`` seconds (0 turns it off), ``capacity`` keys at most."""

    def __init__(self, window: float, *, capacity: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self._capacity = capacity
        self._clock = clock
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    def refusal(self, key: str | None, signed_at: float | None) -> str | None:
        """Why the request is a replay, or None (then ``key`` is remembered)."""
        if self.window <= 0:
            return None
        now = self._clock()
        self._expire(now)
        if signed_at is not None and abs(now - signed_at) > self.window:
            when = "ago" if signed_at < now else "in the future"
            return (f"signed {abs(now - signed_at):.0f} s {when}, outside the replay window "
                    f"of {self.window:g} s")
        if key is None:
            return None
        if key in self._seen:
            return f"replay of a request accepted {now - self._seen[key]:.0f} s ago"
        self._seen[key] = now
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return None

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, at = next(iter(self._seen.items()))
            if at >= now - self.window:
                return
            del self._seen[key]
