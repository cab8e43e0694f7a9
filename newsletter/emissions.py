"""Miljødirektoratet's municipal climate accounts: import, aggregate, compute -> Summary, Highlights.

The official workbook ("Klimagassutslipp i kommuner", sheet "Oversikt - detaljert") has one
row per municipality, year, sector, source and gas. On import the rows are summed over
sources and gases into one figure per municipality, year and sector, and stored as a named
release. The region is its members, matched by municipality number in either numbering
(2020–2023 or 2024), never by name. Percent changes are always against the from-year.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import sqlite3
import zipfile
import zlib
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .clock import now, timestamp
from .errors import ERROR, WARNING, EmissionsError, Finding, UnsupportedSheet
from .language import _, os_reason
from .resources import builtin
from .sheets import (
    BLOCK,
    XlsxSheet,
    cell_value,
    check_archive,
    csv_rows,
    damaged,
    full_rows,
    keyed_row,
    keyed_rows,
    rows,
    rows_ending,
)

log = logging.getLogger(__name__)

SHEET = "Oversikt - detaljert"
MAX_TONNES = 1e12  # per row; all of Norway emits about 5e7 tonnes a year: larger is a mistake, and sums stay finite
FIRST_YEAR, LAST_YEAR = 1900, 2100
COLUMNS = {
    "fylke": "Fylke",
    "kommunenummer": "Kommunenummer",
    "kommune": "Kommune",
    "år": "År",
    "sektor": "Sektor",
    "utslippskilde": "Utslippskilde",
    "klimagass": "Klimagass",
    "utslipp (tonn co2-ekvivalenter)": "Utslipp (tonn CO2-ekvivalenter)",
}
_REQUIRED = tuple(COLUMNS)
_VALUE = "utslipp (tonn co2-ekvivalenter)"


# --- members and sectors ------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A member municipality with its numbers in both numberings."""

    name: str
    official_name: str
    number_2020: str
    number_2024: str

    @property
    def numbers(self) -> frozenset[str]:
        """Both of its municipality numbers."""
        return frozenset({self.number_2020, self.number_2024})


def read_members(path: Path) -> tuple[Member, ...]:
    """The region's members from a CSV with name, official_name and both municipality numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise EmissionsError(
            _(
                "{path}: cannot read the members list ({strerror}); check emissions.members.",
                path=path,
                strerror=os_reason(exc),
            )
        ) from exc
    reader = csv.DictReader(io.StringIO(text))
    needed = {"name", "official_name", "kommunenummer_2020_2023", "kommunenummer_2024"}
    missing = needed - set(reader.fieldnames or ())
    if missing:
        raise EmissionsError(
            _("{path}: the members list lacks the column(s) {missing}.", path=path, missing=", ".join(sorted(missing)))
        )
    members = []
    for line, row in enumerate(reader, 2):
        numbers = [_municipality_number(row[k]) for k in ("kommunenummer_2020_2023", "kommunenummer_2024")]
        if not all(numbers):
            raise EmissionsError(
                _("{path}:{line}: a municipality number is missing or not 3–4 digits.", path=path, line=line)
            )
        members.append(Member(row["name"].strip(), row["official_name"].strip(), numbers[0], numbers[1]))  # type: ignore[arg-type]
    if not members:
        raise EmissionsError(_("{path}: the members list is empty.", path=path))
    return tuple(members)


def read_sectors(path: Path) -> dict[str, str]:
    """Known sectors (Norwegian name -> English name), from a CSV with columns sector,en."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return {row["sector"].strip(): (row.get("en") or "").strip() for row in csv.DictReader(handle)}
    except (OSError, UnicodeDecodeError, KeyError, csv.Error) as exc:
        raise EmissionsError(
            _(
                "{path}: cannot read the sector list ({exc}); check emissions.sectors (a UTF-8 CSV with columns sector,en).",
                path=path,
                exc=exc,
            )
        ) from exc


def _municipality_number(value: object) -> str | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text.zfill(4) if text.isdigit() and 3 <= len(text) <= 4 else None


# --- reading files --------------------------------------------------------------------------------

_X000D = re.compile(r"_x000[dD]_")
_SPACES = re.compile(r"\s+")


def clean_label(value: object) -> str:
    """A label as people mean it: no Excel _x000D_ escapes, no stray or doubled spaces."""
    return _SPACES.sub(" ", _X000D.sub(" ", str(value if value is not None else ""))).strip()


def _header_key(value: object) -> str:
    return clean_label(value).lower().replace("co₂", "co2")


@dataclass(frozen=True)
class ImportReport:
    """What an import read, stored and ignored."""

    release: str
    source: str
    rows: int
    municipalities: int
    years: tuple[int, ...]
    sectors: tuple[str, ...]
    unknown_sectors: tuple[str, ...]
    zero_rows: int
    empty_values: int
    negative_values: int
    ignored_rows: int
    numbering: str


def _rows_xlsx(path: Path) -> Iterator[tuple[int, list[object]]]:
    from python_calamine import CalamineError, CalamineWorkbook

    if path.suffix.lower() in (".xlsx", ".xlsm") and not zipfile.is_zipfile(path):
        raise EmissionsError(damaged(path))
    check_archive(path)  # calamine unpacks whole parts: their sizes first
    try:
        workbook = CalamineWorkbook.from_path(str(path))
    except (CalamineError, OSError, ValueError) as exc:
        raise EmissionsError(
            _("{path}: not a readable Excel workbook ({exc}); save it as .xlsx or CSV.", path=path, exc=exc)
        ) from exc
    names = workbook.sheet_names
    wanted = next((n for n in names if clean_label(n).lower() == SHEET.lower()), None)
    if wanted is None:
        raise EmissionsError(
            _(
                "{path}: no sheet named '{sheet}' (the workbook has: {names}); use Miljødirektoratet's file as published.",
                path=path,
                sheet=SHEET,
                names=", ".join(names),
            )
        )
    yield from enumerate(workbook.get_sheet_by_name(wanted).iter_rows(), 1)


