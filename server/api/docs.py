"""Interactive API documentation that works on a hospital network without internet (issue 18, part 2).

FastAPI's default ``/docs`` page loads Swagger UI from a CDN, so on a network without internet it
is blank.  Here the page is FastAPI's own (:func:`fastapi.openapi.docs.get_swagger_ui_html`), but
its script, style sheet and icon are served by us from the Swagger UI 5 build packaged on PyPI as
``swagger-ui-py`` (Swagger UI 4 cannot read the OpenAPI 3.1 document FastAPI writes): nothing the
page needs comes from another host.  The security schemes of
the OpenAPI document (:data:`server.api.deps.BEARER`, :data:`server.api.deps.API_KEY_HEADER`) give
the page its Authorize button, so "Try it out" sends the key.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["install_docs"]

#: Swagger UI's distribution files (swagger-ui-dist) as the swagger-ui-py package ships them.
SWAGGER_UI_ASSETS = files("swagger_ui") / "static"


def install_docs(app: FastAPI, docs_url: str, assets: str, openapi_url: str) -> None:
    """Serve Swagger UI at ``docs_url`` with its assets under the path prefix ``assets``."""
    assets = assets.rstrip("/")
    app.mount(assets, StaticFiles(directory=str(SWAGGER_UI_ASSETS)), name="docs-assets")

    @app.get(docs_url, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": False},
        )
