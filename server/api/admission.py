"""What a request passes before the application reads its body: its size, then its caller.

Two pure ASGI middlewares (they see the body as it streams in, which a ``BaseHTTPMiddleware``
does not):

* :class:`BodyLimit` refuses a body declared (``Content-Length``) larger than the route's
  limit with 413 before anything is read, and counts a body of undeclared length (chunked)
  while the application reads it, refusing it at the first byte over the limit.  Nothing is
  ever buffered beyond the limit.
* :class:`AuthenticateFirst` authenticates every request that can change something (any
  method but GET, HEAD and OPTIONS) or that carries a body, before the application sees it:
  anonymous callers and bad credentials are refused 401 (403: a token without a lungcds role)
  without a byte of the body read or parsed, whatever it holds.

Both refusals close the connection, so the rest of an unwanted upload is not even received.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.deps import authenticate, presented_secret
from server.api.problems import Problem, problem_response

__all__ = ["SAFE_METHODS", "AuthenticateFirst", "BodyLimit", "has_body"]

#: Methods that change nothing (RFC 9110 section 9.2.1).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _declared_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def has_body(scope: Scope) -> bool:
    """Whether the request carries a body (a positive ``Content-Length``, or chunked)."""
    declared = _declared_length(scope)
    return bool(declared) or (declared is None and "transfer-encoding" in Headers(scope=scope))


class BodyLimit:
    """Request bodies of at most ``limit`` bytes; ``larger`` grants some routes more.

    Parameters
    ----------
    app : ASGIApp
        The application.
    limit : int
        Bytes any request body may have.
    larger : sequence of (method, path template, bytes)
        Routes with their own limit, e.g. ``("PUT", "/api/v1/models/{name}/weights", 2**31)``.
    """

    def __init__(self, app: ASGIApp, *, limit: int, larger: Sequence[tuple[str, str, int]] = ()) -> None:
        self.app = app
        self._limit = limit
        self._larger = [(method, compile_path(path)[0], size) for method, path, size in larger]

    def limit_for(self, method: str, path: str) -> int:
        """The body limit of one request."""
        for route_method, pattern, size in self._larger:
            if method == route_method and pattern.match(path):
                return size
        return self._limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        too_large = Problem(
            413,
            "Content too large",
            f"the request body exceeds the limit of {limit} bytes of this route "
            "(LUNGCDS_MAX_REQUEST_BODY_KB; weights uploads: LUNGCDS_MAX_WEIGHTS_UPLOAD_MB; "
            "STOW-RS: LUNGCDS_MAX_STOW_REQUEST_MB)",
        )
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await problem_response(too_large, scope["path"], close=True)(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and received > limit:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted_receive, closing_send)


class AuthenticateFirst:
    """Authenticate changes and requests with a body before the application reads anything.

    The caller is cached on the request (:func:`server.api.deps.authenticate`), so the
    routes' :data:`~server.api.deps.Viewer` and :data:`~server.api.deps.Admin` reuse it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"] in SAFE_METHODS and not has_body(scope)):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            await authenticate(request, await presented_secret(request))
        except Problem as exc:
            await problem_response(exc, scope["path"], close=has_body(scope))(scope, receive, send)
            return
        await self.app(scope, receive, send)
