"""Dependencies of the REST routes, injected through ``Annotated`` aliases.

Callers present an API key or an OIDC access token as ``Authorization: Bearer ...``, or an API
key as ``X-API-Key`` (FastAPI's :class:`~fastapi.security.HTTPBearer` and
:class:`~fastapi.security.APIKeyHeader`).  Never in the URL: query strings end up in proxy
logs and browser histories, so a key sent there is refused like no key at all.

A request that can change something, or that carries a body, is authenticated before the
application reads a byte of it (:class:`server.api.admission.AuthenticateFirst`, calling
:func:`authenticate` here); routes get the same, cached, caller through :data:`Viewer` and
:data:`Admin`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from server.api.problems import Problem, validation_detail
from server.audit import AuditTrail
from server.core.config import Settings
from server.core.oidc import OidcVerifier, TokenRejected, looks_like_jwt
from server.core.security import verify_api_key
from server.tasks.queue import QueueGateway

__all__ = [
    "Admin",
    "AuditTrailDep",
    "JsonObject",
    "NoRole",
    "Principal",
    "SessionDep",
    "SettingsDep",
    "Viewer",
    "authenticate",
    "get_session",
    "json_body",
    "json_request_body",
    "presented_secret",
    "task_queue",
    "verify_secret",
]

BEARER = HTTPBearer(auto_error=False, description="An API key, or an access token of the configured OIDC issuer")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")


def task_queue(request: Request) -> QueueGateway:
    """This server's task queue; 503, before anything changes, when it has none (offline tools, some tests)."""
    queue: QueueGateway | None = request.app.state.queue
    if queue is None:
        raise Problem(503, "No queue", "this server has no task queue configured; nothing was changed")
    return queue


def get_session(request: Request) -> Iterator[Session]:
    """One database session per request."""
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_settings(request: Request) -> Settings:
    """The settings the API was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_audit_trail(request: Request) -> AuditTrail:
    """The audit trail the API writes to."""
    trail: AuditTrail = request.app.state.audit_trail
    return trail


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
AuditTrailDep = Annotated[AuditTrail, Depends(get_audit_trail)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key (``apikey:<id>``) or an OIDC subject (``oidc:<sub>``), and the role.

    ``key_id`` is the API key's id and ``expires_at`` the token's expiry: what a console session
    opened with the credential checks again at each request (:mod:`server.console.sessions`).
    """

    actor: str
    role: str
    key_id: int | None = None
    expires_at: datetime | None = None


class NoRole(Problem):
    """A valid OIDC token that grants no lungcds role (403); ``actor`` names its subject for the audit trail."""

    def __init__(self, actor: str, role_claim: str) -> None:
        super().__init__(403, "No lungcds role", f"the token grants none of the roles in claim {role_claim!r}")
        self.actor = actor


def _secret(bearer: HTTPAuthorizationCredentials | None, api_key: str | None) -> str | None:
    return bearer.credentials if bearer is not None else api_key


async def presented_secret(request: Request) -> str | None:
    """The credential the request presents in its headers, if any."""
    return _secret(await BEARER(request), await API_KEY_HEADER(request))


async def authenticate(request: Request, secret: str | None) -> Principal:
    """The verified caller presenting ``secret``, once per request (401 without valid credentials).

    403 for an OIDC token that grants no lungcds role.  The key lookup or token check runs
    in a worker thread, off the event loop.
    """
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    if not secret:
        raise Problem(401, "Authentication required", "send an API key or token as 'Authorization: Bearer ...'")
    principal = await run_in_threadpool(_verify, request, secret)
    request.state.principal = principal
    return principal


def verify_secret(engine: Engine, verifier: OidcVerifier | None, role_claim: str, secret: str) -> Principal:
    """The caller an API key or OIDC access token speaks for (blocking: the key lookup reads the database).

    The one check of a credential: every REST request's, and the console's login form's.

    Raises
    ------
    Problem
        401 for an unknown or revoked key, or a token that does not verify.
    NoRole
        403 for a valid token that grants no lungcds role.
    """
    if verifier is not None and looks_like_jwt(secret):
        try:
            identity = verifier.verify(secret)
        except TokenRejected as exc:
            raise Problem(401, "Invalid token", str(exc)) from exc
        actor = f"oidc:{identity.subject}"
        if identity.role is None:
            raise NoRole(actor, role_claim)
        return Principal(actor=actor, role=identity.role, expires_at=identity.expires_at)
    with Session(engine) as session:
        key = verify_api_key(session, secret)
    if key is None:
        raise Problem(401, "Invalid API key", "the API key is unknown or revoked")
    return Principal(actor=f"apikey:{key.id}", role=key.role, key_id=key.id)


