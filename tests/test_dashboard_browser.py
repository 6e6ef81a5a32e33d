"""A real browser on the dashboard: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

It opens the overview, follows the demo model to its alert, clicks through to the diagnosis and
finds the culprit feature named, and follows the incident detection opened from the incidents list to
its page and its diagnosis; screenshots go to ``test-artifacts/``. It skips, saying why, when
the browser or the ``playwright`` package is missing (no browser is ever downloaded).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
READ, WRITE = "browser-reader", "browser-writer"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")
pytest.importorskip("plotly")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory, serve_app: Any) -> Iterator[str]:
    import httpx

    from mlsleuth.server import AlertRule, IncidentSettings, Scope, ServerConfig, create_app
    from mlsleuth.testing import demo_case, ingest_case

    root = tmp_path_factory.mktemp("browser")
    ingest_case(demo_case(0, rows=40_000).write(root / "case"), root / "store").close()

    rule = AlertRule("fraud-score-drift", "fraud", "prediction_drift", column="score", window=timedelta(hours=1))

    def build(base: str) -> Any:
        return create_app(ServerConfig(store=root / "store", tokens={READ: Scope.READ, WRITE: Scope.WRITE},
                                       rules=(rule,), alert_interval=0, public_url=base,
                                       incidents=IncidentSettings(enabled=False)))

    with serve_app(build) as base:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {WRITE}"}, trust_env=False) as c:
            sent = c.post("/v1/alerts/evaluate", timeout=120).json()["sent"]
            assert len(sent) == 1, sent
            opened = c.post("/v1/incidents/check", timeout=300).json()["changes"]
            assert [ch["kind"] for ch in opened] == ["opened"], opened
        yield base


@pytest.mark.slow
def test_browser_finds_the_demo_incident_and_its_culprit(demo_server: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{demo_server}/login")  # the token goes in the form's body, never in the URL
            page.fill("#login input[name=token]", READ)
            with page.expect_navigation():
                page.click("#login button[type=submit]")
            assert "Models" in page.content()
            assert READ not in str(page.context.cookies())  # the cookie is a session id, not the token
            page.click("a.model-link:text('fraud')")
            page.wait_for_selector("#drift .plot-container", timeout=60_000)  # plotly.js drew the heat map
            page.screenshot(path=str(ARTIFACTS / "dashboard-model.png"), full_page=True)
            page.click("a.incident-link")
            page.wait_for_selector("#verdict", timeout=120_000)
            assert page.inner_text("#verdict") == "incident"
            culprits = page.locator(".hypothesis").first.locator(".culprit").all_inner_texts()
            assert any("feature.amount_to_avg_ratio" in c for c in culprits), culprits
            assert "upstream_data_change" in page.locator(".hypothesis h3").first.inner_text()
            page.screenshot(path=str(ARTIFACTS / "dashboard-incident.png"), full_page=True)
            with page.expect_navigation():
                page.click("#postmortem-md")
            assert "Post-mortem" in page.content()
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard-incident.png").stat().st_size > 10_000


@pytest.mark.slow
def test_browser_follows_the_open_incident_from_the_overview_to_its_diagnosis(demo_server: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{demo_server}/login")
            page.fill("#login input[name=token]", READ)
            with page.expect_navigation():
                page.click("#login button[type=submit]")
            with page.expect_navigation():
                page.click("header a:text('incidents')")
            assert page.locator("table.incidents td.cause").all_inner_texts() == ["upstream_data_change"]
            with page.expect_navigation():
                page.click("a.incident-page-link")
            assert page.inner_text("#incident-status") == "open"
            culprits = page.locator("#top-cause .culprit").all_inner_texts()
            assert any("feature.amount_to_avg_ratio" in c for c in culprits), culprits
            assert "opened" in page.inner_text("#incident-history")
            page.screenshot(path=str(ARTIFACTS / "dashboard-incident-page.png"), full_page=True)
            with page.expect_navigation():
                page.click("#incident-diagnosis")
            page.wait_for_selector("#verdict", timeout=120_000)
            assert page.inner_text("#verdict") == "incident"
            assert "upstream_data_change" in page.locator(".hypothesis h3").first.inner_text()
        finally:
            browser.close()
