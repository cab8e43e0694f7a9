"""Benchmark: the whole `newsletter build` of the sample issue vs the official MJML compiler.

Baseline: the official MJML command-line compiler (npm package `mjml`, on Node.js)
compiling the very same email.mjml that our build produces, compile step only.
Both are timed as whole processes, alternating, in the same run. Target: our whole build
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


def compile_package() -> None:
    """Byte-compile the package, as 'pip install' of a wheel does (an editable install under
    PYTHONDONTWRITEBYTECODE would otherwise compile every module on every start)."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "newsletter"), quiet=1)


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
        ours = [*ours_cmd, "--project", str(ROOT), "build", "--out", str(out)]
        subprocess.run(ours, check=True, stdout=subprocess.DEVNULL)  # also produces the MJML to compile
        mjml_file = out / "email.mjml"
        baseline = [str(MJML_BIN), str(mjml_file), "-o", str(Path(tmp) / "official.html")]
        for command in (ours, baseline):  # warm the file cache once
            timed(command, ROOT)
        ours_times, base_times = [], []
        for _ in range(args.runs):
            ours_times.append(timed(ours, ROOT))
            base_times.append(timed(baseline, ROOT))

    ours_median, base_median = statistics.median(ours_times), statistics.median(base_times)
    ratio = ours_median / base_median
    print(f"runs: {args.runs} each, alternating; medians of whole-process wall time")
    print(f"newsletter build (whole build)     : {ours_median * 1000:7.1f} ms")
    print(f"official mjml CLI (compile only)   : {base_median * 1000:7.1f} ms   <- baseline")
    print(f"ratio ours / baseline              : {ratio:7.2f}   (target <= 0.35)")
    print("result:", "PASS" if ratio <= 0.35 else "MISS")


if __name__ == "__main__":
    main()
