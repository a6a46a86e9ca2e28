"""Storage Commitment Push Model as SCP: accept a request, then deliver its result (PS3.4 J.3).

:meth:`StorageCommitment.request` runs inside the SCP's N-ACTION handler and does only what
must come before the answer: check the request (:func:`~dicom_node.commitment.parse_request`)
and record it durably (:class:`~dicom_node.commitment_journal.CommitmentJournal`); the SCP then
answers ``0x0000`` at once. Everything slow happens on a worker thread, one per transaction:

1. it waits ``report_delay`` seconds for the requesting association to end. A requester that
   keeps its association open (it waits for the report there) gets the N-EVENT-REPORT on that
   association (PS3.4 J.3.3), sent after the N-ACTION response: pynetdicom pauses the
   association's reactor for the send, and the reactor pauses only once the handler has
   returned and its response is out;
2. otherwise (it released, or the report on the same association failed) the report goes on a
   new association to the requester's address, found by its calling AE title (``address_of``):
   we propose the Storage Commitment Push Model with SCP/SCU Role Selection, our AE as SCP
   (PS3.4 J.3.3.1, PS3.7 D.3.3.4), and send only if the requester accepted that role;
3. an unknown address, an unreachable requester, an aborted association or a failure status
   is retried after ``first_retry`` seconds, doubling up to ``max_retry``, ``attempts`` times
   in all; a requester that refuses the context or our role is not retried (it will not
   change its mind). The result is assessed again (:func:`~dicom_node.commitment.assess`)
   before each attempt, so it says what we hold when it is sent.

Every step is logged and audited (``audit.storage_commitment``): the refused request with its
status and reason, the accepted request, the delivered result (event type, committed and failed
instances, route), or the undelivered one with the last reason. The journal file goes once the
result was delivered or given up. When the SCP stops, pending results stay in the journal; at
the next :meth:`StorageCommitment.start` each is reported again, on a new association, with a
fresh set of attempts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from pydicom.dataset import Dataset
from pynetdicom import build_context, build_role
from pynetdicom.association import Association

from dicom_node.commitment import (
    COMMITMENT_TRANSFER_SYNTAXES,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    CommitmentResult,
    Locator,
    RequestRefused,
    assess,
    parse_request,
)
from dicom_node.commitment_journal import CommitmentJournal, PendingCommitment
from dicom_node.scu import Destination, association_problem, request_association, requestor_ae
from dicom_node.statuses import PROCESSING_FAILURE, SUCCESS, status_name

if TYPE_CHECKING:
    from dicom_node.scp import AssociationInfo

__all__ = ["AddressBook", "CommitmentAudit", "StorageCommitment"]

logger = logging.getLogger(__name__)

#: The requester's DICOM address by its calling AE title, or None when it is not known.
AddressBook = Callable[[str], Destination | None]

_STOP_WAIT_SECONDS = 10.0


class CommitmentAudit(Protocol):
    """Where the Storage Commitment events go besides the log (e.g. the server's audit trail)."""

    def storage_commitment(self, requester: str, peer: str | None, outcome: str, detail: Mapping[str, object]) -> None:
        """Record one event: ``outcome`` is ``refused``, ``requested``, ``reported`` or ``undelivered``.

        ``requester`` is the calling AE title, ``peer`` its ``host:port`` when known. Must not raise.
        """


class StorageCommitment:
    """The Storage Commitment Push Model SCP of a :class:`~dicom_node.scp.StorageSCP`.

    Parameters
    ----------
    ae_title : str
        Our AE title, the calling AE title of the associations we open for reports.
    journal : CommitmentJournal
        Where accepted requests are recorded until their result is delivered or given up.
    locate : callable
        The spool file of a SOP Instance UID, or None (the owner's index).
    address_of : callable
        The requester's address by its calling AE title, or None when unknown.
    audit : CommitmentAudit
        Told about every request and result.
    attempts : int, optional
        Attempts to deliver a result on a new association. Default 6.
    first_retry : float, optional
        Seconds before the second attempt; each further wait doubles. Default 30.
    max_retry : float, optional
        Longest wait between two attempts, in seconds. Default 600.
    report_delay : float, optional
        Seconds the requesting association has to end before the result goes on it. Default 1.
    timeout : float, optional
        Seconds for connection, association and the N-EVENT-REPORT response on a new
        association. Default 30.
    """

    def __init__(
        self,
        ae_title: str,
        journal: CommitmentJournal,
        locate: Locator,
        address_of: AddressBook,
        audit: CommitmentAudit,
        *,
        attempts: int = 6,
        first_retry: float = 30.0,
        max_retry: float = 600.0,
        report_delay: float = 1.0,
        timeout: float = 30.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        if first_retry < 0 or max_retry < first_retry or report_delay < 0 or not timeout > 0:
            raise ValueError("retry waits, report delay and timeout must be positive, max_retry >= first_retry")
        self.ae_title = ae_title
        self.journal = journal
        self.locate = locate
        self.address_of = address_of
        self.audit = audit
        self.attempts = attempts
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.report_delay = report_delay
        self.timeout = timeout
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Report every request left pending by an earlier run, each on a new association."""
        self._stopping.clear()
        for pending in self.journal.pending():
            logger.info(
                "storage commitment %s of %s pending from an earlier run; reporting it",
                pending.transaction_uid,
                pending.requester,
            )
            self._spawn(pending, None)

    def stop(self) -> None:
        """Stop the workers (waits cut short); undelivered results stay in the journal for the next start."""
        self._stopping.set()
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.join(_STOP_WAIT_SECONDS)

    def request(
        self,
        assoc: Association,
        origin: AssociationInfo,
        action_type_id: int | None,
        requested_instance_uid: str,
        information: Callable[[], Dataset],
    ) -> None:
        """Accept one N-ACTION (PS3.4 J.3.2): check it, record it durably, start its delivery.

        Called from the N-ACTION handler: returns quickly, without waiting for anything but the
        journal's flush, so that the handler can answer ``0x0000``.

        Raises
        ------
        RequestRefused
            The status and reason to answer with (malformed request, or ``0x0110`` when it
            could not be recorded); also logged and audited here.
        """
        peer = f"{origin.peer_host}:{origin.peer_port}"
        try:
            transaction_uid, references = parse_request(action_type_id, requested_instance_uid, information)
            pending = PendingCommitment(transaction_uid, origin.calling_aet, references)
            try:
                self.journal.record(pending)
            except OSError as exc:
                raise RequestRefused(PROCESSING_FAILURE, f"request could not be recorded: {exc}") from exc
        except RequestRefused as exc:
            logger.warning(
                "storage commitment request from %s (association %s) refused with %s: %s",
                origin.calling_aet,
                origin.id,
                status_name(exc.status),
                exc.reason,
            )
            self.audit.storage_commitment(
                origin.calling_aet, peer, "refused", {"status": f"0x{exc.status:04X}", "reason": exc.reason}
            )
            raise
        logger.info(
            "storage commitment %s from %s accepted: %d instances",
            transaction_uid,
            origin.calling_aet,
            len(references),
        )
        self.audit.storage_commitment(
            origin.calling_aet, peer, "requested", {"transaction_uid": transaction_uid, "instances": len(references)}
        )
        self._spawn(pending, assoc)

    def _spawn(self, pending: PendingCommitment, assoc: Association | None) -> None:
        """Start the delivery of one result on its own thread."""
        worker = threading.Thread(
            target=self._deliver, args=(pending, assoc), name=f"stgcmt-{pending.transaction_uid}", daemon=True
        )
        with self._lock:
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(worker)
        worker.start()

    def _deliver(self, pending: PendingCommitment, assoc: Association | None) -> None:
        """Deliver one result: on the requesting association if it stays open, else on new ones."""
        if assoc is not None:
            assoc.join(self.report_delay)
            if assoc.is_alive() and assoc.is_established:
                result = assess(pending.transaction_uid, pending.references, self.locate)
                problem = _send_report(assoc, result)
                if not problem:
                    self._delivered(pending, result, "same association")
                    return
                logger.info(
                    "storage commitment %s: report on the requesting association failed (%s); opening a new one",
                    pending.transaction_uid,
                    problem,
                )
        problem = ""
        for attempt in range(self.attempts):
            if attempt and self._stopping.wait(min(self.first_retry * 2 ** (attempt - 1), self.max_retry)):
                logger.info("storage commitment %s stays pending for the next start", pending.transaction_uid)
                return
            if self._stopping.is_set():
                return
            result = assess(pending.transaction_uid, pending.references, self.locate)
            problem, final = self._report_to_requester(pending, result)
            if not problem:
                self._delivered(pending, result, "new association")
                return
            logger.warning(
                "storage commitment %s to %s, attempt %d of %d: %s",
                pending.transaction_uid,
                pending.requester,
                attempt + 1,
                self.attempts,
                problem,
            )
            if final:
                break
        logger.error(
            "storage commitment %s: result not delivered to %s, given up: %s",
            pending.transaction_uid,
            pending.requester,
            problem,
        )
        self.journal.forget(pending.transaction_uid)
        self.audit.storage_commitment(
            pending.requester, None, "undelivered", {"transaction_uid": pending.transaction_uid, "reason": problem}
        )

    def _report_to_requester(self, pending: PendingCommitment, result: CommitmentResult) -> tuple[str, bool]:
        """One report on a new association: (what went wrong or "", whether retrying is pointless)."""
        dest = self.address_of(pending.requester)
        if dest is None:
            return f"no DICOM address known for calling AE title {pending.requester}", False
        ae = requestor_ae(self.ae_title, self.timeout)
        context = build_context(STORAGE_COMMITMENT_PUSH_MODEL, list(COMMITMENT_TRANSFER_SYNTAXES))
        role = build_role(STORAGE_COMMITMENT_PUSH_MODEL, scp_role=True)
        assoc, connected = request_association(ae, dest, [context], [role])
        if not assoc.is_established:
            refused = assoc.is_aborted and bool(assoc.rejected_contexts) and not assoc.accepted_contexts
            if refused:
                return f"{dest} refused the Storage Commitment Push Model context", True
            return association_problem(assoc, connected, dest), False
        try:
            accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == STORAGE_COMMITMENT_PUSH_MODEL]
            if not accepted:
                return f"{dest} refused the Storage Commitment Push Model context", True
            if not accepted[0].as_scp:
                return f"{dest} did not accept us in the SCP role (PS3.4 J.3.3.1)", True
            return _send_report(assoc, result), False
        finally:
            if assoc.is_established:
                assoc.release()

    def _delivered(self, pending: PendingCommitment, result: CommitmentResult, route: str) -> None:
        """Forget, log and audit a delivered result (forgotten first: what the audit says is done is done)."""
        self.journal.forget(pending.transaction_uid)
        logger.info(
            "storage commitment %s reported to %s on the %s: %d committed, %d failed",
            pending.transaction_uid,
            pending.requester,
            route,
            len(result.committed),
            len(result.failed),
        )
        self.audit.storage_commitment(
            pending.requester,
            None,
            "reported",
            {
                "transaction_uid": pending.transaction_uid,
                "event_type_id": result.event_type_id,
                "route": route,
                "committed": len(result.committed),
                "failed": {f.reference.sop_instance_uid: f"0x{f.reason:04X}" for f in result.failed},
            },
        )


def _send_report(assoc: Association, result: CommitmentResult) -> str:
    """Send one N-EVENT-REPORT (PS3.4 J.3.3); "" when the requester answered Success, else why not."""
    try:
        status, _ = assoc.send_n_event_report(
            result.event_information(),
            result.event_type_id,
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_INSTANCE,
        )
    except (RuntimeError, ValueError) as exc:
        return f"N-EVENT-REPORT not sent: {exc}"
    if "Status" not in status:
        return "no N-EVENT-REPORT response: association aborted or timed out"
    if int(status.Status) != SUCCESS:
        return f"requester answered the N-EVENT-REPORT with {status_name(int(status.Status))}"
    return ""
