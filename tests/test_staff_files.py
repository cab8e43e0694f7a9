"""Subscriber lists as Norwegian Excel saves them: every format staff meet, read and reported."""

from __future__ import annotations

import pytest
from conftest import assert_error, rows

ROWS = [("E-post", "Navn", "Kommune", "Språk", "Emner"),
        ("kari@example.no", "Kåre Ærlig Østby", "Lillestrøm", "norsk", "klima"),
        ("ola@example.no", "Ola Nordmann", "3205", "engelsk", "areal, klima")]  # fmt: skip


def text(separator: str) -> str:
    """The rows as Excel writes them: quoted where a cell holds the separator."""
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, delimiter=separator, lineterminator="\r\n").writerows(ROWS)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "read_as"),
    [
        ("utf8.csv", text(",").encode("utf-8"), "UTF-8 text, separated by commas"),
        ("bom.csv", text(";").encode("utf-8-sig"), "UTF-8 text, separated by semicolons"),
        (
            "semikolondelt.csv",
            text(";").encode("cp1252"),
            "Windows-1252 (Excel's 'CSV (semikolondelt)') text, separated by semicolons",
        ),
        ("unicode.txt", text("\t").encode("utf-16"), "UTF-16 (Excel's 'Unicode-tekst') text, separated by tabs"),
    ],
)
def test_text_as_excel_saves_it(run, project, tmp_path, name, data, read_as):
    path = tmp_path / name
    path.write_bytes(data)
    result = run("subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 0, result.output
    assert f"Read {name} as {read_as}." in result.stdout and "Added 2" in result.stdout
    assert rows(project, "SELECT email, name, municipality, language, topics FROM subscribers ORDER BY email") == [
        ("kari@example.no", "Kåre Ærlig Østby", "3205", "nb", "klima"),
        ("ola@example.no", "Ola Nordmann", "3205", "en", "areal,klima"),
    ]


def test_a_workbook(run, project, tmp_path):
    import xlsxwriter

    path = tmp_path / "liste.xlsx"
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("Ark1")
    for r, row in enumerate(ROWS):
        for c, value in enumerate(row):
            sheet.write(r, c, int(value) if value.isdigit() else value)  # Excel keeps 3205 as a number
    book.close()
    result = run("subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 0, result.output
    assert "Read liste.xlsx as an Excel workbook (.xlsx), its first sheet." in result.stdout
    assert rows(project, "SELECT municipality FROM subscribers ORDER BY email") == [("3205",), ("3205",)]


def test_a_file_in_no_encoding_it_knows_names_the_line(run, project, tmp_path):
    path = tmp_path / "rart.csv"
    path.write_bytes(text(",").encode("utf-8") + b"per@example.no,P\x81r\r\n")  # 0x81: nothing in Windows-1252
    assert_error(run("subscribers", "import", str(path)), "rart.csv:4: not text in an encoding newsletter reads")
    assert rows(project, "SELECT COUNT(*) FROM subscribers") == [(0,)]


def test_an_old_excel_file_says_what_to_do(run, project, tmp_path):
    path = tmp_path / "gammel.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)
    assert_error(run("subscribers", "import", str(path)), "an old Excel workbook (.xls); save it as .xlsx")


def test_a_damaged_workbook_says_so_in_plain_words(run, project, tmp_path):
    import xlsxwriter

    whole = tmp_path / "hel.xlsx"
    book = xlsxwriter.Workbook(str(whole))
    book.add_worksheet("Ark1").write(0, 0, "E-post")
    book.close()
    cut = tmp_path / "tom.xlsx"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])  # a download cut short
    for command in (("subscribers", "import"), ("emissions", "import")):
        line = assert_error(run(*command, str(cut)), "tom.xlsx: the workbook is damaged or incomplete", "save it again")
        assert "EOCD" not in line and "Zip" not in line
    headless = tmp_path / "ikke.xlsx"  # named a workbook, not one from its first byte: not read as a text list
    headless.write_bytes(whole.read_bytes()[100:])
    assert_error(
        run("subscribers", "import", str(headless)), "ikke.xlsx: the name says workbook, but the file is not one"
    )


