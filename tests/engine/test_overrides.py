"""An operator's override: checked on the way in, written as trailers, read back from them."""

from __future__ import annotations

import pytest

from image_bot.engine import overrides
from image_bot.engine.overrides import Override
from image_bot.errors import UsageError


def test_trailers_round_trip_through_a_commit_message() -> None:
    made = Override.of("rollback", "web", "1.4.2", actor="alice",
                       reason="500s after 1.5.0\n  (INC-9)")
    message = "chore: update web\n\nbody\n\nImage-Bot-Update: web r.io/web 1.4.2\n" + \
        "\n".join(made.trailers) + "\n"

    assert made.reason == "500s after 1.5.0 (INC-9)"  # one line: a trailer cannot wrap
    assert made.trailers == ("Image-Bot-Operator: rollback web 1.4.2", "Image-Bot-Actor: alice",
                             "Image-Bot-Reason: 500s after 1.5.0 (INC-9)")
    assert overrides.from_message(message) == made
    assert made.decline_reason == "rolled back to 1.4.2 by alice: 500s after 1.5.0 (INC-9)"


@pytest.mark.parametrize("message", [
    "chore: update web\n\nImage-Bot-Update: web r.io/web 1.4.2\n",
    "x\n\nImage-Bot-Operator: deploy web 1.4.2\n",
    "x\n\nImage-Bot-Operator: rollback web\n",
])
def test_a_message_without_a_valid_operator_trailer_has_no_override(message: str) -> None:
    assert overrides.from_message(message) is None


@pytest.mark.parametrize(("tag", "actor", "reason", "error"), [
    ("1.0 beta", "alice", "why", "'1.0 beta' is not an image tag"),
    ("-1.0", "alice", "why", "'-1.0' is not an image tag"),
    ("1.0.0", "alice", "  \n", "promote needs a reason (--reason TEXT)"),
    ("1.0.0", "", "why", "who is asking is unknown: pass --actor NAME"),
])
def test_bad_input_is_a_usage_error(tag: str, actor: str, reason: str, error: str) -> None:
    with pytest.raises(UsageError, match=error.replace("(", r"\(").replace(")", r"\)")):
        Override.of("promote", "web", tag, actor=actor, reason=reason)