def _rows_csv(path: Path) -> Iterator[tuple[int, list[object]]]:
    try:
        yield from csv_rows(path)
    except UnicodeDecodeError as exc:
        raise EmissionsError(
            _(
                "{path}:{exc}: not text in an encoding newsletter reads (UTF-8, UTF-16, Windows-1252); save the CSV as UTF-8 (Excel: 'CSV UTF-8').",
                path=path,
                exc=getattr(exc, "line", 1),
            )
        ) from None


def _number(value: object) -> float | None:
    """A value as tonnes: numbers as they are, text in English or Norwegian form; None if empty."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or abs(value) > MAX_TONNES:
            raise ValueError(value)
        return float(value)
    text = str(value).strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "").replace("\u2212", "-")
    if text in ("", "-"):
        return None
    if "," in text and "." in text:  # 1.234,5 (Norwegian) or 1,234.5 (English)
        text = text.replace(".", "").replace(",", ".") if text.rfind(",") > text.rfind(".") else text.replace(",", "")
    else:
        text = text.replace(",", ".")
    result = float(text)
    if not math.isfinite(result) or abs(result) > MAX_TONNES:
        raise ValueError(value)
    return result


def _year(value: object, path: Path, line: int) -> int:
    """A year between FIRST_YEAR and LAST_YEAR, written as a whole number (2019, '2019', 2019.0)."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number.is_integer() and FIRST_YEAR <= number <= LAST_YEAR):
        raise EmissionsError(
            _(
                "{path}:{line}: year {value!r} is not a year from {first_year} to {last_year}; check column År.",
                path=path,
                line=line,
                value=value,
                first_year=FIRST_YEAR,
                last_year=LAST_YEAR,
            )
        )
    return int(number)


def _find_header(path: Path, line: int, row: list[object]) -> dict[str, int] | None:
    """The column positions if this row is the header; None for rows above it."""
    keys = [_header_key(cell) for cell in row]
    if "kommunenummer" in keys:
        missing = [COLUMNS[k] for k in _REQUIRED if k not in keys]
        if missing:
            raise EmissionsError(
                _(
                    "{path}:{line}: missing column(s) {missing}; the file must have {values}.",
                    path=path,
                    line=line,
                    missing=", ".join(missing),
                    values=", ".join(COLUMNS.values()),
                )
            )
        return {k: keys.index(k) for k in _REQUIRED}
    if line > 30:
        raise EmissionsError(
            _(
                "{path}: no header row with '{kommunenummer}' in the first 30 rows; the file must have the columns {values}.",
                path=path,
                kommunenummer=COLUMNS["kommunenummer"],
                values=", ".join(COLUMNS.values()),
            )
        )
    return None


# The rows of a block grouped by their raw key cells, in the order each group first appears:
# (the block's cell kinds (keyed_rows), each group's first row as captured, its number of rows,
# the values of every group one after the other, each group's zeros and negative values, and
# whether a value of the group is not a number within MAX_TONNES: then its values are left out).
Grouped = tuple[
    "tuple[bool, ...] | None", list[tuple[bytes, ...]], list[int], "array[float]", list[int], list[int], list[bool]
]


def _capture_places(
    keys: tuple[int, ...], value: int, kinds: tuple[bool, ...] | None
) -> dict[int, tuple[int | None, int, bool]]:
    """Column -> (its attributes' capture or None, its raw value's capture, whether it is a
    shared string when its attributes are not captured) in a ``keyed_rows`` match."""
    at, spot = {}, 1
    for column in sorted((*keys, value)):
        if column == value or kinds is not None:
            at[column] = (None, spot, column != value and kinds[keys.index(column)])  # type: ignore[index]
            spot += 1
        else:
            at[column] = (spot, spot + 1, False)
            spot += 2
    return at


def group_block(block: bytes, width: int, keys: tuple[int, ...], value: int) -> Grouped | None:
    """The rows of a block grouped by their raw key cells (municipality, year, sector), each
    group's values converted and checked at once; None when a row is not of the usual shape.
    Per row only a tuple slice, a dict look-up and an append: no conversion, no strings."""
    found = keyed_rows(block, width, keys, value)
    if found is None:
        return None
    kinds, matched = found
    groups: dict[tuple[bytes, ...], list] = {}
    get = groups.get
    v = _capture_places(keys, value, kinds)[value][1]
    if not matched or v == len(matched[0]) - 1:  # the usual layout: the value comes last
        for match in matched:
            key = match[1:-1]
            group = get(key)
            if group is None:
                groups[key] = [match, match[-1]]
            else:
                group.append(match[-1])
    else:
        from operator import itemgetter

        key_of = itemgetter(*(i for i in range(1, len(matched[0])) if i != v))
        for match in matched:
            key = key_of(match)
            group = get(key)
            if group is None:
                groups[key] = [match, match[v]]
            else:
                group.append(match[v])
    del matched
    firsts, counts, values, zeros, negatives, bad = [], [], [], [], [], []
    for group in groups.values():
        firsts.append(group[0])
        counts.append(len(group) - 1)
        try:
            converted = list(map(float, group[1:]))
        except ValueError:
            converted = None
        else:
            total = sum(converted)  # nan or inf anywhere, or an overflow: left to the row-by-row path
            if not -math.inf < total < math.inf or min(converted) < -MAX_TONNES or max(converted) > MAX_TONNES:
                converted = None
        bad.append(converted is None)
        if converted is None:
            zeros.append(0)
            negatives.append(0)
        else:
            values += converted
            zeros.append(converted.count(0.0))
            negatives.append(sum(map((0.0).__gt__, converted)))
    return kinds, firsts, counts, array("d", values), zeros, negatives, bad


