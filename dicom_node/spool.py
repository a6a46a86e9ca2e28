"""Durable, de-duplicating storage of received instances.

Each accepted instance is written as a DICOM Part 10 file (PS3.10 Section 7)
to ``root/<Study Instance UID>/<Series Instance UID>/<SOP Instance UID>.dcm``.
The UIDs have been checked against PS3.5 Section 9.1 (digits and dots only)
before they become path components, so they cannot escape ``root``.

Writes are durable before the caller acknowledges the C-STORE (PS3.4 Annex
B.2.3: Success means the SCP has taken responsibility for the instance): the
bytes go to a temporary file in the target directory, the file is flushed and
fsynced, renamed over the final name with :func:`os.replace` (atomic on POSIX)
and the directory is fsynced so that the new name survives a power cut.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from dicom_node.header import InstanceHeader
from dicom_node.statuses import CANNOT_UNDERSTAND, OUT_OF_RESOURCES
from dicom_node.validation import InvalidInstance, parse_instance, validate_dataset

__all__ = ["DEFAULT_MIN_FREE_BYTES", "OutOfResources", "Spool", "StoredInstance"]

logger = logging.getLogger(__name__)

DEFAULT_MIN_FREE_BYTES: int = 512 * 1024 * 1024
"""Free space the spool keeps on its file system: 512 MiB."""

_PART10_PREFIX = b"DICM"
_PREAMBLE_LENGTH = 128
_LOCK_STRIPES = 64
_TEMP_SUFFIX = ".part"


class OutOfResources(Exception):
    """The spool cannot take the instance: disk full, quota, I/O error.

    An SCP answers it with ``0xA700`` *Refused: Out of Resources*
    (PS3.4 Annex B.2.3).

    Parameters
    ----------
    reason : str
        What ran out, for logs.

    Attributes
    ----------
    reason : str
        As given.
    status : int
        ``0xA700``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = OUT_OF_RESOURCES


@dataclass(frozen=True)
class StoredInstance:
    """An instance that is safely on disk.

    Attributes
    ----------
    header : InstanceHeader
        Summary of the received data set.
    path : pathlib.Path
        The Part 10 file in the spool.
    size : int
        Size of that file in bytes.
    duplicate : bool
        ``True`` when a file with this SOP Instance UID was already in the
        spool; it was kept as it was and not rewritten.
    """

    header: InstanceHeader
    path: Path
    size: int
    duplicate: bool


