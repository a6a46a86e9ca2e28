"""TLS contexts from the settings: the SCP's server context and the outbox's client contexts."""

from __future__ import annotations

import ssl

from dicom_node.scu import Destination, parse_destination
from dicom_node.tls import client_context, server_context
from server.core.config import Settings

__all__ = ["scp_ssl_context", "destination"]


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


def destination(settings: Settings, text: str) -> Destination:
    """``AET@host:port`` as a destination, over TLS when its AE title is listed for TLS.

    Our own certificate (when configured) is presented, so PACS that require client
    certificates accept us.
    """
    parsed = parse_destination(text)
    if parsed.ae_title not in settings.dicom_tls_destinations:
        return parsed
    assert settings.dicom_tls_ca is not None  # enforced by Settings
    context = client_context(
        settings.dicom_tls_ca,
        certificate=settings.dicom_tls_certificate,
        private_key=settings.dicom_tls_private_key,
    )
    return Destination(parsed.ae_title, parsed.host, parsed.port, tls=context)
