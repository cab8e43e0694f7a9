"""The command line. The only module that imports click: parse, load settings, call one function, print."""

from __future__ import annotations

import gc
import logging
import os
import re
import sqlite3
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import click

from . import __version__, language
from .config import Settings, load_settings
from .errors import ConfigError, NewsletterError
from .language import N_, _, os_reason
from .store import Database, database, explain

# The stages are imported inside the commands that use them, so that each command starts
# without loading the others (the renderer alone is a third of a build's start-up).


@dataclass
class State:
    """Options of the group, shared with every command."""

    project: Path | None = None
    verbose: bool = False

    def settings(self, **overrides: object) -> Settings:
        return load_settings(self.project, overrides)

    def settings_with_key(self, **overrides: object) -> Settings:
        """Settings for commands that sign links: in a project that has never signed one, a key is
        made and kept in .env; otherwise the key must be the project's own (keys.ensure)."""
        from .keys import ensure

        settings, created = ensure(self.settings(**overrides))
        if created:
            click.echo(
                _(
                    "Made a new NEWSLETTER_SECRET_KEY in {file}: keep that file secret, and back it up with newsletter.db (without it, links in sent emails stop working).",
                    file=settings.project_dir / ".env",
                ),
                err=True,
            )
        return settings


class _Group(click.Group):
    """Speaks the project's language; turns NewsletterError into 'Error: ...' and exit 1;
    tracebacks only with --verbose."""

    def main(self, args=None, *more, **options):  # type: ignore[no-untyped-def, override]
        arguments = list(args) if args is not None else sys.argv[1:]
        try:
            speak(arguments)
        except ValueError:  # NEWSLETTER_LANG names a language we do not speak: say so in Norwegian, the default
            value = os.environ.get(language.ENV, "")
            wrong = _("NEWSLETTER_LANG={value!r} is not a language this tool speaks; use nb or en.", value=value)
            click.echo(_("Error: {message}", message=wrong), err=True)
            sys.exit(1)
        return super().main(arguments, *more, **options)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # Click asks here for the command about to run, for the one whose help or usage it shows,
        # and for each command it lists in 'newsletter --help': each is put in this run's language.
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            localize(command)
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except sqlite3.Error as exc:  # busy past the wait, or a damaged file: one line, never a traceback
            state = ctx.find_object(State)
            if state is not None and state.verbose:
                traceback.print_exc()
            raise click.ClickException(explain(_database_path(state), exc)) from exc
        except NewsletterError as exc:
            state = ctx.find_object(State)
            if state is not None and state.verbose:
                traceback.print_exc()
            for finding in getattr(exc, "findings", ()):  # the check's errors behind a refused send
                click.echo(finding.line, err=True)
            raise click.ClickException(str(exc)) from exc


def _database_path(state: State | None) -> Path | Database:
    """The project's database, for a message (its name alone if the settings cannot be read)."""
    try:
        return state.settings().database if state is not None else Path("newsletter.db")
    except NewsletterError:
        return Path("newsletter.db")


def _warn(findings) -> None:
    """Print findings (or plain messages) as warnings on stderr."""
    for finding in findings:
        click.echo(_("Warning: {text}", text=getattr(finding, "text", finding)), err=True)


def _confirm(question: str) -> bool:
    """Ask a yes/no question in the project's language ('[j/N]' in Norwegian); no is the default."""
    answers = {"y": True, "yes": True, "n": False, "no": False}
    answers |= {"j": True, "ja": True, "nei": False} if language.current() == "nb" else {}
    while True:
        reply = click.prompt(f"{question} [{_('y/N')}]", default="", show_default=False, prompt_suffix=" ", err=True)
        if not reply.strip():
            return False
        if reply.strip().lower() in answers:
            return answers[reply.strip().lower()]
        click.echo(_("Answer {yes} or {no}.", yes=_("y"), no=_("n")), err=True)


def _confirm_or_stop(question: str) -> None:
    """Ask; 'no' stops the command (exit 1, 'Aborted!' in the project's language)."""
    if not _confirm(question):
        raise click.Abort()


def _is_warning(note: str) -> bool:
    """Whether a note from the library is a warning (it then goes to stderr)."""
    return note.startswith(_("Warning: {text}", text=""))


def word(value: str) -> str:
    """A status or reason word the library gives as data ('confirmed', 'skipped'), translated."""
    return language.translate(value)


# Words the library returns as data and this module shows translated (see word()).
WORDS = (
    N_("pending"), N_("confirmed"), N_("unsubscribed"), N_("bounced"), N_("blocked"), N_("forgotten"),
    N_("sent"), N_("picked"), N_("skipped"), N_("keywords"), N_("new"),
    N_("scheduled"), N_("starting"), N_("running"), N_("done"), N_("cancelled"),
    N_("current"), N_("kept"), N_("retired"), N_("MISSING"), N_("file"), N_("hard"), N_("soft"), N_("complaint"),
    N_("directory"), N_("path"),  # the names Click gives a path option in its errors
)  # fmt: skip


def speak(arguments: list[str]) -> None:
    """Choose the language of this run before Click reads the arguments (so --help speaks it too):
    NEWSLETTER_LANG, else the project's interface_language (newsletter.toml, .env), else nb."""
    chosen = language.from_environment()
    if chosen is None:
        chosen = _project_language(arguments)
    language.use(chosen)
    language.teach_click()
    localize(cli, deep=False)  # the commands below as they are reached (_Group): a run uses one


def _project_language(arguments: list[str]) -> str | None:
    """The interface language of the project the arguments point at (--project) or the current
    folder is in; None when there is no project or it does not say. Never an error: the command
    itself reports a broken project."""
    import tomllib

    from .config import find_project

    folder = None
    for i, argument in enumerate(arguments):
        if argument == "--project" and i + 1 < len(arguments):
            folder = Path(arguments[i + 1])
        elif argument.startswith("--project="):
            folder = Path(argument.split("=", 1)[1])
    try:
        root = find_project(folder) if folder is None else folder
        value = None
        if (root / ".env").is_file():
            from dotenv import dotenv_values

            value = dotenv_values(root / ".env").get(language.ENV)
        if not value:
            table = tomllib.loads((root / "newsletter.toml").read_text(encoding="utf-8")).get("newsletter", {})
            value = table.get("interface_language") or table.get("language")
    except (NewsletterError, OSError, ValueError):
        return None
    return value if value in language.LANGUAGES else None


_TYPE_WORDS = {"text": N_("TEXT"), "integer": N_("INTEGER"), "float": N_("NUMBER"), "path": N_("PATH"),
               "directory": N_("FOLDER"), "file": N_("FILE"), "filename": N_("FILE"), "integer range": N_("INTEGER"),
               "float range": N_("NUMBER")}  # fmt: skip


def _name_the_metavar(param: click.Parameter) -> None:
    """Give a parameter the metavar Click would show, written out, so that it can be translated
    ('[ISSUE]' in the usage line, 'TEXT' after an option): Click makes them in English."""
    if isinstance(param.type, click.Path):  # its errors name it: "File '..' is a directory."
        english = param.type.__dict__.setdefault("_english_name", param.type.name)
        param.type.name = language.translate(english)
    if param.metavar is not None or getattr(param, "is_flag", False) or isinstance(param.type, click.Choice):
        return
    if isinstance(param, click.Argument):  # as Click writes it: [ISSUE] when optional, IDS... for many
        name = param.name.upper()  # type: ignore[union-attr]
        param.metavar = f"{name if param.required else f'[{name}]'}{'...' if param.nargs != 1 else ''}"
    elif language.english_name(param.type) in _TYPE_WORDS:
        param.metavar = _TYPE_WORDS[language.english_name(param.type)]


def _help_places(group: click.Command, path: str = "newsletter", deep: bool = True):  # type: ignore[no-untyped-def]
    """(object, attribute, where) for every help text of ``group`` and (``deep``) the commands below it."""
    for attribute in ("help", "short_help", "epilog", "options_metavar", "subcommand_metavar"):
        if isinstance(getattr(group, attribute, None), str):
            yield group, attribute, path
    for param in group.params:
        _name_the_metavar(param)
        if isinstance(param, click.Option):
            yield param, "help", f"{path} {param.opts[-1]}"
        if isinstance(param.metavar, str):
            yield param, "metavar", f"{path} {param.human_readable_name}"
    for name, command in getattr(group, "commands", {}).items() if deep else ():
        yield from _help_places(command, f"{path} {name}")


def help_texts(group: click.Command) -> list[tuple[str, str]]:
    """Every help text (in English, as written) with the command it belongs to: for the catalogue."""
    found = []
    for owner, attribute, where in _help_places(group):
        text = owner.__dict__.get(f"_english_{attribute}", getattr(owner, attribute))
        if text:
            found.append((text, where))
    return found


def localize(group: click.Command, *, deep: bool = True) -> None:
    """Put the help texts of ``group``, its options and (``deep``) every command below it in the
    current language (the English text stays beside it, so this can run again in another language)."""
    for owner, attribute, _where in _help_places(group, deep=deep):
        english = owner.__dict__.setdefault(f"_english_{attribute}", getattr(owner, attribute))
        if english:
            setattr(owner, attribute, language.translate(english))
        if isinstance(owner, click.Command):
            owner._help_option = None  # Click keeps the --help option it made, with its text, in the language then


