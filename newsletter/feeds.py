"""News feeds: fetch, parse, sanitize, store and select -> FeedItem.

Feeds are the least trustworthy input: every download has a connect and a total timeout and
a size cap, feedparser only ever sees bytes (it must not fetch), and titles and summaries are
reduced to plain text here, so nothing from a feed can carry markup, scripts or event
handlers into an email. Links must be http(s).
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from . import __version__
from .clock import OSLO, now, parse_timestamp, timestamp
from .config import FeedConfig, Settings
from .errors import FeedError
from .language import _, os_reason

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

TITLE_CHARS = 300
STORED_SUMMARY_CHARS = 2000


@dataclass(frozen=True)
class Download:
    """What one download gave: bytes, or 'not modified', or an error."""

    status: str
    body: bytes | None = None
    url: str = ""
    content_type: str = ""
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ParsedItem:
    """One item as read from a feed, already reduced to safe plain text."""

    guid: str
    title: str
    link: str | None
    published: datetime | None
    summary: str


@dataclass(frozen=True)
class FetchReport:
    """The outcome for one feed, for the one-line report."""

    feed: str
    ok: bool
    status: str
    new: int = 0
    seen: int = 0
    error: str | None = None


@dataclass(frozen=True)
class FeedItem:
    """A stored item, as the issue shows it."""

    id: int
    feed: str
    title: str
    link: str | None
    published: datetime | None
    first_seen: datetime
    summary: str


@dataclass(frozen=True)
class Candidate:
    """An item considered for an issue, and whether (and why) it is in it."""

    item: FeedItem
    selected: bool
    reason: str


# --- text and links ---------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def plain_text(value: str | None) -> str:
    """Markup reduced to plain text: tags dropped (scripts and styles with their content), entities decoded."""
    if not value:
        return ""
    if "<" not in value and "&" not in value:  # already plain: the common case for titles
        return _SPACE.sub(" ", value).strip()
    import nh3

    cleaned = nh3.clean(value, tags=set(), clean_content_tags={"script", "style"}, attributes={})
    return _SPACE.sub(" ", html.unescape(cleaned)).strip()


def shorten(text: str, limit: int) -> str:
    """Cut at a word boundary near ``limit`` characters, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",.;:–- ")
    return f"{cut}…"


_UNSAFE_IN_LINK = re.compile(r'[\x00-\x1f "<>\\]')  # control characters, spaces, quotes, angle brackets, backslashes


def safe_link(link: str | None, base: str) -> str | None:
    """An absolute http(s) link, or None for anything else (javascript:, data:, mailto:, junk)."""
    if not link:
        return None
    link = link.strip()
    if _UNSAFE_IN_LINK.search(link):
        return None
    absolute = urljoin(base, link) if base.startswith(("http://", "https://")) else link
    parts = urlsplit(absolute)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return absolute


# --- Norwegian dates ----------------------------------------------------------------------------

_NB_MONTHS = {
    "jan": "Jan", "januar": "Jan", "feb": "Feb", "februar": "Feb", "mar": "Mar", "mars": "Mar",
    "apr": "Apr", "april": "Apr", "mai": "May", "jun": "Jun", "juni": "Jun", "jul": "Jul", "juli": "Jul",
    "aug": "Aug", "august": "Aug", "sep": "Sep", "sept": "Sep", "september": "Sep", "okt": "Oct",
    "oktober": "Oct", "nov": "Nov", "november": "Nov", "des": "Dec", "desember": "Dec",
}  # fmt: skip
_NB_DAYS = ("man", "tir", "ons", "tor", "fre", "lør", "lor", "søn", "son", "mandag", "tirsdag", "onsdag",
            "torsdag", "fredag", "lørdag", "søndag")  # fmt: skip
