"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.audit import AuditUnavailable
from server.services.admin import Conflict, Gone, Invalid, NotFound, ServiceError

__all__ = ["PROBLEM_JSON", "Problem", "install_problem_handlers", "problem_response", "validation_detail"]

PROBLEM_JSON = "application/problem+json"


class Problem(StarletteHTTPException):
    """An error answered as ``application/problem+json`` (RFC 9457 section 3).

    An HTTP exception, so that it passes unchanged through FastAPI's own body reading (a
    body limit reached while FastAPI reads a body must stay a 413, not become a 400).
    """

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(status_code=status, detail=detail)
        self.status, self.title = status, title


def problem_response(problem: Problem, instance: str, *, close: bool = False) -> JSONResponse:
    """``problem`` as a response; ``close`` asks the client to close the connection.

    Refusals answered before the request body was read close the connection, so that the
    rest of an unwanted body is not read and thrown away.
    """
    body = {
        "type": "about:blank",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else {}
    if close:
        headers["Connection"] = "close"
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_JSON, headers=headers)


def validation_detail(errors: Sequence[Any]) -> str:
    """Pydantic's ``errors()`` in one line, ``location: message; ...``, for the detail of a 422 problem."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)


#: HTTP status of each refusal of the write services (:mod:`server.services.admin`).
SERVICE_STATUS: dict[type[ServiceError], int] = {NotFound: 404, Conflict: 409, Invalid: 422, Gone: 410}


def install_problem_handlers(app: FastAPI) -> None:
    """Answer our problems, the services' refusals, HTTP errors and validation errors as problem details."""

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        status = next((code for kind, code in SERVICE_STATUS.items() if isinstance(exc, kind)), 400)
        return problem_response(Problem(status, exc.title, exc.detail), request.url.path)

    @app.exception_handler(AuditUnavailable)
    async def _unaudited(request: Request, exc: AuditUnavailable) -> JSONResponse:
        """A service could not audit its change, so it made none (as :func:`server.api.auditing.record_change`)."""
        title = "Insufficient storage" if exc.status == 507 else "Audit trail unavailable"
        return problem_response(Problem(exc.status, title, f"nothing was changed: {exc.reason}"), request.url.path)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(Problem(exc.status_code, str(exc.detail), str(exc.detail)), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(Problem(422, "Invalid request", validation_detail(exc.errors())), request.url.path)
