"""Several senders on one delivery (issue 16): processes on one machine, or machines sharing
PostgreSQL, each claiming its own recipients; a killed one's recipients claimed again by the
others; the rate limits counted across all of them; 'newsletter worker' for systemd. Every
test here runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import SAMPLE_ISSUE, rows, serve_smtp

from newsletter import journal
from newsletter.config import load_settings
from newsletter.store import database

pytestmark = pytest.mark.backends  # each test on SQLite and on PostgreSQL


class Counter:
    """An SMTP handler that keeps only who got a message (5,000 messages of 50 KB stay out of memory)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.received: list[str] = []
        self.lock = threading.Lock()
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):
        import asyncio

        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.received.extend(envelope.rcpt_tos)
        return "250 OK"


def import_people(project, tmp_path, count: int) -> None:
    path = tmp_path / "people.csv"
    path.write_text("email\n" + "".join(f"p{n:05d}@example.no\n" for n in range(count)), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "newsletter", "subscribers", "import", str(path), "--confirmed"],
                          cwd=project, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def sender(project) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "newsletter", "send", "--yes"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_two_senders_on_5000_recipients_one_killed_mid_batch(project, monkeypatch, tmp_path, backend):
    """Two processes send one delivery; one is SIGKILLed while it has messages in flight. The
    other takes over its recipients at once: 0 lost, and only the killed one's messages in
    flight (at most one per connection) may arrive twice, each reported uncertain. 5,000
    recipients on PostgreSQL (the several-machines case); 1,000 on SQLite (one machine)."""
    count = 5000 if backend == "postgresql" else 1000
    counter, controller = serve_smtp(project, monkeypatch, Counter(delay=0.002))
    try:
        import_people(project, tmp_path, count)
        first = sender(project)
        wait_for(lambda: len(counter.received) >= count // 15)
        second = sender(project)
        settings = load_settings()

        def both_at_work() -> bool:
            with database(settings.database) as conn:
                return len(journal.senders(conn, 1)) == 2

        wait_for(both_at_work)
        wait_for(lambda: rows(project, "SELECT COUNT(*) FROM delivery_recipients WHERE status = 'sending'"
                                       " AND claimed_by LIKE ?", f"%:{first.pid}:%") != [(0,)])  # fmt: skip
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert len(counter.received) < count * 0.9  # killed mid-delivery
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
    finally:
        controller.stop()
    expected = {f"p{n:05d}@example.no" for n in range(count)}
    assert set(counter.received) == expected  # nobody lost, nobody else
    duplicates = len(counter.received) - len(expected)
    uncertain = rows(project, "SELECT COUNT(*) FROM delivery_recipients WHERE uncertain = 1")[0][0]
    assert duplicates <= uncertain <= int(settings.send_connections)  # one per connection of the killed one
    assert rows(project, "SELECT status FROM deliveries") == [("done",)]
    assert rows(project, "SELECT COUNT(*) FROM delivery_recipients WHERE status = 'sent'") == [(count,)]
    assert rows(project, "SELECT COUNT(*) FROM senders") == [(0,)]  # the killed one's record went with its work
    assert f"{count:,} sent" in out, out


def test_the_rate_limits_hold_across_senders(project):
    """Two connections (as two senders) take allowances from one budget: never more than the
    limit in any window of a second or an hour."""
    settings = load_settings()
    with database(settings.database) as one, database(settings.database) as two:
        assert journal.take_sends(one, 4, 5, 0) == (4, 0.0)
        granted, wait = journal.take_sends(two, 4, 5, 0)
        assert granted == 1 and wait == 0.0  # one left this second, whoever asks
        assert journal.take_sends(one, 4, 5, 0) == (0, 0.1)  # nothing left: ask again in a tenth
        assert journal.take_sends(two, 10, 0, 7)[0] == 2  # 5 went this hour, 7 allowed
        assert journal.take_sends(one, 10, 0, 7) == (0, 5.0)


def test_the_worker_sends_what_is_due_and_stops_on_sigterm(project, sink, run):
    from conftest import subscribe

    subscribe("a@example.no", "b@example.no")
    made = run("schedule", SAMPLE_ISSUE, "--at", "2030-01-15 09:00")
    assert made.exit_code == 0, made.output
    rows(project, "UPDATE deliveries SET scheduled_at = '2026-01-15T08:00:00Z'")  # its time has come
    worker = subprocess.Popen([sys.executable, "-m", "newsletter", "worker", "--interval", "1"], cwd=project,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: len(sink.messages) == 2, 60)
    wait_for(lambda: rows(project, "SELECT status FROM deliveries") == [("done",)], 30)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "2 sent" in out and "Worker stopped" in err, (out, err)
    assert sorted(sink.to()) == ["a@example.no", "b@example.no"]


def running(settings) -> int:
    """The sample issue's delivery to every confirmed subscriber, recorded and running."""
    from newsletter.build import prepare
    from newsletter.subscribers import parse_segment, recipients

    with database(settings.database) as conn, conn:
        delivery = journal.create(conn, SAMPLE_ISSUE, "", prepare(settings).fingerprint)
        journal.add_recipients(conn, delivery, recipients(conn, parse_segment(None, settings, ())))
        journal.start(conn, delivery, "outbox")
    return delivery


def test_claims_never_overlap_and_a_claim_never_takes_another_senders(project):
    """Two senders claim from one delivery at the same time, over and over: every recipient is
    claimed by exactly one of them; 'leaving' marks only one's own claims."""
    from conftest import subscribe

    ids = subscribe(*(f"c{n:03d}@example.no" for n in range(300)))
    settings = load_settings()
    delivery = running(settings)
    claimed: dict[str, list[int]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def claimer(name: str) -> None:
        with database(settings.database) as conn:
            start.wait()
            while jobs := journal.claim(conn, delivery, name, 7):
                claimed[name].extend(job[0] for job in jobs)
                time.sleep(0.002)  # the other gets its turns

    threads = [threading.Thread(target=claimer, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed["a"] + claimed["b"]) == sorted(ids)  # all claimed, none twice
    assert claimed["a"] and claimed["b"]  # both took part
    with database(settings.database) as conn, conn:
        assert journal.leaving(conn, delivery, "a", claimed["b"][:5]) == []  # not a's to hand over
        assert journal.leaving(conn, delivery, "a", claimed["a"][:5]) == claimed["a"][:5]
    assert rows(project, "SELECT COUNT(*) FROM delivery_recipients WHERE status = 'sending'") == [(5,)]


def test_a_delivery_being_sent_cannot_be_cancelled_or_finished_under_a_sender(project, sink, run):
    """A living sender's delivery is neither cancelled nor marked done under it; once it has
    died, its message in flight goes back as uncertain."""
    from conftest import assert_error, subscribe

    from newsletter.store import connect, exclusive

    subscribe("a@example.no", "b@example.no")
    settings = load_settings()
    running(settings)  # recorded and running, nothing sent yet
    holder = connect(settings.database)
    lock = exclusive(holder, journal.sender_lock("laptop:1:ab"))
    lock.__enter__()
    try:
        journal.register(holder, 1, "laptop:1:ab", "laptop", 1)
        with holder:
            holder.execute("UPDATE delivery_recipients SET claimed_by = 'laptop:1:ab', status = 'sending'"
                           " WHERE subscriber = 1")  # fmt: skip
            journal.finish(holder, 1)  # someone is in flight: not done
        assert rows(project, "SELECT status FROM deliveries") == [("running",)]
        assert_error(run("schedule", "cancel", SAMPLE_ISSUE), "is being sent right now by 1 sender(s)", "laptop")
    finally:
        lock.__exit__(None, None, None)  # the sender dies
        holder.close()
    # Dead now: its message in flight may have arrived, so it is pending again, uncertain, and
    # the delivery can no longer be cancelled (it can only be finished).
    assert_error(run("schedule", "cancel", SAMPLE_ISSUE), "messages have gone out")
    assert rows(project, "SELECT status, uncertain, claimed_by FROM delivery_recipients WHERE subscriber = 1") == [
        ("pending", 1, None)
    ]
    assert rows(project, "SELECT COUNT(*) FROM senders") == [(0,)]


def test_the_shared_budget_is_never_overspent_by_senders_at_once(project):
    settings = load_settings()
    granted: list[int] = []

    def taker() -> None:
        with database(settings.database) as conn:
            for _ in range(10):
                granted.append(journal.take_sends(conn, 3, 0, 50)[0])

    threads = [threading.Thread(target=taker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 50  # 120 asked for, 50 allowed this hour, whoever asked


def test_a_connection_process_killed_stops_the_send_and_the_next_send_resends_its_message(
    project, monkeypatch, tmp_path, backend
):
    """A send's own connection process dies (SIGKILL, the OOM killer): the others go on, and
    once half a second passes without an outcome (at the latest when they run out of work) the
    send stops with one line; the next send resends what was in flight, flagged uncertain.
    Nobody is lost."""
    import os

    handler, controller = serve_smtp(project, monkeypatch, handler=Counter(delay=0.3))
    try:
        import_people(project, tmp_path, 40)
        first = sender(project)

        def children() -> list[int]:
            found = []
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open(f"/proc/{entry}/stat") as handle:
                            fields = handle.read().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    if int(fields[1]) == first.pid:
                        found.append(int(entry))
            return found

        wait_for(lambda: len(handler.received) >= 4 and len(children()) >= 2)
        os.kill(children()[0], signal.SIGKILL)
        out, err = first.communicate(timeout=60)
        assert first.returncode == 1 and "a sending process stopped unexpectedly" in err, (out, err)
        second = sender(project)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, (out, err)
        people = {f"p{n:05d}@example.no" for n in range(40)}
        assert set(handler.received) == people  # nobody lost
        doubled = len(handler.received) - len(people)
        assert doubled <= 1  # at most the one in flight, twice, and then flagged uncertain
        assert rows(project, "SELECT COUNT(*) FROM delivery_recipients WHERE uncertain = 1")[0][0] >= doubled
        assert rows(project, "SELECT COUNT(*) FROM delivery_recipients WHERE status = 'sent'") == [(40,)]
    finally:
        controller.stop()
