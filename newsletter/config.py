"""Settings: newsletter.toml + .env + environment + CLI options -> one frozen Settings.

Resolution order for every setting: CLI option > environment variable
(``NEWSLETTER_...``, also read from the project's ``.env``) > newsletter.toml > default.
Every problem is collected and reported at once.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import language
from .errors import ConfigError, ProjectError, where
from .language import _
from .store import Database

CONFIG_FILE = "newsletter.toml"
LANGUAGES = ("nb", "en")


@dataclass(frozen=True)
class Category:
    """A focus area that articles are grouped by."""

    key: str
    nb: str
    en: str
    aliases: tuple[str, ...] = ()

    def label(self, language: str) -> str:
        """The category's name in the given edition language."""
        return self.en if language == "en" else self.nb


def find_category(categories: tuple[Category, ...], value: str) -> Category | None:
    """The category named by key, Norwegian or English name or alias, ignoring case."""
    wanted = value.strip().lower()
    for category in categories:
        if wanted in {category.key, category.nb.lower(), category.en.lower(), *(a.lower() for a in category.aliases)}:
            return category
    return None


DEFAULT_CATEGORIES = (
    Category(
        "areal",
        "Areal, transport, mobilitet og logistikk",
        "Land use, transport, mobility and logistics",
        ("transport", "mobilitet", "logistikk"),
    ),
    Category("klima", "Klima og miljø", "Climate and environment", ("miljø", "miljo")),
    Category(
        "konkurransekraft",
        "Konkurransekraft og attraktivitet",
        "Competitiveness and attractiveness",
        ("attraktivitet", "næringsliv"),
    ),
    Category(
        "fellesskap",
        "Fellesskap og samarbeid",
        "Community and cooperation",
        ("felleskap", "samarbeid", "felleskap og samarbeid"),
    ),
)


@dataclass(frozen=True)
class FeedConfig:
    """One news feed from a [[feeds]] table: an http(s) URL or a local file."""

    name: str
    url: str
    category: Category | None = None
    max_items: int = 5
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    language: str | None = None
    first_fetch_days: int | None = None

    @property
    def is_file(self) -> bool:
        """True when the feed is a file on this machine rather than a web address."""
        return not self.url.startswith(("http://", "https://"))


