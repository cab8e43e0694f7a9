"""News feeds against a real HTTP server on loopback: formats, caching, failures, safety, curation."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import SAMPLE_ISSUE, assert_error, free_port, write

from newsletter.build import build_issue
from newsletter.config import load_settings
from newsletter.feeds import candidates, fetch_feeds, mark_sent, parse_norwegian_date, selected_news
from newsletter.store import database

RECENT = datetime.now(UTC) - timedelta(days=2)
OLD = datetime.now(UTC) - timedelta(days=60)


def rss2(items: str, title: str = "Kommune") -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>{title}</title><link>https://k.example/</link>{items}</channel></rss>'.encode()


def rss_item(
    guid: str, title: str, when: datetime | None = RECENT, link: str | None = None, desc: str = "Tekst"
) -> str:
    date = f"<pubDate>{format_datetime(when)}</pubDate>" if when else ""
    return f"<item><guid>{guid}</guid><title>{title}</title><link>{link or 'https://k.example/' + guid}</link>{date}<description>{desc}</description></item>"


ATOM = f"""<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Regjeringen</title>
<id>urn:x</id><updated>{RECENT:%Y-%m-%dT%H:%M:%SZ}</updated>
<entry><title>Atom-sak om klima</title><id>urn:atom:1</id><link href="/nyhet/1"/><updated>{RECENT:%Y-%m-%dT%H:%M:%SZ}</updated>
<summary type="html">&lt;p&gt;Om &lt;b&gt;klima&lt;/b&gt;&lt;/p&gt;</summary></entry></feed>""".encode()

RDF = f"""<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://r.example/"><title>RDF</title><link>https://r.example/</link><description>d</description></channel>
<item rdf:about="https://r.example/1"><title>RDF-sak fra Asker</title><link>https://r.example/1</link><description>Om ombruk</description><dc:date>{RECENT:%Y-%m-%dT%H:%M:%S}+00:00</dc:date></item>
</rdf:RDF>""".encode()

EVIL = rss2(
    rss_item("e1", "&lt;script&gt;alert(1)&lt;/script&gt;Trygg tittel &lt;img src=x onerror=alert(2)&gt;",
             desc="<![CDATA[<p onclick='steal()'>Sammendrag</p><script>alert(3)</script><iframe src='https://evil.example'></iframe><form><input></form>]]>")
    + rss_item("e2", "Lenke med javascript", link="javascript:alert(4)")
    + rss_item("e3", "Relativ lenke", link="/relativ/sti")
    + rss_item("e4", "@@nl:r:email@@ markørtekst")
)  # fmt: skip


class Server:
    """A loopback HTTP server with a route table and a log of the requests it got."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes, float]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append((self.path, dict(self.headers)))
                status, headers, body, delay = outer.routes.get(self.path, (404, {}, b"not found", 0))
                if delay:
                    time.sleep(delay)
                etag = headers.get("ETag")
                if etag and self.headers.get("If-None-Match") == etag:
                    status, body = 304, b""
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def route(self, path: str, body: bytes, status: int = 200, delay: float = 0, **headers: str) -> str:
        headers = {k.replace("_", "-"): v for k, v in headers.items()}
        headers.setdefault("Content-Type", "application/rss+xml; charset=utf-8")
        self.routes[path] = (status, headers, body, delay)
        return self.url + path


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def use_feeds(project: Path, feeds: list[dict]) -> None:
    """Replace the sample [[feeds]] with these."""
    path = project / "newsletter.toml"
    original = path.read_text(encoding="utf-8")
    text = original.split("# Eksempelstrømmene er filer")[0]
    rest = "\n# Utslippstall:" + original.split("# Utslippstall:", 1)[1]
    for feed in feeds:
        text += "\n[[feeds]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in feed.items())
    path.write_text(text + rest, encoding="utf-8")


def _toml(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value) if isinstance(value, int) else f'"{value}"'


def fetch(**env: str):
    settings = load_settings(environ={f"NEWSLETTER_{k.upper()}": v for k, v in env.items()})
    with database(settings.database) as conn:
        return settings, {r.feed: r for r in fetch_feeds(settings, conn)}


def news(settings):
    with database(settings.database) as conn:
        return selected_news(settings, conn, SAMPLE_ISSUE, "nb")


