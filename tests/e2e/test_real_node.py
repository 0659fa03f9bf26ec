"""The whole path on the plane's real node: a real JupyterHub with KubeSpawner, our hooks and a
service of its own (cluster mode, one namespace, the reaper on); notebook pods of the locally
built notebook image and the repo's RayCluster template run for real (kubelet, containerd,
CNI, kube-proxy, CoreDNS, kube-router), under PodSecurity `restricted` with a UID no image has
(tests/controlplane/assign-uid-policy.yaml stands in for OpenShift's SCC).

- Two users start servers at once; each gets a notebook pod with the answer's environment and
  a Ray cluster whose head and worker pods run on the real node.
- The demo notebook runs in the notebook pod's kernel, reached through the hub as JupyterLab
  reaches it; `ray.init()` connects to RAY_ADDRESS as the service wrote it (the head Service's
  DNS name, through kube-proxy), and XGBoost trains on the worker pods.
- The dashboard answers through the head Service, with the token only.
- Stopping through the hub, or deleting the notebook pod, takes the cluster and its pods.

Needs the plane started with SUP_CLUSTER_IMAGES=ray,notebook (scripts/test does so).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Any, Iterator

import nbformat
import pytest
import yaml

from e2e_support import (ASSIGNED_UID, REPO, START_TIMEOUT, Hub, Service, Settings, cluster_ready,
                         describe_pods, items, iter_outputs, kube_spawner, kubectl, pod,
                         profiles_configmap, ray_clusters, real_node_namespace, run_notebook,
                         small_ray, wait_until)

NOTEBOOK = REPO / "examples" / "ray-xgboost.ipynb"
# user -> (profile, Ray worker pods)
USERS = {"erin": ("e2e-node-storage", 2), "frank": ("e2e-node", 0)}

SHARED_CLAIM, SHARED_MOUNT = "ray-shared", "/mnt/shared"
NOTEBOOK_RESOURCES = {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "3Gi"}}
# Test-sized (e2e_support.small_ray): Ray Train's two workers get a worker pod each; the
# head takes no tasks (num-cpus 0). The second profile adds storage every Ray pod shares, as
# Ray Train needs on more than one pod (a checkpoint, and the metrics that come with it, are
# written where all workers reach): the repo's RayCluster template with a shared claim
# mounted (shared_storage_template), its path in the notebook's RAY_STORAGE_PATH.
NODE_PROFILES = profiles_configmap("e2e-node-profiles", [
    {"name": "Ray notebook on the real node, test-sized", "slug": "e2e-node",
     "resources": NOTEBOOK_RESOURCES, "services": {"ray": small_ray(workers=2)}},
    {"name": "Ray notebook on the real node, test-sized, with shared storage",
     "slug": "e2e-node-storage", "resources": NOTEBOOK_RESOURCES,
     "services": {"ray": small_ray("e2e-node-templates", workers=2,
                                   env={"RAY_STORAGE_PATH": f"{SHARED_MOUNT}/ray-results"})}},
])


def node_exec(*command: str) -> None:
    done = subprocess.run([str(REPO / "scripts/cluster"), "node-exec", *command],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"node-exec {command}: {done.stderr}"


def shared_storage_template() -> str:
    """The repo's RayCluster template (templates/, unchanged on disk) with SHARED_CLAIM mounted
    at SHARED_MOUNT in the head and the workers, as an admin adds shared storage; a ConfigMap
    of its own. Fails if the template no longer has the volumes this adds to."""
    repo = yaml.safe_load((REPO / "templates/ray-cluster-templates.yaml").read_text())
    text = repo["data"]["ray-cluster.yaml"]
    mounts = "          - {name: dshm, mountPath: /dev/shm}\n"
    volumes = "        - name: dshm\n          emptyDir:\n            medium: Memory\n"
    assert text.count(mounts) == 2 and text.count(volumes) == 2, "the template changed: update this"
    text = text.replace(mounts, mounts + f"          - {{name: shared, mountPath: {SHARED_MOUNT}}}\n")
    text = text.replace(volumes, volumes + "        - name: shared\n"
                        f"          persistentVolumeClaim: {{claimName: {SHARED_CLAIM}}}\n")
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "e2e-node-templates"}, "data": {"ray-cluster.yaml": text}})


def shared_claim(ns: str) -> None:
    """SHARED_CLAIM in `ns`, ReadWriteMany, bound to a directory of the real node (all its pods
    are there), writable by any UID as an NFS or CephFS share set up for OpenShift is. A hostPath
    volume in a pod is refused by PodSecurity `restricted`; a claim bound to one is not."""
    path = f"/var/lib/sup-shared/{ns}"
    node_exec("install", "-d", "-m", "1777", path)
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": ns, "labels": {"app.kubernetes.io/created-by": "singleuser-profiles-tests"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "claimRef": {"namespace": ns, "name": SHARED_CLAIM},
                 "hostPath": {"path": path, "type": "Directory"}},
    }))
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": SHARED_CLAIM},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": ns,
                 "resources": {"requests": {"storage": "1Gi"}}},
    }))


@pytest.fixture(scope="module")
def node_ns(settings: Settings) -> Iterator[str]:
    """A real-node namespace with the repo's profiles and templates, the test-sized profiles
    and the shared claim."""
    ns = f"{settings.namespace}-node"
    with real_node_namespace(ns, NODE_PROFILES, shared_storage_template()):
        try:
            shared_claim(ns)
            yield ns
        finally:
            # Its claim goes with the namespace, after this: do not wait for it here.
            kubectl("delete", "persistentvolume", ns, "--ignore-not-found", "--wait=false")
            node_exec("rm", "-rf", f"/var/lib/sup-shared/{ns}")


@pytest.fixture(scope="module")
def node_service(settings: Settings, node_ns: str) -> Iterator[Service]:
    """The service for node_ns, its reaper on: it adopts each cluster by its notebook pod."""
    service = Service(settings, node_ns, "real-node")
    yield service
    service.stop()
    print(f"\n--- tail of {service.log_path}\n" + service.log_path.read_text()[-3000:])


@pytest.fixture(scope="module")
def node_hub(settings: Settings, node_ns: str, node_service: Service) -> Iterator[Hub]:
    # The hub's API listens on the host's side of the node's veth: the notebook pods reach it
    # there (JUPYTERHUB_API_URL); the proxy reaches the pods on their pod IPs.
    spawner = kube_spawner(node_ns, profile_list=True)
    # Namespace "": the hooks use the spawner's.
    hub = Hub(settings, service_url=node_service.url, spawner=spawner,
              hub_ip=os.environ["SUP_TEST_REAL_NODE_HOST_IP"], namespace="")
    yield hub
    hub.stop()
    print(f"\n--- tail of {hub.log_path}\n" + hub.log_path.read_text()[-3000:])


def notebook_pod_name(user: str) -> str:
    return f"jupyter-{user}"  # KubeSpawner's default pod_name_template, for plain names


def ray_pods(ns: str, cluster: str) -> list[dict[str, Any]]:
    return items("pods", ns, f"ray.io/cluster={cluster}")


def running(p: dict[str, Any]) -> bool:
    return p["status"].get("phase") == "Running" and all(
        c.get("ready") for c in p["status"].get("containerStatuses", []))


@pytest.fixture(scope="module")
def notebooks(node_hub: Hub, node_ns: str, node_service: Service,
              settings: Settings) -> Iterator[dict[str, dict[str, Any]]]:
    """Both users' servers, requested at once; yields each user's progress events."""
    for user, (profile, workers) in USERS.items():
        node_hub.request_server(user, {"profile": profile, "options": {"workers": workers}})
    started = {user: node_hub.progress(user, timeout=START_TIMEOUT + 60) for user in USERS}
    for user, events in started.items():
        assert events and events[-1].get("ready") is True, f"{user}: {events}\n{describe_pods(node_ns)}"
    for user in USERS:
        try:
            wait_until(lambda: cluster_ready(settings, user, f"ray-{user}", url=node_service.url,
                                             namespace=node_ns), START_TIMEOUT,
                       f"ray-{user}'s head pod ready (HeadPodReady)", interval=2)
            wait_until(lambda: len([p for p in ray_pods(node_ns, f"ray-{user}") if running(p)])
                       == 1 + USERS[user][1], START_TIMEOUT, f"ray-{user}'s pods running", interval=2)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{describe_pods(node_ns)}") from None
    yield started
    for user in USERS:
        if node_hub.user(user)["servers"]:
            node_hub.stop_server(user)


def test_two_users_get_notebook_pods_and_ray_clusters_on_the_real_node(
        notebooks: dict[str, Any], node_ns: str) -> None:
    node = os.environ["SUP_TEST_REAL_NODE"]
    for user, (_, workers) in USERS.items():
        cluster = f"ray-{user}"
        notebook = pod(node_ns, notebook_pod_name(user))
        assert notebook["spec"]["nodeName"] == node
        assert notebook["spec"]["securityContext"]["runAsUser"] == ASSIGNED_UID
        env = {e["name"]: e for e in notebook["spec"]["containers"][0]["env"]}
        # The answer's environment, as the service wrote it: the head Service's DNS name and
        # the token by reference to KubeRay's Secret, never a value.
        assert env["RAY_ADDRESS"]["value"] == f"ray://{cluster}-head-svc.{node_ns}.svc:10001"
        assert env["RAY_CLUSTER"]["value"] == cluster
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == cluster
        assert "value" not in env["RAY_AUTH_TOKEN"]

        [rc] = ray_clusters(node_ns, user)
        assert rc["metadata"]["name"] == cluster
        pods = ray_pods(node_ns, cluster)
        kinds = sorted(p["metadata"]["labels"]["ray.io/node-type"] for p in pods)
        assert kinds == ["head"] + ["worker"] * workers, kinds
        for p in pods:
            assert p["spec"]["nodeName"] == node, p["metadata"]["name"]
            assert p["spec"]["securityContext"]["runAsUser"] == ASSIGNED_UID
            assert running(p), p["status"]
    # Each cluster is its own.
    assert len({ray_clusters(node_ns, u)[0]["metadata"]["uid"] for u in USERS}) == 2


# Run in the notebook's kernel after the demo: the dashboard through the head Service, with
# and without the token the notebook has by reference.
DASHBOARD_CELL = """\
import os, urllib.error, urllib.request
url = "http://%s-head-svc.%s.svc:8265/api/version"
def status(headers):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20).status
    except urllib.error.HTTPError as err:
        return err.code
