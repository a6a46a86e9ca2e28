"""Retrieving a study or series that is already in PACS: C-GET and C-MOVE (PS3.4 Annex C).

C-GET brings the instances back on our own association, so the PACS needs no configuration
for us; the instances are written through the same :class:`~dicom_node.spool.Spool` (validation,
durable write) and reported to the same sink as instances received by the SCP.  C-MOVE asks the
PACS to send the instances to an AE title it knows (normally ours), and they arrive through our
SCP like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    EnhancedCTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom_node.scp import AssociationInfo, InstanceSink
from dicom_node.scu import AssociationFailed, Destination
from dicom_node.spool import OutOfResources, Spool
from dicom_node.statuses import SUCCESS
from dicom_node.validation import InvalidInstance, check_uid

__all__ = ["RetrieveResult", "c_get", "c_move", "describe"]

logger = logging.getLogger(__name__)

#: The storage classes a C-GET asks for: the analysed CT classes (PS3.4 C.4.3.1: the
#: requestor proposes the storage contexts it accepts in the SCP role).
GET_STORAGE_CLASSES: tuple[str, ...] = (CTImageStorage, EnhancedCTImageStorage)


@dataclass
class RetrieveResult:
    """How a retrieval went: the final status, and the counts the peer and we saw."""

    status: int | None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    stored_series: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the peer reported success (0x0000) or only warnings (0xB000)."""
        return self.status in (SUCCESS, 0xB000)


def _identifier(study_uid: str, series_uid: str | None) -> Dataset:
    for name, uid in (("Study Instance UID", study_uid), ("Series Instance UID", series_uid)):
        if uid is not None and check_uid(uid) is not None:
            raise ValueError(f"{name} {uid!r} is not a valid UID: {check_uid(uid)}")
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    return ds


def _tally(result: RetrieveResult, status: Dataset) -> None:
    result.status = int(status.Status)
    for attribute, name in (
        ("NumberOfCompletedSuboperations", "completed"),
        ("NumberOfFailedSuboperations", "failed"),
        ("NumberOfWarningSuboperations", "warning"),
    ):
        if attribute in status:
            setattr(result, name, int(getattr(status, attribute)))


def c_get(
    source: Destination,
    study_uid: str,
    series_uid: str | None,
    *,
    calling_aet: str,
    spool: Spool,
    sink: InstanceSink,
    timeout: float = 600.0,
) -> RetrieveResult:
    """Retrieve a study (or one series) with C-GET into ``spool``, telling ``sink`` as the SCP would.

    Raises
    ------
    AssociationFailed
        When the source cannot be reached or refuses the association.
    ValueError
        When a UID is invalid.
    """
    identifier = _identifier(study_uid, series_uid)
    result = RetrieveResult(status=None)
    info = AssociationInfo(
        id=f"get-{study_uid}",
        calling_aet=source.ae_title,
        called_aet=calling_aet,
        peer_host=source.host,
        peer_port=source.port,
    )

    def store(event: Event) -> int | Dataset:
        try:
            stored = spool.store(event.encoded_dataset(include_meta=True))
        except (InvalidInstance, OutOfResources) as exc:
            result.refused.append(exc.reason)
            sop_uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
            sink.instance_refused(sop_uid, exc.status, exc.reason, info)
            return exc.status
        sink.instance_stored(stored, info)
        result.stored_series.add(str(stored.header.series_instance_uid))
        return SUCCESS

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in GET_STORAGE_CLASSES:
        ae.add_requested_context(sop_class)
    roles: list[Any] = [build_role(sop_class, scp_role=True) for sop_class in GET_STORAGE_CLASSES]
    assoc = ae.associate(
        source.host,
        source.port,
        ae_title=source.ae_title,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, store)],
        tls_args=(source.tls, source.host) if source.tls is not None else None,
    )
    if not assoc.is_established:
        raise AssociationFailed(f"C-GET association with {source} failed")
    try:
        for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            if status is not None and "Status" in status:
                _tally(result, status)
    finally:
        if assoc.is_established:
            assoc.release()
    sink.association_ended(info, frozenset(result.stored_series), True)
    logger.info("C-GET from %s: status %s, %d stored", source, result.status, len(result.stored_series))
    return result


def c_move(
    source: Destination,
    study_uid: str,
    series_uid: str | None,
    *,
    calling_aet: str,
    move_destination: str,
    timeout: float = 600.0,
) -> RetrieveResult:
    """Ask ``source`` to C-MOVE a study (or series) to the AE title ``move_destination``.

    The instances arrive through that AE's SCP (ours, when ``move_destination`` is our AE
    title and the source knows our address).
    """
    identifier = _identifier(study_uid, series_uid)
    result = RetrieveResult(status=None)
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(
        source.host,
        source.port,
        ae_title=source.ae_title,
        tls_args=(source.tls, source.host) if source.tls is not None else None,
    )
    if not assoc.is_established:
        raise AssociationFailed(f"C-MOVE association with {source} failed")
    try:
        for status, _ in assoc.send_c_move(identifier, move_destination, StudyRootQueryRetrieveInformationModelMove):
            if status is not None and "Status" in status:
                _tally(result, status)
    finally:
        if assoc.is_established:
            assoc.release()
    logger.info("C-MOVE from %s to %s: status %s", source, move_destination, result.status)
    return result


def describe(result: RetrieveResult) -> str:
    """One line for logs and the API: status and sub-operation counts."""
    status = "no answer" if result.status is None else f"0x{result.status:04X}"
    return f"status {status}: {result.completed} completed, {result.failed} failed, {result.warning} warnings"
