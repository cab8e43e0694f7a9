"""Shared fixtures: a copy of the sample project in a temporary folder, and a CLI runner."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import threading
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner, Result

from newsletter.cli import cli
from newsletter.config import load_settings
from newsletter.store import database
from newsletter.subscribers import add, set_status

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_ISSUE = "2026-12-ordforererklaeringen"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite tests/golden/ from the current build instead of comparing with it.",
    )


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests read the tool's messages in English, the language of the code; test_language.py checks
    the Norwegian catalogue and runs commands in Norwegian."""
    from newsletter import language

    monkeypatch.setenv("NEWSLETTER_LANG", "en")
    language.use(None)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repository's own project (settings, templates, sample issue); cwd is set to it."""
    dest = tmp_path / "project"
    dest.mkdir()
    shutil.copy(ROOT / "newsletter.toml", dest)
    shutil.copytree(ROOT / "templates", dest / "templates")
    shutil.copytree(ROOT / "content", dest / "content")
    shutil.copytree(ROOT / "data", dest / "data")
    for name in list(__import__("os").environ):
        if name.startswith("NEWSLETTER_") and name != "NEWSLETTER_LANG":
            monkeypatch.delenv(name)
    monkeypatch.chdir(dest)
    return dest


@pytest.fixture
def issue_dir(project: Path) -> Path:
    """The sample issue's folder inside the project copy."""
    return project / "content" / "issues" / SAMPLE_ISSUE


class Runner:
    """Runs the real CLI in-process, with exceptions other than exit codes propagating."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def run() -> Runner:
    """Invoke the CLI: ``run("build", "--out", "x")``."""
    return Runner()


def write(path: Path, text: str) -> Path:
    """Write UTF-8 text, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def assert_error(result: Result, *fragments: str) -> str:
    """The run failed as a user error: exit 1, one 'Error: ...' line naming every fragment, no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def load_sample_data(project: Path) -> None:
    """What the quick start does before building: fetch the sample feeds, import the sample emissions."""
    from newsletter.config import load_settings
    from newsletter.emissions import import_emissions, read_members, read_sectors, sectors_file
    from newsletter.feeds import fetch_feeds
    from newsletter.store import database

    settings = load_settings(project)
    with database(settings.database) as conn:
        assert all(report.ok for report in fetch_feeds(settings, conn))
        import_emissions(
            conn,
            project / "data/klimagassutslipp-syntetisk.csv",
            "klimagassutslipp-syntetisk",
            read_members(settings.emissions_members),
            read_sectors(sectors_file(settings)),
        )


def rows(project: Path, sql: str, *params: object) -> list[tuple]:
    """Rows of a query on the project's database, read with plain sqlite3 (not the package)."""
    conn = sqlite3.connect(project / "newsletter.db")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class LiveServer:
    """An ASGI app served by a real uvicorn on a free loopback port, in a thread: ``with
    LiveServer(app) as live: httpx.get(live.url + "/")``."""

    def __init__(self, app, port: int = 0) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def solved(client) -> str:
    """A challenge from the server (``client``: an httpx client of 'serve'), solved as the ALTCHA
    widget in a browser solves it: the payload for a form's 'altcha' field."""
    from altcha import Challenge, Payload, solve_challenge

    challenge = Challenge.from_dict(client.get("/challenge").json())
    return Payload(challenge, solve_challenge(challenge)).to_base64()


# --- SMTP on loopback ------------------------------------------------------------------------

KEY = "d" * 40


