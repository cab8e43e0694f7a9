"""Lock files in build/.locks/: one holder at a time, released by the OS when the holder dies.

One place for every lock: a delivery per issue, run-due, the archive writer. A forked sending
process lets go of its parent's locks (``release_inherited``), so that only the process that
took a lock holds it, and a killed sender never leaves one behind.

On Linux and macOS the locks are ``flock`` locks; on Windows, where there is no ``fcntl``,
``msvcrt.locking`` byte-range locks, which the OS also releases when the holder dies. Windows
has no shared mode there, so an ``urgent`` write takes the lock alone: urgent writes then take
turns among themselves (they are short), and a long job still gives way to them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from .errors import BusyError, ProjectError
from .language import _, os_reason

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

_HELD: set[int] = set()  # file descriptors of the lock files this process holds
_POLL = 0.05  # seconds between tries where the OS cannot wait for a lock (msvcrt)


def _lock(handle: IO[str], *, shared: bool = False, wait: bool = True) -> bool:
    """Lock an open lock file; False when someone else holds it and ``wait`` is off."""
    if fcntl is not None:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True
    while True:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # the first byte stands for the file
            return True
        except OSError:
            if not wait:
                return False
            time.sleep(_POLL)


def _unlock(handle: IO[str]) -> None:
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


def folder(build_dir: Path) -> Path:
    """Where the lock files live."""
    return build_dir / ".locks"


@contextmanager
def hold(build_dir: Path, name: str, *, wait: bool = False, busy: str = "") -> Iterator[None]:
    """Hold the lock ``name`` for the block. Without ``wait``, a lock someone else holds raises
    BusyError(``busy``) at once; with it, the call waits its turn."""
    place = folder(build_dir)
    try:
        place.mkdir(parents=True, exist_ok=True)
        handle = (place / f"{name}.lock").open("a+")
    except OSError as exc:
        raise ProjectError(
            _(
                "cannot make the lock file in {place} ({strerror}); check the folder.",
                place=place,
                strerror=os_reason(exc),
            )
        ) from exc
    with handle:
        if not _lock(handle, wait=wait):
            raise BusyError(busy or _("{name} is in use by another run; wait for it to finish.", name=name))
        _HELD.add(handle.fileno())
        try:
            yield
        finally:
            _HELD.discard(handle.fileno())
            _unlock(handle)


@contextmanager
def urgent(folder_: Path, name: str) -> Iterator[None]:
    """A short write that must not wait for a long job (an unsubscribe, a signup): many may hold
    this at once; a long job gives way to them between its steps (``give_way``). SQLite's own
    lock is not fair: without this, a writer that commits and begins again at once can keep a
    waiting one out for seconds."""
    place = folder(folder_)
    place.mkdir(parents=True, exist_ok=True)
    with (place / f"{name}.lock").open("a+") as handle:
        _lock(handle, shared=True)
        try:
            yield
        finally:
            _unlock(handle)


def give_way(folder_: Path, name: str) -> None:
    """Between the steps of a long job: wait until no ``urgent`` write is waiting or at work."""
    place = folder(folder_)
    place.mkdir(parents=True, exist_ok=True)
    with (place / f"{name}.lock").open("a+") as handle:
        _lock(handle)
        _unlock(handle)


def release_inherited() -> None:
    """In a forked child: close the lock files inherited from the parent (the parent keeps them)."""
    for fd in list(_HELD):
        with suppress(OSError):
            os.close(fd)
    _HELD.clear()