class DecimalComma(click.FloatRange):
    """A number that may be written with a decimal comma, as Norwegians write it ('2,5')."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if isinstance(value, str):
            value = value.strip().replace(",", ".")
        return super().convert(value, param, ctx)


NOISY_LIBRARIES = ("markdown_it", "PIL", "urllib3", "asyncio", "charset_normalizer", "mail.log")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="newsletter")
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    help="The newsletter project folder (default: the nearest folder with newsletter.toml, from here upwards).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging and full tracebacks.")
@click.pass_context
def cli(ctx: click.Context, project: Path | None, verbose: bool) -> None:
    """Compose Osloregionen's newsletter from Markdown, news feeds and climate data, and send it.

    In a project folder (one with newsletter.toml): 'newsletter feeds fetch' brings in the
    news, 'newsletter build' builds the newest issue into build/<issue>/, 'newsletter send'
    sends it to the subscribers, by SMTP or to the local outbox/ as sending.transport says.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for chatty in NOISY_LIBRARIES:  # their debug lines drown ours; their warnings still show
        logging.getLogger(chatty).setLevel(logging.WARNING)
    ctx.obj = State(project=project, verbose=verbose)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="Nyhetsbrev", show_default=True, help="The newsletter's name.")
def init(directory: Path, name: str) -> None:
    """Create a new, working newsletter project in DIRECTORY.

    Writes newsletter.toml, .env.example, the templates and one example issue. Refuses to
    touch a folder that already holds a project.
    """
    from .content import display
    from .scaffold import init_project

    created = init_project(directory, name)
    click.echo(_("Created a newsletter project in {directory}:", directory=display(directory)))
    for path in created:
        click.echo(f"  {display(path)}")
    click.echo(
        _(
            "Next: edit {directory}, then run 'newsletter build' there.",
            directory=display(directory / "newsletter.toml"),
        )
    )


@cli.command()
@click.argument("title")
@click.option(
    "--date", "when", metavar="YYYY-MM-DD", help="Issue date, e.g. 2027-01-14 or 14.01.2027 (default: today)."
)
@click.option("--lang", type=click.Choice(["nb", "en"]), help="Edition language (default: the project's).")
@click.pass_obj
def new(state: State, title: str, when: str | None, lang: str | None) -> None:
    """Create a new issue folder content/issues/<YYYY-MM>-<slug>/ for TITLE.

    It holds issue.md (front matter and introduction) and one example article to copy.
    """
    from .content import display
    from .scaffold import new_issue, parse_day

    folder = new_issue(state.settings(), title, parse_day(when) if when else date.today(), lang)
    click.echo(_("Created {folder}", folder=display(folder)))
    click.echo(_("  {folder}  (title, subject, preheader, date; introduction)", folder=display(folder / "issue.md")))
    click.echo(_("  {folder}  (an example article)", folder=display(folder / "01-sak.md")))
    click.echo(_("Build it with: newsletter build {name}", name=folder.name))


@cli.command()
@click.argument("issue", required=False)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (default: build/<issue>).")
@click.pass_obj
def build(state: State, issue: str | None, out: Path | None) -> None:
    """Build ISSUE (default: the newest) into email.mjml, email.html, email.txt and message.eml.

    ISSUE is a folder name under content/issues (or a unique part of it, or a path).
    message.eml is addressed to a placeholder recipient so it can be opened in a mail program.
    """
    from .build import build_issue
    from .content import display

    result = build_issue(state.settings(), issue, out)
    click.echo(_("Built {issue}:", issue=result.issue_id))
    for path in result.files:
        click.echo(f"  {display(path)}")
    click.echo(_("HTML size: {size:.1f} KB (Gmail clips above 102 KB)", size=result.html_bytes / 1024))
    _warn(result.findings)


@cli.group()
def feeds() -> None:
    """Fetch news feeds and choose the news of an issue.

    Feeds are configured as [[feeds]] tables in newsletter.toml. By default an issue gets the
    items first seen since the previous issue was sent and not used before, newest first,
    within each feed's max_items and keywords; 'pick' and 'skip' override that.
    """


@feeds.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--strict", is_flag=True, help="Exit 1 if any feed fails (default: only if all fail).")
@click.pass_obj
def feeds_fetch(state: State, names: tuple[str, ...], strict: bool) -> None:
    """Fetch all feeds (or the NAMES given) concurrently and store new items.

    Prints one line per feed. A failing feed never stops the others.
    """
    from .feeds import fetch_feeds

    settings = state.settings()
    with database(settings.database) as conn:
        reports = fetch_feeds(settings, conn, names)
    for report in reports:
        if report.ok:
            click.echo(
                _(
                    "ok     {feed}: {new} new of {seen} ({status})",
                    feed=report.feed,
                    new=report.new,
                    seen=report.seen,
                    status=word(report.status),
                )
            )
        else:
            click.echo(_("failed {feed}: {error}", feed=report.feed, error=report.error), err=True)
    failed = [r for r in reports if not r.ok]
    click.echo(
        _(
            "{ok} of {total} feeds fetched, {new} new items.",
            ok=len(reports) - len(failed),
            total=len(reports),
            new=sum(r.new for r in reports),
        )
    )
    if failed and (strict or len(failed) == len(reports)):
        raise click.ClickException(
            _("{failed} of {total} feeds failed; see the lines above.", failed=len(failed), total=len(reports))
        )


@feeds.command("list")
@click.argument("issue", required=False)
@click.option("--all", "show_all", is_flag=True, help="Also list the items that are not selected.")
@click.pass_obj
def feeds_list(state: State, issue: str | None, show_all: bool) -> None:
    """List the news candidates for ISSUE (default: the newest) with their ids.

    [x] marks the items the issue shows. Use the ids with 'feeds pick' and 'feeds skip'.
    """
    from .clock import day
    from .content import find_issue, load_issue
    from .feeds import candidates, news_date

    settings = state.settings()
    loaded = load_issue(settings, find_issue(settings, issue))
    with database(settings.database) as conn:
        found = candidates(settings, conn, loaded.id, loaded.language)
    click.echo(
        _(
            "News for {issue}: {selected} selected of {total} candidates",
            issue=loaded.id,
            selected=sum(c.selected for c in found),
            total=len(found),
        )
    )
    for c in found:
        if not (c.selected or show_all or c.reason == "skipped"):
            continue
        when = day(news_date(c.item.published, c.item.first_seen))
        mark = "x" if c.selected else " "
        click.echo(f"[{mark}] {c.item.id:>5}  {when}  {c.item.feed}: {c.item.title}  ({language.translate(c.reason)})")
    hidden = sum(not (c.selected or c.reason == "skipped") for c in found)
    if hidden and not show_all:
        click.echo(_("({hidden} more not selected; --all lists them)", hidden=hidden))
    if not settings.feeds:
        _warn(
            [
                _(
                    "no feeds are set up in newsletter.toml, so there is no news; 'newsletter feeds fetch' says how to add one."
                )
            ]
        )
    elif not found:
        _warn([_("no news yet: run 'newsletter feeds fetch' first.")])


def _choose(state: State, items: tuple[str, ...], choice: str | None) -> None:
    """Pick, skip or reset: ``items`` is [ISSUE] IDS... (the newest issue when the first is a number)."""
    from .content import find_issue
    from .feeds import choose

    items = tuple(part.strip() for item in items for part in item.split(",") if part.strip())  # '1,2' too
    issue = items[0] if items and not items[0].isdigit() else None
    numbers = items[1:] if issue is not None else items
    if not numbers:
        raise click.ClickException(
            _("give the numbers of the items after the issue; 'newsletter feeds list' shows them.")
        )
    wrong = next((n for n in numbers if not n.isdigit()), None)
    if wrong is not None:
        raise click.ClickException(
            _("{value!r} is not an item number; 'newsletter feeds list' shows the numbers.", value=wrong)
        )
    settings = state.settings()
    issue_id = find_issue(settings, issue).name
    with database(settings.database) as conn:
        count = choose(conn, issue_id, [int(n) for n in numbers], choice)
    done = {
        "pick": _("Picked {count} item(s) for {issue}.", count=count, issue=issue_id),
        "skip": _("Skipped {count} item(s) for {issue}.", count=count, issue=issue_id),
        None: _("Reset {count} item(s) for {issue}.", count=count, issue=issue_id),
    }[choice]
    click.echo(_("{done} Rebuild with: newsletter build {issue}", done=done, issue=issue_id))


ITEMS = "[ISSUE] IDS..."


@feeds.command("pick")
@click.argument("items", nargs=-1, required=True, metavar=ITEMS)
@click.pass_obj
def feeds_pick(state: State, items: tuple[str, ...]) -> None:
    """Put the items IDS into ISSUE (default: the newest), whatever the default selection says."""
    _choose(state, items, "pick")


