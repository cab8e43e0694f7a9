"""A streaming reader for one large sheet of an .xlsx workbook.

python-calamine reads a whole sheet into memory before the first row comes out: about 300 MB
for the 600,000 rows of Miljødirektoratet's national file. This reader decompresses the
sheet's XML in blocks cut at row ends and reads rows from each block with a regular
expression, so memory stays flat. Rows of the usual
shape (every cell present, values in <v>) take a fast path; any other row is read cell by cell.
Workbooks this reader cannot make sense of fall back to calamine (see emissions.py).

Every workbook is inspected before anything is unpacked (``check_archive``): a part that would
unpack to more than MAX_PART, shared strings over MAX_STRINGS, a compression ratio only a 'zip
bomb' has, or a row longer than MAX_ROW is refused with one line (UnsafeFile), in bounded
memory, before reading on.
"""

from __future__ import annotations

import html
import io
import posixpath
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from .errors import UnsafeFile, UnsupportedSheet
from .language import N_, _, os_reason, translate

MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
DOC_RELS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
BLOCK = 1 << 20  # larger blocks are no faster (they fall out of the CPU's caches) and cost memory
MAX_PART = 1 << 30  # a sheet's XML: the national file is about a quarter of this
MAX_STRINGS = 64 << 20  # the shared strings (names, sectors): a few hundred KB in real files
MAX_META = 16 << 20  # any other part (workbook.xml, relationships, styles): a few KB in real files
MAX_ROW = 16 << 20  # one row of XML
MAX_RATIO = 200  # XML packs 10-30 times; a part packed far more than this is a bomb
_RATIO_FROM = 32 << 20  # small parts may pack as well as they like


def _size(count: int) -> str:
    return f"{count / (1 << 30):.1f} GB" if count >= 1 << 30 else f"{count / (1 << 20):.0f} MB"


def damaged(path: Path) -> str:
    """The message for a workbook that cannot even be unpacked (cut short, or not a workbook)."""
    return _(
        "{path}: the workbook is damaged or incomplete (it cannot be unpacked); save it again from Excel as .xlsx, or as CSV.",
        path=path,
    )


def check_archive(path: Path, archive: zipfile.ZipFile | None = None) -> None:
    """Refuse (UnsafeFile) a workbook whose parts would unpack to more than can be read safely.
    The sizes come from the zip's directory, which Python's zipfile enforces while unpacking."""
    try:
        infos = (archive or zipfile.ZipFile(path)).infolist()
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: the reader says what is wrong with it
    for info in infos:
        name = info.filename.lower()
        if name.startswith("xl/worksheets/") and not name.startswith("xl/worksheets/_rels/"):
            limit = MAX_PART
        elif name.endswith("sharedstrings.xml"):  # calamine finds it whatever its case
            limit = MAX_STRINGS
        else:
            limit = MAX_META
        if info.file_size > limit:
            raise UnsafeFile(
                _(
                    "{path}: its part {filename} unpacks to {file_size}, more than the {limit} newsletter reads; this is not a real export (or it is damaged): check the file.",
                    path=path,
                    filename=info.filename,
                    file_size=_size(info.file_size),
                    limit=_size(limit),
                )
            )
        if info.file_size > _RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise UnsafeFile(
                _(
                    "{path}: its part {filename} is packed {file_size} times (real workbooks about 20); this looks like a 'zip bomb', not an export: check the file.",
                    path=path,
                    filename=info.filename,
                    file_size=info.file_size // max(info.compress_size, 1),
                )
            )