def _verify(request: Request, secret: str) -> Principal:
    """:func:`verify_secret` for one request; who it was is kept for the audit trail, even when refused."""
    app_state = request.app.state
    try:
        principal = verify_secret(app_state.engine, app_state.oidc, app_state.settings.oidc_role_claim, secret)
    except NoRole as exc:
        request.state.actor, request.state.role = exc.actor, None
        raise
    request.state.actor, request.state.role = principal.actor, principal.role
    return principal


async def current_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    api_key: Annotated[str | None, Security(API_KEY_HEADER)],
) -> Principal:
    """The authenticated caller; 401 without valid credentials, 403 for a token without a role."""
    return await authenticate(request, _secret(bearer, api_key))


async def require_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The caller if they have the admin role; 403 otherwise."""
    if principal.role != "admin":
        raise Problem(
            403, "Admin role required", f"this action needs the admin role, the caller has {principal.role!r}"
        )
    return principal


Viewer = Annotated[Principal, Depends(current_principal)]
Admin = Annotated[Principal, Depends(require_admin)]


async def json_object(request: Request) -> dict[str, object]:
    """The request body as a JSON object, parsed in a worker thread (415, 422 problems).

    The body is read only here, after the route's other dependencies (declare the caller
    first), and never beyond the request body limit (:class:`server.api.admission.BodyLimit`).
    """
    message = Message()
    message["content-type"] = request.headers.get("content-type", "")
    if message.get_content_type() != "application/json":
        raise Problem(415, "Unsupported media type", "send the body as application/json")
    return await run_in_threadpool(_parsed, await request.body())


#: Most values (objects, arrays, strings, numbers ...) an admin body may hold; ours need dozens.
MAX_JSON_VALUES = 10_000


def _parsed(raw: bytes) -> dict[str, object]:
    """``raw`` as a JSON object of at most :data:`MAX_JSON_VALUES` values (blocking: run in a thread).

    The count is checked before any model sees the document: validating a 1 MiB body of half a
    million values holds the interpreter lock for a second and answers tens of megabytes of errors.
    """
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Problem(422, "Invalid JSON", f"the body is not a JSON document: {exc}") from exc
    if not isinstance(document, dict):
        raise Problem(422, "Invalid request", f"the body must be a JSON object, not {type(document).__name__}")
    if not _at_most(document, MAX_JSON_VALUES):
        raise Problem(422, "Invalid request", f"the body holds more than {MAX_JSON_VALUES} JSON values")
    return document


def _at_most(document: object, limit: int) -> bool:
    """True when ``document`` holds at most ``limit`` values, counting no further than ``limit + 1``."""
    pending, count = [document], 0
    while pending:
        value = pending.pop()
        count += 1
        if count > limit:
            return False
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return True


JsonObject = Annotated[dict[str, object], Depends(json_object)]

ModelT = TypeVar("ModelT", bound=BaseModel)


def json_body(model: type[ModelT]) -> Callable[[dict[str, object]], Awaitable[ModelT]]:
    """A dependency giving the request body as ``model``, parsed and validated in worker threads.

    Use it instead of a pydantic body parameter, which FastAPI parses and validates on the event
    loop: a 1 MiB body with a hundred thousand invalid keys would stall every other request,
    the liveness probe included, for seconds.  Document the body with :func:`json_request_body`.
    """

    async def body(document: JsonObject) -> ModelT:
        return await run_in_threadpool(_validated, model, document)

    return body


def _validated(model: type[ModelT], document: dict[str, object]) -> ModelT:
    """``document`` as ``model``; a 422 problem naming every invalid field (blocking: run in a thread)."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise Problem(422, "Invalid request", validation_detail(exc.errors())) from exc


def json_request_body(model: type[BaseModel], *, partial: bool = False) -> dict[str, Any]:
    """``openapi_extra`` documenting a body shaped like ``model`` (``partial``: any subset).

    For routes reading their body with :func:`json_body` or :data:`JsonObject`.  The schema is
    inlined (no ``$defs``), so the document needs no extra components.
    """
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    body = inline(schema)
    if partial:
        body.pop("required", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}
