"""Storage Commitment Push Model as SCP (PS3.4 Annex J), driven by a pynetdicom modality over loopback.

The modality stores instances with C-STORE, asks for commitment with N-ACTION and receives the
result as N-EVENT-REPORT: on the same association when it keeps it open, else on a new
association to its own small SCP, where our AE takes the SCP role (PS3.4 J.3.3.1).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.commitment import (
    ALL_COMMITTED,
    FAILURES_EXIST,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    Locator,
    Reference,
)
from dicom_node.commitment_journal import CommitmentJournal, PendingCommitment
from dicom_node.commitment_scp import StorageCommitment
from dicom_node.scp import StorageSCP
from dicom_node.scu import Destination
from dicom_node.spool import Spool
from dicom_node.statuses import (
    CLASS_INSTANCE_CONFLICT,
    INVALID_ARGUMENT_VALUE,
    MISSING_ATTRIBUTE,
    NO_SUCH_ACTION_TYPE,
    NO_SUCH_OBJECT_INSTANCE,
    SUCCESS,
)
from tests.dicom_node.helpers import SCP_AET, RecordingSink, make_ct

MODALITY = "MODALITY"
WAIT = 10.0


@dataclass
class RecordingAudit:
    """A CommitmentAudit that keeps every event and lets a test wait for one."""

    events: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def storage_commitment(self, requester: str, peer: str | None, outcome: str, detail: Mapping[str, object]) -> None:
        with self._changed:
            self.events.append((requester, outcome, dict(detail)))
            self._changed.notify_all()

    def wait_for(self, outcome: str) -> dict[str, object]:
        """The detail of the first event with ``outcome``, waiting for it."""
        with self._changed:
            found = self._changed.wait_for(lambda: any(e[1] == outcome for e in self.events), WAIT)
            assert found, f"no {outcome!r} audit event; got {self.events}"
            return next(e[2] for e in self.events if e[1] == outcome)


@dataclass
class Reports:
    """N-EVENT-REPORTs received by the modality, with the association each came on."""

    received: list[tuple[int, Dataset, Association]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def handle(self, event: Event) -> tuple[int, None]:
        self.received.append((int(event.event_type), event.event_information, event.assoc))
        self.arrived.set()
        return SUCCESS, None

    def one(self) -> tuple[int, Dataset, Association]:
        assert self.arrived.wait(WAIT), "no N-EVENT-REPORT arrived"
        assert len(self.received) == 1
        return self.received[0]


@dataclass
class Node:
    """Our SCP with Storage Commitment, its sink (the index the result is assessed from) and audit."""

    scp: StorageSCP
    sink: RecordingSink
    audit: RecordingAudit
    journal: CommitmentJournal
    port: int
    addresses: dict[str, Destination]


def _locate(sink: RecordingSink) -> Locator:
    """The owner's index, as the server's is: the spool path of what the SCP reported stored."""

    def locate(sop_uid: str) -> Path | None:
        return next((s.path for s, _ in sink.stored if s.header.sop_instance_uid == sop_uid), None)

    return locate


def _commitment(
    tmp_path: Path, sink: RecordingSink, audit: RecordingAudit, addresses: dict[str, Destination]
) -> StorageCommitment:
    return StorageCommitment(
        SCP_AET,
        CommitmentJournal(tmp_path / "commitments"),
        _locate(sink),
        addresses.get,
        audit,
        attempts=3,
        first_retry=0.05,
        max_retry=0.2,
        report_delay=1.0,
        timeout=5,
    )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    sink, audit, addresses = RecordingSink(), RecordingAudit(), {}
    commitment = _commitment(tmp_path, sink, audit, addresses)
    scp = StorageSCP(SCP_AET, Spool(tmp_path / "spool", min_free_bytes=0), sink, storage_commitment=commitment)
    port = scp.start("127.0.0.1", 0)
    try:
        yield Node(scp, sink, audit, commitment.journal, port, addresses)
    finally:
        scp.stop()


def _modality_ae() -> AE:
    ae = AE(ae_title=MODALITY)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = WAIT
    return ae


def _associate(port: int, reports: Reports | None = None) -> Association:
    """The modality's association: CT storage and Storage Commitment, as SCU of both."""
    contexts = [
        build_context(CTImageStorage, ExplicitVRLittleEndian),
        build_context(STORAGE_COMMITMENT_PUSH_MODEL, ExplicitVRLittleEndian),
    ]
    handlers = [(evt.EVT_N_EVENT_REPORT, reports.handle)] if reports is not None else []
    assoc = _modality_ae().associate("127.0.0.1", port, contexts=contexts, ae_title=SCP_AET, evt_handlers=handlers)
    assert assoc.is_established
    return assoc


def _request(transaction_uid: str, references: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def _n_action(
    assoc: Association, ds: Dataset, action_type: int = 1, instance: str = STORAGE_COMMITMENT_INSTANCE
) -> Dataset:
    status, _ = assoc.send_n_action(ds, action_type, STORAGE_COMMITMENT_PUSH_MODEL, instance)
    assert "Status" in status
    return status


def _uids(sequence: list[Dataset]) -> list[tuple[str, str]]:
    return [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)) for i in sequence]


