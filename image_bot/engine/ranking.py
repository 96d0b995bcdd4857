"""``image-bot test``: rank an image's tags with a policy built from flags (composes stages).

Tags come from the registry (through ``RegistryClient``) or from an offline list, one tag a
line, optionally ``TAG<TAB>RFC3339-created[<TAB>sha256:digest]``. The policy stage does the
ranking; this module only gathers its input and turns its :class:`Decision` into output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pydantic

from image_bot import refs
from image_bot.config import models
from image_bot.errors import ConfigError, PermanentError
from image_bot.policy import strategies
from image_bot.registry import client as registry


def build_policy(image: refs.ImageRef, fields: dict[str, Any]) -> strategies.Policy:
    """A policy for ``image`` from spec fields (kebab-case keys), or :class:`ConfigError`."""
    try:
        spec = models.PolicySpec.model_validate({"image": image.name, **fields})
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{key}: {first['msg'].removeprefix('Value error, ')}") from None
    try:
        return strategies.build(spec)
    except strategies.InvalidSpec as exc:
        raise ConfigError(f"{exc.key.removeprefix('spec.')}: {exc}") from None


def read_tags(text: str, source: str) -> list[strategies.Candidate]:
    """Parse an offline tag list; a bad line is a :class:`ConfigError` naming it."""
    candidates = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        tag, *rest = line.split("\t")
        if not refs.is_tag(tag) or len(rest) > 2:
            raise ConfigError(f"{where}: expected TAG[<TAB>CREATED[<TAB>DIGEST]], got {line!r}")
        created = _created(rest[0].strip(), where) if rest else None
        digest = rest[1].strip() if len(rest) > 1 else None
        if digest is not None and not refs.is_digest(digest):
            raise ConfigError(f"{where}: {digest!r} is not a digest (sha256:…)")
        candidates.append(strategies.Candidate(tag.strip(), created=created, digest=digest))
    return candidates


def _created(text: str, where: str) -> datetime | None:
    if not text or text == "-":
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not an RFC 3339 time") from None
    if value.tzinfo is None:
        raise ConfigError(f"{where}: {text!r} has no time zone (add Z or +00:00)")
    return value


async def fetch_tags(image: refs.ImageRef, policy: strategies.Policy,
                     registries: list[models.RegistryConfig], *,
                     on_request: registry.OnRequest | None = None,
                     ) -> list[str | strategies.Candidate]:
    """The registry's tags for ``image`` (settings from the bot config, else defaults)."""
    async with registry.RegistryClient({r.host: r for r in registries},
                                       on_request=on_request) as client:
        return await registry_candidates(client, image, policy)


async def registry_candidates(client: registry.RegistryClient, image: refs.ImageRef,
                              policy: strategies.Policy) -> list[str | strategies.Candidate]:
    """The registry's tags, with the metadata the policy needs for the tags it would keep."""
    return await with_metadata(client, image, policy, await client.list_tags(image))


async def with_metadata(client: registry.RegistryClient, image: refs.ImageRef,
                        policy: strategies.Policy,
                        tags: Sequence[str]) -> list[str | strategies.Candidate]:
    """``tags`` with digest, creation time and platforms filled in where the policy ``needs``
    them, and only for the tags it would keep (``worth_fetching``).

    A digest alone costs one ``HEAD``; anything else reads the manifest and config through
    ``image_info`` (cached by digest). A tag the registry cannot describe stays bare, so
    the policy excludes it with a reason; an unreachable registry fails the whole call.
    """
    if not policy.needs:
        return list(tags)
    names = policy.worth_fetching(tags)
    if policy.needs == {"digest"}:
        digests = await asyncio.gather(*(client.digest(image, tag) for tag in names))
        found = {tag: strategies.Candidate(tag, digest=d)
                 for tag, d in zip(names, digests, strict=True)}
    else:
        described = await asyncio.gather(*(_describe(client, image, tag) for tag in names))
        found = {c.tag: c for c in described}
    return [found.get(tag, tag) for tag in tags]


async def _describe(client: registry.RegistryClient, image: refs.ImageRef,
                    tag: str) -> strategies.Candidate:
    try:
        info = await client.image_info(image, tag)
    except PermanentError:
        return strategies.Candidate(tag)
    return strategies.Candidate(tag, created=info.created, digest=info.digest,
                                platforms=info.platforms)


def to_json(decision: strategies.Decision, *, explain: bool) -> dict[str, Any]:
    """``{"selected", "candidates", "reason"}``; ``explain`` adds the runner-up and exclusions."""
    data: dict[str, Any] = {"selected": written(decision), "candidates": list(decision.ranked),
                            "reason": decision.reason}
    if explain:
        data["update"] = decision.tag
        data["runner_up"] = decision.runner_up
        data["excluded"] = [{"tag": e.tag, "rule": e.rule, "detail": e.detail}
                            for e in decision.excluded]
    return data


def written(decision: strategies.Decision) -> str | None:
    """The winner as it would be written (``tag@digest`` for the digest strategy)."""
    if decision.winner and decision.digest:
        return f"{decision.winner}@{decision.digest}"
    return decision.winner


def explanation(decision: strategies.Decision, *, limit: int = 20) -> list[str]:
    """Human lines: the ranking (best first), the runner-up and why each tag was excluded."""
    lines = [f"reason: {decision.reason}"]
    if decision.winner:
        lines.append(f"winner: {decision.winner}")
    if decision.runner_up:
        lines.append(f"runner-up: {decision.runner_up}")
    if decision.ranked:
        lines.append(f"ranked ({len(decision.ranked)}, best first):")
        lines += [f"  {i}. {tag}" for i, tag in enumerate(decision.ranked[:limit], start=1)]
        if len(decision.ranked) > limit:
            lines.append(f"  … {len(decision.ranked) - limit} more")
    if decision.excluded:
        lines.append(f"excluded ({len(decision.excluded)}):")
        width = max(len(e.tag) for e in decision.excluded)
        lines += [f"  {e.tag:<{width}}  {e.rule}: {e.detail}" for e in decision.excluded]
    return lines
