"""`image-bot validate`: policy files and the bot config checked, every problem listed.

With a PATH only it runs in pre-commit hooks, so it imports config loading and the policy
builder only: no registry, Git, Docker, HTTP or rich. With ``--config`` it also fetches each
repository (through the engine's workspace, cloned into a temporary state dir: never the
daemon's) and cross-checks its policies against the config: pull-request policies need a
forge, commit mode pushes to the repository's branch, markers must name a known policy.
"""

from __future__ import annotations

from pathlib import Path

import click

from image_bot.cli import errors, options, render
from image_bot.config import loading
from image_bot.errors import ConfigError
from image_bot.policy import strategies


@click.command()
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="IMAGE_BOT_CONFIG", show_envvar=True, help="Bot config file to check too.")
@options.as_json
def validate(path: Path | None, config_path: Path | None, as_json: bool) -> int:
    """Check policy files under PATH (a file or directory) and the bot config.

    Prints one line per problem, naming the file, the policy and the key.
    """
    if path is None and config_path is None:
        raise click.UsageError("give a PATH with policies, or --config, or both")
    problems: list[str] = []
    count = 0
    if config_path is not None:
        try:
            config = loading.load_bot_config(config_path)
        except ConfigError as exc:
            problems.append(str(exc))
        else:
            from image_bot.cli import validate_repositories  # Git and HTTP: only with --config

            checked, found = validate_repositories.check(config)
            count += checked
            problems += found
    if path is not None:
        try:
            policy_set = loading.load_policies(path)
        except ConfigError as exc:
            policy_set = loading.PolicySet((), (exc,))
        problems += [str(error) for error in policy_set.errors]
        for loaded in policy_set.policies:
            try:
                strategies.build_document(loaded)
                count += 1
            except ConfigError as exc:
                problems.append(str(exc))
    render.validation(count, problems, as_json=as_json)
    return errors.EXIT_FAILED if problems else errors.EXIT_OK

