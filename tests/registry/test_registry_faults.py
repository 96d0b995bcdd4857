"""What the real registry cannot produce, through an in-process fake (httpx.MockTransport):
pagination, 429/5xx, rate-limit headers, garbage answers, limits, host mapping.

The fake checks method and path of every request against its routes (an unexpected request
fails the test) and records what it received.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from image_bot import refs
from image_bot.config import models
from image_bot.errors import (
    AuthError,
    ImageNotFound,
    RegistryError,
    RegistryLimitExceeded,
    RegistryUnavailable,
)
from image_bot.registry import client as registry_client
from image_bot.registry import limits, manifests

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class FakeRegistry:
    """Routes ``(method, path)`` to a list of answers served in turn (the last repeats)."""

    def __init__(self, routes: dict[tuple[str, str], list[Any]]) -> None:
        self.routes = {key: list(answers) for key, answers in routes.items()}
        self.received: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.received.append(request)
        key = (request.method, request.url.path)
        if key not in self.routes:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        answers = self.routes[key]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            answer = answer(request)
            if asyncio.iscoroutine(answer):
                answer = await answer
        assert isinstance(answer, httpx.Response)
        return answer

    def urls(self, method: str = "GET") -> list[str]:
        return [str(r.url) for r in self.received if r.method == method]


def _ok(body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(200, json=body, headers=headers)


PING = {("GET", "/v2/"): [httpx.Response(200)]}


def _run(fake: FakeRegistry, call: Callable[[registry_client.RegistryClient],
                                              Awaitable[Any]],
         *settings: models.RegistryConfig, **options: Any) -> Any:
    async def go() -> Any:
        options.setdefault("backoff", 0.0)
        async with registry_client.RegistryClient(
                list(settings), transport=httpx.MockTransport(fake), **options) as client:
            return await call(client)

    return asyncio.run(go())


def _tags(name: str) -> Callable[[registry_client.RegistryClient], Awaitable[list[str]]]:
    return lambda client: client.list_tags(refs.parse(name))


# --- pagination -------------------------------------------------------------------------------


def test_pagination_follows_relative_and_absolute_links_and_deduplicates() -> None:
    base = "https://reg.example/v2/team/app/tags/list"
    pages = {
        "": _ok({"tags": ["a", "b"]},
                Link='</v2/team/app/tags/list?last=b&n=2>; rel="next"'),
        "last=b&n=2": _ok({"tags": ["b", "c"]}, Link=f'<{base}?last=c&n=2>; rel="next"'),
        "last=c&n=2": _ok({"name": "team/app", "tags": ["d"]}),
    }
    fake = FakeRegistry({**PING, ("GET", "/v2/team/app/tags/list"): [
        lambda request: pages[request.url.query.decode()]]})

    tags = _run(fake, _tags("reg.example/team/app"))

    assert tags == ["a", "b", "c", "d"]
    assert fake.urls() == ["https://reg.example/v2/", base, f"{base}?last=b&n=2",
                           f"{base}?last=c&n=2"]


def test_tags_come_sorted_and_once_whatever_order_the_registry_sends() -> None:
    # Docker Hub lists newest first; a registry may repeat a tag across pages
    base = "https://reg.example/v2/team/app/tags/list"
    pages = {
        "": _ok({"tags": ["2.0.0", "latest", "1.10.0"]}, Link=f'<{base}?p=2>; rel="next"'),
        "p=2": _ok({"tags": ["1.9.0", "latest", "1.10.0-rc.1"]}),
    }
    fake = FakeRegistry({**PING, ("GET", "/v2/team/app/tags/list"): [
        lambda request: pages[request.url.query.decode()]]})

    assert _run(fake, _tags("reg.example/team/app")) == [
        "1.10.0", "1.10.0-rc.1", "1.9.0", "2.0.0", "latest"]


def test_repeated_tags_do_not_count_towards_max_tags() -> None:
    # three pages of the same two tags and a third: 7 listed, 3 distinct, max_tags 4
    base = "https://reg.example/v2/team/app/tags/list"
    pages = {
        "": _ok({"tags": ["a", "b"]}, Link=f'<{base}?p=2>; rel="next"'),
        "p=2": _ok({"tags": ["a", "b"]}, Link=f'<{base}?p=3>; rel="next"'),
        "p=3": _ok({"tags": ["b", "a", "c"]}),
    }
    fake = FakeRegistry({**PING, ("GET", "/v2/team/app/tags/list"): [
        lambda request: pages[request.url.query.decode()]]})
    settings = models.RegistryConfig(host="reg.example", max_tags=4)

    assert _run(fake, _tags("reg.example/team/app"), settings) == ["a", "b", "c"]

    fake = FakeRegistry({**PING, ("GET", "/v2/team/app/tags/list"): [
        lambda request: pages[request.url.query.decode()]]})
    with pytest.raises(RegistryLimitExceeded, match=r"more than 2 tags"):
        _run(fake, _tags("reg.example/team/app"), settings.model_copy(update={"max_tags": 2}))


def test_pagination_loop_is_stopped() -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [
        _ok({"tags": ["a"]}, Link='</v2/app/tags/list?last=a>; rel="next"')]})

    with pytest.raises(RegistryError, match=r"^registry reg\.example: pagination loop listing "
                                            r"tags of app$"):
        _run(fake, _tags("reg.example/app"))

    assert len(fake.urls()) == 3  # ping, first page, the page that links to itself


def test_next_link_to_another_host_is_refused() -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [
        _ok({"tags": ["a"]}, Link='<https://evil.example/v2/app/tags/list?last=a>; rel="next"')]})

    with pytest.raises(RegistryError) as refused:
        _run(fake, _tags("reg.example/app"))

    assert str(refused.value) == ("registry reg.example: refusing a next-page link to another "
                                  "host (evil.example) listing tags of app")
    assert all(r.url.host == "reg.example" for r in fake.received)


@pytest.mark.parametrize(("host", "page_size", "expected"), [
    ("reg.example", None, ""),
    ("reg.example", 500, "n=500"),
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", None, "n=1000"),
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", 5000, "n=1000"),
])
def test_page_size_is_sent_and_capped_per_registry(host: str, page_size: int | None,
                                                   expected: str) -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [_ok({"tags": ["1"]})]})
    settings = models.RegistryConfig(host=host, page_size=page_size)

    _run(fake, _tags(f"{host}/app"), settings)

    assert fake.received[-1].url.query.decode() == expected


def test_docker_hub_names_and_mirror_hosts() -> None:
    hub = FakeRegistry({**PING, ("GET", "/v2/library/nginx/tags/list"): [_ok({"tags": ["1"]})]})
    _run(hub, _tags("nginx"))
    mirrored = FakeRegistry({**PING, ("GET", "/v2/team/app/tags/list"): [_ok({"tags": ["1"]})]})
    mirror = models.RegistryConfig(host="ghcr.io", mirror="http://mirror.internal:5000",
                                   aliases=["ghcr-alias.internal"])
    _run(mirrored, _tags("ghcr-alias.internal/team/app"), mirror)

    assert hub.urls()[-1] == "https://registry-1.docker.io/v2/library/nginx/tags/list"
    assert mirrored.urls()[-1] == "http://mirror.internal:5000/v2/team/app/tags/list"


def test_a_list_started_ahead_is_taken_once_and_those_not_taken_end_with_the_block() -> None:
    ended: list[str] = []
    arrived = asyncio.Event()

    async def never(request: httpx.Request) -> httpx.Response:  # until cancelled
        arrived.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(request.url.path)
        raise AssertionError("unreachable")

    fake = FakeRegistry({
        **PING,
        ("GET", "/v2/team/a/tags/list"): [lambda _: _ok({"tags": ["1.0.0", "1.1.0"]})],
        ("GET", "/v2/team/b/tags/list"): [never],
        ("GET", "/v2/team/c/tags/list"): [lambda _: httpx.Response(404)],
    })
    a, b, c = (refs.parse(f"reg.example/team/{name}") for name in "abc")

    async def call(client: registry_client.RegistryClient) -> list[list[str]]:
        async with asyncio.timeout(5), client.listing_ahead() as start:
            start([a, b, c])
            start([a])  # already started: not again
            await arrived.wait()  # b's list went out on its own
            taken = await client.list_tags(a)
            again = await client.list_tags(a)  # taken once: a new list
            with pytest.raises(ImageNotFound, match="team/c"):
                await client.list_tags(c)  # what the list ahead met
        assert ended == ["/v2/team/b/tags/list"]  # not taken: cancelled, and waited for
        after = await client.list_tags(a)  # outside the block: no list is waiting
        return [taken, again, after]

    patient = models.RegistryConfig(host="reg.example", request_deadline=3600)
    assert _run(fake, call, patient) == [["1.0.0", "1.1.0"]] * 3
    assert fake.urls().count("https://reg.example/v2/team/a/tags/list") == 3
    assert fake.urls().count("https://reg.example/v2/team/c/tags/list") == 1


# --- retries, 429, rate limits ---------------------------------------------------------------


def test_5xx_then_success_is_retried() -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [
        httpx.Response(503), httpx.Response(502), _ok({"tags": ["1.0"]})]})

    assert _run(fake, _tags("reg.example/app")) == ["1.0"]
    assert len(fake.urls()) == 4


def test_connect_error_then_success_is_retried() -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [
        httpx.ConnectError("connection refused"), _ok({"tags": ["1.0"]})]})

    assert _run(fake, _tags("reg.example/app")) == ["1.0"]


def test_persistent_5xx_names_registry_and_image() -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [httpx.Response(500)]})

    with pytest.raises(RegistryUnavailable, match=r"^registry reg\.example, image app: "
                                                  r"HTTP 500$"):
        _run(fake, _tags("reg.example/app"), attempts=3)
    assert len(fake.urls()) == 4


def test_retries_wait_backoff_then_twice_that(monkeypatch: pytest.MonkeyPatch) -> None:
    # the first attempt runs without tenacity; the waits are those tenacity always gave
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [
        httpx.Response(503), httpx.Response(502), httpx.Response(503),
        _ok({"tags": ["1.0"]})]})

    assert _run(fake, _tags("reg.example/app"), attempts=4, backoff=0.25) == ["1.0"]
    assert waits == [0.25, 0.5, 1.0]
    assert registry_client._retry_delay(None, 20, 1.0) == 30.0  # capped


def test_429_retry_after_is_honoured() -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [
        httpx.Response(429, headers={"Retry-After": "1"}), _ok({"tags": ["1.0"]})]})
    started = time.monotonic()

    assert _run(fake, _tags("reg.example/app")) == ["1.0"]
    assert time.monotonic() - started >= 0.95


def test_long_retry_after_fails_fast_and_pauses_the_host() -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [
        httpx.Response(429, headers={"Retry-After": "3600"})]})

    async def twice(client: registry_client.RegistryClient) -> list[BaseException]:
        outcomes = []
        for _ in range(2):
            try:
                await client.list_tags(refs.parse("reg.example/app"))
            except RegistryUnavailable as exc:
                outcomes.append(exc)
        return outcomes

    first, second = _run(fake, twice, max_wait=30.0)

    assert str(first) == "registry reg.example, image app: HTTP 429"
    assert first.retry_after == 3600
    assert str(second).startswith("registry reg.example: HTTP 429 Too Many Requests; not "
                                  "querying it until ")
    assert len(fake.urls()) == 2  # the ping and one tags request: nothing while paused


def test_docker_hub_rate_limit_exhausted_stops_queries_and_is_reported() -> None:
    limited = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600",
               "Docker-Content-Digest": "sha256:" + "a" * 64}
    fake = FakeRegistry({**PING, ("HEAD", "/v2/library/nginx/manifests/1.27"): [
        httpx.Response(200, headers=limited)]})
    image = refs.parse("nginx")

    async def go(client: registry_client.RegistryClient) -> tuple[Any, ...]:
        digest = await client.digest(image, "1.27")
        with pytest.raises(RegistryUnavailable) as paused:
            await client.digest(image, "1.27")
        return digest, paused.value, client.host_status()

    digest, paused, status = _run(fake, go)

    assert digest == "sha256:" + "a" * 64
    assert str(paused).startswith("registry docker.io: rate limit of 100 requests used up; "
                                  "not querying it until ")
    assert 21590 < paused.retry_after <= 21600
    assert status["docker.io"]["rate_limit"] == 100
    assert status["docker.io"]["rate_limit_remaining"] == 0
    assert status["docker.io"]["paused_until"] is not None
    assert len(fake.received) == 2  # ping + one HEAD


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = {"Retry-After": "Tue, 14 Nov 2023 22:13:40 GMT"}  # now + 20 s
    assert limits.retry_after(header, now=now) == pytest.approx(20.0)
    assert limits.retry_after({"Retry-After": "soon"}) is None


def _many(count: int) -> Callable[[registry_client.RegistryClient], Awaitable[Any]]:
    async def go(client: registry_client.RegistryClient) -> None:
        await asyncio.gather(*(client.list_tags(refs.parse("reg.example/app"))
                               for _ in range(count)))
    return go


def test_concurrency_cap_per_host() -> None:
    in_flight, peak = 0, 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return _ok({"tags": ["1"]})

    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [slow]})

    _run(fake, _many(10), models.RegistryConfig(host="reg.example", concurrency=3))

    assert peak == 3


def test_token_bucket_rate_limit_per_host() -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [_ok({"tags": ["1"]})]})
    settings = models.RegistryConfig(host="reg.example", rate_limit=40, burst=2)
    started = time.monotonic()

    _run(fake, _many(10), settings)

    assert len(fake.received) == 11
    assert time.monotonic() - started >= (11 - 2) / 40 * 0.9  # a burst of 2, then 40/s


# --- garbage answers -------------------------------------------------------------------------


HTML = httpx.Response(200, text="<!DOCTYPE html><html>Sign in</html>",
                      headers={"Content-Type": "text/html"})


@pytest.mark.parametrize(("answer", "message"), [
    (HTML, "registry reg.example: tag list of app is an HTML page, not JSON"),
    (httpx.Response(200, text="{not json", headers={"Content-Type": "application/json"}),
     "registry reg.example: tag list of app is not JSON (Content-Type application/json)"),
    (_ok({"tags": "1.0"}), "registry reg.example: tag list of app has no 'tags' array"),
    (_ok([1, 2]), "registry reg.example: tag list of app has no 'tags' array"),
    (_ok({"tags": ["1.0", 2]}),
     "registry reg.example: tag list of app has no 'tags' array of strings"),
    (httpx.Response(418, json={"errors": [{"code": "TEAPOT"}]}),
     "registry reg.example, image app: unexpected HTTP 418 TEAPOT"),
])
def test_garbage_tag_lists(answer: httpx.Response, message: str) -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [answer]})

    with pytest.raises(RegistryError) as garbage:
        _run(fake, _tags("reg.example/app"))

    assert str(garbage.value) == message


DIGEST = "sha256:" + "b" * 64


def _manifest_routes(body: httpx.Response) -> dict[tuple[str, str], list[Any]]:
    return {**PING,
            ("HEAD", "/v2/app/manifests/1.0"): [
                httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})],
            ("GET", f"/v2/app/manifests/{DIGEST}"): [body]}


@pytest.mark.parametrize(("answer", "message"), [
    (HTML, f"registry reg.example, image app:{DIGEST}: answered an HTML page instead of a "
           f"manifest"),
    (httpx.Response(200, text="{}", headers={"Content-Type": "text/plain"}),
     f"registry reg.example, image app:{DIGEST}: answered Content-Type text/plain instead "
     f"of a manifest"),
    (httpx.Response(200, json={"schemaVersion": 2},
                    headers={"Content-Type": manifests.OCI_MANIFEST}),
     f"registry reg.example, image app: content does not match its digest {DIGEST}"),
])
def test_garbage_manifests(answer: httpx.Response, message: str) -> None:
    fake = FakeRegistry(_manifest_routes(answer))

    with pytest.raises(RegistryError) as garbage:
        _run(fake, lambda c: c.image_info(refs.parse("reg.example/app"), "1.0"))

    assert str(garbage.value) == message


def test_manifest_without_config_and_config_that_is_not_json() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": manifests.OCI_MANIFEST}).encode()
    digest = manifests.sha256(body)
    config = b"<html>oops</html>"
    config_digest = manifests.sha256(config)
    good = json.dumps({"schemaVersion": 2, "mediaType": manifests.OCI_MANIFEST,
                       "config": {"digest": config_digest}}).encode()
    routes = {**PING,
              ("HEAD", "/v2/app/manifests/bad"): [
                  httpx.Response(200, headers={"Docker-Content-Digest": digest})],
              ("GET", f"/v2/app/manifests/{digest}"): [httpx.Response(200, content=body)],
              ("HEAD", "/v2/app/manifests/html"): [httpx.Response(
                  200, headers={"Docker-Content-Digest": manifests.sha256(good)})],
              ("GET", f"/v2/app/manifests/{manifests.sha256(good)}"): [
                  httpx.Response(200, content=good)],
              ("GET", f"/v2/app/blobs/{config_digest}"): [httpx.Response(200, content=config)]}
    image = refs.parse("reg.example/app")

    with pytest.raises(RegistryError, match=r"no config digest"):
        _run(FakeRegistry(routes), lambda c: c.image_info(image, "bad"))
    with pytest.raises(RegistryError) as html:
        _run(FakeRegistry(routes), lambda c: c.image_info(image, "html"))
    assert str(html.value) == (f"registry reg.example, image app@{config_digest}: image "
                               f"config is an HTML page")


def test_token_server_garbage_and_access_token_answers() -> None:
    challenge = httpx.Response(401, headers={
        "WWW-Authenticate": 'Bearer realm="https://auth.example/token",service="reg"'})
    for answer, expected in [
        (_ok({"access_token": "abc", "expires_in": 300}), ["1.0"]),
        (HTML, "registry reg.example: token server https://auth.example/token answered "
               "HTTP 200 without a token"),
    ]:
        fake = FakeRegistry({("GET", "/v2/"): [challenge], ("GET", "/token"): [answer],
                             ("GET", "/v2/app/tags/list"): [
                                 lambda r: _ok({"tags": ["1.0"]})
                                 if r.headers.get("Authorization") == "Bearer abc"
                                 else httpx.Response(401)]})
        if isinstance(expected, list):
            assert _run(fake, _tags("reg.example/app")) == expected
        else:
            with pytest.raises(RegistryError) as garbage:
                _run(fake, _tags("reg.example/app"))
            assert str(garbage.value) == expected


def test_401_without_a_challenge() -> None:
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [httpx.Response(401)]})

    with pytest.raises(AuthError, match=r"^registry reg\.example: 401 without a usable "
                                        r"challenge for app$"):
        _run(fake, _tags("reg.example/app"))


# --- the on_request hook and pure helpers -----------------------------------------------------


def test_on_request_reports_every_request_with_redacted_urls() -> None:
    seen: list[tuple[str, str, int, float]] = []
    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [_ok({"tags": ["1"]})]})

    _run(fake, _tags("reg.example/app"), on_request=lambda *a: seen.append(a))

    assert [s[:3] for s in seen] == [("GET", "https://reg.example/v2/", 200),
                                     ("GET", "https://reg.example/v2/app/tags/list", 200)]
    assert all(isinstance(s[3], float) and s[3] >= 0 for s in seen)
    assert registry_client.redact_url(
        "https://user:pw@s3.example/blob?X-Amz-Signature=abc&n=5&account=me") == (
        "https://s3.example/blob?X-Amz-Signature=***&n=5&account=***")


@pytest.mark.parametrize(("given", "normal"), [
    ("linux/arm64/v8", "linux/arm64"), ("linux/arm", "linux/arm/v7"),
    ("Linux/AMD64", "linux/amd64"), ("windows/amd64", "windows/amd64")])
def test_platform_normalisation(given: str, normal: str) -> None:
    assert manifests.normalise_platform(given) == normal


def test_config_timestamps_and_labels() -> None:
    parsed = manifests.parse_config(json.dumps({
        "created": "2026-01-02T03:04:05Z", "os": "linux", "architecture": "arm",
        "variant": "v6", "config": {"Labels": None}}).encode())
    assert parsed.created is not None and parsed.created.isoformat() == (
        "2026-01-02T03:04:05+00:00")
    assert (parsed.labels, parsed.platform) == ({}, "linux/arm/v6")
    assert manifests.parse_config(b'{"created": "yesterday"}').created is None


def test_nine_thousand_tags_in_pages_of_the_ecr_maximum() -> None:
    host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    everything = [f"1.{i // 100}.{i % 100}" for i in range(9000)]

    def page(request: httpx.Request) -> httpx.Response:
        size = int(request.url.params["n"])
        start = everything.index(request.url.params["last"]) + 1 \
            if "last" in request.url.params else 0
        chunk = everything[start:start + size]
        headers = {}
        if start + size < len(everything):
            headers["Link"] = f'</v2/app/tags/list?n={size}&last={chunk[-1]}>; rel="next"'
        return _ok({"name": "app", "tags": chunk}, **headers)

    fake = FakeRegistry({**PING, ("GET", "/v2/app/tags/list"): [page]})

    tags = _run(fake, _tags(f"{host}/app"))

    assert tags == sorted(everything)
    assert len(fake.urls()) == 1 + 9  # the probe and nine pages of 1000