@feeds.command("skip")
@click.argument("items", nargs=-1, required=True, metavar=ITEMS)
@click.pass_obj
def feeds_skip(state: State, items: tuple[str, ...]) -> None:
    """Leave the items IDS out of ISSUE (default: the newest)."""
    _choose(state, items, "skip")


@feeds.command("reset")
@click.argument("items", nargs=-1, required=True, metavar=ITEMS)
@click.pass_obj
def feeds_reset(state: State, items: tuple[str, ...]) -> None:
    """Forget the pick or skip of the items IDS in ISSUE (default: the newest), back to the default."""
    _choose(state, items, None)


@feeds.command("status")
@click.pass_obj
def feeds_status(state: State) -> None:
    """Show each feed's last fetch: status, error and number of stored items."""
    from .clock import oslo_stamp
    from .feeds import feed_status

    settings = state.settings()
    with database(settings.database) as conn:
        rows = {row["name"]: row for row in feed_status(conn)}
    for feed in settings.feeds:
        row = rows.get(feed.name)
        if row is None:
            click.echo(_("never  {name}: not fetched yet", name=feed.name))
        elif row["last_error"]:
            click.echo(
                _(
                    "failed {name}: {last_error} (at {last_fetched}; last ok {last_ok})",
                    name=feed.name,
                    last_error=row["last_error"],
                    last_fetched=oslo_stamp(row["last_fetched"]),
                    last_ok=oslo_stamp(row["last_ok"]) or _("never"),
                )
            )
        else:
            click.echo(
                _(
                    "ok     {name}: {items} items (last fetched {last_fetched}, {last_status})",
                    name=feed.name,
                    items=row["items"],
                    last_fetched=oslo_stamp(row["last_fetched"]),
                    last_status=word(row["last_status"] or ""),
                )
            )


@cli.group()
def emissions() -> None:
    """Import Miljødirektoratet's municipal climate accounts and summarize them.

    The region is the municipalities in emissions.members (newsletter.toml), matched by
    municipality number in the 2020–2023 or the 2024 numbering.
    """


@emissions.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--release", help="Name of the release, e.g. 2025 (default: the file name without extension).")
@click.pass_obj
def emissions_import(state: State, file: Path, release: str | None) -> None:
    """Import FILE (.xlsx from Miljødirektoratet, or CSV) as a release, replacing one of the same name.

    CSV may be comma-separated UTF-8 or as Norwegian Excel saves it (semicolons, decimal comma).
    The import is all or nothing: on any error the previous data stay as they were.
    """
    from .emissions import import_emissions, read_members, read_sectors, sectors_file

    settings = state.settings()
    members = read_members(_members_file(settings))
    with database(settings.database) as conn:
        report = import_emissions(conn, file, release or file.stem, members, read_sectors(sectors_file(settings)))
    click.echo(
        _(
            "Imported release {release!r} from {name} ({numbering} municipality numbers):",
            release=report.release,
            name=file.name,
            numbering=report.numbering,
        )
    )
    click.echo(_("  rows read: {rows:,} ({zero_rows:,} zero)", rows=report.rows, zero_rows=report.zero_rows))
    click.echo(_("  municipalities: {count}", count=report.municipalities))
    click.echo(_("  years: {years}", years=", ".join(map(str, report.years))))
    click.echo(_("  sectors: {sectors}", sectors=", ".join(report.sectors)))
    if report.ignored_rows:
        click.echo(
            _("  ignored: {count:,} rows without a municipality number (sums, notes)", count=report.ignored_rows)
        )
    if report.empty_values:
        _warn([_("{count} empty emission values were read as 0.", count=report.empty_values)])
    if report.negative_values:
        click.echo(
            _(
                "  negative: {count:,} rows (removals, e.g. by forest or carbon capture; kept as they are)",
                count=report.negative_values,
            )
        )
    if report.unknown_sectors:
        _warn(
            [
                _(
                    "new sector(s) not in the sector list, imported as they are: {sectors}",
                    sectors=", ".join(report.unknown_sectors),
                )
            ]
        )


@emissions.command("summary")
@click.option("--from", "from_year", type=int, help="First year (default: the second newest in the release).")
@click.option("--to", "to_year", type=int, help="Second year (default: the newest in the release).")
@click.option("--municipality", help="A municipality by name or number, instead of the whole region.")
@click.option("--release", help="Release label (default: the one imported last).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--lang", type=click.Choice(["nb", "en"]), default="nb", show_default=True, help="Language of the table.")
@click.pass_obj
def emissions_summary(
    state: State,
    from_year: int | None,
    to_year: int | None,
    municipality: str | None,
    release: str | None,
    fmt: str,
    lang: str,
) -> None:
    """Emissions per sector in two years, with the change in tonnes and in percent of the from-year.

    The table uses Norwegian number format (space between thousands, decimal comma, real minus
    sign) and can be pasted into documents; json and csv are for other programs.
    """
    import json

    from .emissions import (
        find_municipality,
        latest_years,
        read_members,
        read_sectors,
        resolve_release,
        sectors_file,
        summarize,
        summary_csv,
        summary_table,
    )

    if (from_year is None) != (to_year is None):
        raise click.UsageError(_("give both --from and --to, or neither (the two newest years)."))
    settings = state.settings()
    members = read_members(_members_file(settings))
    with database(settings.database) as conn:
        label = resolve_release(conn, release)
        if from_year is None or to_year is None:
            from_year, to_year = latest_years(conn, label)
        if municipality:
            area, numbers = find_municipality(conn, label, municipality, members)
        else:
            area, numbers = settings.emissions_region, tuple(n for m in members for n in m.numbers)
        summary = summarize(conn, label, area, numbers, from_year, to_year)
    if fmt == "json":
        click.echo(json.dumps(summary.as_json(), ensure_ascii=False, indent=2))
    elif fmt == "csv":
        click.echo(summary_csv(summary), nl=False)
    else:
        click.echo(summary_table(summary, lang, read_sectors(sectors_file(settings))))
    _warn(summary.findings)


@emissions.command("releases")
@click.pass_obj
def emissions_releases(state: State) -> None:
    """List the imported releases, newest import first."""
    from .clock import oslo_stamp
    from .emissions import releases

    settings = state.settings()
    with database(settings.database) as conn:
        rows = releases(conn)
    if not rows:
        click.echo(_("No emission data imported yet: run 'newsletter emissions import FILE'."))
    for row in rows:
        click.echo(
            _(
                "{label}: {first_year}–{last_year}, {municipalities} municipalities, {rows:,} rows from {source} (imported {imported_at})",
                **{**dict(row), "imported_at": oslo_stamp(row["imported_at"])},
            )
        )


@cli.group()
def subscribers() -> None:
    """Manage the subscriber list: add, import, export, list, count, remove, forget, show.

    Segments (for sending) select confirmed subscribers by default and narrow them with
    terms such as: municipality=3205,Asker lang=nb topic=klima (terms AND, values OR).
    """


def _members(settings: Settings) -> tuple:
    from .emissions import project_members  # imported here: the CLI loads stages lazily

    return project_members(settings)


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="The person's name (used in the greeting).")
@click.option("--municipality", help="A member municipality by name or number.")
@click.option("--lang", type=click.Choice(["nb", "en"]), help="Edition language (default: the project's).")
@click.option("--topic", "topics", multiple=True, help="A focus area (key or name); repeat for more.")
@click.option(
    "--confirmed",
    is_flag=True,
    help="The person has agreed to get the newsletter (e.g. on paper): add them as confirmed. Without it, they wait for a confirmation that no email asks them for.",
)
@click.pass_obj
def subscribers_add(
    state: State,
    email: str,
    name: str,
    municipality: str | None,
    lang: str | None,
    topics: tuple[str, ...],
    confirmed: bool,
) -> None:
    """Add EMAIL to the list (pending until confirmed, unless --confirmed), or update its details."""
    from .subscribers import add

    settings = state.settings()
    with database(settings.database) as conn:
        action, person = add(
            conn, settings, _members(settings), email,
            name=name, municipality=municipality, language=lang, topics=topics, confirmed=confirmed,
        )  # fmt: skip
    values = {"email": person.email, "status": word(person.status)}
    if action == "added":
        click.echo(_("Added: {email} ({status})", **values))
        if person.status == "pending":
            click.echo(_(PENDING_NOTE, count=1), err=True)
    elif action == "updated":
        click.echo(_("Updated: {email} ({status})", **values))
    else:
        click.echo(_("Unchanged: {email} ({status})", **values))