def test_three_formats_over_http(project, server):
    use_feeds(project, [
        {"name": "RSS", "url": server.route("/rss", rss2(rss_item("a", "RSS-sak")))},
        {"name": "Atom", "url": server.route("/atom", ATOM, Content_Type="application/atom+xml"), "category": "klima"},
        {"name": "RDF", "url": server.route("/rdf", RDF, Content_Type="application/rdf+xml")},
    ])  # fmt: skip
    settings, reports = fetch()
    assert all(r.ok and r.new == 1 for r in reports.values()), reports
    titles = {i.title: i for i in news(settings)}
    assert set(titles) == {"RSS-sak", "Atom-sak om klima", "RDF-sak fra Asker"}
    assert titles["Atom-sak om klima"].link == f"{server.url}/nyhet/1"  # relative link made absolute
    assert titles["Atom-sak om klima"].summary == "Om klima"
    assert all(headers.get("User-Agent", "").startswith("newsletter/") for _, headers in server.requests)


def test_conditional_get_and_304(project, server):
    url = server.route("/rss", rss2(rss_item("a", "Sak")), ETag='"v1"', Last_Modified="Wed, 25 Nov 2026 10:00:00 GMT")
    use_feeds(project, [{"name": "RSS", "url": url}])
    fetch()
    settings, reports = fetch()
    assert reports["RSS"].ok and reports["RSS"].status == "304 not modified" and reports["RSS"].new == 0
    second = server.requests[-1][1]
    assert second["If-None-Match"] == '"v1"'
    assert second["If-Modified-Since"] == "Wed, 25 Nov 2026 10:00:00 GMT"
    assert len(news(settings)) == 1


def test_failures_are_reported_and_survived(project, server, run, monkeypatch):
    server.route("/slow", rss2(rss_item("s", "Treg")), delay=3)
    server.route("/html", b"<!DOCTYPE html><html><body>Forside</body></html>", Content_Type="text/html")
    server.route("/bad", b"<rss><channel><title>x</title><item><title>uavsluttet", Content_Type="application/xml")
    server.route("/huge", b"<rss>" + b"x" * 300_000 + b"</rss>")
    server.route("/moved", b"", status=301, Location="/rss")
    server.route("/rss", rss2(rss_item("a", "Flyttet sak")))
    use_feeds(project, [
        {"name": "Treg", "url": server.url + "/slow"},
        {"name": "Mangler", "url": server.url + "/404"},
        {"name": "HTML", "url": server.url + "/html"},
        {"name": "Ødelagt", "url": server.url + "/bad"},
        {"name": "Stor", "url": server.url + "/huge"},
        {"name": "Flyttet", "url": server.url + "/moved"},
        {"name": "Borte", "url": "http://finnes-ikke.invalid/rss"},
        {"name": "Stengt", "url": f"http://127.0.0.1:{free_port()}/rss"},  # nothing listens there
        {"name": "Tull", "url": str(write(project / "tull.txt", "dette er ikke en nyhetsstrøm\n"))},
    ])  # fmt: skip
    monkeypatch.setenv("NEWSLETTER_NEWS_TIMEOUT", "1")
    monkeypatch.setenv("NEWSLETTER_NEWS_MAX_KB", "200")
    result = run("feeds", "fetch")
    assert result.exit_code == 0, result.output  # not every feed failed
    err = result.stderr
    assert "failed Treg: no complete answer within 1 s" in err
    assert "failed Mangler: HTTP 404 Not Found" in err
    assert "failed HTML: not a feed: the address gives an HTML page" in err
    assert "failed Ødelagt: the feed's XML is broken at line 2; tell the feed's owner" in err
    assert "failed Borte: the name in the address was not found; check the feed's url" in err
    assert "failed Stengt: nothing answers at that address; check the feed's url, or try again later" in err, err
    assert "failed Tull: not an RSS or Atom feed; check that the feed's url points at the feed itself" in err
    assert "failed Stor: larger than 200 KB" in err
    assert "ok     Flyttet: 1 new of 1" in result.stdout
    assert "1 of 9 feeds fetched, 1 new items." in result.stdout
    strict = run("feeds", "fetch", "--strict")
    assert_error_last_line(strict, "8 of 9 feeds failed")
    status = run("feeds", "status").stdout
    assert "failed Mangler: HTTP 404 Not Found" in status and "ok     Flyttet: 1 items" in status


def assert_error_last_line(result, fragment):
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == f"Error: {fragment}; see the lines above."


def test_all_failing_exits_1(project, server, run):
    use_feeds(project, [{"name": "Mangler", "url": server.url + "/404"}])
    assert_error_last_line(run("feeds", "fetch"), "1 of 1 feeds failed")


