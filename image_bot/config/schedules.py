"""Publishing windows of ``publish.schedule`` (pure): when a policy may commit or open PRs.

An entry is either a phrase, ``after 22:00 before 06:00 on weekdays`` (each part optional:
``after HH:MM``, ``before HH:MM``, ``on weekdays|weekends|monday, tuesday…``; an ``after``
later than the ``before`` wraps over midnight), or a five-field cron expression
(``* 22-23,0-5 * * 1-5``, through croniter) whose matching minutes are the window. The
window is open when any entry holds at the current minute in the policy's time zone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SETS = {"weekdays": frozenset(range(5)), "weekends": frozenset({5, 6}),
         "every day": frozenset(range(7))}
_PHRASE = re.compile(r"^(?:after (?P<after>\d{1,2}:\d{2}))?\s*(?:before (?P<before>\d{1,2}:\d{2}))?"
                     r"\s*(?:on (?P<days>[a-z, ]+))?$")
MAX_ENTRIES = 20  # every input has a limit
MAX_LENGTH = 200


class InvalidSchedule(ValueError):
    """A ``publish.schedule`` entry or time zone that cannot be read."""


@dataclass(frozen=True, slots=True)
class Window:
    after: time | None = None
    before: time | None = None
    days: frozenset[int] = frozenset(range(7))
    cron: str | None = None

    def holds(self, local: datetime) -> bool:
        if self.cron is not None:
            from croniter import croniter  # lazily: only cron entries need it

            return bool(croniter.match(self.cron, local.replace(second=0, microsecond=0)))
        if local.weekday() not in self.days:
            return False
        now = local.time().replace(tzinfo=None)
        after, before = self.after, self.before
        if after is not None and before is not None and after > before:  # over midnight
            return now >= after or now < before
        return (after is None or now >= after) and (before is None or now < before)


def parse(entry: str) -> Window:
    """One schedule entry, or :class:`InvalidSchedule` saying what is wrong."""
    text = " ".join(entry.lower().split())
    if not text or len(text) > MAX_LENGTH:
        raise InvalidSchedule(f"{entry[:40]!r}: a schedule entry is 1 to {MAX_LENGTH} "
                              f"characters")
    if len(text.split()) == 5 and not text.startswith(("after", "before", "on")):
        from croniter import croniter  # lazily: only cron entries need it

        if not croniter.is_valid(text):
            raise InvalidSchedule(f"{entry!r} is not a valid cron expression")
        return Window(cron=text)
    match = _PHRASE.match(text)
    if not match or not any(match.groups()):
        raise InvalidSchedule(f"{entry!r}: write 'after HH:MM before HH:MM on weekdays' "
                              f"(each part optional) or a cron expression "
                              f"('* 22-23,0-5 * * 1-5')")
    return Window(_time(match["after"], entry), _time(match["before"], entry),
                  _days(match["days"], entry) if match["days"] else frozenset(range(7)))


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Berlin``), or :class:`InvalidSchedule`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(f"{name!r} is not a known time zone ({exc})") from None


def is_open(entries: Sequence[str], timezone: str, now: datetime) -> bool:
    """True when no schedule is set or ``now`` falls in one of the windows."""
    if not entries:
        return True
    local = now.astimezone(zone(timezone))
    return any(parse(entry).holds(local) for entry in entries)


def _time(text: str | None, entry: str) -> time | None:
    if text is None:
        return None
    hours, minutes = map(int, text.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise InvalidSchedule(f"{entry!r}: {text} is not a time of day")
    return time(0, 0) if hours == 24 else time(hours, minutes)


def _days(text: str, entry: str) -> frozenset[int]:
    text = text.strip()
    if text in _SETS:
        return _SETS[text]
    found = set()
    for word in re.split(r"\s*(?:,|\band\b)\s*", text):
        day = word.strip().removesuffix("s")
        if day not in DAYS:
            raise InvalidSchedule(f"{entry!r}: {word.strip()!r} is not weekdays, weekends, "
                                  f"every day or a day name")
        found.add(DAYS.index(day))
    return frozenset(found)
