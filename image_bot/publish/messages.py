"""Commit messages (sandboxed Jinja2: user templates cannot reach Python) and PR bodies."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from image_bot.errors import ConfigError

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment


@functools.cache
def _environment() -> SandboxedEnvironment:
    """Jinja2, imported on the first message (~17 ms: `plan` writes none)."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                keep_trailing_newline=False)


def render(template: str, context: Mapping[str, Any], *, where: str = "publish.message") -> str:
    """Render ``template`` with ``context``; a bad template is a :class:`ConfigError`."""
    import jinja2

    try:
        text = _environment().from_string(template).render(**context)
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
REBASE = "<!-- image-bot:rebase -->"
CLEARED = "<!-- image-bot:decline-cleared -->"  # a human took this PR's "no" back
_REBASE_BOX = re.compile(r"^\s*[-*] \[(?P<mark>[ xX])\] " + re.escape(REBASE), re.MULTILINE)
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
    update_type: str = ""  # major, minor, patch, pre-release, digest, other (the engine's)
    platforms: tuple[str, ...] = ()
    revision: str | None = None  # org.opencontainers.image.revision of the new image
    old_revision: str | None = None  # ... and of the image written before
    version: str | None = None  # org.opencontainers.image.version of the new image
    compare: str | None = None  # old → new revisions on the source's forge (publishing's)
    policy_file: str | None = None  # where the policy is read on the forge (publishing's)
    notes: str | None = None  # the sanitised release notes (publishing's)
    promotion: str | None = None  # why a promoted tag may ship (the engine's, stages)
    note: str = ""  # why a person chose this update (an operator's promote or rollback)
    trailers: tuple[str, ...] = ()  # commit trailer lines recording who and why


@dataclass(frozen=True, slots=True)
class Stats:
    """The files and lines the proposal changes (from the update's diffs)."""

    files: int
    added: int
    removed: int


def pr_body(rows: Sequence[Row], *, now: datetime, intro: str = "",
            stats: Stats | None = None) -> str:
    """Markdown table of the proposed updates, what changed upstream (compare links, release
    notes), plus a hidden marker the bot reads back."""
    lines = [intro.strip() or "image-bot proposes these image updates:", "",
             "| Image | Update | Digest | Type | Age | Platforms | Source | Files |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        digest = f"`{row.digest[:19]}…`" if row.digest else "–"
        source = _link("source", row.source)
        if row.compare:
            source = _link("changes", row.compare)
        files = "<br>".join(f"`{f}`" for f in row.files) or "–"
        platforms = "<br>".join(f"`{p}`" for p in row.platforms) or "–"
        lines.append(f"| `{row.image}` | `{row.old or '?'}` → `{row.new}` | {digest} | "
                     f"{row.update_type or '–'} | {_age(row.created, now)} | "
                     f"{platforms} | {source} | {files} |")
    if stats is not None:
        lines += ["", f"{stats.files} file(s) changed, +{stats.added} −{stats.removed} lines."]
    promoted = [f"Promotion: {_plain(r.promotion)}." for r in rows if r.promotion]
    if promoted:
        lines += ["", *promoted]
    for note in dict.fromkeys(row.note for row in rows if row.note):
        lines += ["", f"> {_plain(note, 600)}"]
    policies = sorted({(r.policy, r.policy_file) for r in rows if r.policy_file})
    if policies:
        lines += ["", "Policy: " + ", ".join(_link(f"`{p}`", url) for p, url in policies)]
    for row in rows:
        if row.notes:
            lines += ["", f"<details><summary>Release notes: {_plain(row.image)} "
                      f"{_plain(row.version or row.new)}</summary>", "", row.notes.strip(), "",
                      "</details>"]
    updates = sorted({(r.policy, r.image, r.new) for r in rows})
    marker = json.dumps({"updates": [list(u) for u in updates]}, separators=(",", ":"))
    lines += ["", "Merging deploys it. Closing this without merging declines these versions: "
              "image-bot will not propose them again, only newer ones.", "",
              f"- [ ] {REBASE} Check this box to rebuild this branch on the target's tip "
              "(retry) in the next cycle; commits not made by image-bot are discarded.", "",
              f"<!-- image-bot:proposal {marker} -->"]
    return "\n".join(lines) + "\n"


def rebase_requested(body: str) -> bool:
    """True when someone ticked the rebase/retry box of a body written by :func:`pr_body`."""
    match = _REBASE_BOX.search(body or "")
    return match is not None and match["mark"] in "xX"


def _link(text: str, url: str | None) -> str:
    return f"[{text}]({url})" if url and _SAFE_URL.fullmatch(url) else "–"


def _plain(text: str, limit: int = 200) -> str:
    return re.sub(r"[<>`\[\]|]", "", text)[:limit]


# --- release notes: untrusted Markdown from another repository ----------------------------

NOTES_LIMIT = 8000  # characters of one release's notes kept in a PR body
_HTML = re.compile(r"<!--.*?(?:-->|$)|</?[A-Za-z][^>]*>", re.DOTALL)
_MD_LINK = re.compile(r"(!?)\[([^\]\n]{0,500})\]\(([^)\s]{0,2000})[^)\n]{0,200}\)")
_BARE_URL = re.compile(r"(?<![(<\[])\b[a-z][a-z0-9+.-]*://[^\s)<>\]]+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w`])@(?=[A-Za-z0-9])")


def sanitised_notes(text: str, *, origin: str, limit: int = NOTES_LIMIT) -> str:
    """Release notes fit to quote in a PR: no HTML (comments included, so no marker can be
    smuggled in), no images, links only to ``origin`` (``https://host``; others keep their
    text), no @mentions that would notify people, at most ``limit`` characters."""
    host = origin
    text = text.replace("\r\n", "\n")[: limit * 4]
    text = _HTML.sub("", text)
    text = _MD_LINK.sub(lambda m: _kept_link(m, host), text)
    text = _BARE_URL.sub(lambda m: m.group(0) if _on_host(m.group(0), host)
                         else f"`{m.group(0)[:200]}`", text)
    text = _MENTION.sub("@\u200b", text)
    text = text.strip()
    if len(text) > limit:
        text = text[:limit].rsplit("\n", 1)[0] + "\n\n… (truncated)"
    return text


def _kept_link(match: re.Match[str], host: str) -> str:
    image, label, url = match.groups()
    if image or not _on_host(url, host):
        return label
    return f"[{label}]({url})"


def _on_host(url: str, origin: str) -> bool:
    found = re.fullmatch(r"(https?://[^/?#@\s]+)(?:[/?#][^\s]*)?", url)
    return found is not None and found.group(1).lower() == origin.lower()


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
