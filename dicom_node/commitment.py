"""Storage Commitment Push Model: what a request asks and what we answer (PS3.4 Annex J).

A modality that wants to know it may rely on us for an instance sends an N-ACTION
(Action Type ID 1, *Request Storage Commitment*, PS3.4 J.3.2) naming a Transaction UID and
the instances (Referenced SOP Sequence). :func:`parse_request` checks it against PS3.4
Table J.3-1 and refuses a malformed one with the N-ACTION status that says why (PS3.7 10.1.4.1.10
and Annex C). :func:`assess` decides, per instance, whether we hold it, and
:class:`CommitmentResult` is the N-EVENT-REPORT that tells the modality (PS3.4 J.3.3,
Table J.3-2): Event Type ID 1 when every instance is committed, 2 when failures exist.

An instance is committed only when we hold a durable copy of exactly that instance: the file
the spool wrote for its SOP Instance UID is on disk and its Media Storage SOP Class UID is the
class the request names. Otherwise it is a failure with its reason (PS3.4 J.3.3, Failure Reason
(0008,1197)): ``0x0112`` *No such object instance* when nothing is held under that UID (never
received, refused, or already removed by the retention policy), ``0x0119`` *Class-instance
conflict* when the instance is held under another SOP class, ``0x0110`` *Processing failure*
when it could not be checked (the index or the file could not be read).

Pure functions and plain data: the delivery (when and over which association) is in
:mod:`dicom_node.commitment_scp`, the durable record of pending requests in
:mod:`dicom_node.commitment_journal`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
)

from dicom_node.statuses import (
    CLASS_INSTANCE_CONFLICT,
    INVALID_ARGUMENT_VALUE,
    MISSING_ATTRIBUTE,
    NO_SUCH_ACTION_TYPE,
    NO_SUCH_OBJECT_INSTANCE,
    PROCESSING_FAILURE,
)

__all__ = [
    "ALL_COMMITTED",
    "COMMITMENT_TRANSFER_SYNTAXES",
    "FAILURES_EXIST",
    "REQUEST_STORAGE_COMMITMENT",
    "STORAGE_COMMITMENT_INSTANCE",
    "STORAGE_COMMITMENT_PUSH_MODEL",
    "CommitmentResult",
    "Failure",
    "Locator",
    "Reference",
    "RequestRefused",
    "assess",
    "parse_request",
]

logger = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL: UID = UID(StorageCommitmentPushModel)
"""Storage Commitment Push Model SOP Class (PS3.4 J.3)."""

STORAGE_COMMITMENT_INSTANCE: UID = UID(StorageCommitmentPushModelInstance)
"""Its well-known SOP Instance, the Requested and Affected SOP Instance UID of every message (PS3.4 J.3.5)."""

REQUEST_STORAGE_COMMITMENT: int = 1
"""N-ACTION Action Type ID *Request Storage Commitment* (PS3.4 J.3.2, Table J.3-1)."""

ALL_COMMITTED: int = 1
"""N-EVENT-REPORT Event Type ID: *Storage Commitment Request Successful* (PS3.4 J.3.3, Table J.3-2)."""

FAILURES_EXIST: int = 2
"""N-EVENT-REPORT Event Type ID: *Storage Commitment Request Complete - Failures Exist* (PS3.4 J.3.3)."""

COMMITMENT_TRANSFER_SYNTAXES: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
"""Transfer syntaxes of the Storage Commitment presentation contexts, the default one included (PS3.5 10.1)."""

_UID_MAX_LENGTH = 64

#: Finds the spool file of a SOP Instance UID (the owner's index), or None when none is held.
Locator = Callable[[str], Path | None]


class RequestRefused(Exception):
    """An N-ACTION that is answered with a failure status, and why (PS3.7 10.1.4.1.10, Annex C).

    Attributes
    ----------
    status : int
        The N-ACTION Status.
    reason : str
        What is wrong, attribute first (it becomes the Error Comment).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Reference:
    """One instance of a request: Referenced SOP Class and Instance UIDs (PS3.4 Table J.3-1)."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Failure:
    """An instance that is not committed, with its Failure Reason (0008,1197) (PS3.4 J.3.3)."""

    reference: Reference
    reason: int


@dataclass(frozen=True)
class CommitmentResult:
    """The answer to one request: committed instances and failures (PS3.4 J.3.3, Table J.3-2)."""

    transaction_uid: str
    committed: tuple[Reference, ...]
    failed: tuple[Failure, ...]

    @property
    def event_type_id(self) -> int:
        """1 when every instance is committed, else 2."""
        return FAILURES_EXIST if self.failed else ALL_COMMITTED

    def event_information(self) -> Dataset:
        """The N-EVENT-REPORT Event Information: Transaction UID, Referenced and Failed SOP Sequences.

        Referenced SOP Sequence is present only when something was committed, and Failed SOP
        Sequence only when something failed (PS3.4 Table J.3-2).
        """
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        if self.committed:
            ds.ReferencedSOPSequence = [_item(reference) for reference in self.committed]
        if self.failed:
            items = []
            for failure in self.failed:
                item = _item(failure.reference)
                item.FailureReason = failure.reason
                items.append(item)
            ds.FailedSOPSequence = items
        return ds


def _item(reference: Reference) -> Dataset:
    """One sequence item naming an instance by Referenced SOP Class and Instance UIDs."""
    item = Dataset()
    item.ReferencedSOPClassUID = reference.sop_class_uid
    item.ReferencedSOPInstanceUID = reference.sop_instance_uid
    return item


def _uid(value: object, attribute: str) -> str:
    """A present, valid UID (PS3.5 9.1), or the refusal that says which."""
    text = str(value or "").strip()
    if not text:
        raise RequestRefused(MISSING_ATTRIBUTE, f"{attribute} missing or empty (PS3.4 Table J.3-1)")
    if not UID(text).is_valid:
        raise RequestRefused(INVALID_ARGUMENT_VALUE, f"{attribute} {text[:_UID_MAX_LENGTH]!r} is not a valid UID")
    return text


def parse_request(
    action_type_id: int | None, requested_instance_uid: str, information: Callable[[], Dataset]
) -> tuple[str, tuple[Reference, ...]]:
    """Check an N-ACTION of the Storage Commitment Push Model and return what it asks.

    Parameters
    ----------
    action_type_id : int or None
        The request's Action Type ID (0000,1008).
    requested_instance_uid : str
        Its Requested SOP Instance UID (0000,1001).
    information : callable
        Returns the decoded Action Information; called only when the other checks passed
        (pydicom decodes lazily, so an undecodable data set raises on first use).

    Returns
    -------
    tuple
        The Transaction UID and the referenced instances, in the request's order.

    Raises
    ------
    RequestRefused
        ``0x0123`` for an Action Type ID other than 1; ``0x0112`` for another Requested SOP
        Instance than the well-known one; ``0x0120`` when Transaction UID (0008,1195),
        Referenced SOP Sequence (0008,1199) (or its items) or an item's Referenced SOP Class
        or Instance UID (0008,1150)/(0008,1155) is missing or empty; ``0x0115`` when one of
        those UIDs is invalid or the Action Information cannot be decoded.
    """
    if action_type_id != REQUEST_STORAGE_COMMITMENT:
        raise RequestRefused(
            NO_SUCH_ACTION_TYPE,
            f"Action Type ID {action_type_id} is not Request Storage Commitment (1, PS3.4 J.3.2)",
        )
    if str(requested_instance_uid or "").strip() != STORAGE_COMMITMENT_INSTANCE:
        raise RequestRefused(
            NO_SUCH_OBJECT_INSTANCE,
            f"Requested SOP Instance UID {requested_instance_uid!s:.64} is not {STORAGE_COMMITMENT_INSTANCE}",
        )
    try:
        ds = information()
        transaction = ds.get("TransactionUID")
        sequence = ds.get("ReferencedSOPSequence")
        items = list(sequence) if sequence is not None else None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on a broken data set
        raise RequestRefused(
            INVALID_ARGUMENT_VALUE, f"Action Information cannot be decoded: {type(exc).__name__}"
        ) from exc
    transaction_uid = _uid(transaction, "Transaction UID (0008,1195)")
    if not items:
        raise RequestRefused(
            MISSING_ATTRIBUTE, "Referenced SOP Sequence (0008,1199) missing or without items (PS3.4 Table J.3-1)"
        )
    references = []
    for number, item in enumerate(items, start=1):
        try:
            sop_class, sop_instance = item.get("ReferencedSOPClassUID"), item.get("ReferencedSOPInstanceUID")
        except Exception as exc:  # noqa: BLE001 - as above
            raise RequestRefused(
                INVALID_ARGUMENT_VALUE, f"Referenced SOP Sequence item {number} cannot be decoded"
            ) from exc
        references.append(
            Reference(
                _uid(sop_class, f"Referenced SOP Class UID (0008,1150) of item {number}"),
                _uid(sop_instance, f"Referenced SOP Instance UID (0008,1155) of item {number}"),
            )
        )
    return transaction_uid, tuple(references)


def assess(transaction_uid: str, references: Sequence[Reference], locate: Locator) -> CommitmentResult:
    """Decide, instance by instance, whether we hold it now (see the module docstring).

    Parameters
    ----------
    transaction_uid : str
        The request's Transaction UID.
    references : Sequence of Reference
        The instances it names.
    locate : callable
        The owner's index: the spool file of a SOP Instance UID, or None.

    Returns
    -------
    CommitmentResult
        Every reference either committed or failed, in the request's order.
    """
    committed: list[Reference] = []
    failed: list[Failure] = []
    for reference in references:
        reason = _failure_reason(reference, locate)
        if reason is None:
            committed.append(reference)
        else:
            failed.append(Failure(reference, reason))
    return CommitmentResult(transaction_uid, tuple(committed), tuple(failed))


def _failure_reason(reference: Reference, locate: Locator) -> int | None:
    """None when we hold a durable copy of exactly this instance, else its Failure Reason."""
    try:
        path = locate(reference.sop_instance_uid)
    except Exception:
        logger.exception("could not look up instance %s for storage commitment", reference.sop_instance_uid)
        return PROCESSING_FAILURE
    if path is None:
        return NO_SUCH_OBJECT_INSTANCE
    try:
        stored_class = read_file_meta_info(path).get("MediaStorageSOPClassUID")
    except FileNotFoundError:
        return NO_SUCH_OBJECT_INSTANCE
    except Exception as exc:  # noqa: BLE001 - an unreadable file is not held, and says so
        logger.error("could not read %s for storage commitment: %s", path, exc)
        return PROCESSING_FAILURE
    if str(stored_class or "") != reference.sop_class_uid:
        return CLASS_INSTANCE_CONFLICT
    return None
