"""The server's Storage Commitment wiring: the index decides what is held, sender_addresses where the
result goes when the requester released, the audit trail records it, and the setting turns it off."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_context, evt
from pynetdicom.events import Event
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dicom_node.commitment import ALL_COMMITTED, STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH_MODEL
from dicom_node.scp import StorageSCP
from dicom_node.spool import Spool
from dicom_node.statuses import SUCCESS
from server.core.config import Settings
from server.db_models import AuditEvent
from server.routing.destinations import commitment_requester
from server.routing.intake import SeriesIntake
from server.runtime import storage_commitment_for
from tests.dicom_node.helpers import make_ct


@pytest.fixture
def modality() -> Iterator[tuple[int, list[Dataset], threading.Event]]:
    """CT1's own SCP, taking Storage Commitment results in the SCU role."""
    reports: list[Dataset] = []
    arrived = threading.Event()

    def handle(event: Event) -> tuple[int, None]:
        assert event.event_type == ALL_COMMITTED
        reports.append(event.event_information)
        arrived.set()
        return SUCCESS, None

    ae = AE(ae_title="CT1")
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL, ExplicitVRLittleEndian, scu_role=False, scp_role=True)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, handle)])
    try:
        yield int(server.server_address[1]), reports, arrived
    finally:
        ae.shutdown()


def test_an_indexed_instance_is_committed_to_the_senders_address_and_audited(
    settings: Settings, engine: Engine, intake: SeriesIntake, modality: tuple[int, list[Dataset], threading.Event]
) -> None:
    port, reports, arrived = modality
    settings.sender_addresses = {"CT1": f"CT1@127.0.0.1:{port}"}
    commitment = storage_commitment_for(settings, intake)
    assert commitment is not None
    spool = Spool(settings.spool_dir, min_free_bytes=0, admit=intake.admit)
    ct = make_ct()
    transaction = generate_uid()
    with StorageSCP("LUNGCDS", spool, intake, storage_commitment=commitment) as scp:
        ae = AE(ae_title="CT1")
        contexts = [
            build_context(CTImageStorage, ExplicitVRLittleEndian),
            build_context(STORAGE_COMMITMENT_PUSH_MODEL, ExplicitVRLittleEndian),
        ]
        assoc = ae.associate("127.0.0.1", scp.start("127.0.0.1", 0), contexts=contexts, ae_title="LUNGCDS")
        assert assoc.send_c_store(ct).Status == SUCCESS
        request = Dataset()
        request.TransactionUID = transaction
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = ct.SOPInstanceUID
        request.ReferencedSOPSequence = [item]
        status, _ = assoc.send_n_action(request, 1, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE)
        assoc.release()
        assert status.Status == SUCCESS
        assert arrived.wait(15), "no N-EVENT-REPORT reached CT1's address"
    (report,) = reports
    assert report.TransactionUID == transaction
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [ct.SOPInstanceUID]
    with Session(engine) as session:
        events = session.exec(
            select(AuditEvent).where(col(AuditEvent.action) == "storage-commitment").order_by(col(AuditEvent.id))
        ).all()
    assert [(e.actor, e.outcome, e.target) for e in events] == [
        ("dicom:CT1", "requested", transaction),
        ("dicom:CT1", "reported", transaction),
    ]
    assert events[1].detail["route"] == "new association"
    assert not list(settings.commitment_dir.iterdir()), "a delivered result leaves no pending record"


def test_the_setting_turns_storage_commitment_off(settings: Settings, intake: SeriesIntake) -> None:
    assert Settings.model_fields["storage_commitment"].default is True
    settings.storage_commitment = False
    assert storage_commitment_for(settings, intake) is None


def test_only_a_dicom_sender_address_receives_results(settings: Settings) -> None:
    settings.sender_addresses = {"CT1": "CT1@10.0.0.5:104", "apikey:3": "WEB@stow+https://pacs/dicom-web"}
    found = commitment_requester(settings, "CT1")
    assert found is not None and (found.ae_title, found.host, found.port) == ("CT1", "10.0.0.5", 104)
    assert commitment_requester(settings, "apikey:3") is None
    assert commitment_requester(settings, "CT9") is None