_NB_DATE = re.compile(
    r"^\s*(?:(?P<day_name>[a-zæøå]+)\.?,?\s+)?(?P<day>\d{1,2})\.?\s+(?P<month>[a-zæøå]+)\.?\s+(?P<year>\d{4})"
    r"(?:\s+(?:kl\.?\s*)?(?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?))?\s*(?P<zone>[+-]\d{4}|[A-Z]{1,5})?\s*$",
    re.IGNORECASE,
)


def parse_norwegian_date(text: str) -> datetime | None:
    """Dates with Norwegian day and month names: 'fre, 05 des 2025 10:00:00 +0100', '5. desember 2025'."""
    match = _NB_DATE.match(text or "")
    if not match:
        return None
    month = _NB_MONTHS.get(match["month"].lower())
    day_name = (match["day_name"] or "").lower()
    if month is None or (day_name and day_name not in _NB_DAYS):
        return None
    clock = (match["time"] or "00:00:00").replace(".", ":")
    if clock.count(":") == 1:
        clock += ":00"
    zone = {"CET": "+0100", "CEST": "+0200", "MET": "+0100", "MEST": "+0200"}.get(
        (match["zone"] or "").upper(), match["zone"]
    )
    try:
        if zone is None:  # Norwegian feeds without a zone mean Norwegian time, summer or winter
            local = parsedate_to_datetime(f"{int(match['day']):02d} {month} {match['year']} {clock}")
            return local.replace(tzinfo=OSLO).astimezone(UTC)
        parsed = parsedate_to_datetime(f"{int(match['day']):02d} {month} {match['year']} {clock} {zone}")
        if parsed.tzinfo is None:  # a zone name email.utils does not know
            return None
        return parsed.astimezone(UTC)
    except (TypeError, ValueError):
        return None


def _feedparser_date_handler(text: str):  # feedparser's handler protocol: a UTC 9-tuple or None
    parsed = parse_norwegian_date(text)
    return parsed.utctimetuple() if parsed else None


_handler_registered = False


def _feedparser():
    """feedparser with the Norwegian date handler registered once."""
    global _handler_registered
    import feedparser

    if not _handler_registered:
        feedparser.registerDateHandler(_feedparser_date_handler)
        _handler_registered = True
    return feedparser


# --- download ------------------------------------------------------------------------------------


def user_agent(settings: Settings) -> str:
    """The User-Agent feed servers see: who we are and where to find us."""
    return settings.news_user_agent or f"newsletter/{__version__} (+{settings.base_url})"


