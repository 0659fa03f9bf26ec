"""Support for the end-to-end tests: the settings tests/e2e/run exports, kubectl, a real
JupyterHub in a subprocess, and a real local Ray head."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
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


def cluster_ready(settings: "Settings", user: str, name: str) -> bool:
    """Whether the service reports `user`'s cluster `name` ready (KubeRay's HeadPodReady, read
    by the service's own check rather than a second copy of it here)."""
    answer = httpx.get(f"{settings.url}/api/v1/users/{user}/clusters",
                       params={"namespace": settings.namespace},
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
import sys

from jupyterhub.spawner import SimpleLocalProcessSpawner

from singleuser_profiles_hub import ProfilesProgressMixin, post_stop_hook, pre_spawn_hook


class E2ESpawner(ProfilesProgressMixin, SimpleLocalProcessSpawner):
    """Local single-user servers, with the hook's progress on the spawn page."""


c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
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

c.JupyterHub.spawner_class = E2ESpawner
c.Spawner.cmd = [sys.executable, "{wrapper}"]
c.Spawner.env_keep = ["PATH", "LANG", "SUP_E2E_RUN", "SUP_E2E_HUB", "RAY_USAGE_STATS_ENABLED",
                      "RAY_DISABLE_DOCKER_CPU_WARNING"]
c.Spawner.args = ["--ServerApp.allow_root=True"]  # CI runs as root
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120
c.SimpleLocalProcessSpawner.home_dir_template = "{dir}/home/{{username}}"

c.Spawner.pre_spawn_hook = pre_spawn_hook
c.Spawner.post_stop_hook = post_stop_hook
c.SingleuserProfiles.url = "{service_url}"
c.SingleuserProfiles.token_file = "{token_file}"
c.SingleuserProfiles.namespace = "{namespace}"
c.SingleuserProfiles.spawn_timeout = 170
c.SingleuserProfiles.progress_interval = 2
'''


class Hub:
    """A real JupyterHub (DummyAuthenticator, local single-user servers, our hooks)."""

    def __init__(self, settings: Settings, service_url: str = "", extra_config: str = "",
                 port: int = 0) -> None:
        """`service_url`: the service the hooks call (default: the run's); `extra_config` is
        appended to jupyterhub_config.py; `port`: the public port (default: a free one)."""
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
            port=self.port, hub_port=free_port(), proxy_api_port=free_port(), dir=self.dir,
            chp=settings.chp, proxy_token=uuid.uuid4().hex, password=self.password,
            admin_token=self.admin_token, wrapper=HERE / "singleuser_wrapper.py",
            service_url=service_url or settings.url, token_file=settings.token_file,
            namespace=settings.namespace,
        ) + extra_config)
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
        if self.api("GET", f"/users/{user}").status_code == 404:
            created = self.api("POST", f"/users/{user}")
            assert created.status_code == 201, created.text
        answer = self.api("POST", f"/users/{user}/server", json=options)
        assert answer.status_code in (201, 202), f"{answer.status_code}: {answer.text}"
        return self.progress(user)

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


# ---- a local Ray head ----------------------------------------------------------------------


class RayHead:
    """`ray start --head --block` on loopback, small: 4 logical CPUs, a 200 MB object store."""

    def __init__(self, work: Path) -> None:
        self.id = uuid.uuid4().hex[:10]
        self.client_port = free_port()
        self.port = free_port()
        # Ray's unix sockets need a short path.
        self.temp_dir = Path("/tmp") / f"ray-e2e-{self.id}"
        self.home = work / f"ray-home-{self.id}"
        self.home.mkdir(parents=True)
        self.log_path = work / f"ray-{self.id}.log"
        ray = Path(sys.executable).with_name("ray")
        args = [
            str(ray), "start", "--head", "--block", "--disable-usage-stats",
            "--node-ip-address=127.0.0.1", f"--port={self.port}",
            f"--ray-client-server-port={self.client_port}",
            # A fixed runtime env agent port: with the default (0) the client server is told
            # port 0 and cannot start a session. (Setting the dashboard agent's ports makes
            # the raylet abort in WaitForDashboardAgentPorts, so those stay at Ray's defaults.)
            f"--runtime-env-agent-port={free_port()}",
            "--num-cpus=4", "--include-dashboard=false",
            "--object-store-memory=200000000", f"--temp-dir={self.temp_dir}",
        ]
        env = {**os.environ, "SUP_E2E_RAY": self.id, "HOME": str(self.home),
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
               # On a loaded 2-core machine the agents' Python start can outlast the raylet's
               # default wait for their ports (~30 s), and the raylet aborts; give them time.
               "RAY_agent_register_timeout_ms": "180000", "RAY_raylet_start_wait_time_s": "180"}
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._listening, 180, "the Ray client server to listen")
            self._probe()
        except AssertionError:
            self.stop()
            raise AssertionError("Ray did not start:\n" + tail(self.log_path))

    def _probe(self, attempts: int = 4) -> None:
        """Connects once through Ray Client before the notebook does: the first session on a
        freshly started head can fail while its agents are still coming up on a busy machine."""
        code = ("import ray; ray.init(address=%r, logging_level='WARNING'); "
                "print(ray.cluster_resources()); ray.shutdown()" % self.address)
        env = {**os.environ, "SUP_E2E_RAY": self.id, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        for attempt in range(1, attempts + 1):
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, timeout=180)
            with open(self.log_path, "a") as log:
                log.write(f"--- probe {attempt}: exit {done.returncode}\n{done.stdout}"
                          f"{done.stderr[-3000:]}\n")
            if done.returncode == 0:
                return
            time.sleep(3)
        raise AssertionError(f"no Ray Client session after {attempts} attempts")

    @property
    def address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("ray start exited:\n" + tail(self.log_path))
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.client_port)) == 0

    def stop(self) -> None:
        # Not `ray stop --force`: that kills every Ray on the machine. These are exactly the
        # processes this head started (they inherit SUP_E2E_RAY).
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        kill_marked("SUP_E2E_RAY", self.id)
        self.log_file.close()
        logs = self.temp_dir / "session_latest" / "logs"
        if logs.is_dir():  # kept with the run's logs (tests/e2e/run prints them on failure)
            shutil.copytree(logs, self.log_path.with_suffix(".logs"), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.sock", "events", "export_events"))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def iter_outputs(notebook: Any) -> Iterator[dict[str, Any]]:
    for cell in notebook.cells:
        yield from cell.get("outputs", [])