@subscribers.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--confirmed",
    is_flag=True,
    help="Everyone in the file has agreed to get the newsletter: add them as confirmed. Without it, new people wait for a confirmation that no email asks them for.",
)
@click.option("--dry-run", is_flag=True, help="Check the file and report, but change nothing.")
@click.pass_obj
def subscribers_import(state: State, file: Path, confirmed: bool, dry_run: bool) -> None:
    """Import subscribers from a list as Excel saves one: a workbook (.xlsx, its first sheet) or
    text (CSV UTF-8, CSV (semikolondelt) in Windows-1252, Unicode-tekst in UTF-16; commas,
    semicolons or tabs). It says how it read the file.

    Columns are matched by name, in any case: email/e-post/epost/e-postadresse, name/navn,
    municipality/kommune, language/språk, topics/tema/emner. Re-importing the same file changes nothing; an import never
    brings back anyone who unsubscribed or asked to be forgotten. Exits 1 if any row was rejected.
    """
    from .subscribers import import_csv

    settings = state.settings()
    with database(settings.database) as conn:
        report = import_csv(conn, settings, _members(settings), file, confirmed=confirmed, dry_run=dry_run)
    if report.read_as:
        click.echo(_("Read {name} as {read_as}.", name=file.name, read_as=report.read_as))
    if report.ignored_columns:
        click.echo(
            _(
                "Warning: the column(s) {columns} were not read (their names match no field); to use them, name them E-post, Navn, Kommune, Språk or Tema and import again.",
                columns=", ".join(f"'{c}'" for c in report.ignored_columns),
            ),
            err=True,
        )
    counts = {
        "added": report.added,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "skipped": report.skipped,
        "rejected": report.rejected_count,
    }
    if dry_run:
        line = _(
            "Would add {added:,}, update {updated:,}, leave {unchanged:,} unchanged, reject {rejected:,}.", **counts
        )
    else:
        line = _("Added {added:,}, updated {updated:,}, {unchanged:,} unchanged, rejected {rejected:,}.", **counts)
    if report.skipped:
        line += " " + _("Skipped {skipped:,} (unsubscribed, bounced or blocked).", **counts)
    click.echo(line)
    if report.added_pending:
        click.echo(_(PENDING_NOTE_DRY if dry_run else PENDING_NOTE, count=report.added_pending), err=True)
    for line_number, reason in report.rejected[:REJECTED_ON_SCREEN]:
        click.echo(_("{file}:{line}: rejected: {reason}", file=file.name, line=line_number, reason=reason), err=True)
    listed = None
    if report.rejected_count > REJECTED_ON_SCREEN:
        try:
            listed = _rejected_file(file, report)
        except OSError as exc:
            raise click.ClickException(
                _(
                    "{count:,} row(s) rejected, and the list of them cannot be written beside {file} ({reason}); run the import from a folder you can write to.",
                    count=report.rejected_count,
                    file=file,
                    reason=os_reason(exc),
                )
            ) from exc
        click.echo(
            _(
                "... and {count:,} more rejected rows: all of them, with the reasons, are in {listed} (open it in Excel).",
                count=report.rejected_count - REJECTED_ON_SCREEN,
                listed=listed,
            ),
            err=True,
        )
    if dry_run:
        click.echo(_("Dry run: the subscriber list was not changed."))
    if report.rejected_count and dry_run:
        raise click.ClickException(
            _(
                "{count:,} row(s) would be rejected and the rest added; fix them in the file first, or import it and fix them afterwards.",
                count=report.rejected_count,
            )
        )
    if report.rejected_count and listed is not None:
        raise click.ClickException(
            _(
                "{count:,} row(s) rejected; fix them in {listed} and import that file (the rest is saved).",
                count=report.rejected_count,
                listed=listed.name,
            )
        )
    if report.rejected_count:
        raise click.ClickException(
            _(
                "{count:,} row(s) rejected; fix them and import the file again (the rest is saved).",
                count=report.rejected_count,
            )
        )


REJECTED_ON_SCREEN = 10
PENDING_NOTE_DRY = N_(
    "{count:,} new subscriber(s) would wait for confirmation (pending): no email is sent, and they get no newsletter until confirmed. If they have agreed to get it, import with --confirmed."
)
PENDING_NOTE = N_(
    "{count:,} new subscriber(s) wait for confirmation (pending): no email was sent, and they get no newsletter until confirmed. If they have agreed to get it, add them again with --confirmed; otherwise ask them to sign up on the website."
)


def _rejected_file(source: Path, report) -> Path:  # type: ignore[no-untyped-def]
    """The rejected rows, each with its line, the reason and its own cells as the file has them,
    as a CSV beside the file (UTF-8 with BOM and semicolons, as Norwegian Excel opens it): fix the
    cells and import this file (its two first columns are not read)."""
    import csv

    from .subscribers import neutralized

    target = source.with_name(f"{source.stem}-{_('rejected')}.csv")
    number = 2
    while target.exists():  # an earlier one may be the list being fixed: never written over
        target = source.with_name(f"{source.stem}-{_('rejected')}-{number}.csv")
        number += 1
    with target.open("x", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow([_("line"), _("reason"), *report.header])
        for (line, reason), cells in zip(report.rejected, report.rejected_cells, strict=True):
            writer.writerow([line, reason, *(neutralized(cell) for cell in cells)])
    return target


@subscribers.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--status", "statuses", multiple=True, help="Only these statuses (repeatable).")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (never over one that exists).",
)
@click.pass_obj
def subscribers_export(state: State, fmt: str, statuses: tuple[str, ...], output: Path | None) -> None:
    """Write the subscribers with their consent records to a file (--output) or the screen.

    With --output, the CSV opens in Excel as it is (semicolons, UTF-8 with BOM), and can be
    imported again.
    """
    from .subscribers import export, listing, write_export

    settings = state.settings()
    with database(settings.database) as conn:
        people = listing(conn, statuses)
    names = {m.number_2024: m.name for m in _members(settings)} if settings.emissions_members else {}
    text = export(people, fmt, names, language.current())
    if output is None:
        click.echo(text, nl=False)
        return
    if output.suffix.lower() != f".{fmt}":  # Excel will not open a CSV named .xlsx
        raise click.ClickException(
            _("{output}: a {fmt} file's name ends in .{fmt}; write --output {name}", output=output, fmt=fmt,
              name=output.with_suffix(f".{fmt}").name)
        )  # fmt: skip
    try:
        write_export(output, text, fmt)
    except FileExistsError as exc:
        raise click.ClickException(
            _("{output} exists already; choose another name, or delete it first.", output=output)
        ) from exc
    except OSError as exc:
        raise click.ClickException(
            _("cannot write {output} ({reason}); check the folder.", output=output, reason=os_reason(exc))
        ) from exc
    click.echo(_("Wrote {count:,} subscriber(s) to {output}.", count=len(people), output=output))


@subscribers.command("list")
@click.option("--status", "statuses", multiple=True, help="Only these statuses (repeatable).")
@click.option("--segment", help="Only those a segment selects, e.g. 'municipality=3205 lang=nb'.")
@click.pass_obj
def subscribers_list(state: State, statuses: tuple[str, ...], segment: str | None) -> None:
    """List subscribers: address, status, municipality, language, topics, name."""
    from .subscribers import audience, listing, parse_segment

    settings = state.settings()
    with database(settings.database) as conn:
        if segment:
            people = audience(conn, parse_segment(segment, settings, _members(settings)))
        else:
            people = listing(conn, statuses)
    names = {m.number_2024: m.name for m in _members(settings)} if settings.emissions_members else {}
    for p in people:
        place = names.get(p.municipality, p.municipality) if p.municipality else "-"
        click.echo(f"{p.email}  {word(p.status)}  {place}  {p.language}  {','.join(p.topics) or '-'}  {p.name}")
    click.echo(_("{count:,} subscriber(s)", count=len(people)))


@subscribers.command("count")
@click.pass_obj
def subscribers_count(state: State) -> None:
    """Count subscribers by status, and confirmed ones by municipality and language."""
    from .subscribers import counts

    settings = state.settings()
    names = {m.number_2024: m.name for m in _members(settings)}
    with database(settings.database) as conn:
        result = counts(conn)
    statuses = ", ".join(f"{word(k)} {v}" for k, v in result["status"].items())
    click.echo(_("By status: {counts}", counts=statuses))
    languages = ", ".join(f"{k} {v}" for k, v in result["language"].items()) or _("none")
    click.echo(_("Confirmed by language: {counts}", counts=languages))
    click.echo(_("Confirmed by municipality:"))
    for number, n in result["municipality"].items():
        click.echo(f"  {names.get(number, number)} ({number}): {n}" if number != "-" else _("  (none given): {n}", n=n))


@subscribers.command("remove")
@click.argument("email")
@click.pass_obj
def subscribers_remove(state: State, email: str) -> None:
    """Unsubscribe EMAIL. The record stays (as unsubscribed), so imports cannot add it again."""
    from .subscribers import remove

    settings = state.settings()
    with database(settings.database) as conn:
        person = remove(conn, email)
    click.echo(_("Unsubscribed: {email}", email=person.email))