async def _download_http(client: Any, feed: FeedConfig, state: sqlite3.Row | None, settings: Settings) -> Download:
    import asyncio

    import httpx

    headers = {}
    if state is not None and state["etag"]:
        headers["If-None-Match"] = state["etag"]
    if state is not None and state["last_modified"]:
        headers["If-Modified-Since"] = state["last_modified"]
    limit = settings.news_max_kb * 1024
    try:
        async with asyncio.timeout(settings.news_timeout):
            async with client.stream("GET", feed.url, headers=headers) as response:
                if response.status_code == 304:
                    return Download(_("304 not modified"), url=str(response.url))
                if response.status_code >= 400:
                    return Download(
                        str(response.status_code), error=f"HTTP {response.status_code} {response.reason_phrase}"
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    return Download(
                        _("too large"),
                        error=_(
                            "larger than {news_max_kb} KB ({declared} KB)",
                            news_max_kb=settings.news_max_kb,
                            declared=int(declared) // 1024,
                        ),
                    )
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        return Download(
                            _("too large"), error=_("larger than {news_max_kb} KB", news_max_kb=settings.news_max_kb)
                        )
                    chunks.append(chunk)
                return Download(
                    str(response.status_code),
                    body=b"".join(chunks),
                    url=str(response.url),
                    content_type=response.headers.get("content-type", ""),
                    etag=response.headers.get("etag"),
                    last_modified=response.headers.get("last-modified"),
                )
    except TimeoutError:
        return Download(
            "timeout", error=_("no complete answer within {news_timeout} s", news_timeout=settings.news_timeout)
        )
    except httpx.TimeoutException:
        return Download(
            "timeout",
            error=_("no answer within {news_connect_timeout} s", news_connect_timeout=settings.news_connect_timeout),
        )
    except httpx.TooManyRedirects:
        return Download("redirects", error=_("too many redirects"))
    except httpx.HTTPError as exc:
        return Download("error", error=_download_reason(exc))


def _download_reason(exc: Exception) -> str:
    """Why a download failed, in plain words and with what to check."""
    import httpx

    text = str(exc)
    if isinstance(exc, httpx.ConnectError) and (
        "Name or service not known" in text
        or "nodename nor servname" in text
        or "Temporary failure in name resolution" in text
        or "Name does not resolve" in text
        or "getaddrinfo failed" in text
        or "No address associated" in text
    ):
        return _("the name in the address was not found; check the feed's url in newsletter.toml ([[feeds]])")
    if isinstance(exc, httpx.ConnectError) and (
        "refused" in text.lower() or "all connection attempts failed" in text.lower()
    ):
        return _("nothing answers at that address; check the feed's url, or try again later")
    if isinstance(exc, httpx.ConnectError) and ("CERTIFICATE" in text or "SSL" in text):
        return _("the website's certificate was not accepted; tell the feed's owner, or use its http address")
    return _("cannot download ({name}: {exc})", name=type(exc).__name__, exc=exc)  # fmt: skip


def _read_file(feed: FeedConfig, settings: Settings) -> Download:
    path = Path(feed.url)
    try:
        size = path.stat().st_size
        if size > settings.news_max_kb * 1024:
            return Download(_("too large"), error=_("larger than {news_max_kb} KB", news_max_kb=settings.news_max_kb))
        return Download("file", body=path.read_bytes(), url=path.as_uri())
    except OSError as exc:
        return Download("error", error=_("cannot read {path} ({strerror})", path=path, strerror=os_reason(exc)))


# --- parse ---------------------------------------------------------------------------------------


def parse_feed(body: bytes, url: str, content_type: str = "") -> list[ParsedItem]:
    """The items of a feed document; raises FeedError when it is not a usable feed."""
    headers = {"content-type": content_type} if content_type else {}
    # No base URI for feedparser: resolving every element against it costs a third of the
    # parse; item links are made absolute against the feed's address in safe_link instead.
    # Its sanitizer is off too: it is slow and keeps forms and video; nh3 strips every tag.
    parsed = _feedparser().parse(
        io.BytesIO(body), response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )
    if not parsed.get("version") and not parsed.entries:
        head = body[:512].lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
            raise FeedError(_("not a feed: the address gives an HTML page (find the RSS or Atom link on it)"))
        raise FeedError(
            _("not an RSS or Atom feed; check that the feed's url points at the feed itself (often ending in /rss or .xml)")
        )  # fmt: skip
    problem = parsed.get("bozo_exception")
    if problem is not None and type(problem).__name__ == "SAXParseException":
        line = getattr(problem, "getLineNumber", lambda: "?")()
        raise FeedError(_("the feed's XML is broken at line {line}; tell the feed's owner", line=line))
    items = []
    for entry in parsed.entries:
        title = shorten(plain_text(entry.get("title")), TITLE_CHARS)
        raw_summary = entry.get("summary") or (entry.get("content") or [{}])[0].get("value", "")
        summary = shorten(plain_text(raw_summary), STORED_SUMMARY_CHARS)
        link = safe_link(entry.get("link"), url)
        if not title and not summary:
            continue
        stamp = entry.get("published_parsed") or entry.get("updated_parsed")
        published = datetime(*stamp[:6], tzinfo=UTC) if stamp else None
        guid = (entry.get("id") or "").strip() or link or hashlib.sha256(f"{title}\n{summary}".encode()).hexdigest()
        items.append(
            ParsedItem(
                guid=guid[:500], title=title or shorten(summary, 80), link=link, published=published, summary=summary
            )
        )
    return items


# --- fetch and store -----------------------------------------------------------------------------


def _parse_pool(count: int) -> Any:
    """Worker processes that parse feeds on the other cores while downloads go on, or None to
    parse in this process: for a few feeds, on one core, or where forking is not safe."""
    import multiprocessing
    import os
    import threading

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if count < 8 or cores < 2 or threading.active_count() > 1:
        return None  # other threads running: forking could copy a held lock
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    import gc
    from concurrent.futures import ProcessPoolExecutor

    gc.freeze()  # what exists now is shared with the workers, and their collector leaves it alone
    try:
        pool = ProcessPoolExecutor(
            max_workers=min(cores, 4), mp_context=multiprocessing.get_context("fork"), initializer=_feedparser
        )  # the workers import feedparser while this process imports httpx and connects
        pool.submit(int)  # with fork, every worker is started here, before the pool's own thread
    finally:
        gc.unfreeze()  # (this process collects as before: a caller may fetch again and again)
    return pool


def tls_context_soon() -> Callable[[], ssl.SSLContext]:
    """Start loading the system's CA certificates (SSL_CERT_FILE / SSL_CERT_DIR honoured) in a
    thread, and return what waits for the finished context. OpenSSL reads the certificates without
    holding the GIL, so the 30 ms it takes overlap the imports of asyncio and httpx. What loading
    raises is raised by the call, in the caller's thread."""
    import ssl
    import threading

    made: list[ssl.SSLContext | BaseException] = []

    def load() -> None:
        try:
            made.append(ssl.create_default_context())
        except BaseException as exc:  # handed to the caller, as it is
            made.append(exc)

    thread = threading.Thread(target=load, name="ca-certificates", daemon=True)
    thread.start()

    def wait() -> ssl.SSLContext:
        thread.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]

    return wait


