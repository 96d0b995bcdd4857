"""Webhook payloads of every supported format, and how each one is authenticated."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from image_bot.server import receivers
from image_bot.server.receivers import MalformedPayload, Parsed, Push, Request, Unauthorized

SECRET = "s3cret"


def _request(body: Any, headers: dict[str, str] | None = None,
             query: dict[str, str] | None = None) -> Request:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Request({k.lower(): v for k, v in (headers or {}).items()}, query or {}, raw)


def _signed(body: Any, header: str = "X-Hub-Signature-256", **headers: str) -> Request:
    raw = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return _request(raw, {header: signature, **headers})


DISTRIBUTION = {"events": [
    {"action": "pull", "target": {"repository": "team/web", "tag": "1.0.0"},
     "request": {"host": "reg.local:5000"}},
    {"action": "push", "target": {"repository": "team/web", "digest": "sha256:aa"},
     "request": {"host": "reg.local:5000"}},  # untagged child manifest of an index
    {"action": "push", "target": {"repository": "team/web", "tag": "1.2.0"},
     "request": {"host": "reg.local:5000"}},
]}

GHCR_PACKAGE = {
    "action": "published",
    "package": {
        "name": "Web", "package_type": "CONTAINER", "owner": {"login": "Acme"},
        "package_version": {"container_metadata": {"tag": {"name": "2.0.1", "digest": "x"}}},
    },
}


@pytest.mark.parametrize(("kind", "request_", "expected"), [
    ("distribution", _request(DISTRIBUTION), (Push("reg.local:5000/team/web", "1.2.0"),)),
    ("gitlab", _request(DISTRIBUTION), (Push("reg.local:5000/team/web", "1.2.0"),)),
    ("dockerhub", _request({"push_data": {"tag": "1.25", "pusher": "ci"},
                            "repository": {"repo_name": "nginx"}}),
     (Push("docker.io/library/nginx", "1.25"),)),
    ("github", _request(GHCR_PACKAGE, {"X-GitHub-Event": "package"}),
     (Push("ghcr.io/acme/web", "2.0.1"),)),
    ("github", _request({"registry_package": {"package_version": {
        "package_url": "ghcr.io/acme/api:3.0.0",
        "container_metadata": {"tag": {"name": "3.0.0"}}}}},
        {"X-GitHub-Event": "registry_package"}), (Push("ghcr.io/acme/api", "3.0.0"),)),
    ("harbor", _request({"type": "PUSH_ARTIFACT", "event_data": {"resources": [
        {"tag": "v1", "resource_url": "harbor.local/proj/app:v1", "digest": "sha256:1"}]}}),
     (Push("harbor.local/proj/app", "v1"),)),
    ("quay", _request({"repository": "acme/web", "docker_url": "quay.io/acme/web",
                       "updated_tags": ["1.0", "latest"]}),
     (Push("quay.io/acme/web", "1.0"), Push("quay.io/acme/web", "latest"))),
    ("generic", _request({"image": "reg.local/team/web", "tag": "4.0.0"}),
     (Push("reg.local/team/web", "4.0.0"),)),
    ("generic", _request({"image": "reg.local/team/web:4.0.1"}),
     (Push("reg.local/team/web", "4.0.1"),)),
])
def test_every_format_becomes_pushes_of_normalised_images(
        kind: str, request_: Request, expected: tuple[Push, ...]) -> None:
    assert receivers.parse(kind, request_).pushes == expected


def test_forge_push_events_ask_for_a_policy_reload() -> None:
    assert receivers.parse("github", _request({"ref": "refs/heads/main"},
                                              {"X-GitHub-Event": "push"})) == Parsed(reload=True)
    assert receivers.parse("gitlab", _request({"ref": "refs/heads/main"},
                                              {"X-Gitlab-Event": "Push Hook"})).reload


def test_events_that_are_not_pushes_are_noted_not_rejected() -> None:
    ping = receivers.parse("github", _request({"zen": "hi"}, {"X-GitHub-Event": "ping"}))
    assert ping == Parsed(note="GitHub event 'ping' is not a package push")
    deleted = receivers.parse("harbor", _request({"type": "DELETE_ARTIFACT"}))
    assert deleted.pushes == () and "not a push" in deleted.note


def test_the_receiver_registry_setting_names_the_host_when_the_payload_does_not() -> None:
    body = {"events": [{"action": "push", "target": {"repository": "web", "tag": "1"}}]}
    with pytest.raises(MalformedPayload, match=r"events\[0\].request.host: missing"):
        receivers.parse("distribution", _request(body))
    parsed = receivers.parse("distribution", _request(body), "registry.example.com")
    assert parsed.pushes == (Push("registry.example.com/web", "1"),)


@pytest.mark.parametrize(("kind", "body", "message"), [
    ("distribution", b"not json", "body is not JSON"),
    ("distribution", {"events": "x"}, "events: expected a list"),
    ("distribution", {"events": [{"action": "push", "target": {"tag": "1"},
                                  "request": {"host": "h.io"}}]},
     r"events\[0\].target.repository: expected a non-empty string"),
    ("dockerhub", {"push_data": {}, "repository": {"repo_name": "x"}},
     "push_data.tag: expected a non-empty string"),
    ("quay", {"docker_url": "quay.io/a/b", "updated_tags": "1.0"},
     "updated_tags: expected a list of tags"),
    ("generic", {"image": "Not An Image"}, "image: not an image reference"),
    ("generic", [1, 2], "body: expected an object"),
])
def test_malformed_payloads_say_which_key_is_wrong(kind: str, body: Any, message: str) -> None:
    with pytest.raises(MalformedPayload, match=message):
        receivers.parse(kind, _request(body))


def test_hmac_signatures_are_checked_over_the_exact_body() -> None:
    body = {"image": "reg.local/web", "tag": "1"}
    receivers.authenticate("github", _signed(body), SECRET)
    receivers.authenticate("generic", _signed(body, "X-Signature-256"), SECRET)
    tampered = _signed(body)
    tampered = Request(tampered.headers, {}, tampered.body.replace(b'"1"', b'"2"'))
    with pytest.raises(Unauthorized, match="signature does not match"):
        receivers.authenticate("github", tampered, SECRET)
    with pytest.raises(Unauthorized, match="missing x-hub-signature-256"):
        receivers.authenticate("github", _request(body), SECRET)
    with pytest.raises(Unauthorized, match="does not match"):
        receivers.authenticate("generic", _signed(body, "X-Signature-256"), "other")


@pytest.mark.parametrize(("kind", "good", "bad"), [
    ("distribution", {"headers": {"Authorization": f"Bearer {SECRET}"}},
     {"headers": {"Authorization": "Bearer wrong"}}),
    ("harbor", {"headers": {"Authorization": SECRET}}, {"headers": {}}),
    ("gitlab", {"headers": {"X-Gitlab-Token": SECRET}},
     {"headers": {"Authorization": f"Bearer {SECRET}"}}),
    ("dockerhub", {"query": {"token": SECRET}}, {"query": {"token": SECRET + "x"}}),
    ("quay", {"query": {"token": SECRET}}, {}),
])
def test_token_receivers_compare_the_shared_secret(kind: str, good: dict[str, Any],
                                                   bad: dict[str, Any]) -> None:
    receivers.authenticate(kind, _request({}, **good), SECRET)
    with pytest.raises(Unauthorized):
        receivers.authenticate(kind, _request({}, **bad), SECRET)


def test_every_kind_in_the_config_model_has_a_parser() -> None:
    from typing import get_args

    from image_bot.config import models
    assert set(get_args(models.ReceiverKind)) == set(receivers.KINDS)


@pytest.mark.parametrize("kind", sorted(receivers.KINDS))
def test_json_nested_deeper_than_the_recursion_limit_is_malformed(kind: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    headers = {"X-GitHub-Event": "package", "X-Gitlab-Event": "Push Hook"}
    with pytest.raises(MalformedPayload, match="body is JSON nested too deeply"):
        receivers.parse(kind, _request(deep, headers))


def _timestamped(body: Any, stamp: str, secret: str = SECRET) -> Request:
    raw = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + raw,
                                     hashlib.sha256).hexdigest()
    return _request(raw, {"X-Signature-256": signature, "X-Signature-Timestamp": stamp})


def test_a_generic_timestamp_is_signed_with_the_body() -> None:
    body = {"image": "reg.local/web", "tag": "1"}
    good = _timestamped(body, "1800000000")
    receivers.authenticate("generic", good, SECRET)
    assert receivers.signed_time("generic", good) == 1800000000.0
    moved = Request({**good.headers, "x-signature-timestamp": "1800000999"}, {}, good.body)
    with pytest.raises(Unauthorized, match="signature does not match"):
        receivers.authenticate("generic", moved, SECRET)  # a fresh time on an old request
    body_only = _signed(body, "X-Signature-256", **{"X-Signature-Timestamp": "1800000000"})
    with pytest.raises(Unauthorized, match="signature does not match"):
        receivers.authenticate("generic", body_only, SECRET)
    with pytest.raises(Unauthorized, match="x-signature-timestamp: expected Unix seconds"):
        receivers.signed_time("generic", _timestamped(body, "yesterday"))


def test_replay_keys_exist_only_where_the_sender_signs_something_unique() -> None:
    body = {"image": "reg.local/web", "tag": "1"}
    github = _signed(body, **{"X-GitHub-Delivery": "72d3162e"})
    assert receivers.replay_key("github", github) == github.headers["x-hub-signature-256"]
    stamped = _timestamped(body, "1800000000")
    assert receivers.replay_key("generic", stamped) == stamped.headers["x-signature-256"]
    assert receivers.replay_key("generic", _signed(body, "X-Signature-256")) is None
    assert receivers.signed_time("generic", _signed(body, "X-Signature-256")) is None
    for kind in ("distribution", "dockerhub", "gitlab", "harbor", "quay"):
        assert receivers.replay_key(kind, _request(body, {"Authorization": SECRET})) is None