_ROW = re.compile(rb'<row r="(\d+)"[^>]*>(.*?)</row>', re.S)
_CELL = re.compile(
    rb'<c r="([A-Z]+)\d+"([^>]*?)(?:/>|>(?:<f>[^<]*</f>|<f[^>]*/>)?(?:<v>([^<]*)</v>|<is>(.*?)</is>)?</c>)', re.S
)
_TEXT = re.compile(rb"<t[^>]*>([^<]*)</t>")
_ESCAPED = re.compile(r"_x([0-9A-Fa-f]{4})_")  # OOXML writes some characters as _xHHHH_ (_x005F_ is "_")
_FULL_CELL = rb'<c r="[A-Z]+\d+"([^>]*)>(?:<v>([^<]*)</v>)?</c>'
_SKIP_CELL = rb'<c r="[A-Z]+\d+"[^>]*>(?:<v>[^<]*</v>)?</c>'
_FULL_ROWS: dict[tuple[int, tuple[int, ...]], re.Pattern[bytes]] = {}
# keyed_rows: a plain number (no t="..." type, so no "t" in its attributes at all: t="n", text
# and errors take the other paths), never empty; a cell that is not read, checked only for shape.
_NUMBER_CELL = rb"<c [^>t]*><v>([^<]+)</v></c>"
_ANY_CELL = rb"<c [^>]*>(?:<v>[^<]*</v>)?</c>"
_SHARED_CELL = rb'<c [^>]*t="s"[^>]*><v>([^<]*)</v></c>'  # a key cell, raw value only: a shared string
_PLAIN_CELL = rb"<c [^>t]*><v>([^<]*)</v></c>"  # ... or a value without a type
_KEYED_ROWS: dict[tuple, re.Pattern[bytes]] = {}


class XlsxSheet:
    """One worksheet of an .xlsx file, located by name (None: the first), with the workbook's shared strings."""

    def __init__(self, path: Path, name: str | None) -> None:
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
            check_archive(path, self.zip)
            workbook = ET.fromstring(self.zip.read("xl/workbook.xml"))
            rels = ET.fromstring(self.zip.read("xl/_rels/workbook.xml.rels"))
        except (zipfile.BadZipFile, KeyError, ET.ParseError, OSError) as exc:
            raise UnsupportedSheet(str(exc)) from exc
        self.sheet_names = [s.get("name", "") for s in workbook.iter(f"{MAIN}sheet")]
        wanted = next(
            (
                s
                for s in workbook.iter(f"{MAIN}sheet")
                if name is None or " ".join(s.get("name", "").split()).lower() == name.lower()
            ),
            None,
        )
        self.part: str | None = None
        if wanted is not None:
            target = next(
                (
                    r.get("Target", "")
                    for r in rels.iter(f"{RELS}Relationship")
                    if r.get("Id") == wanted.get(f"{DOC_RELS}id")
                ),
                "",
            )
            self.part = (
                target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
            )
            if self.part not in self.zip.namelist():
                raise UnsupportedSheet(_("sheet part {part} missing", part=self.part))
        try:
            self.strings = self._shared_strings()
        except (ET.ParseError, zipfile.BadZipFile, OSError) as exc:
            raise UnsupportedSheet(_("shared strings: {exc}", exc=exc)) from exc

    def _shared_strings(self) -> list[str]:
        """The shared strings, read piece by piece (their part's size is checked already)."""
        try:
            handle = self.zip.open("xl/sharedStrings.xml")
        except KeyError:
            return []
        strings: list[str] = []
        with handle:
            for _event, element in ET.iterparse(handle, events=("end",)):
                if element.tag == f"{MAIN}si":
                    strings.append(_unescape("".join(t.text or "" for t in element.iter(f"{MAIN}t"))))
                    element.clear()
        return strings

    @property
    def xml_size(self) -> int:
        """Uncompressed size of the sheet's XML."""
        return self.zip.getinfo(self.part).file_size if self.part else 0

    def blocks(self, size: int = BLOCK) -> Iterator[bytes]:
        """The sheet's XML in pieces that each end after a whole row."""
        assert self.part is not None
        with self.zip.open(self.part) as handle:
            carry = b""
            while True:
                chunk = handle.read(size)
                data = carry + chunk
                if not chunk:
                    if data.strip():
                        yield data
                    return
                cut = data.rfind(b"</row>")
                if cut < 0:
                    if len(data) > MAX_ROW:
                        raise UnsafeFile(
                            _(
                                "{path}: sheet {part} has a row longer than {max_row} (or no rows at all); this is not a real export: check the file.",
                                path=self.path,
                                part=self.part,
                                max_row=_size(MAX_ROW),
                            )
                        )
                    carry = data
                    continue
                cut += len(b"</row>")
                yield data[:cut]
                carry = data[cut:]