def test_untrusted_feed_content_never_reaches_the_email(project, server):
    use_feeds(project, [{"name": "Ond", "url": server.route("/evil", EVIL)}])
    settings, _ = fetch()
    by_title = {i.title: i for i in news(settings)}
    title = next(t for t in by_title if "Trygg tittel" in t)  # markup removed or kept as plain text
    evil = by_title[title]
    assert evil.summary == "Sammendrag"  # tags gone, script content gone
    assert by_title["Lenke med javascript"].link is None
    assert by_title["Relativ lenke"].link == f"{server.url}/relativ/sti"
    out = build_issue(settings).out_dir
    html = (out / "email.html").read_text(encoding="utf-8")
    lower = html.lower()
    for bad in ("<script", "<iframe", "<form", "<input", "javascript:", "onerror=", "onclick=", "evil.example"):
        assert bad not in lower, bad
    assert escape(title) in html
    assert "ola.nordmann@example.com markørtekst" not in html  # marker text stays text
    text = (out / "email.txt").read_text(encoding="utf-8")
    assert f"* {title}" in text and "javascript:" not in text


def test_items_without_dates_and_norwegian_dates(project, server):
    feed = rss2(
        rss_item("n1", "Uten dato", when=None)
        + "<item><guid>n2</guid><title>Norsk dato</title><link>https://k.example/n2</link><pubDate>fre, 20 nov 2026 09:30:00 +0100</pubDate></item>"
    )
    use_feeds(project, [{"name": "K", "url": server.route("/k", feed), "first_fetch_days": 0}])
    settings, _ = fetch()
    items = {i.title: i for i in news(settings)}
    assert items["Uten dato"].published is None and items["Uten dato"].first_seen is not None
    assert items["Norsk dato"].published == datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
    assert parse_norwegian_date("5. desember 2025 kl. 14.30") == datetime(2025, 12, 5, 13, 30, tzinfo=UTC)
    assert parse_norwegian_date("lør, 06 des 2025 10:00:00 GMT") == datetime(2025, 12, 6, 10, 0, tzinfo=UTC)
    assert parse_norwegian_date("ikke en dato") is None
    assert parse_norwegian_date("fre, 20 nov 2026 10:00 CET") == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert parse_norwegian_date("ons, 1 jul 2026 10:00 CEST") == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    assert parse_norwegian_date("1. juli 2026 10:00") == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)  # Oslo summer time


def test_first_fetch_does_not_flood_and_repeats_are_stored_once(project, server):
    url = server.route(
        "/k",
        rss2(
            rss_item("ny", "Ny sak")
            + rss_item("gammel", "Gammel sak", when=OLD)
            + rss_item("udatert", "Udatert", when=None)
        ),
    )
    use_feeds(project, [{"name": "K", "url": url}])
    settings, reports = fetch()
    assert reports["K"].new == 1 and reports["K"].seen == 3
    assert [i.title for i in news(settings)] == ["Ny sak"]
    server.route("/k", rss2(rss_item("ny", "Ny sak") + rss_item("senere", "Senere sak", when=None)))
    settings, reports = fetch()
    assert reports["K"].new == 1  # 'ny' is not stored twice; 'senere' arrives after the first fetch
    assert sorted(i.title for i in news(settings)) == ["Ny sak", "Senere sak"]


def test_limits_keywords_and_language(project, server):
    items = "".join(
        rss_item(f"i{n}", f"Sak {n} om {'klima' if n % 2 else 'sport'}", when=RECENT - timedelta(hours=n))
        for n in range(1, 7)
    )
    other = "".join(  # the same stories under other ids (replacing letters in the XML broke its tags)
        rss_item(f"j{n}", f"Sak {n} om {'klima' if n % 2 else 'sport'}", when=RECENT - timedelta(hours=n))
        for n in range(1, 7)
    )
    use_feeds(project, [
        {"name": "Klima", "url": server.route("/a", rss2(items)), "include": ["klima"], "max_items": 2},
        {"name": "Engelsk", "url": server.route("/b", rss2(rss_item("en", "English news"))), "language": "en"},
        {"name": "Uten sport", "url": server.route("/c", rss2(other)), "exclude": ["SPORT"]},
    ])  # fmt: skip
    settings, _ = fetch()
    with database(settings.database) as conn:
        found = candidates(settings, conn, SAMPLE_ISSUE, "nb")
    chosen = [(c.item.feed, c.item.title) for c in found if c.selected]
    assert [t for f, t in chosen if f == "Klima"] == ["Sak 1 om klima", "Sak 3 om klima"]
    assert {c.reason for c in found if c.item.feed == "Klima" and not c.selected} == {
        "keywords",
        "over the feed's limit of 2",
    }
    assert not any(f == "Engelsk" for f, _ in chosen)
    assert all("sport" not in t for f, t in chosen if f == "Uten sport")
    assert [t for f, t in chosen if f == "Uten sport"] == ["Sak 1 om klima", "Sak 3 om klima", "Sak 5 om klima"]
    assert {c.reason for c in found if c.item.feed == "Uten sport" and not c.selected} == {"keywords"}


