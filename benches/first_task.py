"""Time to the first Ray task (issue 16, item 2): from the hub's spawn request to the first
`ray.get` answer in the notebook pod's kernel, for one user and for 5 at once, beside the
floor measured in the same run: the same RayCluster (the service's own render of it) and the
same notebook pod (same image, env, labels and requests) created directly with one `kubectl
apply`, its kernel reached on the pod IP. Both run the same cell (CELL), which waits for the
head's client port and then connects.

Run with the e2e harness (its virtualenv, proxy and service), on a plane with the images:

    SUP_CLUSTER_IMAGES=ray,notebook scripts/cluster up && eval "$(scripts/cluster env)"
    SUP_E2E_TESTS=benches/first_task.py tests/e2e/run -s

It prints one table per round (BENCHMARKS.md has the figures) and asserts nothing about time.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from e2e_support import (NOTEBOOK_GID, NOTEBOOK_IMAGE, START_TIMEOUT, Hub, Service,  # noqa: E402
                         Settings, describe_pods, kube_spawner, kubectl, pod, profiles_configmap,
                         real_node_namespace, run_notebook, small_ray, wait_until)

ROUNDS = [1, 5, 1, 5]  # users at once; each round runs the service's path, then the floor's
PROFILE = "bench-first-task"
# A head that runs tasks itself (num-cpus 1) and no workers: 5 clusters and 5 notebooks fit
# the real node's 2 CPUs.
PROFILES = profiles_configmap("bench-first-task", [{
    "name": "First-task benchmark", "slug": PROFILE,
    "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
    "services": {"ray": small_ray(head_num_cpus="1", workers=0, max_workers=0)}}])
# What a notebook started beside its cluster does: wait until the head's client port accepts
# (a TCP probe every half second), then connect, again each second while Ray Client's server
# refuses the session; it prints the refusals (BENCHMARKS.md, round 5).
CELL = """\
import json, os, socket, time
import ray
host, port = os.environ["RAY_ADDRESS"].removeprefix("ray://").rsplit(":", 1)
while True:
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        break
    except OSError:
        time.sleep(0.5)
failed = []
for attempt in range(120):
    try:
        ray.init(logging_level="ERROR")
        break
    except Exception as err:
        failed.append(f"{time.time():.1f} {type(err).__name__}: {str(err)[:200]}")
        time.sleep(1)
print("first task:", ray.get(ray.remote(lambda: 42).remote()))
print("failed ray.init:", json.dumps(failed))
ray.shutdown()
"""


def stamp(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def pod_times(p: dict[str, Any]) -> dict[str, float | None]:
    """When the pod was created, scheduled, its container started and it was Ready."""
    conditions = {c["type"]: c.get("lastTransitionTime") for c in p["status"].get("conditions", [])}
    started = [s["state"]["running"]["startedAt"] for s in p["status"].get("containerStatuses", [])
               if "running" in s.get("state", {})]
    return {"created": stamp(p["metadata"]["creationTimestamp"]),
            "scheduled": stamp(conditions.get("PodScheduled")),
            "started": stamp(started[0] if started else None),
            "ready": stamp(conditions.get("Ready"))}


def head_ready(ns: str, cluster: str) -> float | None:
    rc = json.loads(kubectl("get", "raycluster", "-n", ns, cluster, "-o", "json"))
    for c in rc.get("status", {}).get("conditions", []):
        if c["type"] == "HeadPodReady" and c["status"] == "True":
            return stamp(c["lastTransitionTime"])
    return None


def head_pod(ns: str, cluster: str) -> dict[str, Any]:
    [p] = json.loads(kubectl("get", "pods", "-n", ns, "-l",
                             f"ray.io/cluster={cluster},ray.io/node-type=head", "-o", "json"))["items"]
    return dict(p)


def timings(ns: str, user: str, t0: float, served: float, done: float,
            failed: list[str]) -> dict[str, Any]:
    """One spawn's figures: started, notebook serving, first task answered (wall clock), the
    failed ray.init() calls, and the notebook's and head's pod times from the API."""
    cluster = f"ray-{user}"
    return {"t0": t0, "notebook_ready": served, "first_task": done, "failed_inits": failed,
            "notebook": pod_times(pod(ns, f"jupyter-{user}")), "head": pod_times(head_pod(ns, cluster)),
            "head_ready": head_ready(ns, cluster)}


def first_task(base_url: str, token: str) -> list[str]:
    """Runs CELL in a new kernel; returns its failed ray.init() calls (time, error)."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    run_notebook(base_url, token, notebook, cell_timeout=START_TIMEOUT)
    text = "".join(o.get("text", "") for o in notebook.cells[0].outputs)
    assert "first task: 42" in text, text
    return list(json.loads(text.split("failed ray.init:", 1)[1].strip().splitlines()[0]))


