"""Benchmark: one-click unsubscribes while the database is under write load.

- `newsletter serve` as its own process (uvicorn, one worker), a project with N confirmed
  subscribers, and an aiosmtpd sink in a subprocess.
- **Baseline:** B one-click POSTs (RFC 8058) at concurrency C against a quiet database.
- **Under load:** B more one-click POSTs, to other subscribers, at the same concurrency, while a
  `newsletter subscribers import` of R new rows and a `newsletter send` to everyone run as
  processes of their own.
- The POSTs come from wrk (Debian's `wrk`, a load generator in C; a Python client on the same
  two cores would measure itself more than the server), each token once (a few more at the end
  of a thread, repeated: unsubscribing twice is harmless).
- Reported: answers other than 2xx, unsubscribes lost (checked after everything has finished,
  once the list is settled), p50 and p99 latency, and the p99 under load against the quiet p99.
- **Targets: 0 non-2xx, 0 lost, p99 under load below 1 s**, with the import and the send both
  at work when the burst starts and both ending well (exit 0).
- With `--postgres`: the same on PostgreSQL (a throwaway cluster started here, the project's
  SQLite file copied into it with `newsletter db copy`; Debian's postgresql).

    python benchmarks/bench_contention.py [--posts 5000] [--concurrency 100] [--rows 200000] [--subscribers 12000] [--postgres]

Only loopback traffic.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = "benchmark-" + "k" * 40

AIOSMTPD_SINK = """
import sys, time
from aiosmtpd.controller import Controller
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]), enable_SMTPUTF8=False)
c.start()
while True:
    time.sleep(3600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(folder: Path, subscribers: int, rows: int, env: dict) -> tuple[Path, list[int]]:
    """The repository's project with ``subscribers`` confirmed people (their ids) and a CSV of ``rows`` new ones."""
    for name in ("newsletter.toml", "templates", "content", "data"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / name)
    run = [sys.executable, "-m", "newsletter", "--project", str(folder)]
    subprocess.run([*run, "feeds", "fetch"], env=env, check=True, capture_output=True)
    subprocess.run([*run, "emissions", "import", str(folder / "data/klimagassutslipp-syntetisk.csv")], env=env,
                   check=True, capture_output=True)  # fmt: skip
    people = folder / "people.csv"
    people.write_text("e-post\n" + "".join(f"leser{n:06d}@example.no\n" for n in range(subscribers)), encoding="utf-8")
    subprocess.run(
        [*run, "subscribers", "import", str(people), "--confirmed"], env=env, check=True, capture_output=True
    )
    big = folder / "big.csv"
    big.write_text("e-post;navn\n" + "".join(f"ny{n:07d}@example.no;Ny Person {n}\n" for n in range(rows)),
                   encoding="utf-8")  # fmt: skip
    with sqlite3.connect(folder / "newsletter.db") as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM subscribers ORDER BY id")]
    return big, ids


WRK_SCRIPT = """
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  tokens = {}
  local n = 0
  for line in io.lines(args[1]) do
    if n % tonumber(args[2]) == id then table.insert(tokens, line) end
    n = n + 1
  end
  sent, answered = 0, 0
end
function request()
  sent = sent + 1
  local token = tokens[((sent - 1) % #tokens) + 1]
  return wrk.format("POST", "/unsubscribe/" .. token,
    {["Content-Type"] = "application/x-www-form-urlencoded"}, "List-Unsubscribe=One-Click")
end
function response(status, headers, body)
  answered = answered + 1
  if answered == #tokens then
    local done = io.open(wrk.path_done .. id, "w")
    done:write("done")
    done:close()
    wrk.thread:stop()
  end
end
"""


def burst(url: str, tokens: list[str], concurrency: int, folder: Path) -> dict[str, float]:
    """POST a one-click unsubscribe for each token, ``concurrency`` at a time, with wrk (a load
    generator in C: a Python client on the same two cores measures itself more than the server).
    Returns requests, non-2xx, socket errors and latency percentiles (seconds)."""
    import re

    (folder / "tokens.txt").write_text("\n".join(tokens) + "\n", encoding="ascii")
    marks = folder / "done-"
    script = WRK_SCRIPT.replace("wrk.path_done", repr(str(marks)))
    (folder / "burst.lua").write_text(script, encoding="ascii")
    threads = 2
    for stale in folder.glob("done-*"):
        stale.unlink()
    wrk = subprocess.Popen(
        ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", "600s", "--timeout", "30s", "--latency",
         "-s", str(folder / "burst.lua"), url, "--", str(folder / "tokens.txt"), str(threads)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while len(list(folder.glob("done-*"))) < threads and wrk.poll() is None:
        time.sleep(0.02)  # wrk's threads stop after their share; wrk itself waits for -d unless interrupted
    wrk.send_signal(signal.SIGINT)
    out = wrk.communicate(timeout=60)[0]

    def seconds(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    found = {f"p{p}": seconds(re.search(rf"^\s+{p}%\s+(\S+)", out, re.M).group(1)) for p in (50, 90, 99)}  # type: ignore[union-attr]
    found["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    found["non2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    found["errors"] = float(sum(map(int, errors.groups()))) if errors else 0.0
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--subscribers", type=int, default=12_000)
    parser.add_argument("--postgres", action="store_true", help="on PostgreSQL instead of SQLite")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from newsletter.config import load_settings
    from newsletter.subscribers import make_token

    smtp_port, web_port = free_port(), free_port()
    sink = subprocess.Popen([sys.executable, "-c", AIOSMTPD_SINK, str(smtp_port)])
    server = None
    stop_postgres = pg_root = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            project = Path(tmp) / "project"
            project.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
            env |= {"NEWSLETTER_SECRET_KEY": KEY, "NEWSLETTER_SENDING_TRANSPORT": "smtp",
                    "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(smtp_port),
                    "NEWSLETTER_SMTP_SECURITY": "none"}  # fmt: skip
            print(f"Making a project with {args.subscribers} subscribers and a list of {args.rows} rows ...")
            big, ids = make_project(project, args.subscribers, args.rows, env)
            if args.postgres:
                sys.path.insert(0, str(HERE))
                import psycopg
                from bench_workers import start_postgres

                pg_root = Path(tempfile.mkdtemp(prefix="bench-contention-pg-"))
                admin, stop_postgres = start_postgres(pg_root / "pg")
                with psycopg.connect(f"{admin} dbname=postgres", autocommit=True) as conn:
                    conn.execute("CREATE DATABASE contention")
                host = dict(part.split("=") for part in admin.split())
                env["NEWSLETTER_DATABASE_URL"] = (
                    f"postgresql://newsletter@/contention?host={host['host']}&port={host['port']}"
                )
                subprocess.run([sys.executable, "-m", "newsletter", "--project", str(project), "db", "copy", "--to",
                                env["NEWSLETTER_DATABASE_URL"]], env={**env, "NEWSLETTER_DATABASE_URL": ""},
                               check=True, capture_output=True)  # fmt: skip
                print("On PostgreSQL (the project copied with 'newsletter db copy').")
            os.environ.update(env)
            settings = load_settings(project)
            tokens = [make_token(settings, i, "unsubscribe") for i in ids[: 2 * args.posts]]
            quiet_tokens, loaded_tokens = tokens[: args.posts], tokens[args.posts :]
            command = [sys.executable, "-m", "newsletter", "--project", str(project)]
            server = subprocess.Popen([*command, "serve", "--port", str(web_port)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            url = f"http://127.0.0.1:{web_port}"
            for _ in range(200):
                try:
                    import httpx

                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            quiet = burst(url, quiet_tokens, args.concurrency, Path(tmp))
            print(f"Quiet: {quiet['requests']:.0f} POSTs, p50 {quiet['p50'] * 1000:.0f} ms, "
                  f"p99 {quiet['p99'] * 1000:.0f} ms, {quiet['non2xx'] + quiet['errors']:.0f} non-2xx or errors")  # fmt: skip
            importer = subprocess.Popen([*command, "subscribers", "import", str(big)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
            sender = subprocess.Popen([*command, "send", "--yes"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
            time.sleep(2)  # both at work (the import reads its file first)
            both_at_work = importer.poll() is None and sender.poll() is None
            started = time.perf_counter()
            loaded = burst(url, loaded_tokens, args.concurrency, Path(tmp))
            burst_seconds = time.perf_counter() - started
            import_running = importer.poll() is None
            send_running = sender.poll() is None
            importer.wait()
            sender.wait()
            subprocess.run([*command, "subscribers", "count"], env=env, capture_output=True)  # settles the list
            wanted = ids[: 2 * args.posts]
            from newsletter.store import database

            with database(load_settings(project).database) as conn:
                marks = ",".join("?" * len(wanted))
                done = conn.execute(
                    f"SELECT COUNT(*) FROM subscribers WHERE id IN ({marks}) AND status = 'unsubscribed'", wanted
                ).fetchone()[0]
            lost = len(wanted) - done
            p99, quiet_p99 = loaded["p99"], quiet["p99"]
            failures = loaded["non2xx"] + loaded["errors"] + quiet["non2xx"] + quiet["errors"]
            print(f"Under load ({burst_seconds:.1f} s; import {'still running' if import_running else 'finished'} "
                  f"and send {'still running' if send_running else 'finished'} when the burst ended): "
                  f"{loaded['requests']:.0f} POSTs, p50 {loaded['p50'] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                  f"{loaded['non2xx'] + loaded['errors']:.0f} non-2xx or errors")  # fmt: skip
            print(f"Lost unsubscribes: {lost} of {len(wanted)}")
            print(f"p99 under load / quiet p99: {p99 / quiet_p99:.2f}")
            jobs_ok = importer.returncode == 0 and sender.returncode == 0
            print(f"Import exit {importer.returncode}, send exit {sender.returncode}; both at work when the burst "
                  f"started: {'yes' if both_at_work else 'no'}")  # fmt: skip
            ok = failures == 0 and lost == 0 and p99 < 1.0 and jobs_ok and both_at_work
            print("PASS" if ok else "FAIL", "(targets: 0 non-2xx, 0 lost, p99 under load below 1 s, the import and the"
                  " send at work during the burst and ending well)")  # fmt: skip
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        sink.terminate()
        sink.wait()
        if stop_postgres is not None:
            stop_postgres()
            shutil.rmtree(pg_root, ignore_errors=True)


if __name__ == "__main__":
    main()
