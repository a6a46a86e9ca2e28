"""Taking responsibility for one received instance, whatever brought it (C-STORE or STOW-RS).

:func:`receive_instance` is the one path an instance takes into the node: it is validated and
written durably by the :class:`~dicom_node.spool.Spool` (PS3.10 file, fsynced), then handed to
the :class:`~dicom_node.scp.InstanceSink`; only when both returned is it stored. Every failure
becomes a status of PS3.4 Annex B.2.3 with a reason in words, and is reported to the sink
(``instance_refused``), so that the refusal is on record where operators look:

* :class:`~dicom_node.validation.InvalidInstance` (from the spool's checks, the owner's
  ``admit`` hook or the sink): its own status (``0xC000``, ``0xA900``, ``0xC111`` ...) and reason;
  a file the sink refused after it was written is removed again;
* :class:`~dicom_node.spool.OutOfResources`: ``0xA700``;
* an exception from the sink (e.g. the database is down): ``0xA700``; the file stays in the
  spool and a re-send (a duplicate) calls the sink again;
* any other error while reading or spooling (a bug): ``0x0110`` *Processing failure* (PS3.7 C.4.2),
  logged with its traceback.

The Storage SCP (:class:`~dicom_node.scp.StorageSCP`) answers each C-STORE from the
:class:`Receipt`; the server's STOW-RS route (PS3.18 10.5) answers each part of a request from it
(Referenced SOP Sequence or Failed SOP Sequence with the status as Failure Reason, PS3.18 I.2.2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dicom_node.spool import OutOfResources, Spool, StoredInstance
from dicom_node.statuses import OUT_OF_RESOURCES, PROCESSING_FAILURE, SUCCESS
from dicom_node.validation import InvalidInstance

if TYPE_CHECKING:
    from dicom_node.scp import AssociationInfo, InstanceSink

__all__ = ["PROCESSING_FAILURE_REASON", "SINK_FAILURE_REASON", "Receipt", "receive_instance"]

logger = logging.getLogger(__name__)

#: Reason of a refusal because the sink could not index a stored instance (answered ``0xA700``).
SINK_FAILURE_REASON = "out of resources: could not index"
#: Reason of a refusal for an unexpected error while storing (answered ``0x0110``).
PROCESSING_FAILURE_REASON = "processing failure: internal error while storing"


@dataclass(frozen=True)
class Receipt:
    """What became of one received instance.

    Attributes
    ----------
    status : int
        ``0x0000`` when stored, else the failure status (PS3.4 Annex B.2.3, PS3.7 C.4.2).
    reason : str
        Why it was refused, in words (empty when stored).
    stored : StoredInstance or None
        Where it is, when stored (also for a duplicate that was already stored).
    """

    status: int
    reason: str
    stored: StoredInstance | None

    @property
    def ok(self) -> bool:
        """True when the instance is durably stored and indexed."""
        return self.stored is not None


def receive_instance(
    spool: Spool,
    sink: InstanceSink,
    origin: AssociationInfo,
    read_encoded: Callable[[], bytes],
    sop_instance_uid: str = "",
) -> Receipt:
    """Validate, spool and hand over one instance; a refusal is reported to ``sink`` and returned.

    Parameters
    ----------
    spool : Spool
        Where the instance is written (its ``admit`` hook runs before the write).
    sink : InstanceSink
        Told about the stored instance (``instance_stored``) or the refusal (``instance_refused``).
    origin : AssociationInfo
        Who sent it: the association, or the HTTP request described as one.
    read_encoded : callable
        Returns the Part 10 stream (PS3.10 7.1); called here, so that an error while reading
        it (a broken network stream, a bug) is a processing failure, not a crash.
    sop_instance_uid : str, optional
        The SOP Instance UID the sender announced (C-STORE's Affected SOP Instance UID), for
        logs and the refusal report when the data set cannot be read.

    Returns
    -------
    Receipt
        ``0x0000`` with where it is, or the failure status and its reason.
    """
    try:
        stored = spool.store(read_encoded())
    except InvalidInstance as exc:
        return _refuse_invalid(sink, sop_instance_uid, exc, origin)
    except OutOfResources as exc:
        logger.error(
            "refused instance %s from %s (association %s), out of resources: %s",
            sop_instance_uid,
            origin.calling_aet,
            origin.id,
            exc.reason,
        )
        return _refuse(sink, sop_instance_uid, exc.status, f"out of resources: {exc.reason}", origin)
    except Exception:
        logger.exception(
            "unexpected error spooling instance %s (association %s); answered 0x%04X",
            sop_instance_uid,
            origin.id,
            PROCESSING_FAILURE,
        )
        return _refuse(sink, sop_instance_uid, PROCESSING_FAILURE, PROCESSING_FAILURE_REASON, origin)
    sop_instance_uid = str(stored.header.sop_instance_uid)
    try:
        sink.instance_stored(stored, origin)
    except InvalidInstance as exc:
        # The sink refuses what only it can see (e.g. the SOP Instance UID indexed in another
        # series by a concurrent sender): the file just written goes, nothing unindexed stays.
        if not stored.duplicate:
            spool.discard(stored)
        return _refuse_invalid(sink, sop_instance_uid, exc, origin)
    except Exception:
        logger.exception(
            "instance %s is in the spool at %s but could not be indexed; answered 0x%04X",
            sop_instance_uid,
            stored.path,
            OUT_OF_RESOURCES,
        )
        return _refuse(sink, sop_instance_uid, OUT_OF_RESOURCES, SINK_FAILURE_REASON, origin)
    return Receipt(SUCCESS, "", stored)


def _refuse_invalid(sink: InstanceSink, sop_uid: str, exc: InvalidInstance, origin: AssociationInfo) -> Receipt:
    """Log and refuse an instance that the spool or the sink found invalid, with its status and reason."""
    logger.warning(
        "refused instance %s from %s (association %s) with 0x%04X: %s",
        sop_uid,
        origin.calling_aet,
        origin.id,
        exc.status,
        exc.reason,
    )
    return _refuse(sink, sop_uid, exc.status, exc.reason, origin, exc.detail)


def _refuse(
    sink: InstanceSink,
    sop_uid: str,
    status: int,
    reason: str,
    origin: AssociationInfo,
    detail: Mapping[str, object] | None = None,
) -> Receipt:
    """Tell the sink about a refusal (never failing the answer for it) and return it."""
    try:
        sink.instance_refused(sop_uid, status, reason, origin, detail or {})
    except Exception:
        logger.exception("sink failed to record the refusal of instance %s", sop_uid)
    return Receipt(status, reason, None)