@subscribers.command("forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def subscribers_forget(state: State, email: str, yes: bool) -> None:
    """Erase everything stored about EMAIL (the right to be forgotten).

    Only a keyed hash of the address is kept, so that it cannot be imported again by accident.
    """
    from .subscribers import close_addresses, forget, get, normalize_email

    settings = state.settings_with_key()
    address = normalize_email(email)
    with database(settings.database) as conn:
        guess = "" if get(conn, address) else close_addresses(conn, address)
    if guess:  # a typo: say so before anything happens
        raise click.ClickException(
            _(
                "{address} is not on the list{guess}; give the address exactly as it is on the list (nothing was changed).",
                address=address,
                guess=guess,
            )
        )
    if not yes:
        _confirm_or_stop(_("Erase all data about {address}?", address=address))
    with database(settings.database) as conn:
        was_there = forget(conn, settings, address)
    if was_there:
        click.echo(_("Forgotten: {address} (only a keyed hash of the address is kept)", address=address))
    else:
        click.echo(
            _(
                "{address} was not on the list; it is remembered as forgotten, so no import can add it (only the person can sign up again).",
                address=address,
            )
        )


@subscribers.command("show")
@click.argument("email")
@click.pass_obj
def subscribers_show(state: State, email: str) -> None:
    """Everything stored about EMAIL, as JSON (for a data-access request), with the municipality's name."""
    import json
    from dataclasses import asdict

    from .subscribers import get, normalize_email, settle

    settings = state.settings()
    with database(settings.database) as conn:
        settle(conn)  # an unsubscribe kept aside while the database was busy shows too
        person = get(conn, email)
    if person is None:
        raise click.ClickException(
            _("{email} is not on the list (nothing is stored about it).", email=normalize_email(email))
        )
    shown = asdict(person)
    if person.municipality and settings.emissions_members:  # the name beside the number people do not know
        names = {m.number_2024: m.name for m in _members(settings)}
        shown = {**shown, "municipality_name": names.get(person.municipality)}
    with database(settings.database) as conn:
        history = conn.execute(
            "SELECT at, kind, status, detail, delivery FROM subscriber_events WHERE subscriber = ? ORDER BY at, id",
            (person.id,),
        ).fetchall()
    shown["events"] = [dict(row) for row in history]  # bounces and complaints reported after sending
    click.echo(json.dumps(shown, ensure_ascii=False, indent=2))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option(
    "--trusted-proxies",
    "--forwarded-allow-ips",  # its name before 0.2; kept so that existing service files still start
    "trusted_proxies",
    metavar="ADDRESSES",
    help="Reverse proxies (addresses or networks, space-separated) whose X-Forwarded-For/-Proto are trusted "
    "(default: web.trusted_proxies; none: the client's own address counts).",
)
@click.pass_obj
def serve(state: State, host: str, port: int, trusted_proxies: str | None) -> None:
    """Serve the public pages: signup, confirm, preferences, unsubscribe (one-click), /health,
    and the archive of sent issues at /archive/ (what 'newsletter archive' writes).

    Run it behind a reverse proxy that terminates HTTPS at the public base_url (see README).
    """
    import uvicorn

    from .web import create_app

    settings = state.settings_with_key(web_trusted_proxies=trusted_proxies)
    app = create_app(settings)
    _can_listen(host, port)
    click.echo(
        _(
            "Serving on {host} (public address {base_url}); Ctrl-C stops.",
            host=_url(host, port),
            base_url=settings.base_url,
        )
    )
    # No access log: the URLs hold subscribers' tokens.
    uvicorn.run(
        app,
        host=host,
        port=port,
        proxy_headers=bool(settings.web_trusted_proxies),  # only what the named proxies say is believed
        forwarded_allow_ips=(settings.web_trusted_proxies or "").replace(" ", ","),
        log_level="info",
        access_log=False,
    )


@cli.command("signup-form")
@click.option("--lang", type=click.Choice(["nb", "en"]), help="Language of the form (default: the project's).")
@click.option(
    "--topics",
    metavar="TOPICS",
    help="Focus areas offered as checkboxes, e.g. 'klima,areal', or 'all' (default: none; subscribers get them all).",
)
@click.option("--municipality-field", is_flag=True, help="Ask for the municipality (a list of the members).")
@click.option("--no-script", is_flag=True, help="Only the plain form: no proof of work, stricter limits (see README).")
@click.option("--no-change-form", is_flag=True, help="Leave out the 'change my subscription' form.")
@click.option("--return-url", metavar="URL", help="A page on the website to send people to after a plain form post.")
@click.pass_obj
def signup_form_command(
    state: State, lang: str | None, topics: str | None, municipality_field: bool, no_script: bool,
    no_change_form: bool, return_url: str | None,
) -> None:  # fmt: skip
    """Print the signup form to paste into the website (an HTML block in its CMS).

    It posts to <base_url>/signup, which 'newsletter serve' answers for the websites in
    web.allowed_origins. It works without JavaScript; with it, the browser does a small proof of
    work (ALTCHA, served by 'serve' itself) and the answer shows in place. Everything it loads
    comes from base_url.
    """
    from .embed import signup_form

    settings = state.settings()
    chosen = tuple(part for part in (topics or "").split(",") if part.strip())
    snippet = signup_form(settings, lang or settings.language, topics=chosen, municipality_field=municipality_field,
                          script=not no_script, change=not no_change_form, return_url=return_url)  # fmt: skip
    click.echo(snippet, nl=False)
    click.echo(
        _("Paste all of this into an HTML block on the website (see the staff guide: signup on the front page)."),
        err=True,
    )


@cli.command()
@click.argument("issue", required=False)
@click.option("--port", default=8001, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The preview has no login: keep it on loopback unless you mean to share it.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the preview in the web browser.")
@click.pass_obj
def preview(state: State, issue: str | None, port: int, host: str, open_browser: bool) -> None:
    """Preview ISSUE (default: the newest) live in the browser while you write.

    Shows the email at desktop and mobile widths side by side, the inbox line, the headers, the
    text part and what 'check' finds; choose the issue, the language edition and the
    municipality for the emissions block. Saving a file under content/ or templates/,
    newsletter.toml or .env, or new feeds or emission data, rebuilds and refreshes the page;
    build errors show on the page.
    """
    import threading
    import webbrowser

    import uvicorn

    from .content import find_issue
    from .preview import LOOPBACK, Preview, create_preview_app

    settings = state.settings()  # broken settings or an unknown ISSUE: a one-line error now, not a page later
    if issue is not None:
        folder = find_issue(settings, issue)
        issue = folder.name if folder.parent == settings.issues_dir else str(folder)
    live = Preview(lambda: state.settings(), issue)
    _can_listen(host, port)
    loopback = host in LOOPBACK
    url = _url(host, port)
    # Elsewhere than loopback: this machine's names and the address given, still not any name
    # (a web page could otherwise reach the preview through its own name: DNS rebinding).
    allowed = LOOPBACK if loopback else (*LOOPBACK, host.strip("[]"), *_machine_names())
    if not loopback:
        click.echo(
            _("Warning: the preview has no login; anyone who can reach {url} can read the issue.", url=url), err=True
        )
    server = uvicorn.Server(
        uvicorn.Config(create_preview_app(live, allowed_hosts=allowed), host=host, port=port, log_level="warning",
                       access_log=False, lifespan="off")
    )  # fmt: skip
    if open_browser:

        def opener() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                webbrowser.open(url)

        threading.Thread(target=opener, daemon=True).start()
    live.start_watching()
    click.echo(_("Preview on {url} ; it refreshes when you save a file. Ctrl-C stops.", url=url))
    try:
        server.run()
    finally:
        live.stop_watching()


@cli.command()
@click.argument("issue", required=False)
@click.option(
    "--segment", help="Who gets it: e.g. 'municipality=3205,Asker lang=nb topic=klima' (default: all confirmed)."
)
@click.option(
    "--test",
    "tests",
    multiple=True,
    metavar="ADDRESS",
    help="Send only to this address (or several, separated by commas), subject [TEST]; repeatable. Records no delivery (publishes the images).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Send at most N messages in this run; the rest wait for the next."
)
@click.option("--dry-run", is_flag=True, help="Show who would get it; send and record nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts and cron).")
@click.option("--retry-failed", is_flag=True, help="Try the recipients that failed temporarily once more.")
@click.option("--force", is_flag=True, help="Send even if 'newsletter check' finds errors.")
@click.pass_obj
def send(
    state: State,
    issue: str | None,
    segment: str | None,
    tests: tuple[str, ...],
    limit: int | None,
    dry_run: bool,
    yes: bool,
    retry_failed: bool,
    force: bool,
) -> None:
    """Send ISSUE (default: the newest) to the subscribers, or resume its interrupted delivery.

    Runs the check first and refuses on errors (unless --force). Every recipient is recorded
    before the first message leaves, so running the same command again after a crash or Ctrl-C
    goes on where it stopped. Messages go where the settings say: SMTP (smtp.host), or the
    local outbox/ folder when sending.transport is "outbox"; with neither, it refuses. The
    archive is updated once the first message is accepted. Exits 0 only when nobody is left.
    """
    import signal
    import sys
    import threading

    from . import delivery

    tests = tuple(a.strip() for test in tests for a in re.split(r"[,;]", test) if a.strip())  # 'a@x.no, b@x.no'
    if tests:
        from .build import prepare
        from .check import findings

        settings = state.settings_with_key()
        prepared = prepare(settings, issue)
        found = findings(settings, prepared)
        errors = [f for f in found if f.level == "error"]
        said = {f.text for f in errors}  # the check makes some warnings errors: each is said once
        _warn([f for f in prepared.findings if f.level == "warning" and f.text not in said])
        for finding in errors:  # a test is sent anyway: seeing the problem is what it is for
            click.echo(finding.line, err=True)
        result = delivery.send_test(settings, prepared, tests)
        for address, where in result.sent:
            if result.via.kind == "outbox":
                click.echo(
                    _(
                        "Test for {address} saved in the local outbox, not sent: {where} (open it in a mail program)",
                        address=address,
                        where=where,
                    )
                )
            else:
                click.echo(_("Test sent to {address} ({where})", address=address, where=where))
        for note in result.notes:
            click.echo(note, err=_is_warning(note))
        for address, reason in result.failed:
            click.echo(_("  not sent to {address}: {reason}", address=address, reason=reason), err=True)
        if errors:
            click.echo(
                _(
                    "Warning: {count} error(s) found by 'newsletter check': the test was sent, but a real send refuses until they are fixed.",
                    count=len(errors),
                ),
                err=True,
            )
        if result.failed:
            raise click.ClickException(
                _(
                    "the test did not reach {failed} of {total} address(es) (see above); check them.",
                    failed=len(result.failed),
                    total=len(tests),
                )
            )
        return
    settings = state.settings()
    plan = delivery.plan(settings, issue, segment, retry_failed=retry_failed, force=force)
    if not dry_run:  # a key is made (in a project that never signed) only once the send can go
        settings = state.settings_with_key()
    _warn(plan.warnings)  # the build's, and unsigned mail by SMTP; check lists the rest
    for finding in plan.findings:
        if finding.level == "error":  # only when forced
            click.echo(_("{line} (sent anyway: --force)", line=finding.line), err=True)
    click.echo(
        _(
            "{issue}: {subject!r} -> {audience:,} recipient(s) via {via}",
            issue=plan.issue,
            subject=plan.subject,
            audience=plan.audience,
            via=plan.via,
        )
    )
    if plan.other_language:
        names = {"nb": _("Norwegian"), "en": _("English")}
        other = "en" if plan.language == "nb" else "nb"
        click.echo(
            _(
                "Warning: {count} of them chose the {chosen} edition and get this {edition} issue; to send it only to its readers, add --segment 'lang={language}'.",
                count=plan.other_language,
                chosen=names[other],
                edition=names[plan.language],
                language=plan.language,
            ),
            err=True,
        )
    if dry_run:
        for address in plan.sample:
            click.echo(f"  {address}")
        if plan.audience > len(plan.sample):
            click.echo(_("  ... and {count:,} more", count=plan.audience - len(plan.sample)))
        click.echo(_("Dry run: nothing was sent or recorded."))
        return
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException(_("not on a terminal: add --yes to send without being asked."))
        values = {"issue": plan.issue, "audience": plan.audience, "via": plan.via}
        if plan.resuming:
            _confirm_or_stop(_("Resume the delivery of {issue} to {audience:,} recipient(s) via {via}?", **values))
        else:
            _confirm_or_stop(_("Send {issue} to {audience:,} recipient(s) via {via}?", **values))
    stop = threading.Event()

    def graceful(signum, frame):
        click.echo(_("\nStopping after the messages in flight (Ctrl-C again to stop at once) ..."), err=True)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, graceful)
    started = time.monotonic()
    last, first_sent = [started], [None]  # a first line after a second (or ten), not at once

    def progress(now_summary) -> None:
        done = now_summary.sent + now_summary.failed + now_summary.gave_up + now_summary.skipped
        if first_sent[0] is None:
            first_sent[0] = now_summary.sent  # what earlier runs sent does not count towards this run's rate
        elapsed = max(time.monotonic() - started, 1e-6)
        if time.monotonic() - last[0] >= (1 if sys.stdout.isatty() else 10):
            last[0] = time.monotonic()
            rate = (now_summary.sent - first_sent[0]) / elapsed
            eta = (now_summary.pending / rate) if rate else 0
            end = "\r" if sys.stdout.isatty() else "\n"
            click.echo(
                _(
                    "{done:,}/{total:,} done, {rate:.1f} msg/s, about {eta:.0f} s left",
                    done=done,
                    total=now_summary.total,
                    rate=rate,
                    eta=eta,
                ),
                nl=False,
            )
            click.echo(end, nl=False)

    try:
        result = delivery.send(settings, plan, limit=limit, stop=stop, progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    click.echo(result.line)
    for note in result.notes:
        click.echo(note, err=_is_warning(note))
    for address, reason in result.failures[:20]:
        click.echo(_("  failed {address}: {reason}", address=address, reason=reason), err=True)
    if len(result.failures) > 20:
        click.echo(
            _(
                "  ... and {count} more: 'newsletter status {issue}' lists them all.",
                count=len(result.failures) - 20,
                issue=plan.issue,
            ),
            err=True,
        )
    if plan.via_kind == "outbox":
        click.echo(
            _("The messages are in {folder} (a Maildir); nothing left this machine.", folder=settings.outbox_dir)
        )
    if result.pending:
        raise click.ClickException(
            _(
                "{count} recipient(s) left for retry; run the same command again (or let 'newsletter run-due' do it).",
                count=result.pending,
            )
        )
    if result.trouble:
        raise click.ClickException(result.trouble)


@cli.command()
@click.argument("issue", required=False)
@click.option("--links", is_flag=True, help="Also check every link online (HEAD, then GET).")
@click.option(
    "--timeout",
    type=DecimalComma(min=0.5),
    default=10.0,
    show_default=True,
    help="Seconds to wait for each link with --links.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def check(state: State, issue: str | None, links: bool, timeout: float, fmt: str) -> None:
    """Check ISSUE (default: the newest) before sending: one line per finding; exit 1 on errors.

    Errors: HTML over Gmail's 102 KB, an image without alt text, no unsubscribe link, an empty
    subject, a link that is not http(s) or mailto, a missing file, emission figures that cannot
    be right; with --links, a link that answers 4xx/5xx or whose server cannot be reached.
    Warnings: a long subject, a missing or short preheader, images without width or over
    200 KB, vague link texts such as 'klikk her', text colour contrast below WCAG AA, an almost
    empty text part, a SpamAssassin score above 2 (when SpamAssassin is installed; run locally).
    'send' and 'schedule' run the same check (without --links and SpamAssassin) and refuse on
    errors unless --force.
    """
    import json

    from .check import as_json, check_issue
    from .content import find_issue

    settings = state.settings()
    found = check_issue(settings, issue, links=links, timeout=timeout)
    if fmt == "json":
        click.echo(json.dumps(as_json(found), ensure_ascii=False, indent=2))
    else:
        for finding in found:
            click.echo(finding.line)
        errors = sum(f.level == "error" for f in found)
        warnings = sum(f.level == "warning" for f in found)
        try:
            checked = find_issue(settings, issue).name  # which issue: 'check' alone takes the newest
        except NewsletterError:  # the finding above says why it cannot be named
            click.echo(_("{errors} error(s), {warnings} warning(s).", errors=errors, warnings=warnings))
        else:
            click.echo(
                _("{issue}: {errors} error(s), {warnings} warning(s).", issue=checked, errors=errors, warnings=warnings)
            )
    if any(f.level == "error" for f in found):
        raise SystemExit(1)


@cli.command()
@click.argument("issue", required=False)
@click.pass_obj
def status(state: State, issue: str | None) -> None:
    """Show the delivery of ISSUE (default: the newest): scheduled, blocked (and why), or the
    counts of a started one and every failure with its reason."""
    from .clock import oslo
    from .delivery import status as delivery_status

    result = delivery_status(state.settings(), issue)
    if result.status == "scheduled":
        click.echo(
            _(
                "{issue}: scheduled for {time}; nothing sent yet.",
                issue=result.issue,
                time=oslo(result.scheduled_at),
            )
        )  # type: ignore[arg-type]
        return
    if result.status == "blocked":
        click.echo(_("{issue}: blocked, not sent: {reason}", issue=result.issue, reason=result.blocked_reason))
        if "schedule approve" not in (result.blocked_reason or ""):  # the reason may say it already
            click.echo(
                _(
                    "  'newsletter schedule approve {issue}' sends it as it is now; 'schedule cancel' drops it.",
                    issue=result.issue,
                )
            )
        return
    if result.status == "cancelled":
        click.echo(_("{issue}: the schedule was cancelled; nothing was sent.", issue=result.issue))
        return
    if result.status == "starting":
        click.echo(_("{issue}: its start was cut short before anything was sent; 'newsletter send {issue}' (or run-due) starts it again.", issue=result.issue))  # fmt: skip
        return
    click.echo(result.line)
    for address, reason in result.failures:
        click.echo(_("  failed {address}: {reason}", address=address, reason=reason))
    with database(state.settings().database) as conn:
        later = dict(conn.execute("SELECT kind, COUNT(*) FROM subscriber_events WHERE delivery = ? GROUP BY kind",
                                  (result.delivery,)).fetchall())  # fmt: skip
    if later:
        click.echo(
            _(
                "  reported afterwards (bounces fetch): bounced later: {hard:,}, delayed: {soft:,}, complaints: {complaint:,}",
                hard=later.get("hard", 0),
                soft=later.get("soft", 0),
                complaint=later.get("complaint", 0),
            )
        )


class _ScheduleGroup(click.Group):
    """'schedule ISSUE --at ...' as well as 'schedule list', 'approve' and 'cancel'."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["add", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=_ScheduleGroup)
def schedule() -> None:
    """Schedule an issue to be sent later; list, approve and cancel schedules.

    \b
      newsletter schedule ISSUE --at "2026-12-01 09:00" [--segment SEGMENT]
      newsletter schedule list
      newsletter schedule approve ISSUE [--at TIME] [--force]
      newsletter schedule cancel ISSUE
    Times are Oslo time unless a zone is given. 'newsletter run-due', run by cron every
    minute, sends what is due. A scheduled issue that changed, or that the check refuses when
    it is due, is blocked until it is approved again or cancelled.
    """


@schedule.command("add", hidden=True)
@click.argument("issue")
@click.option(
    "--at",
    "at",
    required=True,
    help="When: 'YYYY-MM-DD HH:MM' or 'DD.MM.YYYY kl. HH' in Oslo time, or ISO 8601 with a zone.",
)
@click.option("--segment", help="Who gets it (default: all confirmed subscribers at sending time).")
@click.option("--force", is_flag=True, help="Schedule even if 'newsletter check' finds errors.")
@click.pass_obj
def schedule_add(state: State, issue: str, at: str, segment: str | None, force: bool) -> None:
    """Schedule ISSUE for --at."""
    from .clock import oslo
    from .schedule import schedule as make_schedule

    made = make_schedule(state.settings_with_key(), issue, at, segment, force=force)
    _warn(made.warnings)
    click.echo(_("Scheduled {issue} for {time}.", issue=made.issue, time=oslo(made.at)))  # type: ignore[arg-type]
    click.echo(
        _(
            "It is sent at that time by 'newsletter run-due', which must run every minute (see the guide). If you edit the issue before then, it is held back until you approve it again."
        )
    )


@schedule.command("list")
@click.pass_obj
def schedule_list(state: State) -> None:
    """List scheduled, blocked and unfinished deliveries."""
    from .clock import oslo
    from .schedule import listing

    found = listing(state.settings())
    if not found:
        click.echo(_("Nothing scheduled."))
    for item in found:
        when = oslo(item.at) if item.at else _("now")
        line = f"{item.issue}  {word(item.status)}  {when}  {item.segment or _('all confirmed')}"
        click.echo(line + (f"  ({item.reason})" if item.reason else ""))


@schedule.command("approve")
@click.argument("issue")
@click.option("--at", "at", help="A new time (default: the one it was scheduled for; if past, the next run-due).")
@click.option("--force", is_flag=True, help="Approve even if 'newsletter check' finds errors.")
@click.pass_obj
def schedule_approve(state: State, issue: str, at: str | None, force: bool) -> None:
    """Schedule a blocked ISSUE again, as it is now (after an edit, or after fixing what the check found)."""
    from .clock import now, oslo
    from .schedule import approve

    made = approve(state.settings_with_key(), issue, at=at, force=force)
    _warn(made.warnings)
    if made.at and made.at <= now():
        click.echo(
            _("Approved {issue} as it is now; it is sent at the next run-due (its time has passed).", issue=made.issue)
        )
    else:
        click.echo(
            _("Approved {issue} as it is now; it is scheduled for {time}.", issue=made.issue, time=oslo(made.at))
        )  # type: ignore[arg-type]


@schedule.command("cancel")
@click.argument("issue")
@click.pass_obj
def schedule_cancel(state: State, issue: str) -> None:
    """Cancel the scheduled (or blocked) delivery of ISSUE, before it starts."""
    from .clock import oslo
    from .schedule import cancel

    done = cancel(state.settings(), issue)
    click.echo(
        _("Cancelled {issue} (was scheduled for {time}).", issue=done.issue, time=oslo(done.at) if done.at else "-")
    )


@cli.group()
def bounces() -> None:
    """Bounces and complaints that arrive after sending (see README: bounces.address)."""


@bounces.command("fetch")
@click.pass_obj
def bounces_fetch(state: State) -> None:
    """Read the bounce mailbox (bounces.mailbox) once: mark the subscribers whose addresses
    bounced, unsubscribe those who complained. Safe to run from cron every few minutes."""
    from .bounces import fetch

    settings = state.settings()  # the key only checks the bounce addresses: it is never made here
    with database(settings.database) as conn:
        result = fetch(settings, conn)
    click.echo(
        _(
            "Read {read:,} message(s): {hard:,} hard, {soft:,} soft, {complaint:,} complaint(s), about {subscribers:,} subscriber(s); {left:,} left in the mailbox (not reports).",
            read=result.read,
            hard=result.kinds.get("hard", 0),
            soft=result.kinds.get("soft", 0),
            complaint=result.kinds.get("complaint", 0),
            subscribers=result.subscribers,
            left=result.left,
        )
    )


@bounces.command("list")
@click.option("--since", metavar="YYYY-MM-DD", help="Only events from this day on.")
@click.pass_obj
def bounces_list(state: State, since: str | None) -> None:
    """List the bounces and complaints reported after sending, newest first."""
    from datetime import datetime, time

    from .bounces import events
    from .clock import OSLO, oslo_stamp, timestamp
    from .scaffold import parse_day

    start = timestamp(datetime.combine(parse_day(since), time(0), OSLO)) if since else None  # from midnight in Oslo
    with database(state.settings().database) as conn:
        found = events(conn, start)
    if not found:
        click.echo(_("No bounces or complaints reported."))
    for row in found:
        click.echo(f"{oslo_stamp(row['at'])}  {word(row['kind'])}  {row['email']}  {row['issue'] or '-'}  "
                   f"{row['status']}  {row['detail']}".rstrip())  # fmt: skip


@cli.group("db")
def db_group() -> None:
    """The database: SQLite (paths.database, the default) or PostgreSQL (NEWSLETTER_DATABASE_URL)."""


def _where(settings) -> str:
    """The database as people may see it: a PostgreSQL address without its password."""
    return str(settings.database)


def _sqlite_version(path: Path) -> int:
    """The schema version of an SQLite file, read without changing it (0: no file yet)."""
    if not path.is_file():
        return 0
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


@db_group.command("migrate")
@click.pass_obj
def db_migrate(state: State) -> None:
    """Bring the database to this program's schema (a new PostgreSQL database gets all of it)."""
    from .store import MIGRATIONS, connect, postgres_migrate

    settings = state.settings()
    if settings.postgres_url:
        before, now_ = postgres_migrate(settings.postgres_url)
    else:
        before = _sqlite_version(settings.database.file)
        connect(settings.database).close()  # migrates
        now_ = len(MIGRATIONS)
    click.echo(
        _("{where}: schema version {version} (was {before}).", where=_where(settings), version=now_, before=before)
    )


@db_group.command("copy")
@click.option("--to", "url", required=True, metavar="URL", help="The PostgreSQL database to copy into (empty).")
@click.pass_obj
def db_copy(state: State, url: str) -> None:
    """Copy the project's SQLite database into an empty PostgreSQL database, checking every
    table's rows and checksum on both sides; the SQLite file is only read."""
    from .store import copy_to_postgres

    settings = state.settings()
    done = copy_to_postgres(settings.database_file, url)
    for table, count, checksum in done:
        click.echo(f"{table:<24} {count:>10,}  {checksum[:16]}")
    click.echo(
        _(
            "Copied {tables} tables, {rows:,} rows, from {source}; the counts and checksums are equal on both sides.",
            tables=len(done),
            rows=sum(count for _table, count, _sum in done),
            source=settings.database_file,
        )
    )


@db_group.command("status")
@click.pass_obj
def db_status(state: State) -> None:
    """Which database this project uses, and whether its schema matches this program."""
    from .store import MIGRATIONS, postgres_version

    settings = state.settings()
    version = (
        postgres_version(settings.postgres_url) if settings.postgres_url else _sqlite_version(settings.database.file)
    )
    wanted = len(MIGRATIONS)
    state_ = (_("up to date") if version == wanted else _("behind: run 'newsletter db migrate'") if version < wanted
              else _("newer than this program: upgrade newsletter"))  # fmt: skip
    click.echo(_("{where}: schema version {version} of {wanted}, {state}.", where=_where(settings), version=version,
                 wanted=wanted, state=state_))  # fmt: skip
    if version > wanted:
        raise click.ClickException(_("the database is newer than this program; upgrade newsletter."))


@cli.command("run-due")
@click.pass_obj
def run_due_command(state: State) -> None:
    """Send the scheduled issues that are due and resume interrupted deliveries (for cron).

    Safe to run every minute: one run at a time, silent when there is nothing to do. Exits 1
    (so cron reports it) when a delivery was refused, blocked or failed; recipients waiting for
    a retry are reported and left to the next run, with exit 0.
    """
    from .schedule import run_due

    result = run_due(state.settings())
    _report_due(result)
    if result.problems:
        raise SystemExit(1)


def _report_due(result) -> None:
    """What a run-due (or a worker's round) did, and its problems on stderr."""
    for line in result.lines:
        click.echo(line, err=_is_warning(line))
    for problem in result.problems:
        click.echo(problem if problem.startswith("  ") else _("Error: {message}", message=problem), err=True)


@cli.command("worker")
@click.option(
    "--interval",
    type=DecimalComma(min=1.0),
    default=15.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between looks for deliveries that are due.",
)
@click.pass_obj
def worker_command(state: State, interval: float) -> None:
    """Keep sending, as a service (systemd): every --interval seconds, start the scheduled issues
    that are due and help send the deliveries that are running, beside other workers on this
    machine or on others that share the PostgreSQL database (each claims its own recipients).
    Ctrl-C or SIGTERM stops it after the messages in flight are recorded."""
    import signal
    import threading

    from .schedule import work

    settings = state.settings()
    stop = threading.Event()

    def graceful(signum, frame) -> None:
        stop.set()

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, graceful)
    click.echo(_("Worker started ({where}); it stops on Ctrl-C or SIGTERM.", where=settings.database), err=True)
    work(settings, stop, interval, _report_due)
    click.echo(_("Worker stopped."), err=True)


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default: paths.archive, build/archive).",
)
@click.option("--hide", metavar="ISSUE", help="Take a sent issue out of the archive (it stays stored), then write it.")
@click.option("--unhide", metavar="ISSUE", help="Put a hidden issue back, then write the archive.")
@click.option(
    "--add", "add_issue", metavar="ISSUE", help="Archive an issue sent before the archive existed, from its folder."
)
@click.option("--force", is_flag=True, help="With --add: archive the issue even if it has changed since it was sent.")
@click.pass_obj
def archive(
    state: State, out: Path | None, hide: str | None, unhide: str | None, add_issue: str | None, force: bool
) -> None:
    """Write the public web archive of sent issues: index.html (newest first, by year), one page
    per issue without personal parts, feed.xml (Atom) and sitemap.xml.

    Each issue's page is stored when its delivery starts, so the archive shows what was sent.
    'send' and 'run-due' update the archive themselves; 'serve' serves it at /archive/.
    """
    from .archive import add_sent_issue, set_hidden, shown_path, write_archive

    settings = state.settings()
    if sum(x is not None for x in (hide, unhide, add_issue)) > 1:
        raise click.UsageError(_("use one of --hide, --unhide and --add at a time."))
    if force and add_issue is None:
        raise click.UsageError(_("--force goes with --add."))
    if hide is not None or unhide is not None:
        issue_id, changed = set_hidden(settings, hide if hide is not None else unhide, hidden=hide is not None)
        if hide is not None:
            click.echo(
                _("{issue} is hidden from the archive.", issue=issue_id)
                if changed
                else _("{issue} was hidden already.", issue=issue_id)
            )
        else:
            click.echo(
                _("{issue} is back in the archive.", issue=issue_id)
                if changed
                else _("{issue} was not hidden.", issue=issue_id)
            )
    if add_issue is not None:
        click.echo(_("{issue} is stored in the archive.", issue=add_sent_issue(settings, add_issue, force)))
    result = write_archive(settings, out)
    click.echo(
        _(
            "Wrote the archive of {count} issue(s) to {folder}: index.html, feed.xml, sitemap.xml. Publish it at {url} (or run 'newsletter serve').",
            count=len(result.issues),
            folder=shown_path(result.out_dir),
            url=settings.archive_index_url(),
        )
    )


