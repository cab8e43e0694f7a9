"""The one clock: UTC for storing and comparing, Oslo time for people.

Times are stored as ``YYYY-MM-DDTHH:MM:SSZ`` text, which sorts in time order; people read and
write Oslo time ('2026-12-01 09:00 (Oslo)').
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from .errors import ScheduleError

OSLO = ZoneInfo("Europe/Oslo")


def now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def timestamp(value: datetime) -> str:
    """A UTC ISO 8601 text that sorts in time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str | None) -> datetime | None:
    """The inverse of ``timestamp``; None for None or ''."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if value else None


def oslo(value: datetime) -> str:
    """A time as Oslo people read it: '2026-12-01 09:00 (Oslo)'."""
    return value.astimezone(OSLO).strftime("%Y-%m-%d %H:%M (Oslo)")


def parse_when(text: str, moment: datetime | None = None) -> datetime:
    """'2026-12-01 09:00' (Oslo time) or with a zone ('...T09:00+01:00', '...Z') -> UTC, in the future."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" UTC", "+00:00"))
    except ValueError:
        raise ScheduleError(
            f"--at {text!r} is not a time; write it as 'YYYY-MM-DD HH:MM' (Oslo time), e.g. '2026-12-01 09:00'."
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=OSLO)
    value = value.astimezone(UTC)
    if value <= (moment or now()):
        raise ScheduleError(f"--at {text!r} is in the past; give a time to come.")
    return value
