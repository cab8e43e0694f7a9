"""Benchmark: `newsletter feeds fetch` of 50 slow feeds vs fetching them one after another.

A loopback HTTP server serves 50 RSS feeds (20 items each), each answer delayed 200 ms.
- Ours: `newsletter feeds fetch` as a whole process (start-up, download, parse, sanitize, store).
- Baseline: `feedparser.parse(url)` for each feed in turn, in this process (no start-up cost).
Both run in the same run, alternating over several rounds; the ratio of the medians baseline /
ours is reported. Target (issue 17): at least 20x. Beside them, the floor: how long any fetch that
uses these libraries must take here: the interpreter importing what a fetch has imported when
its first request goes out (measured), the server's delay, and feedparser's CPU for all the
feeds (measured) shared by all cores.

    python benchmarks/bench_feeds.py [--feeds 50] [--delay 0.2] [--rounds 3]

Only loopback traffic; the server stops by itself at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import feedparser
from floor import compile_package, floor_command, read_modules, write_modules


def feed_body(n: int) -> bytes:
    now = datetime.now(UTC)
    items = "".join(
        f"<item><guid>feed{n}-item{i}</guid><title>Sak {i} fra kommune {n}: æøå</title>"
        f"<link>https://kommune{n}.example/sak/{i}</link><pubDate>{format_datetime(now - timedelta(hours=i))}</pubDate>"
        f"<description><![CDATA[<p>Sammendrag av sak {i} med <b>litt</b> markup og en <a href='/x'>lenke</a>.</p>]]></description></item>"
        for i in range(20)
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Kommune {n}</title><link>https://kommune{n}.example/</link>{items}</channel></rss>'.encode()


def serve(count: int, delay: float) -> ThreadingHTTPServer:
    bodies = {f"/feed/{n}.xml": feed_body(n) for n in range(count)}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            time.sleep(delay)
            body = bodies.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # listen() backlog: the default 5 would stall concurrent clients

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def make_project(tmp: Path, urls: list[str]) -> Path:
    project = tmp / "project"
    subprocess.run([sys.executable, "-m", "newsletter", "init", str(project)], check=True, stdout=subprocess.DEVNULL)
    with (project / "newsletter.toml").open("a", encoding="utf-8") as handle:
        for n, url in enumerate(urls):
            handle.write(f'\n[[feeds]]\nname = "Kommune {n}"\nurl = "{url}"\n')
    return project


def run_ours(urls: list[str], expected: int) -> float:
    """One `feeds fetch` of a new project (every item new, so every item is stored), timed."""
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp), urls)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "newsletter", "--project", str(project), "feeds", "fetch"],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ | {"NEWSLETTER_LANG": "en"},  # a new project speaks Norwegian; the check reads English
        )
        elapsed = time.perf_counter() - start
        assert f"{expected} of {expected} feeds fetched" in done.stdout, done.stdout
    return elapsed


def modules_before_the_first_request(urls: list[str]) -> tuple[list[str], list[str]]:
    """The modules (not ours) the process of a fetch has imported when its first request goes out,
    and those it keeps from being imported."""
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp), urls)
        listing = Path(tmp) / "modules.txt"
        script = (
            "import sys\n"
            "import newsletter.feeds as feeds\n"
            "download = feeds._download_http\n"
            "async def first(*args, **kwargs):\n"
            f"    if feeds._download_http is first:\n"
            f"        {write_modules(listing)}\n"
            "        feeds._download_http = download\n"
            "    return await download(*args, **kwargs)\n"
            "feeds._download_http = first\n"
            f"sys.argv = ['newsletter', '--project', {str(project)!r}, 'feeds', 'fetch']\n"
            "from newsletter.__main__ import main\n"
            "main()\n"
        )
        subprocess.run([sys.executable, "-c", script], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return read_modules(listing)


def parse_cpu(bodies: list[bytes]) -> float:
    """CPU seconds feedparser takes to read the feeds, as ours calls it (no sanitizer, no base URIs)."""
    import io

    feedparser.parse(io.BytesIO(bodies[0]), sanitize_html=False, resolve_relative_uris=False)  # warm
    start = time.process_time()
    for body in bodies:
        feedparser.parse(io.BytesIO(body), sanitize_html=False, resolve_relative_uris=False)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds each answer is delayed")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ours and the baseline (default 3)")
    args = parser.parse_args()
    compile_package()
    server = serve(args.feeds, args.delay)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}/feed/{n}.xml" for n in range(args.feeds)]
    ours_times, base_times = [], []
    try:
        run_ours(urls, args.feeds)  # warm the file cache once
        for _ in range(args.rounds):
            ours_times.append(run_ours(urls, args.feeds))
            start = time.perf_counter()
            parsed = [feedparser.parse(url) for url in urls]
            base_times.append(time.perf_counter() - start)
            assert all(len(p.entries) == 20 for p in parsed)
        # The floor: no fetch with these libraries, on these cores, ends before the process has
        # started and imported what it needs to send a request, the server has waited its delay,
        # and feedparser has read every feed with all cores at it (the answers come together).
        floor_process = floor_command(*modules_before_the_first_request(urls))
        starts = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run(floor_process, check=True)
            starts.append(time.perf_counter() - start)
    finally:
        server.shutdown()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parsing = parse_cpu([feed_body(n) for n in range(args.feeds)])
    floor = statistics.median(starts) + args.delay + parsing / cores

    ours, baseline = statistics.median(ours_times), statistics.median(base_times)
    ratio = baseline / ours
    print(
        f"{args.feeds} feeds, {args.delay * 1000:.0f} ms latency each, 20 items per feed; {args.rounds} rounds, medians"
    )
    print(f"newsletter feeds fetch (whole process)   : {ours:6.2f} s   ({', '.join(f'{t:.2f}' for t in ours_times)})")
    print(f"feedparser.parse(url), one after another : {baseline:6.2f} s   <- baseline")
    print(f"speed-up baseline / ours                 : {ratio:6.1f}x  (target >= 20x; rounds "
          f"{', '.join(f'{b / o:.1f}x' for b, o in zip(base_times, ours_times, strict=True))})")  # fmt: skip
    print("result:", "PASS" if ratio >= 20 else "MISS")
    print(f"floor: start {statistics.median(starts) * 1000:.0f} ms + delay {args.delay * 1000:.0f} ms + feedparser "
          f"{parsing * 1000:.0f} ms of CPU / {cores} cores = {floor:.2f} s, at most {baseline / floor:.1f}x; "
          f"20x needs {baseline / 20:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
