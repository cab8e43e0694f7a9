"""The public pages: signup, confirm, preferences, unsubscribe (one-click too), "change my
subscription", privacy, health, and the archive.

Starlette, served by uvicorn (`newsletter serve`). The URLs are the ones the emails link to:
``/signup``, ``/confirm/{token}``, ``/preferences/{token}``, ``/unsubscribe/{token}``; and
``/change``, ``/privacy``, ``/challenge`` (ALTCHA) and ``/static/`` (the scripts).

Signup and change forms come from our own pages (CSRF token, double-submit cookie) or from the
websites in ``web.allowed_origins`` (checked by Origin or Referer, CORS for their scripts); any
other origin is refused. Each needs a solved proof-of-work challenge, used once, or counts
against the stricter limits of forms sent without JavaScript (guard.py); a filled-in honeypot
gets the usual answer and nothing happens. Signup answers the same whether or not the address
is known, and is rate-limited per client address. Confirming sends the welcome email once
(welcome.py). A changed or forged link changes nothing and gets a friendly page.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import bounces, guard, hooks, keys, welcome
from .clock import now, timestamp
from .compose import clean_name, confirm_url, preferences_url, unsubscribe_url
from .config import Settings
from .delivery import transport_for
from .emissions import Member, project_members
from .errors import ChallengeRefused, NewsletterError, Refused, Replayed, StoreError, SubscriberError
from .i18n import load_strings
from .message import confirmation_message, dkim_key, link_message
from .render import template_folders, web_environment
from .signing import sign
from .store import connect, note, remember, urgent, use_pool
from .subscribers import (
    SignupRequest,
    Subscriber,
    Unsubscriber,
    deliverable,
    get_by_id,
    make_confirm_token,
    make_token,
    normalize_email,
    read_confirm_token,
    read_token,
    request_link,
    request_signup,
    resolve_topics,
)
from .subscribers import confirm as confirm_signup
from .transport import SMTPUTF8_SEEN, Connection, smtputf8_fact
from .workers import deliver

STATIC = Path(__file__).parent / "static"  # the signup script and the ALTCHA widget (tools/vendor_altcha.py)
CSRF_COOKIE = "nl_csrf"
UNSUBSCRIBE_WAIT = 2.0  # seconds an unsubscribe waits for the database before it is kept beside it
SIGNUP_WAIT = 5.0  # seconds a signup waits for the database before the visitor is asked to try again
WITHOUT_SCRIPT_PER_CLIENT = (2, 3600.0)  # signups without the proof of work, per client address
TITLES = {
    "web/signup.html.j2": "web_signup_title",
    "web/change.html.j2": "web_change_title",
    "web/privacy.html.j2": "web_privacy_title",
    "web/preferences.html.j2": "web_preferences_title",
    "web/unsubscribe.html.j2": "web_unsubscribe_title",
    "web/confirm.html.j2": "web_confirm_title",
}
log = logging.getLogger(__name__)


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (client address), in memory that
    stays bounded: at most ``keys`` clients are remembered, the least recently seen forgotten
    first (a flood of addresses cannot fill the memory; it only forgets the quiet ones)."""

    def __init__(self, limit: int, window: float, keys: int = 10_000) -> None:
        self.limit, self.window, self.keys = limit, window, keys
        self.events: OrderedDict[str, deque[float]] = OrderedDict()
        self.lock = threading.Lock()

    def allow(self, key: str) -> bool:
        moment = time.monotonic()
        with self.lock:
            events = self.events.pop(key, None) or deque(maxlen=self.limit)
            self.events[key] = events  # the most recent at the end
            while events and events[0] <= moment - self.window:
                events.popleft()
            while len(self.events) > self.keys:
                self.events.popitem(last=False)
            if len(events) >= self.limit:
                return False
            events.append(moment)
            return True