def _can_listen(host: str, port: int) -> None:
    """A one-line error now, rather than a server's log lines, when HOST:PORT cannot be used."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn binds it
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise click.ClickException(
            _("cannot listen on {host!r} ({strerror}); check --host.", host=host, strerror=os_reason(exc))
        ) from exc
    family, kind, proto, _canon, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    _(
                        "cannot listen on {host}:{port}: the port is in use; choose another with --port.",
                        host=host,
                        port=port,
                    )
                ) from exc
            raise click.ClickException(
                _(
                    "cannot listen on {host}:{port} ({strerror}); check --host.",
                    host=host,
                    port=port,
                    strerror=os_reason(exc),
                )
            ) from exc


def _machine_names() -> tuple[str, ...]:
    """This machine's host names and addresses, as colleagues on the network would type them."""
    import contextlib
    import socket

    names = {socket.gethostname(), socket.getfqdn()}
    with contextlib.suppress(OSError):  # a name that does not resolve: the names alone
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    return tuple(sorted(names))


def _url(host: str, port: int) -> str:
    """The address to open in a browser for a server listening on HOST:PORT."""
    import socket

    if host in ("127.0.0.1", "::1", "localhost"):
        host = "localhost"
    elif host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()  # listening everywhere: this machine's name reaches it
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