def http_client(
    settings: Settings,
    concurrency: int,
    timeout: float,
    connect_timeout: float,
    accept: str,
    tls: Callable[[], ssl.SSLContext] | None = None,
    keep_alive: bool = True,
) -> Any:
    """The httpx.AsyncClient for going online (feeds, check --links): redirects, timeouts,
    a connection limit, our User-Agent, and the system's CA certificates (from ``tls``, a
    ``tls_context_soon()`` started earlier, or loaded now).

    ``keep_alive=False`` closes each connection when its answer is in. httpx's pool looks at
    every connection it keeps, and asks the socket of each idle one whether the server has
    closed it, every time a request starts or ends: with 50 feeds that was about 2,500 such
    checks, and the last answers were read up to 100 ms late. A fetch sends its requests at
    once, to mostly different hosts, so it had little to reuse: a feed whose host another feed
    has just used now opens its own connection (one more TLS handshake). Checking links, many
    to the same host, keeps them."""
    import sys

    tls = tls or tls_context_soon()
    # httpcore imports trio whenever it is installed (for trio's event loop, which we never
    # run): 60 ms of every fetch on a machine that has it. httpx imports its own command line
    # (Pygments, Rich) whenever those are installed: 9 ms more.
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    import httpx

    return httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=5,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency if keep_alive else 0),
        # The system's CA certificates: certificates are verified as always, and these load four
        # times faster than httpx's own bundle.
        verify=tls(),
        headers={"User-Agent": user_agent(settings), "Accept": accept},
    )