def test_curation_survives_rebuild_and_sent_items_are_used(project, server, run):
    use_feeds(
        project,
        [
            {
                "name": "K",
                "url": server.route(
                    "/k",
                    rss2(
                        rss_item("a", "Sak A")
                        + rss_item("b", "Sak B", when=RECENT - timedelta(hours=1))
                        + rss_item("c", "Sak C", when=RECENT - timedelta(hours=2))
                    ),
                ),
                "max_items": 2,
            }
        ],
    )
    run("feeds", "fetch")
    listing = run("feeds", "list", "--all").stdout
    ids = {}
    for line in listing.splitlines():
        if line.startswith("["):
            parts = line[4:].split()
            ids[line.rsplit(":", 1)[1].split("(")[0].strip()] = int(parts[0])
    assert_error(run("feeds", "pick", SAMPLE_ISSUE, "99999"), "no news item with id 99999")
    assert run("feeds", "skip", "ordforer", str(ids["Sak A"])).exit_code == 0
    picked = run("feeds", "pick", str(ids["Sak C"]))  # without the issue: the newest
    assert picked.exit_code == 0 and f"Picked 1 item(s) for {SAMPLE_ISSUE}." in picked.stdout, picked.output
    assert run("feeds", "reset", f"{ids['Sak C']},{ids['Sak B']}").exit_code == 0  # with a comma, as people write
    assert run("feeds", "pick", SAMPLE_ISSUE, str(ids["Sak C"])).exit_code == 0
    assert_error(run("feeds", "pick", SAMPLE_ISSUE), "give the numbers of the items after the issue")
    assert_error(run("feeds", "pick", SAMPLE_ISSUE, "fire"), "'fire' is not an item number")
    for _ in range(2):  # a rebuild gives the same section
        run("build")
        html = (project / "build" / SAMPLE_ISSUE / "email.html").read_text(encoding="utf-8")
        assert "Sak B" in html and "Sak C" in html and "Sak A" not in html
    settings = load_settings()
    with database(settings.database) as conn:
        sent = selected_news(settings, conn, SAMPLE_ISSUE, "nb")
        mark_sent(conn, SAMPLE_ISSUE, [i.id for i in sent])
        assert {i.title for i in selected_news(settings, conn, "2027-01-neste", "nb")} == set()  # all used or older
    assert_error(run("feeds", "pick", SAMPLE_ISSUE, str(ids["Sak A"])), "has been sent")


def test_unknown_feed_name_and_no_feeds(project, run):
    assert_error(run("feeds", "fetch", "Finnes ikke"), "unknown feed(s): Finnes ikke")
    use_feeds(project, [])
    listed = run("feeds", "list")
    assert listed.exit_code == 0 and "no feeds are set up in newsletter.toml" in listed.stderr, listed.output
    assert_error(
        run("feeds", "fetch"), "no feeds set up yet: add three lines to newsletter.toml for each feed", "[[feeds]]"
    )


def test_bad_feed_settings(project):
    use_feeds(project, [{"name": "X", "url": "ftp://x.example/feed", "category": "sport"}])
    from newsletter.errors import ConfigError

    with pytest.raises(ConfigError, match="feed 'X': url must start with http:// or https://"):
        load_settings()


def test_many_feeds_are_parsed_in_worker_processes_with_the_same_result(project, tmp_path):
    """Ten feeds (the worker-process path where forking is safe) give what one feed at a time gives."""
    from newsletter.feeds import _parse_pool, parse_feed

    bodies = [
        rss2(rss_item(f"g{n}", f"Sak {n} <b>fet</b> &amp; æøå", desc=f"<p>Om {n}</p><script>x()</script>"))
        for n in range(10)
    ]
    expected = [parse_feed(b, "https://k.example/f") for b in bodies]
    pool = _parse_pool(10)
    if pool is None:
        pytest.skip("no second core or fork here, or other threads running")
    try:
        got = [pool.submit(parse_feed, b, "https://k.example/f").result() for b in bodies]
    finally:
        pool.shutdown()
    assert got == expected
    assert expected[3][0].title == "Sak 3 fet & æøå" and expected[3][0].summary == "Om 3"


