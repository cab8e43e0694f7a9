"""The one clock: UTC for storing and comparing, Oslo time for people.

Times are stored as ``YYYY-MM-DDTHH:MM:SSZ`` text, which sorts in time order; people read and
write Oslo time ('01.12.2026 kl. 09.00' in Norwegian, '2026-12-01 09:00 (Oslo)' in English).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from .errors import ScheduleError
from .language import _, current

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
    """A time as Oslo people read it, in the current language: '01.12.2026 kl. 09.00' in
    Norwegian, '2026-12-01 09:00 (Oslo)' in English."""
    local = value.astimezone(OSLO)
    return local.strftime("%d.%m.%Y kl. %H.%M" if current() == "nb" else "%Y-%m-%d %H:%M (Oslo)")


def oslo_stamp(stamp: str | None) -> str:
    """A stored timestamp (``timestamp``) as people read it; '' for none, and the text itself
    when it is not one (an older row)."""
    if not stamp:
        return ""
    try:
        return oslo(parse_timestamp(stamp))  # type: ignore[arg-type]
    except ValueError:
        return stamp


def day(value: date) -> str:
    """A date as people read it in the current language: '01.12.2026' or '2026-12-01'."""
    return value.strftime("%d.%m.%Y") if current() == "nb" else value.isoformat()


_NORWEGIAN = re.compile(
    r"^(?:(?P<iso>\d{4}-\d{1,2}-\d{1,2})|(?P<day>\d{1,2})\.(?P<month>\d{1,2})\.(?P<year>\d{4}))"
    r"(?:[ T]+(?:kl\.?\s*)?(?P<hour>\d{1,2})(?:[:.](?P<minute>\d{2}))?)?$",
    re.IGNORECASE,
)


def _local(text: str) -> datetime | None:
    """A time as people in Oslo write it, without a zone: '2026-12-30 9:00', '2026-12-30 09.00',
    '30.12.2026 kl. 9', '2026-12-30' (midnight); None when it is none of these."""
    match = _NORWEGIAN.match(" ".join(text.split()))
    if not match:
        return None
    if match["iso"]:
        year, month, day = (int(part) for part in match["iso"].split("-"))
    else:
        year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    try:
        return datetime(year, month, day, int(match["hour"] or 0), int(match["minute"] or 0))
    except ValueError:
        return None


def parse_when(text: str, moment: datetime | None = None) -> datetime:
    """'2026-12-01 09:00' or '1.12.2026 kl. 9' (Oslo time), or with a zone ('...T09:00+01:00',
    '...Z') -> UTC, in the future."""
    value = _local(text)
    if value is None:
        try:
            value = datetime.fromisoformat(text.strip().replace(" UTC", "+00:00"))
        except ValueError:
            raise ScheduleError(
                _(
                    "--at {text!r} is not a time; write it as 'YYYY-MM-DD HH:MM' (Oslo time), e.g. '2026-12-01 09:00'.",
                    text=text,
                )
            ) from None
    if value.tzinfo is None:
        local = value.replace(tzinfo=OSLO)
        if local.astimezone(UTC).astimezone(OSLO).replace(tzinfo=None) != value:
            raise ScheduleError(
                _(
                    "--at {text!r} does not exist in Oslo (the clocks are put forward that night); give another time.",
                    text=text,
                )
            )
        value = local
    value = value.astimezone(UTC)
    if value <= (moment or now()):
        raise ScheduleError(_("--at {text!r} is in the past; give a time to come.", text=text))
    return value
