"""`image-bot test`: rank an image's tags with a policy given as flags; changes nothing.

Builds the policy from flags (the same models and rules as an ImagePolicy), reads tags from the
registry or a file, prints the decision through image_bot.cli.render. A usage or policy error
exits 2, a registry failure 1 (image_bot.cli.errors maps them).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from image_bot import refs
from image_bot.cli import errors, options, render
from image_bot.config import loading
from image_bot.engine import ranking
from image_bot.policy import strategies

_STRATEGY_FLAGS = {"semver_range": "--semver", "numerical": "--numerical",
                   "alphabetical": "--alphabetical", "newest_build": "--newest-build",
                   "digest_tag": "--digest"}


@click.command("test", context_settings={"max_content_width": 100})
@click.argument("image")
@click.option("--semver", "semver_range", metavar="RANGE",
              help="Highest version in an npm-style range: '^1.2', '>=1.2 <2', '~1.2', '1.x', "
                   "'1.2 - 1.4', '<1 || >=3'. The default strategy (range '*').")
@click.option("--prerelease", is_flag=True, help="Let pre-releases (1.0.0-rc.1) qualify.")
@click.option("--numerical", is_flag=True, help="Order the (extracted) value as a number.")
@click.option("--alphabetical", is_flag=True, help="Order the (extracted) value as text.")
@click.option("--order", type=click.Choice(["asc", "desc"]),
              help="With --numerical/--alphabetical: asc picks the highest (default), "
                   "desc the lowest.")
@click.option("--newest-build", is_flag=True,
              help="Newest image creation time wins (ties: the highest tag name).")
@click.option("--digest", "digest_tag", metavar="TAG",
              help="Follow one mutable tag (latest, stable) and print TAG@sha256:….")
@click.option("--pattern", metavar="RE", help="Python regex a tag must match (unanchored).")
@click.option("--extract", metavar="TPL",
              help="What to order, from the pattern's groups: '$1', '$name', '${name}'.")
@click.option("--exclude", multiple=True, metavar="PAT",
              help="Skip tags matching a glob ('*-debug') or 'regex:RE'. Repeatable.")
@click.option("--variant", metavar="V",
              help="Variant family to keep: 'alpine', 'slim', 'none' or 'any' (default: the "
                   "current tag's family).")
@click.option("--precision", metavar="N|any",
              help="Numeric components a tag must have: 1-4, 'any' (default: as many as "
                   "the current tag).")
@click.option("--max-bump", type=click.Choice(["major", "minor", "patch"]),
              help="Largest step away from --current (minor never crosses a major).")
@click.option("--allow-downgrade", is_flag=True, help="Allow a tag lower than --current.")
@click.option("--min-age", metavar="DURATION",
              help="A tag must be at least this old ('30m', '2d'); needs creation times.")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH",
              help="A tag must offer this platform (repeatable); needs platform lists.")
@click.option("--current", metavar="TAG",
              help="The tag deployed now (default: the tag in IMAGE, if any).")
@click.option("--tags-from", type=click.File("r", encoding="utf-8"), metavar="FILE|-",
              help="Rank these tags instead of the registry's: one per line, optionally "
                   "TAG<TAB>RFC3339-created[<TAB>digest].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Bot config file, for registry settings (insecure, credentials).")
@click.option("--insecure", is_flag=True,
              help="Reach the image's registry over plain HTTP (a local registry:2).")
@options.as_json
@click.option("--explain", is_flag=True,
              help="Also show the ranking, the runner-up and the rule that excluded each tag.")
@click.option("-v", "--verbose", is_flag=True,
              help="Print each registry request to stderr: method, URL (no secrets), status, "
                   "time.")
def test_command(image: str, **flags: Any) -> int:
    """Rank the tags of IMAGE with a policy given as flags and print the chosen tag.

    \b
    Examples:
      image-bot test nginx:1.25.3-alpine3.19 --explain
      image-bot test ghcr.io/acme/app --semver '^1.2' --current 1.2.0
      printf '1.0.0-rc9\\n1.0.0-rc10\\n' | image-bot test app --prerelease --tags-from -

    The chosen tag goes to stdout (nothing when no tag qualifies) and the reason to
    stderr. Exit codes: 0 it ran (even if nothing qualifies); 1 the registry failed;
    2 a usage or policy error. Rules and examples: docs/policies.md.
    """
    as_json, explain = flags.pop("as_json"), flags.pop("explain")
    verbose = flags.pop("verbose")
    ref = refs.parse(image)
    policy = ranking.build_policy(ref, _spec_from_flags(flags))
    current = flags["current"] or ref.tag
    if flags["tags_from"] is not None:
        source = "-" if flags["tags_from"].name == "<stdin>" else flags["tags_from"].name
        tags = list(ranking.read_tags(flags["tags_from"].read(), source))
    else:
        tags = asyncio.run(_registry_tags(ref, policy, flags["config_path"], verbose=verbose,
                                          insecure=flags["insecure"]))
    decision = policy.select(tags, current=current, current_digest=ref.digest,
                             now=datetime.now(UTC))
    render.decision(decision, as_json=as_json, explain=explain)
    return errors.EXIT_OK


def _spec_from_flags(flags: dict[str, Any]) -> dict[str, Any]:
    chosen = [name for name in _STRATEGY_FLAGS if flags[name]]
    if len(chosen) > 1:
        shown = " and ".join(_STRATEGY_FLAGS[name] for name in chosen)
        raise click.UsageError(f"choose one strategy, not {shown}")
    if flags["order"] and not (flags["numerical"] or flags["alphabetical"]):
        raise click.UsageError("--order goes with --numerical or --alphabetical")
    order = {"order": flags["order"] or "asc"}
    select: dict[str, Any] = {"semver": {"range": flags["semver_range"] or "*",
                                         "prerelease": flags["prerelease"]}}
    if flags["numerical"]:
        select = {"numerical": order}
    elif flags["alphabetical"]:
        select = {"alphabetical": order}
    elif flags["newest_build"]:
        select = {"newest-build": {}}
    elif flags["digest_tag"]:
        select = {"digest": {"tag": flags["digest_tag"]}}
    spec: dict[str, Any] = {"select": select, "allow-downgrade": flags["allow_downgrade"],
                            "platforms": list(flags["platforms"])}
    filters = {"pattern": flags["pattern"], "extract": flags["extract"],
               "exclude": list(flags["exclude"])}
    spec["filter"] = {k: v for k, v in filters.items() if v}
    precision = flags["precision"]
    optional = {"variant": flags["variant"], "max-bump": flags["max_bump"],
                "min-age": flags["min_age"],
                "precision": int(precision) if precision and precision.isdigit() else precision}
    spec.update({k: v for k, v in optional.items() if v is not None})
    return spec


async def _registry_tags(ref: refs.ImageRef, policy: strategies.Policy,
                         config_path: Path | None, *, verbose: bool = False,
                         insecure: bool = False) -> list[Any]:
    settings = loading.load_bot_config(config_path).registries if config_path else []
    if insecure:  # this host over plain HTTP, keeping what the config says about it
        from image_bot.config import models

        known = [r for r in settings if refs.normalise_host(r.host) == ref.host]
        settings = [r for r in settings if r not in known] + (
            [r.model_copy(update={"insecure": True}) for r in known]
            or [models.RegistryConfig(host=ref.host, insecure=True)])
    on_request = render.request if verbose else None
    return await ranking.fetch_tags(ref.with_tag(None), policy, settings,
                                    on_request=on_request)
