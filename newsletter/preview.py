"""The live preview for staff (`newsletter preview`): the issue as subscribers will see it.

One page shows the email at desktop and mobile widths side by side, the inbox line (sender,
subject, preheader), the headers, the text part and the findings of ``check``, for a chosen
issue, language edition and municipality. A file watcher (watchfiles) bumps a version number
when anything under content/, templates/, newsletter.toml or .env changes; the page asks for
the version every second and reloads, and the next request rebuilds. A build that fails shows
its error on the page. Served on loopback by default, and only to Host names of this machine.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .build import prepare
from .check import findings
from .clock import OSLO, now
from .compose import PLACEHOLDER, recipient_values
from .config import CONFIG_FILE, Settings
from .content import folder_problem, issue_folders
from .emissions import read_members
from .errors import NewsletterError
from .i18n import format_date, load_strings
from .language import _
from .message import build_message
from .render import template_folders, web_environment

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "::1", "localhost")
NO_MUNICIPALITY = "-"
SHOWN_HEADERS = ("From", "To", "Reply-To", "Subject", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post",
                 "Content-Language")  # fmt: skip


@dataclass
class Build:
    """The outcome of preparing one issue in one language: the prepared issue, or the error."""

    prepared: Any = None
    findings: list = field(default_factory=list)
    error: str | None = None
    version: int = 0  # the watcher's version when the build began: the page embeds this one


class Preview:
    """The state behind the preview page: settings, a cache of builds, and a version number
    that the file watcher increases on every change."""

    def __init__(self, load_settings: Callable[[], Settings], ref: str | None = None) -> None:
        self.load_settings = load_settings
        self.ref = ref
        self.version = 0
        self.lock = threading.Lock()
        self.cache: dict[tuple[str | None, str | None], Build] = {}
        self.settings_error: str | None = None
        self._settings = load_settings()  # broken settings at start: the CLI reports the error
        self._stale = False
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.building = threading.Lock()

    def settings(self) -> Settings:
        """The current settings, read again after a change. If they no longer load, the last good
        ones are kept and ``settings_error`` says why (the page shows it)."""
        with self.lock:
            if self._stale:
                self._stale = False
                try:
                    self._settings = self.load_settings()
                    self.settings_error = None
                except NewsletterError as exc:
                    self.settings_error = str(exc)
            return self._settings

    def changed(self) -> None:
        """A watched file changed: forget every build, and read the settings again."""
        with self.lock:
            self.version += 1
            self.cache.clear()
            self._stale = True

    def build(self, ref: str | None, language: str | None) -> Build:
        """The issue prepared and checked (cached until the next change). One build at a time:
        the page and its two frames ask at once after a change, and one build serves all three."""
        key = (ref or self.ref, language)
        with self.building:
            with self.lock:
                if key in self.cache:
                    return self.cache[key]
                version = self.version
            try:
                settings = self.settings()
                if self.settings_error:
                    return Build(error=self.settings_error, version=version)
                if not self.allowed(settings, key[0]):  # only this project's issues, not any folder
                    return Build(
                        error=_("unknown issue {key!r}; choose one from the list.", key=key[0]), version=version
                    )
                prepared = prepare(settings, key[0], language=language)
                outcome = Build(prepared=prepared, findings=findings(settings, prepared), version=version)
            except NewsletterError as exc:
                outcome = Build(error=str(exc), version=version)
            except Exception as exc:  # a preview must survive whatever a half-saved file does
                log.exception("preview build failed")
                outcome = Build(
                    error=_("unexpected error: {exc!r}; run 'newsletter --verbose build' for details.", exc=exc),
                    version=version,
                )
            with self.lock:
                if self.version == version:  # a file changed meanwhile: this build may be stale, keep none
                    self.cache[key] = outcome
            return outcome

    def allowed(self, settings: Settings, ref: str | None) -> bool:
        """The issue given on the command line, or one of the project's issue folders by name."""
        return ref is None or ref == self.ref or ref in {p.name for p in issue_folders(settings)}

    def ref_for(self, issue_id: str) -> str:
        """The reference that builds the issue with this folder name (the command line's own path
        when the issue lives outside content/issues)."""
        if self.ref is not None and Path(self.ref).name == issue_id:
            return self.ref
        return issue_id

    def start_watching(self) -> None:
        """Watch content/ and templates/ (with all below them), newsletter.toml, .env and the
        database, in background threads, until ``stop_watching``. Editors' swap and backup files
        are ignored."""
        import watchfiles

        settings = self.settings()
        ignore = watchfiles.DefaultFilter()
        project = settings.project_dir.resolve()

        # SQLite: the file's writes rebuild the preview (PostgreSQL changes show at the next reload).
        database = settings.database.file.resolve()
        data_files = {database, database.with_name(database.name + "-wal")} if not settings.database.url else set()

        def settings_file(change: watchfiles.Change, path: str) -> bool:
            resolved = Path(path).resolve()
            if resolved in data_files:
                # Feeds fetched or picked, emissions imported. Only writes count: the preview's
                # own reads create and remove the -wal file, and must not trigger a rebuild.
                return change == watchfiles.Change.modified
            return resolved.name in (CONFIG_FILE, ".env") and resolved.parent == project

        def run(paths: list[Path], recursive: bool, only: Callable[[Any, str], bool]) -> None:
            for _changes in watchfiles.watch(*paths, watch_filter=only, recursive=recursive, stop_event=self.stop,
                                      debounce=200, step=50, raise_interrupt=False):  # fmt: skip
                self.changed()

        folders = [p for p in (settings.content_dir, settings.templates_dir) if p.is_dir()]
        if (
            self.ref is not None
            and Path(self.ref).is_dir()
            and not Path(self.ref).resolve().is_relative_to(settings.content_dir.resolve())
        ):
            folders.append(Path(self.ref))  # an issue folder given by path, outside content/
        # The project folder is watched by itself, not with everything below it (build/, outbox/,
        # benchmarks/...): saving newsletter.toml often replaces the file, which a watch on the
        # file alone would lose.
        flat = sorted({settings.project_dir, database.parent} - {p for p in [database.parent] if not p.is_dir()})
        jobs = [(folders, True, ignore), (flat, False, settings_file)]
        for paths, recursive, only in jobs:
            if paths:
                thread = threading.Thread(
                    target=run, args=(paths, recursive, only), name="preview-watcher", daemon=True
                )
                thread.start()
                self.threads.append(thread)

    def stop_watching(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)


