"""OIDC bearer tokens validated against the issuer's JWKS file: roles, expiry, audience, keys."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm
from sqlalchemy.engine import Engine

from server.api.main import create_app
from server.core.config import Settings

ISSUER, AUDIENCE = "https://idp.hospital.example/realms/radiology", "lungcds"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def issuer_key() -> rsa.RSAPrivateKey:
    return _key()


@pytest.fixture
def client(settings: Settings, engine: Engine, issuer_key: rsa.RSAPrivateKey, tmp_path: Path) -> TestClient:
    jwk = json.loads(RSAAlgorithm.to_jwk(issuer_key.public_key()))
    jwk.update({"kid": "key-1", "use": "sig", "alg": "RS256"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_file = ISSUER, AUDIENCE, jwks
    return TestClient(create_app(settings, engine))


def _token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "dr.house",
        "iat": now,
        "exp": now + 300,
        "roles": ["lungcds-viewer"],
    }
    body.update(claims)
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, algorithm="RS256", headers={"kid": "key-1"}
    )


def _get(client: TestClient, path: str, token: str) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def test_roles_come_from_the_role_claim(client: TestClient, issuer_key: rsa.RSAPrivateKey) -> None:
    viewer = _token(issuer_key)
    admin = _token(issuer_key, sub="pacs.admin", roles=["staff", "lungcds-admin"])
    assert _get(client, "/api/v1/series", viewer).status_code == 200
    assert _get(client, "/api/v1/audit", viewer).status_code == 403
    assert _get(client, "/api/v1/audit", admin).status_code == 200
    audit = _get(client, "/api/v1/audit", admin)  # the previous request is in the trail now
    actors = [e["actor"] for e in audit.json()["items"]]
    assert "oidc:dr.house" in actors and "oidc:pacs.admin" in actors


@pytest.mark.parametrize(
    ("claims", "status", "words"),
    [
        ({"exp": int(time.time()) - 10}, 401, "expired"),
        ({"aud": "another-app"}, 401, "audience"),
        ({"iss": "https://evil.example"}, 401, "issuer"),
        ({"roles": ["nurse"]}, 403, "none of the roles"),
        ({"sub": None}, 401, "sub"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(
    client: TestClient, issuer_key: rsa.RSAPrivateKey, claims: dict[str, Any], status: int, words: str
) -> None:
    response = _get(client, "/api/v1/series", _token(issuer_key, **claims))
    assert response.status_code == status
    assert words in response.json()["detail"].lower()


def test_a_token_signed_by_another_key_is_refused(client: TestClient) -> None:
    response = _get(client, "/api/v1/series", _token(_key()))
    assert response.status_code == 401 and "invalid token" in response.json()["detail"].lower()


def test_hmac_tokens_are_refused(client: TestClient) -> None:
    forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60}, "secret" * 6)
    assert _get(client, "/api/v1/series", forged).status_code == 401


def test_api_keys_keep_working_beside_tokens(client: TestClient, engine: Engine) -> None:
    from server.core.db import session_scope
    from server.core.security import create_api_key

    with session_scope(engine) as session:
        key = create_api_key(session, "viewer").secret
    assert _get(client, "/api/v1/series", key).status_code == 200
