"""The admin console in a real browser on a network without internet (issue 18).

Debian's Chromium, driven by Playwright, uses ``/console`` of a running ``lungcds serve`` with every
request to another host refused, as on a hospital network without internet.  A chest CT of 5 mm
slices, sent over DICOM with DCMTK's ``storescu``, is turned away by the default rules (3 mm).  An
admin logs in with an API key, finds the series by the patient's name, analyses it anyway with a
reason, adds a destination (our own SCP) and tests it with a C-ECHO, and finds each action in the
audit trail; a viewer logs in and finds the same pages without a single admin action.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest

from models.phantom import chest_phantom, write_ct_series
from tests.integration.test_docs_browser import CHROMIUM, Tab
from tests.peers import PROJECT_ROOT, LungcdsProcess, copy_series, lungcds_command, start_lungcds, storescu, wait_for

pytestmark = pytest.mark.integration

REASON = "5 mm is all the emergency scanner makes; the team accepts the caveat (ticket 4711)"
ACCESSION = "ACC-CONSOLE-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LungcdsProcess]:
    """``lungcds serve`` without a worker: the console's actions queue jobs, nothing needs to analyse them."""
    env = {"LUNGCDS_NOTIFY_NOT_ANALYSED": "false", "LUNGCDS_SERIES_IDLE_SECONDS": "2"}
    process = start_lungcds(tmp_path_factory.mktemp("console") / "lungcds", worker=False, extra_env=env)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def viewer_key(server: LungcdsProcess) -> str:
    created = subprocess.run(
        lungcds_command("apikey", "create", "--role", "viewer"),
        env=server.env,
        capture_output=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    return created.stdout.decode().strip().splitlines()[-1]


@pytest.fixture(scope="module")
def rejected(server: LungcdsProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 5 mm chest CT of Console^Carla sent with storescu and turned away by the default rules: its UID."""
    if not Path("/usr/bin/storescu").is_file():
        pytest.skip("DCMTK's storescu is not installed (.ci/run installs dcmtk)")
    folder = tmp_path_factory.mktemp("thick")
    phantom = chest_phantom(shape_zyx=(40, 96, 96), spacing_zyx=(5.0, 3.6, 3.6))
    written = write_ct_series(
        phantom,
        None,
        folder / "written",
        patient_id="CONSOLE-PID",
        patient_name="Console^Carla",
        patient_age="061Y",
        patient_sex="F",
        slice_thickness=5.0,
    )
    files = copy_series(written, folder / "sent", ACCESSION)
    sent = storescu(server.dicom_port, files)
    assert sent.returncode == 0, sent.stderr
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    wait_for(lambda: (server.series(uid) or {}).get("state") == "rejected", 60, 0.5, "the series to be rejected")
    return uid


@pytest.fixture
def tab(server: LungcdsProcess) -> Iterator[Tab]:
    """A fresh browser (no cookies) whose requests to any host but our server are refused and noted."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (.ci/run installs Debian's chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(accept_downloads=False)
        opened = Tab(context.new_page())

        def only_our_server(route: Any) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                opened.outside.append(route.request.url)
                route.abort()

        opened.page.route("**/*", only_our_server)
        yield opened
        browser.close()


def _log_in(tab: Tab, server: LungcdsProcess, key: str) -> str:
    """Open the console, land on the login form, log in with ``key``; the console's base URL."""
    base = f"http://127.0.0.1:{server.api_port}/console"
    page = tab.page
    page.goto(f"{base}/")
    assert urlsplit(page.url).path == "/console/login", "a stranger is sent to the login form"
    page.fill("#credential", key)
    page.click("form[action='/console/login'] button[type=submit]")
    page.wait_for_url(f"{base}/")
    cookie = next(c for c in page.context.cookies() if c["name"] == "lungcds_console")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/console")
    header = page.evaluate("getComputedStyle(document.querySelector('header.top')).backgroundColor")
    assert header == "rgb(31, 95, 153)", "our own style sheet is applied"
    return base


def test_an_admin_overrides_the_rules_for_a_series_and_adds_a_destination(
    tab: Tab, server: LungcdsProcess, rejected: str
) -> None:
    page = tab.page
    base = _log_in(tab, server, server.api_key)
    assert int(page.inner_text("#received-today")) >= 1

    page.click("header nav >> text=Series")
    page.fill("input[name=q]", "carla console")
    page.click("form[role=search] button[type=submit]")
    row = page.locator("#series-table tbody tr").first
    text = row.inner_text()
    assert "Console, Carla" in text and "CONSOLE-PID" in text and ACCESSION in text and "Not eligible" in text
    row.locator("a").first.click()
    page.wait_for_url(f"{base}/series/{rejected}")
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in page.inner_text("#reasons")

    page.fill("#override-reason", REASON)
    page.click("#override-submit")
    page.wait_for_selector("#override")
    assert page.inner_text("#series-state") == "Queued"
    assert REASON in page.inner_text("#override")
    assert "Queued for analysis although not eligible" in page.inner_text(".notice.ok")
    job = (server.series(rejected) or {})["job"]
    assert job["state"] == "queued" and job["eligibility_override"]["reason"] == REASON, "the REST API agrees"

    page.click("header nav >> text=Destinations")
    page.fill("#address", f"SELF@127.0.0.1:{server.dicom_port}")
    page.click("#add-destination button[type=submit]")
    assert f"Destination SELF@127.0.0.1:{server.dicom_port} added" in page.inner_text(".notice.ok")
    assert f"SELF@127.0.0.1:{server.dicom_port}" in page.inner_text("#destinations")
    page.click("button[name=echo][value=SELF]")
    assert "answered the C-ECHO" in page.inner_text(".notice.ok"), "our own SCP answers"

    page.click("header nav >> text=Audit trail")
    trail = page.inner_text("#audit")
    for action in (
        "POST /console/series/{series_uid}/reevaluate",
        "POST /console/destinations",
        "re-evaluate series",
        "create destination",
    ):
        assert action in trail
    assert tab.outside == [], "the console asked another host for something"


def test_a_viewer_reads_every_page_and_sees_no_admin_action(
    tab: Tab, server: LungcdsProcess, rejected: str, viewer_key: str
) -> None:
    page = tab.page
    base = _log_in(tab, server, viewer_key)
    assert "Audit trail" not in page.inner_text("header nav")
    for path in (f"/series/{rejected}", "/series", "/jobs", "/destinations", "/rules", "/models", "/"):
        page.goto(f"{base}{path}")
        assert page.locator("#admin-actions, #add-destination, #rules-editor").count() == 0, path
        assert page.locator("form[method=post]").count() == 1, f"{path}: only the logout form"
        assert page.locator("button:has-text('Analyse anyway'), button:has-text('Test (C-ECHO)')").count() == 0
    page.goto(f"{base}/series/{rejected}")
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in page.inner_text("main"), "a reason, or the reason overridden"
    refused = page.goto(f"{base}/audit")
    assert refused is not None and refused.status == 403
    assert page.inner_text("h1") == "Admin role required" and "needs the admin role" in page.inner_text("#refusal")
    assert tab.outside == [], "the console asked another host for something"
