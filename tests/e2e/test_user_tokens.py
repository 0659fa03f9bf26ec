"""User tokens checked with JupyterHub's own API (`serve --hub-api-url`), as JupyterHub
services check them: a user's token acts only for that user."""

from __future__ import annotations

from typing import Iterator

import httpx
import pytest

from e2e_support import Hub, Service, Settings


@pytest.fixture()
def checking_service(settings: Settings, hub: Hub) -> Iterator[httpx.Client]:
    """A second service (dry run: it writes nothing) that verifies user tokens with the hub."""
    service = Service(settings, None, "user-tokens", "--hub-api-url", f"{hub.url}/hub/api")
    try:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            yield client
    finally:
        service.stop()


def test_a_jupyterhub_user_token_acts_only_for_its_user(
    settings: Settings, hub: Hub, checking_service: httpx.Client
) -> None:
    for name in ("tokenalice", "tokenbob"):
        created = hub.api("POST", f"/users/{name}")
        assert created.status_code in (201, 409), created.text
    issued = hub.api("POST", "/users/tokenalice/tokens", json={"note": "e2e user token"})
    assert issued.status_code == 201, issued.text
    alice = {"Authorization": f"token {issued.json()['token']}"}

    own = checking_service.post("/api/v1/render", json={"user": "tokenalice"}, headers=alice)
    assert own.status_code == 200, own.text

    for method, path, body in [
        ("POST", "/api/v1/render", {"user": "tokenbob"}),
        ("POST", "/api/v1/spawn", {"user": "tokenbob"}),
        ("POST", "/api/v1/stop", {"user": "tokenbob"}),
        ("GET", "/api/v1/profiles?user=tokenbob", None),
        ("GET", "/api/v1/users/tokenbob/clusters", None),
    ]:
        refused = checking_service.request(method, path, json=body, headers=alice)
        assert refused.status_code == 403, (method, path, refused.text)
        assert "tokenbob" in refused.json()["message"]

    unknown = checking_service.post("/api/v1/render", json={"user": "tokenalice"},
                                    headers={"Authorization": "token not-a-hub-token"})
    assert unknown.status_code == 401, unknown.text
    anonymous = checking_service.post("/api/v1/render", json={"user": "tokenalice"})
    assert anonymous.status_code == 401, anonymous.text

    # The hub's own shared token still acts for anyone.
    hub_token = {"Authorization": f"token {settings.token}"}
    assert checking_service.post("/api/v1/render", json={"user": "tokenbob"},
                                 headers=hub_token).status_code == 200