@dataclass
class Site:
    """What the pages need, made once when the app starts."""

    settings: Settings
    members: tuple[Member, ...]
    env: jinja2.Environment
    strings: dict[str, dict[str, str]]
    limiter: RateLimiter
    without_script: RateLimiter  # all signups without the proof of work, per hour
    without_script_client: RateLimiter  # the same, per client address

    def page(self, request: Request, template: str, lang: str, status: int = 200, **values: Any) -> HTMLResponse:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        other = "en" if lang == "nb" else "nb"
        context = {
            "lang": lang,
            "t": self.strings[lang],
            "newsletter_name": self.settings.display_name(lang),
            "sender_name": self.settings.sender_name,
            "postal_address": self.settings.address_line,
            "home": f"{self.settings.base_url}/signup",
            "other_language_url": f"{request.url.path}?lang={other}",
            "privacy_url": self.settings.web_privacy_url or f"{self.settings.base_url}/privacy?lang={lang}",
            "challenge_url": "/challenge",
            "csrf": token,
            **values,
        }
        context.setdefault("title", self.strings[lang][TITLES.get(template, "web_signup_title")])
        response = HTMLResponse(self.env.get_template(template).render(context), status_code=status)
        response.set_cookie(
            CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"  # tokens are in the URL
        return response

    def message(
        self, request: Request, lang: str, title_key: str, text: str, status: int = 200, link: dict | None = None
    ) -> HTMLResponse:
        return self.page(
            request,
            "web/message.html.j2",
            lang,
            status,
            title=self.strings[lang][title_key],
            message=text,
            link=link,
            notice=status == 200,
        )

    def refusal(self, request: Request, lang: str, text_key: str, status: int) -> HTMLResponse:
        """The friendly page for a bad link (400), an expired form (403) or too many tries (429)."""
        return self.message(request, lang, "web_bad_link_title", self.strings[lang][text_key], status)

    def municipalities(self) -> list[dict[str, str]]:
        return sorted(({"number": m.number_2024, "name": m.name} for m in self.members), key=lambda m: m["name"])

    def topics(self, lang: str) -> list[dict[str, str]]:
        return [{"key": c.key, "label": c.label(lang)} for c in self.settings.categories]


class ArchiveFiles(StaticFiles):
    """The archive folder: 404 (not 500) before the first archive is written, no dot files (the
    marker), the Atom feed with its own media type, and redirects (a folder without its '/') to
    the public address, never to whatever Host a request names."""

    def __init__(self, *, public: str, **options: Any) -> None:
        super().__init__(**options)
        self.public = public  # <base_url>/archive/

    async def get_response(self, path: str, scope: Any) -> Response:
        response = await super().get_response(path, scope)
        if isinstance(response, RedirectResponse):
            inside = "/".join(part for part in path.replace(os.sep, "/").split("/") if part not in ("", "."))
            return RedirectResponse(f"{self.public}{quote(inside)}/", status_code=response.status_code)
        return response

    async def check_config(self) -> None:
        if self.directory is not None and not os.path.isdir(self.directory):
            return  # not written yet: every path is simply not found
        await super().check_config()

    def get_path(self, scope: Any) -> str:
        path = super().get_path(scope)
        if any(part.startswith(".") and part != "." for part in path.split(os.sep)):
            return os.path.join(".never", ".served")  # dot files (the marker): not found
        return path

    def file_response(
        self, full_path: Any, stat_result: os.stat_result, scope: Any, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if str(full_path).endswith("feed.xml"):
            response.headers["content-type"] = "application/atom+xml; charset=utf-8"
        return response


def _lang(request: Request, default: str = "nb") -> str:
    wanted = request.query_params.get("lang")
    return wanted if wanted in ("nb", "en") else default


def _csrf_ok(request: Request, form: Any) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = str(form.get("csrf", ""))
    return bool(cookie) and hmac.compare_digest(cookie, sent)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(settings: Settings, *, rate_limit: tuple[int, float] = (5, 600.0)) -> Any:
    """The ASGI app for the public pages. Refuses to start without the key the links in sent mail
    were signed with, and without a transport for the confirmation emails."""
    use_pool()  # the server's threads share a few PostgreSQL connections
    keys.check(settings)  # also creates and migrates the database before the first request
    conn = connect(settings.database)
    try:
        transport_for(settings, conn)  # refuse now, not with the first signup
    finally:
        conn.close()
    signers = dkim_key(settings)  # and a DKIM key that cannot sign: parsed once, here
    folders = template_folders(settings)
    env = web_environment(settings)
    site = Site(
        settings=settings,
        members=project_members(settings),
        env=env,
        strings={lang: load_strings(folders, lang) for lang in ("nb", "en")},
        limiter=RateLimiter(*rate_limit),
        without_script=RateLimiter(settings.web_signups_without_script, 3600.0),
        without_script_client=RateLimiter(*WITHOUT_SCRIPT_PER_CLIENT),
    )

    def db():
        return connect(settings.database)

    unsubscriber = Unsubscriber(settings.database, UNSUBSCRIBE_WAIT)
    reading = threading.local()

    def reader() -> sqlite3.Connection:
        """This thread's connection for reading (a server thread answers many requests)."""
        conn = getattr(reading, "conn", None)
        if conn is None:
            conn = reading.conn = connect(settings.database)
        return conn

    def _origin(request: Request) -> tuple[str | None, str | None]:
        """(where the request comes from, 'own' / 'allowed' / None). A request that names no
        origin at all (no Origin, no Referer) is treated as our own page: it must carry the
        CSRF token, which a page on another site cannot read."""
        origin = guard.sender_origin(request.headers.get("origin"), request.headers.get("referer"))
        here = f"{request.url.scheme}://{request.url.netloc}".lower()
        return origin, ("own" if origin is None else guard.origin_kind(settings, origin, own=(here,)))

    def _cors(response: Response, origin: str | None, kind: str | None) -> Response:
        """Let the script on an allowed website read the answer (no cookies are involved)."""
        if kind == "allowed" and origin:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        return response

    def _answer(request: Request, origin: str | None, kind: str | None, lang: str, text_key: str, status: int,
                ok: bool = False, field: str | None = None) -> Response:  # fmt: skip
        """The answer to a form post from a script (JSON) or a plain form (a page)."""
        text = site.strings[lang][text_key]
        if "application/json" in request.headers.get("accept", ""):
            body = {"ok": ok, "message": text, **({"field": field} if field else {})}
            response: Response = JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
        elif ok:
            response = site.message(request, lang, "web_check_email_title", text)
        elif text_key == "web_bad_origin":
            response = site.message(request, lang, "web_bad_link_title", text, status,
                                    link={"url": f"{settings.base_url}/signup?lang={lang}", "text": site.strings[lang]["web_signup_title"]})  # fmt: skip
        else:
            response = site.refusal(request, lang, text_key, status)
        return _cors(response, origin, kind)

    async def _guarded(request: Request, form: Any, origin: str | None, kind: str | None, lang: str) -> Response | None:
        """The checks every form from the web passes, in order: where it comes from (CSRF for our
        own pages), the per-client limit, and the proof of work (or, without it, the stricter
        limits of signups without JavaScript). None when it may go on."""
        if kind is None:
            log.info("signup: refused a form from %s (not in web.allowed_origins)", origin)
            return _answer(request, origin, kind, lang, "web_bad_origin", 403)
        if kind == "own" and not _csrf_ok(request, form):
            return _answer(request, origin, kind, lang, "web_bad_form", 403)
        client = _client(request)
        if not site.limiter.allow(client):
            return _answer(request, origin, kind, lang, "web_too_many", 429)
        payload = str(form.get(guard.CHALLENGE_FIELD, "") or "")
        if payload:
            try:
                await run_in_threadpool(_spend, payload)
            except ChallengeRefused as refused:
                log.info("signup: a challenge was refused (%s)", refused.reason)
                return _answer(request, origin, kind, lang, "web_challenge_failed", 400)
            except (sqlite3.OperationalError, StoreError):
                log.warning("signup: the database was busy; the visitor was asked to try again", exc_info=True)
                return _answer(request, origin, kind, lang, "web_busy", 503)
            return None
        if not site.without_script_client.allow(client) or not site.without_script.allow("all"):
            return _answer(request, origin, kind, lang, "web_without_script_busy", 429)
        return None

    async def _posted(request: Request, lang: str) -> tuple[Any, str | None, str | None, str, Response | None]:
        """A posted form, where it comes from, its language, and the refusal when a check fails."""
        origin, kind = _origin(request)
        form = await request.form()
        lang = str(form.get("lang")) if form.get("lang") in ("nb", "en") else lang
        return form, origin, kind, lang, await _guarded(request, form, origin, kind, lang)

    def _spend(payload: str) -> None:
        conn = connect(settings.database, timeout=SIGNUP_WAIT)
        try:
            guard.spend_challenge(settings, conn, payload)
        finally:
            conn.close()

    async def preflight(request: Request) -> Response:
        """CORS preflight for the forms and the challenge: only the allowed websites."""
        origin, kind = _origin(request)
        if kind != "allowed":
            return PlainTextResponse("origin not allowed\n", status_code=403)
        return _cors(Response(status_code=204, headers={
            "Access-Control-Allow-Methods": "GET, POST", "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600"}), origin, kind)  # fmt: skip

    async def challenge(request: Request) -> Response:
        """A fresh proof-of-work challenge for the ALTCHA widget (our pages and allowed websites)."""
        origin, kind = _origin(request)
        if kind is None:
            return PlainTextResponse("origin not allowed\n", status_code=403)
        made = guard.new_challenge(settings)
        return _cors(JSONResponse(made.as_json, headers={"Cache-Control": "no-store"}), origin, kind)

    async def signup(request: Request) -> Response:
        lang = _lang(request)
        form_values = {"email": "", "name": "", "municipality": "", "topics": [], "language": lang}
        if request.method in ("GET", "HEAD"):
            return site.page(request, "web/signup.html.j2", lang, action=f"/signup?lang={lang}", form=form_values,
                             municipalities=site.municipalities(), topics=site.topics(lang), error=None)  # fmt: skip
        form, origin, kind, lang, refused = await _posted(request, lang)
        if refused is not None:
            return refused
        values = {
            "email": str(form.get("email", ""))[:320],
            "name": clean_name(str(form.get("name", "")))[:200],
            "municipality": str(form.get("municipality", "")),
            "topics": [str(t) for t in form.getlist("topics")],
            "language": str(form.get("language", lang)) if form.get("language") in ("nb", "en") else lang,
        }
        problem = "web_invalid_email"
        try:
            email = normalize_email(values["email"])
            problem = "web_undeliverable_email"  # valid, but the newsletter's SMTP server cannot reach it
            await run_in_threadpool(_deliverable, email)
            problem = "web_invalid_email"
            municipality = (
                values["municipality"] if values["municipality"] in {m.number_2024 for m in site.members} else None
            )
            topics = resolve_topics(values["topics"], settings)
        except SubscriberError:
            if kind == "own" and "application/json" not in request.headers.get("accept", ""):
                return site.page(request, "web/signup.html.j2", lang, 400, action=f"/signup?lang={lang}", form=values,
                                 municipalities=site.municipalities(), topics=site.topics(lang),
                                 error=site.strings[lang][problem])  # fmt: skip
            return _answer(request, origin, kind, lang, problem, 400, field="email")
        if str(form.get(guard.HONEYPOT, "") or "").strip():
            # A bot filled in the field people never see: the same answer, and nothing happens.
            log.info("signup: the honeypot was filled in; nothing stored, nothing sent")
            return _thanks(request, form, origin, kind, lang, "web_check_email")
        # Stored before the answer (a busy database is a 503, never a success that was not kept);
        # the answer is the same whether the address was new, known, confirmed or blocked, and
        # the email goes out after it, so neither content nor timing tells.
        try:
            wanted = await run_in_threadpool(
                _subscribe, email, values["name"], municipality, values["language"], topics
            )
        except (sqlite3.OperationalError, StoreError):
            log.warning("signup: the database was busy; the visitor was asked to try again", exc_info=True)
            return _answer(request, origin, kind, lang, "web_busy", 503)
        response = _thanks(request, form, origin, kind, lang, "web_check_email")
        if wanted is not None:
            response.background = BackgroundTask(_send_confirmation, *wanted)
        return response

    def _thanks(
        request: Request, form: Any, origin: str | None, kind: str | None, lang: str, text_key: str
    ) -> Response:
        """The neutral success: JSON for a script, a redirect back to an allowed page for a plain
        form that asked for one, else our own thank-you page."""
        back = guard.return_url(settings, str(form.get("return_url", "") or ""))
        if back and "application/json" not in request.headers.get("accept", ""):
            return RedirectResponse(back, status_code=303)
        return _answer(request, origin, kind, lang, text_key, 200, ok=True)

    async def change(request: Request) -> Response:
        """'Change my subscription': mails the link to an address's preferences page (the same
        answer whether or not the address is on the list)."""
        lang = _lang(request)
        if request.method in ("GET", "HEAD"):
            return site.page(request, "web/change.html.j2", lang, action=f"/change?lang={lang}")
        form, origin, kind, lang, refused = await _posted(request, lang)
        if refused is not None:
            return refused
        if str(form.get(guard.HONEYPOT, "") or "").strip():
            return _thanks(request, form, origin, kind, lang, "web_change_sent")
        try:
            person = await run_in_threadpool(_linked, str(form.get("email", ""))[:320])
        except (sqlite3.OperationalError, StoreError):
            return _answer(request, origin, kind, lang, "web_busy", 503)
        response = _thanks(request, form, origin, kind, lang, "web_change_sent")
        if person is not None:
            response.background = BackgroundTask(_send_link, person)
        return response

    def _linked(email: str) -> Subscriber | None:
        with urgent(settings.database):
            conn = connect(settings.database, timeout=SIGNUP_WAIT)
            try:
                return request_link(conn, settings, email)
            finally:
                conn.close()

    def _send_link(person: Subscriber) -> None:
        try:
            url = preferences_url(settings, make_token(settings, person.id, "preferences"))
            keys.record(settings)
            language = person.language if person.language in ("nb", "en") else settings.language
            _mail(person.email, lambda address: link_message(
                settings, site.strings[language], "link", language, address, person.name, url), person.id)  # fmt: skip
        except NewsletterError as exc:
            log.warning("change: the link to the preferences was not sent: %s", exc)

    async def privacy(request: Request) -> Response:
        lang = _lang(request)
        contact = settings.reply_to or settings.sender_address
        return site.page(request, "web/privacy.html.j2", lang, contact=contact,
                         text=site.strings[lang]["web_privacy_text"].format(
                             sender=settings.sender_name, name=settings.display_name(lang)))  # fmt: skip

    def _subscribe(email: str, name: str, municipality: str | None, language: str, topics: tuple[str, ...]):
        with urgent(settings.database):
            conn = connect(settings.database, timeout=SIGNUP_WAIT)
            try:
                return request_signup(conn, settings, email, name=name, municipality=municipality,
                                      language=language, topics=topics)  # fmt: skip
            except SubscriberError:
                return None  # e.g. forgotten and not allowed: the same answer
            finally:
                conn.close()

    def _send_confirmation(wanted: SignupRequest, person: Subscriber) -> None:
        try:
            url = confirm_url(settings, make_confirm_token(settings, wanted))
            keys.record(settings)
            language = person.language
            _mail(person.email, lambda address: confirmation_message(
                settings, site.strings[language], language, address, person.name, url), person.id)  # fmt: skip
        except NewsletterError as exc:  # logged for the operator; the visitor already has the neutral answer
            log.warning("signup: the confirmation email was not sent: %s", exc)

    def _mail(email: str, make, subscriber: int | None = None) -> None:
        """One message through the configured transport, DKIM-signed, by the same rules as a
        send; with bounces.address, its envelope sender names the subscriber (VERP, delivery 0:
        not an issue)."""
        sender = settings.sender_address
        if settings.bounces_address and subscriber is not None:
            sender = bounces.envelope_sender(settings, 0, subscriber)
        conn = db()
        try:
            via = transport_for(settings, conn)
            connection = Connection(via)
            try:
                deliver(connection, sender, email, lambda address: sign(make(address), signers))  # as a send's are
                if via.kind == "smtp":
                    remember(conn, "smtp", via.target)
                    note(conn, SMTPUTF8_SEEN, smtputf8_fact(via, connection.smtputf8))
            finally:
                connection.close()
        finally:
            conn.close()

    def _deliverable(email: str) -> None:
        conn = db()
        try:
            deliverable(conn, settings, email)
        finally:
            conn.close()

    def _person(token: str, purpose: str):
        subscriber_id = read_token(settings, token, purpose)
        if settings.database.url:  # PostgreSQL: a pooled connection, back in the pool at once
            conn = db()
            try:
                person = get_by_id(conn, subscriber_id)
            finally:
                conn.close()
        else:  # SQLite: this thread's own connection, kept (opening the file costs more than the read)
            person = get_by_id(reader(), subscriber_id)
        if person is None:
            raise SubscriberError("the subscriber no longer exists.")
        return person

    def _confirm(wanted: SignupRequest):
        conn = db()
        try:
            return confirm_signup(conn, settings, wanted)
        finally:
            conn.close()

    def _requested(token: str):
        wanted = read_confirm_token(settings, token)
        conn = db()
        try:
            person = get_by_id(conn, wanted.subscriber)
        finally:
            conn.close()
        if person is None:
            raise SubscriberError("the subscriber no longer exists.")
        return wanted, person

    async def confirm(request: Request) -> Response:
        token = request.path_params["token"]
        lang = _lang(request)
        try:
            wanted, person = await run_in_threadpool(_requested, token)
        except SubscriberError:
            return site.refusal(request, lang, "web_bad_link", 400)
        lang = _lang(request, wanted.details.get("language") or person.language)
        # A plain link confirms a pending subscriber; one that carries a signup's details may bring
        # back someone who left (only by their own click); a blocked address never comes back.
        if person.status == "blocked" or not (wanted.details or person.status in ("pending", "confirmed")):
            return site.refusal(request, lang, "web_bad_link", 400)
        if wanted.details or person.status == "pending":
            if request.method in ("GET", "HEAD"):
                # A page with a button: link scanners that open every link cannot confirm for anyone.
                return site.page(request, "web/confirm.html.j2", lang, email=person.email, action=f"/confirm/{token}")
            form = await request.form()
            if not _csrf_ok(request, form):
                return site.refusal(request, lang, "web_bad_form", 403)
            person = await run_in_threadpool(_confirm, wanted)
            if person is None:
                return site.refusal(request, lang, "web_bad_link", 400)
        link = {"url": preferences_url(settings, make_token(settings, person.id, "preferences")),
                "text": site.strings[lang]["web_preferences_link"]}  # fmt: skip
        response = site.message(request, lang, "web_confirmed_title", site.strings[lang]["web_confirmed"], link=link)
        if settings.welcome_enabled and request.method == "POST":
            response.background = BackgroundTask(_send_welcome, person.id)
        return response

    def _send_welcome(subscriber_id: int) -> None:
        """The welcome email, once per subscriber ever (welcome.claim), after the answer."""
        conn = db()
        try:
            if not welcome.claim(conn, subscriber_id):
                return
            person = get_by_id(conn, subscriber_id)
            language = person.language if person and person.language in ("nb", "en") else settings.language
            newest = welcome.newest_issue(settings, conn, language)
        finally:
            conn.close()
        if person is None:
            return
        try:
            keys.record(settings)
            _mail(person.email, lambda address: welcome.welcome_message(
                settings, site.strings[language], person, address, newest), person.id)  # fmt: skip
        except NewsletterError as exc:  # logged for the operator; the next confirmation may try again
            log.warning("confirm: the welcome email was not sent: %s", exc)
            conn = db()
            try:
                welcome.unclaim(conn, subscriber_id)
            finally:
                conn.close()

    async def preferences(request: Request) -> Response:
        token = request.path_params["token"]
        lang = _lang(request)
        try:
            person = await run_in_threadpool(_person, token, "preferences")
        except SubscriberError:
            return site.refusal(request, lang, "web_bad_link", 400)
        lang = _lang(request, person.language)
        saved = False
        if request.method == "POST":  # GET and HEAD only show the page
            form = await request.form()
            if not _csrf_ok(request, form):
                return site.refusal(request, lang, "web_bad_form", 403)
            municipality = str(form.get("municipality", ""))
            try:
                topics = resolve_topics([str(t) for t in form.getlist("topics")], settings)
            except SubscriberError:
                topics = person.topics
            language = str(form.get("language")) if form.get("language") in ("nb", "en") else person.language

            def save() -> Any:
                conn = db()
                try:
                    with conn:
                        conn.execute(
                            "UPDATE subscribers SET name = ?, municipality = ?, language = ?, topics = ?, updated_at = ?"
                            " WHERE id = ?",
                            (clean_name(str(form.get("name", "")))[:200],
                             municipality if municipality in {m.number_2024 for m in site.members} else None,
                             language, ",".join(topics), timestamp(now()), person.id),
                        )  # fmt: skip
                    return get_by_id(conn, person.id)
                finally:
                    conn.close()

            person = await run_in_threadpool(save)
            lang, saved = person.language, True
        form_values = {"name": person.name, "municipality": person.municipality or "", "topics": list(person.topics),
                       "language": person.language}  # fmt: skip
        return site.page(request, "web/preferences.html.j2", lang, email=person.email, form=form_values, saved=saved,
                         action=f"/preferences/{token}", municipalities=site.municipalities(), topics=site.topics(lang),
                         unsubscribe_url=unsubscribe_url(settings, make_token(settings, person.id, "unsubscribe")))  # fmt: skip

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        lang = _lang(request)
        try:
            person = await run_in_threadpool(_person, token, "unsubscribe")
        except SubscriberError:
            if request.method == "POST" and "csrf" not in (await request.form()):
                return PlainTextResponse("invalid link\n", status_code=400)
            return site.refusal(request, lang, "web_bad_link", 400)
        lang = _lang(request, person.language)
        if request.method in ("GET", "HEAD"):
            # A page with a button: link scanners that follow GET links cannot unsubscribe anyone;
            # HEAD never changes anything either, whatever its body says.
            return site.page(
                request, "web/unsubscribe.html.j2", lang, email=person.email, action=f"/unsubscribe/{token}"
            )
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"  # RFC 8058: no cookie, no login
        if not one_click and not _csrf_ok(request, form):
            return site.refusal(request, lang, "web_bad_form", 403)
        if person.status in ("pending", "confirmed"):  # bounced and blocked stay as they are
            try:
                await run_in_threadpool(_leave, person.id)
            except OSError:  # neither the database nor the file beside it took it: say so, do not pretend
                log.exception("unsubscribe: could not be stored")
                if one_click:
                    return PlainTextResponse("try again later\n", status_code=503)
                return site.refusal(request, lang, "web_busy", 503)
        if one_click:
            return PlainTextResponse("unsubscribed\n")
        return site.message(request, lang, "web_unsubscribed_title", site.strings[lang]["web_unsubscribed"])

    def _leave(subscriber_id: int) -> None:
        """Unsubscribe durably before the answer (see subscribers.Unsubscriber)."""
        unsubscriber.unsubscribe(subscriber_id)

    def ping() -> None:
        conn = db()
        try:
            conn.execute("SELECT 1").fetchone()
        finally:
            conn.close()

    async def health(request: Request) -> Response:
        try:
            await run_in_threadpool(ping)
        except NewsletterError:
            return JSONResponse({"status": "error", "database": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    def _hook(read: Any, body: dict) -> str:
        """Check and record one webhook call (the call and its report in one transaction); what
        the log says."""
        report, key, replay = read(settings, body)
        if report.detail == "subscribe":  # SNS asks to be confirmed: the operator opens the link once
            log.warning("SNS subscription: open %s to confirm it", body.get("SubscribeURL"))
        conn = db()
        try:
            bounces.record(conn, settings, report, key, replay=replay)
        except Replayed:
            raise Refused("replayed") from None
        finally:
            conn.close()
        return report.kind

    async def hook(request: Request) -> Response:
        """Bounces and complaints from Amazon SES (through SNS) or Mailgun (see hooks.py)."""
        read = hooks.ses_report if request.url.path.endswith("/ses") else hooks.mailgun_report
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return PlainTextResponse("not JSON\n", status_code=400)
        try:
            outcome = await run_in_threadpool(_hook, read, body)
        except Refused as exc:
            log.warning("%s", hooks.refused_line(exc))
            return PlainTextResponse("refused\n", status_code=403)
        except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a body of the wrong shape
            log.warning("%s", hooks.refused_line(Refused(f"malformed ({type(exc).__name__})")))
            return PlainTextResponse("refused\n", status_code=403)
        except (sqlite3.OperationalError, StoreError):
            return PlainTextResponse("busy; try again\n", status_code=503)  # both services retry; nothing kept
        return PlainTextResponse(f"{outcome}\n")

    async def home(request: Request) -> Response:
        return RedirectResponse("/signup", status_code=307)

    async def archive_index(request: Request) -> Response:
        return RedirectResponse(settings.archive_index_url(), status_code=308)  # the public address, not Host

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/signup", signup, methods=["GET", "POST"]),
            Route("/signup", preflight, methods=["OPTIONS"]),
            Route("/change", change, methods=["GET", "POST"]),
            Route("/change", preflight, methods=["OPTIONS"]),
            Route("/challenge", challenge, methods=["GET"]),
            Route("/challenge", preflight, methods=["OPTIONS"]),
            Route("/privacy", privacy),
            Route("/hooks/ses", hook, methods=["POST"]),
            Route("/hooks/mailgun", hook, methods=["POST"]),
            Mount("/static", StaticScripts(directory=STATIC)),
            Route("/confirm/{token}", confirm, methods=["GET", "POST"]),
            Route("/preferences/{token}", preferences, methods=["GET", "POST"]),
            Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
            Route("/health", health),
            Route("/archive", archive_index),
            # The archive that 'newsletter archive' (and every send) writes; a folder swapped whole.
            Mount(
                "/archive",
                ArchiveFiles(
                    directory=settings.archive_dir, html=True, check_dir=False, public=settings.archive_index_url()
                ),
            ),
        ],
    )
    # No redirects to the same path with or without '/': Starlette builds them from the Host a
    # request names, which a stranger chooses ('/signup/' is simply not found).
    app.router.redirect_slashes = False
    return SecurityHeaders(app)  # outermost: error pages (500) carry the headers too


class StaticScripts(StaticFiles):
    """The signup script and the ALTCHA widget, for our pages and for the websites that embed
    the form: cached for a day, readable from any site (they hold nothing private)."""

    def file_response(
        self, full_path: Any, stat_result: os.stat_result, scope: Any, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "public, max-age=86400"
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        return response


class SecurityHeaders:
    """Every answer (pages, archive, feed) says: scripts only from here (the signup script and the
    ALTCHA widget, whose workers start from blob: URLs), no inline scripts, styles and images only
    from here (and images over https), forms only to here, no framing, no guessing of content types."""

    HEADERS = (
        (b"content-security-policy", (b"default-src 'none'; script-src 'self'; worker-src blob:; connect-src 'self'; "
                                      b"img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; "
                                      b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'")),
        (b"x-content-type-options", b"nosniff"),
    )  # fmt: skip

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *(h for h in self.HEADERS if h[0] not in present)]  # fmt: skip
            await send(message)

        await self.app(scope, receive, with_headers)
