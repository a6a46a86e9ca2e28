"""Durable, de-duplicating storage of received instances.

Each accepted instance is written as a DICOM Part 10 file (PS3.10 Section 7)
to ``root/<Study Instance UID>/<Series Instance UID>/<SOP Instance UID>.dcm``.
The UIDs have been checked against PS3.5 Section 9.1 (digits and dots only)
before they become path components, so they cannot escape ``root``.

Writes are durable before the caller acknowledges the C-STORE (PS3.4 Annex
B.2.3: Success means the SCP has taken responsibility for the instance): the
bytes go to a temporary file in the target directory, the file is flushed and
fdatasynced, renamed over the final name with :func:`os.replace` (atomic on POSIX)
and the directory is fsynced, by an fsync that started after the rename, so that
the new name survives a power cut. Writers into one directory at the same time
share that directory fsync (a group commit, :mod:`dicom_node._durable`); when it
fails, each of them removes its file and is refused ``0xA700``.

A SOP Instance UID names one instance for ever (PS3.5 Section 9). One that
arrives again is kept once when its content is the same (a re-send), and is
refused with ``0xC111`` (*Cannot understand*, the SOP Instance UID in use) when its content differs:
the stored file is never replaced and the new one never lies next to it
unindexed. The reason names both identities, so that the refusal can be
audited. The owner's ``admit`` hook refuses, before anything is written, what
only it can see: for example the same UID already stored in another series.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from dicom_node._durable import DirectorySync, fsync_directory, replace_durably
from dicom_node.header import InstanceHeader
from dicom_node.statuses import CANNOT_UNDERSTAND, DUPLICATE_SOP_INSTANCE, OUT_OF_RESOURCES
from dicom_node.validation import InvalidInstance, parse_instance, validate_dataset

__all__ = [
    "DEFAULT_MIN_FREE_BYTES",
    "Admission",
    "OutOfResources",
    "Spool",
    "StoredInstance",
    "conflicting_instance",
    "describe_identity",
    "elsewhere",
]

logger = logging.getLogger(__name__)

DEFAULT_MIN_FREE_BYTES: int = 512 * 1024 * 1024
"""Free space the spool keeps on its file system: 512 MiB."""

_PART10_PREFIX = b"DICM"
_PREAMBLE_LENGTH = 128
_LOCK_STRIPES = 64
_TEMP_SUFFIX = ".part"
#: Lock stripes shared by every spool of the process: the SCP's and the STOW-RS route's spools of
#: one directory are separate objects, and one SOP Instance UID must still be written once.
_LOCKS = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))
#: The directory fsyncs of every spool of the process, shared by writers into one directory at once.
_DIRECTORY_SYNC = DirectorySync()


#: The owner's admission check: raises :class:`~dicom_node.validation.InvalidInstance` to refuse.
Admission = Callable[[InstanceHeader], None]

#: Header fields that may differ between two encodings of one instance (PS3.5 Section 10).
_ENCODING_FIELDS = frozenset({"transfer_syntax_uid", "specific_character_set"})


def describe_identity(header: InstanceHeader) -> dict[str, str | None]:
    """Patient, study and series of an instance, for an audited refusal (never for logs)."""
    return {
        "patient_id": header.patient_id,
        "issuer_of_patient_id": header.issuer_of_patient_id,
        "patient_name": header.patient_name,
        "patient_birth_date": header.patient_birth_date,
        "study_instance_uid": header.study_instance_uid,
        "series_instance_uid": header.series_instance_uid,
        "sop_class_uid": header.sop_class_uid,
    }


def conflicting_instance(what: str, stored: InstanceHeader, received: InstanceHeader) -> InvalidInstance:
    """The refusal of a SOP Instance UID that is already in use for other content (``0xC111``).

    The reason starts with the attribute and the conflict in words (what fits the 64 characters
    of the Error Comment) and names the two series by UID, without patient data, since reasons
    are logged; ``detail`` carries both identities for the audit trail.
    """
    return InvalidInstance(
        f"SOP Instance UID (0008,0018) in use: {what}; stored in series {stored.series_instance_uid}, "
        f"received in series {received.series_instance_uid}",
        DUPLICATE_SOP_INSTANCE,
        detail={"stored": describe_identity(stored), "received": describe_identity(received)},
    )


def elsewhere(stored: InstanceHeader, received: InstanceHeader) -> InvalidInstance | None:
    """The refusal of an instance whose SOP Instance UID is already stored in another series or study.

    ``stored`` is the header of what is stored under that UID; None when it is in the same place
    (then its content decides, as for any duplicate).
    """
    if stored.series_instance_uid != received.series_instance_uid:
        return conflicting_instance("already stored in another series", stored, received)
    if stored.study_instance_uid != received.study_instance_uid:
        return conflicting_instance("already stored in another study", stored, received)
    return None


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
    admit : callable, optional
        Called with the header of every valid instance before it is written;
        raises :class:`~dicom_node.validation.InvalidInstance` to refuse it.

    Notes
    -----
    Thread-safe: stores of the same SOP Instance UID are serialised (across every spool of
    the process), so concurrent senders of one instance write it once.
    """

    def __init__(
        self, root: Path, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES, admit: Admission | None = None
    ) -> None:
        if min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must be >= 0, got {min_free_bytes}")
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self.admit = admit
        self.root.mkdir(parents=True, exist_ok=True)

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
            Also when ``admit`` refuses it, or when its SOP Instance UID is
            stored with other content (``0xC111``).
        OutOfResources
            When free space would drop below ``min_free_bytes`` or the write
            fails (ENOSPC, EDQUOT, EIO ...). No partial or temporary file
            remains.
        """
        if len(encoded) < _PREAMBLE_LENGTH + 4 or encoded[_PREAMBLE_LENGTH : _PREAMBLE_LENGTH + 4] != _PART10_PREFIX:
            raise InvalidInstance(
                "File Meta Information has no 'DICM' prefix: not a DICOM Part 10 stream (PS3.10 7.1)",
                CANNOT_UNDERSTAND,
            )
        ds, header = parse_instance(encoded)
        meta = ds.file_meta
        validate_dataset(
            ds,
            request_sop_class_uid=meta.get("MediaStorageSOPClassUID"),
            request_sop_instance_uid=meta.get("MediaStorageSOPInstanceUID"),
        )
        if self.admit is not None:
            self.admit(header)
        return self._write(header, ds, encoded)

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
                f"File {Path(path).name} cannot be read: {exc.strerror or exc}",
                CANNOT_UNDERSTAND,
            ) from exc
        if data[_PREAMBLE_LENGTH : _PREAMBLE_LENGTH + 4] == _PART10_PREFIX:
            return self.store(data)
        return self.store(_with_file_meta(data))

    def _lock_for(self, sop_uid: str) -> threading.Lock:
        """Return the lock stripe that serialises writes of one SOP Instance UID."""
        return _LOCKS[zlib.crc32(sop_uid.encode("ascii")) % _LOCK_STRIPES]

    def discard(self, stored: StoredInstance) -> None:
        """Remove a file this spool has just written and that its owner refused after all.

        The file is unlinked and its directory fsynced, so that no unindexed file with patient
        data is left behind; a duplicate (the file stored earlier) is never removed.
        """
        if stored.duplicate:
            raise ValueError("a duplicate points at the instance stored earlier; it is not discarded")
        with self._lock_for(str(stored.header.sop_instance_uid)):
            _remove_quietly(stored.path)
            fsync_directory(stored.path.parent)

    def _write(self, header: InstanceHeader, ds: Dataset, encoded: bytes) -> StoredInstance:
        """Write validated bytes to their final place, durably and at most once."""
        study = str(header.study_instance_uid)
        series = str(header.series_instance_uid)
        sop = str(header.sop_instance_uid)
        target = self.path_for(study, series, sop)
        with self._lock_for(sop):
            if target.exists():
                _check_same_content(target, header, ds, encoded)
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
        """Temporary file, flush, fdatasync, atomic rename, directory fsync (shared); clean up on any OSError."""
        directory = target.parent
        try:
            self._make_directories(directory)
            replace_durably(target, encoded, _TEMP_SUFFIX)
        except OSError as exc:
            raise OutOfResources(f"could not write {target.name}: {_describe(exc)}") from exc
        try:
            _DIRECTORY_SYNC.sync(directory)
        except OSError as exc:
            # The name may or may not have reached the disk: it goes, so that what is there was answered Success.
            _remove_quietly(target)
            try:
                fsync_directory(directory)
            except OSError:
                logger.error("could not flush %s after removing %s", directory, target.name)
            raise OutOfResources(f"could not flush the directory of {target.name}: {_describe(exc)}") from exc

    def _make_directories(self, directory: Path) -> None:
        """Create the study and series directories, fsyncing each parent that gained an entry."""
        missing: list[Path] = []
        current = directory
        while not current.exists() and current != self.root:
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            fsync_directory(path.parent)


def _check_same_content(stored_path: Path, header: InstanceHeader, ds: Dataset, encoded: bytes) -> None:
    """Raise ``0xC111`` unless ``encoded`` is the instance already stored at ``stored_path``.

    The same bytes are the same instance. Otherwise the two must agree on every attribute
    routing and analysis read (the :class:`~dicom_node.header.InstanceHeader`, apart from the
    encoding) and on their pixels: a sender may re-encode an instance (another transfer syntax,
    PS3.5 Section 10) or add attributes of its own, but not change whose it is or what it shows.
    """
    try:
        stored_bytes = stored_path.read_bytes()
    except OSError as exc:
        raise OutOfResources(f"cannot read the stored {stored_path.name}: {_describe(exc)}") from exc
    if stored_bytes == encoded:
        return
    stored_ds, stored_header = parse_instance(stored_bytes)
    changed = [
        f.name
        for f in fields(InstanceHeader)
        if f.name not in _ENCODING_FIELDS and getattr(stored_header, f.name) != getattr(header, f.name)
    ]
    if changed:
        raise conflicting_instance(f"other content ({', '.join(changed)} differ)", stored_header, header)
    if not _same_pixels(stored_ds, ds):
        raise conflicting_instance("other content (pixel data differ)", stored_header, header)
    logger.info("SOP Instance UID %s sent again in another encoding; the stored copy is kept", header.sop_instance_uid)


def _same_pixels(stored: Dataset, received: Dataset) -> bool:
    """Pixel Data (7FE0,0010) equal as encoded in one transfer syntax, else as decoded values."""
    stored_elem, received_elem = stored.get_item(0x7FE00010), received.get_item(0x7FE00010)
    if stored_elem is None or received_elem is None:
        return stored_elem is None and received_elem is None
    if stored.file_meta.get("TransferSyntaxUID") == received.file_meta.get("TransferSyntaxUID"):
        return bool(stored_elem.value == received_elem.value)
    try:
        return bool(np.array_equal(stored.pixel_array, received.pixel_array))
    except Exception as exc:  # noqa: BLE001 - pixels that cannot be decoded cannot be shown equal
        logger.info("pixel data of a re-sent instance could not be compared: %s", type(exc).__name__)
        return False


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
            "Transfer Syntax UID (0002,0010) cannot be determined: no file meta information and "
            "encapsulated Pixel Data (PS3.5 A.4)",
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
