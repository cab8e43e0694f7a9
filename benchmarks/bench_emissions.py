"""Benchmark: importing a national-size climate-accounts workbook vs pandas.read_excel(openpyxl).

- Workbook: about 540,000 rows, synthetic, made by make_national_workbook.py when missing.
- Ours: `newsletter emissions import` as a whole process (read with python-calamine, validate,
  sum per municipality, year and sector, store in SQLite).
- Baseline: `pandas.read_excel(..., engine="openpyxl")` of the same sheet in its own process
  (reading only: no validation, no aggregation, nothing stored).
Both in the same run; wall time and peak memory (max RSS) of each process.
Targets (issue 17): at least 15x faster, peak memory at most half the baseline's; and a region summary
over the imported national release in well under a second.

    python benchmarks/bench_emissions.py

The first run installs the baseline (pip install pandas openpyxl) if it is missing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKBOOK = HERE / "out" / "national.xlsx"

MEASURE = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def measure(command: list[str]) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MB) of a command, run in a fresh process."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *command], check=True, capture_output=True, text=True)
    seconds, kilobytes = out.stdout.split()
    return float(seconds), int(kilobytes) / 1024


def main() -> None:
    import compileall

    compileall.compile_dir(str(ROOT / "newsletter"), quiet=1)  # as installing a wheel does
    if not all(importlib.util.find_spec(name) for name in ("pandas", "openpyxl")):
        print("Installing the baseline: pip install pandas openpyxl ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pandas", "openpyxl"], check=True)
    if not WORKBOOK.exists():
        subprocess.run([sys.executable, str(HERE / "make_national_workbook.py"), str(WORKBOOK)], check=True)

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        subprocess.run(
            [sys.executable, "-m", "newsletter", "init", str(project)], check=True, stdout=subprocess.DEVNULL
        )
        with (project / "newsletter.toml").open("a", encoding="utf-8") as handle:
            handle.write(
                f'\n[emissions]\nregion = "Osloregionen"\nmembers = "{ROOT / "data" / "osloregionen-members.csv"}"\n'
            )
        ours_s, ours_mb = measure(
            [
                sys.executable,
                "-m",
                "newsletter",
                "--project",
                str(project),
                "emissions",
                "import",
                str(WORKBOOK),
                "--release",
                "national",
            ]
        )
        base_s, base_mb = measure(
            [
                sys.executable,
                "-c",
                f"import pandas; pandas.read_excel({str(WORKBOOK)!r}, sheet_name='Oversikt - detaljert', engine='openpyxl')",
            ]
        )

        sys.path.insert(0, str(ROOT))
        from newsletter.config import load_settings
        from newsletter.emissions import read_members, summarize
        from newsletter.store import database

        settings = load_settings(project)
        members = read_members(settings.emissions_members)
        with database(settings.database) as conn:
            start = time.perf_counter()
            summary = summarize(conn, "national", "Osloregionen", [n for m in members for n in m.numbers], 2019, 2020)
            summary_s = time.perf_counter() - start

    print(f"workbook: {WORKBOOK.name}, {WORKBOOK.stat().st_size / 1e6:.1f} MB")
    print(f"newsletter emissions import (whole process) : {ours_s:6.2f} s  peak {ours_mb:6.0f} MB")
    print(f"pandas.read_excel, openpyxl (read only)     : {base_s:6.2f} s  peak {base_mb:6.0f} MB   <- baseline")
    speedup = base_s / ours_s
    print(f"speed-up baseline / ours                    : {speedup:6.1f}x  (target >= 15x)")
    print(f"peak memory ours / baseline                 : {ours_mb / base_mb:6.2f}   (target <= 0.5)")
    print(
        f"region summary over the national release    : {summary_s * 1000:6.1f} ms ({len(summary.sectors)} sectors; target well under 1 s)"
    )
    ok = speedup >= 15 and ours_mb <= 0.5 * base_mb and summary_s < 0.5
    print("result:", "PASS" if ok else "MISS")


if __name__ == "__main__":
    main()
