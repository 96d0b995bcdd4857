"""`image-bot validate --config`: each repository's policies, fetched and cross-checked against
the bot config (never edits, never pushes; clones into a temporary state dir).

Split from image_bot.cli.validate so that validating files alone stays import-light.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from image_bot import checkout as checkouts
from image_bot.config import loading, models
from image_bot.engine import context, cycle
from image_bot.errors import ConfigError, ImageBotError
from image_bot.publish import workspace as workspaces
from image_bot.update import detecting

_MARKED = (b"$imagepolicy", b'"image-bot"')


def check(config: models.BotConfig) -> tuple[int, list[str]]:
    """(valid policies, problems) over every repository of ``config``."""
    with tempfile.TemporaryDirectory(prefix="image-bot-validate-") as state_dir:
        scratch = config.model_copy(update={"state_dir": Path(state_dir)})
        return asyncio.run(_check_all(scratch))


async def _check_all(config: models.BotConfig) -> tuple[int, list[str]]:
    count, problems = 0, []
    async with context.Engine.open(config) as engine:
        # 1. every repository first: a promotion may name a policy of another one
        opened: list[tuple[models.RepositoryConfig, cycle.Checkout | ImageBotError]] = []
        for repo in config.repositories:
            try:
                opened.append((repo, await cycle.open_repository(engine, repo)))
            except ImageBotError as exc:
                opened.append((repo, exc))
        names = {name for _, checkout in opened if not isinstance(checkout, ImageBotError)
                 for name in _names(checkout.policies)}
        # 2. each one checked against the config and the others
        for repo, checkout in opened:
            checked, found = await _check_repository(engine, repo, checkout, names)
            count += checked
            problems += found
    return count, problems


def _names(policy_set: loading.PolicySet) -> set[str]:
    """The policies of a set, broken ones included (a broken policy is still a policy)."""
    return {p.policy.name for p in policy_set.policies} | {
        e.policy for e in policy_set.errors if isinstance(e, loading.PolicyInvalid)}


async def _check_repository(engine: context.Engine, repo: models.RepositoryConfig,
                            opened: cycle.Checkout | ImageBotError,
                            names: set[str]) -> tuple[int, list[str]]:
    name = workspaces.redact(repo.url)
    if isinstance(opened, ImageBotError):
        return 0, [f"repository {name}: {opened}"]
    policy_set = opened.policies
    problems = [f"repository {name}: {error}" for error in policy_set.errors]
    count = 0
    for loaded in policy_set.policies:
        found = _policy_problems(loaded, repo, names)
        problems += [f"repository {name}: {problem}" for problem in found]
        count += not found
    known: list[tuple[str | None, str]] = [(p.policy.metadata.namespace, p.policy.name)
                                           for p in policy_set.policies]
    known += [(None, e.policy) for e in policy_set.errors  # broken, but it is a policy
              if isinstance(e, loading.PolicyInvalid)]
    problems += [f"repository {name}: {problem}" for problem in
                 await asyncio.to_thread(_stray_markers, opened.workspace.root, known,
                                         engine.config.limits.max_file_bytes)]
    return count, problems


def _policy_problems(loaded: loading.LoadedPolicy, repo: models.RepositoryConfig,
                     names: set[str]) -> list[str]:
    problems = []
    try:
        cycle.build_policy(loaded, repo.branch)
    except ConfigError as exc:
        problems.append(str(exc))
    if loaded.policy.spec.publish.mode == "pull-request" and repo.forge is None:
        problems.append(f"{loaded.where('spec.publish.mode')}: pull-request, but this "
                        f"repository has no forge (set repositories[].forge in the bot config)")
    promote = loaded.policy.spec.select.promote
    if promote is not None and promote.from_ not in names:  # it would wait forever
        problems.append(f"{loaded.where('spec.select.promote.from')}: no policy named "
                        f"{promote.from_!r} in any repository of the bot config")
    return problems


def _stray_markers(root: Path, known: list[tuple[str | None, str]],
                   limit: int) -> list[str]:
    """Markers naming no policy of the repository (Flux would skip them silently)."""
    index = checkouts.Index(root, max_file_bytes=limit)
    problems = []
    for path in index.files():
        try:
            data = index.read(path)
        except ImageBotError:
            continue  # the scan of a policy reports unreadable files
        if not any(needle in data for needle in _MARKED):
            continue
        text = data.decode("utf-8", errors="replace")
        for line, setter, namespace, policy in detecting.markers_in(text):
            if not any(name == policy and (namespace is None or ns is None or ns == namespace)
                       for ns, name in known):
                problems.append(f"{index.shown(path)}:{line}: marker {setter!r} names no "
                                f"policy of this repository")
    return problems
