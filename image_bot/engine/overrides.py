"""An operator's decision for one policy, in place of the policy's own choice (engine values).

``image-bot promote`` and ``image-bot rollback`` hand an :class:`Override` to
``engine.cycle.run_repository``: the policy writes ``tag`` instead of selecting one, and the
publication (commit or pull request) says who asked and why, in its message and trailers.
Pure values: nothing here reads Git, a registry or the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from image_bot import refs
from image_bot.errors import UsageError

Action = Literal["promote", "rollback"]
OPERATOR_TRAILER = "Image-Bot-Operator"
ACTOR_TRAILER = "Image-Bot-Actor"
REASON_TRAILER = "Image-Bot-Reason"
_REASON_CHARS = 300


@dataclass(frozen=True, slots=True)
class Override:
    """Write ``tag`` for ``policy``: ``actor`` asked for it, for ``reason`` (one line)."""

    action: Action
    policy: str
    tag: str
    actor: str
    reason: str

    @classmethod
    def of(cls, action: Action, policy: str, tag: str, *, actor: str, reason: str) -> Override:
        """A checked override: a valid tag, a reason and an actor on one line each."""
        if not refs.is_tag(tag):
            raise UsageError(f"{tag!r} is not an image tag")
        reason, actor = _one_line(reason), _one_line(actor)
        if not reason:
            raise UsageError(f"{action} needs a reason (--reason TEXT): it is recorded in "
                             f"the commit and the event log")
        if not actor:
            raise UsageError("who is asking is unknown: pass --actor NAME")
        return cls(action, policy, tag, actor, reason[:_REASON_CHARS])

    @property
    def note(self) -> str:
        """What the commit message and the pull request say about it, for people."""
        if self.action == "promote":
            return (f"Promoted to {self.tag} by {self.actor}: {self.reason}. The policy's own "
                    f"checks (range, filters, min-age, promotion soak) were skipped.")
        return (f"Rolled back to {self.tag} by {self.actor}: {self.reason}. The tag it "
                f"replaces is declined: image-bot will not propose it again.")

    @property
    def decline_reason(self) -> str:
        """Why a rollback declines the tag it replaced (the state's declined versions)."""
        return f"rolled back to {self.tag} by {self.actor}: {self.reason}"[:500]

    @property
    def trailers(self) -> tuple[str, ...]:
        """Trailer lines recording who wrote which tag, and why."""
        return (f"{OPERATOR_TRAILER}: {self.action} {self.policy} {self.tag}",
                f"{ACTOR_TRAILER}: {self.actor}", f"{REASON_TRAILER}: {self.reason}")


def from_message(message: str) -> Override | None:
    """The override a commit message records in its trailers (:attr:`Override.trailers`)."""
    values: dict[str, str] = {}
    for line in message.splitlines():
        key, _, value = line.partition(": ")
        if key in (OPERATOR_TRAILER, ACTOR_TRAILER, REASON_TRAILER):
            values.setdefault(key, value.strip())
    match values.get(OPERATOR_TRAILER, "").split():
        case ["promote" | "rollback" as action, policy, tag]:
            return Override("promote" if action == "promote" else "rollback", policy, tag,
                            values.get(ACTOR_TRAILER, "?"), values.get(REASON_TRAILER, ""))
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())