class _Aggregator:
    """Validates rows and sums them per (municipality, year, sector)."""

    def __init__(self, path: Path, header: dict[str, int], known: set[str]) -> None:
        self.path, self.known = path, known
        self.i_number, self.i_year, self.i_value = header["kommunenummer"], header["år"], header[_VALUE]
        self.i_sector, self.i_name, self.i_county = header["sektor"], header["kommune"], header["fylke"]
        self.last = max(header.values())
        self.totals: dict[tuple[str, int, str], array[float]] = {}  # 8 bytes a value
        self.names: dict[str, tuple[str, str]] = {}
        self.number_cache: dict[object, str | None] = {}
        self.year_cache: dict[object, int] = {}
        self.label_cache: dict[object, str] = {}
        self.unknown: set[str] = set()
        self.sectors: set[str] = set()
        self.years: set[int] = set()
        self.count = self.zeros = self.empties = self.ignored = self.negatives = 0
        # The grouped path: per key column, (is a shared string, raw cell) -> what add() made of it.
        self.keys = tuple(sorted((self.i_number, self.i_year, self.i_sector)))
        self.raw_numbers: dict[tuple[bool, bytes], str | None] = {}
        self.raw_years: dict[tuple[bool, bytes], int] = {}
        self.raw_sectors: dict[tuple[bool, bytes], str] = {}

    def add(self, line: int, row: list[object]) -> None:
        """One data row. The hot path of a 600,000-row import: labels, numbers and years
        repeat, so each distinct raw value is cleaned once and looked up after that."""
        if len(row) <= self.last:
            row = [*row, *([""] * (self.last + 1 - len(row)))]
        raw_number = row[self.i_number]
        number = self.number_cache.get(raw_number, "")
        if number == "":
            number = self.number_cache[raw_number] = _municipality_number(raw_number)
        if number is None:
            self.ignored += 1  # sum rows ("Hele landet"), notes and empty rows have no municipality number
            return
        raw_year = row[self.i_year]
        year = self.year_cache.get(raw_year)
        if year is None:
            year = self.year_cache[raw_year] = _year(raw_year, self.path, line)
        value = row[self.i_value]
        if value.__class__ is not float or not -MAX_TONNES <= value <= MAX_TONNES:
            try:
                value = _number(value)
            except ValueError:
                raise EmissionsError(
                    _(
                        "{path}:{line}: emission {row!r} is not a number of tonnes (at most {max_tonnes:.0e} either way); check column {columns}.",
                        path=self.path,
                        line=line,
                        row=row[self.i_value],
                        max_tonnes=MAX_TONNES,
                        columns=COLUMNS[_VALUE],
                    )
                ) from None
            if value is None:
                self.empties += 1
                value = 0.0
        if value < 0:
            self.negatives += 1
        raw_sector = row[self.i_sector]
        sector = self.label_cache.get(raw_sector)
        if sector is None:
            sector = self.label_cache[raw_sector] = clean_label(raw_sector)
            if not sector:
                raise EmissionsError(
                    _("{path}:{line}: the sector is empty; check column Sektor.", path=self.path, line=line)
                )
            if sector not in self.known:
                self.unknown.add(sector)
            self.sectors.add(sector)
        self.count += 1
        if value == 0.0:
            self.zeros += 1
        key = (number, year, sector)
        bucket = self.totals.get(key)
        if bucket is None:
            self.totals[key] = array("d", (value,))
            self.years.add(year)
            if number not in self.names:
                self.names[number] = (clean_label(row[self.i_name]), clean_label(row[self.i_county]))
        else:
            bucket.append(value)

    def add_grouped(self, block: bytes, strings: list[str], width: int) -> bool:
        """All rows of a block whose rows all have the usual shape and a plain number as their
        value (``group_block``); False, with nothing changed, when the block needs the
        row-by-row path."""
        grouped = group_block(block, width, self.keys, self.i_value)
        return grouped is not None and self.add_groups(block, strings, width, grouped)

    def add_groups(self, block: bytes, strings: list[str], width: int, grouped: Grouped) -> bool:
        """The groups of a block from ``group_block``. A group seen
        first (a new year, sector or municipality) has its first row read through add(), with
        the full checks. False, with nothing changed, when a group that counts has a value that
        is not a number within MAX_TONNES (the row-by-row path says which row)."""
        kinds, firsts, counts, values, zeros, negatives, bad = grouped
        at = _capture_places(self.keys, self.i_value, kinds)

        def cell_of(column: int) -> Callable[[tuple[bytes, ...]], tuple[bool, bytes]]:
            """(is a shared string, raw value) of a key cell, as the per-row paths key it."""
            attrs, raw, shared = at[column]
            if attrs is None:
                return lambda first: (shared, first[raw])
            return lambda first: (b't="s"' in first[attrs], first[raw])

        number_cell, year_cell_of, sector_cell_of = cell_of(self.i_number), cell_of(self.i_year), cell_of(self.i_sector)
        raw_numbers, numbers = self.raw_numbers, []
        for first, broken in zip(
            firsts, bad, strict=True
        ):  # checked before anything changes; ignored rows are not read
            cell = number_cell(first)
            number = raw_numbers.get(cell, "")
            if number == "":
                place = at[self.i_number][0]
                attrs = first[place] if place is not None else b't="s"' if cell[0] else b""
                number = raw_numbers[cell] = _municipality_number(cell_value(attrs, cell[1], strings))
            if broken and number is not None:
                return False
            numbers.append(number)
        totals, names, raw_years, raw_sectors = self.totals, self.names, self.raw_years, self.raw_sectors
        keys, value = self.keys, self.i_value
        start = 0
        for number, first, count, zero, negative, broken in zip(
            numbers, firsts, counts, zeros, negatives, bad, strict=True
        ):
            if number is None:
                self.ignored += count
                if not broken:
                    start += count
                continue
            end = start + count
            year_cell, sector_cell = year_cell_of(first), sector_cell_of(first)
            year, sector = raw_years.get(year_cell), raw_sectors.get(sector_cell)
            if year is None or sector is None:  # first sight: the full checks, on the first row
                row = keyed_row(block, width, keys, value, kinds, first, strings)
                self.add(int(first[0]), row)
                raw_years[year_cell] = year = self.year_cache[row[self.i_year]]
                raw_sectors[sector_cell] = sector = self.label_cache[row[self.i_sector]]
                done = values[start]
                start, count, zero, negative = start + 1, count - 1, zero - (done == 0.0), negative - (done < 0)
                if not count:
                    continue  # (start is end)
            self.count += count
            self.zeros += zero
            self.negatives += negative
            key = (number, year, sector)
            bucket = totals.get(key)
            if bucket is None:
                totals[key] = values[start:end]
                self.years.add(year)
                if number not in names:
                    row = keyed_row(block, width, keys, value, kinds, first, strings)
                    names[number] = (clean_label(row[self.i_name]), clean_label(row[self.i_county]))
            else:
                bucket += values[start:end]
            start = end
        return True

    def add_block(self, block: bytes, strings: list[str], width: int, grouped: bool = True) -> None:
        """All rows of a block of sheet XML. Rows of the usual shape skip building cell lists:
        each distinct raw cell is converted once (shared-string indexes repeat all the time)."""
        if grouped and self.add_grouped(block, strings, width):
            return
        wanted = tuple(sorted({self.i_number, self.i_year, self.i_value, self.i_sector, self.i_name, self.i_county}))
        matched = full_rows(block, width, wanted)
        if matched is None:
            for line, row in rows(block, strings):
                self.add(line, row)
            return
        place = {column: 1 + 2 * rank for rank, column in enumerate(wanted)}  # column -> its attrs in a match

        def value_of(match: tuple[bytes, ...], i: int) -> object:
            return cell_value(match[place[i]], match[place[i] + 1], strings)

        def slow(match: tuple[bytes, ...]) -> None:
            row: list[object] = [""] * (self.last + 1)
            for i in wanted:
                row[i] = value_of(match, i)
            self.add(int(match[0]), row)

        # Per column: raw cell value -> what add() would make of it, for text (t="s") and other cells.
        numbers: tuple[dict, dict] = ({}, {})
        years: tuple[dict, dict] = ({}, {})
        sectors: tuple[dict, dict] = ({}, {})
        bn, by, bv, bs = place[self.i_number], place[self.i_year], place[self.i_value], place[self.i_sector]
        totals, names = self.totals, self.names
        for match in matched:
            attrs = match[bn]
            cache = numbers[b't="s"' in attrs]
            number = cache.get(match[bn + 1], "")
            if number == "":
                number = cache[match[bn + 1]] = _municipality_number(value_of(match, self.i_number))
            if number is None:
                self.ignored += 1
                continue
            attrs = match[by]
            cache = years[b't="s"' in attrs]
            year = cache.get(match[by + 1])
            attrs = match[bs]
            sector_cache = sectors[b't="s"' in attrs]
            sector = sector_cache.get(match[bs + 1])
            raw_value = match[bv + 1]
            if year is None or sector is None or not raw_value or b't="' in match[bv]:
                slow(match)  # first sight of a year or sector, or an unusual value: the full checks
                cache[match[by + 1]] = self.year_cache[value_of(match, self.i_year)]
                sector_cache[match[bs + 1]] = self.label_cache[value_of(match, self.i_sector)]
                continue
            value = float(raw_value)
            if not -MAX_TONNES <= value <= MAX_TONNES:
                slow(match)  # refuses it, with the line
                continue
            self.count += 1
            if value == 0.0:
                self.zeros += 1
            elif value < 0:
                self.negatives += 1
            key = (number, year, sector)
            bucket = totals.get(key)
            if bucket is None:
                totals[key] = array("d", (value,))
                self.years.add(year)
                if number not in names:
                    names[number] = (
                        clean_label(value_of(match, self.i_name)),
                        clean_label(value_of(match, self.i_county)),
                    )
            else:
                bucket.append(value)


