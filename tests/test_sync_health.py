"""Sync agent, health: the verdict on one observation, and waiting with a fake clock."""

from __future__ import annotations

import time

import pytest

from image_bot.sync import docker_target, health
from image_bot.sync.health import Observation, Verdict


def _seen(status: str = "running", *, check: str | None = None, restarts: int = 0,
          code: int = 0, running_for: float = 0.0) -> Observation:
    return Observation(status, check, restarts, code, running_for)


@pytest.mark.parametrize(("seen", "verdict"), [
    (_seen("exited", code=3), Verdict("Degraded", "container exited with code 3")),
    (_seen("restarting", restarts=2, code=1),
     Verdict("Degraded", "container keeps restarting (exit code 1, 2 restart(s))")),
    (_seen(restarts=1), Verdict("Degraded", "container keeps restarting (exit code 0, 1 "
                                            "restart(s))")),
    (_seen("created"), Verdict("Progressing", "container is created")),
    (_seen(check="unhealthy"), Verdict("Degraded", "healthcheck reports unhealthy")),
    (_seen(check="starting", running_for=99), Verdict("Progressing", "healthcheck: starting")),
    (_seen(check="healthy"), Verdict("Healthy", "healthcheck: healthy")),
    (_seen(running_for=5.0), Verdict("Healthy", "running for 5s")),
    (_seen(running_for=1.25), Verdict("Progressing", "running for 1.2s of 5s")),
])
def test_assess(seen: Observation, verdict: Verdict) -> None:
    assert health.assess(seen, min_running=5.0) == verdict


def test_restarts_before_the_change_do_not_count() -> None:
    assert health.assess(_seen(restarts=4, running_for=9), min_running=5,
                         baseline_restarts=4).health == "Healthy"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_polls_until_healthy() -> None:
    clock = FakeClock()
    start = clock.now

    verdict = health.wait(lambda: _seen(running_for=clock.now - start), min_running=2.0,
                          timeout=10, poll=0.5, clock=clock, sleep=clock.sleep)

    assert verdict == Verdict("Healthy", "running for 2s")
    assert clock.now == start + 2.0


def test_wait_gives_up_after_the_timeout_with_the_last_reason() -> None:
    clock = FakeClock()

    verdict = health.wait(lambda: _seen(check="starting"), min_running=1, timeout=3, poll=1,
                          clock=clock, sleep=clock.sleep)

    assert verdict == Verdict("Degraded", "not healthy after 3s (healthcheck: starting)")


def test_wait_stops_at_once_when_the_container_dies() -> None:
    clock = FakeClock()

    verdict = health.wait(lambda: _seen("exited", code=1), min_running=1, timeout=30,
                          clock=clock, sleep=clock.sleep)

    assert verdict.health == "Degraded"
    assert clock.now == 100.0


def test_docker_timestamps_with_nanoseconds() -> None:
    now = time.mktime((2026, 11, 27, 13, 7, 20, 0, 0, 0)) - time.timezone
    assert docker_target.seconds_since("2026-11-27T13:07:12.047878239Z", now=now) == (
        pytest.approx(7.952, abs=0.001))
    assert docker_target.seconds_since("2026-11-27T14:07:12+01:00", now=now) == 8.0
    assert docker_target.seconds_since("0001-01-01T00:00:00Z", now=now) > 0
    assert docker_target.seconds_since("garbage", now=now) == 0.0