@cli.group()
def secret() -> None:
    """The key that signs the links in emails (NEWSLETTER_SECRET_KEY): status and rotation.

    Every unsubscribe, preferences and confirmation link in sent mail is signed with it. It is
    made once, in .env, by the first command that needs it; never replace it by hand: links in
    sent emails would stop working. Back .env up with newsletter.db.
    """


@secret.command("status")
@click.pass_obj
def secret_status(state: State) -> None:
    """Where the key comes from and its fingerprint (never the key), and the keys the project has used."""
    from .keys import status as key_status

    found = key_status(state.settings())
    if found.fingerprint:
        click.echo(
            _(
                "NEWSLETTER_SECRET_KEY: {source} (fingerprint {fingerprint})",
                source=found.source,
                fingerprint=found.fingerprint,
            )
        )
    else:
        click.echo(_("NEWSLETTER_SECRET_KEY: {source}", source=found.source))
    click.echo(_("Older keys kept for checking links (NEWSLETTER_OLD_SECRET_KEYS): {count}", count=found.old_keys))
    if found.known:
        click.echo(_("Keys this project has signed links with:"))
        for fingerprint, since, state_ in found.known:
            click.echo(
                _(
                    "  {fingerprint}  since {date}  {state}",
                    fingerprint=fingerprint,
                    date=since[:10],
                    state=word(state_),
                )
            )
    else:
        click.echo(_("This project has not signed any link yet."))
    if any(known[2] == "MISSING" for known in found.known):
        raise click.ClickException(
            _(
                "a key that signed links in sent emails is missing, so those links stop working; restore .env from your backup (or 'newsletter secret retire FINGERPRINT' to give them up on purpose)."
            )
        )


