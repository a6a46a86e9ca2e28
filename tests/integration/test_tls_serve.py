"""``lungcds serve`` with TLS on both doors: DICOM (client certificates required) and HTTPS."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dicom_node.scu import Destination, echo
from dicom_node.tls import client_context
from tests.dicom_node.certificates import ThrowawayCA
from tests.peers import LungcdsProcess, start_lungcds

pytestmark = pytest.mark.integration


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCA:
    return ThrowawayCA(tmp_path / "pki", "Hospital CA")


@pytest.fixture
def tls_server(tmp_path: Path, ca: ThrowawayCA) -> Iterator[LungcdsProcess]:
    server_cert = ca.issue("lungcds", server=True)
    server = start_lungcds(
        tmp_path / "lungcds",
        extra_env={
            "LUNGCDS_DICOM_TLS_CERTIFICATE": str(server_cert.certificate),
            "LUNGCDS_DICOM_TLS_PRIVATE_KEY": str(server_cert.key),
            "LUNGCDS_DICOM_TLS_CA": str(ca.files.certificate),
            "LUNGCDS_DICOM_TLS_REQUIRE_CLIENT_CERTIFICATE": "true",
            "LUNGCDS_API_TLS_CERTIFICATE": str(server_cert.certificate),
            "LUNGCDS_API_TLS_PRIVATE_KEY": str(server_cert.key),
        },
        https=True,
        ca_file=ca.files.certificate,
    )
    yield server
    server.stop()


def test_dicom_and_https_over_tls(tls_server: LungcdsProcess, ca: ThrowawayCA) -> None:
    modality = ca.issue("modality", server=False)
    trusted = client_context(ca.files.certificate, certificate=modality.certificate, private_key=modality.key)
    assert echo(Destination("LUNGCDS", "127.0.0.1", tls_server.dicom_port, tls=trusted), "CT01")
    anonymous = client_context(ca.files.certificate)
    assert not echo(Destination("LUNGCDS", "127.0.0.1", tls_server.dicom_port, tls=anonymous), "CT01", timeout=3)
    assert not echo(Destination("LUNGCDS", "127.0.0.1", tls_server.dicom_port), "CT01", timeout=3)

    url = f"https://127.0.0.1:{tls_server.api_port}/api/v1/health/live"
    trust = ssl.create_default_context(cafile=str(ca.files.certificate))
    assert httpx.get(url, verify=trust).json() == {"status": "alive"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)  # the system trust store does not know our hospital CA
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://"))
