"""Emission imports (XLSX and both CSV forms), the reference table, errors, and the highlights."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import date
from html import unescape

import pytest
import synthetic_emissions as synth
from conftest import SAMPLE_ISSUE, assert_error, write

from newsletter.build import build_issue, prepare
from newsletter.compose import Recipient
from newsletter.config import load_settings
from newsletter.emissions import (
    find_municipality,
    format_number,
    format_pct,
    import_emissions,
    published_year,
    read_members,
    read_sectors,
    sectors_file,
    summarize,
)
from newsletter.errors import EmissionsError
from newsletter.message import build_message
from newsletter.store import database

# Osloregionen's presentation, 2019 -> 2020: change in tonnes per sector, and the total.
PRESENTATION = {
    "Annen mobil forbrenning": -27_366,
    "Avfall og avløp": -19_969,
    "Energiforsyning": -21_889,
    "Industri, olje og gass": -82_123,
    "Jordbruk": 5_285,
    "Luftfart": -152_353,
    "Oppvarming": 487,
    "Sjøfart": -92_400,
    "Veitrafikk": -171_962,
}


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    """The same synthetic rows as XLSX (CO₂ header), comma CSV, Norwegian CSV, and in 2020-2023 numbering."""
    folder = tmp_path_factory.mktemp("emissions")
    rows_2024 = synth.rows(years=(2019, 2020))
    rows_2020 = synth.rows(years=(2019, 2020), numbering="2020")
    return {
        "xlsx": synth.write_xlsx(folder / "kommune.xlsx", rows_2024),
        "csv": synth.write_csv(folder / "kommune.csv", rows_2024),
        "csv-nb": synth.write_csv(folder / "kommune-excel.csv", rows_2024, norwegian=True),
        "xlsx-2020": synth.write_xlsx(folder / "kommune-2020.xlsx", rows_2020, co2_subscript=False),
        "xlsx-shared": synth.write_xlsx(folder / "kommune-delt.xlsx", rows_2024, shared_strings=True),
    }


def _import(settings, path, release="r"):
    with database(settings.database) as conn:
        return import_emissions(
            conn, path, release, read_members(settings.emissions_members), read_sectors(sectors_file(settings))
        )


def _region(settings, release="r", start=2019, end=2020):
    members = read_members(settings.emissions_members)
    with database(settings.database) as conn:
        return summarize(conn, release, "Osloregionen", [n for m in members for n in m.numbers], start, end)


@pytest.mark.parametrize("kind", ["xlsx", "csv", "csv-nb", "xlsx-2020", "xlsx-shared"])
def test_reference_table_from_every_file_form(project, fixture_files, kind):
    settings = load_settings()
    report = _import(settings, fixture_files[kind])
    assert report.municipalities == 70 and report.years == (2019, 2020)
    assert report.numbering == ("2020" if kind == "xlsx-2020" else "2024")
    assert report.zero_rows > report.rows / 4  # about a third are zeros, as in real files
    assert set(report.sectors) == set(PRESENTATION)  # trailing spaces and _x000D_ are cleaned
    summary = _region(settings)
    assert {c.sector: round(c.change_tonnes) for c in summary.sectors} == PRESENTATION
    assert round(summary.total.change_tonnes) == -562_289
    assert round(summary.total.change_pct) == -7
    aviation = next(c for c in summary.sectors if c.sector == "Luftfart")
    assert round(aviation.change_pct, 1) == -54.5  # against 2019, not the presentation's -120 %
    assert 21 < summary.share_of_all_pct < 23


def test_json_shape(project, run):
    settings = load_settings()
    _import(settings, project / "data/klimagassutslipp-syntetisk.csv", "2026-syntetisk")
    result = run("emissions", "summary", "--from", "2019", "--to", "2020", "--format", "json")
    data = json.loads(result.stdout)
    assert list(data) == [
        "area",
        "from_year",
        "to_year",
        "release",
        "sectors",
        "total",
        "share_of_all_municipalities_pct",
    ]
    assert data["area"] == "Osloregionen" and data["release"] == "2026-syntetisk"
    assert data["from_year"] == 2019 and data["to_year"] == 2020
    assert list(data["sectors"][0]) == ["sector", "from_tonnes", "to_tonnes", "change_tonnes", "change_pct"]
    assert all(isinstance(v, float) for s in data["sectors"] for k, v in s.items() if k != "sector")
    assert data["total"]["change_tonnes"] == pytest.approx(-562_288.8)  # unrounded
    assert data["total"]["change_pct"] == -7.1
    aviation = next(s for s in data["sectors"] if s["sector"] == "Luftfart")
    assert aviation["change_pct"] == -54.5
    assert isinstance(data["share_of_all_municipalities_pct"], float)


def test_table_uses_norwegian_number_format(project, run):
    _import(load_settings(), project / "data/klimagassutslipp-syntetisk.csv")
    table = run("emissions", "summary", "--from", "2019", "--to", "2020").stdout
    assert "Veitrafikk" in table and "\u2212171\u00a0962" in table and "\u221254,5\u00a0%" in table
    assert "Totalt" in table and "\u2212562\u00a0289" in table and "\u22127,1\u00a0%" in table
    assert not re.search(r"-\d", table)  # a real minus sign, never a hyphen, before numbers
    csv_out = run("emissions", "summary", "--from", "2019", "--to", "2020", "--format", "csv").stdout
    assert csv_out.splitlines()[0] == "sector,from_tonnes,to_tonnes,change_tonnes,change_pct"
    assert any(
        line.startswith("Luftfart,279547.0,127194.0,") and line.endswith(",-54.5") for line in csv_out.splitlines()
    )
    # sums of decimal figures print as the figures are, not as binary fractions (-129808.20000000019)
    latest = (
        run("emissions", "summary", "--format", "csv").stdout + run("emissions", "summary", "--format", "json").stdout
    )
    assert "-129808.2," in latest and not re.search(r"\.\d{7,}", latest), latest


def test_number_formats():
    assert format_number(-562289.4, "nb") == "\u2212562\u00a0289"
    assert format_number(5285, "nb", sign=True) == "+5\u00a0285"
    assert format_number(-0.2, "nb") == "0"
    assert format_number(-562289.4, "en") == "\u2212562,289"
    assert format_pct(-7.14, "nb") == "\u22127,1\u00a0%"
    assert format_pct(-7.14, "en") == "\u22127.1%"
    assert format_pct(None, "nb") == "–"


def test_municipality_by_number_in_either_numbering_and_by_name(project):
    settings = load_settings()
    _import(settings, project / "data/klimagassutslipp-syntetisk.csv")
    members = read_members(settings.emissions_members)
    with database(settings.database) as conn:
        assert find_municipality(conn, "r", "3205", members) == ("Lillestrøm", ("3030", "3205"))
        assert find_municipality(conn, "r", "3030", members) == ("Lillestrøm", ("3030", "3205"))
        assert find_municipality(conn, "r", "lillestrøm", members)[0] == "Lillestrøm"
        assert find_municipality(conn, "r", "Skiptvet", members)[0] == "Skiptvedt"  # official spelling
        assert find_municipality(conn, "r", "3419", members) == ("Våler", ("3419",))  # the other Våler
        with pytest.raises(EmissionsError, match="no municipality 'Atlantis'"):
            find_municipality(conn, "r", "Atlantis", members)


def test_share_is_null_when_the_release_holds_only_the_region(project, tmp_path):
    only_members = [
        row
        for row in synth.rows(years=(2019, 2020))
        if row[2] not in {"Bergen", "Trondheim", "Stavanger", "Bodø", "Tromsø"} and row[1] != "3419"
    ]
    settings = load_settings()
    _import(settings, synth.write_csv(tmp_path / "region.csv", only_members))
    summary = _region(settings)
    assert summary.share_of_all_pct is None
    assert summary.as_json()["share_of_all_municipalities_pct"] is None


def test_bad_files_give_clear_errors_and_keep_the_previous_data(project, run, tmp_path):
    settings = load_settings()
    _import(settings, project / "data/klimagassutslipp-syntetisk.csv", "2025")
    before = _region(settings, "2025")

    header = ",".join(synth.HEADER)
    missing = write(tmp_path / "mangler.csv", "Fylke,Kommunenummer,Kommune,År,Sektor\nOslo,0301,Oslo,2019,Veitrafikk\n")
    assert_error(run("emissions", "import", str(missing), "--release", "2025"),
                 "mangler.csv:1: missing column(s) Utslippskilde, Klimagass, Utslipp (tonn CO2-ekvivalenter)")  # fmt: skip
    bad_value = write(
        tmp_path / "verdi.csv",
        f"{header}\nOslo,0301,Oslo,2019,Veitrafikk,Personbiler,CO2,12\nOslo,0301,Oslo,2019,Veitrafikk,Personbiler,CH4,mye\n",
    )
    assert_error(
        run("emissions", "import", str(bad_value), "--release", "2025"), "verdi.csv:3: emission 'mye' is not a number"
    )
    bad_year = write(tmp_path / "aar.csv", f"{header}\nOslo,0301,Oslo,i fjor,Veitrafikk,Personbiler,CO2,12\n")
    assert_error(
        run("emissions", "import", str(bad_year), "--release", "2025"), "aar.csv:2: year 'i fjor' is not a year"
    )
    assert_error(
        run("emissions", "import", str(write(tmp_path / "tom.csv", "")), "--release", "2025"),
        "tom.csv: the file is empty",
    )
    not_excel = write(tmp_path / "feil.xlsx", "dette er ikke et regneark")
    assert_error(run("emissions", "import", str(not_excel), "--release", "2025"), "feil.xlsx: the workbook is damaged")
    assert_error(run("emissions", "import", str(tmp_path / "finnes-ikke.csv")), "finnes-ikke.csv")
    assert_error(run("emissions", "import", str(write(tmp_path / "data.json", "{}"))), "unknown file type .json")

    import xlsxwriter

    wrong_sheet = tmp_path / "ark.xlsx"
    workbook = xlsxwriter.Workbook(str(wrong_sheet))
    workbook.add_worksheet("Ark1").write_row(0, 0, synth.HEADER)
    workbook.close()
    assert_error(run("emissions", "import", str(wrong_sheet)), "no sheet named 'Oversikt - detaljert'", "Ark1")

    assert _region(settings, "2025") == before  # every failure left the release as it was


def test_unknown_sector_is_imported_and_reported(project, run, tmp_path):
    rows = [
        *synth.rows(years=(2019, 2020)),
        ["Oslo", "0301", "Oslo", 2020, "Bruk av produkter med fluorgasser", "Kjøling", "HFK", 10.0],
        ["Oslo", "0301", "Oslo", 2020, "Romfart", "Raketter", "CO2", 5.0],
    ]
    path = synth.write_csv(tmp_path / "ny.csv", rows)
    result = run("emissions", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "Warning: new sector(s) not in the sector list, imported as they are: Romfart" in result.stderr
    assert "Imported release 'ny'" in result.stdout and "municipalities: 70" in result.stdout


def test_warnings_for_impossible_and_missing_data(project, run, tmp_path):
    rows = [r for r in synth.rows(years=(2019, 2020)) if not (r[4] == "Sjøfart" and r[3] == 2020)]
    rows += [["Oslo", "0301", "Oslo", 2020, "Luftfart", "Innenriks luftfart", "CO2", -400_000.0]]
    _import(load_settings(), synth.write_csv(tmp_path / "rar.csv", rows))
    result = run("emissions", "summary", "--from", "2019", "--to", "2020")
    assert result.exit_code == 0
    assert "Osloregionen: sector Sjøfart has no data for 2020 (counted as 0)" in result.stderr
    assert "Osloregionen: Luftfart falls" in result.stderr and "more than 100 %" in result.stderr
    backwards = run("emissions", "summary", "--from", "2020", "--to", "2019")
    assert "the from-year 2020 is after the to-year 2019" in backwards.stderr
    assert_error(run("emissions", "summary", "--from", "2015", "--to", "2020"), "no emissions for Osloregionen in 2015")
    assert_error(run("emissions", "summary", "--release", "1999"), "no release '1999'")


def test_summary_without_data(project, run):
    assert_error(run("emissions", "summary"), "no emission data imported yet")


def test_highlights_and_municipality_blocks_in_the_issue(project, issue_dir):
    settings = load_settings()
    _import(settings, project / "data/klimagassutslipp-syntetisk.csv", "syntetisk")
    prepared = prepare(settings)
    assert prepared.findings == ()
    rendered = prepared.rendered
    members = read_members(settings.emissions_members)
    assert set(rendered.municipal) == {n for m in members for n in m.numbers}  # either numbering
    assert len({id(block) for block in rendered.municipal.values()}) <= 64  # built once per municipality

    def message(municipality):
        msg = build_message(settings, rendered, Recipient("a@example.com", municipality=municipality), prepared.strings)
        text, html = (part.get_content() for part in msg.iter_parts())
        return text, unescape(html)

    text, html = message("3201")  # Bærum, 2024 number
    assert "Utslippene i Osloregionen gikk ned 2,6\u00a0% fra 2023 til 2024" in html
    assert "Størst nedgang i tonn: Veitrafikk" in html and "Økte: Luftfart" in html
    assert "sto for 22,2\u00a0% av utslippene i alle landets kommuner i 2024" in html
    assert "Av utslippene fra veitrafikk sto Osloregionen for" in html
    assert "Kilde: Miljødirektoratet" in html and "utgivelse syntetisk" in html
    assert html.count('class="bar-fall"') == 8 and html.count('class="bar-rise"') == 1
    assert "Din kommune" in html and "Bærum: ned" in html and "Bærum: ned" in text
    assert "Bærum: ned" in message("3024")[1]  # the 2020-2023 number finds the same block
    for outsider in (None, "4601"):  # no municipality, or not a member
        text, html = message(outsider)
        assert "Din kommune" not in html and "Din kommune" not in text
        assert "Utslippene i Osloregionen gikk ned" in html


def test_english_highlights(project, issue_dir):
    settings = load_settings()
    _import(settings, project / "data/klimagassutslipp-syntetisk.csv", "syntetisk")
    path = issue_dir / "issue.md"
    path.write_text(path.read_text(encoding="utf-8").replace("language: nb", "language: en"), encoding="utf-8")
    html = unescape((build_issue(settings).out_dir / "email.html").read_text(encoding="utf-8"))
    assert "Emissions in Osloregionen fell 2.6% from 2023 to 2024" in html
    assert "Largest fall in tonnes: Road traffic" in html and "Rose: Aviation" in html
    assert "Your municipality" in html and "Lillestrøm: down" in html


def test_the_age_of_the_figures_follows_miljodirektoratets_calendar(project, issue_dir, run):
    # year Y is published in the spring of Y+2: in January 2027 the newest is still 2024, in August 2027 2025
    assert [published_year(date(2027, 1, 15)), published_year(date(2027, 6, 30)), published_year(date(2027, 8, 1))] == [
        2024,
        2024,
        2025,
    ]
    settings = load_settings()
    _import(settings, project / "data/klimagassutslipp-syntetisk.csv", "syntetisk")  # goes to 2024
    path = issue_dir / "issue.md"
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace("date: 2026-12-03", "date: 2027-01-14"), encoding="utf-8")
    assert "Miljødirektoratet" not in run("build").stderr  # no false alarm every January
    path.write_text(original.replace("date: 2026-12-03", "date: 2027-09-02"), encoding="utf-8")
    warned = run("build").stderr
    assert "the emission figures go to 2024, but Miljødirektoratet has published 2025" in warned
    assert "newsletter emissions import FILE" in warned


def test_front_matter_years_release_and_warnings(project, issue_dir, run):
    settings = load_settings()
    _import(settings, project / "data/klimagassutslipp-syntetisk.csv", "syntetisk")
    path = issue_dir / "issue.md"
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace("emissions: latest", "emissions: {from: 2019, to: 2020}"), encoding="utf-8")
    result = run("build")
    assert result.exit_code == 0
    assert "the newest emission year shown is 2020, but the figures go to 2024" in result.stderr
    assert "Miljødirektoratet has published" not in result.stderr  # 2024 is the newest in December 2026
    html = unescape((project / "build" / SAMPLE_ISSUE / "email.html").read_text(encoding="utf-8"))
    assert "gikk ned 7,1\u00a0% fra 2019 til 2020 (\u2212562\u00a0289 tonn" in html
    path.write_text(
        original.replace("emissions: latest", 'emissions: {from: 2019, to: 2020, release: "2019"}'), encoding="utf-8"
    )
    assert_error(run("build"), "issue.md: no release '2019'")
    path.write_text(original.replace("emissions: latest", "emissions: {from: 2019}"), encoding="utf-8")
    assert_error(run("build"), "'emissions' must be 'latest' or from/to years")
    path.write_text(original.replace("emissions: latest", "emissions: {from: i fjor, to: 2020}"), encoding="utf-8")
    assert_error(run("build"), "emissions from and to must be years")


def test_stored_rows_are_per_municipality_year_and_sector(project):
    settings = load_settings()
    report = _import(settings, project / "data/klimagassutslipp-syntetisk.csv")
    conn = sqlite3.connect(settings.database.file)
    stored = conn.execute("SELECT COUNT(*) FROM emissions WHERE release = 'r'").fetchone()[0]
    assert stored == 70 * 4 * 9 < report.rows  # summed over sources and gases


@pytest.mark.parametrize("kind", ["xlsx", "xlsx-shared", "xlsx-2020"])
def test_streaming_reader_agrees_with_calamine(fixture_files, kind):
    """The streaming .xlsx reader (fast and general paths) gives exactly what calamine gives."""
    from newsletter.emissions import _Aggregator, _find_header, _read_xlsx_streaming, _rows_xlsx, read_emissions

    path = fixture_files[kind]
    totals, names, report = read_emissions(path, synth.REFERENCE)
    aggregate = None
    for line, row in _rows_xlsx(path):
        if aggregate is not None:
            aggregate.add(line, row)
        elif (header := _find_header(path, line, row)) is not None:
            aggregate = _Aggregator(path, header, set(synth.REFERENCE))
    assert {k: round(v, 6) for k, v in totals.items()} == {k: round(sum(v), 6) for k, v in aggregate.totals.items()}
    assert names == aggregate.names and report.rows == aggregate.count and report.zero_rows == aggregate.zeros
    # read_emissions falls back to calamine quietly; the streaming reader itself, with blocks small
    # enough that most rows take its fast path (the fixtures are smaller than one 8 MB block):
    streamed = _read_xlsx_streaming(path, set(synth.REFERENCE), block_size=20_000)
    assert streamed is not None
    assert {k: round(sum(v), 6) for k, v in streamed.totals.items()} == {k: round(v, 6) for k, v in totals.items()}
    assert streamed.names == names and streamed.count == report.rows and streamed.zeros == report.zero_rows


def test_streaming_reader_handles_gaps_formulas_and_escapes(tmp_path):
    """Rows with empty cells left out, formulas, inline and escaped strings take the general path."""
    import xlsxwriter

    from newsletter.emissions import read_emissions

    path = tmp_path / "rar.xlsx"
    workbook = xlsxwriter.Workbook(str(path))
    sheet = workbook.add_worksheet("Oversikt - detaljert")
    sheet.write_row(0, 0, synth.HEADER)
    sheet.write_row(1, 0, ["Oslo", "0301", "Oslo", 2020, "Veitrafikk", "Personbiler", "CO2", 10.5])
    sheet.write_row(2, 1, ["0301", "Oslo", 2020, "Veitrafikk_x000D_", "Personbiler", "CH4"])  # no county, no value
    sheet.write_formula(2, 7, "=1+1", None, 2)
    sheet.write_row(3, 0, ["Oslo", "0301", "Oslo", 2020, "Luftfart & co", "Fly", "CO2", 1])
    workbook.close()
    totals, names, report = read_emissions(path, ["Veitrafikk", "Luftfart & co"])
    assert totals == {("0301", 2020, "Veitrafikk"): 12.5, ("0301", 2020, "Luftfart & co"): 1.0}
    assert report.unknown_sectors == () and names["0301"] == ("Oslo", "Oslo")


def test_damaged_workbooks_and_sector_lists_give_clear_errors(project, run, tmp_path, fixture_files, monkeypatch):
    import shutil
    import zipfile

    damaged = tmp_path / "skadet.xlsx"
    with zipfile.ZipFile(fixture_files["xlsx-shared"]) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/sharedStrings.xml":
                data = data[: len(data) // 2]  # cut off in the middle
            target.writestr(item, data)
    assert_error(run("emissions", "import", str(damaged)), "skadet.xlsx: not a readable Excel workbook")
    monkeypatch.setenv("NEWSLETTER_EMISSIONS_SECTORS", str(tmp_path / "finnes-ikke.csv"))
    shutil.copy(fixture_files["csv"], tmp_path / "ok.csv")
    assert_error(run("emissions", "import", str(tmp_path / "ok.csv")), "finnes-ikke.csv: cannot read the sector list")


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_grouped_streaming_agrees_with_the_cell_by_cell_reader_on_odd_random_workbooks(tmp_path, monkeypatch, seed):
    """The fastest path groups a block's rows by their raw key cells and converts each group's
    values at once; on random workbooks with odd cells among ordinary ones (numbers written as
    text, empty and non-numeric values, zeros, negatives, huge values, years as text, unknown
    municipalities, new sectors late in the file), it gives what reading every row cell by cell
    gives: the same sums, names and counts, or the same error."""
    import random

    import xlsxwriter

    from newsletter.emissions import _Aggregator, _find_header, _read_xlsx_streaming, _rows_xlsx

    grouped = []  # blocks the grouped path took (the others went row by row)
    add_groups = _Aggregator.add_groups

    def counted(self, *args):
        taken = add_groups(self, *args)
        grouped.append(taken)
        return taken

    monkeypatch.setattr(_Aggregator, "add_groups", counted)
    rng = random.Random(seed)
    path = tmp_path / f"odd{seed}.xlsx"
    inline = seed % 3 == 0  # inline strings (xlsxwriter's constant memory) take the other paths
    workbook = xlsxwriter.Workbook(str(path), {"constant_memory": inline})
    sheet = workbook.add_worksheet("Oversikt - detaljert")
    sheet.write_row(0, 0, synth.HEADER)
    places = [("Oslo", "0301", "Oslo"), ("Akershus", "3201", "Bærum"), ("Akershus", "3203", "Asker"),
              ("Buskerud", "3301", "Drammen"), ("Utland", "9999", "Ukjent")]  # fmt: skip
    sectors = list(synth.REFERENCE)
    odd = [lambda: "12,5", lambda: "", lambda: 0, lambda: -3.25, lambda: 1e12, lambda: "7", lambda: " 8 "]
    if seed % 2:
        odd.append(lambda: "x")  # not a number: the whole import stops, at that row
    for n in range(1, 1500):
        county, number, name = rng.choice(places)
        number = "" if rng.random() < 0.005 else number  # no municipality number: left out, and counted
        year = rng.choice([2019, 2020, 2021])
        sector = rng.choice(sectors if n < 1200 else [*sectors, "Ny sektor"])
        value = rng.choice(odd)() if rng.random() < 0.02 else round(rng.uniform(0, 5000), 3)
        row = [county, number, name, str(year) if rng.random() < 0.01 else year, sector, "Kilde", "CO2", value]
        sheet.write_row(n, 0, row)
    workbook.close()

    def outcome(read):
        try:
            aggregate = read()
        except EmissionsError as exc:
            return ("error", str(exc))
        totals = {key: round(sum(values), 6) for key, values in aggregate.totals.items()}
        counts = (aggregate.count, aggregate.zeros, aggregate.negatives, aggregate.ignored, aggregate.empties)
        return totals, aggregate.names, counts, sorted(aggregate.sectors)

    def cell_by_cell():
        aggregate = None
        for line, row in _rows_xlsx(path):
            if aggregate is not None:
                aggregate.add(line, row)
            elif (header := _find_header(path, line, row)) is not None:
                aggregate = _Aggregator(path, header, set(synth.REFERENCE))
        return aggregate

    expected = outcome(cell_by_cell)
    grouped.clear()
    assert (expected[0] == "error") is (seed % 2 == 1), expected[:1]  # both kinds of outcome are compared
    for block_size in (3_000, 20_000, 1 << 20):
        assert (
            outcome(lambda size=block_size: _read_xlsx_streaming(path, set(synth.REFERENCE), block_size=size))
            == expected
        )
    assert inline or any(grouped)  # with shared strings, as Excel writes them, the grouped path was taken
