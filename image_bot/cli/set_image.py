"""`image-bot set-image`: point references at a given ref by hand; no registry, Git or state.

Parses the PATH... IMAGE=REF arguments and hands them to image_bot.update.setting, which edits
(or, with --dry-run, only diffs) the files.
"""

from __future__ import annotations

from pathlib import Path

import click

from image_bot import refs
from image_bot.cli import errors, options, render
from image_bot.update import setting


@click.command(name="set-image")
@click.argument("arguments", nargs=-1, required=True, metavar="PATH... IMAGE=REF...")
@click.option("--dry-run", is_flag=True, help="Change nothing; print the unified diff.")
@click.option("--allow-none", is_flag=True,
              help="Exit 0 even when an IMAGE=REF matches no reference under the PATHs.")
@options.as_json
def set_image(arguments: tuple[str, ...], dry_run: bool, allow_none: bool,
              as_json: bool) -> int:
    """Point every reference to IMAGE under PATH (files or folders) at REF.

    \b
    REF is repo:tag, repo@sha256:…, repo:tag@sha256:…, or a bare TAG (same repository):
      image-bot set-image deploy/ ghcr.io/acme/web=1.4.2
      image-bot set-image values.yaml nginx=nginx:1.27@sha256:0123…
    References are `image:` values, Helm image maps, kustomize `images:` and Compose
    services (see docs/references.md). Only the value's bytes change; every edit is
    re-read before the file is replaced. Exits 0 when it ran (even if nothing changed:
    the references are already at REF), 1 when a file could not be edited safely (it is
    left untouched) or an IMAGE=REF matched no reference at all (a typo in CI must not
    "succeed"; --allow-none accepts it), 2 on bad arguments.
    """
    paths, assignments = split_arguments(arguments)
    outcome = setting.set_images(Path.cwd(), paths, assignments, write=not dry_run)
    render.set_image(outcome, dry_run=dry_run, as_json=as_json, allow_none=allow_none)
    failed = outcome.refused or (outcome.unmatched and not allow_none)
    return errors.EXIT_FAILED if failed else errors.EXIT_OK


def split_arguments(
        arguments: tuple[str, ...]) -> tuple[list[Path], list[setting.Assignment]]:
    """Existing files and folders are PATHs; the other ``IMAGE=REF`` arguments assignments."""
    paths: list[Path] = []
    assignments: list[setting.Assignment] = []
    for argument in arguments:
        if "=" in argument and not Path(argument).exists():
            try:
                assignments.append(setting.parse_assignment(argument))
            except setting.InvalidAssignment as exc:
                raise click.UsageError(str(exc)) from None
        elif Path(argument).exists():
            paths.append(Path(argument))
        elif _looks_like_image_tag(argument):
            image, _, tag = argument.rpartition(":")
            raise click.UsageError(f"{argument!r}: no such file or folder; to set an image, "
                                   f"write IMAGE=REF, e.g. {image}={tag}")
        else:
            raise click.UsageError(f"{argument!r}: no such file or folder")
    if not paths or not assignments:
        raise click.UsageError("give at least one PATH and one IMAGE=REF")
    return paths, assignments


def _looks_like_image_tag(argument: str) -> bool:
    """``IMAGE:TAG`` (the ``=`` forgotten): a reference with a tag that is no path."""
    try:
        return refs.parse(argument).tag is not None
    except refs.InvalidReference:
        return False