def _read_xlsx_streaming(path: Path, known: set[str], block_size: int | None = None) -> _Aggregator | None:
    """Read the sheet block by block with the streaming reader (flat memory).
    None when this reader cannot handle the workbook (calamine takes over)."""
    try:
        sheet = XlsxSheet(path, SHEET)
    except UnsupportedSheet as exc:
        log.debug("streaming reader cannot open %s (%s); using calamine", path, exc)
        return None
    if sheet.part is None:
        raise EmissionsError(
            _(
                "{path}: no sheet named '{sheet}' (the workbook has: {sheet_names}); use Miljødirektoratet's file as published.",
                path=path,
                sheet=SHEET,
                sheet_names=", ".join(sheet.sheet_names),
            )
        )
    blocks = sheet.blocks(block_size or BLOCK)
    aggregate = None
    width = 0
    try:
        for block in blocks:  # the header; the rows under it in its block are read as any block
            for line, row, end in rows_ending(block, sheet.strings):
                header = _find_header(path, line, row)
                if header is not None:
                    aggregate, width = _Aggregator(path, header, known), len(row)
                    aggregate.add_block(block[end:], sheet.strings, width)
                    break
            if aggregate is not None:
                break
        if aggregate is None:
            return None  # no header: calamine reads it and says what is missing
        for block in blocks:
            aggregate.add_block(block, sheet.strings, width)
    except (IndexError, ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        log.debug("streaming reader gave up on %s (%s); using calamine", path, exc)
        return None
    return aggregate


def read_emissions(
    path: Path, known_sectors: Iterable[str]
) -> tuple[dict[tuple[str, int, str], float], dict[str, tuple[str, str]], ImportReport]:
    """Read and validate a whole file, summed per (municipality, year, sector). Writes nothing."""
    suffix = path.suffix.lower()
    if suffix not in (".xlsx", ".xlsm", ".xls", ".ods", ".csv", ".txt"):
        raise EmissionsError(
            _(
                "{path}: unknown file type {value}; give an .xlsx workbook or a .csv file.",
                path=path,
                value=suffix or "(none)",
            )
        )
    if not path.is_file():
        raise EmissionsError(_("{path}: no such file.", path=path))
    known = set(known_sectors)
    aggregate = None
    if suffix in (".xlsx", ".xlsm"):
        aggregate = _read_xlsx_streaming(path, known)
    if aggregate is None:
        rows = _rows_csv(path) if suffix in (".csv", ".txt") else _rows_xlsx(path)
        for line, row in rows:
            if aggregate is not None:
                aggregate.add(line, row)
            else:
                header = _find_header(path, line, row)
                if header is not None:
                    aggregate = _Aggregator(path, header, known)
    if aggregate is None:
        raise EmissionsError(
            _(
                "{path}: the file is empty or has no header row with {kommunenummer}.",
                path=path,
                kommunenummer=COLUMNS["kommunenummer"],
            )
        )
    if aggregate.count == 0:
        raise EmissionsError(_("{path}: no emission rows under the header; is it the right file?", path=path))
    report = ImportReport(
        release="",
        source=path.name,
        rows=aggregate.count,
        municipalities=len(aggregate.names),
        years=tuple(sorted(aggregate.years)),
        sectors=tuple(sorted(aggregate.sectors)),
        unknown_sectors=tuple(sorted(aggregate.unknown)),
        zero_rows=aggregate.zeros,
        empty_values=aggregate.empties,
        negative_values=aggregate.negatives,
        ignored_rows=aggregate.ignored,
        numbering="",
    )
    return {key: math.fsum(values) for key, values in aggregate.totals.items()}, aggregate.names, report


def _numbering(numbers: Iterable[str], members: tuple[Member, ...]) -> str:
    """'2024' when the file uses any member's 2024-only number, else '2020'."""
    new = {m.number_2024 for m in members} - {m.number_2020 for m in members}
    return "2024" if new & set(numbers) else "2020"


def import_emissions(
    conn: sqlite3.Connection, path: Path, release: str, members: tuple[Member, ...], known_sectors: Iterable[str]
) -> ImportReport:
    """Import one file as the named release, replacing a release of the same name atomically."""
    release = release.strip()
    if not release:
        raise EmissionsError(_("the release label is empty; give one with --release, e.g. --release 2025."))
    totals, names, report = read_emissions(path, known_sectors)
    numbering = _numbering(names, members)
    with conn:  # all or nothing: a failure keeps the previous data
        conn.execute("DELETE FROM emission_releases WHERE label = ?", (release,))
        conn.execute(
            "INSERT INTO emission_releases (label, source, imported_at, numbering, rows) VALUES (?, ?, ?, ?, ?)",
            (release, str(path.name), timestamp(now()), numbering, report.rows),
        )
        conn.executemany(
            "INSERT INTO emission_municipalities (release, number, name, county) VALUES (?, ?, ?, ?)",
            [(release, number, name, county) for number, (name, county) in names.items()],
        )
        conn.executemany(
            "INSERT INTO emissions (release, municipality, year, sector, tonnes) VALUES (?, ?, ?, ?, ?)",
            [(release, number, year, sector, tonnes) for (number, year, sector), tonnes in totals.items()],
        )
    return ImportReport(**{**report.__dict__, "release": release, "numbering": numbering})


# --- summaries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One sector (or the total) in both years, and the change against the from-year."""

    sector: str
    from_tonnes: float
    to_tonnes: float

    @property
    def change_tonnes(self) -> float:
        """To-year minus from-year."""
        return self.to_tonnes - self.from_tonnes

    @property
    def change_pct(self) -> float | None:
        """Change in percent of the from-year; None when the from-year is zero."""
        return None if self.from_tonnes == 0 else self.change_tonnes / self.from_tonnes * 100


@dataclass(frozen=True)
class Summary:
    """Emissions of an area in two years, per sector and in total."""

    area: str
    numbers: tuple[str, ...]
    from_year: int
    to_year: int
    release: str
    sectors: tuple[Change, ...]
    total: Change
    share_of_all_pct: float | None
    share_by_sector_pct: dict[str, float]
    findings: tuple[Finding, ...]  # warnings, and errors for figures that cannot be right

    def as_json(self) -> dict:
        """The documented JSON shape: numbers are numbers, tonnes as in the data (without the noise of
        adding binary fractions: -129808.2, not -129808.20000000019), percent to one decimal."""

        def pct(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        def change(c: Change) -> dict:
            return {
                "from_tonnes": plain_tonnes(c.from_tonnes),
                "to_tonnes": plain_tonnes(c.to_tonnes),
                "change_tonnes": plain_tonnes(c.change_tonnes),
                "change_pct": pct(c.change_pct),
            }

        return {
            "area": self.area,
            "from_year": self.from_year,
            "to_year": self.to_year,
            "release": self.release,
            "sectors": [{"sector": c.sector, **change(c)} for c in self.sectors],
            "total": change(self.total),
            "share_of_all_municipalities_pct": pct(self.share_of_all_pct),
        }


def releases(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Imported releases, newest import first."""
    return conn.execute(
        "SELECT r.*, (SELECT COUNT(*) FROM emission_municipalities m WHERE m.release = r.label) AS municipalities,"
        " (SELECT MIN(year) FROM emissions e WHERE e.release = r.label) AS first_year,"
        " (SELECT MAX(year) FROM emissions e WHERE e.release = r.label) AS last_year"
        " FROM emission_releases r ORDER BY r.imported_at DESC, r.rowid DESC"
    ).fetchall()


def resolve_release(conn: sqlite3.Connection, release: str | None) -> str:
    """The named release, or the one imported last."""
    # Labels only: releases() also counts each release's years and members, which every build
    # would pay for here.
    labels = [r[0] for r in conn.execute("SELECT label FROM emission_releases ORDER BY imported_at DESC, rowid DESC")]
    if not labels:
        raise EmissionsError(_("no emission data imported yet; run 'newsletter emissions import FILE' first."))
    if release is None:
        return labels[0]
    if release not in labels:
        raise EmissionsError(
            _("no release {release!r}; imported: {labels}.", release=release, labels=", ".join(labels))
        )
    return release


def published_year(day: date) -> int:
    """The newest year Miljødirektoratet's municipal climate accounts hold on ``day``: the figures
    for year Y are published in the spring of Y+2 (by the summer, to be safe)."""
    return day.year - 2 if (day.month, day.day) >= (7, 1) else day.year - 3


def latest_years(conn: sqlite3.Connection, release: str) -> tuple[int, int]:
    """The two newest years of a release ('latest' in front matter)."""
    years = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT year FROM emissions WHERE release = ? ORDER BY year DESC LIMIT 2", (release,)
        )
    ]
    if len(years) < 2:
        raise EmissionsError(_("release {release!r} has fewer than two years; a change needs two.", release=release))
    return years[1], years[0]


def find_municipality(
    conn: sqlite3.Connection, release: str, wanted: str, members: tuple[Member, ...]
) -> tuple[str, tuple[str, ...]]:
    """(name, numbers) of a municipality given by number (either numbering) or by unique name."""
    wanted = wanted.strip()
    number = _municipality_number(wanted)
    known = {
        r["number"]: r["name"]
        for r in conn.execute("SELECT number, name FROM emission_municipalities WHERE release = ?", (release,))
    }
    if number is not None:
        member = next((m for m in members if number in m.numbers), None)
        numbers = tuple(sorted(member.numbers)) if member else (number,)
        present = [n for n in numbers if n in known]
        if not present:
            raise EmissionsError(
                _("municipality number {number} is not in release {release!r}.", number=number, release=release)
            )
        return (member.name if member else known[present[0]]), numbers
    by_name = [m for m in members if wanted.lower() in (m.name.lower(), m.official_name.lower())]
    by_name = by_name or [m for m in (current_name(wanted, members),) if m]  # 'Ski' is in Nordre Follo now
    if len(by_name) == 1:
        return by_name[0].name, tuple(sorted(by_name[0].numbers))
    matches = [(n, name) for n, name in known.items() if name.lower() == wanted.lower()]
    if len(matches) == 1:
        return matches[0][1], (matches[0][0],)
    if len(matches) > 1 or len(by_name) > 1:
        choices = ", ".join(f"{name} ({n})" for n, name in matches) or ", ".join(
            f"{m.official_name} ({m.number_2024})" for m in by_name
        )
        raise EmissionsError(
            _(
                "{wanted!r} names more than one municipality ({choices}); give the number instead.",
                wanted=wanted,
                choices=choices,
            )
        )

    from .content import did_you_mean  # here: it loads Markdown and YAML, which an import never needs

    guess = did_you_mean(wanted, sorted({*known.values(), *(m.name for m in members)}))
    raise EmissionsError(
        _(
            "no municipality {wanted!r}{guess} in release {release!r}; give its name or number.",
            wanted=wanted,
            guess=guess,
            release=release,
        )
    )


def _years_in(conn: sqlite3.Connection, release: str) -> str:
    """The years a release holds, runs of years as ranges: '1990–2020, 2023, 2024' (or '-')."""
    years = [
        r[0] for r in conn.execute("SELECT DISTINCT year FROM emissions WHERE release = ? ORDER BY year", (release,))
    ]
    runs: list[list[int]] = []
    for year in years:
        if runs and year == runs[-1][-1] + 1:
            runs[-1].append(year)
        else:
            runs.append([year])
    return ", ".join(f"{run[0]}–{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs) or "-"


def summarize(
    conn: sqlite3.Connection,
    release: str,
    area: str,
    numbers: Iterable[str],
    from_year: int,
    to_year: int,
    with_share: bool = True,
) -> Summary:
    """Per-sector and total emissions of the municipalities ``numbers`` in two years.

    With ``with_share``, also the area's share of all municipalities in the release (None when
    the release holds no other municipalities)."""
    numbers = tuple(sorted(set(numbers)))
    found: list[Finding] = []
    if from_year > to_year:
        found.append(
            Finding(
                WARNING,
                "",
                _(
                    "the from-year {from_year} is after the to-year {to_year}; the change runs backwards.",
                    from_year=from_year,
                    to_year=to_year,
                ),
            )
        )
    marks = ",".join("?" * len(numbers))
    rows = conn.execute(
        f"SELECT sector, year, tonnes FROM emissions WHERE release = ? AND year IN (?, ?) AND municipality IN ({marks})",
        (release, from_year, to_year, *numbers),
    ).fetchall()
    if not rows:
        raise EmissionsError(
            _(
                "release {release!r} has no emissions for {area} in {from_year} or {to_year}; it has the years {years}: choose two of those.",
                release=release,
                area=area,
                from_year=from_year,
                to_year=to_year,
                years=_years_in(conn, release),
            )
        )
    parts: dict[tuple[str, int], list[float]] = defaultdict(list)
    for sector, year, tonnes in rows:
        parts[(sector, year)].append(tonnes)
    values: dict[str, dict[int, float]] = defaultdict(dict)
    for (sector, year), amounts in parts.items():  # fsum: exact sums, no 599999.9999999999
        values[sector][year] = math.fsum(amounts)
    present_years = {y for v in values.values() for y in v}
    for year in (from_year, to_year):
        if year not in present_years:
            raise EmissionsError(
                _(
                    "release {release!r} has no emissions for {area} in {year}; it has the years {years}: choose two of those.",
                    release=release,
                    area=area,
                    year=year,
                    years=_years_in(conn, release),
                )
            )
    changes = []
    for sector in sorted(values):
        by_year = values[sector]
        for year in (from_year, to_year):
            if year not in by_year:
                found.append(
                    Finding(
                        WARNING,
                        "",
                        _(
                            "{area}: sector {sector} has no data for {year} (counted as 0).",
                            area=area,
                            sector=sector,
                            year=year,
                        ),
                    )
                )
        change = Change(sector, by_year.get(from_year, 0.0), by_year.get(to_year, 0.0))
        if change.change_pct is not None and change.change_pct < -100:
            found.append(
                Finding(
                    ERROR,
                    "",
                    _(
                        "{area}: {sector} falls {change_pct:.1f} %, more than 100 %: check the data.",
                        area=area,
                        sector=sector,
                        change_pct=change.change_pct,
                    ),
                )
            )
        changes.append(change)
    total = Change("Total", math.fsum(c.from_tonnes for c in changes), math.fsum(c.to_tonnes for c in changes))

    share = None
    by_sector: dict[str, float] = {}
    everyone = (
        with_share
        and conn.execute(
            "SELECT COUNT(*) FROM emission_municipalities WHERE release = ? AND number NOT IN (" + marks + ")",
            (release, *numbers),
        ).fetchone()[0]
    )
    if everyone:
        by_sector_all: dict[str, list[float]] = defaultdict(list)
        for sector, tonnes in conn.execute(
            "SELECT sector, tonnes FROM emissions WHERE release = ? AND year = ?", (release, to_year)
        ):
            by_sector_all[sector].append(tonnes)
        national = {sector: math.fsum(amounts) for sector, amounts in by_sector_all.items()}
        all_total = math.fsum(national.values())
        share = total.to_tonnes / all_total * 100 if all_total else None
        for sector, tonnes in national.items():
            mine = next((c.to_tonnes for c in changes if c.sector == sector), 0.0)
            if tonnes:
                by_sector[sector] = mine / tonnes * 100
    return Summary(area, numbers, from_year, to_year, release, tuple(changes), total, share, by_sector, tuple(found))


# --- Norwegian and English numbers -----------------------------------------------------------------

MINUS = "\u2212"
NBSP = "\u00a0"


def format_number(value: float, language: str, decimals: int = 0, sign: bool = False) -> str:
    """'−562 289' / '4,1' in Norwegian (no-break space, decimal comma, real minus); '−562,289' / '4.1' in English."""
    rounded = round(value, decimals)
    if rounded == 0:
        rounded = 0.0  # no '−0'
    text = f"{abs(rounded):,.{decimals}f}"
    if language == "nb":
        text = text.replace(",", NBSP).replace(".", ",")
    prefix = MINUS if rounded < 0 else ("+" if sign and rounded > 0 else "")
    return prefix + text


def format_pct(value: float | None, language: str, sign: bool = True) -> str:
    """A percentage with one decimal and a real minus sign: '−7,1 %' (nb) or '−7.1%' (en)."""
    if value is None:
        return "–"
    number = format_number(value, language, 1, sign)
    return f"{number}{NBSP}%" if language == "nb" else f"{number}%"


def summary_table(summary: Summary, language: str = "nb", sector_names: dict[str, str] | None = None) -> str:
    """The summary as an aligned text table for documents, in Norwegian number format."""
    names = sector_names or {}
    heads = ("Sektor", str(summary.from_year), str(summary.to_year), "Endring (tonn)", "Endring (%)")
    if language == "en":
        heads = ("Sector", str(summary.from_year), str(summary.to_year), "Change (tonnes)", "Change (%)")
    body = [
        (
            names.get(c.sector, c.sector) if language == "en" else c.sector,
            format_number(c.from_tonnes, language),
            format_number(c.to_tonnes, language),
            format_number(c.change_tonnes, language, sign=True),
            format_pct(c.change_pct, language),
        )
        for c in (*summary.sectors, summary.total)
    ]
    body[-1] = ("Totalt" if language == "nb" else "Total", *body[-1][1:])
    widths = [max(len(r[i]) for r in (heads, *body)) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in (heads, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    release = "datasett" if language == "nb" else "release"
    title = f"{summary.area}: {summary.from_year}–{summary.to_year} ({release} {summary.release})"
    out = [title, "", *lines]
    if summary.share_of_all_pct is not None:
        label = (
            "Andel av utslippene i alle kommuner" if language == "nb" else "Share of emissions in all municipalities"
        )
        out += ["", f"{label} {summary.to_year}: {format_pct(summary.share_of_all_pct, language, sign=False)}"]
    return "\n".join(out)


def summary_csv(summary: Summary) -> str:
    """The summary as plain CSV (comma, decimal point) for other programs."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sector", "from_tonnes", "to_tonnes", "change_tonnes", "change_pct"])
    for c in (*summary.sectors, summary.total):
        pct = "" if c.change_pct is None else f"{c.change_pct:.1f}"
        tonnes = (repr(plain_tonnes(value)) for value in (c.from_tonnes, c.to_tonnes, c.change_tonnes))
        writer.writerow([c.sector, *tonnes, pct])
    return out.getvalue()


