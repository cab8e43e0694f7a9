"""A streaming reader for one large sheet of an .xlsx workbook.

python-calamine reads a whole sheet into memory before the first row comes out: about 300 MB
for the 600,000 rows of Miljødirektoratet's national file. This reader decompresses the
sheet's XML in blocks cut at row ends and reads rows from each block with a regular
expression, so memory stays flat. Rows of the usual
shape (every cell present, values in <v>) take a fast path; any other row is read cell by cell.
Workbooks this reader cannot make sense of fall back to calamine (see emissions.py).
"""

from __future__ import annotations

import html
import posixpath
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

from .errors import UnsupportedSheet

MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
DOC_RELS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
BLOCK = 8 << 20

_ROW = re.compile(rb'<row r="(\d+)"[^>]*>(.*?)</row>', re.S)
_CELL = re.compile(
    rb'<c r="([A-Z]+)\d+"([^>]*?)(?:/>|>(?:<f>[^<]*</f>|<f[^>]*/>)?(?:<v>([^<]*)</v>|<is>(.*?)</is>)?</c>)', re.S
)
_TEXT = re.compile(rb"<t[^>]*>([^<]*)</t>")
_ESCAPED = re.compile(r"_x([0-9A-Fa-f]{4})_")  # OOXML writes some characters as _xHHHH_ (_x005F_ is "_")
_FULL_CELL = rb'<c r="[A-Z]+\d+"([^>]*)>(?:<v>([^<]*)</v>)?</c>'
_SKIP_CELL = rb'<c r="[A-Z]+\d+"[^>]*>(?:<v>[^<]*</v>)?</c>'
_FULL_ROWS: dict[tuple[int, tuple[int, ...]], re.Pattern[bytes]] = {}


class XlsxSheet:
    """One worksheet of an .xlsx file, located by name, with the workbook's shared strings."""

    def __init__(self, path: Path, name: str) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
            workbook = ET.fromstring(self.zip.read("xl/workbook.xml"))
            rels = ET.fromstring(self.zip.read("xl/_rels/workbook.xml.rels"))
        except (zipfile.BadZipFile, KeyError, ET.ParseError, OSError) as exc:
            raise UnsupportedSheet(str(exc)) from exc
        self.sheet_names = [s.get("name", "") for s in workbook.iter(f"{MAIN}sheet")]
        wanted = next(
            (s for s in workbook.iter(f"{MAIN}sheet") if " ".join(s.get("name", "").split()).lower() == name.lower()),
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
                raise UnsupportedSheet(f"sheet part {self.part} missing")
        try:
            self.strings = self._shared_strings()
        except (ET.ParseError, zipfile.BadZipFile, OSError) as exc:
            raise UnsupportedSheet(f"shared strings: {exc}") from exc

    def _shared_strings(self) -> list[str]:
        try:
            data = self.zip.read("xl/sharedStrings.xml")
        except KeyError:
            return []
        return [
            _unescape("".join(t.text or "" for t in si.iter(f"{MAIN}t")))
            for si in ET.fromstring(data).iter(f"{MAIN}si")
        ]

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
                    carry = data
                    continue
                cut += len(b"</row>")
                yield data[:cut]
                carry = data[cut:]


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


def cell_value(attrs: bytes, raw: bytes, strings: list[str]) -> object:
    """The value of a fast-path cell."""
    return _value(attrs, raw or None, None, strings)


def rows(block: bytes, strings: list[str]) -> Iterator[tuple[int, list[object]]]:
    """(row number, cells) for every row in a block, read cell by cell."""
    for number, body in _ROW.findall(block):  # the general path: any cells, any order, gaps
        cells = []
        for letters, attrs, raw, inline in _CELL.findall(body):
            index = _column(letters)
            if index > len(cells):
                cells.extend([""] * (index - len(cells)))
            cells.append(_value(attrs, raw or None, inline or None, strings))
        yield int(number), cells
