"""Writers never starve the public pages, and nothing is lost when the database is busy: real
processes (an import, a send), a real server, and a writer that holds the database on purpose."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from conftest import KEY, LiveServer, assert_error, rows, solved, subscribe, write

from newsletter.config import load_settings
from newsletter.store import database
from newsletter.subscribers import make_token, set_status
from newsletter.web import create_app


def big_list(path, count: int, changed: dict[str, str] | None = None):
    """A subscriber list of ``count`` new people, and name changes for some who are on the list."""
    lines = ["e-post;navn"] + [f"ny{n:06d}@example.no;Ny Person {n}" for n in range(count)]
    lines += [f"{email};{name}" for email, name in (changed or {}).items()]
    write(path, "\n".join(lines) + "\n")
    return path


@pytest.fixture
def keyed(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setenv("NEWSLETTER_WEB_CHALLENGE_WORK", "20")  # the signups' proof of work, in milliseconds
    return project


class HeldDatabase:
    """Another program writing: holds the database's write lock until released."""

    def __init__(self, path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def test_a_killed_import_is_undone_and_keeps_what_others_changed_meanwhile(keyed, tmp_path):
    ids = subscribe(*(f"gammel{n}@example.no" for n in range(5)))
    before = rows(keyed, "SELECT * FROM subscribers ORDER BY id")
    changed = {f"gammel{n}@example.no": f"Nytt Navn {n}" for n in range(5)}
    path = big_list(tmp_path / "stor.csv", 30_000, changed)
    process = subprocess.Popen([sys.executable, "-m", "newsletter", "subscribers", "import", str(path), "--confirmed"],
                               cwd=keyed, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if rows(keyed, "SELECT COUNT(*) FROM import_undo")[0][0] > 3_000:
                break
        except sqlite3.OperationalError:
            pass  # the table is made by the first command's migration
        time.sleep(0.02)
    with database(load_settings().database) as conn:  # someone leaves while the import is halfway
        set_status(conn, ids[0], "unsubscribed")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert rows(keyed, "SELECT state FROM imports") == [("applying",)]
    counted = subprocess.run([sys.executable, "-m", "newsletter", "subscribers", "count"], cwd=keyed,
                             env={**os.environ}, capture_output=True, text=True)  # fmt: skip
    assert counted.returncode == 0, counted.stderr
    assert "confirmed 4" in counted.stdout and "unsubscribed 1" in counted.stdout  # the import is gone
    assert rows(keyed, "SELECT state FROM imports") == [("undone",)]
    after = rows(keyed, "SELECT * FROM subscribers ORDER BY id")
    assert after[1:] == before[1:]  # as they were
    assert rows(keyed, "SELECT status FROM subscribers WHERE id = ?", ids[0]) == [("unsubscribed",)]  # stays gone


def test_an_import_keeps_nobody_waiting_to_unsubscribe(keyed, tmp_path):
    """During a long import, one-click unsubscribes are answered within a second each and all kept:
    the import writes in short steps and gives way to them."""
    ids = subscribe(*(f"leser{n}@example.no" for n in range(40)))
    path = big_list(tmp_path / "stor.csv", 25_000)
    settings = load_settings()
    with LiveServer(create_app(settings)) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        process = subprocess.Popen([sys.executable, "-m", "newsletter", "subscribers", "import", str(path)],
                                   cwd=keyed, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        while process.poll() is None and not rows(keyed, "SELECT 1 FROM sqlite_master WHERE name = 'import_undo'"):
            time.sleep(0.02)
        while process.poll() is None and not rows(keyed, "SELECT 1 FROM import_undo LIMIT 1"):
            time.sleep(0.02)
        waits = []
        for subscriber in ids:
            started = time.monotonic()
            token = make_token(settings, subscriber, "unsubscribe")
            answer = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
            assert answer.status_code == 200
            waits.append(time.monotonic() - started)
            if process.poll() is not None:
                break
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert b"Added 25,000" in out
    assert len(waits) >= 10 and max(waits) < 1.0, waits  # most of them while the import ran
    with database(settings.database) as conn:
        from newsletter.subscribers import settle

        settle(conn)
    assert rows(keyed, "SELECT COUNT(*) FROM subscribers WHERE status = 'unsubscribed'") == [(len(waits),)]


def test_a_one_click_unsubscribe_is_kept_when_the_database_is_busy(keyed):
    (kari,) = subscribe("kari@example.no")
    token = make_token(load_settings(), kari, "unsubscribe")
    with LiveServer(create_app(load_settings())) as live:
        held = HeldDatabase(keyed / "newsletter.db")
        try:
            started = time.monotonic()
            answer = httpx.post(f"{live.url}/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=30)
            assert answer.status_code == 200 and time.monotonic() - started < 5
            assert (keyed / "newsletter.db.unsubscribes").is_file()  # durable beside the database ...
        finally:
            held.release()
    assert rows(keyed, "SELECT status FROM subscribers") == [("confirmed",)]  # ... not in it yet
    listed = subprocess.run([sys.executable, "-m", "newsletter", "subscribers", "list"], cwd=keyed,
                            env={**os.environ}, capture_output=True, text=True)  # fmt: skip
    assert "kari@example.no  unsubscribed" in listed.stdout  # applied before the list was read
    assert not (keyed / "newsletter.db.unsubscribes").exists()


def test_a_send_applies_kept_unsubscribes_before_it_reads_the_list(keyed, run):
    from conftest import load_sample_data

    load_sample_data(keyed)
    ids = subscribe("a@example.no", "b@example.no")
    with LiveServer(create_app(load_settings())) as live:
        held = HeldDatabase(keyed / "newsletter.db")
        try:
            token = make_token(load_settings(), ids[1], "unsubscribe")
            assert (
                httpx.post(f"{live.url}/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
            )
        finally:
            held.release()
    result = run("send", "--yes")
    assert result.exit_code == 0 and "-> 1 recipient(s)" in result.stdout
    assert rows(keyed, "SELECT email FROM delivery_recipients") == [("a@example.no",)]


def test_a_signup_is_not_answered_as_done_when_it_could_not_be_stored(keyed, monkeypatch):
    import newsletter.web as web

    monkeypatch.setattr(web, "SIGNUP_WAIT", 0.5)  # the wait is short in the test, the same path
    with LiveServer(create_app(load_settings())) as live, httpx.Client(base_url=live.url) as client:
        page = client.get("/signup").text
        token = page.split('name="csrf" value="')[1].split('"')[0]
        held = HeldDatabase(keyed / "newsletter.db")
        try:
            answer = client.post("/signup", data={"csrf": token, "email": "ny@example.no", "altcha": solved(client)})
        finally:
            held.release()
    assert answer.status_code == 503 and "Prøv igjen om et minutt" in answer.text
    assert rows(keyed, "SELECT COUNT(*) FROM subscribers") == [(0,)]


def test_a_busy_database_is_one_line_for_a_command(keyed, run, monkeypatch):
    import newsletter.store as store

    subscribe("kari@example.no")
    monkeypatch.setattr(store, "BUSY_SECONDS", 0.3)  # a command waits 30 s; the test does not
    held = HeldDatabase(keyed / "newsletter.db")
    try:
        line = assert_error(run("subscribers", "remove", "kari@example.no"), "newsletter.db", "is busy")
        assert "try again in a minute" in line
    finally:
        held.release()
    assert rows(keyed, "SELECT status FROM subscribers") == [("confirmed",)]


def test_a_send_waits_for_an_import_being_applied(keyed, run, tmp_path):
    from conftest import load_sample_data

    load_sample_data(keyed)
    subscribe("a@example.no")
    path = big_list(tmp_path / "stor.csv", 30_000)
    process = subprocess.Popen([sys.executable, "-m", "newsletter", "subscribers", "import", str(path)], cwd=keyed,
                               env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        while not rows(keyed, "SELECT name FROM sqlite_master WHERE name = 'imports'") or not rows(
            keyed, "SELECT 1 FROM import_undo LIMIT 1"
        ):
            time.sleep(0.02)
        assert_error(run("send", "--yes"), "a subscriber import is running", "try again in a minute")
    finally:
        process.communicate(timeout=120)
    assert rows(keyed, "SELECT COUNT(*) FROM deliveries") == [(0,)]


def test_an_unsubscribe_is_answered_whatever_fails_behind_it(keyed, monkeypatch):
    """Neither the database (busy) nor the file beside it (a failure) takes it: the caller is told
    at once, never left waiting, and the next one works again."""
    import newsletter.subscribers as subscribers_module
    from newsletter.errors import ProjectError
    from newsletter.subscribers import Unsubscriber

    (kari,) = subscribe("kari@example.no")
    settings = load_settings()
    writer = Unsubscriber(settings.database, wait=0.3)

    def failing(*args):  # fault injection: no file can be written either
        raise ProjectError("the lock folder cannot be made")

    monkeypatch.setattr(subscribers_module, "record_unsubscribe", failing)
    held = HeldDatabase(keyed / "newsletter.db")
    try:
        started = time.monotonic()
        with pytest.raises(ProjectError):
            writer.unsubscribe(kari)
        assert time.monotonic() - started < 10
    finally:
        held.release()
    monkeypatch.undo()
    writer.unsubscribe(kari)
    assert rows(keyed, "SELECT status FROM subscribers") == [("unsubscribed",)]


def test_an_unsubscribe_kept_aside_does_not_undo_a_later_confirmation(keyed):
    from newsletter.subscribers import record_unsubscribe, settle

    (kari,) = subscribe("kari@example.no")
    settings = load_settings()
    record_unsubscribe(settings.database, kari)  # while the database was busy ...
    time.sleep(1.1)
    with database(settings.database) as conn, conn:  # ... then they came back and confirmed again
        conn.execute("UPDATE subscribers SET confirmed_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+1 second')")
    with database(settings.database) as conn:
        settle(conn)
    assert rows(keyed, "SELECT status FROM subscribers") == [("confirmed",)]
    assert not (keyed / "newsletter.db.unsubscribes").exists()


def test_two_signups_of_one_new_address_at_once_make_one_subscriber(keyed):
    import concurrent.futures

    with LiveServer(create_app(load_settings(), rate_limit=(100, 600))) as live:

        def sign_up(_: int) -> int:
            with httpx.Client(base_url=live.url) as client:
                page = client.get("/signup").text
                token = page.split('name="csrf" value="')[1].split('"')[0]
                return client.post(
                    "/signup", data={"csrf": token, "email": "ny@example.no", "altcha": solved(client)}
                ).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(sign_up, range(8)))
    assert answers == [200] * 8
    assert rows(keyed, "SELECT COUNT(*) FROM subscribers") == [(1,)]