def plain_tonnes(value: float) -> float:
    """Tonnes as the data give them: sums of decimal figures lose the float noise of binary
    fractions (6 decimals is far below the data's precision), and -0.0 is 0.0."""
    return round(value, 6) + 0.0


# --- highlights for an issue ---------------------------------------------------------------------

ROAD = "Veitrafikk"  # the presentation reports the region's share of road-traffic emissions


@dataclass(frozen=True)
class Highlights:
    """What the issue's emission section shows, in the issue's language."""

    summary: Summary
    headline: str
    sentences: tuple[str, ...]
    rows: tuple[dict, ...]
    total: dict
    source: str


# Municipalities merged into others (2017–2020), by their old names: people still write them.
FORMER_NAMES = {
    "ski": "Nordre Follo", "oppegård": "Nordre Follo", "skedsmo": "Lillestrøm", "fet": "Lillestrøm",
    "sørum": "Lillestrøm", "røyken": "Asker", "hurum": "Asker", "nedre eiker": "Drammen", "svelvik": "Drammen",
    "sande": "Holmestrand", "hof": "Holmestrand", "rygge": "Moss", "askim": "Indre Østfold",
    "eidsberg": "Indre Østfold", "hobøl": "Indre Østfold", "spydeberg": "Indre Østfold", "trøgstad": "Indre Østfold",
    "nøtterøy": "Færder", "tjøme": "Færder", "re": "Tønsberg", "andebu": "Sandefjord", "stokke": "Sandefjord",
    "lardal": "Larvik",
}  # fmt: skip


