"""TLS for DICOM associations (PS3.15 Annex B.1, "Basic TLS Secure Transport Connection Profile").

The SCP takes a server context (our certificate, optionally requiring and verifying client
certificates against a CA bundle); the SCU takes a client context (verifying the peer against
a CA bundle, optionally presenting our certificate).  TLS 1.2 is the floor (PS3.15 B.9 BCP 195).
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["server_context", "client_context"]


def _base(purpose: ssl.Purpose) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(
    certificate: Path, private_key: Path, *, client_ca: Path | None = None, require_client_certificate: bool = False
) -> ssl.SSLContext:
    """A context for our SCP: present ``certificate``; verify client certificates when asked.

    Raises
    ------
    ValueError
        When a client certificate is required but no CA bundle is given to verify it.
    """
    if require_client_certificate and client_ca is None:
        raise ValueError("requiring client certificates needs a CA bundle to verify them (client_ca)")
    context = _base(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile=str(certificate), keyfile=str(private_key))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    return context


def client_context(
    trusted_ca: Path, *, certificate: Path | None = None, private_key: Path | None = None, check_hostname: bool = True
) -> ssl.SSLContext:
    """A context for our SCU: trust peers signed by ``trusted_ca``; present our certificate if given."""
    context = _base(ssl.Purpose.SERVER_AUTH)
    context.load_verify_locations(cafile=str(trusted_ca))
    context.check_hostname = check_hostname
    if certificate is not None:
        context.load_cert_chain(certfile=str(certificate), keyfile=str(private_key) if private_key else None)
    return context