def _inbox_time(language: str) -> str:
    """Now, as an inbox shows it: '27. november 2026 10:41' (Oslo time)."""
    moment = now().astimezone(OSLO)
    return f"{format_date(moment.date(), language)} {moment:%H:%M}"


def _issue_choices(settings: Settings) -> list[str]:
    """The issues the menu offers: not copies or badly named folders (they cannot be sent)."""
    return [p.name for p in sorted(issue_folders(settings), reverse=True) if folder_problem(p.name) is None]


def _recipient(municipality: str | None):
    return replace(PLACEHOLDER, municipality=municipality)


def _email_html(settings: Settings, build: Build, municipality: str | None) -> str:
    prepared = build.prepared
    values = recipient_values(settings, prepared.strings, _recipient(municipality), prepared.rendered.municipal)
    issue_id = prepared.issue.id
    html = prepared.rendered.html.fill(values).replace(settings.asset_url(issue_id, ""), f"/images/{issue_id}/")
    # Links open outside the frame; the frame is sandboxed and runs no scripts.
    return re.sub(r"(<head[^>]*>)", r'\1<base target="_blank">', html, count=1)


def create_preview_app(preview: Preview, *, allowed_hosts: tuple[str, ...] = LOOPBACK) -> Starlette:
    """The ASGI app of the preview page."""

    def choices(request: Request) -> dict[str, Any]:
        settings = preview.settings()
        language = request.query_params.get("lang")
        municipality = request.query_params.get("municipality", PLACEHOLDER.municipality or NO_MUNICIPALITY)
        return {
            "issue": request.query_params.get("issue") or preview.ref,
            "lang": language if language in ("nb", "en") else None,
            "municipality": None if municipality == NO_MUNICIPALITY else municipality,
            "settings": settings,
        }

    def page_context(request: Request) -> dict[str, Any]:
        chosen = choices(request)
        settings: Settings = chosen["settings"]
        build = preview.build(chosen["issue"], chosen["lang"])
        members = []
        if settings.emissions_members is not None:
            try:
                members = sorted(read_members(settings.emissions_members), key=lambda m: m.name)
            except NewsletterError as exc:
                build = Build(error=str(exc)) if build.error is None else build
        query = {"issue": chosen["issue"] or "", "lang": chosen["lang"] or "",
                 "municipality": chosen["municipality"] or NO_MUNICIPALITY}  # fmt: skip
        context: dict[str, Any] = {
            "t": load_strings(template_folders(settings), settings.language),
            "lang": settings.language,
            "newsletter_name": settings.name,
            "version": build.version,
            "issues": _issue_choices(settings),
            "members": [{"number": m.number_2024, "name": m.name} for m in members],
            "chosen": query,
            "error": build.error,
            "email_url": "email?" + urlencode(query),
        }
        if build.prepared is not None:
            prepared = build.prepared
            recipient = _recipient(chosen["municipality"])
            message = build_message(settings, prepared.rendered, recipient, prepared.strings)
            values_text = message.get_body(("plain",)).get_content()
            context.update(
                issue_id=prepared.issue.id,
                issue_language=prepared.issue.language,
                subject=str(message["Subject"]),
                preheader=prepared.issue.preheader,
                sender=settings.sender_name,
                date=_inbox_time(prepared.issue.language),
                headers=[(name, str(message[name])) for name in SHOWN_HEADERS if message[name]],
                text=values_text,
                findings=list(build.findings),
            )
        return context

    def render_page(request: Request) -> str:
        version = preview.version
        try:
            return web_environment(preview.settings()).get_template("web/preview.html.j2").render(page_context(request))
        except Exception as exc:  # broken interface strings, a template of the page itself: say so, keep polling
            log.debug("preview page failed", exc_info=True)
            reason = str(exc) if isinstance(exc, NewsletterError) else f"{type(exc).__name__}: {exc}"
            return FALLBACK.format(error=escape(reason), version=version)

    async def page(request: Request) -> Response:
        html = await run_in_threadpool(render_page, request)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    def email_response(request: Request) -> Response:
        chosen = choices(request)
        build = preview.build(chosen["issue"], chosen["lang"])
        if build.prepared is None:
            return HTMLResponse(f"<p>{escape(build.error)}</p>", status_code=404, headers={"Cache-Control": "no-store"})
        return HTMLResponse(
            _email_html(chosen["settings"], build, chosen["municipality"]), headers={"Cache-Control": "no-store"}
        )

    async def email(request: Request) -> Response:
        return await run_in_threadpool(email_response, request)

    def image_file(request: Request) -> Path | None:
        build = preview.build(preview.ref_for(request.path_params["issue"]), None)
        if build.prepared is None:
            return None
        name = request.path_params["name"]
        files = {a.filename: a.source for a in build.prepared.issue.assets}
        if build.prepared.logo is not None:
            files[build.prepared.logo.name] = build.prepared.logo
        return files.get(name)

    async def image(request: Request) -> Response:
        path = await run_in_threadpool(image_file, request)
        if path is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": preview.version}, headers={"Cache-Control": "no-store"})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/email", email),
            Route("/images/{issue}/{name}", image),
            Route("/version", version),
        ],
        middleware=[Middleware(_HostCheck, allowed=allowed_hosts)],
    )


class _HostCheck:
    """Answers only requests whose Host is one of ``allowed`` ('*': any): a web page elsewhere
    cannot reach the preview by pointing its own name at 127.0.0.1 (DNS rebinding). Unlike
    Starlette's TrustedHostMiddleware it understands IPv6 literals such as [::1]:8001."""

    def __init__(self, app: Any, allowed: tuple[str, ...]) -> None:
        self.app, self.allowed = app, {name.lower() for name in allowed}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
            if name.lower() not in self.allowed:
                response = PlainTextResponse("Invalid host header\n", status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


FALLBACK = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Preview</title></head>
<body style="font:16px/1.5 Helvetica,Arial,sans-serif;margin:20px;">
<section role="alert" style="border-left:6px solid #b00020;padding:8px 16px;">
<h1 style="font-size:19px;color:#b00020;">The preview page cannot be shown</h1><p>{error}</p></section>
<script>
  const version = {version};
  async function poll() {{
    try {{ const a = await fetch("version", {{cache: "no-store"}}); if ((await a.json()).version !== version) {{ location.reload(); return; }} }} catch (e) {{}}
    setTimeout(poll, 1000);
  }}
  setTimeout(poll, 1000);
</script></body></html>
"""
