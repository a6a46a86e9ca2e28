"""The durable record of Storage Commitment requests whose result is not yet delivered.

A request is answered ``0x0000`` only after it is written here as durably as a received
instance (:mod:`dicom_node._durable`: a flushed temporary file renamed to
``<Transaction UID>.json``, then the directory fsynced), so that a restart between the
N-ACTION response and the N-EVENT-REPORT (PS3.4 J.3.2, J.3.3) does not lose it: at the next
start every file left here is reported again, on a new association. A file goes once its
result was delivered or given up (and the directory is fsynced, so that it does not come
back after a power cut).

Why files and not a database row: :mod:`dicom_node` imports nothing of the project (no
database), and these records are few and short-lived; a file next to the spool, written with
the same helpers, gives the same guarantee as a C-STORE Success. Transaction UIDs are checked
as UIDs (digits and dots, PS3.5 9.1) before they become file names, so they cannot leave the
directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from dicom_node._durable import fsync_directory, replace_durably
from dicom_node.commitment import Reference

__all__ = ["CommitmentJournal", "PendingCommitment"]

logger = logging.getLogger(__name__)

_SUFFIX = ".json"


@dataclass(frozen=True)
class PendingCommitment:
    """One accepted request: who asked, the transaction and its instances.

    Attributes
    ----------
    transaction_uid : str
        Transaction UID (0008,1195) of the N-ACTION.
    requester : str
        The requester's calling AE title, which names its address for a new association.
    references : tuple of Reference
        The instances, in the request's order.
    """

    transaction_uid: str
    requester: str
    references: tuple[Reference, ...]

    def to_json(self) -> bytes:
        """The record as stored."""
        return json.dumps(
            {
                "transaction_uid": self.transaction_uid,
                "requester": self.requester,
                "references": [[r.sop_class_uid, r.sop_instance_uid] for r in self.references],
            }
        ).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> PendingCommitment:
        """Read a stored record back."""
        record = json.loads(data)
        return cls(
            str(record["transaction_uid"]),
            str(record["requester"]),
            tuple(Reference(str(c), str(i)) for c, i in record["references"]),
        )


class CommitmentJournal:
    """A directory of pending Storage Commitment requests, one durable file each.

    Parameters
    ----------
    root : pathlib.Path
        The directory; created (and its parent fsynced) if needed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            fsync_directory(self.root.parent)

    def record(self, pending: PendingCommitment) -> None:
        """Write one request durably; a request re-sent with the same Transaction UID replaces it.

        Raises
        ------
        OSError
            When it could not be written or flushed (then it is not recorded).
        """
        replace_durably(self._path(pending.transaction_uid), pending.to_json())
        fsync_directory(self.root)

    def forget(self, transaction_uid: str) -> None:
        """Remove a request whose result was delivered or given up (an error is logged, not raised)."""
        try:
            self._path(transaction_uid).unlink(missing_ok=True)
            fsync_directory(self.root)
        except OSError as exc:
            logger.error("could not remove pending storage commitment %s: %s", transaction_uid, exc)

    def pending(self) -> list[PendingCommitment]:
        """Every recorded request, oldest first; an unreadable file is logged and left for an operator."""
        found: list[PendingCommitment] = []
        for path in sorted(self.root.glob(f"*{_SUFFIX}"), key=lambda p: p.stat().st_mtime):
            try:
                found.append(PendingCommitment.from_json(path.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.error("pending storage commitment %s cannot be read, left in place: %s", path.name, exc)
        return found

    def _path(self, transaction_uid: str) -> Path:
        return self.root / f"{transaction_uid}{_SUFFIX}"