def test_columns_it_does_not_know_are_named_not_dropped_in_silence(run, project, tmp_path):
    path = tmp_path / "liste.csv"
    path.write_text("Epostadresse;Fornavn;Bosted\nkari@example.no;Kari;Asker\n", encoding="utf-8")
    result = run("subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 0, result.output
    assert "the column(s) 'Fornavn', 'Bosted' were not read" in result.stderr and "Navn, Kommune" in result.stderr
    exported = tmp_path / "eksport.csv"
    exported.write_text(run("subscribers", "export").stdout, encoding="utf-8")
    again = run("subscribers", "import", str(exported), "--confirmed")  # an export's own columns are expected
    assert again.exit_code == 0 and "were not read" not in again.stderr, again.output


def test_new_people_without_confirmed_are_told_they_wait_and_get_nothing(run, project, tmp_path):
    path = tmp_path / "liste.csv"
    path.write_text("E-post\nkari@example.no\nola@example.no\n", encoding="utf-8")
    result = run("subscribers", "import", str(path))
    assert "2 new subscriber(s) wait for confirmation (pending): no email was sent" in result.stderr
    assert "--confirmed" in result.stderr
    added = run("subscribers", "add", "per@example.no")
    assert "1 new subscriber(s) wait for confirmation" in added.stderr


def test_many_rejected_rows_go_to_a_file_for_excel(run, project, tmp_path):
    path = tmp_path / "liste.csv"
    path.write_text(
        "E-post\n" + "".join(f"ikke-en-adresse-{n}\n" for n in range(25)) + "ok@example.no\n", encoding="utf-8"
    )
    result = run("subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 1 and result.stderr.count("rejected: ") == 10
    listed = tmp_path / "liste-rejected.csv"
    assert f"15 more rejected rows: all of them, with the reasons, are in {listed}" in result.stderr
    lines = listed.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0] == "line;reason;E-post" and len(lines) == 26 and lines[1].startswith("2;")
    assert lines[1].endswith(";ikke-en-adresse-0")  # the row itself, as the file has it: to fix in place
    # fixed in Excel, the rejected file imports as it is: its own two columns are not read
    fixed = listed.read_text(encoding="utf-8-sig").replace("ikke-en-adresse-", "rettet-")
    fixed = "\n".join(line if n == 0 else line + "@example.no" for n, line in enumerate(fixed.splitlines()))
    listed.write_text(fixed + "\n", encoding="utf-8-sig")
    assert "fix them in liste-rejected.csv and import that file" in result.stderr
    again = run("subscribers", "import", str(listed), "--confirmed")
    assert again.exit_code == 0 and "Added 25," in again.stdout, again.output
    assert "'line'" not in again.stderr  # its own columns are not called columns that were not read
    redo = run("subscribers", "import", str(path), "--dry-run")  # the first list again: the fixed file stays
    assert "liste-rejected-2.csv" in redo.stderr and "rettet-0@example.no" in listed.read_text(encoding="utf-8-sig")


def test_third_trial_remove_guesses_dry_run_says_would_and_status_finds_the_last_send(run, project, tmp_path):
    from conftest import SAMPLE_ISSUE, subscribe

    subscribe("kari.nordmann@example.com")
    assert_error(run("subscribers", "remove", "kari.nordman@example.com"), "is not on the list",
                 "did you mean 'kari.nordmann@example.com'")  # fmt: skip
    path = tmp_path / "liste.csv"
    path.write_text("E-post\nny@example.no\n", encoding="utf-8")
    dry = run("subscribers", "import", str(path), "--dry-run")
    assert "1 new subscriber(s) would wait for confirmation" in dry.stderr and "no email was sent" not in dry.stderr
    assert run("send", "--yes").exit_code == 0
    run("new", "Januar", "--date", "2099-01-14")  # the newest issue now, not sent
    shown = run("status")
    assert shown.exit_code == 0 and SAMPLE_ISSUE in shown.stdout, shown.output