def at_once(users: list[str], one: Callable[[str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Runs `one(user)` for every user at once; each records its own times."""
    results: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def run(user: str) -> None:
        try:
            results[user] = one(user)
        except BaseException as err:  # reported after the others finish
            errors.append(err)

    threads = [threading.Thread(target=run, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(START_TIMEOUT + 120)
    if errors:
        raise errors[0]
    return results


@pytest.fixture(scope="module")
def bench_ns(settings: Settings) -> Iterator[str]:
    with real_node_namespace(f"{settings.namespace}-bench", PROFILES) as ns:
        yield ns


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env()


def test_time_to_first_ray_task(settings: Settings, bench_ns: str) -> None:
    ns = bench_ns
    service = Service(settings, ns, "bench")
    hub = Hub(settings, service_url=service.url, spawner=kube_spawner(ns, profile_list=True),
              hub_ip=os.environ["SUP_TEST_REAL_NODE_HOST_IP"], namespace="")
    auth = {"Authorization": f"token {settings.token}"}
    wait_until(lambda: PROFILE in [p["slug"] for p in httpx.get(
        f"{service.url}/api/v1/profiles", params={"user": "x"}, headers=auth).json()["profiles"]],
        30, "the benchmark profile loaded")

    def via_service(user: str) -> dict[str, Any]:
        t0 = time.time()
        hub.request_server(user, {"profile": PROFILE})
        events = hub.progress(user, timeout=START_TIMEOUT)
        assert events[-1].get("ready") is True, f"{user}: {events}\n{describe_pods(ns)}"
        served = time.time()
        failed = first_task(f"{hub.url}/user/{user}", hub.user_token(user))
        return timings(ns, user, t0, served, time.time(), failed)

    def floor(user: str) -> dict[str, Any]:
        rendered = httpx.post(f"{service.url}/api/v1/render", headers=auth, timeout=60,
                              json={"user": user, "namespace": ns, "profile": PROFILE}).json()
        token = uuid.uuid4().hex
        env = [{"name": k, "value": v} if isinstance(v, str) else {"name": k, **v}
               for k, v in rendered["environment"].items()]
        notebook = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"jupyter-{user}", "labels": {
                "component": "singleuser-server", "hub.jupyter.org/username": user,
                "hub.jupyter.org/servername": ""}},
            "spec": {
                "securityContext": {"runAsNonRoot": True, "fsGroup": NOTEBOOK_GID,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "notebook", "image": NOTEBOOK_IMAGE, "imagePullPolicy": "Never",
                    "command": ["jupyter", "server", "--ip=0.0.0.0", "--port=8888",
                                f"--IdentityProvider.token={token}"],
                    "env": env,
                    "resources": {"requests": {"cpu": "100m", "memory": "1Gi"},
                                  "limits": {"cpu": "1", "memory": "2Gi"}},
                    "securityContext": {"allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}},
                }],
            },
        }
        manifest = {"apiVersion": "v1", "kind": "List", "items": [*rendered["objects"], notebook]}
        t0 = time.time()
        kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))

        def serving() -> str | None:
            ip = pod(ns, f"jupyter-{user}")["status"].get("podIP")
            try:
                ok = ip and httpx.get(f"http://{ip}:8888/api/status", timeout=5,
                                      headers={"Authorization": f"token {token}"}).status_code == 200
            except httpx.HTTPError:
                ok = False
            return f"http://{ip}:8888" if ok else None

        base = wait_until(serving, START_TIMEOUT, f"{user}'s notebook server", interval=0.5)
        served = time.time()
        failed = first_task(base, token)
        return timings(ns, user, t0, served, time.time(), failed)

    report: list[dict[str, Any]] = []
    try:
        for index, n in enumerate(ROUNDS):
            for path, one in (("service", via_service), ("floor", floor)):
                users = [f"{path[0]}{index}u{i}" for i in range(n)]
                results = at_once(users, one)
                report.append({"round": index, "users": n, "path": path, "results": results})
                print_round(path, n, results)
                if path == "service":
                    for user in users:
                        hub.stop_server(user)
                else:
                    kubectl("delete", "-n", ns, "raycluster,networkpolicy,pod", "--all", "--wait=true")
                wait_until(lambda: not json.loads(kubectl("get", "pods", "-n", ns, "-o", "json"))["items"],
                           180, "the round's pods to go")
    finally:
        hub.stop()
        service.stop()
        out = Path(settings.work) / "first-task.json"
        out.write_text(json.dumps(report, indent=1))
        print(f"raw figures: {out}")
    summary(report)


PHASES = [  # (name, from, to): offsets of the breakdown, per user
    ("API to notebook pod", "t0", "notebook.created"),
    ("notebook pod scheduled", "notebook.created", "notebook.scheduled"),
    ("notebook container started", "notebook.scheduled", "notebook.started"),
    ("notebook serving", "notebook.started", "notebook_ready"),
    ("API to head pod", "t0", "head.created"),
    ("head container started", "head.created", "head.started"),
    ("head Ready (HeadPodReady)", "head.started", "head_ready"),
    ("serving to first task", "notebook_ready", "first_task"),
]


def value(result: dict[str, Any], key: str) -> float | None:
    if "." in key:
        group, name = key.split(".")
        return result[group][name]
    return result[key]


def print_round(path: str, n: int, results: dict[str, dict[str, Any]]) -> None:
    totals = [r["first_task"] - r["t0"] for r in results.values()]
    print(f"\n{path}, {n} user(s): first task after "
          f"median {statistics.median(totals):.1f} s, max {max(totals):.1f} s")
    failed = [f for r in results.values() for f in r["failed_inits"]]
    print(f"  failed ray.init() calls: {len(failed)} " + "; ".join(f[:120] for f in failed[:3]))
    for name, start, end in PHASES:
        spans = [value(r, end) - value(r, start) for r in results.values()
                 if value(r, end) is not None and value(r, start) is not None]
        if spans:
            print(f"  {name:32} median {statistics.median(spans):6.1f} s")


def summary(report: list[dict[str, Any]]) -> None:
    print("\n| users | round | service median (max) s | floor median (max) s | ratio of medians |")
    print("| --- | --- | --- | --- | --- |")
    for index in sorted({r["round"] for r in report}):
        rows = {r["path"]: r for r in report if r["round"] == index}
        cells = []
        for path in ("service", "floor"):
            totals = [x["first_task"] - x["t0"] for x in rows[path]["results"].values()]
            cells.append((statistics.median(totals), max(totals)))
        print(f"| {rows['service']['users']} | {index} | {cells[0][0]:.1f} ({cells[0][1]:.1f}) | "
              f"{cells[1][0]:.1f} ({cells[1][1]:.1f}) | {cells[0][0] / cells[1][0]:.2f} |")
