"""JSP's spawn page (hub/launcher-ui: JSP 0.7.0's UI built from its sdist, unchanged but for
the listed build patches) as the real hub's spawn page, in headless Debian Chromium.

The hub (DummyAuthenticator, KubeSpawner, our hooks) has the service as its `jsp-api` service
behind the proxy, with OAuth: the page's calls log in through the hub. The service is one of
its own in cluster mode for a namespace whose pods run on the plane's real node: it saves the
users' settings there, and the notebook pods and their Ray clusters go there. That JSP reads
the ConfigMaps saved is the plane test's (tests/plane: launcher_settings_are_jsp_configmaps_...).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from e2e_support import (NOTEBOOK_IMAGE, REPO, Hub, Service, Settings, describe_pods, free_port,
                         kube_spawner, kubectl, pod, profiles_configmap, ray_clusters,
                         real_node_namespace, tail, small_ray, wait_until)

HERE = Path(__file__).resolve().parent
RAY, RAY_TAG = NOTEBOOK_IMAGE.rsplit(":", 1)  # the Ray notebook image, built for the real node
MINIMAL, MINIMAL_TAG = "quay.io/jupyter/minimal-notebook", "2024-11"
ENV_NAME, ENV_VALUE = "MY_VAR", "from-the-spawn-page"
API = "/services/jsp-api/api"

HUB_EXTRA = '''
# The spawn page: JSP's UI (hub/launcher-ui), its calls to the service through the proxy.
from tornado.web import StaticFileHandler
c.JupyterHub.services.append({{
    "name": "jsp-api", "url": "{service_url}", "api_token": "{token}",
    "oauth_client_id": "service-jsp-api", "oauth_redirect_uri": "/services/jsp-api/oauth_callback",
    "oauth_no_confirm": True,
}})
# Every user may log in to the service (JupyterHub 6: access:services is per service).
c.JupyterHub.load_roles.append({{"name": "user", "scopes": ["self", "access:services!service=jsp-api"]}})
c.JupyterHub.template_paths = ["{wrapper}", "{templates}"]
# The bundle's public path is /hub/jsp-ui/ (ODH installed it into the hub's static folder).
c.JupyterHub.extra_handlers = [(r"/jsp-ui/(.*)", StaticFileHandler, {{"path": "{static}"}})]
c.Spawner.options_form = "JSP's spawn page"  # any form: the hub then shows its spawn page
'''

# Test-sized, to fit the real node's 2 CPUs: everyone's Ray cluster (a profile for everyone,
# after the repo's: its `ray` service replaces theirs), and the size Medium: its limits (2 CPUs,
# 4 GiB) with small requests (the plane's node does not throttle to limits).
TEST_SIZED = profiles_configmap(
    "e2e-spawn-page-test-sized", [{"name": "test-sized Ray", "services": {"ray": small_ray()}}],
    sizes=[{"name": "Medium", "description": "2 CPUs, 4 GiB", "resources": {
        "requests": {"cpu": "200m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}}])


@pytest.fixture(scope="module")
def notebooks(settings: Settings) -> Iterator[str]:
    """The real-node namespace of this test's service, notebooks and Ray clusters."""
    with real_node_namespace(f"{settings.namespace}-nb", TEST_SIZED) as ns:
        yield ns


