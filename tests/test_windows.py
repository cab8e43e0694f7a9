"""Staff laptops run Windows: the staff commands work where POSIX-only modules are missing.

Windows itself cannot run here, so each command runs in a Python where what Windows lacks is made
unavailable (fcntl, termios, pwd, grp, resource, os.fork, the 'fork' start method, the right to make
symbolic links) and what it
has instead is present: an ``msvcrt.locking`` that behaves as Windows' does (a lock per open
handle, refused at once with EACCES when taken, let go when the process ends), built on flock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from conftest import SAMPLE_ISSUE, free_port, rows

WINDOWS = r"""
import os, sys, types, multiprocessing, fcntl as _flock
import subprocess, asyncio, getpass  # they choose their Windows parts by whether msvcrt imports: not ours
msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_UNLCK, msvcrt.LK_LOCK, msvcrt.LK_NBLCK, msvcrt.LK_RLCK, msvcrt.LK_NBRLCK = 0, 1, 2, 3, 4
def locking(fd, mode, nbytes):
    if mode == msvcrt.LK_UNLCK:
        _flock.flock(fd, _flock.LOCK_UN)
        return
    try:
        _flock.flock(fd, _flock.LOCK_EX | _flock.LOCK_NB)
    except BlockingIOError:
        raise PermissionError(13, "Permission denied") from None
msvcrt.locking = locking
sys.modules["msvcrt"] = msvcrt
for name in ("fcntl", "termios", "tty", "pty", "pwd", "grp", "resource", "syslog", "posixpath_only"):
    sys.modules[name] = None
for name in ("fork", "forkpty", "register_at_fork", "getuid", "geteuid", "setsid", "killpg"):
    if hasattr(os, name):
        delattr(os, name)
multiprocessing.get_all_start_methods = lambda: ["spawn"]
def _no_links(*args, **kwargs):  # making a link takes a right staff accounts lack (WinError 1314)
    raise OSError(22, "A required privilege is not held by the client")
os.symlink = _no_links
"""

RUN = (
    WINDOWS
    + r"""
from newsletter.cli import main
import newsletter.locks
assert newsletter.locks.fcntl is None  # the Windows way of locking is the one in use
main()
"""
)


def windows(project, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEWSLETTER_LANG": "en"}
    return subprocess.run(
        [sys.executable, "-c", RUN, *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_staff_commands_run_without_posix_modules(project, sink, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SENDING_CONNECTIONS", "3")  # several connections: threads, not forks
    steps = [
        ("new", "Vindu", "--date", "2026-12-20"),
        ("feeds", "fetch"),
        ("feeds", "list", SAMPLE_ISSUE),
        ("emissions", "summary"),
        ("subscribers", "import", "data/abonnenter-eksempel.csv", "--confirmed"),
        ("subscribers", "list"),
        ("build", SAMPLE_ISSUE),
        ("check", SAMPLE_ISSUE),
        ("send", SAMPLE_ISSUE, "--test", "meg@example.no"),
        ("send", SAMPLE_ISSUE, "--yes"),
        ("status", SAMPLE_ISSUE),
        ("archive",),
    ]
    for step in steps:
        done = windows(project, *step)
        assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr
    people = rows(project, "SELECT COUNT(*) FROM subscribers WHERE status = 'confirmed'")[0][0]
    delivered = [m for m in sink.parsed() if "[TEST]" not in m["Subject"]]
    assert people >= 10 and len(delivered) == people  # everyone once, through three connections
    archive = project / "build" / "archive"
    assert (archive / SAMPLE_ISSUE / "index.html").is_file() and not archive.is_symlink()  # renamed into place


def test_the_preview_runs_without_posix_modules(project):
    port = free_port()
    env = {**os.environ, "NEWSLETTER_LANG": "en"}
    server = subprocess.Popen(
        [sys.executable, "-c", RUN, "preview", "--port", str(port)], cwd=project, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        page = None
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    page = answer.read().decode()
                break
            except OSError:
                if server.poll() is not None:
                    break
                time.sleep(0.1)
        assert page is not None, server.communicate(timeout=10)
        assert SAMPLE_ISSUE in page
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_locks_exclude_each_other_the_windows_way(project):
    holder = WINDOWS + (
        "from newsletter import locks\nimport sys, time\n"
        "with locks.hold(__import__('pathlib').Path('build'), 'delivery-x'):\n"
        "    print('held', flush=True)\n    sys.stdin.readline()\n"
    )
    other = WINDOWS + (
        "from newsletter import locks\nfrom newsletter.errors import BusyError\nimport pathlib\n"
        "try:\n    with locks.hold(pathlib.Path('build'), 'delivery-x'):\n        print('taken')\n"
        "except BusyError as exc:\n    print('busy:', exc)\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", holder], cwd=project, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout.readline().strip() == "held"
        refused = subprocess.run([sys.executable, "-c", other], cwd=project, capture_output=True, text=True)
        assert refused.stdout.startswith("busy: delivery-x is in use by another run"), refused.stdout + refused.stderr
    finally:
        first.communicate("\n", timeout=20)
    after = subprocess.run([sys.executable, "-c", other], cwd=project, capture_output=True, text=True)
    assert after.stdout.strip() == "taken", after.stdout + after.stderr  # let go when the holder ended