MAX_LINE = 1 << 20  # one line of a CSV file: a subscriber or an emission row is a few hundred bytes


ENCODINGS = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": N_("UTF-16 (Excel's 'Unicode-tekst')"),
             "cp1252": N_("Windows-1252 (Excel's 'CSV (semikolondelt)')")}  # fmt: skip
SEPARATORS = {",": N_("commas"), ";": N_("semicolons"), "\t": N_("tabs")}


@dataclass(frozen=True)
class TextFormat:
    """How a text table was written: its encoding and separator (for the report)."""

    encoding: str
    separator: str

    @property
    def description(self) -> str:
        return _(
            "{encoding} text, separated by {separators}",
            encoding=translate(ENCODINGS.get(self.encoding, self.encoding)),
            separators=translate(SEPARATORS[self.separator]),
        )


def text_encoding(path: Path) -> str:
    """The encoding of a text file as Excel and other programs save one: a byte order mark
    says UTF-8 or UTF-16; else UTF-8 if every byte of the file is valid UTF-8 (read in blocks);
    else Windows-1252 (Norwegian Excel's 'CSV (semikolondelt)'), checked when it is read."""
    import codecs

    with path.open("rb") as handle:
        head = handle.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        if len(head) >= 4 and head[1] == 0 and head[3] == 0 and head[0] and head[2]:
            return "utf-16-le"  # UTF-16 without its mark: ASCII letters with a zero byte after each
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while block := handle.read(1 << 20):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8"


def csv_rows(path: Path, what: str = "CSV", found: list[TextFormat] | None = None) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of a text table as Excel and others save one: UTF-8 (with or without
    a byte order mark), UTF-16 or Windows-1252 (``text_encoding``), separated by commas,
    semicolons or tabs (whichever the first line has most of). Read line by line: a line or a
    row longer than MAX_LINE is refused with its number (UnsafeFile), so a file of one
    gigabyte-long line never fills the memory. Text that is not in the encoding raises
    UnicodeDecodeError with its line in the exception's ``line``. ``found`` gets the format."""
    import csv

    try:
        encoding = text_encoding(path)
        binary = path.open("rb")
    except OSError as exc:
        raise UnsafeFile(_("{path}: cannot be read ({strerror}).", path=path, strerror=os_reason(exc))) from exc
    # UTF-16 is read through a text layer (a line end is two bytes); the others line by line as
    # bytes, so that a byte that is not in the encoding is reported at its own line.
    wide = encoding.startswith("utf-16")
    handle = io.TextIOWrapper(binary, encoding=encoding, errors="strict", newline="") if wide else binary
    with handle:
        number, start = 0, 1
        row_chars = 0  # of the row being read: a quoted field may carry one row over many lines

        def lines() -> Iterator[str]:
            nonlocal number, row_chars
            while True:
                try:
                    raw = handle.readline(MAX_LINE + 1)
                    text = raw if wide else raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    exc.line = number + 1  # type: ignore[attr-defined]
                    raise
                if not text:
                    return
                number += 1
                row_chars += len(text)
                if len(text) > MAX_LINE:
                    raise UnsafeFile(
                        _(
                            "{path}:{number}: the line is longer than {max_line}; this is not a {what} file with one row per line: check the file.",
                            path=path,
                            number=number,
                            max_line=_size(MAX_LINE),
                            what=what,
                        )
                    )
                if row_chars > MAX_LINE:
                    raise UnsafeFile(
                        _(
                            "{path}:{start}: the row goes on for more than {max_line} (a quote that is never closed?); check the file.",
                            path=path,
                            start=start,
                            max_line=_size(MAX_LINE),
                        )
                    )
                yield text.removeprefix("\ufeff") if number == 1 else text

        source = lines()
        first = next(source, None)
        if first is None:
            return
        delimiter = max((";", ",", "\t"), key=lambda mark: (first.count(mark), mark == ","))
        if found is not None:
            found.append(TextFormat(encoding, delimiter))

        def again() -> Iterator[str]:
            yield first
            yield from source

        csv.field_size_limit(MAX_LINE)  # a cell is cut off by the row's own limit below, with its line
        reader = csv.reader(again(), delimiter=delimiter)
        try:
            for row in reader:
                yield start, row
                start, row_chars = number + 1, 0
        except csv.Error as exc:
            raise UnsafeFile(
                _(
                    "{path}:{start}: not a readable {what} row ({exc}); check the file.",
                    path=path,
                    start=start,
                    what=what,
                    exc=exc,
                )
            ) from exc


