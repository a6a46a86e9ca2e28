"""The API documentation page in a real browser on a network without internet (issue 18, part 2).

Debian's Chromium, driven by Playwright, opens ``/api/v1/docs`` of a running ``lungcds serve`` with
every request to another host refused, as on a hospital network without internet: Swagger UI must
render from our own assets, offer the Authorize button, and "Try it out" on ``GET /series`` must
answer 401 before and 200 after authorizing with an API key.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.peers import LungcdsProcess, start_lungcds

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Swagger UI's element id of GET /series (tag "series", FastAPI's operation id).
OPERATION = "operations-series-list_series_api_v1_series_get"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LungcdsProcess]:
    process = start_lungcds(tmp_path_factory.mktemp("docs") / "lungcds", worker=False)
    yield process
    process.stop()


@dataclass
class Tab:
    """A browser page and the addresses on other hosts it asked for (each refused)."""

    page: Any
    outside: list[str] = field(default_factory=list)


@pytest.fixture
def tab(server: LungcdsProcess) -> Iterator[Tab]:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (.ci/run installs Debian's chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context()
        opened = Tab(context.new_page())

        def only_our_server(route: Any) -> None:
            host = urlsplit(route.request.url).hostname
            if host == "127.0.0.1":
                route.continue_()
            else:
                opened.outside.append(route.request.url)
                route.abort()

        opened.page.route("**/*", only_our_server)
        yield opened
        browser.close()


def test_the_docs_render_offline_and_try_it_out_works_after_authorize(tab: Tab, server: LungcdsProcess) -> None:
    page = tab.page
    base = f"http://127.0.0.1:{server.api_port}"
    page.goto(f"{base}/api/v1/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "lungcds" in page.inner_text(".swagger-ui .info .title")
    assert tab.outside == [], "the page asked another host for something"

    operation = page.locator(f"#{OPERATION}")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    status = f"#{OPERATION} .live-responses-table tbody .response-col_status"
    page.wait_for_selector(status, timeout=30_000)
    assert page.locator(status).first.inner_text().split() == ["401"], "a documented answer"

    page.locator("button.authorize").first.click()
    dialog = page.locator(".dialog-ux")
    dialog.locator("input").first.fill(server.api_key)
    dialog.locator("button.authorize").first.click()
    dialog.locator("button.btn-done").first.click()
    operation.locator("button.execute").click()
    first_word = "selector => document.querySelector(selector)?.innerText.trim().split(/\\s+/)[0]"
    page.wait_for_function(f"{first_word} === '200'", arg=status, timeout=30_000)
    assert tab.outside == []