def test_no_news_no_section_and_feeds_false(project, issue_dir):
    html = (build_issue(load_settings()).out_dir / "email.html").read_text(encoding="utf-8")
    assert "Nytt fra regionen" not in html  # no database yet: the section is left out
    settings, _ = fetch()  # the sample's local feeds
    html = (build_issue(settings).out_dir / "email.html").read_text(encoding="utf-8")
    assert "Nytt fra regionen" in html and "24. november 2026" in html
    path = issue_dir / "issue.md"
    path.write_text(
        path.read_text(encoding="utf-8").replace("language: nb", "language: nb\nfeeds: false"), encoding="utf-8"
    )
    html = (build_issue(settings).out_dir / "email.html").read_text(encoding="utf-8")
    assert "Nytt fra regionen" not in html


class _KeptAlive(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; notes the client's port of each request (one port per connection)."""

    protocol_version = "HTTP/1.1"
    ports: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        type(self).ports.append(self.client_address[1])
        body = rss2(rss_item(self.path.strip("/"), f"Sak {self.path}"))
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler], tls: tuple[Path, Path] | None = None) -> ThreadingHTTPServer:
    import ssl

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_https_feeds_are_verified_with_the_certificates_loaded_beside_the_imports(project, tmp_path, monkeypatch):
    """The CA certificates load in a thread while asyncio and httpx are imported; that context is
    the one that verifies: the server's certificate is accepted when SSL_CERT_FILE holds it, and
    refused (one line, the feed's failure) when it does not."""
    import ssl

    from conftest import self_signed

    made = []  # (thread) for every context made: the real function, counted
    create = ssl.create_default_context
    monkeypatch.setattr(
        ssl, "create_default_context", lambda *a, **k: made.append(threading.current_thread().name) or create(*a, **k)
    )
    settings, reports = fetch()  # the sample project's feeds are files: nothing goes online
    assert reports and all(r.ok for r in reports.values()) and made == []

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed(cert, key)
    httpd = _serve(_KeptAlive, tls=(cert, key))
    try:
        url = f"https://127.0.0.1:{httpd.server_address[1]}/tls"
        use_feeds(project, [{"name": "TLS", "url": url}])
        monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        settings, reports = fetch()
        assert reports["TLS"].ok and reports["TLS"].new == 1, reports
        assert made == ["ca-certificates"]  # once, in its thread, and that context verified the server
        (tmp_path / "other.pem").write_text("", encoding="utf-8")
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "other.pem"))
        settings, reports = fetch()
        assert not reports["TLS"].ok
        assert reports["TLS"].error.startswith("the website's certificate was not accepted"), reports["TLS"].error
    finally:
        httpd.shutdown()


def test_what_fails_while_the_certificates_load_is_raised_to_the_caller(monkeypatch):
    import ssl

    from newsletter.feeds import tls_context_soon

    context = tls_context_soon()()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname

    def unreadable(*args: object, **kwargs: object) -> ssl.SSLContext:  # a fault that cannot be made here for real
        raise ssl.SSLError("the certificate store cannot be read")

    monkeypatch.setattr(ssl, "create_default_context", unreadable)
    wait = tls_context_soon()
    with pytest.raises(ssl.SSLError, match="cannot be read"):
        wait()


def test_a_fetch_closes_each_connection_when_its_answer_is_in(project):
    """Feeds come from different hosts, so a fetch keeps no connection open (httpx's pool checks
    every kept connection at every request: the cost grew with the square of the feeds)."""
    _KeptAlive.ports = []
    httpd = _serve(_KeptAlive)
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        use_feeds(project, [{"name": f"F{n}", "url": f"{base}/f{n}"} for n in range(3)])
        settings, reports = fetch(news_concurrency="1")  # one at a time: a kept connection would be reused
        assert all(r.ok and r.new == 1 for r in reports.values()), reports
        assert len(set(_KeptAlive.ports)) == 3

        import asyncio

        from newsletter.feeds import _run, http_client

        async def twice() -> None:  # the link check keeps them: many links go to the same host
            async with http_client(settings, 1, 5.0, 5.0, accept="*/*") as client:
                for _ in range(2):
                    (await client.get(f"{base}/again")).raise_for_status()
                    await asyncio.sleep(0)

        _KeptAlive.ports = []
        _run(twice())
        assert len(set(_KeptAlive.ports)) == 1
    finally:
        httpd.shutdown()
