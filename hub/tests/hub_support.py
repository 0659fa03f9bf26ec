"""Helpers for the hook tests: the REAL singleuser-profiles binary served as a dry run from the
repo's profiles and templates plus a test ConfigMap; spawner objects from JupyterHub and
KubeSpawner."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hub-test-token"

# Extra profiles on top of the repo's: pod settings KubeSpawner can apply, env from a Secret,
# a volume; and carol's own settings as JSP's spawn page saved them (her env).
TEST_PROFILES = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: test-hub-profiles
  labels:
    jupyterhub: singleuser-profiles
data:
  jupyterhub-singleuser-profiles.yaml: |
    profiles:
    - name: GPU-ish test profile
      slug: pinned
      description: pod settings for the hook tests
      env:
      - name: TEST_PROFILE_ENV
        value: pinned-value
      - name: TEST_SECRET_ENV
        valueFrom:
          secretKeyRef: {name: test-secret, key: password}
      node_tolerations:
      - {key: dedicated, operator: Equal, value: ray, effect: NoSchedule}
      node_affinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
          - matchExpressions:
            - {key: node-role.kubernetes.io/ray, operator: Exists}
      resources:
        requests: {cpu: 250m, memory: 512Mi}
        limits: {cpu: "2", memory: 3Gi}
      volumes:
      - name: Team_Data
        persistentVolumeClaim: {claimName: team-data}
        mountPath: data
      services:
        ray:
          resources:
          - {name: ray-cluster-templates, path: ray-cluster.yaml}
          configuration:
            ray_version: "2.60.0"
            ray_image: docker.io/rayproject/ray:2.60.0-py311
            head_num_cpus: "0"
            head_cpu: "1"
            head_memory: 2Gi
            worker_cpu: "1"
            worker_memory: 2Gi
          options:
            workers: {type: integer, default: 1, min: 0, max: 2}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: jupyterhub-singleuser-profile-carol-envs
data:
  CAROLS_BUCKET: carol-bucket
"""


def binary() -> Path:
    path = Path(os.environ.get("SUP_BINARY", REPO / "target" / "debug" / "singleuser-profiles"))
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build` first (or set SUP_BINARY)")
    return path


class Service:
    """One running `singleuser-profiles serve --mode dry-run` process."""

    def __init__(self, profiles: Path, token: str = "") -> None:
        args = [str(binary()), "serve", "--mode", "dry-run", "--listen", "127.0.0.1:0",
                "--profiles", str(profiles), "--templates", str(REPO / "templates")]
        if token:
            args += ["--hub-token", token]
        env = {**os.environ, "SUP_LOG_FORMAT": "json"}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, text=True, cwd=REPO)
        self.url = ""
        self.log: list[str] = []
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        while not self.url:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the service exited:\n" + "".join(self.log))
            self.log.append(line)
            try:
                listen = json.loads(line).get("listen")
            except ValueError:
                listen = None
            if listen:
                self.url = f"http://{listen}"
            if time.monotonic() > deadline:
                raise RuntimeError("no listen address in the log:\n" + "".join(self.log))
        # keep draining the log so the pipe never fills up
        threading.Thread(target=self._drain, daemon=True).start()
        while httpx.get(self.url + "/readyz").status_code != 200:
            time.sleep(0.05)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class User:
    """What the hooks read of JupyterHub's User: its name and groups (orm.Group-like)."""

    class Group:
        def __init__(self, name: str) -> None:
            self.name = name

    def __init__(self, name: str, groups: tuple[str, ...] = ()) -> None:
        self.name = name
        self.groups = [User.Group(g) for g in groups]
        self.id = 1
        self.url = f"/user/{name}/"


def local_spawner(user: str = "alice", groups: tuple[str, ...] = (), name: str = "",
                  user_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    from jupyterhub.spawner import SimpleLocalProcessSpawner

    orm = SimpleNamespace(name=name, display_name=name, server=None, state=None)
    spawner = SimpleLocalProcessSpawner(user=User(user, groups), orm_spawner=orm, **kwargs)
    spawner.user_options = user_options or {}
    return spawner


# KubeSpawner builds a Kubernetes client when constructed; the hook tests never call the API.
# kubernetes_asyncio reads $KUBECONFIG when imported: conftest.py calls use_dummy_kubeconfig().
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: unused, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: unused, user: {token: unused}}]
contexts: [{name: unused, context: {cluster: unused, user: unused}}]
current-context: unused
"""


def use_dummy_kubeconfig() -> None:
    kubeconfig = Path(tempfile.gettempdir()) / f"hub-tests-kubeconfig-{os.getpid()}"
    kubeconfig.write_text(KUBECONFIG)
    os.environ["KUBECONFIG"] = str(kubeconfig)


def kube_spawner(user: str = "alice", user_options: dict[str, Any] | None = None,
                 **kwargs: Any) -> Any:
    from kubespawner import KubeSpawner


    spawner = KubeSpawner(_mock=True, user=User(user), namespace="team-a", **kwargs)
    spawner.user_options = user_options or {}
    return spawner
