"""The operations page's data in Azure, behind App Service authentication
(proactive/api/page_auth.py, page_data.py): served only where the platform
says authentication is on, to a user with the app role, actions only with
the page's header; through the built-in host with keys, against Azurite.
App Service's part (signing the user in, passing X-MS-CLIENT-PRINCIPAL) is
played by the test, in the header format Microsoft documents
(learn.microsoft.com/azure/app-service/configure-authentication-user-identities)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proactive.runtime import Runtime
from proactive.worker import process
from proactive_devtools.processes import Azurite
from tests.api_support import ApiApp, api_app
from tests.test_api import queued

ROLE = "Proactive.Operations"
USERS = [f"00000000-0000-0000-0000-{i:012d}" for i in range(2)]


def principal(*roles: str) -> str:
    """X-MS-CLIENT-PRINCIPAL as App Service sends it: base64 JSON of the claims."""
    body = {"auth_typ": "aad", "name_typ": "name",
            "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
            "claims": [{"typ": "name", "val": "Ada Operator"},
                       *({"typ": "roles", "val": role} for role in roles)]}
    return base64.b64encode(json.dumps(body).encode()).decode()


@pytest.fixture(scope="module")
def signed(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiApp]:
    # CONTAINER_NAME (set in some CI containers) beside a WEBSITE_* variable would
    # make the app believe it runs in Azure, where local development mode is refused.
    with api_app(azurite, tmp_path_factory.mktemp("signin"), WEBSITE_AUTH_ENABLED="True",
                 CONTAINER_NAME="") as running:
        yield running


@pytest.fixture(scope="module")
def plain(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiApp]:
    with api_app(azurite, tmp_path_factory.mktemp("nosignin")) as running:
        yield running


@pytest.fixture(scope="module")
def app(signed: ApiApp) -> ApiApp:
    """The app conftest's `rt` reads what the API wrote from: the signed one."""
    return signed


def get(app: ApiApp, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{app.base}ui/data/{path}", headers=headers, timeout=20)


def post(app: ApiApp, path: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{app.base}ui/data/{path}", headers=headers, timeout=20)


def test_without_app_service_authentication_a_forged_principal_gets_nothing(
        plain: ApiApp) -> None:
    r = get(plain, "sends", **{"X-MS-CLIENT-PRINCIPAL": principal(ROLE)})
    assert r.status_code == 404 and r.json()["reason"] == "sign-in-off"


async def test_signed_in_with_the_role_reads_and_acts_only_with_the_page_header(
        signed: ApiApp, rt: Runtime) -> None:
    await process(rt, json.dumps({"version": 1, "op": "send", "key": "si-1",
                                  "to": {"users": USERS}, "text": "hi"}), message_id="1")
    assert get(signed, "sends").status_code == 401
    assert get(signed, "sends", **{"X-MS-CLIENT-PRINCIPAL": "not base64 json"}).status_code \
        == 401
    r = get(signed, "sends", **{"X-MS-CLIENT-PRINCIPAL": principal("Other.Role")})
    assert r.status_code == 403 and r.json()["reason"] == "forbidden"
    who = {"X-MS-CLIENT-PRINCIPAL": principal(ROLE)}
    assert get(signed, "session", **who).json() == {"user": "Ada Operator"}
    assert [i["key"] for i in get(signed, "sends", **who).json()["items"]] == ["si-1"]
    assert get(signed, "sends/si-1", **who).json()["counts"]["queued"] == len(USERS)
    # No state change on GET, and none without the page's header (another site's form).
    assert get(signed, "sends/si-1/cancel", **who).status_code == 404
    r = post(signed, "sends/si-1/cancel", **who)
    assert r.status_code == 403 and r.json()["reason"] == "csrf"
    assert not [m for m in await queued(rt) if m.get("op") == "cancel"]
    r = post(signed, "sends/si-1/cancel", **who, **{"X-Proactive-Page": "1"})
    assert r.status_code == 202, r.text
    assert {"version": 1, "op": "cancel", "key": "si-1"} in await queued(rt)


def test_the_page_asks_to_sign_in_then_shows_data_without_a_key(signed: ApiApp) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.test_ui_browser import CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page: Any = browser.new_page()
            page.goto(f"{signed.base}ui/")
            page.wait_for_selector("#signin-entra:not([hidden])")
            assert page.get_attribute("#signin-link", "href").startswith("/.auth/login/aad")
            assert page.is_hidden("#key-form")
            # As App Service passes it once the user signed in.
            context = browser.new_context(
                extra_http_headers={"X-MS-CLIENT-PRINCIPAL": principal(ROLE)})
            page = context.new_page()
            page.goto(f"{signed.base}ui/")
            sync_api.expect(page.locator("#sends-table tbody tr td.key a")).to_have_text(
                ["si-1"])
        finally:
            browser.close()
