"""Support for the end-to-end tests: the settings tests/e2e/run exports, kubectl, a real
JupyterHub in a subprocess (local or KubeSpawner), namespaces on the plane's real node, more
instances of the service, and notebooks run in a single-user server's kernel."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
USER_LABEL = "jupyterhub.opendatahub.io/user"

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """What tests/e2e/run provides: the running service, its namespace and token, the tools."""

    url: str
    token: str
    token_file: Path
    namespace: str
    work: Path
    chp: Path

    @classmethod
    def from_env(cls) -> "Settings":
        names = ["SUP_E2E_URL", "SUP_E2E_TOKEN_FILE", "SUP_E2E_NAMESPACE", "SUP_E2E_WORK",
                 "SUP_E2E_CHP", "KUBECONFIG"]
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise RuntimeError(
                f"{', '.join(missing)} not set: run the e2e tests with tests/e2e/run "
                "(after scripts/cluster up and eval \"$(scripts/cluster env)\")"
            )
        token_file = Path(os.environ["SUP_E2E_TOKEN_FILE"])
        return cls(
            url=os.environ["SUP_E2E_URL"],
            token=token_file.read_text().strip(),
            token_file=token_file,
            namespace=os.environ["SUP_E2E_NAMESPACE"],
            work=Path(os.environ["SUP_E2E_WORK"]),
            chp=Path(os.environ["SUP_E2E_CHP"]),
        )


def wait_until(check: Callable[[], Optional[T]], timeout: float, what: str,
               interval: float = 0.5) -> T:
    """Polls `check` until it returns something truthy; fails with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Optional[T] = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubectl(*args: str, input: Optional[str] = None) -> str:
    done = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def items(kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", kind, "-n", namespace, "-o", "json"]
    if selector:
        args += ["-l", selector]
    return list(json.loads(kubectl(*args))["items"])


def ray_clusters(namespace: str, user: str) -> list[dict[str, Any]]:
    return items("rayclusters.ray.io", namespace, f"{USER_LABEL}={user}")


def cluster_ready(settings: "Settings", user: str, name: str, url: str = "",
                  namespace: str = "") -> bool:
    """Whether the service (at `url`, default the run's) reports `user`'s cluster `name` in
    `namespace` (default the run's) ready: KubeRay's HeadPodReady, read by the service's own
    check rather than a second copy of it here."""
    answer = httpx.get(f"{url or settings.url}/api/v1/users/{user}/clusters",
                       params={"namespace": namespace or settings.namespace},
                       headers={"Authorization": f"token {settings.token}"}, timeout=30)
    answer.raise_for_status()
    return any(c.get("name") == name and c.get("ready") is True
               for c in answer.json().get("clusters") or [])


def marked_pids(name: str, value: str) -> list[int]:
    """The processes whose environment holds NAME=value (the ones a fixture started)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_marked(name: str, value: str, grace: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process marked NAME=value; returns those that needed it."""
    pids = marked_pids(name, value)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and marked_pids(name, value):
        time.sleep(0.2)
    for pid in marked_pids(name, value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return f"({path} unreadable)"


# ---- JupyterHub ---------------------------------------------------------------------------

HUB_CONFIG = '''\
# Written by tests/e2e (e2e_support.Hub): a real JupyterHub with our hooks.
from singleuser_profiles_hub import ProfilesProgressMixin, post_stop_hook, pre_spawn_hook

c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "{hub_ip}"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "{dir}/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
c.JupyterHub.log_level = "INFO"
# POST /users/{{name}}/server answers 202 at once; the outcome is in the progress stream.
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}

c.ConfigurableHTTPProxy.command = ["{chp}"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = "{proxy_token}"
c.ConfigurableHTTPProxy.pid_file = "{dir}/proxy.pid"

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "{password}"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "e2e", "api_token": "{admin_token}"}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["e2e"]}}]

c.Spawner.pre_spawn_hook = pre_spawn_hook
c.Spawner.post_stop_hook = post_stop_hook
c.SingleuserProfiles.url = "{service_url}"
c.SingleuserProfiles.token_file = "{token_file}"
c.SingleuserProfiles.namespace = "{namespace}"
c.SingleuserProfiles.spawn_timeout = 170
c.SingleuserProfiles.progress_interval = 2
'''

# Local single-user servers (processes on this machine; no pods).
LOCAL_SPAWNER = '''
import sys

from jupyterhub.spawner import SimpleLocalProcessSpawner


class E2ESpawner(ProfilesProgressMixin, SimpleLocalProcessSpawner):
    """Local single-user servers, with the hook's progress on the spawn page."""


c.JupyterHub.spawner_class = E2ESpawner
c.Spawner.cmd = [sys.executable, "{wrapper}"]
c.Spawner.env_keep = ["PATH", "LANG", "SUP_E2E_RUN", "SUP_E2E_HUB"]
c.Spawner.args = ["--ServerApp.allow_root=True"]  # CI runs as root
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120
c.SimpleLocalProcessSpawner.home_dir_template = "{dir}/home/{{username}}"
'''


class Hub:
    """A real JupyterHub (DummyAuthenticator, local single-user servers, our hooks)."""

    def __init__(self, settings: Settings, service_url: str = "", extra_config: str = "",
                 port: int = 0, spawner: Optional[str] = None, hub_ip: str = "127.0.0.1",
                 namespace: Optional[str] = None) -> None:
        """`service_url`: the service the hooks call (default: the run's); `extra_config` is
        appended to jupyterhub_config.py; `port`: the public port (default: a free one);
        `spawner`: the spawner's configuration, as is (default: LOCAL_SPAWNER); `hub_ip`: where
        the hub's API listens (and single-user servers reach it); `namespace`: the hooks'
        namespace (default: the run's; "" means the spawner's own)."""
        self.settings = settings
        self.id = uuid.uuid4().hex[:10]
        self.dir = settings.work / f"hub-{self.id}"
        (self.dir / "home").mkdir(parents=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = uuid.uuid4().hex
        self.password = "e2e-" + uuid.uuid4().hex[:8]
        self.log_path = settings.work / f"jupyterhub-{self.id}.log"
        config = self.dir / "jupyterhub_config.py"
        config.write_text(HUB_CONFIG.format(
            port=self.port, hub_ip=hub_ip, hub_port=free_port(), proxy_api_port=free_port(),
            dir=self.dir, chp=settings.chp, proxy_token=uuid.uuid4().hex, password=self.password,
            admin_token=self.admin_token, service_url=service_url or settings.url,
            token_file=settings.token_file,
            namespace=settings.namespace if namespace is None else namespace,
        ) + (spawner if spawner is not None else LOCAL_SPAWNER.format(
            dir=self.dir, wrapper=HERE / "singleuser_wrapper.py")) + extra_config)
        env = {**os.environ, "SUP_E2E_HUB": self.id}
        env.pop("JUPYTERHUB_API_TOKEN", None)
        self.log_file = open(self.log_path, "w")
        jupyterhub = Path(sys.executable).with_name("jupyterhub")
        self.proc = subprocess.Popen(
            [str(jupyterhub), "-f", str(config)], cwd=self.dir, env=env,
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.http = httpx.Client(base_url=self.url, timeout=30)
        try:
            wait_until(self._up, 120, "JupyterHub to answer", interval=0.5)
        except AssertionError:
            self.stop()
            raise AssertionError("JupyterHub did not start:\n" + tail(self.log_path))

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("JupyterHub exited:\n" + tail(self.log_path))
        try:
            return self.http.get("/hub/api/").status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {self.admin_token}"}
        return self.http.request(method, "/hub/api" + path, headers=headers, **kwargs)

    def login(self, user: str) -> httpx.Client:
        """Logs `user` in through the login form, as a browser does; returns that session."""
        browser = httpx.Client(base_url=self.url, timeout=30)
        page = browser.get("/hub/login")
        assert page.status_code == 200, page.text
        match = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        form = {"username": user, "password": self.password}
        if match:
            form["_xsrf"] = match.group(1)
        answer = browser.post("/hub/login", data=form)
        assert answer.status_code == 302, f"login of {user} failed: {answer.status_code}"
        assert any(c.startswith("jupyterhub-session") for c in browser.cookies.keys()), \
            list(browser.cookies.keys())
        return browser

    def start_server(self, user: str, options: dict[str, Any]) -> list[dict[str, Any]]:
        """Starts the user's server through the REST API; returns the progress events, up to
        `ready` or `failed`."""
        self.request_server(user, options)
        return self.progress(user)

    def request_server(self, user: str, options: dict[str, Any]) -> None:
        """Asks for the user's server (creating the user if needed); the spawn goes on."""
        if self.api("GET", f"/users/{user}").status_code == 404:
            created = self.api("POST", f"/users/{user}")
            assert created.status_code == 201, created.text
        answer = self.api("POST", f"/users/{user}/server", json=options)
        assert answer.status_code in (201, 202), f"{answer.status_code}: {answer.text}"

    def user_token(self, user: str) -> str:
        """A new API token of `user` (the user's own scopes: e.g. their server's API)."""
        answer = self.api("POST", f"/users/{user}/tokens", json={"note": "e2e"})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["token"])

    def progress(self, user: str, timeout: float = 240) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        headers = {"Authorization": f"token {self.admin_token}", "Accept": "text/event-stream"}
        with self.http.stream("GET", f"/hub/api/users/{user}/server/progress", headers=headers,
                              timeout=httpx.Timeout(timeout, connect=10)) as stream:
            assert stream.status_code == 200, stream.read()
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[len("data:"):])
                events.append(event)
                if event.get("ready") or event.get("failed"):
                    break
        return events

    def user(self, user: str) -> dict[str, Any]:
        answer = self.api("GET", f"/users/{user}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def stop_server(self, user: str) -> None:
        answer = self.api("DELETE", f"/users/{user}/server")
        assert answer.status_code in (202, 204), f"{answer.status_code}: {answer.text}"
        wait_until(lambda: not self.user(user)["servers"], 120, f"{user}'s server to stop")

    def singleuser_env(self, user: str) -> dict[str, Any]:
        """What the single-user server process was started with (recorded by its wrapper)."""
        record = self.dir / "home" / user / "e2e-singleuser-env.json"
        return dict(json.loads(record.read_text()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kill_marked("SUP_E2E_HUB", self.id)  # the proxy and any single-user server left
        self.http.close()
        self.log_file.close()


def iter_outputs(notebook: Any) -> Iterator[dict[str, Any]]:
    for cell in notebook.cells:
        yield from cell.get("outputs", [])


# ---- the plane's real node ------------------------------------------------------------------

NOTEBOOK_IMAGE = "localhost/singleuser-profiles/notebook:ray2.60.0-py311"
# From the range OpenShift gives a namespace; neither image has it in /etc/passwd.
ASSIGNED_UID = 1000680000
# The notebook image's group (jovyan's, as in docker-stacks): its HOME is group-writable.
NOTEBOOK_GID = 100
# Ray's head starts in tens of seconds on a quiet machine; minutes at load 20.
START_TIMEOUT = 420


def kube_spawner(namespace: str, profile_list: bool) -> str:
    """Hub configuration: KubeSpawner making notebook pods of NOTEBOOK_IMAGE in `namespace`
    (one whose pods land on the real node), with the hook's progress; `profile_list`: the
    service's profiles as KubeSpawner's profile list (else the spawn page chooses)."""
    return f'''
from kubespawner import KubeSpawner
from singleuser_profiles_hub import profile_list


class E2EKubeSpawner(ProfilesProgressMixin, KubeSpawner):
    """Notebook pods on the plane's real node, with the hook's progress."""


c.JupyterHub.spawner_class = E2EKubeSpawner
{"c.KubeSpawner.profile_list = profile_list" if profile_list else ""}
c.KubeSpawner.namespace = "{namespace}"
c.KubeSpawner.image = "{NOTEBOOK_IMAGE}"
c.KubeSpawner.image_pull_policy = "Never"  # imported into the node's containerd; no registry
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
# What PodSecurity `restricted` asks; the UID is the namespace's (the admission policy's).
c.KubeSpawner.pod_security_context = {{"runAsNonRoot": True, "seccompProfile": {{"type": "RuntimeDefault"}}}}
c.KubeSpawner.container_security_context = {{"allowPrivilegeEscalation": False, "capabilities": {{"drop": ["ALL"]}}}}
c.KubeSpawner.fs_gid = {NOTEBOOK_GID}
c.KubeSpawner.start_timeout = {START_TIMEOUT}
c.KubeSpawner.http_timeout = {START_TIMEOUT}
c.KubeSpawner.delete_grace_period = 1
c.Spawner.poll_interval = 5
'''


def small_ray(templates: str = "ray-cluster-templates", head_num_cpus: str = "0",
                   workers: int = 1, max_workers: int = 2,
                   env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """A profile's `ray` service: the repo's RayCluster template (from the `templates`
    ConfigMap) and its NetworkPolicy, a quarter CPU per Ray pod, so that several clusters fit
    the real node's 2 CPUs (the plane's node does not throttle to limits). A worker still
    counts one Ray CPU (KubeRay rounds its CPU limit up)."""
    service: dict[str, Any] = {
        "resources": [{"name": templates, "path": "ray-cluster.yaml"},
                      {"name": "ray-cluster-templates", "path": "ray-cluster-networkpolicy.yaml"}],
        "configuration": {"ray_version": "2.60.0", "ray_image": "docker.io/rayproject/ray:2.60.0-py311",
                          "head_num_cpus": head_num_cpus, "head_cpu": "250m", "head_memory": "2Gi",
                          "worker_cpu": "250m", "worker_memory": "2Gi"},
        "options": {"workers": {"type": "integer", "default": workers, "min": 0, "max": max_workers}},
    }
    if env:
        service["env"] = env
    return service


def profiles_configmap(name: str, profiles: list[dict[str, Any]],
                       sizes: Optional[list[dict[str, Any]]] = None) -> str:
    """A labelled profiles ConfigMap (folded in after the repo's), as a manifest."""
    import yaml

    content: dict[str, Any] = {"profiles": profiles}
    if sizes:
        content["sizes"] = sizes
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "labels": {"jupyterhub": "singleuser-profiles"}},
                       "data": {"jupyterhub-singleuser-profiles.yaml": yaml.safe_dump(content)}})


@contextmanager
def real_node_namespace(ns: str, *manifests: str) -> Iterator[str]:
    """Namespace `ns` whose pods land on the real node (the PodNodeSelector and
    PodTolerationRestriction annotations), PodSecurity `restricted`, every pod given
    ASSIGNED_UID (tests/controlplane/assign-uid-policy.yaml), holding the repo's profiles and
    templates and then `manifests` (each applied in `ns`); removed afterwards."""
    images = os.environ.get("SUP_TEST_IMAGES", "").split()
    assert {"ray", "notebook"} <= set(images), (
        f"the plane was started without the ray and notebook images (SUP_TEST_IMAGES={images}): "
        "start it with SUP_CLUSTER_IMAGES=ray,notebook scripts/cluster up")
    label = os.environ["SUP_TEST_REAL_NODE_LABEL"]
    toleration = [{"key": label, "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": ns,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                       "pod-security.kubernetes.io/enforce-version": "latest"},
            "annotations": {"scheduler.alpha.kubernetes.io/node-selector": f"{label}=true",
                            "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(toleration)},
        },
    }))
    policy = f"assign-uid-{ns}"
    try:
        manifest = (REPO / "tests/controlplane/assign-uid-policy.yaml").read_text()
        for name, value in {"NAME": policy, "NAMESPACE": ns, "UID": str(ASSIGNED_UID)}.items():
            manifest = manifest.replace(f"@{name}@", value)
        kubectl("apply", "-f", "-", input=manifest)
        # The API server applies a new policy once its informer has it.
        probe = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "uid-probe"}, "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": NOTEBOOK_IMAGE, "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}})

        def assigned() -> bool:
            made = json.loads(kubectl("create", "-n", ns, "--dry-run=server", "-o", "json",
                                      "-f", "-", input=probe))
            return made["spec"].get("securityContext", {}).get("runAsUser") == ASSIGNED_UID

        wait_until(assigned, 30, "the UID-assigning policy in effect")
        kubectl("apply", "-n", ns, "-f", str(REPO / "profiles"), "-f", str(REPO / "templates"))
        for extra in manifests:
            kubectl("apply", "-n", ns, "-f", "-", input=extra)
        yield ns
    finally:
        for kind in ("mutatingadmissionpolicybinding", "mutatingadmissionpolicy"):
            kubectl("delete", kind, policy, "--ignore-not-found")
        kubectl("delete", "namespace", ns, "--wait=true", "--timeout=180s")


