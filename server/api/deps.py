"""Dependencies of the REST routes, injected through ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from server.api.problems import Problem
from server.core.config import Settings
from server.core.oidc import OidcVerifier, TokenRejected, looks_like_jwt
from server.core.security import verify_api_key

__all__ = ["Admin", "SessionDep", "SettingsDep", "Viewer", "get_session"]


def get_session(request: Request) -> Iterator[Session]:
    """One database session per request."""
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_settings(request: Request) -> Settings:
    """The settings the API was created with."""
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    header = request.headers.get("x-api-key", "").strip()
    return header or None


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key (``apikey:<id>``) or an OIDC subject (``oidc:<sub>``), and the role."""

    actor: str
    role: str


def current_principal(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
    """The authenticated caller; 401 without valid credentials, 403 for a token without a role."""
    secret = _presented_key(request)
    if secret is None:
        raise Problem(401, "Authentication required", "send an API key or token as 'Authorization: Bearer ...'")
    verifier: OidcVerifier | None = request.app.state.oidc
    if verifier is not None and looks_like_jwt(secret):
        try:
            identity = verifier.verify(secret)
        except TokenRejected as exc:
            raise Problem(401, "Invalid token", str(exc)) from exc
        request.state.actor, request.state.role = f"oidc:{identity.subject}", identity.role
        if identity.role is None:
            raise Problem(
                403, "No lungcds role", f"the token grants none of the roles in claim {settings.oidc_role_claim!r}"
            )
        return Principal(actor=f"oidc:{identity.subject}", role=identity.role)
    key = verify_api_key(session, secret)
    if key is None:
        raise Problem(401, "Invalid API key", "the API key is unknown or revoked")
    request.state.actor, request.state.role = f"apikey:{key.id}", key.role
    return Principal(actor=f"apikey:{key.id}", role=key.role)


def require_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The caller if they have the admin role; 403 otherwise."""
    if principal.role != "admin":
        raise Problem(
            403, "Admin role required", f"this action needs the admin role, the caller has {principal.role!r}"
        )
    return principal


Viewer = Annotated[Principal, Depends(current_principal)]
Admin = Annotated[Principal, Depends(require_admin)]
