"""The OpenAPI document as real gunicorn and waitress serve it, and Swagger UI, served locally and working offline
in a browser."""

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from openapi_spec_validator import validate


def test_openapi_served_reflects_the_environment(server):
    document = requests.get(f"{server.url}/openapi.json", timeout=5).json()
    validate(document)
    batch = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"][1]
    assert batch["maxItems"] == 5


# ---- Swagger UI


def test_swagger_ui_page_and_assets_are_served_locally(server):
    redirect = requests.get(f"{server.url}/docs", allow_redirects=False, timeout=5)
    assert redirect.status_code == 308 and urlsplit(redirect.headers["Location"]).path == "/docs/"
    page = requests.get(f"{server.url}/docs/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"} <= set(assets)
    for asset in assets:
        assert not urlsplit(asset).netloc, f"{asset} is not served by the service"
        response = requests.get(f"{server.url}{asset}", timeout=5)
        assert response.status_code == 200 and response.content, asset
    # Absolute URLs in the page may only point back to the service (the OAuth2 redirect page).
    for url in re.findall(r"https?://[^\"'\s]+", page.text):
        assert url.startswith(f"{server.url}/docs/"), url
    config = json.loads(re.search(r"var user_config = (\{.*?\});", page.text).group(1))
    assert config["url"] == "/openapi.json"
    # Swagger UI otherwise sends the document's address to validator.swagger.io for its badge.
    assert "validatorUrl" in config and config["validatorUrl"] is None
    # Swagger UI reads OpenAPI 3.1 from version 5 on.
    version = requests.get(f"{server.url}/docs/VERSION", timeout=5).text.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 5, version


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.browser
def test_swagger_ui_works_offline_in_a_browser(server, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not installed: make test installs it (scripts/install_debian.sh)")
    from playwright.sync_api import sync_playwright

    # A host name other than localhost, as in production: Swagger UI skips some calls for localhost.
    host = "churn.test"
    origin = server.url.replace("127.0.0.1", host)
    outside = []

    def keep_local(route):
        if route.request.url.startswith(f"{origin}/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--host-resolver-rules=MAP {host} 127.0.0.1",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page()
            page.route("**/*", keep_local)
            page.goto(f"{origin}/docs/")
            operation = page.locator("#operations-Prediction-post_predict")
            operation.locator(".opblock-summary").click()
            operation.locator("button.try-out__btn").click()
            operation.locator("button.execute").click()
            status = operation.locator(".live-responses-table tbody .response-col_status").first
            status.wait_for(timeout=15_000)
            assert status.inner_text().strip().startswith("200")
            body = operation.locator(".live-responses-table tbody .microlight").first.inner_text()
            assert '"churn_probability"' in body
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert {p.replace("\u200b", "") for p in paths} >= {"/predict", "/health/ready", "/model", "/metrics"}
            page.screenshot(path=tmp_path / "docs.png", full_page=True)
        finally:
            browser.close()
    assert outside == []