@pytest.fixture(scope="module")
def page_hub(settings: Settings, notebooks: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    ui = Path(os.environ["SUP_E2E_UI"])
    templates = tmp_path_factory.mktemp("jsp-templates")
    shutil.copy(ui / "templates" / "spawn.html", templates / "jsp-spawn.html")
    shutil.copy(ui / "templates" / "spawn_pending.html", templates / "spawn_pending.html")
    hub_port = free_port()
    service = Service(settings, notebooks, "spawn-page",
                      "--hub-api-url", f"http://127.0.0.1:{hub_port}/hub/api",
                      "--oauth-client-id", "service-jsp-api",
                      "--launcher-images", f"{MINIMAL}:{MINIMAL_TAG},{RAY}:{RAY_TAG}")
    hub = None
    try:
        extra = HUB_EXTRA.format(
            service_url=service.url, token=settings.token, wrapper=REPO / "hub/launcher-ui/hub-templates",
            templates=templates, static=ui / "static")
        # The notebook pods reach the hub's API on the host side of the node's veth.
        hub = Hub(settings, service_url=service.url, extra_config=extra, port=hub_port,
                  spawner=kube_spawner(notebooks, profile_list=False),
                  hub_ip=os.environ["SUP_TEST_REAL_NODE_HOST_IP"], namespace="")
        yield hub
    finally:
        if hub is not None:
            hub.stop()
            print(f"\n--- tail of {hub.log_path}\n{tail(hub.log_path, 30)}")
        service.stop()
        print(f"\n--- tail of {service.log_path}\n{tail(service.log_path, 20)}")


def browser(hub: Hub, user: str, *action: str) -> dict[str, Any]:
    """Runs spawn_page.py in the Playwright virtualenv; its screenshots go to the work folder."""
    run = subprocess.run(
        [os.environ["SUP_E2E_BROWSER_PYTHON"], str(HERE / "spawn_page.py"), hub.url, user,
         hub.password, str(hub.settings.work), *action],
        capture_output=True, text=True, timeout=400,
    )
    summary = json.loads(run.stdout) if run.stdout.strip().startswith("{") else {}
    assert run.returncode == 0, (
        f"the spawn page failed for {user} (screenshot {summary.get('screenshot')}):\n"
        f"{summary.get('failure') or run.stderr[-3000:]}\ncalls: {summary.get('calls')}\n"
        f"console: {summary.get('console')}")
    assert not summary["errors"], summary["errors"]
    return dict(summary)


def test_the_spawn_page_starts_the_notebook_with_the_choices_and_remembers_them(
        page_hub: Hub, notebooks: str) -> None:
    hub = page_hub
    for user in ("alice", "bob"):
        if hub.api("GET", f"/users/{user}").status_code == 404:
            assert hub.api("POST", f"/users/{user}").status_code == 201

    picked = browser(hub, "alice", "pick", RAY, "Medium", f"{ENV_NAME}={ENV_VALUE}")
    assert picked["images"] == [MINIMAL, RAY], picked
    assert {"Small", "Medium", "Large"} <= set(picked["sizes"]), picked
    assert any(c.startswith("GET /services/jsp-api/oauth_callback") for c in picked["calls"]), \
        "the page's calls logged in through the hub"

    # The notebook pod runs on the real node with the page's image, size and env var, and
    # the address of its Ray cluster.
    try:
        server = wait_until(lambda: hub.user("alice")["servers"].get("", {}).get("ready") and
                            hub.user("alice")["servers"][""], 300, "alice's server to be ready")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{describe_pods(notebooks)}") from None
    assert server["ready"]
    notebook = pod(notebooks, "jupyter-alice")
    assert notebook["spec"]["nodeName"] == os.environ["SUP_TEST_REAL_NODE"]
    [container] = notebook["spec"]["containers"]
    assert container["image"] == f"{RAY}:{RAY_TAG}"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": str(4 * 2**30)}, container["resources"]
    printed = kubectl("exec", "-n", notebooks, "jupyter-alice", "--", "sh", "-c",
                      f"echo $RAY_ADDRESS $RAY_CLUSTER ${ENV_NAME}").split()
    assert printed == [f"ray://ray-alice-head-svc.{notebooks}.svc:10001", "ray-alice", ENV_VALUE], printed
    assert [c["metadata"]["name"] for c in ray_clusters(notebooks, "alice")] == ["ray-alice"]
    hub.stop_server("alice")
    wait_until(lambda: not ray_clusters(notebooks, "alice"), 60, "alice's Ray cluster to go")

    # Back on the spawn page, the last choices are preselected.
    again = browser(hub, "alice", "look")
    assert (again["checked_image"], again["size"], again["env"]) == (RAY, "Medium", {ENV_NAME: ENV_VALUE})
    # Another user sees only their own: the default image, no size, no env.
    bob = browser(hub, "bob", "look")
    assert (bob["checked_image"], bob["size"], bob["env"]) == (MINIMAL, "Default", {}), bob


def test_the_api_needs_the_hubs_login_and_keeps_users_apart(page_hub: Hub) -> None:
    hub = page_hub
    # A browser without a session is sent to the hub's login (through its OAuth flow).
    with httpx.Client(base_url=hub.url, timeout=30, follow_redirects=True) as anonymous:
        landed = anonymous.get(f"{API}/user/configmap")
    assert landed.url.path == "/hub/login", [str(r.url) for r in landed.history]
    assert any(r.url.path == "/hub/api/oauth2/authorize" for r in landed.history)

    # A user's own hub token reads their settings, and not another user's (403).
    if hub.api("GET", "/users/bob").status_code == 404:
        assert hub.api("POST", "/users/bob").status_code == 201
    token = hub.api("POST", "/users/bob/tokens", json={"note": "spawn page test"}).json()["token"]
    auth = {"Authorization": f"token {token}"}
    own = httpx.get(f"{hub.url}{API}/whoami", headers=auth)
    assert (own.status_code, own.json()["name"]) == (200, "bob"), own.text
    other = httpx.get(f"{hub.url}{API}/user/configmap", headers={**auth, "For-User": "alice"})
    assert other.status_code == 403, other.text
    refused = httpx.post(f"{hub.url}{API}/user/configmap", headers={**auth, "For-User": "alice"},
                         json={"last_selected_size": "Small"})
    assert refused.status_code == 403, refused.text
