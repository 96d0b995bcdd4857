"""`image-bot import flux|argocd FILE...`: other tools' objects → image-bot policies on stdout,
what could not be mapped on stderr (reads the files only; writes nothing).

The conversion itself is image_bot.config.importing; this module reads the files (within the
size cap) and prints.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from ruamel.yaml.error import YAMLError

from image_bot import checkout
from image_bot.cli import errors
from image_bot.config import importing
from image_bot.config.yamlio import YAML
from image_bot.errors import ConfigError

_FILES = click.argument("files", nargs=-1, required=True,
                        type=click.Path(exists=True, dir_okay=False, path_type=Path))


@click.group(name="import")
def import_group() -> None:
    """Convert Flux or Argo CD Image Updater objects into image-bot policies.

    \b
    Policies go to stdout (YAML, one document each), every setting that could not be mapped
    to stderr, one line each, naming the file and the object:
      image-bot import flux flux-system/image-automation.yaml > policies/imported.yaml
      image-bot import argocd apps/*.yaml > policies/imported.yaml
    Exit codes: 0 at least one policy written, 1 none, 2 a file does not read as YAML.
    """


@import_group.command(name="flux")
@_FILES
def flux(files: tuple[Path, ...]) -> int:
    """ImageRepository, ImagePolicy and ImageUpdateAutomation objects → policies."""
    return _convert(files, importing.from_flux)


@import_group.command(name="argocd")
@_FILES
def argocd(files: tuple[Path, ...]) -> int:
    """Applications with argocd-image-updater.argoproj.io annotations (v0.x) and ImageUpdater
    resources (v1.x) → policies.

    \b
    One policy per image. An ImageUpdater names Applications by namePattern only: give the
    Applications in the same run and the policies get the source paths of those it matches,
    otherwise a note says to set spec.paths:
      image-bot import argocd argocd/image-updaters.yaml apps/*.yaml
    Settings without an equivalent are named by key path on stderr
    (e.g. spec.applicationRefs[0].images[1].manifestTargets.plugin).
    See docs/migrating-from-argocd-image-updater.md.
    """
    return _convert(files, importing.from_argocd)


def _convert(files: tuple[Path, ...],
             convert: Callable[[list[importing.Source]], importing.Converted]) -> int:
    converted = convert(_sources(files))
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    text = io.StringIO()
    yaml.dump_all(converted.policies, text)
    click.echo(text.getvalue(), nl=False)
    for note in converted.notes:
        click.echo(f"not mapped: {note}", err=True)
    click.echo(f"{len(converted.policies)} polic{'y' if len(converted.policies) == 1 else 'ies'}"
               f", {len(converted.notes)} setting(s) not mapped", err=True)
    return errors.EXIT_OK if converted.policies else errors.EXIT_FAILED


def _sources(files: tuple[Path, ...]) -> list[importing.Source]:
    sources: list[importing.Source] = []
    for path in files:
        with path.open("rb") as handle:
            data = handle.read(checkout.DEFAULT_MAX_FILE_BYTES + 1)
        if len(data) > checkout.DEFAULT_MAX_FILE_BYTES:
            raise ConfigError(f"{path}: larger than {checkout.DEFAULT_MAX_FILE_BYTES} bytes")
        try:
            documents: list[Any] = list(YAML(typ="safe", pure=True).load_all(
                data.decode("utf-8-sig")))
        except (YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: does not read as YAML ({type(exc).__name__})") from None
        sources += [importing.Source(str(path), index, document)
                    for index, document in enumerate(documents, start=1)
                    if document is not None]
        if len(sources) > importing.MAX_DOCUMENTS:
            raise ConfigError(f"more than {importing.MAX_DOCUMENTS} documents")
    return sources
