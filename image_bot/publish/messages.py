"""Commit messages (sandboxed Jinja2: user templates cannot reach Python) and PR bodies."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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


# --- pull-request bodies ------------------------------------------------------------------

_MARKER = re.compile(r"<!-- image-bot:proposal (\{.*?\}) -->", re.DOTALL)
_SAFE_URL = re.compile(r"https?://[^\s()<>\[\]`|]+")  # a label is untrusted text
WITHDRAWN = "<!-- image-bot:withdrawn -->"
HUMAN_NOTICE = "<!-- image-bot:human-commits -->"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the PR table: an image moving from ``old`` to ``new``."""

    policy: str
    image: str
    old: str | None
    new: str
    digest: str | None = None
    created: datetime | None = None
    source: str | None = None
    files: tuple[str, ...] = ()


def pr_body(rows: Sequence[Row], *, now: datetime, intro: str = "") -> str:
    """Markdown table of the proposed updates, plus a hidden marker the bot reads back."""
    lines = [intro.strip() or "image-bot proposes these image updates:", "",
             "| Image | Update | Digest | Age | Source | Files |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        digest = f"`{row.digest[:19]}…`" if row.digest else "–"
        source = f"[source]({row.source})" if _SAFE_URL.fullmatch(row.source or "") else "–"
        files = "<br>".join(f"`{f}`" for f in row.files) or "–"
        lines.append(f"| `{row.image}` | `{row.old or '?'}` → `{row.new}` | {digest} | "
                     f"{_age(row.created, now)} | {source} | {files} |")
    updates = sorted({(r.policy, r.image, r.new) for r in rows})
    marker = json.dumps({"updates": [list(u) for u in updates]}, separators=(",", ":"))
    lines += ["", "Merging deploys it. Closing this without merging declines these versions: "
              "image-bot will not propose them again, only newer ones.", "",
              f"<!-- image-bot:proposal {marker} -->"]
    return "\n".join(lines) + "\n"


def proposed(body: str) -> list[tuple[str, str, str]]:
    """The ``(policy, image, tag)`` updates recorded in a body by :func:`pr_body`."""
    match = _MARKER.search(body or "")
    if not match:
        return []
    try:
        data = json.loads(match.group(1))
        return [(str(p), str(i), str(t)) for p, i, t in data.get("updates", [])]
    except (ValueError, TypeError):
        return []


def _age(created: datetime | None, now: datetime) -> str:
    if created is None:
        return "–"
    seconds = max(0.0, (now - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
