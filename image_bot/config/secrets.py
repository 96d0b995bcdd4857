"""The one secret reader: a value from an environment variable or a file (never logged).

Used for repository passwords, forge tokens, registry passwords and webhook secrets, so
every secret in the bot config follows the same ``*_env`` / ``*_file`` convention and
the same error messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from image_bot.errors import ConfigError

MAX_BYTES = 64 * 1024  # a secret file larger than this is a mistake (a key bundle, a log)


def read(env: str | None, file: os.PathLike[str] | str | None, *, key: str,
         environ: Mapping[str, str] | None = None) -> str | None:
    """The secret in ``$env`` or in ``file`` (whitespace stripped); None when neither is set.

    ``key`` names the setting in errors (``forge.token`` → ``forge.token_env: …``);
    ``environ`` replaces ``os.environ`` (tests, a daemon's frozen environment).
    """
    if env:
        value = (os.environ if environ is None else environ).get(env, "").strip()
        if not value:
            raise ConfigError(f"{key}_env: environment variable {env} is not set or empty")
        return value
    if file:
        return _from_file(Path(file), key=key)
    return None


def _from_file(path: Path, *, key: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{key}_file: cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{key}_file: {path} is larger than {MAX_BYTES} bytes")
    value = data.decode("utf-8", errors="replace").strip()
    if not value:
        raise ConfigError(f"{key}_file: {path} is empty")
    return value
