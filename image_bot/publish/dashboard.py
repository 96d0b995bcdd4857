"""The dashboard issue of a repository (opt-in): one issue the bot keeps up to date.

It lists the updates that wait for their window (each with a box to approve it now), the
open pull requests, the ones held up, the declined versions and the failing policies. The
engine reads the ticked boxes at the start of a scan (:func:`read`) and gives the scan's
entries back at the end (:func:`write`), which edits the issue in place only when its text
changed. It never decides anything itself and never reads a registry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from image_bot import refs
from image_bot.publish import forges

LABEL = "image-bot-dashboard"
TITLE = "image-bot dashboard"
MARKER = "<!-- image-bot:dashboard -->"
_APPROVE = re.compile(r"^\s*[-*] \[[xX]\] <!-- image-bot:approve ([A-Za-z0-9._-]{1,253}) -->",
                      re.MULTILINE)
_CLEAR = re.compile(r"^\s*[-*] \[[xX]\] <!-- image-bot:undecline ([A-Za-z0-9._-]{1,253}) "
                    rf"({refs.TAG}) -->", re.MULTILINE)
MAX_ENTRIES = 200  # lines per section; the rest is counted
Section = Literal["waiting", "open", "held", "declined", "failing"]
HEADINGS: dict[Section, str] = {
    "waiting": "Waiting for their schedule window (tick to publish now)",
    "open": "Open pull requests",
    "held": "Held up (left alone until a human acts)",
    "declined": "Declined versions (not proposed again; tick to clear)",
    "failing": "Failing policies",
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the dashboard."""

    section: Section
    policy: str
    text: str  # Markdown, already safe (the engine's words and the bot's own values)
    tag: str | None = None  # declined entries that a box can clear
    ticked: bool = False  # keep a box ticked (a policy the scan did not cover)


@dataclass(frozen=True, slots=True)
class Board:
    """The dashboard as found: the issue (None: not created yet) and the approved policies."""

    issue: forges.Issue | None
    approved: frozenset[str]
    cleared: frozenset[tuple[str, str]] = frozenset()  # (policy, tag) whose "no" is lifted


def read(forge: forges.Forge) -> Board:
    """The bot's dashboard issue and the policies whose "publish now" box is ticked."""
    issue = next((i for i in forge.find_issues(LABEL) if MARKER in i.body), None)
    if issue is None:
        return Board(None, frozenset())
    return Board(issue, frozenset(_APPROVE.findall(issue.body)),
                 frozenset(_CLEAR.findall(issue.body)))


def render(repository: str, branch: str, entries: Sequence[Entry]) -> str:
    """The issue body: one section per kind of entry, then the hidden marker."""
    lines = [f"image-bot keeps this issue up to date with the updates of `{_code(repository)}` "
             f"(`{_code(branch)}`). Tick a box to publish a waiting update in the next "
             f"cycle, outside its window, or to let a declined version be proposed again.",
             ""]
    for section, heading in HEADINGS.items():
        found = [e for e in entries if e.section == section]
        lines += [f"## {heading}", ""]
        if not found:
            lines += ["None.", ""]
            continue
        for entry in found[:MAX_ENTRIES]:
            box, mark = "", "x" if entry.ticked else " "
            if section == "waiting":
                box = f"[{mark}] <!-- image-bot:approve {entry.policy} --> "
            elif entry.tag is not None:
                box = f"[{mark}] <!-- image-bot:undecline {entry.policy} {entry.tag} --> "
            lines.append(f"- {box}`{_code(entry.policy)}`: {entry.text}")
        if len(found) > MAX_ENTRIES:
            lines.append(f"- … and {len(found) - MAX_ENTRIES} more")
        lines.append("")
    return "\n".join([*lines, MARKER]) + "\n"


def write(forge: forges.Forge, board: Board, body: str) -> str:
    """Create the dashboard or edit it in place; returns what was done."""
    if board.issue is None:
        issue = forge.open_issue(TITLE, body, (LABEL,))
        return f"opened dashboard #{issue.number}"
    if board.issue.body == body:
        return f"dashboard #{board.issue.number} is up to date"
    forge.update_issue(board.issue, body=body)
    return f"updated dashboard #{board.issue.number}"


def _code(text: str) -> str:
    return text.replace("`", "'")[:300]
