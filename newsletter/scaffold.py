"""New projects and new issues: files written from the built-in skeleton, never over existing ones."""

from __future__ import annotations

import json
import re
import shutil
from datetime import date
from pathlib import Path

from . import language
from .config import CONFIG_FILE, DEFAULT_CATEGORIES, Settings, load_settings
from .content import ISSUE_FILE, display, slugify
from .errors import ProjectError
from .i18n import format_month
from .language import _
from .render import builtin_templates
from .resources import builtin

# Example text in new issues; build warns while any of it is left.
PLACEHOLDER_PHRASES = (
    "Én setning om hva leseren får",
    "Skriv innledningen her",
    "Tittel på saken",
    "Skriv saken her",
    "One sentence on what readers get",
    "Write the introduction here",
    "Article title",
    "Write the article here",
)

ISSUE_TEMPLATE = {
    "nb": """---
title: "{title}"
subject: "{title}"
preheader: "Én setning om hva leseren får i denne utgaven (40–100 tegn)."
date: {date}
language: nb
---
Skriv innledningen her: noen få avsnitt fra redaksjonen om hva som står i nyhetsbrevet for {month}.

Du kan bruke **fet** og *kursiv* skrift, [lenker](https://www.example.org) og lister.
""",
    "en": """---
title: "{title}"
subject: "{title}"
preheader: "One sentence on what readers get in this issue (40-100 characters)."
date: {date}
language: en
---
Write the introduction here: a few paragraphs from the editors about what the {month} issue holds.

You can use **bold** and *italic* text, [links](https://www.example.org) and lists.
""",
}

ARTICLE_TEMPLATE = {
    "nb": """---
title: "Tittel på saken"
category: klima
order: 1
# image: bilde.jpg
# image_alt: "Hva bildet viser"
# link: https://www.example.org/
# link_text: "Les mer"
---
Skriv saken her. Et tomt linjeskift gir nytt avsnitt.

- Punktlister skrives med bindestrek
- Slik
""",
    "en": """---
title: "Article title"
category: klima
order: 1
# image: picture.jpg
# image_alt: "What the picture shows"
# link: https://www.example.org/
# link_text: "Read more"
---
Write the article here. An empty line starts a new paragraph.

- Bullet lists start with a hyphen
- Like this
""",
}

PROJECT_TOML = """{intro}

[newsletter]
name = {name}
language = "nb"                      # {language}
base_url = "https://nyhetsbrev.example.org"   # {base_url}
list_id = "nyhetsbrev.example.org"   # {list_id}
postal_address = "Organisasjon, Postboks 1, 0101 Oslo"
website = "https://www.example.org"
logo = "templates/images/logo.png"

[sender]
name = {name}
address = "nyhetsbrev@example.org"
reply_to = "post@example.org"
unsubscribe_mailto = "avmelding@example.org"

[paths]
content = "content"
templates = "templates"
build = "build"
database = "newsletter.db"

[sending]
{sending}
transport = "outbox"

{members_comment}
[emissions]
region = "Osloregionen"
members = "data/osloregionen-members.csv"

{categories_comment}
{categories}
"""

# The comments of newsletter.toml, in the language the tool speaks (the settings are the same).
PROJECT_COMMENTS = {
    "nb": {
        "intro": "# Innstillinger for dette nyhetsbrevet. Hemmeligheter (SMTP-passord, nøkler) skal i .env, aldri her.\n"
        "# Alle innstillinger kan overstyres med en miljøvariabel: se README, «Configuration».",
        "language": "standardspråk for nye utgaver: nb eller en",
        "base_url": "offentlig adresse: arkiv, bilder, avmeldingssider",
        "list_id": "List-Id-feltet i e-posten",
        "sending": '# Hvor e-postene går: "outbox" legger dem i den lokale mappen outbox/ (ingenting sendes ut fra\n'
        "# denne maskinen; åpne dem i et e-postprogram). For å sende på ordentlig: sett\n"
        "# NEWSLETTER_SENDING_TRANSPORT=smtp og SMTP-innstillingene i .env (se .env.example), eller skriv\n"
        '# transport = "smtp" her.',
        "categories_comment": "# Satsingsområdene sakene grupperes etter ('category:' i en sak). Endre dem som du vil.",
        "members_comment": "# Medlemskommunene: kommunen til abonnentene (i lister og på påmeldingssiden) og utslippstallene\n"
        "# per kommune kjennes igjen fra denne listen. Bytt ut filen for en annen region.",
    },
    "en": {
        "intro": "# Settings for this newsletter. Secrets (SMTP password, keys) go in .env, never here.\n"
        '# Every setting can be overridden by an environment variable: see README, "Configuration".',
        "language": "default edition language: nb or en",
        "base_url": "public address: archive, images, unsubscribe pages",
        "list_id": "List-Id header",
        "sending": '# Where messages go: "outbox" keeps them in the local outbox/ folder (nothing leaves this\n'
        "# machine; open them in a mail program). To send for real, set NEWSLETTER_SENDING_TRANSPORT=smtp\n"
        '# and the SMTP settings in .env (see .env.example), or write transport = "smtp" here.',
        "categories_comment": "# The focus areas articles are grouped by ('category:' in an article). Change them freely.",
        "members_comment": "# The member municipalities: subscribers' municipalities (in lists and on the signup page) and\n"
        "# the emission figures per municipality are matched against this list. Replace the file for another region.",
    },
}

