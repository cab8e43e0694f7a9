"""Write a SYNTHETIC national-size "Klimagassutslipp i kommuner" workbook (about 600,000 rows).

356 municipalities (Osloregionen's 64 members with their real numbers, the rest invented),
13 years, about 45 sources across the sectors, up to 3 gases each; invented values, a third
zeros. Not committed: the benchmark makes it when it is missing.

    python benchmarks/make_national_workbook.py [OUT.xlsx]
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from newsletter.emissions import COLUMNS  # noqa: E402

HEADER = [*list(COLUMNS.values())[:7], "Utslipp (tonn CO₂-ekvivalenter)"]  # the published file writes CO₂
SECTORS = {
    "Annen mobil forbrenning": ["Motorredskaper", "Snøscooter", "Fritidsbåter", "Jernbane"],
    "Avfall og avløp": ["Avfallsdeponigass", "Biologisk behandling", "Avløp", "Forbrenning uten energiutnyttelse"],
    "Energiforsyning": ["Avfallsforbrenning", "Fjernvarme", "Gasskraft", "Annen energiforsyning"],
    "Industri, olje og gass": [
        "Olje og gass",
        "Metallindustri",
        "Mineralindustri",
        "Kjemisk industri",
        "Annen industri",
        "Treforedling",
    ],
    "Jordbruk": ["Husdyr", "Gjødselhåndtering", "Dyrket mark", "Kalking", "Urea"],
    "Luftfart": ["Innenriks luftfart", "Helikopter"],
    "Oppvarming": ["Husholdninger", "Næringsbygg", "Primærnæringer", "Annen oppvarming"],
    "Sjøfart": ["Passasjerskip", "Fiskefartøy", "Godsskip", "Offshore", "Andre skip"],
    "Veitrafikk": [
        "Personbiler",
        "Lette kjøretøy",
        "Tunge kjøretøy",
        "Busser",
        "Mopeder og motorsykler",
        "Andre kjøretøy",
        "Dekk og bremser",
    ],
}  # 45 sources
GASES = ("CO2", "CH4", "N2O")
YEARS = range(2009, 2022)  # 13 years


def municipalities() -> list[tuple[str, str, str]]:
    with (ROOT / "data" / "osloregionen-members.csv").open(encoding="utf-8") as handle:
        places = [
            (row["fylke_2024"], row["kommunenummer_2024"], row["official_name"]) for row in csv.DictReader(handle)
        ]
    n = 0
    while len(places) < 356:
        n += 1
        places.append(("Oppdiktet fylke", f"{5600 + n:04d}", f"Kommune {n}"))
    return places


def main() -> None:
    import xlsxwriter

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out" / "national.xlsx"
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(356)
    # Shared strings, as in files saved by Excel (constant_memory mode would write inline strings).
    workbook = xlsxwriter.Workbook(str(out))
    workbook.add_worksheet("Oversikt - sektorfordelt").write_row(0, 0, ["SYNTETISKE DATA"])
    sheet = workbook.add_worksheet("Oversikt - detaljert")
    sheet.write_row(0, 0, HEADER)
    row = 1
    for county, number, name in municipalities():
        for year in YEARS:
            for sector, sources in SECTORS.items():
                for source in sources:
                    for gas in GASES[: 3 if (int(number) + len(source)) % 7 else 2]:
                        value = 0.0 if rng.random() < 0.33 else round(rng.uniform(0, 5000), 3)
                        sheet.write_row(row, 0, [county, number, name, year, sector, source, gas, value])
                        row += 1
    workbook.close()
    print(f"wrote {out}: {row - 1} rows")


if __name__ == "__main__":
    main()
