"""Making a received file durable: its data, then its directory entry, with a group commit of the latter.

What Success of a C-STORE means here (PS3.4 B.2.3, the SCP has taken
responsibility for the instance): before the response is sent,

1. the file's bytes and the metadata needed to read them back (size, block
   allocation) are on stable storage: :func:`flush_file`, ``fdatasync(2)``
   where the platform has it. ``fdatasync`` leaves out only metadata that is
   not needed to read the data (access and modification times); for a file
   just written, its size and blocks are flushed as by ``fsync``, so it is as
   safe for this purpose, and on other file systems than ext4 it can be
   cheaper;
2. the file has been renamed to its final name, and the directory holding
   that name has been fsynced by a call that *started after the rename*
   (:meth:`DirectorySync.sync`), so the name survives a power cut.

The directory fsync is shared: when several associations rename files into
one directory (one series arriving over parallel associations) while an
fsync of that directory is running, they wait for that one to end and then
one of them runs the next fsync, which covers all of their renames (a group
commit, as databases do for their log). Each waits for an fsync that started
after its own rename, never for one already running, and each learns that
fsync's outcome: a failure reaches every file it was meant to cover.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DirectorySync", "flush_file", "fsync_directory", "replace_durably"]


def flush_file(fd: int) -> None:
    """Put a file's data and the metadata needed to read it on stable storage (``fdatasync``, else ``fsync``)."""
    sync = getattr(os, "fdatasync", None) or os.fsync
    sync(fd)


def fsync_directory(directory: Path) -> None:
    """Flush a directory, so that names created or removed in it survive a crash (POSIX)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(target: Path, data: bytes, temp_suffix: str = ".part") -> None:
    """Put ``data`` at ``target`` through a flushed temporary file and an atomic rename (step 1 and the rename).

    The temporary file is made next to ``target`` (a hidden name ending in ``temp_suffix``), written,
    flushed with :func:`flush_file` and renamed over ``target`` with :func:`os.replace`, so that a
    reader or a crash sees the old content or the new one, never a part. The directory is not
    flushed here: the caller runs :func:`fsync_directory` or a shared :meth:`DirectorySync.sync`
    after it, and only then may it say the file is safe.

    Raises
    ------
    OSError
        When any step fails; the temporary file is removed first.
    """
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=temp_suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            flush_file(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


@dataclass
class _Directory:
    """Group-commit state of one directory."""

    started: int = 0
    finished: int = 0
    running: bool = False
    waiting: dict[int, int] = field(default_factory=dict)
    """How many writers wait for each generation (the fsync that must cover them)."""
    failures: dict[int, OSError] = field(default_factory=dict)
    """Errors of generations someone still waits for."""


class DirectorySync:
    """Directory fsyncs shared by the writers that need them at the same time.

    Parameters
    ----------
    fsync : callable, optional
        Flushes one directory; :func:`fsync_directory` by default (tests inject
        one that blocks or fails).

    Notes
    -----
    Thread-safe. The state of a directory is dropped as soon as nobody waits
    for it, so the object does not grow with the number of directories.
    """

    def __init__(self, fsync: Callable[[Path], None] = fsync_directory) -> None:
        self._fsync = fsync
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._directories: dict[Path, _Directory] = {}

    def sync(self, directory: Path) -> None:
        """Return once an fsync of ``directory`` that started after this call has completed.

        Raises
        ------
        OSError
            The error of that fsync, when it failed.
        """
        with self._changed:
            state = self._directories.setdefault(directory, _Directory())
            # A running fsync may have started before the caller's rename: only the next one counts.
            needed = state.started + 1
            state.waiting[needed] = state.waiting.get(needed, 0) + 1
            try:
                while state.finished < needed:
                    if state.running:
                        self._changed.wait()
                        continue
                    self._run(directory, state)
                failure = state.failures.get(needed)
            finally:
                state.waiting[needed] -= 1
                if state.waiting[needed] == 0:
                    del state.waiting[needed]
                    state.failures.pop(needed, None)
                if not state.waiting and not state.running:
                    del self._directories[directory]
        if failure is not None:
            raise failure

    def _run(self, directory: Path, state: _Directory) -> None:
        """Run the next fsync of ``directory`` (called and returning with the lock held)."""
        state.running = True
        state.started += 1
        generation = state.started
        self._lock.release()
        failure: OSError | None = None
        try:
            self._fsync(directory)
        except Exception as exc:  # noqa: BLE001 - every writer it was to cover must learn it failed
            failure = exc if isinstance(exc, OSError) else OSError(f"directory fsync failed: {exc!r}")
        finally:
            self._lock.acquire()
            state.running = False
            state.finished = generation
            if failure is not None:
                state.failures[generation] = failure
            self._changed.notify_all()