async def _download_all(
    settings: Settings,
    feeds: tuple[FeedConfig, ...],
    states: dict[str, sqlite3.Row],
    pool: Any = None,
    tls: Callable[[], ssl.SSLContext] | None = None,
) -> list[tuple[Download, list[ParsedItem], str | None]]:
    """Download every feed concurrently; each is parsed as soon as it arrives, while others wait.
    ``tls`` is None when every feed is a file: then there is no HTTP client at all."""
    import asyncio
    import contextlib

    semaphore = asyncio.Semaphore(settings.news_concurrency)
    online = tls is not None
    async with (
        http_client(
            settings,
            settings.news_concurrency,
            settings.news_timeout,
            settings.news_connect_timeout,
            accept="application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
            tls=tls,
            keep_alive=False,
        )
        if online
        else contextlib.nullcontext()
    ) as client:

        async def one(feed: FeedConfig) -> tuple[Download, list[ParsedItem], str | None]:
            if feed.is_file:
                download = _read_file(feed, settings)
            else:
                async with semaphore:
                    download = await _download_http(client, feed, states.get(feed.name), settings)
            if download.error is not None or download.body is None:
                return download, [], download.error
            args = (download.body, download.url or feed.url, download.content_type)
            try:
                if pool is None:
                    return download, parse_feed(*args), None
                return download, await asyncio.get_running_loop().run_in_executor(pool, parse_feed, *args), None
            except FeedError as exc:
                return download, [], str(exc)

        return await asyncio.gather(*(one(feed) for feed in feeds))


def _run(coroutine: Any) -> Any:
    """asyncio.run, also when the caller already runs an event loop (then in a worker thread)."""
    import asyncio  # here, not at the top: building an issue never needs it

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def fetch_feeds(settings: Settings, conn: sqlite3.Connection, names: Iterable[str] = ()) -> list[FetchReport]:
    """Fetch every configured feed (or those named) concurrently and store new items.

    A failing feed never stops the others; each gets a FetchReport.
    """
    wanted = set(names)
    unknown = wanted - {f.name for f in settings.feeds}
    if unknown:
        raise FeedError(
            _(
                "unknown feed(s): {unknown}; the names are in newsletter.toml [[feeds]].",
                unknown=", ".join(sorted(unknown)),
            )
        )
    feeds = tuple(f for f in settings.feeds if not wanted or f.name in wanted)
    if not feeds:
        raise FeedError(
            _(
                'no feeds set up yet: add three lines to newsletter.toml for each feed, like these: [[feeds]], then name = "Lillestrøm kommune", then url = "https://…/rss" (the address of its RSS or Atom feed).'
            )
        )
    states = {row["name"]: row for row in conn.execute("SELECT * FROM feeds")}
    online = sum(not f.is_file for f in feeds)
    pool = _parse_pool(online)  # made before the event loop starts, and before any other thread
    try:
        tls = tls_context_soon() if online else None  # None: files only, nothing goes online
        results = _run(_download_all(settings, feeds, states, pool, tls))
    finally:
        if pool is not None:
            pool.shutdown()
    # Stored after the downloads, not while they go on: a database kept busy by another command
    # would hold up the event loop, and the downloads still running would time out.
    return [
        _store(settings, conn, feed, download, items, error, states.get(feed.name))
        for feed, (download, items, error) in zip(feeds, results, strict=True)
    ]


