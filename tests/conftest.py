"""Shared fixtures: a copy of the sample project in a temporary folder, and a CLI runner."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_ISSUE = "2026-12-ordforererklaeringen"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite tests/golden/ from the current build instead of comparing with it.",
    )


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
        if name.startswith("NEWSLETTER_"):
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

    def __init__(self, app) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
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
