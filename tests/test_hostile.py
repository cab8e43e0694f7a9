"""Hostile input is refused quickly, in bounded memory, with one line that names the file (and
line), and changes nothing. The bombs are built here, at test time; each is run through the real
command in its own process, whose peak memory and time are measured."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import SAMPLE_ISSUE, assert_error, rows, write

MEMORY_MB = 300  # the most a refusal may take
SECONDS = 20  # 'within seconds' on a loaded two-core machine


def run_process(project: Path, *args: str) -> tuple[subprocess.CompletedProcess, float, float]:
    """The CLI in a process of its own: (result, peak memory of that process in MB, seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=project, capture_output=True, text=True,
                          env={**os.environ}, timeout=120)  # fmt: skip
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far (KB on Linux)
    assert peak >= before
    return done, peak / 1024, seconds


def assert_refused(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def workbook(path: Path, parts: dict[str, bytes | tuple[bytes, int]]) -> Path:
    """A zip with the parts of an .xlsx; a part given as (chunk, times) is written streaming."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("xl/workbook.xml", b'<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
                         b' xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>'
                         b'<sheet name="Oversikt - detaljert" sheetId="1" r:id="rId1"/></sheets></workbook>')  # fmt: skip
        archive.writestr("xl/_rels/workbook.xml.rels", b'<Relationships xmlns="http://schemas.openxmlformats.org/'
                         b'package/2006/relationships"><Relationship Id="rId1" Target="worksheets/sheet1.xml"/>'
                         b"</Relationships>")  # fmt: skip
        for name, data in parts.items():
            if isinstance(data, tuple):
                chunk, times = data
                with archive.open(name, "w", force_zip64=True) as handle:
                    for _ in range(times):
                        handle.write(chunk)
            else:
                archive.writestr(name, data)
    return path


@pytest.fixture
def imported_before(project, run):
    """The synthetic sample imported, so that 'nothing changed' can be checked."""
    assert run("emissions", "import", "data/klimagassutslipp-syntetisk.csv").exit_code == 0
    return rows(project, "SELECT COUNT(*), SUM(tonnes) FROM emissions")


def test_a_zip_bomb_workbook(project, tmp_path, imported_before):
    bomb = workbook(tmp_path / "bomb.xlsx", {"xl/worksheets/sheet1.xml": (b"\0" * (16 << 20), 70)})  # 1.1 GB
    assert bomb.stat().st_size < 8 << 20
    done, peak, seconds = run_process(project, "emissions", "import", str(bomb))
    assert_refused(done, "bomb.xlsx", "unpacks to 1.1 GB, more than the 1.0 GB", "check the file")
    assert peak < MEMORY_MB and seconds < SECONDS
    assert rows(project, "SELECT COUNT(*), SUM(tonnes) FROM emissions") == imported_before


def test_a_workbook_packed_like_a_bomb(project, tmp_path):
    bomb = workbook(tmp_path / "tett.xlsx", {"xl/worksheets/sheet1.xml": (b"\0" * (8 << 20), 12)})  # 96 MB of nothing
    done, peak, seconds = run_process(project, "emissions", "import", str(bomb))
    assert_refused(done, "tett.xlsx", "looks like a 'zip bomb'")
    assert peak < MEMORY_MB and seconds < SECONDS


def test_a_shared_strings_bomb(project, tmp_path):
    bomb = workbook(tmp_path / "strenger.xlsx", {
        "xl/sharedStrings.xml": (b"<si><t>" + b"Lillestr\xc3\xb8m " * 1000 + b"</t></si>", 8000),  # 80 MB of text
        "xl/worksheets/sheet1.xml": b"<worksheet><sheetData></sheetData></worksheet>",
    })  # fmt: skip
    done, peak, seconds = run_process(project, "emissions", "import", str(bomb))
    assert_refused(done, "strenger.xlsx", "sharedStrings.xml unpacks to", "more than the 64 MB")
    assert peak < MEMORY_MB and seconds < SECONDS


def test_a_sheet_without_rows(project, tmp_path):
    import random

    noise = bytes(random.Random(1).getrandbits(8) for _ in range(1 << 20)).hex().encode()  # packs about 2:1
    bomb = workbook(tmp_path / "rad.xlsx", {"xl/worksheets/sheet1.xml": (b"<sheetData>" + noise, 12)})
    done, peak, seconds = run_process(project, "emissions", "import", str(bomb))
    assert_refused(done, "rad.xlsx", "has a row longer than 16 MB")
    assert peak < MEMORY_MB and seconds < SECONDS


def test_a_csv_line_of_a_gigabyte(project, tmp_path):
    for command, name in ((("subscribers", "import"), "liste.csv"), (("emissions", "import"), "utslipp.csv")):
        path = tmp_path / name
        with path.open("wb") as handle:
            handle.write(b"e-post,navn\n")
            handle.seek(1 << 30)  # a sparse file: a line of a gigabyte, without the disk space
            handle.write(b"\n")
        done, peak, seconds = run_process(project, *command, str(path))
        assert_refused(done, f"{name}:2: the line is longer than 1 MB")
        assert peak < MEMORY_MB and seconds < SECONDS
    assert rows(project, "SELECT COUNT(*) FROM subscribers") == [(0,)]


def test_a_yaml_alias_bomb_in_front_matter(project, issue_dir):
    lines = ["---", "title: Bombe", "date: 2026-12-03", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level, name in enumerate("bcdefghij"):
        previous = "abcdefghij"[level]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    lines += ["sections: *j", "---", "Tekst"]
    write(issue_dir / "issue.md", "\n".join(lines) + "\n")
    done, peak, seconds = run_process(issue_dir.parent.parent.parent, "build")
    assert_refused(done, "issue.md:4: the front matter uses an anchor (&name)", "write the value out")
    assert peak < MEMORY_MB and seconds < SECONDS


def test_a_markdown_file_too_large(run, project, issue_dir):
    write(issue_dir / "09-stor.md", "---\ntitle: Stor\n---\n" + "x" * (3 << 20))
    result = run("check")
    assert "09-stor.md: the file is 3 MB; an article is at most 2 MB" in result.stdout


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        (["Oslo", "0301", "Oslo", "2019", "Veitrafikk", "x", "CO2", "1e308"], "'1e308' is not a number of tonnes"),
        (
            ["Oslo", "0301", "Oslo", "1e30", "Veitrafikk", "x", "CO2", "1"],
            "year '1e30' is not a year from 1900 to 2100",
        ),
        (["Oslo", "0301", "Oslo", "2019", "Veitrafikk", "x", "CO2", "inf"], "'inf' is not a number of tonnes"),
        (
            ["Oslo", "0301", "Oslo", "2019", "Veitrafikk", "x", "CO2", "12345678901234567890"],
            "is not a number of tonnes",
        ),
        (["Oslo", "0301", "Oslo", "12345678901234567890", "Veitrafikk", "x", "CO2", "1"], "is not a year"),
        (["Oslo", "0301", "Oslo", "-2019", "Veitrafikk", "x", "CO2", "1"], "year '-2019' is not a year"),
        (["Oslo", "0301", "Oslo", "2019.5", "Veitrafikk", "x", "CO2", "1"], "year '2019.5' is not a year"),
    ],
)
def test_numbers_that_cannot_be_right(run, project, tmp_path, imported_before, row, fragment):
    import synthetic_emissions as synth

    path = tmp_path / "tall.csv"
    synth.write_csv(path, [*synth.rows(years=(2019, 2020)), row, row])  # twice: a sum could overflow
    line = assert_error(run("emissions", "import", str(path)), "tall.csv:", fragment)
    assert "Traceback" not in line
    assert rows(project, "SELECT COUNT(*), SUM(tonnes) FROM emissions") == imported_before


def test_negative_emissions_are_kept_and_counted(run, project, tmp_path):
    import synthetic_emissions as synth

    path = tmp_path / "opptak.csv"
    synth.write_csv(path, [*synth.rows(years=(2019, 2020)),
                           ["Oslo", "0301", "Oslo", "2020", "Jordbruk", "Skog", "CO2", "-1234,5"]])  # fmt: skip
    result = run("emissions", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "negative: 1 rows (removals" in result.stdout


def test_raw_html_passes_an_allowlist_and_check_names_what_went(run, project, issue_dir, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_MARKDOWN_ALLOW_RAW_HTML", "true")
    write(
        issue_dir / "06-rå.md",
        '---\ntitle: Rå\n---\nHei <b onclick="alert(1)">du</b>\n\n<script>alert(2)</script>\n\n'
        '<iframe src="https://example.org"></iframe>\n\n<a href="javascript:alert(3)">x</a> <span style="color:red">ok</span>\n',
    )
    out = run("check").stdout
    for what in ("the onclick attribute of <b>", "<script>", "<iframe>", "the javascript: address in <a href>"):
        assert f"raw HTML: {what} was removed" in out, (what, out)
    assert "06-rå.md:4:" in out and "06-rå.md:6:" in out
    assert run("build").exit_code == 0
    html = (project / "build" / SAMPLE_ISSUE / "email.html").read_text(encoding="utf-8")
    assert "alert(" not in html and "<iframe" not in html and "onclick" not in html
    assert '<span style="color:red">ok</span>' in html


def test_limits_that_cannot_be_walked_around(project, tmp_path, issue_dir, run):
    """A quoted field that carries one row over many lines, an alias behind a line that only one
    YAML scanner stumbles on, shared strings under another case, an oversized workbook.xml."""
    path = tmp_path / "sitat.csv"
    path.write_text('e-post,navn\na@example.no,"' + ("x" * 1000 + "\n") * 2000 + '"\n', encoding="utf-8")
    done, peak, seconds = run_process(project, "subscribers", "import", str(path))
    assert_refused(done, "sitat.csv:2: the row goes on for more than 1 MB", "a quote that is never closed?")
    write(issue_dir / "issue.md", "---\ntitle: T\ndate: 2026-12-03\nx: |#\na: &a [1]\nsections: *a\n---\nTekst\n")
    assert_error(run("build"), "issue.md:5: the front matter uses an anchor (&name)")
    for name, size in (("xl/SharedStrings.xml", 70), ("xl/workbook.xml", 20)):
        parts: dict = {"xl/worksheets/sheet1.xml": b"<worksheet><sheetData></sheetData></worksheet>"}
        if name == "xl/workbook.xml":
            big = tmp_path / "arbeidsbok.xlsx"
            with (
                zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
                archive.open(name, "w", force_zip64=True) as handle,
            ):
                for _ in range(size):
                    handle.write(b"<!-- " + b"Lillestr\xc3\xb8m " * 100_000 + b" -->")
        else:
            parts[name] = (b"<si><t>" + b"Lillestr\xc3\xb8m " * 1000 + b"</t></si>", size * 100)
            big = workbook(tmp_path / "stor.xlsx", parts)
        done, peak, seconds = run_process(project, "emissions", "import", str(big))
        assert_refused(done, f"its part {name} unpacks to")
        assert peak < MEMORY_MB and seconds < SECONDS
