"""Files admins change while the server runs (eligibility rules, report destinations).

An edit must never stop the server.  Writes are atomic and checked: the content goes to a
temporary file next to the target, is flushed to disk, read back and parsed by the parser the
readers use, compared with what was validated, and only then renamed over the file (the
directory is flushed too), so what is stored is exactly what was validated.

Readers keep a copy of the last content that parsed next to the file (``NAME.last-good``).
When the file is broken later (edited badly by hand, truncated, unreadable), they keep using
that copy, across restarts, and say why; the first read of the file as it is now replaces the
copy again.  ``NAME.lock`` serialises the writers of one file across processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

__all__ = ["AdminFile", "Loaded", "refuse_control_characters"]

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

#: Where a value in force comes from: the file, its last good copy, or neither (built-in defaults).
Source = Literal["file", "last good copy", "none"]


def refuse_control_characters(value: str) -> str:
    """``value`` unchanged; ``ValueError`` when it holds a control character or a lone surrogate.

    Control characters (Unicode category Cc: line breaks, NUL, escape, DEL ...) have no place
    in an AE title, a host or a DICOM code string, and would let one value rewrite the
    structure of the file it is stored in.
    """
    for index, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"control character U+{ord(char):04X} at position {index} of {value[:40]!r}")
    return value


def _difference(stored: BaseModel, expected: BaseModel) -> str:
    """What differs between two values of one model, field by field."""
    fields = [
        f"{name} would be {getattr(stored, name)!r}, not {getattr(expected, name)!r}"
        for name in type(expected).model_fields
        if getattr(stored, name) != getattr(expected, name)
    ]
    return "; ".join(fields)


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """What a read found.

    Attributes
    ----------
    value : T or None
        The value in force; None when neither the file nor a usable last good copy exists.
    source : {"file", "last good copy", "none"}
        Where ``value`` comes from.
    error : str or None
        Why the file itself is not in force (None when it is, or when there is no file).
    fingerprint : str or None
        SHA-256 of the rejected content (or of the error when the file cannot be read): one
        broken version of the file is reported once, not at every read.
    """

    value: T | None
    source: Source
    error: str | None = None
    fingerprint: str | None = None


class AdminFile(Generic[T]):
    """One admin-editable file, parsed by ``parse`` into a pydantic model (``ValueError`` saying why not).

    Parameters
    ----------
    path : pathlib.Path
        The file.
    parse : callable
        Bytes of the file to its value; ``ValueError`` (pydantic's ``ValidationError`` is
        one) when the content is not acceptable.
    """

    def __init__(self, path: Path, parse: Callable[[bytes], T]) -> None:
        self.path = path
        self._parse = parse

    @property
    def last_good(self) -> Path:
        """The copy of the last content that parsed."""
        return self.path.with_name(self.path.name + ".last-good")

    def load(self) -> Loaded[T]:
        """The file's value, or its last good copy's when the file is broken (never raises)."""
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            return Loaded(None, "none")
        except OSError as exc:
            error = f"{self.path} cannot be read: {exc.strerror or exc}"
            return self._fall_back(error, hashlib.sha256(error.encode()).hexdigest())
        try:
            value = self._parse(content)
        except ValueError as exc:
            return self._fall_back(f"{self.path} is invalid: {exc}", hashlib.sha256(content).hexdigest())
        self._keep_as_last_good(content)
        return Loaded(value, "file")

    def save(self, content: bytes, expected: T) -> None:
        """Store ``content`` as the file, if it reads back as ``expected``; else ``ValueError``, file unchanged."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            tmp = self._write_temporary(content)
            try:
                stored = self._parse(tmp.read_bytes())
                if stored != expected:
                    raise ValueError(f"the file would not read back as validated: {_difference(stored, expected)}")
                self._install(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._store_last_good(content)

    def _fall_back(self, error: str, fingerprint: str) -> Loaded[T]:
        try:
            kept = self._parse(self.last_good.read_bytes())
        except FileNotFoundError:
            return Loaded(None, "none", f"{error}; there is no earlier valid version", fingerprint)
        except (OSError, ValueError) as exc:
            return Loaded(None, "none", f"{error}; its last good copy is unusable too: {exc}", fingerprint)
        return Loaded(kept, "last good copy", error, fingerprint)

    def _keep_as_last_good(self, content: bytes) -> None:
        """Make ``content`` (just parsed from the file) the last good copy, unless it is already."""
        try:
            if self.last_good.read_bytes() == content:
                return
        except OSError:
            pass  # no copy yet, or an unreadable one: write it
        try:
            with self._locked():
                if self.path.read_bytes() == content:  # not replaced by a writer meanwhile
                    self._store_last_good(content)
        except OSError as exc:
            logger.warning("last good copy not updated: %s", exc.strerror, extra={"file": str(self.path)})

    def _store_last_good(self, content: bytes) -> None:
        """With the lock held: ``content`` becomes the last good copy (a full or read-only disk leaves it stale)."""
        try:
            self._install(self._write_temporary(content), self.last_good)
        except OSError as exc:
            logger.warning("last good copy not updated: %s", exc.strerror, extra={"file": str(self.path)})

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self.path.with_name(self.path.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write_temporary(self, content: bytes) -> Path:
        """``content`` in a new file next to the target, flushed to disk."""
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)

    @staticmethod
    def _install(tmp: Path, target: Path) -> None:
        """Rename ``tmp`` over ``target`` and flush the directory entry."""
        os.replace(tmp, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