class Sink:
    """An SMTP server's handler: keeps messages; per-address scripted replies."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.envelopes: list[tuple[str, tuple[str, ...], bool]] = []  # (MAIL FROM, RCPT TOs, SMTPUTF8) of each
        self.rcpt: dict[str, list[str]] = {}  # address -> replies to give, one per try ('' = accept)
        self.drop: dict[str, int] = {}  # address -> times to drop the connection during DATA
        self.delay = 0.0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        replies = self.rcpt.get(address)
        if replies:
            reply = replies.pop(0)
            if reply:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        for address in envelope.rcpt_tos:
            if self.drop.get(address):
                self.drop[address] -= 1
                server.transport.close()  # the connection drops in the middle of DATA
                return "421 closing"
        self.messages.append(envelope.original_content or envelope.content)
        self.envelopes.append((envelope.mail_from, tuple(envelope.rcpt_tos), bool(envelope.smtp_utf8)))
        return "250 Message accepted"

    def parsed(self):
        return [BytesParser(policy=policy.default).parsebytes(m) for m in self.messages]

    def to(self):
        return sorted(m["To"].addresses[0].addr_spec for m in self.parsed())

    def rcpt_tos(self) -> list[str]:
        """Every accepted message's envelope recipient, sorted (UTF-8 addresses as they are)."""
        return sorted(address for _, tos, _ in self.envelopes for address in tos)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_smtp(project, monkeypatch, handler=None, **options):
    """An SMTP server on loopback (aiosmtpd, in this process) with ``handler`` (a Sink by
    default), and the settings that send to it. Returns (handler, controller)."""
    handler = handler or Sink()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    load_sample_data(project)  # the sample news and emissions, so the issue builds without warnings
    for name, value in {
        "NEWSLETTER_SECRET_KEY": KEY,
        "NEWSLETTER_SENDING_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_SECURITY": "none",
        "NEWSLETTER_SMTP_TIMEOUT": "5",
        "NEWSLETTER_SENDING_RETRY_SECONDS": "0",
        "NEWSLETTER_SENDING_MAX_ATTEMPTS": "3",
        "NEWSLETTER_SENDING_CONNECTIONS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    return handler, controller


@pytest.fixture
def sink(project, monkeypatch):
    """An SMTP server without SMTPUTF8 (as many relays are; aiosmtpd's Controller offers it unless told not to)."""
    handler, controller = serve_smtp(project, monkeypatch, enable_SMTPUTF8=False)
    yield handler
    controller.stop()


@pytest.fixture
def utf8_sink(project, monkeypatch):
    """An SMTP server that offers SMTPUTF8 (RFC 6531)."""
    handler, controller = serve_smtp(project, monkeypatch, enable_SMTPUTF8=True)
    yield handler
    controller.stop()


def subscribe(*people, status="confirmed"):
    settings = load_settings()
    from newsletter.emissions import read_members

    members = read_members(settings.emissions_members)
    ids = []
    with database(settings.database) as conn:
        for person in people:
            email, name, municipality = (person, "", None) if isinstance(person, str) else person
            _, s = add(conn, settings, members, email, name=name, municipality=municipality, confirmed=True)
            if status != "confirmed":
                set_status(conn, s.id, status)
            ids.append(s.id)
    return ids


def self_signed(cert_file: Path, key_file: Path) -> None:
    """A self-signed certificate for 127.0.0.1 (a day either side of now), as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


@pytest.fixture
def tls_sink(project, monkeypatch, tmp_path):
    """An SMTP server that requires STARTTLS (self-signed certificate) and AUTH."""
    import ssl

    from aiosmtpd.smtp import AuthResult

    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed(cert_file, key_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"nyhetsbrev" and auth_data.password == b"riktig-passord"
        return AuthResult(success=ok)

    handler = Sink()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            auth_required=True, auth_require_tls=True, authenticator=authenticator)  # fmt: skip
    controller.start()
    load_sample_data(project)
    for env, value in {
        "NEWSLETTER_SECRET_KEY": KEY,
        "NEWSLETTER_SENDING_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_SECURITY": "starttls",
        "NEWSLETTER_SMTP_USERNAME": "nyhetsbrev",
        "NEWSLETTER_SMTP_PASSWORD": "riktig-passord",
        "NEWSLETTER_SMTP_CA_FILE": str(cert_file),
        "NEWSLETTER_SENDING_RETRY_SECONDS": "0",
        "NEWSLETTER_SENDING_MAX_ATTEMPTS": "2",
    }.items():
        monkeypatch.setenv(env, value)
    yield handler
    controller.stop()


# --- Chromium ---------------------------------------------------------------------------------

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    return os.environ.get("NEWSLETTER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through Playwright (skipped without it, but never in CI)."""
    executable = _chromium()
    if executable is None:
        message = "Chromium not found: install it with 'apt-get install chromium' (or set NEWSLETTER_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()
