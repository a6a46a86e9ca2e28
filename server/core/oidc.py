"""OAuth2 / OpenID Connect bearer tokens, validated offline against the issuer's JWKS file.

Hospitals run their own identity provider; the API accepts its access tokens (JWT) next to API
keys.  Validation needs no network: the signing keys come from a JWKS file the operator
exports from the issuer (and refreshes when keys rotate).  A token is accepted only when its
signature verifies with a key of that set, its issuer and audience are the configured ones and
it has not expired; its role claim maps to our roles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

__all__ = ["OidcVerifier", "TokenRejected", "TokenIdentity", "looks_like_jwt"]

#: Asymmetric algorithms only: an HMAC "key" published in a JWKS would be a shared secret.
_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class TokenRejected(Exception):
    """A bearer token that is not acceptable, with the reason (shown to the caller, never the token)."""


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid token speaks for, the lungcds role it grants (None: no lungcds role), and until when.

    ``expires_at`` (the ``exp`` claim) bounds a console session opened with the token.
    """

    subject: str
    role: str | None
    expires_at: datetime | None = None


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments: a JWT, as opposed to one of our ``lcds_`` API keys."""
    return token.count(".") == 2 and not token.startswith("lcds_")


class OidcVerifier:
    """Checks JWT bearer tokens of one issuer.

    Parameters
    ----------
    issuer, audience : str
        Expected ``iss`` and ``aud`` claims.
    jwks_file : pathlib.Path
        The issuer's JSON Web Key Set.
    role_claim : str
        Claim holding the user's roles or groups (a string or a list).
    admin_values, viewer_values : tuple of str
        Claim values that grant the admin and the viewer role.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_file: Path,
        *,
        role_claim: str = "roles",
        admin_values: tuple[str, ...] = ("lungcds-admin",),
        viewer_values: tuple[str, ...] = ("lungcds-viewer",),
    ) -> None:
        self.issuer, self.audience, self.role_claim = issuer, audience, role_claim
        self.admin_values, self.viewer_values = set(admin_values), set(viewer_values)
        try:
            self._keys = jwt.PyJWKSet.from_json(jwks_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, jwt.PyJWKSetError) as exc:
            raise ValueError(f"cannot read the JWKS file {jwks_file}: {exc}") from exc

    def _key_for(self, token: str) -> Any:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise TokenRejected(f"malformed token: {exc}") from exc
        kid = header.get("kid")
        candidates = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if not candidates:
            raise TokenRejected(f"no key {kid!r} in the issuer's key set")
        return candidates[0]

    def verify(self, token: str) -> TokenIdentity:
        """The identity of a valid token; raises :class:`TokenRejected` saying why not."""
        key = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=list(_ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(f"invalid token: {exc}") from exc
        values = claims.get(self.role_claim, [])
        granted = {values} if isinstance(values, str) else set(values) if isinstance(values, list) else set()
        role = "admin" if granted & self.admin_values else "viewer" if granted & self.viewer_values else None
        expires_at = datetime.fromtimestamp(float(claims["exp"]), UTC)
        return TokenIdentity(subject=str(claims["sub"]), role=role, expires_at=expires_at)
