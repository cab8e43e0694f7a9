"""Benchmark: `newsletter feeds fetch` of 50 slow feeds vs fetching them one after another.

A loopback HTTP server serves 50 RSS feeds (20 items each), each answer delayed 200 ms.
- Ours: `newsletter feeds fetch` as a whole process (start-up, download, parse, sanitize, store).
- Baseline: `feedparser.parse(url)` for each feed in turn, in this process (no start-up cost).
Both run in the same run; the ratio baseline / ours is reported. Target (issue 17): at least 20x.

    python benchmarks/bench_feeds.py [--feeds 50] [--delay 0.2]

Only loopback traffic; the server stops by itself at the end.
"""

from __future__ import annotations

import argparse
import os
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


def compile_package() -> None:
    """Byte-compile the package, as 'pip install' of a wheel does (an editable install under
    PYTHONDONTWRITEBYTECODE would otherwise compile every module on every start)."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "newsletter"), quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds each answer is delayed")
    args = parser.parse_args()
    compile_package()
    server = serve(args.feeds, args.delay)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}/feed/{n}.xml" for n in range(args.feeds)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            project = Path(tmp) / "project"
            subprocess.run(
                [sys.executable, "-m", "newsletter", "init", str(project)], check=True, stdout=subprocess.DEVNULL
            )
            with (project / "newsletter.toml").open("a", encoding="utf-8") as handle:
                for n, url in enumerate(urls):
                    handle.write(f'\n[[feeds]]\nname = "Kommune {n}"\nurl = "{url}"\n')
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "newsletter", "--project", str(project), "feeds", "fetch"],
                capture_output=True,
                text=True,
                check=True,
                env=os.environ
                | {"NEWSLETTER_LANG": "en"},  # a new project speaks Norwegian; the check below reads English
            )
            ours = time.perf_counter() - start
            assert f"{args.feeds} of {args.feeds} feeds fetched" in done.stdout, done.stdout

        start = time.perf_counter()
        parsed = [feedparser.parse(url) for url in urls]
        baseline = time.perf_counter() - start
        assert all(len(p.entries) == 20 for p in parsed)
    finally:
        server.shutdown()

    print(f"{args.feeds} feeds, {args.delay * 1000:.0f} ms latency each, 20 items per feed")
    print(f"newsletter feeds fetch (whole process)   : {ours:6.2f} s")
    print(f"feedparser.parse(url), one after another : {baseline:6.2f} s   <- baseline")
    ratio = baseline / ours
    print(f"speed-up baseline / ours                 : {ratio:6.1f}x  (target >= 20x)")
    print("result:", "PASS" if ratio >= 20 else "MISS")


if __name__ == "__main__":
    main()