@secret.command("retire")
@click.argument("fingerprint")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def secret_retire(state: State, fingerprint: str, yes: bool) -> None:
    """Give up an old key (by FINGERPRINT, from 'secret status'): links signed with it stop working.

    Only for a key retired on purpose, long after a rotation: every unsubscribe link in emails
    signed with it stops working. Remove it from NEWSLETTER_OLD_SECRET_KEYS afterwards.
    """
    from .keys import retire

    if not yes:
        _confirm_or_stop(
            _("Unsubscribe links signed with {fingerprint} stop working. Retire it?", fingerprint=fingerprint)
        )
    retire(state.settings(), fingerprint)
    click.echo(
        _("Retired {fingerprint}: it may now be removed from NEWSLETTER_OLD_SECRET_KEYS.", fingerprint=fingerprint)
    )


@secret.command("rotate")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def secret_rotate(state: State, yes: bool) -> None:
    """Make a new signing key in .env, keeping the current one for checking links already sent.

    New emails are signed with the new key; links in emails sent before keep working, because
    the old keys move to NEWSLETTER_OLD_SECRET_KEYS. Use it when .env may have been seen by
    someone who should not have it. Copy the new .env to every machine that sends or serves.
    """
    from .keys import rotate

    settings = state.settings()
    if not yes:
        _confirm_or_stop(_("Make a new signing key in {file}?", file=settings.project_dir / ".env"))
    fingerprint, kept = rotate(settings)
    click.echo(
        _(
            "New NEWSLETTER_SECRET_KEY in {file} (fingerprint {fingerprint}).",
            file=settings.project_dir / ".env",
            fingerprint=fingerprint,
        )
    )
    click.echo(
        _(
            "{count} older key(s) kept in NEWSLETTER_OLD_SECRET_KEYS: links in emails already sent keep working.",
            count=kept,
        )
    )
    click.echo(_("Copy the new .env to every machine that sends or serves this newsletter, and back it up."))


def _members_file(settings: Settings) -> Path:
    if settings.emissions_members is None:
        raise ConfigError(_("newsletter.toml has no emissions.members: set it to the CSV of the region's members."))
    return settings.emissions_members


def main() -> None:
    """Console-script entry point."""
    # Start-up makes some 300,000 objects that live until the process ends (modules, classes,
    # settings); the cyclic collector walked them a dozen times while the stages were imported
    # and once more at exit (30 ms of a 250 ms build). Collect less often, and leave what exists
    # at exit alone (the process is ending; files are closed by then).
    gc.set_threshold(100_000, 10, 10)
    try:
        cli(prog_name="newsletter")
    finally:
        gc.freeze()
