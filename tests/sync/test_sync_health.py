"""Sync agent, health: the verdict on one observation, waiting with a fake clock, and the
parallel scheduler that orders services by their ``depends_on`` conditions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from image_bot.errors import TargetUnavailable
from image_bot.sync import compose, docker_target, health
from image_bot.sync.health import Observation, Verdict
from image_bot.sync.status import Health, ServiceStatus


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


# --- run_in_order: the parallel scheduler of the Docker target (no engine) ------------------


def _svc(name: str, **conditions: str) -> compose.Service:
    return compose.Service(project="p", name=name, image="a:1",
                           depends_on=tuple(sorted(conditions)),
                           conditions=tuple(sorted(conditions.items())))


def _ok(service: compose.Service, health: Health = "Healthy",
        action: str = "created") -> ServiceStatus:
    return ServiceStatus("p", service.name, "Synced" if health == "Healthy" else "OutOfSync",
                         health, action=action)


def test_services_without_ordering_run_at_the_same_time() -> None:
    services = [_svc(f"s{i}") for i in range(4)]
    barrier = threading.Barrier(4, timeout=10)  # breaks (fails) unless all 4 run at once

    def work(service: compose.Service, blocked: str | None,
             started: Callable[[], None]) -> ServiceStatus:
        barrier.wait()
        return _ok(service)

    results = docker_target.run_in_order(services, work, workers=4)

    assert [r.service for r in results] == ["s0", "s1", "s2", "s3"]


def test_conditions_gate_dependents_on_start_health_or_completion() -> None:
    db, job = _svc("db"), _svc("job")
    web = _svc("web", db="service_started", job="service_completed_successfully")
    seen: list[str] = []
    db_may_finish = threading.Event()

    def work(service: compose.Service, blocked: str | None,
             started: Callable[[], None]) -> ServiceStatus:
        if service.name == "db":
            started()  # web may go on once db has started, long before db is healthy
            assert db_may_finish.wait(10)
        if service.name == "web":
            seen.append(f"web after {sorted(seen)}")
            db_may_finish.set()
        seen.append(service.name)
        return _ok(service)

    results = docker_target.run_in_order([db, job, web], work, workers=4)

    assert "web after ['job']" in seen  # job completed, db only started
    assert [r.health for r in results] == ["Healthy"] * 3


def test_a_failed_dependency_blocks_only_its_dependents() -> None:
    db, cache = _svc("db"), _svc("cache")
    api = _svc("api", db="service_healthy")
    worker = _svc("worker", cache="service_healthy")
    blocked_by: dict[str, str | None] = {}

    def work(service: compose.Service, blocked: str | None,
             started: Callable[[], None]) -> ServiceStatus:
        blocked_by[service.name] = blocked
        if service.name == "db":
            return _ok(service, "Degraded", "rolled-back")
        return _ok(service)

    docker_target.run_in_order([cache, db, api, worker], work, workers=2)

    assert blocked_by == {"cache": None, "db": None, "worker": None,
                          "api": "depends on 'db' (service_healthy), which is Degraded"}


def test_an_engine_failure_in_one_service_still_ends_the_pass_with_it() -> None:
    db, web = _svc("db"), _svc("web", db="service_started")
    blocked_by: dict[str, str | None] = {}

    def work(service: compose.Service, blocked: str | None,
             started: Callable[[], None]) -> ServiceStatus:
        blocked_by[service.name] = blocked
        if service.name == "db":
            raise TargetUnavailable("docker: engine unreachable")
        return _ok(service)

    with pytest.raises(TargetUnavailable):
        docker_target.run_in_order([db, web], work, workers=2)
    assert blocked_by["web"] == "depends on 'db', which failed"


def test_a_job_is_healthy_when_it_exits_zero_and_degraded_otherwise() -> None:
    assert health.assess(_seen("exited", code=0), min_running=5, completes=True) == Verdict(
        "Healthy", "completed successfully")
    assert health.assess(_seen(running_for=99), min_running=5, completes=True) == Verdict(
        "Progressing", "running until it completes")
    assert health.assess(_seen("exited", code=2), min_running=5, completes=True).health == (
        "Degraded")
    assert health.assess(_seen("exited", code=0), min_running=5).health == "Degraded"
