"""Benchmark: the whole `newsletter build` of the sample issue vs the official MJML compiler.

Baseline: the official MJML command-line compiler (npm package `mjml`, on Node.js)
compiling the very same email.mjml that our build produces, compile step only.
Both are timed as whole processes, alternating, in the same run, with a third process beside
them: the floor, the interpreter importing the libraries and standard modules a build imports,
without our code or any work (what no build that uses these libraries can go below). Target: our whole build
(Markdown, templates, MJML compile, CSS inlining, text part, message) in under half the
time of the baseline's compile step alone, i.e. a ratio of at most 0.35 (issue 17).

    python benchmarks/bench_build.py [--runs 15]

The first run installs the baseline with `npm install --prefix benchmarks mjml@4`
(into benchmarks/node_modules, which git ignores).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from floor import compile_package, floor_command, read_modules, write_modules

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MJML_BIN = HERE / "node_modules" / ".bin" / "mjml"


def ensure_baseline() -> None:
    if MJML_BIN.exists():
        return
    if shutil.which("npm") is None:
        sys.exit("npm is needed for the baseline (the official MJML compiler): install Node.js and npm.")
    print("Installing the baseline: npm install --prefix benchmarks mjml@4 ...", flush=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(HERE), "mjml@4"], check=True)


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def imported_by_build(arguments: list[str], out: Path) -> tuple[list[str], list[str]]:
    """The modules a build (``newsletter`` with ``arguments``) imports that are not ours
    (libraries and the standard library), in order, and those it keeps from being imported."""
    listing = out / "modules.txt"
    script = (
        "import atexit, sys\n"
        f"atexit.register(lambda: {write_modules(listing)})\n"
        f"sys.argv = {['newsletter', *arguments]!r}\n"
        "from newsletter.__main__ import main\n"
        "main()\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return read_modules(listing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each (default 15)")
    args = parser.parse_args()
    compile_package()
    ensure_baseline()

    # The console script installed beside this interpreter (what `pip install` makes): not the
    # first `newsletter` on PATH, which may be a version manager's shim (pyenv's is a bash script
    # that runs `pyenv exec`: 60-80 ms of its own before Python starts).
    script = Path(sys.executable).with_name("newsletter")
    ours_cmd = [str(script)] if script.exists() else [sys.executable, "-m", "newsletter"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "build"
        arguments = ["--project", str(ROOT), "build", "--out", str(out)]
        ours = [*ours_cmd, *arguments]
        subprocess.run(ours, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # also makes the MJML
        mjml_file = out / "email.mjml"
        baseline = [str(MJML_BIN), str(mjml_file), "-o", str(Path(tmp) / "official.html")]
        # The floor: the interpreter starting and importing the libraries and standard modules a
        # build imports, nothing of ours and no work. No build of this design can be faster.
        floor = floor_command(*imported_by_build(arguments, Path(tmp)))
        for command in (ours, baseline, floor):  # warm the file cache once
            timed(command, ROOT)
        ours_times, base_times, floor_times = [], [], []
        for _ in range(args.runs):
            ours_times.append(timed(ours, ROOT))
            base_times.append(timed(baseline, ROOT))
            floor_times.append(timed(floor, ROOT))

    ours_median, base_median = statistics.median(ours_times), statistics.median(base_times)
    floor_median = statistics.median(floor_times)
    ratio = ours_median / base_median
    print(f"runs: {args.runs} each, alternating; medians of whole-process wall time")
    print(f"newsletter build (whole build)     : {ours_median * 1000:7.1f} ms")
    print(f"official mjml CLI (compile only)   : {base_median * 1000:7.1f} ms   <- baseline")
    print(f"ratio ours / baseline              : {ratio:7.2f}   (target <= 0.35)")
    print("result:", "PASS" if ratio <= 0.35 else "MISS")
    print(
        f"floor: interpreter + the libraries : {floor_median * 1000:7.1f} ms   ({floor_median / base_median:.2f} of the baseline)"
    )
    print(f"ours above the floor               : {(ours_median - floor_median) * 1000:7.1f} ms   "
          f"(the target leaves {(0.35 * base_median - floor_median) * 1000:.1f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
