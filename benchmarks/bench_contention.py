"""Benchmark: one-click unsubscribes while the database is under write load.

- `newsletter serve` as its own process (uvicorn, one worker), a project with N confirmed
  subscribers, and an aiosmtpd sink in a subprocess.
- **Baseline:** B one-click POSTs (RFC 8058) at concurrency C against a quiet database.
- **Under load:** B more one-click POSTs, to other subscribers, at the same concurrency, while a
  `newsletter subscribers import` of R new rows and a `newsletter send` to everyone run as
  processes of their own.
- Reported: answers other than 2xx, unsubscribes lost (checked after everything has finished,
  once the list is settled), p50 and p99 latency, and the p99 under load against the quiet p99.
- **Targets: 0 non-2xx, 0 lost, p99 under load below 1 s.**

    python benchmarks/bench_contention.py [--posts 5000] [--concurrency 100] [--rows 200000] [--subscribers 12000]

Only loopback traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
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


async def burst(url: str, tokens: list[str], concurrency: int) -> tuple[list[float], int]:
    """POST a one-click unsubscribe for each token, ``concurrency`` at a time: (latencies, non-2xx)."""
    import httpx

    latencies: list[float] = []
    failures = 0
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one(token: str) -> None:
            nonlocal failures
            async with gate:
                started = time.perf_counter()
                try:
                    answer = await client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
                    ok = 200 <= answer.status_code < 300
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                failures += not ok

        await asyncio.gather(*(one(token) for token in tokens))
    return latencies, failures


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--subscribers", type=int, default=12_000)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from newsletter.config import load_settings
    from newsletter.subscribers import make_token

    smtp_port, web_port = free_port(), free_port()
    sink = subprocess.Popen([sys.executable, "-c", AIOSMTPD_SINK, str(smtp_port)])
    server = None
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
            quiet, quiet_failures = asyncio.run(burst(url, quiet_tokens, args.concurrency))
            print(f"Quiet: {len(quiet)} POSTs, p50 {percentile(quiet, 0.5) * 1000:.0f} ms, "
                  f"p99 {percentile(quiet, 0.99) * 1000:.0f} ms, {quiet_failures} non-2xx")  # fmt: skip
            importer = subprocess.Popen([*command, "subscribers", "import", str(big)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
            sender = subprocess.Popen([*command, "send", "--yes"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
            time.sleep(2)  # both at work (the import reads its file first)
            started = time.perf_counter()
            loaded, loaded_failures = asyncio.run(burst(url, loaded_tokens, args.concurrency))
            burst_seconds = time.perf_counter() - started
            import_running = importer.poll() is None
            send_running = sender.poll() is None
            importer.wait()
            sender.wait()
            subprocess.run([*command, "subscribers", "count"], env=env, capture_output=True)  # settles the list
            wanted = ids[: 2 * args.posts]
            with sqlite3.connect(project / "newsletter.db") as conn:
                marks = ",".join("?" * len(wanted))
                done = conn.execute(
                    f"SELECT COUNT(*) FROM subscribers WHERE id IN ({marks}) AND status = 'unsubscribed'", wanted
                ).fetchone()[0]
            lost = len(wanted) - done
            p99, quiet_p99 = percentile(loaded, 0.99), percentile(quiet, 0.99)
            print(f"Under load ({burst_seconds:.1f} s; import {'still running' if import_running else 'finished'} "
                  f"and send {'still running' if send_running else 'finished'} when the burst ended): "
                  f"{len(loaded)} POSTs, p50 {percentile(loaded, 0.5) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                  f"{loaded_failures} non-2xx")  # fmt: skip
            print(f"Lost unsubscribes: {lost} of {len(wanted)}")
            print(f"p99 under load / quiet p99: {p99 / quiet_p99:.2f}")
            ok = loaded_failures == 0 and quiet_failures == 0 and lost == 0 and p99 < 1.0
            print("PASS" if ok else "FAIL", "(targets: 0 non-2xx, 0 lost, p99 under load below 1 s)")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