def current_name(name: str, members: tuple[Member, ...]) -> Member | None:
    """The member that a former municipality (by its old name) is part of now, if any."""
    now_called = FORMER_NAMES.get(name.strip().lower())
    return next((m for m in members if now_called and m.name.lower() == now_called.lower()), None)


def project_members(settings) -> tuple[Member, ...]:
    """The region's members from emissions.members, or none when the setting is not used."""
    return read_members(settings.emissions_members) if settings.emissions_members else ()


def sectors_file(settings) -> Path:
    """The known-sectors CSV: the project's, or the built-in one."""
    return settings.emissions_sectors or builtin("data") / "emission-sectors.csv"


def _row(change: Change, language: str, names: dict[str, str], widest: float) -> dict:
    return {
        "label": names.get(change.sector, change.sector) if language == "en" else change.sector,
        "from": format_number(change.from_tonnes, language),
        "to": format_number(change.to_tonnes, language),
        "change": format_number(change.change_tonnes, language, sign=True),
        "pct": format_pct(change.change_pct, language),
        "falling": change.change_tonnes < 0,
        "bar": max(1, round(abs(change.change_tonnes) / widest * 100)) if widest else 0,
    }


def highlights(summary: Summary, strings: dict[str, str], language: str, names: dict[str, str]) -> Highlights:
    """Sentences, table rows and bar widths for a region summary."""

    def label(sector: str) -> str:
        return names.get(sector, sector) if language == "en" else sector

    total = summary.total
    values = {"area": summary.area, "from_year": summary.from_year, "to_year": summary.to_year}
    direction = "down" if total.change_tonnes < 0 else "up"
    headline = strings[f"emissions_headline_{direction}"].format(
        pct=format_pct(abs(total.change_pct or 0), language, sign=False),
        change=format_number(total.change_tonnes, language, sign=True),
        **values,
    )
    sentences = []
    falls = [c for c in summary.sectors if c.change_tonnes < 0]
    if falls:
        most = min(falls, key=lambda c: c.change_tonnes)
        sentences.append(
            strings["emissions_largest_fall_tonnes"].format(
                sector=label(most.sector), change=format_number(most.change_tonnes, language, sign=True)
            )
        )
        relative = [c for c in falls if c.change_pct is not None]
        if relative:
            most_pct = min(relative, key=lambda c: c.change_pct)  # type: ignore[arg-type, return-value]
            sentences.append(
                strings["emissions_largest_fall_pct"].format(
                    sector=label(most_pct.sector), pct=format_pct(most_pct.change_pct, language)
                )
            )
    rose = [c for c in summary.sectors if c.change_tonnes > 0]
    if rose:
        listed = ", ".join(
            f"{label(c.sector)} ({format_number(c.change_tonnes, language, sign=True)} {strings['emissions_tonnes']})"
            for c in sorted(rose, key=lambda c: -c.change_tonnes)
        )
        sentences.append(strings["emissions_rose"].format(sectors=listed))
    if summary.share_of_all_pct is not None:
        sentences.append(
            strings["emissions_share"].format(pct=format_pct(summary.share_of_all_pct, language, sign=False), **values)
        )
        if ROAD in summary.share_by_sector_pct:
            sentences.append(
                strings["emissions_share_road"].format(
                    pct=format_pct(summary.share_by_sector_pct[ROAD], language, sign=False), **values
                )
            )
    widest = max((abs(c.change_tonnes) for c in summary.sectors), default=0.0)
    rows = tuple(_row(c, language, names, widest) for c in sorted(summary.sectors, key=lambda c: c.change_tonnes))
    total_row = _row(total, language, names, 0) | {"label": strings["emissions_total_label"]}
    return Highlights(
        summary=summary,
        headline=headline,
        sentences=tuple(sentences),
        rows=rows,
        total=total_row,
        source=strings["emissions_source"].format(release=summary.release, **values),
    )


def municipal_sentence(summary: Summary, strings: dict[str, str], language: str, names: dict[str, str]) -> str:
    """One municipality's change in a sentence: 'Lillestrøm: ned 4,1 % fra 2019 til 2020 (−12 345 tonn).'"""
    total = summary.total
    key = "emissions_municipal_down" if total.change_tonnes < 0 else "emissions_municipal_up"
    text = strings[key].format(
        name=summary.area,
        pct=format_pct(abs(total.change_pct or 0), language, sign=False),
        change=format_number(total.change_tonnes, language, sign=True),
        from_year=summary.from_year,
        to_year=summary.to_year,
    )
    falls = [c for c in summary.sectors if c.change_tonnes < 0]
    if falls:
        most = min(falls, key=lambda c: c.change_tonnes)
        text += " " + strings["emissions_municipal_fall"].format(
            sector=names.get(most.sector, most.sector) if language == "en" else most.sector
        )
    return text