ENV_EXAMPLE = """{intro}
NEWSLETTER_SECRET_KEY=
{transport}
NEWSLETTER_SENDING_TRANSPORT=
{smtp}
NEWSLETTER_SMTP_HOST=
NEWSLETTER_SMTP_PORT=587
NEWSLETTER_SMTP_USERNAME=
NEWSLETTER_SMTP_PASSWORD=
{security}
NEWSLETTER_SMTP_SECURITY=starttls
{dkim}
# NEWSLETTER_DKIM_DOMAIN=
# NEWSLETTER_DKIM_SELECTOR=
# NEWSLETTER_DKIM_KEY_FILE=
# NEWSLETTER_DKIM_RELAY_SIGNS=true
{lang}
"""

# The comments of .env.example, in the language the tool speaks.
ENV_COMMENTS = {
    "nb": {
        "intro": """# Hemmeligheter og innstillinger for denne maskinen. Kopier filen til .env og fyll ut; .env skal
# aldri inn i git. Alle innstillinger i newsletter.toml kan også settes her som NEWSLETTER_<NAVN>
# (se README). Ta sikkerhetskopi av .env sammen med newsletter.db: uten den samme
# NEWSLETTER_SECRET_KEY slutter avmeldingslenkene i e-poster som er sendt, å virke, og
# newsletter nekter å sende.
# NEWSLETTER_SECRET_KEY signerer lenkene i e-postene: minst 32 tilfeldige tegn, for eksempel fra
#   python3 -c "import secrets; print(secrets.token_urlsafe(48))"
# (den første kommandoen som trenger nøkkelen, lager den her, i et prosjekt som aldri har
# signert en lenke).""",
        "transport": """# For å sende på ordentlig: smtp, med e-posttjeneren nedenfor. (newsletter.toml kan si "outbox",
# som legger alle e-postene i den lokale mappen outbox/ i stedet.)""",
        "smtp": "# E-posttjeneren (SMTP): navn, port (587 med starttls, 465 med tls), brukernavn og passord.",
        "security": "# starttls (port 587), tls (port 465) eller none (bare for en tjener på denne maskinen)",
        "dkim": """# DKIM-signaturen, som Gmail og Yahoo krever av masseutsendelser: domenet (avsenderadressens,
# eller et annet under samme hoveddomene), velgeren og filen med den private nøkkelen (se README).
# Signerer e-posttjenesten for dere, sett NEWSLETTER_DKIM_RELAY_SIGNS=true i stedet.""",
        "lang": "# Språket verktøyet snakker: nb (standard) eller en.\n# NEWSLETTER_LANG=nb",
    },
    "en": {
        "intro": """# Secrets and machine-specific settings. Copy to .env and fill in; .env is never committed.
# Any setting in newsletter.toml can also be set here as NEWSLETTER_<NAME> (see README).
# Back .env up together with newsletter.db: without the same NEWSLETTER_SECRET_KEY, the
# unsubscribe links in emails already sent stop working, and newsletter refuses to send.
# NEWSLETTER_SECRET_KEY signs the links in emails: at least 32 random characters, e.g. from
#   python3 -c "import secrets; print(secrets.token_urlsafe(48))"
# (the first command that needs it makes one here, in a project that has never signed a link).""",
        "transport": """# To send for real: smtp, with the SMTP server below. (newsletter.toml may say "outbox", which
# keeps every message in the local outbox/ folder instead.)""",
        "smtp": "# The SMTP server: its name, port (587 with starttls, 465 with tls), user name and password.",
        "security": "# starttls (port 587), tls (port 465) or none (only for a server on this machine)",
        "dkim": """# The DKIM signature Gmail and Yahoo require of bulk mail: the domain (the From address's, or
# another under the same registered domain), the selector and the file with the private key
# (see README). If your email service signs for you, set NEWSLETTER_DKIM_RELAY_SIGNS=true instead.""",
        "lang": "# The language the tool speaks: nb (the default) or en.\n# NEWSLETTER_LANG=en",
    },
}