class Spool:
    """The on-disk store of received instances.

    Parameters
    ----------
    root : pathlib.Path
        Directory that holds ``<study>/<series>/<sop>.dcm``; created if needed.
    min_free_bytes : int, optional
        Refuse an instance (``0xA700``, PS3.4 Annex B.2.3) when storing it
        would leave less free space than this on the file system. Default
        512 MiB.

    Notes
    -----
    Thread-safe: stores of the same SOP Instance UID are serialised, so
    concurrent associations sending one instance write it once.
    """

    def __init__(self, root: Path, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES) -> None:
        if min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must be >= 0, got {min_free_bytes}")
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """Return where an instance is (or would be) stored.

        Parameters
        ----------
        study_uid, series_uid, sop_uid : str
            Valid UIDs (PS3.5 9.1).

        Returns
        -------
        pathlib.Path
            ``root/<study_uid>/<series_uid>/<sop_uid>.dcm``.
        """
        return self.root / study_uid / series_uid / f"{sop_uid}.dcm"

    def store(self, encoded: bytes) -> StoredInstance:
        """Validate one Part 10 stream and write it durably.

        Parameters
        ----------
        encoded : bytes
            Preamble, ``DICM`` prefix, file meta information and data set
            (PS3.10 7.1), as returned by pynetdicom's
            ``Event.encoded_dataset(include_meta=True)`` or read from a file.
            The bytes are stored unchanged.

        Returns
        -------
        StoredInstance
            Where it is; ``duplicate`` is ``True`` when the SOP Instance UID
            was already stored (the file is left as it was).

        Raises
        ------
        InvalidInstance
            When the stream is not Part 10, cannot be parsed or fails
            :func:`~dicom_node.validation.validate_dataset`; the SOP Class and
            Instance UIDs are checked against the Media Storage UIDs of the
            file meta information, which an SCP sets from the C-STORE request.
        OutOfResources
            When free space would drop below ``min_free_bytes`` or the write
            fails (ENOSPC, EDQUOT, EIO ...). No partial or temporary file
            remains.
        """
        if len(encoded) < _PREAMBLE_LENGTH + 4 or encoded[_PREAMBLE_LENGTH : _PREAMBLE_LENGTH + 4] != _PART10_PREFIX:
            raise InvalidInstance(
                "pydicom could not parse the data set: not a DICOM Part 10 stream (no 'DICM' prefix)",
                CANNOT_UNDERSTAND,
            )
        ds, header = parse_instance(encoded)
        meta = ds.file_meta
        validate_dataset(
            ds,
            request_sop_class_uid=meta.get("MediaStorageSOPClassUID"),
            request_sop_instance_uid=meta.get("MediaStorageSOPInstanceUID"),
        )
        return self._write(header, encoded)

    def store_file(self, path: Path) -> StoredInstance:
        """Import one file, as a folder import does, with the SCP's checks.

        Parameters
        ----------
        path : pathlib.Path
            A Part 10 file, or a bare data set without file meta information.
            A bare data set gets file meta information (PS3.10 7.1) with the
            uncompressed transfer syntax it parses with; its data elements are
            written unchanged.

        Returns
        -------
        StoredInstance
            As for :meth:`store`.

        Raises
        ------
        InvalidInstance
            Unreadable file, or as for :meth:`store`. A bare data set with
            encapsulated (compressed) pixel data is refused, as its transfer
            syntax cannot be known.
        OutOfResources
            As for :meth:`store`.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidInstance(
                f"pydicom could not parse the data set: cannot read {path}: {exc.strerror or exc}",
                CANNOT_UNDERSTAND,
            ) from exc
        if data[_PREAMBLE_LENGTH : _PREAMBLE_LENGTH + 4] == _PART10_PREFIX:
            return self.store(data)
        return self.store(_with_file_meta(data))

    def _lock_for(self, sop_uid: str) -> threading.Lock:
        """Return the lock stripe that serialises writes of one SOP Instance UID."""
        return self._locks[zlib.crc32(sop_uid.encode("ascii")) % _LOCK_STRIPES]

    def _write(self, header: InstanceHeader, encoded: bytes) -> StoredInstance:
        """Write validated bytes to their final place, durably and at most once."""
        study = str(header.study_instance_uid)
        series = str(header.series_instance_uid)
        sop = str(header.sop_instance_uid)
        target = self.path_for(study, series, sop)
        with self._lock_for(sop):
            if target.exists():
                logger.info("duplicate SOP Instance UID %s: already in the spool, not rewritten", sop)
                return StoredInstance(header, target, target.stat().st_size, duplicate=True)
            self._check_free_space(len(encoded))
            self._write_durably(target, encoded)
        return StoredInstance(header, target, len(encoded), duplicate=False)

    def _check_free_space(self, size: int) -> None:
        """Raise :class:`OutOfResources` if writing ``size`` bytes would go below the reserve."""
        try:
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            raise OutOfResources(f"cannot query free space of {self.root}: {_describe(exc)}") from exc
        if free - size < self.min_free_bytes:
            raise OutOfResources(
                f"spool file system has {free} bytes free; storing {size} bytes would leave less "
                f"than the reserve of {self.min_free_bytes} bytes"
            )

    def _write_durably(self, target: Path, encoded: bytes) -> None:
        """Temporary file, flush, fsync, atomic rename, directory fsync; clean up on any OSError."""
        directory = target.parent
        temp_name: str | None = None
        try:
            self._make_directories(directory)
            fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.stem}.", suffix=_TEMP_SUFFIX)
            with os.fdopen(fd, "wb") as handle:
                handle.write(encoded)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, target)
            temp_name = None
            _fsync_directory(directory)
        except OSError as exc:
            if temp_name is not None:
                _remove_quietly(Path(temp_name))
            raise OutOfResources(f"could not write {target.name}: {_describe(exc)}") from exc

    def _make_directories(self, directory: Path) -> None:
        """Create the study and series directories, fsyncing each parent that gained an entry."""
        missing: list[Path] = []
        current = directory
        while not current.exists() and current != self.root:
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk so a rename survives a crash (POSIX)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    """Delete a temporary file, logging (not raising) if that fails too."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.error("could not remove temporary file %s: %s", path, _describe(exc))


def _describe(exc: OSError) -> str:
    """Name an OSError by its errno symbol and message, e.g. ``ENOSPC: No space left on device``."""
    name = errno.errorcode.get(exc.errno, "OSError") if exc.errno is not None else "OSError"
    return f"{name}: {exc.strerror or exc}"


def _with_file_meta(data: bytes) -> bytes:
    """Give a bare data set file meta information (PS3.10 7.1) and return the Part 10 bytes.

    The transfer syntax is the uncompressed one pydicom parsed the data set
    with. The data set is validated first so that the Media Storage UIDs can
    be taken from it.
    """
    ds, header = parse_instance(data)
    validate_dataset(ds)
    if header.transfer_syntax_uid is None or _has_encapsulated_pixel_data(ds):
        raise InvalidInstance(
            "pydicom could not parse the data set: no file meta information and the transfer "
            "syntax cannot be determined (encapsulated pixel data)",
            CANNOT_UNDERSTAND,
        )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(header.sop_class_uid))
    meta.MediaStorageSOPInstanceUID = UID(str(header.sop_instance_uid))
    meta.TransferSyntaxUID = UID(header.transfer_syntax_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _has_encapsulated_pixel_data(ds: Dataset) -> bool:
    """Tell whether Pixel Data (7FE0,0010) has undefined length, i.e. is encapsulated (PS3.5 A.4)."""
    raw = ds.get_item(0x7FE00010)
    return raw is not None and getattr(raw, "length", None) == 0xFFFFFFFF
