"""The ODH dashboard launcher's sequence, as plain HTTP calls against the service in cluster
mode: profiles for a user, spawn, cluster status, stop."""

from __future__ import annotations

import httpx

from e2e_support import Settings, cluster_ready, ray_clusters, wait_until

USER = "launcherlee"  # (a "-" would be escaped in the user label: launcher-2dlee)


def test_launcher_sequence(settings: Settings, service: httpx.Client) -> None:
    ns = settings.namespace

    # 1. The profiles this user may pick, and the sizes
    answer = service.get("/api/v1/profiles", params={"user": USER, "groups": "data-science"})
    assert answer.status_code == 200, answer.text
    catalog = answer.json()
    slugs = [p["slug"] for p in catalog["profiles"]]
    assert {"ray", "e2e-wait"} <= set(slugs)
    assert [p for p in catalog["profiles"] if p.get("default")][0]["slug"] == "ray"
    assert {s["name"] for s in catalog["sizes"]} >= {"Small", "Medium", "Large"}
    wait_profile = catalog["profiles"][slugs.index("e2e-wait")]
    assert wait_profile["options"]["workers"]["max"] == 2

    # nothing running yet
    status = service.get(f"/api/v1/users/{USER}/clusters", params={"namespace": ns})
    assert status.status_code == 200 and status.json()["clusters"] == []

    # 2. Spawn: applied for real, answered once the head pod is ready (the profile waits)
    body = {"user": USER, "groups": ["data-science"], "profile": "e2e-wait", "size": "Small",
            "options": {"workers": 1}, "server": "", "namespace": ns}
    spawned = service.post("/api/v1/spawn", json=body)
    assert spawned.status_code == 200, spawned.text
    answer = spawned.json()
    cluster = answer["cluster"]
    assert answer["dry_run"] is False and answer["namespace"] == ns
    assert answer["environment"]["RAY_ADDRESS"] == f"ray://{cluster}-head-svc.{ns}.svc:10001"
    assert answer["environment"]["RAY_CLUSTER"] == cluster
    assert answer["environment"]["E2E_PROFILE_ENV"] == "from-the-e2e-profile"
    assert answer["pod"]["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}  # Small
    [rc] = ray_clusters(ns, USER)
    assert rc["metadata"]["name"] == cluster and cluster_ready(settings, USER, cluster)
    assert rc["spec"]["workerGroupSpecs"][0]["replicas"] == 1

    # spawning again changes nothing and creates no duplicate
    again = service.post("/api/v1/spawn", json=body)
    assert again.status_code == 200 and again.json()["cluster"] == cluster
    assert len(ray_clusters(ns, USER)) == 1

    # 3. Cluster status
    status = service.get(f"/api/v1/users/{USER}/clusters", params={"namespace": ns}).json()
    [info] = status["clusters"]
    assert info["name"] == cluster and info["ready"] is True and info["head_pod"]
    assert info["profile"] == "e2e-wait" and info["server"] == ""

    # 4. Stop: the owner ConfigMap goes, garbage collection removes the cluster
    stopped = service.post("/api/v1/stop", json={"user": USER, "server": "", "namespace": ns})
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["stopped"] is True
    wait_until(lambda: not ray_clusters(ns, USER), 60, f"{cluster} to be garbage-collected")
    status = service.get(f"/api/v1/users/{USER}/clusters", params={"namespace": ns}).json()
    assert status["clusters"] == []
    # stopping again is harmless
    assert service.post("/api/v1/stop", json={"user": USER, "namespace": ns}).json()["stopped"] is False


def test_launcher_errors(settings: Settings, service: httpx.Client) -> None:
    # no token: refused
    anonymous = httpx.get(settings.url + "/api/v1/profiles", params={"user": USER})
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"
    # an option out of bounds: 4xx with a stable code, a message and the field
    refused = service.post("/api/v1/spawn", json={
        "user": USER, "profile": "e2e-wait", "options": {"workers": 7},
        "namespace": settings.namespace})
    assert 400 <= refused.status_code < 500
    error = refused.json()
    assert error["code"] == "invalid_option" and error["field"] == "options.workers"
    assert "between 0 and 2, got 7" in error["message"]
    assert ray_clusters(settings.namespace, USER) == []
