"""A ``multipart/related`` request body (RFC 2387, RFC 2046 5.1), read as it streams in, part by part to disk.

A STOW-RS request (PS3.18 10.5.1) may carry a whole series: hundreds of megabytes.  It is never
held in memory: :class:`PartWriter` takes the body in the chunks it arrives in and writes each
body part to its own temporary file, returning every part as soon as its closing delimiter has
arrived, so that the caller stores it while the next one streams in.  Only the bytes that might
be the start of a delimiter are kept between two chunks.

A body part is its header fields, an empty line and its content; delimiters are ``CRLF--boundary``
(the first one may open the body without the CRLF), and ``--boundary--`` closes the body.  What
comes before the first delimiter (the preamble) and after the last (the epilogue) is ignored.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "DICOM_MEDIA_TYPE",
    "MultipartError",
    "Part",
    "PartWriter",
    "STOW_INCOMING",
    "UnsupportedMediaType",
    "ABANDONED_AFTER_S",
    "related_boundary",
    "remove_abandoned_parts",
]

#: The media type of a DICOM instance in a STOW-RS request (PS3.18 8.7.3.1, a Part 10 file).
DICOM_MEDIA_TYPE = "application/dicom"
#: The folder under the data directory where request bodies are written part by part.
STOW_INCOMING = "stow-incoming"
#: A part file not written to for this long belongs to no request any more (its process ended while
#: writing it): a request in progress writes its open part at least every few seconds.
ABANDONED_AFTER_S = 3600.0
#: Longest header block of one part: a few fields are expected, never kilobytes.
MAX_HEADER_BYTES = 16 * 2**10
#: Longest line after a delimiter (its transport padding, RFC 2046 5.1.1).
_MAX_PADDING = 1024
_CRLF = b"\r\n"
#: Longest boundary accepted: RFC 2046 5.1.1 allows 70 characters, but senders exceed it (Orthanc's
#: DICOMweb plugin writes two UUIDs, 73), and a longer one costs nothing.
MAX_BOUNDARY = 256


class MultipartError(ValueError):
    """The body is not the multipart/related body its Content-Type announces (a 400 in HTTP)."""


class UnsupportedMediaType(ValueError):
    """The request is not ``multipart/related`` of DICOM instances (a 415 in HTTP)."""


def related_boundary(content_type: str | None) -> str:
    """The boundary of a ``multipart/related; type="application/dicom"`` Content-Type (PS3.18 10.5.1.2).

    Raises
    ------
    UnsupportedMediaType
        Another media type, or a ``type`` parameter other than ``application/dicom`` (the
        metadata-and-bulk-data forms of STOW-RS are not supported).
    MultipartError
        No boundary, or one longer than :data:`MAX_BOUNDARY` characters.
    """
    message = Message()
    message["content-type"] = content_type or ""
    if not content_type or message.get_content_type() != "multipart/related":
        raise UnsupportedMediaType(
            f"the request is {content_type or 'without a Content-Type'}; send multipart/related; "
            f'type="{DICOM_MEDIA_TYPE}" (PS3.18 10.5.1.2)'
        )
    kind = message.get_param("type")
    if kind is not None and str(kind).strip().lower() != DICOM_MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"multipart/related of {kind} is not supported; only {DICOM_MEDIA_TYPE} instances are stored"
        )
    boundary = message.get_boundary()
    if not boundary or len(boundary) > MAX_BOUNDARY:
        raise MultipartError(f"the multipart/related Content-Type has no boundary of 1 to {MAX_BOUNDARY} characters")
    return boundary


@dataclass(frozen=True)
class Part:
    """One body part, complete on disk.

    Attributes
    ----------
    number : int
        Its position in the body, from 1.
    content_type : str or None
        The media type of its Content-Type, lower case and without parameters; None without one.
    path : pathlib.Path
        The temporary file holding its content (the caller removes it).
    size : int
        Bytes of content.
    """

    number: int
    content_type: str | None
    path: Path
    size: int


def remove_abandoned_parts(folder: Path, older_than_s: float = ABANDONED_AFTER_S) -> int:
    """Remove the part files a process left behind when it ended mid-request; how many.

    Only files not modified for ``older_than_s``: another API process on the same data
    directory may be writing its own parts right now.
    """
    removed = 0
    cutoff = time.time() - older_than_s
    for path in folder.glob(".stow-*.part"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


class PartWriter:
    """Writes the body parts of one multipart body to temporary files in ``folder`` as the body streams in.

    Blocking (file writes): call it from a worker thread.  :meth:`discard` removes the file of a
    part that was not completed; a completed part's file is the caller's.
    """

    def __init__(self, boundary: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._folder = folder
        self._delimiter = _CRLF + b"--" + boundary.encode("latin-1")
        # The first delimiter may open the body without a CRLF before it: supply one.
        self._buffer = bytearray(_CRLF)
        self._state = "preamble"
        self._count = 0
        self._content_type: str | None = None
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._size = 0

    @property
    def closed(self) -> bool:
        """True once the closing delimiter has arrived."""
        return self._state == "epilogue"

    def feed(self, data: bytes) -> list[Part]:
        """Take the next bytes of the body; the parts completed by them, in order.

        Raises
        ------
        MultipartError
            Bytes after a delimiter that are neither its padding nor the end of the body, or a
            part whose header block is longer than 16 KiB or has no empty line after it.
        """
        if self._state == "epilogue":
            return []
        self._buffer += data
        parts: list[Part] = []
        try:
            while True:
                step = getattr(self, f"_in_{self._state}")()
                if step is None:
                    return parts
                if isinstance(step, Part):
                    parts.append(step)
        except MultipartError:
            for part in parts:  # completed, but never handed out: nobody else would remove them
                part.path.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        """The body has ended: :class:`MultipartError` unless its closing delimiter arrived."""
        if self._state != "epilogue":
            raise MultipartError(
                f"the body ended before its closing boundary (after {self._count} part(s)): truncated request"
            )

    def discard(self) -> None:
        """Remove the file of a part still being written (the body broke off, or was refused)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def _in_preamble(self) -> bool | None:
        found = self._buffer.find(self._delimiter)
        if found < 0:
            del self._buffer[: max(0, len(self._buffer) - len(self._delimiter) + 1)]
            return None
        del self._buffer[: found + len(self._delimiter)]
        self._state = "delimiter"
        return True

    def _in_delimiter(self) -> bool | None:
        if len(self._buffer) < 2:
            return None
        if self._buffer.startswith(b"--"):
            self._buffer.clear()
            self._state = "epilogue"
            return None
        end = self._buffer.find(_CRLF)
        if end < 0:
            if len(self._buffer) > _MAX_PADDING:
                raise MultipartError("a boundary delimiter is followed by text instead of a line break")
            return None
        if self._buffer[:end].strip(b" \t"):
            raise MultipartError("a boundary delimiter is followed by text instead of a line break")
        del self._buffer[: end + 2]
        self._state = "headers"
        return True

    def _in_headers(self) -> bool | None:
        if self._buffer.startswith(_CRLF):
            block, rest = b"", 2
        else:
            end = self._buffer.find(_CRLF + _CRLF)
            if end < 0:
                if len(self._buffer) > MAX_HEADER_BYTES:
                    raise MultipartError(
                        f"part {self._count + 1} has a header block longer than {MAX_HEADER_BYTES} bytes"
                    )
                return None
            block, rest = bytes(self._buffer[:end]), end + 4
        if len(block) > MAX_HEADER_BYTES:
            raise MultipartError(f"part {self._count + 1} has a header block longer than {MAX_HEADER_BYTES} bytes")
        del self._buffer[:rest]
        self._content_type = _content_type(block)
        fd, name = tempfile.mkstemp(dir=self._folder, prefix=".stow-", suffix=".part")
        self._file, self._path, self._size = os.fdopen(fd, "wb"), Path(name), 0
        self._state = "content"
        return True

    def _in_content(self) -> Part | bool | None:
        assert self._file is not None and self._path is not None
        found = self._buffer.find(self._delimiter)
        if found < 0:
            keep = len(self._delimiter) - 1
            if len(self._buffer) > keep:
                self._write(len(self._buffer) - keep)
            return None
        self._write(found)
        del self._buffer[: len(self._delimiter)]
        self._file.close()
        self._count += 1
        part = Part(self._count, self._content_type, self._path, self._size)
        self._file, self._path = None, None
        self._state = "delimiter"
        return part

    def _write(self, count: int) -> None:
        """Move the first ``count`` buffered bytes into the open part's file."""
        assert self._file is not None
        self._file.write(self._buffer[:count])
        self._size += count
        del self._buffer[:count]

    def _in_epilogue(self) -> None:
        return None


def _content_type(block: bytes) -> str | None:
    """The media type of a part's Content-Type field, if it has one (header names are case-insensitive)."""
    for line in block.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "content-type":
            message = Message()
            message["content-type"] = value.strip()
            return message.get_content_type()
    return None
