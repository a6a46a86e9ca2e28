"""The API documentation page needs nothing from another host and its static files are not audited (issue 18, part 2).

The browser check (Chromium with every other host refused, Authorize and "Try it out") is in
tests/integration/test_docs_browser.py.
"""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.api.main import create_app
from server.core.config import Settings
from server.db_models import AuditEvent


def test_the_docs_page_loads_every_asset_from_us(settings: Settings, engine: Engine) -> None:
    client = TestClient(create_app(settings, engine))
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*'([^']+)'""", page.text)
    referenced = [a or b for a, b in urls]
    assert referenced and all(url.startswith("/api/v1/") for url in referenced), referenced
    for url in referenced:
        assert client.get(url).status_code == 200, url
    bundle = client.get("/api/v1/docs/assets/swagger-ui-bundle.js").text
    assert re.search(r'"5\.\d+\.\d+"', bundle), "Swagger UI 5: version 4 cannot read OpenAPI 3.1"
    spec = client.get("/api/v1/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    assert set(spec["paths"]["/api/v1/series"]["get"]["responses"]) >= {"200", "401", "403"}
    assert "401" not in spec["paths"]["/api/v1/health"]["get"]["responses"]


def test_the_docs_assets_do_not_flood_the_audit_trail(settings: Settings, engine: Engine) -> None:
    client = TestClient(create_app(settings, engine))
    client.get("/api/v1/docs/assets/swagger-ui.css")
    client.get("/api/v1/docs")
    with Session(engine) as session:
        targets = [event.target for event in session.exec(select(AuditEvent)).all()]
    assert "/api/v1/docs" in targets, "the page itself is a request like any other"
    assert not any(target.startswith("/api/v1/docs/assets/") for target in targets)