def _store(
    settings: Settings,
    conn: sqlite3.Connection,
    feed: FeedConfig,
    download: Download,
    items: list[ParsedItem],
    error: str | None,
    state: sqlite3.Row | None,
) -> FetchReport:
    """Store one feed's items and status in one transaction."""
    moment = now()
    first_fetch = state is None or state["last_ok"] is None
    days = feed.first_fetch_days if feed.first_fetch_days is not None else settings.news_first_fetch_days
    horizon = moment - timedelta(days=days) if first_fetch and days else None
    new = 0
    with conn:  # one transaction per feed: its items and its status together, or nothing
        conn.execute(
            "INSERT INTO feeds (name, url) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET url = excluded.url",
            (feed.name, feed.url),
        )
        for item in items:
            backlog = horizon is not None and (item.published is None or item.published < horizon)
            cursor = conn.execute(
                "INSERT INTO feed_items (feed, guid, title, link, published, first_seen, summary, backlog)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(feed, guid) DO NOTHING",
                (feed.name, item.guid, item.title, item.link, item.published and timestamp(item.published),
                 timestamp(moment), item.summary, int(backlog)),
            )  # fmt: skip
            new += cursor.rowcount if not backlog else 0
        if error is None:
            conn.execute(
                "UPDATE feeds SET last_fetched = ?, last_ok = ?, last_status = ?, last_error = NULL,"
                " etag = COALESCE(?, etag), last_modified = COALESCE(?, last_modified) WHERE name = ?",
                (
                    timestamp(moment),
                    timestamp(moment),
                    download.status,
                    download.etag,
                    download.last_modified,
                    feed.name,
                ),
            )
        else:
            conn.execute(
                "UPDATE feeds SET last_fetched = ?, last_status = ?, last_error = ? WHERE name = ?",
                (timestamp(moment), download.status, error, feed.name),
            )
    log.debug("feed %s: %s, %d items, %d new", feed.name, download.status, len(items), new)
    return FetchReport(feed.name, error is None, download.status, new=new, seen=len(items), error=error)


# --- selection and curation -------------------------------------------------------------------


def _item(row: sqlite3.Row) -> FeedItem:
    return FeedItem(
        id=row["id"],
        feed=row["feed"],
        title=row["title"],
        link=row["link"],
        published=parse_timestamp(row["published"]),
        first_seen=parse_timestamp(row["first_seen"]),  # type: ignore[arg-type]
        summary=row["summary"],
    )


def candidates(settings: Settings, conn: sqlite3.Connection, issue_id: str, language: str) -> list[Candidate]:
    """Every item that could go into the issue, newest first, marked selected or not with the reason.

    Default: items first seen since the previous issue was sent and not used by a sent issue,
    within each feed's keywords and limit. 'pick' and 'skip' choices override it. A sent issue
    keeps exactly the items it was sent with.
    """
    sent = conn.execute("SELECT sent_at FROM sent_issues WHERE issue = ?", (issue_id,)).fetchone()
    if sent is not None:
        rows = conn.execute(
            "SELECT i.* FROM feed_items i JOIN used_items u ON u.item = i.id WHERE u.issue = ?"
            " ORDER BY COALESCE(i.published, i.first_seen) DESC, i.id DESC",
            (issue_id,),
        ).fetchall()
        return [Candidate(_item(r), True, "sent") for r in rows]

    previous = conn.execute("SELECT MAX(sent_at) FROM sent_issues").fetchone()[0] or ""
    choices = {
        r["item"]: r["choice"] for r in conn.execute("SELECT item, choice FROM issue_news WHERE issue = ?", (issue_id,))
    }
    configured = {f.name: f for f in settings.feeds}
    rows = conn.execute(
        "SELECT i.*, (SELECT MIN(u.issue) FROM used_items u WHERE u.item = i.id) AS used_in FROM feed_items i"
        " WHERE (i.first_seen > ? AND i.backlog = 0) OR i.id IN (SELECT item FROM issue_news WHERE issue = ?)"
        " ORDER BY COALESCE(i.published, i.first_seen) DESC, i.id DESC",
        (previous, issue_id),
    ).fetchall()
    taken: dict[str, int] = {}
    result = []
    for row in rows:
        item = _item(row)
        feed = configured.get(item.feed)
        choice = choices.get(item.id)
        if choice == "pick":
            result.append(Candidate(item, True, "picked"))
            continue
        if choice == "skip":
            result.append(Candidate(item, False, "skipped"))
            continue
        if feed is None:
            reason = _("feed no longer configured")
        elif row["used_in"]:
            reason = _("used in {used_in}", used_in=row["used_in"])
        elif feed.language and feed.language != language:
            reason = _("feed is for the {language} edition", language=feed.language)
        elif not _keywords_match(feed, item):
            reason = "keywords"
        elif taken.get(feed.name, 0) >= feed.max_items:
            reason = _("over the feed's limit of {max_items}", max_items=feed.max_items)
        else:
            taken[feed.name] = taken.get(feed.name, 0) + 1
            result.append(Candidate(item, True, "new"))
            continue
        result.append(Candidate(item, False, reason))
    return result