def sheet_rows(path: Path, name: str | None = None) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells as text) of a worksheet of an .xlsx workbook (the first one unless
    ``name``), streamed block by block; numbers that are whole come out without '.0'
    (municipality 3205, not 3205.0)."""
    if not zipfile.is_zipfile(path):
        raise UnsafeFile(damaged(path))
    try:
        sheet = XlsxSheet(path, name)
    except UnsupportedSheet as exc:
        raise UnsafeFile(
            _(
                "{path}: not a workbook this program can read ({exc}); save it as .xlsx again, or as CSV.",
                path=path,
                exc=exc,
            )
        ) from exc
    if sheet.part is None:
        raise UnsafeFile(
            _(
                "{path}: no sheet named {name!r} (the workbook has: {sheet_names}).",
                path=path,
                name=name,
                sheet_names=", ".join(sheet.sheet_names),
            )
        )
    for block in sheet.blocks():
        for number, cells in rows(block, sheet.strings):
            yield number, [_as_text(value) for value in cells]


def _as_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text) if "_x" in text else text


def _column(letters: bytes) -> int:
    number = 0
    for char in letters:
        number = number * 26 + char - 64
    return number - 1


def _value(attrs: bytes, raw: bytes | None, inline: bytes | None, strings: list[str]) -> object:
    if b't="s"' in attrs:
        return strings[int(raw)] if raw else ""
    if inline is not None:
        return _unescape(html.unescape(b"".join(_TEXT.findall(inline)).decode("utf-8")))
    if not raw:
        return ""
    if b't="' in attrs and b't="n"' not in attrs:  # str, b, e: text as written
        return html.unescape(raw.decode("utf-8"))
    try:
        return float(raw)
    except ValueError:
        return raw.decode("utf-8")


def full_rows(block: bytes, width: int, wanted: tuple[int, ...]) -> list[tuple[bytes, ...]] | None:
    """The fast path: (row number, attrs, value, attrs, value, ...) of the ``wanted`` columns, for
    every row of a block in which every row has ``width`` cells with plain values; None if any
    row is shaped otherwise. Other columns are matched but not captured (less to allocate)."""
    if not width:
        return None
    pattern = _FULL_ROWS.get((width, wanted))
    if pattern is None:
        cells = b"".join(_FULL_CELL if i in wanted else _SKIP_CELL for i in range(width))
        pattern = _FULL_ROWS[(width, wanted)] = re.compile(rb'<row r="(\d+)"[^>]*>' + cells + rb"</row>")
    matched = pattern.findall(block)
    return matched if len(matched) == block.count(b"<row ") else None


def _keyed_pattern(width: int, keys: tuple[int, ...], value: int, kinds: tuple[bool, ...] | None) -> re.Pattern[bytes]:
    pattern = _KEYED_ROWS.get((width, keys, value, kinds))
    if pattern is None:
        cells = []
        for i in range(width):
            if i == value:
                cells.append(_NUMBER_CELL)
            elif i not in keys:
                cells.append(_ANY_CELL)
            elif kinds is None:
                cells.append(_FULL_CELL)
            else:
                cells.append(_SHARED_CELL if kinds[keys.index(i)] else _PLAIN_CELL)
        pattern = re.compile(rb'<row r="(\d+)"[^>]*>' + b"".join(cells) + rb"</row>")
        _KEYED_ROWS[(width, keys, value, kinds)] = pattern
    return pattern


def cell_kinds(block: bytes, keys: tuple[int, ...]) -> tuple[bool, ...] | None:
    """For each of the ``keys`` columns, whether the first row of a block has a shared string
    there (True) or a value without a type (False); None if any is something else or missing."""
    first = _ROW.search(block)
    if first is None:
        return None
    attrs = {_column(letters): found for letters, found, _raw, _inline in _CELL.findall(first[2])}
    kinds = []
    for i in keys:
        found = attrs.get(i)
        if found is None or (b't="s"' not in found and b"t" in found):
            return None
        kinds.append(b't="s"' in found)
    return tuple(kinds)


def keyed_rows(
    block: bytes, width: int, keys: tuple[int, ...], value: int
) -> tuple[tuple[bool, ...] | None, list[tuple[bytes, ...]]] | None:
    """The fastest path: for every row of a block in which every row has ``width`` cells with
    plain values and a plain number in ``value``, the captures (row number, then the ``keys``
    cells and the value in column order); None if any row is shaped otherwise. Returned with
    the block's ``kinds``: when every key column holds one kind of cell, as in the block's first
    row (shared strings, or values without a type: ``cell_kinds``), only the raw value of each
    key cell is captured; else (kinds None) its attributes and raw value."""
    if not width:
        return None
    count = block.count(b"<row ")
    kinds = cell_kinds(block, keys)
    for layout in (kinds, None) if kinds is not None else (None,):
        matched = _keyed_pattern(width, keys, value, layout).findall(block)
        if len(matched) == count:
            return layout, matched
    return None


def keyed_row(
    block: bytes,
    width: int,
    keys: tuple[int, ...],
    value: int,
    kinds: tuple[bool, ...] | None,
    match: tuple[bytes, ...],
    strings: list[str],
) -> list[object]:
    """The cells of the row of a block that ``keyed_rows`` gave as ``match``, read cell by cell
    (the general path); ValueError if there is none. Rows come in ascending order in a sheet,
    so the row is looked for by halving the block; where they do not, from the start."""
    pattern, mark, wanted = _keyed_pattern(width, keys, value, kinds), b'<row r="', int(match[0])
    low, high = 0, len(block)
    while low < high:
        middle = (low + high) // 2
        at = block.find(mark, middle)
        if at < 0 or int(block[at + 8 : block.index(b'"', at + 8)]) >= wanted:
            high = middle
        else:
            low = middle + 1
    for start in (block.find(mark, low), 0):
        while start >= 0:
            found = pattern.match(block, start)
            if found is not None and found.groups() == match:
                return next(rows(block[start : found.end()], strings))[1]
            start = block.find(mark + match[0] + b'"', start + 1)
    raise ValueError(f"row {wanted} not found")


def cell_value(attrs: bytes, raw: bytes, strings: list[str]) -> object:
    """The value of a fast-path cell."""
    return _value(attrs, raw or None, None, strings)


def _cells(body: bytes, strings: list[str]) -> list[object]:
    cells: list[object] = []
    for letters, attrs, raw, inline in _CELL.findall(body):
        index = _column(letters)
        if index > len(cells):
            cells.extend([""] * (index - len(cells)))
        cells.append(_value(attrs, raw or None, inline or None, strings))
    return cells


def rows(block: bytes, strings: list[str]) -> Iterator[tuple[int, list[object]]]:
    """(row number, cells) for every row in a block, read cell by cell."""
    for number, body in _ROW.findall(block):  # the general path: any cells, any order, gaps
        yield int(number), _cells(body, strings)


def rows_ending(block: bytes, strings: list[str]) -> Iterator[tuple[int, list[object], int]]:
    """(row number, cells, offset just past the row) for the rows of a block, one at a time
    (the header search: the rows under the header are left to the caller)."""
    for match in _ROW.finditer(block):
        yield int(match[1]), _cells(match[2], strings), match.end()