def parse_day(text: str) -> date:
    """A date given as YYYY-MM-DD or as Norwegians write it (14.01.2027, 14.1.2027), or a
    ProjectError that shows the forms."""
    found = re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{4})", text.strip())
    try:
        if found:
            return date(int(found[3]), int(found[2]), int(found[1]))
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ProjectError(
            _(
                "--date {text!r} is not a date; write it as YYYY-MM-DD or DD.MM.YYYY, e.g. 2027-01-14 or 14.01.2027.",
                text=text,
            )
        ) from None


def new_issue(settings: Settings, title: str, when: date | None = None, language: str | None = None) -> Path:
    """Create content/issues/<YYYY-MM>-<slug>/ with issue.md and one example article."""
    title = " ".join(title.split())
    if not title:
        raise ProjectError(_('The title is empty; give the issue a title, e.g. newsletter new "Nytt fra desember".'))
    when = when or date.today()
    language = language or settings.language
    folder = settings.issues_dir / f"{when:%Y-%m}-{slugify(title)}"
    if folder.exists():
        raise ProjectError(
            _("{folder} already exists; choose another title or edit that issue.", folder=display(folder))
        )
    escaped = title.replace("\\", "\\\\").replace('"', '\\"')
    folder.mkdir(parents=True)
    (folder / ISSUE_FILE).write_text(
        ISSUE_TEMPLATE[language].format(title=escaped, date=when.isoformat(), month=format_month(when, language)),
        encoding="utf-8",
    )
    (folder / "01-sak.md").write_text(ARTICLE_TEMPLATE[language], encoding="utf-8")
    return folder


def init_project(dest: Path, name: str = "Nyhetsbrev") -> list[Path]:
    """A new, working project in ``dest``: settings, templates, .env.example and one example issue."""
    dest = dest.resolve()
    if (dest / CONFIG_FILE).exists():
        raise ProjectError(
            _("{dest} already exists; nothing was changed. Choose an empty folder.", dest=display(dest / CONFIG_FILE))
        )
    if (dest / "templates").exists() or (dest / "content").exists():
        raise ProjectError(
            _(
                "{dest} already has templates/ or content/; nothing was changed. Choose an empty folder.",
                dest=display(dest),
            )
        )
    name = " ".join(name.split())
    existing = [p.name for p in (dest / ".env.example", dest / ".gitignore") if p.exists()]
    if existing:
        raise ProjectError(
            _(
                "{dest} already has {existing}; nothing was changed. Choose an empty folder.",
                dest=display(dest),
                existing=", ".join(existing),
            )
        )
    dest.mkdir(parents=True, exist_ok=True)
    created = [dest / CONFIG_FILE, dest / ".env.example", dest / ".gitignore", dest / "templates"]

    def quoted(value: object) -> str:  # a TOML basic string (or array of them): quotes and backslashes escaped
        return json.dumps(value, ensure_ascii=False)

    categories = "\n".join(
        f"[[categories]]\nkey = {quoted(c.key)}\nnb = {quoted(c.nb)}\nen = {quoted(c.en)}\n"
        f"aliases = {quoted(list(c.aliases))}\n"
        for c in DEFAULT_CATEGORIES
    )
    speaks = language.current()  # the files staff edit, in the language the tool speaks to them
    project_toml = PROJECT_TOML.format(name=quoted(name), categories=categories, **PROJECT_COMMENTS[speaks])
    (dest / CONFIG_FILE).write_text(project_toml, encoding="utf-8")
    (dest / ".env.example").write_text(ENV_EXAMPLE.format(**ENV_COMMENTS[speaks]), encoding="utf-8")
    (dest / ".gitignore").write_text(".env\nbuild/\n*.db\noutbox/\n", encoding="utf-8")
    shutil.copytree(
        builtin_templates(), dest / "templates", ignore=shutil.ignore_patterns("__pycache__", "osloregionen-*")
    )
    (dest / "data").mkdir(exist_ok=True)
    members = dest / "data" / "osloregionen-members.csv"
    if not members.exists():  # a data/ folder of the user's own is kept as it is
        shutil.copyfile(builtin("data") / "osloregionen-members.csv", members)
        created.append(members)
    created.append(new_issue(load_settings(dest), "Første nyhetsbrev"))
    return created