@dataclass(frozen=True)
class Settings:
    """Validated settings of one newsletter project. Paths are absolute."""

    project_dir: Path
    name: str
    name_en: str | None
    language: str
    interface_language: str | None
    base_url: str
    list_id: str
    postal_address: str
    website: str | None
    logo: Path | None
    sender_name: str
    sender_address: str
    reply_to: str | None
    unsubscribe_mailto: str | None
    content_dir: Path
    templates_dir: Path
    build_dir: Path
    archive_dir: Path
    allow_raw_html: bool
    html_warn_kb: int
    database_file: Path
    database_url: str | None = field(repr=False)  # may hold a password
    outbox_dir: Path
    send_transport: str | None
    smtp_host: str | None
    smtp_port: int
    smtp_security: str
    smtp_username: str | None
    smtp_timeout: int
    smtp_ca_file: Path | None
    send_connections: int
    send_per_second: int
    send_per_hour: int
    send_max_attempts: int
    send_retry_seconds: int
    send_bounce_after: int
    dkim_domain: str | None
    dkim_selector: str | None
    dkim_key_file: Path | None
    dkim_ed25519_key_file: Path | None
    dkim_ed25519_selector: str | None
    dkim_relay_signs: bool
    emissions_members: Path | None
    emissions_region: str
    emissions_sectors: Path | None
    news_first_fetch_days: int
    news_connect_timeout: int
    news_timeout: int
    news_max_kb: int
    news_concurrency: int
    news_summary_chars: int
    news_user_agent: str | None
    web_trusted_proxies: str | None
    web_confirm_interval: int
    web_allowed_origins: str | None
    web_privacy_url: str | None
    web_challenge_work: int
    web_signups_without_script: int
    welcome_enabled: bool
    bounces_address: str | None
    bounces_mailbox: str | None
    bounces_hard_after: int
    bounces_soft_limit: int
    bounces_soft_days: int
    bounces_ca_file: Path | None = None
    bounces_sns_certificate: Path | None = None
    bounces_sns_topic: str | None = None
    bounces_mailgun_key: str | None = field(default=None, repr=False)
    bounces_password: str | None = field(default=None, repr=False)
    categories: tuple[Category, ...] = field(default=DEFAULT_CATEGORIES)
    feeds: tuple[FeedConfig, ...] = ()
    secret_key: str | None = field(default=None, repr=False)  # never printed
    old_secret_keys: tuple[str, ...] = field(default=(), repr=False)  # verify links, never sign
    smtp_password: str | None = field(default=None, repr=False)

    @property
    def database(self) -> Database:
        """The project's database: the SQLite file (paths.database), or the PostgreSQL database
        NEWSLETTER_DATABASE_URL names (never both: nothing goes quietly to the file)."""
        return Database(self.database_file, self.postgres_url)

    @property
    def postgres_url(self) -> str | None:
        """The PostgreSQL URL, when NEWSLETTER_DATABASE_URL names one."""
        url = self.database_url or ""
        return url if url.split(":", 1)[0] in ("postgresql", "postgres") else None

    @property
    def issues_dir(self) -> Path:
        """The folder holding one sub-folder per issue."""
        return self.content_dir / "issues"

    @property
    def list_domain(self) -> str:
        """The domain part used for Message-IDs."""
        return self.sender_address.rpartition("@")[2]

    @property
    def address_line(self) -> str:
        """The postal address as the footer shows it after the sender's name: without that name
        when the address begins with it ('Osloregionen, Rådhusplassen 1' -> 'Rådhusplassen 1'),
        so the footer does not say 'Osloregionen · Osloregionen, ...'."""
        name, address = self.sender_name.strip(), self.postal_address.strip()
        if name and address.casefold().startswith(name.casefold()):
            rest = address[len(name) :].lstrip(" ,·–-")
            if rest and rest != address[len(name) :]:  # the name was a word of its own, not 'Oslo' in 'Oslogata'
                return rest
        return address

    def display_name(self, language: str) -> str:
        """The newsletter's name in one language edition (name_en for English, when set)."""
        return self.name_en if language == "en" and self.name_en else self.name

    def archive_index_url(self) -> str:
        """Public web address of the archive of sent issues (``newsletter archive`` writes it)."""
        return f"{self.base_url}/archive/"

    def signup_url(self) -> str:
        """Public web address of the signup page (``newsletter serve``)."""
        return f"{self.base_url}/signup"

    def archive_url(self, issue_id: str) -> str:
        """Public web address of an issue's archive page (its images live below it)."""
        return f"{self.base_url}/archive/{issue_id}/"

    def asset_url(self, issue_id: str, filename: str) -> str:
        """Public web address of a file copied into an issue's build."""
        return f"{self.archive_url(issue_id)}images/{filename}"


# --- the setting table -------------------------------------------------------------------
# kind is one of: str, opt_str, email, opt_email, url, opt_url, lang, path, opt_path, bool, int


@dataclass(frozen=True)
class Option:
    """One setting: where it lives in newsletter.toml, its env var, type and default."""

    attr: str
    section: str
    key: str
    kind: str
    default: Any
    help: str
    env_name: str | None = None

    @property
    def env(self) -> str:
        """The environment variable that overrides it."""
        if self.env_name:
            return self.env_name
        if self.section == "newsletter":
            return f"NEWSLETTER_{self.key.upper()}"
        return f"NEWSLETTER_{self.section.upper()}_{self.key.upper()}"

    @property
    def toml(self) -> str:
        """Its dotted name in newsletter.toml."""
        return f"{self.section}.{self.key}"


