"""Dependencies of the REST routes, injected through ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from server.api.problems import Problem
from server.core.config import Settings
from server.core.security import verify_api_key
from server.db_models import ApiKey

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


def current_key(request: Request, session: SessionDep) -> ApiKey:
    """The caller's API key; 401 without a valid one."""
    secret = _presented_key(request)
    if secret is None:
        raise Problem(401, "Authentication required", "send an API key as 'Authorization: Bearer KEY'")
    key = verify_api_key(session, secret)
    if key is None:
        raise Problem(401, "Invalid API key", "the API key is unknown or revoked")
    request.state.api_key_id, request.state.api_key_role = key.id, key.role
    return key


def require_admin(key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
    """The caller's key if it has the admin role; 403 otherwise."""
    if key.role != "admin":
        raise Problem(403, "Admin role required", f"this action needs the admin role, the key has {key.role!r}")
    return key


Viewer = Annotated[ApiKey, Depends(current_key)]
Admin = Annotated[ApiKey, Depends(require_admin)]