def _keywords_match(feed: FeedConfig, item: FeedItem) -> bool:
    text = f"{item.title} {item.summary}".lower()
    if feed.include and not any(word in text for word in feed.include):
        return False
    return not any(word in text for word in feed.exclude)


def selected_news(settings: Settings, conn: sqlite3.Connection, issue_id: str, language: str) -> tuple[FeedItem, ...]:
    """The items the issue shows, newest first."""
    return tuple(c.item for c in candidates(settings, conn, issue_id, language) if c.selected)


def choose(conn: sqlite3.Connection, issue_id: str, item_ids: Iterable[int], choice: str | None) -> int:
    """Store 'pick' or 'skip' (or, with None, forget the choice) for items of an issue."""
    ids = list(dict.fromkeys(item_ids))
    sent = conn.execute("SELECT 1 FROM sent_issues WHERE issue = ?", (issue_id,)).fetchone()
    if sent:
        raise FeedError(_("issue {issue_id} has been sent; its news can no longer change.", issue_id=issue_id))
    known = {r[0] for r in conn.execute(f"SELECT id FROM feed_items WHERE id IN ({','.join('?' * len(ids))})", ids)}
    missing = [str(i) for i in ids if i not in known]
    if missing:
        raise FeedError(
            _(
                "no news item with id {missing}; see the ids with 'newsletter feeds list {issue_id}'.",
                missing=", ".join(missing),
                issue_id=issue_id,
            )
        )
    with conn:
        for item in ids:
            if choice is None:
                conn.execute("DELETE FROM issue_news WHERE issue = ? AND item = ?", (issue_id, item))
            else:
                conn.execute(
                    "INSERT INTO issue_news (issue, item, choice, chosen_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(issue, item) DO UPDATE SET choice = excluded.choice, chosen_at = excluded.chosen_at",
                    (issue_id, item, choice, timestamp(now())),
                )
    return len(ids)


def mark_sent(conn: sqlite3.Connection, issue_id: str, item_ids: Iterable[int], when: datetime | None = None) -> None:
    """Record that an issue went out with these items: they count as used from now on. Commits."""
    with conn:
        record_used(conn, issue_id, item_ids, when)


def record_used(conn: sqlite3.Connection, issue_id: str, item_ids: Iterable[int], when: datetime | None = None) -> None:
    """``mark_sent`` inside the caller's transaction (the one that starts the delivery)."""
    conn.execute(
        "INSERT INTO sent_issues (issue, sent_at) VALUES (?, ?) ON CONFLICT(issue) DO NOTHING",
        (issue_id, timestamp(when or now())),
    )
    conn.executemany("INSERT OR IGNORE INTO used_items (item, issue) VALUES (?, ?)", [(i, issue_id) for i in item_ids])


def unrecord_used(conn: sqlite3.Connection, issue_id: str) -> None:
    """An issue's delivery was cancelled before any message was accepted: its news is unused again."""
    conn.execute("DELETE FROM used_items WHERE issue = ?", (issue_id,))
    conn.execute("DELETE FROM sent_issues WHERE issue = ?", (issue_id,))


def feed_status(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Each stored feed's last fetch: status, error, times and item count."""
    return conn.execute(
        "SELECT f.*, (SELECT COUNT(*) FROM feed_items i WHERE i.feed = f.name) AS items FROM feeds f ORDER BY f.name"
    ).fetchall()


def news_date(value: datetime | None, fallback: datetime) -> date:
    """The day an item is shown with (Norwegian time for Norwegian readers)."""
    return (value or fallback).astimezone(OSLO).date()
