"""Shared fixtures: a copy of the sample project in a temporary folder, and a CLI runner.

Test modules that set ``pytestmark = pytest.mark.backends`` run every test that uses the
``project`` fixture twice: on SQLite and on PostgreSQL (a throwaway cluster, one fresh database
per test)."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner, Result

from newsletter.cli import cli
from newsletter.config import load_settings
from newsletter.store import MIGRATIONS, database, postgres_migrate
from newsletter.subscribers import add, set_status

ROOT = Path(__file__).resolve().parent.parent
# Commands the tests start as processes ('python -m newsletter') run this tree's package, not
# whichever copy happens to be installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
SAMPLE_ISSUE = "2026-12-ordforererklaeringen"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite tests/golden/ from the current build instead of comparing with it.",
    )


@pytest.fixture(autouse=True)
def no_pools_left() -> Iterator[None]:
    """A test that starts the web app turns on PostgreSQL pooling for the process (``use_pool``,
    as 'serve' does); after each test it is off again and every pool closed, so no later test
    makes pools that nobody closes (their threads would be collected from one of them)."""
    yield
    from newsletter import store

    store.close_pools()
    store._POOLING[0] = False


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests read the tool's messages in English, the language of the code; test_language.py checks
    the Norwegian catalogue and runs commands in Norwegian."""
    from newsletter import language

    monkeypatch.setenv("NEWSLETTER_LANG", "en")
    language.use(None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends: run the module's project tests on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("backends") and "project" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on a Unix socket in /tmp (as the 'postgres' user when
    root: PostgreSQL refuses to run as root). Yields a function that makes a fresh database's
    URL: empty, or (``migrated=True``) a copy of a template at this program's schema."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        message = "PostgreSQL not found: install it with 'apt-get install postgresql'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    bin_dir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="newsletter-postgres-"))
    root.chmod(0o755)
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, cwd=root)

    pg(str(bin_dir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "newsletter", "--no-sync", "-E", "UTF8")
    pg(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-w", "-l", str(root / "log.txt"), "-o",
       f"-k {root} -p {port} -c listen_addresses='' -c fsync=off -c max_connections=300", "start")  # fmt: skip
    count = iter(range(100000))
    admin = f"host={root} port={port} user=newsletter dbname=postgres"
    template: list[str] = []

    def fresh(migrated: bool = False) -> str:
        import psycopg

        name = f"t{next(count)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            if migrated and not template:
                conn.execute("CREATE DATABASE template_newsletter")
                postgres_migrate(f"postgresql://newsletter@/template_newsletter?host={root}&port={port}")
                template.append("template_newsletter")
            conn.execute(f"CREATE DATABASE {name}" + (" TEMPLATE template_newsletter" if migrated else ""))
        return f"postgresql://newsletter@/{name}?host={root}&port={port}"

    fresh.root = root  # type: ignore[attr-defined]
    _FRESH.append(fresh)
    yield fresh
    pg(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop")
    shutil.rmtree(root, ignore_errors=True)


_FRESH: list = []  # the postgres fixture's maker of databases, once it has started


def empty_database(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start the project again with an empty database (a lost file; a new PostgreSQL database)."""
    if os.environ.get("NEWSLETTER_DATABASE_URL"):
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", _FRESH[0](migrated=True))
        return
    for suffix in ("", "-wal", "-shm"):
        (project / f"newsletter.db{suffix}").unlink(missing_ok=True)


def tables_and_columns() -> list[tuple[str, list[str]]]:
    """Every table of the schema with its columns (from the migrations)."""
    scratch = sqlite3.connect(":memory:")
    try:
        for script in MIGRATIONS:
            scratch.executescript(script)
        names = [
            r[0]
            for r in scratch.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        ]
        return [(name, [r[1] for r in scratch.execute(f'PRAGMA table_info("{name}")')]) for name in names]
    finally:
        scratch.close()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """'sqlite' (the default) or 'postgresql' (in modules marked ``backends``)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, request: pytest.FixtureRequest) -> Path:
    """A copy of the repository's own project (settings, templates, sample issue); cwd is set to
    it. On the 'postgresql' backend, NEWSLETTER_DATABASE_URL names a fresh migrated database."""
    dest = tmp_path / "project"
    dest.mkdir()
    shutil.copy(ROOT / "newsletter.toml", dest)
    shutil.copytree(ROOT / "templates", dest / "templates")
    shutil.copytree(ROOT / "content", dest / "content")
    shutil.copytree(ROOT / "data", dest / "data")
    for name in list(__import__("os").environ):
        if name.startswith("NEWSLETTER_") and name != "NEWSLETTER_LANG":
            monkeypatch.delenv(name)
    # As behind a relay that signs: no warning about unsigned mail in every SMTP send's output
    # (tests/test_check.py unsets it to see the warning).
    monkeypatch.setenv("NEWSLETTER_DKIM_RELAY_SIGNS", "true")
    if backend == "postgresql":
        from newsletter.store import close_pools

        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", request.getfixturevalue("postgres")(migrated=True))
        request.addfinalizer(close_pools)  # each test's database has its own pool
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
    """Rows of a query on the project's database, read with plain sqlite3 or psycopg (not the
    package): the SQL is SQLite's, with '?' placeholders."""
    url = os.environ.get("NEWSLETTER_DATABASE_URL")
    if url:
        import psycopg

        from newsletter.store import pg_sql  # '?' to '%s', '%' to '%%', SQLite's words to PostgreSQL's

        with psycopg.connect(url) as conn:  # committed at the end (a DELETE, an UPDATE)
            cursor = conn.execute(pg_sql(sql, {}), params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    conn = sqlite3.connect(project / "newsletter.db")
    try:
        with conn:
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

    pipelining = True  # as Postfix, Exim and the big services offer it (RFC 2920); False: one command at a time
    pipelined = 0  # RCPTs that arrived with the DATA after them already sent (the client pipelined)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if b"data\r\n" in bytes(getattr(server._reader, "_buffer", b"")).lower():
            self.pipelined += 1
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