OPTIONS: tuple[Option, ...] = (
    Option("name", "newsletter", "name", "str", None, "The newsletter's name, shown in the header and From."),
    Option("name_en", "newsletter", "name_en", "opt_str", None, "The name in the English edition (default: name)."),
    Option("language", "newsletter", "language", "lang", "nb", "Default language of new issues: nb or en."),
    Option(
        "interface_language",
        "newsletter",
        "interface_language",
        "opt_lang",
        None,
        "Language of the tool's messages, prompts and --help: nb or en (default: language).",
        "NEWSLETTER_LANG",
    ),
    Option("base_url", "newsletter", "base_url", "url", None, "Public web address; links and images point below it."),
    Option("list_id", "newsletter", "list_id", "str", None, "List-Id header value, a domain-like name."),
    Option("postal_address", "newsletter", "postal_address", "str", None, "Postal address printed in the footer."),
    Option("website", "newsletter", "website", "opt_url", None, "The organisation's website, linked in the footer."),
    Option("logo", "newsletter", "logo", "opt_path", None, "Logo image (PNG/JPEG/GIF), relative to the project."),
    Option("html_warn_kb", "newsletter", "html_warn_kb", "int", 90, "Warn when the HTML exceeds this many KB."),
    Option("sender_name", "sender", "name", "str", None, "Display name in From."),
    Option("sender_address", "sender", "address", "email", None, "Address in From."),
    Option("reply_to", "sender", "reply_to", "opt_email", None, "Reply-To address."),
    Option(
        "unsubscribe_mailto", "sender", "unsubscribe_mailto", "opt_email", None, "mailto target in List-Unsubscribe."
    ),
    Option("content_dir", "paths", "content", "path", "content", "Folder with issues/ inside."),
    Option("templates_dir", "paths", "templates", "path", "templates", "Templates that override the built-in ones."),
    Option("build_dir", "paths", "build", "path", "build", "Where builds are written."),
    Option(
        "archive_dir", "paths", "archive", "path", "build/archive", "Where the public archive is written (and served)."
    ),
    Option(
        "database_file", "paths", "database", "path", "newsletter.db", "The SQLite database.", "NEWSLETTER_DATABASE"
    ),
    Option(
        "database_url",
        "paths",
        "database_url",
        "opt_str",
        None,
        "postgresql://user@host/name for a PostgreSQL database shared by several machines "
        "(see docs/deployment.md); default: the SQLite file paths.database.",
        "NEWSLETTER_DATABASE_URL",
    ),
    Option(
        "allow_raw_html",
        "markdown",
        "allow_raw_html",
        "bool",
        False,
        "Let raw HTML in Markdown through (off by default).",
    ),
    Option(
        "secret_key",
        "secrets",
        "secret_key",
        "secret",
        None,
        "Signs the links in emails; at least 32 characters.",
        "NEWSLETTER_SECRET_KEY",
    ),
    Option(
        "old_secret_keys",
        "secrets",
        "old_secret_keys",
        "secret",
        None,
        "Earlier signing keys, space-separated: links signed with them still work ('newsletter secret rotate').",
        "NEWSLETTER_OLD_SECRET_KEYS",
    ),
    Option("outbox_dir", "paths", "outbox", "path", "outbox", "Maildir where messages go with transport outbox."),
    Option(
        "send_transport",
        "sending",
        "transport",
        "opt_str",
        None,
        "Where messages go: smtp (the smtp settings) or outbox (the local outbox/ folder). "
        "Default: smtp when smtp.host is set; otherwise sending refuses.",
    ),
    Option("smtp_host", "smtp", "host", "opt_str", None, "SMTP server."),
    Option("smtp_port", "smtp", "port", "int", 587, "SMTP port."),
    Option("smtp_security", "smtp", "security", "str", "starttls", "starttls, tls or none."),
    Option("smtp_username", "smtp", "username", "opt_str", None, "SMTP login name."),
    Option("smtp_password", "smtp", "password", "secret", None, "SMTP password (environment or .env only)."),
    Option("smtp_timeout", "smtp", "timeout", "int", 30, "Seconds to wait for the SMTP server."),
    Option("smtp_ca_file", "smtp", "ca_file", "opt_path", None, "Extra CA certificate(s) to trust (a private CA)."),
    Option("send_connections", "sending", "connections", "int", 4, "SMTP connections used at once."),
    Option("send_per_second", "sending", "per_second", "int0", 0, "At most this many messages a second (0: no limit)."),
    Option("send_per_hour", "sending", "per_hour", "int0", 0, "At most this many messages an hour (0: no limit)."),
    Option("send_max_attempts", "sending", "max_attempts", "int", 5, "Tries per recipient for temporary failures."),
    Option(
        "send_retry_seconds", "sending", "retry_seconds", "int0", 30, "First wait before a retry; doubles each time."
    ),
    Option(
        "send_bounce_after",
        "sending",
        "bounce_after",
        "int",
        2,
        "Permanent failures before a subscriber is marked bounced.",
    ),
    Option("dkim_domain", "dkim", "domain", "opt_str", None, "Sign with DKIM for this domain (d=)."),
    Option(
        "dkim_selector",
        "dkim",
        "selector",
        "opt_str",
        None,
        "DKIM selector (s=): the DNS name <selector>._domainkey.<domain>.",
    ),
    Option(
        "dkim_key_file",
        "dkim",
        "key_file",
        "opt_path",
        None,
        "PEM file with the DKIM private key (keep it out of git).",
    ),
    Option(
        "dkim_ed25519_key_file",
        "dkim",
        "ed25519_key_file",
        "opt_path",
        None,
        "PEM file with an Ed25519 key for a second DKIM signature (RFC 8463), with dkim.ed25519_selector.",
    ),
    Option(
        "dkim_ed25519_selector",
        "dkim",
        "ed25519_selector",
        "opt_str",
        None,
        "The selector of the Ed25519 key (its own DNS record).",
    ),
    Option(
        "dkim_relay_signs",
        "dkim",
        "relay_signs",
        "bool",
        False,
        "The SMTP relay or email service signs every message with DKIM for the From domain "
        "(no key here; check and send then do not warn about unsigned mail).",
    ),
    Option("emissions_members", "emissions", "members", "opt_path", None, "CSV of the region's member municipalities."),
    Option("emissions_region", "emissions", "region", "str", "Regionen", "The region's name in emission highlights."),
    Option(
        "emissions_sectors",
        "emissions",
        "sectors",
        "opt_path",
        None,
        "CSV of known sectors (sector,en); built-in by default.",
    ),
    Option(
        "news_first_fetch_days",
        "news",
        "first_fetch_days",
        "int0",
        14,
        "A new feed's first fetch keeps items from this many days (0: all).",
    ),
    Option(
        "news_connect_timeout", "news", "connect_timeout", "int", 5, "Seconds to wait for a feed's server to answer."
    ),
    Option("news_timeout", "news", "timeout", "int", 20, "Seconds a whole feed download may take."),
    Option("news_max_kb", "news", "max_kb", "int", 5000, "Largest feed accepted, in KB."),
    Option("news_concurrency", "news", "concurrency", "int", 50, "Feeds fetched at the same time."),
    Option(
        "news_summary_chars", "news", "summary_chars", "int", 280, "Summaries are cut to about this many characters."
    ),
    Option(
        "news_user_agent",
        "news",
        "user_agent",
        "opt_str",
        None,
        "User-Agent for feed requests (default: newsletter/<version> + base_url).",
    ),
    Option(
        "web_trusted_proxies",
        "web",
        "trusted_proxies",
        "opt_str",
        None,
        "Reverse proxies (addresses or networks, space-separated) whose X-Forwarded-For/-Proto 'serve' trusts.",
    ),
    Option(
        "web_allowed_origins",
        "web",
        "allowed_origins",
        "opt_str",
        None,
        "Websites whose pages may hold the signup form ('newsletter signup-form'): origins such as "
        "https://osloregionen.no, space-separated (default: none; only the pages of 'serve').",
    ),
    Option(
        "web_privacy_url",
        "web",
        "privacy_url",
        "opt_url",
        None,
        "The privacy page the signup forms link to (default: <base_url>/privacy, which 'serve' shows).",
    ),
    Option(
        "web_challenge_work",
        "web",
        "challenge_work",
        "int",
        10000,
        "How much work a signup's proof-of-work challenge asks of the browser (10000: one or two seconds).",
    ),
    Option(
        "web_signups_without_script",
        "web",
        "signups_without_script",
        "int0",
        20,
        "Signups without JavaScript (so without the proof of work) accepted per hour in all; 0: none.",
    ),
    Option(
        "bounces_address",
        "bounces",
        "address",
        "opt_email",
        None,
        "Where bounces and complaints go: each message of a send gets its own envelope sender "
        "<local>+d<delivery>s<subscriber>-<signature>@<domain> (VERP); off when not set.",
    ),
    Option(
        "bounces_mailbox",
        "bounces",
        "mailbox",
        "opt_str",
        None,
        "The Maildir that mail to bounces.address is delivered to ('newsletter bounces fetch' reads it).",
    ),
    Option(
        "bounces_password",
        "bounces",
        "password",
        "secret",
        None,
        "The password of the bounce mailbox over IMAP or POP3 (environment or .env only).",
        "NEWSLETTER_BOUNCES_PASSWORD",
    ),
    Option(
        "bounces_ca_file",
        "bounces",
        "ca_file",
        "opt_path",
        None,
        "Extra CA certificate(s) to trust for the bounce mailbox's server (certificates are always verified).",
    ),
    Option(
        "bounces_sns_certificate",
        "bounces",
        "sns_certificate",
        "opt_path",
        None,
        "Amazon SNS's signing certificate (PEM, from the SigningCertURL of its messages) for /hooks/ses.",
    ),
    Option(
        "bounces_sns_topic",
        "bounces",
        "sns_topic",
        "opt_str",
        None,
        "The SNS topic (ARN) whose calls /hooks/ses takes.",
    ),
    Option(
        "bounces_mailgun_key",
        "bounces",
        "mailgun_key",
        "secret",
        None,
        "Mailgun's webhook signing key, for /hooks/mailgun (environment or .env only).",
        "NEWSLETTER_BOUNCES_MAILGUN_KEY",
    ),
    Option(
        "bounces_hard_after",
        "bounces",
        "hard_after",
        "int",
        1,
        "Hard bounces reported after the SMTP conversation before a subscriber is marked bounced.",
    ),
    Option(
        "bounces_soft_limit",
        "bounces",
        "soft_limit",
        "int",
        3,
        "Soft bounces within soft_days that mark a subscriber bounced.",
    ),
    Option("bounces_soft_days", "bounces", "soft_days", "int", 30, "The window in days for soft bounces."),
    Option(
        "welcome_enabled",
        "welcome",
        "enabled",
        "bool",
        True,
        "Send a welcome email when someone confirms their subscription on the web (once per subscriber).",
    ),
    Option(
        "web_confirm_interval",
        "web",
        "confirm_interval",
        "int0",
        60,
        "Minutes before the same address can get another confirmation email (0: no limit).",
    ),
)

