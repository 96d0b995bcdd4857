"""The replay guard of webhook receivers, on a fake clock."""

from __future__ import annotations

from image_bot.server.replay import ReplayGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_refused_within_the_window_and_forgotten_after_it() -> None:
    clock = Clock()
    guard = ReplayGuard(300, clock=clock)
    assert guard.refusal("sig-a", None) is None
    clock.now += 299
    assert guard.refusal("sig-a", None) == "replay of a request accepted 299 s ago"
    assert guard.refusal("sig-b", None) is None
    clock.now += 2
    assert guard.refusal("sig-a", None) is None  # expired: without a signed time, accepted
    assert len(guard) == 2  # sig-b and the new sig-a


def test_a_signed_time_outside_the_window_is_refused_either_way() -> None:
    clock = Clock()
    guard = ReplayGuard(300, clock=clock)
    assert guard.refusal("old", clock.now - 301) == (
        "signed 301 s ago, outside the replay window of 300 s")
    assert guard.refusal("future", clock.now + 400) == (
        "signed 400 s in the future, outside the replay window of 300 s")
    assert guard.refusal("fresh", clock.now - 299) is None
    clock.now += 350  # the key expired, and so did its signed time: still refused
    assert guard.refusal("fresh", clock.now - 649) is not None
    assert len(guard) == 0


def test_memory_is_bounded_and_a_zero_window_turns_it_off() -> None:
    clock = Clock()
    guard = ReplayGuard(300, capacity=1000, clock=clock)
    for number in range(5000):
        assert guard.refusal(f"sig-{number}", None) is None
    assert len(guard) == 1000
    assert guard.refusal("sig-4999", None) is not None
    off = ReplayGuard(0, clock=clock)
    assert off.refusal("k", None) is None and off.refusal("k", clock.now - 10**6) is None
