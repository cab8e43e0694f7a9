"""The command line. The only module that imports click: parse, load settings, call one function, print."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import click

from . import __version__
from .build import build_issue
from .config import Settings, load_settings
from .content import display
from .errors import NewsletterError
from .scaffold import init_project, new_issue


@dataclass
class State:
    """Options of the group, shared with every command."""

    project: Path | None = None
    verbose: bool = False

    def settings(self, **overrides: object) -> Settings:
        return load_settings(self.project, overrides)


class _Group(click.Group):
    """Turns NewsletterError into 'Error: ...' and exit 1; tracebacks only with --verbose."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            state = ctx.find_object(State)
            if state is not None and state.verbose:
                traceback.print_exc()
            raise click.ClickException(str(exc)) from exc


def _warn(messages: tuple[str, ...] | list[str]) -> None:
    for message in messages:
        click.echo(f"Warning: {message}", err=True)


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

    Start with 'newsletter build' in a project folder (one with newsletter.toml) to build
    the newest issue into build/<issue>/.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    ctx.obj = State(project=project, verbose=verbose)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="Nyhetsbrev", show_default=True, help="The newsletter's name.")
def init(directory: Path, name: str) -> None:
    """Create a new, working newsletter project in DIRECTORY.

    Writes newsletter.toml, .env.example, the templates and one example issue. Refuses to
    touch a folder that already holds a project.
    """
    created = init_project(directory, name)
    click.echo(f"Created a newsletter project in {display(directory)}:")
    for path in created:
        click.echo(f"  {display(path)}")
    click.echo(f"Next: edit {display(directory / 'newsletter.toml')}, then run 'newsletter build' there.")


@cli.command()
@click.argument("title")
@click.option(
    "--date", "when", type=click.DateTime(formats=["%Y-%m-%d"]), help="Issue date, YYYY-MM-DD (default: today)."
)
@click.option("--lang", type=click.Choice(["nb", "en"]), help="Edition language (default: the project's).")
@click.pass_obj
def new(state: State, title: str, when: object, lang: str | None) -> None:
    """Create a new issue folder content/issues/<YYYY-MM>-<slug>/ for TITLE.

    It holds issue.md (front matter and introduction) and one example article to copy.
    """
    day = when.date() if when is not None else date.today()  # type: ignore[attr-defined]
    folder = new_issue(state.settings(), title, day, lang)
    click.echo(f"Created {display(folder)}")
    click.echo(f"  {display(folder / 'issue.md')}  (title, subject, preheader, date; introduction)")
    click.echo(f"  {display(folder / '01-sak.md')}  (an example article)")
    click.echo(f"Build it with: newsletter build {folder.name}")


@cli.command()
@click.argument("issue", required=False)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (default: build/<issue>).")
@click.pass_obj
def build(state: State, issue: str | None, out: Path | None) -> None:
    """Build ISSUE (default: the newest) into email.mjml, email.html, email.txt and message.eml.

    ISSUE is a folder name under content/issues (or a unique part of it, or a path).
    message.eml is addressed to a placeholder recipient so it can be opened in a mail program.
    """
    result = build_issue(state.settings(), issue, out)
    click.echo(f"Built {result.issue_id}:")
    for path in result.files:
        click.echo(f"  {display(path)}")
    click.echo(f"HTML size: {result.html_bytes / 1024:.1f} KB (Gmail clips above 102 KB)")
    _warn(result.warnings)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="newsletter")
