"""DICOM over TLS (PS3.15 B.1): trusted certificates associate, untrusted ones do not."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dicom_node.scp import StorageSCP
from dicom_node.scu import AssociationFailed, Destination, echo, send_datasets
from dicom_node.spool import Spool
from dicom_node.tls import client_context, server_context
from tests.dicom_node.certificates import ThrowawayCA
from tests.dicom_node.helpers import SCP_AET, RecordingSink, make_ct


@pytest.fixture
def hospital_ca(tmp_path: Path) -> ThrowawayCA:
    return ThrowawayCA(tmp_path / "hospital", "Hospital CA")


@pytest.fixture
def rogue_ca(tmp_path: Path) -> ThrowawayCA:
    return ThrowawayCA(tmp_path / "rogue", "Rogue CA")


def _scp(tmp_path: Path, sink: RecordingSink, ca: ThrowawayCA, *, require_client: bool) -> StorageSCP:
    cert = ca.issue("lungcds-scp", server=True)
    context = server_context(
        cert.certificate, cert.key, client_ca=ca.files.certificate, require_client_certificate=require_client
    )
    return StorageSCP(SCP_AET, Spool(tmp_path / "spool", min_free_bytes=0), sink, ssl_context=context)


def test_trusted_server_certificate_associates_and_stores(
    tmp_path: Path, sink: RecordingSink, hospital_ca: ThrowawayCA
) -> None:
    with _scp(tmp_path, sink, hospital_ca, require_client=False) as scp:
        port = scp.start("127.0.0.1", 0)
        dest = Destination(SCP_AET, "127.0.0.1", port, tls=client_context(hospital_ca.files.certificate))
        assert echo(dest, "TLSSCU")
        results = send_datasets(dest, [make_ct()], "TLSSCU")
    assert [r.ok for r in results] == [True]


def test_untrusted_server_certificate_is_refused_by_our_scu(
    tmp_path: Path, sink: RecordingSink, hospital_ca: ThrowawayCA, rogue_ca: ThrowawayCA
) -> None:
    with _scp(tmp_path, sink, rogue_ca, require_client=False) as scp:
        port = scp.start("127.0.0.1", 0)
        dest = Destination(SCP_AET, "127.0.0.1", port, tls=client_context(hospital_ca.files.certificate))
        assert not echo(dest, "TLSSCU")
        with pytest.raises(AssociationFailed):
            send_datasets(dest, [make_ct()], "TLSSCU")
    assert sink.stored == []


def test_plain_tcp_to_a_tls_scp_fails(tmp_path: Path, sink: RecordingSink, hospital_ca: ThrowawayCA) -> None:
    with _scp(tmp_path, sink, hospital_ca, require_client=False) as scp:
        port = scp.start("127.0.0.1", 0)
        assert not echo(Destination(SCP_AET, "127.0.0.1", port), "PLAINSCU", timeout=3)


def test_client_certificates_when_required(
    tmp_path: Path, sink: RecordingSink, hospital_ca: ThrowawayCA, rogue_ca: ThrowawayCA
) -> None:
    with _scp(tmp_path, sink, hospital_ca, require_client=True) as scp:
        port = scp.start("127.0.0.1", 0)
        trusted_ca = hospital_ca.files.certificate
        anonymous = Destination(SCP_AET, "127.0.0.1", port, tls=client_context(trusted_ca))
        assert not echo(anonymous, "TLSSCU", timeout=3)
        ours = hospital_ca.issue("modality", server=False)
        known = client_context(trusted_ca, certificate=ours.certificate, private_key=ours.key)
        assert echo(Destination(SCP_AET, "127.0.0.1", port, tls=known), "TLSSCU")
        stranger = rogue_ca.issue("stranger", server=False)
        unknown = client_context(trusted_ca, certificate=stranger.certificate, private_key=stranger.key)
        assert not echo(Destination(SCP_AET, "127.0.0.1", port, tls=unknown), "TLSSCU", timeout=3)


def test_requiring_client_certificates_needs_a_ca(tmp_path: Path, hospital_ca: ThrowawayCA) -> None:
    cert = hospital_ca.issue("scp", server=True)
    with pytest.raises(ValueError, match="CA bundle"):
        server_context(cert.certificate, cert.key, require_client_certificate=True)


def test_a_peer_that_never_starts_tls_holds_up_no_one(
    tmp_path: Path, sink: RecordingSink, hospital_ca: ThrowawayCA
) -> None:
    cert = hospital_ca.issue("lungcds-scp", server=True)
    context = server_context(cert.certificate, cert.key)
    spool = Spool(tmp_path / "spool", min_free_bytes=0)
    with StorageSCP(SCP_AET, spool, sink, ssl_context=context, association_request_timeout=2.0) as scp:
        port = scp.start("127.0.0.1", 0)
        silent = socket.create_connection(("127.0.0.1", port))
        dest = Destination(SCP_AET, "127.0.0.1", port, tls=client_context(hospital_ca.files.certificate))

        # The echo must finish inside the 2 s the silent peer is given: were that peer blocking the
        # listener, the echo could not complete before the server gave up on it.
        assert echo(dest, "TLSSCU", timeout=1.5), "the TLS handshake of one peer does not block the others"
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):
            silent.recv(1)  # still open: the server waits for its association request

        silent.settimeout(5)
        assert silent.recv(1) == b"", "the silent peer is closed after the association request timeout"
        silent.close()