def test_stored_instances_are_committed_on_the_same_association(node: Node) -> None:
    reports = Reports()
    assoc = _associate(node.port, reports)
    try:
        study, series = generate_uid(), generate_uid()
        cts = [make_ct(study_uid=study, series_uid=series, z=float(z)) for z in range(3)]
        for ct in cts:
            assert assoc.send_c_store(ct).Status == SUCCESS
        transaction = generate_uid()
        references = [(CTImageStorage, str(ct.SOPInstanceUID)) for ct in cts]
        assert _n_action(assoc, _request(transaction, references)).Status == SUCCESS
        event_type, info, on = reports.one()
        assert on is assoc, "the report must come on the requesting association"
    finally:
        assoc.release()
    assert event_type == ALL_COMMITTED
    assert info.TransactionUID == transaction
    assert _uids(info.ReferencedSOPSequence) == references
    assert "FailedSOPSequence" not in info
    reported = node.audit.wait_for("reported")
    assert reported["route"] == "same association" and reported["committed"] == 3
    assert node.audit.events[0][:2] == (MODALITY, "requested")
    assert node.journal.pending() == []


def test_unknown_wrong_class_and_removed_instances_fail_with_their_reasons(node: Node) -> None:
    reports = Reports()
    assoc = _associate(node.port, reports)
    try:
        kept, removed = make_ct(), make_ct()
        for ct in (kept, removed):
            assert assoc.send_c_store(ct).Status == SUCCESS
        # the retention policy removed this one's file: it is no longer held
        next(s.path for s, _ in node.sink.stored if s.header.sop_instance_uid == removed.SOPInstanceUID).unlink()
        unknown = generate_uid()
        references = [
            (CTImageStorage, str(kept.SOPInstanceUID)),
            (CTImageStorage, unknown),
            (MRImageStorage, str(kept.SOPInstanceUID)),
            (CTImageStorage, str(removed.SOPInstanceUID)),
        ]
        assert _n_action(assoc, _request(generate_uid(), references)).Status == SUCCESS
        event_type, info, _ = reports.one()
    finally:
        assoc.release()
    assert event_type == FAILURES_EXIST
    assert _uids(info.ReferencedSOPSequence) == references[:1]
    failures = [
        (str(f.ReferencedSOPClassUID), str(f.ReferencedSOPInstanceUID), int(f.FailureReason))
        for f in info.FailedSOPSequence
    ]
    assert failures == [
        (CTImageStorage, unknown, NO_SUCH_OBJECT_INSTANCE),
        (MRImageStorage, str(kept.SOPInstanceUID), CLASS_INSTANCE_CONFLICT),
        (CTImageStorage, str(removed.SOPInstanceUID), NO_SUCH_OBJECT_INSTANCE),
    ]


@pytest.fixture
def modality_scp() -> Iterator[tuple[int, Reports]]:
    """The modality's own SCP, which takes Storage Commitment results with the requestor as SCP."""
    reports = Reports()
    ae = _modality_ae()
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL, ExplicitVRLittleEndian, scu_role=False, scp_role=True)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])
    try:
        yield int(server.server_address[1]), reports
    finally:
        ae.shutdown()


def test_a_requester_that_releases_gets_the_report_on_a_new_association(
    node: Node, modality_scp: tuple[int, Reports]
) -> None:
    port, reports = modality_scp
    node.addresses[MODALITY] = Destination(MODALITY, "127.0.0.1", port)
    assoc = _associate(node.port)
    ct = make_ct()
    assert assoc.send_c_store(ct).Status == SUCCESS
    transaction = generate_uid()
    assert _n_action(assoc, _request(transaction, [(CTImageStorage, str(ct.SOPInstanceUID))])).Status == SUCCESS
    assoc.release()

    event_type, info, on = reports.one()
    assert event_type == ALL_COMMITTED and info.TransactionUID == transaction
    assert _uids(info.ReferencedSOPSequence) == [(CTImageStorage, str(ct.SOPInstanceUID))]
    assert on.is_acceptor and on.requestor.ae_title == SCP_AET
    role = on.requestor.role_selection[STORAGE_COMMITMENT_PUSH_MODEL]
    assert role.scp_role is True and not role.scu_role, "we propose to be the SCP of the context (PS3.4 J.3.3.1)"
    (context,) = [cx for cx in on.accepted_contexts if cx.abstract_syntax == STORAGE_COMMITMENT_PUSH_MODEL]
    assert context.as_scu and not context.as_scp, "the modality accepted to be the SCU there"
    assert node.audit.wait_for("reported")["route"] == "new association"
    assert node.journal.pending() == []


def test_an_unknown_requester_is_retried_a_bounded_number_of_times_then_audited(node: Node) -> None:
    assoc = _associate(node.port)
    transaction = generate_uid()
    assert _n_action(assoc, _request(transaction, [(CTImageStorage, generate_uid())])).Status == SUCCESS
    assoc.release()
    undelivered = node.audit.wait_for("undelivered")
    assert undelivered["transaction_uid"] == transaction
    assert "no DICOM address known for calling AE title MODALITY" in str(undelivered["reason"])
    assert node.journal.pending() == []