# Settings hold the operator's own addresses: a strict ASCII check is enough here (and fast).
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}$")
_LIST_ID = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$")


def user_cache(name: str) -> Path | None:
    """A folder of the user's cache (``$XDG_CACHE_HOME/newsletter/<name>``), made if missing;
    None when it cannot be (a read-only home): callers then work without a cache."""
    try:  # (Path.home() raises RuntimeError without HOME and without a passwd entry)
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "newsletter" / name
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):
        return None
    return folder


def find_project(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` that holds newsletter.toml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise ProjectError(
        _(
            "No {config_file} in {here} or any folder above it: run inside a newsletter project, pass --project DIR, or create one with 'newsletter init DIR'.",
            config_file=CONFIG_FILE,
            here=here,
        )
    )


_TOML_AT = re.compile(r"^(.*) \(at (?:line (\d+), column \d+|end of document)\)$", re.S)


def toml_problem(exc: tomllib.TOMLDecodeError, text: str) -> tuple[int | None, str]:
    """(line, what is wrong in plain words) for tomllib's error in ``text``: the mistakes people
    make in newsletter.toml named with what to write, tomllib's own words only for the rest."""
    found = _TOML_AT.match(str(exc))
    problem = found[1] if found else str(exc)
    line = int(found[2]) if found and found[2] else None
    if line is None:  # at the end of the file: a quote opened on some line and never closed
        opened = [n for n, text_line in enumerate(text.split("\n"), 1)
                  if re.match(r'^\s*[\w.-]+\s*=\s*"', text_line) and text_line.count('"') % 2]  # fmt: skip
        line = opened[-1] if opened else None
    source = text.split("\n")[line - 1] if line else ""
    key, _equals, value = (part.strip() for part in source.partition("="))
    if re.search(r"[“”„«»‘’]", value):
        straight = re.sub(r"[“”„«»]", '"', re.sub(r"[‘’]", "'", value))
        return line, _(
            "Word's curly quotes; newsletter.toml needs straight ones: {key} = {value}", key=key, value=straight
        )
    if problem == "Invalid value" and value.lower() in ("yes", "no", "ja", "nei", "on", "off", "sann", "usann"):
        return line, _("{key} is on or off: write {key} = true or {key} = false", key=key)
    if problem == "Invalid value" and value and not value.startswith(('"', "'", "[", "{")):
        return line, _('text must be in quotes: {key} = "{value}"', key=key, value=value.strip('"'))
    if problem == "Unterminated string" or problem == "Illegal character '\\n'":
        return line, _("the quote that starts on this line is never closed; end the text with the same quote mark.")
    if problem.startswith("Unescaped '\\'"):
        return line, _(
            "a backslash (\\) inside double quotes; write / in file paths, or put the text in single quotes instead."
        )
    if problem == "Cannot overwrite a value" or problem.startswith(("Cannot declare", "Cannot redefine")):
        before = text.split("\n")[: (line or 1) - 1]
        first = next((n for n, b in enumerate(before, 1) if key and re.match(rf"^\s*{re.escape(key)}\s*=", b)), None)
        if first is not None:
            return line, _("{key} is set twice (also on line {first}); keep one of them.", key=key, first=first)
        return line, _("{key} is set twice; keep one of them.", key=key or source.strip())
    if problem.startswith("Expected newline or end of document") and value.startswith(('"', "'")):
        return line, _("there is text after the closing quote on this line; put all of the text inside the quotes.")
    if problem.startswith("Expected '=' after a key"):
        return line, _("a line that is not 'name = value'; write the name, '=' and the value (text in quotes).")
    return line, _("not valid TOML ({problem}); fix the syntax.", problem=problem)


def _setting_line(text: str, section: str, key: str) -> int | None:
    """The line of ``key = ...`` in the ``[section]`` of newsletter.toml, for a message."""
    inside = False
    for number, line in enumerate(text.split("\n"), 1):
        header = re.match(r"^\s*\[([^\[\]]+)\]\s*(?:#.*)?$", line)
        if header:
            inside = header[1].strip() == section
        elif inside and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return None


def load_settings(
    project: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read and validate the settings of the project at (or above) ``project``.

    ``overrides`` maps Settings attribute names to CLI values; ``None`` values are ignored.
    ``environ`` defaults to ``os.environ``; the project's ``.env`` fills in what it lacks.
    """
    if project is not None:
        project = Path(project).resolve()
        if not (project / CONFIG_FILE).is_file():
            raise ProjectError(
                _(
                    "{project} has no {config_file}: pass the folder of a newsletter project, or create one with 'newsletter init DIR'.",
                    project=project,
                    config_file=CONFIG_FILE,
                )
            )
        root = project
    else:
        root = find_project()
    path = root / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, message = toml_problem(exc, text)
        raise ConfigError(f"{where(path, line)}: {message}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(_("{path}: not UTF-8 text; save it as UTF-8.", path=path)) from exc

    # An empty NEWSLETTER_ value (a blank line copied from .env.example, an exported but empty
    # variable) means unset, here for every setting: it neither overrides newsletter.toml nor
    # keeps .env from filling it in.
    env = {k: v for k, v in (environ if environ is not None else os.environ).items() if v.strip()}
    dotenv = root / ".env"
    if dotenv.is_file():
        from dotenv import dotenv_values  # here: a project without .env never needs it

        for key, value in dotenv_values(dotenv).items():
            if key.startswith("NEWSLETTER_") and value is not None and value.strip():
                env.setdefault(key, value)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}

    problems: list[str] = []
    known_sections = {o.section for o in OPTIONS} | {"categories", "feeds"}
    for section, body in data.items():
        if section not in known_sections:
            problems.append(_("{name}: unknown section [{section}]", name=path.name, section=section))
        elif isinstance(body, dict):
            known = {o.key for o in OPTIONS if o.section == section}
            for key in body:
                if key not in known:
                    import difflib

                    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
                    problems.append(
                        _(
                            "{name}: unknown setting {section}.{key}{guess}",
                            name=where(path.name, _setting_line(text, section, key)),
                            section=section,
                            key=key,
                            guess=_(" (did you mean {name}?)", name=close[0]) if close else "",
                        )
                    )

    values: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.kind == "secret":
            if opt.key in data.get(opt.section, {}):
                problems.append(
                    _(
                        "{name}: {toml} is a secret; remove it and set {env} in .env instead",
                        name=path.name,
                        toml=opt.toml,
                        env=opt.env,
                    )
                )
            raw = env[opt.env].strip() if opt.env in env else None
            if opt.attr == "old_secret_keys":
                keys = tuple(raw.split()) if raw else ()
                if any(len(k) < 32 for k in keys):
                    problems.append(
                        _("{env}: each key must have at least 32 characters (keys are space-separated)", env=opt.env)
                    )
                values[opt.attr] = keys
                continue
            if opt.attr == "secret_key" and raw is not None and len(raw) < 32:
                problems.append(_("{env}: too short; use at least 32 random characters", env=opt.env))
            values[opt.attr] = raw
            continue
        if opt.attr in overrides:
            raw, source = overrides[opt.attr], _("command line")
        elif opt.env in env:
            raw, source = env[opt.env], opt.env
        elif opt.key in data.get(opt.section, {}):
            raw, source = data[opt.section][opt.key], f"{path.name} {opt.toml}"
        else:
            raw, source = opt.default, None
        try:
            values[opt.attr] = _convert(opt, raw, root)
        except ValueError as exc:
            where_ = source or f"{path.name} {opt.toml}"
            problems.append(f"{where_}: {exc}")

    categories = DEFAULT_CATEGORIES
    if "categories" in data:
        try:
            categories = _categories(data["categories"])
        except ValueError as exc:
            problems.append(f"{path.name} [[categories]]: {exc}")

    feeds: tuple[FeedConfig, ...] = ()
    if "feeds" in data:
        try:
            feeds = _feeds(data["feeds"], root, categories)
        except ValueError as exc:
            problems.append(f"{path.name} [[feeds]]: {exc}")

    dkim = [values.get("dkim_domain"), values.get("dkim_selector"), values.get("dkim_key_file")]
    if any(dkim) and not all(dkim):
        problems.append(_("dkim: set all of dkim.domain, dkim.selector and dkim.key_file, or none"))
    second = [values.get("dkim_ed25519_key_file"), values.get("dkim_ed25519_selector")]
    if any(second) and not (all(second) and values.get("dkim_domain")):
        problems.append(
            _("dkim: an Ed25519 signature needs dkim.ed25519_key_file, dkim.ed25519_selector and dkim.domain")
        )
    if values.get("smtp_username") and not values.get("smtp_password"):
        problems.append(
            _("NEWSLETTER_SMTP_USERNAME is set but NEWSLETTER_SMTP_PASSWORD is not: put the password in .env (or remove the username for a server without login)")
        )  # fmt: skip
    elif values.get("smtp_password") and not values.get("smtp_username"):
        problems.append(
            _("NEWSLETTER_SMTP_PASSWORD is set but NEWSLETTER_SMTP_USERNAME is not: put the login name in .env too")
        )
    if problems:
        raise ConfigError(_("{count} problem(s) in the settings: ", count=len(problems)) + "; ".join(problems))
    settings = Settings(project_dir=root, categories=categories, feeds=feeds, **values)
    language.use(settings.interface_language or settings.language)  # what follows speaks the project's language
    return settings


def _convert(opt: Option, raw: Any, root: Path) -> Any:
    kind = opt.kind
    optional = kind.startswith("opt_")
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        if optional or kind == "bool":
            return None if optional else False
        raise ValueError(_("missing; set {toml} in newsletter.toml or {env}", toml=opt.toml, env=opt.env))
    base = kind.removeprefix("opt_")
    if base == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(_("{raw!r} is not true or false", raw=raw))
    if base in ("int", "int0"):
        # TOML true is not 1, and 90.9 is not 90: only whole numbers (or their text, from the environment)
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(_("{raw!r} is not a whole number", raw=raw))
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise ValueError(_("{raw!r} is not a whole number", raw=raw)) from None
        if number < (0 if base == "int0" else 1):
            raise ValueError(
                _("{number} must be {value}", number=number, value=_("0 or more") if base == "int0" else _("above 0"))
            )
        return number
    if opt.attr == "web_allowed_origins" and isinstance(raw, list):  # a TOML list, or text with spaces
        raw = " ".join(str(item) for item in raw)
    if not isinstance(raw, str):
        raise ValueError(_("{raw!r} must be text", raw=raw))
    text = raw.strip()
    if "\n" in text or "\r" in text:
        raise ValueError(_("must be a single line"))
    if base == "lang":
        if text not in LANGUAGES:
            raise ValueError(_("{text!r} is not a language; use nb or en", text=text))
        return text
    if base == "url":
        if not re.match(r"^https?://[^\s/]+", text):
            raise ValueError(_("{text!r} is not an http(s) address such as https://example.org", text=text))
        return text.rstrip("/")
    if base == "email":
        local, _at, domain = text.rpartition("@")
        if not (_LOCAL.match(local) and _DOMAIN.match(domain)):
            raise ValueError(_("{text!r} is not a valid e-mail address such as post@example.org", text=text))
        return f"{local}@{domain.lower()}"
    if base == "path":
        # Absolute and tidy, but links are not followed: paths.archive is itself a link that
        # 'newsletter archive' moves to each new version.
        return Path(os.path.normpath(root / text))
    if opt.attr == "web_allowed_origins":
        return " ".join(_origin(item) for item in text.replace(",", " ").split())
    if opt.attr == "web_trusted_proxies":
        for item in text.replace(",", " ").split():
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    _("{item!r} is not an address or network such as 127.0.0.1 or 10.0.0.0/8", item=item)
                ) from None
        return " ".join(text.replace(",", " ").split())
    if opt.attr in ("send_transport", "smtp_security"):
        text = text.lower()  # 'NONE', 'TLS' and 'StartTLS' mean what they say
    if opt.attr == "database_url" and text.split(":", 1)[0] not in ("postgresql", "postgres"):
        raise ValueError(
            _("{text!r} is not a PostgreSQL address such as postgresql://newsletter@db.example.no/newsletter (for SQLite, set paths.database instead)", text=text)
        )  # fmt: skip
    if opt.attr == "send_transport" and text not in ("smtp", "outbox"):
        raise ValueError(_("{text!r} must be smtp or outbox", text=text))
    if opt.attr == "smtp_security" and text not in ("starttls", "tls", "none"):
        raise ValueError(
            _(
                "{text!r} must be starttls (with port 587), tls (with port 465) or none (only for a server on this machine or a network you trust)",
                text=text,
            )
        )
    if opt.key == "list_id" and not _LIST_ID.match(text):
        raise ValueError(_("{text!r} must be a domain-like name such as news.example.org", text=text))
    return text


def _origin(text: str) -> str:
    """An origin as browsers send it in the Origin header: scheme://host[:port], small letters,
    no path and no default port ('https://Osloregionen.no/' -> 'https://osloregionen.no')."""
    parts = urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path.strip("/")
        or parts.query
        or port == -1
    ):
        raise ValueError(
            _(
                "{text!r} is not an origin; write the website's address without a path, such as https://osloregionen.no",
                text=text,
            )
        )
    host = parts.hostname.encode("idna").decode("ascii") if not parts.hostname.isascii() else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    shown = f":{port}" if port and port != default else ""
    return f"{parts.scheme}://{host.lower()}{shown}"


def _categories(raw: Any) -> tuple[Category, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(_("must be a non-empty list of tables with key, nb and en"))
    result = []
    for n, item in enumerate(raw, 1):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("key", "nb", "en")):
            raise ValueError(_("entry {n} needs text values for key, nb and en", n=n))
        aliases = item.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ValueError(_("entry {n}: aliases must be a list of text", n=n))
        result.append(Category(item["key"], item["nb"], item["en"], tuple(aliases)))
    keys = [c.key for c in result]
    if len(set(keys)) != len(keys):
        raise ValueError(_("two categories share a key"))
    return tuple(result)


FEED_KEYS = {"name", "url", "category", "max_items", "include", "exclude", "language", "first_fetch_days"}


def _feeds(raw: Any, root: Path, categories: tuple[Category, ...]) -> tuple[FeedConfig, ...]:
    if not isinstance(raw, list):
        raise ValueError(_("must be a list of tables, each starting with [[feeds]]"))
    result: list[FeedConfig] = []
    for n, item in enumerate(raw, 1):
        label = f"feed {n}"
        if not isinstance(item, dict):
            raise ValueError(_("{label} must be a table", label=label))
        unknown = set(item) - FEED_KEYS
        if unknown:
            raise ValueError(
                _(
                    "{label}: unknown key(s) {unknown} (known: {feed_keys})",
                    label=label,
                    unknown=", ".join(sorted(unknown)),
                    feed_keys=", ".join(sorted(FEED_KEYS)),
                )
            )
        name, url = item.get("name"), item.get("url")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(_("{label} needs a name", label=label))
        label = f"feed {name!r}"
        if not isinstance(url, str) or not url.strip():
            raise ValueError(_("{label} needs a url (https://... or a file path)", label=label))
        url = url.strip()
        if "://" in url and not url.startswith(("http://", "https://")):
            raise ValueError(_("{label}: url must start with http:// or https://, or be a file path", label=label))
        if "://" not in url:
            url = str((root / url).resolve())
        category = None
        if item.get("category") is not None:
            category = find_category(categories, str(item["category"]))
            if category is None:
                raise ValueError(_("{label}: unknown category {category!r}", label=label, category=item["category"]))
        max_items = item.get("max_items", 5)
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(_("{label}: max_items must be a whole number above 0", label=label))
        days = item.get("first_fetch_days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
            raise ValueError(_("{label}: first_fetch_days must be a whole number, 0 or more", label=label))
        words = {}
        for key in ("include", "exclude"):
            value = item.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
                raise ValueError(_("{label}: {key} must be a list of words", label=label, key=key))
            words[key] = tuple(w.strip().lower() for w in value)
        language = item.get("language")
        if language is not None and language not in LANGUAGES:
            raise ValueError(_("{label}: language must be nb or en", label=label))
        if any(f.name == name.strip() for f in result):
            raise ValueError(_("two feeds are named {name!r}; names must differ", name=name))
        result.append(
            FeedConfig(name.strip(), url, category, max_items, words["include"], words["exclude"], language, days)
        )
    return tuple(result)