def pod(ns: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", "pod", "-n", ns, name, "-o", "json")))


def describe_pods(ns: str) -> str:
    """`kubectl describe pods` of `ns` (its tail), for failure messages."""
    try:
        return kubectl("describe", "pods", "-n", ns)[-8000:]
    except AssertionError as err:
        return str(err)


# ---- another instance of the service --------------------------------------------------------


class Service:
    """The service binary in cluster mode for `namespace` (one per namespace, as deployed), or
    a dry run (writing nothing) with `namespace` None; on a free loopback port, with the run's
    hub token, logging JSON to the run's work folder (a file: no pipe to keep draining)."""

    def __init__(self, settings: Settings, namespace: Optional[str], name: str, *args: str) -> None:
        self.log_path = settings.work / f"service-{name}.log"
        self.log_file = open(self.log_path, "w")
        mode = ["--mode", "dry-run"] if namespace is None else ["--mode", "cluster", "--namespace", namespace]
        self.proc = subprocess.Popen(
            [os.environ["SUP_BINARY"], "serve", *mode, "--listen", "127.0.0.1:0",
             "--hub-token-file", str(settings.token_file), *args],
            cwd=REPO, env={**os.environ, "SUP_LOG_FORMAT": "json"}, stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        self.url = ""
        try:
            self.url = "http://" + wait_until(self._listen, 60, f"the {name} service to listen")
            wait_until(self._ready, 60, f"the {name} service to be ready", interval=0.2)
        except AssertionError:
            self.stop()
            raise AssertionError(f"the {name} service did not start:\n" + tail(self.log_path))

    def _listen(self) -> Optional[str]:
        assert self.proc.poll() is None, "the service exited:\n" + tail(self.log_path)
        match = re.search(r'"listen":"([^"]+)"', self.log_path.read_text(errors="replace"))
        return match.group(1) if match else None

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "the service exited:\n" + tail(self.log_path)
        try:
            return httpx.get(self.url + "/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


# ---- a notebook executed in a single-user server's kernel, through the hub ---------------------


def run_notebook(base_url: str, token: str, notebook: Any, cell_timeout: float = 900,
                 retry_first_cell: int = 1) -> None:
    """Executes every code cell of `notebook` (nbformat) in a new kernel of the single-user
    server at `base_url` (e.g. `<hub>/user/<name>`; the hub's proxy routes it) as JupyterLab
    does: the Jupyter Server REST API, then the kernel's websocket. Fills in the cells'
    outputs; stops at the first cell that fails, unless it is the first code cell and tries
    are left (`retry_first_cell` tries in all)."""
    import asyncio

    asyncio.run(_run_notebook(base_url, token, notebook, cell_timeout, retry_first_cell))


async def _run_notebook(base_url: str, token: str, notebook: Any, cell_timeout: float,
                        retry_first_cell: int) -> None:
    import asyncio
    from datetime import datetime, timezone

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as api:
        started = await api.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, f"{started.status_code}: {started.text}"
        kernel = started.json()["id"]
        session = uuid.uuid4().hex
        ws_url = re.sub(r"^http", "ws", base_url) + f"/api/kernels/{kernel}/channels?session_id={session}"
        socket = await websocket_connect(HTTPRequest(ws_url, headers=headers))
        try:
            async def execute(code: str) -> tuple[str, list[dict[str, Any]]]:
                msg_id = uuid.uuid4().hex
                socket.write_message(json.dumps({
                    "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session,
                               "username": "e2e", "version": "5.3",
                               "date": datetime.now(timezone.utc).isoformat()},
                    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                    "content": {"code": code, "silent": False, "store_history": True,
                                "user_expressions": {}, "allow_stdin": False,
                                "stop_on_error": True},
                }))
                outputs: list[dict[str, Any]] = []
                status, idle = "", False
                while not (status and idle):
                    raw = await asyncio.wait_for(socket.read_message(), cell_timeout)
                    assert raw is not None, "the kernel's websocket closed"
                    if not isinstance(raw, str):
                        continue  # binary frames carry buffers (widgets); no output here
                    message = json.loads(raw)
                    if message.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind, content = message["header"]["msg_type"], message["content"]
                    if kind == "execute_reply":
                        status = content["status"]
                    elif kind == "status" and content["execution_state"] == "idle":
                        idle = True
                    elif kind == "stream":
                        outputs.append({"output_type": "stream", "name": content["name"],
                                        "text": content["text"]})
                    elif kind in ("display_data", "execute_result"):
                        outputs.append({"output_type": kind, "data": content["data"],
                                        "metadata": content.get("metadata", {})})
                    elif kind == "error":
                        outputs.append({"output_type": "error", "ename": content["ename"],
                                        "evalue": content["evalue"],
                                        "traceback": content["traceback"]})
                return status, outputs

            code_cells = [c for c in notebook.cells if c.cell_type == "code"]
            for index, cell in enumerate(code_cells):
                tries = retry_first_cell if index == 0 else 1
                for attempt in range(1, tries + 1):
                    status, outputs = await execute(cell.source)
                    cell.outputs = outputs
                    if status == "ok":
                        break
                    print(f"cell {index} failed (try {attempt} of {tries}):\n"
                          + "\n".join(o.get("evalue", "") for o in outputs if o.get("evalue")))
                if status != "ok":
                    errors = [o for o in outputs if o["output_type"] == "error"]
                    trace = "\n".join(errors[0]["traceback"] if errors else [])
                    raise AssertionError(f"cell {index} failed: {status}\n{cell.source}\n"
                                         + re.sub(r"\x1b\[[0-9;]*m", "", trace))  # no colours
        finally:
            socket.close()
            await api.delete(f"/api/kernels/{kernel}")