print("dashboard without token:", status({}))
print("dashboard with token:", status({"Authorization": "Bearer " + os.environ["RAY_AUTH_TOKEN"]}))
"""

# Run in the head container: where Ray Train's workers ran (the state API, with the token).
TRAIN_WORKERS = """\
import json
from ray.util.state import list_actors, list_nodes
ips = {n.node_id: n.node_ip for n in list_nodes(address="http://127.0.0.1:8265")}
actors = list_actors(address="http://127.0.0.1:8265", detail=True, limit=1000,
                     filters=[("class_name", "=", "RayTrainWorker")])
print(json.dumps(sorted(ips[a.node_id] for a in actors)))
"""


def test_the_demo_notebook_trains_xgboost_on_the_worker_pods(
        notebooks: dict[str, Any], node_hub: Hub, node_ns: str) -> None:
    user, cluster = "erin", "ray-erin"
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(DASHBOARD_CELL % (cluster, node_ns)))
    started = time.monotonic()
    # A user re-runs a failed first cell: Ray Client's proxier sometimes loses the session
    # server it forks for a new client (psutil's ZombieProcess), more often under load.
    run_notebook(f"{node_hub.url}/user/{user}", node_hub.user_token(user), notebook,
                 retry_first_cell=3)
    print(f"notebook executed in the pod's kernel in {time.monotonic() - started:.0f} s")

    text = "".join(o.get("text", "") for o in iter_outputs(notebook)
                   if o.get("output_type") == "stream")
    assert f"Address:     ray://{cluster}-head-svc.{node_ns}.svc:10001" in text, text[:2000]
    accuracy = float(re.search(r"accuracy:\s+([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    error_rate = float(re.search(r"error rate:\s+([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    assert accuracy > 0.9, text[-2000:]
    assert abs(accuracy + error_rate - 1) < 1e-6
    # The model was kept on the shared storage the profile gave the notebook (RAY_STORAGE_PATH).
    assert f"model checkpoint: {SHARED_MOUNT}/ray-results/breast-cancer-xgboost/checkpoint_" in text, \
        text[-1500:]
    assert [o for o in iter_outputs(notebook) if "image/png" in o.get("data", {})], \
        "the score-vs-truth plot was not drawn"
    assert "dashboard without token: 401" in text or "dashboard without token: 403" in text, text[-500:]
    assert "dashboard with token: 200" in text, text[-500:]

    # Ray Train's two workers ran on the two worker pods, not on the head (the notebook is a
    # Ray Client, not a Ray node: its tasks run in the cluster).
    pods = ray_pods(node_ns, cluster)
    workers = sorted(p["status"]["podIP"] for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "worker")
    [head] = [p["metadata"]["name"] for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "head"]
    placed = json.loads(kubectl("exec", "-n", node_ns, head, "-c", "ray-head", "--",
                                "python", "-c", TRAIN_WORKERS).strip().splitlines()[-1])
    assert placed == workers, f"Ray Train workers on {placed}, worker pods at {workers}"


def test_stopping_through_the_hub_or_deleting_the_pod_takes_the_cluster(
        notebooks: dict[str, Any], node_hub: Hub, node_ns: str) -> None:
    # erin: stopped through the hub. KubeSpawner deletes the notebook pod; the cluster's owner
    # belongs to that pod, so garbage collection takes the cluster, and KubeRay's pods with it.
    node_hub.stop_server("erin")
    # frank: the notebook pod deleted behind the hub's back (evicted, node lost, kubectl).
    kubectl("delete", "pod", "-n", node_ns, notebook_pod_name("frank"), "--wait=false")
    for user in USERS:
        wait_until(lambda: not ray_clusters(node_ns, user), 120, f"ray-{user} to be collected")
        wait_until(lambda: not ray_pods(node_ns, f"ray-{user}"), 120, f"ray-{user}'s pods to go")
    assert not items("pods", node_ns, "component=singleuser-server")
    # The hub notices frank's server is gone (its poll).
    wait_until(lambda: not node_hub.user("frank")["servers"], 60, "the hub to see frank's server gone")
