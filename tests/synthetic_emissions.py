"""SYNTHETIC emission data in the shape of Miljødirektoratet's "Klimagassutslipp i kommuner".

Not real figures. The rows are invented so that the sum over Osloregionen's 64 members
reproduces the table in Osloregionen's presentation for 2019 -> 2020 exactly (change in tonnes
per sector, total -562 289), while looking like the real file: all 64 members plus
non-members (including the other Våler), several years, one row per source and gas, about a
third zeros, and the label quirks of real files (trailing spaces, Excel's _x000D_).

    python tests/synthetic_emissions.py data/klimagassutslipp-syntetisk.csv

writes the sample shipped with the project (2024 numbering, CSV, comma, UTF-8).
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = [
    "Fylke",
    "Kommunenummer",
    "Kommune",
    "År",
    "Sektor",
    "Utslippskilde",
    "Klimagass",
    "Utslipp (tonn CO2-ekvivalenter)",
]

# The presentation's region table, 2019 -> 2020: (sector, 2019 tonnes (invented), change in tonnes).
# Its rows add up to -562 290 while its total says -562 289: the real changes had decimals and
# were rounded one by one. Three changes here carry +0.4 so that every row *and* the total
# round to the printed figures.
REFERENCE = {
    "Annen mobil forbrenning": (600_000.0, -27_365.6),
    "Avfall og avløp": (300_000.0, -19_968.6),
    "Energiforsyning": (700_000.0, -21_888.6),
    "Industri, olje og gass": (1_700_000.0, -82_123.0),
    "Jordbruk": (500_000.0, 5_285.0),
    "Luftfart": (279_547.0, -152_353.0),
    "Oppvarming": (250_000.0, 487.0),
    "Sjøfart": (350_000.0, -92_400.0),
    "Veitrafikk": (3_200_000.0, -171_962.0),
}
REFERENCE_TOTAL_CHANGE = -562_289.0
SOURCES = {  # one real-looking source per sector, plus a source that is always zero in some sectors
    "Annen mobil forbrenning": ["Motorredskaper"],
    "Avfall og avløp": ["Avfallsdeponigass", "Biologisk behandling av avfall"],
    "Energiforsyning": ["Avfallsforbrenning", "Fjernvarme"],
    "Industri, olje og gass": ["Industri"],
    "Jordbruk": ["Husdyr", "Gjødselhåndtering"],
    "Luftfart": ["Innenriks luftfart"],
    "Oppvarming": ["Husholdninger", "Næringsbygg"],
    "Sjøfart": ["Passasjerskip", "Fiskefartøy"],
    "Veitrafikk": ["Personbiler", "Tunge kjøretøy"],
}
GASES = (("CO2", 0.90), ("CH4", 0.07), ("N2O", 0.03))
TREND = {"Luftfart": 1.25, "Veitrafikk": 0.95, "Jordbruk": 0.99}  # per year after 2020, else 0.97
NON_MEMBERS = [  # (2020-2023 number, 2024 number, name, county 2020, county 2024, share of the non-member total)
    ("4601", "4601", "Bergen", "Vestland", "Vestland", 0.22),
    ("5001", "5001", "Trondheim", "Trøndelag", "Trøndelag", 0.18),
    ("1103", "1103", "Stavanger", "Rogaland", "Rogaland", 0.15),
    ("3419", "3419", "Våler", "Innlandet", "Innlandet", 0.05),  # the other Våler: never a member
    ("1804", "1804", "Bodø", "Nordland", "Nordland", 0.10),
    ("5401", "5501", "Tromsø", "Troms og Finnmark", "Troms", 0.30),
]
NON_MEMBER_FACTOR = 3.5  # non-members emit 3.5x the region: the region is about 22 % of all


def members() -> list[dict[str, str]]:
    with (ROOT / "data" / "osloregionen-members.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _split(total: float, weights: list[float]) -> list[float]:
    """Parts with one decimal that add up to ``total`` exactly (to one decimal)."""
    whole = sum(weights)
    parts = [round(total * w / whole, 1) for w in weights[:-1]]
    parts.append(round(total - sum(parts), 1))
    return parts


def region_values(year: int) -> dict[str, float]:
    values = {}
    for sector, (start, change) in REFERENCE.items():
        if year == 2019:
            values[sector] = start
        else:
            value = start + change
            for _ in range(2021, year + 1):
                value *= TREND.get(sector, 0.97)
            values[sector] = round(value, 1)
    return values


def rows(years=(2019, 2020, 2023, 2024), numbering: str = "2024", seed: int = 7) -> list[list[object]]:
    """Every row of a synthetic file. Values for one member, sector and year are split over sources and gases."""
    rng = random.Random(seed)
    people = members()
    weights = [3.0 if m["name"] == "Oslo" else rng.uniform(0.05, 0.6) for m in people]
    number_key, county_key = (
        ("kommunenummer_2024", "fylke_2024") if numbering == "2024" else ("kommunenummer_2020_2023", "fylke_2020_2023")
    )
    out: list[list[object]] = []
    for year in years:
        region = region_values(year)
        for sector, total in region.items():
            parts = _split(total, weights)
            others = _split(total * NON_MEMBER_FACTOR, [nm[5] for nm in NON_MEMBERS])
            places = [
                (m[county_key], m[number_key], m["official_name"], part) for m, part in zip(people, parts, strict=True)
            ] + [
                (nm[3] if numbering != "2024" else nm[4], nm[1] if numbering == "2024" else nm[0], nm[2], part)
                for nm, part in zip(NON_MEMBERS, others, strict=True)
            ]
            for county, number, name, amount in places:
                sources = SOURCES[sector]
                source_parts = _split(amount, [1.0] + [0.0] * (len(sources) - 1)) if len(sources) > 1 else [amount]
                for source, source_amount in zip(sources, source_parts, strict=True):
                    gas_parts = _split(source_amount, [w for _, w in GASES])
                    for (gas, _), value in zip(GASES, gas_parts, strict=True):
                        label = sector
                        if sector == "Veitrafikk" and number.endswith("1"):
                            label = "Veitrafikk "  # trailing space, as in real files
                        elif sector == "Jordbruk" and number.endswith("3"):
                            label = "Jordbruk_x000D_"  # Excel's escaped carriage return
                        out.append([county, number, name, year, label, source, gas, value])
    return out


def write_csv(path: Path, data: list[list[object]], norwegian: bool = False) -> Path:
    """Comma + UTF-8, or as Norwegian Excel saves CSV: semicolons, decimal comma, UTF-8 with BOM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig" if norwegian else "utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=";" if norwegian else ",")
        writer.writerow(HEADER)
        for row in data:
            if norwegian:
                row = [*row[:7], str(row[7]).replace(".", ",")]
            writer.writerow(row)
    return path


def write_xlsx(path: Path, data: list[list[object]], co2_subscript: bool = True, shared_strings: bool = False) -> Path:
    """A workbook like the published one: an overview sheet first, then 'Oversikt - detaljert'.

    Text as inline strings (xlsxwriter's constant-memory mode), or as shared strings like Excel."""
    import xlsxwriter

    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = xlsxwriter.Workbook(str(path), {"constant_memory": not shared_strings})
    overview = workbook.add_worksheet("Oversikt - sektorfordelt")
    overview.write_row(0, 0, ["SYNTETISKE DATA – ikke Miljødirektoratets tall"])
    sheet = workbook.add_worksheet("Oversikt - detaljert")
    header = list(HEADER)
    if co2_subscript:
        header[7] = "Utslipp (tonn CO₂-ekvivalenter)"
    sheet.write_row(0, 0, header)
    for n, row in enumerate(data, 1):
        sheet.write_row(n, 0, row)
    workbook.add_worksheet("Veitrafikk")
    workbook.close()
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data" / "klimagassutslipp-syntetisk.csv"
    write_csv(target, rows())
    print(f"wrote {target}")
