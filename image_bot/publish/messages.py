"""Commit messages from sandboxed Jinja2 templates (user templates cannot reach Python)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from image_bot.errors import ConfigError

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                            keep_trailing_newline=False)


def render(template: str, context: Mapping[str, Any], *, where: str = "publish.message") -> str:
    """Render ``template`` with ``context``; a bad template is a :class:`ConfigError`."""
    try:
        text = _ENV.from_string(template).render(**context)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{where}: template error: {exc}") from None
    text = text.strip()
    if not text:
        raise ConfigError(f"{where}: the template rendered an empty message")
    return text + "\n"
