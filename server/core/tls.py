"""TLS contexts from the settings: the SCP's server context and the outbox's client contexts."""

from __future__ import annotations

import ssl

from dicom_node.scu import Destination
from dicom_node.tls import client_context, server_context
from server.core.config import Settings

__all__ = ["scp_ssl_context", "with_tls"]


def scp_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The SCP's TLS context, or None when the SCP runs plain TCP."""
    if settings.dicom_tls_certificate is None or settings.dicom_tls_private_key is None:
        return None
    return server_context(
        settings.dicom_tls_certificate,
        settings.dicom_tls_private_key,
        client_ca=settings.dicom_tls_ca,
        require_client_certificate=settings.dicom_tls_require_client_certificate,
    )


def with_tls(settings: Settings, destination: Destination) -> Destination:
    """``destination`` reached over TLS: verified with the CA bundle, presenting our certificate.

    Our own certificate (when configured) is presented, so PACS that require client
    certificates accept us.
    """
    if settings.dicom_tls_ca is None:
        raise ValueError("TLS to a destination needs LUNGCDS_DICOM_TLS_CA")
    context = client_context(
        settings.dicom_tls_ca,
        certificate=settings.dicom_tls_certificate,
        private_key=settings.dicom_tls_private_key,
    )
    return Destination(destination.ae_title, destination.host, destination.port, tls=context)