def test_a_pending_result_is_reported_after_a_restart(tmp_path: Path, modality_scp: tuple[int, Reports]) -> None:
    port, reports = modality_scp
    journal = CommitmentJournal(tmp_path / "commitments")
    transaction = generate_uid()
    journal.record(PendingCommitment(transaction, MODALITY, (Reference(CTImageStorage, generate_uid()),)))
    sink, audit = RecordingSink(), RecordingAudit()
    commitment = _commitment(tmp_path, sink, audit, {MODALITY: Destination(MODALITY, "127.0.0.1", port)})
    with StorageSCP(SCP_AET, Spool(tmp_path / "spool", min_free_bytes=0), sink, storage_commitment=commitment) as scp:
        scp.start("127.0.0.1", 0)
        event_type, info, _ = reports.one()
        assert audit.wait_for("reported")["route"] == "new association"
    assert event_type == FAILURES_EXIST and info.TransactionUID == transaction
    assert int(info.FailedSOPSequence[0].FailureReason) == NO_SUCH_OBJECT_INSTANCE
    assert journal.pending() == []


def _without(attribute: str) -> Dataset:
    ds = _request(generate_uid(), [(CTImageStorage, generate_uid())])
    del ds[attribute]
    return ds


def _item_without(attribute: str) -> Dataset:
    ds = _request(generate_uid(), [(CTImageStorage, generate_uid())])
    del ds.ReferencedSOPSequence[0][attribute]
    return ds


@pytest.mark.parametrize(
    ("ds", "action_type", "instance", "status", "reason"),
    [
        (_without("TransactionUID"), 1, STORAGE_COMMITMENT_INSTANCE, MISSING_ATTRIBUTE, "Transaction UID"),
        (
            _request("1.2.abc", [(CTImageStorage, generate_uid())]),
            1,
            STORAGE_COMMITMENT_INSTANCE,
            INVALID_ARGUMENT_VALUE,
            "Transaction UID",
        ),
        (
            _without("ReferencedSOPSequence"),
            1,
            STORAGE_COMMITMENT_INSTANCE,
            MISSING_ATTRIBUTE,
            "Referenced SOP Sequence",
        ),
        (_request(generate_uid(), []), 1, STORAGE_COMMITMENT_INSTANCE, MISSING_ATTRIBUTE, "Referenced SOP Sequence"),
        (
            _item_without("ReferencedSOPClassUID"),
            1,
            STORAGE_COMMITMENT_INSTANCE,
            MISSING_ATTRIBUTE,
            "Referenced SOP Class UID",
        ),
        (
            _request(generate_uid(), [(CTImageStorage, "1..2")]),
            1,
            STORAGE_COMMITMENT_INSTANCE,
            INVALID_ARGUMENT_VALUE,
            "Referenced SOP Instance UID",
        ),
        (
            _request(generate_uid(), [(CTImageStorage, generate_uid())]),
            2,
            STORAGE_COMMITMENT_INSTANCE,
            NO_SUCH_ACTION_TYPE,
            "Action Type ID 2",
        ),
        (
            _request(generate_uid(), [(CTImageStorage, generate_uid())]),
            1,
            generate_uid(),
            NO_SUCH_OBJECT_INSTANCE,
            "Requested SOP Instance UID",
        ),
    ],
    ids=[
        "no-transaction-uid",
        "invalid-transaction-uid",
        "no-referenced-sop-sequence",
        "empty-referenced-sop-sequence",
        "item-without-class",
        "invalid-instance-uid",
        "action-type-2",
        "wrong-requested-instance",
    ],
)
def test_a_malformed_request_gets_its_failure_status(
    node: Node, ds: Dataset, action_type: int, instance: str, status: int, reason: str
) -> None:
    reports = Reports()
    assoc = _associate(node.port, reports)
    try:
        response = _n_action(assoc, ds, action_type, instance)
    finally:
        assoc.release()
    assert response.Status == status
    assert reason in str(response.ErrorComment)
    refused = node.audit.wait_for("refused")
    assert refused["status"] == f"0x{status:04X}" and reason in str(refused["reason"])
    assert node.journal.pending() == [] and not reports.received
    assert [e[1] for e in node.audit.events] == ["refused"]


def test_without_storage_commitment_its_context_is_rejected(tmp_path: Path) -> None:
    with StorageSCP(SCP_AET, Spool(tmp_path / "spool", min_free_bytes=0), RecordingSink()) as scp:
        port = scp.start("127.0.0.1", 0)
        contexts = [
            build_context(Verification, ExplicitVRLittleEndian),
            build_context(STORAGE_COMMITMENT_PUSH_MODEL, ExplicitVRLittleEndian),
        ]
        assoc = _modality_ae().associate("127.0.0.1", port, contexts=contexts, ae_title=SCP_AET)
        try:
            assert assoc.is_established
            assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [Verification]
            assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == [STORAGE_COMMITMENT_PUSH_MODEL]
        finally:
            assoc.release()
