"""A real JupyterHub with our hooks, local single-user servers, and the service in cluster mode
against the real control plane (KubeRay + kwok)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from e2e_support import Hub, Settings, cluster_ready, items, kubectl, ray_clusters, wait_until


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.decode().split("=", 1) for entry in raw.split(b"\0") if b"=" in entry)


def test_spawn_gets_a_ray_cluster_and_stop_deletes_it(hub: Hub, settings: Settings) -> None:
    ns = settings.namespace
    browser = hub.login("alice")  # DummyAuthenticator: the login form creates the user
    browser.close()
    assert hub.user("alice")["name"] == "alice"

    events = hub.start_server("alice", {"profile": "e2e-wait", "size": "Small",
                                        "options": {"workers": 1}})
    messages = [e.get("message", "") for e in events]
    assert events[-1].get("ready") is True, messages
    # the hook's progress on the hub's spawn page
    assert "Requesting a Ray cluster (e2e-wait)" in messages
    assert "Ray cluster ray-alice is ready" in messages

    # the RayCluster exists for alice and KubeRay reports its head pod ready
    [rc] = ray_clusters(ns, "alice")
    assert rc["metadata"]["name"] == "ray-alice" and cluster_ready(settings, "alice", "ray-alice")
    owners = items("configmaps", ns, "jupyterhub.opendatahub.io/user=alice")
    assert [o["metadata"]["name"] for o in owners] == ["singleuser-service-ref-alice"]

    # the single-user server process has the cluster's address and the profile's env
    record = hub.singleuser_env("alice")
    live = proc_environ(record["pid"])  # the running jupyterhub-singleuser process
    for env in (record["env"], live):
        assert env["RAY_ADDRESS"] == f"ray://ray-alice-head-svc.{ns}.svc:10001"
        assert env["RAY_CLUSTER"] == "ray-alice"
        assert env["E2E_PROFILE_ENV"] == "from-the-e2e-profile"
        assert env["RAY_USAGE_STATS_ENABLED"] == "0"  # the globals profile
        assert env["JUPYTERHUB_USER"] == "alice"
        assert env["MEM_LIMIT"] == str(2 * 2**30)  # the Small size, applied to the spawner

    # a second user gets a cluster of their own (the default profile: no wait)
    events = hub.start_server("bob", {})
    assert events[-1].get("ready") is True, events
    [bob_rc] = wait_until(lambda: ray_clusters(ns, "bob"), 30, "bob's RayCluster")
    assert bob_rc["metadata"]["name"] == "ray-bob"
    assert hub.singleuser_env("bob")["env"]["RAY_CLUSTER"] == "ray-bob"
    assert "E2E_PROFILE_ENV" not in hub.singleuser_env("bob")["env"]
    wait_until(lambda: cluster_ready(settings, "bob", "ray-bob"), 60, "bob's head pod ready")
    assert [c["metadata"]["name"] for c in ray_clusters(ns, "alice")] == ["ray-alice"]

    # KubeRay made each cluster's token Secret; the token reached neither the hub's log nor
    # the service's: the answers carry only the reference (issue 11)
    for cluster in ("ray-alice", "ray-bob"):
        encoded = kubectl("get", "secret", cluster, "-n", ns, "-o", "jsonpath={.data.auth_token}")
        token = base64.b64decode(encoded).decode()
        assert len(token) >= 16, f"KubeRay's token Secret {cluster}"
        for log in (hub.log_path, settings.work / "service.log"):
            assert token not in log.read_text(errors="replace"), f"{cluster}'s token in {log}"
        assert hub.singleuser_env(cluster.removeprefix("ray-"))["env"].get("RAY_AUTH_MODE") == "token"

    # stopping alice's server through the hub deletes her cluster, and only hers
    hub.stop_server("alice")
    wait_until(lambda: not ray_clusters(ns, "alice"), 60, "ray-alice to be garbage-collected")
    assert not items("configmaps", ns, "jupyterhub.opendatahub.io/user=alice")
    assert [c["metadata"]["name"] for c in ray_clusters(ns, "bob")] == ["ray-bob"]

    hub.stop_server("bob")
    wait_until(lambda: not ray_clusters(ns, "bob"), 60, "ray-bob to be garbage-collected")


def test_refused_spawn_fails_with_the_service_message(hub: Hub, settings: Settings) -> None:
    events = hub.start_server("carol", {"profile": "ray", "options": {"workers": 9}})
    last = events[-1]
    assert last.get("failed") is True, events
    message = last["message"]
    assert message.startswith("Spawn failed: Your notebook could not start: ")
    assert "options.workers must be between 0 and 4, got 9" in message
    assert "Change your choice" in message and "Traceback" not in message
    # nothing was created, nothing is running
    assert ray_clusters(settings.namespace, "carol") == []
    assert hub.user("carol")["servers"] == {}


def test_cluster_that_never_gets_ready_fails_the_spawn(hub: Hub, settings: Settings) -> None:
    started = time.monotonic()
    events = hub.start_server("erin", {"profile": "e2e-never-ready"})
    elapsed = time.monotonic() - started
    messages = [e.get("message", "") for e in events]
    assert events[-1].get("failed") is True, messages
    # while the service waited, the hook reported progress, with the cluster's state
    waiting = [m for m in messages if m.startswith("Waiting for your Ray cluster to be ready")]
    assert waiting, messages
    assert any("ray-erin, state: " in m for m in waiting), waiting
    # the service's message, once: a cluster that did not get ready is not retried
    assert "did not become ready within 8 s; it was removed" in events[-1]["message"]
    assert "Try again in a minute" in events[-1]["message"]
    assert elapsed < 25, f"{elapsed:.0f} s: the hook retried a spawn that timed out"
    # nothing is left behind
    wait_until(lambda: not ray_clusters(settings.namespace, "erin"), 60, "ray-erin to be removed")
    assert hub.user("erin")["servers"] == {}
